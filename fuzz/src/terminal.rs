//! Fuzz target `terminal_workflows`: the fuzzer plays the card to the
//! terminal. One of the terminal's workflows (status, issue, duplicate,
//! encrypt, decrypt, recover, backup, restore, load, destroy, release,
//! store) runs against
//! prepared
//! in-memory cards; the card the workflow's hostile side uses answers every
//! command APDU from the input's script instead of (or by) the genuine card.
//!
//! Input: a workflow byte (`% 12`), then steps, one per command APDU the
//! hostile card receives:
//! - `00`: the genuine card answers;
//! - `01` L (2) bytes: the card answers these L bytes, whatever they are
//!   (data and status word, a lone byte, nothing);
//! - `02` n: the genuine card's answer with its last byte xored with n
//!   (status words bent: 9000 → 90xx, 6310 → 63xx ...);
//! - `03` i n: the genuine answer with byte i (mod its length) xored with n;
//!
//! and, once the steps run out, the genuine card answers. The hostile card is
//! the main card (status, encrypt, decrypt, backup, restore, load: GET LOAD
//! CHALLENGE then CREDIT signed with the issuer key), the blank card
//! (issue), the main card of the pair (duplicate) or the backup card
//! (recover, destroy: DESTROY KEY of the key it imported from the main card),
//! the main card again for release (RELEASE DUPLICATE in the test issuer's
//! SCP11a session, with the backup card's signed DESTROY KEY receipt and its
//! signing certificate), and a `services` card for store (STORING REQUEST,
//! the test issuer and provider sign, STORE DATA UNDER AUTHORIZATION).
//!
//! Checked: no panic; the workflow ends with Ok or with an error of exit code
//! 4, 5 or 6 (or, for restore, the refusal to restore onto a card that names
//! itself as another card without an issuer authorization) whose message is
//! one line; a decryption that succeeds gives the
//! file's plaintext; the terminal exchanged at most [`MAX_APDUS`] APDUs
//! (the steps cannot exceed the input, and every loop the card drives is
//! bounded, so this only fails on an unbounded loop). libFuzzer's
//! `-rss_limit_mb` (2048 in .ci/fuzz.sh) bounds memory, `-timeout` time.

use crate::{profile, Input, PIN};
use applet_sim::{Card, CardState};
use cardvault::card::{CardClient, SessionOptions};
use cardvault::transport::hostile::{Answer, HostileReader, Seen};
use cardvault::transport::{Caps, Reader, Transmit, TransportError};
use cardvault::vault::Vault;
use cardvault::workflow::{backup as wb, duplicate, files, issue, keygroup, purse};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use zeroize::Zeroizing;

/// Workflows, in the order of the input's first byte.
pub const WORKFLOWS: [&str; 12] = [
    "status",
    "issue",
    "duplicate",
    "encrypt",
    "decrypt",
    "recover",
    "backup",
    "restore",
    "load",
    "destroy",
    "release",
    "store",
];

/// Most APDUs one run may exchange with all its cards.
pub const MAX_APDUS: u64 = 4096;

const FILE_PLAINTEXT: &[u8] = b"a file for the main card";

/// A reader over an in-memory card.
pub struct MemReader {
    name: String,
    card: Card,
    atr: Vec<u8>,
}

impl MemReader {
    pub fn new(name: &str, state: &CardState) -> MemReader {
        let card = Card::from_state(state.clone());
        let atr = card.atr();
        MemReader {
            name: format!("mem:{name}"),
            card,
            atr,
        }
    }
    pub fn state(&self) -> &CardState {
        self.card.state()
    }
}

impl Reader for MemReader {
    fn name(&self) -> &str {
        &self.name
    }
    fn atr(&self) -> &[u8] {
        &self.atr
    }
    fn caps(&self) -> Caps {
        Caps { extended: true }
    }
    fn built_in_root(&self) -> Option<&'static [u8]> {
        Some(applet_sim::test_issuer::ROOT_PEM)
    }
    fn transaction(&mut self) -> Result<Box<dyn Transmit + '_>, TransportError> {
        Ok(Box::new(MemTransmit(&mut self.card)))
    }
}

