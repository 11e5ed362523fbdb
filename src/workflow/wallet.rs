//! The electronic wallet (Matsushita FIG. 3): items of electronic value on
//! the card, loaded only under the value issuer's signature, spent under the
//! holder PIN in the SCP11 session.
//!
//! A load is two parties' work, like a purse CREDIT: the holder's card hands
//! out a wallet challenge ([`request_load`]), the issuer signs an
//! [`ItemLoadAuthorization`] naming the card, the whole item and that
//! challenge ([`sign_load`]), and the card checks it on LOAD ITEM ([`load`]).
//! A load whose answer was lost (card pulled) is found on retry by its item
//! id: the card holds it, so nothing is loaded twice.

use crate::card::{CardClient, Refusal};
use crate::error::{Error, Result};
use crate::issuer::IssuerSigner;
use cardvault_proto::wallet::{
    self as w, ItemKind, ItemLoad, ItemState, WalletItem, WalletListing, ITEM_ID_LEN, WALLET_CHALLENGE_LEN,
};
use serde::{Deserialize, Serialize};

/// Version of the load request and authorization files.
pub const LOAD_FILE_VERSION: u32 = 1;

/// An item as the operator describes it (flags or a file): the issuer's
/// terms, before the card number, id and issuer are fixed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ItemSpec {
    pub kind: String,
    pub name: String,
    pub unit_price: u32,
    #[serde(default = "one")]
    pub quantity: u32,
    #[serde(default)]
    pub place: String,
    /// YYYY-MM-DD, or absent for no limit.
    #[serde(default)]
    pub valid_from: Option<String>,
    #[serde(default)]
    pub valid_until: Option<String>,
    #[serde(default)]
    pub remarks: String,
}

fn one() -> u32 {
    1
}

/// One item as the terminal shows it (JSON output, load files).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ItemView {
    /// Hex, 16 bytes.
    pub id: String,
    pub kind: String,
    pub name: String,
    pub unit_price: u32,
    pub quantity: u32,
    pub total: u32,
    pub balance: u32,
    pub valid_from: Option<String>,
    pub valid_until: Option<String>,
    pub place: String,
    pub remarks: String,
    pub issuer: String,
    /// `held` or `deposit-pending` (absent in load files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

/// Parse YYYY-MM-DD into the card's YYYYMMDD number.
pub fn parse_date(s: &str) -> Result<w::Date> {
    let bad = || Error::Usage(format!("{s:?} is not a date YYYY-MM-DD"));
    let p: Vec<&str> = s.split('-').collect();
    let [y, m, d] = p[..] else { return Err(bad()) };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return Err(bad());
    }
    let (y, m, d): (u32, u32, u32) = (
        y.parse().map_err(|_| bad())?,
        m.parse().map_err(|_| bad())?,
        d.parse().map_err(|_| bad())?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || y == 0 {
        return Err(bad());
    }
    Ok(y * 10000 + m * 100 + d)
}

fn show_date(d: w::Date) -> Option<String> {
    (d != 0).then(|| format!("{:04}-{:02}-{:02}", d / 10000, d / 100 % 100, d % 100))
}

fn opt_date(d: &Option<String>) -> Result<w::Date> {
    d.as_deref().map(parse_date).transpose().map(|d| d.unwrap_or(0))
}

impl ItemView {
    pub fn of(item: &WalletItem, state: Option<ItemState>) -> ItemView {
        ItemView {
            id: cardvault_proto::to_hex(&item.id),
            kind: item.kind.to_string(),
            name: item.name.clone(),
            unit_price: item.unit_price,
            quantity: item.quantity,
            total: item.total,
            balance: item.balance,
            valid_from: show_date(item.valid_from),
            valid_until: show_date(item.valid_until),
            place: item.place.clone(),
            remarks: item.remarks.clone(),
            issuer: item.issuer.clone(),
            state: state.map(|s| s.to_string()),
        }
    }

