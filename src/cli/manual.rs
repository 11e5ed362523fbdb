//! `cardvault completions SHELL` and `cardvault man -o DIR`: shell
//! completions (clap_complete) and man pages (clap_mangen), generated from
//! the same command definitions as `--help`, so they never drift from it.

use crate::error::{Error, Result};
use clap::CommandFactory;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Install for the current user, for example:
  cardvault completions bash > ~/.local/share/bash-completion/completions/cardvault
  cardvault completions zsh  > ~/.zfunc/_cardvault      (with fpath+=~/.zfunc)
  cardvault completions fish > ~/.config/fish/completions/cardvault.fish")]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Writes cardvault.1 and one page per subcommand (cardvault-backup.1,
cardvault-vault-list.1, ...). Read one with `man -l DIR/cardvault-backup.1`, or
install them into a man directory such as ~/.local/share/man/man1.")]
pub struct ManArgs {
    /// Directory to write the man pages to (created if missing).
    #[arg(short, long, value_name = "DIR")]
    output: PathBuf,
}

pub fn completions(a: CompletionsArgs) -> Result<()> {
    let mut cmd = super::Cli::command();
    clap_complete::generate(a.shell, &mut cmd, "cardvault", &mut std::io::stdout());
    Ok(())
}

pub fn man(ctx: &super::Ctx, a: ManArgs) -> Result<()> {
    let written = write_man_pages(&a.output)?;
    if ctx.json {
        super::print_json(&serde_json::json!({ "directory": a.output, "pages": written }));
    } else {
        println!("{} man pages written to {}", written.len(), a.output.display());
    }
    Ok(())
}

/// Write `cardvault.1` and one page per subcommand, at every depth, into
/// `dir`. Returns the file names written.
pub fn write_man_pages(dir: &Path) -> Result<Vec<String>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let mut cmd = super::Cli::command();
    cmd.build();
    let mut written = Vec::new();
    write_page(dir, &cmd, &mut written)?;
    Ok(written)
}

fn write_page(dir: &Path, cmd: &clap::Command, written: &mut Vec<String>) -> Result<()> {
    let name = format!("{}.1", cmd.get_display_name().unwrap_or(cmd.get_name()));
    let path = dir.join(&name);
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut page)
        .map_err(|e| Error::io(format!("rendering {name}"), e))?;
    std::fs::write(&path, page).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    written.push(name);
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        write_page(dir, sub, written)?;
    }
    Ok(())
}
