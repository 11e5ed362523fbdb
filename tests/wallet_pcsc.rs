//! The wallet and the safe through the real stack: two cards behind pcscd
//! and the vsmartcard vpcd driver (applet-sim), a safe as a real `safe
//! serve` process on loopback. A card loads an item, deposits it and is
//! lost; its replacement in the other reader withdraws it under the
//! issuer's authorization.

mod common;

use common::stack::*;
use common::*;

#[test]
fn an_item_deposited_from_one_pcsc_card_comes_back_on_its_replacement() {
    let Some(stack) = PcscStack::start("an_item_deposited_from_one_pcsc_card_comes_back_on_its_replacement") else {
        return;
    };
    let dir = temp_dir("wallet-pcsc");
    let home = dir.join("home");
    let (a, b) = (dir.join("a.card"), dir.join("b.card"));
    let _sim = stack.sim(&[(0, &a, "main"), (1, &b, "replacement")]);
    let safe = init_safe(&home, "safe1");
    let server = SafeServer::start(&home, &safe);
    let cv = |args: &[&str]| {
        let mut c = cardvault(&home);
        c.arg("--trust")
            .arg(test_root())
            .env("P", PIN)
            .env("ISSUER", ISSUER_KEY_HEX.trim())
            .args(args);
        let o = run(&mut c);
        assert_no_secret_echoed(&c, &o);
        o
    };
    let signer = test_signer_cert();
    let signer = signer.to_str().unwrap();
    let o = cv(&[
        "-r",
        "0",
        "--json",
        "wallet",
        "load",
        "--pin",
        "env:P",
        "--issuer-key",
        "env:ISSUER",
        "--signer-cert",
        signer,
        "--kind",
        "ticket",
        "--name",
        "Concert",
        "--unit-price",
        "8000",
        "--valid-until",
        "2027-06-30",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let id = json(&o)["item"]["id"].as_str().unwrap().to_string();
    let o = cv(&[
        "-r",
        "0",
        "--json",
        "wallet",
        "deposit",
        &id,
        "--pin",
        "env:P",
        "--safe",
        &server.url,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = cv(&["-r", "0", "--json", "wallet", "list"]);
    assert_eq!(json(&o)["items"], serde_json::json!([]));
    // Card a is lost. The replacement withdraws by the vault's copy: refused
    // without the issuer, accepted with it.
    let o = cv(&[
        "-r",
        "1",
        "--json",
        "wallet",
        "withdraw",
        &id,
        "--from-vault",
        "--pin",
        "env:P",
        "--safe",
        &server.url,
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    let o = cv(&[
        "-r",
        "1",
        "--json",
        "wallet",
        "withdraw",
        &id,
        "--from-vault",
        "--pin",
        "env:P",
        "--safe",
        &server.url,
        "--issuer-key",
        "env:ISSUER",
        "--signer-cert",
        signer,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["settled"], true);
    let o = cv(&["-r", "1", "--json", "wallet", "list"]);
    let items = json(&o)["items"].clone();
    assert_eq!(items.as_array().unwrap().len(), 1);
    assert_eq!(items[0]["id"], id.as_str());
    assert_eq!(items[0]["balance"], 8000);
    let o = cv(&["--json", "safe", "list", "--safe", &server.url]);
    assert_eq!(json(&o)[0]["state"], "withdrawn");
    // A second withdrawal of the same certificate: the vault knows it was
    // withdrawn (and the safe would refuse it, tests/safe.rs).
    let o = cv(&[
        "-r",
        "0",
        "--json",
        "wallet",
        "withdraw",
        &id,
        "--from-vault",
        "--pin",
        "env:P",
        "--safe",
        &server.url,
        "--issuer-key",
        "env:ISSUER",
        "--signer-cert",
        signer,
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no registration certificate"), "{}", stderr(&o));
}
