//! The applier: turns the decoded change stream into state-setting statements on the target,
//! gated per key range while the copy runs, batched and compacted, and reports the flush
//! position that is safe to confirm to the server.
//!
//! ```text
//!  stream events ──► route by source key ──► range done? ── yes ──► batch (compacted per key)
//!                                                 │                        │ one target txn
//!                                                 no                       ▼
//!                                                 └──► queue on range ──► drained when the
//!                                                                         range's copy commits
//! flush = min(end of last applied commit, begin of the oldest queued transaction)
//! ```
//! Why this converges: docs/design.md §3. Why the flush is safe: docs/design.md §4.

pub mod channel;
pub mod compact;
pub mod route;
pub mod schema;
pub mod sql;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use futures_util::SinkExt;
use tokio::sync::{mpsc, watch};
use tokio_postgres::{Client, Statement, Transaction};

use crate::copy::ranges::{KeyRange, range_index};
use crate::error::{Error, Result};
use crate::lsn::{Lsn, Monotonic};
use crate::pg::ident::QualifiedName;
use crate::protocol::pgoutput::{Datum, OldTuple, PgOutput, Relation, TupleData};
use compact::{Compacted, Compactor, Key, Op, Row, Value, encode_copy_text_row};
use schema::RelationChange;
use sql::Shape;

/// Bytes of changes queued on unfinished ranges beyond which the applier takes no more events: the
/// bounded event channel fills, the reader stops reading and the slot holds the WAL instead of our
/// memory. Finished ranges are still taken, and draining their queues lifts the stop.
pub const DEFAULT_MAX_QUEUED_BYTES: usize = 64 << 20;

/// A batch of at least this many keys, and nothing but row changes, is dealt out to the extra
/// apply sessions (`ApplierConfig::helpers`) as well: each applies its share of the keys in a
/// transaction of its own, side by side. Smaller batches stay on one session, one commit.
const PARALLEL_MIN_KEYS: usize = 1000;

/// Full images (or patches of one column set) below this many in a batch skip the first,
/// partition-routed attempt (`Shape::update_routed_sql`) and are found by key alone: in a small
/// batch the probes it saves cost less than the statement it adds (the rows it misses, such as
/// every new row, need a second one). Under a steady stream of an UPDATE and an INSERT per
/// transaction, batches are a few dozen rows.
const ROUTED_MIN_ROWS: usize = 256;

/// Sent on the channel of finished ranges: the new table's primary key, left for after the copy
/// (`ApplierConfig::key_pending`), is built.
pub const KEY_BUILT: usize = usize::MAX;

/// How long a batch of fewer than [`LINGER_BELOW`] changes waits for more events before it is
/// applied: the lag it adds at most.
const BATCH_LINGER: std::time::Duration = std::time::Duration::from_millis(20);
const LINGER_BELOW: usize = 1000;

/// The prefix of our fence messages (`pg_logical_emit_message`).
pub const FENCE_PREFIX: &str = "pgrepart";

/// What the stream reader hands to the applier, in stream order.
#[derive(Debug)]
pub enum Event {
    Message(PgOutput),
    /// A keepalive's walEnd, sent while no transaction is open: everything before it was sent.
    Idle(Lsn),
}

/// How a source key is mapped to its copy range.
#[derive(Debug, Clone)]
pub enum Router {
    /// One range holds every key.
    Single,
    /// Ranges over a single integer key column (or, recorded by an older pgrepart, an integer
    /// first column): compared in Rust.
    Int(Vec<KeyRange>),
    /// Ranges over any other key: the source is asked (`route`).
    Ordered(route::ServerOrder),
}

