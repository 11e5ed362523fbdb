//! Issuer-signed value loads: the only way value enters a value application.
//!
//! The card hands out a load challenge (GET LOAD CHALLENGE, kept across power
//! cycles until a CREDIT uses it, whatever the outcome). The issuer signs
//! [`load_message`] with its authorization signer key (the same that signs
//! restore authorizations); CREDIT carries [`LoadAuthorization`] with the
//! signer's certificate, and the card checks that certificate under its
//! installed issuer root, then the signature against the card number, the
//! application, the amount and its own challenge. WRITE
//! MEMORY and RESTORE never write a value application's pages, so no holder
//! command creates value.

use crate::backup::lv;

/// Domain separation label of the load authorization signature.
pub const LOAD_LABEL: &[u8] = b"cardvault load authorization v1";
/// Length of a load challenge.
pub const LOAD_CHALLENGE_LEN: usize = 16;
/// Length of an ECDSA P-256 signature (r || s).
pub const SIGNATURE_LEN: usize = 64;
/// Length of the CREDIT data field before the signer's certificate: amount
/// (4) || signature (64).
pub const CREDIT_DATA_LEN: usize = 4 + SIGNATURE_LEN;

/// The message the issuer signs (ECDSA P-256, SHA-256):
/// label || len(card) || card number || application id (1) || amount (4, big
/// endian) || challenge (16).
pub fn load_message(card_number: &str, app: u8, amount: u32, challenge: &[u8]) -> Vec<u8> {
    let mut m = LOAD_LABEL.to_vec();
    m.extend_from_slice(&lv(card_number));
    m.push(app);
    m.extend_from_slice(&amount.to_be_bytes());
    m.extend_from_slice(challenge);
    m
}

/// The CREDIT data field: the amount, the issuer's signature over
/// [`load_message`] and the signer's certificate (DER, under the issuer
/// root installed on the card). Built by the terminal, read by the card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadAuthorization {
    pub amount: u32,
    pub signature: [u8; SIGNATURE_LEN],
    pub signer_certificate: Vec<u8>,
}

impl LoadAuthorization {
    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.amount.to_be_bytes().to_vec();
        v.extend_from_slice(&self.signature);
        v.extend_from_slice(&self.signer_certificate);
        v
    }

    /// Parse the CREDIT data field; `None` unless it is longer than
    /// [`CREDIT_DATA_LEN`] bytes (a certificate follows the signature).
    pub fn parse(data: &[u8]) -> Option<LoadAuthorization> {
        if data.len() <= CREDIT_DATA_LEN {
            return None;
        }
        let (a, rest) = data.split_at(4);
        let (s, cert) = rest.split_at(SIGNATURE_LEN);
        Some(LoadAuthorization {
            amount: u32::from_be_bytes(a.try_into().ok()?),
            signature: s.try_into().ok()?,
            signer_certificate: cert.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_parse_and_message_layout() {
        let a = LoadAuthorization {
            amount: 0x01020304,
            signature: [7; 64],
            signer_certificate: vec![0x30, 0x00],
        };
        assert_eq!(LoadAuthorization::parse(&a.encode()), Some(a.clone()));
        assert_eq!(LoadAuthorization::parse(&[0, 0, 0, 1]), None);
        assert_eq!(LoadAuthorization::parse(&a.encode()[..CREDIT_DATA_LEN]), None);
        let m = load_message("12", 1, 5, &[9; 16]);
        assert_eq!(&m[..LOAD_LABEL.len()], LOAD_LABEL);
        assert_eq!(
            &m[LOAD_LABEL.len()..],
            &[&[2u8, b'1', b'2', 1, 0, 0, 0, 5][..], &[9; 16]].concat()[..]
        );
    }
}
