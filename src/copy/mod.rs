//! The parallel snapshot copy: each worker copies key ranges, highest first, each in a short
//! source transaction of its own on a fresh snapshot checked against the slot's exported one
//! (`snapshot`), with binary COPY straight into the target. A range's rows and its "done" mark
//! commit in one target transaction.
//!
//! ```text
//! source (REPEATABLE READ, one range) ──COPY (SELECT ... WHERE range) TO STDOUT─────────────────┐
//!                                                                                                ▼
//! target: BEGIN; COPY t_new FROM STDIN (binary); UPDATE pgrepart.ranges SET done; COMMIT ──► applier
//! ```
//!
//! A range copied under a limit (the load governor's or `--max-copy-rate`) goes in pieces of
//! about [`PIECE_SECONDS`] each: the key where the piece ends is read first (`ORDER BY key
//! OFFSET n LIMIT 1`), then the piece is copied like a range, on a snapshot and in a target
//! transaction of its own that also records `copied_to` (where the next piece starts). A range
//! is done with its last piece; a rerun goes on from `copied_to`. At 500 rows/s a range of 50,000
//! rows in one piece held the database's xmin horizon for 100 s, and the application's hot rows
//! (pgbench's branches and tellers) piled up versions that no update could prune: its
//! transactions slowed down, the governor slowed the copy further, and the range lasted longer.

pub mod governor;
pub mod indexes;
pub mod objective;
pub mod ranges;
pub mod snapshot;
pub mod toast;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{SinkExt, TryStreamExt};
use tokio::sync::{mpsc, watch};
use tokio_postgres::{Client, Config};

use crate::error::{Error, Result};
use crate::pg::catalog::column_list;
use crate::pg::ident::{QualifiedName, quote_ident, quote_literal};
use crate::state;
use ranges::Bounds;

/// Opens `n` source sessions. With `snapshot` (an exported snapshot's name), each is in a
/// REPEATABLE READ transaction that imports it (setup: planning reads under it, then the
/// transactions end); without, they are idle, and each range opens its own transaction on a
/// fresh snapshot (`snapshot::begin_range`).
pub async fn open_sessions(
    config: &Config,
    n: usize,
    snapshot: Option<&str>,
) -> Result<Vec<Client>> {
    let mut sessions = Vec::with_capacity(n);
    for _ in 0..n {
        let client = crate::pg::connect(config, "pgrepart copy source").await?;
        if let Some(name) = snapshot {
            client
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await
                .map_err(|e| Error::db("starting a copy transaction", e))?;
            client
                .batch_execute(&format!("SET TRANSACTION SNAPSHOT {}", quote_literal(name)))
                .await
                .map_err(|e| Error::db("importing the slot's snapshot", e))?;
        }
        sessions.push(client);
    }
    Ok(sessions)
}

/// Ends the sessions' transactions (the imported snapshot is recorded and the ranges planned).
pub async fn end_transactions(sessions: &[Client]) -> Result<()> {
    for s in sessions {
        s.batch_execute("COMMIT")
            .await
            .map_err(|e| Error::db("ending the snapshot's transaction", e))?;
    }
    Ok(())
}

/// min and max of an integer key column, under the session's snapshot; `None` when empty (verify's
/// ranges).
pub async fn key_bounds(
    session: &Client,
    table: &QualifiedName,
    column: &str,
) -> Result<Option<(i64, i64)>> {
    let col = quote_ident(column);
    let sql = format!(
        "SELECT min({col})::bigint, max({col})::bigint FROM {}",
        table.sql()
    );
    let row = session
        .query_one(&sql, &[])
        .await
        .map_err(|e| Error::db("reading the key's bounds", e))?;
    Ok(
        match (row.get::<_, Option<i64>>(0), row.get::<_, Option<i64>>(1)) {
            (Some(lo), Some(hi)) => Some((lo, hi)),
            _ => None,
        },
    )
}

/// The key columns of `info` as the server compares them.
pub fn key_columns(info: &crate::pg::catalog::TableInfo, key: &[String]) -> Vec<ranges::KeyColumn> {
    key.iter()
        .map(|name| {
            let c = info.column(name).expect("key column exists");
            ranges::KeyColumn {
                name_sql: quote_ident(name),
                type_sql: c.type_sql.clone(),
                collation: c.collation.clone(),
            }
        })
        .collect()
}

