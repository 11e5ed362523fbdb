//! Command APDUs: the generic builder and its encodings. The constructors of
//! the cardvault command set are in `card::commands`; GET RESPONSE, which the
//! channel sends on its own, is here.

use cardvault_proto::{self as proto, cla, ins};
use zeroize::Zeroizing;

/// A command APDU before encoding. Encoding (short, extended, chained) is
/// chosen by the channel from the reader's capabilities.
#[derive(Debug, Clone)]
pub struct Command {
    pub cla: u8,
    pub ins: u8,
    pub p1: u8,
    pub p2: u8,
    /// Command data; zeroized on drop because it may carry a PIN.
    pub data: Zeroizing<Vec<u8>>,
    /// Ne: bytes expected in the response; 0 = none, 65536 = as many as there are.
    pub ne: usize,
    /// Data must be masked in traces.
    pub secret: bool,
    /// Short name for traces and errors.
    pub name: &'static str,
}

/// Ne meaning "everything the card has".
pub const NE_MAX: usize = 65536;

impl Command {
    pub fn new(name: &'static str, cla: u8, ins: u8, p1: u8, p2: u8) -> Command {
        Command {
            cla,
            ins,
            p1,
            p2,
            data: Zeroizing::new(Vec::new()),
            ne: 0,
            secret: proto::command_data_is_secret(cla, ins),
            name,
        }
    }

    pub fn with_data(mut self, data: &[u8]) -> Command {
        self.data = Zeroizing::new(data.to_vec());
        self
    }

    pub fn expect(mut self, ne: usize) -> Command {
        self.ne = ne.min(NE_MAX);
        self
    }

    pub fn expect_max(self) -> Command {
        self.expect(NE_MAX)
    }

    /// GET RESPONSE for the rest of an answer (`61xx`).
    pub fn get_response(ne: usize) -> Command {
        Command::new("GET RESPONSE", cla::ISO, ins::GET_RESPONSE, 0, 0).expect(ne)
    }

    /// Encode as one short APDU (data ≤ 255, Ne ≤ 256), with the given CLA.
    pub fn encode_short(&self, cla: u8, data: &[u8], ne: usize, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&[cla, self.ins, self.p1, self.p2]);
        if !data.is_empty() {
            out.push(data.len() as u8);
            out.extend_from_slice(data);
        }
        if ne > 0 {
            out.push(if ne >= 256 { 0 } else { ne as u8 });
        }
    }

    /// Encode as one extended APDU (data ≤ 65535, Ne ≤ 65536).
    pub fn encode_extended(&self, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&[self.cla, self.ins, self.p1, self.p2]);
        if !self.data.is_empty() {
            out.push(0);
            out.extend_from_slice(&(self.data.len() as u16).to_be_bytes());
            out.extend_from_slice(&self.data);
        }
        if self.ne > 0 {
            if self.data.is_empty() {
                out.push(0);
            }
            let le = if self.ne >= NE_MAX { 0 } else { self.ne as u16 };
            out.extend_from_slice(&le.to_be_bytes());
        }
    }

    /// Whether the command fits a single short APDU.
    pub fn fits_short(&self) -> bool {
        self.data.len() <= 255 && self.ne <= 256
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_short_and_extended() {
        let mut out = Vec::new();
        let c = Command::select_aid(proto::AID);
        c.encode_short(c.cla, &c.data, c.ne, &mut out);
        assert_eq!(
            out,
            [0x00, 0xA4, 0x04, 0x00, 0x06, 0xF0, 0x43, 0x56, 0x4C, 0x54, 0x01, 0x00]
        );
        Command::read_memory(1, 4096).encode_extended(&mut out);
        assert_eq!(out, [0x80, 0xB0, 0x00, 0x01, 0x00, 0x00, 0x02, 0x10, 0x00, 0x10, 0x00]);
        Command::write_memory(0, &[1, 2]).encode_extended(&mut out);
        assert_eq!(out, [0x80, 0xD6, 0, 0, 0, 0, 2, 1, 2]);
        Command::get_data(0xDF01).expect_max().encode_extended(&mut out);
        assert_eq!(out, [0x00, 0xCA, 0xDF, 0x01, 0, 0, 0]);
    }

    #[test]
    fn pin_commands_are_marked_secret() {
        assert!(Command::verify_pin(b"1234").secret);
        assert!(Command::change_pin(b"1234", b"5678").secret);
        assert!(!Command::card_status().secret);
    }
}