impl Router {
    pub fn len(&self) -> usize {
        match self {
            Router::Single => 1,
            Router::Int(r) => r.len(),
            Router::Ordered(o) => o.cuts.len() + 1,
        }
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    fn range_of(&self, key: &Key) -> Result<usize> {
        match self {
            Router::Single => Ok(0),
            Router::Int(ranges) => {
                let text = key
                    .first()
                    .and_then(|b| std::str::from_utf8(b).ok())
                    .unwrap_or("");
                let k: i64 = text.parse().map_err(|_| {
                    Error::failed(
                        "a key in the change stream is not an integer although the key column is",
                    )
                })?;
                Ok(range_index(ranges, k))
            }
            Router::Ordered(_) => Err(Error::failed(
                "a key ordered by the server is routed by its lookup",
            )),
        }
    }
}

/// Figures the applier publishes for progress reports and the cutover gate.
#[derive(Debug, Default)]
pub struct Shared {
    /// The flush position last confirmed safe.
    pub flush_lsn: AtomicU64,
    /// Source changes applied to the target.
    pub applied_changes: AtomicU64,
    /// Changes waiting for their range's copy.
    pub queued_changes: AtomicU64,
    /// Ranges whose copy has not finished (or whose queue has not drained).
    pub ranges_pending: AtomicUsize,
    /// True while the applier is paused with no batch in flight.
    pub paused: std::sync::atomic::AtomicBool,
    /// Non-zero while the applier holds at this LSN (see `Hold`): every source transaction whose
    /// commit LSN is below it is applied and committed, none at or after it is.
    pub held_at: AtomicU64,
}

/// A request to hold the applier at an LSN (for `verify`): apply every source transaction whose
/// commit LSN (Begin's final_lsn) is below it, then take no event until the request changes.
/// Holding is reached once a transaction committing at or after it arrives (it is kept aside, not
/// applied), or a keepalive outside any transaction shows the stream is past it. The reader keeps
/// answering keepalives while the bounded event channel backs up; the flush position stays at what
/// was applied. `Some(Lsn::ZERO)` holds before the next transaction, wherever it is; a hold is
/// acknowledged in `Shared::held_at` as its LSN (ZERO as 1).
pub type Hold = Option<Lsn>;

struct Queued {
    /// Commit LSN of the change's transaction: confirming beyond it would lose the change.
    hold: Lsn,
    key: Key,
    op: Op,
}

/// Roughly the memory a queued change holds: its values and the bookkeeping around them.
fn queued_bytes(key: &Key, op: &Op) -> usize {
    let values = |row: &Row| -> usize {
        row.iter()
            .map(|v| match v {
                Value::Text(t) => t.len() + 32,
                _ => 32,
            })
            .sum()
    };
    let row = match op {
        Op::Upsert(r) | Op::Patch(r) => values(r),
        Op::Delete => 0,
    };
    64 + key.iter().map(|k| k.len() + 32).sum::<usize>() + row
}

/// A change waiting for its range (`Applier::unrouted`), with the hold it would be queued under,
/// taken when it arrived.
struct Unrouted {
    hold: Lsn,
    key: Key,
    op: Op,
}

struct RangeState {
    done: bool,
    queue: VecDeque<Queued>,
}

enum Segment {
    Compact(Compactor),
    /// A row whose key changed while some of its columns were not sent (unchanged TOAST).
    KeyMove {
        old_key: Key,
        row: Row,
    },
    Truncate,
}

pub struct Applier {
    client: Client,
    shape: Shape,
    router: Router,
    /// The source session routing keys that only the server can order (`Router::Ordered`).
    lookup: Option<route::Lookup>,
    /// Changes whose range the server is still to be asked for, in stream order: routed together
    /// in one round trip (`resolve_routes`) before anything that depends on where they went.
    unrouted: Vec<Unrouted>,
    ranges: Vec<RangeState>,
    /// Expected (name, type oid) of the replicated columns; a Relation message must match.
    expected_columns: Vec<(String, u32)>,
    /// Columns in the rows the stream currently sends (fewer than `expected_columns` while it
    /// describes the table as it was before columns were added; see `schema`).
    stream_width: usize,
    /// The source, to read the definition of columns added to it during the migration.
    source: Option<tokio_postgres::Config>,
    /// `ALTER TABLE` of the new table, run first in the next batch's transaction.
    pending_ddl: Vec<String>,
    source_name: (String, String),
    relation_oid: Option<u32>,
    segments: Vec<Segment>,
    batch_changes: usize,
    /// Commit LSN of the source transaction being read, if one is open.
    open_txn: Option<Lsn>,
    /// End LSN of the last commit folded into the current batch.
    batch_commit: Option<Lsn>,
    applied: Monotonic,
    idle_wal_end: Option<Lsn>,
    flush_tx: watch::Sender<Lsn>,
    fence_tx: watch::Sender<Option<String>>,
    shared: Arc<Shared>,
    statements: HashMap<String, Statement>,
    /// See `ApplierConfig::helpers`.
    helpers: Vec<Session>,
    max_batch: usize,
    /// Bytes queued on unfinished ranges (`queued_bytes`), and the cap on them.
    queued_bytes: usize,
    max_queued_bytes: usize,
    /// See `ApplierConfig::key_pending`.
    key_pending: bool,
    /// A TRUNCATE of the source arrived before every range was copied: it is applied when the
    /// last range is, and no event is taken until then.
    truncate_waiting: bool,
    hold_rx: watch::Receiver<Hold>,
    /// The hold being worked towards, whether it is reached, and the event kept aside at it.
    hold: Hold,
    hold_reached: bool,
    /// The hold came too late (a transaction at or after it is applied): it is not honoured.
    hold_missed: bool,
    held_event: Option<Event>,
    /// Commit LSN of the last transaction taken: a hold below it cannot be honoured any more.
    last_begin: Lsn,
    own_writes: Arc<AtomicU64>,
}

/// An extra apply session and its prepared statements.
struct Session {
    client: Client,
    statements: HashMap<String, Statement>,
}

pub struct ApplierConfig {
    pub shape: Shape,
    /// Extra sessions on the target, set up like the applier's own. A large batch of row changes
    /// is dealt out by key to all sessions, each committing its share on its own. Keys are
    /// unique in a batch, so the shares touch different rows. One share committed before
    /// another failed is a state the replay from the confirmed position converges from, like a
    /// batch committed before a crash (docs/design.md §3). Empty: one session.
    pub helpers: Vec<Client>,
    pub router: Router,
    /// Which ranges are already done (copied earlier, or empty edges).
    pub done: Vec<bool>,
    /// The new table has no primary key yet (it is built after the copy): no change is taken
    /// until `KEY_BUILT` arrives on the channel of finished ranges, so none needs a key before
    /// it exists and, the copy being done by then, none is queued on a range.
    pub key_pending: bool,
    pub expected_columns: Vec<(String, u32)>,
    /// The source database, read when columns are added to the table during the migration
    /// (without it such a change stops the run).
    pub source: Option<tokio_postgres::Config>,
    pub source_name: (String, String),
    pub start: Lsn,
    pub max_batch: usize,
    /// See `DEFAULT_MAX_QUEUED_BYTES`.
    pub max_queued_bytes: usize,
    /// Counts the write transactions the applier commits (see `copy::governor::Governed`).
    pub own_writes: Arc<AtomicU64>,
}

pub struct ApplierHandles {
    pub flush: watch::Receiver<Lsn>,
    pub fence: watch::Receiver<Option<String>>,
    pub shared: Arc<Shared>,
    /// Asks the applier to hold at an LSN (`Some`) or to go on (`None`); see `Hold`.
    pub hold: watch::Sender<Hold>,
}

impl Applier {
    pub fn new(client: Client, cfg: ApplierConfig) -> (Self, ApplierHandles) {
        let (flush_tx, flush_rx) = watch::channel(cfg.start);
        let (fence_tx, fence_rx) = watch::channel(None);
        let (hold_tx, hold_rx) = watch::channel(None);
        let shared = Arc::new(Shared::default());
        shared.flush_lsn.store(cfg.start.0, Ordering::Relaxed);
        let pending = cfg.done.iter().filter(|d| !**d).count();
        shared.ranges_pending.store(pending, Ordering::Relaxed);
        let ranges = cfg
            .done
            .iter()
            .map(|&done| RangeState {
                done,
                queue: VecDeque::new(),
            })
            .collect();
        let lookup = match &cfg.router {
            Router::Ordered(o) => Some(route::Lookup::new(o.clone(), cfg.source.clone())),
            _ => None,
        };
        let applier = Applier {
            client,
            shape: cfg.shape,
            lookup,
            unrouted: Vec::new(),
            router: cfg.router,
            ranges,
            stream_width: cfg.expected_columns.len(),
            expected_columns: cfg.expected_columns,
            source: cfg.source,
            pending_ddl: Vec::new(),
            source_name: cfg.source_name,
            relation_oid: None,
            segments: Vec::new(),
            batch_changes: 0,
            open_txn: None,
            batch_commit: None,
            applied: Monotonic::new(cfg.start),
            idle_wal_end: None,
            flush_tx,
            fence_tx,
            shared: shared.clone(),
            statements: HashMap::new(),
            helpers: cfg
                .helpers
                .into_iter()
                .map(|client| Session {
                    client,
                    statements: HashMap::new(),
                })
                .collect(),
            max_batch: cfg.max_batch.max(1),
            queued_bytes: 0,
            max_queued_bytes: cfg.max_queued_bytes.max(1),
            key_pending: cfg.key_pending,
            truncate_waiting: false,
            hold_rx,
            hold: None,
            hold_reached: false,
            hold_missed: false,
            held_event: None,
            last_begin: Lsn::ZERO,
            own_writes: cfg.own_writes,
        };
        (
            applier,
            ApplierHandles {
                flush: flush_rx,
                fence: fence_rx,
                shared,
                hold: hold_tx,
            },
        )
    }

