//! The electronic safe's wire formats (Matsushita claims 1-3, 9): the
//! deposit the card builds, the registration certificate the safe signs, the
//! delivery the safe wraps to a withdrawing card, and the card's receipt.
//!
//! - **Deposit** (DEPOSIT P1 = 00 → safe): the card encrypts the item under
//!   its wallet key, wraps the wallet key under the card-common key of its
//!   issuer domain (so that a replacement card of the domain can open it
//!   under an issuer authorization, as an other-card restore does), adds
//!   the summary fields the terminal chose, and signs it all with its
//!   signing key (the storing key, certified by the issuer).
//! - **Registration certificate** (safe → DEPOSIT P1 = 01): the summary
//!   digest, the hash of what was stored, the safe's counter, the safe id
//!   and the card number, signed by the safe's key (certified by the issuer,
//!   so the card checks it under its installed root).
//! - **Delivery** (safe → WITHDRAW): the stored deposit, encrypted under a
//!   transport key wrapped to the withdrawing card's certified ECKA key, for
//!   that card's number and fresh challenge, signed by the safe.
//! - **Receipt** (WITHDRAW → safe): the card's signature over the safe id,
//!   the counter, its card number and the challenge: the item is on the card.

use crate::backup::lv;
use crate::crypto;
use crate::wallet::{ItemKind, WalletItem, ITEM_ID_LEN};

pub const DEPOSIT_LABEL: &[u8] = b"cardvault deposit v1";
pub const ITEM_SEAL_LABEL: &[u8] = b"cardvault deposited item v1";
pub const WALLET_KEY_LABEL: &[u8] = b"cardvault wallet key wrap v1";
pub const SUMMARY_LABEL: &[u8] = b"cardvault deposit summary v1";
pub const REGISTRATION_LABEL: &[u8] = b"cardvault safe registration v1";
pub const DELIVERY_LABEL: &[u8] = b"cardvault safe delivery v1";
pub const RECEIPT_LABEL: &[u8] = b"cardvault withdraw receipt v1";
pub const WITHDRAW_AUTH_LABEL: &[u8] = b"cardvault withdraw authorization v1";
pub const VERSION: u8 = 1;
pub const SAFE_ID_LEN: usize = 16;
pub const CHALLENGE_LEN: usize = 16;
pub const SIGNATURE_LEN: usize = 64;
/// Largest deposit (the signed part), bytes.
pub const MAX_DEPOSIT_LEN: usize = 1024;

/// Which item fields the summary digest covers (FIG. 4), one bit each.
pub mod summary_field {
    pub const KIND: u8 = 0x01;
    pub const NAME: u8 = 0x02;
    pub const VALIDITY: u8 = 0x04;
    pub const AMOUNT: u8 = 0x08;
    pub const PLACE: u8 = 0x10;
    pub const ISSUER: u8 = 0x20;
    pub const ALL: u8 = 0x3F;
    /// The default: kind, name, validity and amount (the seed's FIG. 4).
    pub const DEFAULT: u8 = KIND | NAME | VALIDITY | AMOUNT;
    pub const NAMES: [(&str, u8); 6] = [
        ("kind", KIND),
        ("name", NAME),
        ("validity", VALIDITY),
        ("amount", AMOUNT),
        ("place", PLACE),
        ("issuer", ISSUER),
    ];
}

/// The summary of an item: mask (1) ‖ the fields it names, in bit order:
/// kind (1), lv(name), valid from (4) ‖ valid until (4), remaining balance
/// (4), lv(place), lv(issuer).
pub fn summary(item: &WalletItem, mask: u8) -> Vec<u8> {
    use summary_field::*;
    let mut v = vec![mask & ALL];
    if mask & KIND != 0 {
        v.push(item.kind.code());
    }
    if mask & NAME != 0 {
        v.extend_from_slice(&lv(&item.name));
    }
    if mask & VALIDITY != 0 {
        v.extend_from_slice(&item.valid_from.to_be_bytes());
        v.extend_from_slice(&item.valid_until.to_be_bytes());
    }
    if mask & AMOUNT != 0 {
        v.extend_from_slice(&item.balance.to_be_bytes());
    }
    if mask & PLACE != 0 {
        v.extend_from_slice(&lv(&item.place));
    }
    if mask & ISSUER != 0 {
        v.extend_from_slice(&lv(&item.issuer));
    }
    v
}

