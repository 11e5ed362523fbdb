//! Regenerates the seed corpora in fixtures/fuzz/<target>/ (see
//! fixtures/fuzz/README.md):
//!
//! ```sh
//! cargo run --manifest-path fuzz/Cargo.toml --example make_seeds
//! cargo run --manifest-path fuzz/Cargo.toml --example make_seeds -- terminal_workflows   # one target
//! ```
//!
//! Every seed is made from real exchanges with in-memory cards, then replayed
//! through its target's checks before it is written. Seeds that hold card
//! output (take-out blobs, backup headers) differ from run to run: keys and
//! nonces are random.

use cardvault_fuzz::dispatch::*;
use cardvault_fuzz::restore::{self, *};
use cardvault_fuzz::*;
use cardvault_proto::ins;
use std::path::Path;

fn lv(out: &mut Vec<u8>, apdus: &[Vec<u8>]) {
    for a in apdus {
        push_lv16(out, a);
    }
}

fn dispatch_seed(flags: u8, apdus: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![flags];
    lv(&mut v, apdus);
    v
}

fn a(cla: u8, ins: u8, p1: u8, p2: u8, data: &[u8], ne: usize) -> Vec<u8> {
    apdu(cla, ins, p1, p2, data, ne)
}

fn apdu_dispatch() -> Vec<(&'static str, Vec<u8>)> {
    let sv = PRELUDE_SELECT | PRELUDE_VERIFY;
    let backup_req: Vec<u8> = [&1024u16.to_be_bytes()[..], &[0; 8]].concat();
    let wrapped = &file::VECTOR[14..139];
    let mut unwrap = vec![14u8];
    unwrap.extend_from_slice(&file::VECTOR[..14]);
    unwrap.extend_from_slice(wrapped);
    let issuer_pub = cardvault_proto::from_hex(include_str!("../../fixtures/issuer/issuer-public.hex")).unwrap();
    // A card signing key certificate under the test root for the blank card
    // (over a key of its own: the card's GENERATE SIGNING KEY makes another,
    // so PUT DATA DF35 refuses it), the test registrar roots, an SDI.
    let signing_cert = {
        use applet_sim::test_issuer as t;
        let root_key = cardvault_proto::crypto::KeyPair::from_pem(t::ROOT_KEY_PEM).unwrap();
        let key = cardvault_proto::crypto::KeyPair::generate().unwrap();
        let subject = cardvault_proto::cert::CardSubject {
            card_number: BLANK_NUMBER.into(),
            role: "main".into(),
            member_number: None,
        };
        cardvault_proto::storing::issue_card_signing_certificate(
            &root_key,
            &t::root(),
            &key.public_bytes(),
            &subject,
            30,
        )
        .unwrap()
        .to_der()
        .unwrap()
    };
    let (issuer_registrar, data_registrar) = (
        applet_sim::test_registrars::issuer_registrar_der(),
        applet_sim::test_registrars::data_registrar_der(),
    );
    let sdi = cardvault_proto::storing::StoringDataInfo {
        app: 4,
        op: cardvault_proto::storing::Operation::Store,
        size: 4,
        hash: cardvault_proto::crypto::sha256(b"data"),
        data_cert_id: String::new(),
    }
    .encode();
    let mut release = [&1u32.to_be_bytes()[..], &[0x11; 64]].concat();
    release.extend_from_slice(&signing_cert);
    vec![
        (
            "pin-and-select",
            dispatch_seed(
                0,
                &[
                    a(0x00, 0xCA, 0x00, 0xE1, &[], 256),
                    SELECT.to_vec(),
                    a(0x00, 0x20, 0x00, 0x81, &[], 0),
                    a(0x00, 0x20, 0x00, 0x81, b"000000", 0),
                    VERIFY_PIN.to_vec(),
                    a(0x00, 0x24, 0x00, 0x81, b"\x06123456654321", 0),
                    a(0x00, 0x20, 0x00, 0x81, b"654321", 0),
                    a(0x00, 0xCA, 0x00, 0xE1, &[], 256),
                    vec![],
                    a(0x00, 0xCA, 0xDF, 0x04, &[], 256),
                ],
            ),
        ),
        (
            "memory-and-value",
            dispatch_seed(
                sv,
                &[
                    a(0x80, 0xB0, 0x00, 0x00, &[0x00, 0x10], 256),
                    a(0x80, 0xD6, 0x00, 0x04, &[0xAB; 32], 0),
                    a(0x80, 0xB0, 0x00, 0x04, &[], 32),
                    a(0x80, 0x52, 0x01, 0x00, &[0, 0, 0, 100], 256),
                    a(0x80, 0x54, 0x01, 0x00, &[0, 0, 0, 30], 256),
                    a(0x80, 0x5C, 0x01, 0x00, &[], 256),
                    a(0x80, 0xB0, 0x00, 0x00, &[], 65536),
                    a(0x80, 0xB0, 0x00, 0x10, &[0x02, 0x58], 16),
                    a(0x00, 0xC0, 0x00, 0x00, &[], 256),
                    a(0x00, 0xC0, 0x00, 0x00, &[], 256),
                    a(0x00, 0xCA, 0xDF, 0x30, &[], 256),
                    a(0x00, 0xCA, 0xDF, 0x31, &[], 256),
                ],
            ),
        ),
        (
            "chained-write",
            dispatch_seed(
                sv,
                &[
                    a(0x90, 0xD6, 0x00, 0x08, &[1; 255], 0),
                    a(0x90, 0xD6, 0x00, 0x08, &[2; 255], 0),
                    a(0x80, 0xD6, 0x00, 0x08, &[3; 90], 0),
                    a(0x90, 0xD6, 0x00, 0x09, &[4; 10], 0),
                    a(0x80, 0xB0, 0x00, 0x09, &[], 0),
                    a(0x80, 0xB0, 0x00, 0x08, &[0x02, 0x58], 0),
                ],
            ),
        ),
        (
            "backup-session",
            dispatch_seed(
                sv,
                &[
                    a(0x80, 0xF0, 0x00, 0x00, &backup_req, 65536),
                    a(0x80, 0xF1, 0x00, 0x01, &[], 65536),
                    a(0x80, 0xF1, 0x00, 0x02, &[], 65536),
                    a(0x80, 0xF2, 0x00, 0x00, &[0, 0, 0, 1], 0),
                    a(0x80, 0xF3, 0x00, 0x00, &[], 16),
                    a(0x80, 0xF4, 0x01, 0x00, &[0; 100], 0),
                    a(0x80, 0xF5, 0x00, 0x00, &[0; 64], 0),
                    a(0x80, 0xF6, 0x00, 0x00, &[], 2),
                    a(0x80, 0xF0, 0x02, 0x00, &backup_req, 65536),
                ],
            ),
        ),
        (
            "keys-main",
            dispatch_seed(
                sv | PRELUDE_GROUP | PRELUDE_KEYPAIR,
                &[
                    a(0x00, 0xCA, 0xDF, 0x10, &[], 256),
                    a(0x00, 0xCA, 0xDF, 0x11, &[], 256),
                    a(0x00, 0xCA, 0xDF, 0x12, &[], 256),
                    a(0x80, 0xE4, 0x00, 0x00, BACKUP_NUMBER.as_bytes(), 256),
                    a(0x00, 0xCA, 0xDF, 0x13, &[], 256),
                    a(0x80, 0xE6, 0x00, 0x00, &[0; 36], 0),
                    a(0x80, 0xE9, 0x00, 0x00, &issuer_pub, 0),
                    a(0x80, 0xE8, 0x00, 0x00, &unwrap, 256),
                    a(0x80, 0xEA, 0x00, 0x00, &unwrap, 256),
                    a(0x80, 0xE2, 0x00, 0x00, &[], 0),
                    a(0x80, 0x46, 0x00, 0x00, &[], 256),
                ],
            ),
        ),
        (
            "personalize-blank",
            dispatch_seed(
                2 | PRELUDE_SELECT | PRELUDE_ADMIN,
                &[
                    a(0x00, 0xDA, 0xDF, 0x02, b"main", 0),
                    a(0x00, 0xDA, 0xDF, 0x20, b"M-1", 0),
                    a(0x00, 0xDA, 0xDF, 0x21, b"2030-01", 0),
                    a(0x00, 0xDA, 0xDF, 0x22, &[2], 0),
                    a(0x00, 0xDA, 0xDF, 0x23, &[1], 0),
                    a(0x80, 0xE1, 0x01, 0x00, &[0x11; 32], 0),
                    a(0x80, 0x48, 0x00, 0x00, &[], 256),
                    a(0x00, 0xDA, 0xDF, 0x35, &signing_cert, 0),
                    a(0x00, 0xDA, 0xBF, 0x23, &issuer_registrar, 0),
                    a(0x00, 0xDA, 0xBF, 0x24, &data_registrar, 0),
                    a(0x80, 0xE0, 0x00, 0x00, &[], 0),
                    a(0x00, 0x2C, 0x02, 0x81, b"999999", 0),
                    a(0x00, 0x2C, 0x03, 0x81, &[], 0),
                    a(0x00, 0xCA, 0xDF, 0x17, &[], 256),
                ],
            ),
        ),
        (
            "admin-main",
            dispatch_seed(
                sv | PRELUDE_ADMIN,
                &[
                    a(0x80, 0xEB, 0x00, 0x00, &[], 256),
                    a(0x80, 0xEC, 0x00, 0x00, &[0x04; 125], 256),
                    a(0x80, 0xE7, 0x00, 0x00, &[], 0),
                    a(0x80, 0xE7, 0x00, 0x00, &release, 0),
                    a(0x00, 0x84, 0x00, 0x00, &[], 16),
                    a(0x00, 0x82, 0x00, 0x01, &[0; 32], 0),
                ],
            ),
        ),
        (
            "import-on-backup",
            dispatch_seed(
                1 | sv | PRELUDE_GROUP,
                &[
                    a(0x00, 0xCA, 0xDF, 0x11, &[], 256),
                    a(0x80, 0xE5, 0x00, 0x00, &[1, 1, 1, 0], 256),
                    a(0x80, 0xE5, 0x01, 0x00, &[0x55; 300], 256),
                ],
            ),
        ),
        (
            // A backup card signs a DESTROY KEY receipt with its signing key
            // (GET DATA DF35 certifies it); storing commands on an
            // application the holder writes are refused.
            "destroy-and-storing",
            dispatch_seed(
                1 | sv | PRELUDE_GROUP,
                &[
                    a(0x00, 0xCA, 0xDF, 0x35, &[], 65536),
                    a(
                        0x80,
                        0xED,
                        0x00,
                        0x00,
                        &[&1u32.to_be_bytes()[..], MAIN_NUMBER.as_bytes()].concat(),
                        256,
                    ),
                    a(
                        0x80,
                        0xED,
                        0x00,
                        0x00,
                        &[&2u32.to_be_bytes()[..], MAIN_NUMBER.as_bytes()].concat(),
                        68,
                    ),
                    a(0x80, 0x76, 0x04, 0x00, &sdi, 65536),
                    a(0x80, 0x78, 0x04, 0x00, &[0x00, 0x02, 0x02, 0x00, 0xAA], 0),
                    a(0x80, 0x48, 0x00, 0x00, &[], 256),
                ],
            ),
        ),
        (
            // A main card with keys, then a reset: every PIN or admin
            // command must now be refused (the access-control invariant).
            "after-reset-nothing-gated",
            dispatch_seed(
                sv | PRELUDE_GROUP | PRELUDE_KEYPAIR,
                &[
                    vec![],
                    SELECT.to_vec(),
                    a(0x80, 0xE4, 0x00, 0x00, BACKUP_NUMBER.as_bytes(), 256),
                    a(0x80, 0xB0, 0x00, 0x00, &16u16.to_be_bytes(), 16),
                    a(0x80, 0xD6, 0x00, 0x00, &[0x11; 16], 0),
                    a(0x80, 0x54, 0x01, 0x00, &1u32.to_be_bytes(), 4),
                    a(0x80, 0xE2, 0x00, 0x00, &[], 0),
                    a(0x80, 0xE7, 0x00, 0x00, &[], 0),
                    a(0x80, 0xF0, 0x00, 0x00, &backup_req, 65536),
                    a(0x80, 0xF3, 0x00, 0x00, &[], 16),
                    a(0x80, 0xE1, 0x01, 0x00, &[0x44; 32], 8),
                    a(0x00, 0x2C, 0x03, 0x81, &[], 0),
                    a(0x00, 0x20, 0x00, 0x81, b"999999", 0),
                ],
            ),
        ),
    ]
}