    /// Runs until the event channel closes or `stop` turns true. Returns an error that stops the
    /// migration; nothing is confirmed past what was committed, so a rerun resumes safely.
    pub async fn run(
        mut self,
        mut events: channel::EventReceiver,
        mut range_done: mpsc::UnboundedReceiver<usize>,
        mut stop: watch::Receiver<bool>,
        mut pause: watch::Receiver<bool>,
    ) -> Result<()> {
        loop {
            // Between batches: nothing is in flight, so a pause is in effect from here.
            let paused = *pause.borrow_and_update();
            self.shared.paused.store(paused, Ordering::Relaxed);
            if let Some(fence) = self.update_hold().await? {
                // The event kept aside went through the gate again (and may have been applied).
                self.apply_batch().await?;
                self.publish_fence(fence);
                self.publish_hold();
                continue;
            }
            let mut fence = None;
            tokio::select! {
                biased;
                // Stopping is checked first, and only between batches.
                _ = stop.changed() => return Ok(()),
                // Paused: take no events (the bounded channel backs up to the slot) until resumed.
                _ = pause.changed() => continue,
                // A hold asked or lifted (verify): looked at again at the top of the loop.
                Ok(()) = self.hold_rx.changed() => continue,
                // A finished range next: its queue must be applied before later changes of its keys.
                // Taken also while events are not, so that a full queue always drains.
                Some(range) = range_done.recv() => {
                    self.resolve_routes().await?;
                    self.finish_range(range);
                }
                // Events last: not while paused, and only while the queues of unfinished ranges
                // are under their cap.
                event = events.recv(), if !paused && self.taking_events() && !self.hold_reached => {
                    let Some(event) = event else { return Ok(()) };
                    let started = std::time::Instant::now();
                    fence = self.take(event).await?;
                    while fence.is_none() && self.batch_changes < self.max_batch && self.taking_events() && !self.hold_reached {
                        // Finished ranges first, here too: a range's copy always commits before
                        // any later event of the stream can depend on it being done.
                        while let Ok(range) = range_done.try_recv() {
                            // Changes taken before it go first, to its queue or the batch.
                            self.resolve_routes().await?;
                            self.finish_range(range);
                        }
                        match events.try_recv() {
                            Some(event) => fence = self.take(event).await?,
                            None => {
                                // A small batch waits a little for more: under a light, steady
                                // stream, fewer and larger target transactions (each a commit the
                                // target flushes, competing with the source's own when both are
                                // one server).
                                let left = BATCH_LINGER.saturating_sub(started.elapsed());
                                if self.batch_changes >= LINGER_BELOW || left.is_zero() {
                                    break;
                                }
                                match tokio::time::timeout(left, events.recv()).await {
                                    Ok(Some(event)) => fence = self.take(event).await?,
                                    // Out of time, or the stream closed (seen again above).
                                    _ => break,
                                }
                            }
                        }
                    }
                }
            }
            self.apply_batch().await?;
            self.publish_fence(fence);
            self.publish_hold();
        }
    }

    fn publish_fence(&self, fence: Option<String>) {
        if let Some(id) = fence {
            tracing::debug!(fence = %id, "fence reached; everything before it is applied");
            self.fence_tx.send_replace(Some(id));
        }
    }

    /// After a batch: the hold is in effect once it is reached and nothing is left unapplied.
    fn publish_hold(&self) {
        let held = match self.hold {
            Some(at) if self.hold_reached && !self.hold_missed && self.segments.is_empty() => {
                at.0.max(1)
            }
            _ => 0,
        };
        self.shared.held_at.store(held, Ordering::Relaxed);
    }

    /// Takes a new hold request into account. A changed (or lifted) hold lets the event kept aside
    /// go through the gate again. `None` when nothing changed, else the fence that event was, if any.
    async fn update_hold(&mut self) -> Result<Option<Option<String>>> {
        let asked = *self.hold_rx.borrow_and_update();
        if asked == self.hold {
            return Ok(None);
        }
        self.hold = asked;
        self.hold_reached = false;
        self.hold_missed = false;
        if let Some(at) = asked {
            // ZERO holds before the next transaction, whatever its position.
            if at > Lsn::ZERO && self.last_begin >= at {
                // The asker sees no acknowledgement and gives up at its deadline.
                tracing::warn!(hold_at = %at, applied_past = %self.last_begin, "cannot hold: a transaction committed at or after the asked position is already applied");
                self.hold_missed = true;
            } else {
                tracing::debug!(hold_at = %at, "holding the applier before the first transaction committed at or after this position");
            }
        }
        self.publish_hold();
        match self.held_event.take() {
            Some(event) => Box::pin(self.take(event)).await.map(Some),
            None => Ok(Some(None)),
        }
    }

    /// The hold gate in front of `handle`: a transaction committing at or after the hold is kept
    /// aside (not applied) and no further event is taken.
    async fn take(&mut self, event: Event) -> Result<Option<String>> {
        match hold_gate(
            self.hold.filter(|_| !self.hold_missed),
            &event,
            self.open_txn.is_some(),
        ) {
            HoldGate::Pass => {}
            HoldGate::KeepAside => {
                self.hold_reached = true;
                self.held_event = Some(event);
                return Ok(None);
            }
            HoldGate::Reached => self.hold_reached = true,
        }
        if let Event::Message(PgOutput::Begin { final_lsn, .. }) = &event {
            self.last_begin = self.last_begin.max(*final_lsn);
        }
        self.handle(event).await
    }

    /// False while the changes queued on unfinished ranges hold more than the cap, and while the
    /// primary key is not built.
    fn taking_events(&self) -> bool {
        self.queued_bytes < self.max_queued_bytes && !self.key_pending && !self.truncate_waiting
    }

    fn finish_range(&mut self, range: usize) {
        if range == KEY_BUILT {
            tracing::debug!("the primary key is built; taking changes");
            self.key_pending = false;
            return;
        }
        let Some(state) = self.ranges.get_mut(range) else {
            return;
        };
        if state.done {
            return;
        }
        state.done = true;
        let queue = std::mem::take(&mut state.queue);
        let freed: usize = queue.iter().map(|q| queued_bytes(&q.key, &q.op)).sum();
        self.queued_bytes = self.queued_bytes.saturating_sub(freed);
        self.shared
            .queued_changes
            .fetch_sub(queue.len() as u64, Ordering::Relaxed);
        self.shared.ranges_pending.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(
            range,
            drained = queue.len(),
            "range copied; applying its queued changes"
        );
        for q in queue {
            self.batch_push(q.key, q.op);
        }
        self.close_lookup_when_done();
        if self.truncate_waiting && self.all_ranges_done() {
            tracing::debug!("every range is copied; applying the TRUNCATE that waited for it");
            self.truncate_waiting = false;
            self.segments.push(Segment::Truncate);
            self.batch_changes += 1;
        }
    }

    fn batch_push(&mut self, key: Key, op: Op) {
        self.batch_changes += 1;
        if let Some(Segment::Compact(c)) = self.segments.last_mut() {
            c.push(key, op);
        } else {
            let mut c = Compactor::default();
            c.push(key, op);
            self.segments.push(Segment::Compact(c));
        }
    }

    /// Routes one change: applied with the batch when its range is done, else queued on it. A
    /// key only the server orders waits in `unrouted` (in stream order) for the next round trip.
    async fn route(&mut self, key: Key, op: Op) -> Result<()> {
        if self.lookup.is_some() && !self.all_ranges_done() {
            let hold = self.open_txn.unwrap_or(self.applied.get());
            self.unrouted.push(Unrouted { hold, key, op });
            if self.unrouted.len() >= route::BATCH_KEYS {
                self.resolve_routes().await?;
            }
            return Ok(());
        }
        let range = self.range_for(&key).await?;
        let hold = self.open_txn.unwrap_or(self.applied.get());
        self.place(range, hold, key, op);
        Ok(())
    }

