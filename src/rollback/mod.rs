//! The rollback window (`run --rollback-window`): after the swap, every change made to the new
//! table is applied back to the old one, so that `pgrepart revert` can swap back without losing a
//! write; `pgrepart finish` (or the window's end) stops it.
//!
//! ```text
//! before the swap:  CREATE PUBLICATION <rev> FOR TABLE T_new (publish_via_partition_root)
//!                   pg_create_logical_replication_slot(<rev>, 'pgoutput')   (waits for running txns)
//! in the swap:      renames ... ; reverse_start_lsn = pg_current_wal_insert_lsn(); COMMIT
//! window:           T (partitioned) ──<rev> from reverse_start_lsn──► applier ──► T_old (by T_old's key)
//! revert:           forward slot on T_old first (`again`); lock T, fence, drain, swap back (the
//!                   cutover's swap, reversed), phase streaming from F, COMMIT; drop <rev>; the
//!                   run streams forward again and cuts over again on `pgrepart cutover`
//! finish / end:     drop <rev> slot and publication; --drop-old now
//! ```
//! Why the stream starts exactly at the swap: docs/design.md §11.
//!
//! During the window the old table is the reverse stream's target: the swap moves its row
//! triggers, policies, RLS switches and publication memberships to the new table (none of them
//! fires or filters for pgrepart's writes), and the revert moves them back; so it does with the
//! foreign keys both ways, which the cutover moves to the new table (see `fks`).
//!
//! Across databases (`--target`) the reverse slot is on the target and the revert is two commits
//! (see `cross`); the window's code here takes the slot's side from the state's connection, which
//! is the source's database otherwise.

pub mod again;
pub mod conflicts;
pub mod cross;
pub mod fks;
mod revert;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_postgres::Client;

use crate::apply::sql::{Narrow, Shape};
use crate::apply::{Applier, ApplierConfig, Router};
use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::migration::pipeline::{self, Pipeline};
use crate::monitor::{Rate, Snapshot};
use crate::pg::catalog::{self, CarryOver, TableInfo};
use crate::pg::ident::{QualifiedName, quote_ident};
use crate::replication::ReplicationClient;
use crate::state::{self, Migration, Phase, Window};

/// The reverse slot's (and publication's) name, from the forward one's:
/// `pgrepart_r_<db oid>_<id>_<table>`, at most 63 bytes.
pub fn reverse_name(slot: &str) -> String {
    let rest = slot.strip_prefix("pgrepart_").unwrap_or(slot);
    crate::pg::ident::truncate_ident(&format!("pgrepart_r_{rest}"))
}

/// What the window does next (pure): a revert asked for goes first, then `finish`, then the
/// window's end; otherwise it streams on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowStep {
    Stream,
    Revert { force: bool },
    Finish { why: &'static str },
}

pub fn window_step(w: &Window) -> WindowStep {
    if w.revert_requested {
        WindowStep::Revert {
            force: w.revert_force,
        }
    } else if w.finish_requested {
        WindowStep::Finish {
            why: "`pgrepart finish`",
        }
    } else if w.seconds_left.is_some_and(|s| s <= 0.0) {
        WindowStep::Finish {
            why: "the window ended",
        }
    } else {
        WindowStep::Stream
    }
}

/// A migration whose window `run` must serve (or clean up after a revert that committed).
pub fn window_pending(m: &Migration) -> bool {
    window_pending_in(m.phase, &m.window)
}

/// `window_pending` (pure).
fn window_pending_in(phase: Phase, w: &Window) -> bool {
    (matches!(phase, Phase::Done | Phase::Reverted) && w.is_open()) || reverted_cleanup(w)
}

/// The revert committed and its cleanup (the reverse slot and publication) is still to do.
fn reverted_cleanup(w: &Window) -> bool {
    w.state.as_deref() == Some(state::WINDOW_REVERTED)
}

/// In the swap's transaction, after the renames (pure): the window opens, and the reverse
/// stream's start is read while the transaction holds ACCESS EXCLUSIVE on both tables
/// (design.md §11).
pub fn window_start_sql(migration_id: i64) -> String {
    format!(
        "UPDATE pgrepart.migrations SET window_state = '{}', \
         window_until = now() + coalesce(rollback_window_s, 0) * interval '1 second', \
         reverse_start_lsn = pg_current_wal_insert_lsn(), finish_requested = false, \
         revert_requested = false, revert_force = false WHERE id = {migration_id}",
        state::WINDOW_OPEN
    )
}

/// In the revert's transaction (pure): the phase, set with the swap. The same-database revert
/// then sets the state streaming forward again (`again::streaming_again_sql`), later in the same
/// transaction.
pub fn reverted_sql(migration_id: i64) -> String {
    format!(
        "UPDATE pgrepart.migrations SET phase = 'reverted', phase_since = now(), finished_at = now(), \
         updated_at = now(), last_error = NULL, revert_requested = false, revert_force = false \
         WHERE id = {migration_id}"
    )
}

