//! The cardvault wire protocol, shared by the card (`applet-sim`) and the
//! terminal (`cardvault`): constants, wire formats with their parsers, and the
//! cryptographic building blocks both sides compute identically, and
//! [`fsutil`], the one durable file write both sides use.
//!
//! Every constant that both sides must agree on lives here, so the two cannot
//! drift apart. docs/PROTOCOL.md documents the same values for other tools.

pub mod admin;
pub mod apdu;
pub mod backup;
pub mod cert;
pub mod crypto;
#[cfg(unix)]
pub mod fsutil;
pub mod scp11;
pub mod takeout;

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

/// Instruction bytes. The class each one is sent with is in docs/PROTOCOL.md.
pub mod ins {
    pub const SELECT: u8 = 0xA4;
    pub const GET_DATA: u8 = 0xCA;
    pub const GET_RESPONSE: u8 = 0xC0;
    pub const VERIFY: u8 = 0x20;
    pub const CHANGE_REFERENCE_DATA: u8 = 0x24;
    pub const RESET_RETRY_COUNTER: u8 = 0x2C;
    pub const GET_CHALLENGE: u8 = 0x84;
    pub const EXTERNAL_AUTHENTICATE: u8 = 0x82;
    /// Proprietary (CLA 80): read application memory starting at page P1P2.
    pub const READ_MEMORY: u8 = 0xB0;
    /// Proprietary (CLA 80): write application memory starting at page P1P2.
    pub const WRITE_MEMORY: u8 = 0xD6;
    /// PUT DATA (CLA 00): issuer personalization data objects, admin only.
    pub const PUT_DATA: u8 = 0xDA;
    // Key groups and duplication (CLA 80).
    pub const END_PERSONALIZATION: u8 = 0xE0;
    pub const WRITE_KEY_ELEMENT: u8 = 0xE1;
    pub const RESET_KEY_GROUP: u8 = 0xE2;
    pub const GENERATE_KEY_PAIR: u8 = 0x46;
    pub const TAKE_OUT_KEY: u8 = 0xE4;
    pub const IMPORT_KEY: u8 = 0xE5;
    pub const CONFIRM_DUPLICATE: u8 = 0xE6;
    pub const RELEASE_DUPLICATE: u8 = 0xE7;
    pub const UNWRAP_FILE_KEY: u8 = 0xE8;
    pub const SET_PEER_KEY: u8 = 0xE9;
    pub const REWRAP_TO_PEER: u8 = 0xEA;
    pub const GET_TRANSPORT_KEY: u8 = 0xEB;
    pub const SET_MAIN_KEY: u8 = 0xEC;
    // Page backup and restore (CLA 80).
    pub const BACKUP: u8 = 0xF0;
    pub const BACKUP_DATA: u8 = 0xF1;
    pub const BACKUP_COMPLETE: u8 = 0xF2;
    pub const GET_RESTORE_CHALLENGE: u8 = 0xF3;
    pub const RESTORE: u8 = 0xF4;
    pub const RESTORE_DATA: u8 = 0xF5;
    pub const RESTORE_COMPLETE: u8 = 0xF6;
    // Value applications (CLA 80).
    pub const GET_BALANCE: u8 = 0x5C;
    pub const CREDIT: u8 = 0x52;
    pub const DEBIT: u8 = 0x54;
}

/// P2 reference of the holder PIN (ISO 7816-4: specific reference data, number 1).
pub const PIN_REF: u8 = 0x81;
/// P2 reference of the issuer admin key for EXTERNAL AUTHENTICATE.
pub const ADMIN_KEY_REF: u8 = 0x01;
/// Minimum and maximum PIN length in bytes.
pub const PIN_MIN_LEN: usize = 4;
pub const PIN_MAX_LEN: usize = 16;
/// Length of a card challenge (GET CHALLENGE).
pub const CHALLENGE_LEN: usize = 16;
/// Domain separation label for the admin authentication MAC.
pub const ADMIN_AUTH_LABEL: &[u8] = b"cardvault admin auth v1";

