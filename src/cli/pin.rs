//! `cardvault pin verify | change | unblock`

use super::{print_json, Ctx};
use crate::card::IssuerAuth;
use crate::error::Result;
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
    /// Unblock the holder PIN as the issuer, in an SCP11a session with the
    /// issuer's operator key (--issuer DIR).
    Unblock {
        /// Issuer operator credentials (`cardvault issuer init`), under the
        /// issuer root installed on the card.
        #[arg(long, value_name = "DIR")]
        issuer: std::path::PathBuf,
        /// Set a new PIN as well (otherwise only the retry counter is reset).
        #[arg(long, value_name = "SOURCE")]
        new_pin: Option<SecretSource>,
    },
}

/// The issuer authentication a command was given: the SCP11a operator
/// credentials of `--issuer DIR`.
pub fn issuer_auth(issuer: &std::path::Path) -> Result<IssuerAuth> {
    Ok(IssuerAuth::Operator(std::sync::Arc::new(IssuerCredentials::load(
        issuer,
    )?)))
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
        PinCommand::Unblock { issuer, new_pin } => {
            let auth = issuer_auth(&issuer)?;
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