/// What the swap carried to the table now in use, taken off the table that steps aside (`old`,
/// quoted), in the same transaction (pure): its row triggers and policies (which would fire or
/// filter for the reverse stream's writes), its RLS switches, its publication memberships.
/// The revert carries them back.
pub fn strip_statements(old: &str, carry: &CarryOver) -> Vec<String> {
    let mut sql = Vec::new();
    for t in &carry.triggers {
        sql.push(format!(
            "DROP TRIGGER IF EXISTS {} ON {old}",
            quote_ident(&t.name)
        ));
    }
    for p in &carry.policies {
        sql.push(format!(
            "DROP POLICY IF EXISTS {} ON {old}",
            quote_ident(&p.name)
        ));
    }
    if carry.rls_forced {
        sql.push(format!("ALTER TABLE {old} NO FORCE ROW LEVEL SECURITY"));
    }
    if carry.rls_enabled {
        sql.push(format!("ALTER TABLE {old} DISABLE ROW LEVEL SECURITY"));
    }
    for p in &carry.publications {
        sql.push(format!("ALTER PUBLICATION {p} DROP TABLE {old}"));
    }
    sql
}

/// The line that says what `strip_statements` took off `table` (pure); `None` when nothing.
pub fn strip_summary(table: &str, carry: &CarryOver) -> Option<String> {
    let mut what = Vec::new();
    if !carry.triggers.is_empty() {
        let names: Vec<&str> = carry.triggers.iter().map(|t| t.name.as_str()).collect();
        what.push(format!("trigger(s) {}", names.join(", ")));
    }
    if !carry.policies.is_empty() {
        let names: Vec<&str> = carry.policies.iter().map(|p| p.name.as_str()).collect();
        what.push(format!("policy(ies) {}", names.join(", ")));
    }
    if carry.rls_enabled {
        what.push("row level security".into());
    }
    if !carry.publications.is_empty() {
        what.push(format!("membership in {}", carry.publications.join(", ")));
    }
    (!what.is_empty()).then(|| {
        format!(
            "taken off {table} (now on the table in use, and moved back by a revert): {}",
            what.join("; ")
        )
    })
}

/// The reverse applier's target (pure): the old table, rows found by the new table's key
/// (`new_key`), replaced by the old one's (`old_key`, which must be part of the new key).
/// `columns` are the new table's replicated columns (name, type) in stream order.
pub fn reverse_shape(
    columns: &[(String, String)],
    new_key: &[String],
    old_key: &[String],
    old: QualifiedName,
    migration_id: i64,
) -> Result<Shape> {
    let position = |name: &String| columns.iter().position(|(c, _)| c == name);
    if let Some(missing) = old_key.iter().find(|k| !new_key.contains(k)) {
        return Err(Error::refused(format!(
            "the old table's key column {missing} is not part of the new table's key ({}): the reverse stream could not find the old table's rows",
            new_key.join(", ")
        ))
        .with_hint("run without --rollback-window (or with --rollback-window 0)"));
    }
    let key: Option<Vec<usize>> = new_key.iter().map(position).collect();
    let narrow: Option<Vec<usize>> = old_key.iter().map(position).collect();
    let (Some(key), Some(narrow)) = (key, narrow) else {
        return Err(Error::failed(
            "a key column of the new table is not among its replicated columns",
        ));
    };
    Ok(Shape {
        target: old,
        columns: columns.to_vec(),
        key,
        partitioned: false,
        route: vec![],
        narrow: Some(Narrow {
            key: narrow,
            migration_id,
        }),
    })
}

/// `--rollback-window` refuses foreign keys a revert could not bring back (see `fks`), naming
/// each. `inbound` are the keys onto the table with what the cutover would do with each.
pub async fn refuse_foreign_keys(
    client: &Client,
    table: &QualifiedName,
    inbound: &[(
        crate::dependents::fk::InboundFk,
        crate::dependents::fk::InboundAction,
    )],
) -> Result<()> {
    let refused = fks::window_refusals(&fks::self_references(client, table).await?, inbound);
    if refused.is_empty() {
        return Ok(());
    }
    Err(Error::refused(format!(
        "--rollback-window cannot bring these foreign keys back at a revert: {}",
        refused.join("; ")
    ))
    .with_hint("run without --rollback-window (or with --rollback-window 0), or drop those foreign keys first"))
}

