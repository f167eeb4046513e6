//! `verify`: a lock-free, row-level comparison of the source table and the new table.
//!
//! ```text
//! 1. applier holds before its next transaction (nothing is applied meanwhile)
//! 2. source: CREATE_REPLICATION_SLOT tmp TEMPORARY ... EXPORT_SNAPSHOT  ─► consistent point C, snapshot S
//! 3. applier applies every transaction committed before C, holds there  ─► target == source as of S
//! 4. per key range, in parallel: count + sum of row hashes, source under S ∥ target at rest
//!    differing ranges ─► (key, row hash) pairs ─► keys missing / extra / different  [--repair: recopy]
//! 5. hold lifted; the temporary slot goes with its connection
//! ```
//! The exported snapshot holds exactly the transactions whose commit record lies before C
//! (proto-notes/verify-boundary.md), and the applier's gate is the same: Begin's final_lsn < C.
//! The hold is a `Hold` implementation: through the state table for a separate `run` process
//! (with a lease, so a vanished verify never holds the migration), or direct for `run`'s own check.

pub mod compare;
pub mod gate;
pub mod hold;
pub mod report;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, TryStreamExt};
use tokio_postgres::{Client, Config};

use crate::copy::ranges::KeyRange;
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::pg::ident::{QualifiedName, quote_literal};
use crate::replication::ReplicationClient;
use compare::{Columns, Difference, Key, Summary};
pub use hold::HoldControl;
pub use report::Report;

/// `--verify` of `run`, and the scope of `pgrepart verify`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Off,
    Full,
    /// About this percentage of the key ranges, picked at random.
    Sample(f64),
}

impl Mode {
    /// `off`, `full`, or `sample PCT` (also `sample:PCT`, `sample=PCT`; PCT in (0, 100]).
    pub fn parse(text: &str) -> std::result::Result<Mode, String> {
        let t = text.trim().to_ascii_lowercase();
        match t.as_str() {
            "off" => return Ok(Mode::Off),
            "full" => return Ok(Mode::Full),
            _ => {}
        }
        let pct = t
            .strip_prefix("sample")
            .map(|r| r.trim_start_matches([' ', ':', '=']).trim_end_matches('%'))
            .ok_or_else(|| format!("{text:?}: expected off, full or \"sample PCT\""))?;
        match pct.parse::<f64>() {
            Ok(p) if p > 0.0 && p <= 100.0 => Ok(Mode::Sample(p)),
            _ => Err(format!(
                "{text:?}: the sample percentage must be a number above 0 and at most 100"
            )),
        }
    }

    pub fn describe(self) -> String {
        match self {
            Mode::Off => "off".into(),
            Mode::Full => "full".into(),
            Mode::Sample(p) => format!("sample {p}%"),
        }
    }
}

/// What to compare, and where.
#[derive(Debug, Clone)]
pub struct Plan {
    pub source: Config,
    pub source_table: QualifiedName,
    /// The database holding the new table (today the source's; another one with `--target`).
    pub target: Config,
    pub target_table: QualifiedName,
    pub columns: Columns,
    /// Sessions per side.
    pub jobs: usize,
    pub mode: Mode,
    pub repair: bool,
    /// At most this many of the source's rows compared per second (`None`: as fast as the
    /// sessions go). The check before the cutover follows the pace the copy was held at
    /// (`gate::check_pace`).
    pub pace: Option<u64>,
}

/// A key range's rows when the comparison is paced (else [`RANGE_ROWS`]): a range's two
/// queries run at full speed, so a paced comparison is made of many short ones.
pub const PACED_RANGE_ROWS: i64 = 20_000;
/// A key range's rows, about, for an unpaced comparison.
pub const RANGE_ROWS: i64 = 100_000;

/// At most this many differing keys are listed (all are counted, and repaired).
pub const MAX_LISTED: usize = 1000;

/// Runs the comparison with the applier held at a consistent point; the hold is always lifted.
pub async fn verify(plan: &Plan, hold: &mut impl HoldControl) -> Result<Report> {
    let started = Instant::now();
    // Step 1: stop applying before the next transaction, so that the consistent point taken next
    // is ahead of everything applied.
    hold.hold(Lsn::ZERO).await?;
    let result = verify_held(plan, hold, started).await;
    let released = hold.release().await;
    let report = result?;
    released?;
    Ok(report)
}

