//! The issuer domain's key ceremony: the card-common key (the key that wraps
//! each card's unique key inside its backups, SPEC 3.2) is generated once,
//! split K-of-N among custodians (Shamir over GF(256), [`shamir`]), and each
//! custodian's share is written encrypted under that custodian's passphrase
//! (scrypt → AES-256-GCM). The key itself is never written whole: it is
//! rebuilt in memory (zeroized) from K shares when it is needed.
//!
//! Files in the domain directory (FORMATS.md, "Issuer domain"):
//! `domain.json` (public: domain id, generation, threshold, custodians,
//! check value) and `share-<i>.json`, one per custodian.

pub mod shamir;

use crate::error::{Error, Result};
use crate::secret::Secret;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use zeroize::Zeroizing;

const SHARE_AAD_LABEL: &[u8] = b"cardvault domain share v1";
/// scrypt cost: N = 2^15, r = 8, p = 1 (32 MiB, tens of milliseconds).
const SCRYPT_N: u64 = 1 << 15;
const SCRYPT_R: u64 = 8;
const SCRYPT_P: u64 = 1;
const SCRYPT_MAXMEM: u64 = 64 * 1024 * 1024;

/// The public description of a domain (`domain.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DomainInfo {
    pub version: u32,
    /// 16 random bytes, hex.
    pub domain_id: String,
    pub generation: u32,
    pub threshold: u8,
    pub custodians: u8,
    /// HMAC-SHA256(key, label)[..8], hex: tells a rebuilt key is the right one.
    pub check_value: String,
}

/// One custodian's share file (`share-<i>.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShareFile {
    #[serde(flatten)]
    pub domain: DomainInfo,
    pub index: u8,
    pub kdf: Kdf,
    /// 12 bytes, hex.
    pub nonce: String,
    /// The 32-byte share and the GCM tag, hex.
    pub sealed: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Kdf {
    pub name: String,
    pub log2_n: u8,
    pub r: u32,
    pub p: u32,
    pub salt: String,
}

/// The domain's check value of `key` (the card computes the same,
/// `cardvault_proto::domain::check_value`, before it accepts the key).
pub fn check_value(key: &[u8]) -> Result<[u8; 8]> {
    cardvault_proto::domain::check_value(key).map_err(|e| Error::Data(e.to_string()))
}

/// A domain's card-common key, rebuilt in memory from K shares
/// ([`reconstruct`]) for loading into cards; zeroized when dropped.
pub struct DomainKey {
    pub info: DomainInfo,
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for DomainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DomainKey")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl DomainKey {
    /// A key with its description (tests and the demo make their own; an
    /// issuer rebuilds it from the custodians' shares with [`reconstruct`]).
    pub fn new(info: DomainInfo, key: Zeroizing<[u8; 32]>) -> Result<DomainKey> {
        if cardvault_proto::to_hex(&check_value(&key[..])?) != info.check_value {
            return Err(Error::Data(format!(
                "domain {}: the key does not match the domain's check value",
                info.domain_id
            )));
        }
        domain_ref(&info)?;
        Ok(DomainKey { info, key })
    }

    /// Which domain and generation.
    pub fn domain(&self) -> cardvault_proto::domain::DomainRef {
        domain_ref(&self.info).expect("checked in DomainKey::new")
    }

    /// The LOAD DOMAIN KEY data for a card.
    pub fn load(&self) -> cardvault_proto::domain::DomainKeyLoad {
        cardvault_proto::domain::DomainKeyLoad {
            domain: self.domain(),
            key: self.key.clone(),
            check_value: cardvault_proto::from_hex(&self.info.check_value)
                .and_then(|c| c.try_into().ok())
                .expect("checked in DomainKey::new"),
        }
    }
}

/// The wire form of a domain description's id and generation.
pub fn domain_ref(d: &DomainInfo) -> Result<cardvault_proto::domain::DomainRef> {
    let id = cardvault_proto::from_hex(&d.domain_id)
        .and_then(|v| <[u8; 16]>::try_from(v).ok())
        .ok_or_else(|| Error::Data(format!("domain id '{}' is not 16 bytes of hex", d.domain_id)))?;
    if d.generation == 0 {
        return Err(Error::Data(format!("domain {}: generation 0", d.domain_id)));
    }
    Ok(cardvault_proto::domain::DomainRef {
        id,
        generation: d.generation,
    })
}

