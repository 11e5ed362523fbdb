//! Errors and the exit codes they map to (documented in the README).

use crate::apdu::StatusWord;
use std::path::PathBuf;

/// Process exit codes. Stable: scripts depend on them.
pub mod exit {
    pub const OK: u8 = 0;
    /// Unexpected failure (I/O, internal).
    pub const FAILURE: u8 = 1;
    /// Bad command line, configuration or input file.
    pub const USAGE: u8 = 2;
    /// No PC/SC service, no such reader, no card, card removed.
    pub const READER: u8 = 3;
    /// The card refused a command, or is not a cardvault card.
    pub const CARD: u8 = 4;
    /// Wrong PIN, PIN blocked, or admin authentication failed.
    pub const AUTH: u8 = 5;
    /// Data failed an integrity or format check.
    pub const DATA: u8 = 6;
    /// The vault could not be opened, read or written.
    pub const VAULT: u8 = 7;
    /// Some items of a batch (holders, files) failed; each is named in the report.
    pub const SOME_FAILED: u8 = 8;
    /// Interrupted (SIGINT/SIGTERM): stopped after the current item; the
    /// report so far was printed.
    pub const INTERRUPTED: u8 = 130;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("configuration {path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("PC/SC service not available ({0}); start pcscd")]
    NoPcsc(String),
    #[error("{0}")]
    Reader(String),
    /// The reader to use cannot be chosen from the readers there are.
    #[error("{0}")]
    NoReaderChosen(#[from] crate::reader::NoReaderChosen),
    #[error("no card in reader '{0}'")]
    NoCard(String),
    #[error("the card was removed from reader '{0}' (or the reader went away) during the operation")]
    CardRemoved(String),
    /// The card stopped answering in the middle of an exchange.
    #[error("the card in reader '{reader}' did not answer within {secs} s (apdu timeout); remove and reinsert it")]
    CardTimeout { reader: String, secs: f64 },
    #[error("PC/SC error on reader '{reader}' while {doing}: {source}")]
    Pcsc {
        reader: String,
        doing: &'static str,
        source: pcsc::Error,
    },
    /// SELECT of the cardvault applet did not answer with its FCI: whatever
    /// else the card says, it is not a cardvault card.
    #[error("the card in '{reader}' is not a cardvault card (SELECT of the cardvault applet answered {answer})")]
    NotCardvault { reader: String, answer: String },
    /// The card's certificate chain does not lead to a trusted issuer root (or
    /// the card does not hold the certified key): it got no PIN and no secret.
    #[error("the card in '{reader}' is not certified by a trusted issuer: {reason}; no PIN or secret was sent to it")]
    UntrustedCard { reader: String, reason: String },
    /// A protected answer failed its R-MAC or decryption (or a command could
    /// not be wrapped): the secure session is closed.
    #[error("secure channel broken during {command}: {reason}; the session was closed")]
    SecureChannel { command: &'static str, reason: String },
    #[error("{command} refused by the card: {sw}")]
    Card { command: &'static str, sw: StatusWord },
    #[error("wrong PIN: {tries_left} tries left before the PIN is blocked")]
    WrongPin { tries_left: u8 },
    #[error("the PIN is blocked; the issuer must unblock it")]
    PinBlocked,
    /// A PKCS#11 token refused its user PIN (or the PIN is locked).
    #[error("{0}")]
    TokenPin(String),
    /// The card refused the issuer operator's certificate chain (SCP11a).
    #[error("the card in '{0}' does not accept this issuer's operator certificate (its chain does not lead to the issuer root installed on the card, or it expired)")]
    IssuerRefused(String),
    /// The card refused a command for a reason its status word names.
    #[error("{0}")]
    CardRefusal(#[from] crate::card::Refusal),
    /// The card refused an operation for a reason we can name.
    #[error("{0}")]
    Refused(String),
    /// A file or blob failed its integrity or format check.
    #[error("{0}")]
    Data(String),
    /// The vault could not be used; `source` keeps SQLite's own error.
    #[error("vault {path}: {reason}")]
    Vault {
        path: PathBuf,
        reason: String,
        #[source]
        source: Option<rusqlite::Error>,
    },
    /// A command that reads the vault was pointed at a path with none.
    #[error("no vault at {}", .0.display())]
    NoVault(PathBuf),
    #[error("the card answered {command} with a malformed response: {reason}")]
    Malformed { command: &'static str, reason: String },
    /// The embedded card's state could not be used (the simulated chip failed).
    #[error("embedded card: {0}")]
    Embedded(String),
    /// The embedded card is held by another process.
    #[error("embedded card: {0}")]
    EmbeddedBusy(String),
    /// A restore job that cannot start (nothing was written).
    #[error("{0}")]
    Restore(#[from] crate::workflow::backup::RestoreRefusal),
    /// A duplication that cannot go on (no key was moved).
    #[error("{0}")]
    Duplicate(#[from] crate::workflow::duplicate::DuplicateRefusal),
    /// A card that cannot be issued as asked (it goes to the reject bin).
    #[error("{0}")]
    Issue(#[from] crate::workflow::issue::IssueRefusal),
    /// An output file exists and replacing it was not asked for.
    #[error("{} already exists", .0.display())]
    OutputExists(PathBuf),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    /// An input file named on the command line (or in a secret source) that
    /// cannot be read: a usage error, found before any card is touched.
    #[error("{what}: {source}")]
    Input { what: String, source: std::io::Error },
    /// Some items of a batch failed (each is named in the report).
    #[error("{failed} of {total} {what} failed; each is named in the report")]
    SomeFailed {
        failed: usize,
        total: usize,
        what: &'static str,
    },
    /// The operator stopped the run; `done` items were finished first.
    #[error("interrupted: stopped after {done} of {total} {what}; the report above is complete up to there")]
    Interrupted {
        done: usize,
        total: usize,
        what: &'static str,
    },
    /// An electronic safe refused the request (nothing changed there).
    #[error("{0}")]
    SafeRefused(#[from] crate::safe::SafeRefusal),
    /// An electronic safe could not be reached or did not answer: the
    /// operation can be retried (`wallet resolve` settles what is pending).
    #[error("the safe at {address} did not answer ({reason}); retry, or settle with `wallet resolve`")]
    SafeUnreachable { address: String, reason: String },
    /// A fault in cardvault itself (a worker thread panicked): nothing the
    /// user did, and not a promise that no card was touched.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        use crate::workflow::duplicate::RefusalClass;
        use Error::*;
        match self {
            Usage(_) | Config { .. } | OutputExists(_) | Input { .. } => exit::USAGE,
            NoPcsc(_)
            | Reader(_)
            | NoReaderChosen(_)
            | NoCard(_)
            | CardRemoved(_)
            | CardTimeout { .. }
            | Pcsc { .. } => exit::READER,
            NotCardvault { .. } | Card { .. } | CardRefusal(_) | Refused(_) | UntrustedCard { .. } => exit::CARD,
            SecureChannel { .. } => exit::DATA,
            Data(_) => exit::DATA,
            Restore(
                crate::workflow::backup::RestoreRefusal::AuthorizationMismatch { .. }
                | crate::workflow::backup::RestoreRefusal::OtherDomain { .. }
                | crate::workflow::backup::RestoreRefusal::OtherCertificate { .. }
                | crate::workflow::backup::RestoreRefusal::ChallengeUsed { .. }
                | crate::workflow::backup::RestoreRefusal::SignerNotTrusted { .. }
                | crate::workflow::backup::RestoreRefusal::SignatureInvalid
                | crate::workflow::backup::RestoreRefusal::ChallengeNotOutstanding { .. }
                | crate::workflow::backup::RestoreRefusal::ChainNotAuthorized { .. }
                | crate::workflow::backup::RestoreRefusal::AuthorizedChainDiffers { .. }
                | crate::workflow::backup::RestoreRefusal::Rollback { .. },
            ) => exit::CARD,
            Restore(_) => exit::USAGE,
            Duplicate(d) => match d.class() {
                RefusalClass::Usage => exit::USAGE,
                RefusalClass::Card => exit::CARD,
                RefusalClass::Integrity => exit::DATA,
            },
            Issue(_) => exit::CARD,
            Vault { .. } | NoVault(_) => exit::VAULT,
            WrongPin { .. } | PinBlocked | IssuerRefused(_) | TokenPin(_) => exit::AUTH,
            Malformed { .. } => exit::DATA,
            EmbeddedBusy(_) => exit::READER,
            Embedded(_) | Io { .. } | Internal(_) => exit::FAILURE,
            SafeRefused(_) => exit::CARD,
            SafeUnreachable { .. } => exit::READER,
            SomeFailed { .. } => exit::SOME_FAILED,
            Interrupted { .. } => exit::INTERRUPTED,
        }
    }

    /// Stable machine-readable kind for `--json` error output.
    pub fn kind(&self) -> &'static str {
        use crate::workflow::duplicate::RefusalClass;
        use Error::*;
        match self {
            Usage(_) | OutputExists(_) => "usage",
            Config { .. } => "config",
            NoPcsc(_) => "no_pcsc",
            Reader(_) | NoReaderChosen(_) => "reader",
            NoCard(_) => "no_card",
            CardRemoved(_) => "card_removed",
            CardTimeout { .. } => "card_timeout",
            Pcsc { .. } => "pcsc",
            NotCardvault { .. } => "not_cardvault",
            Card { .. } => "refused",
            UntrustedCard { .. } => "untrusted_card",
            SecureChannel { .. } => "secure_channel",
            CardRefusal(_) | Refused(_) => "refused",
            Data(_) => "data_integrity",
            Restore(
                crate::workflow::backup::RestoreRefusal::AuthorizationMismatch { .. }
                | crate::workflow::backup::RestoreRefusal::OtherDomain { .. }
                | crate::workflow::backup::RestoreRefusal::OtherCertificate { .. }
                | crate::workflow::backup::RestoreRefusal::ChallengeUsed { .. }
                | crate::workflow::backup::RestoreRefusal::SignerNotTrusted { .. }
                | crate::workflow::backup::RestoreRefusal::SignatureInvalid
                | crate::workflow::backup::RestoreRefusal::ChallengeNotOutstanding { .. }
                | crate::workflow::backup::RestoreRefusal::ChainNotAuthorized { .. }
                | crate::workflow::backup::RestoreRefusal::AuthorizedChainDiffers { .. }
                | crate::workflow::backup::RestoreRefusal::Rollback { .. },
            ) => "refused",
            Restore(_) => "usage",
            Duplicate(d) => match d.class() {
                RefusalClass::Usage => "usage",
                RefusalClass::Card => "refused",
                RefusalClass::Integrity => "data_integrity",
            },
            Issue(_) => "refused",
            Vault { .. } | NoVault(_) => "vault",
            WrongPin { .. } => "wrong_pin",
            PinBlocked => "pin_blocked",
            TokenPin(_) => "token_pin",
            IssuerRefused(_) => "issuer_refused",
            Malformed { .. } => "malformed_response",
            Embedded(_) | EmbeddedBusy(_) => "embedded_card",
            Io { .. } => "io",
            Input { .. } => "input",
            Internal(_) => "internal",
            SafeRefused(_) => "safe_refused",
            SafeUnreachable { .. } => "safe_unreachable",
            SomeFailed { .. } => "some_failed",
            Interrupted { .. } => "interrupted",
        }
    }

    /// A vault failure with SQLite's error kept as the source.
    pub fn vault(path: &std::path::Path, e: rusqlite::Error) -> Error {
        Error::Vault {
            path: path.to_path_buf(),
            reason: e.to_string(),
            source: Some(e),
        }
    }

    /// A vault failure that is not SQLite's (a newer schema, a bad file).
    pub fn vault_msg(path: &std::path::Path, reason: impl Into<String>) -> Error {
        Error::Vault {
            path: path.to_path_buf(),
            reason: reason.into(),
            source: None,
        }
    }

    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// An input file the operator named could not be read (exit code 2).
    pub fn input(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Input {
            what: what.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