async fn verify_held(plan: &Plan, hold: &mut impl HoldControl, started: Instant) -> Result<Report> {
    let mut repl = ReplicationClient::connect(&plan.source, "pgrepart verify")
        .await
        .map_err(|e| Error::replication("opening a replication connection for verify", e))?;
    let slot_name = format!(
        "pgrepart_verify_{}_{}",
        std::process::id(),
        started.elapsed().as_nanos() % 1_000_000
    );
    let slot = repl
        .create_temporary_logical_slot_exported(&slot_name)
        .await
        .map_err(|e| Error::replication("creating verify's temporary slot", e))?;
    tracing::info!(consistent_point = %slot.consistent_point, "verify: consistent point taken");
    // The snapshot lives until the next command on `repl`: import it before anything else.
    let sources = open_sessions(&plan.source, plan.jobs, Some(&slot.snapshot_name)).await?;
    // Step 3: the target catches up to exactly the snapshot.
    hold.hold(slot.consistent_point).await?;
    let targets = open_sessions(&plan.target, plan.jobs, None).await?;
    // Tests: hold with every verify session open, the applier held.
    crate::fault::pause("verify-sessions").await;
    let by_value = hashes_by_value(&sources[0], &plan.columns).await
        && hashes_by_value(&targets[0], &plan.columns).await;
    tracing::info!(
        by_value,
        "verify: rows are hashed {}",
        if by_value {
            "by value (each type's hash function)"
        } else {
            "by their text (a column's type has no extended hash function)"
        }
    );
    let plan = &Plan {
        columns: Columns {
            by_value,
            ..plan.columns.clone()
        },
        ..plan.clone()
    };
    let mut report = compare_all(plan, &sources, &targets).await?;
    report.consistent_point = slot.consistent_point;
    if plan.repair && report.differences_total > 0 {
        repair(plan, &sources[0], &targets[0], &mut report).await?;
    }
    // A hold lost meanwhile (lease ran out, run restarted) makes the comparison meaningless.
    hold.check_still_held(slot.consistent_point).await?;
    for s in sources.iter().chain(&targets) {
        let _ = s.batch_execute("COMMIT").await;
    }
    drop(repl);
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Whether every compared column's type has an extended hash function on this side: the probe
/// runs in a savepoint of the session's transaction, which its error would otherwise end.
async fn hashes_by_value(c: &Client, cols: &Columns) -> bool {
    if c.batch_execute("SAVEPOINT pgrepart_hash_probe")
        .await
        .is_err()
    {
        return false;
    }
    let ok = c.simple_query(&cols.by_value_probe_sql()).await.is_ok();
    let end = if ok {
        "RELEASE SAVEPOINT pgrepart_hash_probe"
    } else {
        "ROLLBACK TO SAVEPOINT pgrepart_hash_probe"
    };
    c.batch_execute(end).await.is_ok() && ok
}

async fn open_sessions(config: &Config, n: usize, snapshot: Option<&str>) -> Result<Vec<Client>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        let c = crate::pg::connect(config, "pgrepart verify").await?;
        let import = snapshot
            .map(|s| format!("; SET TRANSACTION SNAPSHOT {}", quote_literal(s)))
            .unwrap_or_default();
        c.batch_execute(&format!(
            "{}; BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY{import}",
            compare::PIN_SETTINGS
        ))
        .await
        .map_err(|e| Error::db("opening a verify session", e))?;
        out.push(c);
    }
    Ok(out)
}

async fn bounds(c: &Client, cols: &Columns, table: &QualifiedName) -> Result<Option<(i64, i64)>> {
    crate::copy::key_bounds(c, table, &cols.columns[cols.key[0]].0).await
}

async fn compare_all(plan: &Plan, sources: &[Client], targets: &[Client]) -> Result<Report> {
    let cols = &plan.columns;
    let ranges = if cols.int_key {
        let (s, t) = tokio::try_join!(
            bounds(&sources[0], cols, &plan.source_table),
            bounds(&targets[0], cols, &plan.target_table)
        )?;
        let per_range = if plan.pace.is_some() {
            PACED_RANGE_ROWS
        } else {
            RANGE_ROWS
        };
        let count =
            (plan.jobs * 4).max(s.map_or(0, |(lo, hi)| ((hi - lo) / per_range) as usize) + 1);
        compare::plan([s, t], count.min(4096))
    } else {
        vec![KeyRange::ALL]
    };
    let chosen: Vec<usize> = match plan.mode {
        Mode::Sample(p) => compare::sample(ranges.len(), p, seed()),
        _ => (0..ranges.len()).collect(),
    };
    let queue = Arc::new(Mutex::new(
        chosen.iter().map(|&i| ranges[i]).collect::<Vec<_>>(),
    ));
    let mut report = Report {
        mode: plan.mode,
        ranges_total: ranges.len(),
        ranges_compared: chosen.len(),
        ..Report::default()
    };
    let sessions = sources.len().min(targets.len());
    let workers = sources.iter().zip(targets).map(|(s, t)| {
        let queue = queue.clone();
        async move {
            let mut rows = 0i64;
            let mut differing = Vec::new();
            let mut pacer = crate::copy::governor::Pacer::default();
            loop {
                let next = queue.lock().expect("verify queue").pop();
                let Some(range) = next else { break };
                let (a, b) = tokio::try_join!(
                    summary(s, cols, &plan.source_table, &range),
                    summary(t, cols, &plan.target_table, &range)
                )?;
                rows += a.rows;
                if a != b {
                    differing.push(range);
                }
                // Pacing, not waiting for anything: the next range starts when the pace allows.
                let wait = pacer.delay(Instant::now(), a.rows.max(0) as u64, plan.pace, sessions);
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
            Ok::<_, Error>((rows, differing))
        }
    });
    let mut differing = Vec::new();
    for r in futures_util::future::join_all(workers).await {
        let (rows, d) = r?;
        report.rows_compared += rows;
        differing.extend(d);
    }
    differing.sort_by_key(|r: &KeyRange| r.lo);
    report.ranges_differing = differing.len();
    for range in differing {
        let (a, b) = tokio::try_join!(
            keyed_rows(&sources[0], cols.rows_sql(&plan.source_table, &range)),
            keyed_rows(&targets[0], cols.rows_sql(&plan.target_table, &range))
        )?;
        report.add(compare::diff_rows(&a, &b));
    }
    Ok(report)
}

fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id())
}

