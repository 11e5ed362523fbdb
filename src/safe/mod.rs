//! The electronic safe (Matsushita claims 1-3, 9; SPEC 3.3): a store of
//! deposited wallet items that issues registration certificates and hands
//! each item out once.
//!
//! A safe is a directory: `safe.sqlite` (its ledger, WAL mode), `safe-key.pem`
//! (its P-256 signing key, 0600), `safe.pem` (its certificate, signed by the
//! issuer root, so that cards check its signatures under their installed
//! root) and `issuer-root.pem` (the root it checks cards under). It is used
//! in-process ([`Safe::open`], the embedded safe) or served over HTTP
//! ([`http::serve`]); [`SafeClient`] reaches either. Beside the directory,
//! `<dir>.checkpoint` ([`checkpoint_path`]) tells an older copy of the store
//! from the store.
//!
//! The ledger's states of an item: `stored` → `delivering` (a delivery was
//! made to one card, its receipt not yet back) → `withdrawn` (the card's
//! signed receipt came back). Each step commits in one transaction before
//! the answer leaves, so a safe killed at any point answers a retry with
//! what it committed: the same certificate for the same deposit, a new
//! delivery to the same card, the receipt accepted again.

pub mod fault;
pub mod http;

use crate::error::{Error, Result};
use cardvault_proto::cert;
use cardvault_proto::crypto::{self, KeyPair};
use cardvault_proto::safe::{self as sf, Delivery, Deposit, Receipt, RegistrationCertificate, SignedDeposit};
use cardvault_proto::to_hex;
use openssl::x509::X509;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const DB_FILE: &str = "safe.sqlite";
pub const KEY_FILE: &str = "safe-key.pem";
pub const CERT_FILE: &str = "safe.pem";
pub const ROOT_FILE: &str = "issuer-root.pem";
/// Validity of a safe's certificate.
const SAFE_CERT_DAYS: u32 = 3650;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    counter      INTEGER PRIMARY KEY,
    card_number  TEXT NOT NULL,
    item_id      TEXT NOT NULL,
    stored_hash  TEXT NOT NULL,
    deposit      BLOB NOT NULL,
    summary      BLOB NOT NULL,
    certificate  BLOB NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('stored', 'delivering', 'withdrawn')),
    target_card  TEXT,
    receipt      BLOB,
    deposited_at INTEGER NOT NULL,
    withdrawn_at INTEGER,
    UNIQUE (card_number, item_id, stored_hash)
);
CREATE TABLE IF NOT EXISTS deliveries (
    counter      INTEGER PRIMARY KEY,
    target_card  TEXT NOT NULL,
    challenge    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS releases (
    counter      INTEGER NOT NULL,
    card_number  TEXT NOT NULL,
    challenge    TEXT NOT NULL,
    released_at  INTEGER NOT NULL,
    PRIMARY KEY (counter, card_number, challenge)
);
CREATE TABLE IF NOT EXISTS escrow (
    card_number  TEXT PRIMARY KEY,
    part         BLOB NOT NULL,
    verifier     TEXT NOT NULL,
    escrowed_at  INTEGER NOT NULL
);
";

/// Why a safe refused a request: typed, so that the terminal can tell a
/// refusal (nothing to retry) from an unreachable safe (retry).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "refusal", content = "detail", rename_all = "snake_case")]
pub enum SafeRefusal {
    #[error("the safe refused the request: {0}")]
    Malformed(String),
    #[error("the card's signature or certificate does not verify under the safe's issuer root: {0}")]
    CardNotTrusted(String),
    #[error("the registration certificate is not this safe's, or was altered")]
    ForgedCertificate,
    #[error("no item with counter {0} in this safe")]
    UnknownItem(u64),
    #[error("the item of counter {0} was already withdrawn")]
    AlreadyWithdrawn(u64),
    #[error("the item of counter {0} is being delivered to card {1}; another card gets it only after that")]
    DeliveringElsewhere(u64, String),
    #[error("card {0} is not the card that deposited the item: an issuer authorization naming card {0} is needed")]
    OwnerAuthenticationNeeded(String),
    #[error("the issuer authorization does not verify for card {0} and this certificate")]
    AuthorizationInvalid(String),
    #[error("card {card} already has item {item} stored in this safe under another deposit")]
    Conflict { card: String, item: String },
    #[error("the receipt is not for a delivery of this safe to that card")]
    ReceiptMismatch,
    #[error("the deposit is for safe {0}, not this one")]
    OtherSafe(String),
    #[error("this safe holds no escrowed wallet key part of card {0}")]
    NoEscrow(String),
    #[error("the owner password does not match the one card {0}'s wallet key was escrowed under")]
    WrongOwnerPassword(String),
    #[error("the owner's answer is not to a challenge this safe has open (each challenge answers once)")]
    StaleOwnerChallenge,
    #[error("the item of counter {0} has no open delivery to card {1} with that challenge")]
    NotDelivering(u64, String),
    #[error("the issuer's release does not verify for that delivery")]
    ReleaseInvalid,
    #[error("that delivery to card {1} of the item of counter {0} was released by the issuer: its receipt is refused")]
    DeliveryReleased(u64, String),
}

/// One row of the safe's ledger (`safe list`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LedgerEntry {
    pub counter: u64,
    pub card_number: String,
    pub item_id: String,
    pub state: String,
    pub target_card: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub amount: Option<u32>,
    /// Hex, the challenge of the open delivery (state `delivering`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<String>,
}

/// The issuer's release of a delivery that its card never accepted
/// (terminal → safe), signed over [`release_message`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReleaseRequest {
    pub counter: u64,
    /// The card the stuck delivery is addressed to.
    pub card_number: String,
    /// Hex, that delivery's challenge.
    pub challenge: String,
    /// Hex, ECDSA P-256 (r ‖ s) by the issuer's signer.
    pub signature: String,
    /// Hex DER of the signer certificate (under the safe's issuer root).
    pub signer_certificate: String,
}

/// What the issuer signs to release a delivery: `"cardvault delivery
/// release v1" ‖ safe id (16) ‖ counter (8) ‖ lv(card number) ‖ challenge (16)`.
pub fn release_message(safe_id: &[u8], counter: u64, card_number: &str, challenge: &[u8]) -> Vec<u8> {
    let mut m = b"cardvault delivery release v1".to_vec();
    m.extend_from_slice(safe_id);
    m.extend_from_slice(&counter.to_be_bytes());
    m.push(card_number.len() as u8);
    m.extend_from_slice(card_number.as_bytes());
    m.extend_from_slice(challenge);
    m
}

/// What the safe answers a deposit.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DepositAnswer {
    /// Hex of the registration certificate (proto::safe).
    pub certificate: String,
    /// Hex DER of the safe's certificate.
    pub safe_certificate: String,
}

/// A withdrawal request (terminal → safe).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WithdrawRequest {
    pub certificate: String,
    /// Hex DER: the requesting card's certified ECKA certificate (GET DATA `BF21`).
    pub card_certificate: String,
    /// Hex, the card's GET WITHDRAW CHALLENGE.
    pub challenge: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization: Option<WithdrawAuthorization>,
    /// The owner's proof for this safe (hex, derived from the escrow
    /// password): onto another card without the issuer, for a card whose
    /// wallet key this safe holds in escrow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_proof: Option<OwnerProof>,
}

/// The owner's answer to a safe's challenge: an Ed25519 signature, under the
/// key derived from the owner's password for this safe, over
/// [`owner_proof_message`] (the nonce, the safe, the card and the request).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OwnerProof {
    /// Hex, the nonce of `POST /v1/owner/challenge`.
    pub nonce: String,
    /// Hex, 64 bytes.
    pub signature: String,
}

