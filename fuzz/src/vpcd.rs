//! `vpcd_framing`: the byte stream vpcd sends, message by message.
//!
//! Input: the stream itself, framed as vpcd frames it (2-byte big-endian
//! length, payload); an incomplete last frame is where the stream ends.
//! The card starts powered off, as after `vpcd::run` connects.
//!
//! Checked for every message through `vpcd::handle_message`:
//! - an empty or 1-byte message gets a reply only if it is GET ATR (04), and
//!   that reply is the card's ATR, whose capabilities the terminal's ATR
//!   parser reads back (chaining, extended length as the card has it);
//! - any longer message gets a reply of at least 2 bytes (a status word) that
//!   fits one vpcd frame (at most 65535 bytes), with the APDU checks of
//!   [`check_response`](crate::check_response);
//! - the terminal's ATR parser takes every payload without panicking.
//!
//! Inputs whose length is a multiple of 8 also go through the real serving
//! loop, `vpcd::serve_connection`, over a loopback TCP pair (so `read_message`
//! and `write_message` run on a socket): the replies read back must be as
//! many as the direct run gave, with the same status words, and the
//! connection must end cleanly unless the stream ends inside a frame.

use crate::{check_response, profile, Card};
use applet_sim::vpcd::{handle_message, serve_connection, MAX_MESSAGE};
use cardvault_proto::to_hex;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;
use std::time::Duration;

/// Complete frames of a vpcd stream, and how many bytes trail them.
pub fn frames(mut data: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut out = Vec::new();
    while data.len() >= 2 && out.len() < crate::MAX_STEPS {
        let n = u16::from_be_bytes([data[0], data[1]]) as usize;
        if data.len() < 2 + n {
            break;
        }
        out.push(&data[2..2 + n]);
        data = &data[2 + n..];
    }
    (out, data.len())
}

fn new_card() -> Card {
    let mut card = Card::in_memory(profile("main"));
    card.power_off();
    card
}

pub fn fuzz_vpcd_framing(data: &[u8]) {
    let (msgs, trailing) = frames(data);
    let mut card = new_card();
    let mut out = Vec::new();
    // (SW of each APDU reply) in order, for the TCP comparison.
    let mut replies: Vec<Option<u16>> = Vec::new();
    for m in &msgs {
        let _ = cardvault::transport::atr::card_capabilities(m);
        let before = card.state().clone();
        out.clear();
        let replied = handle_message(&mut card, m, &mut out);
        match m.len() {
            0 | 1 => {
                let is_atr = m.first() == Some(&applet_sim::vpcd::ctrl::GET_ATR);
                assert_eq!(replied, is_atr, "reply to control message {}", to_hex(m));
                assert_eq!(before, *card.state(), "control message {} changed the state", to_hex(m));
                if replied {
                    assert_eq!(out, card.atr());
                    let caps = cardvault::transport::atr::card_capabilities(&out);
                    assert_eq!(caps, Some((true, card.state().extended_length)), "ATR {}", to_hex(&out));
                    replies.push(None);
                }
            }
            _ => {
                assert!(replied, "no reply to APDU {}", to_hex(m));
                assert!(out.len() >= 2, "reply without status word to {}", to_hex(m));
                assert!(
                    out.len() <= MAX_MESSAGE,
                    "reply of {} bytes to {} does not fit a vpcd frame",
                    out.len(),
                    to_hex(m)
                );
                let sw = u16::from_be_bytes([out[out.len() - 2], out[out.len() - 1]]);
                check_response(&before, card.state(), m, &out[..out.len() - 2], sw);
                replies.push(Some(sw));
            }
        }
    }
    if data.len().is_multiple_of(8) && msgs.len() < crate::MAX_STEPS {
        over_tcp(data, &replies, trailing);
    }
}

fn listener() -> &'static TcpListener {
    static L: OnceLock<TcpListener> = OnceLock::new();
    L.get_or_init(|| TcpListener::bind("127.0.0.1:0").expect("bind loopback"))
}

/// Play the stream to `serve_connection` over loopback TCP and compare.
fn over_tcp(data: &[u8], direct: &[Option<u16>], trailing: usize) {
    let l = listener();
    let client = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
    let (server, _) = l.accept().expect("accept");
    client.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut reader = client.try_clone().expect("clone");
    let mut writer = client;
    let input = data.to_vec();
    let w = std::thread::spawn(move || {
        // The server may close early (a frame it cannot handle): ignore EPIPE.
        let _ = writer.write_all(&input);
        let _ = writer.shutdown(Shutdown::Write);
    });
    let r = std::thread::spawn(move || {
        let mut got = Vec::new();
        reader.read_to_end(&mut got).expect("read replies");
        got
    });
    let mut card = new_card();
    let stop = AtomicBool::new(false);
    let served = serve_connection(&mut card, server, &stop);
    // serve_connection owned the server end: it is closed now, so the reader sees EOF.
    w.join().expect("writer");
    let got = r.join().expect("reader");

    let (reply_frames, rest) = frames(&got);
    assert_eq!(rest, 0, "reply stream ends inside a frame");
    assert_eq!(reply_frames.len(), direct.len(), "replies over TCP vs direct");
    for (f, d) in reply_frames.iter().zip(direct) {
        if let Some(sw) = d {
            assert!(f.len() >= 2);
            let got_sw = u16::from_be_bytes([f[f.len() - 2], f[f.len() - 1]]);
            assert_eq!(got_sw, *sw, "status word over TCP vs direct");
        }
    }
    // A stream cut inside a length is a clean end for read_message; cut inside
    // a payload it is an error.
    assert_eq!(
        served.is_ok(),
        trailing < 2,
        "serve_connection result {served:?} with {trailing} trailing bytes"
    );
}