/// SHA-256(label ‖ summary): what the registration certificate carries.
pub fn summary_digest(summary: &[u8]) -> [u8; 32] {
    crypto::sha256(&[SUMMARY_LABEL, summary].concat())
}

/// A bounded reader over a byte string (the other side is untrusted).
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|b| u64::from_be_bytes(b.try_into().expect("8")))
    }
    fn arr<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).map(|b| b.try_into().expect("N"))
    }
    fn lv_str(&mut self) -> Option<String> {
        let n = self.u8()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn l2(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
    fn rest(self) -> &'a [u8] {
        self.0
    }
}

fn put_l2(v: &mut Vec<u8>, data: &[u8]) {
    v.extend_from_slice(&(data.len() as u16).to_be_bytes());
    v.extend_from_slice(data);
}

/// What the card deposits: the signed part of the DEPOSIT answer, which is
/// exactly what the safe stores ("what was stored").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deposit {
    /// The safe the card deposits into: another safe refuses the deposit,
    /// and the card accepts only that safe's certificate for it.
    pub safe_id: [u8; SAFE_ID_LEN],
    pub card_number: String,
    pub item_id: [u8; ITEM_ID_LEN],
    /// [`summary`] of the item, in clear for the safe's listing and digest.
    pub summary: Vec<u8>,
    /// The wallet key wrapped under the card-common key: nonce (12) ‖
    /// AES-256-GCM (48); empty when the card has no domain key.
    pub wrapped_wallet_key: Vec<u8>,
    /// nonce (12) ‖ AES-256-GCM(wallet key, item).
    pub sealed_item: Vec<u8>,
}

impl Deposit {
    /// version (1) ‖ safe id (16) ‖ lv(card number) ‖ item id (16) ‖
    /// l2(summary) ‖ l2(wrapped wallet key) ‖ l2(sealed item).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = vec![VERSION];
        v.extend_from_slice(&self.safe_id);
        v.extend_from_slice(&lv(&self.card_number));
        v.extend_from_slice(&self.item_id);
        put_l2(&mut v, &self.summary);
        put_l2(&mut v, &self.wrapped_wallet_key);
        put_l2(&mut v, &self.sealed_item);
        v
    }

    pub fn parse(data: &[u8]) -> Option<Deposit> {
        if data.len() > MAX_DEPOSIT_LEN {
            return None;
        }
        let mut c = Cursor(data);
        if c.u8()? != VERSION {
            return None;
        }
        let d = Deposit {
            safe_id: c.arr()?,
            card_number: c.lv_str()?,
            item_id: c.arr()?,
            summary: c.l2()?.to_vec(),
            wrapped_wallet_key: c.l2()?.to_vec(),
            sealed_item: c.l2()?.to_vec(),
        };
        c.rest().is_empty().then_some(d)
    }

    /// The associated data of the sealed item and of the wrapped wallet key.
    pub fn aad(label: &[u8], card_number: &str, item_id: &[u8; ITEM_ID_LEN]) -> Vec<u8> {
        [label, &lv(card_number), item_id].concat()
    }

    /// The message the card signs: label ‖ the encoded deposit.
    pub fn message(encoded: &[u8]) -> Vec<u8> {
        [DEPOSIT_LABEL, encoded].concat()
    }

    /// The summary fields in readable form (kind, name, validity, amount).
    pub fn summary_fields(&self) -> Option<SummaryFields> {
        SummaryFields::parse(&self.summary)
    }
}

/// The DEPOSIT answer: l2(deposit) ‖ card signature (64) ‖ the card's
/// signing certificate (DER, as GET DATA `DF35`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedDeposit {
    pub deposit: Vec<u8>,
    pub signature: [u8; SIGNATURE_LEN],
    pub card_certificate: Vec<u8>,
}

