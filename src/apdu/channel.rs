//! The channel: sends a [`Command`] over a transaction in the best encoding
//! the reader path allows, and collects the whole response.
//!
//! - extended length when the reader and card accept it, otherwise short
//!   APDUs with command chaining (CLA bit 0x10) for data over 255 bytes;
//! - `61xx` answered with GET RESPONSE until the data is complete;
//! - `6Cxx` answered by re-sending the command once with the exact Le.
//!
//! The card is untrusted: every loop and allocation its answers drive is
//! bounded ([`MAX_RESPONSE`] bytes, [`MAX_GET_RESPONSE_ROUNDS`] rounds, one
//! `6Cxx` re-send, a GET RESPONSE answer that brings no data while it
//! announces more is refused at once).
//!
//! With `--trace` every APDU is printed to stderr with its timing and the
//! decoded status word; secret command data is masked.

use super::{Command, StatusWord};
use crate::error::{Error, Result};
use crate::transport::{Caps, Transmit, TransportError};
use cardvault_proto::{cla, to_hex};
use std::ops::Range;
use std::time::Instant;

/// Largest response data the channel accepts for one command: Ne is at most
/// 65 536, no cardvault command returns more, and secure messaging adds at
/// most a padding block (16) and the R-MAC (8). A card offering more (in one
/// answer or over GET RESPONSE rounds) is refused before it is stored.
pub const MAX_RESPONSE: usize = 65536 + 16 + 8;

/// Most GET RESPONSE rounds for one command: the largest answer in 256-byte
/// parts (256 rounds), and a few to spare. A card that keeps answering `61xx`
/// (with or without data) is refused after this many.
pub const MAX_GET_RESPONSE_ROUNDS: u32 = 260;

/// A complete response: data and the final status word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub data: Vec<u8>,
    pub sw: StatusWord,
}

/// APDU and byte counts, for benchmarks and reports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub apdus: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
}

/// A channel to one card for the length of one transaction.
pub struct Channel<'a> {
    tx: Box<dyn Transmit + 'a>,
    caps: Caps,
    trace: bool,
    reader: String,
    cmd_buf: Vec<u8>,
    resp_buf: Vec<u8>,
    stats: Stats,
    /// The command being answered returns secret data: mask its GET RESPONSE parts too.
    secret_response: bool,
}

/// Where the data field sits in an encoded command APDU, if it has one.
/// Bytes that fit no ISO case are shown from byte 5 on, so that a malformed
/// secret command is still masked.
pub fn data_range(raw: &[u8]) -> Option<Range<usize>> {
    match raw.len() {
        0..=5 => None,
        _ if raw[4] != 0 => {
            let end = (5 + raw[4] as usize).min(raw.len());
            Some(5..end)
        }
        6 => Some(5..6), // 00 and one byte: no valid encoding
        7 => None,       // extended case 2
        _ => {
            let lc = u16::from_be_bytes([raw[5], raw[6]]) as usize;
            Some(7..(7 + lc).min(raw.len()))
        }
    }
}

/// A command APDU as upper-case hex, with the data field masked when secret.
pub fn format_command(raw: &[u8], secret: bool) -> String {
    match (secret, data_range(raw)) {
        (true, Some(r)) => {
            let mut s = format!(
                "{} <{} secret bytes masked>",
                to_hex(&raw[..r.start]).to_uppercase(),
                r.len()
            );
            if r.end < raw.len() {
                s.push(' ');
                s.push_str(&to_hex(&raw[r.end..]).to_uppercase());
            }
            s
        }
        _ => to_hex(raw).to_uppercase(),
    }
}

/// Whether a raw command APDU carries secret data.
pub fn raw_is_secret(raw: &[u8]) -> bool {
    raw.len() >= 2 && cardvault_proto::command_data_is_secret(raw[0], raw[1])
}

