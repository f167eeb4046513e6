//! `pgrepart status`: what a migration is doing, read from the state table and the server's own
//! views, so no running process is needed.

use serde::Serialize;
use tokio_postgres::Client;

use crate::cli::StatusArgs;
use crate::error::{Error, Result};
use crate::state::{self, Migration};

/// The JSON document `status --json` prints. Field names are stable (documented in README).
#[derive(Debug, Serialize)]
pub struct Report {
    pub migration_id: i64,
    pub table: String,
    pub target: String,
    pub phase: &'static str,
    pub seconds_in_phase: f64,
    /// Rows of key ranges whose copy has committed.
    pub rows_copied: i64,
    /// Rows sent so far, including ranges still in flight (what progress and ETA are based on).
    pub rows_streamed: i64,
    pub rows_total_estimate: i64,
    pub ranges_done: i64,
    pub ranges_total: i64,
    pub applied_changes: i64,
    /// WAL between the server's current position and the slot's confirmed position.
    pub lag_bytes: Option<i64>,
    /// WAL the slot keeps on the source's disk.
    pub wal_retained_bytes: Option<i64>,
    pub wal_status: Option<String>,
    /// What the slot may still take before `max_slot_wal_keep_size` invalidates it (null: unbounded).
    pub safe_wal_size: Option<i64>,
    /// Whether a `pgrepart run` is attached to the slot now.
    pub running: bool,
    /// "pid N on host" of the `run` working on it, if any.
    pub runner: Option<String>,
    pub paused: bool,
    /// The running `run` has stopped applying (the pause has taken effect).
    pub pause_in_effect: bool,
    /// Age of the oldest change not yet applied (0 when caught up), as measured by `run`.
    pub lag_seconds: Option<f64>,
    /// Age of the oldest source snapshot the copy holds now (each range is read on a snapshot of
    /// its own, so about one range's copy time); null when the copy holds none.
    pub copy_snapshot_age_seconds: Option<f64>,
    pub copy_rows_per_s: Option<f64>,
    /// The copy's rate limit now (rows/s): the load governor's, or `--max-copy-rate`; null: none.
    pub copy_rate_limit: Option<i64>,
    pub apply_changes_per_s: Option<f64>,
    /// The apply's pace now (changes/s): the load governor's, or `--max-apply-rate`; null: none.
    pub apply_rate_limit: Option<i64>,
    /// Why the load governor holds the pace it does ("full speed: no workload", "paced: latency
    /// 1.9 ms over 1.7 ms"); null when no run is attached or it has no governor.
    pub governor: Option<String>,
    pub bytes_copied: i64,
    pub bytes_total_estimate: i64,
    /// Seconds until the copy is done at the current rate (0 once copied).
    pub eta_seconds: Option<f64>,
    /// Manual mode, caught up and waiting for `pgrepart cutover`.
    pub cutover_waiting: bool,
    /// While the slot is being created: the transactions it waits for ("pid 123 (app, transaction
    /// open 45 s, last query started 40 s ago, idle in transaction)").
    pub waiting_for: Vec<String>,
    pub cutover_mode: String,
    pub cutover_requested: bool,
    pub last_error: Option<String>,
    pub slot_name: String,
    /// Cross-database: the target side of the cutover has committed but the source's rename has
    /// not (the `run` stopped in between); running the same `run` again finishes it.
    pub target_committed: bool,
    /// Materialized views over the table that the swap left to rebuild over the new one (the `run`
    /// stopped before, or their rebuild failed); running the same `run` again does them.
    pub pending_matviews: Vec<String>,
    /// Steps the swap left for after its commit and not done yet (validating the foreign keys
    /// it carried, setting them on the partitioned table), as `constraint: step`; running the same
    /// `run` again does them. Until then the partitions enforce the keys for every new row.
    pub pending_post_swap_steps: Vec<String>,
    /// The new table's DEFAULT partition (null without one) and the statistics' estimate of the
    /// rows in it: rows no other partition takes, a hint that partitions are missing.
    pub default_partition: Option<String>,
    pub default_partition_rows_estimate: Option<i64>,
    /// The new table's primary key is left for after the copy (`--primary-key`): no change is
    /// applied before it is built.
    pub primary_key_pending: bool,
    /// Why the migration can no longer resume, when its tables are no longer the ones it
    /// started on (the source table dropped and created again, taken out of the publication, the
    /// new table replaced); null otherwise. The fix is `pgrepart abort`, then `pgrepart run`.
    pub identity_problem: Option<String>,
    /// The rollback window (`run --rollback-window`): null without one, "open" while the old
    /// table follows the new one, "closed" once it has ended (or the migration was reverted).
    pub window_state: Option<String>,
    /// Seconds until the open window ends (`pgrepart finish` ends it sooner).
    pub window_seconds_left: Option<f64>,
    /// The reverse stream (new table back to the old one) while the window is open: WAL not
    /// yet confirmed applied, the age of the oldest change not applied, changes applied, rate.
    pub reverse_lag_bytes: Option<i64>,
    pub reverse_lag_seconds: Option<f64>,
    pub reverse_applied_changes: i64,
    pub reverse_apply_changes_per_s: Option<f64>,
    /// Keys of the old table (as `id=5`) that the new table holds more than one row of: the old
    /// table keeps the newest; `pgrepart revert` refuses while there are any (`--force` keeps
    /// the newest).
    pub conflicts: Vec<String>,
    pub revert_requested: bool,
    pub finish_requested: bool,
    /// When the last revert committed ("2026-01-02 03:04:05 UTC"), null if never. While the
    /// phase is not `done`, the partitioned table follows the original one again, and only
    /// `pgrepart cutover` cuts over again (`cutover_waiting`).
    pub reverted_at: Option<String>,
    /// What to do next after a revert, while the migration streams forward again.
    pub note: Option<String>,
}

