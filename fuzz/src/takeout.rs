//! `takeout_blob`: key take-out blobs into IMPORT KEY, receipts into CONFIRM DUPLICATE.
//!
//! Fixture (once per process): a main card and a backup card of the built-in
//! profiles with the same complete key group (element 1 from the profile,
//! elements 2 and 3 written), PIN verified; the main card generated its key
//! and took it out to the backup card (named by its test-issuer certificate):
//! the genuine blob `B`.
//!
//! Input: a mode byte, then mode data.
//! - mode & 3 == 0: the rest is the blob;
//! - 1: `B` with edits: 4-byte records (kind, offset (2), value): xor a byte
//!   (value 0 flips bit 0), truncate, insert a byte, append a byte;
//! - 2: `B`'s clear part, sealed afresh under the right take-out key (key
//!   group and the backup card's ECKA key) with the
//!   rest of the input as plaintext (padded/cut to d (32) || Q (65)): a blob
//!   whose encryption is valid but whose key is not (d out of range, Q not
//!   d·G; a consistent pair would be a genuine take-out and is skipped);
//! - 3: the rest is the data of CONFIRM DUPLICATE on the main card.
//!
//! Bit 2 of the mode byte is IMPORT KEY's P1 (make the public key readable).
//!
//! Checked: `keygroup::takeout_info` never panics and, when it parses,
//! re-encodes to the blob's clear part; IMPORT KEY of anything but `B`
//! itself is refused and leaves the backup card unchanged; CONFIRM DUPLICATE
//! with anything but the genuine receipt is refused and leaves the main card
//! unchanged. The cards are reused across inputs: they never change.

use crate::{apdu, checked_tx, is_success, ready_card, tx, Card, Input};
use cardvault_proto::crypto::{self, GCM_NONCE_LEN, PRIVATE_KEY_LEN, PUBLIC_KEY_LEN};
use cardvault_proto::takeout::takeout_info;
use cardvault_proto::{takeout, to_hex};
use std::cell::RefCell;

pub struct Fixture {
    pub main: Card,
    pub backup: Card,
    /// The genuine take-out blob from `main` to `backup`.
    pub blob: Vec<u8>,
}

impl Fixture {
    pub fn new() -> Fixture {
        let mut main = ready_card("main");
        crate::complete_key_group(&mut main);
        let (_, s) = tx(&mut main, &apdu(0x80, 0x46, 0, 0, &[], 256));
        assert_eq!(s, 0x9000, "GENERATE KEY PAIR");
        let mut backup = ready_card("backup");
        crate::complete_key_group(&mut backup);
        // TAKE OUT KEY names the target by its certificate (GET DATA BF21).
        let chain = backup.state().certificate.clone();
        let (blob, s) = tx(&mut main, &apdu(0x80, 0xE4, 0, 0, &chain, 256));
        assert_eq!(s, 0x9000, "TAKE OUT KEY");
        assert!(takeout_info(&blob).is_some());
        Fixture { main, backup, blob }
    }

    /// Length of the blob's clear part (the AEAD associated data).
    pub fn aad_len(&self) -> usize {
        self.blob.len() - GCM_NONCE_LEN - (PRIVATE_KEY_LEN + PUBLIC_KEY_LEN + crypto::GCM_TAG_LEN)
    }
}

impl Default for Fixture {
    fn default() -> Self {
        Fixture::new()
    }
}

thread_local! {
    static FIXTURE: RefCell<Option<Fixture>> = const { RefCell::new(None) };
}

/// Apply mode-1 edits to a copy of `blob`.
pub fn edit(blob: &[u8], input: &mut Input) -> Vec<u8> {
    let mut b = blob.to_vec();
    for _ in 0..crate::MAX_STEPS {
        let (Some(kind), Some(off), Some(val)) = (input.byte(), input.u16(), input.byte()) else {
            break;
        };
        let off = off as usize;
        match kind & 3 {
            0 if !b.is_empty() => {
                let i = off % b.len();
                b[i] ^= if val == 0 { 1 } else { val };
            }
            1 => b.truncate(off % (b.len() + 1)),
            2 => b.insert(off % (b.len() + 1), val),
            _ => b.push(val),
        }
    }
    b
}

