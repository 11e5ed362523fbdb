//! The issuer's signing key: a P-256 private key read from a secret source,
//! or a key that never leaves a PKCS#11 token (`pkcs11:` URI, RFC 7512).
//!
//! Both sign the same way: ECDSA P-256 over SHA-256, as the raw `r || s`
//! (64 bytes) that cards verify (`cardvault_proto::crypto::verify_p256`).
//! A token's CKM_ECDSA signs a digest computed here and answers `r || s`
//! already; each half is normalized to 32 bytes, and a signature made by the
//! token is checked against the token's public key before it is used.
//!
//! Used by `authorize-restore` (restore authorizations, `workflow::backup`)
//! and `authorize-load` / `purse credit --issuer-key` (load authorizations,
//! `workflow::purse`).
//!
//! Where the token comes from, in order:
//! - the PKCS#11 module: `module-path=` in the URI, `CARDVAULT_PKCS11_MODULE`,
//!   `[pkcs11] module` in config.toml, else [`DEFAULT_MODULE`] (Debian's
//!   SoftHSM2);
//! - the token's user PIN: `pin-source=` in the URI (`file:PATH`, `env:VAR`,
//!   `prompt` or an absolute path), `CARDVAULT_PKCS11_PIN`, else a prompt.
//!   `pin-value=` is refused: the PIN would be on the command line.

use crate::error::{Error, Result};
use crate::secret::{Secret, SecretSource};
use cardvault_proto::crypto::KeyPair;
use cryptoki::context::{CInitializeArgs, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The PKCS#11 module used when nothing names one (Debian package `softhsm2`).
pub const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The environment variable naming the PKCS#11 module.
pub const MODULE_ENV: &str = "CARDVAULT_PKCS11_MODULE";
/// The environment variable holding the token's user PIN.
pub const PIN_ENV: &str = "CARDVAULT_PKCS11_PIN";

/// DER of the P-256 curve OID (1.2.840.10045.3.1.7), the key's CKA_EC_PARAMS.
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// A `pkcs11:` URI naming one private key (RFC 7512). Path attributes:
/// `token`, `object`, `id`, `serial`, `type` (only `private`); query
/// attributes: `module-path`, `pin-source`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    pub token: Option<String>,
    pub object: Option<String>,
    pub id: Option<Vec<u8>>,
    pub serial: Option<String>,
    pub module_path: Option<PathBuf>,
    pub pin_source: Option<SecretSource>,
}

fn percent_decode(s: &str) -> std::result::Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "bad percent-encoding".to_string())?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

impl std::str::FromStr for Pkcs11Uri {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let rest = s
            .get(..7)
            .filter(|p| p.eq_ignore_ascii_case("pkcs11:"))
            .map(|_| &s[7..])
            .ok_or("a PKCS#11 URI starts with 'pkcs11:'")?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut uri = Pkcs11Uri::default();
        let attrs = path
            .split(';')
            .map(|a| (a, false))
            .chain(query.split('&').map(|a| (a, true)))
            .filter(|(a, _)| !a.is_empty());
        for (attr, in_query) in attrs {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| "every attribute is name=value (separated by ';', query by '&')".to_string())?;
            let decode = || percent_decode(value).map_err(|e| format!("{name}=: {e}"));
            let text = || String::from_utf8(decode()?).map_err(|_| format!("{name}= is not UTF-8"));
            let dup = || format!("{name}= is given twice");
            match (name, in_query) {
                ("token", false) => uri.token.replace(text()?).map_or(Ok(()), |_| Err(dup()))?,
                ("object", false) => uri.object.replace(text()?).map_or(Ok(()), |_| Err(dup()))?,
                ("serial", false) => uri.serial.replace(text()?).map_or(Ok(()), |_| Err(dup()))?,
                ("id", false) => uri.id.replace(decode()?).map_or(Ok(()), |_| Err(dup()))?,
                ("type", false) if value == "private" => {}
                ("type", false) => return Err(format!("type={value}: the issuer key is a private key")),
                // RFC 7512 puts module-path in the query; accepted in the path too.
                ("module-path", _) => uri
                    .module_path
                    .replace(PathBuf::from(text()?))
                    .map_or(Ok(()), |_| Err(dup()))?,
                ("pin-source", _) => {
                    let v = text()?;
                    let v = if v.starts_with('/') { format!("file:{v}") } else { v };
                    let src = v
                        .parse::<SecretSource>()
                        .map_err(|_| "pin-source= takes file:PATH, env:VAR, prompt or an absolute path".to_string())?;
                    uri.pin_source.replace(src).map_or(Ok(()), |_| Err(dup()))?
                }
                ("pin-value", _) => {
                    return Err(
                        "pin-value= would put the token PIN on the command line; use pin-source=file:PATH, \
                                pin-source=env:VAR or CARDVAULT_PKCS11_PIN"
                            .into(),
                    )
                }
                _ => {
                    return Err(format!(
                        "attribute '{name}' is not supported there (path: token, object, id, serial, type; \
                         query: module-path, pin-source)"
                    ))
                }
            }
        }
        if uri.object.is_none() && uri.id.is_none() {
            return Err("the URI names no key: give object=LABEL or id=%xx...".into());
        }
        Ok(uri)
    }
}

