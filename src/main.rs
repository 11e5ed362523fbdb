use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cardvault::cli::Cli::parse();
    let json = cli.json;
    match cardvault::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = e.exit_code();
            if json && !cardvault::cli::json_printed() {
                let v = serde_json::json!({
                    "error": { "kind": e.kind(), "message": e.to_string(), "exit_code": code }
                });
                println!("{v}");
            }
            eprintln!("cardvault: {e}");
            ExitCode::from(code)
        }
    }
}
