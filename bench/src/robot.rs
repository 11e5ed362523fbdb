//! The batch through pcscd: eight virtual readers (up to four stations of a main and
//! a backup reader) fed by a card robot in this process.
//!
//! Each reader's slot is a vpcd connection serving one simulated card at a
//! time. At every SELECT (the first command of every session) the robot
//! looks at the card in the slot: once the terminal is done with it (issued,
//! or its duplication confirmed) the next card slides in on the same
//! connection, like an automatic card feeder that takes no time. During
//! issuance a slot hands out fresh blank cards; during duplication a free
//! station takes the next issued pair from one pile, main and backup card
//! together. The terminal side is the real CLI, one process per command,
//! with `--main/--backup` per station.

use super::batch::{holder_file, BatchRun};
use super::proc::{cardvault, run_child};
use super::stack::{self, PrivatePcscd, VirtualReader};
use super::{Config, Section};
use applet_sim::{Card, Profile};
use cardvault::error::{Error, Result};
use std::io;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// The issued pairs waiting to be duplicated: whichever station is free
/// takes the next one, as an operator feeding stations from one pile would.
struct Pile {
    pairs: Vec<(PathBuf, PathBuf)>,
    next: usize,
}

impl Pile {
    fn take(&mut self) -> Option<usize> {
        let i = self.next;
        (i < self.pairs.len()).then(|| {
            self.next += 1;
            i
        })
    }
}

/// What a station's slots hand out.
enum Phase {
    /// Fresh blank cards; the issued ones are collected per role.
    Issue { next: usize },
    /// Pairs from the pile; `at` is the pair in this station's readers.
    Duplicate { pile: Arc<Mutex<Pile>>, at: Option<usize> },
}

struct StationState {
    phase: Phase,
    issued_main: Vec<PathBuf>,
    issued_backup: Vec<PathBuf>,
}

/// One station of the robot: shared by its two slots.
struct RobotStation {
    index: usize,
    dir: PathBuf,
    state: Mutex<StationState>,
}

impl RobotStation {
    fn blank(&self, role: &str, st: &mut StationState) -> io::Result<(Card, PathBuf)> {
        let Phase::Issue { next } = &mut st.phase else {
            return Err(io::Error::other("not issuing"));
        };
        *next += 1;
        let path = self.dir.join(format!("st{}-{role}-{next:04}.card", self.index));
        open(&path, "blank").map(|c| (c, path))
    }

    /// The card of pair `i` for `role`.
    fn pair_card(pile: &Mutex<Pile>, i: usize, role: &str) -> io::Result<(Card, PathBuf)> {
        let pile = pile.lock().expect("lock");
        let path = if role == "main" {
            &pile.pairs[i].0
        } else {
            &pile.pairs[i].1
        };
        open(path, "blank").map(|c| (c, path.clone()))
    }

    /// The card a slot serves first, and the pair it belongs to.
    fn first(&self, role: &str) -> io::Result<(Card, PathBuf, Option<usize>)> {
        let mut st = self.state.lock().expect("lock");
        if let Phase::Duplicate { pile, at } = &mut st.phase {
            if at.is_none() {
                *at = pile.lock().expect("lock").take();
            }
            let i = at.ok_or_else(|| io::Error::other("no pair left for this station"))?;
            return Self::pair_card(pile, i, role).map(|(c, p)| (c, p, Some(i)));
        }
        self.blank(role, &mut st).map(|(c, p)| (c, p, None))
    }

