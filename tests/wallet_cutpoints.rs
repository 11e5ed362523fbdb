//! Deposit and withdraw cut at every APDU (the card pulled, its answer lost
//! or the command never delivered) and at every safe request (the request
//! lost, or the safe committed and its answer lost), then retried. After
//! each cut: every item is in exactly one place (the wallet, or the safe not
//! yet withdrawn), the total value is what it was, no item is both
//! spendable on the card and withdrawable from the safe; the retry
//! (`resolve`, then the operation again if it is still to do) ends where an
//! uninterrupted run ends.

mod common;

use cardvault::card::{CardClient, SessionOptions};
use cardvault::safe::fault::{SafeFault, SafeFaultSchedule};
use cardvault::safe::{SafeAddress, SafeClient};
use cardvault::transport::fault::{FaultyReader, PullMode, PullSchedule};
use cardvault::transport::sim::SimReader;
use cardvault::vault::Vault;
use cardvault::workflow::deposit::{self as wd, CertificateSource};
use cardvault::workflow::wallet::{self as ww, ItemSpec};
use cardvault_proto::safe::summary_field;
use cardvault_proto::to_hex;
use cardvault_proto::wallet::ItemState;
use common::*;
use std::path::Path;
use std::sync::Arc;

const TOTAL: u64 = 350;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let (p, name) = (e.path(), e.file_name());
        if name.to_string_lossy().ends_with(".lock") {
            continue;
        }
        if p.is_dir() {
            copy_dir(&p, &to.join(&name));
        } else {
            std::fs::copy(&p, to.join(&name)).unwrap();
        }
    }
}

fn cash(amount: u32) -> ItemSpec {
    ItemSpec {
        kind: "cash".into(),
        name: format!("cash {amount}"),
        unit_price: amount,
        quantity: 1,
        place: String::new(),
        valid_from: None,
        valid_until: None,
        remarks: String::new(),
    }
}

fn safe_addr(home: &Path) -> SafeAddress {
    SafeAddress::Dir(home.join("safe"))
}

/// A home with card `c` holding items of 300 and 50 (the 300 one is
/// returned) and an empty safe.
fn template(tag: &str) -> (TempDir, String) {
    let home = temp_dir(tag);
    cardvault::safe::init(&home.join("safe"), &test_issuer_dir()).unwrap();
    let mut r = SimReader::open(&home, "c", "main", None).unwrap();
    let mut c = CardClient::open(&mut r, SessionOptions::default()).unwrap();
    let a = ww::load_with_signer(&mut c, PIN.as_bytes(), &cash(300), &issuer_signer()).unwrap();
    ww::load_with_signer(&mut c, PIN.as_bytes(), &cash(50), &issuer_signer()).unwrap();
    drop(c);
    Vault::open(&home.join("vault.sqlite")).unwrap();
    (home, a.item.id)
}