/// The copy's ranges and how the sample of the key they were cut from falls into them.
#[derive(Debug, Clone, PartialEq)]
pub struct RangePlan {
    pub ranges: Vec<Bounds>,
    /// Sampled keys in each range (one count per range).
    pub sampled: Vec<usize>,
    /// The sampled rows' stored bytes in each range (`pg_column_size` of each row).
    pub sampled_bytes: Vec<u64>,
    /// Cut on rows and bytes together (large rows clustered in the key), not on rows alone
    /// (`ranges::choose_cuts`).
    pub on_bytes: bool,
    /// Whether every key was read (a small table), not a `TABLESAMPLE`.
    pub whole_table: bool,
}

impl RangePlan {
    /// Rows expected in each range (pure): the range's share of the sample times the table's
    /// rows (`estimated_rows`), or the counts themselves when every key was read.
    pub fn rows_per_range(&self, estimated_rows: i64) -> Vec<i64> {
        let total: usize = self.sampled.iter().sum();
        if self.whole_table || total == 0 {
            return self.sampled.iter().map(|&n| n as i64).collect();
        }
        let rows = estimated_rows.max(total as i64) as f64;
        self.sampled
            .iter()
            .map(|&n| (n as f64 * rows / total as f64).round() as i64)
            .collect()
    }

    /// Bytes of row data (`pg_column_size`) expected in each range (pure): the sampled rows'
    /// bytes scaled as [`RangePlan::rows_per_range`] scales their count.
    pub fn bytes_per_range(&self, estimated_rows: i64) -> Vec<i64> {
        let total: usize = self.sampled.iter().sum();
        if self.whole_table || total == 0 {
            return self.sampled_bytes.iter().map(|&b| b as i64).collect();
        }
        let scale = estimated_rows.max(total as i64) as f64 / total as f64;
        self.sampled_bytes
            .iter()
            .map(|&b| (b as f64 * scale).round() as i64)
            .collect()
    }
}

/// Plans the copy's ranges (`count` at most) from a sample of the keys read under the session's
/// snapshot in the server's order (`TABLESAMPLE` on a large table, every key on a small one).
/// Reads only: `plan` calls it too.
pub async fn plan_ranges(
    session: &Client,
    table: &QualifiedName,
    key: &[ranges::KeyColumn],
    estimated_rows: i64,
    count: usize,
) -> Result<Vec<Bounds>> {
    Ok(
        plan_ranges_sampled(session, table, key, estimated_rows, count)
            .await?
            .ranges,
    )
}

/// The key columns of a table aliased `t` as text (`k0`, `k1`, ...: what a bound holds) and in
/// the key's order, qualified (a bare name would be the text output column), so under their
/// types' order and their collations: the order ranges are cut in and `Bounds::where_sql` compares.
fn key_text_and_order(key: &[ranges::KeyColumn]) -> (Vec<String>, Vec<String>) {
    let texts = key
        .iter()
        .enumerate()
        .map(|(i, c)| format!("t.{}::text AS k{i}", c.name_sql))
        .collect();
    let order = key.iter().map(|c| format!("t.{}", c.name_sql)).collect();
    (texts, order)
}

/// [`plan_ranges`], with the sample's share of each range.
pub async fn plan_ranges_sampled(
    session: &Client,
    table: &QualifiedName,
    key: &[ranges::KeyColumn],
    estimated_rows: i64,
    count: usize,
) -> Result<RangePlan> {
    if count <= 1 {
        return Ok(RangePlan {
            ranges: vec![Bounds::ALL],
            sampled: vec![0],
            sampled_bytes: vec![0],
            on_bytes: false,
            whole_table: false,
        });
    }
    let want = ranges::sample_size(count);
    // Ordered by the table's columns (qualified: a bare name would be the text output column),
    // so under their types' order and their collations. With each row's stored size (a whole
    // row's TOASTed values count compressed), so that ranges are cut on rows and bytes together.
    let (texts, order) = key_text_and_order(key);
    let sample = ranges::tablesample(estimated_rows, want).unwrap_or_default();
    let sql = format!(
        "SELECT {}, pg_column_size(t.*)::bigint AS size FROM {} AS t {sample} ORDER BY {}",
        texts.join(", "),
        table.sql(),
        order.join(", ")
    );
    let started = std::time::Instant::now();
    let rows = session
        .query(&sql, &[])
        .await
        .map_err(|e| Error::db("sampling the key to plan the copy's ranges", e))?;
    let keys: Vec<ranges::Bound> = rows
        .iter()
        .map(|r| (0..key.len()).map(|i| r.get::<_, String>(i)).collect())
        .collect();
    let bytes: Vec<u64> = rows
        .iter()
        .map(|r| r.get::<_, Option<i64>>(key.len()).unwrap_or(0).max(0) as u64)
        .collect();
    let (cuts, by_bytes) = ranges::choose_cuts(&keys, &bytes, count);
    let sampled = ranges::sample_shares(&keys, &cuts);
    let sampled_bytes = ranges::sample_bytes(&keys, &bytes, &cuts);
    tracing::info!(
        sampled_keys = keys.len(),
        sampled_bytes = bytes.iter().sum::<u64>(),
        ranges = cuts.len() + 1,
        whole_table = sample.is_empty(),
        on_bytes = by_bytes,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "key ranges planned from a sample of the key"
    );
    Ok(RangePlan {
        ranges: ranges::ranges_from_cuts(cuts),
        sampled,
        sampled_bytes,
        on_bytes: by_bytes,
        whole_table: sample.is_empty(),
    })
}

