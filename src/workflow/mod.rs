//! Workflows: the operator's jobs, built from card-client calls, with every
//! response checked and every step recorded where the job says so.

pub mod backup;
pub mod duplicate;
pub mod files;
pub mod issue;

use crate::apdu::Channel;
use crate::card::CardClient;
use crate::error::{Error, Result};
use crate::transport::Reader;

/// Open a channel to `reader`'s card and SELECT the applet: the start of every
/// workflow. The card stays locked (PC/SC transaction) for as long as the
/// client lives.
pub fn open_card(reader: &mut dyn Reader, trace: bool) -> Result<CardClient<'_>> {
    let (caps, name) = (reader.caps(), reader.name().to_string());
    let tx = reader.transaction().map_err(|_| Error::CardRemoved(name.clone()))?;
    let mut client = CardClient::new(Channel::new(tx, caps, &name, trace));
    client.select()?;
    Ok(client)
}
