//! A hostile card behind vpcd: a test-only vpcd peer whose answers the test
//! chooses, in front of a genuine simulated card it can forward to. Through
//! the test's private pcscd, cardvault sees it as any card in a reader.

use applet_sim::vpcd::{handle_message, read_message, write_message};
use applet_sim::{Card, Profile};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What the hostile card does with one command APDU.
pub enum Reply {
    /// Answer these bytes (data and status word).
    Bytes(Vec<u8>),
    /// Let the genuine card answer.
    Genuine,
    /// Never answer: the connection stays open and silent.
    Silence,
}

/// A running hostile card; stops (and closes its connection) when dropped.
pub struct VpcdPeer {
    stop: Arc<AtomicBool>,
    apdus: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl VpcdPeer {
    /// Connect to vpcd at `addr` and answer every APDU with `reply(apdu)`,
    /// in front of a fresh in-memory card of `profile`.
    pub fn start(addr: &str, profile: &str, reply: impl FnMut(&[u8]) -> Reply + Send + 'static) -> VpcdPeer {
        VpcdPeer::start_card(addr, Card::in_memory(&Profile::load(profile).unwrap()), reply)
    }

    /// As [`VpcdPeer::start`], in front of `card` (for example a card whose
    /// applet is hostile inside a correct secure channel).
    pub fn start_card(addr: &str, card: Card, reply: impl FnMut(&[u8]) -> Reply + Send + 'static) -> VpcdPeer {
        let stop = Arc::new(AtomicBool::new(false));
        let apdus = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, apdus, addr) = (stop.clone(), apdus.clone(), addr.to_string());
            std::thread::spawn(move || serve(&addr, card, reply, &stop, &apdus))
        };
        VpcdPeer {
            stop,
            apdus,
            thread: Some(thread),
        }
    }

    /// Command APDUs the card received so far.
    pub fn apdus(&self) -> u64 {
        self.apdus.load(Ordering::SeqCst)
    }
}

impl Drop for VpcdPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(addr: &str, mut card: Card, mut reply: impl FnMut(&[u8]) -> Reply, stop: &AtomicBool, apdus: &AtomicU64) {
    let mut stream = loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match TcpStream::connect(addr) {
            Ok(s) => break s,
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let (mut msg, mut out, mut scratch) = (Vec::new(), Vec::new(), Vec::new());
    let mut silent = false;
    while !stop.load(Ordering::SeqCst) {
        if silent {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        msg.clear();
        match read_message(&mut stream, &mut msg) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if msg.is_empty() {
                    continue;
                }
                return;
            }
            Err(_) => return,
        }
        if msg.len() <= 1 {
            // Control messages (power, reset, GET ATR): the genuine card's answer.
            if handle_message(&mut card, &msg, &mut out) {
                let _ = write_message(&mut stream, &out, &mut scratch);
            }
            continue;
        }
        apdus.fetch_add(1, Ordering::SeqCst);
        match reply(&msg) {
            Reply::Bytes(b) => {
                let _ = write_message(&mut stream, &b, &mut scratch);
            }
            Reply::Genuine => {
                if handle_message(&mut card, &msg, &mut out) {
                    let _ = write_message(&mut stream, &out, &mut scratch);
                }
            }
            Reply::Silence => silent = true,
        }
    }
}
