//! `cardvault purse balance | credit | debit`

use super::{print_json, Ctx};
use crate::error::Result;
use crate::secret::SecretSource;
use crate::workflow::purse;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum PurseCommand {
    /// Show the balance of a value application.
    Balance {
        #[arg(long, default_value_t = 1)]
        app: u8,
    },
    /// Add value.
    Credit {
        #[arg(long, default_value_t = 1)]
        app: u8,
        amount: u32,
        #[arg(long, value_name = "SOURCE", default_value = "prompt")]
        pin: SecretSource,
    },
    /// Take value.
    Debit {
        #[arg(long, default_value_t = 1)]
        app: u8,
        amount: u32,
        #[arg(long, value_name = "SOURCE", default_value = "prompt")]
        pin: SecretSource,
    },
}

pub fn run(ctx: &Ctx, c: PurseCommand) -> Result<()> {
    let (v, what) = match c {
        PurseCommand::Balance { app } => (ctx.with_card(|card| purse::balance(card, app))?, "balance"),
        PurseCommand::Credit { app, amount, pin } => {
            let pin = pin.read("PIN")?;
            (
                ctx.with_card(|card| purse::credit(card, &pin, app, amount))?,
                "credited; balance",
            )
        }
        PurseCommand::Debit { app, amount, pin } => {
            let pin = pin.read("PIN")?;
            (
                ctx.with_card(|card| purse::debit(card, &pin, app, amount))?,
                "debited; balance",
            )
        }
    };
    if ctx.json {
        print_json(&serde_json::json!({ "balance": v }));
    } else {
        println!("{what} {v}");
    }
    Ok(())
}
