//! Files encrypted to a card's encryption key (`.cve`, see docs/FORMATS.md).
//!
//! The card holds the P-256 private key and only ever sees the 14 bytes of
//! associated data and the 125-byte wrapped file key (UNWRAP FILE KEY); the
//! bulk data is encrypted and decrypted here, on the terminal, with a payload
//! key derived from the file key and the hash of the whole header.
//!
//! Layout: a fixed 140-byte [`Header`], then the body in the STREAM
//! construction: the plaintext is cut into chunks of `2^chunk_exp` bytes
//! (the last one shorter, or empty only for an empty file), each sealed with
//! AES-256-GCM under the nonce `counter (11 bytes, big-endian) || final flag`.
//!
//! The body is written through [`StreamWriter`] (a [`Write`]: plaintext in,
//! `finish` seals the last chunk) and read through [`StreamReader`] (a
//! [`Read`]: plaintext out, one authenticated chunk at a time), so any
//! plaintext source or sink plugs in with one [`io::copy`]; [`encrypt`] and
//! [`decrypt`] are exactly that.
//!
//! Memory use is constant (a few chunk buffers). Decryption hands out a chunk
//! only after it authenticated, but a damaged or truncated file can still
//! fail after earlier chunks were written: write to a temporary file and keep
//! it only on success, as [`decrypt_file`] does (through
//! [`fsutil::AtomicFile`]).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

use cardvault_proto::crypto::{self, GCM_TAG_LEN, WRAPPED_KEY_LEN};
use cardvault_proto::fsutil::{self, AtomicFile};
use cardvault_proto::to_hex;
use openssl::cipher::Cipher;
use openssl::cipher_ctx::CipherCtx;
use openssl::error::ErrorStack;
use zeroize::Zeroizing;

pub const MAGIC: &[u8; 4] = b"CVE1";
/// The only format version this build reads and writes.
pub const VERSION: u8 = 1;
/// magic (4) || version (1) || chunk exponent (1) || key id (8) || wrapped key (125) || reserved (1).
pub const HEADER_LEN: usize = 140;
/// The header prefix given to the card as associated data of the wrapped key.
pub const AAD_LEN: usize = 14;
/// 2^16 = 64 KiB plaintext chunks.
pub const DEFAULT_CHUNK_EXP: u8 = 16;
/// Smallest chunk size exponent accepted (1 KiB).
pub const MIN_CHUNK_EXP: u8 = 10;
/// Largest chunk size exponent accepted (16 MiB).
pub const MAX_CHUNK_EXP: u8 = 24;
/// Authentication tag appended to every chunk.
pub const TAG_LEN: usize = GCM_TAG_LEN;
/// HKDF info of the payload key.
pub const PAYLOAD_KEY_INFO: &[u8] = b"cardvault file payload v1";

const OFF_VERSION: usize = 4;
const OFF_CHUNK_EXP: usize = 5;
const OFF_KEY_ID: usize = 6;
const OFF_WRAPPED: usize = 14;
const OFF_RESERVED: usize = OFF_WRAPPED + WRAPPED_KEY_LEN;

const _: () = assert!(OFF_KEY_ID + 8 == OFF_WRAPPED && OFF_WRAPPED == AAD_LEN);
const _: () = assert!(WRAPPED_KEY_LEN == 125 && OFF_RESERVED == 139);
const _: () = assert!(OFF_RESERVED + 1 == HEADER_LEN);

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("not a cardvault encrypted file (no CVE1 header)")]
    NotEncrypted,
    #[error("unsupported encrypted file version {0} (this build reads version 1)")]
    UnsupportedVersion(u8),
    #[error("malformed encrypted file header: {0}")]
    BadHeader(&'static str),
    #[error("encrypted to another card (key id {file_key_id}), this card's is {card_key_id}")]
    WrongRecipient { file_key_id: String, card_key_id: String },
    #[error("the encrypted file is truncated: it ends before its final chunk")]
    Truncated,
    #[error("the encrypted file has data after its final chunk")]
    TrailingData,
    #[error("chunk {index} of the encrypted file failed authentication (altered, reordered, truncated or corrupted)")]
    ChunkAuth { index: u64 },
    #[error("non-canonical encrypted file: empty final chunk {index} after full chunks")]
    EmptyFinalChunk { index: u64 },
    #[error("the file key could not be unwrapped: {0}")]
    Unwrap(String),
    #[error("crypto: {0}")]
    Crypto(String),
}

impl FileError {
    fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> FileError {
        let context = context.into();
        move |source| FileError::Io { context, source }
    }

    /// The error behind an [`io::Error`] from a [`StreamReader`] or
    /// [`StreamWriter`] (for example one returned by [`io::copy`]); any other
    /// I/O error becomes [`FileError::Io`] with `context`.
    pub fn from_io(e: io::Error, context: impl Into<String>) -> FileError {
        if e.get_ref().is_some_and(|inner| inner.is::<FileError>()) {
            if let Ok(inner) = e.into_inner().expect("checked above").downcast::<FileError>() {
                return *inner;
            }
            unreachable!("checked above");
        }
        FileError::Io {
            context: context.into(),
            source: e,
        }
    }
}