    /// Puts a routed change in the batch or on its range's queue (`hold`: see `gate`).
    fn place(&mut self, range: usize, hold: Lsn, key: Key, op: Op) {
        let state = &mut self.ranges[range];
        match gate(state.done, Some(hold), hold) {
            Gate::Apply => self.batch_push(key, op),
            Gate::Queue { hold } => {
                self.queued_bytes += queued_bytes(&key, &op);
                state.queue.push_back(Queued { hold, key, op });
                self.shared.queued_changes.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Asks the server the ranges of the changes in `unrouted` (one round trip for the keys not
    /// cached) and places them in stream order. Called before whatever depends on where they go:
    /// a finished range, a batch applied, a key move, a TRUNCATE, a relation message.
    async fn resolve_routes(&mut self) -> Result<()> {
        if self.unrouted.is_empty() {
            return Ok(());
        }
        let changes = std::mem::take(&mut self.unrouted);
        let keys: Vec<Key> = changes.iter().map(|c| c.key.clone()).collect();
        let lookup = self
            .lookup
            .as_mut()
            .expect("unrouted changes have a lookup");
        let ranges = lookup.ranges_of(&keys).await?;
        for (c, range) in changes.into_iter().zip(ranges) {
            self.place(range, c.hold, c.key, c.op);
        }
        Ok(())
    }

    /// Every range copied: the routing session is closed (nothing is looked up any more).
    fn close_lookup_when_done(&mut self) {
        if self.all_ranges_done()
            && let Some(lookup) = &mut self.lookup
        {
            let stats = lookup.stats();
            if stats.round_trips > 0 {
                tracing::info!(
                    keys = stats.keys,
                    round_trips = stats.round_trips,
                    elapsed_ms = stats.micros / 1000,
                    "every range copied: the changes' keys were routed by the source"
                );
            }
            lookup.close();
        }
    }

    /// The range holding `key`: compared in Rust for integer keys, else asked of the source.
    async fn range_for(&mut self, key: &Key) -> Result<usize> {
        let all_done = self.lookup.is_some() && self.all_ranges_done();
        match &mut self.lookup {
            // Every range copied: any will do, none is asked.
            Some(_) if all_done => Ok(0),
            Some(lookup) => lookup.range_of(key).await,
            None => self.router.range_of(key),
        }
    }

    fn all_ranges_done(&self) -> bool {
        self.ranges.iter().all(|r| r.done)
    }

    /// Handles one event; returns the fence id when it was a fence.
    async fn handle(&mut self, event: Event) -> Result<Option<String>> {
        let msg = match event {
            Event::Idle(wal_end) => {
                if self.open_txn.is_none() {
                    self.idle_wal_end = Some(self.idle_wal_end.map_or(wal_end, |w| w.max(wal_end)));
                }
                return Ok(None);
            }
            Event::Message(msg) => msg,
        };
        match msg {
            PgOutput::Begin { final_lsn, .. } => self.open_txn = Some(final_lsn),
            PgOutput::Commit { end_lsn, .. } => {
                self.open_txn = None;
                self.batch_commit = Some(end_lsn);
            }
            PgOutput::Relation(rel) => {
                // Rows held are widened when columns are added: the unrouted ones too.
                self.resolve_routes().await?;
                self.check_relation(&rel).await?
            }
            PgOutput::Insert { rel, new } => {
                if self.is_ours(rel) {
                    let row = self.row(&new)?;
                    let key = self.key_of(&row)?;
                    self.route(key, Op::Upsert(row)).await?;
                }
            }
            PgOutput::Update { rel, old, new } => {
                if self.is_ours(rel) {
                    self.update(old, new).await?;
                }
            }
            PgOutput::Delete { rel, old } => {
                if self.is_ours(rel) {
                    let tuple = match old {
                        OldTuple::Key(t) | OldTuple::Full(t) => t,
                    };
                    let row = self.row(&tuple)?;
                    let key = self.key_of(&row)?;
                    self.route(key, Op::Delete).await?;
                }
            }
            PgOutput::Truncate { rels, .. } => {
                if self.relation_oid.is_some_and(|oid| rels.contains(&oid)) {
                    self.resolve_routes().await?;
                    if self.all_ranges_done() {
                        self.segments.push(Segment::Truncate);
                        self.batch_changes += 1;
                    } else {
                        // Committed between two ranges' snapshots: ranges copied before it hold
                        // rows it removed, ranges copied after it hold only rows written after
                        // it, which the stream sends after it. So it is applied once every range
                        // is copied (and its queue applied), and nothing later is taken until
                        // then (design.md §5).
                        tracing::info!(
                            "the source table was truncated during the copy; applied once every range is copied"
                        );
                        self.truncate_waiting = true;
                    }
                }
            }
            PgOutput::Message {
                transactional: false,
                prefix,
                content,
                ..
            } if prefix == FENCE_PREFIX => {
                return Ok(Some(String::from_utf8_lossy(&content).into_owned()));
            }
            PgOutput::Message { .. } | PgOutput::Origin { .. } | PgOutput::Type { .. } => {}
        }
        Ok(None)
    }

    async fn update(&mut self, old: Option<OldTuple>, new: TupleData) -> Result<()> {
        let row = self.row(&new)?;
        let partial = row.contains(&Value::Unchanged);
        let new_key = if self.shape.key.iter().any(|&k| row[k] == Value::Unchanged) {
            None
        } else {
            Some(self.key_of(&row)?)
        };
        let old_key = match &old {
            Some(OldTuple::Key(t)) | Some(OldTuple::Full(t)) => Some(self.key_of(&self.row(t)?)?),
            None => None,
        };
        let new_key = match (new_key, &old_key) {
            (Some(k), _) => k,
            // A key column too large to be sent: it did not change, so the old key is the key.
            (None, Some(k)) if old.is_some() => k.clone(),
            _ => {
                return Err(Error::failed(
                    "an UPDATE arrived without its key columns (a key value stored out of line)",
                ));
            }
        };
        let moved = old_key.as_ref().filter(|k| **k != new_key);
        match (moved, partial) {
            (None, false) => self.route(new_key, Op::Upsert(row)).await,
            (None, true) => self.route(new_key, Op::Patch(row)).await,
            (Some(old_key), false) => {
                let old_key = old_key.clone();
                self.route(old_key, Op::Delete).await?;
                self.route(new_key, Op::Upsert(row)).await
            }
            (Some(old_key), true) => {
                let old_key = old_key.clone();
                // The changes before it are placed first (it is a segment of its own).
                self.resolve_routes().await?;
                let (a, b) = (
                    self.range_for(&old_key).await?,
                    self.range_for(&new_key).await?,
                );
                if !(self.ranges[a].done && self.ranges[b].done) {
                    return Err(Error::failed(
                        "a row's key was changed, leaving a large (TOASTed) column unchanged, while its key range was still being copied",
                    )
                    .with_hint("run the same command again: the copy resumes and the change is applied once its range is copied"));
                }
                self.segments.push(Segment::KeyMove { old_key, row });
                self.batch_changes += 1;
                Ok(())
            }
        }
    }

    fn is_ours(&self, rel: u32) -> bool {
        self.relation_oid == Some(rel)
    }

    async fn check_relation(&mut self, rel: &Relation) -> Result<()> {
        let nsp = if rel.namespace.is_empty() {
            "pg_catalog"
        } else {
            rel.namespace.as_str()
        };
        if (nsp, rel.name.as_str()) != (self.source_name.0.as_str(), self.source_name.1.as_str()) {
            return Ok(());
        }
        let got: Vec<(String, u32)> = rel
            .columns
            .iter()
            .map(|c| (c.name.clone(), c.type_oid))
            .collect();
        match schema::classify(&self.expected_columns, &got) {
            RelationChange::Same => self.stream_width = got.len(),
            RelationChange::Older { width } => {
                self.check_columns_still_there(&got).await?;
                self.stream_width = width;
            }
            RelationChange::Added { from } => self.follow_added_columns(rel, &got[from..]).await?,
            RelationChange::Other => return Err(self.columns_changed(&got)),
        }
        self.relation_oid = Some(rel.oid);
        Ok(())
    }

    /// The stream sends fewer columns than the new table has: fine when they were added after the
    /// changes being read (the source still has them), a stop when they were dropped.
    async fn check_columns_still_there(&mut self, got: &[(String, u32)]) -> Result<()> {
        let info = self.read_source_table().await?;
        let now: Vec<(String, u32)> = info
            .iter()
            .flat_map(|i| i.replicated_columns())
            .map(|c| (c.name.clone(), c.type_oid))
            .collect();
        if now == self.expected_columns {
            return Ok(());
        }
        Err(self.columns_changed(got))
    }

    /// The stop for a column change that is not followed, naming each column and what changed.
    fn columns_changed(&self, got: &[(String, u32)]) -> Error {
        Error::failed(format!(
            "the definition of {}.{} changed on the source during the migration ({})",
            self.source_name.0,
            self.source_name.1,
            schema::describe_change(&self.expected_columns, got)
        ))
        .with_hint("pgrepart follows only ADD COLUMN of a nullable column without a default; undo the change, or run `pgrepart abort` and start again")
    }

    /// The source table's definition as it is now, read on a short-lived connection.
    async fn read_source_table(&self) -> Result<Option<crate::pg::catalog::TableInfo>> {
        let table = QualifiedName::new(self.source_name.0.clone(), self.source_name.1.clone());
        let Some(source) = &self.source else {
            return Err(Error::failed(format!(
                "the definition of {table} changed on the source during the migration, and the source cannot be read from here"
            )));
        };
        let client = crate::pg::connect(source, "pgrepart source").await?;
        crate::pg::catalog::table_info(&client, &table).await
    }

    /// Columns appended to the source table: adds them to the new table (in the next batch's
    /// transaction) and widens every row held, as `schema` explains.
    async fn follow_added_columns(
        &mut self,
        rel: &Relation,
        added: &[(String, u32)],
    ) -> Result<()> {
        let table = QualifiedName::new(self.source_name.0.clone(), self.source_name.1.clone());
        let names: Vec<&str> = added.iter().map(|c| c.0.as_str()).collect();
        let stop = |why: String| {
            Error::failed(format!(
                "column {} was added to {table} on the source during the migration: {why}",
                names.join(", ")
            ))
            .with_hint("pgrepart follows only ADD COLUMN of a nullable column without a default; drop the column again and run the same command, or run `pgrepart abort` and start again")
        };
        let Some(info) = self.read_source_table().await? else {
            return Err(stop("the table is gone from the source".into()));
        };
        let mut clauses = Vec::new();
        let mut columns = Vec::new();
        for (name, oid) in added {
            let Some(c) = info.column(name).filter(|c| c.type_oid == *oid) else {
                return Err(stop(format!("{name} changed again since")));
            };
            clauses.push(schema::add_column_clause(c).map_err(stop)?);
            columns.push((c.name.clone(), c.type_sql.clone()));
        }
        self.pending_ddl.push(format!(
            "ALTER TABLE {} {}",
            self.shape.target.sql(),
            clauses.join(", ")
        ));
        self.shape.columns.extend(columns);
        self.expected_columns.extend(added.iter().cloned());
        let width = self.expected_columns.len();
        self.stream_width = width;
        self.widen_held_rows(width);
        self.statements.clear();
        tracing::info!(
            table = %table,
            columns = %names.join(", "),
            relation = rel.oid,
            "columns added on the source; adding them to the new table"
        );
        Ok(())
    }

    /// Widens the rows of the open batch and of every range queue to `width` columns.
    fn widen_held_rows(&mut self, width: usize) {
        for seg in &mut self.segments {
            match seg {
                Segment::Compact(c) => c.widen(width),
                Segment::KeyMove { row, .. } => compact::widen_row(row, width, Value::Unchanged),
                Segment::Truncate => {}
            }
        }
        for range in &mut self.ranges {
            for q in &mut range.queue {
                q.op.widen(width);
            }
        }
    }

    /// The row of a change, as wide as the new table: a row sent before columns were added gets
    /// NULL for them, or leaves them alone when it is partial (see `schema`).
    fn row(&self, tuple: &TupleData) -> Result<Row> {
        if tuple.0.len() != self.stream_width {
            return Err(Error::failed(format!(
                "a change carried {} columns where {} were expected",
                tuple.0.len(),
                self.stream_width
            )));
        }
        let mut row: Row = tuple
            .0
            .iter()
            .map(|d| match d {
                Datum::Null => Ok(Value::Null),
                Datum::UnchangedToast => Ok(Value::Unchanged),
                Datum::Text(t) => Ok(Value::Text(t.clone())),
                Datum::Binary(_) => Err(Error::failed(
                    "a change arrived in binary form; pgrepart asks for text",
                )),
            })
            .collect::<Result<_>>()?;
        let fill = if row.contains(&Value::Unchanged) {
            Value::Unchanged
        } else {
            Value::Null
        };
        compact::widen_row(&mut row, self.shape.columns.len(), fill);
        Ok(row)
    }

    fn key_of(&self, row: &Row) -> Result<Key> {
        self.shape
            .key
            .iter()
            .map(|&k| match &row[k] {
                Value::Text(t) => Ok(t.clone()),
                _ => Err(Error::failed("a change arrived without its key value")),
            })
            .collect()
    }

    /// The batch dealt out to every session, when there are extra ones and it is a large batch
    /// of row changes only (no column added, no key move, no TRUNCATE, which keep their order on
    /// one session). Takes the batch's segment.
    fn parallel_parts(&mut self) -> Option<Vec<Compactor>> {
        if self.helpers.is_empty() || !self.pending_ddl.is_empty() {
            return None;
        }
        match self.segments.as_slice() {
            [Segment::Compact(c)] if c.len() >= PARALLEL_MIN_KEYS => {}
            _ => return None,
        }
        let Some(Segment::Compact(c)) = self.segments.pop() else {
            unreachable!("matched above")
        };
        Some(c.split(1 + self.helpers.len()))
    }

    fn compute_flush(&self) -> Lsn {
        flush_position(
            self.applied.get(),
            self.ranges
                .iter()
                .filter_map(|r| r.queue.front().map(|q| q.hold)),
        )
    }

    async fn apply_batch(&mut self) -> Result<()> {
        self.resolve_routes().await?;
        if let Some(parts) = self.parallel_parts() {
            let changes = self.batch_changes as u64;
            let started = std::time::Instant::now();
            let shape = &self.shape;
            let mut sessions = vec![(&mut self.client, &mut self.statements)];
            sessions.extend(
                self.helpers
                    .iter_mut()
                    .map(|h| (&mut h.client, &mut h.statements)),
            );
            if crate::fault::enabled("apply-share-committed") {
                // Tests: the first share committed, the others not (as if the process died
                // between the sessions' commits).
                let (client, cache) = sessions.swap_remove(0);
                let part = parts.into_iter().next().expect("one part per session");
                apply_share(client, cache, shape, part.finish(&shape.key)).await?;
                crate::fault::point("apply-share-committed");
                unreachable!("the fault point exits");
            }
            let work = sessions
                .into_iter()
                .zip(parts)
                .map(|((client, cache), part)| {
                    apply_share(client, cache, shape, part.finish(&shape.key))
                });
            futures_util::future::try_join_all(work).await?;
            self.own_writes
                .fetch_add(1 + self.helpers.len() as u64, Ordering::Relaxed);
            tracing::debug!(
                changes,
                sessions = 1 + self.helpers.len(),
                elapsed_us = started.elapsed().as_micros() as u64,
                "batch applied"
            );
            self.shared
                .applied_changes
                .fetch_add(changes, Ordering::Relaxed);
        } else if !self.segments.is_empty() || !self.pending_ddl.is_empty() {
            let segments = std::mem::take(&mut self.segments);
            let changes = self.batch_changes as u64;
            let started = std::time::Instant::now();
            let client = &mut self.client;
            let tx = client
                .transaction()
                .await
                .map_err(|e| Error::db("starting a target transaction", e))?;
            for ddl in std::mem::take(&mut self.pending_ddl) {
                tx.batch_execute(&ddl).await.map_err(|e| {
                    Error::db("adding the source's new columns to the new table", e)
                })?;
            }
            for seg in segments {
                match seg {
                    Segment::Compact(c) => {
                        apply_compacted(
                            &tx,
                            &self.shape,
                            &mut self.statements,
                            c.finish(&self.shape.key),
                        )
                        .await?
                    }
                    Segment::KeyMove { old_key, row } => {
                        apply_key_move(&tx, &self.shape, old_key, row).await?
                    }
                    Segment::Truncate => {
                        let sql = format!("TRUNCATE {}", self.shape.target.sql());
                        tx.batch_execute(&sql)
                            .await
                            .map_err(|e| Error::db("applying a TRUNCATE", e))?;
                    }
                }
            }
            tx.commit()
                .await
                .map_err(|e| Error::db("committing applied changes", e))?;
            self.own_writes.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                changes,
                elapsed_us = started.elapsed().as_micros() as u64,
                "batch applied"
            );
            self.shared
                .applied_changes
                .fetch_add(changes, Ordering::Relaxed);
        }
        self.batch_changes = 0;
        if let Some(end) = self.batch_commit.take() {
            self.applied.advance(end);
        }
        if let Some(w) = self.idle_wal_end.take()
            && self.open_txn.is_none()
            && self.ranges.iter().all(|r| r.queue.is_empty())
        {
            self.applied.advance(w);
        }
        let flush = self.compute_flush();
        self.shared.flush_lsn.store(flush.0, Ordering::Relaxed);
        self.flush_tx.send_if_modified(|cur| {
            if flush > *cur {
                *cur = flush;
                true
            } else {
                false
            }
        });
        Ok(())
    }
}

/// The range gate's decision for one change (pure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// Its range is copied: apply it with the batch.
    Apply,
    /// Its range is still being copied: queue it, and confirm nothing at or past `hold` until it
    /// is applied (the commit LSN of its transaction, or what is applied when outside one).
    Queue { hold: Lsn },
}

fn gate(range_done: bool, open_txn: Option<Lsn>, applied: Lsn) -> Gate {
    if range_done {
        Gate::Apply
    } else {
        Gate::Queue {
            hold: open_txn.unwrap_or(applied),
        }
    }
}

/// The flush position safe to confirm (pure): what is applied and committed, but never at or
/// past the hold of the oldest change still queued on an unfinished range (design: the
/// progress that never loses data).
fn flush_position(applied: Lsn, queued_holds: impl Iterator<Item = Lsn>) -> Lsn {
    queued_holds.fold(applied, Lsn::min)
}

/// What the verify hold does with one event (pure); see [`Hold`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HoldGate {
    /// Not held (no hold, or before its position): handle the event.
    Pass,
    /// A transaction committing at or after the hold begins: keep it aside, take nothing more.
    KeepAside,
    /// A keepalive outside any transaction shows the stream is past the hold: handle it, then
    /// take nothing more.
    Reached,
}

fn hold_gate(hold: Hold, event: &Event, in_txn: bool) -> HoldGate {
    let Some(at) = hold else {
        return HoldGate::Pass;
    };
    match event {
        Event::Message(PgOutput::Begin { final_lsn, .. }) if *final_lsn >= at => {
            HoldGate::KeepAside
        }
        Event::Idle(wal_end) if *wal_end >= at && !in_txn => HoldGate::Reached,
        _ => HoldGate::Pass,
    }
}

fn texts(values: impl Iterator<Item = Option<Bytes>>) -> Result<Vec<Option<String>>> {
    values
        .map(|v| match v {
            None => Ok(None),
            Some(b) => String::from_utf8(b.to_vec())
                .map(Some)
                .map_err(|_| Error::failed("the change stream carried text that is not UTF-8")),
        })
        .collect()
}

fn value_bytes(v: &Value) -> Option<Bytes> {
    match v {
        Value::Text(t) => Some(t.clone()),
        _ => None,
    }
}

async fn prepared(
    tx: &Transaction<'_>,
    cache: &mut HashMap<String, Statement>,
    sql: String,
) -> Result<Statement> {
    if let Some(s) = cache.get(&sql) {
        return Ok(s.clone());
    }
    let stmt = tx
        .prepare(&sql)
        .await
        .map_err(|e| Error::db("preparing an apply statement", e))?;
    cache.insert(sql, stmt.clone());
    Ok(stmt)
}

fn apply_error(what: &str, e: tokio_postgres::Error) -> Error {
    if e.code() == Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION)
        && e.as_db_error()
            .is_some_and(|d| d.message().contains("no partition"))
    {
        return Error::failed(format!("{what}: a changed row has a partition-key value that no partition accepts"))
            .with_hint("add a partition for that value (or a DEFAULT partition) to the new table, then run the same command again to resume");
    }
    Error::db(what.to_string(), e)
}

async fn apply_compacted(
    tx: &Transaction<'_>,
    shape: &Shape,
    cache: &mut HashMap<String, Statement>,
    batch: Compacted,
) -> Result<()> {
    // Keys are unique in a compacted batch, so the three statements touch different rows.
    if !batch.removals.is_empty() {
        let stmt = prepared(tx, cache, shape.delete_sql()).await?;
        let params: Vec<Param> = (0..shape.key.len())
            .map(|j| texts(batch.removals.iter().map(|k| Some(k[j].clone()))))
            .collect::<Result<_>>()?;
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            params.iter().map(|p| p as _).collect();
        tx.execute(&stmt, &refs)
            .await
            .map_err(|e| apply_error("applying deletes", e))?;
    }
    // Full images: rows found are updated in place, the others are new and copied in. On a
    // partitioned target the first attempt looks in the partition each image names; the rows it
    // misses are looked for by key alone when they may sit in another one (see `Shape::route`).
    let mut new_rows: Vec<&Row> = batch.inserts.iter().collect();
    if !new_rows.is_empty() {
        let routed = new_rows.len() >= ROUTED_MIN_ROWS;
        if routed && let Some(sql) = shape.update_routed_sql() {
            new_rows = update_missed(tx, cache, sql, shape.columns.len(), new_rows).await?;
        }
        let by_key = !routed || !shape.partitioned || shape.misses_need_key_lookup();
        if !new_rows.is_empty() && by_key {
            new_rows = update_missed(
                tx,
                cache,
                shape.update_rows_sql(),
                shape.columns.len(),
                new_rows,
            )
            .await?;
        }
    }
    if let (Some(narrow), Some(sql)) = (&shape.narrow, shape.narrow_update_sql())
        && !new_rows.is_empty()
    {
        // The reverse stream: rows the new key did not find may have their old key held by
        // another row (design.md §11).
        let (kept, mut conflicts) = narrow_duplicates(new_rows, &narrow.key);
        let params: Vec<Param> = (0..shape.columns.len())
            .map(|c| texts(kept.iter().map(|row| value_bytes(&row[c]))))
            .collect::<Result<_>>()?;
        let found = found_positions(tx, cache, sql, &params, kept.len()).await?;
        conflicts.extend(
            kept.iter()
                .zip(&found)
                .filter(|(_, f)| **f)
                .map(|(row, _)| narrow_key(row, &narrow.key)),
        );
        new_rows = keep_missed(kept, &found);
        if !conflicts.is_empty() {
            let record = shape
                .record_conflicts_sql()
                .expect("a narrow shape records conflicts");
            let stmt = prepared(tx, cache, record).await?;
            let params: Vec<Param> = (0..narrow.key.len())
                .map(|j| texts(conflicts.iter().map(|k| k[j].clone())))
                .collect::<Result<_>>()?;
            let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                params.iter().map(|p| p as _).collect();
            tx.execute(&stmt, &refs)
                .await
                .map_err(|e| apply_error("recording conflicts", e))?;
            // Counted, never the values: `pgrepart status` names the keys.
            tracing::warn!(
                conflicts = conflicts.len(),
                "rows of the new table share the old table's key with another row: the newest is kept in the old table, the keys are recorded (see `pgrepart status`)"
            );
        }
    }
    if !new_rows.is_empty() {
        let stmt = prepared(tx, cache, shape.copy_in_sql()).await?;
        let sink = tx
            .copy_in::<_, Bytes>(&stmt)
            .await
            .map_err(|e| apply_error("applying inserts", e))?;
        futures_util::pin_mut!(sink);
        let mut buf = Vec::with_capacity(1 << 16);
        for row in new_rows {
            encode_copy_text_row(row, &mut buf);
            if buf.len() >= 1 << 20 {
                sink.feed(Bytes::from(std::mem::take(&mut buf)))
                    .await
                    .map_err(|e| apply_error("applying inserts", e))?;
            }
        }
        if !buf.is_empty() {
            sink.feed(Bytes::from(buf))
                .await
                .map_err(|e| apply_error("applying inserts", e))?;
        }
        sink.finish()
            .await
            .map_err(|e| apply_error("applying inserts", e))?;
    }
    for (cols, items) in batch.patches {
        let mut items: Vec<&(Key, Row)> = items.iter().collect();
        let params = |items: &[&(Key, Row)]| -> Result<Vec<Param>> {
            let mut params: Vec<Param> = Vec::with_capacity(shape.key.len() + cols.len());
            for j in 0..shape.key.len() {
                params.push(texts(items.iter().map(|(k, _)| Some(k[j].clone())))?);
            }
            for &c in &cols {
                params.push(texts(items.iter().map(|(_, row)| value_bytes(&row[c])))?);
            }
            Ok(params)
        };
        if items.len() >= ROUTED_MIN_ROWS
            && let Some(sql) = shape.patch_routed_sql(&cols)
        {
            let found = found_positions(tx, cache, sql, &params(&items)?, items.len()).await?;
            items = keep_missed(items, &found);
            if items.is_empty() {
                continue;
            }
        }
        let stmt = prepared(tx, cache, shape.patch_sql(&cols)).await?;
        let params = params(&items)?;
        let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            params.iter().map(|p| p as _).collect();
        tx.execute(&stmt, &refs)
            .await
            .map_err(|e| apply_error("applying updates", e))?;
    }
    Ok(())
}

type Param = Vec<Option<String>>;

/// One session's share of a batch, in a transaction of its own.
async fn apply_share(
    client: &mut Client,
    cache: &mut HashMap<String, Statement>,
    shape: &Shape,
    batch: Compacted,
) -> Result<()> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| Error::db("starting a target transaction", e))?;
    apply_compacted(&tx, shape, cache, batch).await?;
    tx.commit()
        .await
        .map_err(|e| Error::db("committing applied changes", e))
}

