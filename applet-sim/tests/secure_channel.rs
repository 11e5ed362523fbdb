//! The card side of SCP11: certificate store, handshakes, secure messaging in
//! the ISO layer, and what happens to a session on any secure messaging error.
//! The client side is cardvault_proto::scp11, as the terminal will use it.

use applet_sim::{Card, Profile};
use cardvault_proto::apdu::CommandApdu;
use cardvault_proto::cert::{certificate_store_query, ecka_public_key, split_certificates, verify_chain};
use cardvault_proto::crypto::KeyPair;
use cardvault_proto::scp11::{self, ClientChannel, ClientHandshake};
use openssl::x509::X509;

const SELECT: &[u8] = &[0x00, 0xA4, 0x04, 0x00, 0x06, 0xF0, 0x43, 0x56, 0x4C, 0x54, 0x01, 0x00];
const PIN: &[u8] = b"123456";

/// Send one APDU and fetch the rest of a long answer with plain GET RESPONSE.
fn tx(card: &mut Card, raw: &[u8]) -> (Vec<u8>, u16) {
    let mut data = Vec::new();
    let mut r = card.transmit(raw);
    loop {
        let (d, s) = r.split_at(r.len() - 2);
        data.extend_from_slice(d);
        if s[0] != 0x61 {
            return (data, u16::from_be_bytes([s[0], s[1]]));
        }
        r = card.transmit(&[0x00, 0xC0, 0x00, 0x00, s[1]]);
    }
}

fn card_with(profile: &Profile) -> Card {
    let mut card = Card::in_memory(profile);
    assert_eq!(tx(&mut card, SELECT).1, 0x9000);
    card
}

fn main_card() -> Card {
    card_with(&Profile::load("main").unwrap())
}

fn test_root() -> X509 {
    X509::from_pem(applet_sim::test_issuer::ROOT_PEM).unwrap()
}

/// GET DATA BF21, the chain checked against the test issuer root: PK.SD.ECKA.
fn card_key(card: &mut Card) -> Vec<u8> {
    let mut q = CommandApdu::new(
        0x00,
        0xCA,
        0xBF,
        0x21,
        certificate_store_query(scp11::KID_SCP11B, scp11::KVN),
    );
    q.ne = 256;
    let (der, sw) = tx(card, &q.to_bytes());
    assert_eq!(sw, 0x9000);
    let chain = split_certificates(&der).unwrap();
    ecka_public_key(&verify_chain(&[test_root()], &chain).unwrap()).unwrap()
}

fn open_scp11b(card: &mut Card) -> ClientChannel {
    let pk = card_key_under(card, &[test_root(), factory_ca()]);
    let hs = ClientHandshake::scp11b(scp11::KVN, &pk).unwrap();
    let (answer, sw) = tx(card, &hs.command().to_bytes());
    assert_eq!(sw, 0x9000);
    hs.finish(&answer).unwrap()
}

/// A protected command: wrap, send, unwrap the whole answer.
fn stx(card: &mut Card, ch: &mut ClientChannel, header: [u8; 4], data: &[u8]) -> (Vec<u8>, u16) {
    let w = ch.wrap(header[0], header[1], header[2], header[3], data).unwrap();
    let (answer, sw) = tx(card, &w.to_bytes());
    (ch.unwrap(&answer, sw).expect("answer unwraps").to_vec(), sw)
}

fn pin_verified(card: &mut Card) -> bool {
    let (d, sw) = tx(card, &[0x00, 0xCA, 0xDF, 0x08, 0x00]);
    assert_eq!(sw, 0x9000);
    d[3] & 2 != 0
}

#[test]
fn certificate_store_returns_the_card_certificate_from_the_test_issuer() {
    let mut card = main_card();
    let number = card.state().card_number.clone();
    let (der, sw) = tx(&mut card, &[0x00, 0xCA, 0xBF, 0x21, 0x00]);
    assert_eq!(sw, 0x9000);
    let cert = X509::from_der(&der).unwrap();
    let cn = cert
        .subject_name()
        .entries_by_nid(openssl::nid::Nid::COMMONNAME)
        .next()
        .unwrap();
    assert_eq!(cn.data().as_slice(), number.as_bytes());
    let key = KeyPair::from_private(&card.state().ecka_private).unwrap();
    assert_eq!(card_key(&mut card), key.public_bytes());
    // Another key reference is not there.
    let q = CommandApdu::new(0x00, 0xCA, 0xBF, 0x21, certificate_store_query(0x15, 1));
    assert_eq!(tx(&mut card, &q.to_bytes()).1, 0x6A88);
}

