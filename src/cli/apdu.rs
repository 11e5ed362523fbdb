//! `cardvault apdu`: raw APDUs, from the command line or a script file.

use super::{print_json, Ctx};
use crate::apdu::{format_command, raw_is_secret, Channel, Command, StatusWord};
use crate::card::CardClient;
use crate::error::{Error, Result};
use cardvault_proto::apdu::CommandApdu;
use cardvault_proto::{cla, ins};
use cardvault_proto::{from_hex, to_hex};
use serde::Serialize;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Command APDUs in hex (spaces and ':' allowed inside one argument).
    #[arg(value_name = "HEX")]
    apdus: Vec<String>,
    /// Read APDUs from a file, one per line ('#' starts a comment; '-' is stdin).
    #[arg(long, short, value_name = "FILE", conflicts_with = "apdus")]
    script: Option<PathBuf>,
    /// Do not answer 61xx with GET RESPONSE or 6Cxx with the corrected Le.
    #[arg(long)]
    raw: bool,
    /// Stop at the first status word other than 9000 and exit with code 4.
    #[arg(long)]
    strict: bool,
    /// Open an SCP11b secure channel first (the card's certificate must verify
    /// under a trusted root) and send every APDU protected; SELECT goes plain
    /// and the next APDU opens a new session. Shows the plaintext exchanges.
    #[arg(long, conflicts_with = "raw")]
    secure: bool,
}

#[derive(Serialize)]
struct Exchange {
    command: String,
    response: String,
    sw: String,
    sw_text: String,
    micros: u128,
}

fn load_script(path: &PathBuf) -> Result<Vec<(usize, String)>> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| Error::io("reading the script from stdin", e))?
    } else {
        std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?
    };
    Ok(text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split('#').next().unwrap_or("").trim().to_string()))
        .filter(|(_, l)| !l.is_empty())
        .collect())
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let lines: Vec<(usize, String)> = match &a.script {
        Some(p) => load_script(p)?,
        None => a.apdus.iter().enumerate().map(|(i, s)| (i + 1, s.clone())).collect(),
    };
    if lines.is_empty() {
        return Err(Error::Usage("no APDUs given (HEX arguments or --script FILE)".into()));
    }
    // Parse everything first: a typo on line 40 must not leave 39 commands sent.
    let mut apdus = Vec::with_capacity(lines.len());
    for (n, l) in &lines {
        let bytes = from_hex(l).filter(|b| b.len() >= 4).ok_or_else(|| {
            let whereabouts = if a.script.is_some() { format!("line {n}") } else { format!("argument {n}") };
            Error::Usage(format!("{whereabouts}: '{l}' is not a command APDU in hex (at least 4 bytes; one APDU per argument, quoted if it has spaces)"))
        })?;
        apdus.push(bytes);
    }

    let mut reader = ctx.open_reader()?;
    let (caps, name) = (reader.caps(), reader.name().to_string());
    let mut log = Vec::with_capacity(apdus.len());
    let mut failure = None;
    if a.secure {
        // CardClient::open selects the applet; the session opens before the
        // first APDU that is not a SELECT (a SELECT ends it on the card).
        let parsed = apdus
            .iter()
            .map(|raw| {
                CommandApdu::parse(raw).map_err(|sw| {
                    Error::Usage(format!(
                        "{}: not a well-formed command APDU ({sw:04X}); nothing was sent",
                        to_hex(raw).to_uppercase()
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut card = CardClient::open(reader.as_mut(), ctx.session())?;
        for (raw, c) in apdus.iter().zip(parsed) {
            let mut cmd = Command::new("APDU", c.cla, c.ins, c.p1, c.p2).with_data(&c.data);
            cmd.ne = c.ne;
            let select = c.cla & !cla::CHAINING == cla::ISO && c.ins == ins::SELECT;
            if !select && !card.is_secure() {
                card.open_secure_session()?;
            }
            let start = std::time::Instant::now();
            let r = card.transmit(&cmd)?;
            let micros = start.elapsed().as_micros();
            if let Some(sw) = record(ctx, a.strict, raw, r, micros, &mut log) {
                failure = Some(sw);
                break;
            }
        }
    } else {
        let tx = reader.transaction().map_err(|_| Error::CardRemoved(name.clone()))?;
        let mut ch = Channel::new(tx, caps, &name, ctx.trace);
        for raw in &apdus {
            let start = std::time::Instant::now();
            let r = ch.send_raw(raw, !a.raw)?;
            let micros = start.elapsed().as_micros();
            if let Some(sw) = record(ctx, a.strict, raw, r, micros, &mut log) {
                failure = Some(sw);
                break;
            }
        }
    }
    if ctx.json {
        print_json(&serde_json::json!({ "reader": name, "secure": a.secure, "exchanges": log }));
    }
    match failure {
        Some(sw) => Err(Error::Card { command: "APDU", sw }),
        None => Ok(()),
    }
}

/// Print one exchange (the plaintext, under --secure) and log it; the status
/// word that stops a --strict run.
fn record(
    ctx: &Ctx,
    strict: bool,
    raw: &[u8],
    r: crate::apdu::Response,
    micros: u128,
    log: &mut Vec<Exchange>,
) -> Option<StatusWord> {
    let shown = format_command(raw, raw_is_secret(raw));
    // Secret answers (an unwrapped file key) are masked here as in traces.
    let data = if raw.len() >= 2 && cardvault_proto::response_data_is_secret(raw[0], raw[1]) && !r.data.is_empty() {
        format!("<{} secret bytes masked>", r.data.len())
    } else {
        to_hex(&r.data).to_uppercase()
    };
    if !ctx.json {
        println!("> {shown}");
        let sep = if data.is_empty() { "" } else { " " };
        println!("< {data}{sep}{}", r.sw);
    }
    log.push(Exchange {
        command: shown,
        response: data,
        sw: format!("{:04X}", r.sw.to_u16()),
        sw_text: r.sw.text(),
        micros,
    });
    (strict && r.sw != StatusWord::Ok && !matches!(r.sw, StatusWord::MoreData(_))).then_some(r.sw)
}