/// What `plan` says of `--rollback-window` (pure): `old_key` is the table's key, `new_key` the
/// generated table's (`None` for an `--into` table), `cross_db` what refuses a window across
/// databases (`cross::target_refusals`; `None` in one database), `fks` the foreign keys that
/// refuse it (`fks::window_refusals`).
pub fn plan_check(
    old_key: &[String],
    new_key: Option<&[String]>,
    cross_db: Option<Vec<String>>,
    fks: Option<String>,
) -> crate::preflight::Check {
    use crate::preflight::{Check, Status};
    let check = |status, detail: String, hint: Option<&str>| Check {
        name: "rollback window",
        status,
        detail,
        hint: hint.map(str::to_string),
    };
    if let Some(why) = cross_db.as_ref().filter(|w| !w.is_empty()) {
        return check(
            Status::Fail,
            format!(
                "--rollback-window with --target runs the reverse stream from the target back to the source: {}",
                why.join("; ")
            ),
            Some("fix that, or run without --rollback-window"),
        );
    }
    if let Some(fks) = fks {
        return check(
            Status::Fail,
            format!("--rollback-window cannot bring these foreign keys back at a revert: {fks}"),
            Some("run without --rollback-window, or drop those foreign keys first"),
        );
    }
    match new_key {
        Some(new_key) if new_key.len() > old_key.len() => check(
            Status::Warn,
            format!(
                "after the cutover the key is ({}), so a row may reuse a key ({}) another row has: the old table can hold only one of them. Such keys are conflicts: counted and named in `pgrepart status`, the old table keeps the newest, and `pgrepart revert` refuses while there are any (--force keeps the newest)",
                new_key.join(", "),
                old_key.join(", ")
            ),
            Some("make the application keep the old key unique during the window"),
        ),
        Some(_) => check(
            Status::Pass,
            "the key stays the same: every row of the new table fits the old one".into(),
            None,
        ),
        None => check(
            Status::Warn,
            format!(
                "rows of the new table that reuse a key ({}) another row has cannot all go back to the old table: they are conflicts (see `pgrepart status`)",
                old_key.join(", ")
            ),
            None,
        ),
    }
}

/// Before the swap: the reverse publication on the new table and the reverse slot, unless they
/// exist (a cutover tried before). Creating the slot waits for the transactions running then,
/// which is why it is never done inside the swap.
pub async fn prepare_reverse(source: &Client, m: &Migration) -> Result<()> {
    let name = reverse_name(&m.slot_name);
    let has_publication: bool = source
        .query_one(
            "SELECT EXISTS (SELECT FROM pg_publication WHERE pubname = $1)",
            &[&name],
        )
        .await
        .map_err(|e| Error::db("looking for the reverse publication", e))?
        .get(0);
    if !has_publication {
        source
            .batch_execute(&format!(
                "CREATE PUBLICATION {} FOR TABLE {} WITH (publish_via_partition_root = true)",
                quote_ident(&name),
                m.target.sql()
            ))
            .await
            .map_err(|e| Error::db("creating the reverse publication", e))?;
    }
    if slot_exists(source, &name).await? {
        return Ok(());
    }
    tracing::info!(slot = %name, "creating the reverse slot for the rollback window (it waits for the transactions running now)");
    source
        .query_one(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')::text",
            &[&name],
        )
        .await
        .map_err(|e| Error::db("creating the reverse replication slot", e))?;
    crate::fault::point("window-reverse-slot-created");
    Ok(())
}

async fn slot_exists(source: &Client, slot: &str) -> Result<bool> {
    Ok(crate::migration::slot::slot_row(source, slot)
        .await?
        .is_some())
}

/// Drops the reverse slot and publication (safe to repeat).
pub async fn drop_reverse(source: &Client, m: &Migration) -> Result<()> {
    let name = reverse_name(&m.slot_name);
    crate::migration::slot::drop_slot(source, &name).await?;
    source
        .batch_execute(&format!(
            "DROP PUBLICATION IF EXISTS {}",
            quote_ident(&name)
        ))
        .await
        .map_err(|e| Error::db("dropping the reverse publication", e))
}

/// The reverse stream's stages.
struct Reverse {
    pipeline: Pipeline,
    shared: Arc<crate::apply::Shared>,
    fence: watch::Receiver<Option<String>>,
    received: Arc<crate::stream::Received>,
    /// Kept so the applier's channel of finished ranges stays open: a closed one would wake the
    /// applier at once, forever.
    _done: mpsc::UnboundedSender<usize>,
    /// `pgrepart pause` during the window: the reader and the applier take nothing.
    pause: watch::Sender<bool>,
    /// `--max-apply-rate`; free (no cap) once a revert is asked for.
    pace: Arc<crate::copy::governor::ApplyPace>,
}

impl Reverse {
    /// Passes on `pgrepart pause` and `--max-apply-rate`, except while a revert is asked for:
    /// the revert needs the reverse lag drained, so it lifts both (as a cutover lifts the
    /// governor's pace). Returns whether the pause in effect changed.
    fn follow(&self, paused: bool, step: WindowStep) -> bool {
        let reverting = matches!(step, WindowStep::Revert { .. });
        self.pace.set_free(reverting);
        let pause = reverse_paused(paused, step);
        self.pause
            .send_if_modified(|p| std::mem::replace(p, pause) != pause)
    }
}

/// Whether the reverse stream is held (pure): on `pgrepart pause`, unless a revert is asked for.
pub fn reverse_paused(paused: bool, step: WindowStep) -> bool {
    paused && !matches!(step, WindowStep::Revert { .. })
}

