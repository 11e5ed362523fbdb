//! Part 3: streamed file encryption and decryption by the real CLI
//! (`cardvault encrypt --recipient`, `cardvault decrypt` with an embedded
//! card) against `openssl enc -aes-256-ctr` on the same file, interleaved.
//!
//! cardvault syncs its output before renaming it into place, so openssl's
//! time includes an fsync of its output too (like for like); the figure
//! without the fsync is in the detail. Every command writes a new file: the
//! previous output is removed (untimed) first, because replacing a large
//! file costs the kernel page reclaim that openssl (truncating in place) and
//! cardvault (writing a temporary file, then renaming it over the old one)
//! pay at different moments. The library's throughput with no output at
//! all, against openssl writing to /dev/null, separates the cipher from the
//! file system. Peak RSS is the child's VmHWM. Goals: ≥ 0.8x openssl's
//! throughput; peak RSS < 64 MiB.

use super::cards;
use super::proc::{cardvault, have_tool, interleave, run_child, run_child_rss, Samples};
use super::{Config, Goal, Op, Part, Row, Section, Unit};
use cardvault::card::{CardClient, SessionOptions};
use cardvault::error::{Error, Result};
use cardvault::fileenc;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

const TITLE: &str = "File encryption and decryption, streamed, against openssl enc -aes-256-ctr";
const CARD: &str = "files";

/// Write `size` bytes of random data (a random 1 MiB block, repeated).
fn generate(path: &Path, size: u64) -> Result<()> {
    let mut block = vec![0u8; 1 << 20];
    openssl::rand::rand_bytes(&mut block).map_err(|e| Error::Data(e.to_string()))?;
    let f = File::create(path).map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    let mut left = size;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        w.write_all(&block[..n])
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        left -= n as u64;
    }
    w.flush()
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Remove a previous output, so that the next command writes a new file.
fn fresh(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(format!("removing {}", path.display()), e)),
        _ => Ok(()),
    }
}

fn fsync(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(format!("syncing {}", path.display()), e))
}

/// MiB/s for `bytes` in `secs`.
fn mibps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / secs
}

