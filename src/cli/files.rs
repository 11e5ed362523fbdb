//! `cardvault encrypt | decrypt | recover`

use super::{print_json, Ctx};
use crate::card::CardClient;
use crate::error::{Error, Result};
use crate::fileenc;
use crate::secret::SecretSource;
use crate::workflow::files::{self, card_unwrapper};

/// A file error in the words of this command line (`--force`).
fn file_error(path: &std::path::Path, e: crate::fileenc::FileError) -> Error {
    match files::file_error(path, e) {
        Error::OutputExists(p) => Error::Usage(format!("{} already exists; use --force to replace it", p.display())),
        e => e,
    }
}
use cardvault_proto::{from_hex, to_hex};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct EncryptArgs {
    /// Encrypt to the card in this reader (reads its encryption key).
    #[arg(
        long,
        value_name = "READER",
        conflicts_with = "recipient",
        required_unless_present = "recipient"
    )]
    to: Option<String>,
    /// Encrypt to a public key file (hex or raw 65-byte P-256 key); no card needed.
    #[arg(long, value_name = "FILE")]
    recipient: Option<PathBuf>,
    /// Replace OUT if it exists.
    #[arg(long)]
    force: bool,
    /// Output file; `-` for standard output.
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
    /// The file to encrypt.
    #[arg(value_name = "IN")]
    input: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct DecryptArgs {
    /// Where the PIN comes from: prompt, env:VAR or file:PATH.
    #[arg(long, value_name = "SOURCE", default_value = "prompt")]
    pin: SecretSource,
    /// Replace OUT if it exists.
    #[arg(long)]
    force: bool,
    /// Output file; `-` for standard output.
    #[arg(short, long, value_name = "OUT")]
    output: PathBuf,
    /// The encrypted file (.cve) to decrypt.
    #[arg(value_name = "IN")]
    input: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct RecoverArgs {
    /// Reader holding the backup card.
    #[arg(long, value_name = "READER")]
    backup: String,
    /// Reader holding the new main card.
    #[arg(long = "new", value_name = "READER")]
    new_main: String,
    /// PIN of the backup card.
    #[arg(long, value_name = "SOURCE", default_value = "prompt")]
    backup_pin: SecretSource,
    /// PIN of the new main card.
    #[arg(long, value_name = "SOURCE", default_value = "prompt")]
    new_pin: SecretSource,
    /// If the new main card has no key yet: its key group elements 2..n (hex, from
    /// prompt, env:VAR or file:PATH) so it can generate one.
    #[arg(long, value_name = "SOURCE")]
    elements: Option<SecretSource>,
    /// Encrypted files to re-encrypt in place.
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
}

fn parse_public_key(bytes: &[u8]) -> Result<Vec<u8>> {
    let key = if bytes.len() == 65 && bytes[0] == 4 {
        bytes.to_vec()
    } else {
        std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| from_hex(s.trim()))
            .ok_or_else(|| Error::Usage("the recipient file is neither hex nor a raw 65-byte key".into()))?
    };
    cardvault_proto::crypto::public_key(&key).map_err(|e| Error::Usage(format!("recipient key: {e}")))?;
    Ok(key)
}

/// `-o -`: the output is standard output (the report then goes to stderr).
fn is_stdout(output: &std::path::Path) -> bool {
    output.as_os_str() == "-"
}

/// `-o -` writes the data to standard output, where a JSON report cannot go too.
fn check_stdout_output(ctx: &Ctx, output: &std::path::Path) -> Result<()> {
    if is_stdout(output) && ctx.json {
        return Err(Error::Usage(
            "-o - writes the data to standard output; --json cannot go there too".into(),
        ));
    }
    Ok(())
}

/// An input file named on the command line must open before any card is
/// touched or any PIN tried (exit code 2 naming it otherwise).
fn check_input(path: &std::path::Path) -> Result<()> {
    std::fs::File::open(path)
        .map(drop)
        .map_err(|e| Error::input(format!("opening {}", path.display()), e))
}

