//! Persistent card state (the card's EEPROM) and its atomic storage.
//!
//! Every change is written to a temporary file, fsynced and renamed over the
//! state file before the card answers, so a simulator killed at any point
//! leaves the last committed state, like a card pulled from a reader.

use crate::factory::TestDomain;
use crate::profile::Profile;
use cardvault_proto::domain::DomainRef;
use cardvault_proto::{from_hex, fsutil};
use openssl::sha::sha256;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use zeroize::Zeroize;

/// State file format version.
pub const STATE_VERSION: u32 = 1;

/// The holder PIN: a salted hash and the retry counter.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PinState {
    #[serde(with = "hexbytes")]
    pub salt: Vec<u8>,
    #[serde(with = "hexbytes")]
    pub hash: Vec<u8>,
    pub max_tries: u8,
    pub tries_left: u8,
}

impl PinState {
    pub fn new(pin: &[u8], max_tries: u8) -> PinState {
        let mut salt = vec![0u8; 16];
        openssl::rand::rand_bytes(&mut salt).expect("card RNG");
        let hash = Self::digest(&salt, pin);
        PinState {
            salt,
            hash,
            max_tries,
            tries_left: max_tries,
        }
    }

    pub fn digest(salt: &[u8], pin: &[u8]) -> Vec<u8> {
        let mut buf = Vec::with_capacity(salt.len() + pin.len());
        buf.extend_from_slice(salt);
        buf.extend_from_slice(pin);
        let h = sha256(&buf).to_vec();
        buf.zeroize();
        h
    }

    /// Constant-time comparison of a presented PIN.
    pub fn matches(&self, pin: &[u8]) -> bool {
        let h = Self::digest(&self.salt, pin);
        h.len() == self.hash.len() && openssl::memcmp::eq(&h, &self.hash)
    }

    pub fn blocked(&self) -> bool {
        self.tries_left == 0
    }
}

/// Everything the card keeps across power cycles.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CardState {
    pub version: u32,
    pub card_number: String,
    pub role: String,
    pub pin: PinState,
    pub page_size: u16,
    pub page_count: u16,
    pub extended_length: bool,
    /// Application memory, `page_size * page_count` bytes.
    #[serde(with = "hexbytes")]
    pub memory: Vec<u8>,
    /// Personalization is finished (END PERSONALIZATION); issuer-only data is frozen.
    #[serde(default)]
    pub issued: bool,
    #[serde(default)]
    pub member_number: String,
    #[serde(default)]
    pub expiry: String,
    #[serde(default)]
    pub key_group: KeyGroupState,
    /// The main key pair ("first key"), when the card holds one.
    #[serde(default)]
    pub main_key: Option<MainKey>,
    /// A peer's encryption key, for re-encrypting file keys to it (FIG. 5).
    #[serde(default, with = "hexbytes")]
    pub peer_key: Vec<u8>,
    #[serde(default)]
    pub export: ExportState,
    /// Backup card: take-outs destroyed by DESTROY KEY.
    #[serde(default)]
    pub destroyed: DestroyedImports,
    /// Card-unique key (backup encryption), generated on the card.
    #[serde(default, with = "hexbytes")]
    pub unique_key: Vec<u8>,
    /// Card-common key of the issuer domain (wraps the unique key in backups):
    /// loaded by LOAD DOMAIN KEY at issuance (empty until then), or from the
    /// simulator directory's test domain for pre-issued test cards.
    #[serde(default, with = "hexbytes")]
    pub common_key: Vec<u8>,
    /// The issuer domain of `common_key`: its id (16 bytes; empty without a key).
    #[serde(default, with = "hexbytes")]
    pub domain_id: Vec<u8>,
    /// The domain's key generation (0 without a key).
    #[serde(default)]
    pub domain_generation: u32,
    /// The application table.
    #[serde(default)]
    pub applications: Vec<Application>,
    /// One change flag per page (bitmap, page i = bit i%8 of byte i/8).
    #[serde(default, with = "hexbytes")]
    pub change_flags: Vec<u8>,
    #[serde(default)]
    pub backup: BackupCounters,
    /// The cardvault applet is installed (false: a foreign card, SELECT gives 6A82).
    #[serde(default = "yes")]
    pub applet_installed: bool,
    /// Outstanding challenge for an other-card restore authorization.
    #[serde(default, with = "hexbytes")]
    pub restore_challenge: Vec<u8>,
    /// Outstanding challenge for an issuer load authorization (CREDIT).
    #[serde(default, with = "hexbytes")]
    pub load_challenge: Vec<u8>,
    /// SCP11: the card's key agreement private key SK.SD.ECKA (P-256 scalar,
    /// 32 bytes; empty on cards made before secure messaging: no SCP11).
    /// Never readable from outside the card.
    #[serde(default, with = "hexbytes")]
    pub ecka_private: Vec<u8>,
    /// The card certificate over the ECKA public key (DER X.509), returned by
    /// GET DATA `BF21`: the factory certificate (role `blank`) until issuance
    /// stores the registration certificate (PUT DATA `BF21`).
    #[serde(default, with = "hexbytes")]
    pub certificate: Vec<u8>,
    /// The issuer root certificate (DER X.509) installed as the trust anchor
    /// for OCE certificate chains (SCP11a), registration certificates and the
    /// signers of restore and load authorizations. Installed at the factory;
    /// replaced at issuance by PUT DATA `BF22`.
    #[serde(default, with = "hexbytes")]
    pub trust_anchor: Vec<u8>,
    /// Sensitive commands are refused (6982) unless they arrive under SCP11.
    #[serde(default)]
    pub require_secure_channel: bool,
    /// Storing authorization (proto::storing): the card's storing key, its
    /// certificate, the registrar roots and the outstanding challenge.
    #[serde(default)]
    pub storing: crate::storing::StoringState,
    /// The electronic wallet (items of electronic value).
    #[serde(default)]
    pub wallet: crate::wallet::WalletState,
}

