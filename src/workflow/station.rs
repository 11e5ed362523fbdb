//! Stations: the card readers a batch job (issue, duplicate) runs on, and the
//! one runner that works through a holder file on several stations at once.
//!
//! A station is one or two card sources: where its main cards and where its
//! backup cards come from. A source is either a feeder of embedded cards
//! (`sim:PREFIX`, cards named PREFIX-HOLDER-ROLE) or a PC/SC reader the
//! operator puts the next card into. Each station runs on its own thread and
//! takes holders from the batch until none is left; a station that fails
//! (its vault cannot be written, its reader went away) stops the whole batch,
//! and a station thread that panics is an internal error, not a refusal.
//!
//! The runner says nothing to the operator itself: progress and "insert the
//! next card" notices go to the caller as [`StationEvent`]s.

use super::issue::Role;
use crate::card::{CardClient, CardStatus, SessionOptions};
use crate::error::{Error, Result};
use crate::reader::{ReaderOptions, ReaderSpec};
use crate::transport::sim::{card_path, SimReader};
use crate::transport::Reader;
use std::collections::HashSet;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How often a PC/SC station looks at its reader while it waits for a card.
const POLL: Duration = Duration::from_millis(200);

/// Where one kind of card (main or backup) of a station comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CardSource {
    /// Embedded cards named PREFIX-HOLDER-ROLE: a fresh blank card per holder
    /// and role when issuing, the card issuance made when duplicating.
    Sim { prefix: String },
    /// A PC/SC reader: the operator (or a card feeder) puts in the next card.
    Pcsc { spec: String },
}

impl CardSource {
    /// `sim:PREFIX` is an embedded-card feeder; anything else names a PC/SC reader.
    pub fn from_spec(spec: &str) -> CardSource {
        match ReaderSpec::parse(spec) {
            ReaderSpec::Sim(prefix) => CardSource::Sim { prefix },
            _ => CardSource::Pcsc { spec: spec.to_string() },
        }
    }

    pub fn is_pcsc(&self) -> bool {
        matches!(self, CardSource::Pcsc { .. })
    }

    /// A blank card for `holder`'s `role` card. Embedded: made fresh (or the
    /// one made for this holder and role before). PC/SC: the card in the
    /// reader once it is one this batch has not handled yet; an empty reader
    /// is this card's failure (the reader options' own wait applies first).
    pub fn blank_card(&self, env: &StationEnv<'_>, batch: &Batch, holder: &str, role: Role) -> Result<Box<dyn Reader>> {
        let spec = match self {
            CardSource::Sim { prefix } => return Ok(Box::new(sim_reader(env, prefix, holder, role)?)),
            CardSource::Pcsc { spec } => spec,
        };
        let mut told = false;
        poll(env, || {
            let mut r = env.open(spec)?;
            let number = CardClient::open(r.as_mut(), SessionOptions::default())?.card_number()?;
            if !batch.is_handled(&number) {
                return Ok(Poll::Ready(r));
            }
            let give_up = Err(Error::Reader(format!(
                "no new card in '{spec}' for holder {holder} ({role}); card {number} was already handled"
            )));
            let notice = (!std::mem::replace(&mut told, true)).then(|| Notice::InsertBlank {
                holder: holder.to_string(),
                role,
                reader: r.name().to_string(),
            });
            Ok(Poll::Wait { notice, give_up })
        })
    }

    /// An issued card of `holder`. Embedded: the card issuance made (which
    /// must exist). PC/SC: the card in the reader once it is one this batch
    /// has not handled yet.
    pub fn issued_card(
        &self,
        env: &StationEnv<'_>,
        batch: &Batch,
        holder: &str,
        role: Role,
    ) -> Result<Box<dyn Reader>> {
        let spec = match self {
            CardSource::Sim { prefix } => {
                let name = sim_name(prefix, holder, role);
                if !card_path(&env.readers.data_dir, &name).exists() {
                    return Err(Error::Reader(format!(
                        "there is no embedded card sim:{name} (issue the holder's cards first)"
                    )));
                }
                return Ok(Box::new(sim_reader(env, prefix, holder, role)?));
            }
            CardSource::Pcsc { spec } => spec,
        };
        let mut told = false;
        poll(env, || {
            match env.open(spec) {
                Ok(mut r) => {
                    let number = CardClient::open(r.as_mut(), SessionOptions::default())?.card_number()?;
                    if !batch.is_handled(&number) {
                        return Ok(Poll::Ready(r));
                    }
                }
                Err(Error::NoCard(_)) => {}
                Err(e) => return Err(e),
            }
            let notice = (!std::mem::replace(&mut told, true)).then(|| Notice::InsertIssued {
                holder: holder.to_string(),
                role,
                reader: spec.clone(),
            });
            Ok(Poll::Wait {
                notice,
                give_up: Err(Error::Reader(format!("no {role} card for holder {holder} in {spec}"))),
            })
        })
    }