    /// The item this view describes, checked by the item rules.
    pub fn to_item(&self) -> Result<WalletItem> {
        let id: [u8; ITEM_ID_LEN] = cardvault_proto::from_hex(&self.id)
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| Error::Usage(format!("item id {:?} is not 16 bytes of hex", self.id)))?;
        let item = WalletItem {
            id,
            kind: self.kind.parse().map_err(Error::Usage)?,
            name: self.name.clone(),
            unit_price: self.unit_price,
            quantity: self.quantity,
            total: self.total,
            balance: self.balance,
            valid_from: opt_date(&self.valid_from)?,
            valid_until: opt_date(&self.valid_until)?,
            place: self.place.clone(),
            remarks: self.remarks.clone(),
            issuer: self.issuer.clone(),
        };
        item.check().map_err(|e| Error::Usage(format!("item: {e}")))?;
        Ok(item)
    }
}

impl ItemSpec {
    /// A new item of these terms: a fresh id, the full total as balance, the
    /// issuer left empty (the signer names itself).
    pub fn new_item(&self) -> Result<WalletItem> {
        let kind: ItemKind = self.kind.parse().map_err(Error::Usage)?;
        let total = self.unit_price.checked_mul(self.quantity).ok_or_else(|| {
            Error::Usage(format!(
                "unit price {} times quantity {} does not fit 32 bits",
                self.unit_price, self.quantity
            ))
        })?;
        if total == 0 {
            return Err(Error::Usage("an item of no value (total 0) cannot be loaded".into()));
        }
        let item = WalletItem {
            id: cardvault_proto::crypto::random::<ITEM_ID_LEN>(),
            kind,
            name: self.name.clone(),
            unit_price: self.unit_price,
            quantity: self.quantity,
            total,
            balance: total,
            valid_from: opt_date(&self.valid_from)?,
            valid_until: opt_date(&self.valid_until)?,
            place: self.place.clone(),
            remarks: self.remarks.clone(),
            issuer: String::new(),
        };
        item.check().map_err(|e| Error::Usage(format!("item: {e}")))?;
        Ok(item)
    }
}

/// A request for an item load (holder's card → value issuer).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ItemLoadRequest {
    pub version: u32,
    pub card_number: String,
    /// Hex, from the card's GET WALLET CHALLENGE.
    pub challenge: String,
    pub item: ItemView,
}

/// The issuer's item load authorization: the request with the item's issuer
/// filled in, an ECDSA P-256 signature (hex r||s) over
/// `cardvault_proto::wallet::load_message`, and the signer's certificate (hex
/// DER) under the issuer root.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ItemLoadAuthorization {
    #[serde(flatten)]
    pub request: ItemLoadRequest,
    pub signature: String,
    pub signer_certificate: String,
}

/// What [`load`] did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LoadReport {
    pub card_number: String,
    pub item: ItemView,
    /// The card already held this item (an earlier load whose answer was lost).
    pub already_loaded: bool,
    pub items: usize,
    pub capacity: u8,
}

/// Verify the PIN and ask the card for a wallet challenge for a new item of
/// `spec`'s terms.
pub fn request_load(card: &mut CardClient<'_>, pin: &[u8], spec: &ItemSpec) -> Result<ItemLoadRequest> {
    let item = spec.new_item()?;
    card.verify_pin(pin)?;
    let challenge = card.wallet_challenge()?;
    Ok(ItemLoadRequest {
        version: LOAD_FILE_VERSION,
        card_number: card.card_number()?,
        challenge: cardvault_proto::to_hex(&challenge),
        item: ItemView::of(&item, None),
    })
}

/// The value issuer signs an item load request with its authorization
/// signer; the item's issuer becomes the signer certificate's common name.
pub fn sign_load(req: &ItemLoadRequest, signer: &IssuerSigner) -> Result<ItemLoadAuthorization> {
    if req.version != LOAD_FILE_VERSION {
        return Err(Error::Usage(format!(
            "item load request version {} is not supported",
            req.version
        )));
    }
    let challenge = cardvault_proto::from_hex(&req.challenge)
        .filter(|c| c.len() == WALLET_CHALLENGE_LEN)
        .ok_or_else(|| Error::Usage("the request's challenge is not 16 bytes of hex".into()))?;
    let mut item = req.item.to_item()?;
    item.issuer = signer_name(signer.certificate_der())?;
    item.check().map_err(|e| Error::Usage(format!("item: {e}")))?;
    let msg = w::load_message(&req.card_number, &item.encode(), &challenge);
    let sig = signer.sign(&msg)?;
    let mut request = req.clone();
    request.item = ItemView::of(&item, None);
    Ok(ItemLoadAuthorization {
        request,
        signature: cardvault_proto::to_hex(&sig),
        signer_certificate: cardvault_proto::to_hex(signer.certificate_der()),
    })
}