/// An application in the application area.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Application {
    pub id: u8,
    pub name: String,
    pub first_page: u16,
    pub page_count: u16,
    /// Holds value (e-money): reset after a restore (FIG. 20).
    pub value: bool,
    /// Set by RESTORE COMPLETE when the application's pages were restored.
    #[serde(default)]
    pub restored: bool,
    /// Owner and storage rule (storing authorization).
    #[serde(default, flatten)]
    pub storing: crate::storing::StoragePolicy,
}

/// Backup and restore counters (system area).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupCounters {
    /// Last counter handed out by BACKUP (never reused).
    pub issued: u32,
    /// Counter of the last completed backup or same-card restore: the base of
    /// the next differential (0 = none; a full backup is needed).
    pub base: u32,
    /// Newest backup counter this card has made or restored (anti-rollback).
    pub newest_seen: u32,
}

/// The key group ("second key"): write-once elements 1..n.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyGroupState {
    pub size: u8,
    /// One entry per element; empty = not written.
    pub elements: Vec<HexBytes>,
}

impl Drop for KeyGroupState {
    fn drop(&mut self) {
        for e in &mut self.elements {
            e.0.zeroize();
        }
    }
}

/// Where the main keys came from (the protocol's type; kept in the state
/// file by its string).
pub use cardvault_proto::takeout::KeyOrigin;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MainKey {
    #[serde(with = "hexbytes")]
    pub private: Vec<u8>,
    #[serde(with = "hexbytes")]
    pub public: Vec<u8>,
    #[serde(with = "origin_str")]
    pub origin: KeyOrigin,
    /// For an imported key: the card it came from.
    #[serde(default)]
    pub source_card: String,
    /// Whether GET DATA may return the encryption key (always on main cards;
    /// on backup cards only with the FIG. 26/27 variant).
    pub public_readable: bool,
}

impl Drop for MainKey {
    fn drop(&mut self) {
        self.private.zeroize();
    }
}

/// Export ("take-out") bookkeeping on a main card.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExportState {
    /// Take-outs made so far (bound into every blob).
    pub counter: u32,
    /// The one card a duplicate may go to, fixed by the first take-out.
    #[serde(default)]
    pub target: String,
    /// The target confirmed the import with a receipt.
    pub confirmed: bool,
    /// Policy: no take-out at all once a backup exists.
    pub no_export_after_backup: bool,
}

