//! The help desk's holder lookup: a holder found by member number, name or
//! card number, the holder's backups and audit lines, a lost main card, and
//! the restore request for a replacement card made from the holder alone.

mod common;

use common::*;
use std::path::Path;

fn holder_json(home: &Path, h: &str) -> serde_json::Value {
    let o = run(cv(home).args(["--json", "holder", "show", h]));
    assert!(o.status.success(), "{}", stderr(&o));
    json(&o)
}

#[test]
fn a_holder_is_found_by_member_number_name_or_card_and_a_lost_card_leads_to_its_restore() {
    let home = temp_dir("holders");
    let dir = home.join("domain");
    let pass = domain_init(&home, &dir, 2, 3);
    let domain = domain_args(&dir, &pass, &[1, 2]);
    issue_holders(
        &home,
        "h",
        "pair",
        "alice,2468,M-1001,2030-01\nbob,1357,M-1002,2031-06\n",
        &domain,
    );

    // The list: both holders, their cards, active.
    let o = run(cv(&home).args(["--json", "holder", "list"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let list = json(&o)["holders"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0]["holder"], "alice");
    assert_eq!(list[0]["member_number"], "M-1001");
    assert_eq!(list[0]["state"], "active");
    let cards = list[0]["cards"].as_array().unwrap();
    assert_eq!(cards.len(), 2);
    let main = cards.iter().find(|c| c["role"] == "main").unwrap()["card_number"]
        .as_str()
        .unwrap()
        .to_string();
    let backup = cards.iter().find(|c| c["role"] == "backup").unwrap()["card_number"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(state(&home, "h-alice-main").card_number, main);

    // The same holder by member number, by name and by either card.
    for name in ["M-1001", "alice", main.as_str(), backup.as_str()] {
        assert_eq!(holder_json(&home, name)["holder"]["member_number"], "M-1001", "{name}");
    }
    // An unknown holder: exit 2, and the close names.
    let o = run(cv(&home).args(["holder", "show", "m-100"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("did you mean M-1001 or M-1002?"), "{}", stderr(&o));

    // A backup of alice's main card is listed under her, not under bob.
    let o = run(cv(&home)
        .env("P", "2468")
        .args(["-r", "sim:h-alice-main", "backup", "--pin", "env:P"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let listed = |h: &str| {
        let o = run(cv(&home).args(["--json", "vault", "list", "--holder", h]));
        assert!(o.status.success(), "{}", stderr(&o));
        json(&o)["backups"].as_array().unwrap().len()
    };
    assert_eq!(listed("M-1001"), 1);
    assert_eq!(listed("bob"), 0);

    // Text status and audit name the member number.
    let o = run(cv(&home).args(["-r", "sim:h-alice-main", "status"]));
    assert!(stdout(&o).contains("member       M-1001"), "{}", stdout(&o));
    let o = run(cv(&home).args(["audit"]));
    let text = stdout(&o);
    let issue_lines: Vec<&str> = text.lines().filter(|l| l.contains(" issue ")).map(str::trim).collect();
    assert_eq!(issue_lines.len(), 4, "{}", stdout(&o));
    assert!(
        issue_lines.iter().any(|l| l.contains(&main) && l.contains("M-1001")),
        "{issue_lines:?}"
    );

    // Alice loses her card: it is revoked, she is "lost".
    let o = run(cv(&home).args(["--json", "holder", "lost", "M-1001", "--reason", "lost on the train"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["card"], main.as_str());
    let h = holder_json(&home, "alice");
    assert_eq!(h["holder"]["state"], "lost");
    let o = run(cv(&home).args(["--json", "audit", "--card", &main]));
    assert!(
        stdout(&o).contains("card-revoked") && stdout(&o).contains("lost on the train"),
        "{}",
        stdout(&o)
    );
    // Twice is refused, and the trail does not grow.
    let before = stdout(&run(cv(&home).args(["--json", "audit"])));
    let o = run(cv(&home).args(["holder", "lost", "M-1001"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no main card in use"), "{}", stderr(&o));
    assert_eq!(stdout(&run(cv(&home).args(["--json", "audit"]))), before);
    // Bob is untouched.
    assert_eq!(holder_json(&home, "M-1002")["holder"]["state"], "active");

    // A replacement main card for alice: she is "replaced", and the restore
    // request made from her member number names the lost card.
    issue_holders(&home, "r", "main", "alice,2468,M-1001,2030-01\n", &domain);
    let h = holder_json(&home, "M-1001");
    assert_eq!(h["holder"]["state"], "replaced", "{h}");
    assert_eq!(h["holder"]["cards"].as_array().unwrap().len(), 3);
    let req = home.join("req.json");
    let o = run(cv(&home)
        .env("P", "2468")
        .args([
            "-r",
            "sim:r-alice-main",
            "restore",
            "--holder",
            "M-1001",
            "--pin",
            "env:P",
            "--request",
        ])
        .arg(&req));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let request: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&req).unwrap()).unwrap();
    assert_eq!(request["source_card"], main.as_str(), "{request}");
    // Bob has no lost card to restore from.
    let o = run(cv(&home)
        .env("P", "2468")
        .args([
            "-r",
            "sim:r-alice-main",
            "restore",
            "--holder",
            "bob",
            "--pin",
            "env:P",
            "--request",
        ])
        .arg(home.join("bob.json")));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("holder lost bob"), "{}", stderr(&o));
    assert!(!home.join("bob.json").exists());
}

/// `--holder` where a card number is taken: `audit`, `vault export` and
/// `store list` keep the holder's cards only, and an unknown holder is a
/// clear error.
#[test]
fn audit_vault_export_and_store_list_take_a_holder() {
    let home = temp_dir("holders-filters");
    let dir = home.join("domain");
    let pass = domain_init(&home, &dir, 2, 3);
    let domain = domain_args(&dir, &pass, &[1, 2]);
    issue_holders(
        &home,
        "f",
        "pair",
        "alice,2468,M-2001,2030-01\nbob,1357,M-2002,2031-06\n",
        &domain,
    );
    let cards = |h: &str| -> Vec<String> {
        holder_json(&home, h)["holder"]["cards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["card_number"].as_str().unwrap().to_string())
            .collect()
    };
    let (alice, bob) = (cards("M-2001"), cards("bob"));
    for (who, pin) in [("alice", "2468"), ("bob", "1357")] {
        let o = run(cv(&home)
            .env("P", pin)
            .args(["-r", &format!("sim:f-{who}-main"), "backup", "--pin", "env:P"]));
        assert!(o.status.success(), "{}", stderr(&o));
    }
    // audit: only entries about alice's cards, and some of them.
    let o = run(cv(&home).args(["--json", "audit", "--holder", "M-2001"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let entries = json(&o)["entries"].as_array().unwrap().clone();
    assert!(!entries.is_empty());
    for e in &entries {
        assert!(alice.contains(&e["card"].as_str().unwrap().to_string()), "{e}");
    }
    let all = json(&run(cv(&home).args(["--json", "audit"])))["entries"]
        .as_array()
        .unwrap()
        .len();
    assert!(entries.len() < all, "the filter kept every entry");
    // vault export: bob's one backup.
    let out = home.join("bob.sqlite");
    let o = run(cv(&home)
        .args(["--json", "vault", "export", "--holder", "bob", "-o"])
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["exported"], 1);
    let o = run(cv(&home).arg("--vault").arg(&out).args(["--json", "vault", "list"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json(&o);
    let rows = v.as_array().or_else(|| v["backups"].as_array()).unwrap().clone();
    assert_eq!(rows.len(), 1, "{v}");
    assert!(
        bob.contains(&rows[0]["card_number"].as_str().unwrap().to_string()),
        "{v}"
    );
    // store list: nothing stored for alice yet; an unknown holder is an error.
    let o = run(cv(&home).args(["--json", "store", "list", "--holder", "alice"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o), serde_json::json!([]));
    let o = run(cv(&home).args(["audit", "--holder", "M-9999"]));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("M-9999"), "{}", stderr(&o));
}

/// `wallet recover --holder`: the holder's lost main card is the source;
/// a holder without one is told to mark it lost first, and nothing is asked
/// of the safe or the card.
#[test]
fn wallet_recover_takes_the_holders_lost_main_card() {
    let home = temp_dir("holders-recover");
    issue_holders(
        &home,
        "w",
        "pair",
        "carol,2468,M-3001,2030-01\n",
        &["--no-domain".to_string()],
    );
    let safe = init_safe(&home, "safe");
    let recover = || {
        let mut c = cv(&home);
        c.env("OWNER", "owner password")
            .env("P", PIN)
            .args(["-r", "sim:w-new", "wallet", "recover", "--holder", "M-3001", "--safe"])
            .arg(&safe)
            .args(["--password", "env:OWNER", "--pin", "env:P"]);
        run(&mut c)
    };
    let o = recover();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no lost main card"), "{}", stderr(&o));
    assert!(!card_path(&home, "w-new").exists(), "the new card was touched");
    let main = holder_json(&home, "M-3001")["holder"]["cards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["role"] == "main")
        .unwrap()["card_number"]
        .as_str()
        .unwrap()
        .to_string();
    let o = run(cv(&home).args(["holder", "lost", "M-3001", "--reason", "lost"]));
    assert!(o.status.success(), "{}", stderr(&o));
    // Now the lost card is the source: the safe holds no escrow of it.
    let o = recover();
    assert!(!o.status.success());
    assert!(stderr(&o).contains(&main), "{}", stderr(&o));
}

/// `keygroup destroy --holder` and `safe release --holder` resolve the
/// holder before anything else: an unknown holder, or one without a lost
/// main card, is a clear error and no card or safe is asked anything.
#[test]
fn issuer_side_commands_take_a_holder() {
    let home = temp_dir("holders-issuer-side");
    issue_holders(
        &home,
        "i",
        "pair",
        "dave,2468,M-4001,2030-01\n",
        &["--no-domain".to_string()],
    );
    let o = run(cv(&home)
        .env("P", "2468")
        .args([
            "-r",
            "sim:i-dave-backup",
            "keygroup",
            "destroy",
            "--holder",
            "M-4999",
            "--counter",
            "1",
            "--pin",
            "env:P",
            "-o",
        ])
        .arg(home.join("receipt.json")));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("M-4999"), "{}", stderr(&o));
    assert!(!home.join("receipt.json").exists());
    let o = run(cv(&home).args([
        "safe",
        "release",
        "--safe",
        "http://127.0.0.1:9",
        "--counter",
        "1",
        "--holder",
        "M-4001",
        "--issuer-key",
        "env:NOPE",
        "--signer-cert",
        "nope.pem",
    ]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no lost main card"), "{}", stderr(&o));
}