impl SignedDeposit {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        put_l2(&mut v, &self.deposit);
        v.extend_from_slice(&self.signature);
        v.extend_from_slice(&self.card_certificate);
        v
    }

    pub fn parse(data: &[u8]) -> Option<SignedDeposit> {
        let mut c = Cursor(data);
        let deposit = c.l2()?.to_vec();
        let signature = c.arr()?;
        let card_certificate = c.rest().to_vec();
        (!card_certificate.is_empty()).then_some(SignedDeposit {
            deposit,
            signature,
            card_certificate,
        })
    }
}

/// The summary fields the mask names, decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SummaryFields {
    pub mask: u8,
    pub kind: Option<ItemKind>,
    pub name: Option<String>,
    pub valid_from: Option<u32>,
    pub valid_until: Option<u32>,
    pub amount: Option<u32>,
    pub place: Option<String>,
    pub issuer: Option<String>,
}

impl SummaryFields {
    pub fn parse(data: &[u8]) -> Option<SummaryFields> {
        use summary_field::*;
        let mut c = Cursor(data);
        let mask = c.u8()?;
        if mask & !ALL != 0 {
            return None;
        }
        let mut f = SummaryFields {
            mask,
            ..Default::default()
        };
        if mask & KIND != 0 {
            f.kind = Some(ItemKind::from_code(c.u8()?)?);
        }
        if mask & NAME != 0 {
            f.name = Some(c.lv_str()?);
        }
        if mask & VALIDITY != 0 {
            f.valid_from = Some(u32::from_be_bytes(c.arr()?));
            f.valid_until = Some(u32::from_be_bytes(c.arr()?));
        }
        if mask & AMOUNT != 0 {
            f.amount = Some(u32::from_be_bytes(c.arr()?));
        }
        if mask & PLACE != 0 {
            f.place = Some(c.lv_str()?);
        }
        if mask & ISSUER != 0 {
            f.issuer = Some(c.lv_str()?);
        }
        c.rest().is_empty().then_some(f)
    }
}

/// The safe's registration certificate for one deposited item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationCertificate {
    pub safe_id: [u8; SAFE_ID_LEN],
    /// The safe's counter value: one per deposit, never reused.
    pub counter: u64,
    pub card_number: String,
    pub item_id: [u8; ITEM_ID_LEN],
    pub summary_digest: [u8; 32],
    /// SHA-256 of the stored deposit (the encoded [`Deposit`]).
    pub stored_hash: [u8; 32],
    pub signature: [u8; SIGNATURE_LEN],
}

impl RegistrationCertificate {
    /// version (1) ‖ safe id (16) ‖ counter (8) ‖ lv(card number) ‖ item id
    /// (16) ‖ summary digest (32) ‖ stored hash (32).
    pub fn body(&self) -> Vec<u8> {
        let mut v = vec![VERSION];
        v.extend_from_slice(&self.safe_id);
        v.extend_from_slice(&self.counter.to_be_bytes());
        v.extend_from_slice(&lv(&self.card_number));
        v.extend_from_slice(&self.item_id);
        v.extend_from_slice(&self.summary_digest);
        v.extend_from_slice(&self.stored_hash);
        v
    }

    /// The message the safe signs: label ‖ body.
    pub fn message(&self) -> Vec<u8> {
        [REGISTRATION_LABEL, &self.body()].concat()
    }

    /// body ‖ signature (64).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.body();
        v.extend_from_slice(&self.signature);
        v
    }

    pub fn parse(data: &[u8]) -> Option<RegistrationCertificate> {
        let mut c = Cursor(data);
        if c.u8()? != VERSION {
            return None;
        }
        let r = RegistrationCertificate {
            safe_id: c.arr()?,
            counter: c.u64()?,
            card_number: c.lv_str()?,
            item_id: c.arr()?,
            summary_digest: c.arr()?,
            stored_hash: c.arr()?,
            signature: c.arr()?,
        };
        c.rest().is_empty().then_some(r)
    }

    /// SHA-256 of the encoded certificate: how authorizations name it.
    pub fn hash(&self) -> [u8; 32] {
        crypto::sha256(&self.encode())
    }
}

/// DEPOSIT P1 = 01 data: l2(registration certificate) ‖ the safe's
/// certificate (DER, under the issuer root on the card).
pub fn completion_data(cert: &RegistrationCertificate, safe_certificate: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    put_l2(&mut v, &cert.encode());
    v.extend_from_slice(safe_certificate);
    v
}

