//! Integration tests of the simulated card: the ISO 7816-4 layer, the applet
//! commands, persistence of the card state, and the vpcd framing.

use applet_sim::state::Store;
use applet_sim::{Card, Profile, StoreError};
use cardvault_proto::{self as proto, tag};
use iso7816_tlv::ber::{Tag, Tlv, Value};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- helpers

const SELECT: &[u8] = &[0x00, 0xA4, 0x04, 0x00, 0x06, 0xF0, 0x43, 0x56, 0x4C, 0x54, 0x01, 0x00];
const PIN: &[u8] = b"123456";

/// The built-in main profile with plain sensitive commands allowed: these
/// tests are about ISO 7816-4 framing and the applet's own answers (PIN
/// counter, chaining, GET RESPONSE, persistence), sent as raw bytes. That the
/// default card refuses every one of them plain (6982), and what the secure
/// channel does, is tested in `secure_channel.rs`.
fn profile() -> Profile {
    let mut p = Profile::load("main").unwrap();
    p.require_secure_channel = false;
    p
}

fn card() -> Card {
    Card::in_memory(&profile())
}

/// Send one APDU; return (response data, SW).
fn tx(card: &mut Card, apdu: &[u8]) -> (Vec<u8>, u16) {
    let r = card.transmit(apdu);
    assert!(r.len() >= 2, "response without status word: {r:02x?}");
    let (data, sw) = r.split_at(r.len() - 2);
    (data.to_vec(), u16::from_be_bytes([sw[0], sw[1]]))
}

/// Send one APDU; return only the SW.
fn sw(card: &mut Card, apdu: &[u8]) -> u16 {
    tx(card, apdu).1
}

fn apdu(header: [u8; 4], data: &[u8], le: Option<u8>) -> Vec<u8> {
    let mut v = header.to_vec();
    if !data.is_empty() {
        assert!(data.len() <= 255);
        v.push(data.len() as u8);
        v.extend_from_slice(data);
    }
    v.extend(le);
    v
}

fn selected_card() -> Card {
    let mut c = card();
    assert_eq!(sw(&mut c, SELECT), 0x9000);
    c
}

fn verify(card: &mut Card, pin: &[u8]) -> u16 {
    sw(card, &apdu([0x00, 0x20, 0x00, 0x81], pin, None))
}

fn get_data(card: &mut Card, t: u16) -> (Vec<u8>, u16) {
    let [p1, p2] = t.to_be_bytes();
    tx(card, &[0x00, 0xCA, p1, p2, 0x00])
}

/// Value of a primitive data object read with GET DATA.
fn get_data_value(card: &mut Card, t: u16) -> Vec<u8> {
    let (r, s) = get_data(card, t);
    assert_eq!(s, 0x9000, "GET DATA {t:04X}");
    let tlv = Tlv::from_bytes(&r).unwrap();
    assert_eq!(*tlv.tag(), Tag::try_from(t).unwrap());
    match tlv.value() {
        Value::Primitive(v) => v.clone(),
        Value::Constructed(_) => panic!("{t:04X} is constructed"),
    }
}

fn tries_left(card: &mut Card) -> u8 {
    get_data_value(card, tag::PIN_TRIES_LEFT)[0]
}