/// Pad a vpcd stream with empty and unknown control messages to a length
/// that is a multiple of 8 (those inputs also run over TCP).
fn pad8(mut v: Vec<u8>) -> Vec<u8> {
    let mut need = (8 - v.len() % 8) % 8;
    if need == 1 {
        need = 9;
    }
    while need > 0 {
        if need % 2 == 1 || need == 3 {
            v.extend_from_slice(&[0, 1, 0xFF]);
            need -= 3;
        } else {
            v.extend_from_slice(&[0, 0]);
            need -= 2;
        }
    }
    assert_eq!(v.len() % 8, 0);
    v
}

fn vpcd_framing() -> Vec<(&'static str, Vec<u8>)> {
    let mut session = Vec::new();
    for m in [
        vec![0x01],
        vec![0x04],
        SELECT.to_vec(),
        VERIFY_PIN.to_vec(),
        a(0x00, 0xCA, 0x00, 0xE1, &[], 256),
        a(0x80, 0xB0, 0x00, 0x00, &[], 4096),
        a(0x80, 0xB0, 0x00, 0x10, &[0x01, 0x00], 0),
        a(0x00, 0xC0, 0x00, 0x00, &[], 256),
        vec![0x02],
        a(0x00, 0xCA, 0xDF, 0x08, &[], 256),
        vec![0x00],
        SELECT.to_vec(),
    ] {
        push_lv16(&mut session, &m);
    }
    let mut cut = session.clone();
    cut.extend_from_slice(&[0x00, 0x0C, 0x00, 0xA4]);
    vec![
        ("session", session.clone()),
        ("session-over-tcp", pad8(session)),
        ("cut-inside-frame", cut.clone()),
        ("cut-inside-frame-over-tcp", {
            let mut v = pad8(cut[..cut.len() - 4].to_vec());
            v.extend_from_slice(&[0x00, 0x0C, 0x00, 0xA4, 0, 0, 0, 0]);
            v
        }),
    ]
}

