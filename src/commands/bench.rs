//! `mtsum bench`.

use clap::Args;

use crate::cli::{GlobalArgs, Outcome};
use crate::{Error, Result};

#[derive(Debug, Args)]
pub struct BenchArgs {}

pub fn execute(_args: BenchArgs, _global: &GlobalArgs) -> Result<Outcome> {
    Err(Error::Usage("`mtsum bench` is not built yet".into()))
}