    /// PC/SC: wait for a card whose status `pick` accepts (it names the
    /// holder the card belongs to and takes that holder), skipping cards this
    /// batch has handled; a card no holder claims is shown to the operator
    /// once as not pending at station `station`. `None` when every holder is
    /// taken, the batch stopped, or the wait is over; always `None` for an
    /// embedded source, which has no card to look at.
    pub fn recognized_card(
        &self,
        env: &StationEnv<'_>,
        batch: &Batch,
        station: usize,
        mut pick: impl FnMut(&CardStatus) -> Option<usize>,
    ) -> Result<Option<(usize, Box<dyn Reader>)>> {
        let CardSource::Pcsc { spec } = self else {
            return Ok(None);
        };
        let mut told: Option<String> = None;
        poll(env, || {
            if batch.all_taken() || batch.stopped() {
                return Ok(Poll::Ready(None));
            }
            let mut notice = None;
            match env.open(spec) {
                Ok(mut r) => {
                    let st = CardClient::open(r.as_mut(), SessionOptions::default())?.status()?;
                    if !batch.is_handled(&st.card_number) {
                        if let Some(i) = pick(&st) {
                            return Ok(Poll::Ready(Some((i, r))));
                        }
                        if told.as_ref() != Some(&st.card_number) {
                            told = Some(st.card_number.clone());
                            notice = Some(Notice::NotPending {
                                station,
                                card_number: st.card_number,
                                member_number: st.member_number,
                                reader: spec.clone(),
                            });
                        }
                    }
                }
                Err(Error::NoCard(_)) => {}
                Err(e) => return Err(e),
            }
            Ok(Poll::Wait {
                notice,
                give_up: Ok(None),
            })
        })
    }
}

fn sim_name(prefix: &str, holder: &str, role: Role) -> String {
    format!("{prefix}-{holder}-{role}")
}

fn sim_reader(env: &StationEnv<'_>, prefix: &str, holder: &str, role: Role) -> Result<SimReader> {
    let name = sim_name(prefix, holder, role);
    crate::reader::check_sim_exists(env.readers, &name)?;
    SimReader::open(&env.readers.data_dir, &name, "blank", None)
}

/// What one look at a PC/SC reader found.
enum Poll<T> {
    Ready(T),
    /// Not yet: tell the operator `notice` (if any); once the wait is over,
    /// the answer is `give_up`.
    Wait {
        notice: Option<Notice>,
        give_up: Result<T>,
    },
}

/// Look at a reader every [`POLL`] until `look` is ready or `env.wait` is over.
fn poll<T>(env: &StationEnv<'_>, mut look: impl FnMut() -> Result<Poll<T>>) -> Result<T> {
    let deadline = Instant::now() + env.wait;
    loop {
        match look()? {
            Poll::Ready(t) => return Ok(t),
            Poll::Wait { notice, give_up } => {
                if Instant::now() > deadline {
                    return give_up;
                }
                // The operator stopped the run: no more waiting for cards.
                if interrupted() {
                    return give_up.map_err(|e| Error::Reader(format!("{e}: the run was interrupted while waiting")));
                }
                if let Some(n) = notice {
                    (env.events)(StationEvent::Notice(n));
                }
            }
        }
        std::thread::sleep(POLL);
    }
}

/// One station: where its main cards and its backup cards come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Station {
    pub main: Option<CardSource>,
    /// Backup cards; without one, the main source serves backup cards too.
    pub backup: Option<CardSource>,
}

impl Station {
    /// Where this station takes its `role` cards from.
    pub fn source(&self, role: Role) -> Option<&CardSource> {
        match role {
            Role::Main => self.main.as_ref(),
            Role::Backup => self.backup.as_ref().or(self.main.as_ref()),
        }
    }
}

/// What the operator is asked to do at a PC/SC station.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The card in the reader was handled already; a blank one is wanted.
    InsertBlank { holder: String, role: Role, reader: String },
    /// The issued `role` card of `holder` is wanted.
    InsertIssued { holder: String, role: Role, reader: String },
    /// The card in the reader belongs to no holder still waiting.
    NotPending {
        station: usize,
        card_number: String,
        member_number: Option<String>,
        reader: String,
    },
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::InsertBlank { holder, role, reader } => {
                write!(
                    f,
                    "insert the next blank card for holder {holder} ({role}) into {reader}"
                )
            }
            Notice::InsertIssued { holder, role, reader } => {
                write!(f, "insert the {role} card of holder {holder} into {reader}")
            }
            Notice::NotPending {
                station,
                card_number,
                member_number,
                reader,
            } => write!(
                f,
                "station {station}: card {card_number} (member number {}) in {reader} is no pending holder's \
                 main card; insert another",
                member_number.as_deref().unwrap_or("none")
            ),
        }
    }
}