struct MemTransmit<'a>(&'a mut Card);

impl Transmit for MemTransmit<'_> {
    fn transmit(&mut self, cmd: &[u8], resp: &mut Vec<u8>) -> Result<(), TransportError> {
        self.0.transmit_into(cmd, resp);
        Ok(())
    }
}

/// The prepared cards and files every run starts from.
pub struct Prepared {
    main: CardState,
    backup: CardState,
    new_main: CardState,
    blank: CardState,
    pair_main: CardState,
    pair_backup: CardState,
    /// A pre-issued `services` card (storing authorization).
    services: CardState,
    /// What `backup` answers to DESTROY KEY of `main`'s key (made on a
    /// copy of it), for RELEASE DUPLICATE on `main`.
    release_proof: keygroup::DestroyReceipt,
    encrypted: Vec<u8>,
    /// A vault holding one full backup of `main`.
    vault: Vec<u8>,
    dir: PathBuf,
}

fn holder() -> issue::Holder {
    issue::Holder {
        id: "fuzz".into(),
        pin: Zeroizing::new(PIN.to_vec()),
        member_number: Some("M-1".into()),
        expiry: Some("2030-01".into()),
        key1: None,
    }
}

fn issue_opts() -> issue::IssueOptions {
    issue::IssueOptions {
        issuer: None,
        factory_issuer: None,
        key_group_size: 3,
        no_export_after_backup: false,
        domain: None,
        registrars: None,
    }
}

fn dup_opts() -> duplicate::DuplicateOptions {
    duplicate::DuplicateOptions {
        main_pin: Zeroizing::new(PIN.to_vec()),
        backup_pin: Zeroizing::new(PIN.to_vec()),
        elements: vec![
            Zeroizing::new(crate::ELEMENT2.to_vec()),
            Zeroizing::new(crate::ELEMENT3.to_vec()),
        ],
        backup_gets_public_key: false,
    }
}

/// The test issuer's operator (fixtures/issuer/): the SCP11a issuer session.
fn test_operator() -> cardvault::card::IssuerAuth {
    static OP: OnceLock<Arc<cardvault::issuer::IssuerCredentials>> = OnceLock::new();
    let c = OP.get_or_init(|| {
        use applet_sim::test_issuer as t;
        Arc::new(
            cardvault::issuer::IssuerCredentials::from_built_in(&cardvault::transport::BuiltInIssuer {
                root: t::ROOT_PEM,
                root_key: t::ROOT_KEY_PEM,
                oce: t::OCE_PEM,
                oce_key: t::OCE_KEY_PEM,
                issuer_registrar: applet_sim::test_registrars::ISSUER_REGISTRAR_PEM,
                data_registrar: applet_sim::test_registrars::DATA_REGISTRAR_PEM,
            })
            .expect("the test issuer"),
        )
    });
    cardvault::card::IssuerAuth::Operator(c.clone())
}

fn open(r: &mut dyn Reader) -> cardvault::Result<CardClient<'_>> {
    CardClient::open(r, SessionOptions::default())
}