/// `slot_db` is the database of the reverse slot and of the table in use (the target's: the
/// source's unless `--target`); the applier writes to the old table on the source.
async fn start_reverse(
    cfg: &RunConfig,
    slot_db: &Client,
    m: &Migration,
    new_info: &TableInfo,
    old_info: &TableInfo,
) -> Result<Reverse> {
    let prep = &cfg.prep;
    let name = reverse_name(&m.slot_name);
    let key_of = |info: &TableInfo| -> Result<Vec<String>> {
        info.key_index().map(|k| k.columns.clone()).ok_or_else(|| {
            Error::failed(format!(
                "{} has no primary key or replica identity index",
                info.name
            ))
        })
    };
    let replicated = new_info.replicated_columns();
    let shape = reverse_shape(
        &replicated
            .iter()
            .map(|c| (c.name.clone(), c.type_sql.clone()))
            .collect::<Vec<_>>(),
        &key_of(new_info)?,
        &key_of(old_info)?,
        old_info.name.clone(),
        m.id,
    )?;
    let reverse_start = m.window.reverse_start.ok_or_else(|| {
        Error::failed(format!(
            "migration {} has an open rollback window without its start position",
            m.id
        ))
    })?;
    // The walsender of an attempt that just ended may not have noticed yet.
    let deadline = Instant::now() + Duration::from_secs(10);
    while matches!(
        crate::migration::slot::slot_row(slot_db, &name).await?,
        Some((true, _, _))
    ) && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let confirmed = crate::migration::slot::confirmed_flush(slot_db, &name).await?;
    // The server starts at the later of the two; so does the flush we report.
    let start = reverse_start.max(confirmed);
    let client = crate::pg::connect(&prep.source, "pgrepart reverse apply").await?;
    client
        .batch_execute("SET synchronous_commit = on; SET enable_seqscan = off")
        .await
        .map_err(|e| Error::db("preparing the reverse apply session", e))?;
    if prep.cross_db() {
        // The old table keeps its triggers across databases (none was carried): they must not
        // fire for the reverse stream's writes (checked before the cutover: `cross::refuse`).
        client
            .batch_execute("SET session_replication_role = replica")
            .await
            .map_err(|e| Error::db("preparing the reverse apply session", e))?;
    }
    let new_side = &prep.dbs.target;
    let (applier, handles) = Applier::new(
        client,
        ApplierConfig {
            shape,
            helpers: vec![],
            router: Router::Single,
            done: vec![true],
            key_pending: false,
            expected_columns: replicated
                .iter()
                .map(|c| (c.name.clone(), c.type_oid))
                .collect(),
            source: Some(new_side.clone()),
            source_name: (new_info.name.schema.clone(), new_info.name.name.clone()),
            start,
            max_batch: 20_000,
            max_queued_bytes: crate::apply::DEFAULT_MAX_QUEUED_BYTES,
            own_writes: Arc::new(AtomicU64::new(0)),
        },
    );
    let repl = ReplicationClient::connect(new_side, "pgrepart reverse replication")
        .await
        .map_err(|e| Error::replication("opening the reverse replication connection", e))?;
    let stream = crate::stream::start_stream(repl, &name, &name, start).await?;
    tracing::info!(slot = %name, from = %start, "reverse stream started: changes to the new table go back to the old one");
    let (mut pipeline, stop_rx) = Pipeline::new();
    let (events_tx, events_rx) =
        crate::apply::channel::event_channel(crate::apply::channel::DEFAULT_BUDGET);
    let (pause_tx, pause_rx) = watch::channel(reverse_paused(m.paused, window_step(&m.window)));
    let pace = Arc::new(crate::copy::governor::ApplyPace::new(cfg.max_apply_rate));
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let received = Arc::new(crate::stream::Received::default());
    pipeline.reader = Some(Pipeline::spawn_stage(crate::stream::read_stream(
        stream,
        crate::stream::Reopen {
            source: new_side.clone(),
            slot: name.clone(),
            publication: name,
        },
        events_tx,
        handles.flush,
        stop_rx.clone(),
        pace.clone(),
        pause_rx.clone(),
        received.clone(),
    )));
    pipeline.applier = Some(Pipeline::spawn_stage(
        applier.run(events_rx, done_rx, stop_rx, pause_rx),
    ));
    Ok(Reverse {
        pipeline,
        shared: handles.shared,
        fence: handles.fence,
        received,
        _done: done_tx,
        pause: pause_tx,
        pace,
    })
}

