//! Cryptographic building blocks shared by the card and the terminal, so both
//! sides derive keys and lay out blobs identically. All primitives come from
//! OpenSSL: P-256 ECDH, HKDF-SHA256, AES-256-GCM, SHA-256, HMAC-SHA256.

use openssl::bn::BigNumContext;
use openssl::derive::Deriver;
use openssl::ec::{EcGroup, EcKey, EcPoint, PointConversionForm};
use openssl::error::ErrorStack;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Private, Public};
use openssl::pkey_ctx::PkeyCtx;
use openssl::symm::{decrypt_aead, encrypt_aead, Cipher};
use zeroize::Zeroizing;

/// Uncompressed P-256 public key length (04 || X || Y).
pub const PUBLIC_KEY_LEN: usize = 65;
/// P-256 private scalar length.
pub const PRIVATE_KEY_LEN: usize = 32;
pub const GCM_NONCE_LEN: usize = 12;
/// A raw ECDSA P-256 signature, `r ‖ s`.
pub const SIGNATURE_LEN: usize = 64;
pub const GCM_TAG_LEN: usize = 16;
/// A wrapped 32-byte key: ephemeral public key || nonce || ciphertext || tag.
pub const WRAPPED_KEY_LEN: usize = PUBLIC_KEY_LEN + GCM_NONCE_LEN + 32 + GCM_TAG_LEN;

/// Label for file-key wrapping (ECIES to a card's encryption key).
pub const FILE_KEY_INFO: &[u8] = b"cardvault file key wrap v1";

/// Crypto failures: either OpenSSL refused, or the input does not authenticate.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("openssl: {0}")]
    Openssl(#[from] ErrorStack),
    #[error("authentication failed (wrong key, or data altered)")]
    Auth,
    #[error("malformed input: {0}")]
    Malformed(&'static str),
}

pub type Result<T> = std::result::Result<T, CryptoError>;

fn group() -> Result<EcGroup> {
    Ok(EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?)
}

pub fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    openssl::rand::rand_bytes(&mut b).expect("RNG");
    b
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    openssl::sha::sha256(data)
}

pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Result<[u8; 32]> {
    let pkey = PKey::hmac(key)?;
    let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &pkey)?;
    for p in parts {
        signer.update(p)?;
    }
    let v = signer.sign_to_vec()?;
    let mut out = [0u8; 32];
    out.copy_from_slice(&v);
    Ok(out)
}

/// HKDF-SHA256 (RFC 5869) producing a 32-byte key.
pub fn hkdf(ikm: &[u8], salt: &[u8], info: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
    let mut ctx = PkeyCtx::new_id(Id::HKDF)?;
    ctx.derive_init()?;
    ctx.set_hkdf_md(openssl::md::Md::sha256())?;
    ctx.set_hkdf_key(ikm)?;
    ctx.set_hkdf_salt(salt)?;
    ctx.add_hkdf_info(info)?;
    let mut out = Zeroizing::new([0u8; 32]);
    ctx.derive(Some(&mut out[..]))?;
    Ok(out)
}

/// AES-256-GCM seal: ciphertext || tag.
pub fn seal(key: &[u8; 32], nonce: &[u8; GCM_NONCE_LEN], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let mut tag = [0u8; GCM_TAG_LEN];
    let mut ct = encrypt_aead(Cipher::aes_256_gcm(), key, Some(nonce), aad, plaintext, &mut tag)?;
    ct.extend_from_slice(&tag);
    Ok(ct)
}

/// AES-256-GCM open of ciphertext || tag.
pub fn open(key: &[u8; 32], nonce: &[u8], aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    if nonce.len() != GCM_NONCE_LEN || sealed.len() < GCM_TAG_LEN {
        return Err(CryptoError::Malformed("short AEAD input"));
    }
    let (ct, tag) = sealed.split_at(sealed.len() - GCM_TAG_LEN);
    decrypt_aead(Cipher::aes_256_gcm(), key, Some(nonce), aad, ct, tag)
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::Auth)
}

/// A P-256 key pair held by a card. A clone shares the same OpenSSL key
/// (reference counted): no further copy of the private scalar is made.
#[derive(Clone)]
pub struct KeyPair {
    key: EcKey<Private>,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyPair(..)")
    }
}

impl KeyPair {
    pub fn generate() -> Result<KeyPair> {
        let g = group()?;
        Ok(KeyPair {
            key: EcKey::generate(&g)?,
        })
    }

