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
/// HMAC label authenticating the transport key (GET TRANSPORT KEY).
pub const TRANSPORT_KEY_LABEL: &[u8] = b"cardvault transport key v1";
/// Associated data label for SET MAIN KEY (key service variant).
pub const KEY_SERVICE_LABEL: &[u8] = b"cardvault key service v1";

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

/// Parse a take-out blob's bindings (it is not decrypted).
pub fn takeout_info(blob: &[u8]) -> Option<TakeOutInfo> {
    parse_takeout(blob).map(|t| TakeOutInfo {
        source: t.source.to_string(),
        target: t.target.to_string(),
        kcv: t.kcv.to_vec(),
        counter: t.counter,
    })
}