/// A scratch directory of this process for vault files.
fn scratch() -> PathBuf {
    let d = std::env::temp_dir().join(format!("cardvault-fuzz-terminal-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("scratch directory");
    d
}

pub fn prepared() -> &'static Prepared {
    static P: OnceLock<Prepared> = OnceLock::new();
    P.get_or_init(|| {
        let dir = scratch();
        let fresh = |p: &str| Card::in_memory(profile(p)).state().clone();
        let (pair_main, pair_backup) = (fresh("main"), fresh("backup"));
        let (mut m, mut b) = (
            MemReader::new("main", &pair_main),
            MemReader::new("backup", &pair_backup),
        );
        let vault_path = dir.join("template.sqlite");
        let _ = std::fs::remove_file(&vault_path);
        {
            let mut v = Vault::open(&vault_path).expect("vault");
            let (mut mc, mut bc) = (open(&mut m).expect("main"), open(&mut b).expect("backup"));
            duplicate::duplicate(&mut mc, &mut bc, &dup_opts(), &mut v).expect("duplicate");
        }
        let public = open(&mut m).expect("main").public_key().expect("key").expect("a key");
        let mut encrypted = Vec::new();
        {
            let (plain, enc) = (dir.join("plain"), dir.join("f.cve"));
            std::fs::write(&plain, FILE_PLAINTEXT).expect("plain");
            let _ = std::fs::remove_file(&enc);
            cardvault::fileenc::encrypt_file(&plain, &enc, &public, true).expect("encrypt");
            encrypted.extend(std::fs::read(&enc).expect("encrypted file"));
        }
        {
            let mut v = Vault::open(&vault_path).expect("vault");
            let mut c = open(&mut m).expect("main");
            c.verify_pin(PIN).expect("PIN");
            wb::backup(&mut c, &mut v, true, &|_, _| {}).expect("backup");
        }
        let vault = std::fs::read(&vault_path).expect("vault bytes");
        let mut n = MemReader::new("new", &fresh("replacement"));
        {
            let mut c = open(&mut n).expect("new");
            c.verify_pin(PIN).expect("PIN");
            c.write_key_element(2, &[4u8; 32]).expect("element 2");
            c.write_key_element(3, &[5u8; 32]).expect("element 3");
            c.generate_key_pair().expect("key pair");
        }
        let release_proof = {
            let mut copy = MemReader::new("backup", b.state());
            let _ = std::fs::remove_file(dir.join("destroy.sqlite"));
            let mut v = Vault::open(&dir.join("destroy.sqlite")).expect("vault");
            let (number, counter) = (m.state().card_number.clone(), m.state().export.counter);
            let mut c = open(&mut copy).expect("backup");
            keygroup::destroy(&mut c, &mut v, PIN, &number, counter).expect("DESTROY KEY")
        };
        let services = {
            let mut sp = applet_sim::Profile::load("services").expect("built-in profile");
            sp.card_number = Some("5555666677778888".into());
            Card::in_memory(&sp).state().clone()
        };
        Prepared {
            services,
            release_proof,
            main: m.state().clone(),
            backup: b.state().clone(),
            new_main: n.state().clone(),
            blank: fresh("blank"),
            pair_main,
            pair_backup,
            encrypted,
            vault,
            dir,
        }
    })
}

/// The hostile card's script, from the input.
struct Script<'a> {
    input: Input<'a>,
}

impl Script<'_> {
    fn answer(&mut self, genuine: &mut dyn FnMut() -> Vec<u8>) -> Vec<u8> {
        match self.input.byte().map(|b| b % 4) {
            None | Some(0) => genuine(),
            Some(1) => self.input.lv16().map(<[u8]>::to_vec).unwrap_or_default(),
            Some(2) => {
                let x = self.input.byte().unwrap_or(0);
                let mut r = genuine();
                if let Some(last) = r.last_mut() {
                    *last ^= x;
                }
                r
            }
            Some(_) => {
                let (i, x) = (self.input.u16().unwrap_or(0) as usize, self.input.byte().unwrap_or(0));
                let mut r = genuine();
                if !r.is_empty() {
                    let n = r.len();
                    r[i % n] ^= x;
                }
                r
            }
        }
    }
}

/// A reader whose card answers by the script: a genuine in-memory card
/// behind a [`HostileReader`] that asks the script first.
fn hostile<'s, 'd: 's>(
    name: &str,
    state: &CardState,
    script: &'s std::cell::RefCell<Script<'d>>,
    seen: &Arc<Seen>,
) -> Box<dyn Reader + 's> {
    // The genuine answer is needed inside the closure: a second copy of the
    // card answers there, the wrapped one only when the script says so.
    let mut shadow = Card::from_state(state.clone());
    let inner = MemReader::new(name, state);
    Box::new(HostileReader::new(inner, seen.clone(), move |cmd: &[u8]| {
        let mut genuine = || shadow.transmit(cmd);
        Answer::Reply(script.borrow_mut().answer(&mut genuine))
    }))
}