async fn summary(
    c: &Client,
    cols: &Columns,
    table: &QualifiedName,
    r: &KeyRange,
) -> Result<Summary> {
    let row = c
        .query_one(&cols.summary_sql(table, r), &[])
        .await
        .map_err(|e| Error::db(format!("comparing {table}"), e))?;
    Ok(Summary {
        rows: row.get(0),
        hash_sum: row.get(1),
    })
}

async fn keyed_rows(c: &Client, sql: String) -> Result<Vec<(Key, i64)>> {
    let rows = c
        .query(&sql, &[])
        .await
        .map_err(|e| Error::db("reading the rows of a differing range", e))?;
    Ok(rows
        .iter()
        .map(|r| {
            let n = r.len() - 1;
            let key: Key = (0..n).map(|i| r.get::<_, String>(i)).collect();
            (key, r.get::<_, i64>(n))
        })
        .collect())
}

/// Copies the differing rows again from the snapshot, in one target transaction, while the applier
/// still holds (later changes then apply on top of them), and compares those keys again.
async fn repair(plan: &Plan, source: &Client, target: &Client, report: &mut Report) -> Result<()> {
    let cols = &plan.columns;
    let keys: Vec<Key> = report.all_keys.iter().cloned().collect();
    target
        .batch_execute("COMMIT; BEGIN")
        .await
        .map_err(|e| Error::db("starting the repair", e))?;
    let mut repaired = 0u64;
    for chunk in keys.chunks(500) {
        target
            .batch_execute(&cols.delete_sql(&plan.target_table, chunk))
            .await
            .map_err(|e| Error::db("removing differing rows from the target", e))?;
        let sink = target
            .copy_in::<_, Bytes>(&cols.copy_in_sql(&plan.target_table))
            .await
            .map_err(|e| Error::db("copying rows into the target", e))?;
        let stream = source
            .copy_out(&cols.copy_out_sql(&plan.source_table, chunk))
            .await
            .map_err(|e| Error::db("copying rows from the source snapshot", e))?;
        futures_util::pin_mut!(sink);
        futures_util::pin_mut!(stream);
        while let Some(chunk) = stream
            .try_next()
            .await
            .map_err(|e| Error::db("copying rows from the source snapshot", e))?
        {
            sink.feed(chunk)
                .await
                .map_err(|e| Error::db("copying rows into the target", e))?;
        }
        repaired += sink
            .finish()
            .await
            .map_err(|e| Error::db("copying rows into the target", e))?;
    }
    target
        .batch_execute("COMMIT; BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(|e| Error::db("committing the repair", e))?;
    let mut left: Vec<Difference> = Vec::new();
    for chunk in keys.chunks(500) {
        let (a, b) = tokio::try_join!(
            keyed_rows(source, cols.keyed_rows_sql(&plan.source_table, chunk)),
            keyed_rows(target, cols.keyed_rows_sql(&plan.target_table, chunk))
        )?;
        left.extend(compare::diff_rows(&a, &b));
    }
    tracing::info!(
        keys = keys.len(),
        rows_copied = repaired,
        left = left.len(),
        "verify: repaired"
    );
    report.repaired = Some(keys.len() - left.len().min(keys.len()));
    report.left_after_repair = Some(left.len());
    Ok(())
}

/// Polls `check` every `every` until it is true or `deadline` passes.
pub(crate) async fn wait_until<F, Fut>(
    deadline: Duration,
    every: Duration,
    mut check: F,
) -> Result<bool>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let end = Instant::now() + deadline;
    loop {
        if check().await? {
            return Ok(true);
        }
        if Instant::now() >= end {
            return Ok(false);
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_modes_parse() {
        assert_eq!(Mode::parse("off"), Ok(Mode::Off));
        assert_eq!(Mode::parse("FULL"), Ok(Mode::Full));
        assert_eq!(Mode::parse("sample 10"), Ok(Mode::Sample(10.0)));
        assert_eq!(Mode::parse("sample:2.5"), Ok(Mode::Sample(2.5)));
        assert_eq!(Mode::parse("sample=50%"), Ok(Mode::Sample(50.0)));
        assert!(Mode::parse("sample 0").is_err());
        assert!(Mode::parse("sample 101").is_err());
        assert!(Mode::parse("sometimes").is_err());
    }
}
