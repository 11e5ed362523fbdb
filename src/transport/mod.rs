//! Transports: how command bytes reach a card. The card logic above never sees
//! `pcsc` types; it sees a [`Reader`] that hands out a [`Transmit`] transaction.

pub mod atr;
pub mod fault;
pub mod hostile;
pub mod pcsc;
pub mod sim;

/// Why a transmit failed below the APDU layer.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("card removed")]
    CardRemoved,
    #[error("card reset by another application")]
    CardReset,
    #[error("{0}")]
    Pcsc(::pcsc::Error),
    /// The card did not answer an APDU within the APDU timeout.
    #[error("no answer within {} s", .0.as_secs_f64())]
    Timeout(std::time::Duration),
}

/// What the reader path (reader + card) accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Extended-length APDUs (Lc up to 65535, Le up to 65536).
    pub extended: bool,
}

/// A locked session with one card: bytes in, bytes out.
pub trait Transmit {
    /// Send one command APDU; the response APDU (data + SW) replaces `resp`.
    fn transmit(&mut self, cmd: &[u8], resp: &mut Vec<u8>) -> Result<(), TransportError>;
}

/// A reader with a card in it.
pub trait Reader {
    /// Reader name as shown to the user (`Virtual PCD 00 00`, `sim:alice`).
    fn name(&self) -> &str;
    /// The card's answer to reset.
    fn atr(&self) -> &[u8];
    /// Capabilities after configuration overrides.
    fn caps(&self) -> Caps;
    /// Lock the card for a sequence of commands; released when dropped.
    fn transaction(&mut self) -> Result<Box<dyn Transmit + '_>, TransportError>;
    /// An issuer root (PEM) that cards in this reader are trusted under
    /// without configuration: the built-in test issuer for embedded cards;
    /// none for PC/SC readers.
    fn built_in_root(&self) -> Option<&'static [u8]> {
        None
    }
    /// A factory CA (PEM) that blank cards in this reader are trusted under
    /// for issuance without configuration: the built-in test factory for
    /// embedded cards; none for PC/SC readers.
    fn built_in_factory_root(&self) -> Option<&'static [u8]> {
        None
    }
    /// The issuer that certifies cards in this reader without being named
    /// (`issue` without `--issuer`, the factory-installed root of blank
    /// cards): the built-in **test** issuer for embedded cards (root, root
    /// key, operator certificate and key, PEM); none for PC/SC readers.
    fn built_in_issuer(&self) -> Option<BuiltInIssuer> {
        None
    }
}

/// The PEM files of a built-in (test) issuer, see [`Reader::built_in_issuer`].
#[derive(Debug, Clone, Copy)]
pub struct BuiltInIssuer {
    pub root: &'static [u8],
    pub root_key: &'static [u8],
    pub oce: &'static [u8],
    pub oce_key: &'static [u8],
    /// The registrar roots its cards trust for storing authorizations
    /// (issuer registrar, data registrar), installed at issuance unless
    /// `issue` names others.
    pub issuer_registrar: &'static [u8],
    pub data_registrar: &'static [u8],
}