fn takeout_blob() -> Vec<(&'static str, Vec<u8>)> {
    // A real blob from another card pair, to a card number that is not the
    // fixture's backup card (a blob to that number would be genuine).
    let mut main = ready_card("main");
    complete_key_group(&mut main);
    assert_eq!(tx(&mut main, &apdu(0x80, 0x46, 0, 0, &[], 256)).1, 0x9000);
    let other = applet_sim::test_issuer::certify_card(
        &cardvault_proto::crypto::KeyPair::generate().unwrap().public_bytes(),
        &cardvault_proto::cert::CardSubject {
            card_number: "FUZZ-OTHER-0009".into(),
            role: "backup".into(),
            member_number: None,
        },
    );
    let (other_blob, s) = tx(&mut main, &apdu(0x80, 0xE4, 0, 0, &other, 256));
    assert_eq!(s, 0x9000);
    let fx = takeout::Fixture::new();
    let sealed_at = fx.aad_len() + 12;
    let mut out = vec![
        ("raw-blob-other-target", [&[0u8][..], &other_blob].concat()),
        ("raw-blob-p1-01", [&[4u8][..], &other_blob].concat()),
        (
            "edit-xor-sealed",
            [1u8, 0, 0, (sealed_at >> 8) as u8, sealed_at as u8, 0x80].to_vec(),
        ),
        ("edit-xor-kcv", [1u8, 0, 0, 0x22, 0, 0x01].to_vec()),
        ("edit-truncate", [1u8, 1, 0, 100, 0].to_vec()),
        ("edit-append", [1u8, 3, 0, 0, 0x42].to_vec()),
        ("sealed-garbage-key", [&[2u8][..], &[0x11; 97]].concat()),
        ("sealed-zero-scalar", vec![2u8]),
        (
            "confirm-forged-receipt",
            [&[3u8][..], &[0, 0, 0, 1], &[0xEE; 32]].concat(),
        ),
    ];
    out.push(("info-only", other_blob));
    out
}

