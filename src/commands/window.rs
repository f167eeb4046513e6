//! `pgrepart revert` and `pgrepart finish`: ask the `run` serving a migration's rollback window
//! to swap back, or to end the window, then wait until it has. Both are done by `run`, which
//! holds the reverse stream (see `crate::rollback`).

use std::time::Duration;

use crate::cli::{RevertArgs, TableArgs};
use crate::error::{Error, Result};
use crate::state::{self, Migration, Phase, Request};

/// The migration of `table` with an open rollback window, or why there is none.
fn require_open_window(m: &Migration, table: &crate::pg::ident::QualifiedName) -> Result<()> {
    if m.phase == Phase::Reverted {
        return Err(Error::refused(format!(
            "migration {} of {table} was already reverted",
            m.id
        ))
        .with_hint(format!(
            "the partitioned table is kept as {}; `pgrepart abort` removes it",
            m.target
        )));
    }
    if m.phase != Phase::Done && m.reverted_at.is_some() {
        return Err(Error::refused(format!(
            "migration {} of {table} was already reverted (at {}): it streams to the partitioned table again ({})",
            m.id,
            m.reverted_at.as_deref().unwrap_or_default(),
            m.phase.as_str()
        ))
        .with_hint("`pgrepart cutover` cuts over again, `pgrepart abort` drops the partitioned table"));
    }
    if m.phase != Phase::Done {
        return Err(Error::refused(format!(
            "migration {} of {table} has not cut over yet ({}): there is no rollback window",
            m.id,
            m.phase.as_str()
        ))
        .with_hint("`pgrepart abort` stops a migration before its cutover"));
    }
    if !m.window.is_open() {
        return Err(Error::refused(format!(
            "migration {} of {table} has no open rollback window ({})",
            m.id,
            if m.window.state.is_some() {
                "it has ended"
            } else {
                "it was cut over without --rollback-window"
            }
        ))
        .with_hint(
            "the old table no longer follows the new one; nothing can be swapped back exactly",
        ));
    }
    Ok(())
}

/// Waits for the `run` to act: `done` says when it has, `refused` when it refused.
/// A session lost while waiting is opened again (see [`super::Watch`]).
async fn wait_for_run(
    watch: &mut super::Watch<'_>,
    id: i64,
    done: impl Fn(&Migration) -> bool,
    refused: impl Fn(&Migration) -> Option<String>,
) -> Result<Migration> {
    let mut not_running_for = 0u32;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let polled = async {
            let m = state::get(&watch.state, id).await?;
            let attached = state::run_attached(&watch.state, id).await?;
            Ok::<_, Error>((m, attached))
        };
        let Some((m, attached)) = watch.settle(polled.await).await? else {
            continue;
        };
        if done(&m) {
            return Ok(m);
        }
        if let Some(why) = refused(&m) {
            return Err(Error::refused(why));
        }
        not_running_for = if attached { 0 } else { not_running_for + 1 };
        // About 10 s without a run: nobody serves the window.
        if not_running_for >= 20 {
            return Err(Error::failed(format!(
                "no `pgrepart run` serves the rollback window of migration {id}"
            ))
            .with_hint("run the same `pgrepart run` command again: it resumes the window and acts on the request"));
        }
    }
}

pub async fn revert(args: RevertArgs) -> Result<()> {
    let dbs = super::Databases::from_args(&args.conn)?;
    let table = super::table_arg(&args.table)?;
    let mut watch = super::Watch::open(&dbs, "pgrepart revert", false).await?;
    let client = &watch.state;
    let m = super::require_migration(client, &table).await?;
    require_open_window(&m, &table)?;
    client
        .execute(
            "UPDATE pgrepart.migrations SET last_error = NULL WHERE id = $1",
            &[&m.id],
        )
        .await
        .map_err(|e| Error::db("recording the revert request", e))?;
    let what = if args.force {
        Request::RevertForce
    } else {
        Request::Revert
    };
    state::request(client, m.id, what).await?;
    println!(
        "revert requested for migration {}; waiting for `pgrepart run` to swap back",
        m.id
    );
    // The revert's transaction takes the phase from `done` (to `streaming`: the partitioned
    // table follows the original one again; `reverted` by an older pgrepart).
    wait_for_run(
        &mut watch,
        m.id,
        |m| m.phase != Phase::Done,
        |m| {
            (!m.window.revert_requested)
                .then(|| {
                    m.last_error
                        .clone()
                        .unwrap_or_else(|| "the revert was withdrawn".into())
                })
                .filter(|_| m.phase == Phase::Done)
        },
    )
    .await?;
    println!(
        "{table} is the original table again; the partitioned table is kept as {} and follows it again: `pgrepart cutover` cuts over again, `pgrepart abort` drops it",
        m.target
    );
    if dbs.cross {
        println!(
            "{}",
            crate::rollback::cross::point_back_message(
                &m.source,
                &crate::pg::describe_target(&dbs.source),
                &m.target,
                &dbs.target_description(),
            )
        );
    }
    Ok(())
}

pub async fn finish(args: TableArgs) -> Result<()> {
    let dbs = super::Databases::from_args(&args.conn)?;
    let table = super::table_arg(&args.table)?;
    let mut watch = super::Watch::open(&dbs, "pgrepart finish", false).await?;
    let client = &watch.state;
    let m = super::require_migration(client, &table).await?;
    require_open_window(&m, &table)?;
    state::request(client, m.id, Request::Finish).await?;
    println!(
        "finish requested for migration {}; waiting for `pgrepart run` to end the rollback window",
        m.id
    );
    wait_for_run(&mut watch, m.id, |m| !m.window.is_open(), |_| None).await?;
    println!(
        "the rollback window of {table} is closed; the old table {} no longer follows it",
        table.sibling(m.old_name.clone())
    );
    Ok(())
}