impl std::fmt::Debug for OwnerProof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnerProof").finish_non_exhaustive()
    }
}

/// A request for a fresh owner challenge (terminal → safe).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OwnerChallengeRequest {
    pub card_number: String,
}

/// A fresh single-use owner challenge (safe → terminal).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct OwnerChallenge {
    /// Hex, 16 random bytes.
    pub nonce: String,
}

/// Length of an owner challenge's nonce.
pub const OWNER_NONCE_LEN: usize = 16;
/// Most owner challenges a safe keeps open at once (the oldest go first).
const MAX_OPEN_CHALLENGES: usize = 256;

/// What the owner signs: `"cardvault owner proof v2" 00 safe-id-hex 00
/// card-number 00 nonce(16) SHA-256(request)`.
pub fn owner_proof_message(safe_id: &str, card_number: &str, nonce: &[u8], request: &[u8]) -> Vec<u8> {
    let mut m = b"cardvault owner proof v2\0".to_vec();
    m.extend_from_slice(safe_id.to_ascii_lowercase().as_bytes());
    m.push(0);
    m.extend_from_slice(card_number.as_bytes());
    m.push(0);
    m.extend_from_slice(nonce);
    m.extend_from_slice(&crypto::sha256(request));
    m
}

/// The request an owner's proof of a fetch binds: `"escrow-fetch"`.
pub const OWNER_FETCH_REQUEST: &[u8] = b"escrow-fetch";

/// The request an owner's proof of a withdrawal binds: `"withdraw" 00
/// certificate-hex 00 card-certificate-hex 00 challenge-hex` (lower-case hex
/// as sent).
pub fn owner_withdraw_request(certificate: &str, card_certificate: &str, challenge: &str) -> Vec<u8> {
    [
        &b"withdraw\0"[..],
        certificate.to_ascii_lowercase().as_bytes(),
        b"\0",
        card_certificate.to_ascii_lowercase().as_bytes(),
        b"\0",
        challenge.to_ascii_lowercase().as_bytes(),
    ]
    .concat()
}

/// A wallet key part to keep (terminal → safe).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EscrowRequest {
    /// Hex of proto::safe::EscrowPart, signed by the card.
    pub part: String,
    /// Hex DER of the card's signing certificate (GET DATA `DF35`).
    pub card_certificate: String,
    /// Hex, 32 bytes: the Ed25519 public key derived from the owner's
    /// password for this safe (it verifies the owner's answers; it opens
    /// nothing).
    pub verifier: String,
}

/// A request for a kept part (terminal → safe), with the owner's proof.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EscrowFetch {
    pub card_number: String,
    pub owner_proof: OwnerProof,
}

/// A kept part (safe → terminal).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EscrowAnswer {
    pub card_number: String,
    pub part: String,
}

/// The issuer's authorization to withdraw onto another card.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WithdrawAuthorization {
    pub signature: String,
    pub signer_certificate: String,
}

/// The safe's delivery (safe → terminal → card).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeliveryAnswer {
    pub delivery: String,
    pub safe_certificate: String,
}

/// A card's receipt (terminal → safe).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReceiptRequest {
    pub receipt: String,
    /// Hex DER of the card's signing certificate (GET DATA `DF35`).
    pub card_certificate: String,
}

/// The safe's identity (`GET /v1/info`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SafeInfo {
    pub safe_id: String,
    pub safe_certificate: String,
}

/// certificate, deposit, state, target card.
type DeliveryRow = (Vec<u8>, Vec<u8>, String, Option<String>);
/// counter, certificate, deposit, state, receipt.
type VerifyRow = (i64, Vec<u8>, Vec<u8>, String, Option<Vec<u8>>);

/// An Ed25519 signature by the raw public key `public` (32 bytes).
pub fn verify_ed25519(public: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    let Ok(key) = openssl::pkey::PKey::public_key_from_raw_bytes(public, openssl::pkey::Id::ED25519) else {
        return false;
    };
    openssl::sign::Verifier::new_without_digest(&key)
        .and_then(|mut v| v.verify_oneshot(sig, msg))
        .unwrap_or(false)
}

fn hex_field(s: &str, what: &str) -> std::result::Result<Vec<u8>, SafeRefusal> {
    cardvault_proto::from_hex(s).ok_or_else(|| SafeRefusal::Malformed(format!("{what} is not hex")))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// An open safe directory.
pub struct Safe {
    dir: PathBuf,
    conn: Connection,
    key: KeyPair,
    cert_der: Vec<u8>,
    root: X509,
    id: [u8; sf::SAFE_ID_LEN],
    /// Open owner challenges: nonce and the card it is for, oldest first.
    challenges: std::collections::VecDeque<([u8; OWNER_NONCE_LEN], String)>,
    /// The checkpoint after a deposit or a receipt is written by the caller
    /// ([`Checkpointer`], `safe serve`) before it answers, not here.
    deferred_checkpoints: bool,
}

impl std::fmt::Debug for Safe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Safe").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// What `safe init` made.
#[derive(Debug, Clone, Serialize)]
pub struct InitReport {
    pub dir: PathBuf,
    pub safe_id: String,
    pub certificate: PathBuf,
}

/// Make a safe in `dir` (which must not hold one): its key, its certificate
/// signed by the issuer root of `issuer` (`cardvault issuer init`), its store.
pub fn init(dir: &Path, issuer: &Path) -> Result<InitReport> {
    if dir.join(DB_FILE).exists() || dir.join(KEY_FILE).exists() {
        return Err(Error::OutputExists(dir.join(DB_FILE)));
    }
    let creds = crate::issuer::IssuerCredentials::load(issuer)?;
    let root = creds
        .root()
        .cloned()
        .ok_or_else(|| Error::Usage(format!("{}: no issuer root (root.pem)", issuer.display())))?;
    let id = crypto::random::<{ sf::SAFE_ID_LEN }>();
    let key = KeyPair::generate().map_err(|e| Error::Data(e.to_string()))?;
    let cert_der = creds.certify_signer(
        &key.public_bytes(),
        &format!("cardvault safe {}", to_hex(&id)),
        SAFE_CERT_DAYS,
    )?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let pem = key.to_pem().map_err(|e| Error::Data(e.to_string()))?;
    let cert_pem = X509::from_der(&cert_der)
        .and_then(|c| c.to_pem())
        .map_err(|e| Error::Data(e.to_string()))?;
    let root_pem = root.to_pem().map_err(|e| Error::Data(e.to_string()))?;
    let files: [(&str, &[u8], u32); 3] = [
        (KEY_FILE, &pem, 0o600),
        (CERT_FILE, &cert_pem, 0o644),
        (ROOT_FILE, &root_pem, 0o644),
    ];
    for (name, bytes, mode) in files {
        use std::io::Write;
        let target = dir.join(name);
        let io = |e| Error::io(format!("writing {}", target.display()), e);
        let mut f = cardvault_proto::fsutil::AtomicFile::create_with_mode(&target, mode).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        f.commit_new().map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::OutputExists(target.clone()),
            _ => io(e),
        })?;
    }
    let conn = open_db(dir)?;
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('safe_id', ?1), ('counter', '0')",
        params![to_hex(&id)],
    )
    .map_err(|e| Error::vault(&dir.join(DB_FILE), e))?;
    let sig =
        crypto::sign_p256(&key, &Checkpoint::message(&to_hex(&id), 0, &[])).map_err(|e| Error::Data(e.to_string()))?;
    let cp = Checkpoint {
        version: 1,
        safe_id: to_hex(&id),
        counter: 0,
        withdrawn: Vec::new(),
        signature: to_hex(&sig),
    };
    let cp_path = checkpoint_path(dir);
    cardvault_proto::fsutil::atomic_write(&cp_path, serde_json::to_string(&cp).expect("json").as_bytes())
        .map_err(|e| Error::io(format!("writing {}", cp_path.display()), e))?;
    Ok(InitReport {
        dir: dir.to_path_buf(),
        safe_id: to_hex(&id),
        certificate: dir.join(CERT_FILE),
    })
}