impl std::fmt::Display for Pkcs11Uri {
    /// The token and key only: never a PIN source or a path.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pkcs11:")?;
        let mut parts = Vec::new();
        if let Some(t) = &self.token {
            parts.push(format!("token={t}"));
        }
        if let Some(s) = &self.serial {
            parts.push(format!("serial={s}"));
        }
        if let Some(o) = &self.object {
            parts.push(format!("object={o}"));
        }
        if let Some(id) = &self.id {
            parts.push(format!(
                "id={}",
                id.iter().map(|b| format!("%{b:02x}")).collect::<String>()
            ));
        }
        write!(f, "{}", parts.join(";"))
    }
}

/// Where the issuer's signing key is: a secret source holding the private
/// scalar in hex or a PEM private key (`prompt`, `env:VAR`, `file:PATH`), or
/// a token key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuerKeySource {
    Secret(SecretSource),
    Pkcs11(Pkcs11Uri),
}

impl std::str::FromStr for IssuerKeySource {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s.len() >= 7 && s[..7].eq_ignore_ascii_case("pkcs11:") {
            return s.parse().map(IssuerKeySource::Pkcs11);
        }
        s.parse().map(IssuerKeySource::Secret).map_err(|_: String| {
            "the issuer key is read from 'prompt', 'env:VAR' or 'file:PATH' (hex), or is a token key \
             'pkcs11:token=LABEL;object=LABEL', never given on the command line"
                .to_string()
        })
    }
}

impl clap::builder::ValueParserFactory for IssuerKeySource {
    type Parser = crate::secret::QuietParser<IssuerKeySource>;
    fn value_parser() -> Self::Parser {
        crate::secret::QuietParser::new()
    }
}

impl clap::builder::ValueParserFactory for Pkcs11Uri {
    type Parser = crate::secret::QuietParser<Pkcs11Uri>;
    fn value_parser() -> Self::Parser {
        crate::secret::QuietParser::new()
    }
}

impl IssuerKeySource {
    /// Read the key, or open the token and log in. `configured_module` is
    /// `[pkcs11] module` of config.toml. Nothing is signed here; a wrong
    /// token PIN fails now, before any card or file is touched.
    pub fn open(&self, configured_module: Option<&Path>) -> Result<Signer> {
        match self {
            IssuerKeySource::Secret(src) => {
                // A PEM private key file (a party's key.pem, `provider init
                // --as issuer`, whose certificate is the issuer's IRC) is taken too.
                if matches!(src, SecretSource::File(_)) {
                    let all = src.read_all("issuer signing key")?;
                    if all.starts_with(b"-----BEGIN") {
                        let kp = cardvault_proto::crypto::KeyPair::from_pem(&all)
                            .map_err(|_| Error::Usage("the issuer key PEM is not a P-256 private key".into()))?;
                        return Signer::from_private(&kp.private_bytes());
                    }
                }
                let key_hex = src.read("issuer signing key (hex)")?;
                let key = std::str::from_utf8(&key_hex)
                    .ok()
                    .and_then(|s| cardvault_proto::from_hex(s.trim()))
                    .filter(|k| k.len() == 32)
                    .map(Zeroizing::new)
                    .ok_or_else(|| Error::Usage("the issuer key must be a 32-byte P-256 private key in hex".into()))?;
                Signer::from_private(&key)
            }
            IssuerKeySource::Pkcs11(uri) => {
                let pin = uri.read_pin()?;
                TokenKey::open(&uri.module(configured_module), uri, &pin).map(Signer::Token)
            }
        }
    }
}

