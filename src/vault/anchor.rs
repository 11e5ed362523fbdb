//! The audit trail's anchor outside the vault file: a checkpoint file beside
//! the vault (`<vault>.audit-checkpoint`) naming the id and hash of the
//! newest audit entry, authenticated with HMAC-SHA256 under the operator
//! key, which is not in the vault (a key file, by default `operator.key` in
//! the vault's directory, or the file `CARDVAULT_OPERATOR_KEY` names; made
//! 0600 with 32 random bytes on first use).
//!
//! The audit rows are hash chained in the vault; the chain alone has no key,
//! so whoever can write the vault file could drop the triggers, edit, delete
//! or cut entries and rehash the rest. The checkpoint closes that: a
//! rewritten or deleted entry changes the head hash, a truncation leaves the
//! checkpoint naming an entry that is gone, and forging a checkpoint needs
//! the operator key. Threat model in RELIABILITY.md.
//!
//! The same key authenticates each entry: [`Anchor::entry_key`] derives the
//! key of the per-entry MACs (`audit.mac`, schema version 3), and the
//! checkpoint (version 2) records `macs_from`, the first entry written with
//! a MAC, so that removing the MACs of later entries is seen too.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Domain separation label of the checkpoint MAC (version 1 files).
const LABEL: &[u8] = b"cardvault audit checkpoint v1";
/// Domain separation label of the checkpoint MAC (version 2: with `macs_from`).
const LABEL_V2: &[u8] = b"cardvault audit checkpoint v2";
/// HKDF salt and info of the per-entry MAC key.
const ENTRY_KEY_SALT: &[u8] = b"cardvault audit";
const ENTRY_KEY_INFO: &[u8] = b"entry mac v1";
/// The environment variable naming the operator key file.
pub const OPERATOR_KEY_ENV: &str = "CARDVAULT_OPERATOR_KEY";

/// The checkpoint of one vault.
#[derive(Debug, Clone)]
pub struct Anchor {
    checkpoint: PathBuf,
    key_path: PathBuf,
}

/// What the checkpoint file says, MAC checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub id: i64,
    pub head: Vec<u8>,
    /// The first entry written with a per-entry MAC: every entry from it on
    /// must carry one. `None` in a version 1 checkpoint (written before
    /// entries had MACs).
    pub macs_from: Option<i64>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct File {
    version: u32,
    id: i64,
    head: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    macs_from: Option<i64>,
    mac: String,
}

impl Anchor {
    pub fn for_vault(vault: &Path) -> Anchor {
        let mut c = vault.as_os_str().to_owned();
        c.push(".audit-checkpoint");
        let key_path = match std::env::var_os(OPERATOR_KEY_ENV) {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => vault
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
                .join("operator.key"),
        };
        Anchor {
            checkpoint: PathBuf::from(c),
            key_path,
        }
    }

    pub fn checkpoint_path(&self) -> &Path {
        &self.checkpoint
    }

    fn key(&self, create: bool) -> Result<Zeroizing<Vec<u8>>> {
        let io = |what: &str, e: std::io::Error| Error::io(format!("{what} {}", self.key_path.display()), e);
        match std::fs::read_to_string(&self.key_path) {
            Ok(text) => cardvault_proto::from_hex(text.trim())
                .filter(|k| k.len() == 32)
                .map(Zeroizing::new)
                .ok_or_else(|| Error::Data(format!("{}: not a 32-byte hex operator key", self.key_path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let key = Zeroizing::new(cardvault_proto::crypto::random::<32>().to_vec());
                let mut f =
                    cardvault_proto::fsutil::AtomicFile::create(&self.key_path).map_err(|e| io("creating", e))?;
                std::io::Write::write_all(&mut f, cardvault_proto::to_hex(&key).as_bytes())
                    .map_err(|e| io("writing", e))?;
                match f.commit_new() {
                    Ok(()) => Ok(key),
                    // Another terminal made it a moment ago: use that one.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => self.key(false),
                    Err(e) => Err(io("writing", e)),
                }
            }
            Err(e) => Err(io("reading", e)),
        }
    }

    fn mac(key: &[u8], id: i64, head: &[u8], macs_from: Option<i64>) -> Result<[u8; 32]> {
        let r = match macs_from {
            None => cardvault_proto::crypto::hmac_sha256(key, &[LABEL, &id.to_be_bytes(), head]),
            Some(m) => {
                cardvault_proto::crypto::hmac_sha256(key, &[LABEL_V2, &id.to_be_bytes(), head, &m.to_be_bytes()])
            }
        };
        r.map_err(|e| Error::Data(e.to_string()))
    }

    /// The key of the per-entry MACs: HKDF-SHA256 of the operator key
    /// (made on first use when `create`). Distinct from the checkpoint's
    /// key, so neither MAC can stand in for the other.
    pub fn entry_key(&self, create: bool) -> Result<Zeroizing<[u8; 32]>> {
        let key = self.key(create)?;
        cardvault_proto::crypto::hkdf(&key, ENTRY_KEY_SALT, ENTRY_KEY_INFO).map_err(|e| Error::Data(e.to_string()))
    }

    /// Record `id` and `head` as the newest entry, and `macs_from` as the
    /// first entry with a MAC (durably, through a temporary file and rename).
    pub fn write(&self, id: i64, head: &[u8], macs_from: i64) -> Result<()> {
        let key = self.key(true)?;
        let f = File {
            version: 2,
            id,
            head: cardvault_proto::to_hex(head),
            macs_from: Some(macs_from),
            mac: cardvault_proto::to_hex(&Self::mac(&key, id, head, Some(macs_from))?),
        };
        let text = serde_json::to_vec(&f).expect("json");
        cardvault_proto::fsutil::atomic_write(&self.checkpoint, &text)
            .map_err(|e| Error::io(format!("writing {}", self.checkpoint.display()), e))
    }

    /// The checkpoint, `None` when there is none; an error names a file
    /// that is unreadable or whose MAC does not verify.
    pub fn read(&self) -> std::result::Result<Option<Checkpoint>, String> {
        let text = match std::fs::read(&self.checkpoint) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", self.checkpoint.display())),
        };
        let name = self.checkpoint.display();
        let f: File = serde_json::from_slice(&text).map_err(|e| format!("{name}: {e}"))?;
        let head = cardvault_proto::from_hex(&f.head).ok_or_else(|| format!("{name}: head is not hex"))?;
        let mac = cardvault_proto::from_hex(&f.mac).ok_or_else(|| format!("{name}: MAC is not hex"))?;
        let key = self.key(false).map_err(|e| e.to_string())?;
        // Version 1 has no macs_from; version 2 must have one (the MAC covers it).
        let macs_from = match (f.version, f.macs_from) {
            (1, None) => None,
            (2, Some(m)) => Some(m),
            _ => return Err(format!("{name}: version {} checkpoint of the wrong form", f.version)),
        };
        let expected = Self::mac(&key, f.id, &head, macs_from).map_err(|e| e.to_string())?;
        if mac.len() != expected.len() || !openssl::memcmp::eq(&expected, &mac) {
            return Err(format!(
                "{name}: the checkpoint's MAC does not verify under the operator key"
            ));
        }
        Ok(Some(Checkpoint {
            id: f.id,
            head,
            macs_from,
        }))
    }
}
