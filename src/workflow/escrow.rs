//! Escrow of the wallet key (Matsushita 000's second to fourth embodiments;
//! 001's key manager), recovery onto a replacement card, and re-keying.
//!
//! The owner's password never reaches a card or a safe: the terminal derives
//! from it (scrypt, salted with the card number) a master secret, and from
//! that the escrow key (the card seals the key parts under it, inside the
//! SCP11 session) and one Ed25519 owner key per safe. A safe keeps only
//! that key's public half (the verifier: it opens nothing), and hands a part
//! back, or pays a lost card's item to another card, only against a
//! signature over a fresh single-use nonce of its own, its id, the card and
//! the request: what crosses the network cannot be replayed. With two safes the card splits the key by
//! XOR with a random pad: one safe's part, even with the password, is the
//! pad or the key masked by it, and says nothing about the key.

use crate::card::CardClient;
use crate::error::{Error, Result};
use crate::safe::{
    owner_proof_message, EscrowFetch, EscrowRequest, OwnerChallengeRequest, OwnerProof, SafeAddress, SafeClient,
    OWNER_FETCH_REQUEST, OWNER_NONCE_LEN,
};
use crate::vault::Vault;
use crate::workflow::deposit::{self, WithdrawReport};
use cardvault_proto::safe::{summary_field, EscrowPart, RegistrationCertificate};
use cardvault_proto::to_hex;
use serde::Serialize;
use zeroize::Zeroizing;

/// scrypt cost of the owner password: N = 2^15, r = 8, p = 1.
const SCRYPT_LOG2_N: u8 = 15;
const SALT_LABEL: &[u8] = b"cardvault wallet escrow v1";

/// What the owner's password gives: the escrow key and the per-safe proofs.
pub struct OwnerSecret {
    master: Zeroizing<[u8; 32]>,
}

impl OwnerSecret {
    /// Derive from the owner's password for the wallet of `card_number`.
    pub fn derive(password: &[u8], card_number: &str) -> Result<OwnerSecret> {
        if password.is_empty() {
            return Err(Error::Usage("the owner password is empty".into()));
        }
        let mut master = Zeroizing::new([0u8; 32]);
        let salt = [SALT_LABEL, card_number.as_bytes()].concat();
        openssl::pkcs5::scrypt(
            password,
            &salt,
            1 << SCRYPT_LOG2_N,
            8,
            1,
            64 * 1024 * 1024,
            &mut master[..],
        )
        .map_err(|e| Error::Data(format!("scrypt: {e}")))?;
        Ok(OwnerSecret { master })
    }

    /// The key the card seals the escrowed parts under.
    pub fn escrow_key(&self) -> Result<Zeroizing<[u8; 32]>> {
        cardvault_proto::crypto::hkdf(&self.master[..], b"", b"cardvault escrow key v1")
            .map_err(|e| Error::Data(e.to_string()))
    }

    /// The owner's key for the safe `safe_id` (hex).
    fn owner_key(&self, safe_id: &str) -> Result<openssl::pkey::PKey<openssl::pkey::Private>> {
        let seed = cardvault_proto::crypto::hkdf(
            &self.master[..],
            safe_id.to_ascii_lowercase().as_bytes(),
            b"cardvault escrow owner key v2",
        )
        .map_err(|e| Error::Data(e.to_string()))?;
        openssl::pkey::PKey::private_key_from_raw_bytes(&seed[..], openssl::pkey::Id::ED25519)
            .map_err(|e| Error::Data(format!("owner key: {e}")))
    }

    /// The verifier the safe `safe_id` keeps: the owner key's public half (hex).
    pub fn verifier(&self, safe_id: &str) -> Result<String> {
        self.owner_key(safe_id)?
            .raw_public_key()
            .map(|k| to_hex(&k))
            .map_err(|e| Error::Data(format!("owner key: {e}")))
    }

