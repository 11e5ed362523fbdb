//! Issuer credentials for SCP11a: the issuer root and an operator (OCE) key
//! with its certificate under that root. A card whose installed trust anchor
//! is the root accepts the operator's SCP11a session as an issuer session
//! (docs/PROTOCOL.md §10.3), in place of the shared admin key.
//!
//! A directory made by `cardvault issuer init -o DIR` holds:
//!
//! | file | what |
//! |---|---|
//! | `root.pem` | the issuer root certificate (self-signed, P-256, CA) |
//! | `root-key.pem` | its private key (mode 0600) |
//! | `oce.pem` | the operator certificate (keyAgreement), signed by the root |
//! | `oce-key.pem` | the operator's ECKA private key (mode 0600) |
//!
//! `fixtures/issuer/` is such a directory for the built-in **test** issuer
//! (its files carry a `test-` prefix, which the loader also accepts).

use crate::error::{Error, Result};
use cardvault_proto::cert::{ecka_public_key, issue_oce_certificate, issue_root};
use cardvault_proto::crypto::KeyPair;
use openssl::x509::X509;
use std::io::Write;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// An issuer operator's credentials, loaded from a directory.
pub struct IssuerCredentials {
    /// Root side first, the operator's certificate last.
    pub chain: Vec<X509>,
    /// The operator's private key, PEM (parsed for each session).
    key_pem: Zeroizing<Vec<u8>>,
    pub dir: PathBuf,
}

impl std::fmt::Debug for IssuerCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerCredentials")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// The first of `names` that exists in `dir`.
fn find(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.exists())
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Usage(format!("issuer credentials {}: {e}", path.display())))
}

impl IssuerCredentials {
    /// Load `oce.pem` and `oce-key.pem` (and `root.pem` when present) from `dir`.
    pub fn load(dir: &Path) -> Result<IssuerCredentials> {
        let missing = |what: &str| {
            Error::Usage(format!(
                "{}: no {what} (make an issuer with `cardvault issuer init -o DIR`)",
                dir.display()
            ))
        };
        let oce_path = find(dir, &["oce.pem", "test-oce.pem"]).ok_or_else(|| missing("oce.pem"))?;
        let key_path = find(dir, &["oce-key.pem", "test-oce-key.pem"]).ok_or_else(|| missing("oce-key.pem"))?;
        let bad = |p: &Path, why: String| Error::Usage(format!("issuer credentials {}: {why}", p.display()));
        let oce = X509::from_pem(&read(&oce_path)?).map_err(|e| bad(&oce_path, e.to_string()))?;
        let key_pem = Zeroizing::new(read(&key_path)?);
        let key = KeyPair::from_pem(&key_pem).map_err(|e| bad(&key_path, e.to_string()))?;
        let certified = ecka_public_key(&oce).map_err(|e| bad(&oce_path, e.to_string()))?;
        if certified != key.public_bytes() {
            return Err(bad(&key_path, "is not the key oce.pem certifies".into()));
        }
        let mut chain = Vec::new();
        if let Some(root_path) = find(dir, &["root.pem", "test-root.pem"]) {
            chain.push(X509::from_pem(&read(&root_path)?).map_err(|e| bad(&root_path, e.to_string()))?);
        }
        chain.push(oce);
        Ok(IssuerCredentials {
            chain,
            key_pem,
            dir: dir.to_path_buf(),
        })
    }

    /// The operator's key for one SCP11a handshake.
    pub fn key(&self) -> Result<KeyPair> {
        KeyPair::from_pem(&self.key_pem).map_err(|e| Error::Usage(format!("issuer key: {e}")))
    }

    /// The chain as DER, root side first.
    pub fn chain_der(&self) -> Result<Vec<Vec<u8>>> {
        self.chain
            .iter()
            .map(|c| c.to_der().map_err(|e| Error::Data(e.to_string())))
            .collect()
    }
}

/// What `issuer init` wrote.
#[derive(Debug, serde::Serialize)]
pub struct InitReport {
    pub dir: PathBuf,
    pub root: PathBuf,
    pub operator: PathBuf,
    pub not_after: String,
}

/// Make a new issuer in `dir`: a root (P-256, self-signed, valid 20 years)
/// and an operator key with a certificate under it (valid 2 years). Existing
/// files are refused unless `force`. Keys are written with mode 0600.
pub fn init(dir: &Path, name: &str, force: bool) -> Result<InitReport> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let names = ["root.pem", "root-key.pem", "oce.pem", "oce-key.pem"];
    if !force {
        if let Some(p) = names.iter().map(|n| dir.join(n)).find(|p| p.exists()) {
            return Err(Error::OutputExists(p));
        }
    }
    let data = |e: cardvault_proto::cert::CertError| Error::Data(e.to_string());
    let crypto = |e: cardvault_proto::crypto::CryptoError| Error::Data(e.to_string());
    let year = crate::util::now_utc()[..4].parse::<u32>().unwrap_or(2025);
    let (from, to) = (format!("{year}0101000000Z"), format!("{}0101000000Z", year + 20));
    let root_key = KeyPair::generate().map_err(crypto)?;
    let root = issue_root(&root_key, name, &from, &to).map_err(data)?;
    let oce_key = KeyPair::generate().map_err(crypto)?;
    let oce = issue_oce_certificate(
        &root_key,
        &root,
        &oce_key.public_bytes(),
        &format!("{name} operator"),
        730,
    )
    .map_err(data)?;
    let pem = |c: &X509| c.to_pem().map_err(|e| Error::Data(e.to_string()));
    let files: [(&str, Zeroizing<Vec<u8>>, u32); 4] = [
        ("root-key.pem", root_key.to_pem().map_err(crypto)?, 0o600),
        ("oce-key.pem", oce_key.to_pem().map_err(crypto)?, 0o600),
        ("root.pem", Zeroizing::new(pem(&root)?), 0o644),
        ("oce.pem", Zeroizing::new(pem(&oce)?), 0o644),
    ];
    for (n, bytes, mode) in &files {
        let target = dir.join(n);
        let io = |e| Error::io(format!("writing {}", target.display()), e);
        let mut f = cardvault_proto::fsutil::AtomicFile::create_with_mode(&target, *mode).map_err(io)?;
        f.write_all(bytes).map_err(io)?;
        let done = if force { f.commit() } else { f.commit_new() };
        done.map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Error::OutputExists(target.clone()),
            _ => io(e),
        })?;
    }
    Ok(InitReport {
        dir: dir.to_path_buf(),
        root: dir.join("root.pem"),
        operator: dir.join("oce.pem"),
        not_after: root.not_after().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_then_load_and_the_fixture_directory_loads() {
        let dir = std::env::temp_dir().join(format!("cv-issuer-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        init(&dir, "test issuer", false).unwrap();
        assert!(matches!(init(&dir, "again", false), Err(Error::OutputExists(_))));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("oce-key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let c = IssuerCredentials::load(&dir).unwrap();
        assert_eq!(c.chain.len(), 2);
        cardvault_proto::cert::verify_ecka_chain(&c.chain[..1], &c.chain).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/issuer");
        assert_eq!(IssuerCredentials::load(&fixtures).unwrap().chain.len(), 2);
    }
}
