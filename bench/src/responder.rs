//! A minimal vpcd card, the floor for the simulator's cost: it connects to the
//! vpcd port like applet-sim, answers the ATR poll, and answers every APDU
//! with `9000` at once. Same socket handling as applet-sim (TCP_NODELAY, one
//! write per answer, TCP_QUICKACK re-armed around every read), no card logic.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

const GET_ATR: u8 = 0x04;

/// The responder thread; stopped (and its connection closed) when dropped.
pub struct Responder {
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

fn quickack(s: &TcpStream) {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own, with a valid int option.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            &one as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

impl Responder {
    /// Serve a card on the vpcd port `addr` (e.g. `127.0.0.1:35964`), reconnecting
    /// until dropped.
    pub fn start(addr: &str) -> Responder {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicU64::new(0));
        let (st, n, addr) = (stop.clone(), answered.clone(), addr.to_string());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                if let Ok(s) = TcpStream::connect(&addr) {
                    let _ = serve(s, &st, &n);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Responder {
            stop,
            answered,
            thread: Some(thread),
        }
    }

    /// APDUs answered so far.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut s: TcpStream, stop: &AtomicBool, answered: &AtomicU64) -> io::Result<()> {
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_millis(200)))?;
    let atr = applet_sim::iso::atr(true);
    let mut atr_msg = (atr.len() as u16).to_be_bytes().to_vec();
    atr_msg.extend_from_slice(&atr);
    let ok = [0x00, 0x02, 0x90, 0x00];
    let mut buf = vec![0u8; 0xFFFF];
    let mut len = [0u8; 2];
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        quickack(&s);
        // Wait for the first byte with a timeout, so that a stop is noticed.
        match s.read(&mut len[..1]) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
            Err(e) => return Err(e),
        }
        s.read_exact(&mut len[1..])?;
        let n = u16::from_be_bytes(len) as usize;
        quickack(&s);
        s.read_exact(&mut buf[..n])?;
        quickack(&s);
        match &buf[..n] {
            [GET_ATR] => s.write_all(&atr_msg)?,
            [_] | [] => {} // power on, power off, reset: no answer
            _ => {
                s.write_all(&ok)?;
                answered.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
