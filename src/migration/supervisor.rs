//! The supervisor of one attempt: it wires the pipeline's stages together, then once a second
//! reads the state and the slot, records progress, and decides the next step. Its state is one
//! struct ([`Supervisor`]); its tick returns a [`Step`]; every way out goes through one exit path
//! that stops and joins the pipeline before anything else (`run`).
//!
//! ```text
//! tick ─► Wait | LookSoon | FinishCopy (index builds) | Cutover (verify, then swap) | Stop(exit)
//!                                   └── phase: copying ──► streaming ──► cutting_over ──► done
//! ```
//! Phase transitions happen here and in the steps it calls: `streaming` is entered by the index
//! build's transaction (`steps::finish_copy`), `cutting_over` and `done` by the cutover.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_postgres::Client;

use super::Live;
use super::pipeline::{self, Pipeline};
use super::setup::key_columns;
use super::slot::{self, SlotNow};
use super::steps::{self, Dbs, KeyBuilt, Verified};
use crate::apply::sql::Shape;
use crate::apply::{Applier, ApplierConfig, ApplierHandles, Hold, Shared};
use crate::cli::CutoverMode;
use crate::config::RunConfig;
use crate::copy::governor::{ApplyPace, RateLimit};
use crate::copy::{self, CopyJob, CopyProgress};
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::monitor::{self, Rate, Snapshot};
use crate::pg::catalog::{self, ServerInfo, TableInfo};
use crate::state::{self, Migration, Phase};

/// What the tick decided.
enum Step {
    /// Nothing to do before the next tick.
    Wait,
    /// The applier is taking the last finished ranges: look again shortly.
    LookSoon,
    /// Every range is copied: build the indexes and enter `streaming`.
    FinishCopy,
    /// The cutover is due and the lag small: verify, then swap.
    Cutover,
    Stop(Exit),
}

/// How an attempt ends.
enum Exit {
    Done {
        lock_held: Duration,
    },
    Interrupted,
    Aborted,
    /// The slot retains twice `--max-retained-wal`.
    WalStop {
        retained: u64,
    },
    Failed(Error),
}

/// Everything one attempt holds. The stages' shared figures and controls are here so that the
/// tick can read and move them; the stages themselves are owned by `pipeline`.
pub struct Supervisor<'a> {
    cfg: &'a RunConfig,
    /// The state's connection (target database); it holds the run's lock.
    control: Client,
    /// The source's control connection (slot, lag, the cross-database cutover's lock).
    source: Client,
    server: ServerInfo,
    info: TableInfo,
    migration: Migration,
    pipeline: Pipeline,
    /// The applier's figures (flush position, applied changes, ranges pending, hold reached).
    shared: Arc<Shared>,
    /// Fences the applier has passed (the cutover waits for its own).
    fence: watch::Receiver<Option<String>>,
    /// A verify's hold, passed to the applier.
    hold_tx: watch::Sender<Hold>,
    /// The apply's pace and the copy's rate limit (the load governor and the retained-WAL guard
    /// move them).
    pace: Arc<ApplyPace>,
    limit: Arc<RateLimit>,
    progress: Arc<CopyProgress>,
    /// Why the load governor holds the pace it does (none without a governor).
    governor_reason: Arc<std::sync::Mutex<Option<String>>>,
    /// `pgrepart pause` for every stage, and the copy's own pause (the retained-WAL guard).
    pause_tx: watch::Sender<bool>,
    copy_pause_tx: watch::Sender<bool>,
    /// The applier's channel of finished ranges (and of `KEY_BUILT`).
    done_tx: mpsc::UnboundedSender<usize>,
    /// pgrepart's own write transactions (state writes here; copy and apply count theirs).
    own_writes: Arc<AtomicU64>,
    /// The table's transactions received and not yet applied (the lag in seconds).
    received: Arc<crate::stream::Received>,
    /// The primary key is left for after the copy and not built yet.
    key_pending: bool,
    /// Figures carried from earlier runs, for totals.
    applied_before: i64,
    rows_before: u64,
    copy_rate: Rate,
    apply_rate: Rate,
    display: monitor::Display,
    figures: &'a watch::Sender<Snapshot>,
    /// The next cutover (or check before it) is not tried before this.
    next_cutover_try: Instant,
    /// The last check before cutover found a difference (or could not finish).
    verify_blocked: bool,
    /// The retained-WAL warning for a copy that cannot pause was given.
    wal_warned: bool,
    started: Instant,
}

