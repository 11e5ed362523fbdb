//! The key ceremony from the command line: a 3-of-5 domain, shares checked
//! one by one, passphrases only from secret sources.

mod common;

use common::*;

#[test]
fn domain_init_and_verify_from_the_command_line() {
    let home = temp_dir("domain-cli");
    let dir = home.join("domain");
    let mut c = cv(&home);
    c.args([
        "--json",
        "domain",
        "init",
        "--custodians",
        "5",
        "--threshold",
        "3",
        "-o",
    ])
    .arg(&dir);
    for i in 1..=5 {
        c.env(format!("PASS{i}"), format!("custodian {i} says hello"));
        c.args(["--passphrase", &format!("env:PASS{i}")]);
    }
    let o = run(&mut c);
    assert!(o.status.success(), "{}", stderr(&o));
    let d = json(&o);
    assert_eq!(d["threshold"], 3);
    // Five shares and the public description; no file holds the key.
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "domain.json",
            "share-1.json",
            "share-2.json",
            "share-3.json",
            "share-4.json",
            "share-5.json"
        ]
    );
    let verify = |share: &str, pass: &str| {
        run(cv(&home).env("X", pass).args(["domain", "verify"]).arg(&dir).args([
            "--share",
            share,
            "--passphrase",
            "env:X",
        ]))
    };
    let o = verify("2", "custodian 2 says hello");
    assert!(o.status.success(), "{}", stderr(&o));
    let o = verify("2", "custodian 3 says hello");
    assert!(!o.status.success());
    assert!(stderr(&o).contains("wrong passphrase"), "{}", stderr(&o));
    // A passphrase on the command line is refused before anything is written.
    let o = run(cv(&home)
        .args(["domain", "init", "--custodians", "2", "--threshold", "2", "-o"])
        .arg(home.join("d2"))
        .args(["--passphrase", "hunter2", "--passphrase", "hunter3"]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!home.join("d2").exists());
}

/// Issue one main card for `holder` from the embedded feeder `sim:PREFIX`
/// (card `PREFIX-HOLDER-main`) with extra `issue` options.
fn issue_main(home: &std::path::Path, prefix: &str, holder: &str, extra: &[String]) -> std::process::Output {
    let csv = home.join(format!("{prefix}-{holder}.csv"));
    std::fs::write(
        &csv,
        format!("holder,pin,member_number,expiry\n{holder},{PIN},M-{holder},2031-01\n"),
    )
    .unwrap();
    run(cv(home)
        .args([
            "-r",
            &format!("sim:{prefix}"),
            "issue",
            "--profile",
            "main",
            "--holders",
        ])
        .arg(&csv)
        .args(extra))
}

fn client(r: &mut dyn cardvault::transport::Reader) -> cardvault::Result<cardvault::card::CardClient<'_>> {
    cardvault::card::CardClient::open(r, cardvault::card::SessionOptions::default())
}

fn domain_of(home: &std::path::Path, card: &str) -> cardvault_proto::domain::DomainRef {
    state(home, card).domain()
}

fn domain_json(dir: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("domain.json")).unwrap()).unwrap()
}

fn restores(home: &std::path::Path) -> i64 {
    let c = rusqlite::Connection::open(home.join("vault.sqlite")).unwrap();
    c.query_row("SELECT COUNT(*) FROM restores", [], |r| r.get(0)).unwrap()
}

