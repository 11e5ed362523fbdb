//! Escrow of the wallet key under the owner's password, split across two
//! safes served on loopback; recovery onto a replacement card; the
//! refusals (one safe alone, a wrong password); re-keying leaves an escrowed
//! old key opening nothing deposited after it.

mod common;

use cardvault::card::{CardClient, SessionOptions};
use cardvault::transport::sim::SimReader;
use cardvault::workflow::wallet::{self as ww, ItemSpec};
use common::*;
use std::path::Path;

const OWNER: &str = "correct horse battery staple";

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

fn load(home: &Path, name: &str, amount: u32) -> String {
    let mut r = SimReader::open(home, name, "main", None).unwrap();
    let mut c = CardClient::open(&mut r, SessionOptions::default()).unwrap();
    ww::load_with_signer(&mut c, PIN.as_bytes(), &cash(amount), &issuer_signer())
        .unwrap()
        .item
        .id
}

fn cv_owner(home: &Path, password: &str) -> std::process::Command {
    let mut c = cv(home);
    c.env("OWNER", password);
    c
}

fn wallet_items(home: &Path, name: &str) -> Vec<(String, u32)> {
    state(home, name)
        .wallet
        .items
        .iter()
        .map(|h| {
            let i = cardvault_proto::wallet::WalletItem::parse(&h.item).unwrap();
            (cardvault_proto::to_hex(&i.id), i.balance)
        })
        .collect()
}