/// The common name of a signer certificate (DER): the value issuer's name.
fn signer_name(der: &[u8]) -> Result<String> {
    let c = openssl::x509::X509::from_der(der)
        .map_err(|e| Error::Usage(format!("the signer certificate is not DER X.509: {e}")))?;
    cardvault_proto::cert::name_entry(c.subject_name(), openssl::nid::Nid::COMMONNAME)
        .ok_or_else(|| Error::Usage("the signer certificate names no common name".into()))
}

/// Verify the PIN, then LOAD ITEM with the issuer's authorization. The card
/// checks the signature, its card number, the item and its outstanding
/// challenge (used once). An item the card already holds (same id, same
/// content) is reported as loaded, not loaded again.
pub fn load(card: &mut CardClient<'_>, pin: &[u8], auth: &ItemLoadAuthorization) -> Result<LoadReport> {
    let signature: [u8; 64] = cardvault_proto::from_hex(&auth.signature)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| Error::Usage("the authorization's signature is not 64 bytes of hex".into()))?;
    let signer_certificate = cardvault_proto::from_hex(&auth.signer_certificate)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| Error::Usage("the authorization's signer certificate is not hex DER".into()))?;
    let item = auth.request.item.to_item()?;
    card.verify_pin(pin)?;
    let number = card.card_number()?;
    if number != auth.request.card_number {
        return Err(Error::Usage(format!(
            "the item load authorization names card {}, this is card {number}",
            auth.request.card_number
        )));
    }
    let before = card.read_wallet()?;
    let report = |already_loaded, items: usize| LoadReport {
        card_number: number.clone(),
        item: ItemView::of(&item, Some(ItemState::Held)),
        already_loaded,
        items,
        capacity: before.capacity,
    };
    if before.items.iter().any(|(_, i)| i.id == item.id) {
        return Ok(report(true, before.items.len()));
    }
    if before.items.len() >= before.capacity as usize {
        return Err(Refusal::WalletFull(before.capacity).into());
    }
    card.load_item(
        &ItemLoad {
            item: item.clone(),
            signature,
            signer_certificate,
        },
        before.capacity,
    )?;
    Ok(report(false, before.items.len() + 1))
}

/// The issuer at hand: request, sign and load in one session.
pub fn load_with_signer(
    card: &mut CardClient<'_>,
    pin: &[u8],
    spec: &ItemSpec,
    signer: &IssuerSigner,
) -> Result<LoadReport> {
    let req = request_load(card, pin, spec)?;
    let auth = sign_load(&req, signer)?;
    load(card, pin, &auth)
}

/// The wallet: capacity and every item (no PIN: READ WALLET is public, like
/// a purse balance).
pub fn list(card: &mut CardClient<'_>) -> Result<WalletListing> {
    card.read_wallet()
}

/// What [`spend`] did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SpendReport {
    pub item: String,
    pub spent: u32,
    pub balance: u32,
    /// The item was spent down to 0 and left the wallet.
    pub removed: bool,
}

/// Find an item by its id or a unique prefix of its hex id.
pub fn find_item<'a>(listing: &'a WalletListing, id: &str) -> Result<&'a (ItemState, WalletItem)> {
    let id = id.to_ascii_lowercase();
    let mut hits = listing
        .items
        .iter()
        .filter(|(_, i)| cardvault_proto::to_hex(&i.id).starts_with(&id));
    match (hits.next(), hits.next()) {
        (Some(h), None) if !id.is_empty() => Ok(h),
        (Some(_), Some(_)) => Err(Error::Usage(format!("item id {id:?} matches more than one item"))),
        _ => Err(Refusal::NoSuchItem(id).into()),
    }
}

