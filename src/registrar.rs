//! Registrars and parties of the storing authorization (NTT 004's FIG. 1;
//! docs/FORMATS.md "Registrar and party directories"): the files that
//! `registrar init`, `provider init` and `registrar certify` write and the
//! storing steps read. Keys are written with mode 0600 and never replaced
//! unless asked.

use crate::error::{Error, Result};
use cardvault_proto::crypto::KeyPair;
use cardvault_proto::storing::{self, DataCertificate, Party, RegistrarRoots};
use cardvault_proto::{from_hex, to_hex};
use openssl::x509::X509;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Which registrar: of issuers (IRC) or of data providers and data (DPR, SDCI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RegistrarKind {
    Issuer,
    Data,
}

impl RegistrarKind {
    /// The party this registrar certifies.
    pub fn party(self) -> Party {
        match self {
            RegistrarKind::Issuer => Party::Issuer,
            RegistrarKind::Data => Party::Provider,
        }
    }
    /// File name of this registrar's root in a party directory.
    pub fn root_file(self) -> &'static str {
        match self {
            RegistrarKind::Issuer => "issuer-registrar.pem",
            RegistrarKind::Data => "data-registrar.pem",
        }
    }
}

/// `registrar.json` of a registrar directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegistrarInfo {
    pub kind: RegistrarKind,
    pub name: String,
}

/// `party.json` of a party directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartyInfo {
    #[serde(with = "party_str")]
    pub party: Party,
    pub name: String,
}

/// A data certificate (SDCI) file: the fields of
/// [`cardvault_proto::storing::DataCertificate`], hashes and signature in hex.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DataCertificateFile {
    pub version: u32,
    pub id: String,
    pub provider: String,
    pub size: u32,
    pub sha256: String,
    pub signature: String,
}

impl DataCertificateFile {
    pub fn from_certificate(c: &DataCertificate) -> DataCertificateFile {
        DataCertificateFile {
            version: 1,
            id: c.id.clone(),
            provider: c.provider.clone(),
            size: c.size,
            sha256: to_hex(&c.hash),
            signature: to_hex(&c.signature),
        }
    }

    pub fn certificate(&self) -> Result<DataCertificate> {
        let bad = |what: &str| Error::Data(format!("data certificate '{}': {what}", self.id));
        if self.version != 1 {
            return Err(bad("version is not 1"));
        }
        Ok(DataCertificate {
            id: self.id.clone(),
            provider: self.provider.clone(),
            size: self.size,
            hash: from_hex(&self.sha256)
                .and_then(|h| h.try_into().ok())
                .ok_or_else(|| bad("bad sha256"))?,
            signature: from_hex(&self.signature)
                .and_then(|h| h.try_into().ok())
                .ok_or_else(|| bad("bad signature"))?,
        })
    }
}

/// Write `files` (name, bytes, mode) into `dir`, refusing existing files unless `force`.
fn write_files(dir: &Path, files: &[(&str, &[u8], u32)], force: bool) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    if !force {
        if let Some(p) = files.iter().map(|(n, ..)| dir.join(n)).find(|p| p.exists()) {
            return Err(Error::OutputExists(p));
        }
    }
    for (n, bytes, mode) in files {
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
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    serde_json::from_slice(&read(path)?).map_err(|e| Error::Usage(format!("{}: {e}", path.display())))
}

fn data_err<E: std::fmt::Display>(e: E) -> Error {
    Error::Data(e.to_string())
}

/// What an init wrote.
#[derive(Debug, Clone, Serialize)]
pub struct InitReport {
    pub dir: PathBuf,
    pub name: String,
    pub kind: String,
}

/// `registrar init`: a registrar root (P-256, self-signed, 20 years) in `dir`:
/// registrar.json, root.pem, root-key.pem (0600).
pub fn init_registrar(dir: &Path, kind: RegistrarKind, name: &str, force: bool) -> Result<InitReport> {
    let key = KeyPair::generate().map_err(data_err)?;
    let year = crate::util::now_utc()[..4].parse::<u32>().unwrap_or(2025);
    let root = storing::issue_registrar_root(
        &key,
        name,
        &format!("{year}0101000000Z"),
        &format!("{}0101000000Z", year + 20),
    )
    .map_err(data_err)?;
    let info = serde_json::to_vec_pretty(&RegistrarInfo {
        kind,
        name: name.into(),
    })
    .expect("json");
    let key_pem = key.to_pem().map_err(data_err)?;
    write_files(
        dir,
        &[
            ("root-key.pem", &key_pem, 0o600),
            ("root.pem", &root.to_pem().map_err(data_err)?, 0o644),
            ("registrar.json", &info, 0o644),
        ],
        force,
    )?;
    Ok(InitReport {
        dir: dir.into(),
        name: name.into(),
        kind: format!("{kind:?}").to_lowercase(),
    })
}

