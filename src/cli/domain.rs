//! `cardvault domain init | verify | rotate`: the issuer domain's key ceremony.

use super::{print_json, Ctx};
use crate::domain;
use crate::error::{Error, Result};
use crate::secret::{Secret, SecretSource};
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum DomainCommand {
    /// Generate a domain's card-common key and split it K-of-N among
    /// custodians, each share encrypted under its custodian's passphrase.
    Init {
        /// Number of custodians N: one passphrase-protected share each.
        #[arg(long)]
        custodians: u8,
        /// Number of custodians K needed to rebuild the key (2 to N).
        #[arg(long)]
        threshold: u8,
        /// The new domain directory (must not exist, or be empty).
        #[arg(short, long, value_name = "DIR")]
        output: PathBuf,
        /// One per custodian, in order: prompt, env:VAR or file:PATH
        /// (default: prompt for each).
        #[arg(long, value_name = "SOURCE")]
        passphrase: Vec<SecretSource>,
    },
    /// Make a new generation of the domain: a quorum of the current
    /// custodians opens their shares (--share I --passphrase SOURCE, as many
    /// as the threshold), then a new key is split among the same number of
    /// custodians, same threshold, under their new passphrases
    /// (--new-passphrase, one per custodian in order; default: prompt each;
    /// a custodian may give the same passphrase again). The current
    /// generation's files move to DIR/generation-G.
    Rotate {
        /// The domain directory (`domain init`).
        dir: PathBuf,
        /// A custodian's share number; repeat for each custodian present.
        #[arg(long, value_name = "INDEX")]
        share: Vec<u8>,
        /// That custodian's passphrase (prompt, env:VAR or file:PATH), one per --share.
        #[arg(long, value_name = "SOURCE")]
        passphrase: Vec<SecretSource>,
        /// The new generation's passphrase per custodian (default: asked for each).
        #[arg(long, value_name = "SOURCE")]
        new_passphrase: Vec<SecretSource>,
    },
    /// Check a domain's share files, and open the shares of the custodians
    /// present (--share I --passphrase SOURCE, repeated); never rebuilds the key.
    Verify {
        /// The domain directory (`domain init`).
        dir: PathBuf,
        /// A custodian's share number to check; repeat for each.
        #[arg(long, value_name = "INDEX")]
        share: Vec<u8>,
        /// That custodian's passphrase (prompt, env:VAR or file:PATH), one per --share.
        #[arg(long, value_name = "SOURCE")]
        passphrase: Vec<SecretSource>,
    },
}

/// The custodians present for a domain: `(share number, passphrase)` for
/// each `--share`, passphrases from `--passphrase` in the same order
/// (default: prompt). Without `--share`, the share numbers are asked on the
/// terminal, as many as the domain's threshold.
pub fn custodians_present(
    dir: &std::path::Path,
    share: &[u8],
    passphrase: &[SecretSource],
) -> Result<Vec<(u8, Secret)>> {
    let d = domain::info(dir)?;
    let indexes: Vec<u8> = if share.is_empty() {
        (1..=d.threshold)
            .map(|k| {
                let what = format!(
                    "share number (1 to {}) of custodian {k} of {} for domain {}",
                    d.custodians, d.threshold, d.domain_id
                );
                let s = SecretSource::Prompt.read(&what).map_err(|_| {
                    Error::Usage(format!(
                        "domain {} needs {} custodians: give --share INDEX --passphrase SOURCE for each \
                         (no terminal to ask on)",
                        d.domain_id, d.threshold
                    ))
                })?;
                std::str::from_utf8(&s)
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
                    .ok_or_else(|| Error::Usage(format!("{what}: not a number")))
            })
            .collect::<Result<_>>()?
    } else {
        share.to_vec()
    };
    if !passphrase.is_empty() && passphrase.len() != indexes.len() {
        return Err(Error::Usage(format!(
            "give one --passphrase per --share ({} --share, {} --passphrase)",
            indexes.len(),
            passphrase.len()
        )));
    }
    indexes
        .iter()
        .enumerate()
        .map(|(k, i)| {
            let src = passphrase.get(k).cloned().unwrap_or(SecretSource::Prompt);
            Ok((*i, src.read(&format!("passphrase of custodian {i}"))?))
        })
        .collect()
}

pub fn run(ctx: &Ctx, c: DomainCommand) -> Result<()> {
    match c {
        DomainCommand::Init {
            custodians,
            threshold,
            output,
            passphrase,
        } => {
            let sources = if passphrase.is_empty() {
                vec![SecretSource::Prompt; custodians as usize]
            } else {
                passphrase
            };
            if sources.len() != custodians as usize {
                return Err(Error::Usage(format!(
                    "{custodians} custodians need {custodians} --passphrase sources, got {}",
                    sources.len()
                )));
            }
            let pass: Vec<Secret> = sources
                .iter()
                .enumerate()
                .map(|(i, s)| s.read(&format!("passphrase of custodian {}", i + 1)))
                .collect::<Result<_>>()?;
            let d = domain::init(&output, threshold, &pass)?;
            if ctx.json {
                print_json(&d);
            } else {
                println!(
                    "domain {} generation {}: key split {}-of-{} into {} (check value {}); the key was not written",
                    d.domain_id,
                    d.generation,
                    d.threshold,
                    d.custodians,
                    output.display(),
                    d.check_value
                );
            }
            Ok(())
        }
        DomainCommand::Rotate {
            dir,
            share,
            passphrase,
            new_passphrase,
        } => {
            let old = domain::info(&dir)?;
            let given = custodians_present(&dir, &share, &passphrase)?;
            // The quorum first: no new passphrase is asked for a rotation
            // the custodians present cannot make.
            drop(domain::reconstruct(&dir, &given)?);
            let sources = if new_passphrase.is_empty() {
                vec![SecretSource::Prompt; old.custodians as usize]
            } else {
                new_passphrase
            };
            let new: Vec<Secret> = sources
                .iter()
                .enumerate()
                .map(|(i, s)| s.read(&format!("new passphrase of custodian {}", i + 1)))
                .collect::<Result<_>>()?;
            let d = domain::rotate(&dir, &given, &new)?;
            let archived = domain::generation_dir(&dir, old.generation);
            if ctx.json {
                print_json(&serde_json::json!({ "domain": d, "previous_generation": archived }));
            } else {
                println!(
                    "domain {} generation {}: new key split {}-of-{} (check value {}); generation {} kept in {}",
                    d.domain_id,
                    d.generation,
                    d.threshold,
                    d.custodians,
                    d.check_value,
                    old.generation,
                    archived.display()
                );
            }
            Ok(())
        }
        DomainCommand::Verify { dir, share, passphrase } => {
            if share.len() != passphrase.len() {
                return Err(Error::Usage("give one --passphrase per --share".into()));
            }
            let given: Vec<(u8, Secret)> = share
                .iter()
                .zip(&passphrase)
                .map(|(i, s)| Ok((*i, s.read(&format!("passphrase of custodian {i}"))?)))
                .collect::<Result<_>>()?;
            let d = domain::verify(&dir, &given)?;
            if ctx.json {
                print_json(&serde_json::json!({ "domain": d, "shares_opened": share }));
            } else {
                println!(
                    "domain {} generation {}: {} share files consistent; {} share(s) opened with their passphrase",
                    d.domain_id,
                    d.generation,
                    d.custodians,
                    given.len()
                );
            }
            Ok(())
        }
    }
}
