//! The migration engine behind `pgrepart run`: start a migration (or resume the one in progress)
//! and drive it to the swap, as a sequence of supervised attempts.
//!
//! ```text
//! run(RunConfig) ─► attempt ─► setup (new) | resume ─► Live ─► Supervisor (pipeline + tick)
//!        ▲                                                           │
//!        └──── transient failure: every task stopped and joined, ────┘
//!              backoff, retry budget (retry.rs), next attempt resumes from the state
//! ```
//! - `setup`: a new migration; a failure before its key ranges are recorded removes what it made.
//! - `resume`: the same arguments, the identity of both tables, the slot taken up again.
//! - `pipeline`: the tasks of one attempt, owned; none outlives it, whatever path leaves it.
//! - `supervisor`: one struct of state, a tick that returns the next step, one exit path.
//! - `steps`: index builds, the check before cutover, the cutover's attempts.
//! - `slot`: the slot and publication on the source; `lock`: the run's advisory lock.
//!
//! The engine is handed a checked [`RunConfig`], never raw arguments.

pub(crate) mod lock;
pub(crate) mod pipeline;
pub mod resume;
pub mod retry;
mod setup;
pub mod slot;
mod steps;
mod supervisor;

use std::sync::Mutex;

use tokio::sync::watch;
use tokio_postgres::{Client, Config};

use crate::apply::Router;
use crate::config::{RunConfig, StoredSpec};
use crate::copy::{self, ranges};
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::monitor::{self, Snapshot};
use crate::pg::catalog::{self, ServerInfo, TableInfo};
use crate::pg::ident::QualifiedName;
use crate::replication::ReplicationStream;
use crate::state::{self, Migration, Phase};
use retry::{Retry, RetryBudget};
use setup::Undo;

/// A migration with its slot in place, ready to stream: what setup and resume hand to the
/// supervisor.
pub struct Live {
    /// The state's connection (target database).
    control: Client,
    /// The source's control connection.
    source: Client,
    server: ServerInfo,
    info: TableInfo,
    migration: Migration,
    stream: ReplicationStream,
    router: Router,
    done: Vec<bool>,
    /// Ranges to copy, lowest first (workers take from the end: highest keys first).
    pending: Vec<crate::copy::PendingRange>,
    /// Source sessions of the copy, each in its snapshot's transaction.
    sessions: Vec<Client>,
    start: Lsn,
    /// The load governor's baseline, taken before the migration weighed on the source (none
    /// with `--max-impact 0`, or when it could not be measured).
    baseline: Option<copy::governor::Baseline>,
}

/// How the applier routes changes to `ranges`: one range needs no routing; integer bounds on an
/// integer key are compared in Rust; anything else is compared by the source (`apply::route`).
fn router_for(info: &TableInfo, key: &[String], ranges: &[ranges::Bounds]) -> Router {
    if ranges.len() <= 1 {
        return Router::Single;
    }
    let first = info.column(&key[0]).expect("key column exists");
    if ranges::INT_TYPES.contains(&first.type_oid)
        && let Some(int) = ranges::as_int_ranges(ranges)
    {
        return Router::Int(int);
    }
    match crate::apply::route::ServerOrder::new(copy::key_columns(info, key), ranges) {
        Some(order) => Router::Ordered(order),
        None => Router::Single,
    }
}

/// Runs the migration to its end: attempts, each supervised, retried after a transient failure
/// within the retry budget.
pub async fn run(mut cfg: RunConfig) -> Result<()> {
    let (figures_tx, figures_rx) = watch::channel(Snapshot::default());
    // One endpoint for the whole run, bound before anything was created.
    let _metrics = match cfg.metrics.take() {
        Some(listener) => Some(monitor::serve_metrics(
            listener,
            cfg.prep.table.to_string(),
            figures_rx,
        )?),
        None => None,
    };
    let (interrupt_tx, mut interrupted) = watch::channel(false);
    let _signals = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
        shutdown_signal().await;
        let _ = interrupt_tx.send(true);
    }));
    let mut budget = RetryBudget::default();
    // Whether an attempt has reached a migration (found one in progress, or made one). Before
    // that a failure is the command's own (a server that cannot be reached, a role refused): it
    // is reported at once, with nothing to resume.
    let engaged = std::cell::Cell::new(false);
    loop {
        let started = std::time::Instant::now();
        let e = match attempt(&cfg, &figures_tx, &mut interrupted, &engaged).await {
            Err(e) if e.is_transient() && engaged.get() => e,
            other => return other,
        };
        match budget.after_failure(started.elapsed()) {
            Retry::After { wait, failure } => {
                tracing::warn!(
                    error = %e,
                    rule = e.transient_rule().unwrap_or_default(),
                    failure,
                    of = retry::MAX_FAILURES_IN_ROW,
                    retry_in_s = wait.as_secs(),
                    "connection lost; reconnecting and resuming from the recorded state"
                );
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = interrupted.wait_for(|i| *i) => {
                        return Err(Error::failed("stopped by a signal while waiting to reconnect; the slot and state are kept")
                            .with_hint("run the same command again to resume, or `pgrepart abort` to remove everything"));
                    }
                }
            }
            Retry::GiveUp { failures } => {
                return Err(Error::failed(format!(
                    "gave up after {failures} failures in a row; the last: {e}"
                ))
                .with_hint("the slot and state are kept: once the cause is fixed, run the same command again to resume (or `pgrepart abort`)"));
            }
        }
    }
}

