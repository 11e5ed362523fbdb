//! The electronic wallet (Matsushita, FIG. 3): itemized electronic value on
//! the card, and the issuer-signed load that is the only way an item enters.
//!
//! An item is one record of the wallet: kind, name, unit price, quantity,
//! total, place of use, validity period, remaining balance and remarks, plus
//! the item id and the value issuer that signed its load ([`WalletItem`],
//! encoded by [`WalletItem::encode`]). The card hands out a wallet challenge
//! (GET WALLET CHALLENGE, kept across power cycles until a LOAD ITEM uses
//! it); the issuer signs [`load_message`] (card number, the encoded item, the
//! challenge) with its authorization signer key, the one that signs CREDIT
//! loads; LOAD ITEM carries [`ItemLoad`] and the card checks the signer's
//! certificate under its installed issuer root before it stores the item.

use crate::backup::lv;
use std::fmt;
use std::str::FromStr;

/// Domain separation label of the item load signature.
pub const ITEM_LOAD_LABEL: &[u8] = b"cardvault wallet item load v1";
/// Length of a wallet challenge and of an item id.
pub const WALLET_CHALLENGE_LEN: usize = 16;
pub const ITEM_ID_LEN: usize = 16;
/// Longest text field of an item (name, place, remarks, issuer), bytes.
pub const MAX_TEXT: usize = 64;
/// Length of an ECDSA P-256 signature (r || s).
pub const SIGNATURE_LEN: usize = 64;
/// Fixed part of an encoded item: id (16), kind (1), six 4-byte numbers.
const FIXED_LEN: usize = ITEM_ID_LEN + 1 + 6 * 4;
/// Longest encoded item.
pub const MAX_ITEM_LEN: usize = FIXED_LEN + 4 * (1 + MAX_TEXT);
/// Most items a wallet may hold (its capacity is set by the card profile).
pub const MAX_CAPACITY: u8 = 32;

/// What an item of electronic value is (FIG. 3 "kind").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemKind {
    Cash,
    Ticket,
    Coupon,
    Other,
}

impl ItemKind {
    pub const ALL: [ItemKind; 4] = [ItemKind::Cash, ItemKind::Ticket, ItemKind::Coupon, ItemKind::Other];

    pub fn code(self) -> u8 {
        match self {
            ItemKind::Cash => 1,
            ItemKind::Ticket => 2,
            ItemKind::Coupon => 3,
            ItemKind::Other => 4,
        }
    }

    pub fn from_code(c: u8) -> Option<ItemKind> {
        ItemKind::ALL.into_iter().find(|k| k.code() == c)
    }
}

impl fmt::Display for ItemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ItemKind::Cash => "cash",
            ItemKind::Ticket => "ticket",
            ItemKind::Coupon => "coupon",
            ItemKind::Other => "other",
        })
    }
}

impl FromStr for ItemKind {
    type Err = String;
    fn from_str(s: &str) -> Result<ItemKind, String> {
        ItemKind::ALL
            .into_iter()
            .find(|k| k.to_string() == s)
            .ok_or_else(|| format!("unknown item kind {s:?} (cash, ticket, coupon, other)"))
    }
}

/// A date of the validity period as the card keeps it: YYYYMMDD as a number,
/// 0 for "no limit".
pub type Date = u32;

/// One item of electronic value (FIG. 3), as the card stores it and the
/// issuer signs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletItem {
    pub id: [u8; ITEM_ID_LEN],
    pub kind: ItemKind,
    pub name: String,
    pub unit_price: u32,
    pub quantity: u32,
    pub total: u32,
    /// What is left to spend, in the item's units (≤ total).
    pub balance: u32,
    pub valid_from: Date,
    pub valid_until: Date,
    pub place: String,
    pub remarks: String,
    /// The value issuer (the load signer certificate's common name).
    pub issuer: String,
}