/// Serves the rollback window of `m` until `finish`, the window's end, or a revert; a signal
/// stops it with the window left open (the same `run` command goes on).
pub async fn serve(
    cfg: &RunConfig,
    mut control: Client,
    mut source: Client,
    m: Migration,
    figures: &watch::Sender<Snapshot>,
    interrupted: &mut watch::Receiver<bool>,
) -> Result<()> {
    if !crate::migration::lock::try_run_lock(&control, m.id).await? {
        return Err(Error::refused(format!(
            "another `pgrepart run` serves the rollback window of migration {}",
            m.id
        ))
        .with_hint("`pgrepart status` names it"));
    }
    state::set_runner(&control, m.id, Some(&crate::migration::lock::runner_name())).await?;
    let cross = cfg.prep.cross_db();
    let old = if cross {
        cross::old_table(&source, &m).await?
    } else {
        m.source.sibling(m.old_name.clone())
    };
    if m.phase == Phase::Reverted && cross {
        // Both commits of the revert are done; the run stopped before its cleanup.
        drop_reverse(&control, &m).await?;
        cross::forget_conflicts(&source, m.id).await?;
        state::close_window(&control, m.id).await?;
        println!(
            "{} was reverted (migration {}); the reverse slot and publication are dropped now",
            m.source, m.id
        );
        return Ok(());
    }
    if cross && reverted_cleanup(&m.window) {
        // Both commits of the revert are done (the state streams forward again); the run
        // stopped before its cleanup: the reverse slot on the target, the records on the source.
        drop_reverse(&control, &m).await?;
        cross::forget_conflicts(&source, m.id).await?;
        state::close_window(&control, m.id).await?;
        println!(
            "{} was reverted (migration {}); the reverse slot and publication are dropped now",
            m.source, m.id
        );
        let _ = state::set_runner(&control, m.id, None).await;
        return Ok(());
    }
    if m.phase == Phase::Reverted || reverted_cleanup(&m.window) {
        // The revert committed; the run stopped before its cleanup.
        drop_reverse(&source, &m).await?;
        state::close_window(&control, m.id).await?;
        // The foreign keys moved back, validated now if the run stopped before.
        for line in crate::dependents::post_swap::finish(&mut source, m.id, cfg.lock_timeout).await
        {
            println!("{line}");
        }
        for line in crate::cutover::rebuild_matviews(
            &mut source,
            m.id,
            &m.pending_matviews,
            cfg.lock_timeout,
        )
        .await
        {
            println!(
                "{}",
                line.replace("on the new table", "on the original table")
            );
        }
        println!(
            "{} was reverted (migration {}); the reverse slot and publication are dropped now",
            m.source, m.id
        );
        let _ = state::set_runner(&control, m.id, None).await;
        return Ok(());
    }
    if let Some(w) = cfg.rollback_window {
        state::set_rollback_window(&control, m.id, window_seconds(w)).await?;
    }
    let final_name = m.final_name();
    // The table in use is in the state's database (the source's unless --target).
    let new_info = catalog::table_info(&control, &final_name)
        .await?
        .ok_or_else(|| Error::failed(format!("the new table {final_name} is gone")))?;
    let Some(old_info) = catalog::table_info(&source, &old).await? else {
        return Err(Error::failed(format!(
            "the old table {old} is gone: nothing to keep in step during the rollback window"
        ))
        .with_hint("`pgrepart finish` closes the window (with a `run` attached)"));
    };
    let m = state::get(&control, m.id).await?;
    print_window_open(&m, &old);
    let mut reverse = start_reverse(cfg, &control, &m, &new_info, &old_info).await?;
    let applied_before = m.window.reverse_applied_changes;
    let mut rate = Rate::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let reverse_slot = reverse_name(&m.slot_name);
    let server_major = catalog::server_info(&control).await?.major();
    let mut next_revert_try = Instant::now();
    loop {
        tokio::select! {
            biased;
            _ = interrupted.wait_for(|i| *i) => {
                reverse.pipeline.shutdown().await;
                let _ = state::set_runner(&control, m.id, None).await;
                return Err(Error::failed(format!(
                    "stopped by a signal during the rollback window of migration {}; the window stays open and the reverse slot keeps the changes", m.id
                ))
                .with_hint("run the same `pgrepart run` command again to go on (`pgrepart revert` and `pgrepart finish` need it running)"));
            }
            r = pipeline::join_some(&mut reverse.pipeline.reader), if reverse.pipeline.reader.is_some() => {
                reverse.pipeline.reader = None;
                reverse.pipeline.shutdown().await;
                return Err(r.err().unwrap_or_else(|| Error::transient("the reverse stream ended")));
            }
            r = pipeline::join_some(&mut reverse.pipeline.applier), if reverse.pipeline.applier.is_some() => {
                reverse.pipeline.applier = None;
                reverse.pipeline.shutdown().await;
                return Err(r.err().unwrap_or_else(|| Error::transient("the reverse apply ended")));
            }
            _ = tick.tick() => {}
        }
        let now = state::get(&control, m.id).await?;
        let confirmed = Lsn(reverse.shared.flush_lsn.load(Ordering::Relaxed));
        let applied =
            applied_before + reverse.shared.applied_changes.load(Ordering::Relaxed) as i64;
        let lag = match crate::migration::slot::lag_and_retained(&control, confirmed, &reverse_slot)
            .await?
        {
            crate::migration::slot::SlotNow::Kept { lag, .. } => lag,
            _ => {
                reverse.pipeline.shutdown().await;
                return Err(Error::failed(format!(
                    "the reverse replication slot {reverse_slot} is gone or invalidated: the old table no longer follows the new one"
                ))
                .with_hint("`pgrepart revert` cannot be exact any more; `pgrepart finish` closes the window"));
            }
        };
        let lag_seconds = match reverse.received.oldest_unapplied(confirmed) {
            Some(ts) => {
                ((crate::protocol::copydata::pg_epoch_micros_now() - ts) as f64 / 1e6).max(0.0)
            }
            None => 0.0,
        };
        let per_s = rate.sample(Instant::now(), applied.max(0) as u64);
        state::record_reverse_progress(
            &control,
            m.id,
            applied,
            confirmed,
            Some(lag_seconds),
            per_s,
            reverse.shared.paused.load(Ordering::Relaxed),
        )
        .await?;
        figures.send_replace(Snapshot {
            phase: "window",
            reverse_applied_changes: applied.max(0) as u64,
            reverse_lag_bytes: lag,
            reverse_lag_seconds: lag_seconds,
            reverse_changes_per_s: per_s.unwrap_or(0.0),
            window_seconds_left: now.window.seconds_left.unwrap_or(0.0).max(0.0),
            reverse_conflicts: if cross {
                cross::open_conflicts(&control, &source, &now).await?
            } else {
                conflicts::open(&source, &now).await?
            }
            .len() as u64,
            ..Default::default()
        });
        let step = window_step(&now.window);
        if reverse.follow(now.paused, step) {
            if reverse_paused(now.paused, step) {
                tracing::info!(
                    "reverse stream paused (`pgrepart resume` lets it go on; the reverse slot keeps the changes)"
                );
            } else if now.paused {
                tracing::info!(
                    "reverse stream let go despite the pause: the revert needs it drained"
                );
            } else {
                tracing::info!("reverse stream resumed");
            }
        }
        match step {
            WindowStep::Stream => {}
            WindowStep::Finish { why } => {
                reverse.pipeline.shutdown().await;
                close(cfg, &control, &source, &now, why).await?;
                let _ = state::set_runner(&control, m.id, None).await;
                return Ok(());
            }
            WindowStep::Revert { .. } if Instant::now() < next_revert_try => {}
            WindowStep::Revert { force } => {
                if lag > cfg.max_lag_bytes {
                    tracing::debug!(
                        lag_bytes = lag,
                        "waiting for the reverse lag to shrink before reverting"
                    );
                    continue;
                }
                // The forward stream's slot and publication on the source, before the lock
                // (slot creation waits for the transactions running now).
                let prepared = if cross {
                    cross::prepare_forward(&source, &now).await
                } else {
                    again::prepare_forward(&source, &now, &old).await
                };
                if let Err(e) = prepared {
                    reverse.pipeline.shutdown().await;
                    return Err(e);
                }
                let tried = if cross {
                    cross::try_revert(
                        cfg,
                        &mut control,
                        &mut source,
                        &mut reverse.fence,
                        server_major,
                        &now,
                        force,
                    )
                    .await
                } else {
                    revert::try_revert(
                        cfg,
                        &mut source,
                        &mut reverse.fence,
                        server_major,
                        &now,
                        force,
                    )
                    .await
                };
                let outcome = match tried {
                    Ok(outcome) => outcome,
                    Err(e) => {
                        // A stage that ended meanwhile is the cause, and says whether to retry.
                        let cause = stage_error(&mut reverse.pipeline).await.unwrap_or(e);
                        reverse.pipeline.shutdown().await;
                        return Err(if cause.hint().is_some() {
                            cause
                        } else {
                            cause.with_hint(
                                "run the same `pgrepart run` command again: the revert request is kept",
                            )
                        });
                    }
                };
                match outcome {
                    revert::Outcome::Reverted { lock_held, lines } => {
                        reverse.pipeline.shutdown().await;
                        drop_reverse(&control, &now).await?;
                        if cross {
                            cross::forget_conflicts(&source, m.id).await?;
                        }
                        state::close_window(&control, m.id).await?;
                        for line in lines {
                            println!("{line}");
                        }
                        println!(
                            "{} is the original table again (migration {} reverted): lock held {} ms; the partitioned table is kept as {}",
                            m.source,
                            m.id,
                            lock_held.as_millis(),
                            m.target
                        );
                        println!(
                            "{} follows {} again (streaming from the revert); it is not cut over again until `pgrepart cutover` (`pgrepart abort` drops it)",
                            m.target, m.source
                        );
                        let _ = state::set_runner(&control, m.id, None).await;
                        return Ok(());
                    }
                    revert::Outcome::Refused(msg) => {
                        tracing::warn!("{msg}");
                        // The forward slot would hold WAL for a revert that is withdrawn; across
                        // databases, not once the source's commit has recorded F (its writes
                        // since are in the slot).
                        if !cross
                            || cross::refusal_drops_forward(
                                cross::source_reverted(&source, &now).await?,
                            )
                        {
                            again::drop_forward(&source, &now).await?;
                        }
                        state::set_error(&control, m.id, Some(&msg)).await?;
                        state::clear_revert_request(&control, m.id).await?;
                    }
                    revert::Outcome::Later(msg) => {
                        tracing::warn!("{msg}");
                        state::set_error(&control, m.id, Some(&msg)).await?;
                        next_revert_try = Instant::now() + Duration::from_secs(60);
                    }
                }
            }
        }
    }
}

