//! Storing authorization on the card (NTT, 004's steps 21-24 / 31-34; SPEC
//! 3.4): an `authorized` or `issuer-only` application is written or deleted
//! only by STORE DATA UNDER AUTHORIZATION, never by WRITE MEMORY.
//!
//! - STORING REQUEST (P1 = application, data = SDI): the card draws a fresh
//!   challenge, keeps it (across power cycles) and answers its request signed
//!   with its storing key, followed by that key's certificate.
//! - STORE DATA UNDER AUTHORIZATION (P1 = application, data = len (2) ||
//!   authorization || data): the challenge is taken first, so it is used once
//!   whatever the outcome; then the chain (registrar roots → IRC / DPR → SAR /
//!   SA), the names (this card, this application, this issuer, this owner, its
//!   own challenge), the data (size and SHA-256), and only then one write of
//!   the whole application: the new data followed by zeros, or zeros for a
//!   delete. The state is committed once, so a card pulled mid-command keeps
//!   the old data or the new, never a mix.

use crate::applet::{Applet, HandlerResult};
use crate::profile::Profile;
use crate::state::CardState;
use cardvault_proto::apdu::CommandApdu;
use cardvault_proto::crypto::{self, KeyPair};
use cardvault_proto::storing::{
    self, Authorization, Operation, Party, RegistrarRoots, StorageRule, StoringDataInfo, StoringRequest,
};
use cardvault_proto::sw;
use openssl::x509::X509;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// Validity of a card's storing key certificate, in days.
pub const STORING_CERTIFICATE_DAYS: u32 = 3650;

/// The card's storing authorization state (system area), and the card's
/// signing key: the one ECDSA key of the card, which signs storing requests
/// and DESTROY KEY receipts. It is generated on the card at issuance
/// (GENERATE SIGNING KEY) and certified by the issuer (PUT DATA `DF35`);
/// pre-issued test cards get one certified by the test issuer.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoringState {
    /// The card's signing key (storing key), P-256 scalar; never readable.
    #[serde(default, with = "hex")]
    pub private_key: Vec<u8>,
    /// The signing key's certificate from the card's issuer (DER X.509,
    /// GET DATA `DF35`).
    #[serde(default, with = "hex")]
    pub certificate: Vec<u8>,
    /// The issuer registrar root (DER X.509), installed at issuance.
    #[serde(default, with = "hex")]
    pub issuer_registrar_root: Vec<u8>,
    /// The data registrar root (DER X.509), installed at issuance.
    #[serde(default, with = "hex")]
    pub data_registrar_root: Vec<u8>,
    /// The outstanding challenge of the last STORING REQUEST (empty: none).
    #[serde(default, with = "hex")]
    pub challenge: Vec<u8>,
}

/// An application's owner and storage rule (profile and state).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoragePolicy {
    /// `issuer`, or the data provider's name (the CN of its DPR).
    #[serde(default = "issuer")]
    pub owner: String,
    #[serde(default, with = "rule_str")]
    pub rule: StorageRule,
    /// The owner (a provider) alone may authorize, without the issuer.
    #[serde(default)]
    pub provider_alone: bool,
}

fn issuer() -> String {
    Party::Issuer.as_str().into()
}

impl Default for StoragePolicy {
    /// Holder-managed, owned by the issuer: what every application was
    /// before storing authorizations.
    fn default() -> Self {
        StoragePolicy {
            owner: issuer(),
            rule: StorageRule::Holder,
            provider_alone: false,
        }
    }
}

impl StoringState {
    /// The card's signing key and its certificate, when the card has them.
    /// The key is the storing key (`private_key`); the accessor exists so
    /// that code signing for the card reads as what it is.
    pub fn signing_key(&self) -> Option<(KeyPair, &[u8])> {
        if self.certificate.is_empty() {
            return None;
        }
        Some((KeyPair::from_private(&self.private_key).ok()?, &self.certificate))
    }
}