fn open_db(dir: &Path) -> Result<Connection> {
    let path = dir.join(DB_FILE);
    let conn = Connection::open(&path).map_err(|e| Error::vault(&path, e))?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(|e| Error::vault(&path, e))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(|e| Error::vault(&path, e))?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(|e| Error::vault(&path, e))?;
    conn.execute_batch(SCHEMA).map_err(|e| Error::vault(&path, e))?;
    Ok(conn)
}

/// The safe's checkpoint beside its directory (`<dir>.checkpoint`), outside
/// the store: the counter handed out and the counters withdrawn, signed by
/// the safe. A store replaced by an older copy is behind it (a lower
/// counter, or an item withdrawn in the checkpoint that is not withdrawn in
/// the store), and the safe refuses to open it, so it never pays an item out
/// twice. A store ahead of its checkpoint is the normal state after a crash
/// between the commit and the checkpoint write; opening catches up.
pub fn checkpoint_path(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "safe".into());
    dir.with_file_name(format!("{name}.checkpoint"))
}

const CHECKPOINT_LABEL: &[u8] = b"cardvault safe checkpoint v1";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Checkpoint {
    version: u32,
    safe_id: String,
    counter: u64,
    withdrawn: Vec<u64>,
    signature: String,
}

impl Checkpoint {
    fn message(safe_id: &str, counter: u64, withdrawn: &[u64]) -> Vec<u8> {
        let mut m = CHECKPOINT_LABEL.to_vec();
        m.extend_from_slice(safe_id.as_bytes());
        m.extend_from_slice(&counter.to_be_bytes());
        for w in withdrawn {
            m.extend_from_slice(&w.to_be_bytes());
        }
        m
    }
}

/// The counter and the withdrawn counters of the store on `conn`.
fn ledger_head_in(conn: &Connection, dir: &Path) -> Result<(u64, Vec<u64>)> {
    let db = |e| Error::vault(&dir.join(DB_FILE), e);
    let counter: u64 = conn
        .query_row("SELECT value FROM meta WHERE key = 'counter'", [], |r| {
            r.get::<_, String>(0)
        })
        .map_err(db)?
        .parse()
        .map_err(|_| Error::Data("the safe counter is not a number".into()))?;
    let mut st = conn
        .prepare("SELECT counter FROM items WHERE state = 'withdrawn' ORDER BY counter")
        .map_err(db)?;
    let withdrawn = st
        .query_map([], |r| r.get::<_, i64>(0).map(|n| n as u64))
        .map_err(db)?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(db)?;
    Ok((counter, withdrawn))
}

