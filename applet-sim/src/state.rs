//! Persistent card state (the card's EEPROM) and its crash-safe storage.
//!
//! A card is three files (docs/FORMATS.md, "Card state file"): `PATH`, the
//! small JSON state without the memory; `PATH.pages`, the application
//! memory, written in place; and a write-ahead journal of two slots
//! (`PATH.journal0`, `PATH.journal1`). Every commit is one journal record —
//! the new JSON state and the memory pages that changed — fsynced before the
//! card answers; the pages are then written in place. Closing the card
//! brings `PATH` up to date (atomic replacement: temporary file, fsync,
//! rename, directory fsync); opening it after a crash applies the records
//! newer than `PATH` and does the same. A
//! simulator killed at any point leaves the last committed state, like a
//! card pulled from a reader, and a write costs what it changed, not the
//! size of the memory. A version 1 file (one JSON file with the memory in
//! hex) is converted when it is opened.

use crate::factory::TestDomain;
use crate::profile::Profile;
use cardvault_proto::domain::DomainRef;
use cardvault_proto::{from_hex, fsutil};
use openssl::sha::sha256;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Mutex;
use zeroize::Zeroize;

/// State file format version: 2, the memory in a page file beside the JSON
/// state. Version 1 files (the memory in the JSON) are read and converted.
pub const STATE_VERSION: u32 = 2;

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
    /// Written by the store (first field of the file), read from it.
    #[serde(skip_serializing)]
    pub version: u32,
    pub card_number: String,
    pub role: String,
    pub pin: PinState,
    pub page_size: u16,
    pub page_count: u16,
    pub extended_length: bool,
    /// Application memory, `page_size * page_count` bytes: in the page file
    /// (version 2), read from the JSON of a version 1 file.
    #[serde(default, skip_serializing, with = "hexbytes")]
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

/// How a card's state is laid out on disk (docs/FORMATS.md, "Card state file").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Version 2: the JSON state without the memory, and the memory in
    /// `PATH.pages`, changed pages written in place under `PATH.journal`.
    Paged,
    /// Version 1: one JSON file with the memory in hex, written whole at
    /// every change. Kept to measure the paged layout against.
    WholeFile,
}

static WHOLE_FILE: AtomicBool = AtomicBool::new(false);

/// Choose the layout of cards opened from now on by this process (the
/// default is [`Layout::Paged`]; the benchmark compares both).
pub fn set_layout(layout: Layout) {
    WHOLE_FILE.store(layout == Layout::WholeFile, Ordering::Relaxed);
}

/// Fault injection for the journal's crash tests: a commit stops (and
/// reports an error) at the given point, leaving the files as a crash there
/// would; closing the card then does not bring the state file up to date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum JournalFault {
    None = 0,
    /// After the journal record is durable, before any page is written in place.
    AfterJournal = 1,
    /// After the pages are written in place (not yet synced).
    AfterPages = 2,
}

/// The memory's files of a version 2 card.
#[derive(Debug)]
pub struct PageFiles {
    /// The JSON state file, brought up to date when the card is closed.
    path: PathBuf,
    pages: File,
    /// The two journal slots: record `s` goes to slot `s % 2`.
    journals: [File; 2],
    page_size: usize,
    inner: Mutex<PageState>,
    fault: AtomicU8,
}

#[derive(Debug)]
struct PageState {
    /// The memory as last committed: a commit writes the pages that differ.
    committed: Vec<u8>,
    /// Sequence number of the last commit.
    seq: u64,
    /// The oldest commit whose pages were written in place but not synced
    /// (0: none). Its journal record must not be overwritten before they are.
    oldest_unsynced: u64,
    /// A commit failed after its record reached the journal: the page file
    /// may hold pages `committed` does not, so the next record carries all.
    all_pages_next: bool,
    /// The JSON state of the last commit since the card was opened (empty:
    /// none): written to the state file when the card is closed.
    last_json: Vec<u8>,
}

impl Drop for PageFiles {
    /// Closing the card: sync the page file and replace the JSON state file
    /// by the last commit's, so the files are whole without the journal
    /// (a failure here leaves the journal, applied at the next open).
    fn drop(&mut self) {
        let g = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        // A store with an injected fault is closed as a crash would leave it.
        let crashed = self.fault.load(Ordering::Relaxed) != JournalFault::None as u8;
        if !crashed && !g.last_json.is_empty() && self.pages.sync_data().is_ok() {
            g.oldest_unsynced = 0;
            let _ = fsutil::atomic_write(&self.path, &g.last_json);
        }
        g.last_json.zeroize();
    }
}