impl Pkcs11Uri {
    /// The module: `module-path=`, else `CARDVAULT_PKCS11_MODULE`, else
    /// `configured` (`[pkcs11] module`), else [`DEFAULT_MODULE`].
    pub fn module(&self, configured: Option<&Path>) -> PathBuf {
        self.module_path
            .clone()
            .or_else(|| {
                std::env::var_os(MODULE_ENV)
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .or_else(|| configured.map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_MODULE))
    }

    /// The token's user PIN: `pin-source=`, else `CARDVAULT_PKCS11_PIN`, else a prompt.
    pub fn read_pin(&self) -> Result<Secret> {
        let source = match &self.pin_source {
            Some(s) => s.clone(),
            None if std::env::var_os(PIN_ENV).is_some() => SecretSource::Env(PIN_ENV.into()),
            None => SecretSource::Prompt,
        };
        source.read(&format!("user PIN of PKCS#11 token {self}"))
    }
}

/// An issuer signing key: ECDSA P-256 / SHA-256, raw `r || s` signatures.
pub enum Signer {
    /// A private key in memory (read from a file, a variable or a prompt).
    Key(KeyPair),
    /// A key inside a PKCS#11 token; only signatures leave it.
    Token(TokenKey),
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Signer::Key(_) => f.write_str("Signer::Key"),
            Signer::Token(t) => write!(f, "Signer::Token({})", t.uri),
        }
    }
}

impl Signer {
    /// A signer from a raw 32-byte P-256 private scalar.
    pub fn from_private(d: &[u8]) -> Result<Signer> {
        KeyPair::from_private(d)
            .map(Signer::Key)
            .map_err(|e| Error::Usage(format!("issuer key: {e}")))
    }

    /// The public key (65 bytes, uncompressed), when known: always for a
    /// key in memory, for a token key when the token holds its public half.
    pub fn public_key(&self) -> Option<Vec<u8>> {
        match self {
            Signer::Key(k) => Some(k.public_bytes()),
            Signer::Token(t) => t.public_key().map(<[u8]>::to_vec),
        }
    }

    /// Sign `msg` (hashed here with SHA-256); raw `r || s`.
    pub fn sign(&self, msg: &[u8]) -> Result<[u8; 64]> {
        let sig = match self {
            Signer::Key(k) => cardvault_proto::crypto::sign_p256(k, msg).map_err(|e| Error::Data(e.to_string()))?,
            Signer::Token(t) => t.sign(msg)?,
        };
        sig.try_into()
            .map_err(|_| Error::Internal("an ECDSA P-256 signature is 64 bytes".into()))
    }
}

/// A P-256 private key in a PKCS#11 token, with a logged-in session.
pub struct TokenKey {
    session: Session,
    key: ObjectHandle,
    /// The matching public key (uncompressed point), when the token has it.
    public: Option<Vec<u8>>,
    uri: Pkcs11Uri,
}

/// A PKCS#11 failure while doing `what`, for the token `uri`.
fn token_error(uri: &Pkcs11Uri, what: &str, e: cryptoki::error::Error) -> Error {
    Error::Data(format!("PKCS#11 token {uri}: {what}: {e}"))
}

/// The uncompressed point of a CKA_EC_POINT value (DER OCTET STRING, or bare).
fn ec_point(v: &[u8]) -> Option<Vec<u8>> {
    match v {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 && rest[0] == 0x04 => Some(rest.to_vec()),
        [0x04, ..] if v.len() == 65 => Some(v.to_vec()),
        _ => None,
    }
}

