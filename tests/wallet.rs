//! The electronic wallet: items of value enter only by the value issuer's
//! load signed for this card, this item and the card's fresh challenge; the
//! wallet holds a fixed number of items; spending needs the PIN; a load cut
//! at any APDU and retried loads the item exactly once.

mod common;

use cardvault::apdu::{Command, StatusWord};
use cardvault::card::{CardClient, SessionOptions};
use cardvault::transport::fault::{FaultyReader, PullMode, PullSchedule};
use cardvault::transport::sim::SimReader;
use cardvault::workflow::wallet::{self as ww, ItemLoadAuthorization, ItemSpec};
use cardvault_proto::wallet::{ItemLoad, ItemState, WalletItem};
use common::*;
use std::path::Path;

fn with_card<T>(home: &Path, name: &str, f: impl FnOnce(&mut CardClient<'_>) -> T) -> T {
    let mut r = SimReader::open(home, name, "main", None).unwrap();
    let mut c = CardClient::open(&mut r, SessionOptions::default()).unwrap();
    f(&mut c)
}

/// The test signer certificate's common name: the value issuer of every
/// item it signs.
const SIGNER_CN: &str = "cardvault TEST issuer authorization signer - NOT FOR PRODUCTION";

fn ticket() -> ItemSpec {
    ItemSpec {
        kind: "ticket".into(),
        name: "Museum day pass".into(),
        unit_price: 1200,
        quantity: 2,
        place: "City museum".into(),
        valid_from: Some("2026-01-01".into()),
        valid_until: Some("2099-12-31".into()),
        remarks: "adults".into(),
    }
}

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

/// An issuer-signed load for card `name` (a challenge is taken from it).
fn authorization(home: &Path, name: &str, spec: &ItemSpec) -> ItemLoadAuthorization {
    with_card(home, name, |c| {
        let req = ww::request_load(c, PIN.as_bytes(), spec).unwrap();
        ww::sign_load(&req, &issuer_signer()).unwrap()
    })
}

fn items(home: &Path, name: &str) -> Vec<(ItemState, WalletItem)> {
    with_card(home, name, |c| ww::list(c).unwrap().items)
}

fn wallet_state(home: &Path, name: &str) -> applet_sim::wallet::WalletState {
    state(home, name).wallet.clone()
}

/// The wallet's items, leaving out the outstanding challenge (which every
/// LOAD ITEM uses up, whatever its outcome).
fn held(home: &Path, name: &str) -> Vec<applet_sim::wallet::HeldItem> {
    wallet_state(home, name).items
}

fn small_wallet_profile(home: &Path, capacity: u8) -> String {
    let text = std::fs::read_to_string(repo_path("applet-sim/profiles/main.toml")).unwrap();
    let text = text.replacen("wallet_capacity = 8", &format!("wallet_capacity = {capacity}"), 1);
    let p = home.join(format!("wallet-{capacity}.toml"));
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn load_list_spend_and_status_through_the_cli() {
    let home = temp_dir("wallet-cli");
    let load = |extra: &[&str]| {
        let mut c = cv(&home);
        c.env("ISSUER", ISSUER_KEY_HEX.trim())
            .args([
                "-r",
                "sim:w",
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
            .args(extra);
        let o = run(&mut c);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_no_secret_echoed(&c, &o);
        json(&o)
    };
    let t = load(&[
        "--kind",
        "ticket",
        "--name",
        "Museum day pass",
        "--unit-price",
        "1200",
        "--quantity",
        "2",
        "--place",
        "City museum",
        "--valid-until",
        "2099-12-31",
    ]);
    assert_eq!(t["already_loaded"], false);
    assert_eq!(t["item"]["total"], 2400);
    assert_eq!(t["item"]["balance"], 2400);
    assert_eq!(t["item"]["issuer"], SIGNER_CN);
    let c = load(&["--kind", "cash", "--name", "Transit cash", "--unit-price", "500"]);
    assert_eq!(c["items"], 2);
    assert_eq!(c["capacity"], 8);

    let o = run(cv(&home).args(["-r", "sim:w", "--json", "wallet", "list"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let l = json(&o);
    assert_eq!(l["capacity"], 8);
    let list = l["items"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let ticket = &list[0];
    for (field, value) in [
        ("kind", serde_json::json!("ticket")),
        ("name", "Museum day pass".into()),
        ("unit_price", 1200.into()),
        ("quantity", 2.into()),
        ("total", 2400.into()),
        ("balance", 2400.into()),
        ("place", "City museum".into()),
        ("valid_from", serde_json::Value::Null),
        ("valid_until", "2099-12-31".into()),
        ("remarks", "".into()),
        ("state", "held".into()),
    ] {
        assert_eq!(ticket[field], value, "{field}");
    }
    let id = ticket["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32);

    // Spend by a prefix of the id, under the PIN.
    let o = run(cv(&home).args([
        "-r",
        "sim:w",
        "--json",
        "wallet",
        "spend",
        &id[..8],
        "1200",
        "--pin",
        "env:P",
    ]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["balance"], 1200);
    let o = run(cv(&home).args(["-r", "sim:w", "wallet", "spend", &id, "1200", "--pin", "env:P"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("left the wallet"), "{}", stdout(&o));

    let o = run(cv(&home).args(["-r", "sim:w", "--json", "status"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let s = json(&o);
    assert_eq!(s["wallet"]["items"], 1);
    assert_eq!(s["wallet"]["capacity"], 8);
    assert_eq!(s["wallet"]["cash_balance"], 500);
    let o = run(cv(&home).args(["-r", "sim:w", "status"]));
    assert!(
        stdout(&o).contains("wallet       1 of 8 item slots used, cash balance 500"),
        "{}",
        stdout(&o)
    );
    let o = run(cv(&home).args(["-r", "sim:w", "wallet", "list"]));
    assert!(stdout(&o).contains("Transit cash"), "{}", stdout(&o));
}

#[test]
fn two_party_load_is_good_once_and_a_retry_finds_the_item() {
    let home = temp_dir("wallet-two-party");
    let dir = home.join("files");
    std::fs::create_dir_all(&dir).unwrap();
    let (req, auth) = (dir.join("req.json"), dir.join("auth.json"));
    let o = run(cv(&home)
        .args([
            "-r",
            "sim:h",
            "wallet",
            "challenge",
            "--kind",
            "coupon",
            "--name",
            "10% off",
            "--unit-price",
            "1",
        ])
        .args(["--quantity", "5", "--pin", "env:P", "-o"])
        .arg(&req));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(cv(&home)
        .env("ISSUER", ISSUER_KEY_HEX.trim())
        .args(["wallet", "authorize", "--issuer-key", "env:ISSUER", "--signer-cert"])
        .arg(test_signer_cert())
        .arg("--request")
        .arg(&req)
        .arg("-o")
        .arg(&auth));
    assert!(o.status.success(), "{}", stderr(&o));
    let load = || {
        run(cv(&home)
            .args([
                "-r",
                "sim:h",
                "--json",
                "wallet",
                "load",
                "--pin",
                "env:P",
                "--authorization",
            ])
            .arg(&auth))
    };
    let o = load();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["already_loaded"], false);
    // The same authorization again: the card holds the item, nothing new.
    let o = load();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["already_loaded"], true);
    assert_eq!(items(&home, "h").len(), 1);
    // Spent to nothing, the item leaves; its authorization cannot bring it back.
    let id = cardvault_proto::to_hex(&items(&home, "h")[0].1.id);
    let o = run(cv(&home).args(["-r", "sim:h", "wallet", "spend", &id, "5", "--pin", "env:P"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let before = held(&home, "h");
    let o = load();
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("LOAD ITEM refused"), "{}", stderr(&o));
    assert_eq!(held(&home, "h"), before);
    assert!(before.is_empty());
}

#[test]
fn forged_edited_replayed_and_other_card_loads_are_refused_and_change_nothing() {
    let home = temp_dir("wallet-forged");
    let number = with_card(&home, "f", |c| c.card_number().unwrap());
    let before = held(&home, "f");
    let send = |load: &ItemLoad, challenge_first: bool| -> StatusWord {
        with_card(&home, "f", |c| {
            c.verify_pin(PIN.as_bytes()).unwrap();
            assert!(c.is_secure());
            if challenge_first {
                c.wallet_challenge().unwrap();
            }
            c.transmit(&Command::load_item(load)).unwrap().sw
        })
    };
    let signed = |item: &WalletItem, challenge: &[u8], key: &cardvault_proto::crypto::KeyPair| {
        let msg = cardvault_proto::wallet::load_message(&number, &item.encode(), challenge);
        let sig: [u8; 64] = cardvault_proto::crypto::sign_p256(key, &msg)
            .unwrap()
            .try_into()
            .unwrap();
        sig
    };
    let issuer = cardvault_proto::crypto::KeyPair::from_private(&issuer_key()).unwrap();
    let signer_cert = issuer_signer().certificate_der().to_vec();
    let mut item = ticket().new_item().unwrap();
    item.issuer = SIGNER_CN.into();

    // A forger's key with the issuer's certificate, over a real challenge.
    let forger = cardvault_proto::crypto::KeyPair::generate().unwrap();
    let sw = with_card(&home, "f", |c| {
        c.verify_pin(PIN.as_bytes()).unwrap();
        let ch = c.wallet_challenge().unwrap();
        let l = ItemLoad {
            item: item.clone(),
            signature: signed(&item, &ch, &forger),
            signer_certificate: signer_cert.clone(),
        };
        c.transmit(&Command::load_item(&l)).unwrap().sw
    });
    assert_eq!(sw, StatusWord::SecurityStatusNotSatisfied, "forged signature");

    // The issuer's signature, then the balance edited upwards.
    let sw = with_card(&home, "f", |c| {
        c.verify_pin(PIN.as_bytes()).unwrap();
        let ch = c.wallet_challenge().unwrap();
        let sig = signed(&item, &ch, &issuer);
        let mut edited = item.clone();
        edited.unit_price = 12000;
        edited.total = 24000;
        edited.balance = 24000;
        c.transmit(&Command::load_item(&ItemLoad {
            item: edited,
            signature: sig,
            signer_certificate: signer_cert.clone(),
        }))
        .unwrap()
        .sw
    });
    assert_eq!(sw, StatusWord::SecurityStatusNotSatisfied, "edited item");

    // A good signature over an old challenge (replay): the card has a new one.
    let replay = with_card(&home, "f", |c| {
        c.verify_pin(PIN.as_bytes()).unwrap();
        let ch = c.wallet_challenge().unwrap();
        ItemLoad {
            item: item.clone(),
            signature: signed(&item, &ch, &issuer),
            signer_certificate: signer_cert.clone(),
        }
    });
    assert_eq!(
        send(&replay, true),
        StatusWord::SecurityStatusNotSatisfied,
        "replayed load"
    );

    // No challenge outstanding at all.
    assert_eq!(
        send(&replay, false),
        StatusWord::SecurityStatusNotSatisfied,
        "no challenge"
    );

    // A rogue root's signer, whose name is the issuer's.
    let rogue_root = cardvault_proto::cert::issue_root(&forger, "rogue", "20250101000000Z", "20500101000000Z").unwrap();
    let rogue_signer =
        cardvault_proto::cert::issue_signer_certificate(&forger, &rogue_root, &forger.public_bytes(), SIGNER_CN, 30)
            .unwrap();
    let sw = with_card(&home, "f", |c| {
        c.verify_pin(PIN.as_bytes()).unwrap();
        let ch = c.wallet_challenge().unwrap();
        c.transmit(&Command::load_item(&ItemLoad {
            item: item.clone(),
            signature: signed(&item, &ch, &forger),
            signer_certificate: rogue_signer.to_der().unwrap(),
        }))
        .unwrap()
        .sw
    });
    assert_eq!(sw, StatusWord::SecurityStatusNotSatisfied, "rogue signer");

    // The issuer's signature naming another issuer in the item.
    let sw = with_card(&home, "f", |c| {
        c.verify_pin(PIN.as_bytes()).unwrap();
        let ch = c.wallet_challenge().unwrap();
        let mut other = item.clone();
        other.issuer = "someone else".into();
        c.transmit(&Command::load_item(&ItemLoad {
            signature: signed(&other, &ch, &issuer),
            item: other,
            signer_certificate: signer_cert.clone(),
        }))
        .unwrap()
        .sw
    });
    assert_eq!(sw, StatusWord::WrongData, "issuer not the signer");

    // Another card's authorization: the terminal stops it, and the card would.
    let other = authorization(&home, "other", &ticket());
    let o = run(cv(&home)
        .args(["-r", "sim:f", "wallet", "load", "--pin", "env:P", "--authorization"])
        .arg({
            let p = home.join("other.json");
            std::fs::write(&p, serde_json::to_string(&other).unwrap()).unwrap();
            p
        }));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("names card"), "{}", stderr(&o));
    let mut copy = other.clone();
    copy.request.card_number = number.clone();
    let r = with_card(&home, "f", |c| {
        c.verify_pin(PIN.as_bytes()).unwrap();
        c.wallet_challenge().unwrap();
        ww::load(c, PIN.as_bytes(), &copy)
    });
    assert!(
        matches!(
            r,
            Err(cardvault::Error::CardRefusal(
                cardvault::card::Refusal::ItemLoadNotAuthorized
            ))
        ),
        "{r:?}"
    );
    assert_eq!(held(&home, "f"), before, "a refused load changed the wallet");
    assert!(before.is_empty());
    // Without the PIN (no secure session either): 6982.
    let sw = with_card(&home, "f", |c| c.transmit(&Command::load_item(&replay)).unwrap().sw);
    assert_eq!(sw, StatusWord::SecurityStatusNotSatisfied);
    assert_eq!(held(&home, "f"), before);
}

#[test]
fn a_full_wallet_refuses_the_next_item_and_keeps_what_it_holds() {
    let home = temp_dir("wallet-full");
    let profile = small_wallet_profile(&home, 2);
    let open = |f: &mut dyn FnMut(&mut CardClient<'_>)| {
        let mut r = SimReader::open(&home, "s", &profile, None).unwrap();
        let mut c = CardClient::open(&mut r, SessionOptions::default()).unwrap();
        f(&mut c)
    };
    for amount in [100, 200] {
        open(&mut |c| {
            ww::load_with_signer(c, PIN.as_bytes(), &cash(amount), &issuer_signer()).unwrap();
        });
    }
    let before = held(&home, "s");
    assert_eq!(before.len(), 2);
    open(&mut |c| {
        let r = ww::load_with_signer(c, PIN.as_bytes(), &cash(300), &issuer_signer());
        assert!(
            matches!(
                r,
                Err(cardvault::Error::CardRefusal(cardvault::card::Refusal::WalletFull(2)))
            ),
            "{r:?}"
        );
    });
    // The card itself refuses it too (6A84), when a terminal does not look first.
    let sw = {
        let mut r = SimReader::open(&home, "s", &profile, None).unwrap();
        let mut c = CardClient::open(&mut r, SessionOptions::default()).unwrap();
        let req = ww::request_load(&mut c, PIN.as_bytes(), &cash(300)).unwrap();
        let auth = ww::sign_load(&req, &issuer_signer()).unwrap();
        let load = ItemLoad {
            item: auth.request.item.to_item().unwrap(),
            signature: cardvault_proto::from_hex(&auth.signature).unwrap().try_into().unwrap(),
            signer_certificate: cardvault_proto::from_hex(&auth.signer_certificate).unwrap(),
        };
        c.transmit(&Command::load_item(&load)).unwrap().sw
    };
    assert_eq!(sw, StatusWord::NotEnoughMemory);
    assert_eq!(held(&home, "s"), before);
    // Through the CLI: exit 4 and a clear message.
    let o = run(cv(&home)
        .env("ISSUER", ISSUER_KEY_HEX.trim())
        .args([
            "-r",
            "sim:s",
            "wallet",
            "load",
            "--pin",
            "env:P",
            "--issuer-key",
            "env:ISSUER",
            "--signer-cert",
        ])
        .arg(test_signer_cert())
        .args(["--kind", "cash", "--name", "more", "--unit-price", "1"]));
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("the wallet is full"), "{}", stderr(&o));
    assert_eq!(held(&home, "s"), before);
}

#[test]
fn spend_needs_the_pin_and_a_held_item_and_never_more_than_is_left() {
    let home = temp_dir("wallet-spend");
    let id = with_card(&home, "p", |c| {
        ww::load_with_signer(c, PIN.as_bytes(), &cash(500), &issuer_signer())
            .unwrap()
            .item
            .id
    });
    let before = held(&home, "p");
    let spend = |args: &[&str]| run(cv(&home).args(["-r", "sim:p", "wallet", "spend"]).args(args));
    // More than is left, and nothing.
    for amount in ["501", "0"] {
        let o = spend(&[&id, amount, "--pin", "env:P"]);
        assert_eq!(o.status.code(), Some(4), "{amount}: {}", stderr(&o));
        assert!(stderr(&o).contains("remaining balance of 500"), "{}", stderr(&o));
    }
    // An item the wallet does not hold.
    let o = spend(&["00112233", "1", "--pin", "env:P"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("holds no item"), "{}", stderr(&o));
    // A wrong PIN.
    let o = run(cv(&home)
        .env("P", "999999")
        .args(["-r", "sim:p", "wallet", "spend", &id, "1", "--pin", "env:P"]));
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert_eq!(held(&home, "p"), before);
    // The card's own refusals, past the terminal's checks.
    let raw: [u8; 16] = cardvault_proto::from_hex(&id).unwrap().try_into().unwrap();
    with_card(&home, "p", |c| {
        // Without the PIN.
        assert_eq!(
            c.transmit(&Command::spend(&raw, 1)).unwrap().sw,
            StatusWord::SecurityStatusNotSatisfied
        );
        c.verify_pin(PIN.as_bytes()).unwrap();
        assert_eq!(
            c.transmit(&Command::spend(&raw, 501)).unwrap().sw,
            StatusWord::WrongData
        );
        assert_eq!(c.transmit(&Command::spend(&raw, 0)).unwrap().sw, StatusWord::WrongData);
        assert_eq!(
            c.transmit(&Command::spend(&[9; 16], 1)).unwrap().sw,
            StatusWord::ReferenceDataNotFound
        );
    });
    assert_eq!(held(&home, "p"), before);
    let o = spend(&[&id, "120", "--pin", "env:P"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(items(&home, "p")[0].1.balance, 380);
}

/// A load pulled at every APDU (its answer lost, or never delivered), then
/// retried with a fresh challenge: the item is on the card exactly once, and
/// never before the card checked the issuer's signature.
#[test]
fn a_load_pulled_at_every_apdu_and_retried_loads_the_item_once() {
    let template = temp_dir("wallet-cut-template");
    with_card(&template, "c", |c| c.card_number().unwrap());
    let spec = ticket();
    let item = {
        let mut i = spec.new_item().unwrap();
        i.issuer = SIGNER_CN.into();
        i
    };
    let view = ww::ItemView::of(&item, None);
    let run_load = |home: &Path, sched: &std::sync::Arc<PullSchedule>| -> cardvault::Result<()> {
        let mut r = FaultyReader::new(SimReader::open(home, "c", "main", None).unwrap(), sched.clone());
        let mut c = CardClient::open(&mut r, SessionOptions::default())?;
        c.verify_pin(PIN.as_bytes())?;
        let challenge = c.wallet_challenge()?;
        let req = ww::ItemLoadRequest {
            version: ww::LOAD_FILE_VERSION,
            card_number: c.card_number()?,
            challenge: cardvault_proto::to_hex(&challenge),
            item: view.clone(),
        };
        let auth = ww::sign_load(&req, &issuer_signer())?;
        ww::load(&mut c, PIN.as_bytes(), &auth).map(|_| ())
    };
    let counting = PullSchedule::counting();
    let base = temp_dir("wallet-cut-count");
    copy_card(&template, &base);
    run_load(&base, &counting).unwrap();
    let n = counting.delivered();
    assert_eq!(items(&base, "c").len(), 1);
    let mut tried = 0;
    for k in 1..=n {
        for mode in [PullMode::AnswerLost, PullMode::NotDelivered] {
            tried += 1;
            let dir = temp_dir(&format!("wallet-cut-{k}"));
            copy_card(&template, &dir);
            let sched = PullSchedule::new(k, mode);
            let r = run_load(&dir, &sched);
            assert!(sched.pulled(), "k={k}: the schedule never fired");
            assert!(
                matches!(r, Err(cardvault::Error::CardRemoved(_))),
                "k={k} {mode:?}: {r:?}"
            );
            let after_cut = items(&dir, "c");
            assert!(after_cut.len() <= 1, "k={k} {mode:?}: {after_cut:?}");
            if let Some((s, i)) = after_cut.first() {
                assert_eq!((*s, i), (ItemState::Held, &item), "k={k} {mode:?}");
            }
            // The retry (a fresh challenge, the same item) converges.
            run_load(&dir, &PullSchedule::counting()).unwrap_or_else(|e| panic!("k={k} {mode:?}: retry: {e}"));
            let after = items(&dir, "c");
            assert_eq!(after, vec![(ItemState::Held, item.clone())], "k={k} {mode:?}");
        }
    }
    println!("cut points wallet load: tried {tried} ({n} APDUs x 2 pull modes)");
    assert_eq!(tried, 2 * n);
}

fn copy_card(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let name = e.file_name();
        if name.to_string_lossy().ends_with(".lock") {
            continue;
        }
        if e.path().is_dir() {
            copy_card(&e.path(), &to.join(&name));
        } else {
            std::fs::copy(e.path(), to.join(&name)).unwrap();
        }
    }
}

/// The card has no clock: the terminal refuses to spend an item outside its
/// validity by its own date, with a clear error, and the card is unchanged.
#[test]
fn an_item_outside_its_validity_is_refused_at_spend_and_the_card_is_unchanged() {
    let home = temp_dir("wallet-validity");
    let spec = |from: Option<&str>, until: Option<&str>| ItemSpec {
        valid_from: from.map(Into::into),
        valid_until: until.map(Into::into),
        ..cash(300)
    };
    let load = |s: &ItemSpec| {
        with_card(&home, "v", |c| {
            ww::load_with_signer(c, PIN.as_bytes(), s, &issuer_signer())
                .unwrap()
                .item
                .id
        })
    };
    let expired = load(&spec(Some("2020-01-01"), Some("2020-12-31")));
    let future = load(&spec(Some("2999-01-01"), None));
    let current = load(&spec(Some("2020-01-01"), Some("2999-12-31")));
    let before = held(&home, "v");
    for (id, period) in [
        (&expired, "from 2020-01-01 until 2020-12-31"),
        (&future, "from 2999-01-01 until no end"),
    ] {
        let o = run(cv(&home).args(["-r", "sim:v", "--json", "wallet", "spend", id, "10", "--pin", "env:P"]));
        assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
        let msg = json(&o)["error"]["message"].as_str().unwrap_or_default().to_string();
        assert!(msg.contains(period) && msg.contains("outside"), "{msg}");
        assert_eq!(json(&o)["error"]["kind"], "refused");
        assert_eq!(held(&home, "v"), before, "a refused spend changed the card");
    }
    let o = run(cv(&home).args(["-r", "sim:v", "wallet", "spend", &current, "10", "--pin", "env:P"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let left: Vec<u32> = items(&home, "v").iter().map(|(_, i)| i.balance).collect();
    assert_eq!(left, vec![300, 300, 290]);
}
