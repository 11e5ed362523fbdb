//! The card's electronic wallet (Matsushita FIG. 3; docs/PROTOCOL.md 2.40-2.43):
//! a fixed number of item slots (the profile's `wallet_capacity`), filled
//! only by LOAD ITEM under an issuer signature bound to this card, the item
//! and the card's own fresh challenge; spent by SPEND under the PIN.

use crate::applet::{Applet, HandlerResult};
use cardvault_proto::apdu::CommandApdu;
use cardvault_proto::cert;
use cardvault_proto::crypto::{self, KeyPair};
use cardvault_proto::safe;
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
    /// The wallet key (AES-256, generated on the card at the first deposit;
    /// never readable): seals deposited items.
    #[serde(default, with = "hex")]
    pub key: Vec<u8>,
    /// The registration certificates of deposited items (proto::safe).
    #[serde(default)]
    pub certificates: Vec<Hex>,
    /// Deliveries this card accepted, newest last (at most
    /// [`MAX_RECEIVED`]): a repeated delivery answers the same receipt, a
    /// delivery of the same deposit with another challenge is refused.
    #[serde(default)]
    pub received: Vec<Received>,
    /// The outstanding GET WITHDRAW CHALLENGE (empty: none).
    #[serde(default, with = "hex")]
    pub withdraw_challenge: Vec<u8>,
    /// Wallet keys replaced by ESCROW P1 = 02 (re-keying): they still open
    /// this card's older deposits; new deposits use the new key.
    #[serde(default)]
    pub old_keys: Vec<Hex>,
    /// Wallet keys of other cards, rebuilt from escrowed parts (ESCROW P1 =
    /// 01): they open those cards' deposits on this card.
    #[serde(default)]
    pub recovered: Vec<RecoveredKey>,
}

/// A lost card's wallet key, rebuilt on this card from its escrow.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecoveredKey {
    pub card_number: String,
    #[serde(with = "hex")]
    pub key: Vec<u8>,
}

/// Most registration certificates and remembered deliveries a card keeps.
pub const MAX_CERTIFICATES: usize = 32;
pub const MAX_RECEIVED: usize = 32;

/// Bytes kept as hex in the state file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Hex(#[serde(with = "hex")] pub Vec<u8>);

/// A delivery the card accepted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Received {
    #[serde(with = "hex")]
    pub safe_id: Vec<u8>,
    pub counter: u64,
    #[serde(with = "hex")]
    pub challenge: Vec<u8>,
    #[serde(with = "hex")]
    pub receipt: Vec<u8>,
}

impl Default for WalletState {
    fn default() -> WalletState {
        WalletState {
            capacity: DEFAULT_CAPACITY,
            items: Vec::new(),
            challenge: Vec::new(),
            key: Vec::new(),
            certificates: Vec::new(),
            received: Vec::new(),
            withdraw_challenge: Vec::new(),
            old_keys: Vec::new(),
            recovered: Vec::new(),
        }
    }
}

/// One item slot: the encoded item (proto::wallet) and its state code.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HeldItem {
    #[serde(with = "hex")]
    pub item: Vec<u8>,
    pub state: u8,
    /// A pending deposit: the DEPOSIT answer (proto::safe::SignedDeposit),
    /// answered again until the safe's certificate completes it.
    #[serde(default, with = "hex")]
    pub deposit: Vec<u8>,
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
            deposit: Vec::new(),
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

/// The electronic safe's side of the wallet (docs/PROTOCOL.md 2.44-2.47).
impl Applet {
    /// The card's signing key (the storing key of GET DATA `DF35`, certified
    /// by the issuer) and its certificate, when it has them.
    pub(crate) fn card_signing_key(&self) -> Option<(KeyPair, Vec<u8>)> {
        let s = &self.state.storing;
        if s.private_key.is_empty() || s.certificate.is_empty() {
            return None;
        }
        Some((KeyPair::from_private(&s.private_key).ok()?, s.certificate.clone()))
    }

    fn wallet_key(&mut self) -> Result<[u8; 32], u16> {
        if self.state.wallet.key.len() != 32 {
            self.state.wallet.key = crypto::random::<32>().to_vec();
            self.mark_dirty();
        }
        Ok(self.state.wallet.key[..].try_into().expect("32 bytes"))
    }