/// The raw `r || s` of a signature a token answered: 2n bytes split in
/// halves (each left-padded to 32), or a DER ECDSA-Sig-Value, which some
/// modules answer although the standard says raw.
fn raw_signature(sig: &[u8]) -> Option<Vec<u8>> {
    if sig.len() == 64 {
        return Some(sig.to_vec());
    }
    if let Ok(der) = openssl::ecdsa::EcdsaSig::from_der(sig) {
        if der.to_der().ok()?.as_slice() == sig {
            let mut out = der.r().to_vec_padded(32).ok()?;
            out.extend_from_slice(&der.s().to_vec_padded(32).ok()?);
            return Some(out);
        }
    }
    if !sig.len().is_multiple_of(2) || sig.len() > 66 {
        return None;
    }
    let (r, s) = sig.split_at(sig.len() / 2);
    let strip = |x: &[u8]| -> Option<[u8; 32]> {
        let x = &x[x.iter().take_while(|b| **b == 0).count()..];
        let mut out = [0u8; 32];
        out.get_mut(32usize.checked_sub(x.len())?..)?.copy_from_slice(x);
        Some(out)
    };
    Some([strip(r)?, strip(s)?].concat())
}

/// Load `module`, find the one token `uri` names, open a session
/// (read-write when `rw`) and log in with `pin`.
fn login(module: &Path, uri: &Pkcs11Uri, pin: &Secret, rw: bool) -> Result<Session> {
    let ctx = Pkcs11::new(module).map_err(|e| {
            Error::Usage(format!(
                "PKCS#11 module {}: {e} (name one with module-path= in the URI, {MODULE_ENV} or [pkcs11] module in config.toml)",
                module.display()
            ))
        })?;
    ctx.initialize(CInitializeArgs::OsThreads)
        .map_err(|e| token_error(uri, "initializing the module", e))?;
    let slots = ctx
        .get_slots_with_initialized_token()
        .map_err(|e| token_error(uri, "listing tokens", e))?;
    let mut seen = Vec::new();
    let mut matching = Vec::new();
    for slot in slots {
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| token_error(uri, "reading token information", e))?;
        let (label, serial) = (
            info.label().trim_end().to_string(),
            info.serial_number().trim_end().to_string(),
        );
        if uri.token.as_ref().is_none_or(|t| *t == label) && uri.serial.as_ref().is_none_or(|s| *s == serial) {
            matching.push(slot);
        }
        seen.push(label);
    }
    let slot = match matching.as_slice() {
        [slot] => *slot,
        [] => {
            return Err(Error::Usage(format!(
                "no PKCS#11 token matches {uri} in module {} (tokens: {})",
                module.display(),
                if seen.is_empty() {
                    "none".into()
                } else {
                    seen.join(", ")
                }
            )))
        }
        _ => {
            return Err(Error::Usage(format!(
                "{} tokens match {uri} (tokens: {}); name one with token= or serial=",
                matching.len(),
                seen.join(", ")
            )))
        }
    };
    let session = if rw {
        ctx.open_rw_session(slot)
    } else {
        ctx.open_ro_session(slot)
    }
    .map_err(|e| token_error(uri, "opening a session", e))?;
    let raw_pin = cryptoki::types::RawAuthPin::new(pin.to_vec());
    session.login_with_raw(UserType::User, &raw_pin).map_err(|e| {
        use cryptoki::error::{Error as P11, RvError};
        match e {
            P11::Pkcs11(RvError::PinIncorrect, _) => Error::TokenPin(format!(
                "PKCS#11 token {uri}: the token refused the user PIN; nothing was signed or made"
            )),
            P11::Pkcs11(RvError::PinLocked, _) => Error::TokenPin(format!(
                "PKCS#11 token {uri}: the user PIN is locked; the token's security officer must reset it"
            )),
            e => token_error(uri, "logging in", e),
        }
    })?;
    Ok(session)
}

/// The search template of the key `uri` names.
fn key_template(uri: &Pkcs11Uri) -> Vec<Attribute> {
    let mut template = vec![Attribute::KeyType(KeyType::EC)];
    if let Some(o) = &uri.object {
        template.push(Attribute::Label(o.as_bytes().to_vec()));
    }
    if let Some(id) = &uri.id {
        template.push(Attribute::Id(id.clone()));
    }
    template
}

