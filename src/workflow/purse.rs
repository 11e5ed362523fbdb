//! The value application (e-money purse): balance, issuer-authorized loads
//! and debits under the holder PIN. Restored value is reset by the card
//! (FIG. 20), and no holder command writes a value application's pages.
//!
//! A load is two parties' work: the holder's card hands out a load challenge
//! ([`request_load`]), the issuer signs a [`LoadAuthorizationFile`] naming
//! the card, the application, the amount and that challenge
//! ([`sign_load`]), and the card checks it on CREDIT ([`credit`]).

use crate::card::CardClient;
use crate::error::{Error, Result};
use crate::issuer::IssuerSigner;
use cardvault_proto::load::{load_message, LoadAuthorization, LOAD_CHALLENGE_LEN};
use serde::{Deserialize, Serialize};

/// The balance of value application `app`.
pub fn balance(card: &mut CardClient<'_>, app: u8) -> Result<u32> {
    card.balance(app)
}

/// A request for a load authorization (holder's card → issuer).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LoadRequest {
    pub version: u32,
    pub card_number: String,
    pub app: u8,
    pub amount: u32,
    /// Hex, from the card's GET LOAD CHALLENGE.
    pub challenge: String,
}

/// The issuer's load authorization: the request, an ECDSA P-256 signature
/// (hex r||s) over `cardvault_proto::load::load_message`, and the signer's
/// certificate (hex DER) under the issuer root.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LoadAuthorizationFile {
    #[serde(flatten)]
    pub request: LoadRequest,
    pub signature: String,
    pub signer_certificate: String,
}

/// Verify the PIN and ask the card for a load challenge for `amount` on `app`.
pub fn request_load(card: &mut CardClient<'_>, pin: &[u8], app: u8, amount: u32) -> Result<LoadRequest> {
    card.verify_pin(pin)?;
    let challenge = card.load_challenge(app)?;
    Ok(LoadRequest {
        version: 1,
        card_number: card.card_number()?,
        app,
        amount,
        challenge: cardvault_proto::to_hex(&challenge),
    })
}

/// The issuer signs a load request with its authorization signer.
pub fn sign_load(req: &LoadRequest, signer: &IssuerSigner) -> Result<LoadAuthorizationFile> {
    if req.version != 1 {
        return Err(Error::Usage(format!(
            "load request version {} is not supported",
            req.version
        )));
    }
    let challenge = cardvault_proto::from_hex(&req.challenge)
        .filter(|c| c.len() == LOAD_CHALLENGE_LEN)
        .ok_or_else(|| Error::Usage("the request's challenge is not 16 bytes of hex".into()))?;
    let msg = load_message(&req.card_number, req.app, req.amount, &challenge);
    let sig = signer.sign(&msg)?;
    Ok(LoadAuthorizationFile {
        request: req.clone(),
        signature: cardvault_proto::to_hex(&sig),
        signer_certificate: cardvault_proto::to_hex(signer.certificate_der()),
    })
}

/// Verify the PIN, then CREDIT with the issuer's authorization; returns the
/// new balance. The card checks the signature, its card number, the
/// application and its outstanding challenge (used once).
pub fn credit(card: &mut CardClient<'_>, pin: &[u8], auth: &LoadAuthorizationFile) -> Result<u32> {
    let signature: [u8; 64] = cardvault_proto::from_hex(&auth.signature)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| Error::Usage("the authorization's signature is not 64 bytes of hex".into()))?;
    let signer_certificate = cardvault_proto::from_hex(&auth.signer_certificate)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| Error::Usage("the authorization's signer certificate is not hex DER".into()))?;
    card.verify_pin(pin)?;
    let number = card.card_number()?;
    if number != auth.request.card_number {
        return Err(Error::Usage(format!(
            "the load authorization names card {}, this is card {number}",
            auth.request.card_number
        )));
    }
    let a = LoadAuthorization {
        amount: auth.request.amount,
        signature,
        signer_certificate,
    };
    card.credit(auth.request.app, &a)
}

/// The issuer at hand: request, sign and credit in one session.
pub fn credit_with_issuer_key(
    card: &mut CardClient<'_>,
    pin: &[u8],
    app: u8,
    amount: u32,
    signer: &IssuerSigner,
) -> Result<u32> {
    let req = request_load(card, pin, app, amount)?;
    let auth = sign_load(&req, signer)?;
    credit(card, pin, &auth)
}

/// Verify the PIN, then debit `amount`; returns the new balance.
pub fn debit(card: &mut CardClient<'_>, pin: &[u8], app: u8, amount: u32) -> Result<u32> {
    card.verify_pin(pin)?;
    card.debit(app, amount)
}
