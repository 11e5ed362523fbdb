//! Key take-out blob (TAKE OUT KEY → IMPORT KEY), see docs/FORMATS.md.

pub const VERSION: u8 = 1;
/// Key slot of the main decryption key.
pub const SLOT_MAIN: u8 = 0x01;
/// Key type: EC P-256 private scalar (plaintext = d (32) || Q (65)).
pub const TYPE_P256: u8 = 0x01;
pub const KCV_LEN: usize = 8;
pub const RECEIPT_LEN: usize = 32;
/// HKDF salt for the key group secret.
pub const GROUP_SALT: &[u8] = b"cardvault key group v1";
/// HMAC label of the key group check value.
pub const KCV_LABEL: &[u8] = b"cardvault key group check value";
/// HKDF info of the take-out encryption key.
pub const EXPORT_INFO: &[u8] = b"cardvault key export v1";
/// HMAC label of the import receipt.
pub const RECEIPT_LABEL: &[u8] = b"cardvault duplicate receipt v1";
/// Label of the DESTROY KEY receipt MAC (a backup card's proof that it holds
/// no key of a source card's take-outs up to a counter).
pub const DESTROY_LABEL: &[u8] = b"cardvault destroy receipt v1";
/// HMAC label authenticating the transport key (GET TRANSPORT KEY).
pub const TRANSPORT_KEY_LABEL: &[u8] = b"cardvault transport key v1";
/// Associated data label for SET MAIN KEY (key service variant).
pub const KEY_SERVICE_LABEL: &[u8] = b"cardvault key service v1";

/// Where a card's main keys came from (GET DATA DF14 carries the string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyOrigin {
    /// Generated inside this card (GENERATE KEY PAIR).
    Generated,
    /// Imported from a main card under the key group (IMPORT KEY).
    Imported,
    /// Set by a key service through a protected channel (SET MAIN KEY).
    KeyService,
}

impl KeyOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyOrigin::Generated => "generated",
            KeyOrigin::Imported => "imported",
            KeyOrigin::KeyService => "key-service",
        }
    }
}

impl std::fmt::Display for KeyOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for KeyOrigin {
    type Err = String;
    fn from_str(s: &str) -> Result<KeyOrigin, String> {
        match s {
            "generated" => Ok(KeyOrigin::Generated),
            "imported" => Ok(KeyOrigin::Imported),
            "key-service" => Ok(KeyOrigin::KeyService),
            other => Err(format!("unknown key origin '{other}'")),
        }
    }
}

/// Parsed take-out blob.
pub struct TakeOut<'a> {
    pub aad: &'a [u8],
    pub source: &'a str,
    pub target: &'a str,
    pub kcv: &'a [u8],
    pub counter: u32,
    pub nonce: &'a [u8],
    pub sealed: &'a [u8],
}

pub fn parse_takeout(b: &[u8]) -> Option<TakeOut<'_>> {
    let mut i = 0usize;
    let take = |i: &mut usize, n: usize| -> Option<&[u8]> {
        let s = b.get(*i..*i + n)?;
        *i += n;
        Some(s)
    };
    let head = take(&mut i, 3)?;
    if head != [VERSION, SLOT_MAIN, TYPE_P256] {
        return None;
    }
    let sl = take(&mut i, 1)?[0] as usize;
    let source = std::str::from_utf8(take(&mut i, sl)?).ok()?;
    let tl = take(&mut i, 1)?[0] as usize;
    let target = std::str::from_utf8(take(&mut i, tl)?).ok()?;
    let kcv = take(&mut i, KCV_LEN)?;
    let counter = u32::from_be_bytes(take(&mut i, 4)?.try_into().ok()?);
    let aad_end = i;
    let nonce = take(&mut i, crate::crypto::GCM_NONCE_LEN)?;
    let sealed = &b[i..];
    if sealed.len() != crate::crypto::PRIVATE_KEY_LEN + crate::crypto::PUBLIC_KEY_LEN + crate::crypto::GCM_TAG_LEN {
        return None;
    }
    Some(TakeOut {
        aad: &b[..aad_end],
        source,
        target,
        kcv,
        counter,
        nonce,
        sealed,
    })
}

/// The public fields of a take-out blob, for terminals and audit trails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakeOutInfo {
    pub source: String,
    pub target: String,
    pub kcv: Vec<u8>,
    pub counter: u32,
}

impl TakeOutInfo {
    /// The clear, authenticated part of a blob for these bindings: version,
    /// slot, key type, source and target card numbers, check value, counter.
    /// The card appends the nonce and the sealed key.
    pub fn encode_aad(&self) -> Vec<u8> {
        let mut b = vec![VERSION, SLOT_MAIN, TYPE_P256];
        b.push(self.source.len() as u8);
        b.extend_from_slice(self.source.as_bytes());
        b.push(self.target.len() as u8);
        b.extend_from_slice(self.target.as_bytes());
        b.extend_from_slice(&self.kcv);
        b.extend_from_slice(&self.counter.to_be_bytes());
        b
    }
}

/// The backup card's answer to IMPORT KEY, relayed by the terminal to the
/// main card in CONFIRM DUPLICATE: the take-out counter and a MAC under the
/// key group over the bindings and the imported public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub counter: u32,
    pub mac: [u8; RECEIPT_LEN],
}

impl Receipt {
    pub const LEN: usize = 4 + RECEIPT_LEN;

    pub fn encode(&self) -> Vec<u8> {
        let mut r = self.counter.to_be_bytes().to_vec();
        r.extend_from_slice(&self.mac);
        r
    }

    pub fn parse(r: &[u8]) -> Option<Receipt> {
        if r.len() != Self::LEN {
            return None;
        }
        Some(Receipt {
            counter: u32::from_be_bytes(r[..4].try_into().ok()?),
            mac: r[4..].try_into().ok()?,
        })
    }
}

/// Parse a take-out blob's bindings (it is not decrypted).
pub fn takeout_info(blob: &[u8]) -> Option<TakeOutInfo> {
    parse_takeout(blob).map(|t| TakeOutInfo {
        source: t.source.to_string(),
        target: t.target.to_string(),
        kcv: t.kcv.to_vec(),
        counter: t.counter,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{GCM_NONCE_LEN, GCM_TAG_LEN, PRIVATE_KEY_LEN, PUBLIC_KEY_LEN};

    #[test]
    fn blob_bindings_and_receipt_round_trip() {
        let info = TakeOutInfo {
            source: "0401".into(),
            target: "0402".into(),
            kcv: vec![5; KCV_LEN],
            counter: 2,
        };
        let mut blob = info.encode_aad();
        let aad_len = blob.len();
        blob.extend_from_slice(&[1; GCM_NONCE_LEN]);
        blob.extend_from_slice(&[2; PRIVATE_KEY_LEN + PUBLIC_KEY_LEN + GCM_TAG_LEN]);
        assert_eq!(takeout_info(&blob), Some(info));
        assert_eq!(parse_takeout(&blob).unwrap().aad.len(), aad_len);
        assert!(takeout_info(&blob[..blob.len() - 1]).is_none());
        let r = Receipt {
            counter: 2,
            mac: [3; RECEIPT_LEN],
        };
        assert_eq!(Receipt::parse(&r.encode()), Some(r));
        assert_eq!(Receipt::parse(&[0; 35]), None);
        for o in [KeyOrigin::Generated, KeyOrigin::Imported, KeyOrigin::KeyService] {
            assert_eq!(o.to_string().parse::<KeyOrigin>(), Ok(o));
        }
        assert_eq!(KeyOrigin::KeyService.as_str(), "key-service");
    }
}
