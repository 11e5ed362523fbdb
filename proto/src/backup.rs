//! Page backup blobs (BACKUP → vault → RESTORE), see docs/FORMATS.md.

use crate::domain::{DomainRef, DOMAIN_OBJECT_LEN};

/// Header version 2: the header names the issuer domain and generation whose
/// card-common key wraps the card-unique key (version 1 had no domain).
pub const VERSION: u8 = 2;
pub const TYPE_FULL: u8 = 0;
pub const TYPE_DIFFERENTIAL: u8 = 1;
/// BACKUP P1: differential when the card has a base, else full.
pub const BACKUP_AUTO: u8 = 2;
/// Largest record the terminal asks for: a vpcd frame carries 65535 bytes,
/// two of which are the status word.
pub const MAX_BLOCK: usize = 65533;
pub const MIN_BLOCK: usize = 1024;
pub const WRAPPED_UNIQUE_KEY_LEN: usize = 60;
pub const TRAILER_LEN: usize = 36;
pub const BACKUP_SALT: &[u8] = b"cardvault backup v1";
pub const UNIQUE_WRAP_LABEL: &[u8] = b"cardvault unique key wrap v2";
pub const CONTROL_LABEL: &[u8] = b"cardvault control v1";
pub const RECORD_LABEL: &[u8] = b"cardvault record v1";
pub const TRAILER_LABEL: &[u8] = b"cardvault trailer v1";
pub const AUTHORIZATION_LABEL: &[u8] = b"cardvault restore authorization v2";
/// RESTORE P1 values.
pub const RESTORE_SAME_CARD: u8 = 0x00;
pub const RESTORE_OTHER_CARD: u8 = 0x01;
pub const RESTORE_NEXT_IN_CHAIN: u8 = 0x02;
/// RESTORE P2 bit: issuer override of the anti-rollback check (admin session).
pub const RESTORE_OVERRIDE_ROLLBACK: u8 = 0x01;
/// `6310`: this block is not the last; ask for the next one.
pub const SW_MORE_BLOCKS: u16 = 0x6310;

/// What a backup holds: every page of the application area, or the pages
/// changed since its base (the header's type byte; "full" / "differential"
/// in the vault and the JSON output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackupKind {
    Full,
    Differential,
}

impl BackupKind {
    /// From the header's type byte.
    pub fn from_byte(b: u8) -> Option<BackupKind> {
        match b {
            TYPE_FULL => Some(BackupKind::Full),
            TYPE_DIFFERENTIAL => Some(BackupKind::Differential),
            _ => None,
        }
    }

    /// The header's type byte.
    pub fn byte(self) -> u8 {
        match self {
            BackupKind::Full => TYPE_FULL,
            BackupKind::Differential => TYPE_DIFFERENTIAL,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::Full => "full",
            BackupKind::Differential => "differential",
        }
    }
}

impl std::fmt::Display for BackupKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for BackupKind {
    type Err = String;
    fn from_str(s: &str) -> Result<BackupKind, String> {
        match s {
            "full" => Ok(BackupKind::Full),
            "differential" => Ok(BackupKind::Differential),
            other => Err(format!("unknown backup kind '{other}'")),
        }
    }
}

/// The clear part of a backup header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderInfo {
    pub version: u8,
    pub kind: u8,
    pub counter: u32,
    pub base: u32,
    pub page_size: u16,
    pub page_count: u16,
    pub pages: u16,
    pub card_number: String,
    /// The domain (id and generation) whose card-common key wrapped the
    /// card-unique key: only cards of that domain generation open it.
    pub domain: DomainRef,
    pub wrapped_unique_key: Vec<u8>,
    pub control: Vec<u8>,
    /// Bytes of the header up to and including the wrapped key (control AAD).
    pub prefix_len: usize,
}