pub struct CopyJob {
    pub migration_id: i64,
    pub source: QualifiedName,
    pub target: QualifiedName,
    /// Replicated columns (generated columns are computed by the target).
    pub columns: Vec<String>,
    /// The key columns ranges are cut on; unused when there is one range.
    pub key: Vec<ranges::KeyColumn>,
    pub target_config: Config,
    /// The rows per second allowed over all workers (the user's cap, moved by the governor).
    pub limit: Arc<governor::RateLimit>,
    /// `default_toast_compression` for the target sessions (`toast::choose`); `None` leaves it.
    pub toast_compression: Option<&'static str>,
    /// How many workers share the limit.
    pub workers: usize,
    /// `pg_current_snapshot()` of the slot's exported snapshot: every range's fresh snapshot
    /// must see what it counts as committed (`snapshot::begin_range`). `None`: recorded by an
    /// older pgrepart, not checked.
    pub exported: Option<snapshot::PgSnapshot>,
    /// Write transactions pgrepart commits, which the load governor leaves out of the workload.
    pub own_writes: Arc<AtomicU64>,
}

#[derive(Debug, Default)]
pub struct CopyProgress {
    /// Rows of committed ranges.
    pub rows: AtomicU64,
    /// Rows streamed so far, committed or not (for rates and progress bars).
    pub streamed_rows: AtomicU64,
    pub bytes: AtomicU64,
}

async fn wait_while_paused(pause: &mut watch::Receiver<bool>) {
    while *pause.borrow_and_update() {
        if pause.changed().await.is_err() {
            return;
        }
    }
}