/// Runs an UPDATE of full images (`update_rows_sql` or `update_routed_sql`, one `text[]` per
/// column) and returns the rows it did not find.
async fn update_missed<'r>(
    tx: &Transaction<'_>,
    cache: &mut HashMap<String, Statement>,
    sql: String,
    width: usize,
    rows: Vec<&'r Row>,
) -> Result<Vec<&'r Row>> {
    let params: Vec<Param> = (0..width)
        .map(|c| texts(rows.iter().map(|row| value_bytes(&row[c]))))
        .collect::<Result<_>>()?;
    let found = found_positions(tx, cache, sql, &params, rows.len()).await?;
    Ok(keep_missed(rows, &found))
}

/// Runs an UPDATE that returns the 1-based positions (`RETURNING d.n`) of the `n` images it
/// found; `found[i]` tells whether image `i` was.
async fn found_positions(
    tx: &Transaction<'_>,
    cache: &mut HashMap<String, Statement>,
    sql: String,
    params: &[Param],
    n: usize,
) -> Result<Vec<bool>> {
    let stmt = prepared(tx, cache, sql).await?;
    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
        params.iter().map(|p| p as _).collect();
    let rows = tx
        .query(&stmt, &refs)
        .await
        .map_err(|e| apply_error("applying updates", e))?;
    let mut found = vec![false; n];
    for r in rows {
        let pos: i64 = r.get(0);
        if let Some(f) = usize::try_from(pos - 1).ok().and_then(|i| found.get_mut(i)) {
            *f = true;
        }
    }
    Ok(found)
}

