//! The ISO 7816-4 layer of the card: ATR, SELECT, command chaining, GET
//! RESPONSE, `61xx`/`6Cxx`, class and length checks, and SCP11 secure
//! messaging. It hands complete, unwrapped commands to the applet.
//!
//! Order for one command: parse → class check → GET RESPONSE (below the
//! secure channel) → de-chain → unwrap (CLA bit 04: MAC checked, data
//! decrypted) → applet → wrap the answer → 61xx delivery of the wrapped answer.

use crate::applet::Applet;
use crate::profile::Profile;
use crate::state::{CardState, Store, StoreError};
use cardvault_proto::apdu::CommandApdu;
use cardvault_proto::{self as proto, cla, scp11, sw, tag, Ins};
use iso7816_tlv::ber::{Tag, Tlv, Value};
use std::path::Path;

/// Largest command data a chain may accumulate.
const MAX_CHAIN: usize = 65535;

/// Largest response data in one answer: a vpcd frame carries 65535 bytes, two
/// of which are the status word. Longer answers continue with 61xx.
pub const MAX_RESPONSE_DATA: usize = 65533;

/// A simulated card: one applet behind the ISO 7816-4 layer.
#[derive(Debug)]
pub struct Card {
    applet: Applet,
    powered: bool,
    selected: bool,
    /// Accumulated chained command: header (CLA without chain bit, INS, P1, P2) and data.
    chain: Option<([u8; 4], Vec<u8>)>,
    /// Response bytes waiting for GET RESPONSE.
    pending: Vec<u8>,
    pending_pos: usize,
    /// Status word that ends the pending response (9000, or a warning such as 6310).
    pending_sw: u16,
    /// A hostile applet for tests: answers in place of the applet, inside the
    /// secure channel, as a malicious card that holds its keys could.
    hostile: Option<HostileApplet>,
}

/// The answer of a hostile applet to an unwrapped command: `Some((data, sw))`
/// replaces the applet's answer (and is wrapped like it), `None` lets the
/// applet answer.
pub type HostileAnswer = Box<dyn FnMut(&CommandApdu) -> Option<(Vec<u8>, u16)> + Send>;

struct HostileApplet(HostileAnswer);

impl std::fmt::Debug for HostileApplet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostileApplet")
    }
}

impl Card {
    /// A card whose state lives only in memory (unit tests).
    pub fn in_memory(profile: &Profile) -> Card {
        Card::with(CardState::from_profile(profile), Store::Memory)
    }

    /// A card in memory with the given state (a copy of another card, as a
    /// fuzz target starts every run from a prepared card).
    pub fn from_state(state: CardState) -> Card {
        Card::with(state, Store::Memory)
    }

    /// Open (or create from `profile`) the card whose state file is `path`.
    /// Returns the card and whether it was newly created.
    pub fn open(path: &Path, profile: &Profile) -> Result<(Card, bool), StoreError> {
        let (store, state, created) = Store::open(path, profile)?;
        Ok((Card::with(state, store), created))
    }

    fn with(state: CardState, store: Store) -> Card {
        Card {
            applet: Applet::new(state, store),
            powered: true,
            selected: false,
            chain: None,
            pending: Vec::new(),
            pending_pos: 0,
            pending_sw: sw::OK,
            hostile: None,
        }
    }

    /// Let `answer` choose the answers to commands after secure messaging is
    /// removed (tests of the terminal against a hostile card that runs the
    /// secure channel correctly). `None` restores the applet.
    pub fn set_hostile(&mut self, answer: Option<HostileAnswer>) {
        self.hostile = answer.map(HostileApplet);
    }

    /// Persistent state (read-only), for inspection and tests.
    pub fn state(&self) -> &CardState {
        self.applet.state()
    }

    /// What the current session has gained (PIN, admin, secure channel,
    /// operations in progress), for tests and fuzz invariants.
    pub fn session(&self) -> crate::applet::SessionView {
        self.applet.session_view()
    }

    /// Fault injection for tests: every state write fails (6581) until
    /// switched off, as with a full disk or a worn-out EEPROM.
    pub fn set_fail_state_writes(&mut self, fail: bool) {
        self.applet.set_fail_state_writes(fail);
    }

    /// Answer to reset of this card.
    pub fn atr(&self) -> Vec<u8> {
        atr(self.state().extended_length)
    }

    pub fn power_on(&mut self) {
        self.powered = true;
        self.reset();
    }

    pub fn power_off(&mut self) {
        self.powered = false;
        self.reset();
    }

    /// Warm reset: all volatile state goes, persistent state stays.
    pub fn reset(&mut self) {
        self.selected = false;
        self.chain = None;
        self.pending.clear();
        self.pending_pos = 0;
        self.applet.reset_session();
    }

    /// Process one command APDU and return the response APDU (data + SW1 SW2).
    pub fn transmit(&mut self, raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        self.transmit_into(raw, &mut out);
        out
    }

