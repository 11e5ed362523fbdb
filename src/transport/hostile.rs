//! A hostile card: a reader whose card answers what the test or the fuzzer
//! chooses. Each command APDU goes to a closure, which returns the answer
//! (data and status word) or lets the genuine card behind it answer. The
//! reader counts what the terminal sent and received, so that a test can
//! assert that a bad card drove only a bounded number of rounds and bytes.
//!
//! Like [`super::fault::FaultyReader`], it wraps any reader (usually an
//! embedded simulated card) and is invisible to the layers above.

use super::{Caps, Reader, Transmit, TransportError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The hostile card's answer to one command APDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// These bytes (response data and status word, or anything at all).
    Reply(Vec<u8>),
    /// What the genuine card behind answers.
    Genuine,
}

/// What the terminal sent to and received from the hostile card, over every
/// session on one reader (or several readers sharing it).
#[derive(Debug, Default)]
pub struct Seen {
    apdus: AtomicU64,
    bytes_out: AtomicU64,
    bytes_in: AtomicU64,
    largest_answer: AtomicU64,
}

impl Seen {
    pub fn new() -> Arc<Seen> {
        Arc::new(Seen::default())
    }
    /// Command APDUs the terminal sent.
    pub fn apdus(&self) -> u64 {
        self.apdus.load(Ordering::SeqCst)
    }
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Ordering::SeqCst)
    }
    /// Response bytes (status words included) the terminal received.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in.load(Ordering::SeqCst)
    }
    pub fn largest_answer(&self) -> u64 {
        self.largest_answer.load(Ordering::SeqCst)
    }
}

/// A reader whose card answers through `answer`.
pub struct HostileReader<R: Reader, F: FnMut(&[u8]) -> Answer> {
    inner: R,
    answer: F,
    seen: Arc<Seen>,
}

impl<R: Reader, F: FnMut(&[u8]) -> Answer> HostileReader<R, F> {
    pub fn new(inner: R, seen: Arc<Seen>, answer: F) -> HostileReader<R, F> {
        HostileReader { inner, answer, seen }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Reader, F: FnMut(&[u8]) -> Answer> Reader for HostileReader<R, F> {
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
        let tx = self.inner.transaction()?;
        Ok(Box::new(HostileTransmit {
            tx,
            answer: &mut self.answer,
            seen: self.seen.clone(),
        }))
    }
}

struct HostileTransmit<'a, F> {
    tx: Box<dyn Transmit + 'a>,
    answer: &'a mut F,
    seen: Arc<Seen>,
}

impl<F: FnMut(&[u8]) -> Answer> Transmit for HostileTransmit<'_, F> {
    fn transmit(&mut self, cmd: &[u8], resp: &mut Vec<u8>) -> Result<(), TransportError> {
        match (self.answer)(cmd) {
            Answer::Reply(bytes) => *resp = bytes,
            Answer::Genuine => self.tx.transmit(cmd, resp)?,
        }
        let s = &self.seen;
        s.apdus.fetch_add(1, Ordering::SeqCst);
        s.bytes_out.fetch_add(cmd.len() as u64, Ordering::SeqCst);
        s.bytes_in.fetch_add(resp.len() as u64, Ordering::SeqCst);
        s.largest_answer.fetch_max(resp.len() as u64, Ordering::SeqCst);
        Ok(())
    }
}

/// Answers a hostile card gives, by class: the cases of the terminal's
/// hostile-card tests and the seeds of its fuzz target.
pub mod answers {
    /// `levels` constructed data objects, each holding the next, in `E1`
    /// templates (the 64 KiB answer is 16 000 levels).
    pub fn nested_templates(levels: usize) -> Vec<u8> {
        let mut v = vec![0xE1, 0x00];
        for _ in 1..levels {
            let n = v.len() as u16;
            let mut outer = vec![0xE1, 0x82];
            outer.extend_from_slice(&n.to_be_bytes());
            outer.extend_from_slice(&v);
            v = outer;
        }
        v
    }

    /// `data` followed by status word `sw`.
    pub fn with_sw(data: &[u8], sw: u16) -> Vec<u8> {
        let mut v = data.to_vec();
        v.extend_from_slice(&sw.to_be_bytes());
        v
    }
}
