//! `restore_records`: RESTORE / RESTORE DATA / RESTORE COMPLETE sequences
//! built from genuine backups, edited by the fuzzer.
//!
//! Fixture (once per process): card A ("main" profile cut to 16 pages of 256
//! bytes, so a backup is a handful of records) gets a memory pattern, a full
//! backup B1 (contents `mem1`), two changed pages and a differential backup
//! B2 (contents `mem2`), both completed. Card R ("replacement", same
//! geometry) is new for every input. Every input starts from card A exactly
//! as the fixture left it: A stays open across inputs while its state is
//! unchanged, and is reopened from a saved state file (in /dev/shm when it
//! exists) after an input changed it, so a restore the fuzzer gets through
//! does not leak into the next input.
//!
//! Input: a flags byte (bit 0: restore onto R, the other card, instead of A;
//! bit 1: the issuer's SCP11a session after VERIFY; the target's APDUs go
//! plain, so the first RESTORE ends that session (6987) and the programs
//! with this bit explore the refusals; the rollback override itself is
//! tested in tests/backup_restore.rs, under SCP11a),
//! then a program of at most [`MAX_STEPS`](crate::MAX_STEPS) operations:
//!
//! | op % 10 | arguments | sends |
//! |---|---|---|
//! | 0 | a | RESTORE: P1 = a & 3, P2 = a >> 2 & 1; header (a >> 3 & 3): 0 B1, 1 B2, 2 raw (2-byte length + bytes), 3 B1; for P1 = 01 the issuer authorization (a >> 5 & 3): 0 for B1's counter, 1 for B2's, 2 for a 4-byte counter from the input, 3 raw (2-byte length + bytes), signed over R's current restore challenge |
//! | 1 | a | RESTORE DATA of record a & 0x7F (modulo the count) of B1 (a < 0x80) or B2 |
//! | 2 | a | RESTORE DATA P1 = 01: the trailer of B1 (a even) or B2 |
//! | 3 | | RESTORE COMPLETE |
//! | 4 | a, 2-byte length, bytes | RESTORE DATA P1 = a & 3 with raw data |
//! | 5 | offset (2), value | (nothing) xor the next data field's byte at offset (modulo its length) with value (0 flips bit 0) |
//! | 6 | offset (2) | (nothing) cut the next data field at offset (modulo length + 1) |
//! | 7 | | GET RESTORE CHALLENGE |
//! | 8 | | warm reset, then SELECT, VERIFY (and the issuer session per the flags) |
//! | 9 | 2-byte length, bytes | that raw APDU |
//!
//! Checked: every APDU as in [`checked_tx`](crate::checked_tx) (a refused
//! one leaves the card as it was, except for the restore challenge that
//! RESTORE uses up); RESTORE COMPLETE succeeds only with the card's memory
//! then equal to `mem1` or `mem2` exactly, so no edit ever gets forged,
//! reordered, mixed or truncated content onto a card.

use crate::{apdu, checked_tx, issuer_key, tx, Card, Input, MAX_STEPS};
use applet_sim::state::Application;
use applet_sim::{CardState, Profile};
use cardvault_proto::backup::authorization_message;
use cardvault_proto::{ins, to_hex};
use std::cell::RefCell;
use std::path::PathBuf;

pub const FLAG_OTHER_CARD: u8 = 1;
pub const FLAG_ADMIN: u8 = 2;

pub const OP_RESTORE: u8 = 0;
pub const OP_RECORD: u8 = 1;
pub const OP_TRAILER: u8 = 2;
pub const OP_COMPLETE: u8 = 3;
pub const OP_RAW_DATA: u8 = 4;
pub const OP_XOR: u8 = 5;
pub const OP_TRUNCATE: u8 = 6;
pub const OP_CHALLENGE: u8 = 7;
pub const OP_RESET: u8 = 8;
pub const OP_RAW_APDU: u8 = 9;

const PAGES: u16 = 16;
const BLOCK: u16 = 1024;

/// One backup as the vault stores it.
#[derive(Debug, Clone)]
pub struct Backup {
    pub counter: u32,
    pub header: Vec<u8>,
    pub records: Vec<Vec<u8>>,
    pub trailer: Vec<u8>,
}