fn backup_header() -> Vec<(&'static str, Vec<u8>)> {
    let fx = restore::Fixture::new();
    let mut card = ready_card("main");
    let data: Vec<u8> = [&1024u16.to_be_bytes()[..], &[0; 8]].concat();
    let (r, s) = tx(&mut card, &apdu(0x80, ins::BACKUP, 0, 0, &data, 65536));
    assert_eq!(s, 0x6310);
    let hlen = u16::from_be_bytes([r[0], r[1]]) as usize;
    vec![
        ("full-16-pages", fx.b1.header.clone()),
        ("differential-16-pages", fx.b2.header.clone()),
        ("full-main-profile", r[2..2 + hlen].to_vec()),
    ]
}

fn restore_program(fx: &restore::Fixture, flags: u8, auth: u8, chain: bool, tamper: &[u8]) -> Vec<u8> {
    let mut p = vec![flags];
    let other = flags & FLAG_OTHER_CARD != 0;
    if other {
        p.push(OP_CHALLENGE);
    }
    p.extend_from_slice(tamper);
    let p1 = if other { 1 } else { 0 };
    let p2 = if flags & FLAG_ADMIN != 0 { 1 << 2 } else { 0 };
    p.extend_from_slice(&[OP_RESTORE, p1 | p2 | (auth << 5)]);
    for i in 0..fx.b1.records.len() as u8 {
        p.extend_from_slice(&[OP_RECORD, i]);
    }
    p.extend_from_slice(&[OP_TRAILER, 0]);
    if chain {
        p.extend_from_slice(&[OP_RESTORE, 2 | (1 << 3)]);
        for i in 0..fx.b2.records.len() as u8 {
            p.extend_from_slice(&[OP_RECORD, 0x80 | i]);
        }
        p.extend_from_slice(&[OP_TRAILER, 1]);
    }
    p.push(OP_COMPLETE);
    p
}