impl HeaderInfo {
    /// A header without its control information yet (the card seals the
    /// control information over [`HeaderInfo::encode_prefix`], then sets
    /// `control`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: BackupKind,
        counter: u32,
        base: u32,
        page_size: u16,
        page_count: u16,
        pages: u16,
        card_number: &str,
        domain: DomainRef,
        wrapped_unique_key: Vec<u8>,
    ) -> HeaderInfo {
        HeaderInfo {
            version: VERSION,
            kind: kind.byte(),
            counter,
            base,
            page_size,
            page_count,
            pages,
            card_number: card_number.to_string(),
            domain,
            prefix_len: 17 + card_number.len() + DOMAIN_OBJECT_LEN + wrapped_unique_key.len(),
            wrapped_unique_key,
            control: Vec::new(),
        }
    }

    /// The backup's kind (the parser accepts no other type byte).
    pub fn backup_kind(&self) -> BackupKind {
        BackupKind::from_byte(self.kind).expect("parse_header checks the type byte")
    }

    /// The header up to and including the wrapped key (the control
    /// information's associated data).
    pub fn encode_prefix(&self) -> Vec<u8> {
        let mut h = vec![self.version, self.kind];
        h.extend_from_slice(&self.counter.to_be_bytes());
        h.extend_from_slice(&self.base.to_be_bytes());
        h.extend_from_slice(&self.page_size.to_be_bytes());
        h.extend_from_slice(&self.page_count.to_be_bytes());
        h.extend_from_slice(&self.pages.to_be_bytes());
        h.extend_from_slice(&lv(&self.card_number));
        h.extend_from_slice(&self.domain.encode());
        h.extend_from_slice(&self.wrapped_unique_key);
        h
    }

    /// The whole header as [`parse_header`] reads it.
    pub fn encode(&self) -> Vec<u8> {
        let mut h = self.encode_prefix();
        h.extend_from_slice(&(self.control.len() as u16).to_be_bytes());
        h.extend_from_slice(&self.control);
        h
    }
}

/// The end of a backup: how many records it has, and the MAC over the
/// header and every record that detects truncation and reordering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trailer {
    pub record_count: u32,
    pub mac: [u8; 32],
}

impl Trailer {
    pub fn encode(&self) -> [u8; TRAILER_LEN] {
        let mut t = [0u8; TRAILER_LEN];
        t[..4].copy_from_slice(&self.record_count.to_be_bytes());
        t[4..].copy_from_slice(&self.mac);
        t
    }

    pub fn parse(t: &[u8]) -> Option<Trailer> {
        if t.len() != TRAILER_LEN {
            return None;
        }
        Some(Trailer {
            record_count: u32::from_be_bytes(t[..4].try_into().ok()?),
            mac: t[4..].try_into().ok()?,
        })
    }
}

/// Length of the issuer's signature in a restore authorization (P-256 r || s).
pub const AUTHORIZATION_SIGNATURE_LEN: usize = 64;

/// Length of the chain hash in a restore authorization.
pub const CHAIN_HASH_LEN: usize = 32;

/// The hash of a restore chain the issuer's signature covers: SHA-256 over
/// SHA-256(header) of each backup of the chain, full backup first.
pub fn chain_hash<'h>(headers: impl IntoIterator<Item = &'h [u8]>) -> [u8; CHAIN_HASH_LEN] {
    let mut all = Vec::new();
    for h in headers {
        all.extend_from_slice(&crate::crypto::sha256(h));
    }
    crate::crypto::sha256(&all)
}

/// The data of RESTORE P1 = 01 (onto another card): the backup header, then
/// the issuer's authorization: the authorized counter (4), the chain hash
/// (32), the signature's length (2, always 64), the signature over
/// [`authorization_message`], the signer's certificate (DER, under the
/// issuer root installed on the card) and that certificate's length (2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizedRestore<'a> {
    pub header: &'a [u8],
    pub counter: u32,
    pub chain_hash: &'a [u8],
    pub signature: &'a [u8],
    pub signer_certificate: &'a [u8],
}

/// Why RESTORE P1 = 01 data does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizedRestoreError {
    /// Shorter than the authorization alone.
    TooShort,
    /// The signature's length field is not 64.
    BadSignatureLength,
}

impl<'a> AuthorizedRestore<'a> {
    const TAIL: usize = 4 + CHAIN_HASH_LEN + 2 + AUTHORIZATION_SIGNATURE_LEN;

    pub fn encode(&self) -> Vec<u8> {
        let mut d = self.header.to_vec();
        d.extend_from_slice(&self.counter.to_be_bytes());
        d.extend_from_slice(self.chain_hash);
        d.extend_from_slice(&(self.signature.len() as u16).to_be_bytes());
        d.extend_from_slice(self.signature);
        d.extend_from_slice(self.signer_certificate);
        d.extend_from_slice(&(self.signer_certificate.len() as u16).to_be_bytes());
        d
    }

