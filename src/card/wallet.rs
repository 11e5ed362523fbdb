//! Card commands of the electronic wallet (docs/PROTOCOL.md 2.40-2.43): each
//! sends its APDU and turns the answer into a typed value or a [`Refusal`].

use super::{CardClient, Refusal};
use crate::apdu::{Command, StatusWord};
use crate::error::{Error, Result};
use cardvault_proto::wallet::{ItemLoad, WalletListing, ITEM_ID_LEN, WALLET_CHALLENGE_LEN};

impl CardClient<'_> {
    /// GET WALLET CHALLENGE: the challenge the issuer's item load must name
    /// (the card keeps it until a LOAD ITEM uses it).
    pub fn wallet_challenge(&mut self) -> Result<Vec<u8>> {
        let ch = self.exec(&Command::get_wallet_challenge())?;
        if ch.len() != WALLET_CHALLENGE_LEN {
            return Err(Error::Malformed {
                command: "GET WALLET CHALLENGE",
                reason: format!("the challenge is {} bytes, not {WALLET_CHALLENGE_LEN}", ch.len()),
            });
        }
        Ok(ch)
    }

    /// READ WALLET: the wallet's capacity and items (the answer is bounded
    /// and checked item by item).
    pub fn read_wallet(&mut self) -> Result<WalletListing> {
        let raw = self.exec(&Command::read_wallet())?;
        WalletListing::parse(&raw).map_err(|reason| Error::Malformed {
            command: "READ WALLET",
            reason,
        })
    }

    /// LOAD ITEM with the issuer's signature. `capacity` names the wallet's
    /// size in the refusal when it is full.
    pub fn load_item(&mut self, load: &ItemLoad, capacity: u8) -> Result<()> {
        let r = self.transmit(&Command::load_item(load))?;
        match r.sw {
            StatusWord::Ok => Ok(()),
            StatusWord::SecurityStatusNotSatisfied => Err(Refusal::ItemLoadNotAuthorized.into()),
            StatusWord::WrongData => Err(Refusal::ItemRejected.into()),
            StatusWord::NotEnoughMemory => Err(Refusal::WalletFull(capacity).into()),
            sw => Err(Error::Card {
                command: "LOAD ITEM",
                sw,
            }),
        }
    }

    /// SPEND `amount` of item `id`; returns its remaining balance.
    pub fn spend(&mut self, id: &[u8; ITEM_ID_LEN], amount: u32, balance: u32) -> Result<u32> {
        let r = self.transmit(&Command::spend(id, amount))?;
        let name = || cardvault_proto::to_hex(id);
        match r.sw {
            StatusWord::Ok => {
                let b: [u8; 4] = r.data.try_into().map_err(|d: Vec<u8>| Error::Malformed {
                    command: "SPEND",
                    reason: format!("a balance is 4 bytes, the card sent {}", d.len()),
                })?;
                Ok(u32::from_be_bytes(b))
            }
            StatusWord::SecurityStatusNotSatisfied => Err(Refusal::PinRequired("SPEND").into()),
            StatusWord::ReferenceDataNotFound => Err(Refusal::NoSuchItem(name()).into()),
            StatusWord::ConditionsNotSatisfied => Err(Refusal::ItemPending(name()).into()),
            StatusWord::WrongData => Err(Refusal::SpendTooMuch(name(), balance).into()),
            sw => Err(Error::Card { command: "SPEND", sw }),
        }
    }
}