/// Copies `pending` ranges (range number, bounds), taking them from the back of the list first,
/// so order it lowest to highest to copy the hottest (highest) keys first. Every finished range is
/// announced on `done`. Stops early when `stop` turns true.
pub async fn run_workers(
    job: Arc<CopyJob>,
    sessions: Vec<Client>,
    pending: Vec<PendingRange>,
    done: mpsc::UnboundedSender<usize>,
    progress: Arc<CopyProgress>,
    stop: watch::Receiver<bool>,
    pause: watch::Receiver<bool>,
) -> Result<()> {
    let queue = Arc::new(Mutex::new(VecDeque::from(pending)));
    let mut workers = tokio::task::JoinSet::new();
    for session in sessions {
        let (job, queue, done, progress, stop) = (
            job.clone(),
            queue.clone(),
            done.clone(),
            progress.clone(),
            stop.clone(),
        );
        let mut pause = pause.clone();
        workers.spawn(async move {
            let mut target = crate::pg::connect(&job.target_config, "pgrepart copy target").await?;
            target
                .batch_execute("SET synchronous_commit = on")
                .await
                .map_err(|e| Error::db("preparing a copy session", e))?;
            toast::apply(&target, job.toast_compression).await?;
            loop {
                // Stopped, or the attempt that started this worker is gone.
                if *stop.borrow() || stop.has_changed().is_err() {
                    return Ok(());
                }
                let next = queue.lock().expect("copy queue lock").pop_back();
                let Some(range) = next else { break };
                let range_no = range.no;
                if range.copied_to.is_some() {
                    tracing::info!(
                        range = range_no,
                        "range partly copied by an earlier attempt: going on from its last piece"
                    );
                }
                let mut from = range.copied_to.clone();
                let mut rows = 0;
                let finished = loop {
                    wait_while_paused(&mut pause).await;
                    let rest = Bounds {
                        lo: from.clone().or_else(|| range.bounds.lo.clone()),
                        hi: range.bounds.hi.clone(),
                    };
                    let end = match piece_rows(job.limit.get(), job.workers) {
                        Some(n) => piece_end(&job, &session, &rest, n).await?,
                        None => None,
                    };
                    let piece = Piece {
                        range_no,
                        bounds: Bounds {
                            lo: rest.lo,
                            hi: end.clone().or(rest.hi),
                        },
                        from: from.clone(),
                        to: end.clone(),
                    };
                    // One short source transaction per piece: the xmin horizon and the table's
                    // ACCESS SHARE lock are held for this piece only (docs/design.md §5a).
                    snapshot::begin_range(&session, job.exported.as_ref()).await?;
                    let copied =
                        copy_piece(&job, &session, &mut target, &piece, &progress, &mut pause)
                            .await?;
                    session
                        .batch_execute("COMMIT")
                        .await
                        .map_err(|e| Error::db("ending a copy transaction", e))?;
                    let Some(n) = copied else {
                        break false;
                    };
                    rows += n;
                    match end {
                        Some(e) => from = Some(e),
                        None => break true,
                    }
                };
                if finished {
                    tracing::info!(range = range_no, rows, "range copied");
                    let _ = done.send(range_no);
                }
            }
            Ok::<(), Error>(())
        });
    }
    let mut first_error = None;
    while let Some(result) = workers.join_next().await {
        let result =
            result.unwrap_or_else(|e| Err(Error::failed(format!("a copy worker crashed: {e}"))));
        if let Err(e) = result
            && first_error.is_none()
        {
            first_error = Some(e);
            workers.abort_all();
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// What one piece of a paced range's copy should take (s): its source snapshot holds the
/// database's xmin horizon, and its target transaction runs, about that long.
pub const PIECE_SECONDS: f64 = 2.0;
/// The fewest rows in a piece: each costs a snapshot, a key lookup and a commit.
pub const MIN_PIECE_ROWS: u64 = 500;

/// A range left to copy: its number, its bounds, and where an earlier attempt's last piece
/// ended (`pgrepart.ranges.copied_to`), if one did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRange {
    pub no: usize,
    pub bounds: Bounds,
    pub copied_to: Option<ranges::Bound>,
}

/// The rows of a range's next piece (pure): under a limit of `limit` rows/s shared by `workers`,
/// what one worker copies in [`PIECE_SECONDS`], at least [`MIN_PIECE_ROWS`]; `None` (the rest of
/// the range at once) without a limit.
pub fn piece_rows(limit: Option<u64>, workers: usize) -> Option<u64> {
    let per_worker = limit? as f64 / workers.max(1) as f64;
    Some(((per_worker * PIECE_SECONDS) as u64).max(MIN_PIECE_ROWS))
}

/// The key where a piece of `rows` rows of `rest` ends (the first key after them, in the key's
/// order under its collations, as the ranges are cut); `None` when no more than that is left,
/// or when the key does not move past `rest`'s start (a key with that many duplicates).
async fn piece_end(
    job: &CopyJob,
    source: &Client,
    rest: &Bounds,
    rows: u64,
) -> Result<Option<ranges::Bound>> {
    let (texts, order) = key_text_and_order(&job.key);
    let filter = rest
        .where_sql(&job.key)
        .map(|w| format!(" WHERE {w}"))
        .unwrap_or_default();
    let sql = format!(
        "SELECT {} FROM {} AS t{filter} ORDER BY {} OFFSET {rows} LIMIT 1",
        texts.join(", "),
        job.source.sql(),
        order.join(", ")
    );
    let row = source
        .query_opt(&sql, &[])
        .await
        .map_err(|e| Error::db("finding where a piece of a range ends", e))?;
    let end: Option<ranges::Bound> =
        row.map(|r| (0..job.key.len()).map(|i| r.get::<_, String>(i)).collect());
    Ok(end.filter(|e| rest.lo.as_ref() != Some(e)))
}

/// One piece of a range: its bounds, where the range's copy stood before it (`copied_to`), and
/// where it ends (`None`: the range's end, which the piece's commit marks done).
struct Piece {
    range_no: usize,
    bounds: Bounds,
    from: Option<ranges::Bound>,
    to: Option<ranges::Bound>,
}

/// Rows between two looks at the pause flag and the rate limit.
const PACE_EVERY: u64 = 256;
/// How often a held worker looks whether the governor has let it go.
const HOLD_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// Copies `piece` in a target transaction that also records it; the rows copied, or `None` when
/// an earlier attempt had copied it already (this copy rolled back).
async fn copy_piece(
    job: &CopyJob,
    source: &Client,
    target: &mut Client,
    piece: &Piece,
    progress: &CopyProgress,
    pause: &mut watch::Receiver<bool>,
) -> Result<Option<u64>> {
    let range_no = piece.range_no;
    let cols = column_list(job.columns.iter().map(String::as_str));
    let filter = piece
        .bounds
        .where_sql(&job.key)
        .map(|w| format!(" WHERE {w}"))
        .unwrap_or_default();
    let out_sql = format!(
        "COPY (SELECT {cols} FROM {}{filter}) TO STDOUT (FORMAT binary)",
        job.source.sql()
    );
    let in_sql = format!(
        "COPY {} ({cols}) FROM STDIN (FORMAT binary)",
        job.target.sql()
    );

    let tx = target
        .transaction()
        .await
        .map_err(|e| Error::db("starting a copy", e))?;
    let sink = tx
        .copy_in::<_, Bytes>(&in_sql)
        .await
        .map_err(|e| Error::db("copying into the new table", e))?;
    let stream = source
        .copy_out(&out_sql)
        .await
        .map_err(|e| Error::db("copying from the source table", e))?;
    futures_util::pin_mut!(sink);
    futures_util::pin_mut!(stream);
    // Binary COPY sends one row per CopyData message (plus a header and a trailer).
    let mut chunks = 0u64;
    let mut pacer = governor::Pacer::default();
    while let Some(chunk) = stream
        .try_next()
        .await
        .map_err(|e| Error::db("copying from the source table", e))?
    {
        progress
            .bytes
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        progress
            .streamed_rows
            .fetch_add(rows_in_message(&chunk), Ordering::Relaxed);
        sink.feed(chunk)
            .await
            .map_err(|e| Error::db("copying into the new table", e))?;
        chunks += 1;
        if chunks == 2 {
            // Tests: hold with a range's copy in flight on both sides.
            crate::fault::pause("copy-range").await;
        }
        if chunks.is_multiple_of(PACE_EVERY) {
            wait_while_paused(pause).await;
            if job.limit.held() {
                // The governor measures the source without the copy (about a second).
                while job.limit.held() {
                    tokio::time::sleep(HOLD_POLL).await;
                }
                pacer = governor::Pacer::default();
            }
            let delay = pacer.delay(
                std::time::Instant::now(),
                PACE_EVERY,
                job.limit.get(),
                job.workers,
            );
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
        }
    }
    let rows = sink.finish().await.map_err(copy_in_error)?;
    let mark = state::RangeMark {
        id: job.migration_id,
        range_no,
        from: piece.from.as_ref(),
        to: piece.to.as_ref(),
        rows,
    };
    if !state::mark_range_copied(&tx, &mark).await? {
        // Copied by an earlier attempt whose commit landed after this one read the ranges: its
        // rows are there already, and this copy would double them.
        tx.rollback()
            .await
            .map_err(|e| Error::db("rolling back a copy of a finished range", e))?;
        tracing::info!(
            range = range_no,
            "range already copied by an earlier attempt; this copy rolled back"
        );
        return Ok(None);
    }
    tx.commit()
        .await
        .map_err(|e| Error::db("committing a copied range", e))?;
    job.own_writes.fetch_add(1, Ordering::Relaxed);
    progress.rows.fetch_add(rows, Ordering::Relaxed);
    Ok(Some(rows))
}

/// The signature that opens a binary COPY stream (then 4 bytes of flags, 4 of header extension).
const BINARY_SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// Rows in one CopyData message of a binary `COPY ... TO STDOUT` (pure): the server sends a row
/// per message, the header with the first row (or alone, or with the trailer when there is no
/// row), and the trailer (a field count of -1) in a message of its own.
fn rows_in_message(message: &[u8]) -> u64 {
    let body = match message.strip_prefix(BINARY_SIGNATURE) {
        // Flags and the header extension's length (0 from the server; skipped if not).
        Some(rest) if rest.len() >= 8 => {
            let ext = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
            rest.get(8 + ext..).unwrap_or_default()
        }
        Some(_) => return 0,
        None => message,
    };
    match body {
        [] | [0xff, 0xff] => 0,
        _ => 1,
    }
}

fn copy_in_error(e: tokio_postgres::Error) -> Error {
    if e.as_db_error()
        .is_some_and(|d| d.message().contains("no partition"))
    {
        return Error::failed("a row of the source has a partition-key value that no partition accepts")
            .with_hint("add a partition for it (or a DEFAULT partition) to the new table, then run the same command again");
    }
    Error::db("copying into the new table", e)
}

#[cfg(test)]
mod tests {
    use super::{BINARY_SIGNATURE, Bounds, MIN_PIECE_ROWS, RangePlan, piece_rows, rows_in_message};

    #[test]
    fn a_paced_copy_goes_in_pieces_of_about_two_seconds_of_a_workers_share() {
        // No limit: the whole range at once.
        assert_eq!(piece_rows(None, 2), None);
        assert_eq!(piece_rows(Some(20_000), 2), Some(20_000));
        assert_eq!(piece_rows(Some(20_000), 4), Some(10_000));
        assert_eq!(piece_rows(Some(20_000), 0), Some(40_000));
        // The governor's floor: never fewer rows than a piece's own costs are worth.
        assert_eq!(piece_rows(Some(500), 2), Some(MIN_PIECE_ROWS));
    }

    #[test]
    fn rows_per_range_scale_the_sample_to_the_table() {
        let plan = |sampled: Vec<usize>, whole_table| RangePlan {
            ranges: vec![Bounds::ALL; sampled.len()],
            sampled_bytes: vec![0; sampled.len()],
            on_bytes: false,
            sampled,
            whole_table,
        };
        // A sample of 2,000 keys of a table of about 1,000,000 rows.
        assert_eq!(
            plan(vec![500, 700, 800], false).rows_per_range(1_000_000),
            vec![250_000, 350_000, 400_000]
        );
        // Every key read: the counts are the rows.
        assert_eq!(plan(vec![3, 4], true).rows_per_range(1_000_000), vec![3, 4]);
        // An estimate below the sample (statistics not gathered yet): at least the sample.
        assert_eq!(plan(vec![10, 30], false).rows_per_range(-1), vec![10, 30]);
        assert_eq!(plan(vec![0], false).rows_per_range(500), vec![0]);
    }

    #[test]
    fn bytes_per_range_scale_the_sampled_bytes_like_the_rows() {
        let plan = RangePlan {
            ranges: vec![Bounds::ALL; 2],
            sampled: vec![1_000, 1_000],
            sampled_bytes: vec![100_000, 4_000_000],
            on_bytes: true,
            whole_table: false,
        };
        // 2,000 sampled rows of 1,000,000: each sampled byte stands for 500.
        assert_eq!(
            plan.bytes_per_range(1_000_000),
            vec![50_000_000, 2_000_000_000]
        );
        let whole = RangePlan {
            whole_table: true,
            ..plan
        };
        assert_eq!(whole.bytes_per_range(1_000_000), vec![100_000, 4_000_000]);
    }

    fn header() -> Vec<u8> {
        let mut h = BINARY_SIGNATURE.to_vec();
        h.extend_from_slice(&0u32.to_be_bytes()); // flags
        h.extend_from_slice(&0u32.to_be_bytes()); // header extension length
        h
    }

    /// A row of two fields: 8-byte bigint 7, then NULL.
    fn row() -> Vec<u8> {
        let mut r = 2i16.to_be_bytes().to_vec();
        r.extend_from_slice(&8i32.to_be_bytes());
        r.extend_from_slice(&7i64.to_be_bytes());
        r.extend_from_slice(&(-1i32).to_be_bytes());
        r
    }

    #[test]
    fn a_binary_copy_message_counts_its_row_but_not_the_header_or_trailer() {
        let trailer = (-1i16).to_be_bytes().to_vec();
        assert_eq!(rows_in_message(&row()), 1);
        assert_eq!(rows_in_message(&[header(), row()].concat()), 1);
        assert_eq!(rows_in_message(&header()), 0);
        assert_eq!(rows_in_message(&trailer), 0);
        // No rows at all: the header and the trailer together.
        assert_eq!(rows_in_message(&[header(), trailer.clone()].concat()), 0);
        // A header extension is skipped.
        let mut extended = BINARY_SIGNATURE.to_vec();
        extended.extend_from_slice(&0u32.to_be_bytes());
        extended.extend_from_slice(&3u32.to_be_bytes());
        extended.extend_from_slice(b"abc");
        assert_eq!(rows_in_message(&[extended.clone(), row()].concat()), 1);
        assert_eq!(rows_in_message(&extended), 0);
        // A header cut short (the server never sends one) counts nothing.
        assert_eq!(rows_in_message(BINARY_SIGNATURE), 0);
    }
}
