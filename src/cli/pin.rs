//! `cardvault pin verify | change | unblock`

use super::{print_json, Ctx};
use crate::card::IssuerAuth;
use crate::error::{Error, Result};
use crate::issuer::IssuerCredentials;
use crate::secret::SecretSource;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum PinCommand {
    /// Verify the holder PIN (reports tries left on failure).
    Verify {
        /// Where the PIN comes from: prompt, env:VAR or file:PATH.
        #[arg(long, value_name = "SOURCE", default_value = "prompt")]
        pin: SecretSource,
    },
    /// Change the holder PIN.
    Change {
        /// Where the current PIN comes from: prompt, env:VAR or file:PATH.
        #[arg(long, value_name = "SOURCE", default_value = "prompt")]
        pin: SecretSource,
        /// Where the new PIN comes from: prompt, env:VAR or file:PATH.
        #[arg(long, value_name = "SOURCE", default_value = "prompt")]
        new_pin: SecretSource,
    },
    /// Unblock the holder PIN as the issuer: with the admin key (hex, 32
    /// bytes), or with an SCP11a operator key (--issuer DIR).
    Unblock {
        /// Where the admin key comes from: prompt, env:VAR or file:PATH.
        #[arg(long, value_name = "SOURCE", required_unless_present = "issuer")]
        admin_key: Option<SecretSource>,
        /// Issuer operator credentials (`cardvault issuer init`): SCP11a
        /// instead of the admin key.
        #[arg(long, value_name = "DIR", conflicts_with = "admin_key")]
        issuer: Option<std::path::PathBuf>,
        /// Set a new PIN as well (otherwise only the retry counter is reset).
        #[arg(long, value_name = "SOURCE")]
        new_pin: Option<SecretSource>,
    },
}

/// Read the issuer admin key (32 bytes of hex) from its source.
pub fn admin_key(src: &SecretSource) -> Result<crate::secret::Secret> {
    let key_hex = src.read("issuer admin key (hex)")?;
    std::str::from_utf8(&key_hex)
        .ok()
        .and_then(cardvault_proto::from_hex)
        .filter(|k| k.len() == 32)
        .map(zeroize::Zeroizing::new)
        .ok_or_else(|| Error::Usage("the admin key must be 32 bytes of hex".into()))
}

/// The issuer authentication a command was given: `--issuer DIR` (SCP11a
/// operator credentials) when present, else the admin key from its source.
pub fn issuer_auth(issuer: Option<&std::path::Path>, admin: Option<&SecretSource>) -> Result<IssuerAuth> {
    match (issuer, admin) {
        (Some(dir), _) => Ok(IssuerAuth::Operator(std::sync::Arc::new(IssuerCredentials::load(dir)?))),
        (None, Some(src)) => Ok(IssuerAuth::AdminKey(admin_key(src)?)),
        (None, None) => Err(Error::Usage("give --admin-key SOURCE or --issuer DIR".into())),
    }
}

pub fn run(ctx: &Ctx, c: PinCommand) -> Result<()> {
    let what = match c {
        PinCommand::Verify { pin } => {
            let pin = pin.read("PIN")?;
            ctx.with_card(|card| card.verify_pin(&pin))?;
            "verified"
        }
        PinCommand::Change { pin, new_pin } => {
            let old = pin.read("current PIN")?;
            let new = new_pin.read("new PIN")?;
            ctx.with_card(|card| card.change_pin(&old, &new))?;
            "changed"
        }
        PinCommand::Unblock {
            admin_key: src,
            issuer,
            new_pin,
        } => {
            let auth = issuer_auth(issuer.as_deref(), src.as_ref())?;
            let new = new_pin.map(|s| s.read("new PIN")).transpose()?;
            ctx.with_card(|card| {
                let number = card.card_number()?;
                card.issuer_authenticate(&auth, &number)?;
                card.reset_retry_counter(new.as_deref().map(|v| &v[..]))
            })?;
            "unblocked"
        }
    };
    if ctx.json {
        print_json(&serde_json::json!({ "pin": what }));
    } else {
        println!("PIN {what}");
    }
    Ok(())
}
