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