fn restore_records() -> Vec<(&'static str, Vec<u8>)> {
    let fx = restore::Fixture::new();
    let o = FLAG_OTHER_CARD;
    let seeds = vec![
        ("same-card-chain", restore_program(&fx, 0, 0, true, &[]), Some(true)),
        (
            "same-card-full-only-rollback",
            restore_program(&fx, 0, 0, false, &[]),
            Some(false),
        ),
        // The rollback override in the issuer's SCP11a session: the target
        // sends RESTORE plain, so the card ends the session (6987) and the
        // program explores that refusal (the override itself is tested under
        // SCP11a in tests/backup_restore.rs).
        (
            "same-card-full-override-plain-in-session",
            restore_program(&fx, FLAG_ADMIN, 0, false, &[]),
            Some(false),
        ),
        ("other-card-chain", restore_program(&fx, o, 1, true, &[]), Some(true)),
        ("other-card-full", restore_program(&fx, o, 0, false, &[]), Some(true)),
        (
            "other-card-wrong-counter",
            restore_program(&fx, o, 1, false, &[]),
            Some(false),
        ),
        (
            "same-card-tampered-header",
            restore_program(&fx, 0, 0, true, &[OP_XOR, 0, 20, 0x01]),
            Some(false),
        ),
        (
            "other-card-tampered-signature",
            restore_program(&fx, o, 1, true, &[OP_XOR, 0x01, 0x00, 0x01]),
            Some(false),
        ),
        (
            "same-card-truncated-header",
            restore_program(&fx, 0, 0, true, &[OP_TRUNCATE, 0, 50]),
            Some(false),
        ),
        (
            "raw-pieces",
            [
                &[0u8, OP_RESTORE, 2 << 3, 0, 4, 1, 0, 0, 0][..],
                &[OP_RAW_DATA, 0, 0, 3, 1, 2, 3],
                &[OP_RAW_DATA, 1, 0, 36],
                &[0u8; 36],
                &[OP_RESET, OP_RAW_APDU, 0, 5, 0x80, 0xF6, 0, 0, 2],
            ]
            .concat(),
            None,
        ),
    ];
    let mut out = Vec::new();
    for (name, prog, expect) in seeds {
        let log = restore::run(&fx, &prog);
        if let Some(ok) = expect {
            let done = log.iter().any(|(i, sw)| *i == ins::RESTORE_COMPLETE && *sw == 0x9000);
            assert_eq!(done, ok, "{name}: {log:04X?}");
        }
        if prog[0] & FLAG_ADMIN != 0 {
            assert_eq!(log.first(), Some(&(ins::RESTORE, 0x6987)), "{name}: {log:04X?}");
        }
        out.push((name, prog));
    }
    out
}

