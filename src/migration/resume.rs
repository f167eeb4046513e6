//! Resuming a migration in progress: the same arguments, the run's lock, the identity of both
//! tables checked against the state, then the slot taken up at its confirmed position, finished
//! ranges kept and unfinished ones copied again on fresh snapshots (docs/design.md, resume).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::Live;
use super::lock::{runner_name, try_run_lock};
use super::setup::{Undo, key_columns};
use super::slot::{confirmed_flush, finish_cleanup, slot_gone, slot_lost, slot_row};
use crate::config::RunConfig;
use crate::copy::{self, ranges};
use crate::error::{Error, Result};
use crate::pg::catalog::{self, TableInfo};
use crate::pg::ident::QualifiedName;
use crate::state::{self, Migration, Phase};

pub async fn resume(
    cfg: &RunConfig,
    control: Client,
    source: Client,
    mut m: Migration,
) -> Result<Live> {
    let prep = &cfg.prep;
    if !super::spec_of(&m)?.same_request(&prep.spec()) {
        return Err(Error::refused(format!(
            "a different migration of {} is in progress (migration {}, phase {})",
            prep.table,
            m.id,
            m.phase.as_str()
        ))
        .with_hint("rerun it with its original arguments, or remove it with `pgrepart abort`"));
    }
    if !try_run_lock(&control, m.id).await? {
        return Err(Error::refused(format!(
            "migration {} of {} is already being run by another pgrepart process ({})",
            m.id,
            prep.table,
            m.runner.as_deref().unwrap_or("pid unknown")
        ))
        .with_hint("watch it with `pgrepart status`; stop it with Ctrl-C in its terminal, or `pgrepart abort`"));
    }
    state::set_runner(&control, m.id, Some(&runner_name())).await?;
    // Key ranges are recorded before the copy starts: without them the previous run died while
    // setting up the stream (creating the publication or the slot), and nothing was copied.
    if state::ranges(&control, m.id).await?.is_empty() {
        return restart_setup(cfg, control, source, m).await;
    }
    // The previous process is gone (we hold its lock); its walsender may take a moment to notice.
    let deadline = Instant::now() + Duration::from_secs(30);
    let start = loop {
        match slot_row(&source, &m.slot_name).await? {
            None => return Err(slot_gone(&m)),
            Some(slot) if slot.2.as_deref() == Some("lost") => return Err(slot_lost(&m)),
            Some((true, pid, _)) if Instant::now() > deadline => {
                return Err(Error::failed(format!(
                    "the replication slot {} is still in use by pid {}",
                    m.slot_name,
                    pid.unwrap_or_default()
                ))
                .with_hint("end that session (SELECT pg_terminate_backend(pid)), then run the same command again"));
            }
            Some((true, _, _)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Some((false, _, _)) => break confirmed_flush(&source, &m.slot_name).await?,
        }
    };
    // After a revert the slot is older than the revert's position, where the stream must start.
    let (start, applier_start) = crate::rollback::again::forward_start(start, m.forward_start);
    if let Some(at) = &m.reverted_at {
        tracing::info!(
            migration = m.id,
            reverted_at = %at,
            from = %start,
            "reverted: streaming to the partitioned table again; it is cut over again only by `pgrepart cutover`"
        );
    }
    let server = catalog::server_info(&source).await?;
    let info = source_table(&source, &m).await?;
    if m.target_committed_fence.is_some() {
        // A cross-database cutover committed in the target but not on the source: the new table
        // has its final name there. Stream into it and cut over again (cross_cutover.rs says why
        // this loses nothing).
        m.target = m.final_name();
        tracing::warn!(
            migration = m.id,
            fence = m.target_committed_fence.as_deref().unwrap_or_default(),
            "the last cutover committed in the target but not on the source: applying what the source received since, then renaming the source table"
        );
    }
    if let Some(problem) = identity_problem(&source, &control, &m, &info).await? {
        return Err(identity_refusal(&m, problem));
    }
    let key = key_columns(&info)?;
    if m.cutover_mode != cfg.cutover.as_str() {
        state::set_cutover_mode(&control, m.id, cfg.cutover.as_str()).await?;
        m.cutover_mode = cfg.cutover.as_str().to_string();
    }
    check_target_columns(&control, &info, &m.target).await?;
    let saved = state::ranges(&control, m.id).await?;
    let bounds: Vec<ranges::Bounds> = saved.iter().map(|r| r.bounds.clone()).collect();
    let router = super::router_for(&info, &key, &bounds);
    let done: Vec<bool> = saved.iter().map(|r| r.done).collect();
    let ranges_total = saved.len();
    let pending: Vec<copy::PendingRange> = saved
        .into_iter()
        .enumerate()
        .filter(|(_, r)| !r.done)
        .map(|(no, r)| copy::PendingRange {
            no,
            bounds: r.bounds,
            copied_to: r.copied_to,
        })
        .collect();
    // `streaming` only once the indexes are built; otherwise the copy phase finishes them.
    let phase = if pending.is_empty() && m.indexes_built {
        Phase::Streaming
    } else {
        Phase::Copying
    };
    if m.phase != phase {
        state::set_phase(&control, m.id, phase, m.last_error.as_deref()).await?;
        m.phase = phase;
    }
    tracing::info!(
        migration = m.id,
        ranges_left = pending.len(),
        ranges_total,
        "resuming: finished ranges are kept, unfinished ones are copied again (from their last piece)"
    );
    // Before the stream starts: its walsender would first decode what the slot kept, at full speed.
    let baseline = super::governor_baseline(cfg, &prep.source).await;
    let repl = crate::replication::ReplicationClient::connect(&prep.source, "pgrepart replication")
        .await
        .map_err(|e| Error::replication("opening the replication connection", e))?;
    // Fresh snapshots: anything they miss is still in the slot, and replays converge (docs/design.md).
    let sessions = if pending.is_empty() {
        Vec::new()
    } else {
        copy::open_sessions(&prep.source, prep.jobs.min(pending.len()), None).await?
    };
    let stream =
        crate::stream::start_stream(repl, &m.slot_name, &m.publication_name, start).await?;
    Ok(Live {
        control,
        source,
        server,
        info,
        migration: m,
        stream,
        router,
        done,
        pending,
        sessions,
        start: applier_start,
        baseline,
    })
}

/// The source table as it is now; gone is a refusal with the way out.
async fn source_table(source: &Client, m: &Migration) -> Result<TableInfo> {
    catalog::table_info(source, &m.source)
        .await?
        .ok_or_else(|| identity_refusal(m, format!("{} no longer exists on the source", m.source)))
}

fn identity_refusal(m: &Migration, problem: String) -> Error {
    Error::refused(format!(
        "migration {} cannot resume: {problem}",
        m.id
    ))
    .with_hint("the changes made since cannot be followed: run `pgrepart abort` (it removes the slot, the publication, the new table and the state), then `pgrepart run` again")
}

/// What makes the migration's tables no longer the ones it started on, if anything: the source
/// table dropped and recreated (another OID), no longer in the publication (its changes are not
/// streamed), or the new table replaced (under its final name once a cross-database cutover
/// committed in the target). Used by resume and by `status`.
pub async fn identity_problem(
    source: &Client,
    control: &Client,
    m: &Migration,
    info: &TableInfo,
) -> Result<Option<String>> {
    if let Some(oid) = m.source_oid
        && info.oid != oid
    {
        return Ok(Some(format!(
            "{} was dropped and created again since the migration started (OID {oid}, now {})",
            m.source, info.oid
        )));
    }
    let row = source
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_publication p WHERE p.pubname = $1), \
                    EXISTS (SELECT 1 FROM pg_publication p JOIN pg_publication_rel r ON r.prpubid = p.oid \
                            WHERE p.pubname = $1 AND r.prrelid = $2)",
            &[&m.publication_name, &info.oid],
        )
        .await
        .map_err(|e| Error::db("reading the publication", e))?;
    let (publication, member): (bool, bool) = (row.get(0), row.get(1));
    if !publication {
        return Ok(Some(format!(
            "its publication {} is gone",
            m.publication_name
        )));
    }
    if !member {
        return Ok(Some(format!(
            "{} is no longer in the publication {} (its changes are not streamed)",
            m.source, m.publication_name
        )));
    }
    let new_table = if m.target_committed_fence.is_some() {
        m.final_name()
    } else {
        m.target.clone()
    };
    match catalog::relation_oid(control, &new_table).await? {
        None => Ok(Some(format!("the new table {new_table} is gone"))),
        Some(now) if m.target_oid.is_some_and(|oid| oid != now) => Ok(Some(format!(
            "the new table {new_table} was replaced since the migration started"
        ))),
        Some(_) => Ok(None),
    }
}