pub struct Fixture {
    pub profile_a: Profile,
    pub profile_r: Profile,
    /// Card A's state after the two backups, and as a state file.
    golden_a: CardState,
    golden_a_json: Vec<u8>,
    /// Card A, kept open across inputs while its state stays `golden_a`.
    a: RefCell<Option<Card>>,
    dir: PathBuf,
    pub b1: Backup,
    pub b2: Backup,
    pub mem1: Vec<u8>,
    pub mem2: Vec<u8>,
}

fn small(name: &str) -> Profile {
    let mut p = crate::profile(name).clone();
    p.page_count = PAGES;
    p.applications = vec![
        Application {
            id: 1,
            name: "e-money purse".into(),
            first_page: 0,
            page_count: 4,
            value: true,
            restored: false,
            storing: Default::default(),
        },
        Application {
            id: 2,
            name: "records".into(),
            first_page: 4,
            page_count: PAGES - 4,
            value: false,
            restored: false,
            storing: Default::default(),
        },
    ];
    p
}

/// BACKUP (P1 = kind), then BACKUP DATA until the trailer, then BACKUP COMPLETE.
fn read_backup(card: &mut Card, p1: u8) -> Backup {
    let mut data = BLOCK.to_be_bytes().to_vec();
    data.extend_from_slice(&[0; 8]);
    let (first, mut sw) = tx(card, &apdu(0x80, ins::BACKUP, p1, 0, &data, 65536));
    assert!(sw == 0x9000 || sw == 0x6310, "BACKUP: {sw:04X}");
    let hlen = u16::from_be_bytes([first[0], first[1]]) as usize;
    let header = first[2..2 + hlen].to_vec();
    let mut chunk = first[2 + hlen..].to_vec();
    let mut records = Vec::new();
    loop {
        if sw == 0x9000 {
            let t = chunk.split_off(chunk.len() - 36);
            records.push(chunk);
            let counter = u32::from_be_bytes(header[2..6].try_into().expect("4"));
            let (_, s) = tx(card, &apdu(0x80, ins::BACKUP_COMPLETE, 0, 0, &counter.to_be_bytes(), 0));
            assert_eq!(s, 0x9000, "BACKUP COMPLETE");
            return Backup {
                counter,
                header,
                records,
                trailer: t,
            };
        }
        assert_eq!(sw, 0x6310, "BACKUP DATA");
        records.push(chunk);
        let [hi, lo] = (records.len() as u16).to_be_bytes();
        (chunk, sw) = tx(card, &apdu(0x80, ins::BACKUP_DATA, hi, lo, &[], 65536));
    }
}