/// Generate a P-256 key pair inside the token `uri` names, labelled
/// `object=` (and `id=`, else 8 random bytes): the private key sensitive,
/// never extractable, for signing only. Refused when a key of that label
/// (and id) is already there. Returns the public point (uncompressed, 65
/// bytes), which the cards' profiles take as `issuer_public_key`.
pub fn generate_token_key(module: &Path, uri: &Pkcs11Uri, pin: &Secret) -> Result<Vec<u8>> {
    let object = uri
        .object
        .as_ref()
        .ok_or_else(|| Error::Usage(format!("{uri}: name the new key with object=LABEL")))?;
    let session = login(module, uri, pin, true)?;
    let existing = session
        .find_objects(&key_template(uri))
        .map_err(|e| token_error(uri, "finding keys", e))?;
    if !existing.is_empty() {
        return Err(Error::Usage(format!(
            "PKCS#11 token {uri}: a key with that label is already there; choose another object= or remove it"
        )));
    }
    let id = uri
        .id
        .clone()
        .unwrap_or_else(|| cardvault_proto::crypto::random::<8>().to_vec());
    let label = object.as_bytes().to_vec();
    let public_template = [
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::EcParams(P256_PARAMS.to_vec()),
        Attribute::Label(label.clone()),
        Attribute::Id(id.clone()),
    ];
    let private_template = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Label(label),
        Attribute::Id(id),
    ];
    let (public, _) = session
        .generate_key_pair(&Mechanism::EccKeyPairGen, &public_template, &private_template)
        .map_err(|e| token_error(uri, "generating a P-256 key pair", e))?;
    session
        .get_attributes(public, &[AttributeType::EcPoint])
        .map_err(|e| token_error(uri, "reading the new public key", e))?
        .into_iter()
        .find_map(|a| match a {
            Attribute::EcPoint(p) => ec_point(&p),
            _ => None,
        })
        .ok_or_else(|| Error::Data(format!("PKCS#11 token {uri}: the new public key is not a P-256 point")))
}

impl TokenKey {
    /// Load `module`, find the one token and the one P-256 private key `uri`
    /// names, and log in with `pin`.
    pub fn open(module: &Path, uri: &Pkcs11Uri, pin: &Secret) -> Result<TokenKey> {
        let session = login(module, uri, pin, false)?;
        let template = key_template(uri);
        let find = |class: ObjectClass| {
            let mut t = template.clone();
            t.push(Attribute::Class(class));
            session.find_objects(&t)
        };
        let keys = find(ObjectClass::PRIVATE_KEY).map_err(|e| token_error(uri, "finding the key", e))?;
        let key = match keys.as_slice() {
            [k] => *k,
            [] => {
                return Err(Error::Usage(format!(
                    "PKCS#11 token {uri}: no EC private key with that label/id"
                )))
            }
            _ => {
                return Err(Error::Usage(format!(
                    "PKCS#11 token {uri}: {} EC private keys match; name one with object= and id=",
                    keys.len()
                )))
            }
        };
        let attrs = session
            .get_attributes(key, &[AttributeType::EcParams, AttributeType::Sign])
            .map_err(|e| token_error(uri, "reading the key's attributes", e))?;
        for a in &attrs {
            match a {
                Attribute::EcParams(p) if p.as_slice() != P256_PARAMS => {
                    return Err(Error::Usage(format!("PKCS#11 token {uri}: the key is not on P-256")))
                }
                Attribute::Sign(false) => {
                    return Err(Error::Usage(format!(
                        "PKCS#11 token {uri}: the key may not sign (CKA_SIGN false)"
                    )))
                }
                _ => {}
            }
        }
        let public = find(ObjectClass::PUBLIC_KEY)
            .ok()
            .filter(|p| p.len() == 1)
            .and_then(|p| session.get_attributes(p[0], &[AttributeType::EcPoint]).ok())
            .and_then(|a| {
                a.into_iter().find_map(|a| match a {
                    Attribute::EcPoint(p) => ec_point(&p),
                    _ => None,
                })
            });
        Ok(TokenKey {
            session,
            key,
            public,
            uri: uri.clone(),
        })
    }

