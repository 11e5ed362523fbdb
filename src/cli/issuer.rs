//! `cardvault issuer init`: a new issuer root and SCP11a operator key;
//! `cardvault issuer token-keygen`: the issuer signing key made inside a
//! PKCS#11 token.

use super::{print_json, Ctx};
use crate::error::{Error, Result};
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum IssuerCommand {
    /// Make an issuer root (P-256, self-signed) and an operator (OCE) key with
    /// a certificate under it, for SCP11a issuer sessions (--issuer DIR).
    /// Keys are written with mode 0600.
    Init {
        /// Directory for root.pem, root-key.pem, oce.pem, oce-key.pem.
        #[arg(short, long, value_name = "DIR")]
        output: PathBuf,
        /// The issuer's name (the root's common name).
        #[arg(long, default_value = "cardvault issuer")]
        name: String,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// Generate the issuer's signing key inside a PKCS#11 token (P-256,
    /// never extractable) and print its public key, for the cards'
    /// `issuer_public_key`. Then sign with --issuer-key URI.
    TokenKeygen {
        /// The new key: pkcs11:token=LABEL;object=LABEL (PIN from pin-source= or CARDVAULT_PKCS11_PIN).
        #[arg(long, value_name = "URI")]
        key: crate::signer::Pkcs11Uri,
    },
}

pub fn run(ctx: &Ctx, c: IssuerCommand) -> Result<()> {
    match c {
        IssuerCommand::Init { output, name, force } => {
            let r = crate::issuer::init(&output, &name, force).map_err(|e| match e {
                Error::OutputExists(p) => {
                    Error::Usage(format!("{} already exists; use --force to replace it", p.display()))
                }
                e => e,
            })?;
            if ctx.json {
                print_json(&r);
            } else {
                println!("issuer root   {} (valid to {})", r.root.display(), r.not_after);
                println!("operator      {}", r.operator.display());
                println!("keys          root-key.pem, oce-key.pem (mode 0600): keep them offline");
                println!("cards accept the operator once this root is installed on them as their issuer root");
            }
            Ok(())
        }
        IssuerCommand::TokenKeygen { key } => {
            let module = key.module(ctx.opts.config.pkcs11.module.as_deref());
            let pin = key.read_pin()?;
            let public = cardvault_proto::to_hex(&crate::signer::generate_token_key(&module, &key, &pin)?);
            if ctx.json {
                print_json(&serde_json::json!({ "key": key.to_string(), "public_key": public }));
            } else {
                println!("generated {key} (P-256, never extractable)");
                println!("issuer_public_key = \"{public}\"");
            }
            Ok(())
        }
    }
}