    pub fn parse(data: &'a [u8]) -> Result<AuthorizedRestore<'a>, AuthorizedRestoreError> {
        let Some((rest, len)) = data.split_last_chunk::<2>() else {
            return Err(AuthorizedRestoreError::TooShort);
        };
        let cert_len = u16::from_be_bytes(*len) as usize;
        if cert_len == 0 || rest.len() < Self::TAIL + cert_len {
            return Err(AuthorizedRestoreError::TooShort);
        }
        let (data, signer_certificate) = rest.split_at(rest.len() - cert_len);
        let (header, tail) = data.split_at(data.len() - Self::TAIL);
        let at = 4 + CHAIN_HASH_LEN;
        if tail[at..at + 2] != (AUTHORIZATION_SIGNATURE_LEN as u16).to_be_bytes() {
            return Err(AuthorizedRestoreError::BadSignatureLength);
        }
        Ok(AuthorizedRestore {
            header,
            counter: u32::from_be_bytes(tail[..4].try_into().expect("4 bytes")),
            chain_hash: &tail[4..at],
            signature: &tail[at + 2..],
            signer_certificate,
        })
    }
}

/// Parse a backup header (terminal and card use the same parser).
pub fn parse_header(h: &[u8]) -> Option<HeaderInfo> {
    let mut i = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let s = h.get(i..i + n)?;
        i += n;
        Some(s)
    };
    let version = take(1)?[0];
    let kind = take(1)?[0];
    let counter = u32::from_be_bytes(take(4)?.try_into().ok()?);
    let base = u32::from_be_bytes(take(4)?.try_into().ok()?);
    let page_size = u16::from_be_bytes(take(2)?.try_into().ok()?);
    let page_count = u16::from_be_bytes(take(2)?.try_into().ok()?);
    let pages = u16::from_be_bytes(take(2)?.try_into().ok()?);
    let cl = take(1)?[0] as usize;
    let card_number = std::str::from_utf8(take(cl)?).ok()?.to_string();
    let domain = DomainRef::parse(take(DOMAIN_OBJECT_LEN)?)?;
    let wrapped_unique_key = take(WRAPPED_UNIQUE_KEY_LEN)?.to_vec();
    let prefix_len = 17 + cl + DOMAIN_OBJECT_LEN + WRAPPED_UNIQUE_KEY_LEN;
    let ctl_len = u16::from_be_bytes(take(2)?.try_into().ok()?) as usize;
    let control = take(ctl_len)?.to_vec();
    if version != VERSION || kind > TYPE_DIFFERENTIAL || h.len() != prefix_len + 2 + ctl_len {
        return None;
    }
    Some(HeaderInfo {
        version,
        kind,
        counter,
        base,
        page_size,
        page_count,
        pages,
        card_number,
        domain,
        wrapped_unique_key,
        control,
        prefix_len,
    })
}

/// A one-byte length followed by the string's bytes.
pub fn lv(s: &str) -> Vec<u8> {
    let mut v = vec![s.len() as u8];
    v.extend_from_slice(s.as_bytes());
    v
}

/// The message an issuer signs to authorize a restore onto another card:
/// it names the target card by number and by the SHA-256 of its
/// registration certificate (the DER certificate GET DATA `BF21` returns
/// last), so the authorization is for that one certified card; the chain
/// hash ([`chain_hash`]) names the exact backups to be restored.
pub fn authorization_message(
    source: &str,
    counter: u32,
    target: &str,
    target_certificate_sha256: &[u8; 32],
    challenge: &[u8],
    chain: &[u8],
) -> Vec<u8> {
    let mut m = AUTHORIZATION_LABEL.to_vec();
    m.extend_from_slice(&lv(source));
    m.extend_from_slice(&counter.to_be_bytes());
    m.extend_from_slice(&lv(target));
    m.extend_from_slice(target_certificate_sha256);
    m.extend_from_slice(challenge);
    m.extend_from_slice(chain);
    m
}

/// Label of a data provider's agreement to a restore of its application.
pub const AGREEMENT_LABEL: &[u8] = b"cardvault restore agreement v1";

/// RESTORE DATA P1 of a provider agreement.
pub const RESTORE_DATA_AGREEMENT: u8 = 0x03;

/// The message a data provider signs to agree that a restore writes its
/// application `app` (which it owns as `owner`, the CN of its DPR): the label,
/// the application and its owner, then the very restore the issuer's
/// authorization names ([`authorization_message`], with the target card's
/// restore challenge and the chain hash). For a same-card restore, source and
/// target are the same card.
pub fn agreement_message(app: u8, owner: &str, restore: &[u8]) -> Vec<u8> {
    let mut m = AGREEMENT_LABEL.to_vec();
    m.push(app);
    m.extend_from_slice(&lv(owner));
    m.extend_from_slice(restore);
    m
}

/// The data of RESTORE DATA P1 = 03: application (1) || signature (64, r || s)
/// || the provider's registration certificate (DPR, DER).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreAgreement<'a> {
    pub app: u8,
    pub signature: &'a [u8],
    pub certificate: &'a [u8],
}