pub fn parse_completion(data: &[u8]) -> Option<(RegistrationCertificate, &[u8])> {
    let mut c = Cursor(data);
    let cert = RegistrationCertificate::parse(c.l2()?)?;
    let safe_cert = c.rest();
    (!safe_cert.is_empty()).then_some((cert, safe_cert))
}

/// What the safe sends a withdrawing card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub certificate: RegistrationCertificate,
    pub target_card: String,
    pub challenge: [u8; CHALLENGE_LEN],
    /// The transport key, ECIES-wrapped to the target card's ECKA key
    /// (crypto::wrap_key, 125 bytes), associated data [`Delivery::aad`].
    pub wrapped_transport_key: Vec<u8>,
    /// nonce (12) ‖ AES-256-GCM(transport key, stored deposit), associated
    /// data [`Delivery::aad`].
    pub sealed_deposit: Vec<u8>,
    pub signature: [u8; SIGNATURE_LEN],
}

impl Delivery {
    /// The binding of the transport key and the sealed deposit.
    pub fn aad(cert: &RegistrationCertificate, target_card: &str, challenge: &[u8]) -> Vec<u8> {
        [DELIVERY_LABEL, &cert.hash(), &lv(target_card), challenge].concat()
    }

    /// version (1) ‖ l2(registration certificate) ‖ lv(target card) ‖
    /// challenge (16) ‖ l2(wrapped transport key) ‖ l2(sealed deposit).
    pub fn body(&self) -> Vec<u8> {
        let mut v = vec![VERSION];
        put_l2(&mut v, &self.certificate.encode());
        v.extend_from_slice(&lv(&self.target_card));
        v.extend_from_slice(&self.challenge);
        put_l2(&mut v, &self.wrapped_transport_key);
        put_l2(&mut v, &self.sealed_deposit);
        v
    }

    pub fn message(&self) -> Vec<u8> {
        [DELIVERY_LABEL, &self.body()].concat()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.body();
        v.extend_from_slice(&self.signature);
        v
    }

    pub fn parse(data: &[u8]) -> Option<Delivery> {
        let mut c = Cursor(data);
        if c.u8()? != VERSION {
            return None;
        }
        let d = Delivery {
            certificate: RegistrationCertificate::parse(c.l2()?)?,
            target_card: c.lv_str()?,
            challenge: c.arr()?,
            wrapped_transport_key: c.l2()?.to_vec(),
            sealed_deposit: c.l2()?.to_vec(),
            signature: c.arr()?,
        };
        c.rest().is_empty().then_some(d)
    }
}

/// WITHDRAW data: l2(delivery) ‖ l2(safe certificate DER) ‖ optional issuer
/// authorization: signature (64) ‖ signer certificate (DER).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WithdrawCommand {
    pub delivery: Vec<u8>,
    pub safe_certificate: Vec<u8>,
    pub authorization: Option<([u8; SIGNATURE_LEN], Vec<u8>)>,
}

impl WithdrawCommand {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::new();
        put_l2(&mut v, &self.delivery);
        put_l2(&mut v, &self.safe_certificate);
        if let Some((sig, cert)) = &self.authorization {
            v.extend_from_slice(sig);
            v.extend_from_slice(cert);
        }
        v
    }

    pub fn parse(data: &[u8]) -> Option<WithdrawCommand> {
        let mut c = Cursor(data);
        let delivery = c.l2()?.to_vec();
        let safe_certificate = c.l2()?.to_vec();
        let rest = c.rest();
        let authorization = match rest.len() {
            0 => None,
            n if n > SIGNATURE_LEN => {
                let (s, cert) = rest.split_at(SIGNATURE_LEN);
                Some((s.try_into().ok()?, cert.to_vec()))
            }
            _ => return None,
        };
        Some(WithdrawCommand {
            delivery,
            safe_certificate,
            authorization,
        })
    }
}

