//! The **test** issuer domain of pre-issued simulated cards.
//!
//! Cards of the built-in profiles `main`, `backup` and `replacement` leave
//! the (simulated) factory issued, so they need a card-common key without a
//! key ceremony, and cards of one test setup must share it to restore each
//! other's backups. No profile carries that key: each simulator card
//! directory makes its own random test domain on first use, in
//! [`FILE_NAME`] beside the card files (mode 0600, created exclusively: a
//! concurrent first use sees one domain, never two). Cards created from a
//! pre-issued profile in that directory get that domain's key, id and
//! generation; cards in another directory are in another domain. Cards in
//! memory only (unit tests, fuzz targets) share one random domain per
//! process.
//!
//! Test only: a real issuer loads its domain key from the key ceremony
//! (`cardvault domain init`, `cardvault issue --domain DIR`), and blank cards
//! get nothing here.

use cardvault_proto::domain::{DomainRef, DOMAIN_ID_LEN, KEY_LEN};
use cardvault_proto::{crypto, from_hex, fsutil, to_hex};
use std::io::{self, Write};
use std::path::Path;
use std::sync::OnceLock;
use zeroize::Zeroizing;

/// The test domain file in a simulator card directory.
pub const FILE_NAME: &str = "test-domain.json";

/// A test domain: its reference and its card-common key.
#[derive(Clone)]
pub struct TestDomain {
    pub domain: DomainRef,
    pub key: Zeroizing<[u8; KEY_LEN]>,
}

impl std::fmt::Debug for TestDomain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDomain")
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct File {
    note: String,
    domain_id: String,
    generation: u32,
    key: String,
}

impl TestDomain {
    /// A new random test domain, generation 1.
    pub fn generate() -> TestDomain {
        TestDomain {
            domain: DomainRef {
                id: crypto::random::<DOMAIN_ID_LEN>(),
                generation: 1,
            },
            key: Zeroizing::new(crypto::random::<KEY_LEN>()),
        }
    }

    /// The test domain of the card directory `dir`, made on first use.
    pub fn of_dir(dir: &Path) -> io::Result<TestDomain> {
        let path = dir.join(FILE_NAME);
        match Self::read(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            other => return other,
        }
        let fresh = TestDomain::generate();
        let file = File {
            note: "TEST ONLY: the simulator's issuer domain for pre-issued test cards in this directory".into(),
            domain_id: to_hex(&fresh.domain.id),
            generation: fresh.domain.generation,
            key: to_hex(&fresh.key[..]),
        };
        let text = Zeroizing::new(serde_json::to_vec_pretty(&file).expect("json"));
        let mut f = fsutil::AtomicFile::create(&path)?;
        f.write_all(&text)?;
        match f.commit_new() {
            Ok(()) => Ok(fresh),
            // Another process made it first: use that one.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Self::read(&path),
            Err(e) => Err(e),
        }
    }

    fn read(path: &Path) -> io::Result<TestDomain> {
        let text = Zeroizing::new(std::fs::read(path)?);
        let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {why}", path.display()));
        let f: File = serde_json::from_slice(&text).map_err(|e| bad(&e.to_string()))?;
        let id = from_hex(&f.domain_id)
            .and_then(|v| <[u8; DOMAIN_ID_LEN]>::try_from(v).ok())
            .ok_or_else(|| bad("domain_id is not 16 bytes of hex"))?;
        let key = Zeroizing::new(from_hex(&f.key).unwrap_or_default());
        let key: [u8; KEY_LEN] = key[..].try_into().map_err(|_| bad("key is not 32 bytes of hex"))?;
        if f.generation == 0 {
            return Err(bad("generation 0"));
        }
        Ok(TestDomain {
            domain: DomainRef {
                id,
                generation: f.generation,
            },
            key: Zeroizing::new(key),
        })
    }

    /// The test domain of cards that live in memory only, one per process.
    pub fn in_memory() -> &'static TestDomain {
        static DOMAIN: OnceLock<TestDomain> = OnceLock::new();
        DOMAIN.get_or_init(TestDomain::generate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_domain_per_directory_made_once_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("cv-factory-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let (a, b) = (base.join("a"), base.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let da = TestDomain::of_dir(&a).unwrap();
        assert_eq!(TestDomain::of_dir(&a).unwrap().key, da.key);
        let db = TestDomain::of_dir(&b).unwrap();
        assert_ne!(da.domain, db.domain);
        assert_ne!(da.key, db.key);
        let mode = std::fs::metadata(a.join(FILE_NAME)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = std::fs::remove_dir_all(&base);
    }
}