    /// Rebuild from the private scalar; the public key is recomputed.
    pub fn from_private(d: &[u8]) -> Result<KeyPair> {
        if d.len() != PRIVATE_KEY_LEN {
            return Err(CryptoError::Malformed("private key length"));
        }
        let g = group()?;
        let bn = openssl::bn::BigNum::from_slice(d)?;
        let mut ctx = BigNumContext::new()?;
        let mut q = EcPoint::new(&g)?;
        q.mul_generator2(&g, &bn, &mut ctx)?;
        let key = EcKey::from_private_components(&g, &bn, &q)?;
        key.check_key()
            .map_err(|_| CryptoError::Malformed("private key out of range"))?;
        Ok(KeyPair { key })
    }

    /// The key as an OpenSSL key (certificate signing and checks).
    pub fn pkey(&self) -> Result<PKey<Private>> {
        Ok(PKey::from_ec_key(self.key.clone())?)
    }

    /// Take a P-256 key from an OpenSSL key (e.g. read from PEM).
    pub fn from_pkey(key: &PKey<Private>) -> Result<KeyPair> {
        let ec = key.ec_key().map_err(|_| CryptoError::Malformed("not an EC key"))?;
        if ec.group().curve_name() != Some(Nid::X9_62_PRIME256V1) {
            return Err(CryptoError::Malformed("not a P-256 key"));
        }
        Ok(KeyPair { key: ec })
    }

    /// The private key as PKCS#8 PEM (key files of the issuer tools).
    pub fn to_pem(&self) -> Result<Zeroizing<Vec<u8>>> {
        Ok(Zeroizing::new(self.pkey()?.private_key_to_pem_pkcs8()?))
    }

    /// Read a P-256 private key from PEM (PKCS#8 or SEC1).
    pub fn from_pem(pem: &[u8]) -> Result<KeyPair> {
        let key = PKey::private_key_from_pem(pem).map_err(|_| CryptoError::Malformed("not a PEM private key"))?;
        Self::from_pkey(&key)
    }

    /// The private scalar, fixed 32 bytes.
    pub fn private_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(
            self.key
                .private_key()
                .to_vec_padded(PRIVATE_KEY_LEN as i32)
                .expect("scalar fits"),
        )
    }

    /// Uncompressed public key.
    pub fn public_bytes(&self) -> Vec<u8> {
        let g = group().expect("P-256");
        let mut ctx = BigNumContext::new().expect("bn ctx");
        self.key
            .public_key()
            .to_bytes(&g, PointConversionForm::UNCOMPRESSED, &mut ctx)
            .expect("encode point")
    }

    /// ECDH shared secret (X coordinate) with a peer public key.
    pub fn ecdh(&self, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let peer = public_key(peer)?;
        let me = PKey::from_ec_key(self.key.clone())?;
        let mut d = Deriver::new(&me)?;
        d.set_peer(&peer)?;
        Ok(Zeroizing::new(d.derive_to_vec()?))
    }
}

/// ECDSA P-256 / SHA-256 signature as raw r || s (64 bytes).
pub fn sign_p256(key: &KeyPair, msg: &[u8]) -> Result<Vec<u8>> {
    let digest = sha256(msg);
    let sig = openssl::ecdsa::EcdsaSig::sign(&digest, &key.key)?;
    let mut out = sig.r().to_vec_padded(32)?;
    out.extend_from_slice(&sig.s().to_vec_padded(32)?);
    Ok(out)
}

/// Verify a raw r || s ECDSA P-256 / SHA-256 signature.
pub fn verify_p256(public: &[u8], msg: &[u8], sig: &[u8]) -> Result<bool> {
    if sig.len() != 64 {
        return Ok(false);
    }
    let pk = public_key(public)?;
    let ec = pk.ec_key()?;
    let r = openssl::bn::BigNum::from_slice(&sig[..32])?;
    let s = openssl::bn::BigNum::from_slice(&sig[32..])?;
    let sig = openssl::ecdsa::EcdsaSig::from_private_components(r, s)?;
    Ok(sig.verify(&sha256(msg), &ec).unwrap_or(false))
}