/// Extended case 4 WRITE MEMORY at `page`.
fn write_memory_ext(card: &mut Card, page: u16, data: &[u8]) -> u16 {
    let [p1, p2] = page.to_be_bytes();
    let mut v = vec![0x80, 0xD6, p1, p2, 0x00];
    v.extend_from_slice(&(data.len() as u16).to_be_bytes());
    v.extend_from_slice(data);
    sw(card, &v)
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

fn block_pin(card: &mut Card) {
    for _ in 0..3 {
        verify(card, b"000000");
    }
    assert_eq!(verify(card, PIN), 0x6983);
}

/// A temporary directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let d = std::env::temp_dir().join(format!("applet-sim-iso-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }

    fn card_path(&self) -> PathBuf {
        self.0.join("card.json")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn open(path: &std::path::Path) -> Card {
    Card::open(path, &profile()).unwrap().0
}

// ---------------------------------------------------------------- SELECT

#[test]
fn select_by_aid_returns_fci_and_9000() {
    let mut c = card();
    let (fci, s) = tx(&mut c, SELECT);
    assert_eq!(s, 0x9000);
    let fci = Tlv::from_bytes(&fci).unwrap();
    assert_eq!(*fci.tag(), Tag::try_from(tag::FCI).unwrap());
    let aid = fci.find(&Tag::try_from(tag::FCI_AID).unwrap()).unwrap();
    assert_eq!(*aid.value(), Value::Primitive(proto::AID.to_vec()));
    let version = fci.find(&Tag::try_from(tag::APPLET_VERSION).unwrap()).unwrap();
    assert_eq!(*version.value(), Value::Primitive(vec![1, 0]));
    let Value::Constructed(children) = fci.value() else {
        panic!("FCI is not constructed");
    };
    assert_eq!(*children[0].tag(), Tag::try_from(tag::FCI_AID).unwrap());
    assert_eq!(*children[1].tag(), Tag::try_from(tag::FCI_PROPRIETARY).unwrap());
}

#[test]
fn select_wrong_aid_returns_6a82() {
    let mut c = card();
    let wrong = apdu([0x00, 0xA4, 0x04, 0x00], &[0xF0, 0x43, 0x56, 0x4C, 0x54, 0x02], Some(0));
    assert_eq!(tx(&mut c, &wrong), (vec![], 0x6A82));
    // A wrong AID also deselects an applet that was selected.
    assert_eq!(sw(&mut c, SELECT), 0x9000);
    assert_eq!(sw(&mut c, &wrong), 0x6A82);
    assert_eq!(get_data(&mut c, tag::CARD_NUMBER).1, 0x6985);
}

#[test]
fn command_before_select_returns_6985() {
    let mut c = card();
    assert_eq!(get_data(&mut c, tag::CARD_NUMBER), (vec![], 0x6985));
    assert_eq!(verify(&mut c, PIN), 0x6985);
    assert_eq!(sw(&mut c, &[0x80, 0xB0, 0x00, 0x00, 0x10]), 0x6985);
}

// ---------------------------------------------------------------- GET DATA

#[test]
fn get_data_00e1_is_card_status_template_with_df01_to_df08() {
    let mut c = selected_card();
    let (r, s) = get_data(&mut c, tag::CARD_STATUS);
    assert_eq!(s, 0x9000);
    let t = Tlv::from_bytes(&r).unwrap();
    assert_eq!(t.tag().to_bytes(), &[0xE1]);
    let Value::Constructed(children) = t.value() else {
        panic!("E1 is not constructed");
    };
    // DF01..DF08 come first and in order; later applet versions may append more.
    let tags: Vec<Vec<u8>> = children.iter().take(8).map(|c| c.tag().to_bytes().to_vec()).collect();
    let expected: Vec<Vec<u8>> = (1..=8u8).map(|n| vec![0xDF, n]).collect();
    assert_eq!(tags, expected);
    let number = c.state().card_number.clone();
    let values: Vec<Vec<u8>> = children
        .iter()
        .take(8)
        .map(|c| match c.value() {
            Value::Primitive(v) => v.clone(),
            Value::Constructed(_) => panic!("nested template"),
        })
        .collect();
    assert_eq!(
        values,
        vec![
            number.into_bytes(),
            b"main".to_vec(),
            vec![1, 0],
            vec![3],
            vec![3],
            vec![0x01, 0x00],
            vec![0x01, 0x00],
            vec![0x01],
        ]
    );
    // Each child is the same object GET DATA returns for its own tag.
    for child in children.iter().take(8) {
        let t = u16::from_be_bytes(child.tag().to_bytes().try_into().unwrap());
        assert_eq!(get_data(&mut c, t), (child.to_vec(), 0x9000));
    }
}

#[test]
fn get_data_df01_to_df08_return_each_data_object() {
    let mut c = selected_card();
    let number = c.state().card_number.clone();
    assert_eq!(number.len(), 16);
    assert!(number.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(get_data_value(&mut c, tag::CARD_NUMBER), number.as_bytes());
    assert_eq!(get_data_value(&mut c, tag::ROLE), b"main");
    assert_eq!(get_data_value(&mut c, tag::APPLET_VERSION), [1, 0]);
    assert_eq!(get_data_value(&mut c, tag::PIN_TRIES_LEFT), [3]);
    assert_eq!(get_data_value(&mut c, tag::PIN_MAX_TRIES), [3]);
    assert_eq!(get_data_value(&mut c, tag::PAGE_SIZE), [0x01, 0x00]);
    assert_eq!(get_data_value(&mut c, tag::PAGE_COUNT), [0x01, 0x00]);
    // FLAGS: bit 0 extended length, bit 1 PIN verified in this session.
    assert_eq!(get_data_value(&mut c, tag::FLAGS), [0x01]);
    assert_eq!(verify(&mut c, PIN), 0x9000);
    assert_eq!(get_data_value(&mut c, tag::FLAGS), [0x03]);
}

#[test]
fn get_data_unknown_tag_returns_6a88() {
    let mut c = selected_card();
    for t in [0xDF09u16, 0xDF00, 0x006F, 0x0000, 0xE100] {
        assert_eq!(get_data(&mut c, t), (vec![], 0x6A88), "tag {t:04X}");
    }
}

// ---------------------------------------------------------------- error status words

#[test]
fn wrong_cla_returns_6e00() {
    let mut c = selected_card();
    // (84 and 04 are the secure messaging classes: tests/secure_channel.rs.)
    for cla in [0xA0u8, 0x0C, 0xFF, 0x40] {
        assert_eq!(sw(&mut c, &[cla, 0xCA, 0xDF, 0x01, 0x00]), 0x6E00, "CLA {cla:02X}");
    }
}

#[test]
fn logical_channel_cla_01_returns_6881() {
    let mut c = selected_card();
    assert_eq!(sw(&mut c, &[0x01, 0xCA, 0xDF, 0x01, 0x00]), 0x6881);
    assert_eq!(
        sw(
            &mut c,
            &[0x03, 0xA4, 0x04, 0x00, 0x06, 0xF0, 0x43, 0x56, 0x4C, 0x54, 0x01]
        ),
        0x6881
    );
}

#[test]
fn unknown_ins_returns_6d00() {
    let mut c = selected_card();
    assert_eq!(sw(&mut c, &[0x00, 0x12, 0x00, 0x00]), 0x6D00);
    // READ MEMORY exists only in class 80, GET DATA only in class 00.
    assert_eq!(sw(&mut c, &[0x00, 0xB0, 0x00, 0x00, 0x10]), 0x6D00);
    assert_eq!(sw(&mut c, &[0x80, 0xCA, 0xDF, 0x01, 0x00]), 0x6D00);
}

#[test]
fn wrong_p1p2_returns_6a86() {
    let mut c = selected_card();
    assert_eq!(sw(&mut c, &apdu([0x00, 0x20, 0x00, 0x82], PIN, None)), 0x6A86);
    assert_eq!(sw(&mut c, &apdu([0x00, 0x20, 0x01, 0x81], PIN, None)), 0x6A86);
    assert_eq!(sw(&mut c, &[0x00, 0x84, 0x00, 0x01, 0x10]), 0x6A86);
    assert_eq!(sw(&mut c, &[0x00, 0xC0, 0x01, 0x00, 0x00]), 0x6A86);
    let bad_select = apdu([0x00, 0xA4, 0x00, 0x00], proto::AID, Some(0));
    assert_eq!(sw(&mut c, &bad_select), 0x6A86);
    // Page beyond the last one (page count 256).
    assert_eq!(verify(&mut c, PIN), 0x9000);
    assert_eq!(sw(&mut c, &[0x80, 0xB0, 0x01, 0x00, 0x10]), 0x6A86);
}

#[test]
fn wrong_length_returns_6700() {
    let mut c = selected_card();
    // Lc does not match the data.
    assert_eq!(sw(&mut c, &[0x00, 0xCA, 0xDF, 0x01, 0x05, 0x01]), 0x6700);
    // Fewer than 4 header bytes.
    assert_eq!(sw(&mut c, &[0x00, 0xCA, 0xDF]), 0x6700);
    // PIN shorter than 4 bytes.
    assert_eq!(sw(&mut c, &apdu([0x00, 0x20, 0x00, 0x81], b"12", None)), 0x6700);
    // GET DATA with a data field.
    assert_eq!(sw(&mut c, &apdu([0x00, 0xCA, 0xDF, 0x01], &[1], Some(0))), 0x6700);
}

#[test]
fn change_reference_data_with_malformed_lv_returns_6a80() {
    let mut c = selected_card();
    // Length byte says 10, only 3 bytes follow.
    assert_eq!(
        sw(&mut c, &apdu([0x00, 0x24, 0x00, 0x81], &[10, 1, 2, 3], None)),
        0x6A80
    );
    // Well-formed LV but an old PIN of 2 bytes.
    assert_eq!(
        sw(&mut c, &apdu([0x00, 0x24, 0x00, 0x81], b"\x0212654321", None)),
        0x6A80
    );
    // Malformed data costs no PIN try.
    assert_eq!(tries_left(&mut c), 3);
}

#[test]
fn change_reference_data_replaces_the_pin() {
    let mut c = selected_card();
    let mut data = vec![PIN.len() as u8];
    data.extend_from_slice(PIN);
    data.extend_from_slice(b"9876");
    assert_eq!(sw(&mut c, &apdu([0x00, 0x24, 0x00, 0x81], &data, None)), 0x9000);
    assert_eq!(verify(&mut c, PIN), 0x63C2);
    assert_eq!(verify(&mut c, b"9876"), 0x9000);
}

// ---------------------------------------------------------------- short and extended lengths

/// VERIFY, then write a 4096-byte pattern at page 4 (the first page after
/// the purse, which no holder command writes) and return it.
fn card_with_pattern() -> (Card, Vec<u8>) {
    let mut c = selected_card();
    assert_eq!(verify(&mut c, PIN), 0x9000);
    let p = pattern(4096, 7);
    assert_eq!(write_memory_ext(&mut c, 4, &p), 0x9000);
    assert_eq!(c.state().memory[1024..5120], p[..]);
    (c, p)
}

#[test]
fn read_memory_4096_with_extended_le_returns_all_and_9000() {
    let (mut c, p) = card_with_pattern();
    let (r, s) = tx(&mut c, &[0x80, 0xB0, 0x00, 0x04, 0x00, 0x10, 0x00]);
    assert_eq!(s, 0x9000);
    assert_eq!(r, p);
}

#[test]
fn read_memory_4096_with_short_le_gives_256_and_6100_then_get_response_collects_all() {
    let (mut c, p) = card_with_pattern();
    // Length 4096 in the data field, short Le 00 (256).
    let (first, s) = tx(&mut c, &[0x80, 0xB0, 0x00, 0x04, 0x02, 0x10, 0x00, 0x00]);
    assert_eq!(s, 0x6100);
    assert_eq!(first.len(), 256);
    let mut all = first;
    let mut sws = Vec::new();
    loop {
        let (r, s) = tx(&mut c, &[0x00, 0xC0, 0x00, 0x00, 0x00]);
        assert!(r.len() <= 256);
        all.extend_from_slice(&r);
        sws.push(s);
        if s != 0x6100 {
            break;
        }
        assert!(sws.len() < 100, "GET RESPONSE does not end");
    }
    assert_eq!(sws.len(), 15);
    assert_eq!(*sws.last().unwrap(), 0x9000);
    assert_eq!(all.len(), 4096);
    assert_eq!(all, p);
    // Nothing left: GET RESPONSE now has no data to give.
    assert_eq!(sw(&mut c, &[0x00, 0xC0, 0x00, 0x00, 0x00]), 0x6985);
}

#[test]
fn read_memory_without_length_short_le_00_reads_256_bytes() {
    let (mut c, p) = card_with_pattern();
    let (r, s) = tx(&mut c, &[0x80, 0xB0, 0x00, 0x05, 0x00]);
    assert_eq!(s, 0x9000);
    assert_eq!(r, p[256..512]);
}

#[test]
fn extended_apdu_to_card_without_extended_length_returns_6700_and_atr_lacks_0x40() {
    let text = "role = \"main\"\npin = \"123456\"\n\
                extended_length = false\nrequire_secure_channel = false\n";
    let short_only = Profile::from_toml(text).unwrap();
    let mut c = Card::in_memory(&short_only);
    assert_eq!(sw(&mut c, SELECT), 0x9000);
    assert_eq!(verify(&mut c, PIN), 0x9000);
    // Extended case 2 and extended case 4.
    assert_eq!(sw(&mut c, &[0x80, 0xB0, 0x00, 0x00, 0x00, 0x10, 0x00]), 0x6700);
    assert_eq!(write_memory_ext(&mut c, 0, &[1, 2, 3]), 0x6700);
    assert_eq!(c.state().memory[..3], [0, 0, 0]);
    assert_eq!(get_data_value(&mut c, tag::FLAGS), [0x02]);

    let ext = card();
    let (atr_short, atr_ext) = (c.atr(), ext.atr());
    assert_eq!(atr_short.len(), atr_ext.len());
    let diff: Vec<usize> = (0..atr_ext.len()).filter(|&i| atr_short[i] != atr_ext[i]).collect();
    // The card capabilities byte (third byte of compact-TLV 73), and the TCK.
    let caps = atr_ext.iter().position(|&b| b == 0x73).unwrap() + 3;
    assert_eq!(diff, vec![caps, atr_ext.len() - 1]);
    assert_eq!(atr_ext[caps], 0xC0);
    assert_eq!(atr_short[caps], 0x80);
    assert_eq!(atr_ext[caps] ^ atr_short[caps], 0x40);
    for atr in [&atr_short, &atr_ext] {
        assert_eq!(atr[1..].iter().fold(0u8, |a, b| a ^ b), 0, "TCK");
    }
}

#[test]
fn atr_is_t1_with_card_capabilities_and_issuer_data() {
    let atr = card().atr();
    assert_eq!(
        atr,
        [0x3B, 0x8A, 0x80, 0x01, 0x80, 0x73, 0x00, 0x00, 0xC0, 0x54, b'C', b'V', b'L', b'T', 0x61]
    );
}

#[test]
fn get_data_df01_with_le_1_returns_6cxx_and_exact_le_returns_data() {
    let mut c = selected_card();
    let number = c.state().card_number.clone();
    let len = 3 + number.len();
    let (r, s) = tx(&mut c, &[0x00, 0xCA, 0xDF, 0x01, 0x01]);
    assert_eq!(r, Vec::<u8>::new());
    assert_eq!(s, 0x6C00 | len as u16);
    let (r, s) = tx(&mut c, &[0x00, 0xCA, 0xDF, 0x01, (s & 0xFF) as u8]);
    assert_eq!(s, 0x9000);
    let mut expected = vec![0xDF, 0x01, number.len() as u8];
    expected.extend_from_slice(number.as_bytes());
    assert_eq!(r, expected);
}

#[test]
fn select_without_le_returns_61xx_and_get_response_yields_fci() {
    let mut c = card();
    let (fci, _) = tx(&mut c, SELECT);
    let mut c = card();
    let no_le = &SELECT[..SELECT.len() - 1];
    let (r, s) = tx(&mut c, no_le);
    assert!(r.is_empty());
    assert_eq!(s, 0x6100 | fci.len() as u16);
    let (r, s) = tx(&mut c, &[0x00, 0xC0, 0x00, 0x00, (s & 0xFF) as u8]);
    assert_eq!(s, 0x9000);
    assert_eq!(r, fci);
}

// ---------------------------------------------------------------- command chaining

#[test]
fn chained_write_memory_of_600_bytes_in_3_short_apdus_writes_all() {
    let mut c = selected_card();
    assert_eq!(verify(&mut c, PIN), 0x9000);
    let p = pattern(600, 3);
    assert_eq!(sw(&mut c, &apdu([0x90, 0xD6, 0x00, 0x06], &p[..255], None)), 0x9000);
    assert_eq!(sw(&mut c, &apdu([0x90, 0xD6, 0x00, 0x06], &p[255..510], None)), 0x9000);
    // Nothing is written before the last command of the chain.
    assert!(c.state().memory[1536..2136].iter().all(|&b| b == 0));
    assert_eq!(sw(&mut c, &apdu([0x80, 0xD6, 0x00, 0x06], &p[510..], None)), 0x9000);
    assert_eq!(c.state().memory[1536..2136], p[..]);
    assert!(c.state().memory[2136..].iter().all(|&b| b == 0));
    assert!(c.state().memory[..1536].iter().all(|&b| b == 0));
}

#[test]
fn chain_interrupted_by_other_command_returns_6883_and_writes_nothing() {
    let mut c = selected_card();
    assert_eq!(verify(&mut c, PIN), 0x9000);
    let p = pattern(600, 5);
    assert_eq!(sw(&mut c, &apdu([0x90, 0xD6, 0x00, 0x04], &p[..255], None)), 0x9000);
    assert_eq!(sw(&mut c, &apdu([0x90, 0xD6, 0x00, 0x04], &p[255..510], None)), 0x9000);
    assert_eq!(get_data(&mut c, tag::CARD_NUMBER), (vec![], 0x6883));
    // The chain is gone: the last part alone writes only its own 90 bytes.
    assert!(c.state().memory.iter().all(|&b| b == 0));
    assert_eq!(sw(&mut c, &apdu([0x80, 0xD6, 0x00, 0x04], &p[510..], None)), 0x9000);
    assert_eq!(c.state().memory[1024..1114], p[510..]);
    assert!(c.state().memory[1114..].iter().all(|&b| b == 0));
    assert!(c.state().memory[..1024].iter().all(|&b| b == 0));
}

// ---------------------------------------------------------------- PIN

#[test]
fn wrong_pin_gives_63c2_63c1_63c0_then_6983_even_for_correct_pin() {
    let mut c = selected_card();
    assert_eq!(verify(&mut c, b"000000"), 0x63C2);
    assert_eq!(verify(&mut c, b"000000"), 0x63C1);
    assert_eq!(verify(&mut c, b"000000"), 0x63C0);
    assert_eq!(verify(&mut c, b"000000"), 0x6983);
    assert_eq!(verify(&mut c, PIN), 0x6983);
    assert_eq!(tries_left(&mut c), 0);
    assert_eq!(sw(&mut c, &[0x80, 0xB0, 0x00, 0x00, 0x10]), 0x6982);
}

/// CHANGE REFERENCE DATA: len(old) || old || new.
fn change_pin(card: &mut Card, old: &[u8], new: &[u8]) -> u16 {
    let mut data = vec![old.len() as u8];
    data.extend_from_slice(old);
    data.extend_from_slice(new);
    sw(card, &apdu([0x00, 0x24, 0x00, 0x81], &data, None))
}

#[test]
fn the_key_group_check_value_needs_the_pin() {
    let mut c = selected_card();
    assert_eq!(get_data(&mut c, tag::KEY_GROUP_KCV), (vec![], 0x6982));
    let (status, s) = get_data(&mut c, tag::CARD_STATUS);
    assert_eq!(s, 0x9000);
    let kcv_tag = tag::KEY_GROUP_KCV.to_be_bytes();
    assert!(
        !status.windows(2).any(|w| w == kcv_tag),
        "DF11 in the card status without the PIN"
    );
    assert_eq!(verify(&mut c, PIN), 0x9000);
    // The built-in main card's group is incomplete (element 1 only): not found.
    assert_eq!(get_data(&mut c, tag::KEY_GROUP_KCV).1, 0x6A88);
}

#[test]
fn a_symlink_planted_beside_the_state_file_receives_nothing() {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let dir = TempDir::new("symlink");
    let path = dir.card_path();
    let mut c = open(&path);
    assert_eq!(sw(&mut c, SELECT), 0x9000);
    // Links at the temporary names the card used to write through
    // (<state>.tmp-<pid>-<n>), and at a few more, all to a victim file.
    let victim = dir.0.join("victim");
    std::fs::write(&victim, b"victim").unwrap();
    let pid = std::process::id();
    for n in 0..64 {
        symlink(&victim, format!("{}.tmp-{pid}-{n}", path.display())).unwrap();
    }
    assert_eq!(verify(&mut c, PIN), 0x9000);
    assert_eq!(write_memory_ext(&mut c, 4, &[0x5A; 300]), 0x9000);
    assert_eq!(std::fs::read(&victim).unwrap(), b"victim");
    let meta = std::fs::symlink_metadata(&path).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(Store::peek(&path).unwrap().memory[1024..1324], [0x5A; 300]);
    // Nothing but the state file, its page file, journal and lock, the
    // directory's test domain and the planted links.
    let mut names: Vec<String> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            !(n.contains(".tmp-")
                && std::fs::symlink_metadata(dir.0.join(n))
                    .unwrap()
                    .file_type()
                    .is_symlink())
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec![
            "card.json",
            "card.json.journal0",
            "card.json.journal1",
            "card.json.lock",
            "card.json.pages",
            "test-domain.json",
            "victim"
        ]
    );
    for f in ["card.json.journal0", "card.json.journal1", "card.json.pages"] {
        let meta = std::fs::symlink_metadata(dir.0.join(f)).unwrap();
        assert!(meta.file_type().is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{f}");
    }
}

#[test]
fn no_pin_is_compared_while_the_counter_cannot_be_stored() {
    let dir = TempDir::new("pin-fault");
    let path = dir.card_path();
    let mut c = open(&path);
    assert_eq!(sw(&mut c, SELECT), 0x9000);
    c.set_fail_state_writes(true);
    // Ten wrong PINs, then the right one: every attempt is counted first,
    // the count cannot be stored, so nothing is compared and nothing is learnt.
    for i in 0..10 {
        assert_eq!(sw(&mut c, SELECT), 0x9000);
        assert_eq!(verify(&mut c, format!("00000{i}").as_bytes()), 0x6581, "wrong PIN {i}");
        assert_eq!(change_pin(&mut c, format!("00000{i}").as_bytes(), b"654321"), 0x6581);
    }
    assert_eq!(sw(&mut c, SELECT), 0x9000);
    assert_eq!(verify(&mut c, PIN), 0x6581, "the right PIN was compared");
    assert_eq!(change_pin(&mut c, PIN, b"654321"), 0x6581);
    assert!(!c.session().pin_verified);
    assert_eq!(sw(&mut c, &[0x80, 0xB0, 0x00, 0x04, 0x10]), 0x6982);
    // The card on disk kept its PIN and its counter.
    let on_disk = Store::peek(&path).unwrap();
    assert_eq!(on_disk.pin.tries_left, 3);
    assert!(on_disk.pin.matches(PIN));
    // Writes work again: a wrong PIN costs a try, the right one restores them.
    c.set_fail_state_writes(false);
    assert_eq!(sw(&mut c, SELECT), 0x9000);
    assert_eq!(verify(&mut c, b"000000"), 0x63C2);
    assert_eq!(Store::peek(&path).unwrap().pin.tries_left, 2);
    assert_eq!(verify(&mut c, PIN), 0x9000);
    assert_eq!(Store::peek(&path).unwrap().pin.tries_left, 3);
}

#[test]
fn a_pin_attempt_is_stored_before_the_pin_is_compared() {
    let dir = TempDir::new("pin-order");
    let path = dir.card_path();
    let mut c = open(&path);
    assert_eq!(sw(&mut c, SELECT), 0x9000);
    assert_eq!(verify(&mut c, b"000000"), 0x63C2);
    // The right PIN: counted (stored), compared, then the counter is restored.
    assert_eq!(sw(&mut c, SELECT), 0x9000);
    assert_eq!(verify(&mut c, PIN), 0x9000);
    assert_eq!(Store::peek(&path).unwrap().pin.tries_left, 3);
    // CHANGE REFERENCE DATA counts the same way.
    assert_eq!(change_pin(&mut c, b"000000", b"654321"), 0x63C2);
    assert_eq!(Store::peek(&path).unwrap().pin.tries_left, 2);
    assert_eq!(change_pin(&mut c, PIN, b"654321"), 0x9000);
    let on_disk = Store::peek(&path).unwrap();
    assert_eq!(on_disk.pin.tries_left, 3);
    assert!(on_disk.pin.matches(b"654321"));
}

#[test]
fn verify_without_data_reports_63cx_9000_or_6983() {
    let mut c = selected_card();
    let status = [0x00, 0x20, 0x00, 0x81];
    assert_eq!(sw(&mut c, &status), 0x63C3);
    assert_eq!(verify(&mut c, b"000000"), 0x63C2);
    assert_eq!(sw(&mut c, &status), 0x63C2);
    assert_eq!(verify(&mut c, PIN), 0x9000);
    assert_eq!(sw(&mut c, &status), 0x9000);
    // The status query itself costs no try.
    assert_eq!(tries_left(&mut c), 3);
    block_pin(&mut c);
    assert_eq!(sw(&mut c, &status), 0x6983);
}

#[test]
fn blocked_pin_survives_reopening_the_card_file() {
    let dir = TempDir::new("blocked");
    let path = dir.card_path();
    let (mut c, created) = Card::open(&path, &profile()).unwrap();
    assert!(created);
    assert_eq!(sw(&mut c, SELECT), 0x9000);
    block_pin(&mut c);
    drop(c);
    let (mut c, created) = Card::open(&path, &profile()).unwrap();
    assert!(!created);
    assert_eq!(c.state().pin.tries_left, 0);
    assert_eq!(sw(&mut c, SELECT), 0x9000);
    assert_eq!(verify(&mut c, PIN), 0x6983);
    assert_eq!(tries_left(&mut c), 0);
}

#[test]
fn wrong_pin_then_right_pin_resets_counter_to_3() {
    let mut c = selected_card();
    assert_eq!(verify(&mut c, b"000000"), 0x63C2);
    assert_eq!(verify(&mut c, b"111111"), 0x63C1);
    assert_eq!(tries_left(&mut c), 1);
    assert_eq!(verify(&mut c, PIN), 0x9000);
    assert_eq!(tries_left(&mut c), 3);
    assert_eq!(c.state().pin.tries_left, 3);
}

#[test]
fn read_memory_needs_pin_and_reset_or_power_off_forgets_it() {
    let mut c = selected_card();
    let read = [0x80, 0xB0, 0x00, 0x00, 0x10];
    assert_eq!(sw(&mut c, &read), 0x6982);
    assert_eq!(sw(&mut c, &[0x80, 0xD6, 0x00, 0x00, 0x01, 0xAA]), 0x6982);
    assert_eq!(verify(&mut c, PIN), 0x9000);
    assert_eq!(tx(&mut c, &read), (vec![0; 16], 0x9000));

    c.reset();
    assert_eq!(sw(&mut c, &read), 0x6985, "reset deselects the applet");
    assert_eq!(sw(&mut c, SELECT), 0x9000);
    assert_eq!(get_data_value(&mut c, tag::FLAGS), [0x01]);
    assert_eq!(sw(&mut c, &read), 0x6982);

    assert_eq!(verify(&mut c, PIN), 0x9000);
    c.power_off();
    assert_eq!(sw(&mut c, SELECT), 0x6985, "a powered-off card answers nothing else");
    c.power_on();
    assert_eq!(sw(&mut c, SELECT), 0x9000);
    assert_eq!(get_data_value(&mut c, tag::FLAGS), [0x01]);
    assert_eq!(sw(&mut c, &read), 0x6982);
}

// ---------------------------------------------------------------- unblock

#[test]
fn reset_retry_counter_without_admin_auth_returns_6982_and_pin_stays_blocked() {
    let mut c = selected_card();
    block_pin(&mut c);
    assert_eq!(sw(&mut c, &apdu([0x00, 0x2C, 0x02, 0x81], b"654321", None)), 0x6982);
    assert_eq!(sw(&mut c, &[0x00, 0x2C, 0x03, 0x81]), 0x6982);
    assert_eq!(tries_left(&mut c), 0);
    assert_eq!(verify(&mut c, b"654321"), 0x6983);
    assert_eq!(verify(&mut c, PIN), 0x6983);
}

/// The shared admin key is gone: its EXTERNAL AUTHENTICATE (CLA 00, INS 82,
/// P2 = the old key reference) is no instruction of the card any more, with
/// a challenge or without, and RESET RETRY COUNTER stays refused.
#[test]
fn the_former_admin_key_apdus_are_refused_and_the_pin_stays_blocked() {
    let mut c = selected_card();
    block_pin(&mut c);
    let before = c.state().clone();
    let cryptogram = [0x33u8; 32];
    assert_eq!(sw(&mut c, &apdu([0x00, 0x82, 0x00, 0x01], &cryptogram, None)), 0x6D00);
    assert_eq!(sw(&mut c, &[0x00, 0x84, 0x00, 0x00, 0x10]), 0x9000);
    assert_eq!(sw(&mut c, &apdu([0x00, 0x82, 0x00, 0x01], &cryptogram, None)), 0x6D00);
    assert_eq!(sw(&mut c, &apdu([0x00, 0x2C, 0x02, 0x81], b"654321", None)), 0x6982);
    assert_eq!(sw(&mut c, &[0x00, 0x2C, 0x03, 0x81]), 0x6982);
    assert!(!c.session().admin_authenticated);
    assert_eq!(c.state(), &before, "nothing changed");
    assert_eq!(verify(&mut c, PIN), 0x6983);
}

#[test]
fn get_challenge_returns_16_fresh_bytes() {
    let mut c = selected_card();
    let (a, s1) = tx(&mut c, &[0x00, 0x84, 0x00, 0x00, 0x10]);
    let (b, s2) = tx(&mut c, &[0x00, 0x84, 0x00, 0x00, 0x10]);
    assert_eq!((s1, s2), (0x9000, 0x9000));
    assert_eq!((a.len(), b.len()), (16, 16));
    assert_ne!(a, b);
}

// ---------------------------------------------------------------- persistence

#[test]
fn write_is_in_the_state_files_when_the_response_arrives_and_state_is_json() {
    let dir = TempDir::new("write");
    let path = dir.card_path();
    let mut c = open(&path);
    assert_eq!(sw(&mut c, SELECT), 0x9000);
    assert_eq!(verify(&mut c, PIN), 0x9000);
    let p = pattern(300, 9);
    assert_eq!(write_memory_ext(&mut c, 7, &p), 0x9000);
    // The card is still open: the file was committed before the answer.
    let on_disk = Store::peek(&path).unwrap();
    assert_eq!(on_disk.memory[1792..2092], p[..]);
    assert_eq!(&on_disk, c.state());
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(json["version"], 2);
    assert_eq!(json["card_number"], c.state().card_number.as_str());
    // The memory is in the page file beside it, not in the JSON.
    assert!(json.get("memory").is_none());
    assert_eq!(
        std::fs::read(applet_sim::state::pages_path(&path)).unwrap(),
        c.state().memory
    );
    // Wrong PIN attempts are committed too.
    assert_eq!(verify(&mut c, b"000000"), 0x63C2);
    assert_eq!(Store::peek(&path).unwrap().pin.tries_left, 2);
}

#[test]
fn reopening_the_card_file_gives_the_same_memory() {
    let dir = TempDir::new("reopen");
    let path = dir.card_path();
    let mut c = open(&path);
    assert_eq!(sw(&mut c, SELECT), 0x9000);
    assert_eq!(verify(&mut c, PIN), 0x9000);
    let p = pattern(4096, 11);
    assert_eq!(write_memory_ext(&mut c, 17, &p), 0x9000);
    let before = c.state().clone();
    drop(c);
    let (mut c, created) = Card::open(&path, &profile()).unwrap();
    assert!(!created);
    assert_eq!(*c.state(), before);
    assert_eq!(sw(&mut c, SELECT), 0x9000);
    assert_eq!(verify(&mut c, PIN), 0x9000);
    assert_eq!(tx(&mut c, &[0x80, 0xB0, 0x00, 0x11, 0x00, 0x10, 0x00]), (p, 0x9000));
}

#[test]
fn second_open_of_an_open_card_file_is_locked() {
    let dir = TempDir::new("lock");
    let path = dir.card_path();
    let first = open(&path);
    match Card::open(&path, &profile()) {
        Err(StoreError::Locked { path: p }) => assert_eq!(p, path),
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(first);
    assert!(Card::open(&path, &profile()).is_ok());
}

// ---------------------------------------------------------------- vpcd

#[test]
fn vpcd_handle_message_answers_get_atr_and_apdus_but_not_power_messages() {
    use applet_sim::vpcd::handle_message;
    let mut c = card();
    let mut out = Vec::new();
    assert!(handle_message(&mut c, &[0x04], &mut out));
    assert_eq!(out, c.atr());
    for ctrl in [0x01u8, 0x00, 0x02] {
        out.clear();
        assert!(!handle_message(&mut c, &[ctrl], &mut out), "control {ctrl:02X}");
        assert!(out.is_empty());
    }
    // After 00 (power off) and 02 (reset, which keeps power off) the card is off.
    assert!(handle_message(&mut c, SELECT, &mut out));
    assert_eq!(out, [0x69, 0x85]);
    assert!(!handle_message(&mut c, &[0x01], &mut out));
    assert!(handle_message(&mut c, SELECT, &mut out));
    assert_eq!(out[out.len() - 2..], [0x90, 0x00]);
    assert_eq!(out[0], 0x6F);
    assert!(handle_message(&mut c, &[0x00, 0xCA, 0xDF, 0x02, 0x00], &mut out));
    assert_eq!(out, [0xDF, 0x02, 0x04, b'm', b'a', b'i', b'n', 0x90, 0x00]);
    // Unknown control message and empty message: no answer.
    assert!(!handle_message(&mut c, &[0x7F], &mut out));
    assert!(!handle_message(&mut c, &[], &mut out));
}

fn accept_within(listener: &TcpListener, limit: Duration) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + limit;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                return s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "simulator did not connect");
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

fn send(s: &mut TcpStream, payload: &[u8]) {
    // As vpcd: the length and the payload in two writes.
    s.write_all(&(payload.len() as u16).to_be_bytes()).unwrap();
    s.write_all(payload).unwrap();
}

fn recv(s: &mut TcpStream) -> Vec<u8> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).unwrap();
    buf
}

#[test]
fn vpcd_run_over_tcp_answers_framed_messages_and_reconnects() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut c = card();
    let atr = c.atr();
    let number = c.state().card_number.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let (done_tx, done_rx) = mpsc::channel();
    let thread = {
        let stop = stop.clone();
        let log = log.clone();
        std::thread::spawn(move || {
            applet_sim::vpcd::run(&mut c, &addr, stop, |m| log.lock().unwrap().push(m.into()));
            done_tx.send(()).unwrap();
        })
    };

    let mut expected_number = vec![0xDF, 0x01, number.len() as u8];
    expected_number.extend_from_slice(number.as_bytes());
    expected_number.extend_from_slice(&[0x90, 0x00]);

    let session = |s: &mut TcpStream| {
        send(s, &[0x04]);
        assert_eq!(recv(s), atr);
        send(s, &[0x01]); // power on: no answer
        send(s, SELECT);
        let r = recv(s);
        assert_eq!(r[0], 0x6F);
        assert_eq!(r[r.len() - 2..], [0x90, 0x00]);
        send(s, &[0x00, 0xCA, 0xDF, 0x01, 0x00]);
        assert_eq!(recv(s), expected_number);
    };

    // A new card session first shows vpcd an empty slot: its first presence
    // poll is answered by closing the connection, and the card comes back on
    // the next connection.
    let mut s0 = accept_within(&listener, Duration::from_secs(2));
    send(&mut s0, &[0x04]);
    let mut rest = Vec::new();
    s0.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert_eq!(s0.read_to_end(&mut rest).unwrap(), 0, "answered {rest:02x?}");

    let mut s1 = accept_within(&listener, Duration::from_secs(2));
    session(&mut s1);
    drop(s1);

    // The simulator comes back on its own, again through an empty slot; the
    // card was powered off meanwhile. A connection that does not start with
    // a presence poll is served at once.
    let mut s2 = accept_within(&listener, Duration::from_secs(2));
    send(&mut s2, &[0x00, 0xCA, 0xDF, 0x01, 0x00]);
    assert_eq!(recv(&mut s2), [0x69, 0x85]);
    session(&mut s2);

    stop.store(true, Ordering::Relaxed);
    drop(s2);
    done_rx
        .recv_timeout(Duration::from_secs(2))
        .expect("vpcd::run did not stop");
    thread.join().unwrap();
    let log = log.lock().unwrap();
    assert_eq!(
        log.iter().filter(|m| m.starts_with("connected to vpcd")).count(),
        3,
        "{log:?}"
    );
}