/// Where the state lives: a file (real simulator and embedded reader) or nowhere (unit tests).
#[derive(Debug)]
pub enum Store {
    Memory,
    File {
        path: PathBuf,
        _lock: File,
        /// `None`: [`Layout::WholeFile`].
        paged: Option<Box<PageFiles>>,
    },
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

/// `PATH.pages`: the application memory of a version 2 card.
pub fn pages_path(path: &Path) -> PathBuf {
    suffixed(path, ".pages")
}

/// `PATH.journal0` and `PATH.journal1`: the journal's two slots, holding
/// the records of the last two commits.
pub fn journal_paths(path: &Path) -> [PathBuf; 2] {
    [suffixed(path, ".journal0"), suffixed(path, ".journal1")]
}

fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

const JOURNAL_MAGIC: &[u8; 4] = b"CVJ2";
/// magic, seq (8), page size (4), JSON length (4), page count (4).
const JOURNAL_HEADER: usize = 24;

/// One decoded journal record: the JSON state of commit `seq` and the
/// memory pages it changed.
struct JournalRecord {
    seq: u64,
    json: Vec<u8>,
    pages: Vec<(usize, Vec<u8>)>,
}

impl Drop for JournalRecord {
    fn drop(&mut self) {
        self.json.zeroize();
    }
}

fn encode_journal(seq: u64, json: &[u8], page_size: usize, pages: &[(usize, &[u8])]) -> Vec<u8> {
    let mut rec = Vec::with_capacity(JOURNAL_HEADER + json.len() + pages.len() * (4 + page_size) + 32);
    rec.extend_from_slice(JOURNAL_MAGIC);
    rec.extend_from_slice(&seq.to_be_bytes());
    rec.extend_from_slice(&(page_size as u32).to_be_bytes());
    rec.extend_from_slice(&(json.len() as u32).to_be_bytes());
    rec.extend_from_slice(&(pages.len() as u32).to_be_bytes());
    rec.extend_from_slice(json);
    for (i, page) in pages {
        rec.extend_from_slice(&(*i as u32).to_be_bytes());
        rec.extend_from_slice(page);
    }
    let digest = sha256(&rec);
    rec.extend_from_slice(&digest);
    rec
}

/// A complete, intact record for a memory of `memory_len` bytes in pages of
/// `page_size`, or `None` (no journal, a torn or foreign one).
fn decode_journal(bytes: &[u8], page_size: usize, memory_len: usize) -> Option<JournalRecord> {
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
    };
    if bytes.get(..4)? != JOURNAL_MAGIC || u32_at(12)? != page_size || page_size == 0 {
        return None;
    }
    let seq = u64::from_be_bytes(bytes.get(4..12)?.try_into().ok()?);
    let (json_len, count) = (u32_at(16)?, u32_at(20)?);
    let end = JOURNAL_HEADER
        .checked_add(json_len)?
        .checked_add(count.checked_mul(4 + page_size)?)?;
    let digest = bytes.get(end..end + 32)?;
    if !openssl::memcmp::eq(&sha256(&bytes[..end]), digest) {
        return None;
    }
    let json = bytes[JOURNAL_HEADER..JOURNAL_HEADER + json_len].to_vec();
    let mut pages = Vec::with_capacity(count);
    let mut o = JOURNAL_HEADER + json_len;
    for _ in 0..count {
        let i = u32_at(o)?;
        if (i + 1) * page_size > memory_len {
            return None;
        }
        pages.push((i, bytes[o + 4..o + 4 + page_size].to_vec()));
        o += 4 + page_size;
    }
    Some(JournalRecord { seq, json, pages })
}

/// The JSON state as written: `version` first, the memory (version 1 only),
/// the commit sequence number (version 2 only), then the state's fields.
#[derive(Serialize)]
struct OnDisk<'a> {
    version: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory: Option<Hex<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    store_seq: Option<u64>,
    #[serde(flatten)]
    state: &'a CardState,
}