pub fn encrypt(ctx: &Ctx, a: EncryptArgs) -> Result<()> {
    check_stdout_output(ctx, &a.output)?;
    check_input(&a.input)?;
    let public = match (&a.to, &a.recipient) {
        (_, Some(path)) => parse_public_key(&files::read_small(path, 4096)?)?,
        (Some(spec), None) => {
            let mut r = ctx.open_named(spec)?;
            let key = CardClient::open(r.as_mut(), ctx.session())?.public_key()?;
            key.ok_or_else(|| Error::Refused(format!("the card in {spec} has no readable encryption key")))?
        }
        (None, None) => unreachable!("clap requires one"),
    };
    let key_id = to_hex(&cardvault_proto::crypto::key_id(&public));
    if is_stdout(&a.output) {
        let src = std::fs::File::open(&a.input).map_err(|e| Error::io(format!("opening {}", a.input.display()), e))?;
        let n = fileenc::encrypt(&public, fileenc::DEFAULT_CHUNK_EXP, src, std::io::stdout().lock())
            .map_err(|e| file_error(&a.input, e))?;
        eprintln!("{n} bytes encrypted to key {key_id} -> standard output");
        return Ok(());
    }
    let n = fileenc::encrypt_file(&a.input, &a.output, &public, a.force).map_err(|e| file_error(&a.output, e))?;
    if ctx.json {
        print_json(&serde_json::json!({ "output": a.output, "bytes": n, "recipient_key_id": key_id }));
    } else {
        println!("{} bytes encrypted to key {key_id} -> {}", n, a.output.display());
    }
    Ok(())
}

pub fn decrypt(ctx: &Ctx, a: DecryptArgs) -> Result<()> {
    check_stdout_output(ctx, &a.output)?;
    // The file opens and its header parses before the PIN is asked for.
    check_input(&a.input)?;
    files::recipient_of(&a.input)?;
    let pin = a.pin.read("PIN")?;
    let mut r = ctx.open_reader()?;
    let mut card = CardClient::open(r.as_mut(), ctx.session())?;
    card.verify_pin(&pin)?;
    let key_id = card.public_key()?.map(|p| cardvault_proto::crypto::key_id(&p));
    if is_stdout(&a.output) {
        // Each chunk is written once it authenticated; a damaged file stops
        // with an error after the chunks before the damage.
        let src = std::fs::File::open(&a.input).map_err(|e| Error::io(format!("opening {}", a.input.display()), e))?;
        let n = fileenc::decrypt(src, std::io::stdout().lock(), key_id, card_unwrapper(&mut card))
            .map_err(|e| file_error(&a.input, e))?;
        eprintln!("{n} bytes decrypted -> standard output");
        return Ok(());
    }
    let n = fileenc::decrypt_file(&a.input, &a.output, a.force, key_id, card_unwrapper(&mut card))
        .map_err(|e| file_error(&a.input, e))?;
    if ctx.json {
        print_json(&serde_json::json!({ "output": a.output, "bytes": n }));
    } else {
        println!("{} bytes decrypted -> {}", n, a.output.display());
    }
    Ok(())
}

