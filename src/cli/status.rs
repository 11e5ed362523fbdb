//! `cardvault status`

use super::{print_json, Ctx};
use crate::card::CardClient;
use crate::error::Result;

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(ctx: &Ctx, _a: Args) -> Result<()> {
    let mut reader = ctx.open_reader()?;
    let name = reader.name().to_string();
    let atr = cardvault_proto::to_hex(reader.atr()).to_uppercase();
    let st = CardClient::open(reader.as_mut(), ctx.session())?.status()?;
    if ctx.json {
        let mut v = serde_json::to_value(&st).expect("status serializes");
        v["reader"] = name.into();
        v["atr"] = atr.into();
        print_json(&v);
        return Ok(());
    }
    println!("reader       {name}");
    println!("ATR          {atr}");
    println!("card number  {}", st.card_number);
    println!("role         {}", st.role);
    println!("applet       {}", st.applet_version);
    if st.pin_blocked {
        println!("PIN          BLOCKED (0 of {} tries left)", st.pin_max_tries);
    } else {
        println!("PIN          {} of {} tries left", st.pin_tries_left, st.pin_max_tries);
    }
    println!("memory       {} pages of {} bytes", st.page_count, st.page_size);
    println!(
        "APDUs        {}",
        if st.extended_length {
            "extended length"
        } else {
            "short only"
        }
    );
    Ok(())
}
