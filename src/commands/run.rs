//! `pgrepart run`: start a migration (or resume the one in progress) and drive it to the swap.
//!
//! ```text
//! new:    preflight ─► BEGIN; create target + state; COMMIT ─► publication ─► slot (exported snapshot)
//!         ─► copy sessions import it ─► plan key ranges ─► START_REPLICATION at the slot's point
//! resume: slot still there ─► unfinished ranges re-copied on fresh snapshots ─► START_REPLICATION
//! then:   copy ∥ stream ─► secondary indexes ─► streaming ─► lag gate ─► cutover ─► drop slot, publication
//! ```
//! A failure before the slot exists removes everything created; after it, state and slot are kept
//! and the same command resumes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_postgres::{Client, Config};

use super::{Prepared, StoredSpec};
use crate::apply::sql::Shape;
use crate::apply::{Applier, ApplierConfig, ApplierHandles, Router};
use crate::cli::{CutoverMode, RunArgs};
use crate::copy::indexes::KeyTiming;
use crate::copy::{self, CopyJob, CopyProgress, ranges};
use crate::cross_cutover::{self, CrossAttempt, CrossPlan};
use crate::cutover::{self, Attempt, Outcome, SwapPlan};
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::monitor::{self, Rate, Snapshot};
use crate::pg::catalog::{self, ServerInfo, TableInfo};
use crate::pg::ddl;
use crate::pg::ident::{QualifiedName, quote_ident};
use crate::preflight::{self, Status, Target};
use crate::replication::{ReplicationClient, ReplicationStream};
use crate::state::{self, Migration, NewMigration, Phase};

pub(crate) const INT_TYPES: [u32; 3] = [20, 21, 23];

/// How many times in a row a migration that is streaming reconnects after a transient failure
/// (a dropped connection, a restarted server) before it gives up.
const MAX_RECONNECTS: u32 = 20;

