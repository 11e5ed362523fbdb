//! `cardvault domain init | verify`: the issuer domain's key ceremony.

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
        #[arg(long)]
        custodians: u8,
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
    /// Check a domain's share files, and open the shares of the custodians
    /// present (--share I --passphrase SOURCE, repeated); never rebuilds the key.
    Verify {
        dir: PathBuf,
        #[arg(long, value_name = "INDEX")]
        share: Vec<u8>,
        #[arg(long, value_name = "SOURCE")]
        passphrase: Vec<SecretSource>,
    },
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