pub fn run(cfg: &Config, progress: &dyn Fn(&str)) -> Result<Section> {
    if !have_tool("openssl") {
        return Ok(Section::skipped(Part::Files, TITLE, "openssl is not installed"));
    }
    let dir = cfg.scratch("files")?;
    let home = dir.join("home");
    let size = cfg.file_size;
    let public = {
        let mut r = cards::open(&home, CARD, "main")?;
        let mut c = CardClient::open(&mut r, SessionOptions::default())?;
        cards::give_key(&mut c)?
    };
    let pubfile = dir.join("recipient.hex");
    super::write_file(&pubfile, cardvault_proto::to_hex(&public).as_bytes())?;
    let input = dir.join("input.bin");
    progress(&format!("files: writing {} of input", Unit::Bytes.format(size as f64)));
    generate(&input, size)?;
    let (enc, dec) = (dir.join("input.cve"), dir.join("output.bin"));
    let (oenc, odec) = (dir.join("input.ctr"), dir.join("output.ctr"));
    let key = cardvault_proto::to_hex(&cardvault_proto::crypto::random::<32>());
    let iv = cardvault_proto::to_hex(&cardvault_proto::crypto::random::<16>());
    let openssl = |decrypt: bool, from: &Path, to: &Path| {
        let mut c = std::process::Command::new("openssl");
        c.args(["enc", "-aes-256-ctr", "-K", &key, "-iv", &iv]);
        if decrypt {
            c.arg("-d");
        }
        c.arg("-in").arg(from).arg("-out").arg(to);
        c
    };

    // Every closure returns seconds; the extra figures go to side samples.
    let rss_cell = std::cell::RefCell::new([Samples::default(), Samples::default(), Samples::default()]);
    let unsynced_cell = std::cell::RefCell::new([Samples::default(), Samples::default()]);
    progress("files: cardvault and openssl, encrypt and decrypt (interleaved)");
    let samples = interleave(
        cfg.rounds,
        &mut [
            &mut || {
                fresh(&enc)?;
                let r = run_child_rss(
                    cardvault(&cfg.exe, &home)
                        .args(["encrypt", "--force", "--recipient"])
                        .arg(&pubfile)
                        .arg("-o")
                        .arg(&enc)
                        .arg(&input),
                )?;
                rss_cell.borrow_mut()[0].push(r.max_rss as f64);
                Ok(r.wall.as_secs_f64())
            },
            &mut || {
                fresh(&oenc)?;
                let r = run_child_rss(&mut openssl(false, &input, &oenc))?;
                let t = Instant::now();
                fsync(&oenc)?;
                rss_cell.borrow_mut()[2].push(r.max_rss as f64);
                unsynced_cell.borrow_mut()[0].push(r.wall.as_secs_f64());
                Ok(r.wall.as_secs_f64() + t.elapsed().as_secs_f64())
            },
            &mut || {
                fresh(&dec)?;
                let r = run_child_rss(
                    cardvault(&cfg.exe, &home)
                        .env("CV_PIN", std::str::from_utf8(cards::PROFILE_PIN).expect("ascii"))
                        .args([
                            "-r",
                            &format!("sim:{CARD}"),
                            "decrypt",
                            "--force",
                            "--pin",
                            "env:CV_PIN",
                            "-o",
                        ])
                        .arg(&dec)
                        .arg(&enc),
                )?;
                rss_cell.borrow_mut()[1].push(r.max_rss as f64);
                Ok(r.wall.as_secs_f64())
            },
            &mut || {
                fresh(&odec)?;
                let r = run_child_rss(&mut openssl(true, &oenc, &odec))?;
                let t = Instant::now();
                fsync(&odec)?;
                unsynced_cell.borrow_mut()[1].push(r.wall.as_secs_f64());
                Ok(r.wall.as_secs_f64() + t.elapsed().as_secs_f64())
            },
        ],
    )?;
    let (rss, unsynced) = (rss_cell.into_inner(), unsynced_cell.into_inner());
    if std::fs::metadata(&dec).map(|m| m.len()).ok() != Some(size) {
        return Err(Error::Data("the decrypted file does not have the input's size".into()));
    }
    progress("files: library and openssl without output (interleaved)");
    let cipher_only = interleave(
        cfg.rounds,
        &mut [
            &mut || {
                let f = File::open(&input).map_err(|e| Error::io("opening the input", e))?;
                let t = Instant::now();
                fileenc::encrypt(&public, fileenc::DEFAULT_CHUNK_EXP, f, std::io::sink())
                    .map_err(|e| Error::Data(e.to_string()))?;
                Ok(t.elapsed().as_secs_f64())
            },
            &mut || {
                Ok(run_child(&mut openssl(false, &input, Path::new("/dev/null")))?
                    .wall
                    .as_secs_f64())
            },
            &mut || {
                let mut r = cards::open(&home, CARD, "main")?;
                let mut c = CardClient::open(&mut r, SessionOptions::default())?;
                c.verify_pin(cards::PROFILE_PIN)?;
                let f = File::open(&enc).map_err(|e| Error::io("opening the encrypted file", e))?;
                let t = Instant::now();
                fileenc::decrypt(
                    f,
                    std::io::sink(),
                    None,
                    cardvault::workflow::files::card_unwrapper(&mut c),
                )
                .map_err(|e| Error::Data(e.to_string()))?;
                Ok(t.elapsed().as_secs_f64())
            },
            &mut || {
                Ok(run_child(&mut openssl(true, &oenc, Path::new("/dev/null")))?
                    .wall
                    .as_secs_f64())
            },
        ],
    )?;

    let mut s = Section::new(
        Part::Files,
        format!(
            "{TITLE} ({}, median of {} rounds)",
            Unit::Bytes.format(size as f64),
            cfg.rounds
        ),
    );
    let thr = |x: &Samples| mibps(size, x.median());
    let best = |x: &Samples| x.0.iter().copied().fold(f64::INFINITY, f64::min);
    for (i, (what, ossl)) in [("encrypt", 1usize), ("decrypt", 3)].into_iter().enumerate() {
        let (cv, os) = (thr(&samples[i * 2]), thr(&samples[ossl]));
        s.row(
            Row::new(format!("cardvault {what} (CLI, output synced)"), cv, Unit::MibPerSec)
                .against("openssl + fsync", os)
                .goal(Goal::ratio(Op::Ge, 0.8))
                .detail(format!(
                    "median {:.2} s against {:.2} s, best {:.2} s against {:.2} s; openssl without the fsync: \
                     {:.0} MiB/s",
                    samples[i * 2].median(),
                    samples[ossl].median(),
                    best(&samples[i * 2]),
                    best(&samples[ossl]),
                    mibps(size, unsynced[i].median())
                )),
        );
    }
    for (i, what) in ["encrypt", "decrypt"].into_iter().enumerate() {
        let (lib, os) = (thr(&cipher_only[i * 2]), thr(&cipher_only[i * 2 + 1]));
        s.row(
            Row::new(format!("  {what}, library, no output"), lib, Unit::MibPerSec)
                .against("openssl > /dev/null", os)
                .detail("AES-256-GCM in 64 KiB chunks against AES-256-CTR; input from the page cache"),
        );
    }
    for (i, what) in ["encrypt", "decrypt"].into_iter().enumerate() {
        s.row(
            Row::new(format!("peak RSS, cardvault {what}"), rss[i].max(), Unit::Bytes)
                .goal(Goal::value(Op::Lt, 64.0 * 1024.0 * 1024.0))
                .detail(format!(
                    "highest of {} runs (VmHWM sampled from /proc); openssl enc: {}",
                    rss[i].0.len(),
                    Unit::Bytes.format(rss[2].max())
                )),
        );
    }
    for p in [&input, &enc, &dec, &oenc, &odec] {
        let _ = std::fs::remove_file(p);
    }
    Ok(s)
}