    /// At a SELECT: the card to serve from now on, if the current one is done.
    fn on_select(
        &self,
        role: &str,
        card: &Card,
        path: &Path,
        served: &mut Option<usize>,
    ) -> io::Result<Option<(Card, PathBuf)>> {
        let mut st = self.state.lock().expect("lock");
        if matches!(st.phase, Phase::Issue { .. }) {
            if !card.state().issued {
                return Ok(None);
            }
            let list = if role == "main" {
                &mut st.issued_main
            } else {
                &mut st.issued_backup
            };
            list.push(path.to_path_buf());
            return self.blank(role, &mut st).map(Some);
        }
        let Phase::Duplicate { pile, at } = &mut st.phase else {
            unreachable!("two phases");
        };
        // The main card of a confirmed duplicate leaves; the next pair comes
        // from the pile (or the station keeps it when the pile is empty).
        if role == "main" && card.state().export.confirmed && *served == *at {
            if let Some(i) = pile.lock().expect("lock").take() {
                *at = Some(i);
            }
        }
        match *at {
            Some(i) if *served != Some(i) => {
                *served = Some(i);
                Self::pair_card(pile, i, role).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// When the phase ends: a slot's last card, if issued, is collected too.
    fn on_stop(&self, role: &str, card: &Card, path: &Path) {
        let mut st = self.state.lock().expect("lock");
        if matches!(st.phase, Phase::Issue { .. }) && card.state().issued {
            if role == "main" {
                st.issued_main.push(path.to_path_buf());
            } else {
                st.issued_backup.push(path.to_path_buf());
            }
        }
    }
}

fn open(path: &Path, profile: &str) -> io::Result<Card> {
    let p = Profile::load(profile).map_err(io::Error::other)?;
    Card::open(path, &p).map(|(c, _)| c).map_err(io::Error::other)
}

/// A slot: one vpcd connection, one card at a time.
fn serve_slot(addr: &str, station: &RobotStation, role: &str, stop: &AtomicBool) -> io::Result<()> {
    let (mut card, mut path, mut served) = station.first(role)?;
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = TcpStream::connect(addr) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_millis(200)))?;
        card.power_off();
        let (mut msg, mut out, mut scratch) = (Vec::new(), Vec::new(), Vec::new());
        loop {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            match applet_sim::vpcd::read_message(&mut s, &mut msg) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) && msg.is_empty() => {
                    continue
                }
                Err(_) => break,
            }
            if msg.len() > 4 && msg[1] == cardvault_proto::ins::SELECT {
                if let Some((c, p)) = station.on_select(role, &card, &path, &mut served)? {
                    (card, path) = (c, p);
                    card.power_on();
                }
            }
            if applet_sim::vpcd::handle_message(&mut card, &msg, &mut out) {
                applet_sim::vpcd::write_message(&mut s, &out, &mut scratch)?;
            }
            msg.clear();
        }
    }
    station.on_stop(role, &card, &path);
    Ok(())
}

/// The robot for one phase: slot threads for every station's two readers.
struct Robot {
    stations: Vec<Arc<RobotStation>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<io::Result<()>>>,
    readers: Vec<String>,
}

impl Robot {
    fn start(stations: Vec<(Arc<RobotStation>, [&VirtualReader; 2])>) -> Result<Robot> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut readers = Vec::new();
        for (st, rs) in &stations {
            for (reader, role) in rs.iter().zip(["main", "backup"]) {
                let (st, stop, addr) = (st.clone(), stop.clone(), reader.addr());
                threads.push(std::thread::spawn(move || serve_slot(&addr, &st, role, &stop)));
                readers.push(reader.name.clone());
            }
        }
        let robot = Robot {
            stations: stations.into_iter().map(|(s, _)| s).collect(),
            stop,
            threads,
            readers,
        };
        for r in &robot.readers {
            stack::wait_card(r, true, Duration::from_secs(10))?;
        }
        Ok(robot)
    }

    /// Stop the slots (the cards leave the readers) and return the stations.
    fn finish(mut self) -> Result<Vec<Arc<RobotStation>>> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join()
                .map_err(|_| Error::Data("a robot slot panicked".into()))?
                .map_err(|e| Error::io("the card robot", e))?;
        }
        for r in &self.readers {
            stack::wait_card(r, false, Duration::from_secs(10))?;
        }
        // pcscd polls presence every 400 ms: let it see the readers empty.
        std::thread::sleep(Duration::from_millis(1200));
        Ok(std::mem::take(&mut self.stations))
    }
}

