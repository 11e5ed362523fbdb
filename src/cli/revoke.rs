//! `cardvault card revoke NUMBER`: the issuer records that a card is lost
//! or withdrawn, in the vault's audit trail. `authorize-restore` signs a
//! restore of a card's backups onto another card only once it is revoked.

use super::{print_json, Ctx};
use crate::error::Result;
use crate::workflow::authorize;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum CardCommand {
    /// Issuer: record that a card is lost or withdrawn (audited as card-revoked).
    Revoke {
        /// The card number.
        number: String,
        /// Why the card is revoked (lost, stolen, broken...), kept in the audit trail.
        #[arg(long, default_value = "lost")]
        reason: String,
    },
}

pub fn run(ctx: &Ctx, c: CardCommand) -> Result<()> {
    match c {
        CardCommand::Revoke { number, reason } => {
            let id = authorize::revoke_card(&mut ctx.vault()?, &number, &reason)?;
            if ctx.json {
                print_json(&serde_json::json!({ "card": number, "revoked": true, "audit_id": id }));
            } else {
                println!("card {number} revoked ({reason}); audit entry {id}");
            }
            Ok(())
        }
    }
}