/// BER-TLV tags of the data objects readable with GET DATA (P1P2 = tag).
pub mod tag {
    /// Card status template (constructed), holds all of the following.
    pub const CARD_STATUS: u16 = 0x00E1;
    pub const CARD_NUMBER: u16 = 0xDF01;
    pub const ROLE: u16 = 0xDF02;
    pub const APPLET_VERSION: u16 = 0xDF03;
    pub const PIN_TRIES_LEFT: u16 = 0xDF04;
    pub const PIN_MAX_TRIES: u16 = 0xDF05;
    pub const PAGE_SIZE: u16 = 0xDF06;
    pub const PAGE_COUNT: u16 = 0xDF07;
    /// 1 byte: bit 0 = extended length supported, bit 1 = PIN verified in this session.
    pub const FLAGS: u16 = 0xDF08;
    pub const KEY_GROUP_STATUS: u16 = 0xDF10;
    pub const KEY_GROUP_KCV: u16 = 0xDF11;
    pub const PUBLIC_KEY: u16 = 0xDF12;
    pub const EXPORT_STATUS: u16 = 0xDF13;
    pub const KEY_ORIGIN: u16 = 0xDF14;
    pub const SOURCE_CARD: u16 = 0xDF15;
    pub const PEER_KEY: u16 = 0xDF16;
    pub const ISSUED: u16 = 0xDF17;
    pub const MEMBER_NUMBER: u16 = 0xDF20;
    pub const EXPIRY: u16 = 0xDF21;
    /// Application table: per application id(1) first_page(2) page_count(2)
    /// flags(1: bit 0 value, bit 1 restored) name_len(1) name.
    pub const APPLICATIONS: u16 = 0xDF30;
    /// Backup counters: issued(4) base(4) newest_seen(4) changed_pages(2).
    pub const BACKUP_COUNTERS: u16 = 0xDF31;
    /// PUT DATA only: number of key group elements (1 byte, 1..8).
    pub const KEY_GROUP_SIZE: u16 = 0xDF22;
    /// PUT DATA only: export policy (1 byte, bit 0 = no take-out once a backup exists).
    pub const EXPORT_POLICY: u16 = 0xDF23;
    /// File control information template returned by SELECT.
    pub const FCI: u16 = 0x6F;
    pub const FCI_AID: u16 = 0x84;
    pub const FCI_PROPRIETARY: u16 = 0xA5;
}

/// Status words (ISO 7816-4 section 5.1.3 meanings).
pub mod sw {
    pub const OK: u16 = 0x9000;
    pub const MEMORY_FAILURE: u16 = 0x6581;
    pub const WRONG_LENGTH: u16 = 0x6700;
    pub const LOGICAL_CHANNEL_NOT_SUPPORTED: u16 = 0x6881;
    pub const CHAINING_NOT_SUPPORTED: u16 = 0x6884;
    pub const LAST_COMMAND_OF_CHAIN_EXPECTED: u16 = 0x6883;
    pub const SECURITY_STATUS_NOT_SATISFIED: u16 = 0x6982;
    pub const AUTH_METHOD_BLOCKED: u16 = 0x6983;
    pub const REF_DATA_NOT_USABLE: u16 = 0x6984;
    pub const CONDITIONS_NOT_SATISFIED: u16 = 0x6985;
    /// Secure messaging data objects expected but missing (a plain sensitive
    /// command in an open secure session).
    pub const SM_DATA_MISSING: u16 = 0x6987;
    /// Secure messaging data objects incorrect (wrong MAC, bad padding).
    pub const SM_DATA_INCORRECT: u16 = 0x6988;
    pub const WRONG_DATA: u16 = 0x6A80;
    pub const FUNC_NOT_SUPPORTED: u16 = 0x6A81;
    pub const FILE_NOT_FOUND: u16 = 0x6A82;
    pub const WRONG_P1P2: u16 = 0x6A86;
    pub const REF_DATA_NOT_FOUND: u16 = 0x6A88;
    pub const INS_NOT_SUPPORTED: u16 = 0x6D00;
    pub const CLA_NOT_SUPPORTED: u16 = 0x6E00;
    pub const UNKNOWN: u16 = 0x6F00;
    /// `61xx`: xx more bytes available with GET RESPONSE (00 = 256 or more).
    pub const MORE_DATA_PREFIX: u8 = 0x61;
    /// `6Cxx`: wrong Le, xx is the exact length.
    pub const WRONG_LE_PREFIX: u8 = 0x6C;
    /// `63Cx`: verification failed, x tries left.
    pub const VERIFY_FAIL_PREFIX: u16 = 0x63C0;
}

/// Whether the data field of a command carries a secret that must never be
/// shown in a trace (PINs, admin cryptograms, key group elements). Decided by
/// the instruction alone: a command sent with an unexpected class byte still
/// reaches a card (and a trace) with its secret.
pub fn command_data_is_secret(_cla: u8, ins: u8) -> bool {
    matches!(
        ins,
        ins::VERIFY
            | ins::CHANGE_REFERENCE_DATA
            | ins::RESET_RETRY_COUNTER
            | ins::EXTERNAL_AUTHENTICATE
            | ins::WRITE_KEY_ELEMENT
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
                | ins::GET_TRANSPORT_KEY
                | ins::CREDIT
                | ins::DEBIT
                | ins::BACKUP
                | ins::BACKUP_DATA
                | ins::BACKUP_COMPLETE
                | ins::GET_RESTORE_CHALLENGE
                | ins::RESTORE
                | ins::RESTORE_DATA
                | ins::RESTORE_COMPLETE
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
        assert!(!command_is_sensitive(0x00, ins::GET_DATA));
        assert!(!command_is_sensitive(0x00, ins::SELECT));
        assert!(!command_is_sensitive(0x80, ins::GET_BALANCE));
    }
}