pub async fn run(args: RunArgs) -> Result<()> {
    let prep = Prepared::from_args(&args)?;
    let mut backoff = Duration::from_secs(1);
    let mut reconnects = 0;
    loop {
        let mut streaming = false;
        match run_once(&prep, &args, &mut streaming).await {
            // Once the migration exists, a lost connection is retried: the slot keeps its place.
            Err(e) if e.is_transient() && streaming && reconnects < MAX_RECONNECTS => {
                reconnects += 1;
                tracing::warn!(
                    error = %e,
                    attempt = reconnects,
                    retry_in_s = backoff.as_secs(),
                    "connection lost; reconnecting and resuming from the slot's confirmed position"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            other => return other,
        }
    }
}

async fn run_once(prep: &Prepared, args: &RunArgs, streaming: &mut bool) -> Result<()> {
    // `control` holds the state and the run's lock (the target database); `source` is the
    // source's control connection (the same database unless `--target` names another).
    let source = crate::pg::connect(&prep.source, "pgrepart").await?;
    let control = prep.dbs.connect_state("pgrepart").await?;
    let live = match state::latest(&control, &prep.table).await? {
        Some(m)
            if m.phase != Phase::Done
                && m.target_committed_fence.is_some()
                && cross_cutover::source_renamed(&source, &m.source, &m.old_name).await? =>
        {
            // Both sides committed; the process stopped before recording it.
            state::set_phase(&control, m.id, Phase::Done, None).await?;
            finish_cleanup(&source, &m).await?;
            let mut control = control;
            for line in crate::dependents::post_swap::finish(
                &mut control,
                m.id,
                Duration::from_millis(args.lock_timeout_ms),
            )
            .await
            {
                println!("{line}");
            }
            println!(
                "{} was moved (migration {}); the cutover had committed on both sides, recorded now",
                prep.table, m.id
            );
            print_point_at(prep, &m);
            return Ok(());
        }
        Some(m) if m.phase != Phase::Done => {
            *streaming = true;
            resume(prep, args, control, source, m).await?
        }
        Some(m) if spec_of(&m)?.same_request(&prep.spec()) => {
            finish_cleanup(&source, &m).await?;
            let mut control = control;
            for line in crate::dependents::post_swap::finish(
                &mut control,
                m.id,
                Duration::from_millis(args.lock_timeout_ms),
            )
            .await
            {
                println!("{line}");
            }
            if m.pending_matviews.is_empty() {
                println!(
                    "{} was already migrated (migration {}); nothing left to do",
                    prep.table, m.id
                );
            } else {
                // The run that swapped stopped before rebuilding these over the new table.
                println!(
                    "{} was already migrated (migration {}); rebuilding the materialized views left to do",
                    prep.table, m.id
                );
                let lock_timeout = Duration::from_millis(args.lock_timeout_ms);
                for line in
                    cutover::rebuild_matviews(&mut control, m.id, &m.pending_matviews, lock_timeout)
                        .await
                {
                    println!("{line}");
                }
            }
            // A run stopped between the swap and its cleanup may not have dropped the old table.
            let old = prep.table.sibling(m.old_name.clone());
            if args.drop_old && crate::pg::catalog::relation_exists(&source, &old).await? {
                cutover::drop_old(&source, &old).await?;
            }
            return Ok(());
        }
        _ => start_new(prep, args, control, source).await?,
    };
    *streaming = true;
    live.drive(args).await
}

/// Cross-database: says exactly where the application must now go (never a password).
fn print_point_at(prep: &Prepared, m: &Migration) {
    if !prep.cross_db() {
        return;
    }
    println!(
        "{}",
        cross_cutover::point_at_message(
            &m.final_name(),
            &prep.dbs.target_description(),
            &m.source.sibling(m.old_name.clone()),
            &crate::pg::describe_target(&prep.source),
        )
    );
}

fn spec_of(m: &Migration) -> Result<StoredSpec> {
    serde_json::from_value(m.spec.clone())
        .map_err(|e| Error::failed(format!("unreadable spec in pgrepart.migrations: {e}")))
}

/// A migration with its slot in place, ready to stream.
struct Live {
    prep: Prepared,
    /// The state's connection (target database).
    control: Client,
    /// The source's control connection (slot, lag, the cross-database cutover's lock).
    source: Client,
    server: ServerInfo,
    info: TableInfo,
    migration: Migration,
    stream: ReplicationStream,
    router: Router,
    done: Vec<bool>,
    /// Ranges to copy, lowest first (workers take from the end: highest keys first).
    pending: Vec<(usize, ranges::KeyRange)>,
    sessions: Vec<Client>,
    start: Lsn,
    /// The load governor's baseline, taken before the migration weighed on the source (none
    /// with `--max-impact 0`, or when it could not be measured).
    baseline: Option<copy::governor::Baseline>,
}

/// Objects created by a new migration, removed again if its setup fails.
#[derive(Default)]
struct Undo {
    migration_id: Option<i64>,
    target: Option<QualifiedName>,
    publication: Option<String>,
    slot: Option<String>,
}

impl Undo {
    /// `source` holds the slot and publication, `control` the new table and the state.
    async fn run(self, control: &Client, source: &Client) {
        if let Some(slot) = &self.slot
            && let Err(e) = drop_slot(source, slot).await
        {
            tracing::warn!(slot = %slot, error = %e, "could not drop the replication slot while cleaning up");
        }
        if let Some(p) = &self.publication {
            let _ = source
                .batch_execute(&format!("DROP PUBLICATION IF EXISTS {}", quote_ident(p)))
                .await;
        }
        if let Some(t) = &self.target {
            let _ = control
                .batch_execute(&format!("DROP TABLE IF EXISTS {} CASCADE", t.sql()))
                .await;
        }
        if let Some(id) = self.migration_id {
            let _ = state::delete(control, id).await;
        }
    }
}

fn key_columns(info: &TableInfo) -> Result<Vec<String>> {
    info.key_index().map(|k| k.columns.clone()).ok_or_else(|| {
        Error::refused(format!(
            "{} has no primary key or replica identity index",
            info.name
        ))
    })
}

async fn start_new(
    prep: &Prepared,
    args: &RunArgs,
    mut control: Client,
    source: Client,
) -> Result<Live> {
    // Generated partitions are computed once, here, and stored in the migration's spec.
    let prep = &prep.with_generated_partitions(&source).await?;
    let mut facts = preflight::gather(&source, &prep.table, &prep.target, &prep.old_name).await?;
    let cross_checks = if prep.cross_db() {
        preflight::gather_cross(
            &mut facts,
            &source,
            &control,
            &prep.table,
            &prep.target,
            &prep.old_name,
        )
        .await?
    } else {
        Vec::new()
    };
    facts.inbound_fks = preflight::InboundFkPolicy {
        drop: args.drop_inbound_fks,
        cross_db: prep.cross_db(),
    };
    let mut checks = preflight::evaluate(&facts, &prep.table, &prep.target);
    checks.extend(cross_checks);
    for c in checks.iter().filter(|c| c.status == Status::Warn) {
        tracing::warn!(check = c.name, "{}", c.detail);
    }
    preflight::refuse_on_failure(&checks)?;
    // Before the slot exists, so without the cost of its decoding.
    let baseline = governor_baseline(args, &prep.source).await;
    let info = facts
        .table
        .clone()
        .expect("preflight passed, so the table exists");
    let server = facts.server.clone();
    let key = key_columns(&info)?;

    // The target table and the state row commit together: either both exist or neither.
    let migration = {
        let tx = control
            .transaction()
            .await
            .map_err(|e| Error::db("starting setup", e))?;
        state::ensure_schema(&tx).await?;
        let mut created_partitions = Vec::new();
        if let Target::Generate {
            name,
            by,
            partitions,
        } = &prep.target
        {
            let shape = if prep.cross_db() {
                without_sequence_defaults(&info)
            } else {
                info.clone()
            };
            let clause = key_clause(args.primary_key, baseline.as_ref(), &prep.source).await?;
            let create = ddl::create_partitioned_table(&shape, name, by, &key, clause);
            tx.batch_execute(&create)
                .await
                .map_err(|e| Error::db(format!("creating {name}"), e))?;
            for p in partitions {
                tx.batch_execute(&ddl::create_partition(name, p, &info.storage_options))
                    .await
                    .map_err(|e| Error::db(format!("creating partition {}", p.name), e))?;
                created_partitions.push(name.sibling(p.name.clone()).sql());
            }
            for s in ddl::replica_identity_statements(&info, name, partitions) {
                tx.batch_execute(&s)
                    .await
                    .map_err(|e| Error::db(format!("setting the replica identity of {name}"), e))?;
            }
            if !partitions.iter().any(|p| p.is_default()) {
                let source_rows = prep.cross_db().then_some(&source);
                check_rows_fit(&tx, source_rows, &info.name, name, by).await?;
            }
        }
        let m = state::insert(
            &tx,
            NewMigration {
                source: &prep.table,
                target: prep.target.name(),
                old_name: &prep.old_name,
                target_created: matches!(prep.target, Target::Generate { .. }),
                created_partitions,
                spec: serde_json::to_value(prep.spec()).expect("spec serializes"),
                cutover_mode: args.cutover.as_str(),
                rows_estimate: info.estimated_rows,
                total_bytes_estimate: info.total_bytes,
                source_db_oid: server.database_oid,
            },
        )
        .await?;
        tx.commit()
            .await
            .map_err(|e| Error::db("committing setup", e))?;
        m
    };
    tracing::info!(migration = migration.id, target = %migration.target, "target table and state created");
    try_run_lock(&control, migration.id).await?;
    state::set_runner(&control, migration.id, Some(&runner_name())).await?;

    let mut undo = Undo {
        migration_id: Some(migration.id),
        target: migration.target_created.then(|| migration.target.clone()),
        ..Default::default()
    };
    match setup_stream(
        prep, &control, &source, &server, &info, &key, migration, &mut undo,
    )
    .await
    {
        Ok((migration, stream, router, pending, sessions, start)) => {
            let done = vec![false; router.len()];
            Ok(Live {
                prep: prep.clone(),
                control,
                source,
                server,
                info,
                migration,
                stream,
                router,
                done,
                pending,
                sessions,
                start,
                baseline,
            })
        }
        Err(e) => {
            tracing::warn!("setup failed; removing what was created");
            undo.run(&control, &source).await;
            Err(e)
        }
    }
}

type StreamSetup = (
    Migration,
    ReplicationStream,
    Router,
    Vec<(usize, ranges::KeyRange)>,
    Vec<Client>,
    Lsn,
);

#[allow(clippy::too_many_arguments)]
async fn setup_stream(
    prep: &Prepared,
    control: &Client,
    source: &Client,
    server: &ServerInfo,
    info: &TableInfo,
    key: &[String],
    migration: Migration,
    undo: &mut Undo,
) -> Result<StreamSetup> {
    let publication = migration.publication_name.clone();
    source
        .batch_execute(&format!(
            "CREATE PUBLICATION {} FOR TABLE {}{}",
            quote_ident(&publication),
            prep.table.sql(),
            // An already partitioned source: its partitions' changes arrive under its own name
            // and OID, which is what the applier matches.
            if info.relkind == 'p' {
                " WITH (publish_via_partition_root = true)"
            } else {
                ""
            }
        ))
        .await
        .map_err(|e| Error::db("creating the publication", e))?;
    undo.publication = Some(publication.clone());
    crate::fault::point("setup-publication-created");

    let mut repl = ReplicationClient::connect(&prep.source, "pgrepart")
        .await
        .map_err(|e| Error::replication("opening the replication connection", e))?;
    let slot = create_slot_reporting_waits(&mut repl, source, &migration.slot_name).await?;
    undo.slot = Some(slot.slot_name.clone());
    crate::fault::point("setup-slot-created");
    tracing::info!(slot = %slot.slot_name, consistent_point = %slot.consistent_point, "replication slot created");

    // The snapshot lives until the next command on the replication connection: import it first.
    let sessions = copy::open_sessions(&prep.source, prep.jobs, Some(&slot.snapshot_name)).await?;
    let first_key = info.column(&key[0]).expect("key column exists");
    let router = if INT_TYPES.contains(&first_key.type_oid) {
        let bounds = copy::key_bounds(&sessions[0], &prep.table, &key[0]).await?;
        let count = ranges::range_count(info.estimated_rows, info.total_bytes, prep.jobs);
        Router::Int(ranges::plan_ranges(bounds, count))
    } else {
        Router::Single
    };
    let planned = match &router {
        Router::Int(r) => r.clone(),
        Router::Single => vec![ranges::KeyRange::ALL],
    };
    state::insert_ranges(control, migration.id, &planned).await?;
    crate::fault::point("setup-ranges-recorded");
    let stream =
        crate::stream::start_stream(repl, &slot.slot_name, &publication, slot.consistent_point)
            .await?;
    let _ = server;
    let pending = planned.into_iter().enumerate().collect();
    Ok((
        migration,
        stream,
        router,
        pending,
        sessions,
        slot.consistent_point,
    ))
}

/// Creates the slot; while the server waits for running transactions to finish, says which.
async fn create_slot_reporting_waits(
    repl: &mut ReplicationClient,
    control: &Client,
    slot: &str,
) -> Result<crate::replication::CreatedSlot> {
    let create = repl.create_logical_slot_exported(slot);
    tokio::pin!(create);
    let started = Instant::now();
    let mut every = tokio::time::interval(Duration::from_secs(5));
    every.tick().await;
    loop {
        tokio::select! {
            created = &mut create => {
                return created.map_err(|e| Error::replication("creating the replication slot", e));
            }
            _ = every.tick() => {
                let waiting = catalog::open_transactions(control).await.unwrap_or_default();
                for t in waiting {
                    tracing::warn!(
                        pid = t.pid,
                        application = %t.application,
                        transaction_open_s = t.open_s,
                        query_started_s_ago = t.query_s,
                        state = %t.state,
                        waited_s = started.elapsed().as_secs(),
                        "slot creation is waiting for this transaction to finish"
                    );
                }
            }
        }
    }
}

/// Cross-database: the new table is created without the defaults that call the source's own
/// sequences (`nextval('t_id_seq')`), which do not exist in the target; the cutover creates the
/// sequence there and sets the default (cross_cutover::target_statements).
fn without_sequence_defaults(info: &TableInfo) -> TableInfo {
    let mut out = info.clone();
    for c in &mut out.columns {
        if info
            .sequences
            .iter()
            .any(|s| s.dependency == 'a' && s.column == c.name)
        {
            c.default = None;
        }
    }
    out
}

/// Refuses when existing rows fall in no partition, naming up to five of their key values.
async fn check_rows_fit(
    tx: &tokio_postgres::Transaction<'_>,
    source_db: Option<&Client>,
    source: &QualifiedName,
    target: &QualifiedName,
    by: &crate::spec::PartitionBy,
) -> Result<()> {
    let fits = catalog::partition_fit_predicate(tx, target).await?;
    let cols: Vec<String> = by.columns.iter().map(|c| quote_ident(c)).collect();
    let shown = if cols.len() == 1 {
        format!("{}::text", cols[0])
    } else {
        format!("ROW({})::text", cols.join(", "))
    };
    let sql = format!(
        "SELECT DISTINCT {shown} FROM {} WHERE NOT coalesce({fits}, false) LIMIT 5",
        source.sql()
    );
    // Cross-database the bounds are read in the target and the rows on the source.
    let rows = match source_db {
        Some(db) => db.query(&sql, &[]).await,
        None => tx.query(&sql, &[]).await,
    }
    .map_err(|e| Error::db("checking that every row fits a partition", e))?;
    if rows.is_empty() {
        return Ok(());
    }
    let values: Vec<String> = rows
        .iter()
        .map(|r| {
            r.get::<_, Option<String>>(0)
                .unwrap_or_else(|| "NULL".into())
        })
        .collect();
    Err(Error::refused(format!(
        "existing rows of {source} fit no partition: {} = {}",
        by.columns.join(", "),
        values.join(", ")
    ))
    .with_hint("add a partition for these values (--partition NAME=FOR VALUES ...) or a default one (--partition NAME=DEFAULT)"))
}

fn slot_gone(m: &Migration) -> Error {
    Error::failed(format!(
        "the replication slot {} of migration {} is gone",
        m.slot_name, m.id
    ))
    .with_hint(
        "the changes since the copy cannot be recovered: run `pgrepart abort`, then start again",
    )
}

fn slot_lost(m: &Migration) -> Error {
    Error::failed(format!(
        "the replication slot {} was invalidated (max_slot_wal_keep_size exceeded)",
        m.slot_name
    ))
    .with_hint("run `pgrepart abort`, then start again (consider raising max_slot_wal_keep_size)")
}

async fn slot_row(
    control: &Client,
    slot: &str,
) -> Result<Option<(bool, Option<i32>, Option<String>)>> {
    let row = control
        .query_opt(
            "SELECT active, active_pid, wal_status FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| Error::db("reading the replication slot", e))?;
    Ok(row.map(|r| (r.get(0), r.get(1), r.get(2))))
}

async fn resume(
    prep: &Prepared,
    args: &RunArgs,
    control: Client,
    source: Client,
    mut m: Migration,
) -> Result<Live> {
    if !spec_of(&m)?.same_request(&prep.spec()) {
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
        return restart_setup(prep, args, control, source, m).await;
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
    let server = catalog::server_info(&source).await?;
    let info = catalog::table_info(&source, &prep.table)
        .await?
        .ok_or_else(|| Error::failed(format!("{} no longer exists on the source", prep.table)))?;
    let key = key_columns(&info)?;
    if m.cutover_mode != args.cutover.as_str() {
        state::set_cutover_mode(&control, m.id, args.cutover.as_str()).await?;
        m.cutover_mode = args.cutover.as_str().to_string();
    }
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
    check_target_columns(&control, &info, &m.target).await?;
    let saved = state::ranges(&control, m.id).await?;
    let first_key = info.column(&key[0]).expect("key column exists");
    let router = if saved.len() > 1 || (INT_TYPES.contains(&first_key.type_oid) && saved.len() == 1)
    {
        Router::Int(saved.iter().map(|(r, _)| *r).collect())
    } else {
        Router::Single
    };
    let done: Vec<bool> = saved.iter().map(|(_, d)| *d).collect();
    let pending: Vec<(usize, ranges::KeyRange)> = saved
        .iter()
        .enumerate()
        .filter(|(_, (_, d))| !d)
        .map(|(i, (r, _))| (i, *r))
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
        ranges_total = saved.len(),
        "resuming: finished ranges are kept, unfinished ones are copied again"
    );
    // Before the stream starts: its walsender would first decode what the slot kept, at full speed.
    let baseline = governor_baseline(args, &prep.source).await;
    let repl = ReplicationClient::connect(&prep.source, "pgrepart")
        .await
        .map_err(|e| Error::replication("opening the replication connection", e))?;
    // Fresh snapshots: anything they miss is still in the slot, and replays converge (design.md §5).
    let sessions = if pending.is_empty() {
        Vec::new()
    } else {
        copy::open_sessions(&prep.source, prep.jobs.min(pending.len()), None).await?
    };
    let stream =
        crate::stream::start_stream(repl, &m.slot_name, &m.publication_name, start).await?;
    Ok(Live {
        prep: prep.clone(),
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
        start: Lsn::ZERO,
        baseline,
    })
}

/// `--primary-key` for a new table: `auto` looks whether the source server runs write
/// transactions of its own (a tenth of a second: the governor's baseline began with it); if
/// none, nothing would wait for the key.
async fn key_clause(
    timing: KeyTiming,
    baseline: Option<&copy::governor::Baseline>,
    source: &Config,
) -> Result<ddl::KeyClause> {
    let quiet = match (timing, baseline) {
        (KeyTiming::Auto, Some(b)) => b.quiet(),
        (KeyTiming::Auto, None) => copy::governor::source_is_quiet(source).await?,
        _ => false,
    };
    let after = timing.after_copy(quiet);
    tracing::info!(
        after_copy = after,
        "{}",
        match (timing, after) {
            (KeyTiming::Auto, true) =>
                "the source server runs no writes of its own: the primary key is built after the copy, with the other indexes",
            (KeyTiming::Auto, false) =>
                "the source server runs writes: the primary key comes first, so changes apply while the copy runs",
            (_, true) => "the primary key is built after the copy, with the other indexes",
            (_, false) => "the primary key comes first, so changes apply while the copy runs",
        }
    );
    Ok(if after {
        ddl::KeyClause::Later
    } else {
        ddl::KeyClause::Declared
    })
}

/// Resumes a migration whose previous run died before its key ranges were recorded: the new
/// table and the state row stand (the table is empty), the publication and slot may or may not.
/// They are dropped and made again, with a fresh snapshot for the copy.
async fn restart_setup(
    prep: &Prepared,
    args: &RunArgs,
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
    let info = catalog::table_info(&source, &prep.table)
        .await?
        .ok_or_else(|| Error::failed(format!("{} no longer exists on the source", prep.table)))?;
    check_target_columns(&control, &info, &m.target).await?;
    let key = key_columns(&info)?;
    let baseline = governor_baseline(args, &prep.source).await;
    // On failure only the publication and slot made here go; the state and new table stay for
    // the next run (or `abort`).
    let mut undo = Undo::default();
    match setup_stream(prep, &control, &source, &server, &info, &key, m, &mut undo).await {
        Ok((migration, stream, router, pending, sessions, start)) => Ok(Live {
            prep: prep.clone(),
            control,
            source,
            server,
            info,
            migration,
            done: vec![false; router.len()],
            stream,
            router,
            pending,
            sessions,
            start,
            baseline,
        }),
        Err(e) => {
            undo.run(&control, &source).await;
            Err(e)
        }
    }
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

/// "pid 1234 on dbhost": who runs a migration, for the refusal of a second run.
fn runner_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "this host".into());
    format!("pid {} on {host}", std::process::id())
}

/// A session-level advisory lock per migration: held by the `run` process working on it, released
/// by the server when that process's connection ends, however it ends.
async fn try_run_lock(control: &Client, migration_id: i64) -> Result<bool> {
    // A previous process of ours may have just lost its connection: the server frees its lock
    // when it notices, so look a few times before concluding that another run holds it.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let row = control
            .query_one(
                "SELECT pg_try_advisory_lock($1, $2::int)",
                &[&state::RUN_LOCK, &(migration_id as i32)],
            )
            .await
            .map_err(|e| Error::db("taking the migration's lock", e))?;
        if row.get(0) {
            return Ok(true);
        }
        if Instant::now() > deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn confirmed_flush(control: &Client, slot: &str) -> Result<Lsn> {
    let row = control
        .query_one(
            "SELECT coalesce(confirmed_flush_lsn, '0/0')::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| Error::db("reading the slot's confirmed position", e))?;
    row.get::<_, String>(0)
        .parse()
        .map_err(|e| Error::failed(format!("{e}")))
}

/// Drops the slot, waiting (bounded) for its walsender to let go of it.
async fn drop_slot(control: &Client, slot: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match slot_row(control, slot).await? {
            None => return Ok(()),
            Some((false, _, _)) => {
                match control
                    .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
                    .await
                {
                    Ok(_) => return Ok(()),
                    // Taken again between the check and the drop: look again.
                    Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE) => {
                    }
                    Err(e) => return Err(Error::db("dropping the replication slot", e)),
                }
            }
            Some((true, pid, _)) => {
                if Instant::now() > deadline {
                    return Err(Error::failed(format!(
                        "the replication slot {slot} is still in use by pid {}",
                        pid.unwrap_or_default()
                    ))
                    .with_hint(format!(
                        "stop that process, then SELECT pg_drop_replication_slot('{slot}')"
                    )));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// After the swap: the slot and publication go. Safe to repeat.
pub async fn finish_cleanup(control: &Client, m: &Migration) -> Result<()> {
    drop_slot(control, &m.slot_name).await?;
    control
        .batch_execute(&format!(
            "DROP PUBLICATION IF EXISTS {}",
            quote_ident(&m.publication_name)
        ))
        .await
        .map_err(|e| Error::db("dropping the publication", e))?;
    Ok(())
}

/// The pipeline's tasks; a handle becomes `None` once its task has been awaited.
struct Tasks {
    stop: watch::Sender<bool>,
    reader: Option<tokio::task::JoinHandle<Result<()>>>,
    applier: Option<tokio::task::JoinHandle<Result<()>>>,
    copy: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl Tasks {
    /// Stops every stage between batches and waits for those still running.
    async fn stop(self) {
        let _ = self.stop.send(true);
        if let Some(c) = self.copy {
            c.abort();
            let _ = c.await;
        }
        if let Some(a) = self.applier {
            let _ = a.await;
        }
        if let Some(r) = self.reader {
            let _ = r.await;
        }
    }
}

/// Awaits a task whose handle is present; pair with an `if handle.is_some()` select guard.
async fn join_some(
    handle: &mut Option<tokio::task::JoinHandle<Result<()>>>,
) -> std::result::Result<Result<()>, tokio::task::JoinError> {
    match handle.as_mut() {
        Some(h) => h.await,
        None => std::future::pending().await,
    }
}

fn join_result(
    r: std::result::Result<Result<()>, tokio::task::JoinError>,
    what: &str,
) -> Result<()> {
    r.unwrap_or_else(|e| Err(Error::failed(format!("the {what} task crashed: {e}"))))
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// A session on the target that applies changes. Every statement of such a session finds rows
/// by key. A batch of thousands of keys makes the planner's estimate favour a scan of every
/// partition (0.3 s a batch at 2,000,000 rows, where the index scans take a tenth of that);
/// without a usable index it still scans.
async fn apply_session(prep: &Prepared) -> Result<Client> {
    let client = crate::pg::connect(&prep.dbs.target, "pgrepart apply").await?;
    client
        .batch_execute("SET synchronous_commit = on; SET enable_seqscan = off")
        .await
        .map_err(|e| Error::db("preparing an apply session", e))?;
    Ok(client)
}

/// The load governor's baseline (see [`copy::governor::Baseline`]); none with `--max-impact 0`
/// or when the source could not be probed (the run goes on without its governor).
async fn governor_baseline(args: &RunArgs, source: &Config) -> Option<copy::governor::Baseline> {
    if args.max_impact == 0 {
        return None;
    }
    copy::governor::baseline(source)
        .await
        .inspect_err(|e| {
            tracing::warn!(error = %e, "could not measure the source's commit latency; the migration runs without its load governor")
        })
        .ok()
}

/// The extra apply sessions (`--apply-sessions`), set up like the applier's own. None when the
/// table has a unique index or exclusion constraint besides its key: two sessions could then each
/// wait for the other's uncommitted row.
async fn apply_helpers(
    prep: &Prepared,
    target_db: &Client,
    info: &TableInfo,
    target: &QualifiedName,
    args: &RunArgs,
    toast_compression: Option<&str>,
) -> Result<Vec<Client>> {
    let extra = usize::from(args.apply_sessions).saturating_sub(1);
    if extra == 0 {
        return Ok(Vec::new());
    }
    let unique = match info.indexes.iter().find(|i| i.is_unique && !i.is_primary) {
        Some(i) => Some(i.name.clone()),
        None => catalog::other_unique_index(target_db, target).await?,
    };
    if let Some(index) = unique {
        tracing::info!(
            index = %index,
            "changes are applied on one session: the table has a unique index besides its key"
        );
        return Ok(Vec::new());
    }
    let mut helpers = Vec::with_capacity(extra);
    for _ in 0..extra {
        let client = apply_session(prep).await?;
        copy::toast::apply(&client, toast_compression).await?;
        helpers.push(client);
    }
    Ok(helpers)
}

impl Live {
    async fn drive(self, args: &RunArgs) -> Result<()> {
        let Live {
            prep,
            control,
            source,
            server,
            info,
            mut migration,
            stream,
            router,
            done,
            pending,
            sessions,
            start,
            baseline,
        } = self;
        let key = key_columns(&info)?;
        // A primary key left for after the copy: the applier takes no change before it exists
        // (each is found by key); they wait in the stream's channel, then in the slot.
        let mut key_pending = migration.target_created
            && migration.target_committed_fence.is_none()
            && catalog::lacks_primary_key(&control, &migration.target).await?;
        let applied_before = migration.applied_changes;
        let replicated = info.replicated_columns();
        let applier_client = apply_session(&prep).await?;
        let partition_key =
            catalog::partition_key_columns(&applier_client, &migration.target).await?;
        let mut shape = Shape {
            target: migration.target.clone(),
            columns: replicated
                .iter()
                .map(|c| (c.name.clone(), c.type_sql.clone()))
                .collect(),
            key: key
                .iter()
                .map(|k| {
                    replicated
                        .iter()
                        .position(|c| &c.name == k)
                        .expect("key columns are replicated")
                })
                .collect(),
            partitioned: partition_key.is_some(),
            route: vec![],
        };
        shape.route = partition_key
            .iter()
            .flatten()
            .filter_map(|name| replicated.iter().position(|c| &c.name == name))
            .filter(|i| !shape.key.contains(i))
            .collect();
        let toast_compression =
            copy::toast::prepare(&applier_client, args.toast_compression).await?;
        let helpers = apply_helpers(
            &prep,
            &control,
            &info,
            &migration.target,
            args,
            toast_compression,
        )
        .await?;
        let (applier, handles) = Applier::new(
            applier_client,
            ApplierConfig {
                shape,
                helpers,
                router: router.clone(),
                done,
                key_pending,
                expected_columns: replicated
                    .iter()
                    .map(|c| (c.name.clone(), c.type_oid))
                    .collect(),
                source: Some(prep.source.clone()),
                source_name: (info.name.schema.clone(), info.name.name.clone()),
                start,
                max_batch: 20_000,
                max_queued_bytes: crate::apply::DEFAULT_MAX_QUEUED_BYTES,
            },
        );
        let ApplierHandles {
            flush,
            mut fence,
            shared,
            hold: hold_tx,
        } = handles;
        let (stop_tx, stop_rx) = watch::channel(false);
        // Pause of everything (`pgrepart pause`), and of the copy alone (the retained-WAL guard).
        let (pause_tx, pause_rx) = watch::channel(migration.paused);
        let (copy_pause_tx, copy_pause_rx) = watch::channel(migration.paused);
        let (events_tx, events_rx) =
            crate::apply::channel::event_channel(crate::apply::channel::DEFAULT_BUDGET);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let pace = Arc::new(copy::governor::ApplyPace::new(args.max_apply_rate));
        let reopen = crate::stream::Reopen {
            source: prep.source.clone(),
            slot: migration.slot_name.clone(),
            publication: migration.publication_name.clone(),
        };
        let reader = tokio::spawn(crate::stream::read_stream(
            stream,
            reopen,
            events_tx,
            flush.clone(),
            stop_rx.clone(),
            pace.clone(),
            pause_rx.clone(),
        ));
        // The applier takes no events while paused (`pgrepart pause`) or held by the governor.
        let (apply_pause_tx, apply_pause_rx) = watch::channel(migration.paused);
        tokio::spawn(merge_pauses(
            pause_rx,
            pace.subscribe_held(),
            apply_pause_tx,
        ));
        let applier =
            tokio::spawn(applier.run(events_rx, done_rx, stop_rx.clone(), apply_pause_rx));
        let progress = Arc::new(CopyProgress::default());
        let limit = Arc::new(copy::governor::RateLimit::new(args.max_copy_rate));
        let copying = Arc::new(AtomicBool::new(!pending.is_empty()));
        // From the baseline taken before the migration weighed on the source, both the copy and
        // the apply are governed until the run stops.
        if let Some(base) = baseline {
            if !pending.is_empty() {
                limit.set(base.start_limit(args.max_copy_rate));
            }
            tokio::spawn(copy::governor::run(
                base,
                copy::governor::Governed {
                    copy_limit: limit.clone(),
                    progress: progress.clone(),
                    copying: copying.clone(),
                    pace: pace.clone(),
                    max_impact: f64::from(args.max_impact) / 100.0,
                    copy_cap: args.max_copy_rate,
                    apply_cap: args.max_apply_rate,
                    slot: migration.slot_name.clone(),
                },
                stop_rx.clone(),
            ));
        }
        let copy = if pending.is_empty() {
            None
        } else {
            let job = Arc::new(CopyJob {
                migration_id: migration.id,
                source: prep.table.clone(),
                target: migration.target.clone(),
                columns: replicated.iter().map(|c| c.name.clone()).collect(),
                range_column: key[0].clone(),
                target_config: prep.dbs.target.clone(),
                limit: limit.clone(),
                toast_compression,
                workers: sessions.len(),
            });
            tracing::info!(ranges = pending.len(), workers = sessions.len(), "copying");
            let workers = copy::run_workers(
                job,
                sessions,
                pending,
                done_tx.clone(),
                progress.clone(),
                stop_rx.clone(),
                copy_pause_rx,
            );
            let copying = copying.clone();
            Some(tokio::spawn(async move {
                let copied = workers.await;
                copying.store(false, Ordering::Relaxed);
                copied
            }))
        };
        let mut tasks = Tasks {
            stop: stop_tx,
            reader: Some(reader),
            applier: Some(applier),
            copy,
        };

        let flusher = crate::pg::connect(&prep.source, "pgrepart fence").await?;
        flusher
            .batch_execute("SET synchronous_commit = on")
            .await
            .map_err(|e| Error::db("preparing a session", e))?;
        let mut control = control;
        let mut source = source;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_cutover_try = Instant::now();
        // The last check before cutover found a difference (or could not finish).
        let mut verify_blocked = false;
        let started = Instant::now();
        let signal = shutdown_signal();
        tokio::pin!(signal);
        let (figures_tx, figures_rx) = watch::channel(Snapshot::default());
        let _metrics = match args.metrics_addr {
            Some(addr) => {
                Some(monitor::serve_metrics(addr, prep.table.to_string(), figures_rx).await?)
            }
            None => None,
        };
        let mut display =
            monitor::Display::new(std::io::IsTerminal::is_terminal(&std::io::stderr()));
        let (mut copy_rate, mut apply_rate) = (Rate::default(), Rate::default());
        let max_retained = args
            .max_retained_wal
            .as_deref()
            .map(crate::units::parse_size)
            .transpose()
            .map_err(Error::refused)?;
        if max_retained.is_none() && unbounded_slot_wal(&source).await? {
            tracing::warn!(
                "max_slot_wal_keep_size is -1 and --max-retained-wal is not set: nothing bounds the WAL the slot can hold on the source"
            );
        }
        let rows_before = migration.rows_copied.max(0) as u64;

        let mut interrupted = false;
        let mut wal_warned = false;
        let failure: Error = loop {
            tokio::select! {
                biased;
                _ = &mut signal => {
                    interrupted = true;
                    break Error::failed("interrupted");
                }
                // Each of the two ends cleanly only when the other is gone (their channel closed):
                // then the other one's error is the cause.
                r = join_some(&mut tasks.reader), if tasks.reader.is_some() => {
                    tasks.reader = None;
                    break match join_result(r, "stream reader") {
                        Err(e) => e,
                        Ok(()) => match tasks.applier.take() {
                            Some(a) => join_result(a.await, "applier").err(),
                            None => None,
                        }
                        .unwrap_or_else(|| Error::transient("the replication stream ended")),
                    };
                }
                r = join_some(&mut tasks.applier), if tasks.applier.is_some() => {
                    tasks.applier = None;
                    break match join_result(r, "applier") {
                        Err(e) => e,
                        Ok(()) => match tasks.reader.take() {
                            Some(rd) => join_result(rd.await, "stream reader").err(),
                            None => None,
                        }
                        .unwrap_or_else(|| Error::transient("the replication stream ended")),
                    };
                }
                r = join_some(&mut tasks.copy), if tasks.copy.is_some() => {
                    tasks.copy = None;
                    if let Err(e) = join_result(r, "copy") {
                        break e;
                    }
                    tracing::info!(rows = progress.rows.load(Ordering::Relaxed), "copy finished");
                    // Build the indexes now rather than at the next tick.
                    tick.reset_immediately();
                }
                _ = tick.tick() => {
                    let m = state::get(&control, migration.id).await?;
                    if m.abort_requested {
                        tasks.stop().await;
                        display.finish();
                        return Err(Error::failed(format!("migration {} was aborted by `pgrepart abort`", migration.id)));
                    }
                    let confirmed = Lsn(shared.flush_lsn.load(Ordering::Relaxed));
                    let applied = applied_before + shared.applied_changes.load(Ordering::Relaxed) as i64;
                    let (lag, retained, safe_wal) = match lag_and_retained(&source, confirmed, &migration.slot_name).await? {
                        // Seen here first while the stream is parked (no walsender to end).
                        SlotNow::Gone => break slot_gone(&migration),
                        SlotNow::Lost => break slot_lost(&migration),
                        SlotNow::Kept { lag, retained, safe_wal } => (lag, retained, safe_wal),
                    };
                    let guard = monitor::wal_guard(retained, max_retained);
                    // A cross-database cutover that committed in the target only must be finished.
                    let wants_cutover = args.cutover == CutoverMode::Auto
                        || m.cutover_requested
                        || m.target_committed_fence.is_some();
                    // The apply catches up at full speed, whatever the load governor says, once
                    // the cutover is due, while a verify waits for the applier to reach its point,
                    // and before the retained WAL gets near a limit (--max-retained-wal, or the
                    // server's max_slot_wal_keep_size with less than the retained size left).
                    let wal_tight = guard != monitor::WalVerdict::Fine
                        || safe_wal.is_some_and(|s| s < retained as i64);
                    let free = wal_tight
                        || m.hold_at.is_some()
                        || (m.phase == Phase::Streaming && wants_cutover);
                    if free != pace.is_free() {
                        if free && wal_tight && pace.limit().is_some() {
                            tracing::warn!(retained_bytes = retained, "the slot retains WAL near its limit: the apply runs at full speed, whatever the load governor says");
                        }
                        pace.set_free(free);
                    }
                    let now = Instant::now();
                    let copied = rows_before + progress.streamed_rows.load(Ordering::Relaxed);
                    let copy_per_s = tasks.copy.as_ref().and_then(|_| copy_rate.sample(now, copied));
                    let apply_per_s = apply_rate.sample(now, applied.max(0) as u64);
                    let lag_seconds = if lag <= 16 * 1024 {
                        0.0
                    } else {
                        let ts = shared.last_commit_ts.load(Ordering::Relaxed);
                        if ts == 0 { f64::NAN } else { ((crate::protocol::copydata::pg_epoch_micros_now() - ts) as f64 / 1e6).max(0.0) }
                    };
                    // Not known before the first change is applied.
                    let lag_seconds = (!lag_seconds.is_nan()).then_some(lag_seconds);
                    state::record_progress(&control, migration.id, &state::LiveFigures {
                        applied_changes: applied,
                        confirmed,
                        lag_seconds,
                        copy_rows_per_s: copy_per_s,
                        apply_changes_per_s: apply_per_s,
                        copy_bytes: progress.bytes.load(Ordering::Relaxed) as i64,
                        rows_streamed: copied as i64,
                        pause_in_effect: shared.paused.load(Ordering::Relaxed),
                        held_at: held_at(&shared),
                        copy_rate_limit: tasks.copy.as_ref().and(limit.get()).map(|l| l as i64),
                        // 0 while the governor parks the stream.
                        apply_rate_limit: if pace.parked() { Some(0) } else { pace.limit().map(|l| l as i64) },
                    }).await?;
                    let hold = follow_hold(&control, &m, &hold_tx).await?;
                    // Pause: everything on request; the copy alone when the slot holds too much WAL.
                    if guard == monitor::WalVerdict::Stop {
                        // Keeping the slot would keep the WAL: drop it to protect the source's disk.
                        display.finish();
                        tasks.stop().await;
                        let dropped = drop_slot(&source, &migration.slot_name).await;
                        let msg = format!(
                            "stopped: the replication slot held {retained} bytes of WAL, twice --max-retained-wal; {} to free the source's disk",
                            if dropped.is_ok() { "the slot was dropped" } else { "dropping the slot failed" }
                        );
                        let _ = state::set_phase(&control, migration.id, Phase::Failed, Some(&msg)).await;
                        let _ = state::set_runner(&control, migration.id, None).await;
                        return Err(Error::failed(msg).with_hint(
                            "the migration cannot resume without its slot: run `pgrepart abort`, then start again with a larger --max-retained-wal (or when the source is quieter)",
                        ));
                    }
                    pause_tx.send_if_modified(|p| std::mem::replace(p, m.paused) != m.paused);
                    let over = guard == monitor::WalVerdict::PauseCopy;
                    let copy_paused = monitor::copy_paused(m.paused, guard, key_pending);
                    if copy_pause_tx.send_if_modified(|p| std::mem::replace(p, copy_paused) != copy_paused)
                        && copy_paused && !m.paused {
                            tracing::warn!(retained_bytes = retained, "the slot holds more WAL than --max-retained-wal: copy paused, apply goes on");
                        }
                    if over && key_pending && !wal_warned {
                        wal_warned = true;
                        tracing::warn!(retained_bytes = retained, "the slot holds more WAL than --max-retained-wal; the copy goes on, as the changes can only be applied once it is done and the primary key built (at twice the limit the run stops)");
                    }
                    let snapshot = Snapshot {
                        phase: m.phase.as_str(),
                        rows_copied: copied,
                        rows_total_estimate: m.rows_estimate.max(0) as u64,
                        bytes_copied: progress.bytes.load(Ordering::Relaxed),
                        applied_changes: applied.max(0) as u64,
                        lag_bytes: lag,
                        lag_seconds: lag_seconds.unwrap_or(0.0),
                        wal_retained_bytes: retained,
                        copy_rows_per_s: copy_per_s.unwrap_or(0.0),
                        apply_changes_per_s: apply_per_s.unwrap_or(0.0),
                        paused: m.paused,
                    };
                    display.update(&snapshot);
                    figures_tx.send_replace(snapshot);
                    if m.paused {
                        continue;
                    }
                    let copy_done = tasks.copy.is_none() && shared.ranges_pending.load(Ordering::Relaxed) == 0;
                    if m.phase == Phase::Copying && tasks.copy.is_none() && !copy_done {
                        // The applier is taking the last finished ranges: look again shortly.
                        tick.reset_after(Duration::from_millis(50));
                    }
                    if m.phase == Phase::Copying && copy_done {
                        // Index builds and ANALYZE can take long: a signal stops them too.
                        let backends = copy::indexes::Backends::default();
                        let built = KeyBuilt { pending: key_pending, applier: done_tx.clone() };
                        key_pending = false;
                        let finished = tokio::select! {
                            r = finish_copy(&mut control, &prep, &info, &migration, &backends, built) => Some(r),
                            _ = &mut signal => None,
                        };
                        match finished {
                            Some(Ok(())) => {}
                            Some(Err(e)) => break e,
                            None => {
                                if let Err(e) = backends.cancel(&prep.dbs.target).await {
                                    tracing::warn!(error = %e, "could not cancel the index builds; they end with their sessions");
                                }
                                // The lock of the index build, if it was taken.
                                let _ = control.batch_execute("ROLLBACK").await;
                                interrupted = true;
                                break Error::failed("interrupted");
                            }
                        }
                        tracing::info!(elapsed_s = started.elapsed().as_secs(), "copy and indexes done; streaming");
                        migration.phase = Phase::Streaming;
                        continue;
                    }
                    // A `pgrepart verify` that passed (or repaired) cleared the block: try at once.
                    if verify_blocked && m.last_error.is_none() {
                        verify_blocked = false;
                        next_cutover_try = Instant::now();
                    }
                    if m.phase != Phase::Streaming || !wants_cutover || Instant::now() < next_cutover_try {
                        continue;
                    }
                    if hold.is_some() {
                        tracing::debug!("a verify holds the applier; cutting over after it");
                        continue;
                    }
                    if lag > args.max_lag_bytes {
                        tracing::debug!(lag_bytes = lag, "waiting for the lag to shrink before cutting over");
                        continue;
                    }
                    // Not after a cross-database cutover committed in the target: that one is
                    // finished whatever a comparison would say (the new table has its final name).
                    if migration.target_committed_fence.is_none()
                        && !verified_before_cutover(&control, &prep, &info, &migration, args, &hold_tx, &shared).await?
                    {
                        next_cutover_try = Instant::now() + Duration::from_secs(60);
                        verify_blocked = true;
                        continue;
                    }
                    verify_blocked = false;
                    let dbs = Dbs { control: &mut control, source: &mut source, prep: &prep };
                    match try_cutover(dbs, &flusher, &mut fence, &server, &info, &migration, args).await {
                        Ok(Some(held)) => {
                            tasks.stop().await;
                            display.finish();
                            finish_cleanup(&source, &migration).await?;
                            let m = state::get(&control, migration.id).await?;
                            let in_default = default_partition_note(&control, &prep.table).await;
                            println!(
                                "{} is now partitioned: {} rows copied, {} changes applied, lock held {} ms; the old table is {}{in_default}",
                                prep.table,
                                m.rows_copied,
                                applied_before + shared.applied_changes.load(Ordering::Relaxed) as i64,
                                held.as_millis(),
                                prep.table.sibling(migration.old_name.clone())
                            );
                            print_point_at(&prep, &migration);
                            if args.drop_old {
                                cutover::drop_old(&source, &prep.table.sibling(migration.old_name.clone())).await?;
                            }
                            return Ok(());
                        }
                        Ok(None) => {
                            next_cutover_try = Instant::now() + Duration::from_secs(60);
                        }
                        Err(e) => break e,
                    }
                }
            }
        };
        if interrupted {
            display.finish();
            tracing::warn!("interrupted: finishing the batch in flight and stopping");
            tasks.stop().await;
            let confirmed = Lsn(shared.flush_lsn.load(Ordering::Relaxed));
            let figures = state::LiveFigures {
                applied_changes: applied_before
                    + shared.applied_changes.load(Ordering::Relaxed) as i64,
                confirmed,
                ..Default::default()
            };
            let _ = state::record_progress(&control, migration.id, &figures).await;
            let _ = state::set_runner(&control, migration.id, None).await;
            return Err(Error::failed(format!(
                "stopped by a signal; the slot and state are kept (confirmed position {confirmed})"
            ))
            .with_hint(
                "run the same command again to resume, or `pgrepart abort` to remove everything",
            ));
        }
        // A stage failed: keep the slot and state so that a rerun resumes, and say so.
        display.finish();
        tasks.stop().await;
        let _ = state::set_phase(
            &control,
            migration.id,
            Phase::Failed,
            Some(&failure.to_string()),
        )
        .await;
        let _ = state::set_runner(&control, migration.id, None).await;
        Err(if failure.hint().is_some() || failure.is_transient() {
            failure
        } else {
            failure.with_hint(
                "fix the cause, then run the same command again to resume (or `pgrepart abort`)",
            )
        })
    }
}

/// `; the DEFAULT partition p holds N row(s)` for the final line (empty without a DEFAULT), counted
/// once the swap has committed, so neither the copy nor the lock waits for it; logged too.
async fn default_partition_note(control: &Client, table: &QualifiedName) -> String {
    match catalog::default_partition_rows(control, table).await {
        Ok(Some((partition, rows))) => {
            tracing::info!(partition = %partition, rows, "rows in the DEFAULT partition");
            format!("; the DEFAULT partition {partition} holds {rows} row(s)")
        }
        Ok(None) => String::new(),
        Err(e) => {
            tracing::warn!(error = %e, "could not count the rows of the DEFAULT partition");
            String::new()
        }
    }
}

fn held_at(shared: &crate::apply::Shared) -> Option<Lsn> {
    match shared.held_at.load(Ordering::Relaxed) {
        0 => None,
        at => Some(Lsn(at)),
    }
}

/// Passes a `verify` hold from the state to the applier, and lifts one whose lease ran out (its
/// verify process is gone). Returns the hold in effect.
async fn follow_hold(
    control: &Client,
    m: &Migration,
    hold_tx: &watch::Sender<crate::apply::Hold>,
) -> Result<crate::apply::Hold> {
    let hold = if m.hold_at.is_some() && m.hold_expired {
        if state::clear_hold(control, m.id, None).await? {
            tracing::warn!(owner = %m.hold_owner.as_deref().unwrap_or(""), "the verify hold's lease ran out (is that process gone?); applying again");
        }
        None
    } else {
        m.hold_at
    };
    hold_tx.send_if_modified(|h| std::mem::replace(h, hold) != hold);
    Ok(hold)
}

/// The check before cutover (`--verify`): true when the cutover may go on. On a difference, or a
/// verify that could not finish, it says so (log and `last_error`) and the run streams on.
async fn verified_before_cutover(
    control: &Client,
    prep: &Prepared,
    info: &TableInfo,
    m: &Migration,
    args: &RunArgs,
    hold_tx: &watch::Sender<crate::apply::Hold>,
    shared: &Arc<crate::apply::Shared>,
) -> Result<bool> {
    if args.verify == crate::verify::Mode::Off {
        return Ok(true);
    }
    tracing::info!(mode = %args.verify.describe(), "verifying the new table against the source before cutting over");
    // The table as it is now: columns added on the source since the start (and followed) are
    // compared too.
    let fresh = match crate::pg::connect(&prep.dbs.source, "pgrepart verify").await {
        Ok(c) => catalog::table_info(&c, &info.name).await.ok().flatten(),
        Err(_) => None,
    };
    let outcome = super::verify::before_cutover(
        &prep.dbs.source,
        &prep.dbs.target,
        fresh.as_ref().unwrap_or(info),
        &m.target,
        prep.jobs,
        args.verify,
        hold_tx,
        shared,
    )
    .await;
    let msg = match outcome {
        Ok(report) if report.is_equal() => {
            tracing::info!("{}", report.summary_line());
            return Ok(true);
        }
        Ok(report) => format!(
            "{}: {}; run `pgrepart verify --repair` (then the cutover goes on), or rerun with --verify off to skip the check",
            super::verify::BLOCKED_PREFIX,
            report.summary_line()
        ),
        Err(e) => format!("cutover postponed: the verify before it did not finish: {e}"),
    };
    tracing::warn!("{msg}; verifying again in a minute");
    state::set_error(control, m.id, Some(&msg)).await?;
    Ok(false)
}

/// Whether the server lets a slot hold WAL without bound.
async fn unbounded_slot_wal(control: &Client) -> Result<bool> {
    let row = control
        .query_one(
            "SELECT current_setting('max_slot_wal_keep_size') = '-1'",
            &[],
        )
        .await
        .map_err(|e| Error::db("reading max_slot_wal_keep_size", e))?;
    Ok(row.get(0))
}

/// Keeps `out` true while either input is; ends once an input's sender is gone.
async fn merge_pauses(
    mut user: watch::Receiver<bool>,
    mut held: watch::Receiver<bool>,
    out: watch::Sender<bool>,
) {
    loop {
        let either = *user.borrow_and_update() || *held.borrow_and_update();
        out.send_if_modified(|p| std::mem::replace(p, either) != either);
        tokio::select! {
            r = user.changed() => if r.is_err() { return },
            r = held.changed() => if r.is_err() { return },
        }
    }
}

/// The slot now: gone, invalidated, or kept with the lag behind the source's WAL, the WAL it
/// retains, and how much more the server lets it retain (`safe_wal_size`; `None` when
/// `max_slot_wal_keep_size` is -1), in bytes.
enum SlotNow {
    Gone,
    Lost,
    Kept {
        lag: u64,
        retained: u64,
        safe_wal: Option<i64>,
    },
}

async fn lag_and_retained(control: &Client, confirmed: Lsn, slot: &str) -> Result<SlotNow> {
    let row = control
        .query_opt(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::bigint, \
                    coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, 0), \
                    safe_wal_size, wal_status = 'lost' \
             FROM pg_replication_slots WHERE slot_name = $2",
            &[&confirmed.to_string(), &slot],
        )
        .await
        .map_err(|e| Error::db("measuring the lag", e))?;
    Ok(match row {
        None => SlotNow::Gone,
        Some(r) if r.get::<_, Option<bool>>(3) == Some(true) => SlotNow::Lost,
        Some(r) => SlotNow::Kept {
            lag: r.get::<_, i64>(0).max(0) as u64,
            retained: r.get::<_, i64>(1).max(0) as u64,
            safe_wal: r.get(2),
        },
    })
}

/// A primary key left for after the copy, and the applier's channel of finished ranges, which
/// hears `apply::KEY_BUILT` once it is built.
struct KeyBuilt {
    pending: bool,
    applier: mpsc::UnboundedSender<usize>,
}

/// Builds the secondary indexes (generated targets, per partition in parallel) and the primary
/// key if it was left for now, then analyzes the new table and enters `streaming` in one
/// transaction.
async fn finish_copy(
    control: &mut Client,
    prep: &Prepared,
    info: &TableInfo,
    m: &Migration,
    backends: &copy::indexes::Backends,
    key: KeyBuilt,
) -> Result<()> {
    // The control session builds the parent's indexes and runs the ANALYZE.
    backends.register(control).await?;
    if let Target::Generate { by, .. } = &prep.target {
        let plans = ddl::secondary_indexes(info, &m.target, by);
        for w in plans.iter().filter_map(|p| p.warning.as_ref()) {
            tracing::warn!("{w}");
        }
        let primary_key = if key.pending {
            Some(ddl::primary_key_sql(&key_columns(info)?, by))
        } else {
            None
        };
        copy::indexes::build(
            control,
            &prep.dbs.target,
            prep.jobs,
            &m.target,
            copy::indexes::Work {
                plans: &plans,
                primary_key: primary_key.as_deref(),
            },
            backends,
        )
        .await?;
    } else if key.pending {
        return Err(Error::failed(format!(
            "{} has no primary key yet; rerun with the same --partition-by and --partition arguments to build it",
            m.target
        )));
    }
    if key.pending {
        // The applier takes the changes from here, with every range copied.
        let _ = key.applier.send(crate::apply::KEY_BUILT);
    }
    let tx = control
        .transaction()
        .await
        .map_err(|e| Error::db("starting the index build", e))?;
    if matches!(prep.target, Target::Generate { .. }) {
        tx.batch_execute(&format!("ANALYZE {}", m.target.sql()))
            .await
            .map_err(|e| Error::db("analyzing the new table", e))?;
    }
    state::mark_streaming(&tx, m.id).await?;
    tx.commit()
        .await
        .map_err(|e| Error::db("committing the index build", e))
}

/// The connections a cutover uses: the state's (target) and the source's (the same database
/// unless `--target` names another).
struct Dbs<'a> {
    control: &'a mut Client,
    source: &'a mut Client,
    prep: &'a Prepared,
}

/// Tries to cut over with bounded retries; `Ok(None)` when the lock could not be had.
async fn try_cutover(
    dbs: Dbs<'_>,
    flusher: &Client,
    fence: &mut watch::Receiver<Option<String>>,
    server: &ServerInfo,
    info: &TableInfo,
    m: &Migration,
    args: &RunArgs,
) -> Result<Option<Duration>> {
    let Dbs {
        control,
        source,
        prep,
    } = dbs;
    let current_user: String = control
        .query_one("SELECT current_user::text", &[])
        .await
        .map_err(|e| Error::db("reading current_user", e))?
        .get(0);
    let plan = SwapPlan {
        migration_id: m.id,
        source: m.source.clone(),
        target: m.target.clone(),
        old_name: m.old_name.clone(),
        sequences: info.sequences.clone(),
        grants: info.grants.clone(),
        new_owner: (m.target_created && info.owner != current_user).then(|| info.owner.clone()),
        partitions: m.created_partitions.clone(),
        target_created: m.target_created,
        always_identity: info
            .columns
            .iter()
            .filter(|c| c.identity == Some('a'))
            .map(|c| c.name.clone())
            .collect(),
        drop_inbound_fks: args.drop_inbound_fks,
    };
    let cross = prep.cross_db().then(|| CrossPlan {
        migration_id: m.id,
        source: m.source.clone(),
        target: m.target.clone(),
        old_name: m.old_name.clone(),
        publication: m.publication_name.clone(),
        sequences: info.sequences.clone(),
        grants: info.grants.clone(),
        owner: info.owner.clone(),
        partitions: m.created_partitions.clone(),
        target_created: m.target_created,
        always_identity: plan.always_identity.clone(),
        target_committed: m.target_committed_fence.is_some(),
        target_desc: prep.dbs.target_description(),
    });
    state::set_phase(&*control, m.id, Phase::CuttingOver, None).await?;
    let mut backoff = Duration::from_millis(500);
    for attempt_no in 1..=args.cutover_attempts.max(1) {
        let fence_id = format!("{}:{}:{}", m.id, std::process::id(), attempt_no);
        let lock_timeout = Duration::from_millis(args.lock_timeout_ms);
        let drain_timeout = Duration::from_millis(args.drain_timeout_ms);
        let outcome = match &cross {
            Some(cross) => {
                let outcome = cross_cutover::attempt(
                    source,
                    control,
                    flusher,
                    fence,
                    CrossAttempt {
                        plan: cross,
                        server_major: server.major(),
                        lock_timeout,
                        drain_timeout,
                        fence_id,
                    },
                )
                .await?;
                if matches!(outcome, Outcome::Done { .. }) {
                    state::set_phase(&*control, m.id, Phase::Done, None).await?;
                }
                outcome
            }
            None => {
                cutover::attempt(
                    control,
                    flusher,
                    fence,
                    Attempt {
                        plan: &plan,
                        server_major: server.major(),
                        lock_timeout,
                        drain_timeout,
                        fence_id,
                    },
                )
                .await?
            }
        };
        match outcome {
            Outcome::Done { lock_held } => {
                tracing::info!(lock_held_ms = lock_held.as_millis() as u64, "cut over");
                return Ok(Some(lock_held));
            }
            Outcome::LockTimeout => {
                let holders = lock_holders(source, &m.source).await;
                tracing::warn!(attempt = attempt_no, holders = %holders, "could not lock the table in time; backing off");
            }
            Outcome::DrainTimeout => {
                tracing::warn!(
                    attempt = attempt_no,
                    "the last changes were not applied in time; released the lock, backing off"
                );
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
    let msg = format!(
        "cutover gave up after {} attempts; streaming on and trying again in a minute",
        args.cutover_attempts
    );
    tracing::warn!("{msg}");
    state::set_phase(&*control, m.id, Phase::Streaming, Some(&msg)).await?;
    Ok(None)
}

/// "pid 123 (app, idle in transaction)" for sessions holding locks on the table.
async fn lock_holders(control: &Client, table: &QualifiedName) -> String {
    let rows = control
        .query(
            "SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.state, '') FROM pg_locks l \
             JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.relation = $1::text::regclass AND l.granted AND a.pid <> pg_backend_pid()",
            &[&table.sql()],
        )
        .await
        .unwrap_or_default();
    let list: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "pid {} ({}, {})",
                r.get::<_, i32>(0),
                r.get::<_, String>(1),
                r.get::<_, String>(2)
            )
        })
        .collect();
    if list.is_empty() {
        "none seen".into()
    } else {
        list.join("; ")
    }
}
