//! The card session's secure channel: GlobalPlatform SCP11b between the
//! terminal and a certified card (docs/PROTOCOL.md §10).
//!
//! The client opens it lazily, right before the first command that needs it
//! ([`needs_secure_session`]): it reads the card's certificate chain (GET DATA
//! `BF21`), verifies it against the trusted issuer roots (chain, validity, key
//! usage), and sends INTERNAL AUTHENTICATE, whose receipt proves that the card
//! holds the certified key. Until the chain verifies, nothing secret is sent:
//! a card that fails gets [`Error::UntrustedCard`] and no PIN.
//!
//! Handshake cost: 2 APDUs on a path that takes extended APDUs (GET DATA with
//! the whole chain, INTERNAL AUTHENTICATE); with short APDUs only, GET
//! RESPONSE rounds fetch the rest of the chain (the test issuer's card
//! certificate is under 600 bytes: 2 more).
//!
//! Once open, every command but SELECT is wrapped (C-MAC + C-DECRYPTION) and
//! every answer unwrapped (R-MAC checked before anything of it is used, then
//! R-ENCRYPTION removed). GET RESPONSE and command chaining stay below: the
//! channel sends the wrapped APDU as it sends any other.

use crate::apdu::{Command, StatusWord};
use crate::error::{Error, Result};
use crate::trust::Trust;
use cardvault_proto::cert::{self, CardSubject};
use cardvault_proto::scp11;
use openssl::x509::X509;
use serde::Serialize;

/// Whether the terminal opens the secure session before sending `cmd`: every
/// sensitive command (the card refuses it plain). Issuer commands run in the
/// issuer's SCP11a session, opened before them
/// ([`super::CardClient::issuer_authenticate`]).
pub fn needs_secure_session(cmd: &Command) -> bool {
    cardvault_proto::command_is_sensitive(cmd.cla, cmd.ins)
}

/// The card's certificate chain as read from the card, and what the terminal
/// made of it.
#[derive(Debug, Clone, Serialize)]
pub struct CertificateReport {
    /// The certificates, root side first, leaf (the card's) last.
    pub chain: Vec<CertificateInfo>,
    /// Whether the chain verifies under a trusted root (chain, validity, key usage).
    pub verified: bool,
    /// Why not, when it does not.
    pub reason: Option<String>,
    /// What the terminal trusts (file names, "built-in test issuer").
    pub trusted_roots: Vec<String>,
}

/// One certificate of a chain.
#[derive(Debug, Clone, Serialize)]
pub struct CertificateInfo {
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub not_before: String,
    pub not_after: String,
    /// The card number, role and member number a card certificate names.
    pub card_number: Option<String>,
    pub role: Option<String>,
    pub member_number: Option<String>,
    /// The card profile extension of a registration certificate
    /// (`profile=main;key_group_size=3;...`), when it has one.
    pub profile: Option<String>,
    /// SHA-256 of the DER certificate, hex.
    pub sha256: String,
    #[serde(skip)]
    pub der: Vec<u8>,
}

fn name_text(n: &openssl::x509::X509NameRef) -> String {
    n.entries()
        .map(|e| {
            let key = e.object().nid().short_name().unwrap_or("?");
            let val = e.data().to_string().unwrap_or_default();
            format!("{key}={val}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl CertificateInfo {
    pub fn of(c: &X509) -> CertificateInfo {
        let der = c.to_der().unwrap_or_default();
        let subject: Option<CardSubject> = cert::card_subject(c).filter(|s| !s.role.is_empty());
        CertificateInfo {
            subject: name_text(c.subject_name()),
            issuer: name_text(c.issuer_name()),
            serial: c
                .serial_number()
                .to_bn()
                .ok()
                .and_then(|b| b.to_hex_str().ok().map(|s| s.to_lowercase()))
                .unwrap_or_default(),
            not_before: c.not_before().to_string(),
            not_after: c.not_after().to_string(),
            card_number: subject.as_ref().map(|s| s.card_number.clone()),
            role: subject.as_ref().map(|s| s.role.clone()),
            member_number: subject.and_then(|s| s.member_number),
            profile: cert::card_profile(c),
            sha256: cardvault_proto::to_hex(&openssl::sha::sha256(&der)),
            der,
        }
    }
}

/// A verified card identity: what the leaf certificate names, and its key.
#[derive(Debug, Clone)]
pub struct CardIdentity {
    pub subject: CardSubject,
    /// PK.SD.ECKA, the certified key agreement key (65 bytes).
    pub public_key: Vec<u8>,
    /// The verified chain as the card returned it (DER certificates, leaf
    /// last): what TAKE OUT KEY names a target card by.
    pub chain_der: Vec<u8>,
}

/// Verify a certificate store answer under `trust`: the identity, or why not.
pub fn verify(trust: &Trust, chain: &[X509]) -> std::result::Result<CardIdentity, String> {
    if trust.is_empty() {
        return Err(
            "no issuer root is trusted (give --trust ROOT.pem, CARDVAULT_TRUST or trust = [...] in config.toml)".into(),
        );
    }
    if chain.is_empty() {
        return Err("the card has no certificate".into());
    }
    let (leaf, public_key) = cert::verify_ecka_chain(trust.roots(), chain).map_err(|e| e.to_string())?;
    let subject = cert::card_subject(&leaf).ok_or("the card certificate names no card number")?;
    let mut chain_der = Vec::new();
    for c in chain {
        chain_der.extend_from_slice(&c.to_der().map_err(|e| e.to_string())?);
    }
    Ok(CardIdentity {
        subject,
        public_key,
        chain_der,
    })
}

/// An open SCP11b session.
pub(crate) struct SecureChannel {
    pub channel: scp11::ClientChannel,
    pub identity: CardIdentity,
}

/// The wire command for a protected one: ClientChannel output as a channel
/// [`Command`], encoded exactly as its C-MAC assumed (short or extended).
pub(crate) fn wrap(sc: &mut SecureChannel, cmd: &Command, extended_path: bool) -> Result<Command> {
    // Extended when the data needs it, or when a long answer is expected and
    // the path takes extended APDUs (an answer grows by up to 24 bytes).
    let long_answer = cmd.ne + 24 > 256;
    let extended = scp11::wrapped_len(cmd.data.len()) > 255 || (extended_path && long_answer);
    let w = sc
        .channel
        .wrap_with(cmd.cla, cmd.ins, cmd.p1, cmd.p2, &cmd.data, extended)
        .map_err(|e| Error::SecureChannel {
            command: cmd.name,
            reason: e.to_string(),
        })?;
    let mut out = Command::new(cmd.name, w.cla, w.ins, w.p1, w.p2).with_data(&w.data);
    out.secret = cmd.secret;
    // Every protected answer carries at least an R-MAC: always ask for data,
    // so that the card sends it at once rather than with 61xx.
    out.ne = if w.extended && extended_path {
        crate::apdu::NE_MAX
    } else {
        256
    };
    Ok(out)
}

/// Check and decrypt a protected answer. Any error closes the session.
pub(crate) fn unwrap(sc: &mut SecureChannel, name: &'static str, data: &[u8], sw: StatusWord) -> Result<Vec<u8>> {
    sc.channel
        .unwrap(data, sw.to_u16())
        .map(|d| d.to_vec())
        .map_err(|e| Error::SecureChannel {
            command: name,
            reason: e.to_string(),
        })
}