/// The old key of a row (the reverse stream's `Narrow::key`), as the stream's text.
fn narrow_key(row: &Row, narrow: &[usize]) -> Vec<Option<Bytes>> {
    narrow.iter().map(|&k| value_bytes(&row[k])).collect()
}

/// Full images of one batch sharing an old key (pure): the last of each is kept, the old keys
/// met more than once are returned as conflicts (the new table holds both rows; the old table
/// can hold one).
fn narrow_duplicates<'r>(
    rows: Vec<&'r Row>,
    narrow: &[usize],
) -> (Vec<&'r Row>, Vec<Vec<Option<Bytes>>>) {
    let mut last: HashMap<Vec<Option<Bytes>>, usize> = HashMap::new();
    for (i, row) in rows.iter().enumerate() {
        last.insert(narrow_key(row, narrow), i);
    }
    let mut conflicts = Vec::new();
    let mut kept = Vec::with_capacity(last.len());
    for (i, row) in rows.into_iter().enumerate() {
        let key = narrow_key(row, narrow);
        if last.get(&key) == Some(&i) {
            kept.push(row);
        } else if !conflicts.contains(&key) {
            conflicts.push(key);
        }
    }
    (kept, conflicts)
}

fn keep_missed<T>(items: Vec<T>, found: &[bool]) -> Vec<T> {
    items
        .into_iter()
        .zip(found)
        .filter(|(_, f)| !**f)
        .map(|(item, _)| item)
        .collect()
}