/// The error of a reverse stage that has ended (the reader's first: its end closes the applier's
/// channel), if one has.
async fn stage_error(p: &mut Pipeline) -> Option<Error> {
    for stage in [&mut p.reader, &mut p.applier] {
        if stage.as_ref().is_some_and(|t| t.is_finished())
            && let Some(task) = stage.take()
            && let Err(e) = pipeline::joined(task.await, "stage")
        {
            return Some(e);
        }
    }
    None
}

/// `--rollback-window` as recorded: 0 is none.
pub fn window_seconds(d: Duration) -> Option<f64> {
    (!d.is_zero()).then_some(d.as_secs_f64())
}

fn print_window_open(m: &Migration, old: &QualifiedName) {
    let left = m.window.seconds_left.unwrap_or(0.0).max(0.0);
    println!(
        "rollback window open for {} more: changes to {} are applied back to {old}; `pgrepart revert` swaps back, `pgrepart finish` ends the window",
        human_seconds(left),
        m.final_name()
    );
}

/// "2h 5min 3s" (pure): whole seconds, the larger units only when present.
pub fn human_seconds(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}min {s}s"),
        _ => format!("{h}h {m}min {s}s"),
    }
}

/// Ends the window: the reverse slot and publication go, then `--drop-old` takes effect.
async fn close(
    cfg: &RunConfig,
    control: &Client,
    source: &Client,
    m: &Migration,
    why: &str,
) -> Result<()> {
    // The reverse slot is in the state's database (the target's with --target).
    drop_reverse(control, m).await?;
    if cfg.prep.cross_db() {
        cross::forget_conflicts(source, m.id).await?;
    }
    // Made for a revert that did not happen.
    again::drop_forward(source, m).await?;
    state::close_window(control, m.id).await?;
    let old = m.source.sibling(m.old_name.clone());
    println!(
        "rollback window of migration {} closed ({why}): the reverse slot and publication are dropped; {old} no longer follows {}",
        m.id,
        m.final_name()
    );
    if cfg.drop_old && catalog::relation_exists(source, &old).await? {
        crate::cutover::drop_old(source, &old).await?;
    } else if !cfg.drop_old {
        println!("the old table {old} is kept; drop it when you no longer need it");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_pause_holds_the_reverse_stream_until_a_revert_is_asked_for() {
        assert!(!reverse_paused(false, WindowStep::Stream));
        assert!(reverse_paused(true, WindowStep::Stream));
        assert!(reverse_paused(true, WindowStep::Finish { why: "x" }));
        assert!(!reverse_paused(true, WindowStep::Revert { force: false }));
        assert!(!reverse_paused(false, WindowStep::Revert { force: true }));
    }

    use super::*;
    use crate::pg::catalog::{Policy, Trigger};

    #[test]
    fn plan_warns_of_conflicts_when_the_key_widens_and_refuses_what_cannot_work() {
        use crate::preflight::Status;
        let id = ["id".to_string()];
        let wide = ["id".to_string(), "region".to_string()];
        let c = plan_check(&id, Some(&wide), None, None);
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.contains("(id, region)"), "{}", c.detail);
        assert_eq!(plan_check(&id, Some(&id), None, None).status, Status::Pass);
        assert_eq!(
            plan_check(&id, Some(&id), Some(vec![]), None).status,
            Status::Pass
        );
        let c = plan_check(
            &id,
            Some(&wide),
            Some(vec!["the target's wal_level is replica".into()]),
            None,
        );
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("wal_level is replica"), "{}", c.detail);
        let c = plan_check(&id, None, None, Some("foreign key fk_customer ...".into()));
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("fk_customer"));
    }

    #[test]
    fn run_serves_an_open_window_and_the_cleanup_a_committed_revert_left() {
        let w = |state: &str| Window {
            state: Some(state.into()),
            ..Default::default()
        };
        assert!(window_pending_in(Phase::Done, &w(state::WINDOW_OPEN)));
        assert!(!window_pending_in(Phase::Done, &w(state::WINDOW_CLOSED)));
        assert!(!window_pending_in(Phase::Done, &Window::default()));
        // The revert's transaction set the phase streaming and the window 'reverted': the
        // reverse slot and publication are still to drop.
        assert!(window_pending_in(
            Phase::Streaming,
            &w(state::WINDOW_REVERTED)
        ));
        assert!(!window_pending_in(
            Phase::Streaming,
            &w(state::WINDOW_CLOSED)
        ));
        // Recorded by an older pgrepart.
        assert!(window_pending_in(Phase::Reverted, &w(state::WINDOW_OPEN)));
    }

    #[test]
    fn the_reverse_slot_is_named_after_the_forward_one_within_63_bytes() {
        assert_eq!(
            reverse_name("pgrepart_16384_1_orders_flat"),
            "pgrepart_r_16384_1_orders_flat"
        );
        let long = reverse_name(&format!("pgrepart_1_2_{}", "x".repeat(50)));
        assert_eq!(long.len(), 63);
        assert!(long.starts_with("pgrepart_r_1_2_"));
    }

    #[test]
    fn a_revert_request_goes_before_finish_and_the_windows_end() {
        let mut w = Window {
            state: Some("open".into()),
            seconds_left: Some(30.0),
            ..Default::default()
        };
        assert_eq!(window_step(&w), WindowStep::Stream);
        w.seconds_left = Some(0.0);
        assert_eq!(
            window_step(&w),
            WindowStep::Finish {
                why: "the window ended"
            }
        );
        w.finish_requested = true;
        assert_eq!(
            window_step(&w),
            WindowStep::Finish {
                why: "`pgrepart finish`"
            }
        );
        w.revert_requested = true;
        assert_eq!(window_step(&w), WindowStep::Revert { force: false });
        w.revert_force = true;
        assert_eq!(window_step(&w), WindowStep::Revert { force: true });
    }

    #[test]
    fn the_reverse_shape_finds_rows_by_the_new_key_and_maps_them_to_the_old_one() {
        let columns = vec![
            ("region".to_string(), "text".to_string()),
            ("id".to_string(), "bigint".to_string()),
            ("amount".to_string(), "numeric".to_string()),
        ];
        let old = QualifiedName::new("public", "orders_flat_old");
        let s = reverse_shape(
            &columns,
            &["id".into(), "region".into()],
            &["id".into()],
            old.clone(),
            3,
        )
        .unwrap();
        assert_eq!(s.key, vec![1, 0]);
        assert_eq!(
            s.narrow,
            Some(Narrow {
                key: vec![1],
                migration_id: 3
            })
        );
        assert_eq!(s.target, old);
        // An old key outside the new one cannot be mapped: refused, naming the column.
        let e = reverse_shape(
            &columns,
            &["id".into(), "region".into()],
            &["amount".into()],
            old,
            3,
        )
        .unwrap_err();
        assert!(e.to_string().contains("amount"), "{e}");
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn the_window_opens_with_its_start_read_in_the_swap() {
        let sql = window_start_sql(9);
        assert!(sql.contains("reverse_start_lsn = pg_current_wal_insert_lsn()"));
        assert!(sql.contains("window_state = 'open'"));
        assert!(sql.ends_with("WHERE id = 9"));
        assert!(reverted_sql(9).contains("phase = 'reverted'"));
        assert_eq!(window_seconds(Duration::ZERO), None);
        assert_eq!(window_seconds(Duration::from_secs(90)), Some(90.0));
        assert_eq!(human_seconds(59.6), "1min 0s");
        assert_eq!(human_seconds(7503.0), "2h 5min 3s");
        assert_eq!(human_seconds(-3.0), "0s");
    }

    #[test]
    fn the_table_that_steps_aside_loses_what_the_swap_carried() {
        let carry = CarryOver {
            rls_enabled: true,
            rls_forced: true,
            policies: vec![Policy {
                name: "own rows".into(),
                permissive: true,
                command: "SELECT".into(),
                roles: vec!["app".into()],
                using: None,
                with_check: None,
            }],
            triggers: vec![Trigger {
                name: "audit".into(),
                definition: String::new(),
                enabled: 'O',
            }],
            publications: vec!["analytics".into()],
            ..Default::default()
        };
        assert_eq!(
            strip_statements("\"public\".\"t_old\"", &carry),
            vec![
                "DROP TRIGGER IF EXISTS \"audit\" ON \"public\".\"t_old\"",
                "DROP POLICY IF EXISTS \"own rows\" ON \"public\".\"t_old\"",
                "ALTER TABLE \"public\".\"t_old\" NO FORCE ROW LEVEL SECURITY",
                "ALTER TABLE \"public\".\"t_old\" DISABLE ROW LEVEL SECURITY",
                "ALTER PUBLICATION analytics DROP TABLE \"public\".\"t_old\"",
            ]
        );
        assert!(strip_statements("t", &CarryOver::default()).is_empty());
        assert_eq!(
            strip_summary("public.t_old", &carry).unwrap(),
            "taken off public.t_old (now on the table in use, and moved back by a revert): trigger(s) audit; policy(ies) own rows; row level security; membership in analytics"
        );
        assert_eq!(strip_summary("t", &CarryOver::default()), None);
    }
}
