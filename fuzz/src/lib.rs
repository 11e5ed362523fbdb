//! The fuzz targets' logic, shared with `make_seeds` and the seed tests.
//!
//! Every target in `fuzz_targets/` is a one-line call into a `fuzz_*`
//! function here, so the same checks run under libFuzzer (`cargo fuzz run`)
//! and without instrumentation (`cargo test --manifest-path fuzz/Cargo.toml`,
//! which replays the seed corpus in fixtures/fuzz/). A broken invariant is a
//! panic whose message names the APDU (hex) and the state fields that changed.
//!
//! Cards are made from the built-in profiles with fixed card numbers, so a
//! crashing input replays the same way (keys and challenges stay random, but
//! no check depends on their values).

use applet_sim::{CardState, Profile};
use cardvault_proto::apdu::CommandApdu;
use cardvault_proto::{from_hex, to_hex};
use std::collections::HashMap;
use std::sync::OnceLock;

pub mod dispatch;
pub mod file;
pub mod invariants;
pub mod parsers;
pub mod restore;
pub mod takeout;
pub mod terminal;
pub mod vpcd;

pub use applet_sim::Card;

/// PIN of every built-in profile.
pub const PIN: &[u8] = b"123456";
/// Key group elements 2 and 3 that the fixtures write (element 1 comes with the profile).
pub const ELEMENT2: [u8; 32] = [0x22; 32];
pub const ELEMENT3: [u8; 32] = [0x33; 32];

pub const MAIN_NUMBER: &str = "FUZZ-MAIN-0001";
pub const BACKUP_NUMBER: &str = "FUZZ-BACKUP-0002";
pub const REPLACEMENT_NUMBER: &str = "FUZZ-REPL-0003";
pub const BLANK_NUMBER: &str = "FUZZ-BLANK-0004";

/// The registration certificate of a "backup" card (GET DATA `BF21`): what
/// TAKE OUT KEY names its target by. One card, made once per process.
pub fn backup_certificate() -> Vec<u8> {
    static CERT: OnceLock<Vec<u8>> = OnceLock::new();
    CERT.get_or_init(|| ready_card("backup").state().certificate.clone())
        .clone()
}

/// SELECT by the cardvault AID, Le = 00.
pub const SELECT: &[u8] = &[0x00, 0xA4, 0x04, 0x00, 0x06, 0xF0, 0x43, 0x56, 0x4C, 0x54, 0x01, 0x00];
/// VERIFY "123456".
pub const VERIFY_PIN: &[u8] = &[0x00, 0x20, 0x00, 0x81, 0x06, b'1', b'2', b'3', b'4', b'5', b'6'];

/// Most APDUs (or vpcd messages, or restore steps) one input may send: keeps
/// every execution short, so libFuzzer's timeout only fires on a real hang.
pub const MAX_STEPS: usize = 64;

/// A built-in profile with a fixed card number: "main", "backup", "replacement", "blank".
///
/// Plain sensitive commands are allowed on these cards (`require_secure_channel`
/// off): the targets explore the command handlers and their invariants with
/// raw APDUs, which the secure channel check would stop before dispatch. That
/// check, and every secure messaging error, are tested in
/// applet-sim/tests/secure_channel.rs on the default profiles.
pub fn profile(name: &str) -> &'static Profile {
    static CACHE: OnceLock<HashMap<&'static str, Profile>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| {
        [
            ("main", MAIN_NUMBER),
            ("backup", BACKUP_NUMBER),
            ("replacement", REPLACEMENT_NUMBER),
            ("blank", BLANK_NUMBER),
        ]
        .into_iter()
        .map(|(n, number)| {
            let mut p = Profile::load(n).expect("built-in profile");
            p.card_number = Some(number.to_string());
            p.require_secure_channel = false;
            (n, p)
        })
        .collect()
    });
    cache.get(name).expect("known profile")
}

/// The test issuer's authorization signer (key and certificate under the
/// test root, fixtures/issuer/), which restore and load authorizations carry.
pub fn issuer_signer() -> cardvault::issuer::IssuerSigner {
    let d = from_hex(include_str!("../../fixtures/issuer/issuer-private.hex")).expect("hex");
    cardvault::issuer::IssuerSigner::new(&d, include_bytes!("../../fixtures/issuer/test-signer.pem")).expect("signer")
}

