//! Keeps the migration from costing the source's own workload more than it must: the copy first,
//! then the apply.
//!
//! The copy writes WAL as fast as two cores can produce it, every commit of the application then
//! waits for a WAL flush that carries the copy's data too, and for as long as the migration lasts
//! the slot's walsender decodes the database's WAL. So the governor reads every second what the
//! application feels, against a reference taken without the migration, and chooses the copy's
//! pace in [`super::objective`]: within a ceiling on any moment (`--max-impact`,
//! `--max-replica-lag`), the pace that costs the application least over the whole migration.
//!
//! ```text
//! before the slot: reference = the probe's median commit, the application's statements' mean
//!                  (pg_stat_statements, where installed), its transaction time (busy sessions
//!                  over transactions/s, Little's law), the other write transactions/s (or, for
//!                  a workload that only reads, pg_stat_database's commits and rollbacks)
//! every second:    the same, smoothed; the worst replay_lag of the physical standbys
//!                  → objective::plan: the copy's limit and the reason shown by `status`
//!                  the apply: paced only over a ceiling once the copy is at its floor or done
//!                  (floor 500 changes/s); raised as the workload leaves room; the stream parked
//!                  after 3 s over a ceiling at the floor; let go whenever `run` frees it (the
//!                  cutover due, a verify waiting, the retained WAL near a limit)
//! after 5 s, then every 20 s:
//!                  the copy and the apply are held, the slot's walsender left to stop decoding
//!                  (0.4 to 3.4 s; skipped while it still decodes what the migration wrote),
//!                  and the references taken again over a second: a change
//!                  beyond the ceiling's band either way is the workload's own; the excess left
//!                  is the walsender's, the floor of every pace
//! ```
//!
//! The apply is paced where the stream is read: a reader that waits reads nothing, so the
//! walsender stops decoding once the socket's buffers are full, and both its work and the
//! target's wait in the slot's WAL. On a machine the workload saturates this defers the cost of
//! the apply rather than removing it; the lag grows until the workload leaves room.
//!
//! With no workload of its own on the source nothing waits on those flushes, and the copy runs at
//! full speed (the probe's latency rises with the copy's WAL, but nobody else's does).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_postgres::{Client, Config, SimpleQueryMessage};

use super::CopyProgress;
use crate::error::{Error, Result};

use super::objective::{
    Backlog, Ceilings, FAST_WEIGHT, LatencyOf, Model, Pool, Reading, Reason, pool_ceiling,
    sessions_ms, smoothed, smoothed_by, waits_for_work,
};
pub use super::objective::{MIN_RATE, MIN_WORKLOAD_XACTS, SLACK_MS, START_RATE, UNLIMITED_ABOVE};

/// The copy's current rate limit, shared by its workers; 0 is none. While held, the workers move
/// no rows (the governor measures the source without the copy).
#[derive(Debug, Default)]
pub struct RateLimit {
    rows_per_s: AtomicU64,
    held: AtomicBool,
}

impl RateLimit {
    pub fn new(limit: Option<u64>) -> Self {
        RateLimit {
            rows_per_s: AtomicU64::new(limit.unwrap_or(0)),
            held: AtomicBool::new(false),
        }
    }

    pub fn held(&self) -> bool {
        self.held.load(Ordering::Relaxed)
    }

    /// Holds the copy until the guard is dropped (also when the governor's task is aborted).
    pub fn hold(&self) -> Hold<'_> {
        self.held.store(true, Ordering::Relaxed);
        Hold(self)
    }

    pub fn get(&self) -> Option<u64> {
        match self.rows_per_s.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }

    /// `Some(0)` is stored as 1 row/s: 0 means no limit.
    pub fn set(&self, limit: Option<u64>) {
        let stored = match limit {
            None => 0,
            Some(n) => n.max(1),
        };
        self.rows_per_s.store(stored, Ordering::Relaxed);
    }
}

/// The copy is held while this lives.
#[must_use]
pub struct Hold<'a>(&'a RateLimit);

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        self.0.held.store(false, Ordering::Relaxed);
    }
}

/// One worker's pacing: its share of the limit, one chunk of rows at a time.
#[derive(Debug)]
pub struct Pacer {
    next: Instant,
}

impl Default for Pacer {
    fn default() -> Self {
        Pacer {
            next: Instant::now(),
        }
    }
}

impl Pacer {
    /// How long to wait after `rows` more rows, at `limit` rows/s shared by `workers`.
    pub fn delay(
        &mut self,
        now: Instant,
        rows: u64,
        limit: Option<u64>,
        workers: usize,
    ) -> Duration {
        let Some(limit) = limit else {
            self.next = now;
            return Duration::ZERO;
        };
        let share = (limit as f64 / workers.max(1) as f64).max(1.0);
        // No credit for time spent below the limit beyond one second.
        let floor = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
        let start = self.next.max(floor);
        self.next = start + Duration::from_secs_f64(rows as f64 / share);
        self.next.saturating_duration_since(now)
    }
}

/// The governor's references: the probe's commit latency and the other write transactions' rate
/// without the migration (pure).
#[derive(Debug, Clone)]
pub struct Controller {
    baseline_ms: f64,
    /// Other write transactions per second without the copy.
    baseline_xacts: f64,
    max_impact: f64,
}

/// Decisions (seconds) after a slow-down of the apply during which it is not raised.
pub const COOLDOWN: u32 = 3;
/// The factor the apply's pace grows by per second while the workload has room.
pub const RAISE: f64 = 1.15;

/// The limit a copy starts with: [`START_RATE`] (or the user's cap, if lower) on a busy source,
/// else the cap alone.
pub fn start_limit(cap: Option<u64>, busy: bool) -> Option<u64> {
    if busy {
        Some(cap.map_or(START_RATE, |c| c.min(START_RATE)))
    } else {
        cap
    }
}

/// What a decision changed, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Unchanged,
    SlowedTo(u64),
    RaisedTo(u64),
    Released,
}

impl Controller {
    /// `max_impact`: the ceiling on the rise of the latency, and on the fall of the other write
    /// transactions' rate seen as a rise of latency, as a fraction (0.5 for 50%).
    pub fn new(baseline_ms: f64, baseline_xacts: f64, max_impact: f64) -> Self {
        Controller {
            baseline_ms: baseline_ms.max(0.0),
            baseline_xacts: baseline_xacts.max(0.0),
            max_impact: max_impact.max(0.0),
        }
    }

    /// New baselines, measured while the copy and the apply were held. The slot's walsender
    /// still runs then (woken at each of the source's WAL flushes, decoding what it can), so a
    /// measure that the last baselines call within the ceiling (commits a little longer, a
    /// workload a little slower) is that residue of the migration, and one a little better is
    /// a second's noise: the last baseline stays (see [`rebased`]). Anything beyond the ceiling's
    /// band either way is the workload's own and becomes the baseline. Returns the baselines now
    /// in force (ms, xacts).
    pub fn rebase(&mut self, baseline_ms: f64, baseline_xacts: f64) -> (f64, f64) {
        let (ms, xacts) = (baseline_ms.max(0.0), baseline_xacts.max(0.0));
        self.baseline_ms = rebased(self.baseline_ms, ms, self.max_impact, SLACK_MS);
        let within =
            xacts >= self.xacts_floor() && xacts <= self.baseline_xacts * (1.0 + self.max_impact);
        if !within {
            self.baseline_xacts = xacts;
        }
        (self.baseline_ms, self.baseline_xacts)
    }

    pub fn baseline_ms(&self) -> f64 {
        self.baseline_ms
    }

    /// The other write transactions per second at the last baseline.
    pub fn baseline_xacts(&self) -> f64 {
        self.baseline_xacts
    }

    /// The source had a write workload at the last baseline.
    pub fn busy(&self) -> bool {
        self.baseline_xacts >= MIN_WORKLOAD_XACTS
    }

    pub fn allowed_ms(&self) -> f64 {
        self.baseline_ms * (1.0 + self.max_impact) + SLACK_MS
    }

    /// The other write transactions' rate below which the workload counts as slowed beyond the
    /// ceiling.
    pub fn xacts_floor(&self) -> f64 {
        self.baseline_xacts / (1.0 + self.max_impact)
    }
}

/// A latency reference measured again with the migration held (pure): a measure within the
/// ceiling's band either way (up to `1 + max impact` times higher, or lower) keeps the last
/// reference: above it, the residue of the slot's walsender; below it, the noise of one second's
/// few commits (on the bench machine the probe's median wandered from 0.3 to 1.2 ms with nothing
/// changed, and a reference that followed it down held the copy at its floor for good). Beyond
/// the band the workload has changed by itself, and the measure is the new reference.
pub fn rebased(reference_ms: f64, measured_ms: f64, max_impact: f64, slack_ms: f64) -> f64 {
    let within = measured_ms <= reference_ms * (1.0 + max_impact) + slack_ms
        && measured_ms >= reference_ms / (1.0 + max_impact) - slack_ms;
    if within { reference_ms } else { measured_ms }
}

/// What a second's reading says for the apply (pure): over a ceiling, cut in proportion; within
/// half of it, room to speed up.
pub fn apply_signal(reading: &Reading, ceilings: &Ceilings) -> Signal {
    let m = ceilings.max_impact;
    let lagging = match (reading.replica_lag_s, ceilings.max_replica_lag_s) {
        (Some(lag), Some(max)) if lag > max => Some((max / lag).clamp(0.25, 0.7)),
        _ => None,
    };
    if !reading.busy() && lagging.is_none() {
        return Signal::Idle;
    }
    let excess = if reading.busy() {
        reading.excess()
    } else {
        0.0
    };
    if excess > m || lagging.is_some() {
        let by_impact = if excess > m {
            (1.0 + m) / (1.0 + excess)
        } else {
            1.0
        };
        Signal::Over(by_impact.min(lagging.unwrap_or(1.0)).clamp(0.25, 0.7))
    } else if excess <= m / 2.0 {
        Signal::Fine
    } else {
        Signal::Within
    }
}

/// What a second's figures say against the baselines.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Signal {
    /// No write workload on the source, nor at the baseline: nothing to protect.
    Idle,
    /// The workload waits: slow down by this factor (0.25 to 0.7).
    Over(f64),
    /// Within half the allowed impact: room to speed up.
    Fine,
    /// Within the allowed impact, not within half of it: stay.
    Within,
}

use super::objective::slow_from;

/// `limit` raised by [`RAISE`] (by one at least).
fn raised(limit: u64) -> u64 {
    ((limit as f64 * RAISE).round() as u64).max(limit + 1)
}