/// `provider init` (or an issuer's storing key): party.json, key.pem (0600),
/// public.hex, for the registrar to certify.
pub fn init_party(dir: &Path, party: Party, name: &str, force: bool) -> Result<InitReport> {
    if name.is_empty() || name.len() > storing::MAX_NAME_LEN {
        return Err(Error::Usage("a party name is 1 to 64 bytes".into()));
    }
    let key = KeyPair::generate().map_err(data_err)?;
    let info = serde_json::to_vec_pretty(&PartyInfo {
        party,
        name: name.into(),
    })
    .expect("json");
    let key_pem = key.to_pem().map_err(data_err)?;
    write_files(
        dir,
        &[
            ("key.pem", &key_pem, 0o600),
            ("public.hex", to_hex(&key.public_bytes()).as_bytes(), 0o644),
            ("party.json", &info, 0o644),
        ],
        force,
    )?;
    Ok(InitReport {
        dir: dir.into(),
        name: name.into(),
        kind: party.to_string(),
    })
}

/// A registrar directory, loaded.
pub struct Registrar {
    pub info: RegistrarInfo,
    pub root: X509,
    key: KeyPair,
}

impl Registrar {
    pub fn load(dir: &Path) -> Result<Registrar> {
        let info: RegistrarInfo = read_json(&dir.join("registrar.json"))?;
        let root = X509::from_pem(&read(&dir.join("root.pem"))?).map_err(data_err)?;
        let key = KeyPair::from_pem(&read(&dir.join("root-key.pem"))?).map_err(data_err)?;
        Ok(Registrar { info, root, key })
    }
}

/// What `registrar certify` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct CertifyReport {
    pub certificate: PathBuf,
    pub subject: String,
    pub not_after: String,
}

/// `registrar certify PARTY_DIR`: the party's registration certificate (IRC
/// from an issuer registrar, DPR from a data registrar) as certificate.pem,
/// and the registrar's root beside it.
pub fn certify_party(registrar: &Registrar, party_dir: &Path, days: u32, force: bool) -> Result<CertifyReport> {
    let info: PartyInfo = read_json(&party_dir.join("party.json"))?;
    if info.party != registrar.info.kind.party() {
        return Err(Error::Usage(format!(
            "{} is a {}'s directory; a {} registrar certifies only {}s",
            party_dir.display(),
            info.party,
            format!("{:?}", registrar.info.kind).to_lowercase(),
            registrar.info.kind.party()
        )));
    }
    let public = from_hex(String::from_utf8_lossy(&read(&party_dir.join("public.hex"))?).trim())
        .ok_or_else(|| Error::Data("public.hex is not hex".into()))?;
    let now = openssl::asn1::Asn1Time::days_from_now(0).map_err(data_err)?;
    let cert = storing::issue_party_certificate(
        &registrar.key,
        &registrar.root,
        &public,
        info.party,
        &info.name,
        &now,
        days,
    )
    .map_err(data_err)?;
    write_files(
        party_dir,
        &[
            ("certificate.pem", &cert.to_pem().map_err(data_err)?, 0o644),
            (
                registrar.info.kind.root_file(),
                &registrar.root.to_pem().map_err(data_err)?,
                0o644,
            ),
        ],
        force,
    )?;
    Ok(CertifyReport {
        certificate: party_dir.join("certificate.pem"),
        subject: info.name,
        not_after: cert.not_after().to_string(),
    })
}

/// `registrar certify --data F`: the data registrar's data certificate (SDCI).
pub fn certify_data(registrar: &Registrar, id: &str, provider: &str, data: &[u8]) -> Result<DataCertificateFile> {
    if registrar.info.kind != RegistrarKind::Data {
        return Err(Error::Usage("only a data registrar certifies data".into()));
    }
    let c = DataCertificate::sign(&registrar.key, id, provider, data).map_err(data_err)?;
    Ok(DataCertificateFile::from_certificate(&c))
}

/// A party directory with its certificate: the credentials the storing steps sign with.
pub fn load_party(dir: &Path) -> Result<crate::workflow::storing::PartyCredentials> {
    let info: PartyInfo = read_json(&dir.join("party.json"))?;
    let cert = dir.join("certificate.pem");
    if !cert.exists() {
        return Err(Error::Usage(format!(
            "{} has no certificate.pem yet: its registrar must certify it first",
            dir.display()
        )));
    }
    let key = zeroize::Zeroizing::new(read(&dir.join("key.pem"))?);
    crate::workflow::storing::PartyCredentials::from_pem(info.party, &key, &read(&cert)?)
}

/// The registrar roots, from explicit files or a party directory's copies.
pub fn load_roots(issuer_registrar: &Path, data_registrar: &Path) -> Result<RegistrarRoots> {
    let load = |p: &Path, what: &str| -> Result<X509> {
        X509::from_pem(
            &read(p).map_err(|_| Error::Usage(format!("the {what} registrar root {} is not readable", p.display())))?,
        )
        .map_err(data_err)
    };
    Ok(RegistrarRoots {
        issuer_registrar: load(issuer_registrar, "issuer")?,
        data_registrar: load(data_registrar, "data")?,
    })
}

mod party_str {
    use cardvault_proto::storing::Party;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &Party, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(p.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Party, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}