/// What the stations report while they work, from their own threads.
#[derive(Debug, Clone)]
pub enum StationEvent<'a> {
    /// A station starts on a holder's card (`role`) or on the holder's pair.
    Started { holder: &'a str, role: Option<Role> },
    /// A station finished one step: a card when issuing.
    Finished,
    /// A station finished a holder's duplication (whatever its outcome): the
    /// caller reports it now, not only at the end of the batch.
    Duplicated(&'a super::duplicate::HolderDuplication),
    /// The operator is needed at a PC/SC station.
    Notice(Notice),
}

/// What every station of a batch shares from the terminal's settings.
pub struct StationEnv<'a> {
    /// How readers are opened (data directory for embedded cards, PC/SC options).
    pub readers: &'a ReaderOptions,
    /// How card sessions for the job itself are opened (trace).
    pub session: SessionOptions,
    /// The vault each station opens for its own audit records.
    pub vault: &'a Path,
    /// How long a PC/SC station waits for the next card.
    pub wait: Duration,
    /// Progress and operator notices, called from the station threads.
    pub events: &'a (dyn Fn(StationEvent<'_>) + Sync),
}

impl StationEnv<'_> {
    /// Open the reader `spec` names.
    pub fn open(&self, spec: &str) -> Result<Box<dyn Reader>> {
        crate::reader::open(Some(spec), self.readers)
    }

    /// Open the vault (each station thread has its own connection).
    pub fn vault(&self) -> Result<crate::vault::Vault> {
        crate::vault::Vault::open(self.vault)
    }

    pub fn emit(&self, e: StationEvent<'_>) {
        (self.events)(e)
    }
}

/// What the stations of one batch share: which holders are taken, which
/// cards were handled, and whether the batch stopped.
pub struct Batch {
    taken: Mutex<Vec<bool>>,
    handled: Mutex<HashSet<String>>,
    stop: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking station is reported by the runner; the others may finish.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Batch {
    fn new(holders: usize) -> Batch {
        Batch {
            taken: Mutex::new(vec![false; holders]),
            handled: Mutex::new(HashSet::new()),
            stop: AtomicBool::new(false),
        }
    }

    /// Take the first holder nobody has taken, in file order.
    pub fn take_next(&self) -> Option<usize> {
        let mut t = lock(&self.taken);
        let i = t.iter().position(|x| !x)?;
        t[i] = true;
        Some(i)
    }

    /// Take holder `i`; false if another station has it.
    pub fn take(&self, i: usize) -> bool {
        lock(&self.taken)
            .get_mut(i)
            .is_some_and(|t| !std::mem::replace(t, true))
    }

    pub fn all_taken(&self) -> bool {
        lock(&self.taken).iter().all(|x| *x)
    }

    /// Whether card `number` was handled in this batch (a PC/SC station waits for another).
    pub fn is_handled(&self, number: &str) -> bool {
        lock(&self.handled).contains(number)
    }

    pub fn mark_handled(&self, number: &str) {
        lock(&self.handled).insert(number.to_string());
    }

    /// Whether a station failed, or the operator interrupted the run, and
    /// the batch is stopping (each station finishes the holder it serves).
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst) || interrupted()
    }

    /// Stop the batch: every station finishes its current holder and takes
    /// no other (a failure every later card would meet too).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst)
    }
}

pub use crate::util::{interrupt, interrupted};

/// One station's work, made on the station's own thread (so it may hold a
/// vault connection). Each call takes a holder and serves it, returning the
/// holder's index and outcome, or `None` when the station has no more
/// holders. An error stops the station and the batch.
pub trait StationWork {
    type Outcome: Send;
    fn next(&mut self, batch: &Batch) -> Result<Option<(usize, Self::Outcome)>>;
}

impl<O: Send, F: FnMut(&Batch) -> Result<Option<(usize, O)>>> StationWork for F {
    type Outcome = O;
    fn next(&mut self, batch: &Batch) -> Result<Option<(usize, O)>> {
        self(batch)
    }
}