type Op = dyn Fn(&mut CardClient<'_>, &mut SafeClient, &mut Vault, &SafeAddress) -> cardvault::Result<()>;

fn run_op(home: &Path, pull: &Arc<PullSchedule>, fail: &Arc<SafeFaultSchedule>, op: &Op) -> cardvault::Result<()> {
    let mut r = FaultyReader::new(SimReader::open(home, "c", "main", None).unwrap(), pull.clone());
    let mut safe = SafeClient::connect(&safe_addr(home)).unwrap().faulty(fail.clone());
    let mut vault = Vault::open(&home.join("vault.sqlite")).unwrap();
    let mut c = CardClient::open(&mut r, SessionOptions::default())?;
    op(&mut c, &mut safe, &mut vault, &safe_addr(home))
}

fn deposit_op(id: String) -> Box<Op> {
    Box::new(move |c, s, v, addr| wd::deposit(c, PIN.as_bytes(), &id, addr, s, v, summary_field::DEFAULT).map(|_| ()))
}

fn withdraw_op(id: String) -> Box<Op> {
    Box::new(move |c, s, v, _| {
        wd::withdraw(c, PIN.as_bytes(), &CertificateSource::Card(id.clone()), s, v, None).map(|_| ())
    })
}

/// Every item in exactly one place, the total conserved, nothing spendable
/// on the card and withdrawable from the safe at once.
fn check_conserved(home: &Path, what: &str) {
    let st = state(home, "c");
    let w = st.wallet.clone();
    let items: Vec<(ItemState, cardvault_proto::wallet::WalletItem)> = w
        .items
        .iter()
        .map(|h| {
            (
                ItemState::from_code(h.state).unwrap(),
                cardvault_proto::wallet::WalletItem::parse(&h.item).unwrap(),
            )
        })
        .collect();
    let rows = cardvault::safe::Safe::open(&home.join("safe")).unwrap().list().unwrap();
    let received: Vec<u64> = w.received.iter().map(|r| r.counter).collect();
    let mut total = 0u64;
    let mut ids: Vec<String> = items.iter().map(|(_, i)| to_hex(&i.id)).collect();
    ids.extend(rows.iter().map(|r| r.item_id.clone()));
    ids.sort();
    ids.dedup();
    for id in ids {
        let on_card = items.iter().find(|(_, i)| to_hex(&i.id) == id);
        let in_safe: Vec<_> = rows
            .iter()
            .filter(|r| r.item_id == id && r.state != "withdrawn")
            .collect();
        assert!(in_safe.len() <= 1, "{what}: item {id} twice in the safe: {in_safe:?}");
        let safe_live = in_safe
            .first()
            .filter(|r| !(r.state == "delivering" && received.contains(&r.counter)));
        let places = match (on_card, safe_live) {
            (Some((ItemState::Held, i)), None) => {
                total += i.balance as u64;
                1
            }
            (Some((ItemState::DepositPending, i)), _) => {
                // Pending: on the card or in the safe, counted once.
                total += i.balance as u64;
                1
            }
            (None, Some(r)) => {
                total += r.amount.unwrap() as u64;
                1
            }
            (None, None) => 0,
            (Some((ItemState::Held, _)), Some(r)) => {
                panic!("{what}: item {id} spendable on the card and {} in the safe", r.state)
            }
        };
        assert_eq!(places, 1, "{what}: item {id} is nowhere");
    }
    assert_eq!(total, TOTAL, "{what}: value not conserved");
}

/// The retry: settle, then do the operation if it is still to do.
fn retry(home: &Path, id: &str, deposit: bool) {
    let mut r = SimReader::open(home, "c", "main", None).unwrap();
    let mut c = CardClient::open(&mut r, SessionOptions::default()).unwrap();
    let addr = safe_addr(home);
    let mut safe = SafeClient::connect(&addr).unwrap();
    let mut vault = Vault::open(&home.join("vault.sqlite")).unwrap();
    wd::resolve(&mut c, PIN.as_bytes(), &addr, &mut safe, &mut vault).unwrap();
    let listing = ww::list(&mut c).unwrap();
    let on_card = listing.items.iter().any(|(_, i)| to_hex(&i.id) == id);
    if deposit && on_card {
        wd::deposit(
            &mut c,
            PIN.as_bytes(),
            id,
            &addr,
            &mut safe,
            &mut vault,
            summary_field::DEFAULT,
        )
        .unwrap();
    }
    if !deposit && !on_card {
        wd::withdraw(
            &mut c,
            PIN.as_bytes(),
            &CertificateSource::Card(id.into()),
            &mut safe,
            &mut vault,
            None,
        )
        .unwrap();
    }
}

/// Where an uninterrupted run ends.
fn check_end(home: &Path, id: &str, deposited: bool, what: &str) {
    check_conserved(home, what);
    let st = state(home, "c");
    let w = st.wallet.clone();
    let on_card: Vec<String> = w
        .items
        .iter()
        .map(|h| to_hex(&cardvault_proto::wallet::WalletItem::parse(&h.item).unwrap().id))
        .collect();
    assert!(w.items.iter().all(|h| h.state == 0), "{what}: an item is left pending");
    let rows = cardvault::safe::Safe::open(&home.join("safe")).unwrap().list().unwrap();
    assert_eq!(rows.len(), 1, "{what}: one deposit in the safe: {rows:?}");
    if deposited {
        assert_eq!(on_card.len(), 1, "{what}");
        assert!(!on_card.contains(&id.to_string()), "{what}");
        assert_eq!(w.certificates.len(), 1, "{what}");
        assert_eq!(rows[0].state, "stored", "{what}");
    } else {
        assert_eq!(on_card.len(), 2, "{what}");
        assert!(w.certificates.is_empty(), "{what}");
        assert_eq!(rows[0].state, "withdrawn", "{what}");
        let copies = Vault::open(&home.join("vault.sqlite"))
            .unwrap()
            .wallet_certificates(None)
            .unwrap();
        assert!(
            copies[0].withdrawn_at.is_some(),
            "{what}: the vault's copy is not marked withdrawn"
        );
    }
}

/// Cut `op` at every APDU and every safe request of an uninterrupted run
/// from `template`; returns (APDUs, safe requests, cut points tried).
fn cut_everywhere(name: &str, template: &Path, id: &str, op: &Op, deposit: bool) -> (u64, u64, u64) {
    let base = temp_dir(&format!("{name}-count"));
    copy_dir(template, &base);
    let (pull, fail) = (PullSchedule::counting(), SafeFaultSchedule::counting());
    run_op(&base, &pull, &fail, op).unwrap();
    check_end(&base, id, deposit, &format!("{name} uninterrupted"));
    let (n, m) = (pull.delivered(), fail.calls());
    let mut tried = 0;
    for k in 1..=n {
        for mode in [PullMode::AnswerLost, PullMode::NotDelivered] {
            tried += 1;
            let what = format!("{name} card pulled at APDU {k} ({mode:?})");
            let dir = temp_dir(&format!("{name}-apdu-{k}"));
            copy_dir(template, &dir);
            let sched = PullSchedule::new(k, mode);
            let r = run_op(&dir, &sched, &SafeFaultSchedule::counting(), op);
            assert!(sched.pulled(), "{what}: never fired");
            assert!(matches!(r, Err(cardvault::Error::CardRemoved(_))), "{what}: {r:?}");
            check_conserved(&dir, &what);
            retry(&dir, id, deposit);
            check_end(&dir, id, deposit, &format!("{what}, retried"));
        }
    }
    for j in 1..=m {
        for mode in [SafeFault::RequestLost, SafeFault::AnswerLost] {
            tried += 1;
            let what = format!("{name} safe failed at request {j} ({mode:?})");
            let dir = temp_dir(&format!("{name}-safe-{j}"));
            copy_dir(template, &dir);
            let sched = SafeFaultSchedule::new(j, mode);
            let r = run_op(&dir, &PullSchedule::counting(), &sched, op);
            assert!(sched.fired(), "{what}: never fired");
            assert!(
                matches!(r, Ok(()) | Err(cardvault::Error::SafeUnreachable { .. })),
                "{what}: {r:?}"
            );
            check_conserved(&dir, &what);
            retry(&dir, id, deposit);
            check_end(&dir, id, deposit, &format!("{what}, retried"));
        }
    }
    println!(
        "cut points {name}: {n} APDUs x 2 pull modes + {m} safe requests x 2 fault modes = {tried} tried, all converged"
    );
    (n, m, tried)
}

#[test]
fn deposit_cut_at_every_apdu_and_every_safe_request_conserves_value_and_converges() {
    let (home, id) = template("cut-deposit");
    let (n, m, tried) = cut_everywhere("deposit", &home, &id, &deposit_op(id.clone()), true);
    assert!(n >= 4 && m == 2, "{n} APDUs, {m} safe requests");
    assert_eq!(tried, 2 * (n + m));
}

#[test]
fn withdraw_cut_at_every_apdu_and_every_safe_request_conserves_value_and_converges() {
    let (home, id) = template("cut-withdraw");
    // Deposited first: the template of the withdrawal.
    retry(&home, &id, true);
    check_end(&home, &id, true, "template");
    let (n, m, tried) = cut_everywhere("withdraw", &home, &id, &withdraw_op(id.clone()), false);
    assert!(n >= 4 && m == 2, "{n} APDUs, {m} safe requests");
    assert_eq!(tried, 2 * (n + m));
}

/// One run of an exchange under a card pull and a safe fault schedule.
type Run<'a> = dyn Fn(&Path, &Arc<PullSchedule>, &Arc<SafeFaultSchedule>) -> cardvault::Result<()> + 'a;

/// The generic loop: count an uninterrupted run, then cut it at every APDU
/// and every safe request, check the cut, retry and check the end.
fn cut_loop(
    name: &str,
    template: &Path,
    run: &Run<'_>,
    check_cut: &dyn Fn(&Path, &str),
    retry_and_check: &dyn Fn(&Path, &str),
) -> (u64, u64, u64) {
    let base = temp_dir(&format!("{name}-count"));
    copy_dir(template, &base);
    let (pull, fail) = (PullSchedule::counting(), SafeFaultSchedule::counting());
    run(&base, &pull, &fail).unwrap();
    retry_and_check(&base, &format!("{name} uninterrupted"));
    let (n, m) = (pull.delivered(), fail.calls());
    let mut tried = 0;
    for k in 1..=n {
        for mode in [PullMode::AnswerLost, PullMode::NotDelivered] {
            tried += 1;
            let what = format!("{name} card pulled at APDU {k} ({mode:?})");
            let dir = temp_dir(&format!("{name}-apdu-{k}"));
            copy_dir(template, &dir);
            let sched = PullSchedule::new(k, mode);
            let r = run(&dir, &sched, &SafeFaultSchedule::counting());
            assert!(sched.pulled(), "{what}: never fired");
            assert!(matches!(r, Err(cardvault::Error::CardRemoved(_))), "{what}: {r:?}");
            check_cut(&dir, &what);
            retry_and_check(&dir, &what);
        }
    }
    for j in 1..=m {
        for mode in [SafeFault::RequestLost, SafeFault::AnswerLost] {
            tried += 1;
            let what = format!("{name} safe failed at request {j} ({mode:?})");
            let dir = temp_dir(&format!("{name}-safe-{j}"));
            copy_dir(template, &dir);
            let sched = SafeFaultSchedule::new(j, mode);
            let r = run(&dir, &PullSchedule::counting(), &sched);
            assert!(sched.fired(), "{what}: never fired");
            assert!(
                matches!(r, Ok(()) | Err(cardvault::Error::SafeUnreachable { .. })),
                "{what}: {r:?}"
            );
            check_cut(&dir, &what);
            retry_and_check(&dir, &what);
        }
    }
    println!(
        "cut points {name}: {n} APDUs x 2 pull modes + {m} safe requests x 2 fault modes = {tried} tried, all converged"
    );
    (n, m, tried)
}

const OWNER: &[u8] = b"owner password";

/// Card `c` with its 300 item in `safe`, its 50 item held, a second safe.
fn escrow_template(tag: &str) -> (TempDir, String) {
    let (home, id) = template(tag);
    cardvault::safe::init(&home.join("safe2"), &test_issuer_dir()).unwrap();
    retry(&home, &id, true);
    (home, id)
}

fn two_safes(home: &Path, fail: &Arc<SafeFaultSchedule>) -> Vec<(SafeAddress, SafeClient)> {
    ["safe", "safe2"]
        .iter()
        .map(|n| {
            let a = SafeAddress::Dir(home.join(n));
            let c = SafeClient::connect(&a).unwrap().faulty(fail.clone());
            (a, c)
        })
        .collect()
}

fn escrow_rows(home: &Path) -> Vec<Option<Vec<u8>>> {
    ["safe", "safe2"]
        .iter()
        .map(|n| {
            let db = rusqlite::Connection::open(home.join(n).join("safe.sqlite")).unwrap();
            db.query_row("SELECT part FROM escrow", [], |r| r.get(0)).ok()
        })
        .collect()
}

#[test]
fn escrow_cut_at_every_apdu_and_every_safe_request_converges() {
    let (home, id) = escrow_template("cut-escrow");
    let run = |dir: &Path, pull: &Arc<PullSchedule>, fail: &Arc<SafeFaultSchedule>| -> cardvault::Result<()> {
        let mut r = FaultyReader::new(SimReader::open(dir, "c", "main", None).unwrap(), pull.clone());
        let mut safes: Vec<SafeClient> = two_safes(dir, fail).into_iter().map(|(_, c)| c).collect();
        let mut c = CardClient::open(&mut r, SessionOptions::default())?;
        cardvault::workflow::escrow::escrow(&mut c, PIN.as_bytes(), OWNER, &mut safes).map(|_| ())
    };
    let check_cut = |dir: &Path, what: &str| {
        // Escrow moves no value: the wallet and the safe are as they were.
        check_conserved(dir, what);
        check_end(dir, &id, true, what);
    };
    let retry_and_check = |dir: &Path, what: &str| {
        run(dir, &PullSchedule::counting(), &SafeFaultSchedule::counting())
            .unwrap_or_else(|e| panic!("{what}: retry: {e}"));
        let key = state(dir, "c").wallet.key.clone();
        let check = cardvault_proto::safe::wallet_key_check(&key);
        let parts: Vec<cardvault_proto::safe::EscrowPart> = escrow_rows(dir)
            .into_iter()
            .map(|p| cardvault_proto::safe::EscrowPart::parse(&p.expect("a part in each safe")).unwrap())
            .collect();
        assert_eq!(
            parts
                .iter()
                .map(|p| (p.index, p.count, p.key_check))
                .collect::<Vec<_>>(),
            vec![(1, 2, check), (2, 2, check)],
            "{what}"
        );
    };
    let (n, m, tried) = cut_loop("escrow", &home, &run, &check_cut, &retry_and_check);
    assert_eq!((m, tried), (4, 2 * (n + 4)));
}

#[test]
fn recover_cut_at_every_apdu_and_every_safe_request_moves_the_item_once() {
    let (home, id) = escrow_template("cut-recover");
    {
        let mut r = SimReader::open(&home, "c", "main", None).unwrap();
        let mut c = CardClient::open(&mut r, SessionOptions::default()).unwrap();
        let mut safes: Vec<SafeClient> = two_safes(&home, &SafeFaultSchedule::counting())
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        cardvault::workflow::escrow::escrow(&mut c, PIN.as_bytes(), OWNER, &mut safes).unwrap();
    }
    let lost = state(&home, "c").card_number.clone();
    // The replacement card, made before the cuts so that each copy has it.
    drop(SimReader::open(&home, "n", "replacement", None).unwrap());
    let run = |dir: &Path, pull: &Arc<PullSchedule>, fail: &Arc<SafeFaultSchedule>| -> cardvault::Result<()> {
        let mut r = FaultyReader::new(SimReader::open(dir, "n", "main", None).unwrap(), pull.clone());
        let mut safes = two_safes(dir, fail);
        let mut vault = Vault::open(&dir.join("vault.sqlite")).unwrap();
        let mut c = CardClient::open(&mut r, SessionOptions::default())?;
        cardvault::workflow::escrow::recover(&mut c, PIN.as_bytes(), OWNER, &lost, &mut safes, &mut vault).map(|_| ())
    };
    let on_n = |dir: &Path| -> Vec<String> {
        state(dir, "n")
            .wallet
            .items
            .iter()
            .map(|h| to_hex(&cardvault_proto::wallet::WalletItem::parse(&h.item).unwrap().id))
            .collect()
    };
    let check_cut = |dir: &Path, what: &str| {
        let rows = cardvault::safe::Safe::open(&dir.join("safe")).unwrap().list().unwrap();
        let received: Vec<u64> = state(dir, "n").wallet.received.iter().map(|r| r.counter).collect();
        let in_safe = rows
            .iter()
            .filter(|r| r.state == "stored" || (r.state == "delivering" && !received.contains(&r.counter)))
            .count();
        let on_card = on_n(dir).iter().filter(|i| **i == id).count();
        assert_eq!(
            in_safe + on_card,
            1,
            "{what}: the item is in {in_safe} safes and {on_card} times on the card"
        );
    };
    let retry_and_check = |dir: &Path, what: &str| {
        run(dir, &PullSchedule::counting(), &SafeFaultSchedule::counting())
            .unwrap_or_else(|e| panic!("{what}: retry: {e}"));
        assert_eq!(on_n(dir), vec![id.clone()], "{what}");
        let rows = cardvault::safe::Safe::open(&dir.join("safe")).unwrap().list().unwrap();
        assert_eq!(
            rows.iter().map(|r| r.state.as_str()).collect::<Vec<_>>(),
            ["withdrawn"],
            "{what}"
        );
        let copies = Vault::open(&dir.join("vault.sqlite"))
            .unwrap()
            .wallet_certificates(None)
            .unwrap();
        assert!(copies.iter().all(|c| c.withdrawn_at.is_some()), "{what}");
    };
    let (n, m, tried) = cut_loop("recover", &home, &run, &check_cut, &retry_and_check);
    assert_eq!(tried, 2 * (n + m));
}