fn decision(before: Option<u64>, after: Option<u64>) -> Decision {
    match (before, after) {
        (a, b) if a == b => Decision::Unchanged,
        (_, None) => Decision::Released,
        (Some(a), Some(b)) if b > a => Decision::RaisedTo(b),
        (_, Some(b)) => Decision::SlowedTo(b),
    }
}

/// The lowest pace the governor sets for the apply (changes/s) while the stream is open.
pub const MIN_APPLY_RATE: u64 = 500;
/// Decisions in a row over the allowed impact at [`MIN_APPLY_RATE`] after which the governor
/// parks the stream (once the copy is done).
pub const PARK_AFTER: u32 = 3;
/// How long a park lasts, unless the workload falls to [`UNPARK_WORKLOAD`] of its rate when the
/// stream was parked (or stops), the cutover becomes due, a verify waits, or the retained WAL nears
/// a limit. Opening the stream again costs the walsender the decoding of the WAL from the slot's
/// restart point (up to about 15 s of the source's WAL: a running-transactions record is logged
/// every 15 s), so a park is long compared with that.
pub const PARK_FOR: Duration = Duration::from_secs(30);
pub const UNPARK_WORKLOAD: f64 = 0.5;
/// Once the copy is done the stream is parked at most this share of the time: a park lets the
/// lag grow by the workload's changes, which the apply (at [`KEEP_UP`] times them) drains in as
/// long again, and parks back to back would make the migration crawl without an end.
pub const PARK_SHARE: f64 = 1.0 / 3.0;

/// Whether the stream may be parked now (pure): the time parked so far within [`PARK_SHARE`] of
/// the time since the copy ended.
pub fn may_park(parked_so_far: Duration, since_copy_done: Duration) -> bool {
    parked_so_far.as_secs_f64() <= since_copy_done.as_secs_f64() * PARK_SHARE
}
/// After a hold, the apply resumes at most this many times as fast as before it.
pub const AFTER_HOLD: f64 = 1.5;
/// The apply is never paced below this many times the changes the application makes to the
/// table each second: slower, the lag would grow for as long as the workload lasts and the
/// migration never end (a total excess without bound, whatever each second costs); at twice,
/// a lag drains in the time it took to build with nothing applied.
pub const KEEP_UP: f64 = 2.0;

/// The lowest pace for the apply (pure): [`KEEP_UP`] times the table's changes per second, and
/// at least [`MIN_APPLY_RATE`].
pub fn keep_up_floor(table_changes_per_s: Option<f64>) -> u64 {
    table_changes_per_s
        .map_or(0, |c| (c.max(0.0) * KEEP_UP).ceil() as u64)
        .max(MIN_APPLY_RATE)
}

/// The apply's pace: how many changes a second the stream reader passes on, set by the governor
/// (or `--max-apply-rate`) and followed by the reader. The reader that waits reads nothing from
/// the replication connection, so the walsender stops decoding once the socket's buffers are
/// full: the slot holds the WAL and the lag grows until the source can spare the work.
#[derive(Debug)]
pub struct ApplyPace {
    limit: RateLimit,
    /// Changes the reader has passed on (inserts, updates, deletes, truncates).
    changes: AtomicU64,
    /// The cutover is due: no limit and no hold, whatever the governor says.
    free: AtomicBool,
    /// The governor parks the stream: the reader closes the replication connection, so that the
    /// walsender neither decodes nor is woken by every WAL flush, until it is let go.
    parked: AtomicBool,
    /// The governor measures the source without the migration: the reader reads nothing and the
    /// applier takes no events.
    held: watch::Sender<bool>,
}

impl ApplyPace {
    pub fn new(cap: Option<u64>) -> Self {
        ApplyPace {
            limit: RateLimit::new(cap),
            changes: AtomicU64::new(0),
            free: AtomicBool::new(false),
            parked: AtomicBool::new(false),
            held: watch::Sender::new(false),
        }
    }

    /// Follows the governor's holds (the applier takes no events while one lasts).
    pub fn subscribe_held(&self) -> watch::Receiver<bool> {
        self.held.subscribe()
    }

    /// The pace the reader keeps now; `None`: as fast as it can.
    pub fn limit(&self) -> Option<u64> {
        if self.free.load(Ordering::Relaxed) {
            None
        } else {
            self.limit.get()
        }
    }

    /// The reader reads nothing while the governor measures the source without the migration.
    pub fn held(&self) -> bool {
        !self.free.load(Ordering::Relaxed) && *self.held.borrow()
    }

    pub fn set(&self, limit: Option<u64>) {
        self.limit.set(limit);
    }

    /// The stream is parked by the governor (never once the cutover is due).
    pub fn parked(&self) -> bool {
        !self.free.load(Ordering::Relaxed) && self.parked.load(Ordering::Relaxed)
    }

    pub fn set_parked(&self, parked: bool) {
        self.parked.store(parked, Ordering::Relaxed);
    }

    /// Once the cutover is due the apply catches up at full speed.
    pub fn set_free(&self, free: bool) {
        self.free.store(free, Ordering::Relaxed);
    }

    pub fn is_free(&self) -> bool {
        self.free.load(Ordering::Relaxed)
    }

    pub fn count(&self, changes: u64) {
        self.changes.fetch_add(changes, Ordering::Relaxed);
    }

    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    fn hold(&self) -> PaceHold<'_> {
        self.held.send_replace(true);
        PaceHold(self)
    }
}

/// The apply is held while this lives.
#[must_use]
pub struct PaceHold<'a>(&'a ApplyPace);

impl Drop for PaceHold<'_> {
    fn drop(&mut self) {
        self.0.held.send_replace(false);
    }
}

/// The governor's decisions for the apply (pure). A workload over a ceiling slows the apply once
/// the copy is at its floor or done (before that, a slower copy costs the application less than a
/// growing lag: the migration lasts until the lag is zero); the apply is let go once its pace no
/// longer holds it back.
#[derive(Debug, Clone)]
pub struct ApplyController {
    /// The user's `--max-apply-rate`, if any: never exceeded.
    cap: Option<u64>,
    limit: Option<u64>,
    cooldown: u32,
    /// Decisions in a row that found the workload waiting with the apply at its floor.
    over_at_floor: u32,
    /// The lowest pace it sets ([`keep_up_floor`]).
    floor: u64,
}

impl ApplyController {
    pub fn new(cap: Option<u64>) -> Self {
        ApplyController {
            cap,
            limit: cap,
            cooldown: 0,
            over_at_floor: 0,
            floor: MIN_APPLY_RATE,
        }
    }

    /// The lowest pace from now on ([`keep_up_floor`]); a pace below it is raised to it at the
    /// next decision (the user's cap still rules).
    pub fn set_floor(&mut self, floor: u64) {
        self.floor = floor.max(MIN_APPLY_RATE);
    }

    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// `limit`, not below the floor nor above the cap.
    fn bounded(&self, limit: u64) -> u64 {
        let l = limit.max(self.floor);
        self.cap.map_or(l, |c| c.min(l))
    }

    /// The workload has waited for [`PARK_AFTER`] decisions in a row with the apply at its floor:
    /// what is left of the migration's weight is the walsender's, and only parking the stream
    /// removes it.
    pub fn wants_park(&self) -> bool {
        self.over_at_floor >= PARK_AFTER
    }

    /// The stream goes on after a park, at the floor: it is parked again only after
    /// [`PARK_AFTER`] more decisions over the allowed impact.
    pub fn unparked(&mut self) {
        self.over_at_floor = 0;
        self.cooldown = COOLDOWN;
    }

    pub fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// The governor paces the apply below the user's cap (or at all, without one).
    pub fn pacing(&self) -> bool {
        self.limit.is_some() && self.limit != self.cap
    }

    /// After a hold: an unpaced apply resumes at most at [`AFTER_HOLD`] x the changes per second
    /// it passed on before, so that the backlog of the hold is not applied in one burst that the
    /// workload feels (on the bench machine a workload of 2,400 transactions/s fell to 1,200 while
    /// a hold's backlog was applied at 16,000 changes/s). The pace is let go again as usual, once
    /// it no longer binds.
    pub fn after_hold(&mut self, changes_per_s: f64) -> Decision {
        let before = self.limit;
        if self.limit.is_none() && changes_per_s > 0.0 {
            self.limit = Some(self.bounded((changes_per_s * AFTER_HOLD) as u64));
        }
        decision(before, self.limit)
    }

    /// One decision: what the second's figures say, and the changes per second the reader passed
    /// on.
    pub fn decide(&mut self, signal: Signal, changes_per_s: f64) -> Decision {
        let before = self.limit;
        self.cooldown = self.cooldown.saturating_sub(1);
        let at_floor = self.limit.is_some_and(|l| l <= self.floor);
        self.over_at_floor = match signal {
            Signal::Over(_) if at_floor => self.over_at_floor + 1,
            _ => 0,
        };
        self.limit = match signal {
            Signal::Idle => self.cap,
            Signal::Over(factor) => {
                let from = slow_from(self.limit, changes_per_s);
                if from <= 0.0 {
                    // Nothing moved and nothing limits it: the apply is not what weighs.
                    self.limit
                } else {
                    self.cooldown = COOLDOWN;
                    Some(self.bounded((from * factor) as u64))
                }
            }
            Signal::Fine if self.cooldown == 0 => match self.limit {
                None => None,
                Some(l) if self.cap == Some(l) => Some(l),
                // The stream moved well under its limit: the limit is not what paces it.
                Some(l) if changes_per_s < l as f64 / 2.0 => self.cap,
                Some(l) => {
                    let raised = raised(l);
                    match self.cap {
                        Some(c) if raised >= c => Some(c),
                        _ => Some(raised),
                    }
                }
            },
            Signal::Fine | Signal::Within => self.limit,
        };
        // A floor that rose since (the workload writes more): the pace follows it.
        if let Some(l) = self.limit
            && self.cap != Some(l)
            && l < self.floor
        {
            self.limit = Some(self.bounded(l));
        }
        decision(before, self.limit)
    }
}

/// Test fault point (`PGREPART_TEST_FAULT`): once the copy is done, every probe's commit counts as
/// four times slower than allowed, as on a source whose workload waits whatever the apply does.
pub const SLOW_SOURCE_FAULT: &str = "governor-slow-source";

/// Decisions between two reads of the table's statistics (backends report them about once a
/// second, so a shorter span is mostly noise).
const TABLE_EVERY: u32 = 5;

/// The application's changes to `table` so far (inserts, updates, deletes, over its partitions
/// when it has some: `pg_partition_tree` lists nothing for a table without), from the
/// statistics; `None` when they cannot be read.
async fn table_changes(client: &Client, table: &str) -> Option<i64> {
    client
        .query_opt(
            "SELECT sum(s.n_tup_ins + s.n_tup_upd + s.n_tup_del)::bigint FROM pg_stat_user_tables s \
              WHERE s.relid = $1::text::regclass \
                 OR s.relid IN (SELECT relid FROM pg_partition_tree($1::text::regclass))",
            &[&table],
        )
        .await
        .ok()
        .flatten()
        .and_then(|r| r.get(0))
}

