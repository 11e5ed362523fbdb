//! `cardvault cert show | export`: the card's certificate chain (GET DATA
//! `BF21`) and whether it verifies under the trusted issuer roots.

use super::{print_json, Ctx};
use crate::card::{CardClient, CertificateReport};
use crate::error::{Error, Result};
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum CertCommand {
    /// Show the card's certificate chain: subject, issuer, validity, and whether
    /// it verifies under a trusted issuer root.
    Show,
    /// Write the card's certificate chain (PEM, root side first) to a file.
    Export {
        /// Output file (refused if it exists, unless --force).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// Replace an existing output file.
        #[arg(long)]
        force: bool,
    },
}

pub fn run(ctx: &Ctx, c: CertCommand) -> Result<()> {
    let report = ctx.with_card(|card: &mut CardClient<'_>| card.certificate_report())?;
    match c {
        CertCommand::Show => show(ctx, &report),
        CertCommand::Export { output, force } => export(ctx, &report, &output, force),
    }
}

fn show(ctx: &Ctx, r: &CertificateReport) -> Result<()> {
    if ctx.json {
        print_json(r);
        return Ok(());
    }
    if r.chain.is_empty() {
        println!("the card has no certificate");
    }
    for (i, c) in r.chain.iter().enumerate() {
        let what = if i + 1 == r.chain.len() {
            "card certificate"
        } else {
            "certificate"
        };
        println!("{what} {}", i + 1);
        println!("  subject      {}", c.subject);
        println!("  issuer       {}", c.issuer);
        if let Some(n) = &c.card_number {
            println!("  card number  {n}");
        }
        if let Some(role) = &c.role {
            println!("  role         {role}");
        }
        if let Some(m) = &c.member_number {
            println!("  member       {m}");
        }
        if let Some(p) = &c.profile {
            println!("  profile      {p}");
        }
        println!("  valid        {} to {}", c.not_before, c.not_after);
        println!("  serial       {}", c.serial);
        println!("  SHA-256      {}", c.sha256);
    }
    let roots = if r.trusted_roots.is_empty() {
        "none (give --trust ROOT.pem)".to_string()
    } else {
        r.trusted_roots.join(", ")
    };
    println!("trusted roots  {roots}");
    match &r.reason {
        None => println!("verified       yes"),
        Some(why) => println!("verified       NO: {why}"),
    }
    Ok(())
}

fn export(ctx: &Ctx, r: &CertificateReport, output: &PathBuf, force: bool) -> Result<()> {
    if r.chain.is_empty() {
        return Err(Error::Refused("the card has no certificate to export".into()));
    }
    let mut pem = Vec::new();
    for c in &r.chain {
        let x = openssl::x509::X509::from_der(&c.der).map_err(|e| Error::Data(e.to_string()))?;
        pem.extend_from_slice(&x.to_pem().map_err(|e| Error::Data(e.to_string()))?);
    }
    let mut f = cardvault_proto::fsutil::AtomicFile::create(output)
        .map_err(|e| Error::io(format!("writing {}", output.display()), e))?;
    f.write_all(&pem)
        .map_err(|e| Error::io(format!("writing {}", output.display()), e))?;
    let done = if force { f.commit() } else { f.commit_new() };
    done.map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => Error::Usage(format!(
            "{} already exists; use --force to replace it",
            output.display()
        )),
        _ => Error::io(format!("writing {}", output.display()), e),
    })?;
    if ctx.json {
        print_json(&serde_json::json!({
            "output": output,
            "certificates": r.chain.len(),
            "verified": r.verified,
        }));
    } else {
        println!(
            "wrote {} certificate(s) to {} ({})",
            r.chain.len(),
            output.display(),
            if r.verified {
                "verified"
            } else {
                "NOT verified under the trusted roots"
            }
        );
    }
    Ok(())
}
