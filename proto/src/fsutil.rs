//! Durable whole-file replacement, shared by the card's state file
//! (`applet-sim`) and the terminal's file outputs (encrypted files,
//! decrypted files, recovered files).
//!
//! Every such write follows one order, so a crash at any point leaves either
//! the old file or the new one, never a torn mix:
//!
//! 1. create `<target>.tmp-<pid>-<n>-<random>` in the target's directory
//!    with `O_CREAT | O_EXCL | O_NOFOLLOW` (mode 0600 unless the caller asks
//!    otherwise): the name cannot be guessed in advance (64 random bits), and
//!    nothing planted at it would be written through anyway;
//! 2. write, then fsync the temporary file;
//! 3. rename it over the target (or hard-link it, when an existing target
//!    must not be replaced);
//! 4. fsync the directory, so the new directory entry is durable too.
//!
//! A temporary file that is dropped before it is committed is removed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Mode of files created without an explicit one: owner read and write only.
pub const PRIVATE_MODE: u32 = 0o600;

/// Marker between the target's name and the pid in temporary file names.
const TEMP_MARKER: &str = ".tmp-";

/// A new version of `target` being written beside it; it replaces `target`
/// only on [`commit`](AtomicFile::commit) (or
/// [`commit_new`](AtomicFile::commit_new)), and is removed when dropped
/// uncommitted.
#[derive(Debug)]
pub struct AtomicFile {
    file: File,
    temp: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl AtomicFile {
    /// Start a new version of `target`, mode 0600.
    pub fn create(target: impl AsRef<Path>) -> io::Result<AtomicFile> {
        Self::create_with_mode(target, PRIVATE_MODE)
    }

    /// Start a new version of `target` with `mode` (the process umask still applies).
    pub fn create_with_mode(target: impl AsRef<Path>, mode: u32) -> io::Result<AtomicFile> {
        let target = target.as_ref();
        Self::create_at(target, temp_path(target)?, mode)
    }

    fn create_at(target: &Path, temp: PathBuf, mode: u32) -> io::Result<AtomicFile> {
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(mode)
                .open(&temp)
        };
        let file = match open() {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // A regular file here was left by a crashed process that had
                // our pid; anything else (a planted symlink) is refused.
                match fs::symlink_metadata(&temp) {
                    Ok(m) if m.file_type().is_file() => {
                        fs::remove_file(&temp)?;
                        open()?
                    }
                    _ => {
                        return Err(io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            format!(
                                "{} exists and is not a regular file; not writing through it",
                                temp.display()
                            ),
                        ))
                    }
                }
            }
            r => r?,
        };
        Ok(AtomicFile {
            file,
            temp,
            target: target.to_path_buf(),
            committed: false,
        })
    }

    /// The open temporary file (read and write), for example to read back
    /// what was written before committing it.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Where the new version is being written.
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// fsync, rename over the target (replacing it if it exists), fsync the directory.
    pub fn commit(self) -> io::Result<()> {
        self.persist(true)
    }

    /// Like [`commit`](AtomicFile::commit), but an existing target is never
    /// replaced: that is an [`io::ErrorKind::AlreadyExists`] error and the
    /// temporary file is removed.
    pub fn commit_new(self) -> io::Result<()> {
        self.persist(false)
    }

    fn persist(mut self, replace: bool) -> io::Result<()> {
        self.file.sync_all()?;
        if replace {
            fs::rename(&self.temp, &self.target)?;
        } else {
            // A hard link never replaces an existing file; fall back to a
            // checked rename where the file system has no hard links.
            match fs::hard_link(&self.temp, &self.target) {
                Ok(()) => {
                    let _ = fs::remove_file(&self.temp);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(e),
                Err(_) => {
                    if fs::symlink_metadata(&self.target).is_ok() {
                        return Err(io::ErrorKind::AlreadyExists.into());
                    }
                    fs::rename(&self.temp, &self.target)?;
                }
            }
        }
        self.committed = true;
        sync_dir(&self.target)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Durably replace `target` with `bytes` (mode 0600).
pub fn atomic_write(target: impl AsRef<Path>, bytes: &[u8]) -> io::Result<()> {
    let mut f = AtomicFile::create(target)?;
    f.write_all(bytes)?;
    f.commit()
}

/// Remove temporary versions of `target` left by crashed writers. Only for a
/// caller that holds `target` exclusively (the card state under its lock):
/// another live writer's temporary file would be removed too.
pub fn remove_stale_temps(target: &Path) -> io::Result<()> {
    let Some(name) = target.file_name() else {
        return Ok(());
    };
    let mut prefix = name.to_os_string();
    prefix.push(TEMP_MARKER);
    let prefix = prefix.as_encoded_bytes();
    for entry in fs::read_dir(parent_dir(target))? {
        let entry = entry?;
        if entry.file_name().as_encoded_bytes().starts_with(prefix) && entry.file_type()?.is_file() {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// `<target>.tmp-<pid>-<n>-<16 hex digits>`: unique within this process
/// and across live processes, and not predictable (64 random bits), so no
/// one can plant a file or symlink at the name beforehand.
fn temp_path(target: &Path) -> io::Result<PathBuf> {
    static N: AtomicU64 = AtomicU64::new(0);
    let mut random = [0u8; 8];
    openssl::rand::rand_bytes(&mut random).map_err(io::Error::other)?;
    let mut s = target.as_os_str().to_owned();
    s.push(format!(
        "{TEMP_MARKER}{}-{}-{:016x}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        u64::from_be_bytes(random)
    ));
    Ok(PathBuf::from(s))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Make the directory entries of `path`'s directory durable.
fn sync_dir(path: &Path) -> io::Result<()> {
    File::open(parent_dir(path))?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(name: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!("cardvault-fsutil-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
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

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn replaces_with_mode_0600_and_leaves_no_temporary_file() {
        let dir = TempDir::new("replace");
        let target = dir.0.join("state");
        atomic_write(&target, b"one").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"one");
        assert_eq!(mode(&target), 0o600);
        // An existing, more open file is replaced by a private one.
        fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).unwrap();
        atomic_write(&target, b"two").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"two");
        assert_eq!(mode(&target), 0o600);
        assert_eq!(dir.entries(), vec!["state"]);
    }

    #[test]
    fn dropped_uncommitted_leaves_the_target_alone() {
        let dir = TempDir::new("drop");
        let target = dir.0.join("f");
        fs::write(&target, b"old").unwrap();
        let mut f = AtomicFile::create(&target).unwrap();
        f.write_all(b"new, never committed").unwrap();
        assert!(f.temp_path().exists());
        drop(f);
        assert_eq!(fs::read(&target).unwrap(), b"old");
        assert_eq!(dir.entries(), vec!["f"]);
    }

    #[test]
    fn commit_new_never_replaces() {
        let dir = TempDir::new("new");
        let target = dir.0.join("out");
        let mut f = AtomicFile::create_with_mode(&target, 0o640).unwrap();
        f.write_all(b"first").unwrap();
        f.commit_new().unwrap();
        assert_eq!(mode(&target) & !0o640, 0);
        let mut f = AtomicFile::create(&target).unwrap();
        f.write_all(b"second").unwrap();
        let e = f.commit_new().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&target).unwrap(), b"first");
        assert_eq!(dir.entries(), vec!["out"]);
    }

    #[test]
    fn refuses_a_symlink_planted_at_the_temporary_name() {
        let dir = TempDir::new("symlink");
        let target = dir.0.join("f");
        let victim = dir.0.join("victim");
        fs::write(&victim, b"victim").unwrap();
        let temp = dir.0.join("f.tmp-planted");
        symlink(&victim, &temp).unwrap();
        let e = AtomicFile::create_at(&target, temp.clone(), PRIVATE_MODE).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&victim).unwrap(), b"victim");
        assert!(fs::symlink_metadata(&temp).unwrap().file_type().is_symlink());
        // A dangling link would let a plain O_CREAT create its target.
        let absent = dir.0.join("absent");
        fs::remove_file(&temp).unwrap();
        symlink(&absent, &temp).unwrap();
        AtomicFile::create_at(&target, temp.clone(), PRIVATE_MODE).unwrap_err();
        assert!(!absent.exists());
        assert!(!target.exists());
    }

    #[test]
    fn a_leftover_regular_file_at_the_temporary_name_is_replaced() {
        let dir = TempDir::new("leftover");
        let target = dir.0.join("f");
        let temp = dir.0.join("f.tmp-leftover");
        fs::write(&temp, b"half written by a crashed process").unwrap();
        let mut f = AtomicFile::create_at(&target, temp, PRIVATE_MODE).unwrap();
        f.write_all(b"whole").unwrap();
        f.commit().unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"whole");
        assert_eq!(dir.entries(), vec!["f"]);
    }

    #[test]
    fn stale_temporary_files_are_swept() {
        let dir = TempDir::new("stale");
        let target = dir.0.join("a.card");
        fs::write(&target, b"state").unwrap();
        fs::write(dir.0.join("a.card.tmp-1-0"), b"").unwrap();
        fs::write(dir.0.join("a.card.tmp-99-3"), b"").unwrap();
        fs::write(dir.0.join("b.card.tmp-1-0"), b"").unwrap();
        fs::write(dir.0.join("a.card.lock"), b"").unwrap();
        remove_stale_temps(&target).unwrap();
        assert_eq!(dir.entries(), vec!["a.card", "a.card.lock", "b.card.tmp-1-0"]);
    }
}
