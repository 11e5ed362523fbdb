//! `cardvault duplicate --main R --backup R` (FIG. 15).

use super::{client, print_json, Ctx};
use crate::error::{Error, Result};
use crate::secret::{Secret, SecretSource};
use crate::workflow::duplicate::{self, DuplicateOptions};
use applet_sim::proto::{from_hex, to_hex};
use zeroize::Zeroizing;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Reader holding the main card.
    #[arg(long, value_name = "READER")]
    main: String,
    /// Reader holding the backup card.
    #[arg(long, value_name = "READER")]
    backup: String,
    /// PIN of the main card: prompt, env:VAR or file:PATH.
    #[arg(long, value_name = "SOURCE", default_value = "prompt")]
    pin: SecretSource,
    /// PIN of the backup card (default: asked separately).
    #[arg(long, value_name = "SOURCE", default_value = "prompt")]
    backup_pin: SecretSource,
    /// Key group elements 2..n as hex (32 bytes each, separated by spaces, commas or
    /// newlines) from prompt, env:VAR or file:PATH; or `generate` to make them here
    /// and show them once.
    #[arg(long, value_name = "SOURCE|generate", default_value = "prompt")]
    elements: String,
    /// Also give the backup card the encryption key (FIG. 26/27 variant).
    #[arg(long)]
    backup_gets_public_key: bool,
}

/// Parse key group elements: 32-byte hex values separated by whitespace or commas.
pub fn parse_elements(text: &[u8]) -> Result<Vec<Secret>> {
    let text = std::str::from_utf8(text).map_err(|_| Error::Usage("key group elements must be hex text".into()))?;
    text.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|t| !t.is_empty())
        .enumerate()
        .map(|(i, t)| {
            from_hex(t)
                .filter(|k| k.len() == 32)
                .map(Zeroizing::new)
                .ok_or_else(|| Error::Usage(format!("key group element {} is not 32 bytes of hex", i + 2)))
        })
        .collect()
}

pub fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let mut main_reader = ctx.open_named(&a.main)?;
    let mut backup_reader = ctx.open_named(&a.backup)?;
    let mut main = client(main_reader.as_mut(), ctx.trace)?;
    let mut backup = client(backup_reader.as_mut(), ctx.trace)?;
    let generate = a.elements == "generate";
    let elements = if generate {
        let n = main.key_state()?.group_size.saturating_sub(1);
        (0..n)
            .map(|_| Zeroizing::new(applet_sim::crypto::random::<32>().to_vec()))
            .collect()
    } else {
        let src: SecretSource = a.elements.parse().map_err(Error::Usage)?;
        parse_elements(&src.read_all("key group elements 2..n (hex)")?)?
    };
    let opts = DuplicateOptions {
        main_pin: a.pin.read("PIN of the main card")?,
        backup_pin: a.backup_pin.read("PIN of the backup card")?,
        elements,
        backup_gets_public_key: a.backup_gets_public_key,
    };
    let mut vault = ctx.vault()?;
    let report = duplicate::duplicate(&mut main, &mut backup, &opts, &mut vault)?;
    let shown: Vec<String> = if generate {
        opts.elements.iter().map(|e| to_hex(e)).collect()
    } else {
        vec![]
    };
    if ctx.json {
        let mut v = serde_json::to_value(&report).expect("serializable");
        if generate {
            v["generated_elements"] = shown.into();
        }
        print_json(&v);
    } else {
        println!("main card        {}", report.main_card);
        println!("backup card      {}", report.backup_card);
        println!("key group check  {}", report.check_value);
        println!(
            "main key         {}",
            if report.key_generated_now {
                "generated on the main card now"
            } else {
                "already on the main card"
            }
        );
        println!(
            "take-out         #{} imported on the backup card, receipt confirmed",
            report.take_out_counter
        );
        println!("end-to-end check ok: the backup card opens what is encrypted to the main card");
        if generate {
            println!(
                "\nkey group elements 2..{} (shown once; keep them to redo a duplicate):",
                shown.len() + 1
            );
            for (i, e) in shown.iter().enumerate() {
                println!("  element {}: {e}", i + 2);
            }
        }
    }
    Ok(())
}