impl Drop for Robot {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Issue then duplicate `n` holders through pcscd with the first `k` stations.
/// The cards' state files live in `cards` (tmpfs when there is one: a real
/// card's EEPROM writes do not load the terminal's disk), the terminal's
/// data directory and vault in `dir`.
fn run_config(
    cfg: &Config,
    p: &PrivatePcscd,
    (dir, cards): (&Path, &Path),
    holders: &Path,
    n: usize,
    k: usize,
) -> Result<BatchRun> {
    for d in [dir, cards] {
        let _ = std::fs::remove_dir_all(d);
        std::fs::create_dir_all(d).map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
    }
    let home = dir.join("home");
    let readers: Vec<[&VirtualReader; 2]> = (0..k).map(|i| [&p.readers[2 * i], &p.readers[2 * i + 1]]).collect();
    let station_args: Vec<String> = readers
        .iter()
        .flat_map(|[m, b]| {
            [
                "--main".to_string(),
                m.name.clone(),
                "--backup".to_string(),
                b.name.clone(),
            ]
        })
        .collect();
    let stations: Vec<Arc<RobotStation>> = (0..k)
        .map(|i| {
            Arc::new(RobotStation {
                index: i + 1,
                dir: cards.to_path_buf(),
                state: Mutex::new(StationState {
                    phase: Phase::Issue { next: 0 },
                    issued_main: Vec::new(),
                    issued_backup: Vec::new(),
                }),
            })
        })
        .collect();

    let robot = Robot::start(stations.iter().cloned().zip(readers.iter().copied()).collect())?;
    // CPU of the whole system under test: the CLI, the card robot (this
    // process) and pcscd.
    let others = || stack::own_cpu_seconds() + p.cpu_seconds();
    let before = others();
    let issue = run_child(
        cardvault(&cfg.exe, &home)
            .args([
                "--json",
                "--wait",
                "20",
                "issue",
                "--profile",
                "pair",
                "--no-domain",
                "--issuer",
            ])
            .arg(super::proc::test_issuer_dir(&home)?)
            .arg("--holders")
            .arg(holders)
            .args(&station_args),
    )?;
    let issue_others = others() - before;
    let stations = robot.finish()?;
    let mut pairs = Vec::new();
    for st in &stations {
        let mut s = st.state.lock().expect("lock");
        let (m, b) = (std::mem::take(&mut s.issued_main), std::mem::take(&mut s.issued_backup));
        if m.len() != b.len() {
            return Err(Error::Data(format!(
                "station {} issued {} main and {} backup cards",
                st.index,
                m.len(),
                b.len()
            )));
        }
        pairs.extend(m.into_iter().zip(b));
    }
    if pairs.len() != n {
        return Err(Error::Data(format!(
            "the stations issued {} pairs, not {n}",
            pairs.len()
        )));
    }
    let pile = Arc::new(Mutex::new(Pile { pairs, next: 0 }));
    for st in &stations {
        st.state.lock().expect("lock").phase = Phase::Duplicate {
            pile: pile.clone(),
            at: None,
        };
    }
    let busy: Vec<(Arc<RobotStation>, [&VirtualReader; 2])> =
        stations.iter().cloned().zip(readers.iter().copied()).collect();
    let robot = Robot::start(busy)?;
    let before = others();
    let dup = run_child(
        cardvault(&cfg.exe, &home)
            .args([
                "--json",
                "--wait",
                "20",
                "duplicate",
                "--elements",
                "generate",
                "--holders",
            ])
            .arg(holders)
            .arg("--elements-out")
            .arg(home.join("elements.txt"))
            .args(&station_args),
    )?;
    let dup_others = others() - before;
    robot.finish()?;
    let v = super::batch::last_json_line(&dup.stdout)?;
    if v["duplicated"] != n {
        return Err(Error::Data(format!("duplicate through pcscd: {v}")));
    }
    Ok(BatchRun {
        issue: issue.wall.as_secs_f64(),
        duplicate: dup.wall.as_secs_f64(),
        cpu: issue.cpu + dup.cpu + issue_others + dup_others,
    })
}

/// The batch through pcscd on the private stack's readers: 1 station
/// against 2, and 4, interleaved.
pub fn pcsc_batch(cfg: &Config, p: &PrivatePcscd, dir: &Path, s: &mut Section, progress: &dyn Fn(&str)) -> Result<()> {
    let n = cfg.pairs.max(4);
    let holders = holder_file(dir, n)?;
    let mut runs: [Vec<BatchRun>; 3] = Default::default();
    let cards_base = super::batch::tmpfs_dir().unwrap_or_else(|| dir.to_path_buf());
    let stations = [1usize, 2, 4];
    let max = (p.readers.len() / 2).min(4);
    progress(&format!(
        "batch: {n} holders through pcscd, 1, 2 and {max} stations (interleaved)"
    ));
    for round in 0..=cfg.rounds {
        let mut order: Vec<usize> = (0..stations.len()).filter(|&i| stations[i] <= max).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let k = stations[i];
            let cards = cards_base.join(format!("pcsc-{k}-cards"));
            let r = run_config(cfg, p, (&dir.join(format!("pcsc-{k}")), &cards), &holders, n, k);
            let _ = std::fs::remove_dir_all(&cards);
            let r = r?;
            // Round 0 is the warm-up.
            if round > 0 {
                runs[i].push(r);
            }
        }
    }
    let label = format!("through pcscd, {} readers", p.readers.len());
    super::batch::rows(s, &label, n, &runs[0], &runs[1], true);
    if !runs[2].is_empty() {
        super::batch::rows_k(s, &label, n, &runs[0], &runs[2], 4);
    }
    s.note(format!(
        "through pcscd: readers {}; cards fed by an in-process robot that swaps the card at the first SELECT \
         after the terminal is done with it (no card handling time), the cards' state files on tmpfs (a card's \
         EEPROM writes do not load the terminal's disk; the vault stays on disk); the cores counted are the \
         CLI's, the robot's (the cards' own work) and pcscd's",
        p.readers
            .iter()
            .map(|r| format!("'{}'", r.name))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(())
}
