//! Issuer credentials for SCP11a: the issuer root and an operator (OCE) key
//! with its certificate under that root. A card whose installed trust anchor
//! is the root accepts the operator's SCP11a session as an issuer session
//! (docs/PROTOCOL.md §10.3): the only way to an issuer session (there is no
//! shared admin key). With the root's key, the issuer also signs cards'
//! registration certificates at issuance.
//!
//! A directory made by `cardvault issuer init -o DIR` holds:
//!
//! | file | what |
//! |---|---|
//! | `root.pem` | the issuer root certificate (self-signed, P-256, CA) |
//! | `root-key.pem` | its private key (mode 0600) |
//! | `oce.pem` | the operator certificate (keyAgreement), signed by the root |
//! | `oce-key.pem` | the operator's ECKA private key (mode 0600) |
//! | `signer.pem` | the authorization signer's certificate (digitalSignature), signed by the root |
//! | `signer-key.hex` | the signer's private scalar, hex (mode 0600): `--issuer-key file:DIR/signer-key.hex` |
//!
//! `fixtures/issuer/` is such a directory for the built-in **test** issuer
//! (its files carry a `test-` prefix, which the loader also accepts).

use crate::error::{Error, Result};
use cardvault_proto::cert::{ecka_public_key, issue_oce_certificate, issue_root, issue_signer_certificate};
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
    /// The root's private key, PEM, when the directory holds it: it signs
    /// registration certificates at issuance.
    root_key_pem: Option<Zeroizing<Vec<u8>>>,
    /// The two keys parsed once (a batch signs and opens sessions for every
    /// card; parsing a PEM key costs more than the signature).
    key_parsed: std::sync::OnceLock<KeyPair>,
    root_key_parsed: std::sync::OnceLock<KeyPair>,
    pub dir: PathBuf,
}

