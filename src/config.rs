//! Configuration: `config.toml` (path by `--config` or `CARDVAULT_CONFIG`,
//! else `~/.config/cardvault/config.toml` when present). Command-line flags
//! override every value here.

use crate::error::{Error, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// When to use extended-length APDUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ExtendedMode {
    /// When the card's ATR announces extended Lc/Le.
    #[default]
    Auto,
    /// Always (the reader and card are known to take them).
    Always,
    /// Never: short APDUs, command chaining and GET RESPONSE only.
    Never,
}

impl ExtendedMode {
    /// The forced value, or `None` for "decide from the ATR".
    pub fn forced(self) -> Option<bool> {
        match self {
            ExtendedMode::Auto => None,
            ExtendedMode::Always => Some(true),
            ExtendedMode::Never => Some(false),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApduConfig {
    #[serde(default)]
    pub extended_length: ExtendedMode,
    /// Seconds a PC/SC card may take to answer one APDU (1 to 3600).
    #[serde(default = "default_apdu_timeout")]
    pub timeout: u64,
}

impl Default for ApduConfig {
    fn default() -> Self {
        ApduConfig {
            extended_length: ExtendedMode::default(),
            timeout: default_apdu_timeout(),
        }
    }
}

/// Default APDU timeout: far above the slowest legitimate answer (key
/// generation on a slow card, a 64 KiB backup block), short enough for an
/// operator to wait.
pub const DEFAULT_APDU_TIMEOUT: u64 = 30;

fn default_apdu_timeout() -> u64 {
    DEFAULT_APDU_TIMEOUT
}

impl ApduConfig {
    pub fn timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.timeout)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// Profile for embedded cards that do not exist yet.
    #[serde(default = "default_profile")]
    pub profile: String,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            profile: default_profile(),
        }
    }
}

fn default_profile() -> String {
    "main".into()
}

/// Settings for readers whose name contains the key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReaderConfig {
    #[serde(default)]
    pub extended_length: ExtendedMode,
}

/// The configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Default reader: index, name substring or `sim:NAME`.
    pub reader: Option<String>,
    /// Where embedded cards (and by default the vault) live.
    pub data_dir: Option<PathBuf>,
    /// The vault file (default: vault.sqlite in the data directory).
    pub vault: Option<PathBuf>,
    #[serde(default)]
    pub apdu: ApduConfig,
    #[serde(default)]
    pub sim: SimConfig,
    #[serde(default)]
    pub readers: BTreeMap<String, ReaderConfig>,
    /// Trusted card issuer roots (PEM files); relative paths are relative to
    /// the configuration file. `--trust` and `CARDVAULT_TRUST` replace them.
    #[serde(default)]
    pub trust: Vec<PathBuf>,
    /// Trusted factory CAs (PEM files) for blank cards' factory certificates
    /// at issuance; relative paths as for `trust`. `--factory-trust` and
    /// `CARDVAULT_FACTORY_TRUST` replace them.
    #[serde(default)]
    pub factory_trust: Vec<PathBuf>,
    #[serde(default)]
    pub pkcs11: Pkcs11Config,
    #[serde(default)]
    pub watch: WatchConfig,
    #[serde(default)]
    pub wallet: WalletConfig,
}

/// `[wallet]`: the electronic wallet's settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalletConfig {
    /// `[wallet.backup]`: the default conditions of `wallet backup` and of
    /// the deposit a load that does not fit makes first.
    #[serde(default)]
    pub backup: crate::workflow::wallet::BackupConditions,
}

/// `[watch]`: what `cardvault watch` does with each card inserted.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// Actions per card, in order. `backup`: a backup into the vault
    /// (differential once a full one exists: only the pages changed since).
    #[serde(default = "default_watch_actions")]
    pub actions: Vec<WatchAction>,
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            actions: default_watch_actions(),
        }
    }
}

/// One action of `cardvault watch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WatchAction {
    Backup,
}

fn default_watch_actions() -> Vec<WatchAction> {
    vec![WatchAction::Backup]
}

/// `[pkcs11]`: the module that holds issuer keys named by `pkcs11:` URIs.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// The PKCS#11 module (shared library); `module-path=` in the URI and
    /// `CARDVAULT_PKCS11_MODULE` override it.
    pub module: Option<PathBuf>,
}

impl Config {
    /// Load from an explicit path (must exist) or the per-user default (may be absent).
    pub fn load(explicit: Option<&Path>) -> Result<(Config, Option<PathBuf>)> {
        let path = match explicit {
            Some(p) => Some(p.to_path_buf()),
            None => user_config_path().filter(|p| p.exists()),
        };
        let Some(path) = path else {
            return Ok((Config::default(), None));
        };
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Config {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let cfg = Config::parse(&text).map_err(|reason| Error::Config {
            path: path.clone(),
            reason,
        })?;
        Ok((cfg, Some(path)))
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        let cfg: Config = toml::from_str(text).map_err(|e| e.message().to_string())?;
        if !(1..=3600).contains(&cfg.apdu.timeout) {
            return Err(format!("[apdu] timeout = {}: give 1 to 3600 seconds", cfg.apdu.timeout));
        }
        if let Some(r) = &cfg.reader {
            if r.trim().is_empty() {
                return Err("reader must not be empty (remove the line for no default)".into());
            }
        }
        Ok(cfg)
    }

    /// Extended-length mode for a reader: the first `[readers."..."]` entry whose key the
    /// reader name contains, else `[apdu]`.
    pub fn extended_for(&self, reader: &str) -> ExtendedMode {
        self.readers
            .iter()
            .find(|(k, _)| reader.contains(k.as_str()))
            .map(|(_, r)| r.extended_length)
            .filter(|m| *m != ExtendedMode::Auto)
            .unwrap_or(self.apdu.extended_length)
    }
}

fn user_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("cardvault").join("config.toml"))
}

/// Default data directory: `$XDG_DATA_HOME/cardvault` or `~/.local/share/cardvault`.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("cardvault")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_parses() {
        let text = include_str!("../config.toml");
        let cfg = Config::parse(text).unwrap();
        assert_eq!(cfg.apdu.extended_length, ExtendedMode::Auto);
        assert_eq!(cfg.apdu.timeout, DEFAULT_APDU_TIMEOUT);
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values() {
        assert!(Config::parse("bogus = 1").is_err());
        assert!(Config::parse("[apdu]\nextended_length = \"sometimes\"").is_err());
        assert!(Config::parse("reader = \"  \"").is_err());
        assert!(Config::parse("[apdu]\ntimeout = 0").is_err());
        assert!(Config::parse("[apdu]\ntimeout = -1").is_err());
        assert_eq!(Config::parse("[apdu]\ntimeout = 5").unwrap().apdu.timeout, 5);
    }

    #[test]
    fn per_reader_override_wins() {
        let cfg = Config::parse("[apdu]\nextended_length='always'\n[readers.\"PCD 00 01\"]\nextended_length='never'")
            .unwrap();
        assert_eq!(cfg.extended_for("Virtual PCD 00 01"), ExtendedMode::Never);
        assert_eq!(cfg.extended_for("Virtual PCD 00 00"), ExtendedMode::Always);
    }
}