/// A decision window (normally a second) longer than this spanned a stall and is not used.
const STALLED_WINDOW_S: f64 = 3.0;

/// How often the probe commits, and how many probes make one decision.
const PROBE_EVERY: Duration = Duration::from_millis(200);
const PROBES_PER_DECISION: usize = 5;
/// Decisions between two new baselines, taken while the copy is held for [`HOLD_SETTLE`] and then
/// [`PROBES_PER_DECISION`] probes (1.4 s of every 21 s, on a busy source only).
const REBASE_EVERY: u32 = 20;
/// The first new baseline comes sooner. The probe's commits read longer before the migration
/// than with it held moments later on a source with idle cores (0.43 to 0.57 ms against 0.26 to
/// 0.37 in three open-loop runs on the bench machine, the workload at 40% of the machine), and
/// the copy ran at up to 100,000 rows/s on that looser baseline, the workload's latency seven
/// times its own; the workload's rate is held to the first baseline's all the same
/// ([`Controller::rebase`]).
const FIRST_REBASE: u32 = 5;
/// How long the source is left to settle after the migration is held, before the baseline is
/// taken; then up to [`WALSENDER_SETTLE_MAX`] more while the slot's walsender still decodes.
const HOLD_SETTLE: Duration = Duration::from_millis(400);
const WALSENDER_SETTLE_MAX: Duration = Duration::from_secs(3);
const WALSENDER_LOOK_EVERY: Duration = Duration::from_millis(100);

/// Waits [`HOLD_SETTLE`], then until the slot's walsender has stopped working: it waits for WAL
/// or for room in the socket's buffers (`pg_stat_activity.wait_event`) twice in a row, for at
/// most [`WALSENDER_SETTLE_MAX`]. A walsender behind the source decodes at full speed (into
/// those buffers, or, for a large transaction such as a copied range, into its reorder buffer,
/// sending nothing meanwhile), and a measure taken then counts a core's worth of the
/// migration's work as the workload's own pace. Returns whether it stopped (or has no
/// walsender).
async fn settle(client: &Client, slot: &str) -> bool {
    tokio::time::sleep(HOLD_SETTLE).await;
    let deadline = Instant::now() + WALSENDER_SETTLE_MAX;
    let mut idle_looks = 0;
    while Instant::now() < deadline {
        let row = client
            .query_opt(
                "SELECT a.wait_event FROM pg_stat_activity a \
                   JOIN pg_replication_slots s ON s.active_pid = a.pid WHERE s.slot_name = $1",
                &[&slot],
            )
            .await;
        let Ok(Some(row)) = row else { return true };
        let wait: Option<String> = row.get(0);
        if walsender_waits(wait.as_deref()) {
            idle_looks += 1;
            if idle_looks >= 2 {
                return true;
            }
        } else {
            idle_looks = 0;
        }
        tokio::time::sleep(WALSENDER_LOOK_EVERY).await;
    }
    false
}

/// A walsender's wait event that says it has nothing to do (pure): it waits for WAL, or for the
/// reader to take what it sent. Compared without case: PostgreSQL 17 spells `WalSenderWaitForWal`
/// what 14 to 16 spell `WalSenderWaitForWAL`.
pub fn walsender_waits(wait_event: Option<&str>) -> bool {
    wait_event.is_some_and(|w| {
        ["WalSenderWaitForWAL", "WalSenderWriteData", "WalSenderMain"]
            .iter()
            .any(|e| e.eq_ignore_ascii_case(w))
    })
}

/// One probe: a small write transaction on the source, in three round trips as an application's
/// would be (each waits its turn for a core, the commit for the WAL flush). Returns (latency in
/// ms, its xid).
async fn probe(client: &Client) -> Result<(f64, i64)> {
    let started = Instant::now();
    let err = |e| Error::db("probing the source's commit latency", e);
    client.batch_execute("BEGIN").await.map_err(err)?;
    let messages = client
        .simple_query("SELECT pg_current_xact_id()::text")
        .await
        .map_err(err)?;
    client.batch_execute("COMMIT").await.map_err(err)?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let xid = messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse::<i64>().ok()),
            _ => None,
        })
        .ok_or_else(|| Error::failed("the probe returned no transaction id"))?;
    Ok((ms, xid))
}

/// What a series of probes saw.
#[derive(Debug, Clone, Copy)]
struct Measured {
    /// The median probe latency.
    latency_ms: f64,
    /// Other sessions' write transactions per second, between the first probe and the last.
    others_per_s: f64,
    /// The application's transactions per second, read-only ones too (`pg_stat_database`).
    all_xacts_per_s: Option<f64>,
    /// The last probe's xid.
    xid: i64,
    /// The application's sessions seen busy, on average, between the probes (none sampled:
    /// `None`).
    busy: Option<f64>,
    /// The application's sessions, busy or not, on average.
    sessions: Option<f64>,
}

impl Measured {
    /// The workload's transactions per second, as `of` counts them.
    fn rate(&self, of: RateOf) -> f64 {
        match of {
            RateOf::Xids => self.others_per_s,
            RateOf::Statistics => self.all_xacts_per_s.unwrap_or(0.0),
        }
    }
}

/// pgrepart's own sessions, by the `application_name` `pg::session_name` gives them: `pgrepart
/// <role>`, after the user's own name and `: ` when the connection gives one. An application's
/// name that merely starts with `pgrepart` is the application's.
macro_rules! own_session_name {
    () => {
        "'(^|: )pgrepart [a-z ]+$'"
    };
}

/// The application's sessions in `pg_stat_activity`: the source database's client backends but
/// this one and pgrepart's own.
macro_rules! application_sessions {
    () => {
        concat!(
            "datname = current_database() AND backend_type = 'client backend' \
               AND pid <> pg_backend_pid() \
               AND coalesce(application_name, '') !~ ",
            own_session_name!()
        )
    };
}

/// How often the application's sessions are counted.
const SESSIONS_EVERY: Duration = Duration::from_millis(50);

/// The application's sessions ([`application_sessions`]) in a transaction or a statement now,
/// and all of them. `None` when `pg_stat_activity` cannot be read.
async fn busy_sessions(client: &Client) -> Option<(f64, f64)> {
    client
        .query_one(
            concat!(
                "SELECT count(*) FILTER (WHERE state <> 'idle')::float8, count(*)::float8 \
                   FROM pg_stat_activity WHERE ",
                application_sessions!()
            ),
            &[],
        )
        .await
        .ok()
        .map(|r| (r.get(0), r.get(1)))
}

/// A mean of samples of the application's busy sessions.
#[derive(Debug, Default, Clone, Copy)]
struct BusyMean {
    sum: f64,
    /// The application's sessions, busy or not, summed over the samples.
    sessions: f64,
    n: u32,
    /// Samples asked for (each a transaction of the governor's session).
    tries: u64,
}

impl BusyMean {
    fn add(&mut self, x: Option<(f64, f64)>) {
        self.tries += 1;
        if let Some((busy, all)) = x {
            self.sum += busy;
            self.sessions += all;
            self.n += 1;
        }
    }

    /// The mean, from 5 samples at least.
    fn mean(&self) -> Option<f64> {
        (self.n >= 5).then(|| self.sum / f64::from(self.n))
    }

    /// The mean of the application's sessions, busy or not, from 5 samples at least.
    fn sessions(&self) -> Option<f64> {
        (self.n >= 5).then(|| self.sessions / f64::from(self.n))
    }
}

/// The source database's transactions so far, committed or rolled back (`pg_stat_database`):
/// read-only ones too, which take no transaction id. A backend reports them at most once a
/// second, so a second's count is rough; it is smoothed like the rest.
async fn db_xacts(client: &Client) -> Option<i64> {
    client
        .query_one(
            "SELECT (xact_commit + xact_rollback)::int8 FROM pg_stat_database \
              WHERE datname = current_database()",
            &[],
        )
        .await
        .ok()
        .map(|r| r.get(0))
}

/// Where the workload's rate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateOf {
    /// The transaction ids assigned on the source's cluster: its write transactions, exact.
    Xids,
    /// `pg_stat_database`'s commits and rollbacks of the source database: a workload that
    /// writes (almost) nothing but reads, which takes no transaction ids.
    Statistics,
}

/// Which rate measures the workload (pure): the transaction ids while it writes, else the
/// database's statistics when they show a workload.
pub fn rate_of(write_xacts: f64, all_xacts: Option<f64>) -> RateOf {
    match all_xacts {
        Some(all) if write_xacts < MIN_WORKLOAD_XACTS && all >= MIN_WORKLOAD_XACTS => {
            RateOf::Statistics
        }
        _ => RateOf::Xids,
    }
}

/// `n` probes (at least two), `every` apart; `own` counts pgrepart's other write transactions
/// meanwhile (left out of the workload).
async fn measure(
    client: &Client,
    n: usize,
    every: Duration,
    own: Option<&AtomicU64>,
) -> Result<Measured> {
    let own_now = || own.map_or(0, |o| o.load(Ordering::Relaxed));
    let n = n.max(2);
    let mut samples = Vec::with_capacity(n);
    let (mut first, mut xid, mut started, mut own_first) = (0, 0, Instant::now(), 0);
    let mut busy = BusyMean::default();
    let mut db_first = None;
    for i in 0..n {
        if i > 0 {
            // The application's sessions, counted meanwhile when there is time for it.
            let until = Instant::now() + every;
            if every >= SESSIONS_EVERY * 2 {
                while Instant::now() + SESSIONS_EVERY <= until {
                    busy.add(busy_sessions(client).await);
                    tokio::time::sleep(SESSIONS_EVERY).await;
                }
            }
            tokio::time::sleep(until.saturating_duration_since(Instant::now())).await;
        }
        let (ms, x) = probe(client).await?;
        if i == 0 {
            // From the end of the first probe to the end of the last: n - 1 of ours in between.
            (first, started, own_first) = (x, Instant::now(), own_now());
            db_first = db_xacts(client).await;
        }
        samples.push(ms);
        xid = x;
    }
    let db_last = db_xacts(client).await;
    let secs = started.elapsed().as_secs_f64().max(0.001);
    // This session's own transactions in between: the probes, the samples, the first read.
    let session = (n - 1) as u64 + busy.tries + 1;
    Ok(Measured {
        latency_ms: median(&mut samples),
        others_per_s: workload_rate(xid - first, n - 1, own_now() - own_first, secs),
        all_xacts_per_s: db_first
            .zip(db_last)
            .map(|(a, b)| workload_rate(b - a, session as usize, own_now() - own_first, secs)),
        xid,
        busy: busy.mean(),
        sessions: busy.sessions(),
    })
}

