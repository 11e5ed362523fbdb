//! `applet-sim`: serve simulated cardvault cards to pcscd through vpcd.

use applet_sim::{Card, Profile};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Serve simulated cardvault cards to pcscd through the vsmartcard vpcd driver.
///
/// Each --vpcd/--card pair serves one card on one vpcd port (35963 is
/// "Virtual PCD 00 00", 35964 is "Virtual PCD 00 01"). A missing card file is
/// created from the profile; an existing one keeps its keys, PIN and memory.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// vpcd address HOST:PORT; repeat once per card.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:35963")]
    vpcd: Vec<String>,
    /// Card state file; repeat once per --vpcd.
    #[arg(long, value_name = "PATH", required = true)]
    card: Vec<PathBuf>,
    /// Profile for cards that do not exist yet: a built-in name (main, backup,
    /// replacement, blank, foreign, services, blank-services) or a TOML file.
    /// Give one for all cards or one per card.
    #[arg(long, value_name = "NAME|FILE", default_value = "main")]
    profile: Vec<String>,
    /// Print nothing but errors.
    #[arg(long, short)]
    quiet: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.vpcd.len() != args.card.len() {
        eprintln!(
            "applet-sim: {} --vpcd but {} --card; give one --card per --vpcd",
            args.vpcd.len(),
            args.card.len()
        );
        return ExitCode::from(2);
    }
    if args.profile.len() != 1 && args.profile.len() != args.card.len() {
        eprintln!("applet-sim: give one --profile for all cards or one per --card");
        return ExitCode::from(2);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for (i, (addr, path)) in args.vpcd.iter().zip(&args.card).enumerate() {
        let pname = &args.profile[i.min(args.profile.len() - 1)];
        let profile = match Profile::load(pname) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("applet-sim: {e}");
                return ExitCode::from(2);
            }
        };
        let (mut card, created) = match Card::open(path, &profile) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("applet-sim: {e}");
                return ExitCode::from(1);
            }
        };
        let quiet = args.quiet;
        if !quiet {
            eprintln!(
                "applet-sim: {} card {} ({}) from {}",
                if created { "created" } else { "loaded" },
                card.state().card_number,
                card.state().role,
                path.display()
            );
        }
        let addr = addr.clone();
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            applet_sim::vpcd::run(&mut card, &addr, stop, |m| {
                if !quiet {
                    eprintln!("applet-sim: {m}")
                }
            })
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    ExitCode::SUCCESS
}
