//! Holders, as the help desk looks them up: by member number, name or card
//! number. A holder's record is read from the audit trail (every `issue`
//! entry names the holder, the member number, the card and its role; a
//! `card-revoked` entry marks a card lost), so it is exactly as trustworthy
//! as the trail: authenticated entry by entry (`audit --verify`), never a
//! second table someone could edit on its own.

use super::authorize::{revoke_card, CARD_REVOKED};
use crate::error::{Error, Result};
use crate::vault::Vault;
use serde::Serialize;

/// A holder's card and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HolderCard {
    pub card_number: String,
    pub role: String,
    /// When the card was issued (audit time).
    pub issued_at: String,
    /// `active`, or `lost` once a `card-revoked` entry names it.
    pub state: &'static str,
    /// Why it was revoked, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
}

/// One holder of the vault's issuances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holder {
    /// The holder column of the holder file (a name or an id).
    pub holder: String,
    pub member_number: Option<String>,
    pub expiry: Option<String>,
    /// `active` (a main card in use), `lost` (every main card lost, none
    /// issued since) or `replaced` (a main card lost, a newer one active).
    pub state: &'static str,
    /// In issuance order.
    pub cards: Vec<HolderCard>,
}

impl Holder {
    /// The holder's main card in use: the newest active one.
    pub fn main_card(&self) -> Option<&HolderCard> {
        self.cards
            .iter()
            .rev()
            .find(|c| c.role == "main" && c.state == "active")
    }

    /// The newest main card, lost or not.
    pub fn last_main_card(&self) -> Option<&HolderCard> {
        self.cards.iter().rev().find(|c| c.role == "main")
    }

    /// Whether `h` names this holder: the member number, the holder
    /// column, or one of its card numbers.
    pub fn is_named_by(&self, h: &str) -> bool {
        self.member_number.as_deref() == Some(h) || self.holder == h || self.cards.iter().any(|c| c.card_number == h)
    }
}

/// Every holder the vault issued cards to, in the order of their first card.
pub fn holders(vault: &Vault) -> Result<Vec<Holder>> {
    let entries = vault.audit_entries(None)?;
    let mut revoked: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for e in entries.iter().filter(|e| e.event == CARD_REVOKED && e.result == "ok") {
        let reason = e.details["reason"].as_str().unwrap_or("revoked").to_string();
        revoked.insert(e.card.clone(), reason);
    }
    let mut out: Vec<Holder> = Vec::new();
    for e in entries.iter().filter(|e| e.event == "issue" && e.result == "issued") {
        let Some(name) = e.details["holder"].as_str() else {
            continue;
        };
        let text = |k: &str| e.details[k].as_str().map(str::to_string);
        let card = HolderCard {
            card_number: e.card.clone(),
            role: text("role").unwrap_or_default(),
            issued_at: e.at.clone(),
            state: if revoked.contains_key(&e.card) {
                "lost"
            } else {
                "active"
            },
            revoked: revoked.get(&e.card).cloned(),
        };
        let member = text("member_number");
        // One holder per holder column and member number.
        match out
            .iter_mut()
            .find(|h| h.holder == name && (member.is_none() || h.member_number.is_none() || h.member_number == member))
        {
            Some(h) => {
                if h.member_number.is_none() {
                    h.member_number = member;
                }
                if let Some(x) = text("expiry") {
                    h.expiry = Some(x);
                }
                h.cards.push(card);
            }
            None => out.push(Holder {
                holder: name.to_string(),
                member_number: member,
                expiry: text("expiry"),
                state: "active",
                cards: vec![card],
            }),
        }
    }
    for h in &mut out {
        let mains: Vec<&HolderCard> = h.cards.iter().filter(|c| c.role == "main").collect();
        h.state = match (
            mains.iter().any(|c| c.state == "lost"),
            mains.iter().any(|c| c.state == "active"),
        ) {
            (true, true) => "replaced",
            (true, false) => "lost",
            _ => "active",
        };
    }
    Ok(out)
}

/// The one holder `h` names (member number, holder column or card number).
/// The newest lost main card of holder `h`: what a restore or a wallet
/// recovery for the holder starts from.
pub fn lost_main_card(vault: &Vault, h: &str) -> Result<String> {
    let holder = find(vault, h)?;
    holder
        .cards
        .iter()
        .rev()
        .find(|c| c.role == "main" && c.state == "lost")
        .map(|c| c.card_number.clone())
        .ok_or_else(|| {
            crate::error::Error::Usage(format!(
                "holder {} has no lost main card; mark it lost first (cardvault holder lost {h})",
                holder.holder
            ))
        })
}

/// The newest card with `role` of holder `h` (member number, name or card
/// number), strictly: an unknown holder is an error.
pub fn newest_card(vault: &Vault, h: &str, role: &str) -> Result<String> {
    let holder = find(vault, h)?;
    holder
        .cards
        .iter()
        .rev()
        .find(|c| c.role == role)
        .map(|c| c.card_number.clone())
        .ok_or_else(|| crate::error::Error::Usage(format!("holder {} has no {role} card", holder.holder)))
}

/// The card numbers of holder `h` (member number, name or card number), for
/// the commands that take `--holder` where they take a card number.
pub fn card_numbers(vault: &Vault, h: &str) -> Result<Vec<String>> {
    Ok(find(vault, h)?.cards.into_iter().map(|c| c.card_number).collect())
}

pub fn find(vault: &Vault, h: &str) -> Result<Holder> {
    let all = holders(vault)?;
    let mut found: Vec<Holder> = all.iter().filter(|x| x.is_named_by(h)).cloned().collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => {
            let close: Vec<String> = all
                .iter()
                .flat_map(|x| [Some(x.holder.clone()), x.member_number.clone()])
                .flatten()
                .filter(|n| n.eq_ignore_ascii_case(h) || n.to_lowercase().contains(&h.to_lowercase()))
                .collect();
            Err(Error::Usage(if close.is_empty() {
                format!("no holder '{h}' in the vault (holders are recorded when cards are issued)")
            } else {
                format!("no holder '{h}' in the vault; did you mean {}?", close.join(" or "))
            }))
        }
        n => Err(Error::Usage(format!(
            "'{h}' names {n} holders ({}); give the member number",
            found
                .iter()
                .map(|x| x.member_number.as_deref().unwrap_or(&x.holder))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Record that `h`'s main card in use is lost: it is revoked (as `card
/// revoke` does), so its backups may be restored onto a replacement card.
/// Returns the card revoked and the audit entry id.
pub fn mark_lost(vault: &mut Vault, h: &str, reason: &str) -> Result<(String, i64)> {
    let holder = find(vault, h)?;
    let card = holder.main_card().ok_or_else(|| {
        Error::Usage(format!(
            "holder {} has no main card in use (state {}); nothing to mark lost",
            holder.holder, holder.state
        ))
    })?;
    let number = card.card_number.clone();
    let id = revoke_card(
        vault,
        &number,
        &format!(
            "{reason} (holder {})",
            holder.member_number.as_deref().unwrap_or(&holder.holder)
        ),
    )?;
    Ok((number, id))
}
