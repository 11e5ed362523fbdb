//! The card side of GlobalPlatform SCP11: the certificate store (GET DATA
//! `BF21`), the OCE certificate chain (PERFORM SECURITY OPERATION), and the
//! handshakes (INTERNAL AUTHENTICATE for SCP11b, MUTUAL AUTHENTICATE for
//! SCP11a). Wrapping and unwrapping of later commands is done below the
//! applet, in the ISO layer (`iso.rs`), with the channel opened here.
//!
//! And the card's identity at issuance (NTT's registration certificate): in
//! the issuer's SCP11a session, before END PERSONALIZATION, the issuer may
//! install its root as trust anchor (PUT DATA `BF22`), has the card generate
//! a new ECKA key pair (GENERATE ECKA KEY), and stores the registration
//! certificate it signed over that key (PUT DATA `BF21`). The card accepts
//! the certificate only when it chains to the installed root and certifies
//! the new key for this card number and role; then the new key and
//! certificate replace the factory ones together.

use crate::applet::{Applet, HandlerResult};
use cardvault_proto::apdu::CommandApdu;
use cardvault_proto::cert::{self, split_certificates, verify_chain};
use cardvault_proto::scp11::{self, CardChannel, Variant};
use cardvault_proto::sw;
use openssl::x509::X509;

/// Largest OCE chain the card accepts (certificates).
const MAX_OCE_CHAIN: usize = 4;

/// An open SCP11 session.
#[derive(Debug)]
pub struct SecureSession {
    pub variant: Variant,
    pub channel: CardChannel,
}

/// SCP11a: what PERFORM SECURITY OPERATION has received so far.
#[derive(Debug, Default)]
pub struct OceState {
    /// Certificates of an unfinished chain (root side first).
    pub chain: Vec<X509>,
    /// PK.OCE.ECKA of the last chain that verified.
    pub key: Option<Vec<u8>>,
}

impl Applet {
    /// GET DATA `BF21`: the card certificate (DER). The data field may be
    /// empty or name the key: `A6 04 83 02 KID KVN` with KID 11 or 13 (both
    /// use the one card key) and KVN 00 or 01.
    pub(crate) fn certificate_store(&mut self, c: &CommandApdu) -> HandlerResult {
        match c.data.as_slice() {
            [] => {}
            [0xA6, 0x04, 0x83, 0x02, kid, kvn]
                if matches!(*kid, scp11::KID_SCP11A | scp11::KID_SCP11B) && matches!(*kvn, 0 | scp11::KVN) => {}
            [0xA6, ..] => return Err(sw::REF_DATA_NOT_FOUND),
            _ => return Err(sw::WRONG_DATA),
        }
        if self.state.certificate.is_empty() {
            return Err(sw::REF_DATA_NOT_FOUND);
        }
        Ok(self.state.certificate.clone())
    }

    /// The role the card's certificate names (`blank` for a factory
    /// certificate), if it has a readable one.
    pub(crate) fn certified_role(&self) -> Option<String> {
        let c = X509::from_der(&self.state.certificate).ok()?;
        cert::card_subject(&c).map(|s| s.role)
    }

    /// An issuer signature (restore and load authorizations): `cert` (one
    /// DER certificate) must verify under the installed trust anchor as an
    /// issuer signer (keyUsage digitalSignature), and `sig` (raw r || s) must
    /// verify over `msg` with the key it certifies. The one check both
    /// authorizations go through (a restore authorization may also come
    /// through the issuer's IRC: [`Self::restore_signer_verifies`]).
    pub(crate) fn issuer_signature_verifies(&self, cert: &[u8], msg: &[u8], sig: &[u8]) -> bool {
        let Ok(anchor) = X509::from_der(&self.state.trust_anchor) else {
            return false;
        };
        let Ok(leaf) = split_certificates(cert).and_then(|mut v| match v.len() {
            1 => Ok(v.remove(0)),
            _ => Err(cert::CertError::Malformed("not one certificate")),
        }) else {
            return false;
        };
        match cert::verify_signer_chain(&[anchor], &[leaf]) {
            Ok(key) => cardvault_proto::crypto::verify_p256(&key, msg, sig).unwrap_or(false),
            Err(_) => false,
        }
    }