/// The issuer's authorization for a withdrawal onto another card than the
/// one that deposited: label ‖ lv(target card number) ‖ SHA-256 of the
/// registration certificate.
pub fn withdraw_authorization_message(target_card: &str, cert_hash: &[u8; 32]) -> Vec<u8> {
    [WITHDRAW_AUTH_LABEL, &lv(target_card), cert_hash].concat()
}

/// The card's receipt for a delivery it accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub safe_id: [u8; SAFE_ID_LEN],
    pub counter: u64,
    pub card_number: String,
    pub challenge: [u8; CHALLENGE_LEN],
    pub signature: [u8; SIGNATURE_LEN],
}

impl Receipt {
    /// safe id (16) ‖ counter (8) ‖ lv(card number) ‖ challenge (16).
    pub fn body(&self) -> Vec<u8> {
        let mut v = self.safe_id.to_vec();
        v.extend_from_slice(&self.counter.to_be_bytes());
        v.extend_from_slice(&lv(&self.card_number));
        v.extend_from_slice(&self.challenge);
        v
    }

    pub fn message(&self) -> Vec<u8> {
        [RECEIPT_LABEL, &self.body()].concat()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.body();
        v.extend_from_slice(&self.signature);
        v
    }

    pub fn parse(data: &[u8]) -> Option<Receipt> {
        let mut c = Cursor(data);
        let r = Receipt {
            safe_id: c.arr()?,
            counter: c.u64()?,
            card_number: c.lv_str()?,
            challenge: c.arr()?,
            signature: c.arr()?,
        };
        c.rest().is_empty().then_some(r)
    }
}

/// Length-prefixed list (count (1) ‖ per entry l2(entry)), the READ
/// CERTIFICATES answer.
pub fn encode_list(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![entries.len() as u8];
    for e in entries {
        put_l2(&mut v, e);
    }
    v
}

pub fn parse_list(data: &[u8], max: usize) -> Option<Vec<Vec<u8>>> {
    let mut c = Cursor(data);
    let n = c.u8()? as usize;
    if n > max {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(c.l2()?.to_vec());
    }
    c.rest().is_empty().then_some(out)
}

/// Wallet key escrow (Matsushita 000's second to fourth embodiments, 001's
/// key manager): the card splits its wallet key into `count` parts (1, or 2
/// by XOR with a random pad, so that one part alone says nothing), each
/// sealed under the owner's escrow key (derived from the owner's password by
/// the terminal) and signed by the card; each part goes to its own safe.
pub const ESCROW_PART_LABEL: &[u8] = b"cardvault escrow part v1";
pub const WALLET_KCV_LABEL: &[u8] = b"cardvault wallet key check v1";
/// Most parts a wallet key is split into.
pub const MAX_ESCROW_PARTS: u8 = 2;

/// The check value of a wallet key: SHA-256(label ‖ key), first 8 bytes.
pub fn wallet_key_check(key: &[u8]) -> [u8; 8] {
    crypto::sha256(&[WALLET_KCV_LABEL, key].concat())[..8]
        .try_into()
        .expect("8 bytes")
}

/// One escrowed part of a wallet key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscrowPart {
    pub card_number: String,
    /// 1-based index and the number of parts.
    pub index: u8,
    pub count: u8,
    pub key_check: [u8; 8],
    /// nonce (12) ‖ AES-256-GCM(escrow key, part (32); AAD [`EscrowPart::aad`]).
    pub sealed: Vec<u8>,
    /// The card's signature over label ‖ [`EscrowPart::body`].
    pub signature: [u8; SIGNATURE_LEN],
}

impl EscrowPart {
    pub fn aad(card_number: &str, index: u8, count: u8, key_check: &[u8; 8]) -> Vec<u8> {
        [ESCROW_PART_LABEL, &lv(card_number), &[index, count], key_check].concat()
    }

    /// lv(card number) ‖ index (1) ‖ count (1) ‖ key check (8) ‖ l2(sealed).
    pub fn body(&self) -> Vec<u8> {
        let mut v = lv(&self.card_number);
        v.push(self.index);
        v.push(self.count);
        v.extend_from_slice(&self.key_check);
        put_l2(&mut v, &self.sealed);
        v
    }

    pub fn message(&self) -> Vec<u8> {
        [ESCROW_PART_LABEL, &self.body()].concat()
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.body();
        v.extend_from_slice(&self.signature);
        v
    }