/// Sign and write (atomically, synced) the checkpoint of `head`.
fn write_checkpoint_of(dir: &Path, id: &[u8; sf::SAFE_ID_LEN], key: &KeyPair, head: &(u64, Vec<u64>)) -> Result<()> {
    let (counter, withdrawn) = head;
    let id = to_hex(id);
    let sig = crypto::sign_p256(key, &Checkpoint::message(&id, *counter, withdrawn))
        .map_err(|_| Error::Internal("the safe could not sign".into()))?;
    let cp = Checkpoint {
        version: 1,
        safe_id: id,
        counter: *counter,
        withdrawn: withdrawn.clone(),
        signature: to_hex(&sig),
    };
    let path = checkpoint_path(dir);
    cardvault_proto::fsutil::atomic_write(&path, serde_json::to_string(&cp).expect("json").as_bytes())
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Writes a safe's checkpoint for requests served side by side (group
/// commit): after its ledger commit, each request that changed the head
/// (a deposit, a receipt) calls [`Checkpointer::catch_up`] under one lock
/// before it answers. The head read then includes every commit made so far,
/// so one write covers every request that committed while the previous
/// write was going on, and the ones waiting behind it find their commit
/// covered and write nothing. As before, no answer leaves before a
/// checkpoint that covers its commit is on disk, and the checkpoint is never
/// ahead of the store.
pub(crate) struct Checkpointer {
    dir: PathBuf,
    conn: Connection,
    key: KeyPair,
    id: [u8; sf::SAFE_ID_LEN],
    /// The head of the last checkpoint this writer wrote.
    written: Option<(u64, Vec<u64>)>,
}

impl Checkpointer {
    /// Write the checkpoint of the store as it is now, unless the last one
    /// written already says so.
    pub(crate) fn catch_up(&mut self) -> Result<()> {
        let head = ledger_head_in(&self.conn, &self.dir)?;
        if self.written.as_ref() == Some(&head) {
            return Ok(());
        }
        write_checkpoint_of(&self.dir, &self.id, &self.key, &head)?;
        self.written = Some(head);
        Ok(())
    }
}

impl Safe {
    /// The counter and the withdrawn counters of the store.
    fn ledger_head(&self) -> Result<(u64, Vec<u64>)> {
        ledger_head_in(&self.conn, &self.dir)
    }

    /// Write the checkpoint of the store as it is now.
    fn write_checkpoint(&self) -> Result<()> {
        write_checkpoint_of(&self.dir, &self.id, &self.key, &self.ledger_head()?)
    }

    /// The checkpoint writer of this safe, on a connection of its own: for
    /// a server whose requests run side by side ([`Safe::defer_checkpoints`]).
    pub(crate) fn checkpointer(&self) -> Result<Checkpointer> {
        Ok(Checkpointer {
            dir: self.dir.clone(),
            conn: open_db(&self.dir)?,
            key: self.key.clone(),
            id: self.id,
            written: None,
        })
    }

    /// From now on a deposit or a receipt commits without writing the
    /// checkpoint: the caller runs [`Checkpointer::catch_up`] before it
    /// answers.
    pub(crate) fn defer_checkpoints(&mut self) {
        self.deferred_checkpoints = true;
    }

    /// Refuse a store that is behind its checkpoint (an older copy).
    fn check_checkpoint(&self) -> Result<()> {
        let path = checkpoint_path(&self.dir);
        let refuse = |why: String| {
            Err(Error::Data(format!(
                "safe {}: {why}; the store was replaced by an older copy or altered, and the safe will not \
                 serve it (it could pay an item out twice)",
                self.dir.display()
            )))
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return refuse(format!("its checkpoint {} is missing", path.display()))
            }
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        let Ok(cp) = serde_json::from_str::<Checkpoint>(&text) else {
            return refuse(format!("its checkpoint {} does not parse", path.display()));
        };
        let signed = cardvault_proto::from_hex(&cp.signature).is_some_and(|sig| {
            crypto::verify_p256(
                &self.key.public_bytes(),
                &Checkpoint::message(&cp.safe_id, cp.counter, &cp.withdrawn),
                &sig,
            )
            .unwrap_or(false)
        });
        if !signed || cp.safe_id != to_hex(&self.id) {
            return refuse(format!("its checkpoint {} is not this safe's", path.display()));
        }
        let (counter, withdrawn) = self.ledger_head()?;
        if counter < cp.counter {
            return refuse(format!(
                "the store's counter is {counter}, its checkpoint says {}",
                cp.counter
            ));
        }
        if let Some(w) = cp.withdrawn.iter().find(|w| !withdrawn.contains(w)) {
            return refuse(format!("item {w} is withdrawn by its checkpoint but not in the store"));
        }
        Ok(())
    }

    /// Open the safe in `dir` (made by [`init`]).
    pub fn open(dir: &Path) -> Result<Safe> {
        if !dir.join(DB_FILE).exists() {
            return Err(Error::Usage(format!(
                "{}: no safe here (make one with `cardvault safe init`)",
                dir.display()
            )));
        }
        let read = |name: &str| {
            std::fs::read(dir.join(name)).map_err(|e| Error::input(format!("reading {}", dir.join(name).display()), e))
        };
        let bad = |name: &str, e: String| Error::Data(format!("{}: {e}", dir.join(name).display()));
        let key =
            KeyPair::from_pem(&zeroize::Zeroizing::new(read(KEY_FILE)?)).map_err(|e| bad(KEY_FILE, e.to_string()))?;
        let cert = X509::from_pem(&read(CERT_FILE)?).map_err(|e| bad(CERT_FILE, e.to_string()))?;
        let root = X509::from_pem(&read(ROOT_FILE)?).map_err(|e| bad(ROOT_FILE, e.to_string()))?;
        let certified = cert::verify_signer_chain(std::slice::from_ref(&root), std::slice::from_ref(&cert))
            .map_err(|e| bad(CERT_FILE, e.to_string()))?;
        if certified != key.public_bytes() {
            return Err(bad(KEY_FILE, "is not the key safe.pem certifies".into()));
        }
        let conn = open_db(dir)?;
        let id: String = conn
            .query_row("SELECT value FROM meta WHERE key = 'safe_id'", [], |r| r.get(0))
            .map_err(|e| Error::vault(&dir.join(DB_FILE), e))?;
        let id = cardvault_proto::from_hex(&id)
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| bad(DB_FILE, "the safe id is not 16 bytes of hex".into()))?;
        let safe = Safe {
            dir: dir.to_path_buf(),
            conn,
            key,
            cert_der: cert.to_der().map_err(|e| Error::Data(e.to_string()))?,
            root,
            id,
            challenges: Default::default(),
            deferred_checkpoints: false,
        };
        safe.check_checkpoint()?;
        safe.write_checkpoint()?;
        Ok(safe)
    }

    pub fn id(&self) -> [u8; sf::SAFE_ID_LEN] {
        self.id
    }

    pub fn info(&self) -> SafeInfo {
        SafeInfo {
            safe_id: to_hex(&self.id),
            safe_certificate: to_hex(&self.cert_der),
        }
    }

    fn db_err(&self, e: rusqlite::Error) -> Error {
        Error::vault(&self.dir.join(DB_FILE), e)
    }

    fn sign(&self, msg: &[u8]) -> Result<[u8; 64]> {
        crypto::sign_p256(&self.key, msg)
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| Error::Internal("the safe could not sign".into()))
    }

    /// Store a card's signed deposit and answer its registration
    /// certificate; the same deposit again gets the same certificate.
    pub fn deposit(&mut self, signed_hex: &str) -> Result<std::result::Result<DepositAnswer, SafeRefusal>> {
        let raw = match hex_field(signed_hex, "the deposit") {
            Ok(r) => r,
            Err(r) => return Ok(Err(r)),
        };
        let Some(signed) = SignedDeposit::parse(&raw) else {
            return Ok(Err(SafeRefusal::Malformed("the deposit does not parse".into())));
        };
        let card = match cardvault_proto::storing::verify_card_signing_certificate(
            std::slice::from_ref(&self.root),
            &signed.card_certificate,
        ) {
            Ok(c) => c,
            Err(e) => return Ok(Err(SafeRefusal::CardNotTrusted(e.to_string()))),
        };
        let key = X509::from_der(&signed.card_certificate)
            .ok()
            .and_then(|c| cert::ecka_public_key(&c).ok())
            .unwrap_or_default();
        if !crypto::verify_p256(&key, &Deposit::message(&signed.deposit), &signed.signature).unwrap_or(false) {
            return Ok(Err(SafeRefusal::CardNotTrusted(
                "the deposit signature does not verify".into(),
            )));
        }
        let Some(deposit) = Deposit::parse(&signed.deposit) else {
            return Ok(Err(SafeRefusal::Malformed("the deposit body does not parse".into())));
        };
        if deposit.safe_id != self.id {
            return Ok(Err(SafeRefusal::OtherSafe(to_hex(&deposit.safe_id))));
        }
        if deposit.card_number != card || deposit.summary_fields().is_none() {
            return Ok(Err(SafeRefusal::Malformed(
                "the deposit names another card than its signer, or its summary does not parse".into(),
            )));
        }
        let stored_hash = crypto::sha256(&signed.deposit);
        let item_hex = to_hex(&deposit.item_id);
        let tx = self
            .conn
            .transaction()
            .map_err(|e| Error::vault(&self.dir.join(DB_FILE), e))?;
        let existing: Option<(Vec<u8>, String)> = tx
            .query_row(
                "SELECT certificate, stored_hash FROM items WHERE card_number = ?1 AND item_id = ?2 AND state != 'withdrawn'",
                params![card, item_hex],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| Error::vault(&self.dir.join(DB_FILE), e))?;
        if let Some((c, h)) = existing {
            drop(tx);
            return Ok(if h == to_hex(&stored_hash) {
                Ok(DepositAnswer {
                    certificate: to_hex(&c),
                    safe_certificate: to_hex(&self.cert_der),
                })
            } else {
                Err(SafeRefusal::Conflict { card, item: item_hex })
            });
        }
        let counter: u64 = tx
            .query_row("SELECT value FROM meta WHERE key = 'counter'", [], |r| {
                r.get::<_, String>(0)
            })
            .map_err(|e| Error::vault(&self.dir.join(DB_FILE), e))?
            .parse::<u64>()
            .map_err(|_| Error::Data("the safe counter is not a number".into()))?
            + 1;
        let mut cert = RegistrationCertificate {
            safe_id: self.id,
            counter,
            card_number: card.clone(),
            item_id: deposit.item_id,
            summary_digest: sf::summary_digest(&deposit.summary),
            stored_hash,
            signature: [0; 64],
        };
        let sig = crypto::sign_p256(&self.key, &cert.message())
            .ok()
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| Error::Internal("the safe could not sign".into()))?;
        cert.signature = sig;
        let encoded = cert.encode();
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'counter'",
            params![counter.to_string()],
        )
        .and_then(|_| {
            tx.execute(
                "INSERT INTO items (counter, card_number, item_id, stored_hash, deposit, summary, certificate, state, deposited_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'stored', ?8)",
                params![counter as i64, card, item_hex, to_hex(&stored_hash), raw, deposit.summary, encoded, now()],
            )
        })
        .and_then(|_| tx.commit())
        .map_err(|e| Error::vault(&self.dir.join(DB_FILE), e))?;
        if !self.deferred_checkpoints {
            self.write_checkpoint()?;
        }
        Ok(Ok(DepositAnswer {
            certificate: to_hex(&encoded),
            safe_certificate: to_hex(&self.cert_der),
        }))
    }

    /// Check a registration certificate: this safe's signature and id.
    fn check_certificate(&self, hex: &str) -> std::result::Result<RegistrationCertificate, SafeRefusal> {
        let c = RegistrationCertificate::parse(&hex_field(hex, "the certificate")?)
            .ok_or(SafeRefusal::ForgedCertificate)?;
        let ok = c.safe_id == self.id
            && crypto::verify_p256(&self.key.public_bytes(), &c.message(), &c.signature).unwrap_or(false);
        if ok {
            Ok(c)
        } else {
            Err(SafeRefusal::ForgedCertificate)
        }
    }

    /// Deliver the item a registration certificate names to the requesting
    /// card, wrapped to its certified ECKA key and bound to its challenge.
    pub fn withdraw(&mut self, req: &WithdrawRequest) -> Result<std::result::Result<DeliveryAnswer, SafeRefusal>> {
        let cert = match self.check_certificate(&req.certificate) {
            Ok(c) => c,
            Err(r) => return Ok(Err(r)),
        };
        let (card_der, challenge) = match (
            hex_field(&req.card_certificate, "the card certificate"),
            hex_field(&req.challenge, "the challenge"),
        ) {
            (Ok(c), Ok(ch)) => (c, ch),
            (Err(r), _) | (_, Err(r)) => return Ok(Err(r)),
        };
        let Ok(challenge) = <[u8; sf::CHALLENGE_LEN]>::try_from(&challenge[..]) else {
            return Ok(Err(SafeRefusal::Malformed("the challenge is not 16 bytes".into())));
        };
        let leaf = match X509::from_der(&card_der)
            .map_err(|e| e.to_string())
            .and_then(|c| cert::verify_ecka_chain(std::slice::from_ref(&self.root), &[c]).map_err(|e| e.to_string()))
        {
            Ok(l) => l,
            Err(e) => return Ok(Err(SafeRefusal::CardNotTrusted(e))),
        };
        let (leaf, card_key) = leaf;
        let Some(target) = cert::card_subject(&leaf).map(|s| s.card_number) else {
            return Ok(Err(SafeRefusal::CardNotTrusted("the certificate names no card".into())));
        };
        if target != cert.card_number {
            match (&req.authorization, &req.owner_proof) {
                (Some(a), _) => {
                    if !self.authorization_verifies(a, &target, &cert) {
                        return Ok(Err(SafeRefusal::AuthorizationInvalid(target)));
                    }
                }
                (None, Some(proof)) => {
                    let request = owner_withdraw_request(&req.certificate, &req.card_certificate, &req.challenge);
                    if let Err(r) = self.check_owner(&cert.card_number, proof, &request)? {
                        return Ok(Err(r));
                    }
                }
                (None, None) => return Ok(Err(SafeRefusal::OwnerAuthenticationNeeded(target))),
            }
        }
        let row: Option<DeliveryRow> = self
            .conn
            .query_row(
                "SELECT certificate, deposit, state, target_card FROM items WHERE counter = ?1",
                params![cert.counter as i64],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(|e| self.db_err(e))?;
        let Some((stored_cert, raw, state, delivering_to)) = row else {
            return Ok(Err(SafeRefusal::UnknownItem(cert.counter)));
        };
        if stored_cert != cert.encode() {
            return Ok(Err(SafeRefusal::ForgedCertificate));
        }
        match (state.as_str(), delivering_to) {
            ("withdrawn", _) => return Ok(Err(SafeRefusal::AlreadyWithdrawn(cert.counter))),
            ("delivering", Some(t)) if t != target => {
                return Ok(Err(SafeRefusal::DeliveringElsewhere(cert.counter, t)))
            }
            _ => {}
        }
        let signed = SignedDeposit::parse(&raw).ok_or_else(|| Error::Data("a stored deposit does not parse".into()))?;
        let aad = Delivery::aad(&cert, &target, &challenge);
        let tk = zeroize::Zeroizing::new(crypto::random::<32>());
        let wrapped = crypto::wrap_key(&card_key, &tk, &aad).map_err(|e| Error::Data(e.to_string()))?;
        let nonce = crypto::random::<{ crypto::GCM_NONCE_LEN }>();
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(
            &crypto::seal(&tk, &nonce, &aad, &signed.deposit).map_err(|e| Error::Data(e.to_string()))?,
        );
        let mut d = Delivery {
            certificate: cert.clone(),
            target_card: target.clone(),
            challenge,
            wrapped_transport_key: wrapped,
            sealed_deposit: sealed,
            signature: [0; 64],
        };
        d.signature = self.sign(&d.message())?;
        let tx = self
            .conn
            .transaction()
            .map_err(|e| Error::vault(&self.dir.join(DB_FILE), e))?;
        let db = |e| Error::vault(&self.dir.join(DB_FILE), e);
        tx.execute(
            "UPDATE items SET state = 'delivering', target_card = ?1 WHERE counter = ?2 AND state != 'withdrawn'",
            params![target, cert.counter as i64],
        )
        .map_err(db)?;
        tx.execute(
            "INSERT OR REPLACE INTO deliveries (counter, target_card, challenge) VALUES (?1, ?2, ?3)",
            params![cert.counter as i64, target, to_hex(&challenge)],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(Ok(DeliveryAnswer {
            delivery: to_hex(&d.encode()),
            safe_certificate: to_hex(&self.cert_der),
        }))
    }

    /// A fresh single-use challenge for the owner of `card`'s escrow.
    pub fn owner_challenge(&mut self, req: &OwnerChallengeRequest) -> SafeResult<OwnerChallenge> {
        let kept: Option<i64> = self
            .conn
            .query_row(
                "SELECT 1 FROM escrow WHERE card_number = ?1",
                params![req.card_number],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.db_err(e))?;
        if kept.is_none() {
            return Ok(Err(SafeRefusal::NoEscrow(req.card_number.clone())));
        }
        let nonce = crypto::random::<OWNER_NONCE_LEN>();
        if self.challenges.len() >= MAX_OPEN_CHALLENGES {
            self.challenges.pop_front();
        }
        self.challenges.push_back((nonce, req.card_number.clone()));
        Ok(Ok(OwnerChallenge { nonce: to_hex(&nonce) }))
    }

    /// The owner's answer to an open challenge (used up whatever the
    /// outcome), checked against the verifier kept with `card`'s escrow.
    fn check_owner(&mut self, card: &str, proof: &OwnerProof, request: &[u8]) -> SafeResult<Vec<u8>> {
        let nonce = cardvault_proto::from_hex(&proof.nonce).unwrap_or_default();
        let Some(at) = self
            .challenges
            .iter()
            .position(|(n, c)| openssl::memcmp::eq(n, &nonce) && c == card)
        else {
            return Ok(Err(SafeRefusal::StaleOwnerChallenge));
        };
        self.challenges.remove(at);
        let row: Option<(Vec<u8>, String)> = self
            .conn
            .query_row(
                "SELECT part, verifier FROM escrow WHERE card_number = ?1",
                params![card],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| self.db_err(e))?;
        let Some((part, verifier)) = row else {
            return Ok(Err(SafeRefusal::NoEscrow(card.to_string())));
        };
        let msg = owner_proof_message(&to_hex(&self.id), card, &nonce, request);
        let ok = match (
            cardvault_proto::from_hex(&verifier),
            cardvault_proto::from_hex(&proof.signature),
        ) {
            (Some(v), Some(sig)) => verify_ed25519(&v, &msg, &sig),
            _ => false,
        };
        Ok(if ok {
            Ok(part)
        } else {
            Err(SafeRefusal::WrongOwnerPassword(card.to_string()))
        })
    }

    /// Keep a card's wallet key part (replacing an earlier one of that card).
    pub fn escrow(&mut self, req: &EscrowRequest) -> SafeResult<EscrowAnswer> {
        let (raw, der) = match (
            hex_field(&req.part, "the part"),
            hex_field(&req.card_certificate, "the card certificate"),
        ) {
            (Ok(r), Ok(d)) => (r, d),
            (Err(e), _) | (_, Err(e)) => return Ok(Err(e)),
        };
        let Some(part) = sf::EscrowPart::parse(&raw) else {
            return Ok(Err(SafeRefusal::Malformed("the part does not parse".into())));
        };
        let card =
            match cardvault_proto::storing::verify_card_signing_certificate(std::slice::from_ref(&self.root), &der) {
                Ok(c) => c,
                Err(e) => return Ok(Err(SafeRefusal::CardNotTrusted(e.to_string()))),
            };
        let key = X509::from_der(&der)
            .ok()
            .and_then(|c| cert::ecka_public_key(&c).ok())
            .unwrap_or_default();
        if part.card_number != card || !crypto::verify_p256(&key, &part.message(), &part.signature).unwrap_or(false) {
            return Ok(Err(SafeRefusal::CardNotTrusted(
                "the part's signature does not verify".into(),
            )));
        }
        if cardvault_proto::from_hex(&req.verifier).map(|v| v.len()) != Some(32) {
            return Ok(Err(SafeRefusal::Malformed(
                "the verifier is not 32 bytes of hex".into(),
            )));
        }
        self.conn
            .execute(
                "INSERT INTO escrow (card_number, part, verifier, escrowed_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(card_number) DO UPDATE SET part = ?2, verifier = ?3, escrowed_at = ?4",
                params![card, raw, req.verifier.to_ascii_lowercase(), now()],
            )
            .map_err(|e| self.db_err(e))?;
        Ok(Ok(EscrowAnswer {
            card_number: card,
            part: to_hex(&raw),
        }))
    }

    /// Hand a kept part to its owner (the proof matches the verifier).
    pub fn escrow_fetch(&mut self, req: &EscrowFetch) -> SafeResult<EscrowAnswer> {
        Ok(self
            .check_owner(&req.card_number, &req.owner_proof, OWNER_FETCH_REQUEST)?
            .map(|part| EscrowAnswer {
                card_number: req.card_number.clone(),
                part: to_hex(&part),
            }))
    }

    fn authorization_verifies(&self, a: &WithdrawAuthorization, target: &str, cert: &RegistrationCertificate) -> bool {
        let (Some(sig), Some(der)) = (
            cardvault_proto::from_hex(&a.signature),
            cardvault_proto::from_hex(&a.signer_certificate),
        ) else {
            return false;
        };
        let Ok(signer) = X509::from_der(&der) else {
            return false;
        };
        match cert::verify_signer_chain(std::slice::from_ref(&self.root), &[signer]) {
            Ok(key) => {
                let msg = sf::withdraw_authorization_message(target, &cert.hash());
                crypto::verify_p256(&key, &msg, &sig).unwrap_or(false)
            }
            Err(_) => false,
        }
    }

    /// The issuer's release of a delivery its card never accepted: the item
    /// is stored again (another card may withdraw it) and that delivery's
    /// receipt is refused for good.
    pub fn release(&mut self, req: &ReleaseRequest) -> SafeResult<LedgerEntry> {
        let (challenge, sig, der) = match (
            hex_field(&req.challenge, "the challenge"),
            hex_field(&req.signature, "the signature"),
            hex_field(&req.signer_certificate, "the signer certificate"),
        ) {
            (Ok(c), Ok(s), Ok(d)) => (c, s, d),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return Ok(Err(e)),
        };
        let verified = X509::from_der(&der)
            .ok()
            .and_then(|c| cert::verify_signer_chain(std::slice::from_ref(&self.root), &[c]).ok())
            .is_some_and(|key| {
                let msg = release_message(&self.id, req.counter, &req.card_number, &challenge);
                crypto::verify_p256(&key, &msg, &sig).unwrap_or(false)
            });
        if !verified {
            return Ok(Err(SafeRefusal::ReleaseInvalid));
        }
        let db = |e| Error::vault(&self.dir.join(DB_FILE), e);
        let tx = self.conn.transaction().map_err(db)?;
        let open: Option<(String, Option<String>, Option<String>)> = tx
            .query_row(
                "SELECT i.state, i.target_card, d.challenge FROM items i
                 LEFT JOIN deliveries d ON d.counter = i.counter AND d.target_card = i.target_card
                 WHERE i.counter = ?1",
                params![req.counter as i64],
                |x| Ok((x.get(0)?, x.get(1)?, x.get(2)?)),
            )
            .optional()
            .map_err(db)?;
        let challenge_hex = to_hex(&challenge);
        match open {
            None => return Ok(Err(SafeRefusal::UnknownItem(req.counter))),
            Some((s, Some(t), Some(c))) if s == "delivering" && t == req.card_number && c == challenge_hex => {}
            Some(_) => return Ok(Err(SafeRefusal::NotDelivering(req.counter, req.card_number.clone()))),
        }
        tx.execute(
            "INSERT OR IGNORE INTO releases (counter, card_number, challenge, released_at) VALUES (?1, ?2, ?3, ?4)",
            params![req.counter as i64, req.card_number, challenge_hex, now()],
        )
        .map_err(db)?;
        tx.execute("DELETE FROM deliveries WHERE counter = ?1", params![req.counter as i64])
            .map_err(db)?;
        tx.execute(
            "UPDATE items SET state = 'stored', target_card = NULL WHERE counter = ?1 AND state = 'delivering'",
            params![req.counter as i64],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(self.entry(req.counter)?.ok_or(SafeRefusal::UnknownItem(req.counter)))
    }

    /// A card's receipt for a delivery: the item is withdrawn. The same
    /// receipt again is accepted and changes nothing.
    pub fn receipt(&mut self, req: &ReceiptRequest) -> Result<std::result::Result<LedgerEntry, SafeRefusal>> {
        let (raw, der) = match (
            hex_field(&req.receipt, "the receipt"),
            hex_field(&req.card_certificate, "the card certificate"),
        ) {
            (Ok(r), Ok(d)) => (r, d),
            (Err(e), _) | (_, Err(e)) => return Ok(Err(e)),
        };
        let Some(r) = Receipt::parse(&raw) else {
            return Ok(Err(SafeRefusal::Malformed("the receipt does not parse".into())));
        };
        let card =
            match cardvault_proto::storing::verify_card_signing_certificate(std::slice::from_ref(&self.root), &der) {
                Ok(c) => c,
                Err(e) => return Ok(Err(SafeRefusal::CardNotTrusted(e.to_string()))),
            };
        let key = X509::from_der(&der)
            .ok()
            .and_then(|c| cert::ecka_public_key(&c).ok())
            .unwrap_or_default();
        if r.safe_id != self.id
            || r.card_number != card
            || !crypto::verify_p256(&key, &r.message(), &r.signature).unwrap_or(false)
        {
            return Ok(Err(SafeRefusal::ReceiptMismatch));
        }
        let tx = self
            .conn
            .transaction()
            .map_err(|e| Error::vault(&self.dir.join(DB_FILE), e))?;
        let row: Option<(String, Option<String>, Option<Vec<u8>>)> = tx
            .query_row(
                "SELECT state, target_card, receipt FROM items WHERE counter = ?1",
                params![r.counter as i64],
                |x| Ok((x.get(0)?, x.get(1)?, x.get(2)?)),
            )
            .optional()
            .map_err(|e| Error::vault(&self.dir.join(DB_FILE), e))?;
        match row {
            None => return Ok(Err(SafeRefusal::UnknownItem(r.counter))),
            Some((s, _, Some(prev))) if s == "withdrawn" && prev == raw => {}
            Some((s, Some(t), _)) if s == "delivering" && t == card => {
                let released: Option<i64> = tx
                    .query_row(
                        "SELECT 1 FROM releases WHERE counter = ?1 AND card_number = ?2 AND challenge = ?3",
                        params![r.counter as i64, card, to_hex(&r.challenge)],
                        |x| x.get(0),
                    )
                    .optional()
                    .map_err(|e| Error::vault(&self.dir.join(DB_FILE), e))?;
                if released.is_some() {
                    return Ok(Err(SafeRefusal::DeliveryReleased(r.counter, card)));
                }
                tx.execute(
                    "UPDATE items SET state = 'withdrawn', receipt = ?1, withdrawn_at = ?2 WHERE counter = ?3",
                    params![raw, now(), r.counter as i64],
                )
                .map_err(|e| Error::vault(&self.dir.join(DB_FILE), e))?;
            }
            Some(_) => {
                let released: Option<i64> = tx
                    .query_row(
                        "SELECT 1 FROM releases WHERE counter = ?1 AND card_number = ?2 AND challenge = ?3",
                        params![r.counter as i64, card, to_hex(&r.challenge)],
                        |x| x.get(0),
                    )
                    .optional()
                    .map_err(|e| Error::vault(&self.dir.join(DB_FILE), e))?;
                return Ok(Err(if released.is_some() {
                    SafeRefusal::DeliveryReleased(r.counter, card)
                } else {
                    SafeRefusal::ReceiptMismatch
                }));
            }
        }
        tx.commit().map_err(|e| Error::vault(&self.dir.join(DB_FILE), e))?;
        if !self.deferred_checkpoints {
            self.write_checkpoint()?;
        }
        Ok(self.entry(r.counter)?.ok_or(SafeRefusal::UnknownItem(r.counter)))
    }

    fn entry(&self, counter: u64) -> Result<Option<LedgerEntry>> {
        Ok(self.list()?.into_iter().find(|e| e.counter == counter))
    }

    /// The ledger, by counter.
    pub fn list(&self) -> Result<Vec<LedgerEntry>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT i.counter, i.card_number, i.item_id, i.state, i.target_card, i.summary, d.challenge
                 FROM items i LEFT JOIN deliveries d ON d.counter = i.counter AND d.target_card = i.target_card
                 ORDER BY i.counter",
            )
            .map_err(|e| self.db_err(e))?;
        let rows = st
            .query_map([], |r| {
                let summary: Vec<u8> = r.get(5)?;
                let f = sf::SummaryFields::parse(&summary).unwrap_or_default();
                let state: String = r.get(3)?;
                Ok(LedgerEntry {
                    counter: r.get::<_, i64>(0)? as u64,
                    card_number: r.get(1)?,
                    item_id: r.get(2)?,
                    state: state.clone(),
                    target_card: r.get(4)?,
                    kind: f.kind.map(|k| k.to_string()),
                    name: f.name,
                    amount: f.amount,
                    challenge: r.get::<_, Option<String>>(6)?.filter(|_| state == "delivering"),
                })
            })
            .map_err(|e| self.db_err(e))?;
        rows.collect::<std::result::Result<_, _>>().map_err(|e| self.db_err(e))
    }

    /// Check every ledger row: the certificate is this safe's signature over
    /// the stored deposit's hash and summary, a withdrawn item has a receipt,
    /// the counter is ahead of every row. Returns the problems found.
    pub fn verify(&self) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let counter: u64 = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'counter'", [], |r| {
                r.get::<_, String>(0)
            })
            .map_err(|e| self.db_err(e))?
            .parse()
            .unwrap_or(0);
        let mut st = self
            .conn
            .prepare("SELECT counter, certificate, deposit, state, receipt FROM items ORDER BY counter")
            .map_err(|e| self.db_err(e))?;
        let rows: Vec<VerifyRow> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))
            .map_err(|e| self.db_err(e))?
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| self.db_err(e))?;
        for (n, c, d, state, receipt) in rows {
            let cert = self.check_certificate(&to_hex(&c));
            let signed = SignedDeposit::parse(&d);
            match (cert, signed) {
                (Ok(c), Some(s)) => {
                    if c.counter != n as u64 || c.stored_hash != crypto::sha256(&s.deposit) {
                        problems.push(format!("item {n}: the certificate does not match the stored deposit"));
                    }
                }
                _ => problems.push(format!("item {n}: certificate or deposit altered")),
            }
            if state == "withdrawn" && receipt.is_none() {
                problems.push(format!("item {n}: withdrawn without a receipt"));
            }
            if n as u64 > counter {
                problems.push(format!("item {n}: beyond the safe counter {counter}"));
            }
        }
        Ok(problems)
    }
}

