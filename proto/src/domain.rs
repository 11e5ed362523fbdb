//! The issuer domain's card-common key as it travels into a card: LOAD
//! DOMAIN KEY (docs/PROTOCOL.md), under an SCP11a issuer session only, once
//! per card, before END PERSONALIZATION. Both sides compute the domain's
//! check value here, so a card can tell a key that is not the domain's.

use crate::crypto;

/// Length of a domain id (random, chosen by `domain init`).
pub const DOMAIN_ID_LEN: usize = 16;
/// Length of the card-common key.
pub const KEY_LEN: usize = 32;
/// Length of the domain's check value.
pub const CHECK_VALUE_LEN: usize = 8;
/// LOAD DOMAIN KEY data: domain id (16) || generation (4) || key (32) || check value (8).
pub const LOAD_DATA_LEN: usize = DOMAIN_ID_LEN + 4 + KEY_LEN + CHECK_VALUE_LEN;
/// GET DATA `DF32` (the card's domain): domain id (16) || generation (4).
pub const DOMAIN_OBJECT_LEN: usize = DOMAIN_ID_LEN + 4;

const CHECK_LABEL: &[u8] = b"cardvault domain check value v1";

/// The check value of a domain key: HMAC-SHA256(key, label), first 8 bytes.
/// Tells the right key from a wrong one without revealing it.
pub fn check_value(key: &[u8]) -> Result<[u8; CHECK_VALUE_LEN], crypto::CryptoError> {
    let mac = crypto::hmac_sha256(key, &[CHECK_LABEL])?;
    Ok(mac[..CHECK_VALUE_LEN].try_into().expect("8 bytes"))
}

/// Which domain, and which generation of its key, a card or a backup belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct DomainRef {
    pub id: [u8; DOMAIN_ID_LEN],
    pub generation: u32,
}

impl DomainRef {
    /// No domain: a card without a domain key.
    pub const NONE: DomainRef = DomainRef {
        id: [0; DOMAIN_ID_LEN],
        generation: 0,
    };

    /// Whether this names a domain (generation 0 is none).
    pub fn is_some(&self) -> bool {
        self.generation != 0
    }

    /// id || generation, as GET DATA `DF32` and the backup header carry it.
    pub fn encode(&self) -> [u8; DOMAIN_OBJECT_LEN] {
        let mut v = [0u8; DOMAIN_OBJECT_LEN];
        v[..DOMAIN_ID_LEN].copy_from_slice(&self.id);
        v[DOMAIN_ID_LEN..].copy_from_slice(&self.generation.to_be_bytes());
        v
    }

    pub fn parse(b: &[u8]) -> Option<DomainRef> {
        if b.len() != DOMAIN_OBJECT_LEN {
            return None;
        }
        Some(DomainRef {
            id: b[..DOMAIN_ID_LEN].try_into().ok()?,
            generation: u32::from_be_bytes(b[DOMAIN_ID_LEN..].try_into().ok()?),
        })
    }
}

impl std::fmt::Display for DomainRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_some() {
            write!(f, "domain {} generation {}", crate::to_hex(&self.id), self.generation)
        } else {
            f.write_str("no domain")
        }
    }
}

/// The data of LOAD DOMAIN KEY.
#[derive(PartialEq, Eq)]
pub struct DomainKeyLoad {
    pub domain: DomainRef,
    pub key: zeroize::Zeroizing<[u8; KEY_LEN]>,
    pub check_value: [u8; CHECK_VALUE_LEN],
}

impl std::fmt::Debug for DomainKeyLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DomainKeyLoad")
            .field("domain", &self.domain)
            .finish_non_exhaustive()
    }
}

impl DomainKeyLoad {
    /// The command data (a secret: zeroized when dropped).
    pub fn encode(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let mut d = zeroize::Zeroizing::new(Vec::with_capacity(LOAD_DATA_LEN));
        d.extend_from_slice(&self.domain.encode());
        d.extend_from_slice(&self.key[..]);
        d.extend_from_slice(&self.check_value);
        d
    }

    pub fn parse(d: &[u8]) -> Option<DomainKeyLoad> {
        if d.len() != LOAD_DATA_LEN {
            return None;
        }
        let domain = DomainRef::parse(&d[..DOMAIN_OBJECT_LEN])?;
        let mut key = zeroize::Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(&d[DOMAIN_OBJECT_LEN..DOMAIN_OBJECT_LEN + KEY_LEN]);
        Some(DomainKeyLoad {
            domain,
            key,
            check_value: d[DOMAIN_OBJECT_LEN + KEY_LEN..].try_into().ok()?,
        })
    }

    /// Whether the check value is the key's.
    pub fn check_value_matches(&self) -> bool {
        check_value(&self.key[..])
            .map(|c| openssl::memcmp::eq(&c, &self.check_value))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_data_round_trips_and_checks_its_key() {
        let key = zeroize::Zeroizing::new([7u8; KEY_LEN]);
        let l = DomainKeyLoad {
            domain: DomainRef {
                id: [1; DOMAIN_ID_LEN],
                generation: 2,
            },
            check_value: check_value(&key[..]).unwrap(),
            key,
        };
        let d = l.encode();
        assert_eq!(d.len(), LOAD_DATA_LEN);
        let back = DomainKeyLoad::parse(&d).unwrap();
        assert!(back == l && back.check_value_matches());
        let mut bad = d.to_vec();
        bad[DOMAIN_OBJECT_LEN] ^= 1;
        assert!(!DomainKeyLoad::parse(&bad).unwrap().check_value_matches());
        assert!(DomainKeyLoad::parse(&d[1..]).is_none());
        assert!(!DomainRef::NONE.is_some());
    }
}
