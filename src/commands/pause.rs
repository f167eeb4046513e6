//! `pgrepart pause` / `pgrepart resume`: hold a running migration still (no copying, no applying;
//! the slot keeps the changes) and let it go on. The running `run` reads the flag every second.
//! During a rollback window they hold the reverse stream.

use crate::cli::TableArgs;
use crate::error::{Error, Result};
use crate::state::{self, Phase};

pub async fn run(args: TableArgs, paused: bool) -> Result<()> {
    let dbs = super::Databases::from_args(&args.conn)?;
    let table = super::table_arg(&args.table)?;
    // The state lives in the target database.
    let client = dbs.connect_state("pgrepart pause").await?;
    let m = super::require_migration(&client, &table).await?;
    let window = crate::rollback::window_pending(&m);
    if matches!(m.phase, Phase::Done | Phase::Reverted) && !window {
        return Err(Error::refused(format!(
            "migration {} of {table} has already {}: nothing to pause",
            m.id,
            if m.phase == Phase::Done {
                "cut over"
            } else {
                "been reverted"
            }
        )));
    }
    state::set_paused(&client, m.id, paused).await?;
    if paused && window {
        println!(
            "migration {}: the rollback window's reverse stream paused until `pgrepart resume`; the reverse slot keeps the changes (a `pgrepart revert` lets it drain first)",
            m.id
        );
    } else if paused {
        println!(
            "migration {} paused: no copying or applying until `pgrepart resume`; the slot keeps the changes (watch WAL retained with `pgrepart status`)",
            m.id
        );
    } else {
        println!("migration {} resumed", m.id);
    }
    Ok(())
}