    /// As [`Card::transmit`], writing into a caller-owned buffer (no allocation on the hot path).
    pub fn transmit_into(&mut self, raw: &[u8], out: &mut Vec<u8>) {
        out.clear();
        if !self.powered {
            push_sw(out, sw::CONDITIONS_NOT_SATISFIED);
            return;
        }
        let c = match CommandApdu::parse(raw) {
            Ok(c) => c,
            Err(s) => {
                self.chain = None;
                push_sw(out, s);
                return;
            }
        };
        // Class 00 (interindustry) or 80 (proprietary), each with or without the
        // chaining and secure messaging bits; no logical channels.
        let class = c.cla & !(cla::CHAINING | scp11::CLA_SECURE_MESSAGING);
        if class != cla::ISO && class != cla::PROPRIETARY {
            self.chain = None;
            let s = if class & 0xE0 == 0 && class & 0x03 != 0 {
                sw::LOGICAL_CHANNEL_NOT_SUPPORTED
            } else {
                sw::CLA_NOT_SUPPORTED
            };
            push_sw(out, s);
            return;
        }
        if c.extended && !self.state().extended_length {
            self.chain = None;
            push_sw(out, sw::WRONG_LENGTH);
            return;
        }
        if Ins::try_from(c.ins) == Ok(Ins::GetResponse) && c.cla & !cla::CHAINING == cla::ISO {
            self.get_response(&c, out);
            return;
        }
        self.pending.clear();
        self.pending_pos = 0;

        // Command chaining.
        let header = [c.cla & !cla::CHAINING, c.ins, c.p1, c.p2];
        if c.cla & cla::CHAINING != 0 {
            match &mut self.chain {
                Some((h, data)) if *h == header => {
                    if data.len() + c.data.len() > MAX_CHAIN {
                        self.chain = None;
                        push_sw(out, sw::WRONG_LENGTH);
                        return;
                    }
                    data.extend_from_slice(&c.data);
                }
                _ => self.chain = Some((header, c.data.clone())),
            }
            push_sw(out, sw::OK);
            return;
        }
        let c = match self.chain.take() {
            Some((h, mut data)) if h == header => {
                if data.len() + c.data.len() > MAX_CHAIN {
                    push_sw(out, sw::WRONG_LENGTH);
                    return;
                }
                data.extend_from_slice(&c.data);
                CommandApdu { data, ..c }
            }
            Some(_) => {
                push_sw(out, sw::LAST_COMMAND_OF_CHAIN_EXPECTED);
                return;
            }
            None => c,
        };

        // Secure messaging: a protected command is unwrapped here; any error
        // ends the session. A plain sensitive command in an open session ends
        // it too (the applet never sees either).
        let protected = c.cla & scp11::CLA_SECURE_MESSAGING != 0;
        let unwrapped;
        let cmd = if protected {
            let Some(session) = self.applet.session.secure.as_mut() else {
                push_sw(out, sw::SECURITY_STATUS_NOT_SATISFIED);
                return;
            };
            match session.channel.unwrap(&c) {
                Ok(plain) => {
                    unwrapped = plain;
                    &unwrapped
                }
                Err(_) => {
                    self.applet.end_secure_session();
                    push_sw(out, sw::SM_DATA_INCORRECT);
                    return;
                }
            }
        } else {
            if self.applet.session.secure.is_some() && proto::command_is_sensitive(c.cla, c.ins) {
                self.applet.end_secure_session();
                push_sw(out, sw::SM_DATA_MISSING);
                return;
            }
            &c
        };

        self.applet.begin_command(protected);
        let hostile = match self.hostile.as_mut() {
            Some(HostileApplet(answer)) => answer(cmd),
            None => None,
        };
        let result = if let Some((data, status)) = hostile {
            if status == sw::OK {
                Ok(data)
            } else if data.is_empty() {
                Err(status)
            } else {
                self.applet.set_final_sw(status);
                Ok(data)
            }
        } else if Ins::try_from(cmd.ins) == Ok(Ins::Select) && cmd.cla == cla::ISO {
            self.select(cmd)
        } else if !self.selected {
            Err(sw::CONDITIONS_NOT_SATISFIED)
        } else {
            self.applet.process(cmd)
        };
        let (data, status) = match result {
            Ok(data) => (data, self.applet.take_final_sw()),
            Err(s) => (Vec::new(), s),
        };
        if !protected {
            return self.respond(&c, data, status, out);
        }
        // The answer to a protected command goes back protected, unless the
        // command closed the session (SELECT) or the channel cannot wrap it.
        let wrapped = match self.applet.session.secure.as_mut() {
            Some(session) => match session.channel.wrap(&data, status) {
                Ok(w) => w,
                Err(_) => {
                    self.applet.end_secure_session();
                    push_sw(out, sw::UNKNOWN);
                    return;
                }
            },
            None => data,
        };
        // `c` is the command as it came over the wire (CLA bit 04, MAC in the
        // data), so `respond` never asks for it again with 6Cxx.
        if wrapped.is_empty() {
            push_sw(out, status);
        } else {
            self.respond(&c, wrapped, status, out);
        }
    }

