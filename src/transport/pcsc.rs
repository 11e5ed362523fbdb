//! PC/SC readers (real readers and vpcd virtual readers) through the `pcsc` crate.

use super::{Caps, Reader, Transmit, TransportError};
use crate::error::{Error, Result};
use ::pcsc::{Card, Context, Protocols, Scope, ShareMode, MAX_BUFFER_SIZE_EXTENDED};
use std::ffi::CString;

/// A PC/SC reader as listed by the service.
#[derive(Debug, Clone)]
pub struct PcscReaderInfo {
    pub name: String,
    pub card_present: bool,
    pub atr: Option<Vec<u8>>,
}

/// Connect to the PC/SC service.
pub fn context() -> Result<Context> {
    Context::establish(Scope::User).map_err(|e| Error::NoPcsc(e.to_string()))
}

/// List readers with card presence and ATR. No service or no readers gives an empty list
/// only for "no readers"; a missing service is an error.
pub fn list(ctx: &Context) -> Result<Vec<PcscReaderInfo>> {
    let names = match ctx.list_readers_owned() {
        Ok(n) => n,
        Err(::pcsc::Error::NoReadersAvailable) => return Ok(vec![]),
        Err(e) => return Err(Error::NoPcsc(e.to_string())),
    };
    let mut states: Vec<::pcsc::ReaderState> = names
        .iter()
        .map(|n| ::pcsc::ReaderState::new(n.clone(), ::pcsc::State::UNAWARE))
        .collect();
    if !states.is_empty() {
        ctx.get_status_change(std::time::Duration::from_millis(0), &mut states)
            .or_else(|e| if e == ::pcsc::Error::Timeout { Ok(()) } else { Err(e) })
            .map_err(|e| Error::NoPcsc(e.to_string()))?;
    }
    Ok(states
        .iter()
        .map(|s| {
            let present =
                s.event_state().contains(::pcsc::State::PRESENT) && !s.event_state().contains(::pcsc::State::MUTE);
            PcscReaderInfo {
                name: s.name().to_string_lossy().into_owned(),
                card_present: present,
                atr: (present && !s.atr().is_empty()).then(|| s.atr().to_vec()),
            }
        })
        .collect())
}

/// A connected PC/SC card.
pub struct PcscReader {
    name: String,
    card: Card,
    atr: Vec<u8>,
    caps: Caps,
    // Keeps the service context alive for the card handle.
    _ctx: Context,
}

impl PcscReader {
    /// Connect (shared mode, T=0 or T=1) to the card in reader `name`.
    pub fn connect(ctx: Context, name: &str, extended: Option<bool>) -> Result<PcscReader> {
        let cname = CString::new(name).map_err(|_| Error::Reader(format!("bad reader name '{name}'")))?;
        let card = ctx
            .connect(&cname, ShareMode::Shared, Protocols::ANY)
            .map_err(|e| match e {
                ::pcsc::Error::NoSmartcard | ::pcsc::Error::RemovedCard => Error::NoCard(name.to_string()),
                ::pcsc::Error::UnknownReader => Error::Reader(format!("reader '{name}' is gone")),
                ::pcsc::Error::SharingViolation => {
                    Error::Reader(format!("reader '{name}' is in exclusive use by another application"))
                }
                other => Error::Pcsc {
                    reader: name.to_string(),
                    doing: "connecting",
                    source: other,
                },
            })?;
        let atr = card
            .status2_owned()
            .map_err(|e| pcsc_err(name, "reading the ATR", e))?
            .atr()
            .to_vec();
        let from_atr = super::atr::card_capabilities(&atr).map(|(_, ext)| ext).unwrap_or(false);
        Ok(PcscReader {
            name: name.to_string(),
            card,
            atr,
            caps: Caps {
                extended: extended.unwrap_or(from_atr),
            },
            _ctx: ctx,
        })
    }
}

fn pcsc_err(reader: &str, doing: &'static str, e: ::pcsc::Error) -> Error {
    match e {
        ::pcsc::Error::RemovedCard | ::pcsc::Error::NoSmartcard | ::pcsc::Error::ReaderUnavailable => {
            Error::CardRemoved(reader.to_string())
        }
        other => Error::Pcsc {
            reader: reader.to_string(),
            doing,
            source: other,
        },
    }
}

impl Reader for PcscReader {
    fn name(&self) -> &str {
        &self.name
    }

    fn atr(&self) -> &[u8] {
        &self.atr
    }

    fn caps(&self) -> Caps {
        self.caps
    }

    fn transaction(&mut self) -> Result<Box<dyn Transmit + '_>, TransportError> {
        let tx = self.card.transaction().map_err(map_tx_err)?;
        Ok(Box::new(PcscTransaction {
            tx,
            buf: vec![0u8; MAX_BUFFER_SIZE_EXTENDED],
        }))
    }
}

fn map_tx_err(e: ::pcsc::Error) -> TransportError {
    match e {
        // A card pulled (or a simulator killed) mid-transaction shows up as any of
        // these, depending on when pcscd noticed.
        ::pcsc::Error::RemovedCard
        | ::pcsc::Error::NoSmartcard
        | ::pcsc::Error::ReaderUnavailable
        | ::pcsc::Error::NotTransacted
        | ::pcsc::Error::UnpoweredCard
        | ::pcsc::Error::UnresponsiveCard => TransportError::CardRemoved,
        ::pcsc::Error::ResetCard => TransportError::CardReset,
        other => TransportError::Pcsc(other),
    }
}

struct PcscTransaction<'a> {
    tx: ::pcsc::Transaction<'a>,
    buf: Vec<u8>,
}

impl Transmit for PcscTransaction<'_> {
    fn transmit(&mut self, cmd: &[u8], resp: &mut Vec<u8>) -> Result<(), TransportError> {
        let r = self.tx.transmit(cmd, &mut self.buf).map_err(map_tx_err)?;
        if r.is_empty() {
            // Some drivers (vpcd among them) report a vanished card as an empty answer.
            return Err(TransportError::CardRemoved);
        }
        resp.clear();
        resp.extend_from_slice(r);
        Ok(())
    }
}

impl Drop for PcscTransaction<'_> {
    fn drop(&mut self) {
        // Zeroize the receive buffer: it may have carried key material.
        zeroize::Zeroize::zeroize(&mut self.buf);
    }
}
