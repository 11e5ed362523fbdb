//! `cardvault bench`: measured figures and ratios (see BENCHMARKS.md).

use super::Ctx;
use crate::error::{Error, Result};

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_ctx: &Ctx, _a: Args) -> Result<()> {
    Err(Error::Usage("bench is not available in this build".into()))
}
