//! `cardvault holder list | show H | lost H`: the help desk's view of the
//! holders the vault issued cards to (H = member number, holder name or card
//! number).

use super::{print_json, Ctx};
use crate::error::Result;
use crate::workflow::holders;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum HolderCommand {
    /// Every holder: member number, main and backup card, state.
    List,
    /// One holder: every card with its role and state, and its backups.
    Show {
        /// Member number, holder name (the holder file's holder column) or card number.
        #[arg(value_name = "HOLDER")]
        holder: String,
    },
    /// Record that the holder's main card is lost: it is revoked (as `card
    /// revoke`), so its backups may be restored onto a replacement card.
    Lost {
        /// Member number, holder name or card number.
        #[arg(value_name = "HOLDER")]
        holder: String,
        /// Why (lost, stolen, broken...), kept in the audit trail.
        #[arg(long, default_value = "lost")]
        reason: String,
    },
}

pub fn run(ctx: &Ctx, c: HolderCommand) -> Result<()> {
    match c {
        HolderCommand::List => {
            let all = holders::holders(&ctx.vault()?)?;
            if ctx.json {
                print_json(&serde_json::json!({ "holders": all }));
                return Ok(());
            }
            if all.is_empty() {
                println!("no holders (holders are recorded when `cardvault issue` issues their cards)");
            }
            for h in &all {
                let card = |role: &str| {
                    h.cards
                        .iter()
                        .rev()
                        .find(|c| c.role == role && c.state == "active")
                        .map_or("-".to_string(), |c| c.card_number.clone())
                };
                println!(
                    "{:<12} {:<20} main {:<18} backup {:<18} {}",
                    h.member_number.as_deref().unwrap_or("-"),
                    h.holder,
                    card("main"),
                    card("backup"),
                    h.state
                );
            }
        }
        HolderCommand::Show { holder } => {
            let vault = ctx.vault()?;
            let h = holders::find(&vault, &holder)?;
            let mut backups = Vec::new();
            for c in &h.cards {
                backups.extend(vault.list_backups(Some(&c.card_number))?);
            }
            if ctx.json {
                print_json(&serde_json::json!({ "holder": h, "backups": backups }));
                return Ok(());
            }
            println!("holder         {}", h.holder);
            println!("member number  {}", h.member_number.as_deref().unwrap_or("-"));
            println!("expiry         {}", h.expiry.as_deref().unwrap_or("-"));
            println!("state          {}", h.state);
            for c in &h.cards {
                let why = c.revoked.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
                println!(
                    "card           {} {:<7} issued {}  {}{why}",
                    c.card_number, c.role, c.issued_at, c.state
                );
            }
            match backups.last() {
                Some(b) => println!(
                    "backups        {} (newest: #{} of card {}, {}, {})",
                    backups.len(),
                    b.counter,
                    b.card_number,
                    b.created_at,
                    b.state
                ),
                None => println!("backups        none"),
            }
            if h.state != "active" {
                if let Some(c) = h.cards.iter().rev().find(|c| c.role == "main" && c.state == "lost") {
                    println!(
                        "restore        `cardvault restore --holder {} --request FILE` on the replacement card, \
                         then the issuer's authorization (the lost card {} is revoked)",
                        h.member_number.as_deref().unwrap_or(&h.holder),
                        c.card_number
                    );
                }
            }
        }
        HolderCommand::Lost { holder, reason } => {
            let mut vault = ctx.vault()?;
            let (card, id) = holders::mark_lost(&mut vault, &holder, &reason)?;
            if ctx.json {
                print_json(&serde_json::json!({ "holder": holder, "card": card, "revoked": true, "audit_id": id }));
            } else {
                println!("holder {holder}: main card {card} marked lost and revoked ({reason}); audit entry {id}");
            }
        }
    }
    Ok(())
}
