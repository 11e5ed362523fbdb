//! `cardvault watch`: wait for cards in PC/SC readers (the service's reader
//! state changes, no polling loop of our own) and run the configured actions
//! (`[watch] actions` in config.toml, default a backup) on each card
//! inserted, with one line per card. Ctrl-C or SIGTERM stops it cleanly.

use super::{print_json_line, Ctx};
use crate::card::CardClient;
use crate::config::WatchAction;
use crate::error::{Error, Result};
use crate::secret::SecretSource;
use crate::transport::pcsc as pcsc_t;
use std::time::Duration;

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Each card inserted (or present at the start) gets the actions of [watch] in
config.toml, by default `actions = [\"backup\"]`: a backup into the vault,
differential once the card has a full one. One line per card (a JSON line with
--json); a card that fails is reported and the watch goes on. Embedded sim:
cards have no insertions to watch.")]
pub struct Args {
    /// Readers to watch (index or name substring); default every PC/SC reader.
    #[arg(value_name = "READER")]
    readers: Vec<String>,
    /// Holder PIN for each card's backup: prompt (asked per card), env:VAR or file:PATH.
    #[arg(long, value_name = "SOURCE", default_value = "prompt")]
    pin: SecretSource,
    /// Stop after this many cards (default: until Ctrl-C).
    #[arg(long, value_name = "N")]
    count: Option<u64>,
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    if a.readers.iter().any(|r| r.starts_with("sim:")) {
        return Err(Error::Usage(
            "watch follows PC/SC readers; embedded sim: cards are never inserted".into(),
        ));
    }
    let pcsc = pcsc_t::context()?;
    let all = pcsc_t::list(&pcsc)?;
    let names: Vec<String> = if a.readers.is_empty() {
        all.iter().map(|r| r.name.clone()).collect()
    } else {
        let mut names = Vec::new();
        for spec in &a.readers {
            let hit: Vec<&str> = match spec.parse::<usize>() {
                Ok(i) => all.get(i).map(|r| r.name.as_str()).into_iter().collect(),
                Err(_) => all
                    .iter()
                    .filter(|r| r.name.contains(spec.as_str()))
                    .map(|r| r.name.as_str())
                    .collect(),
            };
            match hit.as_slice() {
                [one] => names.push(one.to_string()),
                [] => return Err(Error::Reader(format!("no reader '{spec}'"))),
                _ => {
                    return Err(Error::Reader(format!(
                        "'{spec}' matches {} readers; give a longer name",
                        hit.len()
                    )))
                }
            }
        }
        names
    };
    if names.is_empty() {
        return Err(Error::Reader("no PC/SC reader to watch".into()));
    }
    let actions = ctx.opts.config.watch.actions.clone();
    super::stop_batches_on_signals();
    if !ctx.json {
        eprintln!("watching {} reader(s); Ctrl-C stops", names.len());
    }
    let mut states: Vec<::pcsc::ReaderState> = names
        .iter()
        .map(|n| {
            ::pcsc::ReaderState::new(
                std::ffi::CString::new(n.as_str()).expect("reader names have no NUL"),
                ::pcsc::State::UNAWARE,
            )
        })
        .collect();
    let mut present = vec![false; names.len()];
    let (mut seen, mut failed) = (0u64, 0u64);
    'watch: while !crate::util::interrupted() {
        match pcsc.get_status_change(Duration::from_millis(500), &mut states) {
            Ok(()) => {}
            Err(::pcsc::Error::Timeout) => continue,
            Err(e) => return Err(Error::NoPcsc(e.to_string())),
        }
        for (i, s) in states.iter_mut().enumerate() {
            let now =
                s.event_state().contains(::pcsc::State::PRESENT) && !s.event_state().contains(::pcsc::State::MUTE);
            s.sync_current_state();
            let inserted = now && !present[i];
            present[i] = now;
            if !inserted {
                continue;
            }
            seen += 1;
            if let Err(e) = handle(ctx, &names[i], &a.pin, &actions) {
                failed += 1;
                let message = super::error_message(&e);
                if ctx.json {
                    print_json_line(&serde_json::json!({ "reader": names[i], "result": "failed",
                        "error": { "kind": e.kind(), "message": message, "exit_code": e.exit_code() } }));
                } else {
                    println!("{}: failed: {message}", names[i]);
                }
            }
            if a.count.is_some_and(|c| seen >= c) {
                break 'watch;
            }
        }
    }
    if ctx.json {
        print_json_line(&serde_json::json!({ "cards": seen, "failed": failed, "stopped": crate::util::interrupted() }));
    } else {
        println!("{seen} card(s) seen, {failed} failed");
    }
    Ok(())
}

/// The actions for the card just inserted in `reader`; one line when done.
fn handle(ctx: &Ctx, reader: &str, pin: &SecretSource, actions: &[WatchAction]) -> Result<()> {
    let mut r = ctx.open_named(reader)?;
    let mut card = CardClient::open(r.as_mut(), ctx.session())?;
    let st = card.status()?;
    let member = st.member_number.clone().unwrap_or_else(|| "-".into());
    for action in actions {
        match action {
            WatchAction::Backup => {
                let pin = pin.read(&format!("PIN of card {} (member {member})", st.card_number))?;
                card.verify_pin(&pin)?;
                let mut vault = ctx.vault_or_create()?;
                let rep = crate::workflow::backup::backup(&mut card, &mut vault, false, &|_, _| {})?;
                if ctx.json {
                    print_json_line(&serde_json::json!({ "reader": reader, "card_number": st.card_number,
                        "member_number": st.member_number, "result": "ok", "action": "backup", "backup": rep }));
                } else {
                    println!(
                        "{reader}: card {} (member {member}): backup {} #{} {}, {} page(s)",
                        st.card_number, rep.backup_id, rep.counter, rep.kind, rep.pages
                    );
                }
            }
        }
    }
    Ok(())
}