#[test]
fn scp11b_session_carries_verify_get_data_and_long_answers() {
    let mut card = main_card();
    let mut ch = open_scp11b(&mut card);
    assert_eq!(stx(&mut card, &mut ch, [0x00, 0x20, 0x00, 0x81], PIN), (vec![], 0x9000));
    assert!(pin_verified(&mut card), "a plain public read does not end the session");
    let (status, sw) = stx(&mut card, &mut ch, [0x00, 0xCA, 0x00, 0xE1], &[]);
    assert_eq!(sw, 0x9000);
    assert_eq!(&status[..1], &[0xE1]);
    // A long answer travels wrapped, fetched with plain GET RESPONSE.
    let (mem, sw) = stx(&mut card, &mut ch, [0x80, 0xB0, 0x00, 0x04], &[0x07, 0xD0]);
    assert_eq!((mem.len(), sw), (2000, 0x9000));
    // A long command, with short chaining on the wire.
    let page = vec![0x5A; 300];
    let w = ch.wrap(0x80, 0xD6, 0x00, 0x04, &page).unwrap();
    assert!(w.data.len() > 255);
    let (first, rest) = w.data.split_at(200);
    let mut part = vec![w.cla | 0x10, w.ins, w.p1, w.p2, first.len() as u8];
    part.extend_from_slice(first);
    assert_eq!(tx(&mut card, &part).1, 0x9000);
    let mut last = vec![w.cla, w.ins, w.p1, w.p2, rest.len() as u8];
    last.extend_from_slice(rest);
    let (answer, sw) = tx(&mut card, &last);
    assert_eq!(sw, 0x9000);
    ch.unwrap(&answer, sw).unwrap();
    let (back, _) = stx(&mut card, &mut ch, [0x80, 0xB0, 0x00, 0x04], &[0x01, 0x2C]);
    assert_eq!(back, page);
}

#[test]
fn warnings_carry_an_r_mac_and_errors_come_bare() {
    let mut card = main_card();
    let mut ch = open_scp11b(&mut card);
    let w = ch.wrap(0x00, 0x20, 0x00, 0x81, b"999999").unwrap();
    let (answer, sw) = tx(&mut card, &w.to_bytes());
    assert_eq!((answer.len(), sw), (8, 0x63C2));
    assert!(ch.unwrap(&answer, sw).unwrap().is_empty());
    let w = ch.wrap(0x00, 0xCA, 0xDF, 0x7F, &[]).unwrap();
    let (answer, sw) = tx(&mut card, &w.to_bytes());
    assert_eq!((answer.len(), sw), (0, 0x6A88));
    ch.unwrap(&answer, sw).unwrap();
    // The session goes on.
    assert_eq!(stx(&mut card, &mut ch, [0x00, 0x20, 0x00, 0x81], PIN).1, 0x9000);
}

#[test]
fn wrong_mac_ends_the_session_with_6988_and_keeps_nothing() {
    let mut card = main_card();
    let mut ch = open_scp11b(&mut card);
    assert_eq!(stx(&mut card, &mut ch, [0x00, 0x20, 0x00, 0x81], PIN).1, 0x9000);
    let mut w = ch.wrap(0x80, 0xB0, 0x00, 0x00, &[0x00, 0x10]).unwrap();
    let n = w.data.len();
    w.data[n - 1] ^= 0x01;
    assert_eq!(tx(&mut card, &w.to_bytes()), (vec![], 0x6988));
    assert!(!pin_verified(&mut card), "the PIN verification went with the session");
    // Protected commands are refused until a new handshake.
    let w = ch.wrap(0x00, 0xCA, 0x00, 0xE1, &[]).unwrap();
    assert_eq!(tx(&mut card, &w.to_bytes()).1, 0x6982);
    let mut ch = open_scp11b(&mut card);
    assert_eq!(stx(&mut card, &mut ch, [0x00, 0x20, 0x00, 0x81], PIN).1, 0x9000);
}

#[test]
fn replayed_command_ends_the_session() {
    let mut card = main_card();
    let mut ch = open_scp11b(&mut card);
    let w = ch.wrap(0x00, 0x20, 0x00, 0x81, PIN).unwrap();
    let (answer, sw) = tx(&mut card, &w.to_bytes());
    ch.unwrap(&answer, sw).unwrap();
    assert_eq!(tx(&mut card, &w.to_bytes()).1, 0x6988);
    assert!(!pin_verified(&mut card));
}

#[test]
fn plain_sensitive_command_mid_session_ends_it_with_6987() {
    let mut card = main_card();
    let mut ch = open_scp11b(&mut card);
    assert_eq!(stx(&mut card, &mut ch, [0x00, 0x20, 0x00, 0x81], PIN).1, 0x9000);
    assert_eq!(
        tx(
            &mut card,
            &[0x00, 0x20, 0x00, 0x81, 0x06, b'1', b'2', b'3', b'4', b'5', b'6']
        )
        .1,
        0x6987
    );
    assert!(!pin_verified(&mut card));
    let w = ch.wrap(0x00, 0xCA, 0x00, 0xE1, &[]).unwrap();
    assert_eq!(tx(&mut card, &w.to_bytes()).1, 0x6982);
}

