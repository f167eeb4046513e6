//! A new migration: preflight, then the new table and the state row in one transaction, then the
//! publication, the slot with its exported snapshot, the copy sessions importing it, the key
//! ranges, and the stream started at the slot's consistent point.
//!
//! ```text
//! preflight ─► BEGIN; create target + state; COMMIT ─► publication ─► slot (exported snapshot)
//!           ─► copy sessions import it ─► plan key ranges ─► START_REPLICATION at the slot's point
//! ```
//! Until the key ranges are recorded, everything made is written down in an [`Undo`]: a setup
//! that fails (or is interrupted) removes it again, on connections of its own, and leaves nothing.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, Config};

use super::Live;
use crate::config::{Prepared, RunConfig};
use crate::copy::indexes::KeyTiming;
use crate::copy::{self, ranges};
use crate::error::{Error, Result};
use crate::pg::catalog::{self, ServerInfo, TableInfo};
use crate::pg::ddl;
use crate::pg::ident::{QualifiedName, quote_ident};
use crate::preflight::{self, Status, Target};
use crate::replication::ReplicationClient;
use crate::state::{self, Migration, NewMigration};

/// Objects created by a new migration, removed again if its setup fails.
#[derive(Debug, Default)]
pub struct Undo {
    migration_id: Option<i64>,
    target: Option<QualifiedName>,
    publication: Option<String>,
    slot: Option<String>,
}

impl Undo {
    fn note(cell: &Mutex<Undo>, f: impl FnOnce(&mut Undo)) {
        f(&mut cell.lock().expect("undo lock"));
    }

    pub fn is_empty(&self) -> bool {
        self.migration_id.is_none()
            && self.target.is_none()
            && self.publication.is_none()
            && self.slot.is_none()
    }

    /// Removes what was noted, on fresh connections (those of the failed setup may be the cause
    /// of its failure). What cannot be removed is left to the next run, which finds the state
    /// row and sets the stream up again, or to `pgrepart abort`.
    pub async fn run(self, prep: &Prepared) {
        if self.is_empty() {
            return;
        }
        tracing::warn!("setup did not finish; removing what it created");
        let source = prep.dbs.connect_source("pgrepart source").await;
        let control = prep.dbs.connect_state("pgrepart state").await;
        if let Ok(source) = &source {
            if let Some(slot) = &self.slot
                && let Err(e) = super::slot::drop_slot(source, slot).await
            {
                tracing::warn!(slot = %slot, error = %e, "could not drop the replication slot while cleaning up");
            }
            if let Some(p) = &self.publication {
                let _ = source
                    .batch_execute(&format!("DROP PUBLICATION IF EXISTS {}", quote_ident(p)))
                    .await;
            }
        }
        if let Ok(control) = &control {
            if let Some(t) = &self.target {
                let _ = control
                    .batch_execute(&format!("DROP TABLE IF EXISTS {} CASCADE", t.sql()))
                    .await;
            }
            if let Some(id) = self.migration_id {
                let _ = state::delete(control, id).await;
            }
        }
        if let Err(e) = source.and(control) {
            tracing::warn!(error = %e, "could not connect to clean up; the next run (or `pgrepart abort`) finishes the cleanup");
        }
    }
}

pub fn key_columns(info: &TableInfo) -> Result<Vec<String>> {
    info.key_index().map(|k| k.columns.clone()).ok_or_else(|| {
        Error::refused(format!(
            "{} has no primary key or replica identity index",
            info.name
        ))
    })
}

pub async fn start_new(
    cfg: &RunConfig,
    mut control: Client,
    source: Client,
    undo: &Mutex<Undo>,
    engaged: &std::cell::Cell<bool>,
) -> Result<Live> {
    // Generated partitions are computed once, here, and stored in the migration's spec.
    let prep = &cfg.prep.with_generated_partitions(&source).await?;
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
        drop: cfg.drop_inbound_fks,
        cross_db: prep.cross_db(),
    };
    let mut checks = preflight::evaluate(&facts, &prep.table, &prep.target);
    checks.extend(cross_checks);
    for c in checks.iter().filter(|c| c.status == Status::Warn) {
        tracing::warn!(check = c.name, "{}", c.detail);
    }
    preflight::refuse_on_failure(&checks)?;
    if cfg.rollback_window.is_some_and(|w| !w.is_zero()) {
        if prep.cross_db() {
            // The reverse stream runs from the target (design.md §11).
            crate::rollback::cross::refuse(&source, &control).await?;
        }
        crate::rollback::refuse_foreign_keys(
            &source,
            &prep.table,
            &preflight::inbound_actions(&facts, &prep.target),
        )
        .await?;
    }
    // Before the slot exists, so without the cost of its decoding.
    let baseline = super::governor_baseline(cfg, &prep.source).await;
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
            let clause = key_clause(cfg.primary_key, baseline.as_ref(), &prep.source).await?;
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
                let busy = baseline.as_ref().is_some_and(|b| !b.quiet());
                check_rows_fit(&tx, source_rows, &info.name, name, by, busy).await?;
            }
        }
        let target_oid = catalog::relation_oid(&tx, prep.target.name())
            .await?
            .ok_or_else(|| {
                Error::failed(format!("the new table {} is gone", prep.target.name()))
            })?;
        let m = state::insert(
            &tx,
            NewMigration {
                source: &prep.table,
                target: prep.target.name(),
                old_name: &prep.old_name,
                target_created: matches!(prep.target, Target::Generate { .. }),
                created_partitions,
                spec: serde_json::to_value(prep.spec()).expect("spec serializes"),
                cutover_mode: cfg.cutover.as_str(),
                rows_estimate: info.estimated_rows,
                total_bytes_estimate: info.total_bytes,
                source_db_oid: server.database_oid,
                source_oid: info.oid,
                target_oid,
            },
        )
        .await?;
        tx.commit()
            .await
            .map_err(|e| Error::db("committing setup", e))?;
        m
    };
    tracing::info!(migration = migration.id, target = %migration.target, "target table and state created");
    // From here a failure is retried (what was made is undone first).
    engaged.set(true);
    Undo::note(undo, |u| {
        u.migration_id = Some(migration.id);
        u.target = migration.target_created.then(|| migration.target.clone());
    });
    super::lock::try_run_lock(&control, migration.id).await?;
    state::set_runner(&control, migration.id, Some(&super::lock::runner_name())).await?;
    setup_stream(
        cfg, control, source, server, info, &key, migration, baseline, undo,
    )
    .await
}