/// Verify the PIN, then SPEND `amount` of item `id` (its hex id or a unique
/// prefix).
pub fn spend(card: &mut CardClient<'_>, pin: &[u8], id: &str, amount: u32) -> Result<SpendReport> {
    card.verify_pin(pin)?;
    let listing = card.read_wallet()?;
    let (state, item) = find_item(&listing, id)?;
    let name = cardvault_proto::to_hex(&item.id);
    if *state != ItemState::Held {
        return Err(Refusal::ItemPending(name).into());
    }
    // The card has no clock: validity is the terminal's check, by its clock.
    let today = parse_date(&crate::util::now_utc()[..10])?;
    if (item.valid_from != 0 && today < item.valid_from) || (item.valid_until != 0 && today > item.valid_until) {
        let period = format!(
            "from {} until {}",
            show_date(item.valid_from).unwrap_or_else(|| "the start".into()),
            show_date(item.valid_until).unwrap_or_else(|| "no end".into())
        );
        return Err(Refusal::ItemOutsideValidity(name, period, show_date(today).unwrap_or_default()).into());
    }
    if amount == 0 || amount > item.balance {
        return Err(Refusal::SpendTooMuch(name, item.balance).into());
    }
    let balance = card.spend(&item.id, amount, item.balance)?;
    Ok(SpendReport {
        item: name,
        spent: amount,
        balance,
        removed: balance == 0,
    })
}

/// The wallet in a few numbers (for `status`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct WalletSummary {
    pub items: usize,
    pub capacity: u8,
    pub pending: usize,
    /// Sum of the remaining balances of the cash items.
    pub cash_balance: u64,
}

pub fn summary(listing: &WalletListing) -> WalletSummary {
    WalletSummary {
        items: listing.items.len(),
        capacity: listing.capacity,
        pending: listing.items.iter().filter(|(s, _)| *s != ItemState::Held).count(),
        cash_balance: listing
            .items
            .iter()
            .filter(|(_, i)| i.kind == ItemKind::Cash)
            .map(|(_, i)| i.balance as u64)
            .sum(),
    }
}

/// Backup by conditions (Matsushita 000, eleventh embodiment, FIG. 19/20):
/// which held items `wallet backup` deposits, and which a load that does not
/// fit deposits first. A TOML file (`wallet backup --conditions F`) or
/// `[wallet.backup]` in config.toml. Every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConditions {
    /// Kinds of value (cash, ticket, coupon, other); empty: every kind.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Items whose encoding is at least this many bytes.
    #[serde(default)]
    pub min_size: Option<usize>,
    /// Only when fewer item slots than this are free (on request; a load
    /// that does not fit ignores it: it needs a slot).
    #[serde(default)]
    pub free_slots_below: Option<u8>,
    /// Items whose validity ends before this date (YYYY-MM-DD); items
    /// without an end never match it.
    #[serde(default)]
    pub valid_until_before: Option<String>,
    /// The items held longest (the card keeps them in load order): at most
    /// this many, oldest first.
    #[serde(default)]
    pub held_longest: Option<usize>,
    /// The safe to deposit into (a directory or an http:// address), when
    /// the command names none.
    #[serde(default)]
    pub safe: Option<String>,
}

impl BackupConditions {
    /// The held items these conditions select, in holding order (oldest
    /// first). `need_slot`: a load needs room, whatever the free-slot
    /// condition says.
    pub fn select(&self, listing: &WalletListing, need_slot: bool) -> Result<Vec<WalletItem>> {
        let kinds = self
            .kinds
            .iter()
            .map(|k| k.parse::<ItemKind>().map_err(Error::Usage))
            .collect::<Result<Vec<_>>>()?;
        let before = self.valid_until_before.as_deref().map(parse_date).transpose()?;
        let free = (listing.capacity as usize).saturating_sub(listing.items.len());
        if !need_slot && self.free_slots_below.is_some_and(|n| free >= n as usize) {
            return Ok(Vec::new());
        }
        let mut out: Vec<WalletItem> = listing
            .items
            .iter()
            .filter(|(s, _)| *s == ItemState::Held)
            .map(|(_, i)| i)
            .filter(|i| kinds.is_empty() || kinds.contains(&i.kind))
            .filter(|i| self.min_size.is_none_or(|n| i.encode().len() >= n))
            .filter(|i| before.is_none_or(|b| i.valid_until != 0 && i.valid_until < b))
            .cloned()
            .collect();
        if let Some(n) = self.held_longest {
            out.truncate(n);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(parse_date("2027-03-31").unwrap(), 20270331);
        assert_eq!(show_date(20270331).as_deref(), Some("2027-03-31"));
        assert_eq!(show_date(0), None);
        for bad in ["2027-3-31", "2027-13-01", "27-03-31", "2027-03-00", "x"] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
    }
}
