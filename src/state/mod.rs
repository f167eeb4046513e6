//! Migration state, kept in the target database (schema `pgrepart`), so that `status`, `cutover`
//! and `abort` work from any terminal and a rerun of `run` resumes.
//!
//! ```text
//! pgrepart.migrations  one row per migration: names, phase, requests from other terminals
//! pgrepart.ranges      one row per key range: bounds, done, rows copied (set in the copy's own txn)
//! ```

use serde::{Deserialize, Serialize};
use tokio_postgres::{Client, GenericClient, Row};

use crate::copy::ranges::{Bound, Bounds, as_int_ranges};
use crate::error::{Error, Result};
use crate::pg::ident::QualifiedName;

/// The phase machine. Each variant says who sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Set by `run` when the slot exists and the copy starts.
    Copying,
    /// Set by `run` when every range is copied and the secondary indexes are built.
    Streaming,
    /// Set by `run` when it starts taking the lock for the swap.
    CuttingOver,
    /// Set inside the swap transaction itself (same database), so it is true exactly when the swap is.
    Done,
    /// Set by `run` when it stops on an error; the slot and state are kept so a rerun resumes.
    Failed,
    /// Set inside the revert's swap transaction: the old table has its name back, the new table
    /// its working name (`run --rollback-window`, `pgrepart revert`).
    Reverted,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Copying => "copying",
            Phase::Streaming => "streaming",
            Phase::CuttingOver => "cutting_over",
            Phase::Done => "done",
            Phase::Failed => "failed",
            Phase::Reverted => "reverted",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        [
            Phase::Copying,
            Phase::Streaming,
            Phase::CuttingOver,
            Phase::Done,
            Phase::Failed,
            Phase::Reverted,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

const SCHEMA_SQL: &str = "
CREATE SCHEMA IF NOT EXISTS pgrepart;
CREATE TABLE IF NOT EXISTS pgrepart.migrations (
    id bigserial PRIMARY KEY,
    source_schema text NOT NULL,
    source_name text NOT NULL,
    target_schema text NOT NULL,
    target_name text NOT NULL,
    old_name text NOT NULL,
    slot_name text NOT NULL,
    publication_name text NOT NULL,
    target_created boolean NOT NULL,
    created_partitions text[] NOT NULL DEFAULT '{}',
    spec jsonb NOT NULL,
    phase text NOT NULL,
    cutover_mode text NOT NULL,
    cutover_requested boolean NOT NULL DEFAULT false,
    abort_requested boolean NOT NULL DEFAULT false,
    last_error text,
    applied_changes bigint NOT NULL DEFAULT 0,
    confirmed_lsn pg_lsn,
    rows_estimate bigint NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL DEFAULT now(),
    phase_since timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    -- Live figures, written every second by the `run` process working on the migration.
    runner text,
    paused boolean NOT NULL DEFAULT false,
    lag_seconds float8,
    copy_rows_per_s float8,
    apply_changes_per_s float8,
    copy_bytes bigint NOT NULL DEFAULT 0,
    rows_streamed bigint NOT NULL DEFAULT 0,
    -- Set in the transaction that builds the secondary indexes and enters streaming.
    indexes_built boolean NOT NULL DEFAULT false,
    pause_in_effect boolean NOT NULL DEFAULT false,
    total_bytes_estimate bigint NOT NULL DEFAULT 0,
    -- Cross-database cutover: set in the target's transaction that renamed the new table, with the
    -- fence id; the source's rename is still to do while the phase is not 'done'.
    target_committed_fence text,
    -- `verify` asks the running `run` to hold its applier at hold_at_lsn until hold_expires_at
    -- (a lease it renews); the run acknowledges with held_at_lsn.
    hold_at_lsn pg_lsn,
    hold_expires_at timestamptz,
    hold_owner text,
    held_at_lsn pg_lsn,
    -- The copy's rate limit set by its load governor (or --max-copy-rate) now; NULL: none.
    copy_rate_limit bigint,
    -- Materialized views over the table still to rebuild over the new one (set by the swap's
    -- transaction, each entry removed by its rebuild's): see cutover::MatViewRebuild.
    pending_matviews jsonb NOT NULL DEFAULT '[]',
    -- The apply's pace set by the load governor (or --max-apply-rate) now, changes/s; NULL: none.
    apply_rate_limit bigint,
    -- The identity of the source table and of the new table when the migration started: a resumed
    -- run refuses when either was dropped and recreated since (NULL: recorded by an older pgrepart).
    source_oid oid,
    target_oid oid,
    -- pg_current_snapshot() of the slot's exported snapshot, read while it was importable: every
    -- fresh copy snapshot must see what it counts as committed (docs/design.md §5).
    exported_snapshot text,
    -- Why the load governor holds the pace it does now (NULL: no governor).
    governor_reason text,
    -- The rollback window (`run --rollback-window`): its length as asked (seconds; NULL: none);
    -- set in the swap's transaction: its state ('open', then 'closed'), its end, and the position
    -- the reverse stream starts at (docs/design.md §11).
    rollback_window_s float8,
    window_state text,
    window_until timestamptz,
    reverse_start_lsn pg_lsn,
    -- Requests from `pgrepart finish` and `pgrepart revert [--force]`.
    finish_requested boolean NOT NULL DEFAULT false,
    revert_requested boolean NOT NULL DEFAULT false,
    revert_force boolean NOT NULL DEFAULT false,
    -- Live figures of the reverse stream, written every second by `run` during the window.
    reverse_applied_changes bigint NOT NULL DEFAULT 0,
    reverse_confirmed_lsn pg_lsn,
    reverse_lag_seconds float8,
    reverse_apply_per_s float8,
    -- Set in the revert's transaction (docs/design.md §11, after the revert): when it committed,
    -- and where the forward stream resumes (the slot, made before the revert, is older).
    reverted_at timestamptz,
    forward_start_lsn pg_lsn
);
CREATE UNIQUE INDEX IF NOT EXISTS migrations_one_active_per_table
    ON pgrepart.migrations (source_schema, source_name) WHERE phase <> 'done';
CREATE TABLE IF NOT EXISTS pgrepart.ranges (
    migration_id bigint NOT NULL REFERENCES pgrepart.migrations ON DELETE CASCADE,
    range_no int NOT NULL,
    -- Integer bounds (a single integer key; ranges recorded by older versions), and the bounds
    -- of any key as the text of each key column (NULL with NULL lo/hi: unbounded).
    lo bigint,
    hi bigint,
    lo_text text[],
    hi_text text[],
    -- Where the copy of a range copied in pieces stands (the next piece's start); NULL: at its
    -- start, or done.
    copied_to text[],
    done boolean NOT NULL DEFAULT false,
    rows_copied bigint NOT NULL DEFAULT 0,
    finished_at timestamptz,
    PRIMARY KEY (migration_id, range_no)
);
-- Keys of the old table whose row the reverse stream replaced by a row of the new table with
-- another new key (or met twice in one batch): conflict candidates, checked again against the
-- new table by `status` and under the revert's lock (docs/design.md §11).
CREATE TABLE IF NOT EXISTS pgrepart.reverse_conflicts (
    migration_id bigint NOT NULL REFERENCES pgrepart.migrations ON DELETE CASCADE,
    key text[] NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (migration_id, key)
);
";

#[derive(Debug, Clone)]
pub struct Migration {
    pub id: i64,
    pub source: QualifiedName,
    pub target: QualifiedName,
    pub old_name: String,
    pub slot_name: String,
    pub publication_name: String,
    pub target_created: bool,
    pub created_partitions: Vec<String>,
    pub spec: serde_json::Value,
    pub phase: Phase,
    pub cutover_mode: String,
    pub cutover_requested: bool,
    pub abort_requested: bool,
    pub last_error: Option<String>,
    pub applied_changes: i64,
    pub rows_estimate: i64,
    pub rows_copied: i64,
    pub ranges_total: i64,
    pub ranges_done: i64,
    pub seconds_in_phase: f64,
    pub runner: Option<String>,
    pub paused: bool,
    pub lag_seconds: Option<f64>,
    pub copy_rows_per_s: Option<f64>,
    pub apply_changes_per_s: Option<f64>,
    pub copy_bytes: i64,
    pub total_bytes_estimate: i64,
    /// Rows sent by the copy so far, committed or not (progress while a range is in flight).
    pub rows_streamed: i64,
    pub indexes_built: bool,
    /// The running `run` has stopped applying (set by it after a pause request).
    pub pause_in_effect: bool,
    /// Cross-database cutover: the target side committed (the new table has its final name) at
    /// this fence; until the phase is `done`, the source table still has to be renamed.
    pub target_committed_fence: Option<String>,
    /// `verify` asks the running `run` to hold its applier here (see `apply::Hold`)...
    pub hold_at: Option<crate::lsn::Lsn>,
    /// ...unless its lease has run out (the verify process is gone).
    pub hold_expired: bool,
    /// Set by the running `run` once its applier holds at `hold_at`.
    pub held_at: Option<crate::lsn::Lsn>,
    /// Who asked for the hold ("verify pid 123 on host").
    pub hold_owner: Option<String>,
    /// The copy's rate limit (rows/s) as the running `run` last recorded it; `None`: none.
    pub copy_rate_limit: Option<i64>,
    /// The apply's pace (changes/s) as the running `run` last recorded it; `None`: none.
    pub apply_rate_limit: Option<i64>,
    /// Materialized views the swap left to rebuild over the new table (a run that died between
    /// the swap and their rebuild); the next `run` does them.
    pub pending_matviews: Vec<crate::cutover::MatViewRebuild>,
    /// The source table's OID when the migration started (`None`: recorded by an older pgrepart).
    pub source_oid: Option<u32>,
    /// The new table's OID when the migration started.
    pub target_oid: Option<u32>,
    /// Why the load governor holds the pace it does, as the running `run` last recorded it.
    pub governor_reason: Option<String>,
    /// The rollback window (see `crate::rollback`).
    pub window: Window,
    /// When the last revert committed ("2026-01-02 03:04:05 UTC"); the migration streams forward
    /// again from then, and cuts over again only on `pgrepart cutover` (`crate::rollback::again`).
    pub reverted_at: Option<String>,
    /// Where the forward stream resumes after a revert: read in the revert's transaction. The
    /// stream starts at the later of this and the slot's confirmed position.
    pub forward_start: Option<crate::lsn::Lsn>,
}

/// The rollback window of a migration, as recorded (`run --rollback-window`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    /// The length asked for, in seconds (`None`: no window).
    pub asked_s: Option<f64>,
    /// `Some("open")` from the swap on, `Some("reverted")` from the revert's commit until the
    /// reverse slot is dropped, `Some("closed")` once the reverse stream is gone.
    pub state: Option<String>,
    /// Seconds until the window ends (negative once past), while a window is recorded.
    pub seconds_left: Option<f64>,
    /// Where the reverse stream starts: read in the swap's transaction.
    pub reverse_start: Option<crate::lsn::Lsn>,
    pub finish_requested: bool,
    pub revert_requested: bool,
    pub revert_force: bool,
    pub reverse_applied_changes: i64,
    pub reverse_confirmed: Option<crate::lsn::Lsn>,
    pub reverse_lag_seconds: Option<f64>,
    pub reverse_apply_per_s: Option<f64>,
}

impl Window {
    /// The reverse stream runs (from the swap until `finish`, the revert or the window's end).
    pub fn is_open(&self) -> bool {
        self.state.as_deref() == Some(WINDOW_OPEN)
    }
}

pub const WINDOW_OPEN: &str = "open";
pub const WINDOW_CLOSED: &str = "closed";
/// The revert committed; the reverse slot and publication are still to drop.
pub const WINDOW_REVERTED: &str = "reverted";

impl Migration {
    /// The new table's name once the swap is done: the source table's name, in the new table's
    /// schema.
    pub fn final_name(&self) -> QualifiedName {
        self.target.sibling(self.source.name.clone())
    }
}

const SELECT_MIGRATION: &str = "
SELECT m.id, m.source_schema, m.source_name, m.target_schema, m.target_name, m.old_name, m.slot_name,
       m.publication_name, m.target_created, m.created_partitions, m.spec, m.phase, m.cutover_mode,
       m.cutover_requested, m.abort_requested, m.last_error, m.applied_changes, m.rows_estimate,
       coalesce((SELECT sum(rows_copied) FROM pgrepart.ranges r WHERE r.migration_id = m.id), 0)::bigint,
       (SELECT count(*) FROM pgrepart.ranges r WHERE r.migration_id = m.id),
       (SELECT count(*) FROM pgrepart.ranges r WHERE r.migration_id = m.id AND r.done),
       extract(epoch FROM now() - m.phase_since)::float8,
       m.runner, m.paused, m.lag_seconds, m.copy_rows_per_s, m.apply_changes_per_s, m.copy_bytes,
       m.total_bytes_estimate, m.rows_streamed, m.indexes_built, m.pause_in_effect,
       m.target_committed_fence,
       m.hold_at_lsn::text, coalesce(m.hold_expires_at <= now(), false), m.held_at_lsn::text, m.hold_owner,
       m.copy_rate_limit, m.pending_matviews, m.apply_rate_limit, m.source_oid, m.target_oid,
       m.governor_reason,
       m.rollback_window_s, m.window_state, extract(epoch FROM m.window_until - now())::float8,
       m.reverse_start_lsn::text, m.finish_requested, m.revert_requested, m.revert_force,
       m.reverse_applied_changes, m.reverse_confirmed_lsn::text, m.reverse_lag_seconds, m.reverse_apply_per_s,
       to_char(m.reverted_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS \"UTC\"'), m.forward_start_lsn::text
FROM pgrepart.migrations m";

fn migration_from_row(r: &Row) -> Result<Migration> {
    let phase: String = r.get(11);
    Ok(Migration {
        id: r.get(0),
        source: QualifiedName::new(r.get::<_, String>(1), r.get::<_, String>(2)),
        target: QualifiedName::new(r.get::<_, String>(3), r.get::<_, String>(4)),
        old_name: r.get(5),
        slot_name: r.get(6),
        publication_name: r.get(7),
        target_created: r.get(8),
        created_partitions: r.get(9),
        spec: r.get(10),
        phase: Phase::parse(&phase).ok_or_else(|| {
            Error::failed(format!("unknown phase {phase:?} in pgrepart.migrations"))
        })?,
        cutover_mode: r.get(12),
        cutover_requested: r.get(13),
        abort_requested: r.get(14),
        last_error: r.get(15),
        applied_changes: r.get(16),
        rows_estimate: r.get(17),
        rows_copied: r.get(18),
        ranges_total: r.get(19),
        ranges_done: r.get(20),
        seconds_in_phase: r.get(21),
        runner: r.get(22),
        paused: r.get(23),
        lag_seconds: r.get(24),
        copy_rows_per_s: r.get(25),
        apply_changes_per_s: r.get(26),
        copy_bytes: r.get(27),
        total_bytes_estimate: r.get(28),
        rows_streamed: r.get(29),
        indexes_built: r.get(30),
        pause_in_effect: r.get(31),
        target_committed_fence: r.get(32),
        hold_at: parse_lsn(r.get(33))?,
        hold_expired: r.get(34),
        held_at: parse_lsn(r.get(35))?,
        hold_owner: r.get(36),
        copy_rate_limit: r.get(37),
        apply_rate_limit: r.get(39),
        source_oid: r.get(40),
        target_oid: r.get(41),
        governor_reason: r.get(42),
        window: Window {
            asked_s: r.get(43),
            state: r.get(44),
            seconds_left: r.get(45),
            reverse_start: parse_lsn(r.get(46))?,
            finish_requested: r.get(47),
            revert_requested: r.get(48),
            revert_force: r.get(49),
            reverse_applied_changes: r.get(50),
            reverse_confirmed: parse_lsn(r.get(51))?,
            reverse_lag_seconds: r.get(52),
            reverse_apply_per_s: r.get(53),
        },
        reverted_at: r.get(54),
        forward_start: parse_lsn(r.get(55))?,
        pending_matviews: serde_json::from_value(r.get(38)).map_err(|e| {
            Error::failed(format!(
                "unreadable pending_matviews in pgrepart.migrations: {e}"
            ))
        })?,
    })
}

fn parse_lsn(text: Option<String>) -> Result<Option<crate::lsn::Lsn>> {
    text.map(|t| {
        t.parse()
            .map_err(|e| Error::failed(format!("unreadable LSN in pgrepart.migrations: {e}")))
    })
    .transpose()
}

/// Columns added after the first release of the schema: state written by an older pgrepart gains
/// them on first use. Keep in step with SCHEMA_SQL; `schema_exists` checks the newest column.
const UPGRADE_SQL: &str = "
ALTER TABLE pgrepart.migrations
    ADD COLUMN IF NOT EXISTS runner text,
    ADD COLUMN IF NOT EXISTS paused boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS lag_seconds float8,
    ADD COLUMN IF NOT EXISTS copy_rows_per_s float8,
    ADD COLUMN IF NOT EXISTS apply_changes_per_s float8,
    ADD COLUMN IF NOT EXISTS copy_bytes bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS rows_streamed bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS total_bytes_estimate bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS indexes_built boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS pause_in_effect boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS target_committed_fence text,
    ADD COLUMN IF NOT EXISTS hold_at_lsn pg_lsn,
    ADD COLUMN IF NOT EXISTS hold_expires_at timestamptz,
    ADD COLUMN IF NOT EXISTS hold_owner text,
    ADD COLUMN IF NOT EXISTS held_at_lsn pg_lsn,
    ADD COLUMN IF NOT EXISTS copy_rate_limit bigint,
    ADD COLUMN IF NOT EXISTS pending_matviews jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN IF NOT EXISTS apply_rate_limit bigint,
    ADD COLUMN IF NOT EXISTS source_oid oid,
    ADD COLUMN IF NOT EXISTS target_oid oid,
    ADD COLUMN IF NOT EXISTS exported_snapshot text,
    ADD COLUMN IF NOT EXISTS governor_reason text,
    ADD COLUMN IF NOT EXISTS rollback_window_s float8,
    ADD COLUMN IF NOT EXISTS window_state text,
    ADD COLUMN IF NOT EXISTS window_until timestamptz,
    ADD COLUMN IF NOT EXISTS reverse_start_lsn pg_lsn,
    ADD COLUMN IF NOT EXISTS finish_requested boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS revert_requested boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS revert_force boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS reverse_applied_changes bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS reverse_confirmed_lsn pg_lsn,
    ADD COLUMN IF NOT EXISTS reverse_lag_seconds float8,
    ADD COLUMN IF NOT EXISTS reverse_apply_per_s float8,
    ADD COLUMN IF NOT EXISTS reverted_at timestamptz,
    ADD COLUMN IF NOT EXISTS forward_start_lsn pg_lsn;
CREATE TABLE IF NOT EXISTS pgrepart.reverse_conflicts (
    migration_id bigint NOT NULL REFERENCES pgrepart.migrations ON DELETE CASCADE,
    key text[] NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (migration_id, key)
);
ALTER TABLE pgrepart.ranges
    ADD COLUMN IF NOT EXISTS lo_text text[],
    ADD COLUMN IF NOT EXISTS hi_text text[],
    ADD COLUMN IF NOT EXISTS copied_to text[];
";

pub async fn ensure_schema(client: &impl GenericClient) -> Result<()> {
    client
        .batch_execute(&format!("{SCHEMA_SQL}{UPGRADE_SQL}"))
        .await
        .map_err(|e| {
            Error::db(
                "creating pgrepart's state tables (schema pgrepart) in the target database",
                e,
            )
            .with_hint("the connecting role needs CREATE on the target database")
        })
}

async fn schema_exists(client: &impl GenericClient) -> Result<bool> {
    let row = client
        .query_one(
            "SELECT to_regclass('pgrepart.migrations') IS NOT NULL, \
                    EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('pgrepart.migrations') \
                            AND attname IN ('governor_reason', 'forward_start_lsn') AND NOT attisdropped \
                            HAVING count(*) = 2)",
            &[],
        )
        .await
        .map_err(|e| Error::db("looking for pgrepart's state", e))?;
    let (exists, current): (bool, bool) = (row.get(0), row.get(1));
    if exists && !current {
        client
            .batch_execute(UPGRADE_SQL)
            .await
            .map_err(|e| Error::db("upgrading pgrepart's state tables", e))?;
    }
    Ok(exists)
}

/// The newest migration of `source` (active or done).
pub async fn latest(
    client: &impl GenericClient,
    source: &QualifiedName,
) -> Result<Option<Migration>> {
    if !schema_exists(client).await? {
        return Ok(None);
    }
    let sql = format!(
        "{SELECT_MIGRATION} WHERE m.source_schema = $1 AND m.source_name = $2 ORDER BY m.id DESC LIMIT 1"
    );
    let row = client
        .query_opt(&sql, &[&source.schema, &source.name])
        .await
        .map_err(|e| Error::db("reading pgrepart.migrations", e))?;
    row.as_ref().map(migration_from_row).transpose()
}

/// Every migration recorded in this database, newest first.
pub async fn all(client: &impl GenericClient) -> Result<Vec<Migration>> {
    if !schema_exists(client).await? {
        return Ok(Vec::new());
    }
    let sql = format!("{SELECT_MIGRATION} ORDER BY m.id DESC");
    let rows = client
        .query(&sql, &[])
        .await
        .map_err(|e| Error::db("reading pgrepart.migrations", e))?;
    rows.iter().map(migration_from_row).collect()
}

pub async fn get(client: &impl GenericClient, id: i64) -> Result<Migration> {
    let sql = format!("{SELECT_MIGRATION} WHERE m.id = $1");
    let row = client
        .query_one(&sql, &[&id])
        .await
        .map_err(|e| Error::db("reading pgrepart.migrations", e))?;
    migration_from_row(&row)
}

pub struct NewMigration<'a> {
    pub source: &'a QualifiedName,
    pub target: &'a QualifiedName,
    pub old_name: &'a str,
    pub target_created: bool,
    pub created_partitions: Vec<String>,
    pub spec: serde_json::Value,
    pub cutover_mode: &'a str,
    pub rows_estimate: i64,
    pub total_bytes_estimate: i64,
    /// The source database's OID: slot names are unique per cluster, and every database keeps
    /// its own migration ids, so the name carries both.
    pub source_db_oid: u32,
    /// The source table's and the new table's OIDs (see `Migration::source_oid`).
    pub source_oid: u32,
    pub target_oid: u32,
}

/// The replication slot's (and publication's) name: `pgrepart_<db oid>_<id>_<table>`, at most 63
/// bytes, of the characters a slot name allows.
pub fn slot_name(source_db_oid: u32, id: i64, table: &str) -> String {
    let base = crate::pg::ident::slot_safe(table);
    crate::pg::ident::truncate_ident(&format!("pgrepart_{source_db_oid}_{id}_{base}"))
}

/// Inserts the migration row and derives the slot and publication names from its id.
pub async fn insert(client: &impl GenericClient, m: NewMigration<'_>) -> Result<Migration> {
    let row = client
        .query_one(
            "INSERT INTO pgrepart.migrations (source_schema, source_name, target_schema, target_name, old_name, \
               slot_name, publication_name, target_created, created_partitions, spec, phase, cutover_mode, rows_estimate, \
               total_bytes_estimate, source_oid, target_oid) \
             VALUES ($1, $2, $3, $4, $5, '', '', $6, $7, $8, 'copying', $9, $10, $11, $12, $13) RETURNING id",
            &[
                &m.source.schema,
                &m.source.name,
                &m.target.schema,
                &m.target.name,
                &m.old_name,
                &m.target_created,
                &m.created_partitions,
                &m.spec,
                &m.cutover_mode,
                &m.rows_estimate,
                &m.total_bytes_estimate,
                &m.source_oid,
                &m.target_oid,
            ],
        )
        .await
        .map_err(|e| {
            if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) {
                Error::refused(format!("another migration of {} is already in progress", m.source))
                    .with_hint("watch it with `pgrepart status`, or remove it with `pgrepart abort`")
            } else {
                Error::db("recording the migration", e)
            }
        })?;
    let id: i64 = row.get(0);
    let slot = slot_name(m.source_db_oid, id, &m.source.name);
    client
        .execute(
            "UPDATE pgrepart.migrations SET slot_name = $2, publication_name = $2 WHERE id = $1",
            &[&id, &slot],
        )
        .await
        .map_err(|e| Error::db("recording the migration", e))?;
    get(client, id).await
}

pub async fn set_cutover_mode(client: &impl GenericClient, id: i64, mode: &str) -> Result<()> {
    client
        .execute(
            "UPDATE pgrepart.migrations SET cutover_mode = $2, updated_at = now() WHERE id = $1",
            &[&id, &mode],
        )
        .await
        .map_err(|e| Error::db("recording the cutover mode", e))?;
    Ok(())
}

pub async fn set_phase(
    client: &impl GenericClient,
    id: i64,
    phase: Phase,
    error: Option<&str>,
) -> Result<()> {
    client
        .execute(
            "UPDATE pgrepart.migrations SET phase = $2, last_error = $3, \
               phase_since = CASE WHEN phase = $2 THEN phase_since ELSE now() END, updated_at = now(), \
               finished_at = CASE WHEN $2 IN ('done', 'reverted') THEN now() END \
             WHERE id = $1",
            &[&id, &phase.as_str(), &error],
        )
        .await
        .map_err(|e| Error::db("recording the migration's phase", e))?;
    Ok(())
}

/// The statement, run inside the target's cutover transaction, that records the target side of a
/// cross-database cutover as committed (pure).
pub fn mark_target_committed_sql(id: i64, fence_id: &str) -> String {
    format!(
        "UPDATE pgrepart.migrations SET target_committed_fence = {}, updated_at = now() WHERE id = {id}",
        crate::pg::ident::quote_literal(fence_id)
    )
}

/// Marks the secondary indexes built and enters `streaming` (inside the index-build transaction).
pub async fn mark_streaming(client: &impl GenericClient, id: i64) -> Result<()> {
    client
        .execute(
            "UPDATE pgrepart.migrations SET indexes_built = true WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(|e| Error::db("recording the index build", e))?;
    set_phase(client, id, Phase::Streaming, None).await
}

pub async fn set_error(client: &impl GenericClient, id: i64, error: Option<&str>) -> Result<()> {
    client
        .execute(
            "UPDATE pgrepart.migrations SET last_error = $2, updated_at = now() WHERE id = $1",
            &[&id, &error],
        )
        .await
        .map_err(|e| Error::db("recording the migration's error", e))?;
    Ok(())
}

/// Clears `last_error` when it starts with `prefix` (a condition that no longer holds).
pub async fn clear_error_if(client: &impl GenericClient, id: i64, prefix: &str) -> Result<()> {
    client
        .execute(
            "UPDATE pgrepart.migrations SET last_error = NULL, updated_at = now() \
             WHERE id = $1 AND starts_with(coalesce(last_error, ''), $2)",
            &[&id, &prefix],
        )
        .await
        .map_err(|e| Error::db("clearing the migration's error", e))?;
    Ok(())
}

/// The live figures a running `run` writes every second.
#[derive(Debug, Clone, Default)]
pub struct LiveFigures {
    pub applied_changes: i64,
    pub confirmed: crate::lsn::Lsn,
    pub lag_seconds: Option<f64>,
    pub copy_rows_per_s: Option<f64>,
    pub apply_changes_per_s: Option<f64>,
    pub copy_bytes: i64,
    pub rows_streamed: i64,
    pub pause_in_effect: bool,
    /// Where the applier holds for `verify`, if it does.
    pub held_at: Option<crate::lsn::Lsn>,
    /// The copy's rate limit now (rows/s), if any.
    pub copy_rate_limit: Option<i64>,
    /// The apply's pace now (changes/s), if any.
    pub apply_rate_limit: Option<i64>,
    /// Why the load governor holds the pace it does (none without a governor).
    pub governor_reason: Option<String>,
}

pub async fn record_progress(client: &impl GenericClient, id: i64, f: &LiveFigures) -> Result<()> {
    client
        .execute(
            "UPDATE pgrepart.migrations SET applied_changes = $2, confirmed_lsn = $3::text::pg_lsn, lag_seconds = $4, \
               copy_rows_per_s = $5, apply_changes_per_s = $6, copy_bytes = greatest(copy_bytes, $7), rows_streamed = greatest(rows_streamed, $8), pause_in_effect = $9, \
               held_at_lsn = CASE WHEN hold_at_lsn IS NULL THEN NULL ELSE $10::text::pg_lsn END, copy_rate_limit = $11, apply_rate_limit = $12, governor_reason = $13, updated_at = now() \
             WHERE id = $1",
            &[&id, &f.applied_changes, &f.confirmed.to_string(), &f.lag_seconds, &f.copy_rows_per_s, &f.apply_changes_per_s, &f.copy_bytes, &f.rows_streamed, &f.pause_in_effect, &f.held_at.map(|l| l.to_string()), &f.copy_rate_limit, &f.apply_rate_limit, &f.governor_reason],
        )
        .await
        .map_err(|e| Error::db("recording progress", e))?;
    Ok(())
}

/// The first key of the advisory lock a `run` holds on the state database while it runs a
/// migration (the second is the migration's id).
pub const RUN_LOCK: i32 = 1886351984;

/// Whether a `run` runs migration `id` now: it holds the migration's lock, with its replication
/// stream open or parked (the slot is inactive while the stream is parked).
pub async fn run_attached(client: &impl GenericClient, id: i64) -> Result<bool> {
    Ok(run_lock_holder(client, id).await?.is_some())
}

/// The server process of the `run` session that holds migration `id`'s lock, if any.
pub async fn run_lock_holder(client: &impl GenericClient, id: i64) -> Result<Option<i32>> {
    let row = client
        .query_opt(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
                AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                AND classid = $1::int::oid AND objid = $2::int::oid AND objsubid = 2 LIMIT 1",
            &[&RUN_LOCK, &(id as i32)],
        )
        .await
        .map_err(|e| Error::db("looking for the migration's run", e))?;
    Ok(row.and_then(|r| r.get(0)))
}

/// Records which process works on the migration ("pid 123 on host"), or none.
pub async fn set_runner(client: &impl GenericClient, id: i64, runner: Option<&str>) -> Result<()> {
    client
        .execute(
            "UPDATE pgrepart.migrations SET runner = $2, updated_at = now() WHERE id = $1",
            &[&id, &runner],
        )
        .await
        .map_err(|e| Error::db("recording the runner", e))?;
    Ok(())
}

/// `verify` asks the running `run` to hold at `at` for `lease_s` seconds (renewed with
/// `renew_hold`). Refused (`false`) while another live hold of a different owner is in place.
pub async fn request_hold(
    client: &impl GenericClient,
    id: i64,
    at: crate::lsn::Lsn,
    lease_s: f64,
    owner: &str,
) -> Result<bool> {
    let n = client
        .execute(
            "UPDATE pgrepart.migrations SET hold_at_lsn = $2::text::pg_lsn, \
               hold_expires_at = now() + $3 * interval '1 second', hold_owner = $4, held_at_lsn = NULL, updated_at = now() \
             WHERE id = $1 AND (hold_at_lsn IS NULL OR hold_expires_at <= now() OR hold_owner = $4)",
            &[&id, &at.to_string(), &lease_s, &owner],
        )
        .await
        .map_err(|e| Error::db("asking the run to hold", e))?;
    Ok(n == 1)
}

/// Extends the lease of the hold at `at`; `false` when that hold is gone (expired and cleared).
pub async fn renew_hold(
    client: &impl GenericClient,
    id: i64,
    at: crate::lsn::Lsn,
    lease_s: f64,
) -> Result<bool> {
    let n = client
        .execute(
            "UPDATE pgrepart.migrations SET hold_expires_at = now() + $3 * interval '1 second' \
             WHERE id = $1 AND hold_at_lsn = $2::text::pg_lsn AND hold_expires_at > now()",
            &[&id, &at.to_string(), &lease_s],
        )
        .await
        .map_err(|e| Error::db("renewing the hold", e))?;
    Ok(n == 1)
}

/// Lifts the hold: by its owner when done (`owner`), or by the run when its lease ran out (`None`).
pub async fn clear_hold(client: &impl GenericClient, id: i64, owner: Option<&str>) -> Result<bool> {
    let n = client
        .execute(
            "UPDATE pgrepart.migrations SET hold_at_lsn = NULL, hold_expires_at = NULL, hold_owner = NULL, \
               held_at_lsn = NULL, updated_at = now() \
             WHERE id = $1 AND hold_at_lsn IS NOT NULL \
               AND CASE WHEN $2::text IS NULL THEN hold_expires_at <= now() ELSE hold_owner = $2 END",
            &[&id, &owner],
        )
        .await
        .map_err(|e| Error::db("lifting the hold", e))?;
    Ok(n == 1)
}

pub async fn set_paused(client: &impl GenericClient, id: i64, paused: bool) -> Result<()> {
    client
        .execute(
            "UPDATE pgrepart.migrations SET paused = $2, updated_at = now() WHERE id = $1",
            &[&id, &paused],
        )
        .await
        .map_err(|e| Error::db("recording pause", e))?;
    Ok(())
}

pub async fn request(client: &impl GenericClient, id: i64, what: Request) -> Result<()> {
    let column = match what {
        Request::Cutover => "cutover_requested",
        Request::Abort => "abort_requested",
        Request::Finish => "finish_requested",
        Request::Revert => "revert_requested",
        Request::RevertForce => "revert_force = true, revert_requested",
    };
    client
        .execute(
            &format!(
                "UPDATE pgrepart.migrations SET {column} = true, updated_at = now() WHERE id = $1"
            ),
            &[&id],
        )
        .await
        .map_err(|e| Error::db("recording the request", e))?;
    Ok(())
}

#[derive(Debug, Clone, Copy)]
pub enum Request {
    Cutover,
    Abort,
    /// End the rollback window now (`pgrepart finish`).
    Finish,
    /// Swap back (`pgrepart revert`), with `--force` keeping the newest row of a conflicting key.
    Revert,
    RevertForce,
}

/// Withdraws a revert request (refused, or done): the run says why in `last_error`.
pub async fn clear_revert_request(client: &impl GenericClient, id: i64) -> Result<()> {
    client
        .execute(
            "UPDATE pgrepart.migrations SET revert_requested = false, revert_force = false, updated_at = now() WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(|e| Error::db("recording the revert request", e))?;
    Ok(())
}

/// Records the window's length asked for (`run --rollback-window`); during an open window, its
/// end moves to the swap's time plus the new length (none: the window ends now).
pub async fn set_rollback_window(
    client: &impl GenericClient,
    id: i64,
    seconds: Option<f64>,
) -> Result<()> {
    client
        .execute(
            "UPDATE pgrepart.migrations SET rollback_window_s = $2::float8,                window_until = CASE WHEN window_state = 'open' THEN finished_at + coalesce($2::float8, 0) * interval '1 second' ELSE window_until END,                updated_at = now() WHERE id = $1",
            &[&id, &seconds],
        )
        .await
        .map_err(|e| Error::db("recording the rollback window", e))?;
    Ok(())
}

/// Closes the window (its slot and publication are gone).
pub async fn close_window(client: &impl GenericClient, id: i64) -> Result<()> {
    client
        .execute(
            "UPDATE pgrepart.migrations SET window_state = 'closed', finish_requested = false,                revert_requested = false, revert_force = false, updated_at = now() WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(|e| Error::db("closing the rollback window", e))?;
    Ok(())
}

/// The live figures of the reverse stream (every second during the window).
pub async fn record_reverse_progress(
    client: &impl GenericClient,
    id: i64,
    applied: i64,
    confirmed: crate::lsn::Lsn,
    lag_seconds: Option<f64>,
    per_s: Option<f64>,
    paused: bool,
) -> Result<()> {
    client
        .execute(
            "UPDATE pgrepart.migrations SET reverse_applied_changes = $2, reverse_confirmed_lsn = $3::text::pg_lsn, \
             reverse_lag_seconds = $4, reverse_apply_per_s = $5, pause_in_effect = $6, updated_at = now() WHERE id = $1",
            &[&id, &applied, &confirmed.to_string(), &lag_seconds, &per_s, &paused],
        )
        .await
        .map_err(|e| Error::db("recording the reverse stream's progress", e))?;
    Ok(())
}

pub async fn insert_ranges(client: &impl GenericClient, id: i64, ranges: &[Bounds]) -> Result<()> {
    // One statement, however many ranges. A bound is an array (one element per key column);
    // arrays of arrays do not nest in a parameter, so each is sent as its array literal.
    let text = |b: &Option<Bound>| b.as_ref().map(|v| array_literal(v));
    let los: Vec<Option<String>> = ranges.iter().map(|r| text(&r.lo)).collect();
    let his: Vec<Option<String>> = ranges.iter().map(|r| text(&r.hi)).collect();
    // Integer bounds are also kept in lo/hi, where older readers (and verify) look.
    let ints = as_int_ranges(ranges);
    let int_lo: Vec<Option<i64>> = ints.as_ref().map_or(vec![None; ranges.len()], |r| {
        r.iter().map(|r| r.lo).collect()
    });
    let int_hi: Vec<Option<i64>> = ints.as_ref().map_or(vec![None; ranges.len()], |r| {
        r.iter().map(|r| r.hi).collect()
    });
    client
        .execute(
            "INSERT INTO pgrepart.ranges (migration_id, range_no, lo, hi, lo_text, hi_text) \
             SELECT $1, (r.n - 1)::int, r.lo, r.hi, r.lo_text::text[], r.hi_text::text[] \
             FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[]) WITH ORDINALITY AS r(lo, hi, lo_text, hi_text, n)",
            &[&id, &int_lo, &int_hi, &los, &his],
        )
        .await
        .map_err(|e| Error::db("recording the key ranges", e))?;
    Ok(())
}

/// `{"a","b"}`: a text array's literal, every element quoted.
fn array_literal(values: &[String]) -> String {
    let quoted: Vec<String> = values
        .iter()
        .map(|v| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{{}}}", quoted.join(","))
}

/// A recorded range: its bounds, whether it is copied, and where a copy in pieces stands.
#[derive(Debug, Clone)]
pub struct SavedRange {
    pub bounds: Bounds,
    pub done: bool,
    pub copied_to: Option<Vec<String>>,
}

/// The ranges in range order. Ranges recorded by an older pgrepart have integer bounds only.
pub async fn ranges(client: &impl GenericClient, id: i64) -> Result<Vec<SavedRange>> {
    let rows = client
        .query(
            "SELECT lo, hi, lo_text, hi_text, done, copied_to FROM pgrepart.ranges WHERE migration_id = $1 ORDER BY range_no",
            &[&id],
        )
        .await
        .map_err(|e| Error::db("reading the key ranges", e))?;
    Ok(rows
        .iter()
        .map(|r| {
            let bound = |int: Option<i64>, text: Option<Vec<String>>| {
                text.or_else(|| int.map(|v| vec![v.to_string()]))
            };
            SavedRange {
                bounds: Bounds {
                    lo: bound(r.get(0), r.get(2)),
                    hi: bound(r.get(1), r.get(3)),
                },
                done: r.get(4),
                copied_to: r.get(5),
            }
        })
        .collect())
}

/// Records the exported snapshot's `pg_current_snapshot()` (setup, while it is importable).
pub async fn set_exported_snapshot(
    client: &impl GenericClient,
    id: i64,
    snapshot: &str,
) -> Result<()> {
    client
        .execute(
            "UPDATE pgrepart.migrations SET exported_snapshot = $2 WHERE id = $1",
            &[&id, &snapshot],
        )
        .await
        .map_err(|e| Error::db("recording the exported snapshot", e))?;
    Ok(())
}

/// The exported snapshot's `pg_current_snapshot()`, if recorded.
pub async fn exported_snapshot(client: &impl GenericClient, id: i64) -> Result<Option<String>> {
    let row = client
        .query_one(
            "SELECT exported_snapshot FROM pgrepart.migrations WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(|e| Error::db("reading the exported snapshot", e))?;
    Ok(row.get(0))
}

/// A piece of a range copied: the range's copy stood at `from` (`copied_to`, `None`: its start)
/// and now stands at `to` (`None`: its end, the range is done).
pub struct RangeMark<'a> {
    pub id: i64,
    pub range_no: usize,
    pub from: Option<&'a Vec<String>>,
    pub to: Option<&'a Vec<String>>,
    pub rows: u64,
}

/// Records a copied piece of a range (the whole range, or the last piece: done), in the copy's
/// own transaction; false when the range's copy no longer stands where the piece began (the
/// caller then rolls the copy back).
pub async fn mark_range_copied(client: &impl GenericClient, mark: &RangeMark<'_>) -> Result<bool> {
    // Only a range whose copy stands where this piece began: a copy that another attempt made
    // meanwhile (its commit still in flight when that attempt was stopped) finds 0 rows here,
    // after waiting for that commit on the row's lock, and rolls its own copy back.
    let marked = client
        .execute(
            "UPDATE pgrepart.ranges SET done = $4::text[] IS NULL, copied_to = $4::text[], \
             rows_copied = rows_copied + $3, \
             finished_at = CASE WHEN $4::text[] IS NULL THEN now() END \
             WHERE migration_id = $1 AND range_no = $2 AND NOT done \
             AND copied_to IS NOT DISTINCT FROM $5::text[]",
            &[
                &mark.id,
                &(mark.range_no as i32),
                &(mark.rows as i64),
                &mark.to,
                &mark.from,
            ],
        )
        .await
        .map_err(|e| Error::db("recording a copied range", e))?;
    Ok(marked == 1)
}

/// Removes the migration's state, and the schema when nothing else is left in it.
pub async fn delete(client: &Client, id: i64) -> Result<()> {
    client
        .execute("DELETE FROM pgrepart.migrations WHERE id = $1", &[&id])
        .await
        .map_err(|e| Error::db("removing the migration's state", e))?;
    let left: i64 = client
        .query_one("SELECT count(*) FROM pgrepart.migrations", &[])
        .await
        .map_err(|e| Error::db("removing the migration's state", e))?
        .get(0);
    if left == 0 {
        client
            .batch_execute("DROP SCHEMA pgrepart CASCADE")
            .await
            .map_err(|e| Error::db("dropping schema pgrepart", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_recorded_as_array_literals() {
        assert_eq!(
            array_literal(&["1".into(), "a b".into()]),
            "{\"1\",\"a b\"}"
        );
        assert_eq!(
            array_literal(&["q\"uote".into(), "back\\slash".into(), "".into()]),
            "{\"q\\\"uote\",\"back\\\\slash\",\"\"}"
        );
    }

    #[test]
    fn slot_names_differ_per_database_and_fit_the_server_limit() {
        assert_eq!(
            slot_name(16384, 1, "Orders-Flat"),
            "pgrepart_16384_1_orders_flat"
        );
        // Two databases of one cluster, each with its migration 1 of a same-named table.
        assert_ne!(slot_name(16384, 1, "orders"), slot_name(16385, 1, "orders"));
        let long = slot_name(u32::MAX, i64::MAX, &"x".repeat(100));
        assert_eq!(long.len(), 63);
        assert!(
            long.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        );
    }

    #[test]
    fn phases_round_trip_through_their_names() {
        for p in [
            Phase::Copying,
            Phase::Streaming,
            Phase::CuttingOver,
            Phase::Done,
            Phase::Failed,
            Phase::Reverted,
        ] {
            assert_eq!(Phase::parse(p.as_str()), Some(p));
            assert_eq!(
                serde_json::to_string(&p).unwrap(),
                format!("\"{}\"", p.as_str())
            );
        }
        assert_eq!(Phase::parse("paused"), None);
    }
}
