//! The embedded reader: a simulated card running in this process, its state
//! file under the data directory so the card persists between commands.

use super::{Caps, Reader, Transmit, TransportError};
use crate::error::{Error, Result};
use applet_sim::{Card, Profile, StoreError};
use std::path::{Path, PathBuf};

/// File name suffix of embedded card state files.
pub const CARD_SUFFIX: &str = ".card";

/// Where the embedded card `name` lives.
pub fn card_path(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("cards").join(format!("{name}{CARD_SUFFIX}"))
}

/// Names of the embedded cards that exist under `data_dir`.
pub fn list(data_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data_dir.join("cards"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(CARD_SUFFIX).map(str::to_string))
        .collect();
    names.sort();
    names
}

/// Valid embedded card names: letters, digits, '-', '_', '.'; no path separators.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The ATR of embedded card `name` (without opening it, so a card held by
/// another process is still listed), or `None` when it cannot be read.
pub fn peek_atr(data_dir: &Path, name: &str) -> Option<Vec<u8>> {
    applet_sim::state::Store::peek(&card_path(data_dir, name))
        .ok()
        .map(|st| applet_sim::iso::atr(st.extended_length))
}

fn store_error(e: StoreError) -> Error {
    match e {
        StoreError::Locked { .. } => Error::EmbeddedBusy(e.to_string()),
        _ => Error::Embedded(e.to_string()),
    }
}

/// An embedded simulated card.
pub struct SimReader {
    name: String,
    card: Card,
    atr: Vec<u8>,
    caps: Caps,
    created: bool,
}

impl SimReader {
    /// Open embedded card `name`, creating it from `profile` if it does not exist.
    pub fn open(data_dir: &Path, name: &str, profile: &str, extended: Option<bool>) -> Result<SimReader> {
        if !valid_name(name) {
            return Err(Error::Usage(format!(
                "'sim:{name}': an embedded card name uses letters, digits, '-', '_' and '.'"
            )));
        }
        let path = card_path(data_dir, name);
        let profile = if path.exists() {
            // Not used for an existing card; avoid failing on a bad default profile.
            Profile::load("main").map_err(Error::Usage)?
        } else {
            Profile::load(profile).map_err(Error::Usage)?
        };
        let (mut card, created) = Card::open(&path, &profile).map_err(store_error)?;
        card.power_on();
        let atr = card.atr();
        let from_atr = super::atr::card_capabilities(&atr).map(|(_, e)| e).unwrap_or(false);
        Ok(SimReader {
            name: format!("sim:{name}"),
            card,
            atr,
            caps: Caps {
                extended: extended.unwrap_or(from_atr),
            },
            created,
        })
    }

    /// Whether this open created the card.
    pub fn created(&self) -> bool {
        self.created
    }

    /// The simulated card itself (tests and fault injection).
    pub fn card(&self) -> &Card {
        &self.card
    }

    /// The simulated card, to change (tests: a hostile applet).
    pub fn card_mut(&mut self) -> &mut Card {
        &mut self.card
    }
}

impl Reader for SimReader {
    fn name(&self) -> &str {
        &self.name
    }

    fn atr(&self) -> &[u8] {
        &self.atr
    }

    fn caps(&self) -> Caps {
        self.caps
    }

    fn transaction(&mut self) -> Result<Box<dyn Transmit + '_>, TransportError> {
        Ok(Box::new(SimTransaction(&mut self.card)))
    }

    /// Embedded cards are certified by the built-in **test** issuer
    /// (fixtures/issuer/test-root.pem), which they are trusted under.
    fn built_in_root(&self) -> Option<&'static [u8]> {
        Some(applet_sim::test_issuer::ROOT_PEM)
    }

    /// Embedded blank cards carry a factory certificate from the built-in
    /// **test** factory CA (fixtures/factory/test-factory-ca.pem).
    fn built_in_factory_root(&self) -> Option<&'static [u8]> {
        Some(applet_sim::test_issuer::FACTORY_CA_PEM)
    }

    /// The built-in **test** issuer (fixtures/issuer/): its root is installed
    /// on embedded blank cards, and it certifies them when `issue` names no
    /// issuer; with the **test** registrar roots (fixtures/registrars/).
    fn built_in_issuer(&self) -> Option<super::BuiltInIssuer> {
        use applet_sim::test_issuer as t;
        Some(super::BuiltInIssuer {
            root: t::ROOT_PEM,
            root_key: t::ROOT_KEY_PEM,
            oce: t::OCE_PEM,
            oce_key: t::OCE_KEY_PEM,
            issuer_registrar: applet_sim::test_registrars::ISSUER_REGISTRAR_PEM,
            data_registrar: applet_sim::test_registrars::DATA_REGISTRAR_PEM,
        })
    }
}

struct SimTransaction<'a>(&'a mut Card);

impl Transmit for SimTransaction<'_> {
    fn transmit(&mut self, cmd: &[u8], resp: &mut Vec<u8>) -> Result<(), TransportError> {
        self.0.transmit_into(cmd, resp);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::atr::card_capabilities;
    use applet_sim::{Card, Profile};

    #[test]
    fn reads_simulator_capabilities() {
        let p = Profile::load("main").unwrap();
        let card = Card::in_memory(&p);
        assert_eq!(card_capabilities(&card.atr()), Some((true, true)));
        let short = Profile::from_toml("role='main'\npin='123456'\nextended_length=false").unwrap();
        let card = Card::in_memory(&short);
        assert_eq!(card_capabilities(&card.atr()), Some((true, false)));
    }
}