/// Where a command reaches a safe: a directory (embedded, in-process) or an
/// `http://` address of `cardvault safe serve`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SafeAddress {
    Dir(PathBuf),
    Http(String),
}

impl std::str::FromStr for SafeAddress {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<SafeAddress, String> {
        if s.starts_with("http://") {
            Ok(SafeAddress::Http(s.trim_end_matches('/').to_string()))
        } else if s.contains("://") {
            Err(format!("{s}: a safe is a directory or an http:// address"))
        } else {
            Ok(SafeAddress::Dir(PathBuf::from(s)))
        }
    }
}

impl std::fmt::Display for SafeAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SafeAddress::Dir(d) => write!(f, "{}", d.display()),
            SafeAddress::Http(u) => f.write_str(u),
        }
    }
}

/// A connection to a safe, embedded or over HTTP: the same requests. The
/// `Faulty` variant fails one request per its schedule (tests).
pub enum SafeClient {
    Embedded(Box<Safe>),
    Remote(http::Client),
    Faulty {
        inner: Box<SafeClient>,
        schedule: std::sync::Arc<fault::SafeFaultSchedule>,
    },
}

/// A safe's answer: its value, or the safe's refusal.
pub type SafeResult<T> = Result<std::result::Result<T, SafeRefusal>>;

