//! `cardvault status`

use super::{print_json, Ctx};
use crate::card::CardClient;
use crate::error::Result;

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(ctx: &Ctx, _a: Args) -> Result<()> {
    let mut reader = ctx.open_reader()?;
    let name = reader.name().to_string();
    let atr = cardvault_proto::to_hex(reader.atr()).to_uppercase();
    let mut card = CardClient::open(reader.as_mut(), ctx.session())?;
    let st = card.status()?;
    let cert = card.certificate_report()?;
    // Each application's owner and storage rule (storing authorization).
    let rules = card.application_rules()?;
    // The application table (page ranges, value and restored flags) and the
    // backup counters: public reads, no PIN.
    let table = card.applications()?;
    let counters = crate::workflow::backup::counters(&mut card)?;
    // One entry per application: the table's fields and its storage rule.
    let applications: Vec<serde_json::Value> = table
        .iter()
        .map(|a| {
            let mut v = serde_json::to_value(a).expect("application serializes");
            if let Some(r) = rules.iter().find(|r| r.id == a.id) {
                v["owner"] = r.owner.clone().into();
                v["rule"] = r.rule.to_string().into();
                v["provider_alone"] = r.provider_alone.into();
            }
            v
        })
        .chain(
            rules
                .iter()
                .filter(|r| !table.iter().any(|a| a.id == r.id))
                .map(|r| serde_json::to_value(r).expect("rule serializes")),
        )
        .collect();
    // The electronic wallet in a few numbers (a card without one: none).
    let wallet = match card.read_wallet() {
        Ok(l) => Some(crate::workflow::wallet::summary(&l)),
        Err(crate::error::Error::Card { .. }) => None,
        Err(e) => return Err(e),
    };
    // The certificate must name the card that answers.
    let certified_number = cert.chain.last().and_then(|c| c.card_number.clone());
    let (verified, reason) = match (&cert.reason, &certified_number) {
        (Some(why), _) => (false, Some(why.clone())),
        (None, Some(n)) if *n != st.card_number => (
            false,
            Some(format!(
                "the certificate names card {n}, the card says {}",
                st.card_number
            )),
        ),
        (None, _) => (true, None),
    };
    if ctx.json {
        let mut v = serde_json::to_value(&st).expect("status serializes");
        v["reader"] = name.into();
        v["atr"] = atr.into();
        v["certificate"] = serde_json::json!({
            "verified": verified,
            "reason": reason,
            "card_number": certified_number,
            "issuer": cert.chain.last().map(|c| c.issuer.clone()),
            "not_after": cert.chain.last().map(|c| c.not_after.clone()),
        });
        v["applications"] = applications.into();
        v["backup_counters"] = serde_json::to_value(counters).expect("counters serialize");
        v["wallet"] = serde_json::to_value(&wallet).expect("wallet serializes");
        print_json(&v);
        return Ok(());
    }
    println!("reader       {name}");
    println!("ATR          {atr}");
    println!("card number  {}", st.card_number);
    println!(
        "role         {}{}",
        st.role,
        if st.issued { "" } else { " (not issued)" }
    );
    if let Some(m) = &st.member_number {
        println!("member       {m}");
    }
    if let Some(x) = &st.expiry {
        println!("expiry       {x}");
    }
    match (&reason, cert.chain.last()) {
        (None, Some(c)) => println!("certificate  verified (issuer {}, valid to {})", c.issuer, c.not_after),
        (Some(why), _) => println!("certificate  NOT verified: {why}"),
        (None, None) => println!("certificate  none"),
    }
    println!("applet       {}", st.applet_version);
    if st.pin_blocked {
        println!("PIN          BLOCKED (0 of {} tries left)", st.pin_max_tries);
    } else {
        println!("PIN          {} of {} tries left", st.pin_tries_left, st.pin_max_tries);
    }
    println!("memory       {} pages of {} bytes", st.page_count, st.page_size);
    println!(
        "APDUs        {}",
        if st.extended_length {
            "extended length"
        } else {
            "short only"
        }
    );
    println!(
        "backups      last counter issued #{}, base #{}, newest seen #{}, {} page(s) changed since",
        counters.issued, counters.base, counters.newest_seen, counters.changed_pages
    );
    for a in &table {
        let rule = rules.iter().find(|r| r.id == a.id);
        println!(
            "application  {} {:<16} pages {}-{}{}{}{}",
            a.id,
            a.name,
            a.first_page,
            a.first_page as u32 + a.page_count as u32 - 1,
            if a.value { ", value" } else { "" },
            if a.restored {
                ", restored (value reset before next use)"
            } else {
                ""
            },
            rule.map(|r| format!(
                ", owner {}, {}{}",
                r.owner,
                r.rule,
                if r.provider_alone {
                    ", the provider alone may authorize"
                } else {
                    ""
                }
            ))
            .unwrap_or_default()
        );
    }
    if let Some(w) = &wallet {
        let pending = if w.pending > 0 {
            format!(", {} pending a deposit", w.pending)
        } else {
            String::new()
        };
        println!(
            "wallet       {} of {} item slots used, cash balance {}{pending}",
            w.items, w.capacity, w.cash_balance
        );
    }
    for r in rules.iter().filter(|r| !table.iter().any(|a| a.id == r.id)) {
        let alone = if r.provider_alone {
            ", the provider alone may authorize"
        } else {
            ""
        };
        println!("application  {}: owner {}, {}{alone}", r.id, r.owner, r.rule);
    }
    Ok(())
}
