//! Part 2: the cost of one APDU through the real stack (pcscd + the vpcd
//! driver + applet-sim), and where it goes.
//!
//! - cardvault's APDU layer ([`Channel::transmit`] and the `apdu` command's
//!   [`Channel::send_raw`]) against a bare `pcsc` transmit loop, in this
//!   process, on the same card, same APDU (GET DATA card number). Goal: ≤ 1.05.
//! - `cardvault apdu --script` against `scriptor` with the same 1000 APDUs,
//!   whole-process wall time. Goal: cardvault faster.
//! - applet-sim against a minimal vpcd responder ([`super::responder`]) in
//!   the other reader, both through the bare loop. Goal: within 2x.
//!
//! The differences give the breakdown: the responder's time is the floor of
//! pcscd + vpcd + sockets; applet-sim above it is the simulator (of which the
//! applet's own work is measured in-process); the channel above the bare loop
//! is our code.

use super::proc::{cardvault, have_tool, interleave, run_child, Samples};
use super::responder::Responder;
use super::stack::{self, AppletSim, PrivatePcscd};
use super::{Config, Goal, Op, Part, Row, Section, Unit};
use cardvault::apdu::{Channel, Command};
use cardvault::card::{CardClient, SessionOptions};
use cardvault::error::{Error, Result};
use cardvault::transport::pcsc::PcscReader;
use cardvault::transport::Reader;
use cardvault_proto::{self as proto, tag};
use std::ffi::CString;
use std::path::Path;
use std::time::{Duration, Instant};

const TITLE: &str = "Per-APDU round trip through pcscd + vpcd + applet-sim";
/// APDUs per interleaved slice.
const SLICE: usize = 100;
/// Round-trip APDUs per side and round, in multiples of `--apdus`: the
/// sides differ by a few percent at most, so the medians need many slices.
const SLICES_PER_SCRIPT: usize = 4;

fn pcsc_err(doing: &'static str) -> impl Fn(pcsc::Error) -> Error {
    move |source| Error::Pcsc {
        reader: "benchmark".into(),
        doing,
        source,
    }
}

/// A short command as bytes.
fn encode(cmd: &Command) -> Vec<u8> {
    let mut raw = Vec::new();
    cmd.encode_short(cmd.cla, &cmd.data, cmd.ne, &mut raw);
    raw
}

/// `n` transmits in one transaction on a bare `pcsc` card handle; µs per APDU.
fn bare_loop(card: &mut pcsc::Card, apdu: &[u8], n: usize) -> Result<f64> {
    let tx = card.transaction().map_err(pcsc_err("beginning a transaction"))?;
    let mut buf = [0u8; pcsc::MAX_BUFFER_SIZE];
    let start = Instant::now();
    for _ in 0..n {
        let r = tx.transmit(apdu, &mut buf).map_err(pcsc_err("transmitting"))?;
        if r.len() < 2 {
            return Err(Error::Data("empty answer in the bare loop".into()));
        }
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / n as f64)
}

/// `n` GET DATA through cardvault's channel (a transaction per round, as the CLI does).
fn channel_loop(reader: &mut PcscReader, n: usize, raw: Option<&[u8]>) -> Result<f64> {
    let (caps, name) = (reader.caps(), reader.name().to_string());
    let tx = reader.transaction().map_err(|_| Error::CardRemoved(name.clone()))?;
    let mut ch = Channel::new(tx, caps, &name, false);
    let start = Instant::now();
    for _ in 0..n {
        let r = match raw {
            Some(bytes) => ch.send_raw(bytes, true)?,
            None => ch.transmit(&Command::get_data(tag::CARD_NUMBER))?,
        };
        if !r.sw.is_ok() {
            return Err(Error::Card {
                command: "GET DATA",
                sw: r.sw,
            });
        }
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / n as f64)
}

/// cardvault's APDU layer with no transport cost: `n` GET DATA through a
/// [`Channel`] to an embedded card (its applet's work is measured apart).
fn channel_in_process(reader: &mut cardvault::transport::sim::SimReader, n: usize) -> Result<f64> {
    let (caps, name) = (reader.caps(), reader.name().to_string());
    let tx = reader.transaction().map_err(|_| Error::CardRemoved(name.clone()))?;
    let mut ch = Channel::new(tx, caps, &name, false);
    let start = Instant::now();
    for _ in 0..n {
        ch.transmit(&Command::get_data(tag::CARD_NUMBER))?;
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / n as f64)
}

