//! Card-side parsing of command APDUs (ISO 7816-3 cases 1 to 4, short and extended).

use crate::sw;

/// A command APDU as the card received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandApdu {
    pub cla: u8,
    pub ins: u8,
    pub p1: u8,
    pub p2: u8,
    pub data: Vec<u8>,
    /// Ne: the maximum number of response bytes expected; 0 when there is no Le field.
    pub ne: usize,
    /// The command used the extended length encoding.
    pub extended: bool,
}

impl CommandApdu {
    /// A command without Le, short unless its data needs the extended encoding.
    pub fn new(cla: u8, ins: u8, p1: u8, p2: u8, data: Vec<u8>) -> CommandApdu {
        let extended = data.len() > 255;
        CommandApdu {
            cla,
            ins,
            p1,
            p2,
            data,
            ne: 0,
            extended,
        }
    }

    /// Encode for the wire: short form, or extended when `extended` is set or
    /// the lengths need it. An Ne of 0 sends no Le field.
    pub fn to_bytes(&self) -> Vec<u8> {
        let extended = self.extended || self.data.len() > 255 || self.ne > 256;
        let mut out = Vec::with_capacity(self.data.len() + 9);
        out.extend_from_slice(&[self.cla, self.ins, self.p1, self.p2]);
        if !self.data.is_empty() {
            if extended {
                out.push(0);
                out.extend_from_slice(&(self.data.len() as u16).to_be_bytes());
            } else {
                out.push(self.data.len() as u8);
            }
            out.extend_from_slice(&self.data);
        }
        if self.ne > 0 {
            if extended {
                if self.data.is_empty() {
                    out.push(0);
                }
                out.extend_from_slice(&((self.ne.min(65536) % 65536) as u16).to_be_bytes());
            } else {
                out.push((self.ne % 256) as u8);
            }
        }
        out
    }

    /// Parse raw bytes. A malformed length encoding gives `6700`.
    pub fn parse(raw: &[u8]) -> Result<CommandApdu, u16> {
        if raw.len() < 4 {
            return Err(sw::WRONG_LENGTH);
        }
        let (cla, ins, p1, p2) = (raw[0], raw[1], raw[2], raw[3]);
        let body = &raw[4..];
        let mk = |data: &[u8], ne: usize, extended: bool| CommandApdu {
            cla,
            ins,
            p1,
            p2,
            data: data.to_vec(),
            ne,
            extended,
        };
        match body.len() {
            0 => Ok(mk(&[], 0, false)),
            1 => Ok(mk(&[], if body[0] == 0 { 256 } else { body[0] as usize }, false)),
            _ if body[0] != 0 => {
                // Short case 3 or 4.
                let lc = body[0] as usize;
                match body.len() - 1 {
                    n if n == lc => Ok(mk(&body[1..], 0, false)),
                    n if n == lc + 1 => {
                        let le = body[lc + 1];
                        Ok(mk(&body[1..=lc], if le == 0 { 256 } else { le as usize }, false))
                    }
                    _ => Err(sw::WRONG_LENGTH),
                }
            }
            3 => {
                // Extended case 2: 00 Le1 Le2.
                let le = u16::from_be_bytes([body[1], body[2]]) as usize;
                Ok(mk(&[], if le == 0 { 65536 } else { le }, true))
            }
            n if n >= 4 => {
                let lc = u16::from_be_bytes([body[1], body[2]]) as usize;
                if lc == 0 {
                    return Err(sw::WRONG_LENGTH);
                }
                match n - 3 {
                    m if m == lc => Ok(mk(&body[3..], 0, true)),
                    m if m == lc + 2 => {
                        let le = u16::from_be_bytes([body[3 + lc], body[4 + lc]]) as usize;
                        Ok(mk(&body[3..3 + lc], if le == 0 { 65536 } else { le }, true))
                    }
                    _ => Err(sw::WRONG_LENGTH),
                }
            }
            _ => Err(sw::WRONG_LENGTH),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_case() {
        let c1 = CommandApdu::parse(&[0, 0xA4, 4, 0]).unwrap();
        assert_eq!((c1.data.len(), c1.ne, c1.extended), (0, 0, false));
        let c2 = CommandApdu::parse(&[0, 0xCA, 0, 0xE1, 0]).unwrap();
        assert_eq!(c2.ne, 256);
        let c3 = CommandApdu::parse(&[0, 0x20, 0, 0x81, 2, 1, 2]).unwrap();
        assert_eq!((c3.data, c3.ne), (vec![1, 2], 0));
        let c4 = CommandApdu::parse(&[0, 0xA4, 4, 0, 1, 9, 0x10]).unwrap();
        assert_eq!((c4.data, c4.ne), (vec![9], 16));
        let e2 = CommandApdu::parse(&[0, 0xB0, 0, 0, 0, 0x10, 0x00]).unwrap();
        assert_eq!((e2.ne, e2.extended), (4096, true));
        let e4 = CommandApdu::parse(&[0, 1, 0, 0, 0, 0, 2, 7, 8, 0, 0]).unwrap();
        assert_eq!((e4.data, e4.ne, e4.extended), (vec![7, 8], 65536, true));
    }

    #[test]
    fn encodes_what_it_parses() {
        for raw in [
            &[0u8, 0xA4, 4, 0][..],
            &[0, 0xCA, 0, 0xE1, 0],
            &[0, 0x20, 0, 0x81, 2, 1, 2],
            &[0, 0xA4, 4, 0, 1, 9, 0x10],
            &[0, 0xB0, 0, 0, 0, 0x10, 0x00],
            &[0, 1, 0, 0, 0, 0, 2, 7, 8, 0, 0],
        ] {
            assert_eq!(CommandApdu::parse(raw).unwrap().to_bytes(), raw, "{raw:02x?}");
        }
        let long = CommandApdu::new(0x84, 0xE5, 0, 0, vec![1; 300]);
        assert_eq!(&long.to_bytes()[..7], &[0x84, 0xE5, 0, 0, 0, 0x01, 0x2C]);
    }

    #[test]
    fn rejects_inconsistent_lengths() {
        for raw in [
            &[0u8, 1, 2][..],
            &[0, 1, 0, 0, 3, 1],
            &[0, 1, 0, 0, 0, 0, 0, 1],
            &[0, 1, 0, 0, 0, 0, 2, 1],
        ] {
            assert_eq!(CommandApdu::parse(raw), Err(sw::WRONG_LENGTH), "{raw:02x?}");
        }
    }
}