/// Why an item encoding or an item's fields are not acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemError {
    Truncated,
    TrailingBytes,
    UnknownKind(u8),
    TextTooLong(&'static str),
    NotUtf8(&'static str),
    BalanceAboveTotal,
    TotalMismatch,
    ValidityReversed,
}

impl fmt::Display for ItemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ItemError::Truncated => write!(f, "the item is truncated"),
            ItemError::TrailingBytes => write!(f, "bytes follow the item"),
            ItemError::UnknownKind(k) => write!(f, "unknown item kind {k}"),
            ItemError::TextTooLong(n) => write!(f, "the item's {n} is longer than {MAX_TEXT} bytes"),
            ItemError::NotUtf8(n) => write!(f, "the item's {n} is not UTF-8"),
            ItemError::BalanceAboveTotal => write!(f, "the remaining balance is above the total"),
            ItemError::TotalMismatch => write!(f, "the total is not unit price times quantity"),
            ItemError::ValidityReversed => write!(f, "the validity period ends before it starts"),
        }
    }
}

impl std::error::Error for ItemError {}

impl WalletItem {
    /// The rules every item obeys (checked by the card on LOAD ITEM and by
    /// the terminal before it asks for a signature).
    pub fn check(&self) -> Result<(), ItemError> {
        for (n, t) in self.texts() {
            if t.len() > MAX_TEXT {
                return Err(ItemError::TextTooLong(n));
            }
        }
        if self.unit_price.checked_mul(self.quantity) != Some(self.total) {
            return Err(ItemError::TotalMismatch);
        }
        if self.balance > self.total {
            return Err(ItemError::BalanceAboveTotal);
        }
        if self.valid_from != 0 && self.valid_until != 0 && self.valid_until < self.valid_from {
            return Err(ItemError::ValidityReversed);
        }
        Ok(())
    }

    fn texts(&self) -> [(&'static str, &str); 4] {
        [
            ("name", &self.name),
            ("place", &self.place),
            ("remarks", &self.remarks),
            ("issuer", &self.issuer),
        ]
    }

    /// id (16) || kind (1) || unit price || quantity || total || balance ||
    /// valid from || valid until (4 each, big endian) || name || place ||
    /// remarks || issuer (each: length (1) || UTF-8).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(MAX_ITEM_LEN);
        v.extend_from_slice(&self.id);
        v.push(self.kind.code());
        for n in [
            self.unit_price,
            self.quantity,
            self.total,
            self.balance,
            self.valid_from,
            self.valid_until,
        ] {
            v.extend_from_slice(&n.to_be_bytes());
        }
        for (_, t) in self.texts() {
            v.extend_from_slice(&lv(t));
        }
        v
    }

    /// Parse one encoded item (the whole of `data`) and check its rules.
    pub fn parse(data: &[u8]) -> Result<WalletItem, ItemError> {
        let (item, rest) = WalletItem::parse_prefix(data)?;
        if !rest.is_empty() {
            return Err(ItemError::TrailingBytes);
        }
        Ok(item)
    }

    /// Parse an item at the start of `data`; returns it and what follows.
    pub fn parse_prefix(data: &[u8]) -> Result<(WalletItem, &[u8]), ItemError> {
        if data.len() < FIXED_LEN {
            return Err(ItemError::Truncated);
        }
        let id: [u8; ITEM_ID_LEN] = data[..ITEM_ID_LEN].try_into().expect("16 bytes");
        let kind = ItemKind::from_code(data[ITEM_ID_LEN]).ok_or(ItemError::UnknownKind(data[ITEM_ID_LEN]))?;
        let num = |i: usize| {
            let o = ITEM_ID_LEN + 1 + 4 * i;
            u32::from_be_bytes(data[o..o + 4].try_into().expect("4 bytes"))
        };
        let mut rest = &data[FIXED_LEN..];
        let mut text = |name: &'static str| -> Result<String, ItemError> {
            let (&n, r) = rest.split_first().ok_or(ItemError::Truncated)?;
            let n = n as usize;
            if n > MAX_TEXT {
                return Err(ItemError::TextTooLong(name));
            }
            if r.len() < n {
                return Err(ItemError::Truncated);
            }
            let s = std::str::from_utf8(&r[..n]).map_err(|_| ItemError::NotUtf8(name))?;
            rest = &r[n..];
            Ok(s.to_string())
        };
        let name = text("name")?;
        let place = text("place")?;
        let remarks = text("remarks")?;
        let issuer = text("issuer")?;
        let item = WalletItem {
            id,
            kind,
            name,
            unit_price: num(0),
            quantity: num(1),
            total: num(2),
            balance: num(3),
            valid_from: num(4),
            valid_until: num(5),
            place,
            remarks,
            issuer,
        };
        item.check()?;
        Ok((item, rest))
    }
}

