//! `pgrepart status`: what a migration is doing, read from the state table and the server's own
//! views, so no running process is needed.

use serde::Serialize;
use tokio_postgres::Client;

use crate::cli::StatusArgs;
use crate::error::{Error, Result};
use crate::pg::ident::QualifiedName;
use crate::state::{self, Migration};

/// The JSON document `status --json` prints. Field names are stable (documented in README).
#[derive(Debug, Serialize)]
pub struct Report {
    pub migration_id: i64,
    pub table: String,
    pub target: String,
    pub phase: &'static str,
    pub seconds_in_phase: f64,
    pub rows_copied: i64,
    pub rows_total_estimate: i64,
    pub ranges_done: i64,
    pub ranges_total: i64,
    pub applied_changes: i64,
    /// WAL between the server's current position and the slot's confirmed position.
    pub lag_bytes: Option<i64>,
    /// WAL the slot keeps on the source's disk.
    pub wal_retained_bytes: Option<i64>,
    pub wal_status: Option<String>,
    /// Whether a `pgrepart run` is attached to the slot now.
    pub running: bool,
    pub cutover_mode: String,
    pub cutover_requested: bool,
    pub last_error: Option<String>,
    pub slot_name: String,
}

pub async fn report(client: &Client, m: &Migration) -> Result<Report> {
    let slot = client
        .query_opt(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, \
                    pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, wal_status, active \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&m.slot_name],
        )
        .await
        .map_err(|e| Error::db("reading the replication slot", e))?;
    let (lag, retained, wal_status, running) = match slot {
        Some(r) => (r.get(0), r.get(1), r.get(2), r.get(3)),
        None if m.phase == state::Phase::Done => (Some(0), Some(0), None, false),
        None => (None, None, None, false),
    };
    Ok(Report {
        migration_id: m.id,
        table: m.source.to_string(),
        target: m.target.to_string(),
        phase: m.phase.as_str(),
        seconds_in_phase: m.seconds_in_phase,
        rows_copied: m.rows_copied,
        rows_total_estimate: m.rows_estimate,
        ranges_done: m.ranges_done,
        ranges_total: m.ranges_total,
        applied_changes: m.applied_changes,
        lag_bytes: lag,
        wal_retained_bytes: retained,
        wal_status,
        running,
        cutover_mode: m.cutover_mode.clone(),
        cutover_requested: m.cutover_requested,
        last_error: m.last_error.clone(),
        slot_name: m.slot_name.clone(),
    })
}

fn human(r: &Report) -> String {
    let opt = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
    let mut s = format!(
        "migration {}  {} -> {}\n  phase            {} (for {:.0} s){}\n  copy             {} of ~{} rows, {}/{} ranges\n  applied changes  {}\n  lag              {} bytes\n  WAL retained     {} bytes{}\n  cutover          {}{}\n",
        r.migration_id,
        r.table,
        r.target,
        r.phase,
        r.seconds_in_phase,
        if r.running { ", running" } else { "" },
        r.rows_copied,
        r.rows_total_estimate,
        r.ranges_done,
        r.ranges_total,
        r.applied_changes,
        opt(r.lag_bytes),
        opt(r.wal_retained_bytes),
        r.wal_status
            .as_deref()
            .map(|w| format!(" ({w})"))
            .unwrap_or_default(),
        r.cutover_mode,
        if r.cutover_requested {
            ", requested"
        } else {
            ""
        },
    );
    if let Some(e) = &r.last_error {
        s.push_str(&format!("  last error       {e}\n"));
    }
    s
}

pub async fn run(args: StatusArgs) -> Result<()> {
    let config = crate::pg::parse_conninfo("--source", &args.conn.source)?;
    let client = crate::pg::connect(&config, "pgrepart status").await?;
    let migrations = match &args.table {
        Some(t) => vec![super::require_migration(&client, &QualifiedName::parse(t)?).await?],
        None => state::all(&client).await?,
    };
    let mut reports = Vec::with_capacity(migrations.len());
    for m in &migrations {
        reports.push(report(&client, m).await?);
    }
    if args.json {
        let text = if args.table.is_some() {
            serde_json::to_string_pretty(&reports[0])
        } else {
            serde_json::to_string_pretty(&reports)
        };
        println!("{}", text.expect("report serializes"));
    } else if reports.is_empty() {
        println!("no pgrepart migrations are recorded in this database");
    } else {
        for r in &reports {
            print!("{}", human(r));
        }
    }
    Ok(())
}
