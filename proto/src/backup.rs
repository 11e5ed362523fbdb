//! Page backup blobs (BACKUP → vault → RESTORE), see docs/FORMATS.md.

pub const VERSION: u8 = 1;
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
pub const UNIQUE_WRAP_LABEL: &[u8] = b"cardvault unique key wrap v1";
pub const CONTROL_LABEL: &[u8] = b"cardvault control v1";
pub const RECORD_LABEL: &[u8] = b"cardvault record v1";
pub const TRAILER_LABEL: &[u8] = b"cardvault trailer v1";
pub const AUTHORIZATION_LABEL: &[u8] = b"cardvault restore authorization v1";
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
    pub wrapped_unique_key: Vec<u8>,
    pub control: Vec<u8>,
    /// Bytes of the header up to and including the wrapped key (control AAD).
    pub prefix_len: usize,
}

impl HeaderInfo {
    /// The backup's kind (the parser accepts no other type byte).
    pub fn backup_kind(&self) -> BackupKind {
        BackupKind::from_byte(self.kind).expect("parse_header checks the type byte")
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
    let wrapped_unique_key = take(WRAPPED_UNIQUE_KEY_LEN)?.to_vec();
    let prefix_len = 17 + cl + WRAPPED_UNIQUE_KEY_LEN;
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

/// The message an issuer signs to authorize a restore onto another card.
pub fn authorization_message(source: &str, counter: u32, target: &str, challenge: &[u8]) -> Vec<u8> {
    let mut m = AUTHORIZATION_LABEL.to_vec();
    m.extend_from_slice(&lv(source));
    m.extend_from_slice(&counter.to_be_bytes());
    m.extend_from_slice(&lv(target));
    m.extend_from_slice(challenge);
    m
}
