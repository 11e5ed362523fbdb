//! `cardvault audit`

use super::{print_json, Ctx};
use crate::error::{Error, Result};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only entries about this card number.
    #[arg(long, value_name = "NUMBER", conflicts_with = "holder")]
    card: Option<String>,
    /// Only entries about this holder's cards (member number, name or card
    /// number; `cardvault holder show`).
    #[arg(long, value_name = "HOLDER")]
    holder: Option<String>,
    /// Check the hash chain, each entry's MAC and the checkpoint outside the
    /// vault instead of listing.
    #[arg(long)]
    verify: bool,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let vault = ctx.vault()?;
    if a.verify {
        let report = vault.verify_audit_report()?;
        let problems = &report.problems;
        let legacy = report.legacy.map(|(first, last)| {
            format!(
                "entries {first} to {last} predate entry MACs (legacy: hash chained and anchored, not authenticated one by one)"
            )
        });
        if ctx.json {
            print_json(&serde_json::json!({
                "ok": problems.is_empty(),
                "problems": problems,
                "first_bad_mac": report.first_bad_mac,
                "legacy_entries": report.legacy.map(|(first, last)| serde_json::json!({ "first": first, "last": last })),
            }));
        } else {
            if problems.is_empty() {
                println!("audit trail intact");
            } else {
                for p in problems {
                    println!("{p}");
                }
            }
            if let Some(l) = &legacy {
                println!("note: {l}");
            }
        }
        return if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Data(format!(
                "the audit trail has {} problem(s)",
                problems.len()
            )))
        };
    }
    let entries = match &a.holder {
        Some(h) => {
            let cards = crate::workflow::holders::card_numbers(&vault, h)?;
            let mut entries = vault.audit_entries(None)?;
            entries.retain(|e| cards.contains(&e.card));
            entries
        }
        None => vault.audit_entries(a.card.as_deref())?,
    };
    if ctx.json {
        print_json(&serde_json::json!({ "entries": entries }));
    } else {
        // Each card's holder (member number, else the holder column), from the issuances.
        let mut holder_of = std::collections::HashMap::new();
        for h in crate::workflow::holders::holders(&vault)? {
            let name = h.member_number.clone().unwrap_or_else(|| h.holder.clone());
            for c in &h.cards {
                holder_of.insert(c.card_number.clone(), name.clone());
            }
        }
        for e in &entries {
            println!(
                "{:>5} {} {:<18} {:<18} {:<12} {:<18} {}",
                e.id,
                e.at,
                e.event,
                e.card,
                holder_of.get(&e.card).map_or("-", String::as_str),
                e.peer.as_deref().unwrap_or("-"),
                e.result
            );
        }
    }
    Ok(())
}