    /// DEPOSIT `80 38`: P1 = 00 begin (data: item id (16) ‖ summary mask
    /// (1) ‖ safe id (16)); P1 = 01 complete (data: proto::safe::completion_data). PIN.
    pub(crate) fn deposit(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p2 != 0 || c.p1 > 1 {
            return Err(sw::WRONG_P1P2);
        }
        if !self.session.pin_verified {
            return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        if c.p1 == 0 {
            self.deposit_begin(c)
        } else {
            self.deposit_complete(c)
        }
    }

    fn deposit_begin(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.data.len() != ITEM_ID_LEN + 1 + safe::SAFE_ID_LEN {
            return Err(sw::WRONG_LENGTH);
        }
        let (id, mask) = (&c.data[..ITEM_ID_LEN], c.data[ITEM_ID_LEN]);
        let safe_id: [u8; safe::SAFE_ID_LEN] = c.data[ITEM_ID_LEN + 1..].try_into().expect("16 bytes");
        if mask == 0 || mask & !safe::summary_field::ALL != 0 {
            return Err(sw::WRONG_DATA);
        }
        let i = self.wallet_item_index(id).ok_or(sw::REF_DATA_NOT_FOUND)?;
        let held = &self.state.wallet.items[i];
        if held.state == ItemState::DepositPending.code() {
            // The same deposit again (the safe recognises it by its hash),
            // for the safe it names only.
            let same = safe::SignedDeposit::parse(&held.deposit)
                .and_then(|s| safe::Deposit::parse(&s.deposit))
                .is_some_and(|d| d.safe_id == safe_id);
            return match same {
                true => Ok(held.deposit.clone()),
                false => Err(sw::CONDITIONS_NOT_SATISFIED),
            };
        }
        let item = held.parsed().ok_or(sw::UNKNOWN)?;
        let (key, cert) = self.card_signing_key().ok_or(sw::CONDITIONS_NOT_SATISFIED)?;
        let wallet_key = self.wallet_key()?;
        let number = self.state.card_number.clone();
        let seal = |k: &[u8; 32], label: &[u8], pt: &[u8]| -> Result<Vec<u8>, u16> {
            let nonce = crypto::random::<{ crypto::GCM_NONCE_LEN }>();
            let aad = safe::Deposit::aad(label, &number, &item.id);
            let mut v = nonce.to_vec();
            v.extend_from_slice(&crypto::seal(k, &nonce, &aad, pt).map_err(|_| sw::UNKNOWN)?);
            Ok(v)
        };
        let sealed_item = seal(&wallet_key, safe::ITEM_SEAL_LABEL, &item.encode())?;
        let wrapped_wallet_key = match <[u8; 32]>::try_from(&self.state.common_key[..]) {
            Ok(common) => seal(&common, safe::WALLET_KEY_LABEL, &wallet_key)?,
            Err(_) => Vec::new(),
        };
        let deposit = safe::Deposit {
            safe_id,
            card_number: number.clone(),
            item_id: item.id,
            summary: safe::summary(&item, mask),
            wrapped_wallet_key,
            sealed_item,
        }
        .encode();
        let signature = crypto::sign_p256(&key, &safe::Deposit::message(&deposit)).map_err(|_| sw::UNKNOWN)?;
        let answer = safe::SignedDeposit {
            deposit,
            signature: signature.try_into().map_err(|_| sw::UNKNOWN)?,
            card_certificate: cert,
        }
        .encode();
        let held = &mut self.state.wallet.items[i];
        held.state = ItemState::DepositPending.code();
        held.deposit = answer.clone();
        self.mark_dirty();
        Ok(answer)
    }

    fn deposit_complete(&mut self, c: &CommandApdu) -> HandlerResult {
        let (cert, safe_cert) = safe::parse_completion(&c.data).ok_or(sw::WRONG_DATA)?;
        if !self.issuer_signature_verifies(safe_cert, &cert.message(), &cert.signature) {
            return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        if cert.card_number != self.state.card_number {
            return Err(sw::WRONG_DATA);
        }
        let encoded = cert.encode();
        let Some(i) = self.wallet_item_index(&cert.item_id) else {
            // Completed before (the answer was lost): the same certificate.
            return match self.state.wallet.certificates.iter().any(|h| h.0 == encoded) {
                true => Ok(Vec::new()),
                false => Err(sw::REF_DATA_NOT_FOUND),
            };
        };
        let held = &self.state.wallet.items[i];
        if held.state != ItemState::DepositPending.code() {
            return Err(sw::CONDITIONS_NOT_SATISFIED);
        }
        let signed = safe::SignedDeposit::parse(&held.deposit).ok_or(sw::UNKNOWN)?;
        let deposit = safe::Deposit::parse(&signed.deposit).ok_or(sw::UNKNOWN)?;
        if crypto::sha256(&signed.deposit) != cert.stored_hash
            || deposit.safe_id != cert.safe_id
            || safe::summary_digest(&deposit.summary) != cert.summary_digest
        {
            return Err(sw::WRONG_DATA);
        }
        if self.state.wallet.certificates.len() >= MAX_CERTIFICATES {
            return Err(sw::NOT_ENOUGH_MEMORY);
        }
        // One state write: the certificate in, the item out.
        self.state.wallet.items.remove(i);
        self.state.wallet.certificates.push(Hex(encoded));
        self.mark_dirty();
        Ok(Vec::new())
    }

    /// GET WITHDRAW CHALLENGE `80 3A 00 00 10`: PIN required.
    pub(crate) fn get_withdraw_challenge(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p1 != 0 || c.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        if !c.data.is_empty() {
            return Err(sw::WRONG_LENGTH);
        }
        if !self.session.pin_verified {
            return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        let ch = crypto::random::<{ safe::CHALLENGE_LEN }>().to_vec();
        self.state.wallet.withdraw_challenge = ch.clone();
        self.mark_dirty();
        Ok(ch)
    }

    /// WITHDRAW `80 3C 00 00`: data = proto::safe::WithdrawCommand. PIN.
    /// Answers the receipt (proto::safe::Receipt).
    pub(crate) fn withdraw(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p1 != 0 || c.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        if !self.session.pin_verified {
            return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        let cmd = safe::WithdrawCommand::parse(&c.data).ok_or(sw::WRONG_DATA)?;
        let d = safe::Delivery::parse(&cmd.delivery).ok_or(sw::WRONG_DATA)?;
        if !self.issuer_signature_verifies(&cmd.safe_certificate, &d.message(), &d.signature) {
            return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        if d.target_card != self.state.card_number {
            return Err(sw::WRONG_DATA);
        }
        let cert = &d.certificate;
        if let Some(r) = self
            .state
            .wallet
            .received
            .iter()
            .find(|r| r.safe_id == cert.safe_id && r.counter == cert.counter)
        {
            // The same delivery again: the same receipt. Another delivery of
            // a deposit this card already took: refused.
            return match r.challenge == d.challenge {
                true => Ok(r.receipt.clone()),
                false => Err(sw::CONDITIONS_NOT_SATISFIED),
            };
        }
        let challenge = std::mem::take(&mut self.state.wallet.withdraw_challenge);
        if !challenge.is_empty() {
            self.mark_dirty();
        }
        if challenge.len() != safe::CHALLENGE_LEN || challenge[..] != d.challenge {
            return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        let me = KeyPair::from_private(&self.state.ecka_private).map_err(|_| sw::CONDITIONS_NOT_SATISFIED)?;
        let aad = safe::Delivery::aad(cert, &d.target_card, &d.challenge);
        let tk = crypto::unwrap_key(&me, &d.wrapped_transport_key, &aad).map_err(|_| sw::WRONG_DATA)?;
        let stored = open_sealed(&tk, &aad, &d.sealed_deposit)?;
        if crypto::sha256(&stored) != cert.stored_hash {
            return Err(sw::WRONG_DATA);
        }
        let deposit = safe::Deposit::parse(&stored).ok_or(sw::WRONG_DATA)?;
        if deposit.card_number != cert.card_number
            || deposit.safe_id != cert.safe_id
            || deposit.item_id != cert.item_id
            || safe::summary_digest(&deposit.summary) != cert.summary_digest
        {
            return Err(sw::WRONG_DATA);
        }
        let w = &self.state.wallet;
        let keys: Vec<zeroize::Zeroizing<Vec<u8>>> = if deposit.card_number == self.state.card_number {
            std::iter::once(&w.key)
                .chain(w.old_keys.iter().map(|h| &h.0))
                .map(|k| zeroize::Zeroizing::new(k.clone()))
                .collect()
        } else {
            w.recovered
                .iter()
                .filter(|r| r.card_number == deposit.card_number)
                .map(|r| zeroize::Zeroizing::new(r.key.clone()))
                .collect()
        };
        let wallet_keys: Vec<zeroize::Zeroizing<[u8; 32]>> = if !keys.is_empty() {
            keys.iter()
                .filter_map(|k| <[u8; 32]>::try_from(&k[..]).ok().map(zeroize::Zeroizing::new))
                .collect()
        } else {
            // Onto another card: the issuer names this card and this certificate.
            let (sig, signer) = cmd.authorization.as_ref().ok_or(sw::SECURITY_STATUS_NOT_SATISFIED)?;
            let msg = safe::withdraw_authorization_message(&self.state.card_number, &cert.hash());
            if !self.issuer_signature_verifies(signer, &msg, sig) {
                return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
            }
            let common: [u8; 32] = self.state.common_key[..].try_into().map_err(|_| sw::WRONG_DATA)?;
            let aad = safe::Deposit::aad(safe::WALLET_KEY_LABEL, &deposit.card_number, &deposit.item_id);
            let k = open_sealed(&common, &aad, &deposit.wrapped_wallet_key)?;
            vec![zeroize::Zeroizing::new(k[..].try_into().map_err(|_| sw::WRONG_DATA)?)]
        };
        let aad = safe::Deposit::aad(safe::ITEM_SEAL_LABEL, &deposit.card_number, &deposit.item_id);
        let raw = wallet_keys
            .iter()
            .find_map(|k| open_sealed(k, &aad, &deposit.sealed_item).ok())
            .ok_or(sw::WRONG_DATA)?;
        let item = WalletItem::parse(&raw).map_err(|_| sw::WRONG_DATA)?;
        if item.id != cert.item_id || safe::summary(&item, deposit.summary[0]) != deposit.summary {
            return Err(sw::WRONG_DATA);
        }
        if self.wallet_item_index(&item.id).is_some() {
            return Err(sw::CONDITIONS_NOT_SATISFIED);
        }
        if self.state.wallet.items.len() >= self.state.wallet.capacity as usize {
            return Err(sw::NOT_ENOUGH_MEMORY);
        }
        let (key, _) = self.card_signing_key().ok_or(sw::CONDITIONS_NOT_SATISFIED)?;
        let mut receipt = safe::Receipt {
            safe_id: cert.safe_id,
            counter: cert.counter,
            card_number: self.state.card_number.clone(),
            challenge: d.challenge,
            signature: [0; 64],
        };
        let sig = crypto::sign_p256(&key, &receipt.message()).map_err(|_| sw::UNKNOWN)?;
        receipt.signature = sig.try_into().map_err(|_| sw::UNKNOWN)?;
        let receipt = receipt.encode();
        // One state write: the item in, its certificate out, the delivery remembered.
        let w = &mut self.state.wallet;
        w.items.push(HeldItem {
            item: raw.to_vec(),
            state: ItemState::Held.code(),
            deposit: Vec::new(),
        });
        w.certificates.retain(|h| {
            safe::RegistrationCertificate::parse(&h.0)
                .is_none_or(|c| (c.safe_id, c.counter) != (cert.safe_id, cert.counter))
        });
        w.received.push(Received {
            safe_id: cert.safe_id.to_vec(),
            counter: cert.counter,
            challenge: d.challenge.to_vec(),
            receipt: receipt.clone(),
        });
        if w.received.len() > MAX_RECEIVED {
            w.received.remove(0);
        }
        self.mark_dirty();
        Ok(receipt)
    }

    /// READ SAFE RECORDS `80 3E P1 00 00`: P1 = 00 the registration
    /// certificates, 01 the receipts of accepted deliveries; count (1) ‖ per
    /// entry length (2) ‖ entry. Public.
    pub(crate) fn read_safe_records(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        if !c.data.is_empty() {
            return Err(sw::WRONG_LENGTH);
        }
        let w = &self.state.wallet;
        let entries: Vec<Vec<u8>> = match c.p1 {
            0 => w.certificates.iter().map(|h| h.0.clone()).collect(),
            1 => w.received.iter().map(|r| r.receipt.clone()).collect(),
            _ => return Err(sw::WRONG_P1P2),
        };
        Ok(safe::encode_list(&entries))
    }
}

/// Wallet key escrow and re-keying (docs/PROTOCOL.md 2.48).
impl Applet {
    /// ESCROW `80 31`: P1 = 00 export (data: escrow key (32) ‖ count (1));
    /// P1 = 01 import (proto::safe::escrow_import_data); P1 = 02 re-key (no
    /// data). PIN; under SCP11.
    pub(crate) fn escrow(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p2 != 0 || c.p1 > 2 {
            return Err(sw::WRONG_P1P2);
        }
        if !self.session.pin_verified {
            return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        match c.p1 {
            0 => self.escrow_export(c),
            1 => self.escrow_import(c),
            _ => {
                if !c.data.is_empty() {
                    return Err(sw::WRONG_LENGTH);
                }
                let old = std::mem::take(&mut self.state.wallet.key);
                if old.len() == 32 {
                    self.state.wallet.old_keys.push(Hex(old));
                }
                let key = self.wallet_key()?;
                self.mark_dirty();
                Ok(safe::wallet_key_check(&key).to_vec())
            }
        }
    }

    fn escrow_export(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.data.len() != 33 {
            return Err(sw::WRONG_LENGTH);
        }
        let escrow_key: zeroize::Zeroizing<[u8; 32]> =
            zeroize::Zeroizing::new(c.data[..32].try_into().expect("32 bytes"));
        let count = c.data[32];
        if count == 0 || count > safe::MAX_ESCROW_PARTS {
            return Err(sw::WRONG_DATA);
        }
        let (signer, _) = self.card_signing_key().ok_or(sw::CONDITIONS_NOT_SATISFIED)?;
        let key = zeroize::Zeroizing::new(self.wallet_key()?);
        let check = safe::wallet_key_check(&key[..]);
        let pad = zeroize::Zeroizing::new(crypto::random::<32>());
        let parts: Vec<zeroize::Zeroizing<[u8; 32]>> = match count {
            1 => vec![key.clone()],
            _ => {
                let mut second = [0u8; 32];
                for (i, b) in second.iter_mut().enumerate() {
                    *b = key[i] ^ pad[i];
                }
                vec![pad.clone(), zeroize::Zeroizing::new(second)]
            }
        };
        let number = self.state.card_number.clone();
        let mut out = vec![count];
        for (i, part) in parts.iter().enumerate() {
            let index = i as u8 + 1;
            let nonce = crypto::random::<{ crypto::GCM_NONCE_LEN }>();
            let aad = safe::EscrowPart::aad(&number, index, count, &check);
            let mut sealed = nonce.to_vec();
            sealed.extend_from_slice(&crypto::seal(&escrow_key, &nonce, &aad, &part[..]).map_err(|_| sw::UNKNOWN)?);
            let mut p = safe::EscrowPart {
                card_number: number.clone(),
                index,
                count,
                key_check: check,
                sealed,
                signature: [0; 64],
            };
            let sig = crypto::sign_p256(&signer, &p.message()).map_err(|_| sw::UNKNOWN)?;
            p.signature = sig.try_into().map_err(|_| sw::UNKNOWN)?;
            let e = p.encode();
            out.extend_from_slice(&(e.len() as u16).to_be_bytes());
            out.extend_from_slice(&e);
        }
        Ok(out)
    }

    fn escrow_import(&mut self, c: &CommandApdu) -> HandlerResult {
        let (escrow_key, parts) = safe::parse_escrow_import(&c.data).ok_or(sw::WRONG_DATA)?;
        let escrow_key = zeroize::Zeroizing::new(escrow_key);
        let first = &parts[0];
        let complete = parts.len() == first.count as usize
            && parts.iter().enumerate().all(|(i, p)| {
                p.index as usize == i + 1
                    && p.count == first.count
                    && p.card_number == first.card_number
                    && p.key_check == first.key_check
            });
        if !complete {
            return Err(sw::WRONG_DATA);
        }
        let mut key = zeroize::Zeroizing::new([0u8; 32]);
        for p in &parts {
            let aad = safe::EscrowPart::aad(&p.card_number, p.index, p.count, &p.key_check);
            let part = open_sealed(&escrow_key, &aad, &p.sealed).map_err(|_| sw::SECURITY_STATUS_NOT_SATISFIED)?;
            if part.len() != 32 {
                return Err(sw::WRONG_DATA);
            }
            for (k, b) in key.iter_mut().zip(part.iter()) {
                *k ^= b;
            }
        }
        if safe::wallet_key_check(&key[..]) != first.key_check {
            return Err(sw::WRONG_DATA);
        }
        let w = &mut self.state.wallet;
        if !w
            .recovered
            .iter()
            .any(|r| r.card_number == first.card_number && r.key[..] == key[..])
        {
            w.recovered.push(RecoveredKey {
                card_number: first.card_number.clone(),
                key: key.to_vec(),
            });
        }
        self.mark_dirty();
        Ok(Vec::new())
    }
}

/// nonce (12) ‖ AES-256-GCM: opened, or 6A80.
fn open_sealed(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Result<zeroize::Zeroizing<Vec<u8>>, u16> {
    if sealed.len() < crypto::GCM_NONCE_LEN {
        return Err(sw::WRONG_DATA);
    }
    let (nonce, ct) = sealed.split_at(crypto::GCM_NONCE_LEN);
    crypto::open(key, nonce, aad, ct).map_err(|_| sw::WRONG_DATA)
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