/// On a backup card: the take-outs it has destroyed (DESTROY KEY). IMPORT
/// KEY refuses a take-out from `source` numbered `counter` or lower, so a
/// receipt stays true.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DestroyedImports {
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub counter: u32,
}

/// Bytes stored as hex in the state file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HexBytes(pub Vec<u8>);

impl Serialize for HexBytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        hexbytes::serialize(&self.0, s)
    }
}

impl<'de> Deserialize<'de> for HexBytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        hexbytes::deserialize(d).map(HexBytes)
    }
}

impl Drop for CardState {
    fn drop(&mut self) {
        self.unique_key.zeroize();
        self.common_key.zeroize();
        self.ecka_private.zeroize();
        self.storing.private_key.zeroize();
        self.wallet.key.zeroize();
        for k in &mut self.wallet.old_keys {
            k.0.zeroize();
        }
        for r in &mut self.wallet.recovered {
            r.key.zeroize();
        }
    }
}

impl CardState {
    /// A fresh card made from a profile, in memory: a pre-issued profile's
    /// card gets the process's test domain ([`TestDomain::in_memory`]).
    pub fn from_profile(p: &Profile) -> CardState {
        CardState::from_profile_in(p, Some(TestDomain::in_memory()))
    }

    /// A fresh card made from a profile. A pre-issued card (`issued = true`)
    /// gets `test_domain`'s key, id and generation; a blank card gets no
    /// domain key (LOAD DOMAIN KEY at issuance).
    pub fn from_profile_in(p: &Profile, test_domain: Option<&TestDomain>) -> CardState {
        let domain = test_domain.filter(|_| p.issued && p.applet_installed);
        let card_number = p.card_number.clone().unwrap_or_else(random_card_number);
        CardState {
            version: STATE_VERSION,
            card_number,
            role: p.role.clone(),
            pin: PinState::new(p.pin.as_bytes(), p.pin_max_tries),
            page_size: p.page_size,
            page_count: p.page_count,
            extended_length: p.extended_length,
            memory: vec![0u8; p.page_size as usize * p.page_count as usize],
            issued: p.issued,
            member_number: p.member_number.clone().unwrap_or_default(),
            expiry: p.expiry.clone().unwrap_or_default(),
            key_group: KeyGroupState {
                size: p.key_group_size,
                elements: (0..p.key_group_size)
                    .map(|i| match (i, &p.key1) {
                        (0, Some(k)) => HexBytes(from_hex(k).expect("validated profile")),
                        _ => HexBytes::default(),
                    })
                    .collect(),
            },
            main_key: None,
            peer_key: Vec::new(),
            export: ExportState {
                no_export_after_backup: p.no_export_after_backup,
                ..ExportState::default()
            },
            destroyed: DestroyedImports::default(),
            unique_key: cardvault_proto::crypto::random::<32>().to_vec(),
            common_key: domain.map(|d| d.key.to_vec()).unwrap_or_default(),
            domain_id: domain.map(|d| d.domain.id.to_vec()).unwrap_or_default(),
            domain_generation: domain.map(|d| d.domain.generation).unwrap_or(0),
            applications: p.applications.clone(),
            change_flags: vec![0u8; (p.page_count as usize).div_ceil(8)],
            backup: BackupCounters::default(),
            restore_challenge: Vec::new(),
            load_challenge: Vec::new(),
            applet_installed: p.applet_installed,
            ecka_private: Vec::new(),
            certificate: Vec::new(),
            trust_anchor: Vec::new(),
            require_secure_channel: p.require_secure_channel,
            storing: Default::default(),
            wallet: crate::wallet::WalletState {
                capacity: p.wallet_capacity,
                ..Default::default()
            },
        }
        .with_identity(p)
        .with_storing_identity(p)
    }