impl CardState {
    /// Give a new pre-issued card its storing identity: a signing key pair
    /// generated on the card, certified by the test issuer, and the test
    /// registrar roots (profiles with `test_issuer_certificate`, the
    /// default). A blank card (`factory_certificate`) gets nothing: the
    /// factory holds no issuer key, and issuance brings the signing key's
    /// certificate and the registrar roots.
    pub(crate) fn with_storing_identity(mut self, p: &Profile) -> CardState {
        if !p.test_issuer_certificate || p.factory_certificate {
            return self;
        }
        let key = KeyPair::generate().expect("card RNG");
        let subject = cardvault_proto::cert::CardSubject {
            card_number: self.card_number.clone(),
            role: self.role.clone(),
            member_number: Some(self.member_number.clone()).filter(|m| !m.is_empty()),
        };
        let root_key = KeyPair::from_pem(crate::test_issuer::ROOT_KEY_PEM).expect("test issuer key");
        let cert = storing::issue_card_signing_certificate(
            &root_key,
            &crate::test_issuer::root(),
            &key.public_bytes(),
            &subject,
            STORING_CERTIFICATE_DAYS,
        )
        .and_then(|c| Ok(c.to_der()?))
        .expect("certify storing key");
        self.storing = StoringState {
            private_key: key.private_bytes().to_vec(),
            certificate: cert,
            issuer_registrar_root: crate::test_registrars::issuer_registrar_der(),
            data_registrar_root: crate::test_registrars::data_registrar_der(),
            challenge: Vec::new(),
        };
        self
    }
}

impl Applet {
    /// Whether `r` (bytes of the application area) touches an application
    /// that only a storing authorization writes.
    pub(crate) fn touches_authorized_application(&self, r: &Range<usize>) -> bool {
        let s = self.state.page_size as usize;
        self.state.applications.iter().any(|a| {
            a.storing.rule != StorageRule::Holder
                && r.start < (a.first_page as usize + a.page_count as usize) * s
                && (a.first_page as usize) * s < r.end
        })
    }

    /// Page ranges of the applications that only storing authorizations write.
    pub(crate) fn authorized_page_ranges(&self) -> Vec<Range<u16>> {
        self.state
            .applications
            .iter()
            .filter(|a| a.storing.rule != StorageRule::Holder)
            .map(|a| a.first_page..a.first_page.saturating_add(a.page_count))
            .collect()
    }

    /// The storage rules data object (tag DF34).
    pub(crate) fn application_rules(&self) -> Vec<u8> {
        let mut v = Vec::new();
        for a in &self.state.applications {
            let owner = &a.storing.owner.as_bytes()[..a.storing.owner.len().min(255)];
            v.extend_from_slice(&[
                a.id,
                a.storing.rule.code(),
                a.storing.provider_alone as u8,
                owner.len() as u8,
            ]);
            v.extend_from_slice(owner);
        }
        v
    }

    /// An application that storing authorizations write, and its byte range.
    fn authorized_app(&self, id: u8) -> Result<(StoragePolicy, Range<usize>), u16> {
        let a = self
            .state
            .applications
            .iter()
            .find(|a| a.id == id)
            .ok_or(sw::REF_DATA_NOT_FOUND)?;
        if a.storing.rule == StorageRule::Holder || a.value {
            return Err(sw::CONDITIONS_NOT_SATISFIED);
        }
        let s = self.state.page_size as usize;
        let start = a.first_page as usize * s;
        let end = start + a.page_count as usize * s;
        if end > self.state.memory.len() {
            return Err(sw::CONDITIONS_NOT_SATISFIED);
        }
        Ok((a.storing.clone(), start..end))
    }