/// The message the issuer signs to load an item (ECDSA P-256, SHA-256):
/// label || len(card) || card number || encoded item || challenge (16).
pub fn load_message(card_number: &str, item: &[u8], challenge: &[u8]) -> Vec<u8> {
    let mut m = ITEM_LOAD_LABEL.to_vec();
    m.extend_from_slice(&lv(card_number));
    m.extend_from_slice(item);
    m.extend_from_slice(challenge);
    m
}

/// The LOAD ITEM data field: the encoded item's length (2) || the item ||
/// the issuer's signature over [`load_message`] (64) || the signer's
/// certificate (DER, under the issuer root installed on the card).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemLoad {
    pub item: WalletItem,
    pub signature: [u8; SIGNATURE_LEN],
    pub signer_certificate: Vec<u8>,
}

impl ItemLoad {
    pub fn encode(&self) -> Vec<u8> {
        let item = self.item.encode();
        let mut v = (item.len() as u16).to_be_bytes().to_vec();
        v.extend_from_slice(&item);
        v.extend_from_slice(&self.signature);
        v.extend_from_slice(&self.signer_certificate);
        v
    }

    /// Parse the LOAD ITEM data field; also returns the encoded item exactly
    /// as it arrived (what the signature covers).
    pub fn parse(data: &[u8]) -> Option<(ItemLoad, &[u8])> {
        let (n, rest) = data.split_first_chunk::<2>()?;
        let n = u16::from_be_bytes(*n) as usize;
        if n > MAX_ITEM_LEN || rest.len() <= n + SIGNATURE_LEN {
            return None;
        }
        let (raw, rest) = rest.split_at(n);
        let item = WalletItem::parse(raw).ok()?;
        let (s, cert) = rest.split_at(SIGNATURE_LEN);
        Some((
            ItemLoad {
                item,
                signature: s.try_into().ok()?,
                signer_certificate: cert.to_vec(),
            },
            raw,
        ))
    }
}

/// Where an item on the card stands. Only a `Held` item can be spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemState {
    /// On the card, spendable.
    Held,
    /// A deposit has begun: not spendable until the deposit completes or is
    /// resolved.
    DepositPending,
}

impl ItemState {
    pub fn code(self) -> u8 {
        match self {
            ItemState::Held => 0,
            ItemState::DepositPending => 1,
        }
    }

    pub fn from_code(c: u8) -> Option<ItemState> {
        match c {
            0 => Some(ItemState::Held),
            1 => Some(ItemState::DepositPending),
            _ => None,
        }
    }
}

impl fmt::Display for ItemState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ItemState::Held => "held",
            ItemState::DepositPending => "deposit-pending",
        })
    }
}

/// The READ WALLET answer: capacity (1) || count (1) || per item: state (1)
/// || length (2) || encoded item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletListing {
    pub capacity: u8,
    pub items: Vec<(ItemState, WalletItem)>,
}

