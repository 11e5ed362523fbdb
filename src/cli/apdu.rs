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
        std::fs::read_to_string(path).map_err(|e| Error::input(format!("reading {}", path.display()), e))?
    };
    Ok(text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split('#').next().unwrap_or("").trim().to_string()))
        .filter(|(_, l)| !l.is_empty())
        .collect())
}

/// Largest command APDU: header (4), extended Lc (3), 65 535 data bytes, extended Le (2).
pub const MAX_COMMAND_APDU: usize = 4 + 3 + 65535 + 2;

/// A command APDU typed by the user, as bytes, or what is wrong with it.
/// Only what ISO 7816-3 allows (cases 1 to 4, short or extended, the length
/// fields matching the data) is sent; the verdict is the card-side parser's.
pub fn command_apdu(text: &str) -> std::result::Result<Vec<u8>, String> {
    let digits: Vec<char> = text.chars().filter(|c| !c.is_whitespace() && *c != ':').collect();
    if let Some(c) = digits.iter().find(|c| !c.is_ascii_hexdigit()) {
        return Err(format!("'{c}' is not a hex digit"));
    }
    if !digits.len().is_multiple_of(2) {
        return Err(format!(
            "{} hex digits is an odd number (two digits per byte)",
            digits.len()
        ));
    }
    let raw = from_hex(text).ok_or_else(|| "not hex".to_string())?;
    if raw.len() > MAX_COMMAND_APDU {
        return Err(format!(
            "{} bytes exceed the longest command APDU ({MAX_COMMAND_APDU} bytes)",
            raw.len()
        ));
    }
    match cardvault_proto::apdu::CommandApdu::parse(&raw) {
        Ok(_) => Ok(raw),
        Err(_) => Err(length_problem(&raw)),
    }
}

/// Why the length fields of `raw` (which the parser refused) do not fit.
fn length_problem(raw: &[u8]) -> String {
    if raw.len() < 4 {
        return format!("{} bytes; a command APDU has at least 4 (CLA INS P1 P2)", raw.len());
    }
    let body = &raw[4..];
    let rest = body.len() - 1;
    if body[0] != 0 {
        let lc = body[0] as usize;
        return format!(
            "P3 = {:02X} announces {lc} data bytes, but {rest} bytes follow it ({lc}, or {} with Le, would fit)",
            body[0],
            lc + 1
        );
    }
    if body.len() == 2 {
        return "P3 = 00 followed by one byte: a short Le of 00 ends the APDU, and an extended length field \
                has two bytes after the 00"
            .into();
    }
    let lc = u16::from_be_bytes([body[1], body[2]]) as usize;
    if lc == 0 {
        return "extended Lc = 0000 announces no data, but bytes follow it".into();
    }
    let rest = body.len() - 3;
    format!(
        "extended Lc = {lc:04X} announces {lc} data bytes, but {rest} bytes follow it ({lc}, or {} with a 2-byte Le, \
         would fit)",
        lc + 2
    )
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
        let bytes = command_apdu(l).map_err(|why| {
            let whereabouts = if a.script.is_some() {
                format!("line {n}")
            } else {
                format!("argument {n}")
            };
            let shown: String = l.chars().take(40).collect();
            let more = if l.chars().count() > 40 { "..." } else { "" };
            Error::Usage(format!("{whereabouts}: '{shown}{more}' is not a command APDU: {why}"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_iso_case_and_says_what_is_wrong_with_the_rest() {
        for ok in [
            "80990000",
            "00CADF0100",
            "00 A4 04 00 06 F0 43 56 4C 54 01",
            "00A4040006F043564C540100",
            "80B00001000010",
            "80D60000000002AABB",
            "80D60000000002AABB0000",
        ] {
            assert!(command_apdu(ok).is_ok(), "{ok}");
        }
        let why = |s: &str| command_apdu(s).unwrap_err();
        assert!(why("80B000240004").contains("P3 = 00 followed by one byte"));
        assert!(why("80B00024000").contains("odd"));
        assert!(why("80B0002G").contains("'G' is not a hex digit"));
        assert!(why("80B000").contains("at least 4"));
        assert!(why("00A404000601").contains("P3 = 06 announces 6 data bytes, but 1 bytes follow"));
        assert!(why("00A4040001AABBCC").contains("but 3 bytes follow"));
        assert!(why("80D6000000000201").contains("extended Lc = 0002"));
        assert!(why("80D60000000000AA").contains("extended Lc = 0000"));
        let long = "00".repeat(MAX_COMMAND_APDU + 1);
        assert!(why(&long).contains("exceed the longest command APDU (65544 bytes)"));
        let mut max = "80D6000000FFFF".to_string();
        max.push_str(&"AB".repeat(65535));
        max.push_str("0000");
        assert_eq!(command_apdu(&max).unwrap().len(), MAX_COMMAND_APDU);
    }
}
