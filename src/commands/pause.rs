//! `pgrepart pause` / `pgrepart resume`: hold a running migration still (no copying, no applying;
//! the slot keeps the changes) and let it go on. The running `run` reads the flag every second.

use crate::cli::TableArgs;
use crate::error::{Error, Result};
use crate::state::{self, Phase};

pub async fn run(args: TableArgs, paused: bool) -> Result<()> {
    let dbs = super::Databases::from_args(&args.conn)?;
    let table = super::table_arg(&args.table)?;
    // The state lives in the target database.
    let client = dbs.connect_state("pgrepart pause").await?;
    let m = super::require_migration(&client, &table).await?;
    if m.phase == Phase::Done {
        return Err(Error::refused(format!(
            "migration {} of {table} has already cut over",
            m.id
        )));
    }
    state::set_paused(&client, m.id, paused).await?;
    if paused {
        println!(
            "migration {} paused: no copying or applying until `pgrepart resume`; the slot keeps the changes (watch WAL retained with `pgrepart status`)",
            m.id
        );
    } else {
        println!("migration {} resumed", m.id);
    }
    Ok(())
}