pub fn recover(ctx: &Ctx, a: RecoverArgs) -> Result<()> {
    // Every file named must open before any card is touched; what is in
    // them is checked file by file (a foreign file is that file's failure).
    let unreadable: Vec<String> = a
        .files
        .iter()
        .filter_map(|p| check_input(p).err())
        .map(|e| e.to_string())
        .collect();
    if !unreadable.is_empty() {
        return Err(Error::Usage(format!(
            "{} of the {} files named cannot be read; nothing was done:\n  {}",
            unreadable.len(),
            a.files.len(),
            unreadable.join("\n  ")
        )));
    }
    let backup_pin = a.backup_pin.read("PIN of the backup card")?;
    let new_pin = a.new_pin.read("PIN of the new main card")?;
    let mut br = ctx.open_named(&a.backup)?;
    let mut nr = ctx.open_named(&a.new_main)?;
    let mut backup = CardClient::open(br.as_mut(), ctx.session())?;
    let mut new_main = CardClient::open(nr.as_mut(), ctx.session())?;
    // One status read per card: the new card's template also carries its key.
    let bs = backup.status()?;
    let (ns, nk) = new_main.overview()?;
    if bs.role != crate::card::CardRole::Backup {
        return Err(Error::Refused(format!(
            "card {} in {} is not a backup card",
            bs.card_number, a.backup
        )));
    }
    backup.verify_pin(&backup_pin)?;
    new_main.verify_pin(&new_pin)?;
    let elements = match (&a.elements, nk.public_key.is_some()) {
        (Some(src), false) => Some(super::duplicate::parse_elements(
            &src.read_all("key group elements 2..n (hex)")?,
        )?),
        _ => None,
    };
    let public =
        files::new_main_key(&mut new_main, &ns.card_number, &nk, elements.as_deref()).map_err(|e| match e {
            Error::Usage(m) if m.contains("no key yet") => Error::Usage(format!(
                "the new main card {} has no key yet; give --elements so it can generate one",
                ns.card_number
            )),
            e => e,
        })?;
    let bar = super::progress(ctx, a.files.len() as u64, "files");
    let mut vault = ctx.vault_or_create()?;
    // Every file is tried; each is reported by name, a failure included.
    let mut rows = Vec::new();
    let mut failed = 0;
    for path in &a.files {
        bar.set_message(path.display().to_string());
        let r = files::recover_file(&mut backup, &mut new_main, &public, path);
        let result = match &r {
            Ok(files::Recovery::Reencrypted(_)) => "ok".to_string(),
            Ok(files::Recovery::AlreadyRecovered) => "already encrypted to the new card".to_string(),
            Err(e) => format!("failed: {e}"),
        };
        vault.audit(crate::vault::AuditEvent {
            event: "recover-file",
            card: &ns.card_number,
            peer: Some(&bs.card_number),
            result: &result,
            details: serde_json::json!({ "file": path }),
        })?;
        bar.inc(1);
        let (line, row) = match r {
            Ok(files::Recovery::Reencrypted(n)) => (
                format!("re-encrypted   {} ({n} bytes)", path.display()),
                serde_json::json!({ "path": path, "result": "ok", "bytes": n }),
            ),
            Ok(files::Recovery::AlreadyRecovered) => (
                format!("unchanged      {} (already encrypted to the new card)", path.display()),
                serde_json::json!({ "path": path, "result": "already_recovered" }),
            ),
            Err(e) => {
                failed += 1;
                let message = super::error_message(&e);
                (
                    format!("failed         {}: {message}", path.display()),
                    serde_json::json!({ "path": path, "result": "failed", "error": {
                        "kind": e.kind(), "message": message, "exit_code": e.exit_code() } }),
                )
            }
        };
        if !ctx.json {
            bar.suspend(|| println!("{line}"));
        }
        rows.push(row);
    }
    bar.finish_and_clear();
    let some_failed = (failed > 0).then(|| Error::SomeFailed {
        failed,
        total: a.files.len(),
        what: "files",
    });
    if ctx.json {
        // The report carries the run's error object too, as every failing
        // run's JSON does.
        let mut report = serde_json::json!({
            "new_main_card": ns.card_number,
            "backup_card": bs.card_number,
            "files": rows,
            "failed": failed,
        });
        if let Some(e) = &some_failed {
            report["error"] = serde_json::json!({
                "kind": e.kind(), "message": super::error_message(e), "exit_code": e.exit_code() });
        }
        print_json(&report);
    } else {
        println!(
            "new main card {}: {} of {} files done, {failed} failed",
            ns.card_number,
            a.files.len() - failed,
            a.files.len()
        );
    }
    match some_failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