    pub fn parse(data: &[u8]) -> Option<EscrowPart> {
        let mut c = Cursor(data);
        let p = EscrowPart {
            card_number: c.lv_str()?,
            index: c.u8()?,
            count: c.u8()?,
            key_check: c.arr()?,
            sealed: c.l2()?.to_vec(),
            signature: c.arr()?,
        };
        (c.rest().is_empty() && (1..=p.count).contains(&p.index) && p.count <= MAX_ESCROW_PARTS).then_some(p)
    }
}

/// ESCROW P1 = 01 (import) data: escrow key (32) ‖ count (1) ‖ per part l2(part).
pub fn escrow_import_data(escrow_key: &[u8; 32], parts: &[EscrowPart]) -> Vec<u8> {
    let mut v = escrow_key.to_vec();
    v.push(parts.len() as u8);
    for p in parts {
        put_l2(&mut v, &p.encode());
    }
    v
}

pub fn parse_escrow_import(data: &[u8]) -> Option<([u8; 32], Vec<EscrowPart>)> {
    let mut c = Cursor(data);
    let key = c.arr()?;
    let n = c.u8()?;
    if n == 0 || n > MAX_ESCROW_PARTS {
        return None;
    }
    let mut parts = Vec::new();
    for _ in 0..n {
        parts.push(EscrowPart::parse(c.l2()?)?);
    }
    c.rest().is_empty().then_some((key, parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item() -> WalletItem {
        WalletItem {
            id: [1; 16],
            kind: ItemKind::Cash,
            name: "cash".into(),
            unit_price: 5,
            quantity: 1,
            total: 5,
            balance: 5,
            valid_from: 0,
            valid_until: 20300101,
            place: "here".into(),
            remarks: String::new(),
            issuer: "I".into(),
        }
    }

    #[test]
    fn round_trips() {
        let s = summary(&item(), summary_field::DEFAULT);
        let f = SummaryFields::parse(&s).unwrap();
        assert_eq!(f.amount, Some(5));
        assert_eq!(f.place, None);
        let d = Deposit {
            safe_id: [9; 16],
            card_number: "12".into(),
            item_id: [1; 16],
            summary: s,
            wrapped_wallet_key: vec![2; 60],
            sealed_item: vec![3; 80],
        };
        assert_eq!(Deposit::parse(&d.encode()), Some(d.clone()));
        let sd = SignedDeposit {
            deposit: d.encode(),
            signature: [4; 64],
            card_certificate: vec![0x30, 0],
        };
        assert_eq!(SignedDeposit::parse(&sd.encode()), Some(sd));
        let r = RegistrationCertificate {
            safe_id: [5; 16],
            counter: 7,
            card_number: "12".into(),
            item_id: [1; 16],
            summary_digest: [6; 32],
            stored_hash: [7; 32],
            signature: [8; 64],
        };
        assert_eq!(RegistrationCertificate::parse(&r.encode()), Some(r.clone()));
        let data = completion_data(&r, &[0x30, 1]);
        let (p, sc) = parse_completion(&data).unwrap();
        assert_eq!((p, sc), (r.clone(), &[0x30u8, 1][..]));
        let del = Delivery {
            certificate: r,
            target_card: "13".into(),
            challenge: [9; 16],
            wrapped_transport_key: vec![1; 125],
            sealed_deposit: vec![2; 40],
            signature: [3; 64],
        };
        assert_eq!(Delivery::parse(&del.encode()), Some(del));
        let rc = Receipt {
            safe_id: [1; 16],
            counter: 2,
            card_number: "3".into(),
            challenge: [4; 16],
            signature: [5; 64],
        };
        assert_eq!(Receipt::parse(&rc.encode()), Some(rc));
        let w = WithdrawCommand {
            delivery: vec![1, 2],
            safe_certificate: vec![3],
            authorization: Some(([4; 64], vec![5])),
        };
        assert_eq!(WithdrawCommand::parse(&w.encode()), Some(w));
        assert_eq!(
            parse_list(&encode_list(&[vec![1], vec![]]), 4),
            Some(vec![vec![1], vec![]])
        );
    }
}