async fn apply_key_move(tx: &Transaction<'_>, shape: &Shape, old_key: Key, row: Row) -> Result<()> {
    let set: Vec<usize> = (0..row.len())
        .filter(|&i| row[i] != Value::Unchanged)
        .collect();
    let mut params = texts(set.iter().map(|&i| value_bytes(&row[i])))?;
    params.extend(texts(old_key.into_iter().map(Some))?);
    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
        params.iter().map(|p| p as _).collect();
    tx.execute(&shape.key_move_sql(&set), &refs)
        .await
        .map_err(|e| apply_error("applying a key change", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn begin(at: u64) -> Event {
        Event::Message(PgOutput::Begin {
            final_lsn: Lsn(at),
            commit_ts: 0,
            xid: 1,
        })
    }

    #[test]
    fn the_range_gate_applies_done_ranges_and_queues_the_others_at_their_commit() {
        let applied = Lsn(100);
        let cases = [
            // (range done, open transaction's commit LSN, expected)
            (true, Some(Lsn(500)), Gate::Apply),
            (true, None, Gate::Apply),
            (false, Some(Lsn(500)), Gate::Queue { hold: Lsn(500) }),
            // Outside a transaction (a change replayed from a queue): held at what is applied.
            (false, None, Gate::Queue { hold: applied }),
        ];
        for (done, open, want) in cases {
            assert_eq!(gate(done, open, applied), want, "done={done} open={open:?}");
        }
    }

    #[test]
    fn the_flush_position_never_passes_the_oldest_queued_change() {
        let cases: [(u64, &[u64], u64); 5] = [
            // (applied, holds of the queues' oldest changes, expected flush)
            (100, &[], 100),
            (100, &[300], 100),
            (400, &[300], 300),
            (400, &[350, 250, 390], 250),
            (0, &[10], 0),
        ];
        for (applied, holds, want) in cases {
            let got = flush_position(Lsn(applied), holds.iter().map(|&h| Lsn(h)));
            assert_eq!(got, Lsn(want), "applied={applied} holds={holds:?}");
        }
    }

    #[test]
    fn the_verify_hold_keeps_aside_the_first_transaction_at_or_after_it() {
        let at = Some(Lsn(1000));
        let cases = [
            // (hold, event, inside a transaction, expected)
            (None, begin(5000), false, HoldGate::Pass),
            (at, begin(999), false, HoldGate::Pass),
            (at, begin(1000), false, HoldGate::KeepAside),
            (at, begin(1001), false, HoldGate::KeepAside),
            (at, Event::Idle(Lsn(999)), false, HoldGate::Pass),
            (at, Event::Idle(Lsn(1000)), false, HoldGate::Reached),
            // A keepalive inside a transaction says nothing about its commit.
            (at, Event::Idle(Lsn(2000)), true, HoldGate::Pass),
            // ZERO holds before the next transaction, wherever it is.
            (Some(Lsn::ZERO), begin(1), false, HoldGate::KeepAside),
        ];
        for (hold, event, in_txn, want) in cases {
            let got = hold_gate(hold, &event, in_txn);
            assert_eq!(got, want, "hold={hold:?} event={event:?} in_txn={in_txn}");
        }
    }

    #[test]
    fn an_integer_router_sends_each_key_to_its_range() {
        let router = Router::Int(vec![
            KeyRange {
                lo: None,
                hi: Some(10),
            },
            KeyRange {
                lo: Some(10),
                hi: Some(20),
            },
            KeyRange {
                lo: Some(20),
                hi: None,
            },
        ]);
        let key = |k: &str| -> Key { vec![Bytes::copy_from_slice(k.as_bytes())] };
        assert_eq!(router.range_of(&key("-5")).unwrap(), 0);
        assert_eq!(router.range_of(&key("10")).unwrap(), 1);
        assert_eq!(router.range_of(&key("19")).unwrap(), 1);
        assert_eq!(router.range_of(&key("20")).unwrap(), 2);
        assert!(router.range_of(&key("x")).is_err());
        assert_eq!(Router::Single.range_of(&key("x")).unwrap(), 0);
    }

    #[test]
    fn images_sharing_an_old_key_keep_the_last_and_name_the_key_once() {
        let row = |id: &str, region: &str| -> Row {
            vec![
                Value::Text(Bytes::from(id.to_string())),
                Value::Text(Bytes::from(region.to_string())),
            ]
        };
        let (a, b, c, d) = (
            row("1", "US"),
            row("2", "US"),
            row("1", "EU"),
            row("1", "FR"),
        );
        let (kept, conflicts) = narrow_duplicates(vec![&a, &b, &c, &d], &[0]);
        assert_eq!(kept, vec![&b, &d]);
        assert_eq!(conflicts, vec![vec![Some(Bytes::from("1"))]]);
        // Distinct old keys: nothing is a conflict, order kept.
        let (kept, conflicts) = narrow_duplicates(vec![&a, &b], &[0]);
        assert_eq!(kept, vec![&a, &b]);
        assert!(conflicts.is_empty());
        // The whole new key as the old key: rows differ, nothing collides.
        let (kept, conflicts) = narrow_duplicates(vec![&a, &c, &d], &[0, 1]);
        assert_eq!(kept.len(), 3);
        assert!(conflicts.is_empty());
    }
}