impl<'a> Channel<'a> {
    pub fn new(tx: Box<dyn Transmit + 'a>, caps: Caps, reader: &str, trace: bool) -> Channel<'a> {
        Channel {
            tx,
            caps,
            trace,
            reader: reader.to_string(),
            cmd_buf: Vec::with_capacity(512),
            resp_buf: Vec::with_capacity(512),
            stats: Stats::default(),
            secret_response: false,
        }
    }

    pub fn caps(&self) -> Caps {
        self.caps
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    pub fn reader(&self) -> &str {
        &self.reader
    }

    /// Send exactly the bytes in `self.cmd_buf`; the response lands in `self.resp_buf`.
    fn exchange(&mut self, secret: bool) -> Result<StatusWord> {
        // Secret answers stay masked across the GET RESPONSE parts that carry them.
        let secret_response = self.secret_response
            || (self.cmd_buf.len() >= 2 && cardvault_proto::response_data_is_secret(self.cmd_buf[0], self.cmd_buf[1]));
        let start = self.trace.then(Instant::now);
        let r = self.tx.transmit(&self.cmd_buf, &mut self.resp_buf);
        if let Err(e) = r {
            if self.trace {
                self.trace_command(secret);
                eprintln!("< ({e})");
            }
            return Err(match e {
                TransportError::CardRemoved | TransportError::CardReset => Error::CardRemoved(self.reader.clone()),
                TransportError::Timeout(limit) => Error::CardTimeout {
                    reader: self.reader.clone(),
                    secs: limit.as_secs_f64(),
                },
                TransportError::Pcsc(source) => Error::Pcsc {
                    reader: self.reader.clone(),
                    doing: "transmitting",
                    source,
                },
            });
        }
        self.stats.apdus += 1;
        self.stats.bytes_out += self.cmd_buf.len() as u64;
        self.stats.bytes_in += self.resp_buf.len() as u64;
        let n = self.resp_buf.len();
        if n < 2 {
            return Err(Error::Malformed {
                command: "APDU",
                reason: format!("response of {n} bytes has no status word"),
            });
        }
        if n > MAX_RESPONSE + 2 {
            return Err(Error::Malformed {
                command: "APDU",
                reason: format!("one answer of {} data bytes, more than any command returns", n - 2),
            });
        }
        let sw = StatusWord::from_bytes(self.resp_buf[n - 2], self.resp_buf[n - 1]);
        if let Some(start) = start {
            self.trace_command(secret);
            let ms = start.elapsed().as_secs_f64() * 1000.0;
            let data = if secret_response && n > 2 {
                format!("<{} secret bytes masked>", n - 2)
            } else {
                to_hex(&self.resp_buf[..n - 2]).to_uppercase()
            };
            let sep = if data.is_empty() { "" } else { " " };
            eprintln!("< {data}{sep}{sw}  [{ms:.3} ms]");
        }
        Ok(sw)
    }

    /// With `--trace`: the plaintext of a command about to be sent under the
    /// secure channel, secrets masked as for any command, marked `[SCP11]`.
    /// The wire lines (ciphertext and MAC) follow as usual.
    pub fn trace_protected_command(&self, cmd: &Command) {
        if !self.trace {
            return;
        }
        let mut plain = zeroize::Zeroizing::new(Vec::new());
        if cmd.fits_short() {
            cmd.encode_short(cmd.cla, &cmd.data, cmd.ne, &mut plain);
        } else {
            cmd.encode_extended(&mut plain);
        }
        eprintln!("> [SCP11] {}", format_command(&plain, cmd.secret));
    }

    /// With `--trace`: the unwrapped answer (R-MAC verified), secret data masked.
    pub fn trace_protected_response(&self, cmd: &Command, data: &[u8], sw: StatusWord) {
        if !self.trace {
            return;
        }
        let shown = if data.is_empty() {
            String::new()
        } else if cardvault_proto::response_data_is_secret(cmd.cla, cmd.ins) {
            format!("<{} secret bytes masked> ", data.len())
        } else {
            format!("{} ", to_hex(data).to_uppercase())
        };
        eprintln!("< [SCP11] {shown}{sw}");
    }

    fn trace_command(&self, secret: bool) {
        eprintln!("> {}", format_command(&self.cmd_buf, secret));
    }

    /// Send raw bytes as given (the `apdu` command). With `auto`, `61xx` and
    /// `6Cxx` are handled as for any command.
    pub fn send_raw(&mut self, raw: &[u8], auto: bool) -> Result<Response> {
        let parsed = cardvault_proto::apdu::CommandApdu::parse(raw).ok();
        let secret = raw_is_secret(raw);
        self.secret_response = raw.len() >= 2 && cardvault_proto::response_data_is_secret(raw[0], raw[1]);
        self.cmd_buf.clear();
        self.cmd_buf.extend_from_slice(raw);
        let sw = self.exchange(secret)?;
        if !auto {
            return Ok(self.take_response(sw));
        }
        match parsed {
            Some(c) if !c.extended => {
                let mut cmd = Command::new("APDU", c.cla, c.ins, c.p1, c.p2).with_data(&c.data);
                cmd.ne = c.ne;
                cmd.secret = secret;
                self.finish(&cmd, sw, Vec::new())
            }
            _ => self.finish_more_data(sw, Vec::new()),
        }
    }

    fn take_response(&mut self, sw: StatusWord) -> Response {
        let n = self.resp_buf.len() - 2;
        Response {
            data: self.resp_buf[..n].to_vec(),
            sw,
        }
    }

    /// Send a command and collect its whole response, whatever the status word.
    pub fn transmit(&mut self, cmd: &Command) -> Result<Response> {
        self.secret_response = cardvault_proto::response_data_is_secret(cmd.cla, cmd.ins);
        let sw = if cmd.fits_short() || (!self.caps.extended && cmd.data.len() <= 255) {
            cmd.encode_short(cmd.cla, &cmd.data, cmd.ne.min(256), &mut self.cmd_buf);
            self.exchange(cmd.secret)?
        } else if self.caps.extended {
            if cmd.data.len() > 65535 {
                return Err(Error::Usage(format!(
                    "{}: {} bytes of data exceed one APDU",
                    cmd.name,
                    cmd.data.len()
                )));
            }
            cmd.encode_extended(&mut self.cmd_buf);
            self.exchange(cmd.secret)?
        } else {
            self.send_chained(cmd)?
        };
        self.finish(cmd, sw, Vec::new())
    }

    /// Command chaining: all blocks but the last carry CLA bit 0x10 and no Le.
    fn send_chained(&mut self, cmd: &Command) -> Result<StatusWord> {
        let chunks: Vec<&[u8]> = cmd.data.chunks(255).collect();
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.iter().enumerate() {
            if i < last {
                cmd.encode_short(cmd.cla | cla::CHAINING, chunk, 0, &mut self.cmd_buf);
                let sw = self.exchange(cmd.secret)?;
                if !sw.is_ok() {
                    return Ok(sw);
                }
            } else {
                cmd.encode_short(cmd.cla, chunk, cmd.ne.min(256), &mut self.cmd_buf);
            }
        }
        self.exchange(cmd.secret)
    }

    fn finish(&mut self, cmd: &Command, sw: StatusWord, acc: Vec<u8>) -> Result<Response> {
        if let StatusWord::WrongLe(n) = sw {
            if cmd.data.len() <= 255 {
                let ne = if n == 0 { 256 } else { n as usize };
                cmd.encode_short(cmd.cla, &cmd.data, ne, &mut self.cmd_buf);
                let sw = self.exchange(cmd.secret)?;
                return self.finish_more_data(sw, acc);
            }
        }
        self.finish_more_data(sw, acc)
    }

    fn finish_more_data(&mut self, mut sw: StatusWord, mut acc: Vec<u8>) -> Result<Response> {
        let mut rounds = 0u32;
        loop {
            let n = self.resp_buf.len() - 2;
            if acc.len() + n > MAX_RESPONSE {
                return Err(Error::Malformed {
                    command: "GET RESPONSE",
                    reason: format!(
                        "the card offered more than {MAX_RESPONSE} bytes for one command ({} so far)",
                        acc.len() + n
                    ),
                });
            }
            acc.extend_from_slice(&self.resp_buf[..n]);
            let StatusWord::MoreData(more) = sw else {
                return Ok(Response { data: acc, sw });
            };
            if rounds > 0 && n == 0 {
                return Err(Error::Malformed {
                    command: "GET RESPONSE",
                    reason: format!(
                        "the card answered GET RESPONSE with no data and {:04X}, announcing more",
                        sw.to_u16()
                    ),
                });
            }
            if rounds == MAX_GET_RESPONSE_ROUNDS {
                return Err(Error::Malformed {
                    command: "GET RESPONSE",
                    reason: format!(
                        "the card still announced more data after {rounds} GET RESPONSE rounds ({} bytes)",
                        acc.len()
                    ),
                });
            }
            rounds += 1;
            let ne = if more == 0 { 256 } else { more as usize };
            let gr = Command::get_response(ne);
            gr.encode_short(gr.cla, &[], ne, &mut self.cmd_buf);
            sw = self.exchange(false)?;
        }
    }

    /// Send a command and require `9000`; other status words become errors.
    pub fn exec(&mut self, cmd: &Command) -> Result<Vec<u8>> {
        let r = self.transmit(cmd)?;
        if r.sw.is_ok() {
            Ok(r.data)
        } else {
            Err(Error::Card {
                command: cmd.name,
                sw: r.sw,
            })
        }
    }
}

impl Drop for Channel<'_> {
    fn drop(&mut self) {
        // The buffers carried PINs and unwrapped file keys.
        zeroize::Zeroize::zeroize(&mut self.cmd_buf);
        zeroize::Zeroize::zeroize(&mut self.resp_buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A card whose answer to each command is `f(command)`.
    struct Scripted<F: FnMut(&[u8]) -> Vec<u8>>(F, u64);

    impl<F: FnMut(&[u8]) -> Vec<u8>> Transmit for Scripted<F> {
        fn transmit(&mut self, cmd: &[u8], resp: &mut Vec<u8>) -> std::result::Result<(), TransportError> {
            self.1 += 1;
            *resp = (self.0)(cmd);
            Ok(())
        }
    }

    fn channel<'a>(f: impl FnMut(&[u8]) -> Vec<u8> + 'a) -> Channel<'a> {
        Channel::new(Box::new(Scripted(f, 0)), Caps { extended: false }, "test", false)
    }

    #[test]
    fn get_response_rounds_and_bytes_are_bounded() {
        // 61 10 with no data to every GET RESPONSE: refused after one round.
        let mut ch = channel(|_| vec![0x61, 0x10]);
        let e = ch.transmit(&Command::card_status()).unwrap_err();
        assert!(matches!(e, Error::Malformed { .. }), "{e}");
        assert_eq!(ch.stats().apdus, 2);
        // One byte and 61 01 for ever: refused after the round limit.
        let mut ch = channel(|_| vec![0xAA, 0x61, 0x01]);
        let e = ch.transmit(&Command::card_status()).unwrap_err();
        assert!(e.to_string().contains("260 GET RESPONSE rounds"), "{e}");
        assert_eq!(ch.stats().apdus, 1 + MAX_GET_RESPONSE_ROUNDS as u64);
        // 256 bytes and 61 00 for ever: refused past 64 KiB and SM overhead.
        let mut ch = channel(|_| {
            let mut r = vec![0x55; 256];
            r.extend_from_slice(&[0x61, 0x00]);
            r
        });
        let e = ch.transmit(&Command::card_status()).unwrap_err();
        assert!(e.to_string().contains("more than 65560 bytes"), "{e}");
        assert_eq!((ch.stats().apdus, ch.stats().bytes_in), (257, 257 * 258));
        // One answer larger than any command returns.
        let mut ch = channel(|_| vec![0; MAX_RESPONSE + 3]);
        assert!(ch.transmit(&Command::card_status()).is_err());
        // A 64 KiB answer in 256-byte parts (what a short-APDU reader sees) is fine.
        let mut left = 65536usize;
        let mut ch = channel(move |_| {
            let n = left.min(256);
            left -= n;
            let mut r = vec![0x11; n];
            r.extend_from_slice(&if left > 0 { [0x61, 0x00] } else { [0x90, 0x00] });
            r
        });
        let r = ch.transmit(&Command::read_memory(0, 65535)).unwrap();
        assert_eq!(r.data.len(), 65536);
    }

    #[test]
    fn wrong_le_is_followed_once() {
        let mut ch = channel(|_| vec![0x6C, 0x10]);
        let r = ch.transmit(&Command::card_status()).unwrap();
        assert_eq!(r.sw, StatusWord::WrongLe(0x10));
        assert_eq!(ch.stats().apdus, 2);
    }

    #[test]
    fn finds_data_field() {
        assert_eq!(data_range(&[0, 0x20, 0, 0x81, 2, 1, 2]), Some(5..7));
        assert_eq!(data_range(&[0, 0xCA, 0, 0xE1, 0]), None);
        assert_eq!(data_range(&[0, 0xB0, 0, 0, 0, 0x10, 0]), None);
        assert_eq!(data_range(&[0, 0xD6, 0, 0, 0, 0, 2, 9, 9]), Some(7..9));
        // The user-side panic: P3 = 00 and one more byte.
        assert_eq!(data_range(&[0x80, 0xB0, 0x00, 0x24, 0x00, 0x04]), Some(5..6));
    }
}
