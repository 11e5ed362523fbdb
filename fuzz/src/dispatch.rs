//! `apdu_dispatch`: command APDUs into an in-memory card.
//!
//! Input: one prelude byte, then records of a 2-byte big-endian length and
//! that many bytes (fewer at the end of the input); each record is one
//! command APDU, a zero-length record is a warm reset. At most
//! [`MAX_STEPS`](crate::MAX_STEPS) records run.
//!
//! Prelude byte (run before the fuzzed APDUs, results not checked):
//! - bits 0-1: profile: 0 main, 1 backup, 2 blank (not personalized), 3 replacement;
//! - bit 2: SELECT the applet;
//! - bit 3: VERIFY "123456";
//! - bit 4: the issuer session (SCP11a with the test operator; a plain
//!   sensitive APDU ends it, see [`admin_authenticate`](crate::admin_authenticate));
//! - bit 5: write key group elements 2 and 3 (the group is then complete);
//! - bit 6: GENERATE KEY PAIR;
//! - bit 7: TAKE OUT KEY to the backup card's number.
//!
//! Checked on every fuzzed APDU: see [`checked_tx`](crate::checked_tx).

use crate::{admin_authenticate, apdu, checked_tx, complete_key_group, profile, tx, Card, Input, MAX_STEPS};

pub const PRELUDE_SELECT: u8 = 1 << 2;
pub const PRELUDE_VERIFY: u8 = 1 << 3;
pub const PRELUDE_ADMIN: u8 = 1 << 4;
pub const PRELUDE_GROUP: u8 = 1 << 5;
pub const PRELUDE_KEYPAIR: u8 = 1 << 6;
pub const PRELUDE_TAKEOUT: u8 = 1 << 7;

/// The card the prelude byte asks for.
pub fn prelude(flags: u8) -> Card {
    let name = ["main", "backup", "blank", "replacement"][(flags & 3) as usize];
    let mut card = Card::in_memory(profile(name));
    if flags & PRELUDE_SELECT != 0 {
        tx(&mut card, crate::SELECT);
    }
    if flags & PRELUDE_VERIFY != 0 {
        tx(&mut card, crate::VERIFY_PIN);
    }
    if flags & PRELUDE_ADMIN != 0 {
        admin_authenticate(&mut card);
    }
    if flags & PRELUDE_GROUP != 0 {
        complete_key_group(&mut card);
    }
    if flags & PRELUDE_KEYPAIR != 0 {
        tx(&mut card, &apdu(0x80, 0x46, 0, 0, &[], 256));
    }
    if flags & PRELUDE_TAKEOUT != 0 {
        tx(&mut card, &apdu(0x80, 0xE4, 0, 0, &crate::backup_certificate(), 256));
    }
    card
}

pub fn fuzz_apdu_dispatch(data: &[u8]) {
    let mut input = Input::new(data);
    let Some(flags) = input.byte() else { return };
    let mut card = prelude(flags);
    for _ in 0..MAX_STEPS {
        let Some(raw) = input.lv16() else { break };
        if raw.is_empty() {
            card.reset();
        } else {
            checked_tx(&mut card, raw);
        }
    }
}