#[test]
fn select_closes_the_session() {
    let mut card = main_card();
    let mut ch = open_scp11b(&mut card);
    assert_eq!(tx(&mut card, SELECT).1, 0x9000);
    let w = ch.wrap(0x00, 0xCA, 0x00, 0xE1, &[]).unwrap();
    assert_eq!(tx(&mut card, &w.to_bytes()).1, 0x6982);
}

#[test]
fn require_secure_channel_refuses_plain_sensitive_commands_with_6982() {
    // The default of every built-in profile.
    for name in ["main", "backup", "replacement", "blank"] {
        assert!(Profile::load(name).unwrap().require_secure_channel, "{name}");
    }
    let mut card = main_card();
    let verify = [0x00, 0x20, 0x00, 0x81, 0x06, b'1', b'2', b'3', b'4', b'5', b'6'];
    assert_eq!(tx(&mut card, &verify).1, 0x6982);
    assert_eq!(card.state().pin.tries_left, 3, "refused before the PIN is looked at");
    // Public reads stay plain.
    assert_eq!(tx(&mut card, &[0x00, 0xCA, 0x00, 0xE1, 0x00]).1, 0x9000);
    let mut ch = open_scp11b(&mut card);
    assert_eq!(stx(&mut card, &mut ch, [0x00, 0x20, 0x00, 0x81], PIN).1, 0x9000);

    // A profile that turns it off: plain VERIFY works as before.
    let mut p = Profile::load("main").unwrap();
    p.require_secure_channel = false;
    let mut card = card_with(&p);
    assert_eq!(tx(&mut card, &verify).1, 0x9000);
}

/// Every sensitive command, sent plain to a default card (outside a session,
/// PIN verified or not), gets 6982 and changes nothing.
#[test]
fn every_sensitive_command_sent_plain_gets_6982_and_changes_nothing() {
    use cardvault_proto::ins;
    let commands: &[(u8, u8, u8, u8, &[u8])] = &[
        (0x00, ins::VERIFY, 0x00, 0x81, b"123456"),
        (0x00, ins::CHANGE_REFERENCE_DATA, 0x00, 0x81, b"\x06123456654321"),
        (0x00, ins::RESET_RETRY_COUNTER, 0x03, 0x81, b""),
        (0x00, ins::PUT_DATA, 0xDF, 0x20, b"M-1"),
        (0x80, ins::WRITE_KEY_ELEMENT, 0x02, 0x00, &[7u8; 32]),
        (0x80, ins::TAKE_OUT_KEY, 0x00, 0x00, b"0000000000000000"),
        (0x80, ins::IMPORT_KEY, 0x00, 0x00, &[1u8; 64]),
        (0x80, ins::UNWRAP_FILE_KEY, 0x00, 0x00, &[2u8; 96]),
        (0x80, ins::REWRAP_TO_PEER, 0x00, 0x00, &[2u8; 96]),
        (0x80, ins::SET_MAIN_KEY, 0x00, 0x00, &[3u8; 96]),
        (0x80, ins::GET_TRANSPORT_KEY, 0x00, 0x00, b""),
        (0x80, ins::CREDIT, 0x01, 0x00, &[0, 0, 0, 100]),
        (0x80, ins::DEBIT, 0x01, 0x00, &[0, 0, 0, 1]),
        (0x80, ins::BACKUP, 0x00, 0x00, &[0u8; 10]),
        (0x80, ins::BACKUP_DATA, 0x00, 0x00, b""),
        (0x80, ins::BACKUP_COMPLETE, 0x00, 0x00, &[0, 0, 0, 1]),
        (0x80, ins::GET_RESTORE_CHALLENGE, 0x00, 0x00, b""),
        (0x80, ins::RESTORE, 0x00, 0x00, &[0u8; 40]),
        (0x80, ins::RESTORE_DATA, 0x00, 0x00, &[0u8; 40]),
        (0x80, ins::RESTORE_COMPLETE, 0x00, 0x00, b""),
        (0x80, ins::LOAD_DOMAIN_KEY, 0x00, 0x00, &[5u8; 60]),
    ];
    for (cla, ins_byte, _, _, _) in commands {
        assert!(cardvault_proto::command_is_sensitive(*cla, *ins_byte), "{ins_byte:02X}");
    }
    for pin_first in [false, true] {
        let mut card = main_card();
        if pin_first {
            let mut ch = open_scp11b(&mut card);
            assert_eq!(stx(&mut card, &mut ch, [0x00, 0x20, 0x00, 0x81], PIN).1, 0x9000);
            // A plain sensitive command in the session ends it (6987)...
            let c = CommandApdu::new(0x00, ins::VERIFY, 0x00, 0x81, PIN.to_vec());
            assert_eq!(tx(&mut card, &c.to_bytes()).1, 0x6987);
            // ...and the protected ones that follow are refused.
            let w = ch.wrap(0x00, 0xCA, 0x00, 0xE1, &[]).unwrap();
            assert_eq!(tx(&mut card, &w.to_bytes()).1, 0x6982);
        }
        let before = card.state().clone();
        for (cla, ins_byte, p1, p2, data) in commands {
            let c = CommandApdu::new(*cla, *ins_byte, *p1, *p2, data.to_vec());
            assert_eq!(
                tx(&mut card, &c.to_bytes()).1,
                0x6982,
                "plain {cla:02X} {ins_byte:02X} (PIN verified before: {pin_first})"
            );
        }
        assert_eq!(card.state(), &before);
    }
}