#[test]
fn a_key_split_across_two_safes_comes_back_only_with_both_and_the_password() {
    let home = temp_dir("escrow-split");
    let (d1, d2) = (init_safe(&home, "safe1"), init_safe(&home, "safe2"));
    let (s1, s2) = (SafeServer::start(&home, &d1), SafeServer::start(&home, &d2));
    let a = load(&home, "lost", 120);
    let b = load(&home, "lost", 80);
    for (item, url) in [(&a, &s1.url), (&b, &s2.url)] {
        let o = run(cv(&home).args([
            "-r", "sim:lost", "wallet", "deposit", item, "--pin", "env:P", "--safe", url,
        ]));
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let mut c = cv_owner(&home, OWNER);
    c.args([
        "-r",
        "sim:lost",
        "--json",
        "wallet",
        "escrow",
        "--safe",
        &s1.url,
        "--safe",
        &s2.url,
        "--password",
        "env:OWNER",
        "--pin",
        "env:P",
    ]);
    let o = run(&mut c);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_no_secret_echoed(&c, &o);
    assert_eq!(json(&o)["parts"].as_array().unwrap().len(), 2);
    // Each safe holds one part, and neither part is the key.
    let lost = state(&home, "lost").card_number.clone();
    let key = state(&home, "lost").wallet.key.clone();
    for d in [&d1, &d2] {
        let db = rusqlite::Connection::open(d.join("safe.sqlite")).unwrap();
        let part: Vec<u8> = db
            .query_row("SELECT part FROM escrow WHERE card_number = ?1", [&lost], |r| r.get(0))
            .unwrap();
        assert!(
            !part.windows(32).any(|w| w == &key[..]),
            "a safe holds the key in clear"
        );
    }
    std::fs::remove_file(card_path(&home, "lost")).unwrap();
    let _ = load(&home, "new", 1);
    let before = state(&home, "new").wallet.clone();
    let recover = |password: &str, safes: &[&str]| {
        let mut c = cv_owner(&home, password);
        c.args([
            "-r",
            "sim:new",
            "--json",
            "wallet",
            "recover",
            "--from-card",
            &lost,
            "--password",
            "env:OWNER",
        ])
        .args(["--pin", "env:P"]);
        for s in safes {
            c.args(["--safe", s]);
        }
        let o = run(&mut c);
        assert_no_secret_echoed(&c, &o);
        o
    };
    // One safe alone: refused before the card is asked, nothing changed.
    let o = recover(OWNER, &[&s1.url]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("split into 2 parts"), "{}", stderr(&o));
    assert_eq!(state(&home, "new").wallet, before);
    // A wrong owner password: the safes refuse it, nothing changed.
    let o = recover("wrong password", &[&s1.url, &s2.url]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(json(&o)["error"]["kind"], "safe_refused");
    assert!(stderr(&o).contains("owner password does not match"), "{}", stderr(&o));
    assert_eq!(state(&home, "new").wallet, before);
    let stored = |d: &Path| {
        cardvault::safe::Safe::open(d)
            .unwrap()
            .list()
            .unwrap()
            .iter()
            .filter(|r| r.state == "stored")
            .count()
    };
    assert_eq!((stored(&d1), stored(&d2)), (1, 1));
    // Both safes and the password: the key is rebuilt, both items come back.
    let o = recover(OWNER, &[&s1.url, &s2.url]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["withdrawn"].as_array().unwrap().len(), 2);
    let items = wallet_items(&home, "new");
    assert!(
        items.contains(&(a.clone(), 120)) && items.contains(&(b.clone(), 80)),
        "{items:?}"
    );
    assert_eq!((stored(&d1), stored(&d2)), (0, 0));
}

#[test]
fn the_card_refuses_one_part_of_two_and_parts_under_another_password() {
    use cardvault_proto::safe::EscrowPart;
    let home = temp_dir("escrow-card");
    load(&home, "x", 5);
    let open = |name: &str, f: &mut dyn FnMut(&mut CardClient<'_>)| {
        let mut r = SimReader::open(&home, name, "main", None).unwrap();
        let mut c = CardClient::open(&mut r, SessionOptions::default()).unwrap();
        c.verify_pin(PIN.as_bytes()).unwrap();
        f(&mut c)
    };
    let mut parts: Vec<EscrowPart> = Vec::new();
    open("x", &mut |c| parts = c.escrow_export(&[7; 32], 2).unwrap());
    open("y", &mut |c| {
        let one = c.escrow_import(&[7; 32], &parts[..1]);
        assert!(
            matches!(
                one,
                Err(cardvault::Error::CardRefusal(
                    cardvault::card::Refusal::EscrowIncomplete
                ))
            ),
            "{one:?}"
        );
        let wrong = c.escrow_import(&[8; 32], &parts);
        assert!(
            matches!(
                wrong,
                Err(cardvault::Error::CardRefusal(
                    cardvault::card::Refusal::EscrowPasswordWrong
                ))
            ),
            "{wrong:?}"
        );
    });
    assert!(state(&home, "y").wallet.recovered.is_empty());
    // Both parts under the right key rebuild x's key on y.
    open("y", &mut |c| c.escrow_import(&[7; 32], &parts).unwrap());
    assert_eq!(state(&home, "y").wallet.recovered[0].key, state(&home, "x").wallet.key);
}

#[test]
fn after_rekey_an_escrowed_old_key_opens_nothing_deposited_since() {
    let home = temp_dir("escrow-rekey");
    let d = init_safe(&home, "safe1");
    let ds = d.to_str().unwrap();
    let id = load(&home, "h", 300);
    let o = run(cv(&home).args(["-r", "sim:h", "wallet", "deposit", &id, "--pin", "env:P", "--safe", ds]));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(cv_owner(&home, OWNER).args([
        "-r",
        "sim:h",
        "wallet",
        "escrow",
        "--safe",
        ds,
        "--password",
        "env:OWNER",
        "--pin",
        "env:P",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    let old_key = state(&home, "h").wallet.key.clone();
    let o = run(cv(&home).args([
        "-r", "sim:h", "--json", "wallet", "rekey", "--safe", ds, "--pin", "env:P",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["redeposited"], serde_json::json!([id.clone()]));
    assert_ne!(state(&home, "h").wallet.key, old_key);
    // The card is lost; the escrow (the old key) is all the owner has.
    let lost = state(&home, "h").card_number.clone();
    std::fs::remove_file(card_path(&home, "h")).unwrap();
    let _ = load(&home, "n", 1);
    let o = run(cv_owner(&home, OWNER).args([
        "-r",
        "sim:n",
        "--json",
        "wallet",
        "recover",
        "--from-card",
        &lost,
        "--safe",
        ds,
        "--password",
        "env:OWNER",
        "--pin",
        "env:P",
    ]));
    // The safe delivers to the owner, but the old key does not open the
    // item deposited under the new one: the card adds nothing.
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("does not open with this card's keys"),
        "{}",
        stderr(&o)
    );
    assert_eq!(wallet_items(&home, "n").len(), 1);
}

/// What crosses the terminal-safe path can be read: a captured owner answer
/// replayed is refused (each challenge answers once), an answer for one
/// request does not serve another, the verifier the safe keeps is a public
/// key that opens nothing, and the requests carry no secret.
#[test]
fn a_captured_owner_answer_cannot_be_replayed_and_no_secret_crosses_to_the_safe() {
    use cardvault::safe::{EscrowFetch, OwnerChallengeRequest, SafeClient, SafeRefusal, OWNER_FETCH_REQUEST};
    use cardvault::workflow::escrow::OwnerSecret;
    let home = temp_dir("escrow-replay");
    let d = init_safe(&home, "safe1");
    let s = SafeServer::start(&home, &d);
    let _ = load(&home, "lost", 50);
    let mut c = cv_owner(&home, OWNER);
    c.args([
        "-r",
        "sim:lost",
        "--trace",
        "wallet",
        "escrow",
        "--safe",
        &s.url,
        "--password",
        "env:OWNER",
        "--pin",
        "env:P",
    ]);
    let o = run(&mut c);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_no_secret_echoed(&c, &o);
    let lost = state(&home, "lost").card_number.clone();
    let owner = OwnerSecret::derive(OWNER.as_bytes(), &lost).unwrap();
    // The trace shows the ESCROW exchange, masked: neither the escrow key
    // nor the wallet key appears.
    let trace = stderr(&o).to_lowercase();
    assert!(trace.contains("[scp11]"), "{trace}");
    for secret in [&owner.escrow_key().unwrap()[..], &state(&home, "lost").wallet.key[..]] {
        assert!(
            !trace.contains(&cardvault_proto::to_hex(secret)),
            "a secret in the trace"
        );
    }
    let mut safe = SafeClient::connect(&s.url.parse().unwrap()).unwrap();
    let id = safe.info().unwrap().unwrap().safe_id;
    let db = rusqlite::Connection::open(d.join("safe.sqlite")).unwrap();
    let (verifier, part): (String, Vec<u8>) = db
        .query_row(
            "SELECT verifier, part FROM escrow WHERE card_number = ?1",
            [&lost],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        verifier,
        owner.verifier(&id).unwrap(),
        "the safe keeps the owner key's public half"
    );
    // An honest fetch: one challenge, one answer.
    let fetch = EscrowFetch {
        card_number: lost.clone(),
        owner_proof: owner.prove(&mut safe, &id, &lost, OWNER_FETCH_REQUEST).unwrap(),
    };
    let body = serde_json::to_string(&fetch).unwrap();
    assert!(!body.contains(OWNER) && !body.contains(&cardvault_proto::to_hex(OWNER.as_bytes())));
    assert_eq!(
        safe.escrow_fetch(&fetch).unwrap().unwrap().part,
        cardvault_proto::to_hex(&part)
    );
    // The same answer replayed, over the wire or embedded, is refused.
    assert_eq!(
        safe.escrow_fetch(&fetch).unwrap(),
        Err(SafeRefusal::StaleOwnerChallenge)
    );
    // An answer signed for another request (a withdrawal) does not fetch.
    let c = safe
        .owner_challenge(&OwnerChallengeRequest {
            card_number: lost.clone(),
        })
        .unwrap()
        .unwrap();
    let other = EscrowFetch {
        card_number: lost.clone(),
        owner_proof: owner.answer(&id, &lost, &c.nonce, b"withdraw\0something else").unwrap(),
    };
    assert_eq!(
        safe.escrow_fetch(&other).unwrap(),
        Err(SafeRefusal::WrongOwnerPassword(lost.clone()))
    );
    // ... nor, having been tried, does the right answer to that challenge.
    let late = EscrowFetch {
        card_number: lost.clone(),
        owner_proof: owner.answer(&id, &lost, &c.nonce, OWNER_FETCH_REQUEST).unwrap(),
    };
    assert_eq!(safe.escrow_fetch(&late).unwrap(), Err(SafeRefusal::StaleOwnerChallenge));
    // A wrong password answers a fresh challenge wrongly.
    let wrong = OwnerSecret::derive(b"wrong password", &lost).unwrap();
    let w = EscrowFetch {
        card_number: lost.clone(),
        owner_proof: wrong.prove(&mut safe, &id, &lost, OWNER_FETCH_REQUEST).unwrap(),
    };
    assert_eq!(
        safe.escrow_fetch(&w).unwrap(),
        Err(SafeRefusal::WrongOwnerPassword(lost.clone()))
    );
    // The escrow row is unchanged by all of it.
    let after: (String, Vec<u8>) = db
        .query_row(
            "SELECT verifier, part FROM escrow WHERE card_number = ?1",
            [&lost],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(after, (verifier, part));
}