struct Hex<'a>(&'a [u8]);

impl Serialize for Hex<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        hexbytes::serialize(self.0, s)
    }
}

type Loaded = (CardState, u32, u64, Vec<JournalRecord>);

/// Both journal slots' contents (empty for a missing slot).
fn read_journals(path: &Path) -> std::io::Result<[Vec<u8>; 2]> {
    let [a, b] = journal_paths(path);
    Ok([
        read_optional(&a)?.unwrap_or_default(),
        read_optional(&b)?.unwrap_or_default(),
    ])
}

#[derive(Deserialize)]
struct Seq {
    #[serde(default)]
    store_seq: u64,
}

fn encode_json(state: &CardState, layout: Layout, seq: u64) -> Vec<u8> {
    let on_disk = match layout {
        Layout::Paged => OnDisk {
            version: STATE_VERSION,
            memory: None,
            store_seq: Some(seq),
            state,
        },
        Layout::WholeFile => OnDisk {
            version: 1,
            memory: Some(Hex(&state.memory)),
            store_seq: None,
            state,
        },
    };
    serde_json::to_vec(&on_disk).expect("state serializes")
}

fn open_rw(path: &Path, create: bool) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(fsutil::PRIVATE_MODE)
        .open(path)
}

fn read_optional(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl Store {
    /// Open the card at `path`, creating it from `profile` when the file does not exist.
    /// The card is locked for this process (one reader holds one card).
    /// A version 1 file is converted, and a change the journal holds but the
    /// files do not yet (a crash between the two) is completed.
    pub fn open(path: &Path, profile: &Profile) -> Result<(Store, CardState, bool), StoreError> {
        let layout = if WHOLE_FILE.load(Ordering::Relaxed) {
            Layout::WholeFile
        } else {
            Layout::Paged
        };
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
        fsutil::remove_stale_temps(&pages_path(path)).map_err(io)?;
        let (state, seq, created) = match read_optional(path).map_err(io)? {
            Some(bytes) => {
                let journals = read_journals(path).map_err(io)?;
                let (state, version, seq, replayed) = Self::load(path, &bytes, &journals)?;
                if version == 1 && layout == Layout::Paged {
                    // Convert: page file, no journal, then the version 2 JSON.
                    write_whole_paged(path, &state).map_err(io)?;
                    (state, 0, false)
                } else {
                    if layout == Layout::Paged && !replayed.is_empty() {
                        // Checkpoint the commits the journal holds (load applied them).
                        Self::checkpoint(path, &replayed).map_err(io)?;
                    }
                    (state, seq, false)
                }
            }
            None => {
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
                match layout {
                    Layout::Paged => write_whole_paged(path, &state).map_err(io)?,
                    Layout::WholeFile => {
                        let mut json = encode_json(&state, layout, 0);
                        let r = fsutil::atomic_write(path, &json);
                        json.zeroize();
                        r.map_err(io)?;
                    }
                }
                (state, 0, true)
            }
        };
        let paged = match layout {
            Layout::WholeFile => None,
            Layout::Paged => {
                let [j0, j1] = journal_paths(path);
                Some(Box::new(PageFiles {
                    path: path.to_path_buf(),
                    pages: open_rw(&pages_path(path), false).map_err(io)?,
                    journals: [open_rw(&j0, true).map_err(io)?, open_rw(&j1, true).map_err(io)?],
                    page_size: state.page_size as usize,
                    inner: Mutex::new(PageState {
                        committed: state.memory.clone(),
                        seq,
                        oldest_unsynced: 0,
                        all_pages_next: false,
                        last_json: Vec::new(),
                    }),
                    fault: AtomicU8::new(0),
                }))
            }
        };
        let store = Store::File {
            path: path.to_path_buf(),
            _lock: lock,
            paged,
        };
        Ok((store, state, created))
    }

    /// After [`Store::load`] applied journal records newer than the JSON
    /// state (commits since the card was last opened, or a crash): write
    /// their pages in place in order, sync the page file and store the
    /// newest record's JSON state.
    fn checkpoint(path: &Path, records: &[JournalRecord]) -> std::io::Result<()> {
        let pages = open_rw(&pages_path(path), false)?;
        for rec in records {
            for (i, page) in &rec.pages {
                pages.write_all_at(page, (i * page.len()) as u64)?;
            }
        }
        pages.sync_data()?;
        match records.last() {
            Some(newest) => fsutil::atomic_write(path, &newest.json),
            None => Ok(()),
        }
    }

    /// Parse a state file (and for version 2 its page file and the journal
    /// slots' contents, applying the records newer than the JSON state in
    /// memory, oldest first). Returns the state, the file's version, the
    /// sequence number of the state and the journal records applied.
    fn load(path: &Path, bytes: &[u8], journals: &[Vec<u8>; 2]) -> Result<Loaded, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let io = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        let (mut state, seq) = Self::parse(path, bytes)?;
        let version = state.version;
        match version {
            1 => {
                state.version = STATE_VERSION;
                state.check().map_err(corrupt)?;
                return Ok((state, 1, 0, Vec::new()));
            }
            STATE_VERSION if state.memory.is_empty() => {}
            STATE_VERSION => return Err(corrupt("a version 2 state carries its memory in the JSON".into())),
            v => return Err(corrupt(format!("state version {v} is not {STATE_VERSION}"))),
        }
        let pages = pages_path(path);
        state.memory = match read_optional(&pages).map_err(io)? {
            Some(m) => m,
            None => return Err(corrupt(format!("its page file {} is missing", pages.display()))),
        };
        let memory_len = state.page_size as usize * state.page_count as usize;
        if state.memory.len() != memory_len {
            return Err(corrupt("memory size does not match page size and count".into()));
        }
        let mut records: Vec<JournalRecord> = journals
            .iter()
            .filter_map(|j| decode_journal(j, state.page_size as usize, memory_len))
            .filter(|r| r.seq > seq)
            .collect();
        records.sort_by_key(|r| r.seq);
        let Some(newest) = records.last() else {
            state.check().map_err(corrupt)?;
            return Ok((state, version, seq, records));
        };
        let mut memory = std::mem::take(&mut state.memory);
        for rec in &records {
            for (i, page) in &rec.pages {
                memory[i * page.len()..(i + 1) * page.len()].copy_from_slice(page);
            }
        }
        let (mut newer, _) = Self::parse(path, &newest.json)?;
        newer.memory = memory;
        if newer.version != STATE_VERSION || newer.page_size != state.page_size || newer.page_count != state.page_count
        {
            return Err(corrupt("the journal does not fit the card".into()));
        }
        newer.check().map_err(corrupt)?;
        let seq = newest.seq;
        Ok((newer, version, seq, records))
    }

    fn parse(path: &Path, bytes: &[u8]) -> Result<(CardState, u64), StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let state: CardState = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        let seq: Seq = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        Ok((state, seq.store_seq))
    }

    /// Read a card's state without locking it (inspection and tests), also
    /// while its simulator writes: a read that overlapped a journal write
    /// (or the JSON state's replacement) is repeated.
    pub fn peek(path: &Path) -> Result<CardState, StoreError> {
        let io = |source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut tries = 0;
        loop {
            let bytes = std::fs::read(path).map_err(io)?;
            let journals = read_journals(path).map_err(io)?;
            let loaded = Self::load(path, &bytes, &journals);
            // Pages are written in place only after their record is in the
            // journal: if neither the journal nor the JSON state changed
            // while the page file was read, every page read that is newer
            // than the JSON state is in a record read, and applied over it.
            tries += 1;
            let same = std::fs::read(path).map_err(io)? == bytes && read_journals(path).map_err(io)? == journals;
            if same || tries >= 100 {
                return loaded.map(|(s, ..)| s);
            }
        }
    }

    /// Fault injection for crash tests of the journal (no effect on a card
    /// in memory or in a version 1 file).
    pub fn inject_journal_fault(&self, fault: JournalFault) {
        if let Store::File { paged: Some(p), .. } = self {
            p.fault.store(fault as u8, Ordering::Relaxed);
        }
    }

    /// Durably store `state` before the card answers. Version 2: one
    /// journal record (the new JSON state and the memory pages that changed
    /// since the last commit) into slot `seq % 2`, fdatasync'ed: the commit
    /// point; then the changed pages are written in place, synced before
    /// their record's slot is reused (two commits later). The JSON state
    /// file is brought up to date when the card is closed (or, after a
    /// crash, when it is next opened). Version 1:
    /// the whole file, memory included, through [`fsutil::atomic_write`].
    pub fn commit(&self, state: &CardState) -> Result<(), StoreError> {
        let Store::File { path, paged, .. } = self else {
            return Ok(());
        };
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let Some(p) = paged else {
            let mut bytes = encode_json(state, Layout::WholeFile, 0);
            let result = fsutil::atomic_write(path, &bytes);
            bytes.zeroize();
            return result.map_err(io);
        };
        let mut g = p.inner.lock().unwrap_or_else(|e| e.into_inner());
        let ps = p.page_size;
        if state.memory.len() != g.committed.len() || ps == 0 {
            return Err(io(std::io::Error::other("the memory changed size")));
        }
        let changed: Vec<(usize, &[u8])> = state
            .memory
            .chunks(ps)
            .zip(g.committed.chunks(ps))
            .enumerate()
            .filter(|(_, (new, old))| g.all_pages_next || new != old)
            .map(|(i, (new, _))| (i, new))
            .collect();
        let seq = g.seq + 1;
        let mut json = encode_json(state, Layout::Paged, seq);
        let result = (|| {
            // The slot holds record seq - 2: its pages must be durable first.
            if g.oldest_unsynced != 0 && g.oldest_unsynced + 2 <= seq {
                p.pages.sync_data()?;
                g.oldest_unsynced = 0;
            }
            let mut rec = encode_journal(seq, &json, ps, &changed);
            let slot = &p.journals[(seq % 2) as usize];
            let written = slot.write_all_at(&rec, 0).and_then(|()| slot.sync_data());
            rec.zeroize();
            written?;
            if p.fault.load(Ordering::Relaxed) == JournalFault::AfterJournal as u8 {
                return Err(std::io::Error::other("stopped after the journal (fault injection)"));
            }
            for (i, page) in &changed {
                if g.oldest_unsynced == 0 {
                    g.oldest_unsynced = seq;
                }
                p.pages.write_all_at(page, (i * ps) as u64)?;
            }
            if p.fault.load(Ordering::Relaxed) == JournalFault::AfterPages as u8 {
                return Err(std::io::Error::other("stopped after the pages (fault injection)"));
            }
            Ok(())
        })();
        if let Err(e) = result {
            json.zeroize();
            g.all_pages_next = true;
            return Err(io(e));
        }
        g.last_json.zeroize();
        g.last_json = json;
        for (i, page) in &changed {
            g.committed[i * ps..(i + 1) * ps].copy_from_slice(page);
        }
        g.seq = seq;
        g.all_pages_next = false;
        Ok(())
    }
}

