//! `file_header`: encrypted files (`.cve`): header parsing and full decryption.
//!
//! Input: a whole `.cve` file. The seed is fixtures/fileenc/vector.cve, so
//! most inputs carry the vector's genuine header and reach the body.
//!
//! Checked:
//! - `Header::parse` (on the first 140 bytes) and `read_header` never panic
//!   and agree: not starting with `CVE1` is `NotEncrypted`, a header cut short
//!   is `Truncated`, an accepted header re-encodes to its bytes, has a chunk
//!   size of 2^10..=2^24 and its first 14 bytes as associated data;
//! - `decrypt`, with the card's part played by `crypto::unwrap_key` and the
//!   test key of fixtures/fileenc/ (and the expected key id given when the
//!   input length is odd), never panics; whatever it wrote, Ok or Err, is a
//!   prefix of fixtures/fileenc/plaintext.bin (only authenticated chunks are
//!   written, and only the vector's chunks authenticate); it returns Ok only
//!   for the vector itself, byte for byte.

use cardvault::fileenc::{self, FileError, Header, HEADER_LEN};
use cardvault_proto::crypto::{self, KeyPair};
use cardvault_proto::{from_hex, to_hex};
use std::sync::OnceLock;

pub const VECTOR: &[u8] = include_bytes!("../../fixtures/fileenc/vector.cve");
pub const PLAINTEXT: &[u8] = include_bytes!("../../fixtures/fileenc/plaintext.bin");

fn recipient() -> &'static KeyPair {
    static K: OnceLock<KeyPair> = OnceLock::new();
    K.get_or_init(|| {
        let d = from_hex(include_str!("../../fixtures/fileenc/recipient-private.hex")).expect("hex");
        KeyPair::from_private(&d).expect("test key")
    })
}

pub fn fuzz_file_header(data: &[u8]) {
    let parsed = data
        .get(..HEADER_LEN)
        .map(|h| Header::parse(h.try_into().expect("140 bytes")));
    if let Some(Ok(h)) = &parsed {
        assert_eq!(&h.to_bytes()[..], &data[..HEADER_LEN]);
        assert!((1 << 10..=1 << 24).contains(&h.chunk_size()));
        assert_eq!(h.aad(), &data[..fileenc::AAD_LEN]);
    }
    let read = fileenc::read_header(&mut &data[..]);
    match (&read, &parsed) {
        (Ok(a), Some(Ok(b))) => assert_eq!(a, b),
        (Err(FileError::NotEncrypted), _) => assert!(!data.starts_with(fileenc::MAGIC)),
        (Err(FileError::Truncated), None) => assert!(data.starts_with(fileenc::MAGIC)),
        (Err(_), Some(Err(_))) => {}
        (r, p) => panic!("read_header {r:?} but Header::parse {p:?} on {}", to_hex(data)),
    }
    if read.is_err() {
        return;
    }
    let kp = recipient();
    let expected = (data.len() % 2 == 1).then(|| crypto::key_id(&kp.public_bytes()));
    let mut out = Vec::new();
    let r = fileenc::decrypt(data, &mut out, expected, |aad, wrapped| {
        crypto::unwrap_key(kp, wrapped, aad).map_err(|e| FileError::Unwrap(e.to_string()))
    });
    assert!(
        PLAINTEXT.starts_with(&out),
        "decrypt wrote {} bytes that are not the vector's plaintext ({r:?})",
        out.len()
    );
    if let Ok(n) = r {
        assert!(
            data == VECTOR,
            "decrypt accepted a file that is not the vector: {}",
            to_hex(data)
        );
        assert_eq!(n as usize, PLAINTEXT.len());
        assert_eq!(out, PLAINTEXT);
    }
}