/// How [`StreamReader`] and [`StreamWriter`] report errors through
/// [`Read`]/[`Write`]: the [`FileError`] itself, recoverable with
/// [`FileError::from_io`].
impl From<FileError> for io::Error {
    fn from(e: FileError) -> io::Error {
        let kind = match &e {
            FileError::Io { source, .. } => source.kind(),
            FileError::Truncated => io::ErrorKind::UnexpectedEof,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

impl From<ErrorStack> for FileError {
    fn from(e: ErrorStack) -> FileError {
        FileError::Crypto(e.to_string())
    }
}

impl From<crypto::CryptoError> for FileError {
    fn from(e: crypto::CryptoError) -> FileError {
        FileError::Crypto(e.to_string())
    }
}

/// The fixed-size file header. The public fields are a decoded copy for
/// display; every cryptographic use (associated data, wrapped key, key id
/// check, chunk size, payload key) reads the raw bytes as parsed, so changing
/// the fields has no effect on decryption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub chunk_exp: u8,
    pub recipient_key_id: [u8; 8],
    /// `crypto::wrap_key` output, [`WRAPPED_KEY_LEN`] (125) bytes.
    pub wrapped_key: Vec<u8>,
    raw: [u8; HEADER_LEN],
}

impl Header {
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Result<Header, FileError> {
        if &bytes[..4] != MAGIC {
            return Err(FileError::NotEncrypted);
        }
        let version = bytes[OFF_VERSION];
        if version != VERSION {
            return Err(FileError::UnsupportedVersion(version));
        }
        let chunk_exp = bytes[OFF_CHUNK_EXP];
        if !(MIN_CHUNK_EXP..=MAX_CHUNK_EXP).contains(&chunk_exp) {
            return Err(FileError::BadHeader("chunk size exponent outside 10..=24"));
        }
        if bytes[OFF_RESERVED] != 0 {
            return Err(FileError::BadHeader("reserved byte is not zero"));
        }
        let mut recipient_key_id = [0u8; 8];
        recipient_key_id.copy_from_slice(&bytes[OFF_KEY_ID..OFF_WRAPPED]);
        Ok(Header {
            version,
            chunk_exp,
            recipient_key_id,
            wrapped_key: bytes[OFF_WRAPPED..OFF_RESERVED].to_vec(),
            raw: *bytes,
        })
    }

    /// Associated data of the wrapped key: magic, version, chunk exponent and
    /// recipient key id (the first 14 header bytes).
    pub fn aad(&self) -> &[u8] {
        &self.raw[..AAD_LEN]
    }

    /// The header exactly as read (or written).
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        self.raw
    }

    /// Plaintext bytes per chunk.
    pub fn chunk_size(&self) -> usize {
        1usize << self.raw[OFF_CHUNK_EXP]
    }

    /// The recipient key id in lower-case hex, as the CLI shows key ids.
    pub fn key_id_hex(&self) -> String {
        to_hex(self.raw_key_id())
    }

    fn raw_key_id(&self) -> &[u8] {
        &self.raw[OFF_KEY_ID..OFF_WRAPPED]
    }

    fn raw_wrapped_key(&self) -> &[u8] {
        &self.raw[OFF_WRAPPED..OFF_RESERVED]
    }

    fn aad_for(chunk_exp: u8, key_id: &[u8; 8]) -> [u8; AAD_LEN] {
        let mut aad = [0u8; AAD_LEN];
        aad[..4].copy_from_slice(MAGIC);
        aad[OFF_VERSION] = VERSION;
        aad[OFF_CHUNK_EXP] = chunk_exp;
        aad[OFF_KEY_ID..OFF_WRAPPED].copy_from_slice(key_id);
        aad
    }

    /// The payload key: HKDF-SHA256(file key, salt = SHA-256(header), info).
    fn payload_key(&self, file_key: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>, FileError> {
        Ok(crypto::hkdf(file_key, &crypto::sha256(&self.raw), PAYLOAD_KEY_INFO)?)
    }
}

/// Read as many bytes as fit in `buf`, stopping early only at end of input.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Read and parse the header. Input that does not start with the magic is
/// [`FileError::NotEncrypted`]; a header cut short is [`FileError::Truncated`].
pub fn read_header<R: Read>(r: &mut R) -> Result<Header, FileError> {
    let mut raw = [0u8; HEADER_LEN];
    let n = read_full(r, &mut raw).map_err(FileError::io("reading the encrypted file header"))?;
    if n < MAGIC.len() || &raw[..MAGIC.len()] != MAGIC {
        return Err(FileError::NotEncrypted);
    }
    if n < HEADER_LEN {
        return Err(FileError::Truncated);
    }
    Header::parse(&raw)
}

/// Nonce of chunk `index`: 11-byte big-endian counter || final flag.
fn chunk_nonce(index: u64, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[3..11].copy_from_slice(&index.to_be_bytes());
    n[11] = last as u8;
    n
}

fn next_index(index: u64) -> Result<u64, FileError> {
    index
        .checked_add(1)
        .ok_or_else(|| FileError::Crypto("chunk counter overflow".into()))
}

/// AES-256-GCM with the key schedule set up once and a new nonce per chunk.
struct ChunkCipher {
    ctx: CipherCtx,
}

impl ChunkCipher {
    fn new(key: &[u8; 32], encrypt: bool) -> Result<ChunkCipher, FileError> {
        let mut ctx = CipherCtx::new()?;
        if encrypt {
            ctx.encrypt_init(Some(Cipher::aes_256_gcm()), Some(key), None)?;
        } else {
            ctx.decrypt_init(Some(Cipher::aes_256_gcm()), Some(key), None)?;
        }
        Ok(ChunkCipher { ctx })
    }

    /// `out` = ciphertext || tag, `out.len() == pt.len() + TAG_LEN`.
    fn seal(&mut self, index: u64, last: bool, pt: &[u8], out: &mut [u8]) -> Result<(), FileError> {
        debug_assert_eq!(out.len(), pt.len() + TAG_LEN);
        self.ctx.encrypt_init(None, None, Some(&chunk_nonce(index, last)))?;
        let (ct, tag) = out.split_at_mut(pt.len());
        let mut n = 0;
        if !pt.is_empty() {
            n = self.ctx.cipher_update(pt, Some(ct))?;
        }
        let mut scratch = [0u8; 16];
        n += self.ctx.cipher_final(&mut scratch)?;
        if n != pt.len() {
            return Err(FileError::Crypto("AES-GCM produced an unexpected length".into()));
        }
        self.ctx.tag(tag)?;
        Ok(())
    }

    /// Decrypt `sealed` (ciphertext || tag) into `out[..sealed.len() - TAG_LEN]`.
    /// `Ok(false)` if it does not authenticate; `out` must then be ignored.
    fn open(&mut self, index: u64, last: bool, sealed: &[u8], out: &mut [u8]) -> Result<bool, FileError> {
        let (ct, tag) = sealed.split_at(sealed.len() - TAG_LEN);
        self.ctx.decrypt_init(None, None, Some(&chunk_nonce(index, last)))?;
        self.ctx.set_tag(tag)?;
        if !ct.is_empty() {
            self.ctx.cipher_update(ct, Some(&mut out[..ct.len()]))?;
        }
        let mut scratch = [0u8; 16];
        Ok(self.ctx.cipher_final(&mut scratch).is_ok())
    }
}

/// Encrypts a plaintext stream into a `.cve` file: the [`Write`] half of the
/// STREAM construction.
///
/// [`new`](StreamWriter::new) writes the header; every write is buffered
/// into the current chunk, and a full chunk is sealed (as non-final) only
/// when more data arrives, because a full chunk may also be the last one.
/// [`finish`](StreamWriter::finish) seals what is buffered as the final
/// chunk. A writer dropped without `finish` leaves a file that fails to
/// decrypt as [`FileError::Truncated`]; `flush` cannot write the buffered
/// chunk for the same reason.
///
/// After any error the writer refuses further writes: a chunk is never
/// sealed twice.
pub struct StreamWriter<W: Write> {
    inner: W,
    cipher: ChunkCipher,
    chunk_size: usize,
    /// Plaintext of the chunk being filled; capacity `chunk_size`, never reallocated.
    chunk: Zeroizing<Vec<u8>>,
    /// Ciphertext || tag of the chunk being written.
    sealed: Vec<u8>,
    index: u64,
    failed: bool,
}

impl<W: Write> StreamWriter<W> {
    /// Start a file encrypted to a recipient public key (65-byte uncompressed
    /// P-256) under a fresh random file key; writes the 140-byte header.
    /// Nothing is written when the parameters are refused.
    pub fn new(recipient_pub: &[u8], chunk_exp: u8, output: W) -> Result<StreamWriter<W>, FileError> {
        let file_key = Zeroizing::new(crypto::random::<32>());
        Self::with_file_key(recipient_pub, chunk_exp, &file_key, output)
    }

    fn with_file_key(
        recipient_pub: &[u8],
        chunk_exp: u8,
        file_key: &[u8; 32],
        mut output: W,
    ) -> Result<StreamWriter<W>, FileError> {
        if !(MIN_CHUNK_EXP..=MAX_CHUNK_EXP).contains(&chunk_exp) {
            return Err(FileError::BadHeader("chunk size exponent outside 10..=24"));
        }
        let aad = Header::aad_for(chunk_exp, &crypto::key_id(recipient_pub));
        let wrapped = crypto::wrap_key(recipient_pub, file_key, &aad)?;
        if wrapped.len() != WRAPPED_KEY_LEN {
            return Err(FileError::Crypto("wrapped key has an unexpected length".into()));
        }
        let mut raw = [0u8; HEADER_LEN];
        raw[..AAD_LEN].copy_from_slice(&aad);
        raw[OFF_WRAPPED..OFF_RESERVED].copy_from_slice(&wrapped);
        let header = Header::parse(&raw)?;
        let payload_key = header.payload_key(file_key)?;
        let cipher = ChunkCipher::new(&payload_key, true)?;
        output.write_all(&raw).map_err(FileError::io(WRITING_ENCRYPTED))?;
        let chunk_size = header.chunk_size();
        Ok(StreamWriter {
            inner: output,
            cipher,
            chunk_size,
            chunk: Zeroizing::new(Vec::with_capacity(chunk_size)),
            sealed: vec![0u8; chunk_size + TAG_LEN],
            index: 0,
            failed: false,
        })
    }

    /// Plaintext bytes per chunk.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// Seal the buffered plaintext as the final chunk, write it and flush;
    /// returns the output.
    pub fn finish(mut self) -> Result<W, FileError> {
        if self.failed {
            return Err(FileError::Crypto(POISONED.into()));
        }
        self.write_chunk(true)?;
        self.inner.flush().map_err(FileError::io(WRITING_ENCRYPTED))?;
        Ok(self.inner)
    }

    fn write_chunk(&mut self, last: bool) -> Result<(), FileError> {
        let m = self.chunk.len();
        let sealed = &mut self.sealed[..m + TAG_LEN];
        self.cipher.seal(self.index, last, &self.chunk, sealed)?;
        self.inner.write_all(sealed).map_err(FileError::io(WRITING_ENCRYPTED))?;
        self.chunk.clear();
        if !last {
            self.index = next_index(self.index)?;
        }
        Ok(())
    }
}

impl<W: Write> Write for StreamWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::Error::other(POISONED));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        if self.chunk.len() == self.chunk_size {
            // More data follows a full chunk: it is not the last one.
            if let Err(e) = self.write_chunk(false) {
                self.failed = true;
                return Err(e.into());
            }
        }
        let n = buf.len().min(self.chunk_size - self.chunk.len());
        self.chunk.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    /// Flushes the output; the buffered chunk is written only by
    /// [`finish`](StreamWriter::finish).
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Decrypts the body of a `.cve` file: the [`Read`] half of the STREAM
/// construction.
///
/// Plaintext is handed out one authenticated chunk at a time: a chunk that
/// fails authentication, arrives out of order, or is followed by data after
/// the final one is an error, and nothing of it is returned. End of file
/// (`Ok(0)`) is reported only after the final chunk authenticated, so a
/// file cut at a chunk boundary is [`FileError::Truncated`], never a short
/// success. Errors are [`io::Error`]s carrying the [`FileError`]; recover it
/// with [`FileError::from_io`]. After an error the reader returns errors only.
pub struct StreamReader<R: Read> {
    inner: R,
    cipher: ChunkCipher,
    chunk_size: usize,
    /// One sealed chunk plus one byte of read-ahead, which tells whether the
    /// chunk is the last one.
    sealed: Vec<u8>,
    /// Bytes of `sealed` already read (the read-ahead byte of the previous chunk).
    carried: usize,
    /// The current chunk's plaintext; `plain[pos..end]` is not yet returned.
    plain: Zeroizing<Vec<u8>>,
    pos: usize,
    end: usize,
    index: u64,
    state: ReadState,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ReadState {
    Reading,
    /// The final chunk authenticated.
    Finished,
    Failed,
}

impl<R: Read> StreamReader<R> {
    /// Read the header from `input`, have `unwrap(aad, wrapped) -> file key`
    /// unwrap the file key (the card does this: UNWRAP FILE KEY) and return
    /// a reader of the plaintext. With `expected_key_id` (the card's key id),
    /// a file encrypted to another key is refused before the card is asked.
    pub fn open(
        mut input: R,
        expected_key_id: Option<[u8; 8]>,
        unwrap: impl FnOnce(&[u8], &[u8]) -> Result<Zeroizing<[u8; 32]>, FileError>,
    ) -> Result<StreamReader<R>, FileError> {
        let header = read_header(&mut input)?;
        let file_key = unwrap_file_key(&header, expected_key_id, unwrap)?;
        StreamReader::new(&header, &file_key, input)
    }

