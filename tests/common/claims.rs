//! The behavioural numbers RELIABILITY.md states, in one place: each test
//! asserts what it measured against these, and `tests/docs.rs` checks that
//! the document's tables say the same, so neither can drift alone.

/// "Card pulled at every APDU": (workflow as the table names it, APDUs of
/// the uninterrupted run). Cut points tried = passed = 2 x APDUs.
pub const CUT_POINTS: &[(&str, u64)] = &[
    ("issue (one blank card)", 26),
    ("duplicate (two cards)", 19),
    ("backup, full", 7),
    ("backup, differential", 6),
    ("restore, same card", 10),
    ("restore, chain (full + 3 differentials)", 16),
    ("restore, other card (issuer-authorized)", 13),
    ("recover (three files, two cards)", 15),
    ("issue, main card with the domain key (SCP11a)", 28),
];

/// The APDU count claimed for a cut-point workflow.
pub fn cut_point_apdus(workflow: &str) -> u64 {
    CUT_POINTS
        .iter()
        .find(|(w, _)| *w == workflow)
        .unwrap_or_else(|| panic!("{workflow} is not in RELIABILITY.md's cut-point table"))
        .1
}

/// "Faults through the real PC/SC stack": rounds and runs.
pub const WRITE_KILL_ROUNDS: usize = 12;
pub const BACKUP_KILL_RUNS: usize = 6;
pub const PIN_BLOCK_RESTARTS: usize = 1;
/// Quick restarts of applet-sim on the same vpcd port, and the bound the card
/// must be back within after each: well under the 30 s and more it stayed
/// absent before the simulator showed vpcd an empty slot first, and loose
/// enough that a loaded machine does not trip it (a liveness bound, not a
/// speed figure; the test prints the times it saw).
pub const SIM_RESTARTS: usize = 10;
pub const SIM_BACK_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// "Interrupted batches": holders of the killed batch, the kinds of
/// stop it tries in order (SIGKILL, SIGINT, the report's reader closing the
/// pipe), and the holders of the SIGINT batch.
pub const KILLED_BATCH_HOLDERS: usize = 40;
pub const KILLED_BATCH_STOPS: &[&str] = &["-KILL", "-INT", "pipe", "-KILL", "-INT"];
pub const SIGINT_BATCH_HOLDERS: usize = 12;

/// "Vault tampering": rows of the table, the audit edit included.
pub const TAMPER_CASES: usize = 10;

/// "Terminals side by side": processes, rounds, backups.
pub const SIDE_BY_SIDE: (usize, usize, usize) = (4, 3, 12);
/// Secrets the hygiene test looks for.
pub const SECRETS_CHECKED: usize = 20;

/// "Hostile card": workflows and classes of bad answers of
/// `tests/hostile.rs`, and the bounds every run stays within: APDUs beyond
/// the clean run's (one command's GET RESPONSE rounds and 6Cxx re-send), and
/// response bytes received per command of the clean run (one whole answer
/// of at most 65 560 bytes and the status words of its rounds).
pub const HOSTILE_WORKFLOWS: usize = 12;
/// Runs: for each workflow and class, one per APDU of the clean run.
pub const HOSTILE_RUNS: u64 = 792;
pub const HOSTILE_CLASSES: usize = 8;
pub const HOSTILE_MAX_APDUS_OVER_CLEAN: u64 = 262;
pub const HOSTILE_BYTES_PER_COMMAND: u64 = 65560 + 2 * 262;