#[test]
fn protected_command_without_a_session_gets_6982() {
    let mut card = main_card();
    assert_eq!(
        tx(&mut card, &[0x84, 0xCA, 0x00, 0xE1, 0x08, 1, 2, 3, 4, 5, 6, 7, 8]).1,
        0x6982
    );
}

#[test]
fn handshake_refusals() {
    let mut card = main_card();
    let pk = card_key(&mut card);
    let hs = ClientHandshake::scp11b(scp11::KVN, &pk).unwrap();
    let good = hs.command();
    // Unknown key version, wrong KID for the instruction, garbage data.
    for (p1, p2, data, want) in [
        (0x05, 0x13, good.data.clone(), 0x6A88),
        (0x01, 0x11, good.data.clone(), 0x6A88),
        (0x01, 0x13, vec![0xA6, 0x00], 0x6A80),
        (0x01, 0x13, good.data[..40].to_vec(), 0x6A80),
    ] {
        let c = CommandApdu::new(0x80, 0x88, p1, p2, data);
        assert_eq!(tx(&mut card, &c.to_bytes()).1, want, "P1 {p1:02x} P2 {p2:02x}");
    }
    // SCP11a without an OCE certificate first.
    let oce = KeyPair::generate().unwrap();
    let hs_a = ClientHandshake::scp11a(scp11::KVN, &pk, oce).unwrap();
    assert_eq!(tx(&mut card, &hs_a.command().to_bytes()).1, 0x6985);
    // A card without an SCP11 key.
    let mut p = Profile::load("main").unwrap();
    p.test_issuer_certificate = false;
    let mut bare = card_with(&p);
    assert_eq!(tx(&mut bare, &good.to_bytes()).1, 0x6A88);
    assert_eq!(tx(&mut bare, &[0x00, 0xCA, 0xBF, 0x21, 0x00]).1, 0x6A88);
}

#[test]
fn scp11a_with_the_test_operator_certificate() {
    let mut card = main_card();
    let pk = card_key(&mut card);
    let oce_cert = X509::from_pem(applet_sim::test_issuer::OCE_PEM).unwrap();
    let oce_key = KeyPair::from_pem(applet_sim::test_issuer::OCE_KEY_PEM).unwrap();
    for c in scp11::oce_certificate_commands(scp11::KVN, scp11::KID_OCE, &[oce_cert.to_der().unwrap()]) {
        assert_eq!(tx(&mut card, &c.to_bytes()).1, 0x9000);
    }
    let hs = ClientHandshake::scp11a(scp11::KVN, &pk, oce_key).unwrap();
    let (answer, sw) = tx(&mut card, &hs.command().to_bytes());
    assert_eq!(sw, 0x9000);
    let mut ch = hs.finish(&answer).unwrap();
    // The SCP11a session is the issuer's: an admin command works without
    // the admin key (RESET RETRY COUNTER, counter only).
    assert_eq!(stx(&mut card, &mut ch, [0x00, 0x2C, 0x03, 0x81], &[]).1, 0x9000);
    assert_eq!(stx(&mut card, &mut ch, [0x00, 0x20, 0x00, 0x81], PIN).1, 0x9000);
    assert!(pin_verified(&mut card));
}

#[test]
fn an_scp11b_session_is_no_issuer_session() {
    let mut card = main_card();
    let mut ch = open_scp11b(&mut card);
    assert_eq!(stx(&mut card, &mut ch, [0x00, 0x2C, 0x03, 0x81], &[]).1, 0x6982);
}

