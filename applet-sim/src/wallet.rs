//! The card's electronic wallet (Matsushita FIG. 3; docs/PROTOCOL.md 2.40-2.43):
//! a fixed number of item slots (the profile's `wallet_capacity`), filled
//! only by LOAD ITEM under an issuer signature bound to this card, the item
//! and the card's own fresh challenge; spent by SPEND under the PIN.

use crate::applet::{Applet, HandlerResult};
use cardvault_proto::apdu::CommandApdu;
use cardvault_proto::cert;
use cardvault_proto::crypto;
use cardvault_proto::sw;
use cardvault_proto::wallet::{
    self, ItemLoad, ItemState, WalletItem, WalletListing, ITEM_ID_LEN, WALLET_CHALLENGE_LEN,
};
use openssl::x509::X509;
use serde::{Deserialize, Serialize};

/// Default wallet capacity (items) when a profile does not set one.
pub const DEFAULT_CAPACITY: u8 = 8;

/// The wallet in the card's persistent state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WalletState {
    /// How many items the wallet can hold (profile `wallet_capacity`).
    pub capacity: u8,
    /// The items, in load order.
    #[serde(default)]
    pub items: Vec<HeldItem>,
    /// The outstanding GET WALLET CHALLENGE (empty: none).
    #[serde(default, with = "hex")]
    pub challenge: Vec<u8>,
}

impl Default for WalletState {
    fn default() -> WalletState {
        WalletState {
            capacity: DEFAULT_CAPACITY,
            items: Vec::new(),
            challenge: Vec::new(),
        }
    }
}

/// One item slot: the encoded item (proto::wallet) and its state code.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HeldItem {
    #[serde(with = "hex")]
    pub item: Vec<u8>,
    pub state: u8,
}

impl HeldItem {
    fn parsed(&self) -> Option<WalletItem> {
        WalletItem::parse(&self.item).ok()
    }
}

impl Applet {
    fn wallet_item_index(&self, id: &[u8]) -> Option<usize> {
        self.state
            .wallet
            .items
            .iter()
            .position(|h| h.item.get(..ITEM_ID_LEN) == Some(id))
    }

    /// GET WALLET CHALLENGE `80 30 00 00 10`: a fresh challenge, kept (across
    /// power cycles) until a LOAD ITEM uses it. PIN required.
    pub(crate) fn get_wallet_challenge(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p1 != 0 || c.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        if !c.data.is_empty() {
            return Err(sw::WRONG_LENGTH);
        }
        if !self.session.pin_verified {
            return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        let ch = crypto::random::<WALLET_CHALLENGE_LEN>().to_vec();
        self.state.wallet.challenge = ch.clone();
        self.mark_dirty();
        Ok(ch)
    }

    /// LOAD ITEM `80 32 00 00`: data = proto::wallet::ItemLoad. PIN required.
    /// The outstanding challenge is used once, whatever the outcome. 6982
    /// unless the signer certificate verifies under the installed issuer
    /// root and its key signed (card number, item, challenge); 6A80 for an
    /// item that breaks the item rules or whose issuer is not the signer's
    /// common name, or whose id the wallet already holds; 6A84 when the
    /// wallet is full. Nothing but the challenge changes on a refusal.
    pub(crate) fn load_item(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p1 != 0 || c.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        if !self.session.pin_verified {
            return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        let challenge = std::mem::take(&mut self.state.wallet.challenge);
        if !challenge.is_empty() {
            self.mark_dirty();
        }
        let (load, raw) = ItemLoad::parse(&c.data).ok_or(sw::WRONG_DATA)?;
        let msg = wallet::load_message(&self.state.card_number, raw, &challenge);
        if challenge.len() != WALLET_CHALLENGE_LEN
            || !self.issuer_signature_verifies(&load.signer_certificate, &msg, &load.signature)
        {
            return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        let signer_cn = X509::from_der(&load.signer_certificate)
            .ok()
            .and_then(|c| cert::name_entry(c.subject_name(), openssl::nid::Nid::COMMONNAME));
        if signer_cn.as_deref() != Some(load.item.issuer.as_str()) {
            return Err(sw::WRONG_DATA);
        }
        if self.wallet_item_index(&load.item.id).is_some() {
            return Err(sw::WRONG_DATA);
        }
        if self.state.wallet.items.len() >= self.state.wallet.capacity as usize {
            return Err(sw::NOT_ENOUGH_MEMORY);
        }
        self.state.wallet.items.push(HeldItem {
            item: raw.to_vec(),
            state: ItemState::Held.code(),
        });
        self.mark_dirty();
        Ok(Vec::new())
    }

    /// READ WALLET `80 34 00 00 00`: proto::wallet::WalletListing. Public,
    /// like GET BALANCE.
    pub(crate) fn read_wallet(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p1 != 0 || c.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        if !c.data.is_empty() {
            return Err(sw::WRONG_LENGTH);
        }
        let w = &self.state.wallet;
        let items = w
            .items
            .iter()
            .filter_map(|h| Some((ItemState::from_code(h.state)?, h.parsed()?)))
            .collect();
        Ok(WalletListing {
            capacity: w.capacity,
            items,
        }
        .encode())
    }

    /// SPEND `80 36 00 00 14`: item id (16) || amount (4). PIN required.
    /// Answers the item's remaining balance (4); an item spent down to 0
    /// leaves the wallet. 6A88 for an id the wallet does not hold, 6985 for
    /// an item that is not held (a deposit is pending), 6A80 for an amount
    /// of 0 or above the remaining balance.
    pub(crate) fn spend(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p1 != 0 || c.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        if c.data.len() != ITEM_ID_LEN + 4 {
            return Err(sw::WRONG_LENGTH);
        }
        if !self.session.pin_verified {
            return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        let (id, amount) = c.data.split_at(ITEM_ID_LEN);
        let amount = u32::from_be_bytes(amount.try_into().expect("4 bytes"));
        let i = self.wallet_item_index(id).ok_or(sw::REF_DATA_NOT_FOUND)?;
        let held = &self.state.wallet.items[i];
        if held.state != ItemState::Held.code() {
            return Err(sw::CONDITIONS_NOT_SATISFIED);
        }
        let mut item = held.parsed().ok_or(sw::UNKNOWN)?;
        if amount == 0 || amount > item.balance {
            return Err(sw::WRONG_DATA);
        }
        item.balance -= amount;
        if item.balance == 0 {
            self.state.wallet.items.remove(i);
        } else {
            self.state.wallet.items[i].item = item.encode();
        }
        self.mark_dirty();
        Ok(item.balance.to_be_bytes().to_vec())
    }
}

mod hex {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&cardvault_proto::to_hex(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        cardvault_proto::from_hex(&s).ok_or_else(|| serde::de::Error::custom("invalid hex"))
    }
}