    /// A reader of the body that follows `header` in `input` (the header
    /// already read), given the unwrapped file key.
    pub fn new(header: &Header, file_key: &[u8; 32], input: R) -> Result<StreamReader<R>, FileError> {
        let payload_key = header.payload_key(file_key)?;
        let cipher = ChunkCipher::new(&payload_key, false)?;
        let chunk_size = header.chunk_size();
        Ok(StreamReader {
            inner: input,
            cipher,
            chunk_size,
            sealed: vec![0u8; chunk_size + TAG_LEN + 1],
            carried: 0,
            plain: Zeroizing::new(vec![0u8; chunk_size]),
            pos: 0,
            end: 0,
            index: 0,
            state: ReadState::Reading,
        })
    }

    /// Plaintext bytes per chunk.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// Read, authenticate and decrypt the next chunk into `plain`.
    fn next_chunk(&mut self) -> Result<(), FileError> {
        let (p, c) = (self.chunk_size, self.chunk_size + TAG_LEN);
        let index = self.index;
        let n = self.carried
            + read_full(&mut self.inner, &mut self.sealed[self.carried..]).map_err(FileError::io(READING_ENCRYPTED))?;
        if n > c {
            // More data follows: this must be a non-final chunk.
            if !self.cipher.open(index, false, &self.sealed[..c], &mut self.plain)? {
                if self.cipher.open(index, true, &self.sealed[..c], &mut self.plain)? {
                    return Err(FileError::TrailingData);
                }
                return Err(FileError::ChunkAuth { index });
            }
            (self.pos, self.end) = (0, p);
            self.sealed[0] = self.sealed[c];
            self.carried = 1;
            self.index = next_index(index)?;
            return Ok(());
        }
        // End of input: this must be the final chunk.
        if n < TAG_LEN {
            return Err(FileError::Truncated);
        }
        if !self.cipher.open(index, true, &self.sealed[..n], &mut self.plain)? {
            if n == c && self.cipher.open(index, false, &self.sealed[..n], &mut self.plain)? {
                // A valid non-final chunk at the end: the rest was cut off.
                return Err(FileError::Truncated);
            }
            return Err(FileError::ChunkAuth { index });
        }
        let m = n - TAG_LEN;
        if m == 0 && index > 0 {
            return Err(FileError::EmptyFinalChunk { index });
        }
        (self.pos, self.end) = (0, m);
        self.state = ReadState::Finished;
        Ok(())
    }
}

impl<R: Read> Read for StreamReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos < self.end || buf.is_empty() {
                let n = buf.len().min(self.end - self.pos);
                buf[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            match self.state {
                ReadState::Finished => return Ok(0),
                ReadState::Failed => return Err(io::Error::other(POISONED)),
                ReadState::Reading => {}
            }
            if let Err(e) = self.next_chunk() {
                // `plain` may hold the unauthenticated chunk: never hand it out.
                self.state = ReadState::Failed;
                (self.pos, self.end) = (0, 0);
                self.plain.fill(0);
                return Err(e.into());
            }
        }
    }
}

const READING_ENCRYPTED: &str = "reading the encrypted file";
const WRITING_ENCRYPTED: &str = "writing the encrypted output";
const WRITING_DECRYPTED: &str = "writing the decrypted output";
const POISONED: &str = "the encrypted stream already failed and cannot go on";

/// Copy `r` to `w` through one chunk-sized buffer that is zeroized
/// afterwards (plaintext passes through it), so both sides see whole chunks.
fn copy_chunks<R: Read + ?Sized, W: Write + ?Sized>(r: &mut R, w: &mut W, size: usize) -> io::Result<u64> {
    let mut buf = Zeroizing::new(vec![0u8; size]);
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// Encrypt to a recipient public key (65-byte uncompressed P-256). Returns plaintext bytes processed.
pub fn encrypt<R: Read, W: Write>(
    recipient_pub: &[u8],
    chunk_exp: u8,
    mut input: R,
    output: W,
) -> Result<u64, FileError> {
    let mut w = StreamWriter::new(recipient_pub, chunk_exp, output)?;
    let n = copy_chunks(&mut input, &mut w, 1 << chunk_exp).map_err(|e| FileError::from_io(e, "reading the input"))?;
    w.finish()?;
    Ok(n)
}

fn unwrap_file_key(
    header: &Header,
    expected_key_id: Option<[u8; 8]>,
    unwrap: impl FnOnce(&[u8], &[u8]) -> Result<Zeroizing<[u8; 32]>, FileError>,
) -> Result<Zeroizing<[u8; 32]>, FileError> {
    if let Some(card) = expected_key_id {
        if card[..] != *header.raw_key_id() {
            return Err(FileError::WrongRecipient {
                file_key_id: header.key_id_hex(),
                card_key_id: to_hex(&card),
            });
        }
    }
    unwrap(header.aad(), header.raw_wrapped_key())
}

/// Full decrypt through a [`StreamReader`]: reads the header, calls
/// `unwrap(aad, wrapped) -> file key` (the card does this: UNWRAP FILE KEY),
/// then decrypts. With `expected_key_id` (the card's key id), a file
/// encrypted to another key is refused before the card is asked.
///
/// Each chunk is written only after it authenticated, but on error the chunks
/// before the bad one have been written: discard the output on error.
pub fn decrypt<R: Read, W: Write>(
    input: R,
    mut output: W,
    expected_key_id: Option<[u8; 8]>,
    unwrap: impl FnOnce(&[u8], &[u8]) -> Result<Zeroizing<[u8; 32]>, FileError>,
) -> Result<u64, FileError> {
    let mut r = StreamReader::open(input, expected_key_id, unwrap)?;
    let size = r.chunk_size();
    let n = copy_chunks(&mut r, &mut output, size).map_err(|e| FileError::from_io(e, WRITING_DECRYPTED))?;
    output.flush().map_err(FileError::io(WRITING_DECRYPTED))?;
    Ok(n)
}

fn exists_error(output: &Path) -> FileError {
    FileError::Io {
        context: format!("{} already exists (allow overwriting to replace it)", output.display()),
        source: io::ErrorKind::AlreadyExists.into(),
    }
}

fn check_output(output: &Path, overwrite: bool) -> Result<(), FileError> {
    if !overwrite && fs::symlink_metadata(output).is_ok() {
        return Err(exists_error(output));
    }
    Ok(())
}

fn create_output(output: &Path, mode: u32) -> Result<AtomicFile, FileError> {
    AtomicFile::create_with_mode(output, mode).map_err(FileError::io(format!(
        "creating a temporary file beside {}",
        output.display()
    )))
}

/// fsync and move into place (refusing to replace `output` unless `overwrite`).
fn commit_output(tmp: AtomicFile, output: &Path, overwrite: bool) -> Result<(), FileError> {
    let ctx = format!("moving {} to {}", tmp.temp_path().display(), output.display());
    let r = if overwrite { tmp.commit() } else { tmp.commit_new() };
    match r {
        Err(e) if !overwrite && e.kind() == io::ErrorKind::AlreadyExists => Err(exists_error(output)),
        r => r.map_err(FileError::io(ctx)),
    }
}

/// Encrypt `input` to `output` with [`DEFAULT_CHUNK_EXP`], through an
/// [`AtomicFile`] beside it (fsynced, then renamed; removed on failure). An
/// existing `output` is only replaced if `overwrite`.
pub fn encrypt_file(input: &Path, output: &Path, recipient_pub: &[u8], overwrite: bool) -> Result<u64, FileError> {
    check_output(output, overwrite)?;
    let mut src = File::open(input).map_err(FileError::io(format!("opening {}", input.display())))?;
    // Ciphertext is not private: the usual mode, subject to the umask.
    let tmp = create_output(output, 0o666)?;
    let mut w = StreamWriter::new(recipient_pub, DEFAULT_CHUNK_EXP, tmp).map_err(|e| with_paths(e, input, output))?;
    let size = w.chunk_size();
    let n = copy_chunks(&mut src, &mut w, size)
        .map_err(|e| with_paths(FileError::from_io(e, "reading the input"), input, output))?;
    let tmp = w.finish().map_err(|e| with_paths(e, input, output))?;
    commit_output(tmp, output, overwrite)?;
    Ok(n)
}

/// Decrypt `input` to `output` through an [`AtomicFile`] beside it (mode
/// 0600; fsynced, then renamed; removed on failure), so a damaged file never
/// leaves partial plaintext at `output`. The output check and the header
/// checks happen before `unwrap` is called (before the card is asked).
pub fn decrypt_file(
    input: &Path,
    output: &Path,
    overwrite: bool,
    expected_key_id: Option<[u8; 8]>,
    unwrap: impl FnOnce(&[u8], &[u8]) -> Result<Zeroizing<[u8; 32]>, FileError>,
) -> Result<u64, FileError> {
    check_output(output, overwrite)?;
    let src = File::open(input).map_err(FileError::io(format!("opening {}", input.display())))?;
    let mut r = StreamReader::open(src, expected_key_id, unwrap).map_err(|e| with_paths(e, input, output))?;
    let mut tmp = create_output(output, fsutil::PRIVATE_MODE)?;
    let size = r.chunk_size();
    let n = copy_chunks(&mut r, &mut tmp, size)
        .map_err(|e| with_paths(FileError::from_io(e, WRITING_DECRYPTED), input, output))?;
    commit_output(tmp, output, overwrite)?;
    Ok(n)
}

/// Name the files in I/O errors from the stream functions.
fn with_paths(e: FileError, input: &Path, output: &Path) -> FileError {
    match e {
        FileError::Io { context, source } => {
            let path = if context.starts_with("reading") { input } else { output };
            FileError::Io {
                context: format!("{context} ({})", path.display()),
                source,
            }
        }
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cardvault_proto::crypto::KeyPair;
    use cardvault_proto::from_hex;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const EXP: u8 = 10;
    const P: usize = 1 << EXP;
    const C: usize = P + TAG_LEN;

    fn card() -> KeyPair {
        KeyPair::generate().unwrap()
    }

    fn unwrapper(kp: &KeyPair) -> impl FnOnce(&[u8], &[u8]) -> Result<Zeroizing<[u8; 32]>, FileError> + '_ {
        move |aad, wrapped| crypto::unwrap_key(kp, wrapped, aad).map_err(|e| FileError::Unwrap(e.to_string()))
    }

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    fn enc(kp: &KeyPair, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let n = encrypt(&kp.public_bytes(), EXP, data, &mut out).unwrap();
        assert_eq!(n, data.len() as u64);
        out
    }

    /// Decrypt, returning whatever was written to the output as well.
    fn dec(kp: &KeyPair, file: &[u8]) -> (Result<u64, FileError>, Vec<u8>) {
        let mut out = Vec::new();
        let r = decrypt(file, &mut out, None, unwrapper(kp));
        (r, out)
    }

    /// `encrypt` under a chosen file key.
    fn encrypt_with_key(
        recipient_pub: &[u8],
        chunk_exp: u8,
        file_key: &[u8; 32],
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), FileError> {
        let mut w = StreamWriter::with_file_key(recipient_pub, chunk_exp, file_key, out)?;
        w.write_all(data).unwrap();
        w.finish()?;
        Ok(())
    }

    /// Decrypt a body (after its header) with a known file key.
    fn decrypt_body(header: &Header, file_key: &[u8; 32], body: &[u8]) -> (Result<u64, FileError>, Vec<u8>) {
        let mut out = Vec::new();
        let r = StreamReader::new(header, file_key, body)
            .and_then(|mut r| io::copy(&mut r, &mut out).map_err(|e| FileError::from_io(e, "test")));
        (r, out)
    }

    fn chunks_for(len: usize) -> usize {
        len.div_ceil(P).max(1)
    }

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(name: &str) -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "cardvault-fileenc-{}-{}-{}",
                std::process::id(),
                name,
                N.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        fn entries(&self) -> Vec<String> {
            let mut v: Vec<String> = fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn header_layout() {
        assert_eq!(HEADER_LEN, 4 + 1 + 1 + 8 + WRAPPED_KEY_LEN + 1);
        let kp = card();
        let f = enc(&kp, b"");
        assert_eq!(f.len(), HEADER_LEN + TAG_LEN);
        let h = read_header(&mut &f[..]).unwrap();
        assert_eq!(&f[..4], MAGIC);
        assert_eq!((h.version, h.chunk_exp), (1, EXP));
        assert_eq!(h.recipient_key_id, crypto::key_id(&kp.public_bytes()));
        assert_eq!(h.wrapped_key.len(), 125);
        assert_eq!(&h.wrapped_key[..], &f[14..139]);
        assert_eq!(f[139], 0);
        assert_eq!(h.aad(), &f[..14]);
        assert_eq!(&h.to_bytes()[..], &f[..HEADER_LEN]);
        assert_eq!(h.chunk_size(), 1024);
        assert_eq!(Header::parse(&h.to_bytes()).unwrap(), h);
    }

    #[test]
    fn round_trips() {
        let kp = card();
        for len in [0, 1, P - 1, P, P + 1, 2 * P, 3 * P + 5] {
            let data = pattern(len);
            let f = enc(&kp, &data);
            assert_eq!(f.len(), HEADER_LEN + len + TAG_LEN * chunks_for(len), "len {len}");
            let (r, out) = dec(&kp, &f);
            assert_eq!(r.unwrap(), len as u64);
            assert_eq!(out, data, "len {len}");
        }
    }

    #[test]
    fn default_chunk_size_round_trip() {
        let kp = card();
        let data = pattern((1 << DEFAULT_CHUNK_EXP) * 2 + 7);
        let mut f = Vec::new();
        encrypt(&kp.public_bytes(), DEFAULT_CHUNK_EXP, &data[..], &mut f).unwrap();
        assert_eq!(f.len(), HEADER_LEN + data.len() + 3 * TAG_LEN);
        let mut out = Vec::new();
        let id = crypto::key_id(&kp.public_bytes());
        decrypt(&f[..], &mut out, Some(id), unwrapper(&kp)).unwrap();
        assert_eq!(out, data);
    }

    /// The body matches an independent AES-GCM computation with the documented
    /// key derivation and nonce layout.
    #[test]
    fn chunks_match_reference_construction() {
        let kp = card();
        let file_key = [0x42u8; 32];
        let data = pattern(2 * P + 100);
        let mut f = Vec::new();
        encrypt_with_key(&kp.public_bytes(), EXP, &file_key, &data[..], &mut f).unwrap();
        let header: [u8; HEADER_LEN] = f[..HEADER_LEN].try_into().unwrap();
        let payload = crypto::hkdf(&file_key, &crypto::sha256(&header), b"cardvault file payload v1").unwrap();
        let body = &f[HEADER_LEN..];
        let pts: Vec<&[u8]> = data.chunks(P).collect();
        let mut off = 0;
        for (i, pt) in pts.iter().enumerate() {
            let mut nonce = [0u8; 12];
            nonce[10] = i as u8;
            nonce[11] = (i == pts.len() - 1) as u8;
            let sealed = crypto::seal(&payload, &nonce, b"", pt).unwrap();
            assert_eq!(&body[off..off + sealed.len()], &sealed[..], "chunk {i}");
            off += sealed.len();
        }
        assert_eq!(off, body.len());
        assert_eq!(
            &crypto::unwrap_key(&kp, &header[14..139], &header[..14]).unwrap()[..],
            &file_key
        );
    }

    #[test]
    fn wrong_recipient() {
        let kp = card();
        let other = card();
        let f = enc(&kp, &pattern(100));
        let other_id = crypto::key_id(&other.public_bytes());
        let mut out = Vec::new();
        let e = decrypt(&f[..], &mut out, Some(other_id), unwrapper(&other)).unwrap_err();
        match &e {
            FileError::WrongRecipient {
                file_key_id,
                card_key_id,
            } => {
                assert_eq!(file_key_id, &to_hex(&crypto::key_id(&kp.public_bytes())));
                assert_eq!(card_key_id, &to_hex(&other_id));
            }
            e => panic!("{e:?}"),
        }
        assert!(e.to_string().starts_with("encrypted to another card (key id "));
        let (r, out) = dec(&other, &f);
        assert!(matches!(r, Err(FileError::Unwrap(_))), "{r:?}");
        assert!(out.is_empty());

        let dir = TempDir::new("recipient");
        let (src, dst) = (dir.0.join("f.cve"), dir.0.join("f.out"));
        fs::write(&src, &f).unwrap();
        let e = decrypt_file(&src, &dst, false, Some(other_id), unwrapper(&other)).unwrap_err();
        assert!(matches!(e, FileError::WrongRecipient { .. }), "{e:?}");
        let e = decrypt_file(&src, &dst, false, None, unwrapper(&other)).unwrap_err();
        assert!(matches!(e, FileError::Unwrap(_)), "{e:?}");
        assert_eq!(dir.entries(), vec!["f.cve"]);
    }

    #[test]
    fn header_byte_flips_rejected() {
        let kp = card();
        let id = crypto::key_id(&kp.public_bytes());
        let f = enc(&kp, &pattern(P + 3));
        for i in 0..HEADER_LEN {
            for mask in [0x01u8, 0x80] {
                let mut g = f.clone();
                g[i] ^= mask;
                let (r, out) = dec(&kp, &g);
                let e = r.expect_err("flipped header accepted");
                assert!(out.is_empty(), "byte {i}: output written");
                let ok = match i {
                    0..=3 => matches!(e, FileError::NotEncrypted),
                    4 => matches!(e, FileError::UnsupportedVersion(v) if v == 1 ^ mask),
                    // 10 ^ 1 = 11 is a valid exponent, bound through the AAD.
                    5 if mask == 1 => matches!(e, FileError::Unwrap(_)),
                    5 => matches!(e, FileError::BadHeader(_)),
                    139 => matches!(e, FileError::BadHeader(_)),
                    _ => matches!(e, FileError::Unwrap(_)),
                };
                assert!(ok, "byte {i} mask {mask:#x}: {e:?}");
                if (6..14).contains(&i) {
                    let mut out = Vec::new();
                    let e = decrypt(&g[..], &mut out, Some(id), unwrapper(&kp)).unwrap_err();
                    assert!(matches!(e, FileError::WrongRecipient { .. }), "{e:?}");
                }
            }
        }
    }

    /// A header the card accepts but which differs from the one the payload
    /// key was derived with still fails (the header hash is the HKDF salt).
    #[test]
    fn header_hash_binds_payload() {
        let kp = card();
        let f = enc(&kp, &pattern(10));
        let h = read_header(&mut &f[..]).unwrap();
        let file_key = crypto::unwrap_key(&kp, &h.wrapped_key, h.aad()).unwrap();
        // Re-wrap the same file key (a different, valid header).
        let mut raw = h.to_bytes();
        raw[14..139].copy_from_slice(&crypto::wrap_key(&kp.public_bytes(), &file_key, h.aad()).unwrap());
        let h2 = Header::parse(&raw).unwrap();
        let (r, out) = decrypt_body(&h2, &file_key, &f[HEADER_LEN..]);
        assert!(matches!(r, Err(FileError::ChunkAuth { index: 0 })), "{r:?}");
        assert!(out.is_empty());
        let (r, out) = decrypt_body(&h, &file_key, &f[HEADER_LEN..]);
        assert_eq!(r.unwrap(), 10);
        assert_eq!(out, pattern(10));
    }

    #[test]
    fn body_byte_flips_rejected() {
        let kp = card();
        let data = pattern(3 * P + 5);
        let f = enc(&kp, &data);
        for i in HEADER_LEN..f.len() {
            let mut g = f.clone();
            g[i] ^= 0x01;
            let (r, out) = dec(&kp, &g);
            let index = ((i - HEADER_LEN) / C) as u64;
            assert!(
                matches!(r, Err(FileError::ChunkAuth { index: k }) if k == index),
                "byte {i}: {r:?}"
            );
            assert_eq!(out, data[..index as usize * P], "byte {i}");
        }
    }

    #[test]
    fn truncation_everywhere_rejected() {
        let kp = card();
        let data = pattern(3 * P + 5);
        let f = enc(&kp, &data);
        for len in 0..f.len() {
            let (r, out) = dec(&kp, &f[..len]);
            let e = r.expect_err("truncated file accepted");
            let boundary = len >= HEADER_LEN && (len - HEADER_LEN).is_multiple_of(C);
            let ok = match len {
                0..=3 => matches!(e, FileError::NotEncrypted),
                _ if len < HEADER_LEN => matches!(e, FileError::Truncated),
                _ if boundary => matches!(e, FileError::Truncated),
                _ => matches!(e, FileError::Truncated | FileError::ChunkAuth { .. }),
            };
            assert!(ok, "len {len}: {e:?}");
            assert!(data.starts_with(&out) && out.len().is_multiple_of(P), "len {len}");
        }
    }

    #[test]
    fn decrypt_file_leaves_nothing_on_failure() {
        let kp = card();
        let data = pattern(3 * P + 5);
        let f = enc(&kp, &data);
        let dir = TempDir::new("trunc");
        let (src, dst) = (dir.0.join("f.cve"), dir.0.join("f.out"));
        let mut cuts: Vec<usize> = (0..=3).map(|k| HEADER_LEN + k * C).collect();
        cuts.extend([
            HEADER_LEN + 1,
            HEADER_LEN + C + 500,
            HEADER_LEN + 3 * C + 3,
            f.len() - 1,
        ]);
        for len in cuts {
            fs::write(&src, &f[..len]).unwrap();
            let e = decrypt_file(&src, &dst, false, None, unwrapper(&kp)).unwrap_err();
            assert!(
                matches!(e, FileError::Truncated | FileError::ChunkAuth { .. }),
                "len {len}: {e:?}"
            );
            assert_eq!(dir.entries(), vec!["f.cve"], "len {len}");
        }
        let mut g = f.clone();
        g[HEADER_LEN + 2 * C + 7] ^= 4;
        fs::write(&src, &g).unwrap();
        let e = decrypt_file(&src, &dst, false, None, unwrapper(&kp)).unwrap_err();
        assert!(matches!(e, FileError::ChunkAuth { index: 2 }), "{e:?}");
        assert_eq!(dir.entries(), vec!["f.cve"]);
    }

    fn chunk(f: &[u8], k: usize) -> &[u8] {
        let start = HEADER_LEN + k * C;
        &f[start..(start + C).min(f.len())]
    }

    #[test]
    fn reordered_chunks_rejected() {
        let kp = card();
        let f = enc(&kp, &pattern(3 * P + 5));
        let h = &f[..HEADER_LEN];
        let cases: Vec<(Vec<&[u8]>, u64)> = vec![
            (vec![chunk(&f, 1), chunk(&f, 0), chunk(&f, 2), chunk(&f, 3)], 0),
            (vec![chunk(&f, 0), chunk(&f, 2), chunk(&f, 1), chunk(&f, 3)], 1),
            (vec![chunk(&f, 0), chunk(&f, 1), chunk(&f, 3), chunk(&f, 2)], 2),
            (vec![chunk(&f, 0), chunk(&f, 2), chunk(&f, 3)], 1),
            (
                vec![chunk(&f, 0), chunk(&f, 0), chunk(&f, 1), chunk(&f, 2), chunk(&f, 3)],
                1,
            ),
        ];
        for (i, (parts, index)) in cases.into_iter().enumerate() {
            let g: Vec<u8> = std::iter::once(h).chain(parts).flatten().copied().collect();
            let (r, _) = dec(&kp, &g);
            assert!(
                matches!(r, Err(FileError::ChunkAuth { index: k }) if k == index),
                "case {i}: {r:?}"
            );
        }
        // Chunks of another file to the same card do not fit either.
        let f2 = enc(&kp, &pattern(3 * P + 5));
        let g: Vec<u8> = [&f[..HEADER_LEN + C], chunk(&f2, 1), &f[HEADER_LEN + 2 * C..]].concat();
        let (r, _) = dec(&kp, &g);
        assert!(matches!(r, Err(FileError::ChunkAuth { index: 1 })), "{r:?}");
    }

    #[test]
    fn trailing_data_rejected() {
        let kp = card();
        // Full-size final chunk: the appended data is recognised as such.
        let data = pattern(2 * P);
        let f = enc(&kp, &data);
        for extra in [1, 15, 16, 17, C, 3 * C] {
            let mut g = f.clone();
            g.resize(g.len() + extra, 0xa5);
            let (r, out) = dec(&kp, &g);
            assert!(matches!(r, Err(FileError::TrailingData)), "extra {extra}: {r:?}");
            assert_eq!(out, data[..P]);
        }
        // The encrypted file appended to itself.
        let g = [&f[..], &f[..]].concat();
        assert!(matches!(dec(&kp, &g).0, Err(FileError::TrailingData)));
        // Short final chunk: the extra bytes change its length, so it no
        // longer authenticates.
        let f = enc(&kp, &pattern(2 * P + 5));
        for extra in [1, 16, C] {
            let mut g = f.clone();
            g.resize(g.len() + extra, 0);
            let (r, _) = dec(&kp, &g);
            assert!(
                matches!(r, Err(FileError::ChunkAuth { index: 2 })),
                "extra {extra}: {r:?}"
            );
        }
    }

    #[test]
    fn empty_final_chunk_after_data_rejected() {
        let kp = card();
        let file_key = [7u8; 32];
        let mut f = Vec::new();
        encrypt_with_key(&kp.public_bytes(), EXP, &file_key, &pattern(P)[..], &mut f).unwrap();
        let h = Header::parse(f[..HEADER_LEN].try_into().unwrap()).unwrap();
        // Hand-build the non-canonical form: a non-final full chunk, then an
        // empty final chunk.
        let mut c = ChunkCipher::new(&h.payload_key(&file_key).unwrap(), true).unwrap();
        let mut body = vec![0u8; C + TAG_LEN];
        c.seal(0, false, &pattern(P), &mut body[..C]).unwrap();
        c.seal(1, true, &[], &mut body[C..]).unwrap();
        let g = [&f[..HEADER_LEN], &body[..]].concat();
        let (r, _) = dec(&kp, &g);
        assert!(matches!(r, Err(FileError::EmptyFinalChunk { index: 1 })), "{r:?}");
    }

    #[test]
    fn bad_parameters() {
        let kp = card();
        for exp in [0, 9, 25, 255] {
            let e = encrypt(&kp.public_bytes(), exp, &b"x"[..], Vec::new()).unwrap_err();
            assert!(matches!(e, FileError::BadHeader(_)), "{e:?}");
        }
        let mut out = Vec::new();
        let e = encrypt(&[4u8; 65], EXP, &b"x"[..], &mut out).unwrap_err();
        assert!(matches!(e, FileError::Crypto(_)), "{e:?}");
        assert!(out.is_empty());
        assert!(matches!(dec(&kp, b"").0, Err(FileError::NotEncrypted)));
        assert!(matches!(dec(&kp, b"hello world").0, Err(FileError::NotEncrypted)));
        // Every exponent in range is readable.
        for exp in [MIN_CHUNK_EXP, MAX_CHUNK_EXP] {
            let mut f = Vec::new();
            encrypt(&kp.public_bytes(), exp, &b"abc"[..], &mut f).unwrap();
            assert_eq!(dec(&kp, &f).1, b"abc");
        }
    }

    #[test]
    fn file_helpers_round_trip_and_refuse_overwrite() {
        let kp = card();
        let id = crypto::key_id(&kp.public_bytes());
        let dir = TempDir::new("files");
        let (plain, cve, out) = (dir.0.join("p.bin"), dir.0.join("p.cve"), dir.0.join("p.out"));
        let data = pattern(100_000);
        fs::write(&plain, &data).unwrap();
        assert_eq!(encrypt_file(&plain, &cve, &kp.public_bytes(), false).unwrap(), 100_000);
        assert_eq!(
            decrypt_file(&cve, &out, false, Some(id), unwrapper(&kp)).unwrap(),
            100_000
        );
        assert_eq!(fs::read(&out).unwrap(), data);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert_eq!(dir.entries(), vec!["p.bin", "p.cve", "p.out"]);

        // Existing outputs are left alone without overwrite.
        fs::write(&cve, b"keep me").unwrap();
        let e = encrypt_file(&plain, &cve, &kp.public_bytes(), false).unwrap_err();
        assert!(
            matches!(&e, FileError::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists),
            "{e:?}"
        );
        assert_eq!(fs::read(&cve).unwrap(), b"keep me");
        encrypt_file(&plain, &cve, &kp.public_bytes(), true).unwrap();
        assert_ne!(fs::read(&cve).unwrap(), b"keep me");

        fs::write(&out, b"keep me too").unwrap();
        let mut asked = false;
        let e = decrypt_file(&cve, &out, false, None, |_, _| {
            asked = true;
            Err(FileError::Unwrap("not reached".into()))
        })
        .unwrap_err();
        assert!(matches!(&e, FileError::Io { source, .. } if source.kind() == io::ErrorKind::AlreadyExists));
        assert!(!asked, "the card was asked although the output exists");
        assert_eq!(fs::read(&out).unwrap(), b"keep me too");
        decrypt_file(&cve, &out, true, Some(id), unwrapper(&kp)).unwrap();
        assert_eq!(fs::read(&out).unwrap(), data);

        // Missing input, not-encrypted input.
        let e = encrypt_file(&dir.0.join("missing"), &dir.0.join("m.cve"), &kp.public_bytes(), false).unwrap_err();
        assert!(matches!(&e, FileError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound));
        let e = decrypt_file(&plain, &dir.0.join("x"), false, None, unwrapper(&kp)).unwrap_err();
        assert!(matches!(e, FileError::NotEncrypted), "{e:?}");
        assert_eq!(dir.entries(), vec!["p.bin", "p.cve", "p.out"]);
    }

    /// Read `r` to the end in `step`-byte reads: everything it handed out,
    /// and how it ended.
    fn drain<R: Read>(r: &mut StreamReader<R>, step: usize) -> (Result<(), FileError>, Vec<u8>) {
        let mut out = Vec::new();
        let mut buf = vec![0u8; step];
        loop {
            match r.read(&mut buf) {
                Ok(0) => return (Ok(()), out),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => {
                    // The failure is final: no later read hands anything out.
                    assert!(r.read(&mut buf).is_err(), "read after a failure succeeded");
                    return (Err(FileError::from_io(e, "test")), out);
                }
            }
        }
    }

    fn stream_reader<'a>(kp: &KeyPair, file: &'a [u8]) -> StreamReader<&'a [u8]> {
        StreamReader::open(file, Some(crypto::key_id(&kp.public_bytes())), unwrapper(kp)).unwrap()
    }

    /// The writer produces the documented chunks whatever the sizes of the
    /// writes, and the reader gives back the plaintext whatever the sizes of
    /// the reads, at and around every chunk boundary.
    #[test]
    fn stream_round_trips_at_chunk_boundaries() {
        let kp = card();
        let file_key = [0x24u8; 32];
        for len in [0, 1, P - 1, P, P + 1, 2 * P - 1, 2 * P, 2 * P + 1] {
            let data = pattern(len);
            for step in [1, 7, P - 1, P, P + 1, 3 * P] {
                if step == 1 && len > P + 1 {
                    continue;
                }
                let mut w = StreamWriter::with_file_key(&kp.public_bytes(), EXP, &file_key, Vec::new()).unwrap();
                assert_eq!(w.chunk_size(), P);
                for piece in data.chunks(step) {
                    w.write_all(piece).unwrap();
                }
                w.flush().unwrap();
                let f = w.finish().unwrap();
                assert_eq!(
                    f.len(),
                    HEADER_LEN + len + TAG_LEN * chunks_for(len),
                    "len {len} step {step}"
                );
                // Each chunk is the reference AES-GCM sealing.
                let h = read_header(&mut &f[..]).unwrap();
                let payload = h.payload_key(&file_key).unwrap();
                let pts: Vec<&[u8]> = if len == 0 { vec![&[]] } else { data.chunks(P).collect() };
                let mut off = HEADER_LEN;
                for (i, pt) in pts.iter().enumerate() {
                    let sealed = crypto::seal(&payload, &chunk_nonce(i as u64, i == pts.len() - 1), b"", pt).unwrap();
                    assert_eq!(
                        &f[off..off + sealed.len()],
                        &sealed[..],
                        "len {len} step {step} chunk {i}"
                    );
                    off += sealed.len();
                }
                let (r, out) = drain(&mut stream_reader(&kp, &f), step);
                r.unwrap();
                assert_eq!(out, data, "len {len} step {step}");
            }
        }
    }

    /// Re-encryption is one `io::copy` from a reader into a writer.
    #[test]
    fn stream_reader_copies_into_stream_writer() {
        let (old, new) = (card(), card());
        let data = pattern(3 * P + 5);
        let f = enc(&old, &data);
        let mut w = StreamWriter::new(&new.public_bytes(), EXP, Vec::new()).unwrap();
        let n = io::copy(&mut stream_reader(&old, &f), &mut w).unwrap();
        assert_eq!(n, data.len() as u64);
        let g = w.finish().unwrap();
        assert_eq!(dec(&new, &g).1, data);
        assert!(matches!(dec(&old, &g).0, Err(FileError::Unwrap(_))));
    }

    /// Cut, reordered or altered bodies: the reader fails, hands out nothing
    /// past the last chunk that authenticated, and never reports end of file.
    #[test]
    fn stream_reader_stops_at_the_last_authenticated_chunk() {
        let kp = card();
        let data = pattern(3 * P + 5);
        let f = enc(&kp, &data);
        let check = |g: &[u8], what: &str| -> FileError {
            let (r, out) = drain(&mut stream_reader(&kp, g), 100);
            let e = r.expect_err(what);
            assert!(
                out.len().is_multiple_of(P) && data.starts_with(&out),
                "{what}: {} bytes",
                out.len()
            );
            e
        };
        // (Every cut length is in truncation_everywhere_rejected; here a
        // spread of them plus each chunk boundary and its neighbours.)
        let mut cuts: Vec<usize> = (HEADER_LEN..f.len()).step_by(61).collect();
        cuts.extend((0..4).flat_map(|k| [C * k + HEADER_LEN - 1, C * k + HEADER_LEN, C * k + HEADER_LEN + 1]));
        for len in cuts.into_iter().filter(|&l| (HEADER_LEN..f.len()).contains(&l)) {
            let e = check(&f[..len], &format!("cut at {len}"));
            let boundary = (len - HEADER_LEN).is_multiple_of(C);
            assert!(
                matches!(e, FileError::Truncated) || (!boundary && matches!(e, FileError::ChunkAuth { .. })),
                "cut at {len}: {e:?}"
            );
        }
        for k in 0..4 {
            // Cut exactly after chunk k: chunk k authenticates, but only as
            // a non-final chunk where the input ends, so it is withheld too.
            if k < 3 {
                let g = &f[..HEADER_LEN + (k + 1) * C];
                let (r, out) = drain(&mut stream_reader(&kp, g), P);
                assert!(matches!(r, Err(FileError::Truncated)), "{r:?}");
                assert_eq!(out, data[..k * P]);
            }
            let mut g = f.clone();
            g[HEADER_LEN + k * C + 3] ^= 0x40;
            let e = check(&g, &format!("flip in chunk {k}"));
            assert!(
                matches!(e, FileError::ChunkAuth { index } if index == k as u64),
                "{e:?}"
            );
        }
        let swapped = [&f[..HEADER_LEN], chunk(&f, 0), chunk(&f, 2), chunk(&f, 1), chunk(&f, 3)].concat();
        let (r, out) = drain(&mut stream_reader(&kp, &swapped), 100);
        assert!(matches!(r, Err(FileError::ChunkAuth { index: 1 })), "{r:?}");
        assert_eq!(out, data[..P]);
        let extra = [&f[..], b"x"].concat();
        assert!(matches!(
            check(&extra, "trailing byte"),
            FileError::ChunkAuth { index: 3 }
        ));
    }

    struct FailingWriter {
        accept: usize,
    }
    impl Write for FailingWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.accept == 0 {
                return Err(io::Error::other("disk full"));
            }
            let n = buf.len().min(self.accept);
            self.accept -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A writer whose output failed seals nothing more.
    #[test]
    fn stream_writer_stops_after_an_output_error() {
        let kp = card();
        let mut w = StreamWriter::new(
            &kp.public_bytes(),
            EXP,
            FailingWriter {
                accept: HEADER_LEN + 10,
            },
        )
        .unwrap();
        w.write_all(&pattern(P)).unwrap();
        let e = w.write_all(b"more").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::Other);
        let e = FileError::from_io(e, "test");
        assert!(
            matches!(&e, FileError::Io { context, .. } if context == WRITING_ENCRYPTED),
            "{e:?}"
        );
        assert!(w.write(b"x").is_err());
        assert!(w.finish().is_err());
        // Without finish, the last chunk is missing.
        let mut w = StreamWriter::new(&kp.public_bytes(), EXP, Vec::new()).unwrap();
        w.write_all(&pattern(2 * P + 1)).unwrap();
        let partial = std::mem::take(&mut w.inner);
        assert!(matches!(dec(&kp, &partial).0, Err(FileError::Truncated)));
    }

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/fileenc")
            .join(name)
    }

    fn hex_fixture(name: &str) -> Vec<u8> {
        from_hex(&fs::read_to_string(fixture(name)).unwrap()).unwrap()
    }

    const VECTOR_LEN: usize = 2500;

    #[test]
    fn decrypts_checked_in_vector() {
        let kp = KeyPair::from_private(&hex_fixture("recipient-private.hex")).unwrap();
        assert_eq!(kp.public_bytes(), hex_fixture("recipient-public.hex"));
        let plaintext = fs::read(fixture("plaintext.bin")).unwrap();
        assert_eq!(plaintext, pattern(VECTOR_LEN));
        let vector = fs::read(fixture("vector.cve")).unwrap();
        assert_eq!(vector.len(), HEADER_LEN + VECTOR_LEN + 3 * TAG_LEN);

        let h = read_header(&mut &vector[..]).unwrap();
        assert_eq!(h.chunk_exp, 10);
        assert_eq!(h.recipient_key_id, crypto::key_id(&kp.public_bytes()));
        let file_key = crypto::unwrap_key(&kp, &h.wrapped_key, h.aad()).unwrap();
        assert_eq!(&file_key[..], &hex_fixture("file-key.hex")[..]);
        assert_eq!(
            &h.payload_key(&file_key).unwrap()[..],
            &hex_fixture("payload-key.hex")[..]
        );

        let mut out = Vec::new();
        let n = decrypt(&vector[..], &mut out, Some(h.recipient_key_id), unwrapper(&kp)).unwrap();
        assert_eq!(n, VECTOR_LEN as u64);
        assert_eq!(out, plaintext);
        // The same through the reader alone, in odd-sized reads.
        let (r, out) = drain(&mut stream_reader(&kp, &vector), 333);
        r.unwrap();
        assert_eq!(out, plaintext);
    }

    /// Writes fixtures/fileenc/ (new key, new file key, new vector.cve).
    /// Run once: `CARDVAULT_REGENERATE_VECTORS=1 cargo test --lib
    /// fileenc::tests::generate_vectors -- --ignored`. It refuses to replace
    /// existing vectors without that variable.
    #[test]
    #[ignore = "writes fixtures/fileenc/; run only to regenerate the test vectors"]
    fn generate_vectors() {
        if fixture("vector.cve").exists() && std::env::var_os("CARDVAULT_REGENERATE_VECTORS").is_none() {
            panic!("fixtures/fileenc/vector.cve exists; set CARDVAULT_REGENERATE_VECTORS=1 to replace it");
        }
        fs::create_dir_all(fixture("")).unwrap();
        let kp = card();
        let file_key = Zeroizing::new(crypto::random::<32>());
        let plaintext = pattern(VECTOR_LEN);
        let mut f = Vec::new();
        encrypt_with_key(&kp.public_bytes(), 10, &file_key, &plaintext[..], &mut f).unwrap();
        let h = read_header(&mut &f[..]).unwrap();
        let payload = h.payload_key(&file_key).unwrap();
        let hex_line = |b: &[u8]| format!("{}\n", to_hex(b));
        fs::write(fixture("recipient-private.hex"), hex_line(&kp.private_bytes())).unwrap();
        fs::write(fixture("recipient-public.hex"), hex_line(&kp.public_bytes())).unwrap();
        fs::write(fixture("file-key.hex"), hex_line(&file_key[..])).unwrap();
        fs::write(fixture("payload-key.hex"), hex_line(&payload[..])).unwrap();
        fs::write(fixture("plaintext.bin"), &plaintext).unwrap();
        fs::write(fixture("vector.cve"), &f).unwrap();
    }
}