    /// Answer a fresh challenge of the safe `safe_id` for `request` about
    /// the escrow of `card_number`.
    pub fn answer(&self, safe_id: &str, card_number: &str, nonce_hex: &str, request: &[u8]) -> Result<OwnerProof> {
        let nonce = cardvault_proto::from_hex(nonce_hex)
            .filter(|n| n.len() == OWNER_NONCE_LEN)
            .ok_or_else(|| Error::Data("the safe's owner challenge is not 16 bytes of hex".into()))?;
        let msg = owner_proof_message(safe_id, card_number, &nonce, request);
        let key = self.owner_key(safe_id)?;
        let sig = openssl::sign::Signer::new_without_digest(&key)
            .and_then(|mut s| s.sign_oneshot_to_vec(&msg))
            .map_err(|e| Error::Data(format!("owner signature: {e}")))?;
        Ok(OwnerProof {
            nonce: to_hex(&nonce),
            signature: to_hex(&sig),
        })
    }

    /// Ask `safe` (id `safe_id`) for a challenge about `card_number`'s
    /// escrow and answer it for `request`.
    pub fn prove(&self, safe: &mut SafeClient, safe_id: &str, card_number: &str, request: &[u8]) -> Result<OwnerProof> {
        let c = refused(safe.owner_challenge(&OwnerChallengeRequest {
            card_number: card_number.to_string(),
        })?)?;
        self.answer(safe_id, card_number, &c.nonce, request)
    }
}

fn refused<T>(r: std::result::Result<T, crate::safe::SafeRefusal>) -> Result<T> {
    r.map_err(Error::SafeRefused)
}

/// What `escrow` did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EscrowReport {
    pub card_number: String,
    /// One entry per safe: (safe id, part index).
    pub parts: Vec<(String, u8)>,
    pub key_check: String,
}

/// Escrow the card's wallet key: whole into one safe, or split across two.
pub fn escrow(
    card: &mut CardClient<'_>,
    pin: &[u8],
    password: &[u8],
    safes: &mut [SafeClient],
) -> Result<EscrowReport> {
    if safes.is_empty() || safes.len() > 2 {
        return Err(Error::Usage("escrow takes one safe, or two to split the key".into()));
    }
    card.verify_pin(pin)?;
    let number = card.card_number()?;
    let owner = OwnerSecret::derive(password, &number)?;
    let ids = safes
        .iter_mut()
        .map(|s| refused(s.info()?).map(|i| i.safe_id))
        .collect::<Result<Vec<_>>>()?;
    if ids.len() == 2 && ids[0] == ids[1] {
        return Err(Error::Usage(
            "the two safes are the same safe: a split needs two".into(),
        ));
    }
    let signing = card
        .storing_certificate()?
        .ok_or_else(|| Error::Data("the card has no signing certificate (GET DATA DF35)".into()))?;
    let parts = card.escrow_export(&*owner.escrow_key()?, safes.len() as u8)?;
    let mut report = EscrowReport {
        card_number: number,
        parts: Vec::new(),
        key_check: to_hex(&parts[0].key_check),
    };
    for ((safe, id), part) in safes.iter_mut().zip(&ids).zip(&parts) {
        refused(safe.escrow(&EscrowRequest {
            part: to_hex(&part.encode()),
            card_certificate: to_hex(&signing),
            verifier: owner.verifier(id)?,
        })?)?;
        report.parts.push((id.clone(), part.index));
    }
    Ok(report)
}

/// What `recover` did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RecoverReport {
    pub lost_card: String,
    pub new_card: String,
    pub withdrawn: Vec<WithdrawReport>,
}

