//! `mtsum segment`.

use clap::Args;

use crate::cli::{GlobalArgs, Outcome};
use crate::{Error, Result};

#[derive(Debug, Args)]
pub struct SegmentArgs {}

pub fn execute(_args: SegmentArgs, _global: &GlobalArgs) -> Result<Outcome> {
    Err(Error::Usage("`mtsum segment` is not built yet".into()))
}