    /// Give a new card its SCP11 identity: an ECKA key pair generated on the
    /// card, a certificate from the test issuer (or, for `factory_certificate`
    /// profiles, a factory certificate from the test factory CA) and the test
    /// issuer root as trust anchor (profiles with `test_issuer_certificate`,
    /// the default).
    fn with_identity(mut self, p: &Profile) -> CardState {
        if !p.test_issuer_certificate {
            return self;
        }
        let key = cardvault_proto::crypto::KeyPair::generate().expect("card RNG");
        let subject = cardvault_proto::cert::CardSubject {
            card_number: self.card_number.clone(),
            role: self.role.clone(),
            member_number: Some(self.member_number.clone()).filter(|m| !m.is_empty()),
        };
        let cert = if p.factory_certificate {
            crate::test_issuer::certify_blank_card(&key.public_bytes(), &self.card_number)
        } else {
            crate::test_issuer::certify_card(&key.public_bytes(), &subject)
        };
        self.ecka_private = key.private_bytes().to_vec();
        self.certificate = cert;
        self.trust_anchor = crate::test_issuer::root_der();
        self
    }

    /// The card's issuer domain ([`DomainRef::NONE`] without a domain key).
    pub fn domain(&self) -> DomainRef {
        match <[u8; 16]>::try_from(&self.domain_id[..]) {
            Ok(id) if self.has_domain_key() => DomainRef {
                id,
                generation: self.domain_generation,
            },
            _ => DomainRef::NONE,
        }
    }

    /// Whether the card holds its domain's card-common key.
    pub fn has_domain_key(&self) -> bool {
        self.common_key.len() == 32
    }

    /// The card's SCP11 key pair, when it has one.
    pub fn ecka_key(&self) -> Option<cardvault_proto::crypto::KeyPair> {
        if self.ecka_private.is_empty() {
            return None;
        }
        cardvault_proto::crypto::KeyPair::from_private(&self.ecka_private).ok()
    }

    fn check(&self) -> Result<(), String> {
        if self.version != STATE_VERSION {
            return Err(format!("state version {} is not {}", self.version, STATE_VERSION));
        }
        if self.memory.len() != self.page_size as usize * self.page_count as usize {
            return Err("memory size does not match page size and count".into());
        }
        if self.pin.tries_left > self.pin.max_tries {
            return Err("inconsistent PIN or key fields".into());
        }
        let kg = &self.key_group;
        if kg.size as usize != kg.elements.len()
            || kg.size > 8
            || kg.elements.iter().any(|e| !matches!(e.0.len(), 0 | 32))
        {
            return Err("inconsistent key group".into());
        }
        if self.change_flags.len() != (self.page_count as usize).div_ceil(8) || self.unique_key.len() != 32 {
            return Err("inconsistent backup fields".into());
        }
        let domain_ok = match self.common_key.len() {
            0 => self.domain_id.is_empty() && self.domain_generation == 0,
            32 => self.domain_id.len() == 16 && self.domain_generation != 0,
            _ => false,
        };
        if !domain_ok {
            return Err("inconsistent domain key, id or generation".into());
        }
        if !matches!(self.ecka_private.len(), 0 | 32) || (!self.ecka_private.is_empty() && self.certificate.is_empty())
        {
            return Err("inconsistent secure channel key or certificate".into());
        }
        if let Some(k) = &self.main_key {
            if k.private.len() != 32 || k.public.len() != 65 {
                return Err("inconsistent main key".into());
            }
        }
        Ok(())
    }
}

fn yes() -> bool {
    true
}

/// A random 16-digit card number from the card's RNG.
pub fn random_card_number() -> String {
    let mut b = [0u8; 8];
    openssl::rand::rand_bytes(&mut b).expect("card RNG");
    format!("{:016}", u64::from_be_bytes(b) % 10_000_000_000_000_000)
}

/// Where the state lives: a file (real simulator and embedded reader) or nowhere (unit tests).
#[derive(Debug)]
pub enum Store {
    Memory,
    File { path: PathBuf, _lock: File },
}

/// Errors opening or writing a card state file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("card state {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("card state {path} is in use by another process (a simulator or terminal already holds this card)")]
    Locked { path: PathBuf },
    #[error("card state {path} is damaged: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

