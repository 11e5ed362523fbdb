//! PC/SC readers (real readers and vpcd virtual readers) through the `pcsc` crate.

use super::{Caps, Reader, Transmit, TransportError};
use crate::error::{Error, Result};
use ::pcsc::{Card, Context, Protocols, Scope, ShareMode, MAX_BUFFER_SIZE_EXTENDED};
use std::ffi::CString;
use std::sync::mpsc;
use std::time::Duration;
use zeroize::Zeroizing;

/// A PC/SC reader as listed by the service.
#[derive(Debug, Clone)]
pub struct PcscReaderInfo {
    pub name: String,
    pub card_present: bool,
    pub atr: Option<Vec<u8>>,
}

/// Connect to the PC/SC service.
pub fn context() -> Result<Context> {
    Context::establish(Scope::User).map_err(|e| Error::NoPcsc(e.to_string()))
}

/// List readers with card presence and ATR. No service or no readers gives an empty list
/// only for "no readers"; a missing service is an error.
pub fn list(ctx: &Context) -> Result<Vec<PcscReaderInfo>> {
    let names = match ctx.list_readers_owned() {
        Ok(n) => n,
        Err(::pcsc::Error::NoReadersAvailable) => return Ok(vec![]),
        Err(e) => return Err(Error::NoPcsc(e.to_string())),
    };
    let mut states: Vec<::pcsc::ReaderState> = names
        .iter()
        .map(|n| ::pcsc::ReaderState::new(n.clone(), ::pcsc::State::UNAWARE))
        .collect();
    if !states.is_empty() {
        ctx.get_status_change(std::time::Duration::from_millis(0), &mut states)
            .or_else(|e| if e == ::pcsc::Error::Timeout { Ok(()) } else { Err(e) })
            .map_err(|e| Error::NoPcsc(e.to_string()))?;
    }
    Ok(states
        .iter()
        .map(|s| {
            let present =
                s.event_state().contains(::pcsc::State::PRESENT) && !s.event_state().contains(::pcsc::State::MUTE);
            PcscReaderInfo {
                name: s.name().to_string_lossy().into_owned(),
                card_present: present,
                atr: (present && !s.atr().is_empty()).then(|| s.atr().to_vec()),
            }
        })
        .collect())
}

/// A connected PC/SC card.
pub struct PcscReader {
    name: String,
    link: Link,
    atr: Vec<u8>,
    caps: Caps,
}

/// How transmits reach the card: on the caller's thread with no time limit,
/// or on a thread of their own that the caller stops waiting for after the
/// APDU timeout.
enum Link {
    Direct {
        card: Card,
        // Keeps the service context alive for the card handle.
        _ctx: Context,
    },
    Timed(Timed),
}

impl PcscReader {
    /// Connect (shared mode, T=0 or T=1) to the card in reader `name`.
    pub fn connect(ctx: Context, name: &str, extended: Option<bool>) -> Result<PcscReader> {
        let cname = CString::new(name).map_err(|_| Error::Reader(format!("bad reader name '{name}'")))?;
        let card = ctx
            .connect(&cname, ShareMode::Shared, Protocols::ANY)
            .map_err(|e| match e {
                ::pcsc::Error::NoSmartcard | ::pcsc::Error::RemovedCard => Error::NoCard(name.to_string()),
                ::pcsc::Error::UnknownReader => Error::Reader(format!("reader '{name}' is gone")),
                ::pcsc::Error::SharingViolation => {
                    Error::Reader(format!("reader '{name}' is in exclusive use by another application"))
                }
                other => Error::Pcsc {
                    reader: name.to_string(),
                    doing: "connecting",
                    source: other,
                },
            })?;
        let atr = card
            .status2_owned()
            .map_err(|e| pcsc_err(name, "reading the ATR", e))?
            .atr()
            .to_vec();
        let from_atr = super::atr::card_capabilities(&atr).map(|(_, ext)| ext).unwrap_or(false);
        Ok(PcscReader {
            name: name.to_string(),
            link: Link::Direct { card, _ctx: ctx },
            atr,
            caps: Caps {
                extended: extended.unwrap_or(from_atr),
            },
        })
    }