/// The take-out key for associated data `aad` (ending with the main card's
/// ephemeral key) under the backup card's group and certified ECKA key.
fn export_kek(backup: &Card, aad: &[u8]) -> zeroize::Zeroizing<[u8; 32]> {
    let state = backup.state();
    let secret = state.key_group.secret().expect("complete group");
    let ephemeral = &aad[aad.len() - PUBLIC_KEY_LEN..];
    let z = state.ecka_key().expect("certified card").ecdh(ephemeral).expect("ecdh");
    takeout::export_kek(&secret[..], &z, aad).expect("hkdf")
}

fn check_info(blob: &[u8]) {
    let Some(info) = takeout_info(blob) else { return };
    let mut clear = vec![takeout::VERSION, takeout::SLOT_MAIN, takeout::TYPE_P256];
    clear.push(info.source.len() as u8);
    clear.extend_from_slice(info.source.as_bytes());
    clear.push(info.target.len() as u8);
    clear.extend_from_slice(info.target.as_bytes());
    clear.extend_from_slice(&info.kcv);
    clear.extend_from_slice(&info.counter.to_be_bytes());
    let ephemeral = takeout::parse_takeout(blob).expect("parses").ephemeral;
    clear.extend_from_slice(ephemeral);
    assert!(
        blob.starts_with(&clear),
        "takeout_info does not re-encode {}",
        to_hex(blob)
    );
    assert_eq!(
        blob.len(),
        clear.len() + GCM_NONCE_LEN + PRIVATE_KEY_LEN + PUBLIC_KEY_LEN + crypto::GCM_TAG_LEN,
        "takeout_info accepted a blob of the wrong length"
    );
}

pub fn fuzz_takeout_blob(data: &[u8]) {
    check_info(data);
    let mut input = Input::new(data);
    let Some(mode) = input.byte() else { return };
    FIXTURE.with(|f| {
        let mut f = f.borrow_mut();
        let fx = f.get_or_insert_with(Fixture::new);
        let blob = match mode & 3 {
            0 => input.rest().to_vec(),
            1 => edit(&fx.blob, &mut input),
            2 => {
                let aad = &fx.blob[..fx.aad_len()];
                let mut plain = input.rest().to_vec();
                plain.resize(PRIVATE_KEY_LEN + PUBLIC_KEY_LEN, 0);
                // A consistent key pair (d, Q = d·G) sealed under the right key
                // is a genuine take-out: libFuzzer can learn Q from the card's
                // comparison. Only inconsistent ones must be refused.
                let (d, q) = plain.split_at(PRIVATE_KEY_LEN);
                if crypto::KeyPair::from_private(d).is_ok_and(|k| k.public_bytes() == q) {
                    return;
                }
                let nonce = [0x5A; GCM_NONCE_LEN];
                let mut blob = aad.to_vec();
                blob.extend_from_slice(&nonce);
                let kek = export_kek(&fx.backup, aad);
                blob.extend(crypto::seal(&kek, &nonce, aad, &plain).expect("seal"));
                blob
            }
            _ => {
                let (_, sw) = checked_tx(&mut fx.main, &apdu(0x80, 0xE6, 0, 0, input.rest(), 0));
                assert!(
                    !is_success(sw),
                    "CONFIRM DUPLICATE accepted a forged receipt: {}",
                    to_hex(data)
                );
                return;
            }
        };
        check_info(&blob);
        if blob == fx.blob || blob.len() > 65535 {
            return;
        }
        let p1 = (mode >> 2) & 1;
        let (_, sw) = checked_tx(&mut fx.backup, &apdu(0x80, 0xE5, p1, 0, &blob, 256));
        assert!(
            !is_success(sw),
            "IMPORT KEY accepted a blob that is not the genuine one: {}",
            to_hex(&blob)
        );
    });
}