/// Rebuild the lost card's wallet key on the card in the reader from its
/// escrowed parts (the owner's password), then withdraw every item of the
/// lost card the vault has a certificate for in these safes.
pub fn recover(
    card: &mut CardClient<'_>,
    pin: &[u8],
    password: &[u8],
    lost_card: &str,
    safes: &mut [(SafeAddress, SafeClient)],
    vault: &mut Vault,
) -> Result<RecoverReport> {
    card.verify_pin(pin)?;
    let owner = OwnerSecret::derive(password, lost_card)?;
    let mut ids = Vec::new();
    let mut parts: Vec<EscrowPart> = Vec::new();
    for (_, safe) in safes.iter_mut() {
        let id = refused(safe.info()?)?.safe_id;
        let owner_proof = owner.prove(safe, &id, lost_card, OWNER_FETCH_REQUEST)?;
        let got = refused(safe.escrow_fetch(&EscrowFetch {
            card_number: lost_card.to_string(),
            owner_proof,
        })?)?;
        let part = cardvault_proto::from_hex(&got.part)
            .and_then(|p| EscrowPart::parse(&p))
            .ok_or_else(|| Error::Data("a safe's escrowed part does not parse".into()))?;
        if part.card_number != lost_card {
            return Err(Error::Data(format!(
                "a safe handed a part of card {}",
                part.card_number
            )));
        }
        parts.push(part);
        ids.push(id);
    }
    parts.sort_by_key(|p| p.index);
    if let Some(p) = parts.first().filter(|p| p.count as usize != parts.len()) {
        return Err(Error::Usage(format!(
            "card {lost_card}'s wallet key was split into {} parts; give every safe that holds one (--safe)",
            p.count
        )));
    }
    card.escrow_import(&*owner.escrow_key()?, &parts)?;
    // The session's verified identity names the card (no GET DATA needed).
    let new_card = match card.identity() {
        Some(id) => id.subject.card_number.clone(),
        None => card.card_number()?,
    };
    // A recovery cut short: the safes get the receipts the card holds, and
    // items already on the card are not asked for again.
    let receipts = card.safe_receipts()?;
    // The card's signing certificate, read once for every receipt.
    let mut signing = None;
    for (i, (_, safe)) in safes.iter_mut().enumerate() {
        for r in receipts.iter().filter(|r| to_hex(&r.safe_id) == ids[i]) {
            deposit::send_receipt(card, safe, vault, r, &mut signing)?;
        }
    }
    let held: Vec<String> = card.read_wallet()?.items.iter().map(|(_, i)| to_hex(&i.id)).collect();
    let mut withdrawn = Vec::new();
    let copies = vault.wallet_certificates(Some(lost_card))?;
    for copy in copies
        .iter()
        .filter(|c| c.withdrawn_at.is_none() && !held.contains(&c.item_id))
    {
        let Some(i) = ids.iter().position(|id| *id == copy.safe_id) else {
            continue;
        };
        let cert = cardvault_proto::from_hex(&copy.certificate)
            .and_then(|c| RegistrationCertificate::parse(&c))
            .ok_or_else(|| {
                Error::Data(format!(
                    "the vault's certificate of item {} does not parse",
                    copy.item_id
                ))
            })?;
        withdrawn.push(deposit::withdraw_certificate(
            card,
            &cert,
            &mut safes[i].1,
            vault,
            None,
            Some((&owner, ids[i].as_str())),
            &mut signing,
        )?);
    }
    Ok(RecoverReport {
        lost_card: lost_card.to_string(),
        new_card,
        withdrawn,
    })
}

/// What `rekey` did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RekeyReport {
    pub key_check: String,
    /// Items withdrawn and deposited again under the new key.
    pub redeposited: Vec<String>,
}

/// Move the card to a new wallet key, and deposit again under it every item
/// the card holds a certificate for in `safe`, so that an escrowed old key
/// opens nothing deposited from now on. Escrow the new key afterwards.
pub fn rekey(
    card: &mut CardClient<'_>,
    pin: &[u8],
    address: &SafeAddress,
    safe: &mut SafeClient,
    vault: &mut Vault,
) -> Result<RekeyReport> {
    card.verify_pin(pin)?;
    let check = card.rekey()?;
    let id = refused(safe.info()?)?.safe_id;
    let certs: Vec<RegistrationCertificate> = card
        .safe_certificates()?
        .into_iter()
        .filter(|c| to_hex(&c.safe_id) == id)
        .collect();
    let mut redeposited = Vec::new();
    let mut signing = None;
    for c in certs {
        deposit::withdraw_certificate(card, &c, safe, vault, None, None, &mut signing)?;
        let item = to_hex(&c.item_id);
        deposit::deposit(card, pin, &item, address, safe, vault, summary_field::DEFAULT)?;
        redeposited.push(item);
    }
    Ok(RekeyReport {
        key_check: to_hex(&check),
        redeposited,
    })
}
