//! The codes both sides of the wire agree on, each defined once: instructions
//! ([`Ins`], and the `ins::X` byte constants derived from it), GET DATA / PUT
//! DATA tags ([`Tag`], `tag::X`) and the status-word table ([`sw::TABLE`],
//! `sw::X`, [`sw::describe`]). docs/PROTOCOL.md documents the same values.

/// Defines the [`Ins`] enum and the `ins` module of byte constants from one list.
macro_rules! instructions {
    ($( $(#[$m:meta])* $variant:ident, $konst:ident = $code:literal, $name:literal; )*) => {
        /// An instruction byte (INS) of the cardvault command set and of the
        /// ISO 7816-4 and GlobalPlatform commands the applet takes. The class
        /// byte each one is sent with is in docs/PROTOCOL.md.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum Ins {
            $( $(#[$m])* $variant = $code, )*
        }

        impl Ins {
            /// Every instruction.
            pub const ALL: &'static [Ins] = &[$( Ins::$variant, )*];

            /// The instruction byte.
            pub const fn code(self) -> u8 {
                self as u8
            }

            /// The command's name as traces and errors print it (`GET DATA`).
            pub const fn name(self) -> &'static str {
                match self {
                    $( Ins::$variant => $name, )*
                }
            }
        }

        impl TryFrom<u8> for Ins {
            /// The byte that names no instruction of the applet.
            type Error = u8;
            fn try_from(code: u8) -> Result<Ins, u8> {
                match code {
                    $( $code => Ok(Ins::$variant), )*
                    other => Err(other),
                }
            }
        }

        /// Instruction bytes, for byte-level code (parsers, masking rules):
        /// each is its [`Ins`] variant's code.
        pub mod ins {
            $( $(#[$m])* pub const $konst: u8 = super::Ins::$variant as u8; )*
        }
    };
}

instructions! {
    // ISO 7816-4 (CLA 00).
    Select, SELECT = 0xA4, "SELECT";
    GetData, GET_DATA = 0xCA, "GET DATA";
    GetResponse, GET_RESPONSE = 0xC0, "GET RESPONSE";
    Verify, VERIFY = 0x20, "VERIFY";
    ChangeReferenceData, CHANGE_REFERENCE_DATA = 0x24, "CHANGE REFERENCE DATA";
    ResetRetryCounter, RESET_RETRY_COUNTER = 0x2C, "RESET RETRY COUNTER";
    GetChallenge, GET_CHALLENGE = 0x84, "GET CHALLENGE";
    /// ISO 7816-4 names INS 82 "EXTERNAL / MUTUAL AUTHENTICATE": under CLA 80
    /// it is the SCP11a/c handshake ([`Ins::MUTUAL_AUTHENTICATE`]). Under CLA
    /// 00 (the former shared admin key's cryptogram) the card answers 6D00.
    ExternalAuthenticate, EXTERNAL_AUTHENTICATE = 0x82, "EXTERNAL AUTHENTICATE";
    /// PUT DATA (CLA 00): issuer personalization data objects, admin only.
    PutData, PUT_DATA = 0xDA, "PUT DATA";
    /// Proprietary (CLA 80): read application memory starting at page P1P2.
    ReadMemory, READ_MEMORY = 0xB0, "READ MEMORY";
    /// Proprietary (CLA 80): write application memory starting at page P1P2.
    WriteMemory, WRITE_MEMORY = 0xD6, "WRITE MEMORY";
    // Key groups and duplication (CLA 80).
    EndPersonalization, END_PERSONALIZATION = 0xE0, "END PERSONALIZATION";
    WriteKeyElement, WRITE_KEY_ELEMENT = 0xE1, "WRITE KEY ELEMENT";
    ResetKeyGroup, RESET_KEY_GROUP = 0xE2, "RESET KEY GROUP";
    GenerateKeyPair, GENERATE_KEY_PAIR = 0x46, "GENERATE KEY PAIR";
    TakeOutKey, TAKE_OUT_KEY = 0xE4, "TAKE OUT KEY";
    ImportKey, IMPORT_KEY = 0xE5, "IMPORT KEY";
    ConfirmDuplicate, CONFIRM_DUPLICATE = 0xE6, "CONFIRM DUPLICATE";
    ReleaseDuplicate, RELEASE_DUPLICATE = 0xE7, "RELEASE DUPLICATE";
    UnwrapFileKey, UNWRAP_FILE_KEY = 0xE8, "UNWRAP FILE KEY";
    SetPeerKey, SET_PEER_KEY = 0xE9, "SET PEER KEY";
    RewrapToPeer, REWRAP_TO_PEER = 0xEA, "REWRAP TO PEER";
    GetTransportKey, GET_TRANSPORT_KEY = 0xEB, "GET TRANSPORT KEY";
    SetMainKey, SET_MAIN_KEY = 0xEC, "SET MAIN KEY";
    /// DESTROY KEY (backup card): destroy an imported key and answer a receipt.
    DestroyKey, DESTROY_KEY = 0xED, "DESTROY KEY";
    /// LOAD DOMAIN KEY (issuer, SCP11a only, before END PERSONALIZATION):
    /// the issuer domain's card-common key (proto::domain).
    LoadDomainKey, LOAD_DOMAIN_KEY = 0xEE, "LOAD DOMAIN KEY";
    /// GENERATE ECKA KEY (issuer session, before END PERSONALIZATION): a new
    /// SCP11 key pair for the registration certificate; answers its public key.
    GenerateEckaKey, GENERATE_ECKA_KEY = 0xEF, "GENERATE ECKA KEY";
    /// Issuance: the card's signing key (its storing key), certified by the
    /// issuer into PUT DATA `DF35`.
    GenerateSigningKey, GENERATE_SIGNING_KEY = 0x48, "GENERATE SIGNING KEY";
    // Page backup and restore (CLA 80).
    Backup, BACKUP = 0xF0, "BACKUP";
    BackupData, BACKUP_DATA = 0xF1, "BACKUP DATA";
    BackupComplete, BACKUP_COMPLETE = 0xF2, "BACKUP COMPLETE";
    GetRestoreChallenge, GET_RESTORE_CHALLENGE = 0xF3, "GET RESTORE CHALLENGE";
    Restore, RESTORE = 0xF4, "RESTORE";
    RestoreData, RESTORE_DATA = 0xF5, "RESTORE DATA";
    RestoreComplete, RESTORE_COMPLETE = 0xF6, "RESTORE COMPLETE";
    // Value applications (CLA 80).
    GetBalance, GET_BALANCE = 0x5C, "GET BALANCE";
    /// GET LOAD CHALLENGE: the challenge an issuer load authorization must name.
    GetLoadChallenge, GET_LOAD_CHALLENGE = 0x5A, "GET LOAD CHALLENGE";
    /// CREDIT: amount and the issuer's load authorization (proto::load).
    Credit, CREDIT = 0x52, "CREDIT";
    Debit, DEBIT = 0x54, "DEBIT";
    // GlobalPlatform SCP11 (CLA 80).
    /// PERFORM SECURITY OPERATION: one certificate of the OCE chain (SCP11a/c).
    PerformSecurityOperation, PERFORM_SECURITY_OPERATION = 0x2A, "PERFORM SECURITY OPERATION";
    /// INTERNAL AUTHENTICATE (SCP11b).
    InternalAuthenticate, INTERNAL_AUTHENTICATE = 0x88, "INTERNAL AUTHENTICATE";
    // Storing authorization (CLA 80, proto::storing).
    /// STORING REQUEST: the card signs a storing request with a fresh challenge.
    StoringRequest, STORING_REQUEST = 0x76, "STORING REQUEST";
    /// STORE DATA UNDER AUTHORIZATION: an SA (or SAR) and the data.
    StoreDataUnderAuthorization, STORE_DATA_UNDER_AUTHORIZATION = 0x78, "STORE DATA UNDER AUTHORIZATION";
    // Electronic wallet (CLA 80, proto::wallet).
    /// GET WALLET CHALLENGE: the challenge an item load must name.
    GetWalletChallenge, GET_WALLET_CHALLENGE = 0x30, "GET WALLET CHALLENGE";
    /// LOAD ITEM: an item and the issuer's signature over it.
    LoadItem, LOAD_ITEM = 0x32, "LOAD ITEM";
    /// READ WALLET: capacity and every item with its state.
    ReadWallet, READ_WALLET = 0x34, "READ WALLET";
    /// SPEND: take an amount from an item's remaining balance.
    Spend, SPEND = 0x36, "SPEND";
    /// DEPOSIT: P1 = 00 the card seals and signs an item for a safe (the
    /// item becomes pending); P1 = 01 the safe's registration certificate,
    /// after which the card keeps it and deletes the item.
    Deposit, DEPOSIT = 0x38, "DEPOSIT";
    /// GET WITHDRAW CHALLENGE: the challenge a safe's delivery must name.
    GetWithdrawChallenge, GET_WITHDRAW_CHALLENGE = 0x3A, "GET WITHDRAW CHALLENGE";
    /// WITHDRAW: a safe's delivery of a deposited item; answers a receipt.
    Withdraw, WITHDRAW = 0x3C, "WITHDRAW";
    /// READ SAFE RECORDS: P1 = 00 registration certificates, 01 receipts.
    ReadSafeRecords, READ_SAFE_RECORDS = 0x3E, "READ SAFE RECORDS";
    /// ESCROW: P1 = 00 the card splits its wallet key into parts sealed
    /// under the owner's escrow key; P1 = 01 a replacement card takes the
    /// parts back for the card that escrowed them; P1 = 02 a new wallet key.
    Escrow, ESCROW = 0x31, "ESCROW";
}

impl Ins {
    /// MUTUAL AUTHENTICATE (SCP11a/c, CLA 80): the same instruction byte as
    /// EXTERNAL AUTHENTICATE, told apart by the class.
    pub const MUTUAL_AUTHENTICATE: Ins = Ins::ExternalAuthenticate;
}

/// Defines the [`Tag`] enum and the `tag` module of constants from one list.
macro_rules! tags {
    ($( $(#[$m:meta])* $variant:ident, $konst:ident = $code:literal; )*) => {
        /// A BER-TLV tag of the data objects of GET DATA / PUT DATA (P1P2 =
        /// tag) and of the SELECT answer.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum Tag {
            $( $(#[$m])* $variant = $code, )*
        }

        impl Tag {
            pub const ALL: &'static [Tag] = &[$( Tag::$variant, )*];

            /// The tag number (one or two bytes, as P1P2 carries it).
            pub const fn code(self) -> u16 {
                self as u16
            }
        }

        impl TryFrom<u16> for Tag {
            /// The number that names no data object of the applet.
            type Error = u16;
            fn try_from(code: u16) -> Result<Tag, u16> {
                match code {
                    $( $code => Ok(Tag::$variant), )*
                    other => Err(other),
                }
            }
        }

        /// Tag numbers, for byte-level code: each is its [`Tag`] variant's code.
        pub mod tag {
            $( $(#[$m])* pub const $konst: u16 = super::Tag::$variant as u16; )*
        }
    };
}

tags! {
    /// Card status template (constructed), holds all of the following.
    CardStatus, CARD_STATUS = 0x00E1;
    CardNumber, CARD_NUMBER = 0xDF01;
    Role, ROLE = 0xDF02;
    AppletVersion, APPLET_VERSION = 0xDF03;
    PinTriesLeft, PIN_TRIES_LEFT = 0xDF04;
    PinMaxTries, PIN_MAX_TRIES = 0xDF05;
    PageSize, PAGE_SIZE = 0xDF06;
    PageCount, PAGE_COUNT = 0xDF07;
    /// 1 byte: bit 0 = extended length supported, bit 1 = PIN verified in this session.
    Flags, FLAGS = 0xDF08;
    KeyGroupStatus, KEY_GROUP_STATUS = 0xDF10;
    KeyGroupKcv, KEY_GROUP_KCV = 0xDF11;
    PublicKey, PUBLIC_KEY = 0xDF12;
    ExportStatus, EXPORT_STATUS = 0xDF13;
    KeyOrigin, KEY_ORIGIN = 0xDF14;
    SourceCard, SOURCE_CARD = 0xDF15;
    PeerKey, PEER_KEY = 0xDF16;
    Issued, ISSUED = 0xDF17;
    MemberNumber, MEMBER_NUMBER = 0xDF20;
    Expiry, EXPIRY = 0xDF21;
    /// Application table: per application id(1) first_page(2) page_count(2)
    /// flags(1: bit 0 value, bit 1 restored) name_len(1) name.
    Applications, APPLICATIONS = 0xDF30;
    /// Backup counters: issued(4) base(4) newest_seen(4) changed_pages(2).
    BackupCounters, BACKUP_COUNTERS = 0xDF31;
    /// The card's issuer domain: domain id(16) generation(4); absent before
    /// LOAD DOMAIN KEY (proto::domain::DomainRef).
    Domain, DOMAIN = 0xDF32;
    /// Storage rules: per application id(1) rule(1: 0 holder, 1 authorized,
    /// 2 issuer-only) flags(1: bit 0 provider alone) owner_len(1) owner.
    ApplicationRules, APPLICATION_RULES = 0xDF34;
    /// The card's storing key certificate (DER X.509, proto::storing).
    /// The card's signing key certificate (its storing key): GET DATA, and
    /// PUT DATA at issuance.
    StoringCertificate, STORING_CERTIFICATE = 0xDF35;
    /// PUT DATA at issuance: the issuer registrar root (storing authorization).
    IssuerRegistrarRoot, ISSUER_REGISTRAR_ROOT = 0xBF23;
    /// PUT DATA at issuance: the data registrar root (storing authorization).
    DataRegistrarRoot, DATA_REGISTRAR_ROOT = 0xBF24;
    /// PUT DATA only: number of key group elements (1 byte, 1..8).
    KeyGroupSize, KEY_GROUP_SIZE = 0xDF22;
    /// PUT DATA only: export policy (1 byte, bit 0 = no take-out once a backup exists).
    ExportPolicy, EXPORT_POLICY = 0xDF23;
    /// File control information template returned by SELECT.
    Fci, FCI = 0x6F;
    FciAid, FCI_AID = 0x84;
    FciProprietary, FCI_PROPRIETARY = 0xA5;
}

/// Defines the status-word table and its constants from one list.
macro_rules! status_words {
    ($( $(#[$m:meta])* $konst:ident = $code:literal, $meaning:literal; )*) => {
        /// Status words (ISO 7816-4 section 5.1.3 meanings): one table of
        /// code, name and meaning, which the card answers with and the
        /// terminal decodes and prints.
        pub mod sw {
            $( $(#[$m])* pub const $konst: u16 = $code; )*

            /// One status word with a fixed value: its code, its constant's
            /// name and its meaning in words.
            #[derive(Debug, Clone, Copy, PartialEq, Eq)]
            pub struct Entry {
                pub code: u16,
                pub name: &'static str,
                pub meaning: &'static str,
            }

            /// Every status word with a fixed value. The families with a
            /// count in SW2 (`61xx`, `6Cxx`, `63Cx`) are in [`describe`].
            pub const TABLE: &[Entry] = &[$( Entry { code: $code, name: stringify!($konst), meaning: $meaning }, )*];

            /// `61xx`: xx more bytes available with GET RESPONSE (00 = 256 or more).
            pub const MORE_DATA_PREFIX: u8 = 0x61;
            /// `6Cxx`: wrong Le, xx is the exact length.
            pub const WRONG_LE_PREFIX: u8 = 0x6C;
            /// `63Cx`: verification failed, x tries left.
            pub const VERIFY_FAIL_PREFIX: u16 = 0x63C0;

            /// The table's entry for a fixed status word.
            pub fn lookup(code: u16) -> Option<&'static Entry> {
                TABLE.iter().find(|e| e.code == code)
            }

            /// The meaning of any status word in words, without the hex code:
            /// the table's, the counted families', or the ISO 7816-4 category
            /// of SW1.
            pub fn describe(code: u16) -> String {
                if let Some(e) = lookup(code) {
                    return e.meaning.into();
                }
                match code {
                    0x6100 => "256 or more bytes available (GET RESPONSE)".into(),
                    0x6101..=0x61FF => format!("{} more bytes available (GET RESPONSE)", code & 0xFF),
                    0x6C00..=0x6CFF => format!("wrong Le, exact length is {}", code & 0xFF),
                    0x63C0..=0x63CF => format!("verification failed, {} tries left", code & 0x0F),
                    _ => match code >> 8 {
                        0x62 | 0x63 => "warning".into(),
                        0x64 | 0x65 => "execution error".into(),
                        0x67..=0x6F => "checking error".into(),
                        _ => "unknown status".into(),
                    },
                }
            }
        }
    };
}

status_words! {
    OK = 0x9000, "ok";
    /// `6283`: selected file or application invalidated.
    SELECTED_FILE_INVALIDATED = 0x6283, "selected file invalidated";
    /// `6310`: more blocks follow (BACKUP / BACKUP DATA).
    MORE_BLOCKS = 0x6310, "more data available (next block follows)";
    MEMORY_FAILURE = 0x6581, "memory failure";
    WRONG_LENGTH = 0x6700, "wrong length";
    LOGICAL_CHANNEL_NOT_SUPPORTED = 0x6881, "logical channel not supported";
    SECURE_MESSAGING_NOT_SUPPORTED = 0x6882, "secure messaging not supported";
    LAST_COMMAND_OF_CHAIN_EXPECTED = 0x6883, "last command of the chain expected";
    CHAINING_NOT_SUPPORTED = 0x6884, "command chaining not supported";
    SECURITY_STATUS_NOT_SATISFIED = 0x6982, "security status not satisfied";
    AUTH_METHOD_BLOCKED = 0x6983, "authentication method blocked";
    REF_DATA_NOT_USABLE = 0x6984, "reference data not usable";
    CONDITIONS_NOT_SATISFIED = 0x6985, "conditions of use not satisfied";
    /// Secure messaging data objects expected but missing (a plain sensitive
    /// command in an open secure session).
    SM_DATA_MISSING = 0x6987, "expected secure messaging data objects missing";
    /// Secure messaging data objects incorrect (wrong MAC, bad padding).
    SM_DATA_INCORRECT = 0x6988, "incorrect secure messaging data objects";
    WRONG_DATA = 0x6A80, "incorrect parameters in the data field";
    FUNC_NOT_SUPPORTED = 0x6A81, "function not supported";
    FILE_NOT_FOUND = 0x6A82, "file or application not found";
    NOT_ENOUGH_MEMORY = 0x6A84, "not enough memory space";
    WRONG_P1P2 = 0x6A86, "incorrect parameters P1-P2";
    REF_DATA_NOT_FOUND = 0x6A88, "referenced data not found";
    INS_NOT_SUPPORTED = 0x6D00, "instruction not supported";
    CLA_NOT_SUPPORTED = 0x6E00, "class not supported";
    UNKNOWN = 0x6F00, "no precise diagnosis";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_instruction_round_trips_and_codes_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for &i in Ins::ALL {
            assert!(seen.insert(i.code()), "{} reuses {:02X}", i.name(), i.code());
            assert_eq!(Ins::try_from(i.code()), Ok(i));
        }
        assert_eq!(Ins::try_from(0x00), Err(0x00));
        assert_eq!(ins::SELECT, 0xA4);
        assert_eq!(Ins::MUTUAL_AUTHENTICATE.code(), 0x82);
        assert_eq!(Ins::GetData.name(), "GET DATA");
    }

    #[test]
    fn every_tag_round_trips_and_codes_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for &t in Tag::ALL {
            assert!(seen.insert(t.code()), "{t:?} reuses {:04X}", t.code());
            assert_eq!(Tag::try_from(t.code()), Ok(t));
        }
        assert_eq!(Tag::try_from(0xDFFF), Err(0xDFFF));
        assert_eq!(tag::BACKUP_COUNTERS, 0xDF31);
    }

    #[test]
    fn status_word_table_is_unique_and_describes_the_families() {
        let mut seen = std::collections::HashSet::new();
        for e in sw::TABLE {
            assert!(seen.insert(e.code), "{} listed twice", e.name);
            assert_eq!(sw::describe(e.code), e.meaning);
        }
        assert_eq!(sw::lookup(sw::WRONG_P1P2).unwrap().name, "WRONG_P1P2");
        assert_eq!(sw::describe(0x63C2), "verification failed, 2 tries left");
        assert_eq!(sw::describe(0x6100), "256 or more bytes available (GET RESPONSE)");
        assert_eq!(sw::describe(0x6C10), "wrong Le, exact length is 16");
        assert_eq!(sw::describe(0x6400), "execution error");
        assert_eq!(sw::describe(0x1234), "unknown status");
    }
}