/// `pem` parsed, the first time into `cache`.
fn parsed_key(cache: &std::sync::OnceLock<KeyPair>, pem: &[u8]) -> std::result::Result<KeyPair, String> {
    if let Some(k) = cache.get() {
        return Ok(k.clone());
    }
    let k = KeyPair::from_pem(pem).map_err(|e| e.to_string())?;
    let _ = cache.set(k.clone());
    Ok(k)
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
        let root_key_pem = match find(dir, &["root-key.pem", "test-root-key.pem"]) {
            Some(p) => {
                let pem = Zeroizing::new(read(&p)?);
                KeyPair::from_pem(&pem).map_err(|e| bad(&p, e.to_string()))?;
                Some(pem)
            }
            None => None,
        };
        Ok(IssuerCredentials {
            chain,
            key_pem,
            root_key_pem,
            key_parsed: Default::default(),
            root_key_parsed: Default::default(),
            dir: dir.to_path_buf(),
        })
    }

    /// Credentials from PEM documents (a reader's built-in test issuer).
    pub fn from_built_in(b: &crate::transport::BuiltInIssuer) -> Result<IssuerCredentials> {
        let bad = |what: &str, e: String| Error::Data(format!("built-in issuer {what}: {e}"));
        let root = X509::from_pem(b.root).map_err(|e| bad("root", e.to_string()))?;
        let oce = X509::from_pem(b.oce).map_err(|e| bad("operator certificate", e.to_string()))?;
        Ok(IssuerCredentials {
            chain: vec![root, oce],
            key_pem: Zeroizing::new(b.oce_key.to_vec()),
            root_key_pem: Some(Zeroizing::new(b.root_key.to_vec())),
            key_parsed: Default::default(),
            root_key_parsed: Default::default(),
            dir: PathBuf::from("(built-in test issuer)"),
        })
    }

    /// The issuer root certificate, when the credentials have it (first of
    /// the chain, self-signed).
    pub fn root(&self) -> Option<&X509> {
        self.chain
            .first()
            .filter(|c| self.chain.len() > 1 && cardvault_proto::cert::is_root(c))
    }

    /// Sign a card's registration certificate over `card_public` (its new
    /// ECKA key), with the card profile extension `profile`, under the root.
    /// Returns the DER certificate.
    pub fn certify_card(
        &self,
        card_public: &[u8],
        subject: &cardvault_proto::cert::CardSubject,
        profile: &str,
    ) -> Result<Vec<u8>> {
        let no_root = || {
            Error::Usage(format!(
                "{}: no root.pem and root-key.pem to sign registration certificates with",
                self.dir.display()
            ))
        };
        let root = self.root().ok_or_else(no_root)?;
        let pem = self.root_key_pem.as_ref().ok_or_else(no_root)?;
        let key = parsed_key(&self.root_key_parsed, pem).map_err(|e| Error::Usage(format!("issuer root key: {e}")))?;
        cardvault_proto::cert::issue_registration_certificate(
            &key,
            root,
            card_public,
            subject,
            Some(profile),
            REGISTRATION_CERTIFICATE_DAYS,
        )
        .and_then(|c| Ok(c.to_der()?))
        .map_err(|e| Error::Data(format!("signing the registration certificate: {e}")))
    }

    /// Sign a signer certificate (digitalSignature, under the root) over
    /// `public`: an electronic safe's key, whose signatures cards then check
    /// under their installed root. Returns the DER certificate.
    pub fn certify_signer(&self, public: &[u8], common_name: &str, days: u32) -> Result<Vec<u8>> {
        let no_root = || {
            Error::Usage(format!(
                "{}: no root.pem and root-key.pem to sign with",
                self.dir.display()
            ))
        };
        let root = self.root().ok_or_else(no_root)?;
        let pem = self.root_key_pem.as_ref().ok_or_else(no_root)?;
        let key = KeyPair::from_pem(pem).map_err(|e| Error::Usage(format!("issuer root key: {e}")))?;
        cardvault_proto::cert::issue_signer_certificate(&key, root, public, common_name, days)
            .and_then(|c| Ok(c.to_der()?))
            .map_err(|e| Error::Data(format!("signing the certificate: {e}")))
    }

    /// Sign a card's signing key certificate over `card_public` (the key of
    /// GENERATE SIGNING KEY) under the root: card number, role, member
    /// number, digitalSignature (`storing::issue_card_signing_certificate`).
    /// Returns the DER certificate.
    pub fn certify_card_signing_key(
        &self,
        card_public: &[u8],
        subject: &cardvault_proto::cert::CardSubject,
    ) -> Result<Vec<u8>> {
        let no_root = || {
            Error::Usage(format!(
                "{}: no root.pem and root-key.pem to sign card certificates with",
                self.dir.display()
            ))
        };
        let root = self.root().ok_or_else(no_root)?;
        let pem = self.root_key_pem.as_ref().ok_or_else(no_root)?;
        let key = parsed_key(&self.root_key_parsed, pem).map_err(|e| Error::Usage(format!("issuer root key: {e}")))?;
        cardvault_proto::storing::issue_card_signing_certificate(
            &key,
            root,
            card_public,
            subject,
            REGISTRATION_CERTIFICATE_DAYS,
        )
        .and_then(|c| Ok(c.to_der()?))
        .map_err(|e| Error::Data(format!("signing the card's signing key certificate: {e}")))
    }

    /// The operator's key for one SCP11a handshake.
    pub fn key(&self) -> Result<KeyPair> {
        parsed_key(&self.key_parsed, &self.key_pem).map_err(|e| Error::Usage(format!("issuer key: {e}")))
    }

    /// The chain as DER, root side first.
    pub fn chain_der(&self) -> Result<Vec<Vec<u8>>> {
        self.chain
            .iter()
            .map(|c| c.to_der().map_err(|e| Error::Data(e.to_string())))
            .collect()
    }
}

/// The issuer key that signs restore and load authorizations, with its
/// signer certificate under the issuer root: the card checks the
/// certificate under its installed root, then the signature with the key
/// it certifies (docs/FORMATS.md, "Restore authorization", "Load
/// authorization").
pub struct IssuerSigner {
    /// The key: in memory, or in a PKCS#11 token (only signatures leave it).
    signer: crate::signer::Signer,
    certificate: Vec<u8>,
}

impl std::fmt::Debug for IssuerSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerSigner").finish_non_exhaustive()
    }
}

