//! Files encrypted to a card (hybrid: the card unwraps a per-file key, the
//! terminal streams the bulk data), and recovery onto a new main card (FIG. 19).
//!
//! Recovery is the one flow where file plaintext passes through the terminal,
//! as in the patent: each file is decrypted with the backup card and
//! re-encrypted to the new main card. The plaintext only ever flows through
//! memory (one `io::copy` from the decrypting reader into the encrypting
//! writer), never to disk, and the original file is replaced only after the
//! new one has been written, verified with the new card and synced.

use crate::card::CardClient;
use crate::error::{Error, Result};
use crate::fileenc::{self, FileError, Header, StreamReader, StreamWriter};
use cardvault_proto::fsutil::AtomicFile;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A file-format or file-system failure on `path`, as a cardvault error.
pub fn file_error(path: &Path, e: FileError) -> Error {
    match e {
        FileError::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists => {
            Error::OutputExists(path.to_path_buf())
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

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> HashingWriter<W> {
        HashingWriter {
            inner,
            hash: openssl::sha::Sha256::new(),
        }
    }

    fn finish(self) -> (W, [u8; 32]) {
        (self.inner, self.hash.finish())
    }
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
///
/// Order: the plaintext streams from a [`StreamReader`] under the file key
/// the backup card unwrapped into a [`StreamWriter`] to the new card's key
/// (one `io::copy`, only memory in between), which writes an [`AtomicFile`]
/// beside the original (same permissions); the new card then decrypts that
/// file and its plaintext hash must match; only then does it replace the
/// original (fsync, rename, fsync directory).
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
    let mode = input
        .get_ref()
        .metadata()
        .map_err(|e| Error::io(format!("reading the permissions of {}", path.display()), e))?
        .permissions()
        .mode();
    // Dropped on any error below: the temporary file goes, the original stays.
    let tmp = AtomicFile::create_with_mode(path, mode & 0o777)
        .map_err(|e| Error::io(format!("creating a temporary file beside {}", path.display()), e))?;
    let tmp_path = tmp.temp_path().to_path_buf();
    // A failed copy names the original when reading it failed, the new file when writing did.
    let copy_error = |e: FileError| match &e {
        FileError::Io { context, .. } if context.starts_with("writing") => file_error(&tmp_path, e),
        _ => file_error(path, e),
    };

    let mut plain = StreamReader::new(&header, &key, input).map_err(|e| file_error(path, e))?;
    let mut reencrypt =
        HashingWriter::new(StreamWriter::new(new_public, header.chunk_exp, tmp).map_err(|e| file_error(&tmp_path, e))?);
    let bytes = std::io::copy(&mut plain, &mut reencrypt)
        .map_err(|e| copy_error(FileError::from_io(e, "writing the re-encrypted file")))?;
    let (writer, plain_hash) = reencrypt.finish();
    let tmp = writer.finish().map_err(|e| file_error(&tmp_path, e))?;

    // Verify with the new card before anything replaces the original.
    let mut written = tmp
        .file()
        .try_clone()
        .map_err(|e| Error::io(format!("reading back {}", tmp_path.display()), e))?;
    written
        .seek(SeekFrom::Start(0))
        .map_err(|e| Error::io(format!("reading back {}", tmp_path.display()), e))?;
    let mut written = BufReader::with_capacity(1 << 17, written);
    let h2 = fileenc::read_header(&mut written).map_err(|e| file_error(&tmp_path, e))?;
    let key2 = new_main.unwrap_file_key(h2.aad(), &h2.wrapped_key)?;
    let mut check = StreamReader::new(&h2, &key2, written).map_err(|e| file_error(&tmp_path, e))?;
    let mut sink = HashingWriter::new(std::io::sink());
    std::io::copy(&mut check, &mut sink)
        .map_err(|e| file_error(&tmp_path, FileError::from_io(e, "verifying the re-encrypted file")))?;
    if sink.finish().1 != plain_hash {
        return Err(Error::Data(format!(
            "{}: the re-encrypted file does not verify",
            path.display()
        )));
    }
    tmp.commit()
        .map_err(|e| Error::io(format!("replacing {}", path.display()), e))?;
    Ok(Recovery::Reencrypted(bytes))
}

/// Read the recipient key id from an encrypted file without a card.
pub fn recipient_of(path: &Path) -> Result<[u8; 8]> {
    let (h, _) = open_header(path)?;
    Ok(h.recipient_key_id)
}

/// Read a whole small file (public keys).
pub fn read_small(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let f = File::open(path).map_err(|e| Error::input(format!("opening {}", path.display()), e))?;
    let mut v = Vec::new();
    f.take(limit)
        .read_to_end(&mut v)
        .map_err(|e| Error::io(path.display().to_string(), e))?;
    Ok(v)
}

/// The new main card's encryption key for a recovery: the one it holds, or,
/// when it has none yet, one it generates once the holder's key group
/// elements 2..n (`elements`) are written, as at duplication.
/// `keys` is the card's key state as read (`CardClient::overview`).
pub fn new_main_key(
    card: &mut CardClient<'_>,
    card_number: &str,
    keys: &crate::card::KeyState,
    elements: Option<&[crate::secret::Secret]>,
) -> Result<Vec<u8>> {
    new_main_key_state(card, card_number, keys, elements).map(|(p, _)| p)
}

/// [`new_main_key`], with the card's key state after it when it changed
/// (as the card reports it: the group complete with the check value the
/// last element's write answered, the generated key).
pub fn new_main_key_state(
    card: &mut CardClient<'_>,
    card_number: &str,
    keys: &crate::card::KeyState,
    elements: Option<&[crate::secret::Secret]>,
) -> Result<(Vec<u8>, Option<crate::card::KeyState>)> {
    if let Some(p) = keys.public_key.as_deref().and_then(cardvault_proto::from_hex) {
        return Ok((p, None));
    }
    let elements = elements.ok_or_else(|| {
        Error::Usage(format!(
            "the new main card {} has no key yet; its key group elements 2..n are needed so it can generate one",
            card_number
        ))
    })?;
    let size = keys.group_size as usize;
    if elements.len() + 1 != size {
        return Err(Error::Usage(format!(
            "the new main card's key group has {size} elements: give {} (elements 2..{size}), {} given",
            size - 1,
            elements.len()
        )));
    }
    let mut kcv = None;
    for (i, e) in elements.iter().enumerate() {
        kcv = card.write_key_element(i as u8 + 2, e)?;
    }
    let public = card.generate_key_pair()?;
    let after = kcv.map(|kcv| crate::card::KeyState {
        elements_written: (1..=keys.group_size).collect(),
        group_complete: true,
        check_value: Some(cardvault_proto::to_hex(&kcv)),
        key_origin: Some(cardvault_proto::takeout::KeyOrigin::Generated),
        public_key: Some(cardvault_proto::to_hex(&public)),
        ..keys.clone()
    });
    Ok((public, after))
}
