//! Issuance and duplication on several stations at once.

mod common;

use common::*;

#[test]
fn two_stations_issue_and_duplicate_a_batch_in_parallel() {
    let home = temp_dir("stations");
    let csv = home.join("h.csv");
    let mut rows = String::from("holder,pin,member_number,expiry\n");
    for i in 0..6 {
        rows.push_str(&format!("h{i},2468,M-{i},2030-01\n"));
    }
    std::fs::write(&csv, rows).unwrap();
    let stations = [
        "--main", "sim:d", "--backup", "sim:d", "--main", "sim:d", "--backup", "sim:d",
    ];
    let o = run(cardvault(&home)
        .args(["--json", "issue", "--profile", "pair", "--no-domain", "--holders"])
        .arg(&csv)
        .args(stations));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let v = json(&o);
    assert_eq!(v["issued"], 12);
    // The report lists the holders in file order, main before backup.
    let cards = v["cards"].as_array().unwrap();
    for (i, c) in cards.iter().enumerate() {
        assert_eq!(c["holder"], format!("h{}", i / 2));
        assert_eq!(c["role"], if i % 2 == 0 { "main" } else { "backup" });
    }
    let elements_out = home.join("elements.txt");
    // Generated elements need a file to go to.
    let o = run(cardvault(&home)
        .args(["duplicate", "--elements", "generate", "--holders"])
        .arg(&csv)
        .args(stations));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--elements-out"), "{}", stderr(&o));
    let o = run(cardvault(&home)
        .args(["--json", "duplicate", "--elements", "generate", "--holders"])
        .arg(&csv)
        .arg("--elements-out")
        .arg(&elements_out)
        .args(stations));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    // One JSON line per holder as it finished, then the summary.
    let lines = json_lines(&o);
    let (summary, rows) = lines.split_last().unwrap();
    assert_eq!(summary["duplicated"], 6);
    assert_eq!(summary["interrupted"], false);
    let mut seen: Vec<String> = rows.iter().map(|h| h["holder"].as_str().unwrap().to_string()).collect();
    seen.sort();
    assert_eq!(seen, (0..6).map(|i| format!("h{i}")).collect::<Vec<_>>());
    for h in rows {
        assert_eq!(h["end_to_end_check"], true);
        assert!(
            h.get("generated_elements").is_none(),
            "elements go to the file only: {h}"
        );
    }
    // The elements file: mode 0600, one line per holder with two elements.
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(&elements_out).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&elements_out).unwrap();
    let mut holders_in_file: Vec<&str> = text.lines().map(|l| l.split(' ').next().unwrap()).collect();
    holders_in_file.sort();
    assert_eq!(holders_in_file, ["h0", "h1", "h2", "h3", "h4", "h5"]);
    assert!(text.lines().all(|l| l.split(' ').count() == 3), "{text}");
    // One hash-chained audit trail, written by both stations.
    let o = run(cardvault(&home).args(["audit", "--verify"]));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    // Holders whose cards were never issued are reported, not skipped.
    let o = run(cardvault(&home)
        .args(["--json", "duplicate", "--elements", "generate", "--holders"])
        .arg(&csv)
        .arg("--elements-out")
        .arg(home.join("none.txt"))
        .args(["--main", "sim:none", "--backup", "sim:none"]));
    assert_eq!(o.status.code(), Some(8), "some holders failed: {}", stderr(&o));
    let lines = json_lines(&o);
    assert_eq!(lines.len(), 6 + 1 + 1, "6 holders, the summary, the error");
    assert_eq!(lines[6]["failed"], 6);
    assert_eq!(lines[7]["error"]["kind"], "some_failed");
    assert_eq!(lines[7]["error"]["exit_code"], 8);
    for l in &lines[..6] {
        assert!(
            l["reason"].as_str().unwrap().contains("issue the holder's cards first"),
            "{l}"
        );
    }
    // Several stations without a holder file, and unpaired readers, are refused.
    let o = run(cardvault(&home)
        .args(["duplicate", "--elements", "generate"])
        .args(stations));
    assert_eq!(o.status.code(), Some(2));
    let o = run(cardvault(&home).args(["duplicate", "--main", "sim:a", "--main", "sim:b", "--backup", "sim:c"]));
    assert_eq!(o.status.code(), Some(2));
}