/// Write a whole version 2 card: the page file (atomically), no journal,
/// then the JSON state with sequence number 0. A crash before the JSON
/// leaves the previous (version 1, or no) state file, so this is redone.
fn write_whole_paged(path: &Path, state: &CardState) -> std::io::Result<()> {
    fsutil::atomic_write(pages_path(path), &state.memory)?;
    for journal in journal_paths(path) {
        match std::fs::remove_file(journal) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    let mut json = encode_json(state, Layout::Paged, 0);
    let r = fsutil::atomic_write(path, &json);
    json.zeroize();
    r
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

    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let d = std::env::temp_dir().join(format!("cv-state-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Dir(d)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn main_profile() -> Profile {
        Profile::load("main").unwrap()
    }

    #[test]
    fn create_commit_reopen() {
        let dir = Dir::new("reopen");
        let path = dir.0.join("a.card");
        let p = main_profile();
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
        let stale = dir.0.join("a.card.tmp-1-0");
        let stale_pages = dir.0.join("a.card.pages.tmp-1-0");
        std::fs::write(&stale, b"{\"half").unwrap();
        std::fs::write(&stale_pages, b"half").unwrap();
        let (_s3, st3, _) = Store::open(&path, &p).unwrap();
        assert_eq!(st3, st);
        assert!(!stale.exists() && !stale_pages.exists());
        drop(_s3);
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(Store::peek(&path), Err(StoreError::Corrupt { .. })));
    }

    fn json_seq(path: &Path) -> u64 {
        serde_json::from_slice::<Seq>(&std::fs::read(path).unwrap())
            .unwrap()
            .store_seq
    }

    #[test]
    fn the_json_state_holds_no_memory_and_a_page_write_journals_only_its_page() {
        let dir = Dir::new("paged");
        let path = dir.0.join("a.card");
        let (store, mut st, _) = Store::open(&path, &main_profile()).unwrap();
        let json = std::fs::read_to_string(&path).unwrap();
        assert!(json.starts_with("{\"version\":2,\"store_seq\":0,"), "{}", &json[..40]);
        assert!(!json.contains("\"memory\""));
        assert_eq!(std::fs::read(pages_path(&path)).unwrap(), st.memory);
        let ps = st.page_size as usize;
        st.memory[5 * ps..6 * ps].fill(0xA5);
        store.commit(&st).unwrap();
        // Commit 1 is one record in slot 1: the new JSON state and exactly the
        // one changed page; the page is also in place.
        let [j0, j1] = journal_paths(&path);
        let rec = decode_journal(&std::fs::read(&j1).unwrap(), ps, st.memory.len()).unwrap();
        assert_eq!((rec.seq, rec.pages.len(), rec.pages[0].0), (1, 1, 5));
        let (parsed, seq) = Store::parse(&path, &rec.json).unwrap();
        assert_eq!(seq, 1);
        assert!(parsed.memory.is_empty() && parsed.backup == st.backup && parsed.pin == st.pin);
        assert_eq!(std::fs::read(pages_path(&path)).unwrap(), st.memory);
        // A commit without a memory change is a record without pages, in slot 0.
        st.pin.tries_left -= 1;
        store.commit(&st).unwrap();
        let rec = decode_journal(&std::fs::read(&j0).unwrap(), ps, st.memory.len()).unwrap();
        assert_eq!((rec.seq, rec.pages.len()), (2, 0));
        // The JSON state file is brought up to date when the card is opened.
        assert_eq!(json_seq(&path), 0);
        assert_eq!(Store::peek(&path).unwrap(), st);
        drop(store);
        let (_s, again, _) = Store::open(&path, &main_profile()).unwrap();
        assert_eq!(again, st);
        assert_eq!(json_seq(&path), 2);
        // The records (seq 1 and 2) are not applied again over the newer state.
        drop(_s);
        let mut json = std::fs::read_to_string(&path).unwrap();
        json = json.replace("\"store_seq\":2", "\"store_seq\":3");
        std::fs::write(&path, json).unwrap();
        let mut page = st.memory[5 * ps..6 * ps].to_vec();
        page.fill(0x01);
        let pages = open_rw(&pages_path(&path), false).unwrap();
        pages.write_all_at(&page, 5 * ps as u64).unwrap();
        assert_eq!(
            Store::peek(&path).unwrap().memory[5 * ps],
            0x01,
            "an old record was applied"
        );
    }

    /// A crash between the journal and the in-place write (and after the
    /// in-place write): the next open completes the change.
    #[test]
    fn a_crash_after_the_journal_is_recovered_on_open() {
        for fault in [JournalFault::AfterJournal, JournalFault::AfterPages] {
            let dir = Dir::new(&format!("crash{}", fault as u8));
            let path = dir.0.join("a.card");
            let (store, mut st, _) = Store::open(&path, &main_profile()).unwrap();
            let ps = st.page_size as usize;
            st.memory[3 * ps..4 * ps].fill(0x11);
            store.commit(&st).unwrap();
            let before_pages = std::fs::read(pages_path(&path)).unwrap();
            let before_json = std::fs::read(&path).unwrap();
            st.memory[0..ps].fill(0x22);
            st.memory[7 * ps + 3] = 0x33;
            st.backup.issued += 1;
            store.inject_journal_fault(fault);
            assert!(store.commit(&st).is_err(), "{fault:?}");
            // The JSON state file is untouched; the pages are old (after the
            // journal) or new (after the in-place write).
            assert_eq!(std::fs::read(&path).unwrap(), before_json);
            let on_disk = std::fs::read(pages_path(&path)).unwrap();
            match fault {
                JournalFault::AfterJournal => assert_eq!(on_disk, before_pages),
                _ => assert_eq!(on_disk, st.memory),
            }
            // An inspection meanwhile sees the committed change.
            assert_eq!(Store::peek(&path).unwrap(), st, "{fault:?}");
            drop(store);
            let (store, recovered, _) = Store::open(&path, &main_profile()).unwrap();
            assert_eq!(recovered, st, "{fault:?}");
            // Opening wrote the files: they hold the change without the journal.
            assert_eq!(std::fs::read(pages_path(&path)).unwrap(), st.memory);
            assert_eq!(json_seq(&path), 2);
            drop(store);
            for j in journal_paths(&path) {
                std::fs::remove_file(j).unwrap();
            }
            assert_eq!(Store::peek(&path).unwrap(), st);
        }
    }

    /// A commit that failed after its record and in-place pages, then a
    /// commit that changes a page back: the page file is not trusted, the
    /// next record carries every page.
    #[test]
    fn after_a_failed_commit_the_next_record_carries_every_page() {
        let dir = Dir::new("failed");
        let path = dir.0.join("a.card");
        let (store, mut st, _) = Store::open(&path, &main_profile()).unwrap();
        let old = st.clone();
        let ps = st.page_size as usize;
        st.memory[0..ps].fill(0x77);
        store.inject_journal_fault(JournalFault::AfterPages);
        assert!(store.commit(&old_with(&st)).is_err());
        store.inject_journal_fault(JournalFault::None);
        // Back to the old memory, with another change elsewhere.
        let mut back = old.clone();
        back.pin.tries_left -= 1;
        store.commit(&back).unwrap();
        assert_eq!(Store::peek(&path).unwrap(), back);
        drop(store);
        assert_eq!(Store::open(&path, &main_profile()).unwrap().1, back);
    }

    fn old_with(s: &CardState) -> CardState {
        s.clone()
    }

    /// A journal record torn by a crash while it was written is ignored: the
    /// pages were not touched yet, the old state stands.
    #[test]
    fn a_torn_journal_leaves_the_old_state() {
        let dir = Dir::new("torn");
        let path = dir.0.join("a.card");
        let (store, mut st, _) = Store::open(&path, &main_profile()).unwrap();
        let old = st.clone();
        let ps = st.page_size as usize;
        st.memory[2 * ps..3 * ps].fill(0x44);
        store.inject_journal_fault(JournalFault::AfterJournal);
        assert!(store.commit(&st).is_err());
        drop(store);
        let slot = journal_paths(&path)[1].clone();
        let journal = std::fs::read(&slot).unwrap();
        for cut in [journal.len() - 1, journal.len() / 2, 10] {
            std::fs::write(&slot, &journal[..cut]).unwrap();
            assert_eq!(Store::peek(&path).unwrap(), old, "cut at {cut}");
        }
        let mut flipped = journal.clone();
        flipped[JOURNAL_HEADER + 3] ^= 1;
        std::fs::write(&slot, &flipped).unwrap();
        let (_s, reopened, _) = Store::open(&path, &main_profile()).unwrap();
        assert_eq!(reopened, old);
    }

    /// A version 1 file (one JSON with the memory in hex) is converted when
    /// it is opened; a stale journal from before is not applied to it.
    #[test]
    fn a_version_1_file_is_converted_on_open() {
        let dir = Dir::new("migrate");
        let path = dir.0.join("a.card");
        let (store, mut st, _) = Store::open(&path, &main_profile()).unwrap();
        st.memory[9] = 0x99;
        store.commit(&st).unwrap();
        drop(store);
        let mut v1 = st.clone();
        v1.memory[10] = 0x10;
        v1.pin.tries_left = 1;
        std::fs::write(&path, encode_json(&v1, Layout::WholeFile, 0)).unwrap();
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .starts_with("{\"version\":1,\"memory\":\""));
        assert_eq!(Store::peek(&path).unwrap(), v1);
        let (_s, opened, created) = Store::open(&path, &main_profile()).unwrap();
        assert!(!created);
        assert_eq!(opened, v1);
        let json = std::fs::read_to_string(&path).unwrap();
        assert!(json.starts_with("{\"version\":2,") && !json.contains("\"memory\""));
        assert_eq!(std::fs::read(pages_path(&path)).unwrap(), v1.memory);
        // The old journal was removed (opening creates empty slots).
        assert!(journal_paths(&path)
            .iter()
            .all(|j| std::fs::read(j).unwrap().is_empty()));
        drop(_s);
        assert_eq!(Store::open(&path, &main_profile()).unwrap().1, v1);
    }
}
