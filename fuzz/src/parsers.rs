//! `backup_header`: the backup header parser that card and terminal share.
//!
//! Input: the header bytes.
//!
//! Checked: `backup::parse_header` never panics; it accepts exactly what a
//! reference parser written from docs/FORMATS.md accepts; an accepted header
//! re-encodes, field by field, to the input.

use cardvault_proto::backup::parse_header;
use cardvault_proto::{backup as bk, to_hex};

/// The header layout of docs/FORMATS.md: version (1) kind (1) counter (4)
/// base (4) page size (2) page count (2) pages (2) card number (1 + n, UTF-8)
/// domain id (16) domain generation (4) wrapped unique key (60) control
/// length (2) control. Nothing may follow.
fn reference_accepts(h: &[u8]) -> bool {
    if h.len() < 17 {
        return false;
    }
    let cl = h[16] as usize;
    let Some(card) = h.get(17..17 + cl) else { return false };
    let off = 17 + cl + 20 + bk::WRAPPED_UNIQUE_KEY_LEN;
    let Some(len) = h.get(off..off + 2) else { return false };
    let ctl = u16::from_be_bytes([len[0], len[1]]) as usize;
    h[0] == bk::VERSION
        && h[1] <= bk::TYPE_DIFFERENTIAL
        && std::str::from_utf8(card).is_ok()
        && h.len() == off + 2 + ctl
}

pub fn fuzz_backup_header(data: &[u8]) {
    let parsed = parse_header(data);
    assert_eq!(
        parsed.is_some(),
        reference_accepts(data),
        "parse_header and the FORMATS.md layout disagree on {}",
        to_hex(data)
    );
    let Some(h) = parsed else { return };
    let mut v = vec![h.version, h.kind];
    v.extend_from_slice(&h.counter.to_be_bytes());
    v.extend_from_slice(&h.base.to_be_bytes());
    v.extend_from_slice(&h.page_size.to_be_bytes());
    v.extend_from_slice(&h.page_count.to_be_bytes());
    v.extend_from_slice(&h.pages.to_be_bytes());
    v.push(h.card_number.len() as u8);
    v.extend_from_slice(h.card_number.as_bytes());
    v.extend_from_slice(&h.domain.id);
    v.extend_from_slice(&h.domain.generation.to_be_bytes());
    v.extend_from_slice(&h.wrapped_unique_key);
    v.extend_from_slice(&(h.control.len() as u16).to_be_bytes());
    v.extend_from_slice(&h.control);
    assert_eq!(v, data, "parsed header does not re-encode to its bytes");
    assert_eq!(
        h.encode(),
        data,
        "HeaderInfo::encode differs from the bytes it was parsed from"
    );
}
