//! `cardvault demo`: the product end to end on embedded simulated cards.

use super::{print_json, with_selected, Ctx};
use crate::error::{Error, Result};
use crate::transport::sim::SimReader;
use crate::transport::Reader;
use serde::Serialize;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory for the demo's cards (default: a fresh temporary directory,
    /// removed afterwards).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

#[derive(Serialize, Default)]
struct Report {
    steps: Vec<Step>,
}

#[derive(Serialize)]
struct Step {
    step: String,
    result: String,
}

struct Demo {
    json: bool,
    report: Report,
}

impl Demo {
    fn step(&mut self, step: &str, result: impl Into<String>) {
        let result = result.into();
        if !self.json {
            println!("  {step:<44} {result}");
        }
        self.report.steps.push(Step {
            step: step.into(),
            result,
        });
    }

    fn heading(&self, h: &str) {
        if !self.json {
            println!("\n{h}");
        }
    }
}

const DEMO_PIN: &[u8] = b"123456"; // the built-in profiles' demo PIN

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let (dir, temporary) = match a.dir {
        Some(d) => (d, false),
        None => {
            let d = std::env::temp_dir().join(format!("cardvault-demo-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            (d, true)
        }
    };
    let result = run_in(ctx, &dir);
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn run_in(ctx: &Ctx, dir: &std::path::Path) -> Result<()> {
    let mut d = Demo {
        json: ctx.json,
        report: Report::default(),
    };
    if !d.json {
        println!("cardvault demo: embedded simulated cards in {}", dir.display());
    }

    d.heading("1. Two new cards");
    let mut main = SimReader::open(dir, "demo-main", "main", None)?;
    let mut backup = SimReader::open(dir, "demo-backup", "backup", Some(false))?;
    for r in [&mut main as &mut dyn Reader, &mut backup] {
        let name = r.name().to_string();
        let st = with_selected(r, ctx.trace, |c| c.status())?;
        d.step(
            &format!("status of {name}"),
            format!(
                "card {} role {} applet {} PIN {}/{}",
                st.card_number, st.role, st.applet_version, st.pin_tries_left, st.pin_max_tries
            ),
        );
    }

    d.heading("2. PIN handling (data of VERIFY is masked in --trace)");
    let wrong = with_selected(&mut main, ctx.trace, |c| match c.verify_pin(b"000000") {
        Err(Error::WrongPin { tries_left }) => Ok(tries_left),
        Err(e) => Err(e),
        Ok(()) => Err(Error::Usage("the demo card accepted a wrong PIN".into())),
    })?;
    d.step("wrong PIN on sim:demo-main", format!("refused, {wrong} tries left"));
    with_selected(&mut main, ctx.trace, |c| c.verify_pin(DEMO_PIN))?;
    d.step("right PIN on sim:demo-main", "verified, counter reset");

    d.heading("3. A 4 KiB write and read-back, extended and short APDUs");
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    for r in [&mut main as &mut dyn Reader, &mut backup] {
        let name = r.name().to_string();
        let ext = r.caps().extended;
        let (back, stats_w, stats_r) = with_selected(r, ctx.trace, |c| {
            c.verify_pin(DEMO_PIN)?;
            let before = c.channel().stats();
            c.write_memory(0, &pattern)?;
            let mid = c.channel().stats();
            let back = c.read_memory(0, pattern.len())?;
            let after = c.channel().stats();
            Ok((back, mid.apdus - before.apdus, after.apdus - mid.apdus))
        })?;
        if back != pattern {
            return Err(Error::Malformed {
                command: "READ MEMORY",
                reason: "read-back differs from what was written".into(),
            });
        }
        let how = if ext {
            "extended length"
        } else {
            "chaining + GET RESPONSE"
        };
        d.step(
            &format!("{name} ({how})"),
            format!("write {stats_w} APDU(s), read {stats_r} APDU(s), data identical"),
        );
    }

    d.heading("4. Raw APDUs (what `cardvault apdu` sends)");
    let card_number = with_selected(&mut main, ctx.trace, |c| {
        let r = c.channel().send_raw(&[0x00, 0xCA, 0xDF, 0x01, 0x00], true)?;
        let unknown = c.channel().send_raw(&[0x00, 0x99, 0x00, 0x00], true)?;
        Ok((r, unknown))
    })?;
    d.step(
        "00 CA DF 01 00 (GET DATA card number)",
        format!(
            "{} {}",
            applet_sim::proto::to_hex(&card_number.0.data).to_uppercase(),
            card_number.0.sw
        ),
    );
    d.step("00 99 00 00 (unknown instruction)", card_number.1.sw.to_string());

    if d.json {
        print_json(&d.report);
    } else {
        println!("\ndemo complete");
    }
    Ok(())
}