/// Back up card `source` (memory written first), report it lost, and have
/// the issuer authorize its restore onto `target`; returns the authorization.
fn backup_and_authorize(home: &std::path::Path, source: &str, target: &str) -> std::path::PathBuf {
    let o = run(cv(home).args(["--json", "-r", &format!("sim:{source}"), "backup", "--pin", "env:P"]));
    assert!(o.status.success(), "backup: {}", stderr(&o));
    let number = state(home, source).card_number.clone();
    let req = home.join(format!("req-{target}.json"));
    let o = run(cv(home)
        .args(["-r", &format!("sim:{target}"), "restore", "--from-card", &number])
        .args(["--pin", "env:P", "--request"])
        .arg(&req));
    assert!(o.status.success(), "request: {}", stderr(&o));
    assert!(run(cv(home).args(["card", "revoke", &number])).status.success());
    let auth = home.join(format!("auth-{target}.json"));
    let o = run(cv(home)
        .args(["authorize-restore", "--request"])
        .arg(&req)
        .arg("--signer-cert")
        .arg(test_signer_cert())
        .arg("--issuer-key")
        .arg(format!(
            "file:{}",
            repo_path("fixtures/issuer/issuer-private.hex").display()
        ))
        .arg("--issuer-root")
        .arg(test_root())
        .arg("-o")
        .arg(&auth));
    assert!(o.status.success(), "authorize: {}", stderr(&o));
    auth
}

