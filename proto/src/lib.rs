//! The cardvault wire protocol, shared by the card (`applet-sim`) and the
//! terminal (`cardvault`): constants, wire formats with their parsers, and the
//! cryptographic building blocks both sides compute identically, and
//! [`fsutil`], the one durable file write both sides use.
//!
//! Every constant that both sides must agree on lives here, so the two cannot
//! drift apart. docs/PROTOCOL.md documents the same values for other tools.

pub mod apdu;
pub mod backup;
pub mod cert;
mod codes;
pub mod crypto;
pub mod domain;
#[cfg(unix)]
pub mod fsutil;
pub mod load;
pub mod safe;
pub mod scp11;
pub mod storing;
pub mod takeout;
pub mod wallet;

pub use codes::{ins, sw, tag, Ins, Tag};

/// Application identifier of the cardvault applet (proprietary, unregistered RID `F0`).
pub const AID: &[u8] = &[0xF0, 0x43, 0x56, 0x4C, 0x54, 0x01];

/// Applet version reported in the card status (major, minor).
pub const APPLET_VERSION: (u8, u8) = (1, 0);

/// Class bytes.
pub mod cla {
    /// ISO 7816-4 interindustry class.
    pub const ISO: u8 = 0x00;
    /// Proprietary class for the applet's own commands.
    pub const PROPRIETARY: u8 = 0x80;
    /// Command chaining bit (ISO 7816-4 5.1.1).
    pub const CHAINING: u8 = 0x10;
}

/// P2 reference of the holder PIN (ISO 7816-4: specific reference data, number 1).
pub const PIN_REF: u8 = 0x81;
/// Minimum and maximum PIN length in bytes.
pub const PIN_MIN_LEN: usize = 4;
pub const PIN_MAX_LEN: usize = 16;
/// Length of a card challenge (GET CHALLENGE).
pub const CHALLENGE_LEN: usize = 16;

/// Whether the data field of a command carries a secret that must never be
/// shown in a trace (PINs, key group elements). Decided by
/// the instruction alone: a command sent with an unexpected class byte still
/// reaches a card (and a trace) with its secret.
pub fn command_data_is_secret(_cla: u8, ins: u8) -> bool {
    matches!(
        ins,
        ins::VERIFY
            | ins::ESCROW
            | ins::CHANGE_REFERENCE_DATA
            | ins::RESET_RETRY_COUNTER
            | ins::EXTERNAL_AUTHENTICATE
            | ins::WRITE_KEY_ELEMENT
            | ins::LOAD_DOMAIN_KEY
    )
}

/// Whether a command is sensitive: it carries or returns a secret, or changes
/// keys, PIN or value, so the card can require it under SCP11 (profile
/// setting `require_secure_channel`) and ends a secure session when it arrives
/// plain in the middle of one. `cla` is taken without the chaining and secure
/// messaging bits. Public reads (SELECT, GET DATA) are never sensitive.
pub fn command_is_sensitive(cla: u8, ins: u8) -> bool {
    let class = cla & !(self::cla::CHAINING | scp11::CLA_SECURE_MESSAGING);
    match class {
        self::cla::ISO => matches!(
            ins,
            ins::VERIFY | ins::CHANGE_REFERENCE_DATA | ins::RESET_RETRY_COUNTER | ins::PUT_DATA
        ),
        self::cla::PROPRIETARY => matches!(
            ins,
            ins::WRITE_KEY_ELEMENT
                | ins::TAKE_OUT_KEY
                | ins::IMPORT_KEY
                | ins::UNWRAP_FILE_KEY
                | ins::REWRAP_TO_PEER
                | ins::SET_MAIN_KEY
                | ins::DESTROY_KEY
                | ins::LOAD_DOMAIN_KEY
                | ins::GENERATE_ECKA_KEY
                | ins::GENERATE_SIGNING_KEY
                | ins::GET_TRANSPORT_KEY
                | ins::GET_LOAD_CHALLENGE
                | ins::CREDIT
                | ins::DEBIT
                | ins::BACKUP
                | ins::BACKUP_DATA
                | ins::BACKUP_COMPLETE
                | ins::GET_RESTORE_CHALLENGE
                | ins::RESTORE
                | ins::RESTORE_DATA
                | ins::RESTORE_COMPLETE
                | ins::STORING_REQUEST
                | ins::STORE_DATA_UNDER_AUTHORIZATION
                | ins::GET_WALLET_CHALLENGE
                | ins::LOAD_ITEM
                | ins::SPEND
                | ins::DEPOSIT
                | ins::GET_WITHDRAW_CHALLENGE
                | ins::WITHDRAW
                | ins::ESCROW
        ),
        _ => false,
    }
}

/// Whether the response data of a command is secret (an unwrapped file key),
/// whatever the class byte.
pub fn response_data_is_secret(_cla: u8, ins: u8) -> bool {
    ins == ins::UNWRAP_FILE_KEY
}

/// Lower-case hex encoding (state files, traces, JSON output).
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// Decode hex, ignoring ASCII whitespace and ':' separators (as pasted from traces).
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b':').collect();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|p| {
            let hi = (p[0] as char).to_digit(16)?;
            let lo = (p[1] as char).to_digit(16)?;
            Some((hi * 16 + lo) as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_rejects_garbage() {
        let b = [0x00, 0xA4, 0xff];
        assert_eq!(to_hex(&b), "00a4ff");
        assert_eq!(from_hex("00 A4:fF").unwrap(), b);
        assert!(from_hex("0").is_none());
        assert!(from_hex("zz").is_none());
    }

    #[test]
    fn pin_commands_are_secret_and_select_is_not() {
        assert!(command_data_is_secret(0x00, ins::VERIFY));
        assert!(command_data_is_secret(0x10, ins::RESET_RETRY_COUNTER));
        assert!(!command_data_is_secret(0x00, ins::SELECT));
    }

    #[test]
    fn secrets_are_masked_whatever_the_class_byte() {
        for cla in [0x00, 0x01, 0x0C, 0x10, 0x80, 0x84, 0x90, 0xFF] {
            for ins in [
                ins::VERIFY,
                ins::CHANGE_REFERENCE_DATA,
                ins::RESET_RETRY_COUNTER,
                ins::EXTERNAL_AUTHENTICATE,
                ins::WRITE_KEY_ELEMENT,
                ins::LOAD_DOMAIN_KEY,
            ] {
                assert!(command_data_is_secret(cla, ins), "CLA {cla:02X} INS {ins:02X}");
            }
            assert!(response_data_is_secret(cla, ins::UNWRAP_FILE_KEY), "CLA {cla:02X}");
            assert!(!command_data_is_secret(cla, ins::GET_DATA));
            assert!(!response_data_is_secret(cla, ins::READ_MEMORY));
        }
    }

    #[test]
    fn sensitive_commands_whatever_the_class_bits() {
        assert!(command_is_sensitive(0x04, ins::VERIFY));
        assert!(command_is_sensitive(0x94, ins::IMPORT_KEY));
        assert!(command_is_sensitive(0x84, ins::LOAD_DOMAIN_KEY));
        assert!(!command_is_sensitive(0x00, ins::GET_DATA));
        assert!(!command_is_sensitive(0x00, ins::SELECT));
        assert!(!command_is_sensitive(0x80, ins::GET_BALANCE));
    }
}