/// Run a batch of `holders` holders on `stations` in parallel: one thread per
/// station, each made ready by `start(station number from 1, station)` and
/// then asked for its next holder until it has none or the batch stopped.
/// The outcomes come back in holder order; a holder no station reached is
/// `None`. The first station failure is the batch's error; a station thread
/// that panicked is [`Error::Internal`].
pub fn run_stations<'s, S, W>(
    stations: &'s [S],
    holders: usize,
    start: impl Fn(usize, &'s S) -> Result<W> + Sync,
) -> Result<Vec<Option<W::Outcome>>>
where
    S: Sync,
    W: StationWork,
{
    let batch = Batch::new(holders);
    let outcomes: Mutex<Vec<Option<W::Outcome>>> = Mutex::new((0..holders).map(|_| None).collect());
    let serve = |number: usize, station: &'s S| -> Result<()> {
        let mut work = start(number, station)?;
        while !batch.stopped() {
            let Some((i, outcome)) = work.next(&batch)? else {
                break;
            };
            if let Some(slot) = lock(&outcomes).get_mut(i) {
                *slot = Some(outcome);
            }
        }
        Ok(())
    };
    let failures: Vec<Error> = std::thread::scope(|s| {
        let handles: Vec<_> = stations
            .iter()
            .enumerate()
            .map(|(n, station)| {
                let (batch, serve) = (&batch, &serve);
                s.spawn(move || {
                    let r = catch_unwind(AssertUnwindSafe(|| serve(n + 1, station)))
                        .unwrap_or_else(|panic| Err(panicked(n + 1, panic.as_ref())));
                    if r.is_err() {
                        batch.stop();
                    }
                    r
                })
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .filter_map(|(n, h)| {
                h.join()
                    .unwrap_or_else(|panic| Err(panicked(n + 1, panic.as_ref())))
                    .err()
            })
            .collect()
    });
    if let Some(e) = failures.into_iter().next() {
        return Err(e);
    }
    Ok(outcomes.into_inner().unwrap_or_else(PoisonError::into_inner))
}

/// The internal error for station `number`'s thread, which panicked.
fn panicked(number: usize, panic: &(dyn std::any::Any + Send)) -> Error {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    Error::Internal(format!("station {number}: its thread panicked ({what})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_come_back_in_holder_order_from_every_station() {
        let seen = Mutex::new(Vec::new());
        let out = run_stations(&[1, 2, 3], 10, |number, _| {
            let seen = &seen;
            Ok(move |batch: &Batch| {
                let Some(i) = batch.take_next() else {
                    return Ok(None);
                };
                seen.lock().unwrap().push(number);
                Ok(Some((i, i * 10)))
            })
        })
        .unwrap();
        assert_eq!(out, (0..10).map(|i| Some(i * 10)).collect::<Vec<_>>());
        assert_eq!(seen.into_inner().unwrap().len(), 10);
    }

    #[test]
    fn a_station_failure_stops_the_batch_and_is_its_error() {
        let r = run_stations(&[(), ()], 100, |number, _| {
            Ok(move |batch: &Batch| {
                let Some(i) = batch.take_next() else {
                    return Ok(None);
                };
                if number == 1 && i > 3 {
                    return Err(Error::Reader("reader gone".into()));
                }
                std::thread::sleep(Duration::from_millis(1));
                Ok(Some((i, ())))
            })
        });
        assert!(matches!(r, Err(Error::Reader(_))));
    }

    #[test]
    fn a_panicking_station_is_an_internal_error_with_exit_code_1() {
        let r = run_stations(&[(), ()], 4, |number, _| {
            Ok(move |batch: &Batch| -> Result<Option<(usize, ())>> {
                let Some(i) = batch.take_next() else {
                    return Ok(None);
                };
                if number == 2 {
                    panic!("card feeder jammed");
                }
                std::thread::sleep(Duration::from_millis(5));
                Ok(Some((i, ())))
            })
        });
        let e = r.expect_err("a panic is a failure");
        assert!(matches!(e, Error::Internal(_)), "{e:?}");
        assert_eq!(e.exit_code(), crate::error::exit::FAILURE);
        assert_eq!(e.kind(), "internal");
        assert!(e.to_string().contains("card feeder jammed"), "{e}");
    }

    #[test]
    fn a_holder_is_taken_once() {
        let b = Batch::new(2);
        assert!(b.take(1));
        assert!(!b.take(1));
        assert!(!b.take(7));
        assert_eq!(b.take_next(), Some(0));
        assert_eq!(b.take_next(), None);
        assert!(b.all_taken());
    }

    #[test]
    fn sources_from_reader_specs() {
        assert_eq!(CardSource::from_spec("sim:d"), CardSource::Sim { prefix: "d".into() });
        assert!(CardSource::from_spec("Virtual PCD 00 00").is_pcsc());
        let st = Station {
            main: Some(CardSource::from_spec("sim:a")),
            backup: None,
        };
        assert_eq!(st.source(Role::Backup), st.main.as_ref());
    }
}