/// One request, per request kind.
enum Request<'a> {
    Info,
    Deposit(&'a [u8]),
    Withdraw(&'a WithdrawRequest),
    Receipt(&'a ReceiptRequest),
    List,
    Escrow(&'a EscrowRequest),
    EscrowFetch(&'a EscrowFetch),
    OwnerChallenge(&'a OwnerChallengeRequest),
    Release(&'a ReleaseRequest),
}

/// One answer.
enum Answer {
    Info(SafeInfo),
    Deposit(DepositAnswer),
    Withdraw(DeliveryAnswer),
    Receipt(LedgerEntry),
    List(Vec<LedgerEntry>),
    Escrow(EscrowAnswer),
    OwnerChallenge(OwnerChallenge),
}

static PLAIN_HTTP_ACKNOWLEDGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The operator accepts plain `http://` safes off loopback (`--plain-http-safe`).
pub fn acknowledge_plain_http(yes: bool) {
    PLAIN_HTTP_ACKNOWLEDGED.store(yes, std::sync::atomic::Ordering::SeqCst);
}

/// Whether the host of an `http://` address is loopback (127.0.0.0/8,
/// `::1`, `localhost`).
pub fn is_loopback_url(url: &str) -> bool {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit('@').next().unwrap_or_default();
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A plain `http://` safe off loopback is refused unless acknowledged.
pub fn check_plain_http(url: &str, acknowledged: bool) -> Result<()> {
    if acknowledged || is_loopback_url(url) {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "{url}: a safe over plain http:// off this machine shows who deposits and withdraws what, and \
         the path can drop or delay requests (the messages themselves are protected end to end); \
         pass --plain-http-safe to accept that"
    )))
}

impl SafeClient {
    pub fn connect(a: &SafeAddress) -> Result<SafeClient> {
        Ok(match a {
            SafeAddress::Dir(d) => SafeClient::Embedded(Box::new(Safe::open(d)?)),
            SafeAddress::Http(u) => {
                check_plain_http(u, PLAIN_HTTP_ACKNOWLEDGED.load(std::sync::atomic::Ordering::SeqCst))?;
                SafeClient::Remote(http::Client::new(u))
            }
        })
    }

    /// This client, failing one request per `schedule`.
    pub fn faulty(self, schedule: std::sync::Arc<fault::SafeFaultSchedule>) -> SafeClient {
        SafeClient::Faulty {
            inner: Box::new(self),
            schedule,
        }
    }

    fn request(&mut self, r: Request<'_>) -> SafeResult<Answer> {
        fn map<T>(r: SafeResult<T>, f: impl FnOnce(T) -> Answer) -> SafeResult<Answer> {
            r.map(|x| x.map(f))
        }
        match self {
            SafeClient::Faulty { inner, schedule } => {
                let lost = || Error::SafeUnreachable {
                    address: "(fault injection)".into(),
                    reason: "the safe went away".into(),
                };
                match schedule.next() {
                    None => inner.request(r),
                    Some(fault::SafeFault::RequestLost) => {
                        schedule.run_hook();
                        Err(lost())
                    }
                    Some(fault::SafeFault::AnswerLost) => {
                        let _ = inner.request(r);
                        schedule.run_hook();
                        Err(lost())
                    }
                }
            }
            SafeClient::Embedded(s) => match r {
                Request::Info => Ok(Ok(Answer::Info(s.info()))),
                Request::Deposit(d) => map(s.deposit(&to_hex(d)), Answer::Deposit),
                Request::Withdraw(w) => map(s.withdraw(w), Answer::Withdraw),
                Request::Receipt(q) => map(s.receipt(q), Answer::Receipt),
                Request::List => s.list().map(|l| Ok(Answer::List(l))),
                Request::Escrow(e) => map(s.escrow(e), Answer::Escrow),
                Request::EscrowFetch(f) => map(s.escrow_fetch(f), Answer::Escrow),
                Request::OwnerChallenge(c) => map(s.owner_challenge(c), Answer::OwnerChallenge),
                Request::Release(q) => map(s.release(q), Answer::Receipt),
            },
            SafeClient::Remote(c) => match r {
                Request::Info => map(c.get("/v1/info"), Answer::Info),
                Request::Deposit(d) => map(
                    c.post("/v1/deposit", &serde_json::json!({ "deposit": to_hex(d) })),
                    Answer::Deposit,
                ),
                Request::Withdraw(w) => map(c.post("/v1/withdraw", w), Answer::Withdraw),
                Request::Receipt(q) => map(c.post("/v1/receipt", q), Answer::Receipt),
                Request::List => map(c.get("/v1/items"), Answer::List),
                Request::Escrow(e) => map(c.post("/v1/escrow", e), Answer::Escrow),
                Request::EscrowFetch(f) => map(c.post("/v1/escrow/fetch", f), Answer::Escrow),
                Request::OwnerChallenge(q) => map(c.post("/v1/owner/challenge", q), Answer::OwnerChallenge),
                Request::Release(q) => map(c.post("/v1/release", q), Answer::Receipt),
            },
        }
    }

    /// One request whose answer `pick` takes apart: the answer of another
    /// kind is an internal error (each request has one kind of answer).
    fn ask<T>(&mut self, req: Request<'_>, what: &str, pick: fn(Answer) -> Option<T>) -> SafeResult<T> {
        match self.request(req)? {
            Ok(a) => pick(a)
                .map(Ok)
                .ok_or_else(|| Error::Internal(format!("the safe answered {what} with another kind of answer"))),
            Err(r) => Ok(Err(r)),
        }
    }

    pub fn info(&mut self) -> SafeResult<SafeInfo> {
        self.ask(Request::Info, "an info request", |a| match a {
            Answer::Info(i) => Some(i),
            _ => None,
        })
    }

    pub fn deposit(&mut self, signed: &[u8]) -> SafeResult<DepositAnswer> {
        self.ask(Request::Deposit(signed), "a deposit", |a| match a {
            Answer::Deposit(d) => Some(d),
            _ => None,
        })
    }

    pub fn withdraw(&mut self, req: &WithdrawRequest) -> SafeResult<DeliveryAnswer> {
        self.ask(Request::Withdraw(req), "a withdrawal", |a| match a {
            Answer::Withdraw(d) => Some(d),
            _ => None,
        })
    }

    pub fn receipt(&mut self, req: &ReceiptRequest) -> SafeResult<LedgerEntry> {
        self.ask(Request::Receipt(req), "a receipt", ledger_row)
    }

    pub fn list(&mut self) -> SafeResult<Vec<LedgerEntry>> {
        self.ask(Request::List, "a list request", |a| match a {
            Answer::List(l) => Some(l),
            _ => None,
        })
    }

    pub fn escrow(&mut self, req: &EscrowRequest) -> SafeResult<EscrowAnswer> {
        self.ask(Request::Escrow(req), "an escrow request", escrow_part)
    }

    pub fn escrow_fetch(&mut self, req: &EscrowFetch) -> SafeResult<EscrowAnswer> {
        self.ask(Request::EscrowFetch(req), "an escrow fetch", escrow_part)
    }

    pub fn owner_challenge(&mut self, req: &OwnerChallengeRequest) -> SafeResult<OwnerChallenge> {
        self.ask(
            Request::OwnerChallenge(req),
            "an owner challenge request",
            |a| match a {
                Answer::OwnerChallenge(c) => Some(c),
                _ => None,
            },
        )
    }

    /// The issuer's release of a stuck delivery; answers the ledger row.
    pub fn release(&mut self, req: &ReleaseRequest) -> SafeResult<LedgerEntry> {
        self.ask(Request::Release(req), "a release", ledger_row)
    }
}

fn ledger_row(a: Answer) -> Option<LedgerEntry> {
    match a {
        Answer::Receipt(e) => Some(e),
        _ => None,
    }
}

fn escrow_part(a: Answer) -> Option<EscrowAnswer> {
    match a {
        Answer::Escrow(e) => Some(e),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_off_loopback_needs_the_acknowledgement() {
        for ok in [
            "http://127.0.0.1:7800",
            "http://127.8.9.10",
            "http://localhost:7800/",
            "http://LOCALHOST",
            "http://[::1]:7800",
        ] {
            assert!(is_loopback_url(ok), "{ok}");
            assert!(check_plain_http(ok, false).is_ok(), "{ok}");
        }
        for off in [
            "http://192.0.2.1:7800",
            "http://safe.example",
            "http://127.0.0.1.example:80",
            "http://[2001:db8::1]:7800",
            "http://localhost@192.0.2.1/",
        ] {
            assert!(!is_loopback_url(off), "{off}");
            let e = check_plain_http(off, false).unwrap_err();
            assert!(
                matches!(e, Error::Usage(ref m) if m.contains("--plain-http-safe")),
                "{e}"
            );
            assert!(check_plain_http(off, true).is_ok(), "{off}");
        }
    }
}