fn share_aad(d: &DomainInfo, index: u8) -> Vec<u8> {
    let mut a = SHARE_AAD_LABEL.to_vec();
    a.extend_from_slice(d.domain_id.as_bytes());
    a.extend_from_slice(&d.generation.to_be_bytes());
    a.extend_from_slice(&[index, d.threshold, d.custodians]);
    a.extend_from_slice(d.check_value.as_bytes());
    a
}

fn kek(pass: &[u8], salt: &[u8], kdf: &Kdf) -> Result<Zeroizing<[u8; 32]>> {
    if kdf.name != "scrypt" || kdf.log2_n > 22 || kdf.r == 0 || kdf.p == 0 {
        return Err(Error::Data(format!("unsupported share key derivation {}", kdf.name)));
    }
    let mut k = Zeroizing::new([0u8; 32]);
    openssl::pkcs5::scrypt(
        pass,
        salt,
        1u64 << kdf.log2_n,
        kdf.r as u64,
        kdf.p as u64,
        SCRYPT_MAXMEM.max(256 * (1u64 << kdf.log2_n) * kdf.r as u64),
        &mut k[..],
    )
    .map_err(|e| Error::Data(format!("scrypt: {e}")))?;
    Ok(k)
}

fn share_path(dir: &Path, index: u8) -> std::path::PathBuf {
    dir.join(format!("share-{index}.json"))
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |e| Error::io(format!("writing {}", path.display()), e);
    let mut f = cardvault_proto::fsutil::AtomicFile::create(path).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.commit_new().map_err(io)
}

/// The ceremony: generate the card-common key of a new domain, split it
/// `threshold`-of-`passphrases.len()` and write the public description and
/// one encrypted share per custodian into `dir` (which must not exist or be
/// empty). Returns the domain description; the key is dropped (zeroized).
pub fn init(dir: &Path, threshold: u8, passphrases: &[Secret]) -> Result<DomainInfo> {
    let n = passphrases.len();
    if !(2..=255).contains(&n) || threshold < 2 || threshold as usize > n {
        return Err(Error::Usage(format!(
            "a domain needs 2 to 255 custodians and a threshold from 2 to their number (got {threshold} of {n})"
        )));
    }
    if dir.exists() && std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        return Err(Error::Usage(format!("{} exists and is not empty", dir.display())));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let id = cardvault_proto::to_hex(&cardvault_proto::crypto::random::<16>());
    write_generation(dir, &id, 1, threshold, passphrases)
}

/// Generate the key of generation `generation` of domain `id` and write its
/// description and shares into `dir` (files that must not exist yet).
fn write_generation(
    dir: &Path,
    id: &str,
    generation: u32,
    threshold: u8,
    passphrases: &[Secret],
) -> Result<DomainInfo> {
    let n = passphrases.len();
    let key = Zeroizing::new(cardvault_proto::crypto::random::<32>());
    let info = DomainInfo {
        version: 1,
        domain_id: id.to_string(),
        generation,
        threshold,
        custodians: n as u8,
        check_value: cardvault_proto::to_hex(&check_value(&key[..])?),
    };
    for ((index, share), pass) in shamir::split(&key[..], threshold, n as u8).into_iter().zip(passphrases) {
        let salt = cardvault_proto::crypto::random::<16>();
        let kdf = Kdf {
            name: "scrypt".into(),
            log2_n: SCRYPT_N.trailing_zeros() as u8,
            r: SCRYPT_R as u32,
            p: SCRYPT_P as u32,
            salt: cardvault_proto::to_hex(&salt),
        };
        let k = kek(pass, &salt, &kdf)?;
        let nonce = cardvault_proto::crypto::random::<12>();
        let sealed = cardvault_proto::crypto::seal(&k, &nonce, &share_aad(&info, index), &share)
            .map_err(|e| Error::Data(e.to_string()))?;
        let file = ShareFile {
            domain: info.clone(),
            index,
            kdf,
            nonce: cardvault_proto::to_hex(&nonce),
            sealed: cardvault_proto::to_hex(&sealed),
        };
        write_new(
            &share_path(dir, index),
            serde_json::to_string_pretty(&file).expect("json").as_bytes(),
        )?;
    }
    // The description last: a directory with it is complete.
    write_new(
        &dir.join("domain.json"),
        serde_json::to_string_pretty(&info).expect("json").as_bytes(),
    )?;
    Ok(info)
}

