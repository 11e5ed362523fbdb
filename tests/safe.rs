//! The electronic safe: deposit by registration certificate and withdrawal
//! exactly once, onto the same card with the PIN, onto a replacement card
//! with the issuer's authorization; the refusals; safes as real `safe serve`
//! processes on loopback.

mod common;

use cardvault::card::{CardClient, SessionOptions};
use cardvault::safe::{SafeAddress, SafeClient, SafeRefusal};
use cardvault::transport::sim::SimReader;
use cardvault::vault::Vault;
use cardvault::workflow::deposit as wd;
use cardvault::workflow::wallet::{self as ww, ItemSpec};
use cardvault_proto::safe::summary_field;
use cardvault_proto::wallet::ItemState;
use common::*;
use std::path::Path;

fn cash(amount: u32) -> ItemSpec {
    ItemSpec {
        kind: "cash".into(),
        name: "Transit cash".into(),
        unit_price: amount,
        quantity: 1,
        place: String::new(),
        valid_from: None,
        valid_until: None,
        remarks: String::new(),
    }
}

fn with_card<T>(home: &Path, name: &str, profile: &str, f: impl FnOnce(&mut CardClient<'_>) -> T) -> T {
    let mut r = SimReader::open(home, name, profile, None).unwrap();
    let mut c = CardClient::open(&mut r, SessionOptions::default()).unwrap();
    f(&mut c)
}

/// Load an item of `amount` onto card `name`; returns its id (hex).
fn load(home: &Path, name: &str, amount: u32) -> String {
    with_card(home, name, "main", |c| {
        ww::load_with_signer(c, PIN.as_bytes(), &cash(amount), &issuer_signer())
            .unwrap()
            .item
            .id
    })
}

/// The wallet's total value: held and pending items on the card.
fn card_value(home: &Path, name: &str) -> (u64, u64) {
    with_card(home, name, "main", |c| {
        let l = ww::list(c).unwrap();
        let held = l
            .items
            .iter()
            .filter(|(s, _)| *s == ItemState::Held)
            .map(|(_, i)| i.balance as u64)
            .sum();
        let pending = l
            .items
            .iter()
            .filter(|(s, _)| *s != ItemState::Held)
            .map(|(_, i)| i.balance as u64)
            .sum();
        (held, pending)
    })
}

/// The value the safe holds for nobody yet: items not withdrawn.
fn safe_value(safe: &Path) -> u64 {
    let s = cardvault::safe::Safe::open(safe).unwrap();
    s.list()
        .unwrap()
        .iter()
        .filter(|e| e.state != "withdrawn")
        .map(|e| e.amount.unwrap_or(0) as u64)
        .sum()
}

fn safe_rows(safe: &Path) -> Vec<cardvault::safe::LedgerEntry> {
    cardvault::safe::Safe::open(safe).unwrap().list().unwrap()
}

#[test]
fn deposit_and_withdraw_onto_the_same_card_through_the_cli_exactly_once() {
    let home = temp_dir("safe-same-card");
    let safe = init_safe(&home, "safe1");
    let id = load(&home, "h", 700);
    load(&home, "h", 50);
    assert_eq!(card_value(&home, "h"), (750, 0));

    let o = run(cv(&home)
        .args([
            "-r",
            "sim:h",
            "--json",
            "wallet",
            "deposit",
            &id[..10],
            "--pin",
            "env:P",
            "--safe",
        ])
        .arg(&safe));
    assert!(o.status.success(), "{}", stderr(&o));
    let d = json(&o);
    assert_eq!(d["counter"], 1);
    assert_eq!(d["item"], id.as_str());
    // The value is in exactly one place: the safe.
    assert_eq!(card_value(&home, "h"), (50, 0));
    assert_eq!(safe_value(&safe), 700);
    let rows = safe_rows(&safe);
    assert_eq!((rows[0].state.as_str(), rows[0].amount), ("stored", Some(700)));
    // The card keeps the certificate; the vault a copy.
    let o = run(cv(&home).args(["-r", "sim:h", "--json", "wallet", "certificates"]));
    assert_eq!(json(&o)[0]["item"], id.as_str());
    let copies = Vault::open(&home.join("vault.sqlite"))
        .unwrap()
        .wallet_certificates(None)
        .unwrap();
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0].amount, Some(700));
    // A deposited item is not spendable.
    let o = run(cv(&home).args(["-r", "sim:h", "wallet", "spend", &id, "1", "--pin", "env:P"]));
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));

    let o = run(cv(&home)
        .args([
            "-r",
            "sim:h",
            "--json",
            "wallet",
            "withdraw",
            &id[..10],
            "--pin",
            "env:P",
            "--safe",
        ])
        .arg(&safe));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["settled"], true);
    assert_eq!(card_value(&home, "h"), (750, 0));
    assert_eq!(safe_value(&safe), 0);
    assert_eq!(safe_rows(&safe)[0].state, "withdrawn");
    let o = run(cv(&home).args(["-r", "sim:h", "--json", "wallet", "certificates"]));
    assert_eq!(json(&o), serde_json::json!([]));

    // A second withdrawal of the same certificate (the vault's copy): refused.
    let before = state(&home, "h").wallet.clone();
    let o = run(cv(&home)
        .args([
            "-r",
            "sim:h",
            "--json",
            "wallet",
            "withdraw",
            &id[..10],
            "--from-vault",
            "--pin",
            "env:P",
            "--safe",
        ])
        .arg(&safe));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no registration certificate"), "{}", stderr(&o));
    let copy = &Vault::open(&home.join("vault.sqlite"))
        .unwrap()
        .wallet_certificates(None)
        .unwrap()[0];
    assert!(copy.withdrawn_at.is_some());
    // Even past the vault's bookkeeping, the safe refuses it.
    let cert = cardvault_proto::from_hex(&copy.certificate).unwrap();
    let r = with_card(&home, "h", "main", |c| {
        c.verify_pin(PIN.as_bytes()).unwrap();
        let ch = c.withdraw_challenge().unwrap();
        let leaf = leaf_der(c);
        let mut s = SafeClient::connect(&SafeAddress::Dir(safe.clone())).unwrap();
        s.withdraw(&cardvault::safe::WithdrawRequest {
            certificate: cardvault_proto::to_hex(&cert),
            card_certificate: cardvault_proto::to_hex(&leaf),
            challenge: cardvault_proto::to_hex(&ch),
            authorization: None,
            owner_proof: None,
        })
        .unwrap()
    });
    assert_eq!(r, Err(SafeRefusal::AlreadyWithdrawn(1)));
    assert_eq!(state(&home, "h").wallet.items, before.items);
    assert_eq!(card_value(&home, "h"), (750, 0));
}

