//! Files encrypted to a card (hybrid: the card unwraps a per-file key, the
//! terminal streams the bulk data), and recovery onto a new main card (FIG. 19).
//!
//! Recovery is the one flow where file plaintext passes through the terminal,
//! as in the patent: each file is decrypted with the backup card and
//! re-encrypted to the new main card. The plaintext only ever flows through
//! memory (a pipe between the two streams), never to disk, and the original
//! file is replaced only after the new one has been written, synced and
//! verified with the new card.

use crate::card::CardClient;
use crate::error::{Error, Result};
use crate::fileenc::{self, FileError, Header};
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

pub fn file_error(path: &Path, e: FileError) -> Error {
    match e {
        FileError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists => {
            Error::Usage(format!("{} already exists; use --force to replace it", path.display()))
        }
        FileError::Io { context, source } => Error::io(format!("{}: {context}", path.display()), source),
        other => Error::Data(format!("{}: {other}", path.display())),
    }
}

/// Unwrap a file key with `card`, mapping card errors into the file-format error type.
pub fn card_unwrapper<'c, 'a>(
    card: &'c mut CardClient<'a>,
) -> impl FnOnce(&[u8], &[u8]) -> std::result::Result<zeroize::Zeroizing<[u8; 32]>, FileError> + use<'c, 'a> {
    move |aad, wrapped| {
        card.unwrap_file_key(aad, wrapped)
            .map_err(|e| FileError::Unwrap(e.to_string()))
    }
}

/// SHA-256 over everything written through it.
struct HashingWriter<W: Write> {
    inner: W,
    hash: openssl::sha::Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn open_header(path: &Path) -> Result<(Header, BufReader<File>)> {
    let f = File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut r = BufReader::with_capacity(1 << 17, f);
    let h = fileenc::read_header(&mut r).map_err(|e| file_error(path, e))?;
    Ok((h, r))
}

/// Outcome of recovering one file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecoveredFile {
    pub path: PathBuf,
    pub bytes: u64,
    pub result: String,
}

fn temp_beside(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".recover-{}.tmp", std::process::id()));
    PathBuf::from(s)
}

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Re-encrypted to the new card: this many plaintext bytes.
    Reencrypted(u64),
    /// Already encrypted to the new card (an earlier, interrupted run got here).
    AlreadyRecovered,
}

/// Re-encrypt one file from the backup card to the new main card's key.
/// A file already encrypted to the new card is left as it is, so an
/// interrupted recovery is simply run again.
pub fn recover_file(
    backup: &mut CardClient<'_>,
    new_main: &mut CardClient<'_>,
    new_public: &[u8],
    path: &Path,
) -> Result<Recovery> {
    let (header, input) = open_header(path)?;
    if header.recipient_key_id == cardvault_proto::crypto::key_id(new_public) {
        return Ok(Recovery::AlreadyRecovered);
    }
    let key = backup.unwrap_file_key(header.aad(), &header.wrapped_key)?;
    let tmp = temp_beside(path);
    let result = (|| -> Result<u64> {
        let out = File::options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
        let (reader, writer) = std::io::pipe().map_err(|e| Error::io("creating a pipe", e))?;
        let (plain_hash, bytes) = std::thread::scope(|s| -> Result<([u8; 32], u64)> {
            let dec = s.spawn(|| {
                let mut w = HashingWriter {
                    inner: std::io::BufWriter::with_capacity(1 << 16, writer),
                    hash: openssl::sha::Sha256::new(),
                };
                let n = fileenc::decrypt_body(&header, &key, input, &mut w)?;
                w.flush().map_err(|source| FileError::Io {
                    context: "writing plaintext to the re-encryption pipe".into(),
                    source,
                })?;
                Ok::<_, FileError>((w.hash.finish(), n))
            });
            let mut out = std::io::BufWriter::with_capacity(1 << 17, &out);
            let enc = fileenc::encrypt(new_public, header.chunk_exp, reader, &mut out);
            let flushed = out.flush();
            let dec = dec.join().map_err(|_| Error::Data("decryption thread failed".into()))?;
            let (hash, n) = dec.map_err(|e| file_error(path, e))?;
            enc.map_err(|e| file_error(&tmp, e))?;
            flushed.map_err(|e| Error::io(tmp.display().to_string(), e))?;
            Ok((hash, n))
        })?;
        out.sync_all()
            .map_err(|e| Error::io(format!("syncing {}", tmp.display()), e))?;
        // Verify with the new card before anything replaces the original.
        let (h2, r2) = open_header(&tmp)?;
        let key2 = new_main.unwrap_file_key(h2.aad(), &h2.wrapped_key)?;
        let mut sink = HashingWriter {
            inner: std::io::sink(),
            hash: openssl::sha::Sha256::new(),
        };
        fileenc::decrypt_body(&h2, &key2, r2, &mut sink).map_err(|e| file_error(&tmp, e))?;
        if sink.hash.finish() != plain_hash {
            return Err(Error::Data(format!(
                "{}: the re-encrypted file does not verify",
                path.display()
            )));
        }
        std::fs::rename(&tmp, path).map_err(|e| Error::io(format!("replacing {}", path.display()), e))?;
        if let Some(dir) = path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(bytes)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(Recovery::Reencrypted)
}

/// Read the recipient key id from an encrypted file without a card.
pub fn recipient_of(path: &Path) -> Result<[u8; 8]> {
    let (h, _) = open_header(path)?;
    Ok(h.recipient_key_id)
}

/// Read a whole small file (public keys).
pub fn read_small(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let f = File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let mut v = Vec::new();
    f.take(limit)
        .read_to_end(&mut v)
        .map_err(|e| Error::io(path.display().to_string(), e))?;
    Ok(v)
}