    /// The key's public point (uncompressed), when the token holds the public key object.
    pub fn public_key(&self) -> Option<&[u8]> {
        self.public.as_deref()
    }

    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>> {
        let digest = cardvault_proto::crypto::sha256(msg);
        let answer = self
            .session
            .sign(&Mechanism::Ecdsa, self.key, &digest)
            .map_err(|e| token_error(&self.uri, "signing", e))?;
        let sig = raw_signature(&answer).ok_or_else(|| {
            Error::Data(format!(
                "PKCS#11 token {}: the signature is not an ECDSA P-256 signature ({} bytes)",
                self.uri,
                answer.len()
            ))
        })?;
        if let Some(public) = &self.public {
            if !cardvault_proto::crypto::verify_p256(public, msg, &sig).unwrap_or(false) {
                return Err(Error::Data(format!(
                    "PKCS#11 token {}: the token's signature does not verify under its own public key",
                    self.uri
                )));
            }
        }
        Ok(sig)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_parse_and_refuse_a_pin_on_the_command_line() {
        let u: Pkcs11Uri = "pkcs11:token=Issuer%20CA;object=sign;id=%01%02?module-path=/m.so&pin-source=file:/p"
            .parse()
            .unwrap();
        assert_eq!(u.token.as_deref(), Some("Issuer CA"));
        assert_eq!(u.object.as_deref(), Some("sign"));
        assert_eq!(u.id.as_deref(), Some(&[1u8, 2][..]));
        assert_eq!(u.module_path.as_deref(), Some(Path::new("/m.so")));
        assert_eq!(u.pin_source, Some(SecretSource::File("/p".into())));
        assert_eq!(u.to_string(), "pkcs11:token=Issuer CA;object=sign;id=%01%02");
        let u: Pkcs11Uri = "pkcs11:token=t;object=o;pin-source=/run/pin;module-path=/x.so"
            .parse()
            .unwrap();
        assert_eq!(u.pin_source, Some(SecretSource::File("/run/pin".into())));
        for bad in [
            "pkcs11:token=t;object=o?pin-value=1234",
            "pkcs11:token=t",
            "pkcs11:object=o;object=p",
            "pkcs11:object=o;type=public",
            "pkcs11:object=o;frobnicate=1",
            "pkcs11:object=%zz",
            "pkcs11:object",
        ] {
            assert!(bad.parse::<Pkcs11Uri>().is_err(), "{bad}");
        }
        let e = "pkcs11:object=o?pin-value=1234".parse::<Pkcs11Uri>().unwrap_err();
        assert!(!e.contains("1234"), "{e}");
        assert!(matches!(
            "pkcs11:object=o".parse::<IssuerKeySource>(),
            Ok(IssuerKeySource::Pkcs11(_))
        ));
        assert!(matches!(
            "env:K".parse::<IssuerKeySource>(),
            Ok(IssuerKeySource::Secret(SecretSource::Env(_)))
        ));
        assert!("00112233".parse::<IssuerKeySource>().is_err());
    }

    #[test]
    fn token_signatures_become_raw_r_and_s() {
        let key = KeyPair::generate().unwrap();
        let der_sig = openssl::ecdsa::EcdsaSig::sign(&[7u8; 32], &key.pkey().unwrap().ec_key().unwrap()).unwrap();
        let raw = raw_signature(&der_sig.to_der().unwrap()).unwrap();
        assert_eq!(raw.len(), 64);
        assert_eq!(&raw[..32], &der_sig.r().to_vec_padded(32).unwrap()[..]);
        let mut short = vec![0u8; 64];
        short[31] = 1;
        short[63] = 2;
        assert_eq!(raw_signature(&short).unwrap(), short);
        // A module that answers 66 bytes (each half with a leading zero).
        let mut padded = vec![0u8];
        padded.extend_from_slice(&short[..32]);
        padded.push(0);
        padded.extend_from_slice(&short[32..]);
        assert_eq!(raw_signature(&padded).unwrap(), short);
        assert!(raw_signature(&[1u8; 80]).is_none());
        let point = key.public_bytes();
        assert_eq!(ec_point(&[&[0x04, 0x41][..], &point].concat()).unwrap(), point);
        assert_eq!(ec_point(&point).unwrap(), point);
    }
}