/// The probe's session and the source's commit latency and workload before the migration, with
/// the last probe's xid. Taken before the run creates its slot (or, resuming, before it starts
/// its stream): the only moment the source runs without any of the migration's load, walsender
/// included. Every later baseline is taken with the walsender running (see
/// [`Controller::rebase`]).
pub struct Baseline {
    client: Client,
    at: Measured,
    quiet: bool,
    /// The application's statements, where `pg_stat_statements` can be read.
    statements: Option<Statements>,
    /// Their mean latency over the baseline's second (ms), if they made enough calls.
    statements_ms: Option<f64>,
}

impl Baseline {
    /// The limit the copy starts with.
    pub fn start_limit(&self, cap: Option<u64>) -> Option<u64> {
        let of = rate_of(self.at.others_per_s, self.at.all_xacts_per_s);
        start_limit(cap, self.at.rate(of) >= MIN_WORKLOAD_XACTS)
    }

    /// The source server committed (almost) no write transactions but ours in the first tenth
    /// of a second.
    pub fn quiet(&self) -> bool {
        self.quiet
    }
}

pub async fn baseline(source: &Config) -> Result<Baseline> {
    let client = probe_session(source).await?;
    // A tenth of a second tells an idle source from a busy one; a busy one's rate and latency
    // are then taken over a second, as every decision's are (in one bench run the quick probes'
    // 0.28 ms sat below every later measure, 0.5 to 0.8 ms, and held the copy at its floor on
    // latency alone).
    let (mut at, quiet) = quick_look(&client).await?;
    let mut statements = Statements::open(&client).await;
    let mut statements_ms = None;
    if !quiet {
        if let Some(st) = statements.as_mut() {
            st.restart(&client).await;
        }
        at = measure(&client, PROBES_PER_DECISION + 1, PROBE_EVERY, None).await?;
        if let Some(st) = statements.as_mut() {
            statements_ms = st.sample(&client).await;
        }
    }
    Ok(Baseline {
        client,
        at,
        quiet,
        statements,
        statements_ms,
    })
}

/// The application's own statements on the source, from `pg_stat_statements` (installed in the
/// source database and loaded): the mean execution time per call of the source database's
/// top-level statements between two samples, pgrepart's own left out.
///
/// `pg_stat_statements` keys its figures by role, database and query id, not by session, and
/// pgrepart may connect as the application's own role; so pgrepart's statements are left out by
/// their query ids, those its sessions (`application_name` `pgrepart ...`) are seen running in
/// `pg_stat_activity` at each sample (every one of them repeats: copy, probe, figures). A
/// statement of the application with the same query id as one of pgrepart's (`BEGIN`,
/// `COMMIT`) is left out with it; it is not where the application waits (a commit's WAL flush
/// comes after its statement's execution).
pub struct Statements {
    ours: std::collections::BTreeSet<i64>,
    /// total_exec_time (ms) and calls at the last sample.
    last: Option<(f64, i64)>,
}

/// Calls between two samples below which their mean is not a reading.
pub const MIN_STATEMENT_CALLS: i64 = 20;

impl Statements {
    /// `None` where `pg_stat_statements` cannot be read (not installed in the source database,
    /// not loaded, or no query ids).
    async fn open(client: &Client) -> Option<Statements> {
        let readable = client
            .query_one(
                "SELECT to_regclass('pg_stat_statements') IS NOT NULL \
                    AND coalesce(current_setting('compute_query_id', true), 'auto') <> 'off'",
                &[],
            )
            .await
            .ok()?
            .get::<_, bool>(0);
        if !readable {
            return None;
        }
        let mut st = Statements {
            ours: Default::default(),
            last: None,
        };
        st.totals(client).await.ok()?;
        Some(st)
    }

    async fn totals(
        &mut self,
        client: &Client,
    ) -> std::result::Result<(f64, i64), tokio_postgres::Error> {
        let rows = client
            .query(
                concat!(
                    "SELECT DISTINCT query_id FROM pg_stat_activity \
                      WHERE query_id IS NOT NULL AND application_name ~ ",
                    own_session_name!()
                ),
                &[],
            )
            .await?;
        self.ours.extend(rows.iter().map(|r| r.get::<_, i64>(0)));
        let ours: Vec<i64> = self.ours.iter().copied().collect();
        let row = client
            .query_one(
                "SELECT coalesce(sum(total_exec_time), 0)::float8, coalesce(sum(calls), 0)::bigint \
                   FROM pg_stat_statements \
                  WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                    AND toplevel AND queryid <> ALL($1)",
                &[&ours],
            )
            .await?;
        Ok((row.get(0), row.get(1)))
    }

    /// Starts a new window from now.
    async fn restart(&mut self, client: &Client) {
        self.last = self.totals(client).await.ok();
    }

    /// The statements' mean latency since the last sample (ms); `None` with too few calls, or
    /// when the view could not be read.
    async fn sample(&mut self, client: &Client) -> Option<f64> {
        let now = self.totals(client).await.ok();
        let before = std::mem::replace(&mut self.last, now);
        statement_mean_ms(before?, now?)
    }
}

/// The mean execution time per call between two samples of (total ms, calls) (pure); `None`
/// with fewer than [`MIN_STATEMENT_CALLS`] calls, or after a reset of the figures.
pub fn statement_mean_ms(before: (f64, i64), after: (f64, i64)) -> Option<f64> {
    let calls = after.1 - before.1;
    let ms = after.0 - before.0;
    (calls >= MIN_STATEMENT_CALLS && ms >= 0.0).then(|| ms / calls as f64)
}

/// The worst `replay_lag` of the source's physical standbys (seconds): walsenders of no logical
/// slot (a logical consumer, pgrepart's own included, is not a standby). `None` when none
/// reports a lag (caught up and idle, or no standby).
async fn replica_lag(client: &Client) -> Option<f64> {
    client
        .query_one(
            "SELECT extract(epoch FROM max(r.replay_lag))::float8 FROM pg_stat_replication r \
              WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots s \
                                 WHERE s.active_pid = r.pid AND s.slot_type = 'logical')",
            &[],
        )
        .await
        .ok()?
        .get(0)
}

/// Whether the source server commits (almost) no write transactions but ours: the first tenth of
/// a second of `baseline`, in a session of its own (when the run has no governor).
pub async fn source_is_quiet(source: &Config) -> Result<bool> {
    let client = crate::pg::connect(source, "pgrepart probe").await?;
    Ok(quick_look(&client).await?.1)
}

/// Nine probes 10 ms apart, and whether they saw (almost) no other write transactions and no
/// session of the application's busy (a workload that only reads takes no transaction ids).
async fn quick_look(client: &Client) -> Result<(Measured, bool)> {
    let before = session_moves(client).await;
    let at = measure(client, 9, Duration::from_millis(10), None).await?;
    let after = session_moves(client).await;
    let quiet = at.others_per_s < MIN_WORKLOAD_XACTS / 2.0 && !sessions_moved(&before, &after);
    Ok((at, quiet))
}

