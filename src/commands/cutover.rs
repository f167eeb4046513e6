//! `pgrepart cutover`: asks the running migration (manual mode) to cut over, then waits until the
//! swap is done. The swap itself is done by `run`, which holds the stream.

use std::time::Duration;

use crate::cli::TableArgs;
use crate::error::{Error, Result};
use crate::state::{self, Phase, Request};

pub async fn run(args: TableArgs) -> Result<()> {
    let dbs = super::Databases::from_args(&args.conn)?;
    let table = super::table_arg(&args.table)?;
    // The state is in the target database; the slot (whether a `run` is attached) on the source.
    let mut watch = super::Watch::open(&dbs, "pgrepart cutover", true).await?;
    let client = &watch.state;
    let m = super::require_migration(client, &table).await?;
    if m.phase == Phase::Done {
        println!("{table} was already cut over (migration {})", m.id);
        return Ok(());
    }
    state::request(client, m.id, Request::Cutover).await?;
    println!(
        "cutover requested for migration {}; waiting for `pgrepart run` to swap the tables",
        m.id
    );
    let mut last_phase = m.phase;
    let mut not_running_for = 0u32;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let polled = async {
            let m = state::get(&watch.state, m.id).await?;
            let source = watch.source.as_ref().expect("opened with the source");
            let active = state::run_attached(&watch.state, m.id).await?
                || crate::pg::catalog::slot_active(source, &m.slot_name).await?;
            Ok::<_, Error>((m, active))
        };
        let Some((m, active)) = watch.settle(polled.await).await? else {
            continue;
        };
        if m.phase != last_phase {
            println!("phase: {}", m.phase.as_str());
            last_phase = m.phase;
        }
        match m.phase {
            Phase::Done if dbs.cross => {
                println!(
                    "{}",
                    crate::cross_cutover::point_at_message(
                        &m.final_name(),
                        &dbs.target_description(),
                        &table.sibling(m.old_name.clone()),
                        &crate::pg::describe_target(&dbs.source),
                    )
                );
                return Ok(());
            }
            Phase::Done => {
                println!(
                    "{table} is now the partitioned table; the old one is {}",
                    table.sibling(m.old_name.clone())
                );
                return Ok(());
            }
            Phase::Failed => {
                return Err(Error::failed(format!(
                    "the migration failed: {}",
                    m.last_error
                        .as_deref()
                        .unwrap_or("see the output of `pgrepart run`")
                )));
            }
            _ => {}
        }
        not_running_for = if active { 0 } else { not_running_for + 1 };
        // About 10 s without a run: nobody is there to do the swap.
        if not_running_for >= 20 {
            return Err(Error::failed(format!("no `pgrepart run` is attached to migration {}", m.id))
                .with_hint("run the same `pgrepart run` command again: it resumes, and cuts over since it is requested"));
        }
    }
}