impl Store {
    /// Open the card at `path`, creating it from `profile` when the file does not exist.
    /// The card is locked for this process (one reader holds one card).
    pub fn open(path: &Path, profile: &Profile) -> Result<(Store, CardState, bool), StoreError> {
        let io = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
        }
        let lock_path = lock_path(path);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io)?;
        // A lock can outlive its holder by a few milliseconds: a thread of the
        // holding process that is starting a program shares the descriptor
        // between fork and exec. So a busy card is retried briefly before it
        // is called in use.
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
        loop {
            // SAFETY: flock on a file descriptor we own.
            if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                break;
            }
            if std::time::Instant::now() >= deadline {
                return Err(StoreError::Locked {
                    path: path.to_path_buf(),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // Holding the lock, no other writer of this card is alive: temporary
        // files beside it were left by a simulator killed mid-write.
        fsutil::remove_stale_temps(path).map_err(io)?;
        let store = Store::File {
            path: path.to_path_buf(),
            _lock: lock,
        };
        match std::fs::read(path) {
            Ok(bytes) => {
                let state = Self::decode(path, &bytes)?;
                Ok((store, state, false))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A pre-issued test card gets its directory's test domain.
                let test_domain = if profile.issued && profile.applet_installed {
                    let dir = path
                        .parent()
                        .filter(|d| !d.as_os_str().is_empty())
                        .unwrap_or(Path::new("."));
                    Some(TestDomain::of_dir(dir).map_err(io)?)
                } else {
                    None
                };
                let state = CardState::from_profile_in(profile, test_domain.as_ref());
                store.commit(&state)?;
                Ok((store, state, true))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// Read a state file without locking it (inspection and tests).
    pub fn peek(path: &Path) -> Result<CardState, StoreError> {
        let bytes = std::fs::read(path).map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::decode(path, &bytes)
    }

    fn decode(path: &Path, bytes: &[u8]) -> Result<CardState, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let state: CardState = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        state.check().map_err(corrupt)?;
        Ok(state)
    }

    /// Durably replace the stored state through [`fsutil::atomic_write`]:
    /// temporary file (mode 0600), fsync, rename, fsync of the directory.
    pub fn commit(&self, state: &CardState) -> Result<(), StoreError> {
        let Store::File { path, .. } = self else {
            return Ok(());
        };
        let mut bytes = serde_json::to_vec(state).expect("state serializes");
        let result = fsutil::atomic_write(path, &bytes);
        bytes.zeroize();
        result.map_err(|source| StoreError::Io {
            path: path.clone(),
            source,
        })
    }
}

fn lock_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

mod origin_str {
    use super::KeyOrigin;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(o: &KeyOrigin, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(o.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<KeyOrigin, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

mod hexbytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&cardvault_proto::to_hex(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        cardvault_proto::from_hex(&s).ok_or_else(|| serde::de::Error::custom("invalid hex"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_commit_reopen() {
        let dir = std::env::temp_dir().join(format!("cv-state-{}", std::process::id()));
        let path = dir.join("a.card");
        let _ = std::fs::remove_dir_all(&dir);
        let p = Profile::load("main").unwrap();
        let (store, mut st, created) = Store::open(&path, &p).unwrap();
        assert!(created);
        st.memory[0] = 7;
        store.commit(&st).unwrap();
        // A second opener is refused while the first holds the card.
        assert!(matches!(Store::open(&path, &p), Err(StoreError::Locked { .. })));
        drop(store);
        let (_s2, st2, created2) = Store::open(&path, &p).unwrap();
        assert!(!created2);
        assert_eq!(st2, st);
        // A write cut short by a kill leaves a temporary file; the next open sweeps it.
        drop(_s2);
        let stale = dir.join("a.card.tmp-1-0");
        std::fs::write(&stale, b"{\"half").unwrap();
        let (_s3, st3, _) = Store::open(&path, &p).unwrap();
        assert_eq!(st3, st);
        assert!(!stale.exists());
        drop(_s3);
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(Store::peek(&path), Err(StoreError::Corrupt { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
