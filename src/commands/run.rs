//! `pgrepart run`: check the arguments into a [`RunConfig`] (a usage error exits 2 before any
//! connection), then hand it to the migration engine (`crate::migration`).

use crate::cli::RunArgs;
use crate::config::RunConfig;
use crate::error::Result;

pub async fn run(args: RunArgs) -> Result<()> {
    let cfg = RunConfig::from_args(&args)?;
    crate::migration::run(cfg).await
}
