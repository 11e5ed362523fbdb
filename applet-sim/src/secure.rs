//! The card side of GlobalPlatform SCP11: the certificate store (GET DATA
//! `BF21`), the OCE certificate chain (PERFORM SECURITY OPERATION), and the
//! handshakes (INTERNAL AUTHENTICATE for SCP11b, MUTUAL AUTHENTICATE for
//! SCP11a). Wrapping and unwrapping of later commands is done below the
//! applet, in the ISO layer (`iso.rs`), with the channel opened here.

use crate::applet::{Applet, HandlerResult};
use cardvault_proto::apdu::CommandApdu;
use cardvault_proto::cert::{split_certificates, verify_chain};
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
        // issuer root installed on this card: the session is the issuer's,
        // as after EXTERNAL AUTHENTICATE with the admin key (and it ends with
        // the secure session).
        self.session.admin_authenticated = variant == Variant::Scp11a;
        Ok(answer)
    }
}