/// The directory `domain rotate` keeps generation `g`'s files in, inside the
/// domain directory: itself a complete domain directory of that generation
/// (`issue --domain DIR/generation-G` issues a card of the old generation,
/// for instance a replacement card that must restore its backups).
pub fn generation_dir(dir: &Path, generation: u32) -> std::path::PathBuf {
    dir.join(format!("generation-{generation}"))
}

/// `domain rotate`: a new generation of the domain in `dir`. A quorum of
/// the current generation's custodians (`given`) must open their shares (the
/// old key is rebuilt and checked, then dropped); a new key is generated and
/// split among the same number of custodians under `new_passphrases`, with
/// the same threshold. The current generation's files move to
/// [`generation_dir`]; the new generation's are written in their place.
pub fn rotate(dir: &Path, given: &[(u8, Secret)], new_passphrases: &[Secret]) -> Result<DomainInfo> {
    let (old, key) = reconstruct(dir, given)?;
    drop(key);
    if new_passphrases.len() != old.custodians as usize {
        return Err(Error::Usage(format!(
            "domain {}: {} custodians need {} new passphrases, got {}",
            old.domain_id,
            old.custodians,
            old.custodians,
            new_passphrases.len()
        )));
    }
    let next = old
        .generation
        .checked_add(1)
        .ok_or_else(|| Error::Usage("the domain's generation counter is exhausted".into()))?;
    // The new generation is made complete beside the current one first.
    let staging = dir.join(format!(".generation-{next}.new"));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| Error::io(format!("removing {}", staging.display()), e))?;
    }
    std::fs::create_dir(&staging).map_err(|e| Error::io(format!("creating {}", staging.display()), e))?;
    let info = write_generation(&staging, &old.domain_id, next, old.threshold, new_passphrases)?;
    // Archive the current generation (moved, never deleted), then move the new one in.
    let archive = generation_dir(dir, old.generation);
    std::fs::create_dir(&archive).map_err(|e| Error::io(format!("creating {}", archive.display()), e))?;
    let mv = |from: std::path::PathBuf, to: std::path::PathBuf| {
        std::fs::rename(&from, &to).map_err(|e| Error::io(format!("moving {} to {}", from.display(), to.display()), e))
    };
    mv(dir.join("domain.json"), archive.join("domain.json"))?;
    for i in 1..=old.custodians {
        mv(share_path(dir, i), share_path(&archive, i))?;
    }
    for i in 1..=info.custodians {
        mv(share_path(&staging, i), share_path(dir, i))?;
    }
    mv(staging.join("domain.json"), dir.join("domain.json"))?;
    std::fs::remove_dir(&staging).map_err(|e| Error::io(format!("removing {}", staging.display()), e))?;
    Ok(info)
}

/// The domain description in `dir`.
pub fn info(dir: &Path) -> Result<DomainInfo> {
    let p = dir.join("domain.json");
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(format!("reading {}", p.display()), e))?;
    serde_json::from_str(&text).map_err(|e| Error::Data(format!("{}: {e}", p.display())))
}

fn load_share(dir: &Path, d: &DomainInfo, index: u8) -> Result<ShareFile> {
    let p = share_path(dir, index);
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(format!("reading {}", p.display()), e))?;
    let s: ShareFile = serde_json::from_str(&text).map_err(|e| Error::Data(format!("{}: {e}", p.display())))?;
    if s.domain != *d || s.index != index {
        return Err(Error::Data(format!(
            "{}: belongs to another domain, generation or custodian",
            p.display()
        )));
    }
    Ok(s)
}

fn open_share(dir: &Path, d: &DomainInfo, index: u8, pass: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let s = load_share(dir, d, index)?;
    let bad = || {
        Error::Data(format!(
            "share {index}: wrong passphrase, or the share file was altered"
        ))
    };
    let salt = cardvault_proto::from_hex(&s.kdf.salt).ok_or_else(bad)?;
    let nonce = cardvault_proto::from_hex(&s.nonce).ok_or_else(bad)?;
    let sealed = cardvault_proto::from_hex(&s.sealed).ok_or_else(bad)?;
    let k = kek(pass, &salt, &s.kdf)?;
    let share = cardvault_proto::crypto::open(&k, &nonce, &share_aad(d, index), &sealed).map_err(|_| bad())?;
    if share.len() != 32 {
        return Err(bad());
    }
    Ok(share)
}

