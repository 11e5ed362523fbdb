//! Secrets (PINs, admin keys) come from a prompt, `env:VAR` or `file:PATH`,
//! never from the command line itself, and are zeroized when dropped.

use crate::error::{Error, Result};
use std::io::{BufRead, Write};
use zeroize::Zeroizing;

/// A secret value in memory.
pub type Secret = Zeroizing<Vec<u8>>;

/// Where a secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Ask on the terminal, without echo.
    Prompt,
    /// An environment variable.
    Env(String),
    /// The first line of a file.
    File(std::path::PathBuf),
}

impl std::str::FromStr for SecretSource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "prompt" {
            Ok(SecretSource::Prompt)
        } else if let Some(v) = s.strip_prefix("env:").filter(|v| !v.is_empty()) {
            Ok(SecretSource::Env(v.to_string()))
        } else if let Some(p) = s.strip_prefix("file:").filter(|p| !p.is_empty()) {
            Ok(SecretSource::File(p.into()))
        } else {
            Err("a secret is read from 'prompt', 'env:VAR' or 'file:PATH', never given on the command line".into())
        }
    }
}

/// The command line's parser of a secret source (and of anything else that
/// may carry a secret: an issuer key, a `pkcs11:` URI): a refused value is
/// never repeated in the error, since it may be the secret itself.
#[derive(Debug, Clone, Copy)]
pub struct QuietParser<T>(std::marker::PhantomData<fn() -> T>);

impl<T> QuietParser<T> {
    pub fn new() -> QuietParser<T> {
        QuietParser(std::marker::PhantomData)
    }
}

impl<T> Default for QuietParser<T> {
    fn default() -> Self {
        QuietParser::new()
    }
}

impl<T> clap::builder::TypedValueParser for QuietParser<T>
where
    T: std::str::FromStr<Err = String> + Clone + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> std::result::Result<T, clap::Error> {
        let refused = |reason: &str| {
            let option = arg.map(|a| format!(" for '{a}'")).unwrap_or_default();
            let mut cmd = cmd.clone();
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid value{option} (not shown: it may be a secret): {reason}\n"),
            )
            .format(&mut cmd)
        };
        value
            .to_str()
            .ok_or_else(|| refused("not UTF-8"))?
            .parse()
            .map_err(|reason: String| refused(&reason))
    }
}

impl clap::builder::ValueParserFactory for SecretSource {
    type Parser = QuietParser<SecretSource>;
    fn value_parser() -> Self::Parser {
        QuietParser::new()
    }
}

impl SecretSource {
    /// Read a secret that may span lines (key group elements): the whole file or
    /// variable; a prompt still reads one line.
    pub fn read_all(&self, what: &str) -> Result<Secret> {
        match self {
            SecretSource::File(path) => {
                let bytes = Zeroizing::new(
                    std::fs::read(path).map_err(|e| Error::input(format!("{what}: reading {}", path.display()), e))?,
                );
                if bytes.iter().all(|b| b.is_ascii_whitespace()) {
                    return Err(Error::Usage(format!("{what} is empty")));
                }
                Ok(bytes)
            }
            _ => self.read(what),
        }
    }

    /// Read the secret; `what` names it in prompts and errors ("PIN of sim:alice").
    pub fn read(&self, what: &str) -> Result<Secret> {
        let value = match self {
            SecretSource::Env(var) => {
                let v = std::env::var_os(var)
                    .ok_or_else(|| Error::Usage(format!("{what}: environment variable {var} is not set")))?;
                Zeroizing::new(v.into_encoded_bytes())
            }
            SecretSource::File(path) => {
                let bytes = Zeroizing::new(
                    std::fs::read(path).map_err(|e| Error::input(format!("{what}: reading {}", path.display()), e))?,
                );
                let line = bytes.split(|b| *b == b'\n').next().unwrap_or(&[]);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                Zeroizing::new(line.to_vec())
            }
            SecretSource::Prompt => prompt(what)?,
        };
        if value.is_empty() {
            return Err(Error::Usage(format!("{what} is empty")));
        }
        Ok(value)
    }
}

/// Prompt on the controlling terminal with echo off.
fn prompt(what: &str) -> Result<Secret> {
    use std::os::unix::io::AsRawFd;
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|_| {
            Error::Usage(format!(
                "{what} is needed and there is no terminal to ask on; give it as env:VAR or file:PATH"
            ))
        })?;
    let fd = tty.as_raw_fd();
    // Echo goes off on the terminal we opened and comes back before returning.
    // SAFETY: `termios` is a plain C struct of integers and arrays, for which
    // all-zero bytes is a valid value; tcgetattr overwrites it.
    let mut term: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` stays open while `tty` lives (to the end of this function)
    // and `term` is a valid, exclusively borrowed termios to write into.
    let have_term = unsafe { libc::tcgetattr(fd, &mut term) } == 0;
    if have_term {
        let mut silent = term;
        silent.c_lflag &= !libc::ECHO;
        silent.c_lflag |= libc::ECHONL;
        // SAFETY: `fd` is open (see above); `silent` is a termios that
        // tcgetattr filled in, changed only in its local-mode flags.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &silent) };
    }
    let mut out = &tty;
    let _ = write!(out, "{what}: ");
    let _ = out.flush();
    let mut line = Zeroizing::new(String::new());
    let r = std::io::BufReader::new(&tty).read_line(&mut line);
    if have_term {
        // SAFETY: `fd` is still open; `term` holds the settings tcgetattr read.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &term) };
    }
    r.map_err(|e| Error::io("reading from the terminal", e))?;
    Ok(Zeroizing::new(line.trim_end_matches(['\n', '\r']).as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources_and_refuses_literal_secrets() {
        assert_eq!("env:PIN".parse::<SecretSource>(), Ok(SecretSource::Env("PIN".into())));
        assert_eq!("prompt".parse::<SecretSource>(), Ok(SecretSource::Prompt));
        assert!("123456".parse::<SecretSource>().is_err());
        assert!("env:".parse::<SecretSource>().is_err());
    }

    #[test]
    fn reads_first_line_of_file() {
        let p = std::env::temp_dir().join(format!("cv-secret-{}", std::process::id()));
        std::fs::write(&p, "4321\r\nignored\n").unwrap();
        let s = SecretSource::File(p.clone()).read("PIN").unwrap();
        assert_eq!(&s[..], b"4321");
        std::fs::remove_file(p).unwrap();
    }
}