    fn select(&mut self, c: &CommandApdu) -> Result<Vec<u8>, u16> {
        if c.p1 != 0x04 || (c.p2 & 0xF3) != 0x00 {
            return Err(sw::WRONG_P1P2);
        }
        if c.data.is_empty() || c.data.len() > 16 {
            return Err(sw::WRONG_LENGTH);
        }
        if c.data[..] != *proto::AID || !self.state().applet_installed {
            self.selected = false;
            return Err(sw::FILE_NOT_FOUND);
        }
        self.selected = true;
        self.applet.reset_session();
        if c.p2 & 0x0C == 0x0C {
            return Ok(vec![]); // no response data requested
        }
        let fci = Tlv::new(
            Tag::try_from(tag::FCI).expect("tag"),
            Value::Constructed(vec![
                Tlv::new(
                    Tag::try_from(tag::FCI_AID).expect("tag"),
                    Value::Primitive(proto::AID.to_vec()),
                )
                .expect("tlv"),
                Tlv::new(
                    Tag::try_from(tag::FCI_PROPRIETARY).expect("tag"),
                    Value::Constructed(vec![Tlv::new(
                        Tag::try_from(tag::APPLET_VERSION).expect("tag"),
                        Value::Primitive(vec![proto::APPLET_VERSION.0, proto::APPLET_VERSION.1]),
                    )
                    .expect("tlv")]),
                )
                .expect("tlv"),
            ]),
        )
        .expect("tlv");
        Ok(fci.to_vec())
    }

    /// Deliver response data within the command's Ne:
    /// - no Le and data waiting: `61xx` (fetch with GET RESPONSE);
    /// - Le too short for a short response of a command that changed no state:
    ///   `6Cxx` with the exact length;
    /// - Le too short for a longer response: Ne bytes and `61xx` for the rest.
    fn respond(&mut self, c: &CommandApdu, data: Vec<u8>, final_sw: u16, out: &mut Vec<u8>) {
        let r = data.len();
        let ne = c.ne.min(MAX_RESPONSE_DATA);
        if r == 0 || ne >= r {
            out.extend_from_slice(&data);
            push_sw(out, final_sw);
            return;
        }
        // 6Cxx asks the terminal to send the command again: only for commands
        // that read and change nothing (not even session progress), so a
        // repeat cannot run them twice.
        let repeatable = matches!(
            (c.cla & !cla::CHAINING, Ins::try_from(c.ins)),
            (cla::ISO, Ok(Ins::GetData))
                | (cla::ISO, Ok(Ins::Select))
                | (cla::PROPRIETARY, Ok(Ins::ReadMemory))
                | (cla::PROPRIETARY, Ok(Ins::GetBalance))
        );
        if c.ne > 0 && r <= 256 && c.data.is_empty() && repeatable && !self.applet.last_changed_state() {
            push_sw(out, 0x6C00 | (r & 0xFF) as u16);
            return;
        }
        let first = ne.min(r);
        out.extend_from_slice(&data[..first]);
        self.pending = data;
        self.pending_pos = first;
        self.pending_sw = final_sw;
        push_more(out, r - first);
    }

    fn get_response(&mut self, c: &CommandApdu, out: &mut Vec<u8>) {
        if c.p1 != 0 || c.p2 != 0 {
            push_sw(out, sw::WRONG_P1P2);
            return;
        }
        let left = self.pending.len() - self.pending_pos;
        if left == 0 {
            push_sw(out, sw::CONDITIONS_NOT_SATISFIED);
            return;
        }
        let n = c.ne.min(MAX_RESPONSE_DATA).min(left);
        out.extend_from_slice(&self.pending[self.pending_pos..self.pending_pos + n]);
        self.pending_pos += n;
        let left = left - n;
        if left == 0 {
            self.pending.clear();
            self.pending_pos = 0;
            push_sw(out, self.pending_sw);
        } else {
            push_more(out, left);
        }
    }
}

/// Answer to reset: T=1, historical bytes with card capabilities (command
/// chaining, and extended Lc/Le when the card takes them).
pub fn atr(extended_length: bool) -> Vec<u8> {
    let caps3 = 0x80 | if extended_length { 0x40 } else { 0 };
    // Category 80, compact TLV: card capabilities (73), issuer data "CVLT" (54).
    let hist = [0x80, 0x73, 0x00, 0x00, caps3, 0x54, b'C', b'V', b'L', b'T'];
    let mut atr = vec![0x3B, 0x80 | hist.len() as u8, 0x80, 0x01];
    atr.extend_from_slice(&hist);
    let tck = atr[1..].iter().fold(0u8, |a, b| a ^ b);
    atr.push(tck);
    atr
}

fn push_sw(out: &mut Vec<u8>, s: u16) {
    out.extend_from_slice(&s.to_be_bytes());
}

fn push_more(out: &mut Vec<u8>, left: usize) {
    out.push(sw::MORE_DATA_PREFIX);
    out.push(if left >= 256 { 0 } else { left as u8 });
}
