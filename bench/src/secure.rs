//! Part 7: what the secure channel costs. The SCP11b handshake in APDUs
//! (against the 2 it needs with extended length, 4 with short APDUs only)
//! and in time, and the per-APDU cost of secure messaging (C-MAC, C-DEC,
//! R-MAC, R-ENC on both ends) against the same command sent plain in the
//! same session, on an embedded card: the card's crypto is in-process, so
//! these are the two ends' crypto and framing without a transport.

use super::cards::{self, PROFILE_PIN};
use super::proc::{interleave, Samples};
use super::{Config, Goal, Op, Part, Row, Section, Unit};
use cardvault::apdu::Command;
use cardvault::card::{CardClient, SessionOptions};
use cardvault::error::{Error, Result};
use cardvault::transport::sim::SimReader;
use std::time::Instant;

const TITLE: &str = "Secure channel (SCP11b) cost (embedded card, in-process)";

/// APDUs and milliseconds of one handshake on the card in `r`.
fn handshake(r: &mut SimReader) -> Result<(u64, f64)> {
    let mut c = CardClient::open(r, SessionOptions::default())?;
    let before = c.stats().apdus;
    let t = Instant::now();
    c.open_secure_session()?;
    Ok((c.stats().apdus - before, t.elapsed().as_secs_f64() * 1000.0))
}

pub fn run(cfg: &Config, progress: &dyn Fn(&str)) -> Result<Section> {
    let mut s = Section::new(Part::Secure, TITLE);
    let dir = cfg.scratch("secure")?;
    progress("secure: handshake");
    let mut ext = cards::open(&dir, "scp-ext", "main")?;
    let mut short = SimReader::open(&dir, "scp-short", "main", Some(false))?;
    let (n_ext, _) = handshake(&mut ext)?;
    let (n_short, _) = handshake(&mut short)?;
    s.row(
        Row::new("SCP11b handshake, extended APDUs", n_ext as f64, Unit::Apdus)
            .against("min", 2.0)
            .goal(Goal::ratio(Op::Le, 1.0))
            .detail("GET DATA BF21 (the card certificate) + INTERNAL AUTHENTICATE"),
    );
    s.row(
        Row::new("SCP11b handshake, short APDUs only", n_short as f64, Unit::Apdus)
            .against("min", 4.0)
            .goal(Goal::ratio(Op::Le, 1.0))
            .detail("GET DATA BF21 and 2 GET RESPONSE (about 550 bytes) + INTERNAL AUTHENTICATE"),
    );
    let mut times = Samples::default();
    for _ in 0..cfg.rounds.max(3) {
        times.push(handshake(&mut ext)?.1);
    }
    s.row(
        Row::new("SCP11b handshake, time", times.median(), Unit::Millis).detail(format!(
            "certificate chain verified, two ECDH on each end, X9.63 KDF, receipt; {}",
            times.spread(Unit::Millis)
        )),
    );

    progress("secure: per-APDU cost");
    let mut c = CardClient::open(&mut ext, SessionOptions::default())?;
    c.verify_pin(PROFILE_PIN)?; // opens the session
    if !c.is_secure() {
        return Err(Error::Internal("no secure session after VERIFY".into()));
    }
    let per_slice = cfg.apdus.max(50);
    for (name, cmd) in [
        (
            "GET DATA card number",
            Command::get_data(cardvault_proto::tag::CARD_NUMBER),
        ),
        ("READ MEMORY 1 KiB", Command::read_memory(0, 1024)),
    ] {
        let c = std::cell::RefCell::new(&mut c);
        let mut plain = || -> Result<f64> {
            let mut c = c.borrow_mut();
            let t = Instant::now();
            for _ in 0..per_slice {
                let r = c.channel().transmit(&cmd)?;
                if !r.sw.is_ok() {
                    return Err(Error::Internal(format!("plain {name}: {}", r.sw)));
                }
            }
            Ok(t.elapsed().as_secs_f64() * 1e6 / per_slice as f64)
        };
        let mut protected = || -> Result<f64> {
            let mut c = c.borrow_mut();
            let t = Instant::now();
            for _ in 0..per_slice {
                c.exec(&cmd)?;
            }
            Ok(t.elapsed().as_secs_f64() * 1e6 / per_slice as f64)
        };
        let samples = interleave(cfg.rounds.max(3), &mut [&mut protected, &mut plain])?;
        let (p, q) = (samples[0].median(), samples[1].median());
        s.row(
            Row::new(format!("{name}, protected"), p, Unit::Micros)
                .against("plain", q)
                .detail(format!(
                    "median µs per APDU over {} slices of {per_slice}",
                    cfg.rounds.max(3),
                )),
        );
        s.row(
            Row::new("  secure messaging per APDU, in-process", p - q, Unit::Micros)
                .goal(Goal::value(Op::Le, 10.0))
                .detail("protected less plain: C-MAC and encryption of the command, R-MAC and encryption of the answer, and the checks on the other end"),
        );
    }
    s.note(
        "the handshake runs once per card session, before the first sensitive command; every later command but \
         SELECT is protected. Through pcscd + vpcd the same comparison is in part 2 (goal: protected ≤ 1.1x \
         plain)",
    );
    Ok(s)
}
