//! Key take-out blob (TAKE OUT KEY → IMPORT KEY), see docs/FORMATS.md.

/// Version 2: the main key is wrapped to the target card's certified ECKA
/// key as well as to the key group (an ephemeral P-256 public key follows the
/// counter in the clear part).
pub const VERSION: u8 = 2;
/// Key slot of the main decryption key.
pub const SLOT_MAIN: u8 = 0x01;
/// Key type: EC P-256 private scalar (plaintext = d (32) || Q (65)).
pub const TYPE_P256: u8 = 0x01;
pub const KCV_LEN: usize = 8;
pub const RECEIPT_LEN: usize = 32;
/// HKDF salt for the key group secret.
pub const GROUP_SALT: &[u8] = b"cardvault key group v1";
/// HMAC label of the key group check value.
pub const KCV_LABEL: &[u8] = b"cardvault key group check value";
/// HKDF info of the take-out encryption key.
pub const EXPORT_INFO: &[u8] = b"cardvault key export v2";
/// Largest target certificate chain TAKE OUT KEY accepts (certificates).
pub const MAX_TARGET_CHAIN: usize = 4;
/// Roles a take-out target's certificate may name: `backup` only. Issuance
/// replaces a blank card's factory certificate (role `blank`) by a
/// registration certificate naming its role, so a card still certified as
/// `blank` was never issued, and a `main` or `replacement` card is never a
/// target.
pub const TARGET_ROLES: &[&str] = &["backup"];
/// HMAC label of the import receipt.
pub const RECEIPT_LABEL: &[u8] = b"cardvault duplicate receipt v1";
/// Label of the DESTROY KEY receipt signature (a backup card's proof that it
/// holds no key of a source card's take-outs up to a counter). Version 2: an
/// ECDSA signature by the backup card's signing key; version 1 was a MAC
/// under the key group, which any card of the group could compute.
pub const DESTROY_LABEL: &[u8] = b"cardvault destroy receipt v2";
/// Associated data label for SET MAIN KEY (key service variant).
pub const KEY_SERVICE_LABEL: &[u8] = b"cardvault key service v1";

/// Where a card's main keys came from (GET DATA DF14 carries the string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyOrigin {
    /// Generated inside this card (GENERATE KEY PAIR).
    Generated,
    /// Imported from a main card under the key group (IMPORT KEY).
    Imported,
    /// Set by a key service through a protected channel (SET MAIN KEY).
    KeyService,
}

impl KeyOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyOrigin::Generated => "generated",
            KeyOrigin::Imported => "imported",
            KeyOrigin::KeyService => "key-service",
        }
    }
}

impl std::fmt::Display for KeyOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for KeyOrigin {
    type Err = String;
    fn from_str(s: &str) -> Result<KeyOrigin, String> {
        match s {
            "generated" => Ok(KeyOrigin::Generated),
            "imported" => Ok(KeyOrigin::Imported),
            "key-service" => Ok(KeyOrigin::KeyService),
            other => Err(format!("unknown key origin '{other}'")),
        }
    }
}

/// Parsed take-out blob.
pub struct TakeOut<'a> {
    pub aad: &'a [u8],
    pub source: &'a str,
    pub target: &'a str,
    pub kcv: &'a [u8],
    pub counter: u32,
    /// The main card's ephemeral ECKA public key (65 bytes).
    pub ephemeral: &'a [u8],
    pub nonce: &'a [u8],
    pub sealed: &'a [u8],
}

pub fn parse_takeout(b: &[u8]) -> Option<TakeOut<'_>> {
    let mut i = 0usize;
    let take = |i: &mut usize, n: usize| -> Option<&[u8]> {
        let s = b.get(*i..*i + n)?;
        *i += n;
        Some(s)
    };
    let head = take(&mut i, 3)?;
    if head != [VERSION, SLOT_MAIN, TYPE_P256] {
        return None;
    }
    let sl = take(&mut i, 1)?[0] as usize;
    let source = std::str::from_utf8(take(&mut i, sl)?).ok()?;
    let tl = take(&mut i, 1)?[0] as usize;
    let target = std::str::from_utf8(take(&mut i, tl)?).ok()?;
    let kcv = take(&mut i, KCV_LEN)?;
    let counter = u32::from_be_bytes(take(&mut i, 4)?.try_into().ok()?);
    let ephemeral = take(&mut i, crate::crypto::PUBLIC_KEY_LEN)?;
    if ephemeral[0] != 0x04 {
        return None;
    }
    let aad_end = i;
    let nonce = take(&mut i, crate::crypto::GCM_NONCE_LEN)?;
    let sealed = &b[i..];
    if sealed.len() != crate::crypto::PRIVATE_KEY_LEN + crate::crypto::PUBLIC_KEY_LEN + crate::crypto::GCM_TAG_LEN {
        return None;
    }
    Some(TakeOut {
        aad: &b[..aad_end],
        source,
        target,
        kcv,
        counter,
        ephemeral,
        nonce,
        sealed,
    })
}

