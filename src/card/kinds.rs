//! What a card says it is and where its duplicate stands, as enums. Their
//! `Display` and `FromStr` (and JSON) use exactly the strings the card, the
//! vault and the JSON output have always used.

use serde::{Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// The role a card was made for (GET DATA DF02), as the card names it.
/// A card is untrusted input: a role this terminal does not know is kept as
/// the card said it, not refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CardRole {
    /// Holds the holder's main keys (patent's "main card").
    Main,
    /// Receives the duplicate of a main card's keys.
    Backup,
    /// A new main card that takes a broken one's place (recovery, restore).
    Replacement,
    /// Not personalized yet (`cardvault issue` makes it a main or backup card).
    Blank,
    Other(String),
}

impl CardRole {
    pub fn as_str(&self) -> &str {
        match self {
            CardRole::Main => "main",
            CardRole::Backup => "backup",
            CardRole::Replacement => "replacement",
            CardRole::Blank => "blank",
            CardRole::Other(s) => s,
        }
    }

    /// Whether the card may hold main keys that a backup card duplicates.
    pub fn holds_main_keys(&self) -> bool {
        matches!(self, CardRole::Main | CardRole::Replacement)
    }
}

impl From<&str> for CardRole {
    fn from(s: &str) -> CardRole {
        match s {
            "main" => CardRole::Main,
            "backup" => CardRole::Backup,
            "replacement" => CardRole::Replacement,
            "blank" => CardRole::Blank,
            other => CardRole::Other(other.to_string()),
        }
    }
}

impl FromStr for CardRole {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<CardRole, Self::Err> {
        Ok(CardRole::from(s))
    }
}

impl fmt::Display for CardRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl Serialize for CardRole {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl PartialEq<&str> for CardRole {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Where the main card's one duplicate stands (EXPORT STATUS, DF13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportState {
    /// No take-out yet.
    None,
    /// A take-out is bound to a target card; no receipt has confirmed it.
    Pending,
    /// The backup card's receipt confirmed the duplicate.
    Confirmed,
}

impl ExportState {
    /// From the state byte of EXPORT STATUS.
    pub fn from_byte(b: u8) -> ExportState {
        match b {
            0 => ExportState::None,
            1 => ExportState::Pending,
            _ => ExportState::Confirmed,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExportState::None => "none",
            ExportState::Pending => "pending",
            ExportState::Confirmed => "confirmed",
        }
    }
}

impl FromStr for ExportState {
    type Err = String;
    fn from_str(s: &str) -> Result<ExportState, String> {
        match s {
            "none" => Ok(ExportState::None),
            "pending" => Ok(ExportState::Pending),
            "confirmed" => Ok(ExportState::Confirmed),
            other => Err(format!("unknown export state '{other}'")),
        }
    }
}

impl fmt::Display for ExportState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_and_json_keeps_them() {
        for r in ["main", "backup", "replacement", "blank", "something-else"] {
            let role: CardRole = r.parse().unwrap();
            assert_eq!(role.to_string(), r);
            assert_eq!(serde_json::to_value(&role).unwrap(), r);
        }
        for s in ["none", "pending", "confirmed"] {
            let e: ExportState = s.parse().unwrap();
            assert_eq!(e.to_string(), s);
            assert_eq!(serde_json::to_value(e).unwrap(), s);
        }
        assert_eq!(ExportState::from_byte(1), ExportState::Pending);
        assert!("weird".parse::<ExportState>().is_err());
    }
}