/// From the publication to the stream started. `undo` notes the publication and the slot as
/// they are made; the caller empties it once this returns (the ranges are recorded by then, and
/// from there on a failure is resumed, not undone).
#[allow(clippy::too_many_arguments)]
pub async fn setup_stream(
    cfg: &RunConfig,
    control: Client,
    source: Client,
    server: ServerInfo,
    info: TableInfo,
    key: &[String],
    migration: Migration,
    baseline: Option<copy::governor::Baseline>,
    undo: &Mutex<Undo>,
) -> Result<Live> {
    let prep = &cfg.prep;
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
    Undo::note(undo, |u| u.publication = Some(publication.clone()));
    crate::fault::point("setup-publication-created");

    let mut repl = ReplicationClient::connect(&prep.source, "pgrepart replication")
        .await
        .map_err(|e| Error::replication("opening the replication connection", e))?;
    let slot = create_slot_reporting_waits(&mut repl, &source, &migration.slot_name).await?;
    Undo::note(undo, |u| u.slot = Some(slot.slot_name.clone()));
    crate::fault::point("setup-slot-created");
    crate::fault::pause("setup-slot-created").await;
    tracing::info!(slot = %slot.slot_name, consistent_point = %slot.consistent_point, "replication slot created");

    // The snapshot lives until the next command on the replication connection: import it first.
    let sessions = copy::open_sessions(&prep.source, prep.jobs, Some(&slot.snapshot_name)).await?;
    crate::fault::pause("setup-snapshot-imported").await;
    // Recorded for every range's fresh snapshot to be checked against (docs/design.md §5).
    let exported = copy::snapshot::current(&sessions[0]).await?;
    state::set_exported_snapshot(&control, migration.id, &exported.to_string()).await?;
    let key_sql = copy::key_columns(&info, key);
    let count = ranges::range_count(info.estimated_rows, info.total_bytes, prep.jobs);
    let planned = copy::plan_ranges(
        &sessions[0],
        &prep.table,
        &key_sql,
        info.estimated_rows,
        count,
    )
    .await?;
    let router = super::router_for(&info, key, &planned);
    // From here each range reads on a fresh snapshot of its own.
    copy::end_transactions(&sessions).await?;
    state::insert_ranges(&control, migration.id, &planned).await?;
    crate::fault::point("setup-ranges-recorded");
    let stream =
        crate::stream::start_stream(repl, &slot.slot_name, &publication, slot.consistent_point)
            .await?;
    let pending = planned
        .into_iter()
        .enumerate()
        .map(|(no, bounds)| copy::PendingRange {
            no,
            bounds,
            copied_to: None,
        })
        .collect();
    Ok(Live {
        control,
        source,
        server,
        info,
        migration,
        stream,
        done: vec![false; router.len()],
        router,
        pending,
        sessions,
        start: slot.consistent_point,
        baseline,
    })
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
    busy: bool,
) -> Result<()> {
    if by.method == crate::spec::Method::Hash
        && crate::partitioning::hash_bounds_take_every_row(
            &catalog::partition_bounds(tx, target).await?,
        )
    {
        // Nothing to look for: the scan would only cost the source a pass over the table.
        return Ok(());
    }
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
    // A pass over the whole table, unpaced: on a source that runs a workload, one core for it
    // (parallel workers took both cores of the bench machine and the application's transactions
    // queued behind them, 97 ms in the second it ran against 2.8 alone).
    let serial = |e| Error::db("setting max_parallel_workers_per_gather", e);
    // Cross-database the bounds are read in the target and the rows on the source.
    let rows = match source_db {
        Some(db) => {
            if busy {
                db.batch_execute("SET max_parallel_workers_per_gather = 0")
                    .await
                    .map_err(serial)?;
            }
            let rows = db.query(&sql, &[]).await;
            if busy {
                db.batch_execute("RESET max_parallel_workers_per_gather")
                    .await
                    .map_err(serial)?;
            }
            rows
        }
        None => {
            if busy {
                tx.batch_execute("SET LOCAL max_parallel_workers_per_gather = 0")
                    .await
                    .map_err(serial)?;
            }
            tx.query(&sql, &[]).await
        }
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