    /// The signer of a restore authorization: an issuer signer under the
    /// installed issuer root ([`Self::issuer_signature_verifies`]), or the
    /// issuer's registration certificate (IRC) under the installed issuer
    /// registrar root, naming this card's issuer (the CN of its issuer root),
    /// the same trust a storing authorization goes through. `sig` must
    /// verify over `msg` with the key the certificate certifies.
    pub(crate) fn restore_signer_verifies(&self, cert: &[u8], msg: &[u8], sig: &[u8]) -> bool {
        if self.issuer_signature_verifies(cert, msg, sig) {
            return true;
        }
        let Ok(root) = X509::from_der(&self.state.storing.issuer_registrar_root) else {
            return false;
        };
        let Some(issuer) = self.issuer_name() else {
            return false;
        };
        use cardvault_proto::storing::{verify_party_certificate, Party};
        if verify_party_certificate(&root, cert, Party::Issuer).ok() != Some(issuer) {
            return false;
        }
        X509::from_der(cert)
            .ok()
            .and_then(|c| cert::ecka_public_key(&c).ok())
            .is_some_and(|key| cardvault_proto::crypto::verify_p256(&key, msg, sig).unwrap_or(false))
    }

    /// GENERATE ECKA KEY `80 EF 00 00` (issuer session, not yet issued): a new
    /// P-256 key pair for the registration certificate. The card keeps it for
    /// this session only (a card pulled before PUT DATA `BF21` keeps its
    /// factory key and certificate); answers the public key (65 bytes).
    pub(crate) fn generate_ecka_key(&mut self, c: &CommandApdu) -> HandlerResult {
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
        let kp = cardvault_proto::crypto::KeyPair::generate().map_err(|_| sw::UNKNOWN)?;
        let public = kp.public_bytes();
        self.session.pending_ecka = Some(kp);
        Ok(public)
    }

    /// PUT DATA `BF21` (issuer session, not yet issued): the registration
    /// certificate (one DER certificate) over the key of GENERATE ECKA KEY.
    /// 6982 unless it chains to the installed trust anchor; 6A80 unless it
    /// certifies that key for key agreement, names this card number and the
    /// role PUT DATA set; 6985 without a generated key. Nothing changes on a
    /// refusal; on success the new key and certificate replace the old ones.
    pub(crate) fn store_registration_certificate(&mut self, c: &CommandApdu) -> HandlerResult {
        let leaf = match split_certificates(&c.data) {
            Ok(mut v) if v.len() == 1 => v.remove(0),
            _ => return Err(sw::WRONG_DATA),
        };
        let pending = self.session.pending_ecka.as_ref().ok_or(sw::CONDITIONS_NOT_SATISFIED)?;
        let anchor = X509::from_der(&self.state.trust_anchor).map_err(|_| sw::REF_DATA_NOT_FOUND)?;
        verify_chain(std::slice::from_ref(&anchor), std::slice::from_ref(&leaf))
            .map_err(|_| sw::SECURITY_STATUS_NOT_SATISFIED)?;
        let (_, key) = cert::verify_ecka_chain(&[anchor], std::slice::from_ref(&leaf)).map_err(|_| sw::WRONG_DATA)?;
        let subject = cert::card_subject(&leaf).ok_or(sw::WRONG_DATA)?;
        if key != pending.public_bytes()
            || subject.card_number != self.state.card_number
            || subject.role != self.state.role
            || subject.role == cert::FACTORY_ROLE
        {
            return Err(sw::WRONG_DATA);
        }
        let kp = self.session.pending_ecka.take().expect("checked");
        self.state.ecka_private = kp.private_bytes().to_vec();
        self.state.certificate = c.data.clone();
        self.mark_dirty();
        Ok(vec![])
    }