/// One attempt: connect, decide from the state what to do (start, resume, finish what a swap
/// left), set up or resume, then supervise. A rollback window after the swap is served; a revert
/// there sets the migration streaming forward again, and the attempt goes on with it.
async fn attempt(
    cfg: &RunConfig,
    figures: &watch::Sender<Snapshot>,
    interrupted: &mut watch::Receiver<bool>,
    engaged: &std::cell::Cell<bool>,
) -> Result<()> {
    loop {
        if !attempt_once(cfg, figures, interrupted, engaged).await? {
            return Ok(());
        }
        tracing::info!(
            "the migration was reverted: streaming to the partitioned table again; it cuts over again on `pgrepart cutover`"
        );
    }
}

/// See `attempt`: true when a revert set the migration streaming forward again (go on with it).
async fn attempt_once(
    cfg: &RunConfig,
    figures: &watch::Sender<Snapshot>,
    interrupted: &mut watch::Receiver<bool>,
    engaged: &std::cell::Cell<bool>,
) -> Result<bool> {
    let prep = &cfg.prep;
    // `control` holds the state and the run's lock (the target database); `source` is the
    // source's control connection (the same database unless `--target` names another).
    let source = prep.dbs.connect_source("pgrepart source").await?;
    let control = prep.dbs.connect_state("pgrepart state").await?;
    // A swap with an open rollback window (a run stopped during it): serve the window.
    if let Some(m) = state::latest(&control, &prep.table)
        .await?
        .filter(crate::rollback::window_pending)
    {
        engaged.set(true);
        return serve_window(cfg, control, source, m, figures, interrupted).await;
    }
    let undo = Mutex::new(Undo::default());
    let prepared = tokio::select! {
        biased;
        _ = interrupted.wait_for(|i| *i) => None,
        r = prepare(cfg, control, source, &undo, engaged) => Some(r),
    };
    let live = match prepared {
        Some(Ok(Some(live))) => live,
        Some(Ok(None)) => {
            // A cross-database cutover found committed on both sides may have opened a window.
            let control = prep.dbs.connect_state("pgrepart state").await?;
            if let Some(m) = state::latest(&control, &prep.table)
                .await?
                .filter(crate::rollback::window_pending)
            {
                let source = prep.dbs.connect_source("pgrepart source").await?;
                return serve_window(cfg, control, source, m, figures, interrupted).await;
            }
            return Ok(false);
        }
        Some(Err(e)) => {
            undo.into_inner().expect("undo lock").run(prep).await;
            return Err(e);
        }
        None => {
            let undo = undo.into_inner().expect("undo lock");
            let new = !undo.is_empty();
            undo.run(prep).await;
            return Err(Error::failed(if new {
                "stopped by a signal during setup; what it had created was removed"
            } else {
                "stopped by a signal before streaming; the slot and state are kept"
            })
            .with_hint("run the same command again to start (or resume)"));
        }
    };
    if let Some(w) = cfg.rollback_window {
        state::set_rollback_window(
            &live.control,
            live.migration.id,
            crate::rollback::window_seconds(w),
        )
        .await?;
    }
    let id = live.migration.id;
    let supervisor = supervisor::Supervisor::start(cfg, live, figures).await?;
    supervisor.run(interrupted).await?;
    // The swap opened a rollback window: serve it until it ends.
    let control = prep.dbs.connect_state("pgrepart state").await?;
    let m = state::get(&control, id).await?;
    if crate::rollback::window_pending(&m) {
        let source = prep.dbs.connect_source("pgrepart source").await?;
        return serve_window(cfg, control, source, m, figures, interrupted).await;
    }
    Ok(false)
}

/// Serves the window of `m`; true when it ended in a revert (the migration streams forward again).
async fn serve_window(
    cfg: &RunConfig,
    control: Client,
    source: Client,
    m: Migration,
    figures: &watch::Sender<Snapshot>,
    interrupted: &mut watch::Receiver<bool>,
) -> Result<bool> {
    let id = m.id;
    crate::rollback::serve(cfg, control, source, m, figures, interrupted).await?;
    let control = cfg.prep.dbs.connect_state("pgrepart state").await?;
    Ok(crate::rollback::again::streams_again(
        &state::get(&control, id).await?,
    ))
}

