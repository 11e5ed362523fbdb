//! Issuer admin authentication (EXTERNAL AUTHENTICATE with P2 = admin key reference).

use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;

/// The admin cryptogram for EXTERNAL AUTHENTICATE, computed the same way by
/// the card and by the issuer's terminal.
pub fn admin_cryptogram(
    key: &[u8],
    challenge: &[u8],
    card_number: &str,
) -> Result<Vec<u8>, openssl::error::ErrorStack> {
    let pkey = PKey::hmac(key)?;
    let mut signer = Signer::new(MessageDigest::sha256(), &pkey)?;
    signer.update(crate::ADMIN_AUTH_LABEL)?;
    signer.update(challenge)?;
    signer.update(card_number.as_bytes())?;
    signer.sign_to_vec()
}
