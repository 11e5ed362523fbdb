//! Card profiles: what a fresh card looks like when the simulator creates it.
//!
//! A profile is a TOML file (see fixtures/profiles/). The built-in names `main`,
//! `backup`, `replacement`, `blank`, `foreign`, `services` and
//! `blank-services` are compiled in.

use serde::Deserialize;

/// A card profile as read from TOML.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Role reported by GET DATA (main, backup, replacement, issuer, blank...).
    pub role: String,
    /// Card number; when absent a random 16-digit number is generated.
    pub card_number: Option<String>,
    /// Initial holder PIN (test and demo cards only; issuance sets real ones).
    pub pin: String,
    #[serde(default = "default_tries")]
    pub pin_max_tries: u8,
    #[serde(default = "default_page_size")]
    pub page_size: u16,
    #[serde(default = "default_page_count")]
    pub page_count: u16,
    /// Whether the card (and the reader path it sits behind) accepts extended-length APDUs.
    #[serde(default = "default_true")]
    pub extended_length: bool,
    /// Card leaves the factory already personalized (test cards); blank cards are
    /// personalized by `cardvault issue`.
    #[serde(default)]
    pub issued: bool,
    /// Number of key group elements, 1 to 8.
    #[serde(default = "default_group_size")]
    pub key_group_size: u8,
    /// Key group element 1 (hex, 32 bytes) for pre-issued test cards.
    pub key1: Option<String>,
    pub member_number: Option<String>,
    pub expiry: Option<String>,
    /// Export policy: no key take-out at all once a backup exists.
    #[serde(default)]
    pub no_export_after_backup: bool,
    /// Whether the cardvault applet is installed. A card without it answers
    /// 6A82 to SELECT, like any other card in a reader (tests of foreign cards).
    #[serde(default = "default_true")]
    pub applet_installed: bool,
    /// The card gets an SCP11 key pair and a certificate signed by the built-in
    /// **test** issuer (fixtures/issuer/), with that issuer's root as trust anchor.
    #[serde(default = "default_true")]
    pub test_issuer_certificate: bool,
    /// The card leaves the **test factory** (`blank` profile): its ECKA key is
    /// certified by the test factory CA (fixtures/factory/) as role `blank`
    /// instead of by the test issuer; the test issuer root is still installed
    /// as trust anchor, so that issuance runs under SCP11a and replaces the
    /// factory certificate by a registration certificate.
    #[serde(default)]
    pub factory_certificate: bool,
    /// Sensitive commands are refused (6982) unless they arrive under SCP11
    /// (docs/PROTOCOL.md, "Secure channel"). On unless a profile turns it off
    /// (`require_secure_channel = false`, for conformance tests of something
    /// else than the secure channel).
    #[serde(default = "default_true")]
    pub require_secure_channel: bool,
    /// How many items the electronic wallet holds (1 to 32).
    #[serde(default = "default_wallet_capacity")]
    pub wallet_capacity: u8,
    /// The application table.
    #[serde(default, rename = "application")]
    pub applications: Vec<crate::state::Application>,
}

fn default_wallet_capacity() -> u8 {
    crate::wallet::DEFAULT_CAPACITY
}

fn default_group_size() -> u8 {
    3
}

fn default_tries() -> u8 {
    3
}
fn default_page_size() -> u16 {
    256
}
fn default_page_count() -> u16 {
    256
}
fn default_true() -> bool {
    true
}

/// Why a profile with `common_key` is refused.
pub const REFUSED_COMMON_KEY: &str = "common_key: a profile carries no card-common key (every card made from it \
would share it); blank cards get their issuer domain's key at issuance (`cardvault issue --domain DIR`), \
pre-issued test cards a random test domain of their simulator directory; remove the line";

const BUILTIN: &[(&str, &str)] = &[
    ("main", include_str!("../profiles/main.toml")),
    ("backup", include_str!("../profiles/backup.toml")),
    ("replacement", include_str!("../profiles/replacement.toml")),
    ("blank", include_str!("../profiles/blank.toml")),
    ("foreign", include_str!("../profiles/foreign.toml")),
    ("services", include_str!("../profiles/services.toml")),
    ("blank-services", include_str!("../profiles/blank-services.toml")),
];