/// What the state says to do: `Some(live)` to stream (a new migration set up, or one resumed),
/// `None` when there is nothing left (the swap is done; what it left behind is finished here).
async fn prepare(
    cfg: &RunConfig,
    control: Client,
    source: Client,
    undo: &Mutex<Undo>,
    engaged: &std::cell::Cell<bool>,
) -> Result<Option<Live>> {
    let prep = &cfg.prep;
    let latest = state::latest(&control, &prep.table).await?;
    if latest.as_ref().is_some_and(|m| m.phase != Phase::Done) {
        engaged.set(true);
    }
    match latest {
        Some(m)
            if m.phase != Phase::Done
                && m.target_committed_fence.is_some()
                && crate::cross_cutover::source_renamed(&source, &m.source, &m.old_name)
                    .await? =>
        {
            // Both sides committed; the process stopped before recording it.
            state::set_phase(&control, m.id, Phase::Done, None).await?;
            slot::finish_cleanup(&source, &m).await?;
            let mut control = control;
            finish_post_swap_steps(cfg, &mut control, &m).await;
            println!(
                "{} was moved (migration {}); the cutover had committed on both sides, recorded now",
                prep.table, m.id
            );
            steps::print_point_at(prep, &m);
            Ok(None)
        }
        Some(m) if m.phase == Phase::Reverted => Err(Error::refused(format!(
            "migration {} of {} was reverted: the table is the original one again, the partitioned table is kept as {}",
            m.id, prep.table, m.target
        ))
        .with_hint("`pgrepart abort` removes the partitioned table and the state; then `pgrepart run` starts again")),
        Some(m) if m.phase != Phase::Done => {
            resume::resume(cfg, control, source, m).await.map(Some)
        }
        Some(m) if spec_of(&m)?.same_request(&prep.spec()) => {
            finish_after_swap(cfg, control, source, m).await?;
            Ok(None)
        }
        _ => {
            let live = setup::start_new(cfg, control, source, undo, engaged).await?;
            // The ranges are recorded: from here a failure is resumed, not undone.
            *undo.lock().expect("undo lock") = Undo::default();
            Ok(Some(live))
        }
    }
}

/// A migration whose swap committed: what a run stopped after the swap left to do.
async fn finish_after_swap(
    cfg: &RunConfig,
    control: Client,
    source: Client,
    m: Migration,
) -> Result<()> {
    let prep = &cfg.prep;
    slot::finish_cleanup(&source, &m).await?;
    let mut control = control;
    finish_post_swap_steps(cfg, &mut control, &m).await;
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
        for line in crate::cutover::rebuild_matviews(
            &mut control,
            m.id,
            &m.pending_matviews,
            cfg.lock_timeout,
        )
        .await
        {
            println!("{line}");
        }
    }
    // A run stopped between the swap and its cleanup may not have dropped the old table.
    let old = prep.table.sibling(m.old_name.clone());
    if cfg.drop_old && catalog::relation_exists(&source, &old).await? {
        crate::cutover::drop_old(&source, &old).await?;
    }
    Ok(())
}

/// What a run stopped after the swap left of the post-swap steps (foreign keys validated and set
/// on the partitioned table, see `crate::dependents`), done now; each says what it did.
async fn finish_post_swap_steps(cfg: &RunConfig, control: &mut Client, m: &Migration) {
    for line in crate::dependents::post_swap::finish(control, m.id, cfg.lock_timeout).await {
        println!("{line}");
    }
}

fn spec_of(m: &Migration) -> Result<StoredSpec> {
    serde_json::from_value(m.spec.clone())
        .map_err(|e| Error::failed(format!("unreadable spec in pgrepart.migrations: {e}")))
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
async fn apply_session(cfg: &RunConfig) -> Result<Client> {
    let client = crate::pg::connect(&cfg.prep.dbs.target, "pgrepart apply").await?;
    client
        .batch_execute("SET synchronous_commit = on; SET enable_seqscan = off")
        .await
        .map_err(|e| Error::db("preparing an apply session", e))?;
    Ok(client)
}

/// The load governor's baseline (see [`copy::governor::Baseline`]); none with `--max-impact 0`
/// or when the source could not be probed (the run goes on without its governor).
async fn governor_baseline(cfg: &RunConfig, source: &Config) -> Option<copy::governor::Baseline> {
    if cfg.max_impact == 0 {
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
    cfg: &RunConfig,
    target_db: &Client,
    info: &TableInfo,
    target: &QualifiedName,
    toast_compression: Option<&str>,
) -> Result<Vec<Client>> {
    let extra = usize::from(cfg.apply_sessions).saturating_sub(1);
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
        let client = apply_session(cfg).await?;
        copy::toast::apply(&client, toast_compression).await?;
        helpers.push(client);
    }
    Ok(helpers)
}