/// `client` is the source database (the slot and its walsender); `m` was read from `target`;
/// `cross`: they are two databases (`--target`), the reverse slot of a window on the target.
pub async fn report(
    client: &Client,
    target: &Client,
    m: &Migration,
    cross: bool,
) -> Result<Report> {
    // The new table, under its final name once the swap is done.
    let new_table = if m.phase == state::Phase::Done {
        m.final_name()
    } else {
        m.target.clone()
    };
    let pending_post_swap_steps = crate::dependents::post_swap::pending(target, m.id)
        .await?
        .into_iter()
        .map(|(_, step)| format!("{}: {}", step.constraint, step.what))
        .collect();
    let (default_partition, default_partition_rows_estimate) =
        match crate::pg::catalog::default_partition_estimate(target, &new_table).await? {
            Some((p, rows)) => (Some(p), Some(rows)),
            None => (None, None),
        };
    let slot = client
        .query_opt(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, \
                    pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, wal_status, active, \
                    safe_wal_size, confirmed_flush_lsn IS NULL \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&m.slot_name],
        )
        .await
        .map_err(|e| Error::db("reading the replication slot", e))?;
    let (lag, retained, wal_status, running, safe, creating) = match slot {
        Some(r) => (
            r.get(0),
            r.get(1),
            r.get(2),
            r.get(3),
            r.get(4),
            r.get::<_, bool>(5),
        ),
        None if m.phase == state::Phase::Done => (Some(0), Some(0), None, false, None, false),
        None => (None, None, None, false, None, false),
    };
    let identity_problem = identity_problem(client, target, m).await?;
    // A run whose stream is parked holds no slot, but it holds the migration's lock.
    let running = running || state::run_attached(target, m.id).await?;
    let primary_key_pending = m.target_created
        && m.phase == state::Phase::Copying
        && crate::pg::catalog::lacks_primary_key(target, &m.target).await?;
    // A slot being created waits for every transaction running when it started: name them.
    let waiting_for = if creating {
        oldest_transactions(client).await?
    } else {
        Vec::new()
    };
    let live = |v: Option<f64>| if running { v } else { None };
    let copy_snapshot_age_seconds = if m.phase == state::Phase::Copying && running {
        copy_snapshot_age(client).await?
    } else {
        None
    };
    let window_open = m.window.is_open() && m.phase == state::Phase::Done;
    let reverse_lag_bytes = if window_open {
        (if cross { target } else { client })
            .query_opt(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint \
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&crate::rollback::reverse_name(&m.slot_name)],
            )
            .await
            .map_err(|e| Error::db("reading the reverse replication slot", e))?
            .and_then(|r| r.get(0))
    } else {
        None
    };
    let conflicts = if window_open && cross {
        crate::rollback::cross::open_conflicts(target, client, m).await?
    } else if window_open {
        crate::rollback::conflicts::open(client, m).await?
    } else {
        Vec::new()
    };
    let eta = match m.phase {
        state::Phase::Copying => live(m.copy_rows_per_s).and_then(|r| {
            crate::monitor::copy_eta_seconds(
                m.rows_streamed.max(m.rows_copied).max(0) as u64,
                m.rows_estimate.max(0) as u64,
                r,
                m.copy_rate_limit.map(|l| l.max(0) as u64),
            )
        }),
        _ => Some(0.0),
    };
    Ok(Report {
        migration_id: m.id,
        table: m.source.to_string(),
        target: m.target.to_string(),
        phase: m.phase.as_str(),
        seconds_in_phase: m.seconds_in_phase,
        rows_copied: m.rows_copied,
        rows_streamed: m.rows_streamed.max(m.rows_copied),
        rows_total_estimate: m.rows_estimate,
        ranges_done: m.ranges_done,
        ranges_total: m.ranges_total,
        applied_changes: m.applied_changes,
        lag_bytes: lag,
        wal_retained_bytes: retained,
        wal_status,
        safe_wal_size: safe,
        running,
        runner: if running { m.runner.clone() } else { None },
        paused: m.paused,
        pause_in_effect: running && m.paused && m.pause_in_effect,
        lag_seconds: live(m.lag_seconds),
        copy_snapshot_age_seconds,
        copy_rows_per_s: live(m.copy_rows_per_s),
        copy_rate_limit: if running && m.phase == state::Phase::Copying {
            m.copy_rate_limit
        } else {
            None
        },
        apply_changes_per_s: live(m.apply_changes_per_s),
        apply_rate_limit: if running { m.apply_rate_limit } else { None },
        governor: if running && m.phase != state::Phase::Done {
            m.governor_reason.clone()
        } else {
            None
        },
        bytes_copied: m.copy_bytes,
        bytes_total_estimate: m.total_bytes_estimate,
        eta_seconds: eta,
        waiting_for,
        primary_key_pending,
        identity_problem,
        cutover_waiting: (m.cutover_mode == "manual" || m.reverted_at.is_some())
            && !m.cutover_requested
            && m.phase == state::Phase::Streaming,
        cutover_mode: m.cutover_mode.clone(),
        cutover_requested: m.cutover_requested,
        last_error: m.last_error.clone(),
        slot_name: m.slot_name.clone(),
        target_committed: m.target_committed_fence.is_some() && m.phase != state::Phase::Done,
        pending_matviews: m
            .pending_matviews
            .iter()
            .map(|mv| mv.matview().to_string())
            .collect(),
        pending_post_swap_steps,
        default_partition,
        default_partition_rows_estimate,
        window_state: m.window.state.clone(),
        window_seconds_left: window_open.then(|| m.window.seconds_left.unwrap_or(0.0).max(0.0)),
        reverse_lag_bytes,
        reverse_lag_seconds: if window_open {
            live(m.window.reverse_lag_seconds)
        } else {
            None
        },
        reverse_applied_changes: m.window.reverse_applied_changes,
        reverse_apply_changes_per_s: if window_open {
            live(m.window.reverse_apply_per_s)
        } else {
            None
        },
        conflicts,
        revert_requested: m.window.revert_requested,
        finish_requested: m.window.finish_requested,
        reverted_at: m.reverted_at.clone(),
        note: m
            .reverted_at
            .as_deref()
            .filter(|_| !matches!(m.phase, state::Phase::Done | state::Phase::Reverted))
            .map(|at| crate::rollback::again::status_note(at, m.window.asked_s.is_some())),
    })
}

