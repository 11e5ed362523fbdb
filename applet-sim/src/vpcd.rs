//! The vsmartcard `vpcd` socket protocol, card side.
//!
//! vpcd (the pcscd driver) listens; we connect. Every message is a 2-byte
//! big-endian length and a payload. A 1-byte payload is a control message
//! (00 power off, 01 power on, 02 reset, 04 get ATR); anything longer is a
//! command APDU, answered with a response APDU.
//!
//! A card comes and goes for pcscd only when its poller sees it: vpcd accepts
//! a connection inside its presence poll (GET ATR), and pcscd powers a card
//! up only when a poll finds the slot full after one that found it empty. A
//! simulator killed and started again between two polls (or while a
//! transmit on the dead connection is failing) is therefore never seen to
//! leave, and its new card is never powered: the reader stays empty for as
//! long as the new connection lives. So a new card session starts with the
//! slot seen empty once: the first presence poll of a connection that follows
//! a served one is answered by closing the connection, and the card is back
//! on the next poll, through a fresh connection ([`run`]).
//!
//! vpcd writes the length and the payload in two `send` calls. With delayed
//! ACKs the second one can wait ~40 ms, so the socket runs with TCP_NODELAY and
//! TCP_QUICKACK re-armed around every read (Linux clears QUICKACK by itself).

use crate::iso::Card;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Control messages from vpcd.
pub mod ctrl {
    pub const POWER_OFF: u8 = 0x00;
    pub const POWER_ON: u8 = 0x01;
    pub const RESET: u8 = 0x02;
    pub const GET_ATR: u8 = 0x04;
}

/// Largest payload the 2-byte length can carry.
pub const MAX_MESSAGE: usize = 0xFFFF;

fn quickack(stream: &TcpStream) {
    #[cfg(target_os = "linux")]
    {
        let one: libc::c_int = 1;
        // SAFETY: setsockopt on a socket we own, with a valid int option.
        unsafe {
            libc::setsockopt(
                stream.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_QUICKACK,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = stream.as_raw_fd();
}

/// Read one vpcd message into `buf`. `Ok(false)` on a clean end of stream.
pub fn read_message(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut len = [0u8; 2];
    quickack(stream);
    match stream.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
        Err(e) => return Err(e),
    }
    let n = u16::from_be_bytes(len) as usize;
    buf.resize(n, 0);
    quickack(stream);
    stream.read_exact(buf)?;
    quickack(stream);
    Ok(true)
}

/// Write one vpcd message (length and payload in a single write).
pub fn write_message(stream: &mut TcpStream, payload: &[u8], scratch: &mut Vec<u8>) -> io::Result<()> {
    if payload.len() > MAX_MESSAGE {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "vpcd message too long"));
    }
    scratch.clear();
    scratch.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    scratch.extend_from_slice(payload);
    stream.write_all(scratch)
}

/// Handle one message from vpcd; returns the payload to send back, if any.
pub fn handle_message(card: &mut Card, msg: &[u8], out: &mut Vec<u8>) -> bool {
    match msg {
        [ctrl::POWER_OFF] => {
            card.power_off();
            false
        }
        [ctrl::POWER_ON] => {
            card.power_on();
            false
        }
        [ctrl::RESET] => {
            card.reset();
            false
        }
        [ctrl::GET_ATR] => {
            out.clear();
            out.extend_from_slice(&card.atr());
            true
        }
        [_] | [] => false, // unknown control message: ignore, as vicc does
        apdu => {
            card.transmit_into(apdu, out);
            true
        }
    }
}

/// Serve one connection until it closes or fails.
pub fn serve_connection(card: &mut Card, stream: TcpStream, stop: &AtomicBool) -> io::Result<()> {
    serve_session(card, stream, stop, false).map(|_| ())
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// The first message was a presence poll, answered by closing: vpcd
    /// reports the slot empty once.
    AbsenceShown,
    /// The connection carried a card session until it closed.
    Session,
}

/// Serve one connection; with `show_absence`, a presence poll (GET ATR) as
/// its first message closes it instead (see the module documentation).
pub fn serve_session(
    card: &mut Card,
    mut stream: TcpStream,
    stop: &AtomicBool,
    show_absence: bool,
) -> io::Result<Served> {
    let mut first = true;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    let mut msg = Vec::with_capacity(MAX_MESSAGE);
    let mut out = Vec::with_capacity(MAX_MESSAGE);
    let mut scratch = Vec::with_capacity(MAX_MESSAGE + 2);
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(Served::Session);
        }
        match read_message(&mut stream, &mut msg) {
            Ok(true) => {}
            Ok(false) => return Ok(Served::Session),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                // An idle timeout between messages is not an error. A timeout in
                // the middle of one leaves the stream out of step: reconnect.
                if msg.is_empty() {
                    continue;
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        }
        if std::mem::take(&mut first) && show_absence && msg[..] == [ctrl::GET_ATR] {
            return Ok(Served::AbsenceShown);
        }
        if handle_message(card, &msg, &mut out) {
            write_message(&mut stream, &out, &mut scratch)?;
        }
        msg.clear();
    }
}

/// Connect to vpcd at `addr` and serve `card` for ever, reconnecting when
/// pcscd restarts, until `stop` is set.
///
/// Every card session (the first connection, and each after one that carried
/// a session) begins by showing vpcd an empty slot once; the card is back
/// through the next connection, which follows at once.
pub fn run(card: &mut Card, addr: &str, stop: Arc<AtomicBool>, log: impl Fn(&str)) {
    let mut announced_wait = false;
    let mut show_absence = true;
    while !stop.load(Ordering::Relaxed) {
        match TcpStream::connect(addr) {
            Ok(stream) => {
                announced_wait = false;
                log(&format!(
                    "connected to vpcd at {addr}, card {}",
                    card.state().card_number
                ));
                card.power_off();
                let served = serve_session(card, stream, &stop, show_absence);
                card.power_off();
                match served {
                    Ok(Served::AbsenceShown) => {
                        log(&format!("vpcd at {addr} saw the slot empty; inserting the card"));
                        show_absence = false;
                        // vpcd polls again within its polling interval: be there.
                        continue;
                    }
                    Ok(Served::Session) => log(&format!("vpcd at {addr} closed the connection; reconnecting")),
                    Err(e) => log(&format!("vpcd at {addr}: {e}; reconnecting")),
                }
                show_absence = true;
            }
            Err(e) => {
                if !announced_wait {
                    log(&format!("waiting for vpcd at {addr} ({e})"));
                    announced_wait = true;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