/// `domain verify`: every share file of the domain is present and
/// consistent, and each `(index, passphrase)` given opens its share. Shares
/// are checked one by one; the key is never rebuilt.
pub fn verify(dir: &Path, given: &[(u8, Secret)]) -> Result<DomainInfo> {
    let d = info(dir)?;
    for i in 1..=d.custodians {
        load_share(dir, &d, i)?;
    }
    for (i, pass) in given {
        open_share(dir, &d, *i, pass)?;
    }
    Ok(d)
}

/// Rebuild the card-common key in memory from at least `threshold`
/// custodians' `(index, passphrase)`; checked against the check value.
pub fn reconstruct(dir: &Path, given: &[(u8, Secret)]) -> Result<(DomainInfo, Zeroizing<[u8; 32]>)> {
    let d = info(dir)?;
    if given.len() < d.threshold as usize {
        return Err(Error::Usage(format!(
            "domain {} generation {}: {} custodian share(s) given, {} of {} needed; nothing was rebuilt",
            d.domain_id,
            d.generation,
            given.len(),
            d.threshold,
            d.custodians
        )));
    }
    if let Some((i, _)) = given.iter().find(|(i, _)| *i == 0 || *i > d.custodians) {
        return Err(Error::Usage(format!(
            "domain {}: there is no share {i} (shares 1 to {})",
            d.domain_id, d.custodians
        )));
    }
    let mut shares = Vec::new();
    for (i, pass) in given {
        shares.push((*i, open_share(dir, &d, *i, pass)?));
    }
    let parts: Vec<(u8, &[u8])> = shares.iter().map(|(i, s)| (*i, &s[..])).collect();
    let key =
        shamir::combine(&parts).ok_or_else(|| Error::Usage("the same custodian's share was given twice".into()))?;
    if cardvault_proto::to_hex(&check_value(&key)?) != d.check_value {
        return Err(Error::Data(format!(
            "domain {}: the shares do not rebuild the domain key (check value)",
            d.domain_id
        )));
    }
    let mut k = Zeroizing::new([0u8; 32]);
    k.copy_from_slice(&key);
    Ok((d, k))
}

/// [`reconstruct`], as the key to load into cards.
pub fn rebuild_key(dir: &Path, given: &[(u8, Secret)]) -> Result<DomainKey> {
    let (d, k) = reconstruct(dir, given)?;
    DomainKey::new(d, k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(s: &str) -> Secret {
        Zeroizing::new(s.as_bytes().to_vec())
    }

    #[test]
    fn three_of_five_two_fail_three_succeed_wrong_passphrase_fails() {
        let dir = std::env::temp_dir().join(format!("cv-domain-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ps: Vec<Secret> = (1..=5).map(|i| pass(&format!("custodian {i} passphrase"))).collect();
        let d = init(&dir, 3, &ps).unwrap();
        assert_eq!((d.threshold, d.custodians), (3, 5));
        // No file holds the key: a second ceremony in the same place is refused.
        assert!(init(&dir, 3, &ps).is_err());
        let given = |ix: &[u8]| -> Vec<(u8, Secret)> { ix.iter().map(|i| (*i, ps[*i as usize - 1].clone())).collect() };
        verify(&dir, &given(&[1, 4])).unwrap();
        assert!(matches!(reconstruct(&dir, &given(&[2, 5])), Err(Error::Usage(_))));
        let (_, k1) = reconstruct(&dir, &given(&[1, 2, 3])).unwrap();
        let (_, k2) = reconstruct(&dir, &given(&[5, 3, 4])).unwrap();
        assert_eq!(k1, k2);
        assert_eq!(cardvault_proto::to_hex(&check_value(&k1[..]).unwrap()), d.check_value);
        let mut wrong = given(&[1, 2, 3]);
        wrong[1].1 = pass("not the passphrase");
        let e = reconstruct(&dir, &wrong).unwrap_err();
        assert!(e.to_string().contains("wrong passphrase"), "{e}");
        assert!(verify(&dir, &wrong).is_err());
        // A share file of another domain does not pass for one of this domain.
        let other = dir.with_extension("other");
        let _ = std::fs::remove_dir_all(&other);
        init(&other, 2, &ps[..2]).unwrap();
        std::fs::copy(other.join("share-1.json"), dir.join("share-1.json")).unwrap();
        assert!(verify(&dir, &[]).is_err());
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&other);
    }
}