    /// Give up on an APDU the card has not answered within `timeout`
    /// ([`TransportError::Timeout`]). PC/SC has no such limit of its own (pcscd
    /// and the vpcd driver wait for ever), so the card moves to a thread of its
    /// own and the caller waits for that thread at most `timeout` per APDU. A
    /// thread left waiting on a silent card is abandoned; every later call on
    /// this reader fails at once. Beginning a transaction is not timed: it
    /// waits, as PC/SC does, for another application to finish with the card.
    pub fn with_timeout(self, timeout: Duration) -> PcscReader {
        let PcscReader { name, link, atr, caps } = self;
        let link = match link {
            Link::Direct { card, _ctx } => Link::Timed(Timed::start(card, _ctx, timeout)),
            timed => timed,
        };
        PcscReader { name, link, atr, caps }
    }
}

/// A request to the card's thread.
enum Job {
    Begin,
    Transmit(Zeroizing<Vec<u8>>),
    End,
}

type JobResult = Result<Zeroizing<Vec<u8>>, ::pcsc::Error>;

/// The card on a thread of its own, with a time limit per transmit.
struct Timed {
    jobs: Option<mpsc::Sender<Job>>,
    results: mpsc::Receiver<JobResult>,
    timeout: Duration,
    thread: Option<std::thread::JoinHandle<()>>,
    /// A transmit was given up on: the thread may still be waiting for the card.
    abandoned: bool,
}

impl Timed {
    fn start(card: Card, ctx: Context, timeout: Duration) -> Timed {
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let (result_tx, results) = mpsc::channel::<JobResult>();
        let thread = std::thread::Builder::new()
            .name("pcsc-card".into())
            .spawn(move || card_thread(card, ctx, job_rx, result_tx))
            .ok();
        Timed {
            jobs: Some(jobs),
            results,
            timeout,
            thread,
            abandoned: false,
        }
    }

    /// Send `job` and wait for its result (at most the timeout when `timed`).
    fn call(&mut self, job: Job, timed: bool) -> Result<Zeroizing<Vec<u8>>, TransportError> {
        if self.abandoned {
            return Err(TransportError::Timeout(self.timeout));
        }
        let sent = self.jobs.as_ref().map(|j| j.send(job).is_ok()).unwrap_or(false);
        if !sent {
            return Err(TransportError::CardRemoved);
        }
        let r = if timed {
            self.results.recv_timeout(self.timeout).map_err(|e| match e {
                mpsc::RecvTimeoutError::Timeout => None,
                mpsc::RecvTimeoutError::Disconnected => Some(()),
            })
        } else {
            self.results.recv().map_err(|_| Some(()))
        };
        match r {
            Ok(r) => r.map_err(map_tx_err),
            Err(None) => {
                self.abandoned = true;
                Err(TransportError::Timeout(self.timeout))
            }
            Err(Some(())) => Err(TransportError::CardRemoved),
        }
    }
}

impl Drop for Timed {
    fn drop(&mut self) {
        // Closing the queue ends the thread, which disconnects the card; wait
        // for that unless the thread is stuck with a silent card.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            if !self.abandoned {
                let _ = t.join();
            }
        }
    }
}

/// The card's thread: transactions and transmits, one job at a time.
fn card_thread(card: Card, ctx: Context, jobs: mpsc::Receiver<Job>, results: mpsc::Sender<JobResult>) {
    let mut buf = Zeroizing::new(vec![0u8; MAX_BUFFER_SIZE_EXTENDED]);
    let mut transmit = |tx: &::pcsc::Transaction<'_>, cmd: &[u8]| -> JobResult {
        tx.transmit(cmd, &mut buf).map(|r| Zeroizing::new(r.to_vec()))
    };
    let mut card = card;
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Begin => match card.transaction() {
                Err(e) => {
                    let _ = results.send(Err(e));
                }
                Ok(tx) => {
                    let _ = results.send(Ok(Zeroizing::new(Vec::new())));
                    while let Ok(job) = jobs.recv() {
                        match job {
                            Job::Transmit(cmd) => {
                                let _ = results.send(transmit(&tx, &cmd));
                            }
                            Job::End => break,
                            Job::Begin => {
                                let _ = results.send(Err(::pcsc::Error::InvalidHandle));
                            }
                        }
                    }
                }
            },
            Job::Transmit(_) | Job::End => {
                let _ = results.send(Err(::pcsc::Error::NotTransacted));
            }
        }
    }
    drop(card);
    drop(ctx);
}