impl Profile {
    /// Parse profile TOML.
    pub fn from_toml(text: &str) -> Result<Profile, String> {
        // A key in a profile file is a key on every card made from it: the
        // card-common key comes from the domain's key ceremony instead.
        if let Ok(table) = text.parse::<toml::Table>() {
            if table.contains_key("common_key") {
                return Err(REFUSED_COMMON_KEY.into());
            }
        }
        let p: Profile = toml::from_str(text).map_err(|e| e.to_string())?;
        p.validate()?;
        Ok(p)
    }

    /// A built-in profile by name, or a profile file by path.
    pub fn load(name_or_path: &str) -> Result<Profile, String> {
        if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            return Profile::from_toml(text);
        }
        let text = std::fs::read_to_string(name_or_path).map_err(|e| {
            format!(
                "profile '{name_or_path}' is neither a built-in ({}) nor a readable file: {e}",
                BUILTIN.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            )
        })?;
        Profile::from_toml(&text).map_err(|e| format!("profile {name_or_path}: {e}"))
    }

    /// Names of the built-in profiles.
    pub fn builtin_names() -> Vec<&'static str> {
        BUILTIN.iter().map(|(n, _)| *n).collect()
    }

    fn validate(&self) -> Result<(), String> {
        let pin_ok = (cardvault_proto::PIN_MIN_LEN..=cardvault_proto::PIN_MAX_LEN).contains(&self.pin.len());
        if !pin_ok {
            return Err(format!(
                "pin must be {} to {} bytes",
                cardvault_proto::PIN_MIN_LEN,
                cardvault_proto::PIN_MAX_LEN
            ));
        }
        if !(1..=15).contains(&self.pin_max_tries) {
            return Err("pin_max_tries must be 1 to 15".into());
        }
        if !(16..=4096).contains(&self.page_size) || self.page_count == 0 {
            return Err("page_size must be 16 to 4096 and page_count at least 1".into());
        }
        if !(1..=8).contains(&self.key_group_size) {
            return Err("key_group_size must be 1 to 8".into());
        }
        if !(1..=cardvault_proto::wallet::MAX_CAPACITY).contains(&self.wallet_capacity) {
            return Err(format!(
                "wallet_capacity must be 1 to {}",
                cardvault_proto::wallet::MAX_CAPACITY
            ));
        }
        if let Some(k) = &self.key1 {
            if cardvault_proto::from_hex(k).map(|k| k.len()) != Some(32) {
                return Err("key1 must be 32 bytes of hex".into());
            }
        }
        let mut used = vec![false; self.page_count as usize];
        for a in &self.applications {
            let end = a.first_page as usize + a.page_count as usize;
            if a.page_count == 0 || end > self.page_count as usize {
                return Err(format!("application {} lies outside the memory", a.name));
            }
            for u in &mut used[a.first_page as usize..end] {
                if *u {
                    return Err(format!("application {} overlaps another", a.name));
                }
                *u = true;
            }
        }
        if let Some(n) = &self.card_number {
            if n.is_empty() || n.len() > 32 || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err("card_number must be 1 to 32 letters, digits or '-'".into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_parse() {
        for name in Profile::builtin_names() {
            Profile::load(name).unwrap();
        }
    }

    #[test]
    fn bad_profiles_are_refused() {
        let base = Profile::load("main").unwrap();
        assert!(Profile::from_toml("role='x'\npin='12'").is_err());
        assert!(Profile::from_toml("role='x'\npin='1234'\nbogus=1").is_err());
        // The shared admin key is gone: a profile that still names one is refused.
        let old = "role='x'\npin='1234'\nadmin_key='000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f'";
        assert!(Profile::from_toml(old).unwrap_err().contains("admin_key"));
        assert!(Profile::from_toml("role='x'\npin='1234'").is_ok());
        assert_eq!(base.page_size, 256);
        let e = Profile::from_toml(&format!("role='x'\npin='1234'\ncommon_key='{}'", "11".repeat(32))).unwrap_err();
        assert!(e.contains("carries no card-common key"), "{e}");
    }

    #[test]
    fn no_builtin_profile_carries_a_common_key() {
        for name in Profile::builtin_names() {
            let text = BUILTIN.iter().find(|(n, _)| *n == name).unwrap().1;
            assert!(
                !text.parse::<toml::Table>().unwrap().contains_key("common_key"),
                "{name}"
            );
        }
    }
}
