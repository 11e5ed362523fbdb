use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    // A reader that goes away (`cardvault ... | head`) ends the process as it
    // ends any Unix filter, instead of a panic on the next print. Every card
    // and vault write is atomic, and batches resume, so nothing is left half done.
    // SAFETY: called first thing, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match cardvault::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return argument_error(e),
    };
    let json = cli.json;
    match cardvault::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e.exit_code();
            let message = cardvault::cli::error_message(&e);
            if json && !cardvault::cli::json_printed() {
                print_json_error(e.kind(), &message, code);
            }
            eprintln!("cardvault: {message}");
            ExitCode::from(code)
        }
    }
}

fn print_json_error(kind: &str, message: &str, code: u8) {
    let v = serde_json::json!({
        "error": { "kind": kind, "message": message, "exit_code": code }
    });
    println!("{v}");
}

/// A command line clap refused: under `--json` the documented error object
/// on stdout as for any other error (exit code 2, kind `usage`), and clap's
/// own text on stderr. `--help` and `--version` print as usual.
fn argument_error(mut e: clap::Error) -> ExitCode {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    // A stray word where no value belongs may be a secret typed in the wrong
    // place (`pin verify 123456`): it is not repeated. Options (`--foo`) are.
    if e.kind() == ErrorKind::UnknownArgument {
        if let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) {
            if !arg.starts_with('-') {
                e.insert(
                    ContextKind::InvalidArg,
                    ContextValue::String("(a value, not shown: it may be a secret)".into()),
                );
                e.insert(
                    ContextKind::Suggested,
                    ContextValue::StyledStrs(vec![
                        "secrets are read from 'prompt', 'env:VAR' or 'file:PATH', never given on the command line"
                            .into(),
                    ]),
                );
            }
        }
    }
    // Before a `--` separator only: after it, "--json" would be a value.
    let json = std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json");
    let code = cardvault::error::exit::USAGE;
    if json {
        let text = e.render().to_string();
        let first = text.lines().next().unwrap_or_default();
        let message = first.strip_prefix("error: ").unwrap_or(first);
        print_json_error("usage", message, code);
    }
    let _ = e.print();
    ExitCode::from(code)
}