impl Fixture {
    pub fn new() -> Fixture {
        let profile_a = small("main");
        let profile_r = small("replacement");
        let mut a = Card::in_memory(&profile_a);
        assert_eq!(tx(&mut a, crate::SELECT).1, 0x9000);
        assert_eq!(tx(&mut a, crate::VERIFY_PIN).1, 0x9000);
        // From page 4 on: the purse's pages take no holder write.
        let pattern: Vec<u8> = (0..(PAGES as usize - 4) * 256).map(|i| (i * 7 % 251) as u8).collect();
        assert_eq!(tx(&mut a, &apdu(0x80, ins::WRITE_MEMORY, 0, 4, &pattern, 0)).1, 0x9000);
        let b1 = read_backup(&mut a, 0);
        let mem1 = a.state().memory.clone();
        for (page, byte) in [(5u8, 0xA5u8), (9, 0x5A)] {
            assert_eq!(
                tx(&mut a, &apdu(0x80, ins::WRITE_MEMORY, 0, page, &[byte; 256], 0)).1,
                0x9000
            );
        }
        let b2 = read_backup(&mut a, 1);
        let mem2 = a.state().memory.clone();
        assert_ne!(mem1, mem2);
        let shm = PathBuf::from("/dev/shm");
        let base = if shm.is_dir() { shm } else { std::env::temp_dir() };
        // libFuzzer ends with exit(), which skips this fixture's Drop: clear
        // what processes that are gone left behind.
        if let Ok(entries) = std::fs::read_dir(&base) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix("cardvault-fuzz-restore-") {
                    if !std::path::Path::new("/proc").join(pid).exists() {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        let dir = base.join(format!("cardvault-fuzz-restore-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("fixture dir");
        Fixture {
            golden_a: a.state().clone(),
            golden_a_json: {
                // A version 1 state file (one JSON with the memory in hex),
                // which the card converts when it is opened.
                let mut v = serde_json::to_value(a.state()).expect("json");
                v["version"] = 1.into();
                v["memory"] = cardvault_proto::to_hex(&a.state().memory).into();
                serde_json::to_vec(&v).expect("json")
            },
            a: RefCell::new(None),
            profile_a,
            profile_r,
            dir,
            b1,
            b2,
            mem1,
            mem2,
        }
    }

    /// Card A as the fixture left it (reopened from its state file when an
    /// input changed it), or a new card R; selected, PIN verified, admin per `admin`.
    pub fn card(&self, other: bool, admin: bool) -> Card {
        let mut card = if other {
            Card::in_memory(&self.profile_r)
        } else {
            match self.a.borrow_mut().take() {
                Some(mut a) if *a.state() == self.golden_a => {
                    a.reset();
                    a
                }
                stale => {
                    drop(stale); // releases the state file's lock
                    let path = self.dir.join("a.card");
                    // The golden state alone: no page file or journal of the
                    // changed card may be carried over into it.
                    for p in std::iter::once(applet_sim::state::pages_path(&path))
                        .chain(applet_sim::state::journal_paths(&path))
                    {
                        let _ = std::fs::remove_file(p);
                    }
                    std::fs::write(&path, &self.golden_a_json).expect("write card state");
                    let (a, created) = Card::open(&path, &self.profile_a).expect("open card state");
                    assert!(!created);
                    a
                }
            }
        };
        login(&mut card, admin, true);
        card
    }

    /// Hand card A back for the next input.
    fn give_back(&self, other: bool, card: Card) {
        if !other {
            *self.a.borrow_mut() = Some(card);
        }
    }

    fn backup(&self, second: bool) -> &Backup {
        if second {
            &self.b2
        } else {
            &self.b1
        }
    }
}

impl Default for Fixture {
    fn default() -> Self {
        Fixture::new()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// SELECT, VERIFY and (with `admin`) the issuer's SCP11a session. Checked only
/// when `check`: after a reset, the input may have blocked the PIN.
fn login(card: &mut Card, admin: bool, check: bool) {
    let sws = [
        tx(card, crate::SELECT).1,
        tx(card, crate::VERIFY_PIN).1,
        if admin { crate::admin_authenticate(card) } else { 0x9000 },
    ];
    assert!(!check || sws == [0x9000; 3], "login: {sws:04X?}");
}

/// The issuer's authorization for restoring backup `counter` of card A onto
/// `card`, over the challenge `card` holds now.
/// `headers` is the chain it covers, full backup first.
pub fn authorization(card: &Card, counter: u32, headers: &[&[u8]]) -> Vec<u8> {
    let st = card.state();
    let chain = cardvault_proto::backup::chain_hash(headers.iter().copied());
    let cert = cardvault_proto::crypto::sha256(&st.certificate);
    let msg = authorization_message(
        crate::MAIN_NUMBER,
        counter,
        &st.card_number,
        &cert,
        &st.restore_challenge,
        &chain,
    );
    let sig = cardvault_proto::crypto::sign_p256(issuer_key(), &msg).expect("sign");
    let signer = crate::issuer_signer();
    let cert = signer.certificate_der();
    let mut v = counter.to_be_bytes().to_vec();
    v.extend_from_slice(&chain);
    v.extend_from_slice(&[0, 64]);
    v.extend_from_slice(&sig);
    v.extend_from_slice(cert);
    v.extend_from_slice(&(cert.len() as u16).to_be_bytes());
    v
}

thread_local! {
    static FIXTURE: RefCell<Option<Fixture>> = const { RefCell::new(None) };
}

/// Run a program on the fixture; returns (INS, SW) of every APDU sent.
pub fn run(fx: &Fixture, data: &[u8]) -> Vec<(u8, u16)> {
    let mut input = Input::new(data);
    let mut log = Vec::new();
    let Some(flags) = input.byte() else { return log };
    let other = flags & FLAG_OTHER_CARD != 0;
    let admin = flags & FLAG_ADMIN != 0;
    let mut card = fx.card(other, admin);
    // Edits waiting for the next data field.
    let mut edits: Vec<(bool, u16, u8)> = Vec::new();
    for _ in 0..MAX_STEPS {
        let Some(op) = input.byte() else { break };
        // (INS, P1, P2, data) to send, if this op sends one.
        let cmd: Option<(u8, u8, u8, Vec<u8>)> = match op % 10 {
            OP_RESTORE => {
                let Some(a) = input.byte() else { break };
                let (p1, p2) = (a & 3, (a >> 2) & 1);
                let mut d = match (a >> 3) & 3 {
                    1 => fx.b2.header.clone(),
                    2 => match input.lv16() {
                        Some(h) => h.to_vec(),
                        None => break,
                    },
                    _ => fx.b1.header.clone(),
                };
                if p1 == 1 {
                    match (a >> 5) & 3 {
                        0 => d.extend(authorization(&card, fx.b1.counter, &[&fx.b1.header])),
                        1 => d.extend(authorization(&card, fx.b2.counter, &[&fx.b1.header, &fx.b2.header])),
                        2 => match input.u32() {
                            Some(c) => d.extend(authorization(&card, c, &[&fx.b1.header, &fx.b2.header])),
                            None => break,
                        },
                        _ => match input.lv16() {
                            Some(raw) => d.extend_from_slice(raw),
                            None => break,
                        },
                    }
                }
                Some((ins::RESTORE, p1, p2, d))
            }
            OP_RECORD => {
                let Some(a) = input.byte() else { break };
                let b = fx.backup(a & 0x80 != 0);
                let i = (a & 0x7F) as usize % b.records.len();
                Some((ins::RESTORE_DATA, 0, 0, b.records[i].clone()))
            }
            OP_TRAILER => {
                let Some(a) = input.byte() else { break };
                Some((ins::RESTORE_DATA, 1, 0, fx.backup(a & 1 != 0).trailer.clone()))
            }
            OP_COMPLETE => Some((ins::RESTORE_COMPLETE, 0, 0, Vec::new())),
            OP_RAW_DATA => {
                let (Some(a), Some(d)) = (input.byte(), input.lv16()) else {
                    break;
                };
                Some((ins::RESTORE_DATA, a & 3, 0, d.to_vec()))
            }
            OP_XOR => {
                let (Some(off), Some(v)) = (input.u16(), input.byte()) else {
                    break;
                };
                edits.push((false, off, if v == 0 { 1 } else { v }));
                None
            }
            OP_TRUNCATE => {
                let Some(off) = input.u16() else { break };
                edits.push((true, off, 0));
                None
            }
            OP_CHALLENGE => Some((ins::GET_RESTORE_CHALLENGE, 0, 0, Vec::new())),
            OP_RESET => {
                card.reset();
                login(&mut card, admin, false);
                None
            }
            _ => {
                let Some(raw) = input.lv16() else { break };
                let (_, sw) = checked_tx(&mut card, raw);
                log.push((raw.get(1).copied().unwrap_or(0), sw));
                after(fx, &card, raw, sw, data);
                None
            }
        };
        let Some((ins, p1, p2, mut d)) = cmd else { continue };
        if !d.is_empty() {
            for (cut, off, v) in edits.drain(..) {
                if cut {
                    d.truncate(off as usize % (d.len() + 1));
                } else if !d.is_empty() {
                    let i = off as usize % d.len();
                    d[i] ^= v;
                }
            }
        }
        let ne = if ins == cardvault_proto::ins::RESTORE_COMPLETE || ins == cardvault_proto::ins::GET_RESTORE_CHALLENGE
        {
            256
        } else {
            0
        };
        let raw = apdu(0x80, ins, p1, p2, &d, ne);
        let (_, sw) = checked_tx(&mut card, &raw);
        log.push((ins, sw));
        after(fx, &card, &raw, sw, data);
    }
    fx.give_back(other, card);
    log
}

/// A successful RESTORE COMPLETE must have put a genuine backup's contents on the card.
fn after(fx: &Fixture, card: &Card, raw: &[u8], sw: u16, input: &[u8]) {
    // CLA 80 exactly: with the chaining bit (90) the card only collects data.
    if raw.len() >= 2 && raw[0] == 0x80 && raw[1] == ins::RESTORE_COMPLETE && crate::is_success(sw) {
        let m = &card.state().memory;
        assert!(
            *m == fx.mem1 || *m == fx.mem2,
            "RESTORE COMPLETE accepted content that is no genuine backup's (input {})",
            to_hex(input)
        );
    }
}

pub fn fuzz_restore_records(data: &[u8]) {
    FIXTURE.with(|f| {
        let mut f = f.borrow_mut();
        let fx = f.get_or_insert_with(Fixture::new);
        run(fx, data);
    });
}