    /// STORING REQUEST: P1 = application id, P2 = 00, data = SDI. PIN
    /// required. Answers len (2) || request || storing key certificate.
    pub(crate) fn storing_request(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        let sdi = StoringDataInfo::parse(&c.data).ok_or(sw::WRONG_DATA)?;
        if !self.session.pin_verified {
            return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        let (_, range) = self.authorized_app(c.p1)?;
        if sdi.app != c.p1 || sdi.size as usize > range.len() {
            return Err(sw::WRONG_DATA);
        }
        let (key, certificate) = self.state.storing.signing_key().ok_or(sw::CONDITIONS_NOT_SATISFIED)?;
        let cert_hash = crypto::sha256(certificate);
        let challenge = crypto::random::<{ storing::CHALLENGE_LEN }>();
        let sig =
            crypto::sign_p256(&key, &StoringRequest::message(&cert_hash, &sdi, &challenge)).map_err(|_| sw::UNKNOWN)?;
        let request = StoringRequest {
            card_cert_hash: cert_hash,
            sdi,
            challenge,
            signature: sig.try_into().map_err(|_| sw::UNKNOWN)?,
        }
        .encode();
        self.state.storing.challenge = challenge.to_vec();
        self.mark_dirty();
        let mut out = (request.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&request);
        out.extend_from_slice(&self.state.storing.certificate);
        Ok(out)
    }

    /// STORE DATA UNDER AUTHORIZATION: P1 = application id, P2 = 00, data =
    /// len (2) || authorization (SA, or SAR where one party suffices) ||
    /// data (store; nothing for a delete). PIN required. 6982: no valid
    /// authorization for this card, application, challenge and signers;
    /// 6A80: the data is not the data authorized.
    pub(crate) fn store_data_under_authorization(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        let (auth, data) = match c.data.as_slice() {
            [h, l, rest @ ..] if rest.len() >= u16::from_be_bytes([*h, *l]) as usize => {
                rest.split_at(u16::from_be_bytes([*h, *l]) as usize)
            }
            _ => return Err(sw::WRONG_LENGTH),
        };
        if !self.session.pin_verified {
            return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        if self.session.backup.is_some() || self.session.restore.is_some() {
            return Err(sw::CONDITIONS_NOT_SATISFIED);
        }
        // Single use, whatever comes next.
        let challenge = std::mem::take(&mut self.state.storing.challenge);
        if !challenge.is_empty() {
            self.mark_dirty();
        }
        let auth = Authorization::parse(auth).ok_or(sw::WRONG_DATA)?;
        let (policy, range) = self.authorized_app(c.p1)?;
        let request = auth.request();
        if challenge.len() != storing::CHALLENGE_LEN
            || request.challenge[..] != challenge[..]
            || request.sdi.app != c.p1
        {
            return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        let roots = self.registrar_roots().ok_or(sw::CONDITIONS_NOT_SATISFIED)?;
        let signers = auth
            .verify(&roots, &self.state.storing.certificate)
            .map_err(|_| sw::SECURITY_STATUS_NOT_SATISFIED)?;
        let issuer_ok = signers.issuer.is_some() && signers.issuer == self.issuer_name();
        let owner_ok = signers.provider.as_deref() == Some(policy.owner.as_str());
        let allowed = match policy.rule {
            StorageRule::Holder => false,
            StorageRule::IssuerOnly => issuer_ok && signers.provider.is_none(),
            StorageRule::Authorized if policy.owner == Party::Issuer.as_str() => {
                issuer_ok && signers.provider.is_none()
            }
            StorageRule::Authorized => match (&signers.issuer, &signers.provider) {
                (Some(_), Some(_)) => issuer_ok && owner_ok,
                (None, Some(_)) => policy.provider_alone && owner_ok,
                _ => false,
            },
        };
        if !allowed {
            return Err(sw::SECURITY_STATUS_NOT_SATISFIED);
        }
        let sdi = &request.sdi;
        let size = sdi.size as usize;
        if size > range.len() {
            return Err(sw::WRONG_DATA);
        }
        match sdi.op {
            Operation::Store => {
                if data.len() != size || crypto::sha256(data) != sdi.hash {
                    return Err(sw::WRONG_DATA);
                }
            }
            Operation::Delete => {
                // The data named must be the data held; an application
                // already empty is what the delete asks for (a retry after
                // a delete whose answer was lost), and stays as it is.
                let held = &self.state.memory[range.start..range.start + size];
                let empty = self.state.memory[range.clone()].iter().all(|b| *b == 0);
                if !data.is_empty() || (crypto::sha256(held) != sdi.hash && !empty) {
                    return Err(sw::WRONG_DATA);
                }
            }
        }
        let mut new = vec![0u8; range.len()];
        if sdi.op == Operation::Store {
            new[..size].copy_from_slice(data);
        }
        if self.state.memory[range.clone()] != new[..] {
            self.state.memory[range.clone()].copy_from_slice(&new);
            self.flag_changed(&range);
        }
        self.mark_dirty();
        Ok(vec![])
    }

    /// GENERATE SIGNING KEY `80 48 00 00` (issuer session, not yet issued):
    /// a new P-256 signing key pair, kept for this session only until PUT
    /// DATA `DF35` certifies it (a card pulled before keeps what it had).
    /// Answers the public key (65 bytes).
    pub(crate) fn generate_signing_key(&mut self, c: &CommandApdu) -> HandlerResult {
        if c.p1 != 0 || c.p2 != 0 {
            return Err(sw::WRONG_P1P2);
        }
        if !c.data.is_empty() {
            return Err(sw::WRONG_LENGTH);
        }
        self.require_admin()?;
        if self.state.issued {
            return Err(sw::CONDITIONS_NOT_SATISFIED);
        }
        let kp = KeyPair::generate().map_err(|_| sw::UNKNOWN)?;
        let public = kp.public_bytes();
        self.session.pending_signing = Some(kp);
        Ok(public)
    }

    /// PUT DATA `DF35` (issuer session, not yet issued; routed by
    /// `put_data`): the signing key's certificate (one DER certificate) over
    /// the key of GENERATE SIGNING KEY. 6985 without a generated key; 6982
    /// unless it is a card signing key certificate (OU, digitalSignature)
    /// under the installed trust anchor; 6A80 unless it certifies that key
    /// for this card number and the role PUT DATA set. On success the key
    /// and certificate replace the old ones together.
    pub(crate) fn store_signing_certificate(&mut self, c: &CommandApdu) -> HandlerResult {
        let pending = self
            .session
            .pending_signing
            .as_ref()
            .ok_or(sw::CONDITIONS_NOT_SATISFIED)?;
        let anchor = X509::from_der(&self.state.trust_anchor).map_err(|_| sw::REF_DATA_NOT_FOUND)?;
        let signer =
            storing::verify_card_signing_key(&[anchor], &c.data).map_err(|_| sw::SECURITY_STATUS_NOT_SATISFIED)?;
        if signer.public_key != pending.public_bytes()
            || signer.card_number != self.state.card_number
            || signer.role != self.state.role
        {
            return Err(sw::WRONG_DATA);
        }
        let kp = self.session.pending_signing.take().expect("checked");
        self.state.storing.private_key = kp.private_bytes().to_vec();
        self.state.storing.certificate = c.data.clone();
        self.mark_dirty();
        Ok(vec![])
    }

    /// PUT DATA `BF23` / `BF24` (issuer session, not yet issued; routed by
    /// `put_data`): install the issuer registrar root / the data registrar
    /// root, the trust anchors of storing authorizations. 6A80 unless one
    /// self-signed P-256 CA certificate.
    pub(crate) fn install_registrar_root(&mut self, c: &CommandApdu) -> HandlerResult {
        let root = match cardvault_proto::cert::split_certificates(&c.data) {
            Ok(mut v) if v.len() == 1 => v.remove(0),
            _ => return Err(sw::WRONG_DATA),
        };
        if !cardvault_proto::cert::is_root(&root) {
            return Err(sw::WRONG_DATA);
        }
        let slot = if u16::from_be_bytes([c.p1, c.p2]) == cardvault_proto::tag::ISSUER_REGISTRAR_ROOT {
            &mut self.state.storing.issuer_registrar_root
        } else {
            &mut self.state.storing.data_registrar_root
        };
        if *slot != c.data {
            *slot = c.data.clone();
            self.mark_dirty();
        }
        Ok(vec![])
    }

    fn registrar_roots(&self) -> Option<RegistrarRoots> {
        Some(RegistrarRoots {
            issuer_registrar: X509::from_der(&self.state.storing.issuer_registrar_root).ok()?,
            data_registrar: X509::from_der(&self.state.storing.data_registrar_root).ok()?,
        })
    }

    /// The card's issuer by name: the CN of its issuer root (trust anchor),
    /// which the issuer's IRC must carry.
    fn issuer_name(&self) -> Option<String> {
        storing::common_name(&X509::from_der(&self.state.trust_anchor).ok()?)
    }
}

mod rule_str {
    use cardvault_proto::storing::StorageRule;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(r: &StorageRule, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(r.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<StorageRule, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
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