impl WalletListing {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![self.capacity, self.items.len() as u8];
        for (s, item) in &self.items {
            let e = item.encode();
            v.push(s.code());
            v.extend_from_slice(&(e.len() as u16).to_be_bytes());
            v.extend_from_slice(&e);
        }
        v
    }

    /// Parse a READ WALLET answer; bounded by [`MAX_CAPACITY`] and
    /// [`MAX_ITEM_LEN`] (the card is untrusted input).
    pub fn parse(data: &[u8]) -> Result<WalletListing, String> {
        let [capacity, count, rest @ ..] = data else {
            return Err("the answer is shorter than its header".into());
        };
        if *capacity > MAX_CAPACITY || count > capacity {
            return Err(format!("{count} items in a wallet of capacity {capacity}"));
        }
        let mut rest = rest;
        let mut items = Vec::with_capacity(*count as usize);
        for i in 0..*count {
            let [s, a, b, r @ ..] = rest else {
                return Err(format!("item {i} is truncated"));
            };
            let state = ItemState::from_code(*s).ok_or_else(|| format!("item {i} has unknown state {s}"))?;
            let n = u16::from_be_bytes([*a, *b]) as usize;
            if n > MAX_ITEM_LEN || r.len() < n {
                return Err(format!("item {i} is truncated"));
            }
            let item = WalletItem::parse(&r[..n]).map_err(|e| format!("item {i}: {e}"))?;
            items.push((state, item));
            rest = &r[n..];
        }
        if !rest.is_empty() {
            return Err("bytes follow the last item".into());
        }
        Ok(WalletListing {
            capacity: *capacity,
            items,
        })
    }
}

/// The SPEND data field: item id (16) || amount (4, big endian).
pub fn spend_data(id: &[u8; ITEM_ID_LEN], amount: u32) -> Vec<u8> {
    let mut v = id.to_vec();
    v.extend_from_slice(&amount.to_be_bytes());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> WalletItem {
        WalletItem {
            id: [7; 16],
            kind: ItemKind::Ticket,
            name: "Museum day pass".into(),
            unit_price: 1200,
            quantity: 2,
            total: 2400,
            balance: 2400,
            valid_from: 20260101,
            valid_until: 20271231,
            place: "City museum".into(),
            remarks: "adults".into(),
            issuer: "Test Issuer".into(),
        }
    }

    #[test]
    fn item_round_trip_and_layout() {
        let i = sample();
        let e = i.encode();
        assert_eq!(&e[..16], &[7; 16]);
        assert_eq!(e[16], 2);
        assert_eq!(&e[17..21], &1200u32.to_be_bytes());
        assert_eq!(e[41] as usize, "Museum day pass".len());
        assert_eq!(WalletItem::parse(&e), Ok(i.clone()));
        assert_eq!(WalletItem::parse(&e[..e.len() - 1]), Err(ItemError::Truncated));
        let mut longer = e.clone();
        longer.push(0);
        assert_eq!(WalletItem::parse(&longer), Err(ItemError::TrailingBytes));
        assert!(e.len() <= MAX_ITEM_LEN);
    }

    #[test]
    fn item_rules() {
        let mut i = sample();
        i.balance = 2401;
        assert_eq!(i.check(), Err(ItemError::BalanceAboveTotal));
        let mut i = sample();
        i.total = 5;
        assert_eq!(i.check(), Err(ItemError::TotalMismatch));
        let mut i = sample();
        i.valid_until = 20250101;
        assert_eq!(i.check(), Err(ItemError::ValidityReversed));
        let mut i = sample();
        i.name = "x".repeat(65);
        assert_eq!(i.check(), Err(ItemError::TextTooLong("name")));
        let mut e = sample().encode();
        e[16] = 9;
        assert_eq!(WalletItem::parse(&e), Err(ItemError::UnknownKind(9)));
    }

    #[test]
    fn load_and_listing_round_trip() {
        let l = ItemLoad {
            item: sample(),
            signature: [3; 64],
            signer_certificate: vec![0x30, 0],
        };
        let e = l.encode();
        let (p, raw) = ItemLoad::parse(&e).unwrap();
        assert_eq!(p, l);
        assert_eq!(raw, &sample().encode()[..]);
        assert!(ItemLoad::parse(&e[..e.len() - 2]).is_none());
        let listing = WalletListing {
            capacity: 4,
            items: vec![(ItemState::Held, sample()), (ItemState::DepositPending, sample())],
        };
        assert_eq!(WalletListing::parse(&listing.encode()), Ok(listing));
        assert!(WalletListing::parse(&[2, 3]).is_err());
        let m = load_message("12", &[1, 2], &[9; 16]);
        assert_eq!(
            &m[ITEM_LOAD_LABEL.len()..],
            &[&[2u8, b'1', b'2', 1, 2][..], &[9; 16]].concat()[..]
        );
    }
}