impl IssuerSigner {
    /// The private scalar (32 bytes) and its certificate (PEM or DER), which
    /// must certify that key for digitalSignature.
    pub fn new(private: &[u8], certificate: &[u8]) -> Result<IssuerSigner> {
        let key = KeyPair::from_private(private).map_err(|e| Error::Usage(format!("issuer signer: key: {e}")))?;
        IssuerSigner::with_signer(crate::signer::Signer::Key(key), certificate)
    }

    /// A key in memory or in a PKCS#11 token, and its certificate (PEM or
    /// DER), which must certify that key for digitalSignature.
    pub fn with_signer(signer: crate::signer::Signer, certificate: &[u8]) -> Result<IssuerSigner> {
        let bad = |why: String| Error::Usage(format!("issuer signer: {why}"));
        let cert = X509::from_pem(certificate)
            .or_else(|_| X509::from_der(certificate))
            .map_err(|_| bad("the signer certificate is neither PEM nor DER".into()))?;
        match cert.key_usage() {
            Some(ku) if ku.contains(openssl::x509::X509KeyUsage::DIGITAL_SIGNATURE) => {}
            _ => return Err(bad("the signer certificate is not for digitalSignature".into())),
        }
        let certified = ecka_public_key(&cert).map_err(|e| bad(e.to_string()))?;
        if signer.public_key().is_some_and(|p| p != certified) {
            return Err(bad("the signer certificate does not certify this key".into()));
        }
        Ok(IssuerSigner {
            signer,
            certificate: cert.to_der().map_err(|e| Error::Data(e.to_string()))?,
        })
    }

    /// ECDSA P-256 / SHA-256 over `msg`, raw r || s (64 bytes).
    pub fn sign(&self, msg: &[u8]) -> Result<Vec<u8>> {
        self.signer.sign(msg).map(|s| s.to_vec())
    }

    /// The signer certificate, DER.
    pub fn certificate_der(&self) -> &[u8] {
        &self.certificate
    }
}

/// Validity of a registration certificate, in days (never beyond the root).
pub const REGISTRATION_CERTIFICATE_DAYS: u32 = 3650;

/// What `issuer init` wrote.
#[derive(Debug, serde::Serialize)]
pub struct InitReport {
    pub dir: PathBuf,
    pub root: PathBuf,
    pub operator: PathBuf,
    pub signer: PathBuf,
    pub not_after: String,
}

/// Make a new issuer in `dir`: a root (P-256, self-signed, valid 20 years)
/// and an operator key with a certificate under it (valid 2 years). Existing
/// files are refused unless `force`. Keys are written with mode 0600.
pub fn init(dir: &Path, name: &str, force: bool) -> Result<InitReport> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let names = [
        "root.pem",
        "root-key.pem",
        "oce.pem",
        "oce-key.pem",
        "signer.pem",
        "signer-key.hex",
    ];
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
    let signer_key = KeyPair::generate().map_err(crypto)?;
    let signer = issue_signer_certificate(
        &root_key,
        &root,
        &signer_key.public_bytes(),
        &format!("{name} authorization signer"),
        730,
    )
    .map_err(data)?;
    let pem = |c: &X509| c.to_pem().map_err(|e| Error::Data(e.to_string()));
    let signer_hex = Zeroizing::new(format!("{}\n", cardvault_proto::to_hex(&signer_key.private_bytes())).into_bytes());
    let files: [(&str, Zeroizing<Vec<u8>>, u32); 6] = [
        ("root-key.pem", root_key.to_pem().map_err(crypto)?, 0o600),
        ("oce-key.pem", oce_key.to_pem().map_err(crypto)?, 0o600),
        ("signer-key.hex", signer_hex, 0o600),
        ("root.pem", Zeroizing::new(pem(&root)?), 0o644),
        ("oce.pem", Zeroizing::new(pem(&oce)?), 0o644),
        ("signer.pem", Zeroizing::new(pem(&signer)?), 0o644),
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
        signer: dir.join("signer.pem"),
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
        assert!(c.root().is_some() && c.root_key_pem.is_some());
        cardvault_proto::cert::verify_ecka_chain(&c.chain[..1], &c.chain).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/issuer");
        assert_eq!(IssuerCredentials::load(&fixtures).unwrap().chain.len(), 2);
    }
}
