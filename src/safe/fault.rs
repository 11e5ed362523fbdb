//! Fault injection for the safe, as `transport::fault` is for the card: a
//! safe that fails at the k-th request, either before the request reaches
//! it ([`SafeFault::RequestLost`]) or after it committed and answered, the
//! answer lost on the way back ([`SafeFault::AnswerLost`]). Either way the
//! terminal sees an unreachable safe, and later requests go through (the
//! safe came back). A hook runs when the fault fires (a test kills a real
//! `safe serve` process there).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Where the k-th request fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SafeFault {
    RequestLost,
    AnswerLost,
}

/// When to fail: the request number (1-based; `u64::MAX` never) and how.
pub struct SafeFaultSchedule {
    at: u64,
    mode: SafeFault,
    calls: AtomicU64,
    fired: AtomicBool,
    hook: Option<Box<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for SafeFaultSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafeFaultSchedule")
            .field("at", &self.at)
            .field("mode", &self.mode)
            .field("calls", &self.calls)
            .finish_non_exhaustive()
    }
}

impl SafeFaultSchedule {
    pub fn new(at: u64, mode: SafeFault) -> Arc<SafeFaultSchedule> {
        Arc::new(SafeFaultSchedule {
            at,
            mode,
            calls: AtomicU64::new(0),
            fired: AtomicBool::new(false),
            hook: None,
        })
    }

    /// Fail at request `at`, running `hook` first (before the request for
    /// [`SafeFault::RequestLost`], after the answer for [`SafeFault::AnswerLost`]).
    pub fn with_hook(at: u64, mode: SafeFault, hook: impl Fn() + Send + Sync + 'static) -> Arc<SafeFaultSchedule> {
        Arc::new(SafeFaultSchedule {
            at,
            mode,
            calls: AtomicU64::new(0),
            fired: AtomicBool::new(false),
            hook: Some(Box::new(hook)),
        })
    }

    /// A schedule that only counts.
    pub fn counting() -> Arc<SafeFaultSchedule> {
        SafeFaultSchedule::new(u64::MAX, SafeFault::RequestLost)
    }

    /// Requests made so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    /// Count a request; its fault, if this is the one.
    pub(crate) fn next(&self) -> Option<SafeFault> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        (n == self.at).then(|| {
            self.fired.store(true, Ordering::SeqCst);
            self.mode
        })
    }

    pub(crate) fn run_hook(&self) {
        if let Some(h) = &self.hook {
            h();
        }
    }
}
