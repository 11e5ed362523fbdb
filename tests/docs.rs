//! RELIABILITY.md's tables against the numbers the tests assert
//! (tests/common/claims.rs): the document cannot go stale alone.

mod common;

use common::claims::*;

fn reliability() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/RELIABILITY.md")).unwrap()
}

/// The section under the `## ` heading that starts with `heading`.
fn section<'a>(doc: &'a str, heading: &str) -> &'a str {
    let start = doc
        .find(&format!("\n## {heading}"))
        .unwrap_or_else(|| panic!("RELIABILITY.md has no section '{heading}'"));
    let rest = &doc[start + 4..];
    &rest[..rest.find("\n## ").unwrap_or(rest.len())]
}

/// The data rows of the first table in `text` (header and rule skipped).
fn table(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| {
            l.trim()
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

fn number(cell: &str) -> u64 {
    let digits: String = cell.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no number at the start of '{cell}'"))
}

#[test]
fn the_cut_point_table_says_what_tests_cutpoints_asserts() {
    let doc = reliability();
    let rows = table(section(&doc, "Card pulled at every APDU"));
    let got: Vec<(String, u64, u64, u64)> = rows
        .iter()
        .map(|r| (r[0].clone(), number(&r[1]), number(&r[2]), number(&r[3])))
        .collect();
    let want: Vec<(String, u64, u64, u64)> = CUT_POINTS
        .iter()
        .map(|(w, n)| (w.to_string(), *n, 2 * n, 2 * n))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn the_pcsc_fault_table_says_what_tests_pcsc_stack_asserts() {
    let doc = reliability();
    let rows = table(section(&doc, "Faults through the real PC/SC stack"));
    let tried: Vec<(u64, String)> = rows
        .iter()
        .map(|r| {
            (
                number(&r[1]),
                r[1].trim_start_matches(char::is_numeric).trim().to_string(),
            )
        })
        .collect();
    assert_eq!(
        tried,
        [
            (WRITE_KILL_ROUNDS as u64, "rounds".to_string()),
            (BACKUP_KILL_RUNS as u64, "runs".to_string()),
            (PIN_BLOCK_RESTARTS as u64, String::new()),
        ]
    );
}

#[test]
fn the_tampering_table_says_what_tests_reliability_asserts() {
    let doc = reliability();
    let text = section(&doc, "Vault tampering");
    assert_eq!(table(text).len(), TAMPER_CASES);
    assert!(
        text.contains(&format!("{TAMPER_CASES} of {TAMPER_CASES} cases pass")),
        "{text}"
    );
}

#[test]
fn the_interrupted_batch_rows_say_what_the_tests_do() {
    let doc = reliability();
    let rows = table(section(&doc, "Interrupted batches"));
    let killed = &rows[0];
    assert!(
        killed[0].starts_with(&format!(
            "a {KILLED_BATCH_HOLDERS}-holder `duplicate --holders --elements generate` batch killed"
        )),
        "{killed:?}"
    );
    let stops = KILLED_BATCH_STOPS.len();
    let words = ["no", "one", "two", "three", "four", "five", "six", "seven"];
    assert!(killed[0].contains(&format!("{} times", words[stops])), "{killed:?}");
    assert!(killed[1].starts_with(&format!("{stops} kills per run")), "{killed:?}");
    assert!(
        KILLED_BATCH_STOPS.contains(&"-KILL")
            && KILLED_BATCH_STOPS.contains(&"-INT")
            && KILLED_BATCH_STOPS.contains(&"pipe"),
        "the row names SIGKILL, SIGINT and the closed pipe"
    );
    let sigint = &rows[1];
    assert!(
        sigint[0].contains(&format!("of a {SIGINT_BATCH_HOLDERS}-holder batch")),
        "{sigint:?}"
    );
}

#[test]
fn the_side_by_side_and_hygiene_rows_say_what_the_tests_assert() {
    let doc = reliability();
    let rows = table(section(&doc, "Terminals side by side"));
    let (processes, rounds, backups) = SIDE_BY_SIDE;
    let side = &rows[0];
    assert!(
        side[0].starts_with(&format!(
            "{processes} processes back up {processes} cards into one vault, {rounds} rounds"
        )),
        "{side:?}"
    );
    assert!(
        side[1].starts_with(&format!("{backups} backups, none lost")),
        "{side:?}"
    );
    let hygiene = rows.iter().find(|r| r[0].starts_with("secrets hygiene")).unwrap();
    assert!(
        hygiene[1].starts_with(&format!("{SECRETS_CHECKED} secrets checked, none found")),
        "{hygiene:?}"
    );
}

#[test]
fn the_hostile_card_section_says_what_the_tests_assert_and_names_real_tests() {
    let doc = reliability();
    let text = section(&doc, "Hostile card");
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for claim in [
        format!("{HOSTILE_WORKFLOWS} workflows × {HOSTILE_CLASSES} classes, {HOSTILE_RUNS} runs"),
        format!("(bound {HOSTILE_MAX_APDUS_OVER_CLEAN})"),
        format!(
            "(bound {} {:03}: one whole answer",
            HOSTILE_BYTES_PER_COMMAND / 1000,
            HOSTILE_BYTES_PER_COMMAND % 1000
        ),
        format!(
            "{SIM_RESTARTS} restarts in a row, the card back within {} s",
            SIM_BACK_WITHIN.as_secs()
        ),
        format!(
            "at most {} GET RESPONSE rounds",
            cardvault::apdu::MAX_GET_RESPONSE_ROUNDS
        ),
        format!("at most {} levels", cardvault::card::MAX_TLV_DEPTH),
        format!("{} objects", cardvault::card::MAX_TLV_OBJECTS),
        format!("default {} s", cardvault::config::DEFAULT_APDU_TIMEOUT),
    ] {
        assert!(
            flat.contains(&claim),
            "RELIABILITY.md, Hostile card, does not say '{claim}'"
        );
    }
    // Every test the table names exists.
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/");
    let mut sources = String::new();
    for dir in ["tests", "src/apdu", "src/card"] {
        for e in std::fs::read_dir(format!("{root}{dir}")).unwrap().flatten() {
            if e.path().extension().is_some_and(|x| x == "rs") {
                sources.push_str(&std::fs::read_to_string(e.path()).unwrap());
            }
        }
    }
    let rows = table(text);
    assert!(rows.len() >= 10, "{rows:?}");
    for r in rows {
        let test = r[2].trim_matches('`');
        assert!(
            sources.contains(&format!("fn {test}(")),
            "RELIABILITY.md names test {test}, which does not exist"
        );
    }
}