/// Resumes a migration whose previous run died before its key ranges were recorded: the new
/// table and the state row stand (the table is empty), the publication and slot may or may not.
/// They are dropped and made again, with a fresh snapshot for the copy.
async fn restart_setup(
    cfg: &RunConfig,
    control: Client,
    source: Client,
    m: Migration,
) -> Result<Live> {
    tracing::info!(
        migration = m.id,
        "resuming: the previous run stopped while setting up the stream; setting it up again"
    );
    finish_cleanup(&source, &m).await?;
    let server = catalog::server_info(&source).await?;
    let info = source_table(&source, &m).await?;
    if let Some(oid) = m.source_oid
        && info.oid != oid
    {
        return Err(identity_refusal(
            &m,
            format!(
                "{} was dropped and created again since the migration started",
                m.source
            ),
        ));
    }
    check_target_columns(&control, &info, &m.target).await?;
    let key = key_columns(&info)?;
    let baseline = super::governor_baseline(cfg, &cfg.prep.source).await;
    // On failure only the publication and slot made here go; the state and new table stay for
    // the next run (or `abort`).
    let undo = Mutex::new(Undo::default());
    let set_up =
        super::setup::setup_stream(cfg, control, source, server, info, &key, m, baseline, &undo)
            .await;
    if set_up.is_err() {
        undo.into_inner().expect("undo lock").run(&cfg.prep).await;
    }
    set_up
}