/// The test issuer's restore-authorization key (fixtures/issuer/).
pub fn issuer_key() -> &'static cardvault_proto::crypto::KeyPair {
    static KEY: OnceLock<cardvault_proto::crypto::KeyPair> = OnceLock::new();
    KEY.get_or_init(|| {
        let d = from_hex(include_str!("../../fixtures/issuer/issuer-private.hex")).expect("hex");
        cardvault_proto::crypto::KeyPair::from_private(&d).expect("issuer key")
    })
}

/// Encode a command APDU: short when it fits, extended otherwise. `ne` = 0: no Le.
pub fn apdu(cla: u8, ins: u8, p1: u8, p2: u8, data: &[u8], ne: usize) -> Vec<u8> {
    let mut v = vec![cla, ins, p1, p2];
    if data.len() <= 255 && ne <= 256 {
        if !data.is_empty() {
            v.push(data.len() as u8);
            v.extend_from_slice(data);
        }
        if ne > 0 {
            v.push(if ne == 256 { 0 } else { ne as u8 });
        }
    } else {
        assert!(data.len() <= 65535 && ne <= 65536);
        v.push(0);
        if !data.is_empty() {
            v.extend_from_slice(&(data.len() as u16).to_be_bytes());
            v.extend_from_slice(data);
        }
        if ne > 0 {
            v.extend_from_slice(&(if ne == 65536 { 0 } else { ne as u16 }).to_be_bytes());
        }
    }
    v
}

/// Send one APDU: (response data, SW). Panics on a response without a status word.
pub fn tx(card: &mut Card, raw: &[u8]) -> (Vec<u8>, u16) {
    let mut r = card.transmit(raw);
    assert!(
        r.len() >= 2,
        "response without status word to {}: {}",
        to_hex(raw),
        to_hex(&r)
    );
    let sw = u16::from_be_bytes([r[r.len() - 2], r[r.len() - 1]]);
    r.truncate(r.len() - 2);
    (r, sw)
}

/// Success status words: 9000, 61xx (more data) and 6310 (more backup blocks).
/// Everything else, 6Cxx included, is a refusal.
pub fn is_success(sw: u16) -> bool {
    sw == 0x9000 || sw >> 8 == 0x61 || sw == 0x6310
}

/// The issuer session: SCP11a with the test issuer's operator (the OCE
/// certificate with PERFORM SECURITY OPERATION, then MUTUAL AUTHENTICATE),
/// the only way to the card's admin commands. Returns the status word of
/// the last step. The targets send their APDUs plain afterwards: commands
/// that are not sensitive keep the issuer session (END PERSONALIZATION,
/// RELEASE DUPLICATE...), a plain sensitive one ends it (6987).
pub fn admin_authenticate(card: &mut Card) -> u16 {
    use applet_sim::test_issuer as t;
    use cardvault_proto::scp11::{self, ClientHandshake};
    let (der, s) = tx_whole(card, &[0x00, 0xCA, 0xBF, 0x21, 0x00]);
    if s != 0x9000 {
        return s;
    }
    let Some(pk) = cardvault_proto::cert::split_certificates(&der)
        .ok()
        .and_then(|c| c.last().and_then(|l| cardvault_proto::cert::ecka_public_key(l).ok()))
    else {
        return 0x6A80;
    };
    let issuer = cardvault::issuer::IssuerCredentials::from_built_in(&cardvault::transport::BuiltInIssuer {
        root: t::ROOT_PEM,
        root_key: t::ROOT_KEY_PEM,
        oce: t::OCE_PEM,
        oce_key: t::OCE_KEY_PEM,
        issuer_registrar: applet_sim::test_registrars::ISSUER_REGISTRAR_PEM,
        data_registrar: applet_sim::test_registrars::DATA_REGISTRAR_PEM,
    })
    .expect("the test issuer");
    let chain = issuer.chain_der().expect("DER");
    for c in scp11::oce_certificate_commands(scp11::KVN, scp11::KID_OCE, &chain) {
        let s = tx(card, &c.to_bytes()).1;
        if s != 0x9000 {
            return s;
        }
    }
    let hs = ClientHandshake::scp11a(scp11::KVN, &pk, issuer.key().expect("key")).expect("handshake");
    tx_whole(card, &hs.command().to_bytes()).1
}