/// The application's sessions in the source database: each one's pid, whether it runs a statement
/// now, and when its state last changed (every statement moves it). Empty when it cannot be read.
async fn session_moves(client: &Client) -> Vec<(i32, bool, Option<String>)> {
    client
        .query(
            concat!(
                "SELECT pid, state <> 'idle', state_change::text FROM pg_stat_activity WHERE ",
                application_sessions!()
            ),
            &[],
        )
        .await
        .map(|rows| {
            rows.iter()
                .map(|r| {
                    (
                        r.get(0),
                        r.get::<_, Option<bool>>(1).unwrap_or(false),
                        r.get(2),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the application worked between two looks at its sessions (pure): one of them runs a
/// statement, or ran one in between (its state changed). A workload of short reads is seldom
/// caught running (a point lookup is a few hundredths of a millisecond of a round trip) and
/// writes no transaction ids, and `pg_stat_database`'s counts move only as often as backends
/// report them (about once a second); a session left idle (a DBA's psql) does not count.
pub fn sessions_moved(
    before: &[(i32, bool, Option<String>)],
    after: &[(i32, bool, Option<String>)],
) -> bool {
    after.iter().any(|(pid, running, changed)| {
        *running
            || before
                .iter()
                .any(|(p, _, c)| p == pid && c.is_some() && c != changed)
    })
}

/// What the governor moves: the copy's rate and the apply's pace.
pub struct Governed {
    /// The copy's rate limit (rows/s), followed by its workers.
    pub copy_limit: Arc<RateLimit>,
    pub progress: Arc<CopyProgress>,
    /// The copy still runs (the governor moves its limit only then).
    pub copying: Arc<AtomicBool>,
    /// The apply's pace (changes/s), followed by the stream reader.
    pub pace: Arc<ApplyPace>,
    /// The allowed impact, as a fraction (0.15 for 15%).
    pub max_impact: f64,
    /// The user's `--max-copy-rate` and `--max-apply-rate`.
    pub copy_cap: Option<u64>,
    pub apply_cap: Option<u64>,
    /// The migration's replication slot: its walsender goes on decoding into the socket's
    /// buffers for a while after the reader stops, and a baseline waits for it to stop.
    pub slot: String,
    /// Write transactions pgrepart itself commits (copied ranges, applied batches, its state),
    /// when they take transaction ids of the source's cluster (the new table on the same
    /// server): left out of the workload, which is the application's alone. `None` when the
    /// new table is on another server.
    pub own_writes: Option<Arc<AtomicU64>>,
    /// The source, to open the probe session again when it is lost.
    pub source: Config,
    /// `--max-replica-lag`.
    pub max_replica_lag: Option<Duration>,
    /// The rows the copy had left when this attempt began (the planner's estimate less the
    /// ranges already copied).
    pub rows_to_copy: u64,
    /// Why the pace is what it is now, for `status` and the progress line.
    pub reason: Arc<std::sync::Mutex<Option<String>>>,
    /// The source table (quoted): the application's changes to it set the apply's floor
    /// ([`keep_up_floor`]).
    pub table: String,
}

/// A new probe session after `lost` (a transient error) ended the last one; the governing goes
/// on with its baselines, from a new window.
async fn reconnect_probe(source: &Config, lost: &Error) -> Result<Client> {
    tracing::warn!(
        error = %lost,
        rule = lost.transient_rule().unwrap_or_default(),
        "the load governor's probe session was lost; opening another"
    );
    probe_session(source).await
}

async fn probe_session(source: &Config) -> Result<Client> {
    let client = crate::pg::connect(source, "pgrepart probe").await?;
    client
        .batch_execute("SET synchronous_commit = on")
        .await
        .map_err(|e| Error::db("preparing the probe session", e))?;
    Ok(client)
}

/// pgrepart's own write transactions so far, as far as they count on the source.
fn own_writes(g: &Governed) -> u64 {
    g.own_writes
        .as_ref()
        .map_or(0, |o| o.load(Ordering::Relaxed))
}

/// The application's write transactions per second (pure): transaction ids assigned on the
/// source's cluster over `secs`, less the probes' own (`probes`, one each) and pgrepart's other
/// commits (`own`).
pub fn workload_rate(xids: i64, probes: usize, own: u64, secs: f64) -> f64 {
    (xids as f64 - probes as f64 - own as f64).max(0.0) / secs.max(0.001)
}

/// Governs the copy's rate and the apply's pace until `stop` turns true. Never fails the
/// migration: an error stops the governing (the user's limits stay) with a warning.
pub async fn run(base: Baseline, g: Governed, stop: watch::Receiver<bool>) {
    if let Err(e) = govern(base, &g, stop).await {
        g.copy_limit.set(g.copy_cap);
        g.pace.set(g.apply_cap);
        g.pace.set_parked(false);
        tracing::warn!(error = %e, "the load governor stopped; the migration goes on without it");
    }
}

fn limit_text(limit: Option<u64>, unit: &str) -> String {
    limit.map_or("none".to_string(), |l| format!("{l} {unit}"))
}

/// The reason shown while the copy is done (pure): the apply is paced only over a ceiling, and
/// raised again as the workload leaves room.
pub fn apply_reason(
    reading: &Reading,
    ceilings: &Ceilings,
    apply_limit: Option<u64>,
    parked: bool,
) -> String {
    if parked {
        return "paced: stream parked, the workload waits even with the apply at its floor".into();
    }
    let over = super::objective::ceiling_reason(reading, ceilings);
    if !reading.busy() && !matches!(over, Some(Reason::ReplicaLag { .. })) {
        return Reason::NoWorkload.to_string();
    }
    match (over, apply_limit) {
        (Some(r), _) => r.to_string(),
        (None, Some(l)) => {
            format!("paced: apply raised as the workload leaves room, {l} changes/s")
        }
        (None, None) => Reason::LeastTotalFull.to_string(),
    }
}

async fn govern(base: Baseline, g: &Governed, mut stop: watch::Receiver<bool>) -> Result<()> {
    let Baseline {
        mut client,
        at,
        mut statements,
        statements_ms,
        ..
    } = base;
    let mut last_xid = at.xid;
    // The workload's rate: its write transactions' ids, or, for a workload that only reads, the
    // database's statistics.
    let rate_source = rate_of(at.others_per_s, at.all_xacts_per_s);
    // The copy already runs at this start limit (set before it began: `Baseline::start_limit`).
    let mut controller = Controller::new(at.latency_ms, at.rate(rate_source), g.max_impact);
    let mut statements_ref = statements_ms;
    // The application's transactions' time (Little's law) without the migration.
    let mut sessions_ref = at.busy.and_then(|b| sessions_ms(b, at.rate(rate_source)));
    let mut db_before = db_xacts(&client).await;
    // An application whose sessions waited for work without the migration queues on its side
    // what the source does not serve in time.
    let waits = waits_for_work(at.busy, at.sessions);
    // The share of its sessions it kept busy without the migration.
    let pool_reference = at
        .busy
        .zip(at.sessions)
        .filter(|&(_, n)| n >= 1.0)
        .map(|(b, n)| b / n);
    let mut backlog = Backlog::new(at.rate(rate_source));
    let ceilings = Ceilings {
        max_impact: g.max_impact,
        max_replica_lag_s: g.max_replica_lag.map(|d| d.as_secs_f64()),
        copy_cap: g.copy_cap,
    };
    let mut model = Model::default();
    let mut apply = ApplyController::new(g.apply_cap);
    tracing::info!(
        baseline_ms = crate::units::millis(at.latency_ms),
        statements_ms = statements_ms
            .map(|m| format!("{m:.3}"))
            .unwrap_or_else(|| "none".into()),
        transaction_ms = sessions_ref
            .map(|m| format!("{m:.2}"))
            .unwrap_or_else(|| "none".into()),
        workload_xacts_per_s = at.rate(rate_source).round() as u64,
        workload_rate_of = ?rate_source,
        sessions_busy = at
            .busy
            .zip(at.sessions)
            .map(|(b, n)| format!("{b:.1} of {n:.1}"))
            .unwrap_or_else(|| "unknown".into()),
        waits_for_work = waits,
        start_limit = limit_text(g.copy_limit.get(), "rows/s"),
        max_impact_pct = (g.max_impact * 100.0).round() as u64,
        "load governor: a commit on the source takes this long before the migration"
    );
    let set_reason = |text: String| {
        let mut r = g.reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.as_deref() != Some(text.as_str()) {
            *r = Some(text);
        }
    };
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sessions_tick = tokio::time::interval(SESSIONS_EVERY);
    sessions_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut busy = BusyMean::default();
    let mut window = Vec::with_capacity(PROBES_PER_DECISION);
    let mut window_start = Instant::now();
    let mut rows_before = g.progress.streamed_rows.load(Ordering::Relaxed);
    let mut changes_before = g.pace.changes();
    let mut own_before = own_writes(g);
    let mut decisions = 0u32;
    // The baseline was taken before the setup: the first window counts from the first probe.
    let mut resync = true;
    let mut last_change_rate: f64;
    // The table's changes at the last read of its statistics, and when.
    let mut table_seen: Option<(Instant, i64)> = None;
    // Since when the copy is done, and how long the stream has been parked since.
    let mut copy_done_at: Option<Instant> = None;
    let mut parked_so_far = Duration::ZERO;
    let mut parked: Option<Parked> = None;
    let mut rebase_now;
    let mut last_reason_kind = String::new();
    // The readings, smoothed over a few seconds: (probe ms, statements ms, workload xacts/s).
    let (mut smooth_probe, mut smooth_statements, mut smooth_xacts, mut smooth_sessions) =
        (None::<f64>, None::<f64>, None::<f64>, None::<f64>);
    loop {
        tokio::select! {
            _ = stop.changed() => return Ok(()),
            _ = sessions_tick.tick() => {
                if sessions_ref.is_some() {
                    busy.add(busy_sessions(&client).await);
                }
                continue;
            }
            _ = tick.tick() => {}
        }
        if *stop.borrow() {
            return Ok(());
        }
        let copying = g.copying.load(Ordering::Relaxed);
        if !copying && copy_done_at.is_none() {
            copy_done_at = Some(Instant::now());
        }
        if !copying && g.pace.is_free() {
            // The cutover is due: nothing left to govern.
            if let Some(p) = parked.take() {
                parked_so_far += p.since.elapsed();
                g.pace.set_parked(false);
                apply.unparked();
            }
            set_reason("full speed: the cutover is due".into());
            resync = true;
            continue;
        }
        let (ms, xid) = match probe(&client).await {
            Ok(p) => p,
            Err(e) if e.is_transient() => {
                client = reconnect_probe(&g.source, &e).await?;
                resync = true;
                continue;
            }
            Err(e) => return Err(e),
        };
        window.push(ms);
        if resync {
            // Back from a pause in the governing: the window counts from this probe.
            resync = false;
            (last_xid, rows_before, changes_before, own_before) = (
                xid,
                g.progress.streamed_rows.load(Ordering::Relaxed),
                g.pace.changes(),
                own_writes(g),
            );
            if let Some(st) = statements.as_mut() {
                st.restart(&client).await;
            }
            db_before = db_xacts(&client).await;
            window.clear();
            busy = BusyMean::default();
            window_start = Instant::now();
            continue;
        }
        if window.len() < PROBES_PER_DECISION {
            continue;
        }
        let secs = window_start.elapsed().as_secs_f64().max(0.001);
        if secs > STALLED_WINDOW_S {
            // The process (or the machine) stood still: this window's transactions are not a
            // rate, nor its latencies the source's. Start a new one.
            resync = true;
            continue;
        }
        // The median, as the baselines are: a mean against a median would count every second's
        // slowest probe as the migration's impact.
        let mut latency = median(&mut window);
        if !copying && crate::fault::enabled(SLOW_SOURCE_FAULT) {
            // A source that stays busy after the copy, for the tests of parking.
            latency = latency.max(controller.allowed_ms() * 4.0);
        }
        let own = own_writes(g);
        let others = match rate_source {
            RateOf::Xids => workload_rate(xid - last_xid, window.len(), own - own_before, secs),
            RateOf::Statistics => {
                // This session's own transactions since the last read: the probes, the
                // samples, the statements' two reads, the standbys' and the last read itself.
                let session = window.len() as u64
                    + busy.tries
                    + if statements.is_some() { 2 } else { 0 }
                    + u64::from(ceilings.max_replica_lag_s.is_some())
                    + 1;
                let now = db_xacts(&client).await;
                let before = std::mem::replace(&mut db_before, now);
                before.zip(now).map_or(0.0, |(a, b)| {
                    workload_rate(b - a, session as usize, own - own_before, secs)
                })
            }
        };
        let rows = g.progress.streamed_rows.load(Ordering::Relaxed);
        let changes = g.pace.changes();
        let copy_rate = rows.saturating_sub(rows_before) as f64 / secs;
        let change_rate = changes.saturating_sub(changes_before) as f64 / secs;
        if decisions.is_multiple_of(TABLE_EVERY)
            && let Some(count) = table_changes(&client, &g.table).await
        {
            // (One read-only transaction every few seconds: within a read-only workload's
            // count from the database's statistics, well under the busy threshold.)
            let at = Instant::now();
            if let Some((t0, c0)) = table_seen.replace((at, count)) {
                let per_s =
                    (count - c0).max(0) as f64 / at.duration_since(t0).as_secs_f64().max(0.001);
                let floor = keep_up_floor(Some(per_s));
                tracing::debug!(
                    table_changes_per_s = per_s.round() as u64,
                    floor,
                    "apply floor: the table's changes, twice over"
                );
                apply.set_floor(floor);
            }
        }
        // The application's own statements when they can be read, else the probe.
        let statements_now = match statements.as_mut() {
            Some(st) => st.sample(&client).await,
            None => None,
        };
        let replica = match ceilings.max_replica_lag_s {
            Some(_) => replica_lag(&client).await,
            None => None,
        };
        // This second's transaction time, from the raw rate: an open loop's queue shows at once.
        let sessions_now = busy.mean().and_then(|b| sessions_ms(b, others));
        // This second's share of busy sessions, unsmoothed: the clients' queue forms within a
        // second once most of them are busy.
        let pool_now = match (waits, busy.mean(), busy.sessions(), pool_reference) {
            (true, Some(b), Some(n), Some(r)) if n >= 1.0 => Some(Pool {
                busy: b / n,
                ceiling: pool_ceiling(r),
            }),
            _ => None,
        };
        if waits {
            backlog.add(others, secs);
        }
        let latency = *smooth_probe.insert(smoothed(smooth_probe, latency));
        let others = *smooth_xacts.insert(smoothed(smooth_xacts, others));
        let statements_now = statements_now
            .map(|x| *smooth_statements.insert(smoothed_by(smooth_statements, x, FAST_WEIGHT)));
        let sessions_now = sessions_now
            .map(|x| *smooth_sessions.insert(smoothed_by(smooth_sessions, x, FAST_WEIGHT)));
        let probe_reading = Reading {
            latency_ms: latency,
            reference_ms: controller.baseline_ms(),
            latency_of: LatencyOf::Probe,
            xacts: others,
            reference_xacts: controller.baseline_xacts(),
            replica_lag_s: replica,
            backlog_ms: backlog.ms(),
            backlog_reference_ms: sessions_ref.unwrap_or(controller.baseline_ms()),
            pool: pool_now,
        };
        let reading = if crate::fault::enabled(SLOW_SOURCE_FAULT) {
            probe_reading
        } else {
            application_reading(
                probe_reading,
                statements_now.zip(statements_ref),
                sessions_now.zip(sessions_ref),
            )
        };
        let excess = reading.excess();
        let mut signal = apply_signal(&reading, &ceilings);
        if copying {
            model.learn(copy_rate, excess);
            let limit = g.copy_limit.get();
            let rows_left = g.rows_to_copy.saturating_sub(rows);
            let plan =
                super::objective::plan(&model, &reading, &ceilings, limit, copy_rate, rows_left);
            let reason = plan.reason.to_string();
            let kind = reason.split(" at ").next().unwrap_or_default().to_string();
            let change = decision(limit, plan.copy);
            let predicted_ms_s = plan
                .predicted_total
                .map(|t| format!("{:.0}", t * reading.reference_ms))
                .unwrap_or_else(|| "-".into());
            match change {
                Decision::Unchanged if kind == last_reason_kind => tracing::debug!(
                    latency_ms = crate::units::millis(reading.latency_ms),
                    workload_xacts_per_s = others.round() as u64,
                    limit = limit.unwrap_or(0),
                    "copy limit unchanged ({reason})"
                ),
                Decision::SlowedTo(n) if plan.reason.over_a_ceiling() => tracing::info!(
                    rows_per_s = n,
                    excess_pct = (excess * 100.0).round() as u64,
                    workload_xacts_per_s = others.round() as u64,
                    "copy slowed to {n} rows/s ({reason})"
                ),
                Decision::Released => tracing::info!(
                    predicted_excess_ms_s = predicted_ms_s,
                    "copy limit lifted ({reason})"
                ),
                _ => tracing::info!(
                    rows_per_s = limit_text(plan.copy, "rows/s"),
                    excess_pct = (excess * 100.0).round() as u64,
                    rows_left,
                    predicted_excess_ms_s = predicted_ms_s,
                    "copy limit {} ({reason})",
                    limit_text(plan.copy, "rows/s")
                ),
            }
            last_reason_kind = kind;
            if plan.reason.over_a_ceiling() && plan.copy != limit {
                model.note_cut();
            }
            if matches!(decision(limit, plan.copy), Decision::RaisedTo(_)) {
                model.note_raise();
            }
            g.copy_limit.set(plan.copy);
            set_reason(reason);
            // During the copy the apply is paced only once the copy is at its floor: before
            // that, slowing the copy costs the application less than a growing lag.
            let copy_at_floor = plan.copy.is_some_and(|l| l <= MIN_RATE);
            if matches!(signal, Signal::Over(_)) && !copy_at_floor {
                signal = Signal::Within;
            }
        }
        rebase_now = false;
        if let Some(p) = parked {
            let eased = others < p.workload * UNPARK_WORKLOAD || signal == Signal::Idle;
            if eased || Instant::now() >= p.until || g.pace.is_free() {
                parked = None;
                parked_so_far += p.since.elapsed();
                apply.unparked();
                g.pace.set_parked(false);
                tracing::info!(
                    workload_xacts_per_s = others.round() as u64,
                    changes_per_s = apply.limit().unwrap_or(0),
                    "stream unparked: the apply goes on at its floor"
                );
            }
        } else if !g.pace.is_free() {
            match apply.decide(signal, change_rate) {
                Decision::Unchanged => {}
                Decision::SlowedTo(n) => tracing::info!(
                    changes_per_s = n,
                    latency_ms = crate::units::millis(reading.latency_ms),
                    workload_xacts_per_s = others.round() as u64,
                    workload_floor = reading.xacts_floor(g.max_impact).round() as u64,
                    floor = apply.floor(),
                    "apply slowed to {n} changes/s ({}); {}",
                    super::objective::ceiling_reason(&reading, &ceilings)
                        .map_or("over the ceiling".to_string(), |r| r.to_string()),
                    if apply.floor() > MIN_APPLY_RATE {
                        "not below twice the table's changes, so the lag still shrinks"
                    } else {
                        "the lag may grow"
                    }
                ),
                Decision::RaisedTo(n) => tracing::debug!(changes_per_s = n, "apply pace raised"),
                Decision::Released => tracing::info!(
                    limit = limit_text(apply.limit(), "changes/s"),
                    "apply pace lifted"
                ),
            }
            g.pace.set(apply.limit());
            // A workload at less than half its baseline rate has changed by itself (the apply at
            // its floor does not halve it): measure it again rather than park.
            rebase_now =
                apply.wants_park() && others < controller.baseline_xacts() * UNPARK_WORKLOAD;
            if !copying
                && apply.wants_park()
                && !rebase_now
                && may_park(
                    parked_so_far,
                    copy_done_at.map_or(Duration::ZERO, |t| t.elapsed()),
                )
            {
                parked = Some(Parked {
                    since: Instant::now(),
                    until: Instant::now() + PARK_FOR,
                    workload: others,
                });
                g.pace.set_parked(true);
                tracing::info!(
                    seconds = PARK_FOR.as_secs(),
                    latency_ms = crate::units::millis(reading.latency_ms),
                    workload_xacts_per_s = others.round() as u64,
                    workload_floor = reading.xacts_floor(g.max_impact).round() as u64,
                    "stream parked: the workload waits even with the apply at its floor; the lag grows until the source leaves room"
                );
            }
        }
        if !copying {
            set_reason(apply_reason(
                &reading,
                &ceilings,
                if apply.pacing() { apply.limit() } else { None },
                parked.is_some(),
            ));
        }
        decisions += 1;
        // The next window counts from here: its xids, rows and changes from the last probe's.
        (last_xid, rows_before, changes_before, own_before) = (xid, rows, changes, own);
        last_change_rate = change_rate;
        if (decisions == FIRST_REBASE || decisions.is_multiple_of(REBASE_EVERY) || rebase_now)
            && (controller.busy() || others >= MIN_WORKLOAD_XACTS)
        {
            // The source without the migration, once more: both baselines from the last second
            // of a short hold of the copy and of the apply.
            let holds = (g.copy_limit.hold(), g.pace.hold());
            let settled = tokio::select! {
                _ = stop.changed() => return Ok(()),
                settled = settle(&client, &g.slot) => settled,
            };
            if !settled {
                // The walsender still decodes what the migration wrote: a measure now would be
                // the migration's own weight. The next one is due in REBASE_EVERY seconds.
                drop(holds);
                tracing::info!(
                    "load governor: not measured again, the slot's walsender still decodes what the migration wrote"
                );
                resync = true;
                window.clear();
                busy = BusyMean::default();
                window_start = Instant::now();
                continue;
            }
            if let Some(st) = statements.as_mut() {
                st.restart(&client).await;
            }
            let again = match measure(
                &client,
                PROBES_PER_DECISION + 1,
                PROBE_EVERY,
                g.own_writes.as_deref(),
            )
            .await
            {
                Ok(again) => again,
                Err(e) if e.is_transient() => {
                    drop(holds);
                    client = reconnect_probe(&g.source, &e).await?;
                    resync = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let statements_held = match statements.as_mut() {
                Some(st) => st.sample(&client).await,
                None => None,
            };
            drop(holds);
            let before = Reading {
                latency_ms: again.latency_ms,
                reference_ms: controller.baseline_ms(),
                latency_of: LatencyOf::Probe,
                xacts: again.rate(rate_source),
                reference_xacts: controller.baseline_xacts(),
                replica_lag_s: None,
                backlog_ms: 0.0,
                backlog_reference_ms: 0.0,
                pool: None,
            };
            // Clients that held a queue when the migration was held work it off meanwhile: their
            // sessions stay busy, which is theirs, not the walsender's share (a floor of 77% was
            // measured so in one TPC-B-like open loop, and the ceiling raised with it let the
            // copy speed up while the application's statements took three times as long).
            let draining = waits && backlog.ms() > 0.0;
            if waits {
                backlog.after_hold(again.rate(rate_source));
            }
            let (kept_ms, kept_xacts) =
                controller.rebase(again.latency_ms, again.rate(rate_source));
            let sessions_held = again
                .busy
                .and_then(|b| sessions_ms(b, again.rate(rate_source)));
            // The excess with the copy and the apply held: what the slot's walsender alone
            // costs, the floor of every pace. Against the application's references when they
            // are read, else against the probe's.
            let floor = application_reading(
                before,
                statements_held.zip(statements_ref),
                sessions_held.zip(sessions_ref),
            )
            .excess();
            if !draining {
                model.learn_floor(floor);
            }
            sessions_ref = match (sessions_held, sessions_ref) {
                (Some(now), Some(reference)) => {
                    Some(rebased(reference, now, g.max_impact, SLACK_MS))
                }
                (now, reference) => reference.or(now),
            };
            statements_ref = match (statements_held, statements_ref) {
                (Some(now), Some(reference)) => Some(rebased(
                    reference,
                    now,
                    g.max_impact,
                    super::objective::STATEMENTS_SLACK_MS,
                )),
                (now, reference) => reference.or(now),
            };
            if !g.pace.is_free()
                && let Decision::SlowedTo(n) = apply.after_hold(last_change_rate)
            {
                tracing::debug!(changes_per_s = n, "apply paced after the hold");
                g.pace.set(apply.limit());
            }
            tracing::info!(
                measured_ms = crate::units::millis(again.latency_ms),
                measured_xacts_per_s = again.rate(rate_source).round() as u64,
                baseline_ms = crate::units::millis(kept_ms),
                statements_ms = statements_ref
                    .map(|m| format!("{m:.3}"))
                    .unwrap_or_else(|| "none".into()),
                transaction_ms = sessions_ref
                    .map(|m| format!("{m:.2}"))
                    .unwrap_or_else(|| "none".into()),
                workload_xacts_per_s = kept_xacts.round() as u64,
                floor_excess_pct = (floor * 100.0).round() as u64,
                floor_taken = !draining,
                backlog_ms = crate::units::millis(backlog.ms()),
                "load governor: the source measured again with the migration held"
            );
            (last_xid, rows_before, changes_before, own_before) = (
                again.xid,
                g.progress.streamed_rows.load(Ordering::Relaxed),
                g.pace.changes(),
                own_writes(g),
            );
            db_before = db_xacts(&client).await;
        }
        window.clear();
        busy = BusyMean::default();
        window_start = Instant::now();
    }
}

/// What the application feels (pure): of its statements' mean and its transactions' time, each
/// against its reference where both are known, the one with the greater excess; the probe's
/// commit when neither is.
pub fn application_reading(
    probe: Reading,
    statements: Option<(f64, f64)>,
    sessions: Option<(f64, f64)>,
) -> Reading {
    let of = |(now, reference): (f64, f64), latency_of| Reading {
        latency_ms: now,
        reference_ms: reference,
        latency_of,
        ..probe
    };
    let candidates = [
        statements.map(|s| of(s, LatencyOf::Statements)),
        sessions.map(|s| of(s, LatencyOf::Sessions)),
    ];
    candidates
        .into_iter()
        .flatten()
        .max_by(|a, b| a.latency_excess().total_cmp(&b.latency_excess()))
        .unwrap_or(probe)
}

/// A park of the stream by the governor.
#[derive(Debug, Clone, Copy)]
struct Parked {
    since: Instant,
    until: Instant,
    /// The other write transactions per second when it began.
    workload: f64,
}

/// The median of `samples` (milliseconds); 0 for none.
pub fn median(samples: &mut [f64]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_source_starts_the_copy_slowly() {
        assert_eq!(start_limit(None, true), Some(START_RATE));
        assert_eq!(start_limit(Some(5_000), true), Some(5_000));
        assert_eq!(start_limit(None, false), None);
        assert_eq!(start_limit(Some(5_000), false), Some(5_000));
    }

    #[test]
    fn a_measure_within_the_allowed_impact_keeps_the_baseline_it_would_lower() {
        // Taken with the migration held but its walsender still woken by every flush: 5% fewer
        // transactions and commits 0.05 ms longer are the migration's residue.
        let mut c = Controller::new(1.0, 3_000.0, 0.15);
        assert_eq!(c.rebase(1.05, 2_850.0), (1.0, 3_000.0));
        assert!((c.xacts_floor() - 3_000.0 / 1.15).abs() < 1e-9);
        // A little better is a second's noise too.
        assert_eq!(c.rebase(0.8, 3_300.0), (1.0, 3_000.0));
        // Beyond the band either way: the workload changed by itself.
        assert_eq!(c.rebase(0.5, 4_000.0), (0.5, 4_000.0));
        assert_eq!(c.rebase(0.5, 2_000.0), (0.5, 2_000.0));
        assert_eq!(c.rebase(5.0, 2_000.0), (5.0, 2_000.0));
        // The rate and the latency are judged apart.
        assert_eq!(c.rebase(5.1, 500.0), (5.0, 500.0));
        assert!(!Controller::new(1.0, 10.0, 0.15).busy());
        assert!(c.busy());
    }

    #[test]
    fn a_latency_reference_keeps_the_walsenders_residue_out() {
        assert_eq!(rebased(1.0, 1.3, 0.5, SLACK_MS), 1.0);
        assert_eq!(rebased(1.0, 0.7, 0.5, SLACK_MS), 1.0);
        assert_eq!(rebased(1.0, 0.5, 0.5, SLACK_MS), 0.5);
        assert_eq!(rebased(1.0, 2.0, 0.5, SLACK_MS), 2.0);
        // The statements' own slack: 0.1 ms statements at 0.2 ms have changed.
        assert_eq!(rebased(0.1, 0.2, 0.5, 0.01), 0.2);
        assert_eq!(rebased(0.1, 0.2, 0.5, SLACK_MS), 0.1);
    }

    fn reading(latency_ms: f64, xacts: f64) -> Reading {
        Reading {
            latency_ms,
            reference_ms: 1.0,
            latency_of: LatencyOf::Probe,
            xacts,
            reference_xacts: 2_000.0,
            replica_lag_s: None,
            backlog_ms: 0.0,
            backlog_reference_ms: 0.0,
            pool: None,
        }
    }

    const CEIL: Ceilings = Ceilings {
        max_impact: 0.5,
        max_replica_lag_s: None,
        copy_cap: None,
    };

    #[test]
    fn the_apply_signal_follows_the_ceilings() {
        assert_eq!(apply_signal(&reading(1.0, 2_000.0), &CEIL), Signal::Fine);
        // Over half the ceiling, within it.
        assert_eq!(apply_signal(&reading(1.4, 2_000.0), &CEIL), Signal::Within);
        // Over it: in proportion, 0.25 to 0.7.
        assert_eq!(
            apply_signal(&reading(2.1, 2_000.0), &CEIL),
            Signal::Over(0.7)
        );
        assert_eq!(
            apply_signal(&reading(20.1, 2_000.0), &CEIL),
            Signal::Over(0.25)
        );
        assert_eq!(
            apply_signal(&reading(1.0, 1_000.0), &CEIL),
            Signal::Over(0.7)
        );
        let idle = Reading {
            reference_xacts: 0.0,
            ..reading(50.0, 5.0)
        };
        assert_eq!(apply_signal(&idle, &CEIL), Signal::Idle);
        // A lagging standby is a ceiling even on an idle source.
        let lagging = Reading {
            replica_lag_s: Some(40.0),
            backlog_ms: 0.0,
            backlog_reference_ms: 0.0,
            ..idle
        };
        let ceilings = Ceilings {
            max_replica_lag_s: Some(10.0),
            ..CEIL
        };
        assert_eq!(apply_signal(&lagging, &ceilings), Signal::Over(0.25));
        assert_eq!(
            apply_reason(&lagging, &ceilings, None, false),
            "paced: replica lag 40 s over 10 s"
        );
    }

    #[test]
    fn the_reason_after_the_copy() {
        assert_eq!(
            apply_reason(&reading(1.0, 2_000.0), &CEIL, None, false),
            "full speed: least total impact"
        );
        assert_eq!(
            apply_reason(&reading(1.0, 2_000.0), &CEIL, Some(800), false),
            "paced: apply raised as the workload leaves room, 800 changes/s"
        );
        assert_eq!(
            apply_reason(&reading(3.0, 2_000.0), &CEIL, Some(800), false),
            "paced: commit latency 3.0 ms over 1.6 ms"
        );
        assert!(
            apply_reason(&reading(3.0, 2_000.0), &CEIL, Some(500), true).contains("stream parked")
        );
        let idle = Reading {
            reference_xacts: 0.0,
            ..reading(50.0, 5.0)
        };
        assert_eq!(
            apply_reason(&idle, &CEIL, None, false),
            "full speed: no workload"
        );
    }

    #[test]
    fn the_application_reading_is_the_worse_of_its_statements_and_its_sessions() {
        let probe = reading(5.0, 2_000.0);
        // Neither known: the probe.
        assert_eq!(application_reading(probe, None, None), probe);
        // The statements barely slower, the transactions twice as long: the transactions.
        let r = application_reading(probe, Some((0.105, 0.1)), Some((2.0, 1.0)));
        assert_eq!(r.latency_of, LatencyOf::Sessions);
        assert_eq!((r.latency_ms, r.reference_ms), (2.0, 1.0));
        assert_eq!(r.xacts, probe.xacts);
        let r = application_reading(probe, Some((0.3, 0.1)), Some((1.0, 1.0)));
        assert_eq!(r.latency_of, LatencyOf::Statements);
        let r = application_reading(probe, Some((0.3, 0.1)), None);
        assert_eq!(r.latency_of, LatencyOf::Statements);
    }

    #[test]
    fn a_workload_that_only_reads_is_measured_by_the_statistics() {
        assert_eq!(rate_of(1_500.0, Some(1_520.0)), RateOf::Xids);
        assert_eq!(rate_of(1_500.0, None), RateOf::Xids);
        assert_eq!(rate_of(2.0, Some(800.0)), RateOf::Statistics);
        assert_eq!(rate_of(2.0, Some(10.0)), RateOf::Xids);
        assert_eq!(rate_of(2.0, None), RateOf::Xids);
        let m = Measured {
            latency_ms: 1.0,
            others_per_s: 2.0,
            all_xacts_per_s: Some(800.0),
            xid: 0,
            busy: None,
            sessions: None,
        };
        assert_eq!(m.rate(RateOf::Statistics), 800.0);
        assert_eq!(m.rate(RateOf::Xids), 2.0);
    }

    #[test]
    fn a_walsender_waiting_for_wal_or_its_reader_has_settled() {
        assert!(walsender_waits(Some("WalSenderWaitForWAL")));
        assert!(walsender_waits(Some("WalSenderWriteData")));
        assert!(walsender_waits(Some("WalSenderWaitForWal")));
        assert!(!walsender_waits(None));
        assert!(!walsender_waits(Some("WALRead")));
    }

    #[test]
    fn the_apply_is_never_paced_below_twice_the_tables_changes() {
        assert_eq!(keep_up_floor(None), MIN_APPLY_RATE);
        assert_eq!(keep_up_floor(Some(100.0)), MIN_APPLY_RATE);
        assert_eq!(keep_up_floor(Some(2_136.0)), 4_272);
        let mut a = ApplyController::new(None);
        a.set_floor(keep_up_floor(Some(2_000.0)));
        // Over the ceiling at 10,000 changes/s, cut to a quarter: held at the floor instead.
        assert_eq!(
            a.decide(Signal::Over(0.25), 10_000.0),
            Decision::SlowedTo(4_000)
        );
        assert!(!a.wants_park());
        // At the floor and still over: counted towards a park, never slower.
        for _ in 0..PARK_AFTER {
            a.decide(Signal::Over(0.25), 4_000.0);
        }
        assert_eq!(a.limit(), Some(4_000));
        assert!(a.wants_park());
        // The workload writes more: the pace follows its floor at the next decision.
        a.set_floor(keep_up_floor(Some(3_000.0)));
        assert_eq!(a.decide(Signal::Within, 4_000.0), Decision::RaisedTo(6_000));
        // The user's cap still rules.
        let mut c = ApplyController::new(Some(1_000));
        c.set_floor(6_000);
        assert_eq!(c.decide(Signal::Over(0.5), 1_000.0), Decision::Unchanged);
        assert_eq!(c.limit(), Some(1_000));
        assert_eq!(c.after_hold(900.0), Decision::Unchanged);
    }

    #[test]
    fn the_stream_is_parked_a_third_of_the_time_after_the_copy_at_most() {
        let s = Duration::from_secs;
        assert!(may_park(s(0), s(0)));
        assert!(may_park(s(0), s(3)));
        // One 30 s park: the next only once the run has gone on for 90 s since the copy.
        assert!(!may_park(s(30), s(40)));
        assert!(!may_park(s(30), s(89)));
        assert!(may_park(s(30), s(90)));
    }

    #[test]
    fn sessions_that_ran_statements_between_two_looks_are_a_workload() {
        let at = |t: &str| Some(t.to_string());
        let idle = vec![(10, false, at("12:00:00.1")), (11, false, at("12:00:00.2"))];
        // Nothing moved: a quiet source (a session left idle does not count).
        assert!(!sessions_moved(&idle, &idle));
        assert!(!sessions_moved(&[], &[]));
        // A session ran a statement in between.
        let moved = vec![(10, false, at("12:00:00.3")), (11, false, at("12:00:00.2"))];
        assert!(sessions_moved(&idle, &moved));
        // One runs a statement now.
        assert!(sessions_moved(&idle, &[(11, true, at("12:00:00.2"))]));
        // A session that came or went meanwhile is not a workload by itself.
        assert!(!sessions_moved(&idle, &[(12, false, at("12:00:00.4"))]));
    }

    #[test]
    fn a_busy_mean_needs_five_samples() {
        let mut b = BusyMean::default();
        for x in [Some(1.0), None, Some(3.0), Some(2.0), Some(2.0)] {
            b.add(x.map(|x| (x, 4.0)));
        }
        assert_eq!(b.mean(), None);
        assert_eq!(b.sessions(), None);
        b.add(Some((2.0, 6.0)));
        assert_eq!(b.mean(), Some(2.0));
        assert_eq!(b.sessions(), Some(4.4));
    }

    #[test]
    fn statements_mean_needs_enough_calls() {
        assert_eq!(statement_mean_ms((100.0, 1_000), (160.0, 1_030)), Some(2.0));
        assert_eq!(statement_mean_ms((100.0, 1_000), (160.0, 1_010)), None);
        // The figures were reset.
        assert_eq!(statement_mean_ms((100.0, 1_000), (10.0, 1_050)), None);
    }

    #[test]
    fn the_workload_is_the_transactions_of_others_than_pgrepart() {
        // 1,000 xids in 2 s: 10 probes, 390 copy and apply commits of pgrepart's own.
        assert_eq!(workload_rate(1000, 10, 390, 2.0), 300.0);
        // Nothing but pgrepart: no workload, never below zero.
        assert_eq!(workload_rate(50, 10, 45, 1.0), 0.0);
        assert_eq!(workload_rate(400, 0, 0, 0.0), 400_000.0);
    }

    #[test]
    fn a_waiting_workload_slows_the_apply_down_to_its_floor() {
        let mut a = ApplyController::new(None);
        assert!(!a.pacing());
        // Slowed from what it moved.
        assert_eq!(
            a.decide(Signal::Over(0.5), 4_000.0),
            Decision::SlowedTo(2_000)
        );
        assert!(a.pacing());
        assert_eq!(
            a.decide(Signal::Over(0.25), 2_000.0),
            Decision::SlowedTo(500)
        );
        // Never below the floor.
        assert_eq!(a.decide(Signal::Over(0.25), 500.0), Decision::Unchanged);
        assert_eq!(a.limit(), Some(MIN_APPLY_RATE));
        // An apply that moved nothing and has no limit is not what weighs.
        let mut b = ApplyController::new(None);
        assert_eq!(b.decide(Signal::Over(0.5), 0.0), Decision::Unchanged);
        assert_eq!(b.limit(), None);
        // At the user's cap it is not the governor that paces it.
        let c = ApplyController::new(Some(300));
        assert!(!c.pacing());
    }

    #[test]
    fn a_workload_that_waits_with_the_apply_at_its_floor_parks_the_stream() {
        let mut a = ApplyController::new(None);
        // Seconds over the impact on the way down to the floor do not count.
        a.decide(Signal::Over(0.25), 4_000.0);
        a.decide(Signal::Over(0.25), 1_000.0);
        assert_eq!(a.limit(), Some(MIN_APPLY_RATE));
        assert!(!a.wants_park());
        // At the floor: PARK_AFTER seconds in a row.
        for i in 1..PARK_AFTER {
            a.decide(Signal::Over(0.5), 500.0);
            assert!(!a.wants_park(), "after {i}");
        }
        // One second within the impact starts the count again.
        a.decide(Signal::Within, 500.0);
        for _ in 0..PARK_AFTER {
            assert!(!a.wants_park());
            a.decide(Signal::Over(0.5), 500.0);
        }
        assert!(a.wants_park());
        // Back from a park: at the floor, counting again, and not raised during the cool-down.
        a.unparked();
        assert!(!a.wants_park());
        assert_eq!(a.limit(), Some(MIN_APPLY_RATE));
        for _ in 0..COOLDOWN - 1 {
            assert_eq!(a.decide(Signal::Fine, 500.0), Decision::Unchanged);
        }
        assert!(matches!(
            a.decide(Signal::Fine, 500.0),
            Decision::RaisedTo(_)
        ));
        // A user's cap at or below the floor is a floor too.
        let mut c = ApplyController::new(Some(300));
        for _ in 0..PARK_AFTER {
            c.decide(Signal::Over(0.5), 300.0);
        }
        assert!(c.wants_park());
    }

    #[test]
    fn a_paced_apply_speeds_up_after_the_cooldown_and_is_let_go_once_the_pace_does_not_bind() {
        let mut a = ApplyController::new(None);
        a.decide(Signal::Over(0.5), 4_000.0);
        assert_eq!(a.limit(), Some(2_000));
        // Within the cool-down: no raise.
        for _ in 0..COOLDOWN - 1 {
            assert_eq!(a.decide(Signal::Fine, 2_000.0), Decision::Unchanged);
        }
        assert_eq!(a.decide(Signal::Fine, 2_000.0), Decision::RaisedTo(2_300));
        assert_eq!(a.decide(Signal::Within, 2_300.0), Decision::Unchanged);
        // The stream moved well under its pace: the pace no longer holds it back.
        assert_eq!(a.decide(Signal::Fine, 1_000.0), Decision::Released);
        assert!(!a.pacing());
        // The user's cap below the floor: kept.
        let mut c = ApplyController::new(Some(300));
        assert_eq!(c.limit(), Some(300));
        assert_eq!(c.decide(Signal::Over(0.5), 300.0), Decision::Unchanged);
        assert_eq!(c.decide(Signal::Idle, 300.0), Decision::Unchanged);
        assert_eq!(c.limit(), Some(300));
        // Raised, it stops at the cap; not binding, it goes back to the cap.
        let mut d = ApplyController::new(Some(3_000));
        d.decide(Signal::Over(0.5), 3_000.0);
        assert_eq!(d.limit(), Some(1_500));
        for _ in 0..COOLDOWN + 10 {
            d.decide(Signal::Fine, 3_000.0);
        }
        assert_eq!(d.limit(), Some(3_000));
        d.decide(Signal::Over(0.5), 3_000.0);
        for _ in 0..COOLDOWN {
            d.decide(Signal::Fine, 10.0);
        }
        assert_eq!(d.limit(), Some(3_000));
    }

    #[test]
    fn after_a_hold_an_unpaced_apply_resumes_near_its_pace_before() {
        let mut a = ApplyController::new(None);
        assert_eq!(a.after_hold(2_000.0), Decision::SlowedTo(3_000));
        // Once caught up it moves its own rate, and the pace is raised until it no longer binds.
        let mut released = false;
        for _ in 0..20 {
            if a.decide(Signal::Fine, 2_000.0) == Decision::Released {
                released = true;
                break;
            }
        }
        assert!(released, "{a:?}");
        // A paced apply keeps its pace; an idle one stays unpaced; the floor and the cap hold.
        let mut b = ApplyController::new(None);
        b.decide(Signal::Over(0.5), 4_000.0);
        assert_eq!(b.after_hold(2_000.0), Decision::Unchanged);
        let mut c = ApplyController::new(None);
        assert_eq!(c.after_hold(0.0), Decision::Unchanged);
        assert_eq!(c.after_hold(100.0), Decision::SlowedTo(MIN_APPLY_RATE));
        let mut d = ApplyController::new(Some(800));
        d.decide(Signal::Idle, 0.0);
        assert_eq!(d.after_hold(2_000.0), Decision::Unchanged);
    }

    #[test]
    fn a_free_pace_neither_limits_nor_holds() {
        let p = ApplyPace::new(Some(100));
        assert_eq!(p.limit(), Some(100));
        {
            let _hold = p.hold();
            assert!(p.held());
            p.set_free(true);
            assert!(!p.held());
            assert_eq!(p.limit(), None);
        }
        p.set_free(false);
        assert!(!p.held());
        assert_eq!(p.limit(), Some(100));
        p.count(3);
        p.count(2);
        assert_eq!(p.changes(), 5);
    }

    #[test]
    fn a_hold_lasts_as_long_as_its_guard() {
        let r = RateLimit::new(Some(1_000));
        assert!(!r.held());
        {
            let _hold = r.hold();
            assert!(r.held());
            assert_eq!(r.get(), Some(1_000));
        }
        assert!(!r.held());
    }

    #[test]
    fn pacing_spreads_a_limit_over_the_workers() {
        let mut p = Pacer::default();
        let t0 = Instant::now();
        assert_eq!(p.delay(t0, 1_000, None, 2), Duration::ZERO);
        // 4,000 rows/s over 2 workers: 1,000 rows take this worker half a second.
        let d = p.delay(t0, 1_000, Some(4_000), 2);
        assert!((d.as_secs_f64() - 0.5).abs() < 0.01, "{d:?}");
        // The next chunk right away waits for both.
        let d = p.delay(t0, 1_000, Some(4_000), 2);
        assert!((d.as_secs_f64() - 1.0).abs() < 0.01, "{d:?}");
    }

    #[test]
    fn rate_limits_round_trip_and_zero_is_none() {
        let r = RateLimit::new(None);
        assert_eq!(r.get(), None);
        r.set(Some(1234));
        assert_eq!(r.get(), Some(1234));
        r.set(Some(0));
        assert_eq!(r.get(), Some(1));
        r.set(None);
        assert_eq!(r.get(), None);
    }

    #[test]
    fn median_of_samples() {
        assert_eq!(median(&mut []), 0.0);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 3.0);
    }
}
