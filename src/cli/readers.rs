//! `cardvault readers`

use super::{print_json, Ctx};
use crate::error::Result;

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(ctx: &Ctx, _a: Args) -> Result<()> {
    let (list, pcsc_note) = crate::reader::list_all(&ctx.opts);
    if ctx.json {
        print_json(&serde_json::json!({
            "readers": list,
            "pcsc_available": pcsc_note.is_none(),
            "pcsc_error": pcsc_note,
        }));
        return Ok(());
    }
    if let Some(note) = &pcsc_note {
        eprintln!("PC/SC: {note}");
    }
    if list.is_empty() {
        println!("no readers (use -r sim:NAME to create an embedded simulated card)");
    }
    for r in &list {
        let idx = r.index.map(|i| format!("{i}:")).unwrap_or_else(|| "-".into());
        let card = if r.card_present { "card present" } else { "no card" };
        println!("{idx:<3} {}  [{card}]", r.name);
        if let Some(atr) = &r.atr {
            println!("    ATR {atr}");
        }
    }
    Ok(())
}
