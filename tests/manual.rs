//! The manual: every command and every argument has a description, and the
//! man pages and shell completions are generated from them.

mod common;

use clap::CommandFactory;
use common::*;

/// Every argument of `cmd` and its subcommands without a description, as
/// "cardvault vault list --json".
fn undescribed(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
    let path = format!("{path} {}", cmd.get_name()).trim().to_string();
    if cmd.get_about().is_none() && path != "cardvault" {
        out.push(format!("{path} (the command)"));
    }
    for a in cmd.get_arguments() {
        let id = a.get_id().as_str();
        if a.is_hide_set() || id == "help" || id == "version" {
            continue;
        }
        if a.get_help().is_none() {
            let name = a
                .get_long()
                .map(|l| format!("--{l}"))
                .unwrap_or_else(|| format!("<{}>", id.to_uppercase()));
            out.push(format!("{path} {name}"));
        }
    }
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        undescribed(sub, &path, out);
    }
}

#[test]
fn every_command_and_argument_has_a_description() {
    let mut cmd = cardvault::cli::Cli::command();
    cmd.build();
    let mut missing = Vec::new();
    undescribed(&cmd, "", &mut missing);
    assert!(missing.is_empty(), "no description:\n  {}", missing.join("\n  "));
}

#[test]
fn man_pages_are_written_for_every_subcommand() {
    let home = temp_dir("man");
    let dir = home.join("man");
    let o = run(cardvault(&home).args(["--json", "man", "-o"]).arg(&dir));
    assert!(o.status.success(), "{}", stderr(&o));
    let pages: Vec<String> = json(&o)["pages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    for want in [
        "cardvault.1",
        "cardvault-backup.1",
        "cardvault-vault-list.1",
        "cardvault-keygroup-reset.1",
    ] {
        assert!(pages.iter().any(|p| p == want), "{want} not in {pages:?}");
    }
    let backup = std::fs::read_to_string(dir.join("cardvault-backup.1")).unwrap();
    assert!(backup.starts_with(".ie") || backup.contains(".TH"), "{backup}");
    assert!(backup.contains("\\-\\-pin"), "{backup}");
    // `man` itself reads it (when man-db is installed).
    if let Ok(o) = std::process::Command::new("man")
        .arg("-l")
        .arg(dir.join("cardvault-backup.1"))
        .env("MANPAGER", "cat")
        .output()
    {
        if o.status.success() {
            assert!(
                String::from_utf8_lossy(&o.stdout).contains("pin"),
                "{}",
                String::from_utf8_lossy(&o.stdout)
            );
        }
    }
}

#[test]
fn completions_are_generated_for_bash_zsh_and_fish() {
    let home = temp_dir("completions");
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef cardvault"),
        ("fish", "complete -c cardvault"),
    ] {
        let o = run(cardvault(&home).args(["completions", shell]));
        assert!(o.status.success(), "{shell}: {}", stderr(&o));
        let text = stdout(&o);
        assert!(text.contains(marker), "{shell}: {}", &text[..text.len().min(300)]);
        for sub in ["backup", "restore", "duplicate", "keygroup"] {
            assert!(text.contains(sub), "{shell} completions lack {sub}");
        }
    }
    // bash parses what it is given.
    let o = run(cardvault(&home).args(["completions", "bash"]));
    let script = home.join("cardvault.bash");
    std::fs::write(&script, &o.stdout).unwrap();
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
}