fn leaf_der(c: &mut CardClient<'_>) -> Vec<u8> {
    let chain = c.certified_chain().unwrap();
    cardvault_proto::cert::split_certificates(&chain)
        .unwrap()
        .pop()
        .unwrap()
        .to_der()
        .unwrap()
}

#[test]
fn a_lost_card_s_item_comes_back_onto_a_replacement_only_with_the_issuer_s_authorization() {
    let home = temp_dir("safe-replacement");
    let safe = init_safe(&home, "safe1");
    let id = load(&home, "lost", 900);
    let o = run(cv(&home)
        .args(["-r", "sim:lost", "wallet", "deposit", &id, "--pin", "env:P", "--safe"])
        .arg(&safe));
    assert!(o.status.success(), "{}", stderr(&o));
    // The card is lost: its replacement withdraws by the vault's copy.
    std::fs::remove_file(card_path(&home, "lost")).unwrap();
    with_card(&home, "new", "replacement", |_| ());
    let before = state(&home, "new").wallet.clone();
    let withdraw = |extra: &[&str]| {
        let mut c = cv(&home);
        c.env("ISSUER", ISSUER_KEY_HEX.trim())
            .args([
                "-r",
                "sim:new",
                "--json",
                "wallet",
                "withdraw",
                &id[..8],
                "--from-vault",
                "--pin",
                "env:P",
                "--safe",
            ])
            .arg(&safe)
            .args(extra);
        run(&mut c)
    };
    // Without the owner's authentication: refused, nothing changed.
    let o = withdraw(&[]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("issuer authorization"), "{}", stderr(&o));
    assert_eq!(json_err_kind(&o), "safe_refused");
    assert_eq!(safe_rows(&safe)[0].state, "stored");
    assert_eq!(state(&home, "new").wallet.items, before.items);
    // With the issuer's authorization naming the replacement card.
    let signer = test_signer_cert();
    let o = withdraw(&["--issuer-key", "env:ISSUER", "--signer-cert", signer.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let items = with_card(&home, "new", "main", |c| ww::list(c).unwrap().items);
    assert_eq!(items.len(), 1);
    assert_eq!(cardvault_proto::to_hex(&items[0].1.id), id);
    assert_eq!(items[0].1.balance, 900);
    assert_eq!(safe_rows(&safe)[0].state, "withdrawn");
    assert_eq!(
        safe_rows(&safe)[0].target_card.as_deref(),
        Some(state(&home, "new").card_number.as_str())
    );
}

fn json_err_kind(o: &std::process::Output) -> String {
    json(o)["error"]["kind"].as_str().unwrap_or_default().to_string()
}

#[test]
fn forged_certificates_replayed_deliveries_and_other_cards_are_refused() {
    let home = temp_dir("safe-refusals");
    let safe_dir = init_safe(&home, "safe1");
    let addr = SafeAddress::Dir(safe_dir.clone());
    let id = load(&home, "a", 300);
    let mut vault = Vault::open(&home.join("vault.sqlite")).unwrap();
    let mut safe = SafeClient::connect(&addr).unwrap();
    let dep = with_card(&home, "a", "main", |c| {
        wd::deposit(
            c,
            PIN.as_bytes(),
            &id,
            &addr,
            &mut safe,
            &mut vault,
            summary_field::DEFAULT,
        )
        .unwrap()
    });
    let cert_hex = dep.certificate.clone();
    let cert =
        cardvault_proto::safe::RegistrationCertificate::parse(&cardvault_proto::from_hex(&cert_hex).unwrap()).unwrap();

    let ask = |c: &mut CardClient<'_>, safe: &mut SafeClient, cert: &[u8]| {
        c.verify_pin(PIN.as_bytes()).unwrap();
        let ch = c.withdraw_challenge().unwrap();
        let leaf = leaf_der(c);
        (
            ch,
            safe.withdraw(&cardvault::safe::WithdrawRequest {
                certificate: cardvault_proto::to_hex(cert),
                card_certificate: cardvault_proto::to_hex(&leaf),
                challenge: cardvault_proto::to_hex(&ch),
                authorization: None,
                owner_proof: None,
            })
            .unwrap(),
        )
    };
    // An edited certificate (the counter, the card) and a forged one.
    for edit in [
        |c: &mut cardvault_proto::safe::RegistrationCertificate| c.counter = 2,
        |c: &mut cardvault_proto::safe::RegistrationCertificate| c.summary_digest[0] ^= 1,
        |c: &mut cardvault_proto::safe::RegistrationCertificate| c.signature[5] ^= 1,
    ] {
        let mut e = cert.clone();
        edit(&mut e);
        let (_, r) = with_card(&home, "a", "main", |c| ask(c, &mut safe, &e.encode()));
        assert_eq!(r, Err(SafeRefusal::ForgedCertificate));
    }
    // Another card presenting card a's certificate, without authorization.
    let (_, r) = with_card(&home, "b", "main", |c| ask(c, &mut safe, &cert.encode()));
    let b_number = state(&home, "b").card_number.clone();
    assert_eq!(r, Err(SafeRefusal::OwnerAuthenticationNeeded(b_number)));
    assert_eq!(safe_rows(&safe_dir)[0].state, "stored");

    // A delivery: the same one twice answers the same receipt; a second
    // delivery of the same deposit (another challenge) is refused by the card.
    let (receipt1, receipt2, second) = with_card(&home, "a", "main", |c| {
        let (_, r) = ask(c, &mut safe, &cert.encode());
        let d = r.unwrap();
        let cmd = cardvault_proto::safe::WithdrawCommand {
            delivery: cardvault_proto::from_hex(&d.delivery).unwrap(),
            safe_certificate: cardvault_proto::from_hex(&d.safe_certificate).unwrap(),
            authorization: None,
        };
        let r1 = c.withdraw(&cmd).unwrap();
        let r2 = c.withdraw(&cmd).unwrap();
        // The safe is still delivering (no receipt yet): a new delivery to
        // the same card for a new challenge, which the card refuses.
        let (_, r) = ask(c, &mut safe, &cert.encode());
        let d = r.unwrap();
        let cmd2 = cardvault_proto::safe::WithdrawCommand {
            delivery: cardvault_proto::from_hex(&d.delivery).unwrap(),
            safe_certificate: cardvault_proto::from_hex(&d.safe_certificate).unwrap(),
            authorization: None,
        };
        (r1, r2, c.withdraw(&cmd2))
    });
    assert_eq!(receipt1, receipt2);
    assert!(
        matches!(
            second,
            Err(cardvault::Error::CardRefusal(
                cardvault::card::Refusal::DeliveryReplayed
            ))
        ),
        "{second:?}"
    );
    let items = with_card(&home, "a", "main", |c| ww::list(c).unwrap().items);
    assert_eq!(items.len(), 1, "the item is on the card once");
    // While delivering to card a, card b is refused even with an authorization.
    let (_, r) = with_card(&home, "b", "main", |c| {
        c.verify_pin(PIN.as_bytes()).unwrap();
        let ch = c.withdraw_challenge().unwrap();
        let leaf = leaf_der(c);
        let number = c.card_number().unwrap();
        let msg = cardvault_proto::safe::withdraw_authorization_message(&number, &cert.hash());
        let sig = issuer_signer().sign(&msg).unwrap();
        (
            ch,
            safe.withdraw(&cardvault::safe::WithdrawRequest {
                certificate: cardvault_proto::to_hex(&cert.encode()),
                card_certificate: cardvault_proto::to_hex(&leaf),
                challenge: cardvault_proto::to_hex(&ch),
                authorization: Some(cardvault::safe::WithdrawAuthorization {
                    signature: cardvault_proto::to_hex(&sig),
                    signer_certificate: cardvault_proto::to_hex(issuer_signer().certificate_der()),
                }),
                owner_proof: None,
            })
            .unwrap(),
        )
    });
    assert!(matches!(r, Err(SafeRefusal::DeliveringElsewhere(1, _))), "{r:?}");
    // `wallet resolve` sends card a's receipt: withdrawn.
    let o = run(cv(&home)
        .args(["-r", "sim:a", "--json", "wallet", "resolve", "--pin", "env:P", "--safe"])
        .arg(&safe_dir));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["receipts"], serde_json::json!([1]));
    assert_eq!(safe_rows(&safe_dir)[0].state, "withdrawn");
    let o = run(cardvault_strict(&home).args(["safe", "verify", "--dir"]).arg(&safe_dir));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn two_safes_served_on_loopback_each_keep_their_own_deposits() {
    let home = temp_dir("safe-two-servers");
    let (d1, d2) = (init_safe(&home, "safe1"), init_safe(&home, "safe2"));
    let s1 = SafeServer::start(&home, &d1);
    let s2 = SafeServer::start(&home, &d2);
    let (u1, u2) = (s1.url.clone(), s2.url.clone());
    let a = load(&home, "h", 100);
    let b = load(&home, "h", 200);
    for (item, url) in [(&a, &u1), (&b, &u2)] {
        let o = run(cv(&home).args([
            "-r", "sim:h", "--json", "wallet", "deposit", item, "--pin", "env:P", "--safe", url,
        ]));
        assert!(o.status.success(), "{}", stderr(&o));
    }
    for (url, amount) in [(&u1, 100), (&u2, 200)] {
        let o = run(cv(&home).args(["--json", "safe", "list", "--safe", url]));
        assert!(o.status.success(), "{}", stderr(&o));
        let rows = json(&o);
        assert_eq!(rows.as_array().unwrap().len(), 1);
        assert_eq!(rows[0]["amount"], amount);
    }
    // An item deposited into safe 1 cannot be withdrawn from safe 2.
    let o = run(cv(&home).args([
        "-r", "sim:h", "--json", "wallet", "withdraw", &a, "--pin", "env:P", "--safe", &u2,
    ]));
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(json_err_kind(&o), "safe_refused");
    // From safe 1 over HTTP: back on the card.
    let o = run(cv(&home).args([
        "-r", "sim:h", "--json", "wallet", "withdraw", &a, "--pin", "env:P", "--safe", &u1,
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(card_value(&home, "h"), (100, 0));
    assert_eq!(safe_value(&d1), 0);
    assert_eq!(safe_value(&d2), 200);
}

/// A `safe serve` process killed with SIGKILL at a request of the exchange:
/// before it (the request never arrives) or after it committed (its answer
/// never leaves). Restarted on the same directory, the retry or `wallet
/// resolve` finishes the exchange and nothing is lost or doubled.
#[test]
fn a_safe_server_killed_mid_deposit_and_mid_withdraw_loses_nothing() {
    use cardvault::safe::fault::{SafeFault, SafeFaultSchedule};
    let killer = |pid: u32| {
        move || {
            // SAFETY: kill(2) on the pid of a child this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    };
    // (request to kill at, how, the exchange): deposit makes 2 requests
    // (info, deposit), withdraw 2 (withdraw, receipt).
    let cases = [
        (2, SafeFault::RequestLost, true),
        (2, SafeFault::AnswerLost, true),
        (1, SafeFault::RequestLost, false),
        (1, SafeFault::AnswerLost, false),
        (2, SafeFault::RequestLost, false),
        (2, SafeFault::AnswerLost, false),
    ];
    for (at, mode, deposit) in cases {
        let what = format!(
            "{} killed at request {at} ({mode:?})",
            if deposit { "deposit" } else { "withdraw" }
        );
        let home = temp_dir("safe-sigkill");
        let dir = init_safe(&home, "safe1");
        let id = load(&home, "h", 400);
        let mut vault = Vault::open(&home.join("vault.sqlite")).unwrap();
        if !deposit {
            let a = SafeAddress::Dir(dir.clone());
            let mut s = SafeClient::connect(&a).unwrap();
            with_card(&home, "h", "main", |c| {
                wd::deposit(c, PIN.as_bytes(), &id, &a, &mut s, &mut vault, summary_field::DEFAULT).unwrap()
            });
        }
        let mut server = SafeServer::start(&home, &dir);
        let addr = SafeAddress::Http(server.url.clone());
        let sched = SafeFaultSchedule::with_hook(at, mode, killer(server.pid()));
        let mut safe = SafeClient::connect(&addr).unwrap().faulty(sched.clone());
        let r = with_card(&home, "h", "main", |c| {
            if deposit {
                wd::deposit(
                    c,
                    PIN.as_bytes(),
                    &id,
                    &addr,
                    &mut safe,
                    &mut vault,
                    summary_field::DEFAULT,
                )
                .map(|_| ())
            } else {
                wd::withdraw(
                    c,
                    PIN.as_bytes(),
                    &wd::CertificateSource::Card(id.clone()),
                    &mut safe,
                    &mut vault,
                    None,
                )
                .map(|_| ())
            }
        });
        assert!(sched.fired(), "{what}: never fired");
        let status = server.wait();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL),
            "{what}: the server was not killed"
        );
        assert!(
            matches!(r, Ok(()) | Err(cardvault::Error::SafeUnreachable { .. })),
            "{what}: {r:?}"
        );
        // While the safe is down nothing is lost: the item is on the card
        // (held or pending), or committed in the safe (an item delivering
        // to the card that already took it counts once).
        let (held, pending) = card_value(&home, "h");
        let in_safe = if held == 400 { 0 } else { safe_value(&dir) };
        assert_eq!(
            held + pending.max(in_safe),
            400,
            "{what}: card {held}+{pending}, safe {in_safe}"
        );
        // Restarted, on another port: the retry converges.
        let server = SafeServer::start(&home, &dir);
        let addr = SafeAddress::Http(server.url.clone());
        let mut safe = SafeClient::connect(&addr).unwrap();
        with_card(&home, "h", "main", |c| {
            wd::resolve(c, PIN.as_bytes(), &addr, &mut safe, &mut vault).unwrap();
            let on = ww::list(c)
                .unwrap()
                .items
                .iter()
                .any(|(_, i)| cardvault_proto::to_hex(&i.id) == id);
            if deposit && on {
                wd::deposit(
                    c,
                    PIN.as_bytes(),
                    &id,
                    &addr,
                    &mut safe,
                    &mut vault,
                    summary_field::DEFAULT,
                )
                .unwrap();
            }
            if !deposit && !on {
                wd::withdraw(
                    c,
                    PIN.as_bytes(),
                    &wd::CertificateSource::Card(id.clone()),
                    &mut safe,
                    &mut vault,
                    None,
                )
                .unwrap();
            }
        });
        let rows = safe_rows(&dir);
        assert_eq!(rows.len(), 1, "{what}: {rows:?}");
        if deposit {
            assert_eq!(card_value(&home, "h"), (0, 0), "{what}");
            assert_eq!(rows[0].state, "stored", "{what}");
        } else {
            assert_eq!(card_value(&home, "h"), (400, 0), "{what}");
            assert_eq!(rows[0].state, "withdrawn", "{what}");
        }
        let o = run(cardvault_strict(&home).args(["safe", "verify", "--dir"]).arg(&dir));
        assert!(o.status.success(), "{what}: {}{}", stdout(&o), stderr(&o));
    }
}

/// A safe whose store was replaced by an older copy (taken before an item
/// was withdrawn) would pay that item out again. Its checkpoint beside the
/// directory (counter and withdrawn items, signed by the safe) is ahead of
/// the copy, so the safe refuses to open it: embedded, `safe serve` and
/// `safe verify` alike; the card keeps the item once.
#[test]
fn a_safe_restored_from_an_older_copy_refuses_to_serve_and_pays_nothing_twice() {
    let home = temp_dir("safe-older-copy");
    let dir = init_safe(&home, "safe1");
    let id = load(&home, "h", 600);
    let addr = SafeAddress::Dir(dir.clone());
    let run_cv = |args: &[&str]| run(cv(&home).args(args));
    let o = run_cv(&[
        "-r",
        "sim:h",
        "wallet",
        "deposit",
        &id,
        "--pin",
        "env:P",
        "--safe",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The operator's copy of the store while the item is in it.
    let old = home.join("old-copy");
    std::fs::create_dir_all(&old).unwrap();
    for f in std::fs::read_dir(&dir).unwrap().flatten() {
        std::fs::copy(f.path(), old.join(f.file_name())).unwrap();
    }
    let o = run_cv(&[
        "-r",
        "sim:h",
        "wallet",
        "withdraw",
        &id,
        "--pin",
        "env:P",
        "--safe",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(card_value(&home, "h"), (600, 0));
    // The store is replaced by the older copy.
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::rename(&old, &dir).unwrap();
    let e = cardvault::safe::Safe::open(&dir).unwrap_err();
    assert!(e.to_string().contains("older copy"), "{e}");
    assert!(e.to_string().contains("item 1 is withdrawn by its checkpoint"), "{e}");
    let o = run(cardvault_strict(&home)
        .args(["--json", "safe", "verify", "--dir"])
        .arg(&dir));
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
    assert_eq!(json(&o)["error"]["kind"], "data_integrity");
    let o = run(cardvault(&home)
        .args(["safe", "serve", "--listen", "127.0.0.1:0", "--dir"])
        .arg(&dir));
    assert_eq!(o.status.code(), Some(6), "{}", stderr(&o));
    assert!(stderr(&o).contains("older copy"), "{}", stderr(&o));
    // Nothing reaches the card: the withdrawal fails before a delivery.
    let before = state(&home, "h").wallet.clone();
    let r = SafeClient::connect(&addr);
    assert!(matches!(r, Err(cardvault::Error::Data(_))), "the older copy opened");
    assert_eq!(state(&home, "h").wallet, before);
    assert_eq!(card_value(&home, "h"), (600, 0));
    // A checkpoint that is not the safe's (edited) is refused too.
    let cp = cardvault::safe::checkpoint_path(&dir);
    let text = std::fs::read_to_string(&cp)
        .unwrap()
        .replace("\"counter\":1", "\"counter\":0");
    std::fs::write(&cp, text).unwrap();
    let e = cardvault::safe::Safe::open(&dir).unwrap_err();
    assert!(e.to_string().contains("is not this safe's"), "{e}");
}

fn item(kind: &str, name: &str, price: u32, until: Option<&str>) -> ItemSpec {
    ItemSpec {
        kind: kind.into(),
        name: name.into(),
        unit_price: price,
        quantity: 1,
        place: String::new(),
        valid_from: None,
        valid_until: until.map(Into::into),
        remarks: String::new(),
    }
}

fn load_spec(home: &Path, name: &str, profile: &str, spec: &ItemSpec) -> String {
    with_card(home, name, profile, |c| {
        ww::load_with_signer(c, PIN.as_bytes(), spec, &issuer_signer())
            .unwrap()
            .item
            .id
    })
}

#[test]
fn backup_by_conditions_lists_then_deposits_the_matching_items() {
    let home = temp_dir("safe-conditions");
    let safe = init_safe(&home, "safe1");
    let ticket = load_spec(&home, "h", "main", &item("ticket", "Museum", 1200, Some("2026-06-30")));
    let coupon = load_spec(&home, "h", "main", &item("coupon", "10% off", 1, Some("2028-01-01")));
    load_spec(&home, "h", "main", &item("cash", "Cash", 500, None));
    let conds = home.join("conditions.toml");
    std::fs::write(
        &conds,
        format!(
            "kinds = [\"ticket\", \"coupon\"]\nvalid_until_before = \"2027-01-01\"\nsafe = \"{}\"\n",
            safe.display()
        ),
    )
    .unwrap();
    let before = state(&home, "h").wallet.clone();
    let o = run(cv(&home)
        .args(["-r", "sim:h", "--json", "wallet", "backup", "--dry-run", "--conditions"])
        .arg(&conds));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["matched"], serde_json::json!([ticket.clone()]));
    assert_eq!(state(&home, "h").wallet, before, "a dry run changed the card");
    assert!(safe_rows(&safe).is_empty());
    // Without the date condition: the ticket and the coupon, in holding order.
    std::fs::write(
        &conds,
        format!("kinds = [\"ticket\", \"coupon\"]\nsafe = \"{}\"\n", safe.display()),
    )
    .unwrap();
    let o = run(cv(&home)
        .args([
            "-r",
            "sim:h",
            "--json",
            "wallet",
            "backup",
            "--pin",
            "env:P",
            "--conditions",
        ])
        .arg(&conds));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["matched"], serde_json::json!([ticket, coupon]));
    assert_eq!(json(&o)["deposited"].as_array().unwrap().len(), 2);
    let left = with_card(&home, "h", "main", |c| ww::list(c).unwrap().items);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].1.name, "Cash");
    assert_eq!(safe_rows(&safe).len(), 2);
    // A conditions file that does not parse: a usage error before any card.
    std::fs::write(&conds, "kinds = [\"gold\"]\n").unwrap();
    let o = run(cv(&home)
        .args(["-r", "sim:h", "wallet", "backup", "--dry-run", "--safe"])
        .arg(&safe)
        .arg("--conditions")
        .arg(&conds));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("unknown item kind"), "{}", stderr(&o));
}

#[test]
fn a_load_that_does_not_fit_deposits_by_conditions_first_or_fails_clearly() {
    let home = temp_dir("safe-make-room");
    let safe = init_safe(&home, "safe1");
    let text = std::fs::read_to_string(repo_path("applet-sim/profiles/main.toml")).unwrap();
    let profile = home.join("small.toml");
    std::fs::write(&profile, text.replacen("wallet_capacity = 8", "wallet_capacity = 2", 1)).unwrap();
    let profile = profile.to_str().unwrap();
    let ticket = load_spec(&home, "s", profile, &item("ticket", "Old ticket", 900, None));
    load_spec(&home, "s", profile, &item("cash", "Cash", 100, None));
    let conds = home.join("conditions.toml");
    std::fs::write(&conds, "kinds = [\"ticket\"]\nheld_longest = 1\n").unwrap();
    let load = |name: &str| {
        run(cv(&home)
            .env("ISSUER", ISSUER_KEY_HEX.trim())
            .args([
                "-r",
                "sim:s",
                "--json",
                "wallet",
                "load",
                "--pin",
                "env:P",
                "--issuer-key",
                "env:ISSUER",
            ])
            .arg("--signer-cert")
            .arg(test_signer_cert())
            .args(["--kind", "coupon", "--name", name, "--unit-price", "5", "--safe"])
            .arg(&safe)
            .arg("--conditions")
            .arg(&conds))
    };
    let o = load("New coupon");
    assert!(o.status.success(), "{}", stderr(&o));
    let names: Vec<String> = with_card(&home, "s", "main", |c| ww::list(c).unwrap().items)
        .into_iter()
        .map(|(_, i)| i.name)
        .collect();
    assert_eq!(names, ["Cash", "New coupon"]);
    let rows = safe_rows(&safe);
    assert_eq!((rows.len(), rows[0].item_id.as_str()), (1, ticket.as_str()));
    // Full again, and no ticket left to deposit: refused, nothing changed.
    let before = state(&home, "s").wallet.items.clone();
    let o = load("One more");
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no item matches the backup conditions"),
        "{}",
        stderr(&o)
    );
    assert_eq!(state(&home, "s").wallet.items, before);
    assert_eq!(safe_rows(&safe).len(), 1);
}

/// A delivery addressed to a card lost before it accepted it: the issuer's
/// release (`safe release`) lets another card withdraw the item, and the
/// lost card's receipt of the old delivery, should it come back, is refused:
/// the safe pays the item once.
#[test]
fn an_issuer_release_frees_a_delivery_stuck_on_a_lost_card_and_its_late_receipt_is_refused() {
    let home = temp_dir("safe-release");
    let dir = init_safe(&home, "safe1");
    let server = SafeServer::start(&home, &dir);
    let id = load(&home, "lost", 700);
    let o = run(cv(&home).args([
        "-r",
        "sim:lost",
        "wallet",
        "deposit",
        &id,
        "--pin",
        "env:P",
        "--safe",
        &server.url,
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let lost_number = state(&home, "lost").card_number.clone();
    // The safe delivers to the card, which is lost before it accepts.
    let mut safe = SafeClient::connect(&server.url.parse().unwrap()).unwrap();
    let cert_hex = Vault::open(&home.join("vault.sqlite"))
        .unwrap()
        .wallet_certificates(Some(&lost_number))
        .unwrap()[0]
        .certificate
        .clone();
    let (challenge, delivery) = with_card(&home, "lost", "main", |c| {
        c.verify_pin(PIN.as_bytes()).unwrap();
        let ch = c.withdraw_challenge().unwrap();
        let leaf = leaf_der(c);
        let d = safe
            .withdraw(&cardvault::safe::WithdrawRequest {
                certificate: cert_hex.clone(),
                card_certificate: cardvault_proto::to_hex(&leaf),
                challenge: cardvault_proto::to_hex(&ch),
                authorization: None,
                owner_proof: None,
            })
            .unwrap()
            .unwrap();
        (ch, d)
    });
    let lost_file = card_path(&home, "lost");
    let kept = home.join("lost-card-found-later");
    std::fs::rename(&lost_file, &kept).unwrap();
    assert_eq!(safe_rows(&dir)[0].state, "delivering");
    with_card(&home, "new", "replacement", |_| ());
    let signer = test_signer_cert();
    let withdraw_new = || {
        let mut c = cv(&home);
        c.env("ISSUER", ISSUER_KEY_HEX.trim()).args([
            "-r",
            "sim:new",
            "--json",
            "wallet",
            "withdraw",
            &id[..8],
            "--from-vault",
            "--pin",
            "env:P",
            "--safe",
            &server.url,
            "--issuer-key",
            "env:ISSUER",
            "--signer-cert",
            signer.to_str().unwrap(),
        ]);
        run(&mut c)
    };
    // Stuck: even the issuer's withdrawal authorization does not move it.
    let before = state(&home, "new").wallet.clone();
    let o = withdraw_new();
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("being delivered to card"), "{}", stderr(&o));
    assert_eq!(state(&home, "new").wallet.items, before.items);
    let release = |card: &str, key: &str| {
        let mut c = cv(&home);
        c.env("ISSUER", key).args([
            "--json",
            "safe",
            "release",
            "--safe",
            &server.url,
            "--counter",
            "1",
            "--card",
            card,
            "--issuer-key",
            "env:ISSUER",
            "--signer-cert",
            signer.to_str().unwrap(),
        ]);
        let o = run(&mut c);
        assert_no_secret_echoed(&c, &o);
        o
    };
    let rows = safe_rows(&dir);
    assert_eq!(
        rows[0].challenge.as_deref(),
        Some(cardvault_proto::to_hex(&challenge).as_str())
    );
    // A release naming another card, or signed by another key: refused, nothing changed.
    let new_number = state(&home, "new").card_number.clone();
    let o = release(&new_number, ISSUER_KEY_HEX.trim());
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(safe_rows(&dir), rows);
    let o = release(&lost_number, &"11".repeat(32));
    assert_ne!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(safe_rows(&dir), rows);
    // The issuer's release: stored again.
    let o = release(&lost_number, ISSUER_KEY_HEX.trim());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["state"], "stored");
    assert_eq!(safe_rows(&dir)[0].state, "stored");
    // Released once, there is nothing left to release.
    let o = release(&lost_number, ISSUER_KEY_HEX.trim());
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    // The replacement withdraws it.
    let o = withdraw_new();
    assert!(o.status.success(), "{}", stderr(&o));
    let items = with_card(&home, "new", "main", |c| ww::list(c).unwrap().items);
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].1.balance, 700);
    let withdrawn = safe_rows(&dir);
    assert_eq!(withdrawn[0].state, "withdrawn");
    assert_eq!(withdrawn[0].target_card.as_deref(), Some(new_number.as_str()));
    // The lost card comes back and accepts the old delivery: the safe
    // refuses its receipt, and the ledger still pays the item once.
    std::fs::rename(&kept, &lost_file).unwrap();
    let receipt = with_card(&home, "lost", "main", |c| {
        c.verify_pin(PIN.as_bytes()).unwrap();
        let cmd = cardvault_proto::safe::WithdrawCommand {
            delivery: cardvault_proto::from_hex(&delivery.delivery).unwrap(),
            safe_certificate: cardvault_proto::from_hex(&delivery.safe_certificate).unwrap(),
            authorization: None,
        };
        let r = c.withdraw(&cmd).unwrap();
        let signing = c.storing_certificate().unwrap().unwrap();
        cardvault::safe::ReceiptRequest {
            receipt: cardvault_proto::to_hex(&r.encode()),
            card_certificate: cardvault_proto::to_hex(&signing),
        }
    });
    assert_eq!(
        safe.receipt(&receipt).unwrap(),
        Err(SafeRefusal::DeliveryReleased(1, lost_number.clone()))
    );
    assert_eq!(safe_rows(&dir), withdrawn);
}

/// A plain http:// safe off loopback is refused before anything is sent
/// (no connection is tried: the address is a documentation address) unless
/// the operator acknowledges it; loopback needs no acknowledgement.
#[test]
fn a_plain_http_safe_off_loopback_is_refused_without_the_acknowledgement() {
    let home = temp_dir("safe-plain-http");
    let id = load(&home, "a", 100);
    let before = card_value(&home, "a");
    let wallet_before = state(&home, "a").wallet.clone();
    for args in [
        vec![
            "-r",
            "sim:a",
            "--json",
            "wallet",
            "deposit",
            &id,
            "--pin",
            "env:P",
            "--safe",
            "http://192.0.2.1:7800",
        ],
        vec!["--json", "safe", "list", "--safe", "http://192.0.2.1:7800"],
    ] {
        let o = run(cv(&home).args(&args));
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert_eq!(json_err_kind(&o), "usage");
        let msg = json(&o)["error"]["message"].as_str().unwrap_or_default().to_string();
        assert!(msg.contains("--plain-http-safe"), "{msg}");
    }
    assert_eq!(card_value(&home, "a"), before);
    assert_eq!(state(&home, "a").wallet, wallet_before);
    let vault = Vault::open(&home.join("vault.sqlite")).unwrap();
    assert!(vault.wallet_certificates(None).unwrap().is_empty());
    // Loopback: no acknowledgement needed.
    let dir = init_safe(&home, "safe1");
    let server = SafeServer::start(&home, &dir);
    let localhost = server.url.replace("127.0.0.1", "localhost");
    let o = run(cv(&home).args([
        "-r", "sim:a", "wallet", "deposit", &id, "--pin", "env:P", "--safe", &localhost,
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(safe_rows(&dir).len(), 1);
}