impl<'a> RestoreAgreement<'a> {
    pub fn encode(&self) -> Vec<u8> {
        let mut d = vec![self.app];
        d.extend_from_slice(self.signature);
        d.extend_from_slice(self.certificate);
        d
    }

    /// None when shorter than application, signature and one byte of certificate.
    pub fn parse(data: &'a [u8]) -> Option<RestoreAgreement<'a>> {
        if data.len() < 1 + AUTHORIZATION_SIGNATURE_LEN + 1 {
            return None;
        }
        Some(RestoreAgreement {
            app: data[0],
            signature: &data[1..1 + AUTHORIZATION_SIGNATURE_LEN],
            certificate: &data[1 + AUTHORIZATION_SIGNATURE_LEN..],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_agreement_round_trips_and_its_message_is_its_own() {
        let sig = [7u8; AUTHORIZATION_SIGNATURE_LEN];
        let a = RestoreAgreement {
            app: 4,
            signature: &sig,
            certificate: &[0x30, 0x01, 0x00],
        };
        let d = a.encode();
        assert_eq!(RestoreAgreement::parse(&d), Some(a));
        assert_eq!(RestoreAgreement::parse(&d[..1 + AUTHORIZATION_SIGNATURE_LEN]), None);
        let restore = authorization_message("0401", 3, "0402", &[1; 32], &[2; 16], &[3; 32]);
        let m = agreement_message(4, "provider", &restore);
        assert!(m.starts_with(AGREEMENT_LABEL) && m.ends_with(&restore));
        assert_ne!(m, agreement_message(5, "provider", &restore));
        assert_ne!(m, agreement_message(4, "another", &restore));
    }

    #[test]
    fn header_encodes_what_the_parser_reads() {
        let mut h = HeaderInfo::new(
            BackupKind::Differential,
            7,
            6,
            256,
            256,
            3,
            "0401",
            DomainRef {
                id: [0x5D; 16],
                generation: 3,
            },
            vec![0xAB; WRAPPED_UNIQUE_KEY_LEN],
        );
        let prefix = h.encode_prefix();
        assert_eq!(prefix.len(), h.prefix_len);
        h.control = vec![0xCD; 40];
        let raw = h.encode();
        assert_eq!(parse_header(&raw), Some(h.clone()));
        assert_eq!(parse_header(&raw).unwrap().backup_kind(), BackupKind::Differential);
        assert_eq!(parse_header(&raw).unwrap().domain.generation, 3);
        assert!(parse_header(&raw[..raw.len() - 1]).is_none());
        for k in [BackupKind::Full, BackupKind::Differential] {
            assert_eq!(BackupKind::from_byte(k.byte()), Some(k));
            assert_eq!(k.to_string().parse::<BackupKind>(), Ok(k));
        }
    }

    #[test]
    fn trailer_and_authorized_restore_round_trip() {
        let t = Trailer {
            record_count: 5,
            mac: [9; 32],
        };
        assert_eq!(Trailer::parse(&t.encode()), Some(t));
        assert_eq!(Trailer::parse(&[0; 35]), None);
        let header = [1u8, 2, 3];
        let sig = [7u8; 64];
        let chain = [5u8; 32];
        let cert = [0x30, 0x01, 0x00];
        let a = AuthorizedRestore {
            header: &header,
            counter: 42,
            chain_hash: &chain,
            signature: &sig,
            signer_certificate: &cert,
        };
        let data = a.encode();
        assert_eq!(AuthorizedRestore::parse(&data), Ok(a));
        assert_eq!(AuthorizedRestore::parse(&data[3..]).map(|a| a.header.len()), Ok(0));
        assert_eq!(
            AuthorizedRestore::parse(&data[4..]),
            Err(AuthorizedRestoreError::TooShort)
        );
        // No certificate, or a length that reaches into the signature.
        let mut none = data[..data.len() - 5].to_vec();
        none.extend_from_slice(&[0, 0]);
        assert_eq!(AuthorizedRestore::parse(&none), Err(AuthorizedRestoreError::TooShort));
        let mut long = data.clone();
        let n = long.len();
        long[n - 2..].copy_from_slice(&(data.len() as u16).to_be_bytes());
        assert_eq!(AuthorizedRestore::parse(&long), Err(AuthorizedRestoreError::TooShort));
        let mut bad = data.clone();
        bad[header.len() + 4 + 32 + 1] = 65;
        assert_eq!(
            AuthorizedRestore::parse(&bad),
            Err(AuthorizedRestoreError::BadSignatureLength)
        );
    }
}