/// Run one input.
pub fn fuzz_terminal(data: &[u8]) {
    let p = prepared();
    let Some((&w, rest)) = data.split_first() else {
        return;
    };
    let workflow = WORKFLOWS[w as usize % WORKFLOWS.len()];
    let script = std::cell::RefCell::new(Script {
        input: Input::new(rest),
    });
    let seen = Seen::new();
    let vault_path = p.dir.join("run.sqlite");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", vault_path.display()));
    }
    std::fs::write(&vault_path, &p.vault).expect("vault copy");
    let r = run(workflow, p, &script, &seen, &vault_path);
    if let Err(e) = &r {
        let msg = e.to_string();
        // A card that names itself as another card is not restored onto
        // without the issuer's authorization: refused before any write.
        let restore_refusal = matches!(e, cardvault::Error::Restore(_));
        assert!(
            [4, 5, 6].contains(&e.exit_code()) || restore_refusal,
            "{workflow}: exit code {} for '{msg}'",
            e.exit_code()
        );
        assert!(!msg.contains('\n'), "{workflow}: message of several lines: {msg}");
    }
    assert!(seen.apdus() <= MAX_APDUS, "{workflow}: {} APDUs", seen.apdus());
}

fn run(
    workflow: &str,
    p: &Prepared,
    script: &std::cell::RefCell<Script<'_>>,
    seen: &Arc<Seen>,
    vault_path: &Path,
) -> cardvault::Result<()> {
    match workflow {
        "status" => {
            let mut r = hostile("main", &p.main, script, seen);
            let mut c = open(r.as_mut())?;
            c.overview().map(|_| ())
        }
        "issue" => {
            let mut r = hostile("blank", &p.blank, script, seen);
            let mut c = open(r.as_mut())?;
            issue::personalize(&mut c, &holder(), issue::Role::Main, &[7u8; 32], &issue_opts()).map(|_| ())
        }
        "duplicate" => {
            let mut m = hostile("main", &p.pair_main, script, seen);
            let mut b = MemReader::new("backup", &p.pair_backup);
            let mut v = Vault::open(vault_path)?;
            let (mut m, mut b) = (open(m.as_mut())?, open(&mut b)?);
            duplicate::duplicate(&mut m, &mut b, &dup_opts(), &mut v).map(|_| ())
        }
        "encrypt" => {
            let mut r = hostile("main", &p.main, script, seen);
            let public = open(r.as_mut())?
                .public_key()?
                .ok_or_else(|| cardvault::Error::Refused("no encryption key".into()))?;
            let (plain, enc) = (p.dir.join("run-plain"), p.dir.join("run.cve"));
            std::fs::write(&plain, FILE_PLAINTEXT).expect("plain");
            cardvault::fileenc::encrypt_file(&plain, &enc, &public, true)
                .map(|_| ())
                .map_err(|e| files::file_error(&enc, e))
        }
        "decrypt" => {
            let mut r = hostile("main", &p.main, script, seen);
            let mut c = open(r.as_mut())?;
            c.verify_pin(PIN)?;
            let mut out = Vec::new();
            cardvault::fileenc::decrypt(&p.encrypted[..], &mut out, None, files::card_unwrapper(&mut c))
                .map_err(|e| files::file_error(Path::new("f.cve"), e))?;
            assert_eq!(out, FILE_PLAINTEXT, "decrypt: Ok with the wrong plaintext");
            Ok(())
        }
        "recover" => {
            let path = p.dir.join("run-recover.cve");
            std::fs::write(&path, &p.encrypted).expect("file copy");
            let mut b = hostile("backup", &p.backup, script, seen);
            let mut n = MemReader::new("new", &p.new_main);
            let (mut b, mut n) = (open(b.as_mut())?, open(&mut n)?);
            b.verify_pin(PIN)?;
            n.verify_pin(PIN)?;
            let public = n.public_key()?.expect("the new card's key");
            files::recover_file(&mut b, &mut n, &public, &path).map(|_| ())
        }
        "backup" => {
            let mut r = hostile("main", &p.main, script, seen);
            let mut c = open(r.as_mut())?;
            c.verify_pin(PIN)?;
            let mut v = Vault::open(vault_path)?;
            wb::backup(&mut c, &mut v, true, &|_, _| {}).map(|_| ())
        }
        "load" => {
            let issuer = crate::issuer_signer();
            let mut r = hostile("main", &p.main, script, seen);
            let mut c = open(r.as_mut())?;
            purse::credit_with_issuer_key(&mut c, PIN, 1, 700, &issuer).map(|_| ())
        }
        "destroy" => {
            let source = p
                .backup
                .main_key
                .as_ref()
                .expect("the imported key")
                .source_card
                .clone();
            let counter = p.main.export.counter;
            let mut v = Vault::open(vault_path)?;
            let mut r = hostile("backup", &p.backup, script, seen);
            let mut c = open(r.as_mut())?;
            keygroup::destroy(&mut c, &mut v, PIN, &source, counter).map(|_| ())
        }
        "release" => {
            let mut v = Vault::open(vault_path)?;
            let mut r = hostile("main", &p.main, script, seen);
            let mut c = open(r.as_mut())?;
            keygroup::release(&mut c, &mut v, &test_operator(), Some(&p.release_proof)).map(|_| ())
        }
        "store" => {
            use applet_sim::test_registrars as reg;
            use cardvault::workflow::storing::{self, PartyCredentials};
            use cardvault_proto::storing::{Party, RegistrarRoots};
            let data = b"a record for the medical application";
            let sdi = storing::store_info(4, data, None)?;
            let mut v = Vault::open(vault_path)?;
            let mut r = hostile("services", &p.services, script, seen);
            let mut c = open(r.as_mut())?;
            let req = storing::request(&mut c, PIN, &sdi)?;
            let issuer = PartyCredentials::from_pem(Party::Issuer, reg::ISSUER_KEY_PEM, reg::ISSUER_PEM)?;
            let provider = PartyCredentials::from_pem(Party::Provider, reg::PROVIDER_KEY_PEM, reg::PROVIDER_PEM)?;
            let issuer_roots = [applet_sim::test_issuer::root()];
            let root = |der: Vec<u8>| {
                cardvault_proto::cert::split_certificates(&der)
                    .expect("a test registrar root")
                    .remove(0)
            };
            let roots = RegistrarRoots {
                issuer_registrar: root(reg::issuer_registrar_der()),
                data_registrar: root(reg::data_registrar_der()),
            };
            let sar = storing::countersign(&req, &issuer, &issuer_roots)?;
            let sa = storing::authorize(&sar, &provider, &roots, &issuer_roots)?;
            storing::apply(&mut c, PIN, &sa, Some(data), &mut v).map(|_| ())
        }
        _ => {
            let mut v = Vault::open(vault_path)?;
            let last = v.latest_backup(&p.main.card_number)?.expect("the prepared backup");
            let chain = v.chain_to(&last)?;
            let mut r = hostile("main", &p.main, script, seen);
            let mut c = open(r.as_mut())?;
            c.verify_pin(PIN)?;
            let plan = wb::RestorePlan {
                chain,
                authorization: None,
                override_rollback: false,
            };
            wb::restore(&mut c, &mut v, &plan, &|_, _| {}).map(|_| ())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With the genuine card answering everything, release and store succeed:
    /// the hostile runs start from a workflow that works.
    #[test]
    fn genuine_release_and_store_succeed() {
        let p = prepared();
        for workflow in ["release", "store"] {
            let script = std::cell::RefCell::new(Script { input: Input::new(&[]) });
            let seen = Seen::new();
            let vault_path = p.dir.join(format!("genuine-{workflow}.sqlite"));
            let _ = std::fs::remove_file(&vault_path);
            std::fs::write(&vault_path, &p.vault).expect("vault copy");
            run(workflow, p, &script, &seen, &vault_path).unwrap_or_else(|e| panic!("{workflow}: {e}"));
            assert!(seen.apdus() > 0);
        }
    }
}