/// Send one APDU and fetch the rest of its answer with GET RESPONSE.
fn tx_whole(card: &mut Card, raw: &[u8]) -> (Vec<u8>, u16) {
    let (mut data, mut s) = tx(card, raw);
    while s >> 8 == 0x61 {
        let (more, next) = tx(card, &[0x00, 0xC0, 0x00, 0x00, s as u8]);
        data.extend_from_slice(&more);
        s = next;
    }
    (data, s)
}

/// Write key group elements 2 and 3 (PIN verified): the group is then complete.
pub fn complete_key_group(card: &mut Card) {
    tx(card, &apdu(0x80, 0xE1, 2, 0, &ELEMENT2, 0));
    tx(card, &apdu(0x80, 0xE1, 3, 0, &ELEMENT3, 0));
}

/// A fresh in-memory card of a profile, selected and with the PIN verified.
pub fn ready_card(profile_name: &str) -> Card {
    let mut card = Card::in_memory(profile(profile_name));
    assert_eq!(tx(&mut card, SELECT).1, 0x9000, "SELECT on {profile_name}");
    assert_eq!(tx(&mut card, VERIFY_PIN).1, 0x9000, "VERIFY on {profile_name}");
    card
}

/// Field-by-field difference of two card states, for violation reports.
pub fn state_diff(before: &CardState, after: &CardState) -> String {
    let a = serde_json::to_value(before).expect("state serializes");
    let b = serde_json::to_value(after).expect("state serializes");
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return "states are not objects".into();
    };
    let short = |v: Option<&serde_json::Value>| {
        let s = v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        if s.len() > 160 {
            format!("{}... ({} chars)", &s[..160], s.len())
        } else {
            s
        }
    };
    let mut out = Vec::new();
    // The memory is not serialized (it lives in the card's page file).
    let (ma, mb) = (&before.memory, &after.memory);
    if ma != mb {
        let first = ma.iter().zip(mb.iter()).position(|(x, y)| x != y);
        out.push(format!(
            "memory: {} bytes differ, first at offset {:?}",
            ma.iter().zip(mb.iter()).filter(|(x, y)| x != y).count(),
            first
        ));
    }
    for k in a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))) {
        if a.get(k) != b.get(k) {
            out.push(format!("{k}: {} -> {}", short(a.get(k)), short(b.get(k))));
        }
    }
    out.join("; ")
}

/// The "no state change on rejected input" rule, with its two deliberate
/// exceptions: a wrong PIN (VERIFY, CHANGE REFERENCE DATA) answers 63Cx and
/// counts the try down by exactly one; RESTORE uses up the stored restore
/// challenge whatever the outcome.
pub fn check_rejected(before: &CardState, after: &CardState, raw: &[u8], sw: u16) -> Result<(), String> {
    if after == before {
        return Ok(());
    }
    if sw & 0xFFF0 == 0x63C0 && before.pin.tries_left > 0 {
        let mut expect = before.clone();
        expect.pin.tries_left -= 1;
        if *after == expect && (sw & 0x0F) as u8 == after.pin.tries_left {
            return Ok(());
        }
    }
    if raw.len() >= 2 && raw[0] & !0x10 == 0x80 && raw[1] == cardvault_proto::ins::RESTORE {
        let mut expect = before.clone();
        expect.restore_challenge.clear();
        if *after == expect {
            return Ok(());
        }
    }
    Err(state_diff(before, after))
}