fn file_header() -> Vec<(&'static str, Vec<u8>)> {
    let v = file::VECTOR.to_vec();
    let mut bad_exp = v.clone();
    bad_exp[5] = 25;
    let mut swapped = v.clone();
    let (c0, c1) = (140..140 + 1040, 140 + 1040..140 + 2080);
    let first = v[c0.clone()].to_vec();
    swapped[c0].copy_from_slice(&v[c1.clone()]);
    swapped[c1].copy_from_slice(&first);
    vec![
        ("vector", v.clone()),
        ("vector-odd-length", [&v[..], &[0]].concat()),
        ("header-only", v[..140].to_vec()),
        ("cut-in-header", v[..60].to_vec()),
        ("bad-chunk-exponent", bad_exp),
        ("chunks-swapped", swapped),
        ("last-chunk-dropped", v[..140 + 2080].to_vec()),
    ]
}

fn terminal_workflows() -> Vec<(String, Vec<u8>)> {
    let lv = |b: &[u8]| {
        let mut v = vec![0x01];
        v.extend_from_slice(&(b.len() as u16).to_be_bytes());
        v.extend_from_slice(b);
        v
    };
    let nested = cardvault::transport::hostile::answers::with_sw(
        &cardvault::transport::hostile::answers::nested_templates(1000),
        0x9000,
    );
    let mut out = Vec::new();
    for (w, name) in terminal::WORKFLOWS.iter().enumerate() {
        let w = w as u8;
        out.push((format!("{name}-genuine"), vec![w]));
        out.push((
            format!("{name}-select-9000-empty"),
            [&[w][..], &lv(&[0x90, 0x00])].concat(),
        ));
        out.push((
            format!("{name}-61-10-for-ever-at-2"),
            [
                &[w, 0x00][..],
                &lv(&[0x61, 0x10]),
                &lv(&[0x61, 0x10]),
                &lv(&[0x61, 0x10]),
            ]
            .concat(),
        ));
        out.push((format!("{name}-nested-at-2"), [&[w, 0x00][..], &lv(&nested)].concat()));
        for k in [2usize, 3, 5, 8] {
            let mut v = vec![w];
            v.extend(std::iter::repeat_n(0x00, k - 1));
            v.extend_from_slice(&[0x02, 0x01]);
            out.push((format!("{name}-bent-sw-at-{k}"), v));
        }
    }
    // (Workflow byte 07, restore: the fuzzer found these as 47 and 6f,
    // restore while there were 8 workflows.)
    // Found by the fuzzer: restore onto a card whose GET DATA names another
    // card number (refused: it would need an issuer authorization).
    out.push((
        "restore-card-names-another-card".to_string(),
        cardvault_proto::from_hex("072c40070707070700029090002cf84cff0201").unwrap(),
    ));
    // Found by the fuzzer: a card number with a line break in it (now
    // malformed: card numbers are letters, digits and '-').
    out.push((
        "restore-card-number-with-line-break".to_string(),
        cardvault_proto::from_hex(
            "070b000000004b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b000000",
        )
        .unwrap(),
    ));
    out
}

fn write<S: AsRef<str>>(target: &str, seeds: Vec<(S, Vec<u8>)>, check: fn(&[u8])) {
    let wanted: Vec<String> = std::env::args().skip(1).collect();
    if !wanted.is_empty() && !wanted.iter().any(|t| t == target) {
        return;
    }
    let dir = seed_dir(target);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in &seeds {
        check(bytes);
        std::fs::write(dir.join(name.as_ref()), bytes).unwrap();
    }
    println!(
        "{}: {} seeds",
        Path::new("fixtures/fuzz").join(target).display(),
        seeds.len()
    );
}

fn main() {
    // The targets named on the command line, or every target.
    let only: Vec<String> = std::env::args().skip(1).collect();
    let wanted = |t: &str| only.is_empty() || only.iter().any(|o| o == t);
    if wanted("apdu_dispatch") {
        write("apdu_dispatch", apdu_dispatch(), dispatch::fuzz_apdu_dispatch);
    }
    if wanted("vpcd_framing") {
        write("vpcd_framing", vpcd_framing(), vpcd::fuzz_vpcd_framing);
    }
    if wanted("takeout_blob") {
        write("takeout_blob", takeout_blob(), takeout::fuzz_takeout_blob);
    }
    if wanted("backup_header") {
        write("backup_header", backup_header(), parsers::fuzz_backup_header);
    }
    if wanted("restore_records") {
        write("restore_records", restore_records(), restore::fuzz_restore_records);
    }
    if wanted("file_header") {
        write("file_header", file_header(), file::fuzz_file_header);
    }
    if wanted("terminal_workflows") {
        write("terminal_workflows", terminal_workflows(), terminal::fuzz_terminal);
    }
}