/// Seconds since the oldest transaction of the copy's source sessions that holds a snapshot began
/// (the xmin horizon it holds back), if one does. The sessions are known by their
/// `application_name` (after the user's own, see `pg::session_name`); two migrations copying in
/// one database at once are not told apart.
async fn copy_snapshot_age(client: &Client) -> Result<Option<f64>> {
    let row = client
        .query_one(
            "SELECT extract(epoch FROM now() - min(xact_start))::float8 FROM pg_stat_activity \
             WHERE datname = current_database() AND (application_name = 'pgrepart copy source' \
                    OR application_name LIKE '%: pgrepart copy source') \
               AND backend_xmin IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| Error::db("reading the copy's snapshots", e))?;
    Ok(row.get(0))
}

async fn oldest_transactions(client: &Client) -> Result<Vec<String>> {
    Ok(crate::pg::catalog::open_transactions(client)
        .await?
        .iter()
        .map(ToString::to_string)
        .collect())
}

/// See `Report::identity_problem`: only for a migration not done, whose slot is still there.
async fn identity_problem(
    source: &Client,
    target: &Client,
    m: &Migration,
) -> Result<Option<String>> {
    // Before its ranges are recorded a migration is still setting up its publication and slot
    // (or a rerun sets them up again): nothing to hold them against yet.
    if matches!(m.phase, state::Phase::Done | state::Phase::Reverted) || m.ranges_total == 0 {
        return Ok(None);
    }
    match crate::pg::catalog::table_info(source, &m.source).await? {
        None => Ok(Some(format!("{} no longer exists on the source", m.source))),
        Some(info) => crate::migration::resume::identity_problem(source, target, m, &info).await,
    }
}

fn human(r: &Report) -> String {
    let opt = |v: Option<i64>| v.map_or("-".to_string(), bytes);
    let rate =
        |v: Option<f64>, unit: &str| v.map(|v| format!(", {v:.0} {unit}/s")).unwrap_or_default();
    let mut s = format!(
        "migration {}  {} -> {}\n",
        r.migration_id, r.table, r.target
    );
    if let Some(problem) = &r.identity_problem {
        s += &format!(
            "  CANNOT RESUME    {problem}: run `pgrepart abort`, then `pgrepart run` again\n"
        );
    }
    let running = match &r.runner {
        Some(who) => format!(", running ({who})"),
        None if r.running => ", running".to_string(),
        None => String::new(),
    };
    s += &format!(
        "  phase            {}{} for {}{}\n",
        r.phase,
        if r.paused { " (PAUSED)" } else { "" },
        duration(r.seconds_in_phase),
        running
    );
    s += &format!(
        "  copy             {} of ~{} rows, {}/{} ranges{}{}{}\n",
        r.rows_streamed,
        r.rows_total_estimate,
        r.ranges_done,
        r.ranges_total,
        rate(r.copy_rows_per_s, "rows"),
        r.copy_rate_limit
            .map(|l| format!(" (limited to {l} rows/s)"))
            .unwrap_or_default(),
        match (r.phase, r.eta_seconds) {
            ("copying", Some(e)) => format!(", ETA {}", duration(e)),
            _ => String::new(),
        }
    );
    s += &format!(
        "  applied changes  {}{}{}\n",
        r.applied_changes,
        rate(r.apply_changes_per_s, "changes"),
        r.apply_rate_limit
            .map(|l| match l {
                0 => " (stream parked: the source is busy)".to_string(),
                l => format!(" (paced to {l} changes/s)"),
            })
            .unwrap_or_default()
    );
    if let Some(g) = &r.governor {
        s += &format!("  load governor    {g}\n");
    }
    s += &format!(
        "  lag              {}{}\n",
        opt(r.lag_bytes),
        r.lag_seconds
            .map(|l| format!(", {l:.1} s"))
            .unwrap_or_default()
            + &r.copy_snapshot_age_seconds
                .map(|a| format!(" (copy snapshot {a:.1} s old)"))
                .unwrap_or_default()
    );
    s += &format!(
        "  WAL retained     {}{}{}\n",
        opt(r.wal_retained_bytes),
        r.wal_status
            .as_deref()
            .map(|w| format!(" ({w})"))
            .unwrap_or_default(),
        r.safe_wal_size
            .map(|b| format!(", {} left before the slot is invalidated", bytes(b)))
            .unwrap_or_default()
    );
    s += &format!(
        "  cutover          {}{}\n",
        r.cutover_mode,
        if r.cutover_waiting {
            ", waiting for `pgrepart cutover`"
        } else if r.cutover_requested {
            ", requested"
        } else {
            ""
        }
    );
    if let Some(w) = &r.window_state {
        let figures = match (w.as_str(), r.window_seconds_left) {
            ("open", Some(left)) => format!(
                "open, {} left; reverse lag {}{}, {} changes applied back{}",
                duration(left),
                opt(r.reverse_lag_bytes),
                r.reverse_lag_seconds
                    .map(|l| format!(", {l:.1} s"))
                    .unwrap_or_default(),
                r.reverse_applied_changes,
                if r.revert_requested {
                    "; revert requested"
                } else if r.finish_requested {
                    "; finish requested"
                } else {
                    ""
                }
            ),
            ("reverted", _) => "reverted (the reverse slot and publication are still to drop: run the same `pgrepart run` again)".to_string(),
            (w, _) => w.to_string(),
        };
        s += &format!("  rollback window  {figures}\n");
    }
    if !r.conflicts.is_empty() {
        let mut keys = r
            .conflicts
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if r.conflicts.len() > 10 {
            keys += &format!(", and {} more", r.conflicts.len() - 10);
        }
        s += &format!(
            "  conflicts        {} key(s) with more than one row in the new table (the old table keeps the newest): {keys}\n",
            r.conflicts.len()
        );
    }
    if r.target_committed {
        s += "  cutover          committed in the target, the source table not renamed yet: run the same `pgrepart run` again to finish\n";
    }
    if let (Some(p), Some(rows)) = (&r.default_partition, r.default_partition_rows_estimate) {
        s += &format!("  DEFAULT          {p}: ~{rows} rows (statistics estimate)\n");
    }
    if !r.pending_post_swap_steps.is_empty() {
        s += &format!(
            "  after the swap   still to do: {} (run the same `pgrepart run` again)\n",
            r.pending_post_swap_steps.join("; ")
        );
    }
    if !r.pending_matviews.is_empty() {
        s += &format!(
            "  matviews         still reading the old table, to rebuild over the new one: {} (run the same `pgrepart run` again)\n",
            r.pending_matviews.join(", ")
        );
    }
    if r.primary_key_pending {
        s += "  primary key      built after the copy, with the other indexes: changes are applied from then on (they wait in the slot)\n";
    }
    if !r.waiting_for.is_empty() {
        s += &format!(
            "  slot creation    waiting for these transactions to finish: {}\n",
            r.waiting_for.join("; ")
        );
    }
    if let Some(note) = &r.note {
        s += &format!("  reverted         {note}\n");
    }
    if let Some(e) = &r.last_error {
        s += &format!(
            "  last error       {}\n",
            e.replace('\n', "\n                   ")
        );
    }
    s
}

pub(crate) fn bytes(b: i64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut u = 0;
    while v.abs() >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn duration(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

pub async fn run(args: StatusArgs) -> Result<()> {
    let dbs = super::Databases::from_args(&args.conn)?;
    let table = args.table.as_deref().map(super::table_arg).transpose()?;
    // The state is read from the target database, the slot's figures from the source.
    let client = dbs.connect_state("pgrepart status").await?;
    let source = dbs.connect_source("pgrepart status").await?;
    loop {
        let migrations = match &table {
            Some(t) => vec![super::require_migration(&client, t).await?],
            None => state::all(&client).await?,
        };
        let mut reports = Vec::with_capacity(migrations.len());
        for m in &migrations {
            reports.push(report(&source, &client, m, dbs.cross).await?);
        }
        let text = if args.json {
            let json = if table.is_some() {
                serde_json::to_string_pretty(&reports[0])
            } else {
                serde_json::to_string_pretty(&reports)
            };
            json.expect("report serializes") + "\n"
        } else if reports.is_empty() {
            "no pgrepart migrations are recorded in this database\n".to_string()
        } else {
            reports.iter().map(human).collect()
        };
        let Some(every) = args.watch else {
            print!("{text}");
            return Ok(());
        };
        // Redraw in place: clear the screen, home the cursor.
        print!("\x1b[2J\x1b[H{text}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        if reports.iter().all(|r| {
            (r.phase == "done" && r.window_state.as_deref() != Some("open"))
                || r.phase == "failed"
                || r.phase == "reverted"
        }) {
            return Ok(());
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_like_a_dba_writes_them() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MB");
        assert_eq!(duration(42.0), "42s");
        assert_eq!(duration(125.0), "2m05s");
        assert_eq!(duration(7300.0), "2h01m");
    }
}