/// On resume: the source's columns must still be the target's (a change while no run was attached
/// would otherwise be applied to a table that lacks it).
async fn check_target_columns(
    control: &Client,
    source: &TableInfo,
    target: &QualifiedName,
) -> Result<()> {
    let Some(t) = catalog::table_info(control, target).await? else {
        return Err(Error::failed(format!("the new table {target} is gone"))
            .with_hint("run `pgrepart abort`, then start again"));
    };
    let replicated = source.replicated_columns();
    let differ: Vec<String> = replicated
        .iter()
        .filter(|c| t.column(&c.name).is_none_or(|tc| tc.type_sql != c.type_sql))
        .map(|c| format!("{} {}", c.name, c.type_sql))
        .collect();
    if differ.is_empty() {
        return Ok(());
    }
    // Columns added on the source while no run followed the stream (it stopped between the
    // source's ADD COLUMN and ours): added here as the applier would have (see apply::schema).
    let missing: Vec<&catalog::ColumnInfo> = replicated
        .iter()
        .copied()
        .filter(|c| t.column(&c.name).is_none())
        .collect();
    if missing.len() == differ.len()
        && let Ok(clauses) = missing
            .iter()
            .map(|c| crate::apply::schema::add_column_clause(c))
            .collect::<std::result::Result<Vec<_>, _>>()
    {
        control
            .batch_execute(&format!(
                "ALTER TABLE {} {}",
                target.sql(),
                clauses.join(", ")
            ))
            .await
            .map_err(|e| Error::db("adding the source's new columns to the new table", e))?;
        tracing::info!(columns = %missing.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", "), "columns added on the source; added them to the new table");
        return Ok(());
    }
    Err(Error::failed(format!(
        "the definition of {} changed on the source during the migration: the new table {target} lacks {}",
        source.name,
        differ.join(", ")
    ))
    .with_hint("undo the schema change, or run `pgrepart abort` and start again"))
}