#[test]
fn scp11a_refuses_an_operator_from_another_issuer() {
    let mut card = main_card();
    let other_key = KeyPair::generate().unwrap();
    let other_root =
        cardvault_proto::cert::issue_root(&other_key, "other", "20250101000000Z", "20500101000000Z").unwrap();
    let oce = KeyPair::generate().unwrap();
    let cert =
        cardvault_proto::cert::issue_oce_certificate(&other_key, &other_root, &oce.public_bytes(), "op", 30).unwrap();
    let cmds = scp11::oce_certificate_commands(
        scp11::KVN,
        scp11::KID_OCE,
        &[other_root.to_der().unwrap(), cert.to_der().unwrap()],
    );
    assert_eq!(tx(&mut card, &cmds[0].to_bytes()).1, 0x9000);
    assert_eq!(tx(&mut card, &cmds[1].to_bytes()).1, 0x6982);
    let pk = card_key(&mut card);
    let hs = ClientHandshake::scp11a(scp11::KVN, &pk, oce).unwrap();
    assert_eq!(tx(&mut card, &hs.command().to_bytes()).1, 0x6985);
}

#[test]
fn card_state_keeps_key_certificate_and_anchor_across_reopen() {
    let dir = std::env::temp_dir().join(format!("cv-sc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("c.card");
    let p = Profile::load("backup").unwrap();
    let before = {
        let (card, created) = Card::open(&path, &p).unwrap();
        assert!(created);
        (card.state().ecka_private.clone(), card.state().certificate.clone())
    };
    let (mut card, created) = Card::open(&path, &p).unwrap();
    assert!(!created);
    assert_eq!(
        (card.state().ecka_private.clone(), card.state().certificate.clone()),
        before
    );
    assert_eq!(card.state().trust_anchor, test_root().to_der().unwrap());
    assert_eq!(tx(&mut card, SELECT).1, 0x9000);
    let mut ch = open_scp11b(&mut card);
    assert_eq!(stx(&mut card, &mut ch, [0x00, 0xCA, 0x00, 0xE1], &[]).1, 0x9000);
    drop(card);
    let _ = std::fs::remove_dir_all(&dir);
}

/// SCP11a with the test issuer's operator: the issuer session.
fn open_scp11a(card: &mut Card) -> ClientChannel {
    let pk = card_key_under(card, &[test_root(), factory_ca()]);
    let oce_cert = X509::from_pem(applet_sim::test_issuer::OCE_PEM).unwrap();
    let oce_key = KeyPair::from_pem(applet_sim::test_issuer::OCE_KEY_PEM).unwrap();
    for c in scp11::oce_certificate_commands(scp11::KVN, scp11::KID_OCE, &[oce_cert.to_der().unwrap()]) {
        assert_eq!(tx(card, &c.to_bytes()).1, 0x9000);
    }
    let hs = ClientHandshake::scp11a(scp11::KVN, &pk, oce_key).unwrap();
    let (answer, sw) = tx(card, &hs.command().to_bytes());
    assert_eq!(sw, 0x9000);
    hs.finish(&answer).unwrap()
}

/// LOAD DOMAIN KEY: a blank card has no domain key until the issuer loads
/// one, in an SCP11a session only, checked against its check value, once.
#[test]
fn the_domain_key_enters_a_blank_card_once_and_only_in_the_issuer_session() {
    use cardvault_proto::domain::{check_value, DomainKeyLoad, DomainRef};
    let key = zeroize::Zeroizing::new([0x3C; 32]);
    let load = DomainKeyLoad {
        domain: DomainRef {
            id: [0xD0; 16],
            generation: 2,
        },
        check_value: check_value(&key[..]).unwrap(),
        key,
    };
    let data = load.encode();
    let header = [0x80, 0xEE, 0x00, 0x00];
    let mut card = card_with(&Profile::load("blank").unwrap());
    assert!(card.state().common_key.is_empty());
    assert_eq!(
        tx(&mut card, &[0x00, 0xCA, 0xDF, 0x32, 0x00]).1,
        0x6A88,
        "no domain yet"
    );
    let before = card.state().clone();
    // Plain, and in the holder's SCP11b session: refused, nothing kept.
    let plain = CommandApdu::new(0x80, 0xEE, 0, 0, data.to_vec());
    assert_eq!(tx(&mut card, &plain.to_bytes()).1, 0x6982);
    let mut b = open_scp11b(&mut card);
    assert_eq!(stx(&mut card, &mut b, header, &data).1, 0x6982);
    assert_eq!(card.state(), &before);
    // In the issuer's session: a key that is not its check value's is refused.
    assert_eq!(tx(&mut card, SELECT).1, 0x9000);
    let mut a = open_scp11a(&mut card);
    let mut wrong = data.to_vec();
    wrong[20] ^= 1;
    assert_eq!(stx(&mut card, &mut a, header, &wrong).1, 0x6A80);
    assert_eq!(card.state().common_key, before.common_key);
    assert_eq!(stx(&mut card, &mut a, header, &data).1, 0x9000);
    assert_eq!(card.state().common_key, vec![0x3C; 32]);
    assert_eq!(card.state().domain(), load.domain);
    let (d, sw) = stx(&mut card, &mut a, [0x00, 0xCA, 0xDF, 0x32], &[]);
    assert_eq!(sw, 0x9000);
    assert_eq!(&d[3..], &load.domain.encode()[..], "GET DATA DF32: id || generation");
    // Once: the same key again succeeds and changes nothing (a retried
    // issuance); another domain's key, or another generation, is refused.
    let loaded = card.state().clone();
    assert_eq!(stx(&mut card, &mut a, header, &data).1, 0x9000);
    assert_eq!(card.state(), &loaded);
    let mut other = data.to_vec();
    other[0] ^= 1;
    assert_eq!(stx(&mut card, &mut a, header, &other).1, 0x6985);
    let mut next_generation = data.to_vec();
    next_generation[19] = 3;
    assert_eq!(stx(&mut card, &mut a, header, &next_generation).1, 0x6985);
    assert_eq!(card.state(), &loaded);
    // An issued card (pre-issued test card, its directory's test domain) takes none.
    let mut issued = main_card();
    let had = issued.state().domain();
    assert!(had.is_some());
    let mut a = open_scp11a(&mut issued);
    assert_eq!(stx(&mut issued, &mut a, header, &data).1, 0x6985);
    assert_eq!(issued.state().domain(), had);
}

fn factory_ca() -> X509 {
    X509::from_pem(applet_sim::test_issuer::FACTORY_CA_PEM).unwrap()
}

/// GET DATA BF21, the chain checked under `roots`: PK.SD.ECKA.
fn card_key_under(card: &mut Card, roots: &[X509]) -> Vec<u8> {
    let (der, sw) = tx(card, &[0x00, 0xCA, 0xBF, 0x21, 0x00]);
    assert_eq!(sw, 0x9000);
    let chain = split_certificates(&der).unwrap();
    ecka_public_key(&verify_chain(roots, &chain).unwrap()).unwrap()
}

/// A registration certificate over `public` for the card, signed by `key` under `root`.
fn registration(key: &KeyPair, root: &X509, public: &[u8], number: &str, role: &str) -> Vec<u8> {
    let subject = cardvault_proto::cert::CardSubject {
        card_number: number.into(),
        role: role.into(),
        member_number: None,
    };
    cardvault_proto::cert::issue_registration_certificate(key, root, public, &subject, Some("profile=backup"), 30)
        .unwrap()
        .to_der()
        .unwrap()
}

/// The factory step: a blank card carries a factory certificate (role
/// blank, under the test factory CA, not the issuer root) and the test
/// issuer root as trust anchor.
#[test]
fn a_blank_card_leaves_the_factory_with_a_factory_certificate_and_the_issuer_root() {
    let mut card = card_with(&Profile::load("blank").unwrap());
    let (der, sw) = tx(&mut card, &[0x00, 0xCA, 0xBF, 0x21, 0x00]);
    assert_eq!(sw, 0x9000);
    let cert = X509::from_der(&der).unwrap();
    assert_eq!(cardvault_proto::cert::card_subject(&cert).unwrap().role, "blank");
    assert!(verify_chain(&[factory_ca()], std::slice::from_ref(&cert)).is_ok());
    assert!(verify_chain(&[test_root()], std::slice::from_ref(&cert)).is_err());
    assert_eq!(card.state().trust_anchor, test_root().to_der().unwrap());
}

/// Issuance under SCP11a: GENERATE ECKA KEY, then PUT DATA BF21. A
/// certificate from another issuer (6982), for another key or card (6A80),
/// or before PUT DATA set a role, changes nothing; END PERSONALIZATION waits
/// for the registration certificate; the right one replaces key and
/// certificate together.
#[test]
fn issuance_stores_only_a_registration_certificate_under_the_installed_root() {
    let mut card = card_with(&Profile::load("blank").unwrap());
    let number = card.state().card_number.clone();
    let mut ch = open_scp11a(&mut card);
    let (public, sw) = stx(&mut card, &mut ch, [0x80, 0xEF, 0x00, 0x00], &[]);
    assert_eq!(sw, 0x9000);
    assert_eq!(public.len(), 65);
    let root_key = KeyPair::from_pem(applet_sim::test_issuer::ROOT_KEY_PEM).unwrap();
    // Role first, key element 1, then the certificate.
    assert_eq!(stx(&mut card, &mut ch, [0x00, 0xDA, 0xDF, 0x02], b"backup").1, 0x9000);
    assert_eq!(stx(&mut card, &mut ch, [0x80, 0xE1, 0x01, 0x00], &[7; 32]).1, 0x9000);
    assert_eq!(
        stx(&mut card, &mut ch, [0x80, 0xE0, 0x00, 0x00], &[]).1,
        0x6985,
        "factory certificate still"
    );
    let before = card.state().clone();

    let other_key = KeyPair::generate().unwrap();
    let other_root =
        cardvault_proto::cert::issue_root(&other_key, "other", "20250101000000Z", "20500101000000Z").unwrap();
    let foreign = registration(&other_key, &other_root, &public, &number, "backup");
    assert_eq!(stx(&mut card, &mut ch, [0x00, 0xDA, 0xBF, 0x21], &foreign).1, 0x6982);
    let not_its_key = registration(
        &root_key,
        &test_root(),
        &KeyPair::generate().unwrap().public_bytes(),
        &number,
        "backup",
    );
    assert_eq!(
        stx(&mut card, &mut ch, [0x00, 0xDA, 0xBF, 0x21], &not_its_key).1,
        0x6A80
    );
    let other_card = registration(&root_key, &test_root(), &public, "1111222233334444", "backup");
    assert_eq!(stx(&mut card, &mut ch, [0x00, 0xDA, 0xBF, 0x21], &other_card).1, 0x6A80);
    let other_role = registration(&root_key, &test_root(), &public, &number, "main");
    assert_eq!(stx(&mut card, &mut ch, [0x00, 0xDA, 0xBF, 0x21], &other_role).1, 0x6A80);
    assert_eq!(card.state(), &before, "refused certificates change nothing");

    let good = registration(&root_key, &test_root(), &public, &number, "backup");
    assert_eq!(stx(&mut card, &mut ch, [0x00, 0xDA, 0xBF, 0x21], &good).1, 0x9000);
    assert_eq!(card.state().certificate, good);
    assert_eq!(
        KeyPair::from_private(&card.state().ecka_private)
            .unwrap()
            .public_bytes(),
        public
    );
    assert_eq!(
        stx(&mut card, &mut ch, [0x80, 0xE0, 0x00, 0x00], &[]).1,
        0x6985,
        "no signing key yet"
    );
    certify_signing_key(&mut card, &mut ch, &number, "backup");
    assert_eq!(stx(&mut card, &mut ch, [0x80, 0xE0, 0x00, 0x00], &[]).1, 0x9000);
    // Issued: no more keys, certificates or roots.
    assert_eq!(stx(&mut card, &mut ch, [0x80, 0xEF, 0x00, 0x00], &[]).1, 0x6985);
    assert_eq!(stx(&mut card, &mut ch, [0x80, 0x48, 0x00, 0x00], &[]).1, 0x6985);
    let root_der = test_root().to_der().unwrap();
    assert_eq!(stx(&mut card, &mut ch, [0x00, 0xDA, 0xBF, 0x22], &root_der).1, 0x6985);
    assert_eq!(stx(&mut card, &mut ch, [0x00, 0xDA, 0xBF, 0x23], &root_der).1, 0x6985);
    // The new key opens sessions under the issuer root.
    assert_eq!(tx(&mut card, SELECT).1, 0x9000);
    assert_eq!(card_key_under(&mut card, &[test_root()]), public);
}

/// A card signing key certificate over `public`, signed by `key` under `root`.
fn signing_certificate(key: &KeyPair, root: &X509, public: &[u8], number: &str, role: &str) -> Vec<u8> {
    let subject = cardvault_proto::cert::CardSubject {
        card_number: number.into(),
        role: role.into(),
        member_number: None,
    };
    cardvault_proto::storing::issue_card_signing_certificate(key, root, public, &subject, 30)
        .unwrap()
        .to_der()
        .unwrap()
}

/// GENERATE SIGNING KEY and PUT DATA DF35 under the test root, in an open
/// issuer session.
fn certify_signing_key(card: &mut Card, ch: &mut ClientChannel, number: &str, role: &str) -> Vec<u8> {
    let (public, sw) = stx(card, ch, [0x80, 0x48, 0x00, 0x00], &[]);
    assert_eq!(sw, 0x9000);
    let root_key = KeyPair::from_pem(applet_sim::test_issuer::ROOT_KEY_PEM).unwrap();
    let der = signing_certificate(&root_key, &test_root(), &public, number, role);
    assert_eq!(stx(card, ch, [0x00, 0xDA, 0xDF, 0x35], &der).1, 0x9000);
    der
}

/// Issuance of the card's signing key: GENERATE SIGNING KEY, then PUT DATA
/// DF35. Without a generated key (6985), a certificate from another root
/// (6982), of a registration (not signing) certificate (6982), for another
/// key, card or role (6A80): nothing changes. The right one stores key and
/// certificate together, readable by GET DATA DF35 (the key never is);
/// the registrar roots (BF23, BF24) take only self-signed roots; none of it
/// once the card is issued, nor outside the issuer session.
#[test]
fn issuance_stores_only_a_signing_certificate_under_the_installed_root_for_the_new_key() {
    let mut card = card_with(&Profile::load("blank").unwrap());
    assert!(
        card.state().storing.certificate.is_empty(),
        "a blank card has no signing key"
    );
    let number = card.state().card_number.clone();
    let mut ch = open_scp11a(&mut card);
    assert_eq!(stx(&mut card, &mut ch, [0x00, 0xDA, 0xDF, 0x02], b"main").1, 0x9000);
    let root_key = KeyPair::from_pem(applet_sim::test_issuer::ROOT_KEY_PEM).unwrap();
    let some_key = KeyPair::generate().unwrap().public_bytes();
    let early = signing_certificate(&root_key, &test_root(), &some_key, &number, "main");
    let before = card.state().clone();
    assert_eq!(stx(&mut card, &mut ch, [0x00, 0xDA, 0xDF, 0x35], &early).1, 0x6985);
    let (public, sw) = stx(&mut card, &mut ch, [0x80, 0x48, 0x00, 0x00], &[]);
    assert_eq!((public.len(), sw), (65, 0x9000));
    assert_eq!(stx(&mut card, &mut ch, [0x80, 0x48, 0x01, 0x00], &[]).1, 0x6A86);
    let other_key = KeyPair::generate().unwrap();
    let other_root =
        cardvault_proto::cert::issue_root(&other_key, "other", "20250101000000Z", "20500101000000Z").unwrap();
    let refusals = [
        (
            signing_certificate(&other_key, &other_root, &public, &number, "main"),
            0x6982,
            "another root",
        ),
        (
            registration(&root_key, &test_root(), &public, &number, "main"),
            0x6982,
            "not a signing certificate",
        ),
        (early.clone(), 0x6A80, "another key"),
        (
            signing_certificate(&root_key, &test_root(), &public, "1111222233334444", "main"),
            0x6A80,
            "another card",
        ),
        (
            signing_certificate(&root_key, &test_root(), &public, &number, "backup"),
            0x6A80,
            "another role",
        ),
        (vec![0x30, 0x00], 0x6982, "not a certificate"),
    ];
    for (der, want, why) in refusals {
        assert_eq!(stx(&mut card, &mut ch, [0x00, 0xDA, 0xDF, 0x35], &der).1, want, "{why}");
    }
    let leaf = X509::from_der(&early).unwrap().to_der().unwrap();
    for tag in [[0xBF, 0x23], [0xBF, 0x24]] {
        assert_eq!(stx(&mut card, &mut ch, [0x00, 0xDA, tag[0], tag[1]], &leaf).1, 0x6A80);
    }
    assert_eq!(card.state(), &before, "refusals change nothing");
    let good = signing_certificate(&root_key, &test_root(), &public, &number, "main");
    assert_eq!(stx(&mut card, &mut ch, [0x00, 0xDA, 0xDF, 0x35], &good).1, 0x9000);
    assert_eq!(card.state().storing.certificate, good);
    assert_eq!(
        KeyPair::from_private(&card.state().storing.private_key)
            .unwrap()
            .public_bytes(),
        public
    );
    let ir = applet_sim::test_registrars::issuer_registrar_der();
    let dr = applet_sim::test_registrars::data_registrar_der();
    assert_eq!(stx(&mut card, &mut ch, [0x00, 0xDA, 0xBF, 0x23], &ir).1, 0x9000);
    assert_eq!(stx(&mut card, &mut ch, [0x00, 0xDA, 0xBF, 0x24], &dr).1, 0x9000);
    assert_eq!(
        (
            &card.state().storing.issuer_registrar_root,
            &card.state().storing.data_registrar_root
        ),
        (&ir, &dr)
    );
    let (read, sw) = stx(&mut card, &mut ch, [0x00, 0xCA, 0xDF, 0x35], &[]);
    assert_eq!(sw, 0x9000);
    assert!(read.ends_with(&good), "GET DATA DF35 answers the certificate");
    // The key is used once: a second certificate needs a new key.
    assert_eq!(stx(&mut card, &mut ch, [0x00, 0xDA, 0xDF, 0x35], &good).1, 0x6985);
    // Outside the issuer session, nothing.
    let before = card.state().clone();
    let mut b = open_scp11b(&mut card);
    assert_eq!(stx(&mut card, &mut b, [0x80, 0x48, 0x00, 0x00], &[]).1, 0x6982);
    assert_eq!(stx(&mut card, &mut b, [0x00, 0xDA, 0xBF, 0x23], &ir).1, 0x6982);
    assert_eq!(card.state(), &before);
}

/// GENERATE ECKA KEY and the identity PUT DATA need the issuer session.
#[test]
fn identity_commands_need_the_issuer_session() {
    let mut card = card_with(&Profile::load("blank").unwrap());
    let before = card.state().clone();
    let mut ch = open_scp11b(&mut card);
    assert_eq!(stx(&mut card, &mut ch, [0x80, 0xEF, 0x00, 0x00], &[]).1, 0x6982);
    let root_der = test_root().to_der().unwrap();
    assert_eq!(stx(&mut card, &mut ch, [0x00, 0xDA, 0xBF, 0x22], &root_der).1, 0x6982);
    assert_eq!(card.state(), &before);
}