impl<'a> Supervisor<'a> {
    /// Spawns the stages of a migration whose slot is in place.
    pub async fn start(
        cfg: &'a RunConfig,
        live: Live,
        figures: &'a watch::Sender<Snapshot>,
    ) -> Result<Supervisor<'a>> {
        let prep = &cfg.prep;
        let Live {
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
        } = live;
        let key = key_columns(&info)?;
        // A primary key left for after the copy: the applier takes no change before it exists
        // (each is found by key); they wait in the stream's channel, then in the slot.
        let key_pending = migration.target_created
            && migration.target_committed_fence.is_none()
            && catalog::lacks_primary_key(&control, &migration.target).await?;
        let replicated = info.replicated_columns();
        let applier_client = super::apply_session(cfg).await?;
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
            narrow: None,
        };
        shape.route = partition_key
            .iter()
            .flatten()
            .filter_map(|name| replicated.iter().position(|c| &c.name == name))
            .filter(|i| !shape.key.contains(i))
            .collect();
        let toast_compression =
            copy::toast::prepare(&applier_client, cfg.toast_compression).await?;
        let helpers =
            super::apply_helpers(cfg, &control, &info, &migration.target, toast_compression)
                .await?;
        // pgrepart's commits take the source cluster's transaction ids when the new table is on
        // the same server: the governor leaves them out of the workload.
        let own_writes = Arc::new(AtomicU64::new(0));
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
                own_writes: own_writes.clone(),
            },
        );
        let ApplierHandles {
            flush,
            fence,
            shared,
            hold: hold_tx,
        } = handles;
        let (mut pipeline, stop_rx) = Pipeline::new();
        // Pause of everything (`pgrepart pause`), and of the copy alone (the retained-WAL guard).
        let (pause_tx, pause_rx) = watch::channel(migration.paused);
        let (copy_pause_tx, copy_pause_rx) = watch::channel(migration.paused);
        let (events_tx, events_rx) =
            crate::apply::channel::event_channel(crate::apply::channel::DEFAULT_BUDGET);
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let pace = Arc::new(ApplyPace::new(cfg.max_apply_rate));
        let reopen = crate::stream::Reopen {
            source: prep.source.clone(),
            slot: migration.slot_name.clone(),
            publication: migration.publication_name.clone(),
        };
        let received = Arc::new(crate::stream::Received::default());
        pipeline.reader = Some(Pipeline::spawn_stage(crate::stream::read_stream(
            stream,
            reopen,
            events_tx,
            flush,
            stop_rx.clone(),
            pace.clone(),
            pause_rx.clone(),
            received.clone(),
        )));
        // The applier takes no events while paused (`pgrepart pause`) or held by the governor.
        let (apply_pause_tx, apply_pause_rx) = watch::channel(migration.paused);
        pipeline.spawn_background(pipeline::merge_pauses(
            pause_rx,
            pace.subscribe_held(),
            apply_pause_tx,
        ));
        pipeline.applier = Some(Pipeline::spawn_stage(applier.run(
            events_rx,
            done_rx,
            stop_rx.clone(),
            apply_pause_rx,
        )));
        let progress = Arc::new(CopyProgress::default());
        let limit = Arc::new(RateLimit::new(cfg.max_copy_rate));
        let copying = Arc::new(AtomicBool::new(!pending.is_empty()));
        let governor_reason = Arc::new(std::sync::Mutex::new(None));
        // From the baseline taken before the migration weighed on the source, both the copy and
        // the apply are governed until the run stops.
        if let Some(base) = baseline {
            if !pending.is_empty() {
                limit.set(base.start_limit(cfg.max_copy_rate));
            }
            pipeline.spawn_background(copy::governor::run(
                base,
                copy::governor::Governed {
                    copy_limit: limit.clone(),
                    progress: progress.clone(),
                    copying: copying.clone(),
                    pace: pace.clone(),
                    max_impact: f64::from(cfg.max_impact) / 100.0,
                    copy_cap: cfg.max_copy_rate,
                    apply_cap: cfg.max_apply_rate,
                    slot: migration.slot_name.clone(),
                    own_writes: prep.same_cluster().then(|| own_writes.clone()),
                    source: prep.source.clone(),
                    max_replica_lag: cfg.max_replica_lag,
                    rows_to_copy: (migration.rows_estimate - migration.rows_copied).max(0) as u64,
                    reason: governor_reason.clone(),
                    table: migration.source.sql(),
                },
                stop_rx.clone(),
            ));
        }
        if !pending.is_empty() {
            let exported = state::exported_snapshot(&control, migration.id)
                .await?
                .and_then(|t| copy::snapshot::PgSnapshot::parse(&t));
            if exported.is_none() {
                tracing::warn!(
                    "no exported snapshot recorded (a migration started by an older pgrepart): the ranges' snapshots are not checked against it"
                );
            }
            let job = Arc::new(CopyJob {
                exported,
                migration_id: migration.id,
                source: prep.table.clone(),
                target: migration.target.clone(),
                columns: replicated.iter().map(|c| c.name.clone()).collect(),
                key: copy::key_columns(&info, &key),
                target_config: prep.dbs.target.clone(),
                limit: limit.clone(),
                toast_compression,
                workers: sessions.len(),
                own_writes: own_writes.clone(),
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
            pipeline.copy = Some(Pipeline::spawn_stage(async move {
                let copied = workers.await;
                copying.store(false, Ordering::Relaxed);
                copied
            }));
        }
        if cfg.max_retained_wal.is_none() && slot::unbounded_slot_wal(&source).await? {
            tracing::warn!(
                "max_slot_wal_keep_size is -1 and --max-retained-wal is not set: nothing bounds the WAL the slot can hold on the source"
            );
        }
        Ok(Supervisor {
            cfg,
            applied_before: migration.applied_changes,
            rows_before: migration.rows_copied.max(0) as u64,
            control,
            source,
            server,
            info,
            migration,
            pipeline,
            shared,
            fence,
            hold_tx,
            pace,
            limit,
            progress,
            governor_reason,
            pause_tx,
            copy_pause_tx,
            done_tx,
            own_writes,
            received,
            key_pending,
            copy_rate: Rate::default(),
            apply_rate: Rate::default(),
            display: monitor::Display::new(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            figures,
            next_cutover_try: Instant::now(),
            verify_blocked: false,
            wal_warned: false,
            started: Instant::now(),
        })
    }

    /// Supervises until the attempt ends, then stops and joins every stage before anything else
    /// happens (the one exit path), and concludes.
    pub async fn run(mut self, interrupted: &mut watch::Receiver<bool>) -> Result<()> {
        let exit = self.supervise(interrupted).await;
        self.display.finish();
        if matches!(exit, Exit::Interrupted) {
            tracing::warn!("interrupted: finishing the batch in flight and stopping");
        }
        self.pipeline.shutdown().await;
        self.conclude(exit).await
    }

    async fn supervise(&mut self, interrupted: &mut watch::Receiver<bool>) -> Exit {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let step = tokio::select! {
                biased;
                _ = interrupted.wait_for(|i| *i) => return Exit::Interrupted,
                // Each of the two ends cleanly only when the other is gone (their channel
                // closed): then the other one's error is the cause.
                r = pipeline::join_some(&mut self.pipeline.reader), if self.pipeline.reader.is_some() => {
                    self.pipeline.reader = None;
                    return Exit::Failed(self.stage_ended(r, true).await);
                }
                r = pipeline::join_some(&mut self.pipeline.applier), if self.pipeline.applier.is_some() => {
                    self.pipeline.applier = None;
                    return Exit::Failed(self.stage_ended(r, false).await);
                }
                r = pipeline::join_some(&mut self.pipeline.copy), if self.pipeline.copy.is_some() => {
                    self.pipeline.copy = None;
                    if let Err(e) = r {
                        return Exit::Failed(e);
                    }
                    tracing::info!(rows = self.progress.rows.load(Ordering::Relaxed), "copy finished");
                    // Build the indexes now rather than at the next tick.
                    tick.reset_immediately();
                    continue;
                }
                _ = tick.tick() => match self.tick().await {
                    Ok(step) => step,
                    Err(e) => return Exit::Failed(e),
                },
            };
            match step {
                Step::Wait => {}
                Step::LookSoon => tick.reset_after(Duration::from_millis(50)),
                Step::FinishCopy => match self.finish_copy(interrupted).await {
                    Ok(true) => {}
                    Ok(false) => return Exit::Interrupted,
                    Err(e) => return Exit::Failed(e),
                },
                Step::Cutover => match self.cutover().await {
                    Ok(Some(lock_held)) => return Exit::Done { lock_held },
                    Ok(None) => {}
                    Err(e) => return Exit::Failed(e),
                },
                Step::Stop(exit) => return exit,
            }
        }
    }

    /// The reader or the applier ended: its error, or (ended cleanly because the other closed
    /// their channel) the other's.
    async fn stage_ended(&mut self, r: Result<()>, reader: bool) -> Error {
        let other = if reader {
            self.pipeline.applier.take()
        } else {
            self.pipeline.reader.take()
        };
        match r {
            Err(e) => e,
            Ok(()) => match other {
                Some(t) => pipeline::joined(t.await, "stage").err(),
                None => None,
            }
            .unwrap_or_else(|| Error::transient("the replication stream ended")),
        }
    }

    /// Once a second: read the state and the slot, record and show progress, pass pauses and
    /// holds on, and say what comes next.
    async fn tick(&mut self) -> Result<Step> {
        let cfg = self.cfg;
        let m = state::get(&self.control, self.migration.id).await?;
        if m.abort_requested {
            return Ok(Step::Stop(Exit::Aborted));
        }
        let confirmed = Lsn(self.shared.flush_lsn.load(Ordering::Relaxed));
        let applied =
            self.applied_before + self.shared.applied_changes.load(Ordering::Relaxed) as i64;
        let (lag, retained, safe_wal) =
            match slot::lag_and_retained(&self.source, confirmed, &self.migration.slot_name).await?
            {
                // Seen here first while the stream is parked (no walsender to end).
                SlotNow::Gone => {
                    return Ok(Step::Stop(Exit::Failed(slot::slot_gone(&self.migration))));
                }
                SlotNow::Lost => {
                    return Ok(Step::Stop(Exit::Failed(slot::slot_lost(&self.migration))));
                }
                SlotNow::Kept {
                    lag,
                    retained,
                    safe_wal,
                } => (lag, retained, safe_wal),
            };
        let guard = monitor::wal_guard(retained, cfg.max_retained_wal);
        // A cross-database cutover that committed in the target only must be finished.
        // After a revert only `pgrepart cutover` cuts over again (a DBA just swapped back).
        let wants_cutover = crate::rollback::again::cuts_over_by_itself(
            cfg.cutover == CutoverMode::Auto,
            m.reverted_at.is_some(),
        ) || m.cutover_requested
            || m.target_committed_fence.is_some();
        // The apply catches up at full speed, whatever the load governor says, once the cutover
        // is due, while a verify waits for the applier to reach its point, and before the
        // retained WAL gets near a limit (--max-retained-wal, or the server's
        // max_slot_wal_keep_size with less than the retained size left).
        let wal_tight =
            guard != monitor::WalVerdict::Fine || safe_wal.is_some_and(|s| s < retained as i64);
        let free =
            wal_tight || m.hold_at.is_some() || (m.phase == Phase::Streaming && wants_cutover);
        if free != self.pace.is_free() {
            if free && wal_tight && self.pace.limit().is_some() {
                tracing::warn!(
                    retained_bytes = retained,
                    "the slot retains WAL near its limit: the apply runs at full speed, whatever the load governor says"
                );
            }
            self.pace.set_free(free);
        }
        let now = Instant::now();
        let copying = self.pipeline.copy.is_some();
        let copied = self.rows_before + self.progress.streamed_rows.load(Ordering::Relaxed);
        let copy_per_s = copying
            .then(|| self.copy_rate.sample(now, copied))
            .flatten();
        let apply_per_s = self.apply_rate.sample(now, applied.max(0) as u64);
        // The age of the oldest change of the table received and not applied; 0 when none is
        // pending, whatever other WAL the server writes. Unknown while the stream is parked
        // with WAL behind it (nothing is received then).
        let lag_seconds = match self.received.oldest_unapplied(confirmed) {
            Some(ts) => Some(
                ((crate::protocol::copydata::pg_epoch_micros_now() - ts) as f64 / 1e6).max(0.0),
            ),
            None if (self.pace.parked() || m.paused) && lag > 0 => None,
            None => Some(0.0),
        };
        let governor_reason = self
            .governor_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        state::record_progress(
            &self.control,
            self.migration.id,
            &state::LiveFigures {
                applied_changes: applied,
                confirmed,
                lag_seconds,
                copy_rows_per_s: copy_per_s,
                apply_changes_per_s: apply_per_s,
                copy_bytes: self.progress.bytes.load(Ordering::Relaxed) as i64,
                rows_streamed: copied as i64,
                pause_in_effect: self.shared.paused.load(Ordering::Relaxed),
                held_at: held_at(&self.shared),
                copy_rate_limit: copying
                    .then(|| self.limit.get())
                    .flatten()
                    .map(|l| l as i64),
                // 0 while the governor parks the stream.
                apply_rate_limit: if self.pace.parked() {
                    Some(0)
                } else {
                    self.pace.limit().map(|l| l as i64)
                },
                governor_reason: governor_reason.clone(),
            },
        )
        .await?;
        self.own_writes.fetch_add(1, Ordering::Relaxed);
        let hold = steps::follow_hold(&self.control, &m, &self.hold_tx).await?;
        if guard == monitor::WalVerdict::Stop {
            return Ok(Step::Stop(Exit::WalStop { retained }));
        }
        // Pause: everything on request; the copy alone when the slot holds too much WAL.
        self.pause_tx
            .send_if_modified(|p| std::mem::replace(p, m.paused) != m.paused);
        let copy_paused = monitor::copy_paused(m.paused, guard, self.key_pending);
        if self
            .copy_pause_tx
            .send_if_modified(|p| std::mem::replace(p, copy_paused) != copy_paused)
            && copy_paused
            && !m.paused
        {
            tracing::warn!(
                retained_bytes = retained,
                "the slot holds more WAL than --max-retained-wal: copy paused, apply goes on"
            );
        }
        if guard == monitor::WalVerdict::PauseCopy && self.key_pending && !self.wal_warned {
            self.wal_warned = true;
            tracing::warn!(
                retained_bytes = retained,
                "the slot holds more WAL than --max-retained-wal; the copy goes on, as the changes can only be applied once it is done and the primary key built (at twice the limit the run stops)"
            );
        }
        let snapshot = Snapshot {
            phase: m.phase.as_str(),
            rows_copied: copied,
            rows_total_estimate: m.rows_estimate.max(0) as u64,
            bytes_copied: self.progress.bytes.load(Ordering::Relaxed),
            applied_changes: applied.max(0) as u64,
            lag_bytes: lag,
            lag_seconds: lag_seconds.unwrap_or(0.0),
            wal_retained_bytes: retained,
            copy_rows_per_s: copy_per_s.unwrap_or(0.0),
            apply_changes_per_s: apply_per_s.unwrap_or(0.0),
            paused: m.paused,
            copy_rate_limit: copying.then(|| self.limit.get()).flatten(),
            governor: governor_reason,
            ..Default::default()
        };
        self.display.update(&snapshot);
        self.figures.send_replace(snapshot);
        if m.paused {
            return Ok(Step::Wait);
        }
        if m.phase == Phase::Copying {
            let ranges_pending = self.shared.ranges_pending.load(Ordering::Relaxed);
            return Ok(match (copying, ranges_pending) {
                (true, _) => Step::Wait,
                (false, 0) => Step::FinishCopy,
                (false, _) => Step::LookSoon,
            });
        }
        // A `pgrepart verify` that passed (or repaired) cleared the block: try at once.
        if self.verify_blocked && m.last_error.is_none() {
            self.verify_blocked = false;
            self.next_cutover_try = Instant::now();
        }
        if m.phase != Phase::Streaming || !wants_cutover || Instant::now() < self.next_cutover_try {
            return Ok(Step::Wait);
        }
        if hold.is_some() {
            tracing::debug!("a verify holds the applier; cutting over after it");
            return Ok(Step::Wait);
        }
        if lag > cfg.max_lag_bytes {
            tracing::debug!(
                lag_bytes = lag,
                "waiting for the lag to shrink before cutting over"
            );
            return Ok(Step::Wait);
        }
        Ok(Step::Cutover)
    }

    /// The index builds and ANALYZE after the copy; a signal cancels them in the server. False
    /// when interrupted.
    async fn finish_copy(&mut self, interrupted: &mut watch::Receiver<bool>) -> Result<bool> {
        let prep = &self.cfg.prep;
        let backends = copy::indexes::Backends::default();
        let built = KeyBuilt {
            pending: self.key_pending,
            applier: self.done_tx.clone(),
        };
        // A copy that was paced (the governor, or --max-copy-rate) has its index builds and
        // ANALYZE paced too: unpaced they take the cores for a second or more at once.
        let gentle = self.limit.get().is_some();
        let finished = tokio::select! {
            r = steps::finish_copy(&mut self.control, prep, &self.info, &self.migration, &backends, built, gentle) => Some(r),
            _ = interrupted.wait_for(|i| *i) => None,
        };
        match finished {
            Some(Ok(())) => {
                // Tests: hold as the catch-up begins (the stages run on).
                crate::fault::pause("catch-up").await;
                self.key_pending = false;
                tracing::info!(
                    elapsed_s = self.started.elapsed().as_secs(),
                    "copy and indexes done; streaming"
                );
                self.migration.phase = Phase::Streaming;
                Ok(true)
            }
            Some(Err(e)) => Err(e),
            None => {
                if let Err(e) = backends.cancel(&prep.dbs.target).await {
                    tracing::warn!(error = %e, "could not cancel the index builds; they end with their sessions");
                }
                // The lock of the index build, if it was taken.
                let _ = self.control.batch_execute("ROLLBACK").await;
                Ok(false)
            }
        }
    }

    /// The check before cutover, then the cutover's attempts. `Some(lock held)` once swapped.
    async fn cutover(&mut self) -> Result<Option<Duration>> {
        // Not after a cross-database cutover committed in the target: that one is finished
        // whatever a comparison would say (the new table has its final name).
        if self.migration.target_committed_fence.is_none() {
            let verdict = steps::verified_before_cutover(
                &self.control,
                self.cfg,
                &self.info,
                &self.migration,
                &self.hold_tx,
                &self.shared,
                crate::verify::gate::check_pace(self.limit.get()),
            )
            .await?;
            let wait = match verdict {
                Verified::Pass => None,
                Verified::Differs => Some(Duration::from_secs(60)),
                Verified::Unfinished => Some(Duration::from_secs(5)),
            };
            if let Some(wait) = wait {
                tracing::info!(seconds = wait.as_secs(), "verifying again after this wait");
                self.next_cutover_try = Instant::now() + wait;
                self.verify_blocked = true;
                return Ok(None);
            }
        }
        self.verify_blocked = false;
        let dbs = Dbs {
            control: &mut self.control,
            source: &mut self.source,
        };
        let held = steps::try_cutover(
            dbs,
            self.cfg,
            &mut self.fence,
            &self.server,
            &self.info,
            &self.migration,
        )
        .await?;
        if held.is_none() {
            self.next_cutover_try = Instant::now() + Duration::from_secs(60);
        }
        Ok(held)
    }

    /// After the pipeline has stopped: what the attempt's end means for the state, and what the
    /// user is told.
    async fn conclude(self, exit: Exit) -> Result<()> {
        let prep = &self.cfg.prep;
        let m = &self.migration;
        match exit {
            Exit::Done { lock_held } => {
                slot::finish_cleanup(&self.source, m).await?;
                let now = state::get(&self.control, m.id).await?;
                let in_default = steps::default_partition_note(&self.control, &prep.table).await;
                println!(
                    "{} is now partitioned: {} rows copied, {} changes applied, lock held {} ms; the old table is {}{in_default}",
                    prep.table,
                    now.rows_copied,
                    self.applied_before
                        + self.shared.applied_changes.load(Ordering::Relaxed) as i64,
                    lock_held.as_millis(),
                    prep.table.sibling(m.old_name.clone())
                );
                steps::print_point_at(prep, m);
                if now.window.is_open() {
                    // The old table follows the new one until the window ends; --drop-old then.
                    return Ok(());
                }
                if self.cfg.drop_old {
                    crate::cutover::drop_old(&self.source, &prep.table.sibling(m.old_name.clone()))
                        .await?;
                }
                Ok(())
            }
            Exit::Interrupted => {
                let confirmed = Lsn(self.shared.flush_lsn.load(Ordering::Relaxed));
                let figures = state::LiveFigures {
                    applied_changes: self.applied_before
                        + self.shared.applied_changes.load(Ordering::Relaxed) as i64,
                    confirmed,
                    ..Default::default()
                };
                let _ = best_effort(state::record_progress(&self.control, m.id, &figures)).await;
                let _ = best_effort(state::set_runner(&self.control, m.id, None)).await;
                Err(Error::failed(format!(
                    "stopped by a signal; the slot and state are kept (confirmed position {confirmed})"
                ))
                .with_hint(
                    "run the same command again to resume, or `pgrepart abort` to remove everything",
                ))
            }
            Exit::Aborted => Err(Error::failed(format!(
                "migration {} was aborted by `pgrepart abort`",
                m.id
            ))),
            Exit::WalStop { retained } => {
                // Keeping the slot would keep the WAL: drop it to protect the source's disk.
                let dropped = slot::drop_slot(&self.source, &m.slot_name).await;
                let msg = format!(
                    "stopped: the replication slot held {retained} bytes of WAL, twice --max-retained-wal; {} to free the source's disk",
                    if dropped.is_ok() {
                        "the slot was dropped"
                    } else {
                        "dropping the slot failed"
                    }
                );
                let _ = best_effort(state::set_phase(
                    &self.control,
                    m.id,
                    Phase::Failed,
                    Some(&msg),
                ))
                .await;
                let _ = best_effort(state::set_runner(&self.control, m.id, None)).await;
                Err(Error::failed(msg).with_hint(
                    "the migration cannot resume without its slot: run `pgrepart abort`, then start again with a larger --max-retained-wal (or when the source is quieter)",
                ))
            }
            Exit::Failed(e) if e.is_transient() => {
                // The next attempt takes over; the state keeps its phase, and says why.
                let _ =
                    best_effort(state::set_error(&self.control, m.id, Some(&e.to_string()))).await;
                Err(e)
            }
            Exit::Failed(e) => {
                // A stage failed: keep the slot and state so that a rerun resumes, and say so.
                let _ = best_effort(state::set_phase(
                    &self.control,
                    m.id,
                    Phase::Failed,
                    Some(&e.to_string()),
                ))
                .await;
                let _ = best_effort(state::set_runner(&self.control, m.id, None)).await;
                Err(if e.hint().is_some() {
                    e
                } else {
                    e.with_hint(
                        "fix the cause, then run the same command again to resume (or `pgrepart abort`)",
                    )
                })
            }
        }
    }
}

/// A state write on the way out: its connection may be the one that failed, so it is bounded.
async fn best_effort<T>(f: impl std::future::Future<Output = Result<T>>) -> Option<T> {
    tokio::time::timeout(Duration::from_secs(5), f)
        .await
        .ok()?
        .ok()
}

fn held_at(shared: &Shared) -> Option<Lsn> {
    match shared.held_at.load(Ordering::Relaxed) {
        0 => None,
        at => Some(Lsn(at)),
    }
}