/// Send one APDU and check everything that must hold for any APDU:
/// - the response ends with a status word;
/// - it carries at most Ne data bytes (none when the APDU does not parse);
/// - a refusal carries no data and leaves the persistent state as it was
///   (see [`check_rejected`]);
/// - a successful GET DATA answer is one BER-TLV with the asked tag.
///
/// And on what the card allowed: see [`invariants`] (access control on
/// successes, PIN tries, no rollback).
///
/// Returns (data, SW).
pub fn checked_tx(card: &mut Card, raw: &[u8]) -> (Vec<u8>, u16) {
    let before = card.state().clone();
    let session = card.session();
    let (data, sw) = tx(card, raw);
    check_response(&before, card.state(), raw, &data, sw);
    invariants::assert_allowed(&session, &before, card.state(), raw, sw);
    (data, sw)
}

/// The checks of [`checked_tx`] on an exchange made elsewhere (vpcd).
pub fn check_response(before: &CardState, after: &CardState, raw: &[u8], data: &[u8], sw: u16) {
    match CommandApdu::parse(raw) {
        Ok(c) => assert!(
            data.len() <= c.ne,
            "{} data bytes for Ne {} to {}",
            data.len(),
            c.ne,
            to_hex(raw)
        ),
        Err(_) => assert!(data.is_empty(), "data in the answer to unparsable {}", to_hex(raw)),
    }
    if !is_success(sw) {
        assert!(data.is_empty(), "refusal {sw:04X} with data to {}", to_hex(raw));
        if let Err(diff) = check_rejected(before, after, raw, sw) {
            panic!(
                "state changed on rejected input: APDU {} answered {sw:04X}; changed: {diff}",
                to_hex(raw)
            );
        }
    }
    if sw == 0x9000 && raw.len() >= 4 && raw[0] == 0x00 && raw[1] == 0xCA && !data.is_empty() {
        let tlv = iso7816_tlv::ber::Tlv::from_bytes(data)
            .unwrap_or_else(|e| panic!("GET DATA {} answer is not BER-TLV: {e:?}", to_hex(&raw[2..4])));
        let tag = iso7816_tlv::ber::Tag::try_from(u16::from_be_bytes([raw[2], raw[3]])).expect("tag");
        assert_eq!(*tlv.tag(), tag, "GET DATA answer has another tag");
        assert_eq!(tlv.to_vec(), data, "GET DATA answer has bytes after its TLV");
    }
}

/// A cursor over fuzz input.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    pub fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.byte()?, self.byte()?]))
    }

    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes([
            self.byte()?,
            self.byte()?,
            self.byte()?,
            self.byte()?,
        ]))
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (a, b) = self.data.split_at(n);
        self.data = b;
        a
    }

    /// A 2-byte length then that many bytes (fewer at the end of the input).
    pub fn lv16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()? as usize;
        Some(self.take(n))
    }

    pub fn rest(&mut self) -> &'a [u8] {
        self.take(self.data.len())
    }
}

/// Append a 2-byte big-endian length and the bytes (the seed encodings).
pub fn push_lv16(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The seed corpus directory of a target (fixtures/fuzz/<target>).
pub fn seed_dir(target: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/fuzz")
        .join(target)
}

#[cfg(test)]
mod tests {
    //! Replays every seed through its target without instrumentation.

    fn replay(target: &str, f: fn(&[u8])) {
        let dir = super::seed_dir(target);
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = e.unwrap().path();
            f(&std::fs::read(&path).unwrap());
            n += 1;
        }
        assert!(n > 0, "no seeds in {}", dir.display());
    }

    #[test]
    fn seeds_apdu_dispatch() {
        replay("apdu_dispatch", super::dispatch::fuzz_apdu_dispatch);
    }

    #[test]
    fn seeds_vpcd_framing() {
        replay("vpcd_framing", super::vpcd::fuzz_vpcd_framing);
    }

    #[test]
    fn seeds_takeout_blob() {
        replay("takeout_blob", super::takeout::fuzz_takeout_blob);
    }

    #[test]
    fn seeds_backup_header() {
        replay("backup_header", super::parsers::fuzz_backup_header);
    }

    #[test]
    fn seeds_restore_records() {
        replay("restore_records", super::restore::fuzz_restore_records);
    }

    #[test]
    fn seeds_terminal_workflows() {
        replay("terminal_workflows", super::terminal::fuzz_terminal);
    }

    #[test]
    fn seeds_file_header() {
        replay("file_header", super::file::fuzz_file_header);
    }
}
