//! Batch issuance (FIG. 11): for each holder, take a blank card, personalize
//! it with the profile's commands, check every response, and report the card
//! as issued or rejected with the reason.

use crate::card::CardClient;
use crate::error::{Error, Result};
use crate::secret::Secret;
use cardvault_proto::{from_hex, tag};
use serde::Serialize;
use zeroize::Zeroizing;

/// Which cards to issue per holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IssueProfile {
    /// Main card: PIN, key 1, member number, expiry.
    Main,
    /// Backup card: PIN and key 1 only.
    Backup,
    /// Main and backup card per holder, sharing key 1. Without a key1 column,
    /// key 1 is generated per holder, written to both cards and stored nowhere;
    /// issuing main and backup in separate runs then needs key1 in the file.
    Pair,
}

/// One holder record from the CSV file.
pub struct Holder {
    pub id: String,
    pub pin: Secret,
    pub member_number: Option<String>,
    pub expiry: Option<String>,
    pub key1: Option<Secret>,
}

/// Columns of the holder file (header line required, in any order).
pub const COLUMNS: &[&str] = &["holder", "pin", "member_number", "expiry", "key1"];

fn valid_text(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.chars().all(|c| c.is_ascii_graphic() || c == ' ')
}

/// Parse and validate the holder file. Every bad row is reported (with its
/// line number) before any card is touched.
pub fn parse_holders(text: &str, profile: IssueProfile) -> Result<Vec<Holder>> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'));
    let (_, header) = lines
        .next()
        .ok_or_else(|| Error::Usage("the holder file is empty".into()))?;
    let cols: Vec<String> = header.split(',').map(|c| c.trim().to_ascii_lowercase()).collect();
    for c in &cols {
        if !COLUMNS.contains(&c.as_str()) {
            return Err(Error::Usage(format!(
                "holder file: unknown column '{c}' (columns: {})",
                COLUMNS.join(", ")
            )));
        }
    }
    for need in ["holder", "pin"] {
        if !cols.iter().any(|c| c == need) {
            return Err(Error::Usage(format!("holder file: the header has no '{need}' column")));
        }
    }
    let mut holders = Vec::new();
    let mut problems = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, line) in lines {
        let n = i + 1;
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != cols.len() {
            problems.push(format!(
                "line {n}: {} fields, the header has {}",
                fields.len(),
                cols.len()
            ));
            continue;
        }
        let get = |name: &str| {
            cols.iter()
                .position(|c| c == name)
                .map(|p| fields[p])
                .filter(|v| !v.is_empty())
        };
        let id = get("holder").unwrap_or("");
        if !valid_text(id) || id.contains(['/', '\\']) {
            problems.push(format!("line {n}: holder id '{id}' is empty, too long or has '/'"));
            continue;
        }
        if !seen.insert(id.to_string()) {
            problems.push(format!("line {n}: holder '{id}' appears twice"));
            continue;
        }
        let pin = get("pin").unwrap_or("");
        if !(cardvault_proto::PIN_MIN_LEN..=cardvault_proto::PIN_MAX_LEN).contains(&pin.len())
            || !pin.bytes().all(|b| b.is_ascii_digit())
        {
            problems.push(format!("line {n}: holder '{id}': the PIN must be 4 to 16 digits"));
            continue;
        }
        let member = get("member_number").map(str::to_string);
        let expiry = get("expiry").map(str::to_string);
        for (what, v) in [("member_number", &member), ("expiry", &expiry)] {
            if let Some(v) = v {
                if !valid_text(v) {
                    problems.push(format!(
                        "line {n}: holder '{id}': {what} '{v}' is not 1 to 32 printable characters"
                    ));
                }
            }
        }
        if let Some(e) = &expiry {
            let ok = e.len() == 7
                && e.as_bytes()[4] == b'-'
                && e[..4].parse::<u16>().is_ok()
                && matches!(e[5..].parse::<u8>(), Ok(1..=12));
            if !ok {
                problems.push(format!("line {n}: holder '{id}': expiry '{e}' is not YYYY-MM"));
            }
        }
        if matches!(profile, IssueProfile::Main | IssueProfile::Pair) && (member.is_none() || expiry.is_none()) {
            problems.push(format!(
                "line {n}: holder '{id}': a main card needs member_number and expiry"
            ));
        }
        let key1 = match get("key1") {
            Some(k) => match from_hex(k).filter(|k| k.len() == 32) {
                Some(k) => Some(Zeroizing::new(k)),
                None => {
                    problems.push(format!("line {n}: holder '{id}': key1 must be 32 bytes of hex"));
                    continue;
                }
            },
            None => None,
        };
        holders.push(Holder {
            id: id.to_string(),
            pin: Zeroizing::new(pin.as_bytes().to_vec()),
            member_number: member,
            expiry,
            key1,
        });
    }
    if !problems.is_empty() {
        return Err(Error::Usage(format!(
            "holder file has {} bad row(s); nothing was issued:\n  {}",
            problems.len(),
            problems.join("\n  ")
        )));
    }
    if holders.is_empty() {
        return Err(Error::Usage("the holder file has no holder rows".into()));
    }
    Ok(holders)
}

/// Options shared by every card of a batch.
pub struct IssueOptions {
    pub admin_key: Secret,
    pub key_group_size: u8,
    pub no_export_after_backup: bool,
}

/// Personalize one blank card as `role` ("main" or "backup") for `holder`.
/// Returns the card number. Any refusal is an error: the card goes to the
/// reject bin.
pub fn personalize(
    card: &mut CardClient<'_>,
    holder: &Holder,
    role: &str,
    key1: &[u8],
    opts: &IssueOptions,
) -> Result<String> {
    let st = card.status()?;
    if st.issued {
        return Err(Error::Refused(format!(
            "card {} is already issued (role {})",
            st.card_number, st.role
        )));
    }
    card.admin_authenticate(&opts.admin_key, &st.card_number)?;
    card.reset_retry_counter(Some(&holder.pin))?;
    card.put_data(tag::ROLE, role.as_bytes())?;
    card.put_data(tag::KEY_GROUP_SIZE, &[opts.key_group_size])?;
    if role == "main" {
        let member = holder.member_number.as_deref().unwrap_or_default();
        let expiry = holder.expiry.as_deref().unwrap_or_default();
        card.put_data(tag::MEMBER_NUMBER, member.as_bytes())?;
        card.put_data(tag::EXPIRY, expiry.as_bytes())?;
        card.put_data(tag::EXPORT_POLICY, &[opts.no_export_after_backup as u8])?;
    }
    card.write_key_element(1, key1)?;
    card.end_personalization()?;
    // Read back what the card now says and check it against the profile.
    let after = card.status()?;
    let wanted_member = (role == "main").then(|| holder.member_number.clone()).flatten();
    if !after.issued || after.role != role || after.member_number != wanted_member {
        return Err(Error::Refused(format!(
            "card {} does not report the personalization just written",
            after.card_number
        )));
    }
    Ok(after.card_number)
}

/// Outcome for one card of the batch.
#[derive(Debug, Clone, Serialize)]
pub struct IssueRecord {
    pub holder: String,
    pub role: String,
    pub reader: String,
    pub card_number: Option<String>,
    /// "issued" or "rejected".
    pub result: String,
    pub reason: Option<String>,
}