/// The public fields of a take-out blob, for terminals and audit trails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakeOutInfo {
    pub source: String,
    pub target: String,
    pub kcv: Vec<u8>,
    pub counter: u32,
}

impl TakeOutInfo {
    /// The clear, authenticated part of a blob for these bindings: version,
    /// slot, key type, source and target card numbers, check value, counter.
    /// The card appends its ephemeral public key, the nonce and the sealed key.
    pub fn encode_aad(&self) -> Vec<u8> {
        let mut b = vec![VERSION, SLOT_MAIN, TYPE_P256];
        b.push(self.source.len() as u8);
        b.extend_from_slice(self.source.as_bytes());
        b.push(self.target.len() as u8);
        b.extend_from_slice(self.target.as_bytes());
        b.extend_from_slice(&self.kcv);
        b.extend_from_slice(&self.counter.to_be_bytes());
        b
    }
}

/// The backup card's answer to IMPORT KEY, relayed by the terminal to the
/// main card in CONFIRM DUPLICATE: the take-out counter and a MAC under the
/// key group over the bindings and the imported public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub counter: u32,
    pub mac: [u8; RECEIPT_LEN],
}

impl Receipt {
    pub const LEN: usize = 4 + RECEIPT_LEN;

    pub fn encode(&self) -> Vec<u8> {
        let mut r = self.counter.to_be_bytes().to_vec();
        r.extend_from_slice(&self.mac);
        r
    }

    pub fn parse(r: &[u8]) -> Option<Receipt> {
        if r.len() != Self::LEN {
            return None;
        }
        Some(Receipt {
            counter: u32::from_be_bytes(r[..4].try_into().ok()?),
            mac: r[4..].try_into().ok()?,
        })
    }
}

/// The backup card's answer to DESTROY KEY: the take-out counter it covers
/// and its ECDSA signature (raw `r ‖ s`) over [`destroy_message`], made with
/// the backup card's signing key (GET DATA `DF35` certifies it). The issuer
/// presents it, with that certificate, to the main card's RELEASE DUPLICATE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestroyReceipt {
    pub counter: u32,
    pub signature: [u8; crate::crypto::SIGNATURE_LEN],
}

impl DestroyReceipt {
    pub const LEN: usize = 4 + crate::crypto::SIGNATURE_LEN;

    pub fn encode(&self) -> Vec<u8> {
        let mut r = self.counter.to_be_bytes().to_vec();
        r.extend_from_slice(&self.signature);
        r
    }

    pub fn parse(r: &[u8]) -> Option<DestroyReceipt> {
        if r.len() != Self::LEN {
            return None;
        }
        Some(DestroyReceipt {
            counter: u32::from_be_bytes(r[..4].try_into().ok()?),
            signature: r[4..].try_into().ok()?,
        })
    }
}

/// What a DESTROY KEY receipt signs: the label, the main (source) card's
/// number, the backup card's number, the take-out counter and the key
/// group's check value, each string with a length byte in front.
pub fn destroy_message(source: &str, backup: &str, counter: u32, kcv: &[u8]) -> Vec<u8> {
    let mut m = DESTROY_LABEL.to_vec();
    m.push(source.len() as u8);
    m.extend_from_slice(source.as_bytes());
    m.push(backup.len() as u8);
    m.extend_from_slice(backup.as_bytes());
    m.extend_from_slice(&counter.to_be_bytes());
    m.extend_from_slice(kcv);
    m
}

/// RELEASE DUPLICATE's data once a take-out has left the card: the bound
/// target's DESTROY KEY receipt followed by that card's signing certificate
/// (one DER certificate).
pub fn encode_release(receipt: &DestroyReceipt, certificate: &[u8]) -> Vec<u8> {
    let mut d = receipt.encode();
    d.extend_from_slice(certificate);
    d
}

/// Split RELEASE DUPLICATE's data into the receipt and the certificate
/// bytes (not yet parsed); `None` when too short to hold both.
pub fn parse_release(data: &[u8]) -> Option<(DestroyReceipt, &[u8])> {
    if data.len() <= DestroyReceipt::LEN {
        return None;
    }
    let (r, c) = data.split_at(DestroyReceipt::LEN);
    Some((DestroyReceipt::parse(r)?, c))
}

/// The key that seals a take-out blob: HKDF over the key group secret and
/// the ECDH secret between the main card's ephemeral key and the target
/// card's certified ECKA key, with the blob's clear part (`aad`, ephemeral
/// key included) in the info. Neither secret alone opens the blob.
pub fn export_kek(
    group_secret: &[u8],
    ecdh_secret: &[u8],
    aad: &[u8],
) -> crate::crypto::Result<zeroize::Zeroizing<[u8; 32]>> {
    let mut ikm = zeroize::Zeroizing::new(group_secret.to_vec());
    ikm.extend_from_slice(ecdh_secret);
    let mut info = EXPORT_INFO.to_vec();
    info.extend_from_slice(aad);
    crate::crypto::hkdf(&ikm, GROUP_SALT, &info)
}