/// The ceremony end to end (issue 11): a 3-of-5 domain; two custodians
/// cannot issue, a wrong passphrase names its share, and neither loads
/// anything into any card; three custodians issue cards that carry the
/// domain; a backup of one restores onto another card of the domain, and a
/// card of another domain refuses it with nothing changed.
#[test]
fn ceremony_3_of_5_two_fail_three_issue_and_cards_restore_only_within_their_domain() {
    let home = temp_dir("ceremony");
    let d1 = home.join("domain-1");
    let pass = domain_init(&home, &d1, 3, 5);
    let info = domain_json(&d1);
    let blank_cards = || cardvault::transport::sim::list(&home);

    // Two custodians: refused, naming how many are needed; no card made.
    let o = issue_main(&home, "a", "alice", &domain_args(&d1, &pass, &[1, 4]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("2 custodian share(s) given, 3 of 5 needed"),
        "{}",
        stderr(&o)
    );
    assert!(blank_cards().is_empty(), "a card was touched: {:?}", blank_cards());
    // A wrong passphrase: refused, naming the share; no card made.
    let mut wrong = pass.clone();
    wrong[1] = home.join("not-the-passphrase");
    std::fs::write(&wrong[1], "qx7-wrong-9f\n").unwrap();
    let o = issue_main(&home, "a", "alice", &domain_args(&d1, &wrong, &[1, 2, 3]));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("share 2: wrong passphrase"), "{}", stderr(&o));
    assert!(blank_cards().is_empty(), "a card was touched: {:?}", blank_cards());
    // No --domain at all: refused, naming --domain.
    let o = issue_main(&home, "a", "alice", &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--domain DIR"), "{}", stderr(&o));
    assert!(blank_cards().is_empty());

    // Three custodians (any three): the cards get the domain's key and name it.
    let o = issue_main(&home, "a", "alice", &domain_args(&d1, &pass, &[5, 3, 1]));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let o = issue_main(&home, "b", "bob", &domain_args(&d1, &pass, &[2, 4, 5]));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let (a, b) = ("a-alice-main", "b-bob-main");
    let want = cardvault_proto::domain::DomainRef {
        id: cardvault_proto::from_hex(info["domain_id"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap(),
        generation: 1,
    };
    assert_eq!(domain_of(&home, a), want);
    assert_eq!(domain_of(&home, b), want);
    assert_eq!(state(&home, a).common_key, state(&home, b).common_key);
    // The key is nowhere on disk but inside the cards.
    let key = state(&home, a).common_key.clone();
    for f in std::fs::read_dir(&d1).unwrap() {
        let text = std::fs::read(f.unwrap().path()).unwrap();
        assert!(!text.windows(32).any(|w| w == key), "the domain key is on disk");
        assert!(!String::from_utf8_lossy(&text).contains(&cardvault_proto::to_hex(&key)));
    }

    // Another domain's card.
    let d2 = home.join("domain-2");
    let pass2 = domain_init(&home, &d2, 2, 2);
    let o = issue_main(&home, "c", "carol", &domain_args(&d2, &pass2, &[1, 2]));
    assert!(o.status.success(), "{}", stderr(&o));
    let c = "c-carol-main";
    assert_ne!(domain_of(&home, c), want);

    // Alice's backup restores onto bob's card (same domain generation).
    {
        let mut r = cardvault::transport::sim::SimReader::open(&home, a, "main", None).unwrap();
        let mut cl = client(&mut r).unwrap();
        cl.verify_pin(PIN.as_bytes()).unwrap();
        cl.write_memory(68, b"page 68 of alice: allergy penicillin").unwrap();
    }
    let auth = backup_and_authorize(&home, a, b);
    let source = state(&home, a).card_number.clone();
    let o = run(cv(&home)
        .args(["--json", "-r", &format!("sim:{b}"), "restore", "--from-card", &source])
        .arg("--authorization")
        .arg(&auth)
        .args(["--pin", "env:P"]));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert_eq!(json(&o)["mode"], "other-card");
    assert_eq!(
        &state(&home, b).memory[68 * 256..68 * 256 + 36],
        b"page 68 of alice: allergy penicillin"
    );

    // Carol's card (another domain) refuses alice's backup: the request is
    // refused before the card hands out a challenge...
    let before = state(&home, c);
    let restores_before = restores(&home);
    let o = run(cv(&home)
        .args(["--json", "-r", &format!("sim:{c}"), "restore", "--from-card"])
        .arg(&state(&home, a).card_number)
        .args(["--pin", "env:P", "--request"])
        .arg(home.join("req-c.json")));
    assert_eq!(o.status.code(), Some(4), "{}{}", stdout(&o), stderr(&o));
    let err = json(&o)["error"]["message"].as_str().unwrap().to_string();
    assert!(
        err.contains("only a card of the same issuer domain generation"),
        "{err}"
    );
    assert!(err.contains("generation 1"), "{err}");
    assert_eq!(state(&home, c), before, "the card changed");
    // ...the restore workflow refuses even with an authorization in hand,
    // before the vault records a restore...
    let mut vault = cardvault::vault::Vault::open(&home.join("vault.sqlite")).unwrap();
    let last = vault.latest_backup(&source).unwrap().unwrap();
    let chain = vault.chain_to(&last).unwrap();
    let mut forged: cardvault::workflow::backup::RestoreAuthorization =
        serde_json::from_slice(&std::fs::read(&auth).unwrap()).unwrap();
    forged.request.target_card = before.card_number.clone();
    let mut r = cardvault::transport::sim::SimReader::open(&home, c, "main", None).unwrap();
    {
        let mut cl = client(&mut r).unwrap();
        cl.verify_pin(PIN.as_bytes()).unwrap();
        let plan = cardvault::workflow::backup::RestorePlan {
            chain: chain.clone(),
            authorization: Some(&forged),
            override_rollback: false,
            agreements: &[],
        };
        let e = cardvault::workflow::backup::restore(&mut cl, &mut vault, &plan, &|_, _| {}).unwrap_err();
        assert!(e.to_string().contains("same issuer domain generation"), "{e}");
        // (A challenge outstanding, as for a real other-card restore.)
        cl.restore_challenge().unwrap();
    }
    // ...and the card itself refuses the header (6A88) before it uses its
    // outstanding challenge: nothing changes.
    let with_challenge = r.card().state().clone();
    {
        let mut cl = client(&mut r).unwrap();
        cl.verify_pin(PIN.as_bytes()).unwrap();
        let header = vault.backup_header(chain[0].id).unwrap();
        let signer = issuer_signer();
        let data = cardvault_proto::backup::AuthorizedRestore {
            header: &header,
            counter: last.counter,
            chain_hash: &[0; 32],
            signature: &[0; 64],
            signer_certificate: signer.certificate_der(),
        }
        .encode();
        let sw = cl
            .restore_begin(cardvault_proto::backup::RESTORE_OTHER_CARD, false, &data)
            .unwrap();
        assert_eq!(sw, cardvault::apdu::StatusWord::ReferenceDataNotFound);
    }
    assert_eq!(r.card().state(), &with_challenge, "the card changed");
    drop(r);
    assert_eq!(restores(&home), restores_before, "the vault recorded a restore");
}

/// `domain rotate`: a quorum of the current custodians makes generation 2;
/// generation 1 stays whole beside it; cards issued from generation 2 say
/// so and refuse generation 1 backups.
#[test]
fn domain_rotate_makes_a_new_generation_that_cards_and_backups_record() {
    let home = temp_dir("rotate");
    let d = home.join("domain");
    let pass = domain_init(&home, &d, 2, 3);
    let g1 = domain_json(&d);
    let o = issue_main(&home, "old", "olga", &domain_args(&d, &pass, &[1, 3]));
    assert!(o.status.success(), "{}", stderr(&o));
    // Too few custodians: refused, nothing moved.
    let o = run(cv(&home)
        .args(["domain", "rotate"])
        .arg(&d)
        .args(["--share", "2", "--passphrase"])
        .arg(format!("file:{}", pass[1].display())));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(domain_json(&d), g1);
    // New passphrases for the three custodians (custodian 1 keeps theirs).
    let new: Vec<std::path::PathBuf> = (1..=3)
        .map(|i| {
            let f = home.join(format!("new-pass-{i}"));
            let text = if i == 1 {
                std::fs::read_to_string(&pass[0]).unwrap()
            } else {
                format!("rot{i}-5e0c41d9a7\n")
            };
            std::fs::write(&f, text).unwrap();
            f
        })
        .collect();
    let mut c = cv(&home);
    c.args(["--json", "domain", "rotate"]).arg(&d);
    for i in [2, 3] {
        c.args(["--share", &i.to_string(), "--passphrase"])
            .arg(format!("file:{}", pass[i - 1].display()));
    }
    for f in &new {
        c.arg("--new-passphrase").arg(format!("file:{}", f.display()));
    }
    let o = run(&mut c);
    assert!(o.status.success(), "{}", stderr(&o));
    let g2 = domain_json(&d);
    assert_eq!(g2["generation"], 2);
    assert_eq!(g2["domain_id"], g1["domain_id"]);
    assert_ne!(g2["check_value"], g1["check_value"]);
    assert_eq!(json(&o)["domain"]["generation"], 2);
    // Generation 1 is kept whole: a domain directory of its own.
    assert_eq!(domain_json(&d.join("generation-1")), g1);
    let o = run(cv(&home)
        .args(["domain", "verify"])
        .arg(d.join("generation-1"))
        .args(["--share", "1", "--passphrase"])
        .arg(format!("file:{}", pass[0].display())));
    assert!(o.status.success(), "{}", stderr(&o));
    // The old passphrase of custodian 2 no longer opens the current share.
    let o = issue_main(&home, "new", "nina", &domain_args(&d, &pass, &[1, 2]));
    assert!(stderr(&o).contains("share 2: wrong passphrase"), "{}", stderr(&o));
    let mut json_args = domain_args(&d, &new, &[1, 2]);
    json_args.push("--json".into());
    let o = issue_main(&home, "new", "nina", &json_args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["domain"]["generation"], 2, "{}", stdout(&o));
    assert_eq!(state(&home, "old-olga-main").domain_generation, 1);
    assert_eq!(state(&home, "new-nina-main").domain_generation, 2);
    assert_eq!(
        state(&home, "new-nina-main").domain_id,
        state(&home, "old-olga-main").domain_id
    );

    // A generation-1 backup records its generation, and a generation-2 card refuses it.
    let o = run(cv(&home).args(["--json", "-r", "sim:old-olga-main", "backup", "--pin", "env:P"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let vault = cardvault::vault::Vault::open(&home.join("vault.sqlite")).unwrap();
    let olga = state(&home, "old-olga-main").card_number.clone();
    let last = vault.latest_backup(&olga).unwrap().unwrap();
    let h = cardvault_proto::backup::parse_header(&vault.backup_header(last.id).unwrap()).unwrap();
    assert_eq!(h.domain, state(&home, "old-olga-main").domain());
    assert_eq!(h.domain.generation, 1);
    let o = run(cv(&home).args(["--json", "vault", "show", &last.id.to_string()]));
    assert_eq!(json(&o)["domain"]["generation"], 1, "{}", stdout(&o));
    assert_eq!(json(&o)["domain"]["id"], g1["domain_id"]);
    let o = run(cv(&home)
        .args(["--json", "-r", "sim:new-nina-main", "restore", "--from-card", &olga])
        .args(["--pin", "env:P", "--request"])
        .arg(home.join("req.json")));
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(json(&o)["error"]["message"].as_str().unwrap().contains("generation 1"));
}

/// No card-common key comes from a profile: the built-in profiles carry
/// none, a profile file with one is refused, pre-issued test cards of two
/// simulator directories are in two domains, and a backup's wrapped key
/// does not open under the old public profile key.
#[test]
fn no_profile_key_and_the_old_public_key_opens_no_backup() {
    const OLD_PUBLIC_KEY: &str = "636f6d6d6f6e206b657920666f72207468652074657374206973737565722121";
    let old = cardvault_proto::from_hex(OLD_PUBLIC_KEY).unwrap();
    let (h1, h2) = (temp_dir("noprofilekey-1"), temp_dir("noprofilekey-2"));
    for name in applet_sim::Profile::builtin_names() {
        let p = applet_sim::Profile::load(name).unwrap();
        let s = applet_sim::CardState::from_profile_in(&p, None);
        assert!(s.common_key.is_empty(), "profile {name} carries a card-common key");
    }
    for (home, card) in [(&h1, "m"), (&h2, "m")] {
        let o = run(cv(home).args(["-r", &format!("sim:{card}"), "status"]));
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let (s1, s2) = (state(&h1, "m"), state(&h2, "m"));
    assert_eq!(s1.common_key.len(), 32);
    assert_ne!(s1.common_key, old);
    assert_ne!(s1.common_key, s2.common_key, "two simulator directories share a key");
    assert_ne!(s1.domain(), s2.domain());
    // A profile file with a common key is refused, saying why.
    let profile = h1.join("keyed.toml");
    std::fs::write(
        &profile,
        format!("role='main'\npin='{PIN}'\ncommon_key='{OLD_PUBLIC_KEY}'\n"),
    )
    .unwrap();
    let cfg = h1.join("c.toml");
    std::fs::write(&cfg, format!("[sim]\nprofile = \"{}\"\n", profile.display())).unwrap();
    let o = run(cv(&h1).arg("--config").arg(&cfg).args(["-r", "sim:keyed", "status"]));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("carries no card-common key"), "{}", stderr(&o));
    assert!(!card_path(&h1, "keyed").exists());
    // A backup's wrapped unique key opens under the card's domain key only.
    let o = run(cv(&h1).args(["--json", "-r", "sim:m", "backup", "--pin", "env:P"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let vault = cardvault::vault::Vault::open(&h1.join("vault.sqlite")).unwrap();
    let last = vault.latest_backup(&s1.card_number).unwrap().unwrap();
    let h = cardvault_proto::backup::parse_header(&vault.backup_header(last.id).unwrap()).unwrap();
    let (nonce, sealed) = h.wrapped_unique_key.split_at(12);
    let aad = |label: &[u8], with_domain: bool| {
        let mut a = label.to_vec();
        a.extend_from_slice(&cardvault_proto::backup::lv(&h.card_number));
        a.extend_from_slice(&h.counter.to_be_bytes());
        if with_domain {
            a.extend_from_slice(&h.domain.encode());
        }
        a
    };
    let open = |key: &[u8], a: &[u8]| cardvault_proto::crypto::open(key.try_into().unwrap(), nonce, a, sealed);
    for (label, with_domain) in [
        (&b"cardvault unique key wrap v1"[..], false),
        (cardvault_proto::backup::UNIQUE_WRAP_LABEL, true),
    ] {
        assert!(
            open(&old, &aad(label, with_domain)).is_err(),
            "the old public key opens a backup"
        );
    }
    let unique = open(&s1.common_key, &aad(cardvault_proto::backup::UNIQUE_WRAP_LABEL, true)).unwrap();
    assert_eq!(&unique[..], &s1.unique_key[..], "control: the domain key opens it");
}
