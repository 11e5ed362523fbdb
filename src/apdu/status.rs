//! Status words with their ISO 7816-4 meanings (the words come from the
//! protocol crate's status-word table).

use cardvault_proto::sw;
use std::fmt;

/// A status word (SW1 SW2) decoded to its ISO 7816-4 meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusWord {
    Ok,
    /// `61xx`: more bytes available with GET RESPONSE (0 means 256 or more).
    MoreData(u8),
    /// `6Cxx`: wrong Le; the exact length is given.
    WrongLe(u8),
    /// `63Cx`: verification failed, x tries left.
    VerifyFailed {
        tries_left: u8,
    },
    /// `6310`: more blocks follow (BACKUP / BACKUP DATA).
    MoreBlocks,
    /// `6283`: selected file or application invalidated.
    SelectedFileInvalidated,
    MemoryFailure,
    WrongLength,
    LogicalChannelNotSupported,
    SecureMessagingNotSupported,
    LastCommandOfChainExpected,
    ChainingNotSupported,
    SecurityStatusNotSatisfied,
    AuthMethodBlocked,
    ReferenceDataNotUsable,
    ConditionsNotSatisfied,
    WrongData,
    FunctionNotSupported,
    FileNotFound,
    NotEnoughMemory,
    WrongP1P2,
    ReferenceDataNotFound,
    InsNotSupported,
    ClaNotSupported,
    NoPreciseDiagnosis,
    Other(u16),
}

impl StatusWord {
    pub fn from_u16(v: u16) -> StatusWord {
        use StatusWord::*;
        match v {
            sw::OK => Ok,
            0x6100..=0x61FF => MoreData(v as u8),
            0x6C00..=0x6CFF => WrongLe(v as u8),
            0x63C0..=0x63CF => VerifyFailed {
                tries_left: (v & 0x0F) as u8,
            },
            sw::SELECTED_FILE_INVALIDATED => SelectedFileInvalidated,
            sw::MORE_BLOCKS => MoreBlocks,
            sw::MEMORY_FAILURE => MemoryFailure,
            sw::WRONG_LENGTH => WrongLength,
            sw::LOGICAL_CHANNEL_NOT_SUPPORTED => LogicalChannelNotSupported,
            sw::SECURE_MESSAGING_NOT_SUPPORTED => SecureMessagingNotSupported,
            sw::LAST_COMMAND_OF_CHAIN_EXPECTED => LastCommandOfChainExpected,
            sw::CHAINING_NOT_SUPPORTED => ChainingNotSupported,
            sw::SECURITY_STATUS_NOT_SATISFIED => SecurityStatusNotSatisfied,
            sw::AUTH_METHOD_BLOCKED => AuthMethodBlocked,
            sw::REF_DATA_NOT_USABLE => ReferenceDataNotUsable,
            sw::CONDITIONS_NOT_SATISFIED => ConditionsNotSatisfied,
            sw::WRONG_DATA => WrongData,
            sw::FUNC_NOT_SUPPORTED => FunctionNotSupported,
            sw::FILE_NOT_FOUND => FileNotFound,
            sw::NOT_ENOUGH_MEMORY => NotEnoughMemory,
            sw::WRONG_P1P2 => WrongP1P2,
            sw::REF_DATA_NOT_FOUND => ReferenceDataNotFound,
            sw::INS_NOT_SUPPORTED => InsNotSupported,
            sw::CLA_NOT_SUPPORTED => ClaNotSupported,
            sw::UNKNOWN => NoPreciseDiagnosis,
            other => Other(other),
        }
    }

    pub fn from_bytes(sw1: u8, sw2: u8) -> StatusWord {
        Self::from_u16(u16::from_be_bytes([sw1, sw2]))
    }

    pub fn to_u16(self) -> u16 {
        use StatusWord::*;
        match self {
            Ok => sw::OK,
            MoreData(n) => 0x6100 | n as u16,
            WrongLe(n) => 0x6C00 | n as u16,
            VerifyFailed { tries_left } => 0x63C0 | (tries_left & 0x0F) as u16,
            SelectedFileInvalidated => sw::SELECTED_FILE_INVALIDATED,
            MoreBlocks => sw::MORE_BLOCKS,
            MemoryFailure => sw::MEMORY_FAILURE,
            WrongLength => sw::WRONG_LENGTH,
            LogicalChannelNotSupported => sw::LOGICAL_CHANNEL_NOT_SUPPORTED,
            SecureMessagingNotSupported => sw::SECURE_MESSAGING_NOT_SUPPORTED,
            LastCommandOfChainExpected => sw::LAST_COMMAND_OF_CHAIN_EXPECTED,
            ChainingNotSupported => sw::CHAINING_NOT_SUPPORTED,
            SecurityStatusNotSatisfied => sw::SECURITY_STATUS_NOT_SATISFIED,
            AuthMethodBlocked => sw::AUTH_METHOD_BLOCKED,
            ReferenceDataNotUsable => sw::REF_DATA_NOT_USABLE,
            ConditionsNotSatisfied => sw::CONDITIONS_NOT_SATISFIED,
            WrongData => sw::WRONG_DATA,
            FunctionNotSupported => sw::FUNC_NOT_SUPPORTED,
            FileNotFound => sw::FILE_NOT_FOUND,
            NotEnoughMemory => sw::NOT_ENOUGH_MEMORY,
            WrongP1P2 => sw::WRONG_P1P2,
            ReferenceDataNotFound => sw::REF_DATA_NOT_FOUND,
            InsNotSupported => sw::INS_NOT_SUPPORTED,
            ClaNotSupported => sw::CLA_NOT_SUPPORTED,
            NoPreciseDiagnosis => sw::UNKNOWN,
            Other(v) => v,
        }
    }

    pub fn is_ok(self) -> bool {
        self == StatusWord::Ok
    }

    /// The meaning in words, without the hex code, from the protocol's one
    /// status-word table (`cardvault_proto::sw::TABLE`).
    pub fn text(self) -> String {
        sw::describe(self.to_u16())
    }
}

impl fmt::Display for StatusWord {
    /// `6982 security status not satisfied`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04X} {}", self.to_u16(), self.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_round_trips() {
        for v in [
            0x9000u16, 0x6103, 0x6C10, 0x63C2, 0x6982, 0x6983, 0x6A82, 0x6D00, 0x6E00, 0x6400, 0x1234,
        ] {
            assert_eq!(StatusWord::from_u16(v).to_u16(), v);
        }
        assert_eq!(
            StatusWord::from_u16(0x6982).to_string(),
            "6982 security status not satisfied"
        );
        assert_eq!(StatusWord::from_u16(0x63C1), StatusWord::VerifyFailed { tries_left: 1 });
    }

    #[test]
    fn every_status_word_of_the_protocol_table_decodes_and_prints_its_meaning() {
        for e in cardvault_proto::sw::TABLE {
            let s = StatusWord::from_u16(e.code);
            assert_eq!(s.to_u16(), e.code, "{}", e.name);
            assert_eq!(s.to_string(), format!("{:04X} {}", e.code, e.meaning));
        }
    }
}