fn pcsc_err(reader: &str, doing: &'static str, e: ::pcsc::Error) -> Error {
    match e {
        ::pcsc::Error::RemovedCard | ::pcsc::Error::NoSmartcard | ::pcsc::Error::ReaderUnavailable => {
            Error::CardRemoved(reader.to_string())
        }
        other => Error::Pcsc {
            reader: reader.to_string(),
            doing,
            source: other,
        },
    }
}

impl Reader for PcscReader {
    fn name(&self) -> &str {
        &self.name
    }

    fn atr(&self) -> &[u8] {
        &self.atr
    }

    fn caps(&self) -> Caps {
        self.caps
    }

    fn transaction(&mut self) -> Result<Box<dyn Transmit + '_>, TransportError> {
        match &mut self.link {
            Link::Direct { card, .. } => {
                let tx = card.transaction().map_err(map_tx_err)?;
                Ok(Box::new(PcscTransaction {
                    tx,
                    buf: vec![0u8; MAX_BUFFER_SIZE_EXTENDED],
                }))
            }
            Link::Timed(timed) => {
                timed.call(Job::Begin, false)?;
                Ok(Box::new(TimedTransaction(timed)))
            }
        }
    }
}

/// A transaction on the card's thread; ended when dropped.
struct TimedTransaction<'a>(&'a mut Timed);

impl Transmit for TimedTransaction<'_> {
    fn transmit(&mut self, cmd: &[u8], resp: &mut Vec<u8>) -> Result<(), TransportError> {
        let r = self.0.call(Job::Transmit(Zeroizing::new(cmd.to_vec())), true)?;
        if r.is_empty() {
            return Err(TransportError::CardRemoved);
        }
        resp.clear();
        resp.extend_from_slice(&r);
        Ok(())
    }
}

impl Drop for TimedTransaction<'_> {
    fn drop(&mut self) {
        if !self.0.abandoned {
            if let Some(j) = &self.0.jobs {
                let _ = j.send(Job::End);
            }
        }
    }
}

fn map_tx_err(e: ::pcsc::Error) -> TransportError {
    match e {
        // A card pulled (or a simulator killed) mid-transaction shows up as any of
        // these, depending on when pcscd noticed.
        ::pcsc::Error::RemovedCard
        | ::pcsc::Error::NoSmartcard
        | ::pcsc::Error::ReaderUnavailable
        | ::pcsc::Error::NotTransacted
        | ::pcsc::Error::UnpoweredCard
        | ::pcsc::Error::UnresponsiveCard => TransportError::CardRemoved,
        ::pcsc::Error::ResetCard => TransportError::CardReset,
        other => TransportError::Pcsc(other),
    }
}

struct PcscTransaction<'a> {
    tx: ::pcsc::Transaction<'a>,
    buf: Vec<u8>,
}

impl Transmit for PcscTransaction<'_> {
    fn transmit(&mut self, cmd: &[u8], resp: &mut Vec<u8>) -> Result<(), TransportError> {
        let r = self.tx.transmit(cmd, &mut self.buf).map_err(map_tx_err)?;
        if r.is_empty() {
            // Some drivers (vpcd among them) report a vanished card as an empty answer.
            return Err(TransportError::CardRemoved);
        }
        resp.clear();
        resp.extend_from_slice(r);
        Ok(())
    }
}

impl Drop for PcscTransaction<'_> {
    fn drop(&mut self) {
        // Zeroize the receive buffer: it may have carried key material.
        zeroize::Zeroize::zeroize(&mut self.buf);
    }
}
