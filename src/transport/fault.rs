//! Fault injection: a reader whose card is pulled at a chosen APDU.
//!
//! Several readers can share one [`PullSchedule`], so "the k-th APDU" counts
//! across every card a workflow talks to. The k-th APDU is either delivered
//! and its answer lost ([`PullMode::AnswerLost`]), or never delivered
//! ([`PullMode::NotDelivered`]); every APDU after it fails as a removed card.

use super::{Caps, Reader, Transmit, TransportError};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// How the card leaves at the chosen APDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullMode {
    /// The card processes the APDU, then is pulled before the answer arrives.
    AnswerLost,
    /// The card is pulled just before the APDU would reach it.
    NotDelivered,
}

/// When to pull: shared by all readers of one workflow run.
#[derive(Debug)]
pub struct PullSchedule {
    at: u64,
    mode: PullMode,
    sent: AtomicU64,
    pulled: AtomicBool,
}

impl PullSchedule {
    /// Pull at APDU number `at` (1-based); `u64::MAX` never pulls.
    pub fn new(at: u64, mode: PullMode) -> Arc<PullSchedule> {
        Arc::new(PullSchedule {
            at,
            mode,
            sent: AtomicU64::new(0),
            pulled: AtomicBool::new(false),
        })
    }

    /// A schedule that only counts.
    pub fn counting() -> Arc<PullSchedule> {
        PullSchedule::new(u64::MAX, PullMode::AnswerLost)
    }

    /// APDUs that reached a card.
    pub fn delivered(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    pub fn pulled(&self) -> bool {
        self.pulled.load(Ordering::SeqCst)
    }
}

/// A reader wrapper that pulls the card per the schedule.
pub struct FaultyReader<R: Reader> {
    inner: R,
    schedule: Arc<PullSchedule>,
}

impl<R: Reader> FaultyReader<R> {
    pub fn new(inner: R, schedule: Arc<PullSchedule>) -> FaultyReader<R> {
        FaultyReader { inner, schedule }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Reader> Reader for FaultyReader<R> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn atr(&self) -> &[u8] {
        self.inner.atr()
    }
    fn caps(&self) -> Caps {
        self.inner.caps()
    }
    fn built_in_root(&self) -> Option<&'static [u8]> {
        self.inner.built_in_root()
    }

    fn built_in_factory_root(&self) -> Option<&'static [u8]> {
        self.inner.built_in_factory_root()
    }

    fn built_in_issuer(&self) -> Option<super::BuiltInIssuer> {
        self.inner.built_in_issuer()
    }

    fn transaction(&mut self) -> Result<Box<dyn Transmit + '_>, TransportError> {
        if self.schedule.pulled() {
            return Err(TransportError::CardRemoved);
        }
        let schedule = self.schedule.clone();
        let tx = self.inner.transaction()?;
        Ok(Box::new(FaultyTransmit { tx, schedule }))
    }
}

struct FaultyTransmit<'a> {
    tx: Box<dyn Transmit + 'a>,
    schedule: Arc<PullSchedule>,
}

impl Transmit for FaultyTransmit<'_> {
    fn transmit(&mut self, cmd: &[u8], resp: &mut Vec<u8>) -> Result<(), TransportError> {
        let s = &self.schedule;
        if s.pulled() {
            return Err(TransportError::CardRemoved);
        }
        let n = s.sent.load(Ordering::SeqCst) + 1;
        if n == s.at {
            s.pulled.store(true, Ordering::SeqCst);
            if s.mode == PullMode::AnswerLost {
                s.sent.store(n, Ordering::SeqCst);
                let _ = self.tx.transmit(cmd, resp);
                resp.clear();
            }
            return Err(TransportError::CardRemoved);
        }
        s.sent.store(n, Ordering::SeqCst);
        self.tx.transmit(cmd, resp)
    }
}