/// Parse a take-out blob's bindings (it is not decrypted).
pub fn takeout_info(blob: &[u8]) -> Option<TakeOutInfo> {
    parse_takeout(blob).map(|t| TakeOutInfo {
        source: t.source.to_string(),
        target: t.target.to_string(),
        kcv: t.kcv.to_vec(),
        counter: t.counter,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{GCM_NONCE_LEN, GCM_TAG_LEN, PRIVATE_KEY_LEN, PUBLIC_KEY_LEN};

    #[test]
    fn blob_bindings_and_receipt_round_trip() {
        let info = TakeOutInfo {
            source: "0401".into(),
            target: "0402".into(),
            kcv: vec![5; KCV_LEN],
            counter: 2,
        };
        let mut blob = info.encode_aad();
        blob.push(0x04);
        blob.extend_from_slice(&[7; PUBLIC_KEY_LEN - 1]);
        let aad_len = blob.len();
        blob.extend_from_slice(&[1; GCM_NONCE_LEN]);
        blob.extend_from_slice(&[2; PRIVATE_KEY_LEN + PUBLIC_KEY_LEN + GCM_TAG_LEN]);
        assert_eq!(takeout_info(&blob), Some(info));
        assert_eq!(parse_takeout(&blob).unwrap().aad.len(), aad_len);
        assert!(takeout_info(&blob[..blob.len() - 1]).is_none());
        let r = Receipt {
            counter: 2,
            mac: [3; RECEIPT_LEN],
        };
        assert_eq!(Receipt::parse(&r.encode()), Some(r));
        assert_eq!(Receipt::parse(&[0; 35]), None);
        let d = DestroyReceipt {
            counter: 3,
            signature: [9; crate::crypto::SIGNATURE_LEN],
        };
        assert_eq!(DestroyReceipt::parse(&d.encode()), Some(d.clone()));
        let data = encode_release(&d, &[0x30, 0x03]);
        let (back, cert) = parse_release(&data).unwrap();
        assert_eq!((back, cert), (d.clone(), &[0x30, 0x03][..]));
        assert!(parse_release(&d.encode()).is_none());
        assert_eq!(
            destroy_message("01", "2", 1, &[7; KCV_LEN]),
            [DESTROY_LABEL, &[2], b"01", &[1], b"2", &[0, 0, 0, 1], &[7; KCV_LEN]].concat()
        );
        for o in [KeyOrigin::Generated, KeyOrigin::Imported, KeyOrigin::KeyService] {
            assert_eq!(o.to_string().parse::<KeyOrigin>(), Ok(o));
        }
        assert_eq!(KeyOrigin::KeyService.as_str(), "key-service");
    }

    /// The take-out vector of docs/FORMATS.md (computed independently with
    /// Python `cryptography`): the target's ECKA key and the key group open it.
    #[test]
    fn formats_take_out_vector_opens_with_the_target_key_and_group() {
        use crate::crypto::{open, KeyPair};
        use crate::from_hex;
        let blob = from_hex("020101103132333435363738393031323334353610363534333231303938373635343332313f3312a72208955900000001040217e617f0b6443928278f96999e69a23a4f2c152bdf6d6cdf66e5b80282d4ed194a7debcb97712d2dda3ca85aa8765a56f45fc758599652f2897c65306e57944f9e20b32c24fd837e9946b223cd36b87205a6479fb2adce3f434f07d4ab79a71b9d6f2437403a0cb7f1337ce298109cf43f2349adbb2218179929e8159e0b8d435c49c226a7d405c65965706c88f17e2b7bc4b31a6063050b0451cf3978aa1447481583dd2a9e3452569c6e822c6c023551b9c1dccb1f04c6be7d0661").unwrap();
        let s = from_hex("0f21ee4f14070809211578f72267dd5a960bf0416b746514fd123753c4bf2c47").unwrap();
        let t = parse_takeout(&blob).unwrap();
        assert_eq!(
            (t.source, t.target, t.counter),
            ("1234567890123456", "6543210987654321", 1)
        );
        let target = KeyPair::from_private(&[0x22; 32]).unwrap();
        let z = target.ecdh(t.ephemeral).unwrap();
        let kek = export_kek(&s, &z, t.aad).unwrap();
        assert_eq!(
            crate::to_hex(&kek[..]),
            "3a109fc7acb5d23eda4000508da1f198a0bd013005651dc5bd59c59b9c1a83dc"
        );
        let plain = open(&kek, t.nonce, t.aad, t.sealed).unwrap();
        assert_eq!(
            crate::to_hex(&plain[..32]),
            "ffed43c7b1ada73e7108a00289e96b4cdc351d55329e5837f0088bca615d99c4"
        );
        // The key group alone, or another card's key, does not open it.
        let other = KeyPair::from_private(&[0x33; 32]).unwrap().ecdh(t.ephemeral).unwrap();
        for z in [&[][..], &other[..]] {
            let kek = export_kek(&s, z, t.aad).unwrap();
            assert!(open(&kek, t.nonce, t.aad, t.sealed).is_err());
        }
    }
}