/// Parse and validate an uncompressed P-256 public key.
pub fn public_key(bytes: &[u8]) -> Result<PKey<Public>> {
    if bytes.len() != PUBLIC_KEY_LEN || bytes[0] != 0x04 {
        return Err(CryptoError::Malformed("public key must be 65 bytes, uncompressed"));
    }
    let g = group()?;
    let mut ctx = BigNumContext::new()?;
    let point = EcPoint::from_bytes(&g, bytes, &mut ctx).map_err(|_| CryptoError::Malformed("not a P-256 point"))?;
    let key = EcKey::from_public_key(&g, &point)?;
    key.check_key()
        .map_err(|_| CryptoError::Malformed("not a valid P-256 public key"))?;
    Ok(PKey::from_ec_key(key)?)
}

/// Short identifier of a public key: the first 8 bytes of its SHA-256.
pub fn key_id(public: &[u8]) -> [u8; 8] {
    let h = sha256(public);
    let mut id = [0u8; 8];
    id.copy_from_slice(&h[..8]);
    id
}

fn wrap_kek(shared: &[u8], ephemeral: &[u8], recipient: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
    let mut salt = Vec::with_capacity(2 * PUBLIC_KEY_LEN);
    salt.extend_from_slice(ephemeral);
    salt.extend_from_slice(recipient);
    hkdf(shared, &salt, FILE_KEY_INFO)
}

/// ECIES-wrap a 32-byte key to `recipient` (uncompressed P-256):
/// `E (65) || nonce (12) || AES-256-GCM(KEK, key) (48)` with
/// KEK = HKDF-SHA256(ECDH(e, Q), salt = E || Q, info = FILE_KEY_INFO) and
/// associated data `aad` (the caller's binding, e.g. the file header).
pub fn wrap_key(recipient: &[u8], key: &[u8; 32], aad: &[u8]) -> Result<Vec<u8>> {
    public_key(recipient)?;
    let eph = KeyPair::generate()?;
    let e_pub = eph.public_bytes();
    let shared = eph.ecdh(recipient)?;
    let kek = wrap_kek(&shared, &e_pub, recipient)?;
    let nonce = random::<GCM_NONCE_LEN>();
    let mut out = Vec::with_capacity(WRAPPED_KEY_LEN);
    out.extend_from_slice(&e_pub);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&seal(&kek, &nonce, aad, key)?);
    Ok(out)
}

/// Unwrap a key wrapped by [`wrap_key`] with the recipient's key pair.
pub fn unwrap_key(me: &KeyPair, wrapped: &[u8], aad: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
    if wrapped.len() != WRAPPED_KEY_LEN {
        return Err(CryptoError::Malformed("wrapped key length"));
    }
    let (e_pub, rest) = wrapped.split_at(PUBLIC_KEY_LEN);
    let (nonce, sealed) = rest.split_at(GCM_NONCE_LEN);
    let shared = me.ecdh(e_pub)?;
    let kek = wrap_kek(&shared, e_pub, &me.public_bytes())?;
    let pt = open(&kek, nonce, aad, sealed)?;
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&pt);
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap_and_tamper() {
        let card = KeyPair::generate().unwrap();
        let key = random::<32>();
        let w = wrap_key(&card.public_bytes(), &key, b"hdr").unwrap();
        assert_eq!(w.len(), WRAPPED_KEY_LEN);
        assert_eq!(&unwrap_key(&card, &w, b"hdr").unwrap()[..], &key);
        assert!(matches!(unwrap_key(&card, &w, b"other"), Err(CryptoError::Auth)));
        let mut bad = w.clone();
        bad[70] ^= 1;
        assert!(unwrap_key(&card, &bad, b"hdr").is_err());
        let other = KeyPair::generate().unwrap();
        assert!(unwrap_key(&other, &w, b"hdr").is_err());
    }

    #[test]
    fn private_key_round_trip() {
        let k = KeyPair::generate().unwrap();
        let k2 = KeyPair::from_private(&k.private_bytes()).unwrap();
        assert_eq!(k.public_bytes(), k2.public_bytes());
        assert!(KeyPair::from_private(&[0u8; 32]).is_err());
    }

    #[test]
    fn hkdf_matches_rfc5869_case_1() {
        let ikm = [0x0b; 22];
        let salt: Vec<u8> = (0..=12).collect();
        let info: Vec<u8> = (0xf0..=0xf9).collect();
        let okm = hkdf(&ikm, &salt, &info).unwrap();
        assert_eq!(
            crate::to_hex(&okm[..]),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
        );
    }
}