    /// PUT DATA `BF22` (issuer session, not yet issued): install an issuer
    /// root (one DER self-signed CA certificate, P-256) as the trust anchor
    /// in place of the one the factory installed. 6A80 for anything else.
    pub(crate) fn install_trust_anchor(&mut self, c: &CommandApdu) -> HandlerResult {
        let root = match split_certificates(&c.data) {
            Ok(mut v) if v.len() == 1 => v.remove(0),
            _ => return Err(sw::WRONG_DATA),
        };
        if !cert::is_root(&root) {
            return Err(sw::WRONG_DATA);
        }
        if self.state.trust_anchor != c.data {
            self.state.trust_anchor = c.data.clone();
            self.mark_dirty();
        }
        Ok(vec![])
    }

    /// PERFORM SECURITY OPERATION `80 2A KVN P2`: one OCE certificate; P2 bit
    /// 80 = more follow. The last one completes the chain, which must verify
    /// under the installed issuer root; its leaf key becomes PK.OCE.ECKA.
    pub(crate) fn perform_security_operation(&mut self, c: &CommandApdu) -> HandlerResult {
        if !matches!(c.p1, 0 | scp11::KVN) || c.p2 & !scp11::PSO_MORE != scp11::KID_OCE {
            return Err(sw::REF_DATA_NOT_FOUND);
        }
        if self.protected_command() {
            return Err(sw::CONDITIONS_NOT_SATISFIED);
        }
        let oce = &mut self.session.oce;
        oce.key = None;
        let cert = match split_certificates(&c.data) {
            Ok(mut v) if v.len() == 1 => v.remove(0),
            _ => {
                oce.chain.clear();
                return Err(sw::WRONG_DATA);
            }
        };
        if oce.chain.len() >= MAX_OCE_CHAIN {
            oce.chain.clear();
            return Err(sw::WRONG_LENGTH);
        }
        oce.chain.push(cert);
        if c.p2 & scp11::PSO_MORE != 0 {
            return Ok(vec![]);
        }
        let chain = std::mem::take(&mut oce.chain);
        let anchor = X509::from_der(&self.state.trust_anchor).map_err(|_| sw::REF_DATA_NOT_FOUND)?;
        let leaf = verify_chain(&[anchor], &chain).map_err(|_| sw::SECURITY_STATUS_NOT_SATISFIED)?;
        let key = cardvault_proto::cert::ecka_public_key(&leaf).map_err(|_| sw::WRONG_DATA)?;
        self.session.oce.key = Some(key);
        Ok(vec![])
    }

    /// INTERNAL AUTHENTICATE `80 88 KVN 13` (SCP11b) and MUTUAL AUTHENTICATE
    /// `80 82 KVN 11` (SCP11a, after the OCE chain): open a new secure session.
    /// Whatever the session had (PIN verified, admin authenticated, a backup
    /// in progress) is forgotten first. An SCP11a session is an issuer
    /// (admin) session.
    pub(crate) fn scp11_handshake(&mut self, c: &CommandApdu, variant: Variant) -> HandlerResult {
        if !matches!(c.p1, 0 | scp11::KVN) {
            return Err(sw::REF_DATA_NOT_FOUND);
        }
        if self.protected_command() {
            return Err(sw::CONDITIONS_NOT_SATISFIED);
        }
        let key = self.state.ecka_key().ok_or(sw::REF_DATA_NOT_FOUND)?;
        let pk_oce = match variant {
            Variant::Scp11a => Some(self.session.oce.key.take().ok_or(sw::CONDITIONS_NOT_SATISFIED)?),
            Variant::Scp11b => None,
        };
        self.reset_session();
        let (answer, channel) =
            scp11::card_handshake(variant, &key, pk_oce.as_deref(), &c.data).map_err(|_| sw::WRONG_DATA)?;
        self.session.secure = Some(SecureSession { variant, channel });
        // SCP11a authenticated an operator whose certificate chains to the
        // issuer root installed on this card: the session is the issuer's
        // (and it ends with the secure session).
        self.session.admin_authenticated = variant == Variant::Scp11a;
        Ok(answer)
    }
}