/// The JSON lines of a streamed report.
fn json_lines(o: &std::process::Output) -> Vec<serde_json::Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

#[test]
fn an_interrupted_batch_reports_what_it_finished_and_a_rerun_finishes_each_holder_once() {
    use std::io::BufRead;
    let home = temp_dir("interrupt");
    let seed = seed("an_interrupted_batch_reports_what_it_finished_and_a_rerun_finishes_each_holder_once");
    let csv = home.join("h.csv");
    let mut rows = String::from("holder,pin,member_number,expiry\n");
    for i in 0..claims::SIGINT_BATCH_HOLDERS {
        rows.push_str(&format!("h{i},2468,M-{i},2030-01\n"));
    }
    std::fs::write(&csv, rows).unwrap();
    let o = run(cardvault(&home)
        .args(["-r", "sim:d", "issue", "--profile", "pair", "--no-domain", "--holders"])
        .arg(&csv));
    assert!(o.status.success(), "{}", stderr(&o));
    let elements_out = home.join("elements.txt");
    let mut child = cardvault(&home)
        .args([
            "--json",
            "duplicate",
            "--elements",
            "generate",
            "--main",
            "sim:d",
            "--backup",
            "sim:d",
        ])
        .arg("--holders")
        .arg(&csv)
        .arg("--elements-out")
        .arg(&elements_out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt after a random number (1 to 4) of finished holders.
    let after = 1 + (seed % 4) as usize;
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut streamed = Vec::new();
    for _ in 0..after {
        streamed.push(lines.next().unwrap().unwrap());
    }
    let killed = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    streamed.extend(lines.map(|l| l.unwrap()));
    let status = child.wait().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_no_panic(err.as_bytes());
    assert_eq!(status.code(), Some(130), "{err}");
    let v: Vec<serde_json::Value> = streamed.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let error = v.last().unwrap();
    assert_eq!(error["error"]["kind"], "interrupted", "{error}");
    let summary = &v[v.len() - 2];
    assert_eq!(summary["interrupted"], true);
    let done: Vec<&str> = v
        .iter()
        .filter(|l| l["result"] == "duplicated")
        .map(|l| l["holder"].as_str().unwrap())
        .collect();
    assert!(done.len() >= after && done.len() < 12, "{done:?}");
    assert_eq!(summary["duplicated"], done.len());
    // The others were not started, and say so.
    let not_started: Vec<&serde_json::Value> = v.iter().filter(|l| l["result"] == "failed").collect();
    assert_eq!(done.len() + not_started.len(), 12);
    for l in not_started {
        assert!(l["reason"].as_str().unwrap().contains("interrupted"), "{l}");
    }
    // Every duplicated holder's elements are in the file, written before its line.
    let text = std::fs::read_to_string(&elements_out).unwrap();
    let in_file: Vec<&str> = text.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(in_file, done);
    // The rerun skips the holders done and duplicates the rest: every
    // holder once, every holder's elements in the file once.
    let o = run(cardvault(&home)
        .args([
            "--json",
            "duplicate",
            "--elements",
            "generate",
            "--main",
            "sim:d",
            "--backup",
            "sim:d",
        ])
        .arg("--holders")
        .arg(&csv)
        .arg("--elements-out")
        .arg(&elements_out));
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let rerun = json_lines(&o);
    let (summary, rows) = rerun.split_last().unwrap();
    assert_eq!(summary["skipped"], done.len(), "{summary}");
    assert_eq!(summary["duplicated"], 12 - done.len(), "{summary}");
    for r in rows {
        let holder = r["holder"].as_str().unwrap();
        let expect = if done.contains(&holder) {
            "skipped"
        } else {
            "duplicated"
        };
        assert_eq!(r["result"], expect, "{r}");
    }
    let text = std::fs::read_to_string(&elements_out).unwrap();
    let mut in_file: Vec<&str> = text.lines().map(|l| l.split(' ').next().unwrap()).collect();
    in_file.sort();
    let mut all: Vec<String> = (0..claims::SIGINT_BATCH_HOLDERS).map(|i| format!("h{i}")).collect();
    all.sort();
    assert_eq!(in_file, all);
    // One confirmed duplication per holder, no key group reset.
    let o = run(cardvault(&home).args(["--json", "audit"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let audit = stdout(&o);
    assert_eq!(audit.matches("\"confirm-duplicate\"").count(), 12, "{audit}");
    assert!(!audit.contains("reset"), "{audit}");
    let o = run(cardvault(&home).args(["audit", "--verify"]));
    assert!(o.status.success(), "{}", stderr(&o));
}

/// Issue a main and a backup card per holder of `csv` as `sim:PREFIX-HOLDER-ROLE`.
fn issue_pairs(home: &std::path::Path, prefix: &str, csv: &std::path::Path) {
    let o = run(cardvault(home)
        .args([
            "-r",
            &format!("sim:{prefix}"),
            "issue",
            "--profile",
            "pair",
            "--no-domain",
            "--holders",
        ])
        .arg(csv));
    assert!(o.status.success(), "{}", stderr(&o));
}

/// A 40-holder batch killed at random points, by SIGINT and by SIGKILL, and
/// rerun until it finishes: every holder ends duplicated exactly once, with
/// the elements the file kept for it; no key group is reset; what the runs
/// streamed agrees with the audit trail.
#[test]
fn a_batch_killed_at_random_points_and_rerun_duplicates_every_holder_exactly_once() {
    use std::io::BufRead;
    const HOLDERS: usize = claims::KILLED_BATCH_HOLDERS;
    let home = temp_dir("killed-batch");
    let mut rng = Rng::new(seed(
        "a_batch_killed_at_random_points_and_rerun_duplicates_every_holder_exactly_once",
    ));
    let csv = home.join("h.csv");
    let mut rows = String::from("holder,pin,member_number,expiry\n");
    for i in 0..HOLDERS {
        rows.push_str(&format!("h{i},2468,M-{i},2030-01\n"));
    }
    std::fs::write(&csv, rows).unwrap();
    issue_pairs(&home, "k", &csv);
    let elements_out = home.join("elements.txt");
    let batch = || {
        let mut c = cardvault(&home);
        c.args([
            "--json",
            "duplicate",
            "--elements",
            "generate",
            "--main",
            "sim:k",
            "--backup",
            "sim:k",
        ])
        .arg("--holders")
        .arg(&csv)
        .arg("--elements-out")
        .arg(&elements_out);
        c
    };
    let mut streamed: Vec<serde_json::Value> = Vec::new();
    let mut kills = Vec::new();
    // SIGKILL, SIGINT, and the reader of the report going away (`| head`).
    for &signal in claims::KILLED_BATCH_STOPS {
        let mut child = batch()
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Kill after 0 to 3 more holders, plus 0 to 250 ms (a holder takes about
        // 200 ms here): mostly in the middle of one.
        let after = rng.below(4) as usize;
        let delay = std::time::Duration::from_millis(rng.below(250));
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut out = Vec::new();
        for _ in 0..after {
            match lines.next() {
                Some(l) => out.push(l.unwrap()),
                None => break,
            }
        }
        std::thread::sleep(delay);
        kills.push(format!("{signal} after {after} lines + {delay:?}"));
        let killed = if signal == "pipe" {
            drop(lines);
            let status = child.wait().unwrap();
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            assert_no_panic(err.as_bytes());
            // Ended by SIGPIPE like any filter, or finished before it wrote again.
            use std::os::unix::process::ExitStatusExt;
            assert!(
                status.signal() == Some(13) || status.success(),
                "{kills:?}: {status:?} {err}"
            );
            streamed.extend(
                out.iter()
                    .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()),
            );
            continue;
        } else {
            std::process::Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status()
                .unwrap()
        };
        out.extend(lines.map(|l| l.unwrap()));
        let status = child.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert_no_panic(err.as_bytes());
        if killed.success() && signal == "-KILL" {
            assert_eq!(status.code(), None, "{err}");
        } else if killed.success() {
            // A SIGINT that lands before the batch installs its handler (the
            // process still reading its files; on a loaded machine that can
            // outlast the delay) ends it the default way: no card touched,
            // nothing reported.
            use std::os::unix::process::ExitStatusExt;
            let before_handler = status.signal() == Some(2) && out.is_empty();
            assert!(
                matches!(status.code(), Some(130) | Some(0)) || before_handler,
                "{kills:?}: {status:?} {err}"
            );
        }
        for l in &out {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{kills:?}: {e}: {l}"));
            if v.get("holder").is_some() {
                streamed.push(v);
            }
        }
    }
    // The last run finishes whatever is left.
    let o = run(&mut batch());
    assert!(o.status.success(), "{kills:?}: {}{}", stdout(&o), stderr(&o));
    let last = json_lines(&o);
    let (summary, rows) = last.split_last().unwrap();
    assert_eq!(summary["failed"], 0, "{kills:?}: {summary}");
    assert_eq!(rows.len(), HOLDERS);
    streamed.extend(rows.iter().cloned());

    // No holder was reported duplicated twice, and each ends duplicated or skipped.
    let mut duplicated: std::collections::HashMap<String, &serde_json::Value> = Default::default();
    for v in streamed.iter().filter(|v| v["result"] == "duplicated") {
        let h = v["holder"].as_str().unwrap().to_string();
        assert!(
            duplicated.insert(h.clone(), v).is_none(),
            "{kills:?}: {h} duplicated twice"
        );
    }
    for r in rows {
        assert!(
            r["result"] == "duplicated" || r["result"] == "skipped",
            "{kills:?}: {r}"
        );
    }
    // The audit trail: one confirmed duplicate per holder's pair, no reset,
    // and every streamed duplication is the one the trail recorded.
    let o = run(cardvault(&home).args(["--json", "audit"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let audit = json(&o);
    let entries = audit
        .as_array()
        .or_else(|| audit["entries"].as_array())
        .expect("audit entries");
    let confirms: Vec<&serde_json::Value> = entries.iter().filter(|e| e["event"] == "confirm-duplicate").collect();
    assert_eq!(confirms.len(), HOLDERS, "{kills:?}");
    assert!(
        !entries
            .iter()
            .any(|e| e["event"].as_str().unwrap_or("").contains("reset")),
        "{kills:?}"
    );
    for (h, v) in &duplicated {
        let hit = confirms
            .iter()
            .find(|e| e["card"] == v["main_card"])
            .unwrap_or_else(|| panic!("{h}: {v}"));
        assert_eq!(hit["peer"], v["backup_card"], "{h}");
        assert_eq!(hit["details"]["check_value"], v["check_value"], "{h}");
    }
    let mut mains: Vec<&str> = confirms.iter().map(|e| e["card"].as_str().unwrap()).collect();
    mains.sort();
    mains.dedup();
    assert_eq!(mains.len(), HOLDERS);
    for r in rows.iter().filter(|r| r["result"] == "skipped") {
        assert!(mains.contains(&r["main_card"].as_str().unwrap()), "{r}");
    }
    // The elements file: every holder once.
    let text = std::fs::read_to_string(&elements_out).unwrap();
    let mut in_file: Vec<&str> = text.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(in_file.len(), HOLDERS, "{kills:?}: {text}");
    in_file.sort();
    in_file.dedup();
    assert_eq!(in_file.len(), HOLDERS, "{kills:?}");
    let o = run(cardvault(&home).args(["audit", "--verify"]));
    assert!(o.status.success(), "{}", stderr(&o));
}