/// The applet alone: the same GET DATA on an in-memory card, no I/O.
fn in_process_loop(card: &mut applet_sim::Card, apdu: &[u8], n: usize) -> f64 {
    let mut out = Vec::with_capacity(300);
    let start = Instant::now();
    for _ in 0..n {
        card.transmit_into(apdu, &mut out);
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

pub fn run(cfg: &Config, private: Option<&PrivatePcscd>, progress: &dyn Fn(&str)) -> Result<Section> {
    let readers = match stack::readers(private) {
        Ok(r) => r,
        Err(why) => return Ok(Section::skipped(Part::Roundtrip, TITLE, why)),
    };
    let bin_dir = cfg.exe.parent().unwrap_or(Path::new("."));
    let bin = match stack::workspace_bin(bin_dir, "applet-sim", "applet-sim") {
        Ok(b) => b,
        Err(why) => return Ok(Section::skipped(Part::Roundtrip, TITLE, format!("applet-sim: {why}"))),
    };
    let dir = cfg.scratch("roundtrip")?;
    let (sim_r, min_r) = (&readers[0], &readers[1]);
    let card_path = dir.join("rt.card");
    progress(&format!(
        "roundtrip: applet-sim in '{}', minimal responder in '{}'",
        sim_r.name, min_r.name
    ));
    let sim = AppletSim::start(&bin, &[(sim_r, &card_path, "main")])?;
    let responder = Responder::start(&min_r.addr());
    stack::wait_card(&min_r.name, true, Duration::from_secs(10))?;

    // Many short slices, interleaved, so that a burst of load elsewhere on
    // the machine hits every side alike: 4 × rounds × apdus per side in all.
    let n = cfg.apdus.min(SLICE);
    let slices = (cfg.rounds * cfg.apdus * SLICES_PER_SCRIPT).div_ceil(n);
    let mut s = Section::new(
        Part::Roundtrip,
        format!("{TITLE} (median µs per APDU over {slices} interleaved slices of {n} APDUs per side)"),
    );
    s.note(format!(
        "readers: applet-sim in '{}', the minimal responder in '{}'; APDU: GET DATA card number (00 CA DF 01 00)",
        sim_r.name, min_r.name
    ));
    let apdu = encode(&Command::get_data(tag::CARD_NUMBER));
    let ctx = pcsc::Context::establish(pcsc::Scope::User).map_err(|e| Error::NoPcsc(e.to_string()))?;
    let cname = |r: &stack::VirtualReader| CString::new(r.name.clone()).expect("reader name");
    let mut bare_sim = ctx
        .connect(&cname(sim_r), pcsc::ShareMode::Shared, pcsc::Protocols::ANY)
        .map_err(pcsc_err("connecting"))?;
    let mut bare_min = ctx
        .connect(&cname(min_r), pcsc::ShareMode::Shared, pcsc::Protocols::ANY)
        .map_err(pcsc_err("connecting"))?;
    // The same client context as the bare loop: one pcscd context thread serves both.
    let mut ours = PcscReader::connect(ctx.clone(), &sim_r.name, None)?;
    // Select the applet once; the card keeps it selected across transactions.
    CardClient::open(&mut ours, SessionOptions::default())?;
    let ours = std::cell::RefCell::new(ours);
    let mut card = applet_sim::Card::in_memory(&applet_sim::Profile::load("main").map_err(Error::Usage)?);
    card.transmit(&encode(&Command::select_aid(proto::AID)));
    let mtime = || std::fs::metadata(&card_path).and_then(|m| m.modified()).ok();
    let before = mtime();

    progress("roundtrip: bare pcsc, channel, send_raw, responder, in-process (interleaved)");
    // CPU per component, summed over the slices: (this thread, pcscd, applet-sim).
    let pcscd_pid = match private {
        Some(p) => Ok(p.pid()),
        None => stack::system_pcscd_pid(),
    };
    let cpu_now = || {
        (
            stack::thread_cpu_seconds(),
            pcscd_pid
                .as_ref()
                .ok()
                .and_then(|p| stack::process_cpu_seconds(*p))
                .unwrap_or(f64::NAN),
            stack::process_cpu_seconds(sim.pid()).unwrap_or(f64::NAN),
        )
    };
    let cpu_bare = std::cell::Cell::new((0.0, 0.0, 0.0));
    let mut embedded = super::cards::open(&dir.join("home"), "rt-inproc", "main")?;
    CardClient::open(&mut embedded, SessionOptions::default())?;
    let samples = interleave(
        slices,
        &mut [
            &mut || {
                let a = cpu_now();
                let r = bare_loop(&mut bare_sim, &apdu, n);
                let (b, c) = (cpu_now(), cpu_bare.get());
                cpu_bare.set((c.0 + b.0 - a.0, c.1 + b.1 - a.1, c.2 + b.2 - a.2));
                r
            },
            &mut || channel_loop(&mut ours.borrow_mut(), n, None),
            &mut || channel_loop(&mut ours.borrow_mut(), n, Some(&apdu)),
            &mut || bare_loop(&mut bare_min, &apdu, n),
            &mut || Ok(in_process_loop(&mut card, &apdu, n)),
            &mut || channel_in_process(&mut embedded, n),
        ],
    )?;
    let [bare, chan, raw, floor, applet, layer] = [0, 1, 2, 3, 4, 5].map(|i| samples[i].median());
    let unchanged = before.is_some() && before == mtime();
    // µs per APDU (the warm-up pass included, as in the sums).
    let per = |secs: f64| secs * 1e6 / ((slices + 1) * n) as f64;
    let cb = cpu_bare.get();
    let (cpu_client, cpu_pcscd, cpu_sim) = (per(cb.0), per(cb.1), per(cb.2));

    s.row(
        Row::new("Channel::transmit (cardvault APDU layer)", chan, Unit::Micros)
            .against("bare pcsc", bare)
            .goal(Goal::ratio(Op::Le, 1.05))
            .detail(samples[1].spread(Unit::Micros)),
    );
    s.row(
        Row::new("Channel::send_raw (`cardvault apdu` path)", raw, Unit::Micros)
            .against("bare pcsc", bare)
            .goal(Goal::ratio(Op::Le, 1.05))
            .detail(samples[2].spread(Unit::Micros)),
    );
    s.row(
        Row::new("applet-sim, bare pcsc loop", bare, Unit::Micros)
            .against("minimal responder", floor)
            .goal(Goal::ratio(Op::Le, 2.0))
            .detail(format!(
                "{}; responder: {}",
                samples[0].spread(Unit::Micros),
                samples[3].spread(Unit::Micros)
            )),
    );
    let pct = |x: f64| 100.0 * x / chan;
    s.row(
        Row::new(
            "  where it goes: pcscd + vpcd + sockets (responder floor)",
            floor,
            Unit::Micros,
        )
        .detail(format!("{:.0} % of a cardvault APDU", pct(floor))),
    );
    s.row(
        Row::new(
            "  where it goes: applet-sim above the floor",
            bare - floor,
            Unit::Micros,
        )
        .detail(format!(
            "{:.0} %; of it the applet's own work (in-process, no I/O): {applet:.1} µs",
            pct(bare - floor)
        )),
    );
    s.row(
        Row::new("  where it goes: cardvault above bare pcsc", chan - bare, Unit::Micros)
            .detail(format!("{:.0} %", pct(chan - bare))),
    );
    let mut row = Row::new("  CPU per APDU: pcscd (all threads)", cpu_pcscd, Unit::Micros)
        .detail("in the bare loop on applet-sim; from /proc, summed over every slice");
    if let Err(why) = &pcscd_pid {
        row = row.not_measured(format!("pcscd's process was not found ({why})"));
    }
    s.row(row);
    s.row(
        Row::new("  CPU per APDU: applet-sim", cpu_sim, Unit::Micros).detail(format!(
            "of it the applet's own work: {applet:.1} µs; the rest is its socket I/O (2 reads, 1 write, 3 setsockopt)"
        )),
    );
    s.row(
        Row::new("  CPU per APDU: the client thread", cpu_client, Unit::Micros)
            .detail("getrusage of this thread in the bare loop: the PC/SC client library's socket I/O"),
    );
    s.row(
        Row::new("  cardvault's APDU layer alone", layer - applet, Unit::Micros).detail(format!(
            "Channel::transmit to an embedded card ({layer:.2} µs) less the applet's work ({applet:.2} µs): \
             encoding, status word, response assembly, counters"
        )),
    );
    s.note(if unchanged {
        format!(
            "the card's state file was not rewritten during {} GET DATA",
            super::human_count((n * (slices + 1) * 3) as u64)
        )
    } else {
        "the card's state file changed during the read-only loops".to_string()
    });
    s.note(format!(
        "the responder answered {} APDUs",
        super::human_count(responder.answered())
    ));

    // Secure messaging through the stack: the same GET DATA protected
    // (SCP11b session opened by VERIFY) and plain, in one card session.
    progress("roundtrip: protected against plain GET DATA through pcscd");
    {
        let mut r = ours.borrow_mut();
        // applet-sim's cards are certified by the test issuer.
        let root = applet_sim::test_issuer::root_der();
        let root = openssl::x509::X509::from_der(&root)
            .and_then(|c| c.to_pem())
            .map_err(|e| Error::Internal(format!("test issuer root: {e}")))?;
        let trust = cardvault::trust::Trust::none().with_pem(&root, "the test issuer root (applet-sim)")?;
        let mut c = CardClient::open(&mut *r, SessionOptions::trusting(trust))?;
        c.verify_pin(super::cards::PROFILE_PIN)?;
        if !c.is_secure() {
            return Err(Error::Internal("no secure session after VERIFY".into()));
        }
        let cmd = Command::get_data(tag::CARD_NUMBER);
        let c = std::cell::RefCell::new(c);
        let sm = interleave(
            slices,
            &mut [
                &mut || {
                    let mut c = c.borrow_mut();
                    let t = Instant::now();
                    for _ in 0..n {
                        c.exec(&cmd)?;
                    }
                    Ok(t.elapsed().as_secs_f64() * 1e6 / n as f64)
                },
                &mut || {
                    let mut c = c.borrow_mut();
                    let t = Instant::now();
                    for _ in 0..n {
                        let r = c.channel().transmit(&cmd)?;
                        if !r.sw.is_ok() {
                            return Err(Error::Card {
                                command: "GET DATA",
                                sw: r.sw,
                            });
                        }
                    }
                    Ok(t.elapsed().as_secs_f64() * 1e6 / n as f64)
                },
            ],
        )?;
        let (p, q) = (sm[0].median(), sm[1].median());
        s.row(
            Row::new("GET DATA card number, protected (SCP11b)", p, Unit::Micros)
                .against("plain", q)
                .goal(Goal::ratio(Op::Le, 1.1))
                .detail(format!(
                    "+{:.1} µs per APDU for secure messaging, in one card session after VERIFY; {} against {}",
                    p - q,
                    sm[0].spread(Unit::Micros),
                    sm[1].spread(Unit::Micros)
                )),
        );
    }
    drop((bare_sim, bare_min, ours));

    script_vs_scriptor(cfg, &dir, &sim_r.name, &mut s, progress)?;
    drop(responder);
    drop(sim);
    Ok(s)
}

/// `cardvault apdu --script` against `scriptor`: the same file of APDUs.
fn script_vs_scriptor(
    cfg: &Config,
    dir: &std::path::Path,
    reader: &str,
    s: &mut Section,
    progress: &dyn Fn(&str),
) -> Result<()> {
    if !have_tool("scriptor") {
        s.note("skipped cardvault apdu --script against scriptor: scriptor (pcsc-tools) is not installed");
        return Ok(());
    }
    let n = cfg.apdus.max(2);
    let mut text = String::from("00 A4 04 00 06 F0 43 56 4C 54 01 00\n");
    for _ in 1..n {
        text.push_str("00 CA DF 01 00\n");
    }
    let script = dir.join("script.apdu");
    super::write_file(&script, text.as_bytes())?;
    let home = dir.join("home");
    progress("roundtrip: cardvault apdu --script against scriptor (interleaved)");
    let samples = interleave(
        cfg.rounds,
        &mut [
            &mut || {
                let r = run_child(
                    cardvault(&cfg.exe, &home)
                        .args(["-r", reader, "apdu", "--script"])
                        .arg(&script),
                )?;
                let answers = String::from_utf8_lossy(&r.stdout).matches("9000").count();
                if answers != n {
                    return Err(Error::Data(format!(
                        "cardvault apdu answered {answers} of {n} with 9000"
                    )));
                }
                Ok(r.wall.as_secs_f64())
            },
            &mut || {
                let r = run_child(std::process::Command::new("scriptor").args(["-r", reader]).arg(&script))?;
                let answers = String::from_utf8_lossy(&r.stdout)
                    .matches(": Normal processing")
                    .count();
                if answers != n {
                    return Err(Error::Data(format!("scriptor answered {answers} of {n} with 9000")));
                }
                Ok(r.wall.as_secs_f64())
            },
        ],
    )?;
    let (cv, sc): (Samples, Samples) = (samples[0].clone(), samples[1].clone());
    s.row(
        Row::new(
            format!("cardvault apdu --script, {n} APDUs"),
            cv.median(),
            Unit::Seconds,
        )
        .against("scriptor", sc.median())
        .goal(Goal::ratio(Op::Lt, 1.0))
        .detail(format!(
            "whole process; {:.1} µs against {:.1} µs per APDU",
            cv.median() * 1e6 / n as f64,
            sc.median() * 1e6 / n as f64
        )),
    );
    Ok(())
}
