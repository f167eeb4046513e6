//! Watching and steering a running migration from other processes: every documented `status
//! --json` field while it runs, the Prometheus endpoint, pause and resume under a write load, a
//! second `run` refused with the first one's pid, Ctrl-C followed by a rerun, and the retained-WAL
//! guard stopping a run before the source's disk fills.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::flow::{
    cut_over, pause, resume, seed_run_args, spawn, wait_lag_near_zero, wait_status,
};
use support::inspect::{self, output_text};
use support::{
    Cluster, Writers, WritersConfig, compare, pgrepart, schema, test_majors, unique_name,
};

const DEADLINE: Duration = Duration::from_secs(120);

/// Every field docs/status.md documents for `status --json`.
const DOCUMENTED_FIELDS: [&str; 51] = [
    "migration_id",
    "table",
    "target",
    "phase",
    "seconds_in_phase",
    "rows_copied",
    "rows_streamed",
    "rows_total_estimate",
    "ranges_done",
    "ranges_total",
    "bytes_copied",
    "bytes_total_estimate",
    "copy_rows_per_s",
    "copy_rate_limit",
    "eta_seconds",
    "applied_changes",
    "apply_changes_per_s",
    "apply_rate_limit",
    "governor",
    "lag_bytes",
    "lag_seconds",
    "copy_snapshot_age_seconds",
    "wal_retained_bytes",
    "wal_status",
    "safe_wal_size",
    "running",
    "runner",
    "paused",
    "pause_in_effect",
    "cutover_mode",
    "cutover_requested",
    "cutover_waiting",
    "waiting_for",
    "slot_name",
    "target_committed",
    "pending_matviews",
    "default_partition",
    "default_partition_rows_estimate",
    "primary_key_pending",
    "identity_problem",
    "window_state",
    "window_seconds_left",
    "reverse_lag_bytes",
    "reverse_lag_seconds",
    "reverse_applied_changes",
    "reverse_apply_changes_per_s",
    "conflicts",
    "revert_requested",
    "finish_requested",
    "reverted_at",
    "note",
];

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn status_metrics_pause_and_resume_while_writers_run() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let db = unique_name("monitor");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_seed_table(&client, "orders_flat", 30_000).await;
        let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
        writers.wait_for_more_ops(100, DEADLINE).await;

        let metrics = format!("127.0.0.1:{}", free_port());
        let run = spawn(&seed_run_args(
            &url,
            &["--cutover", "manual", "--metrics-addr", &metrics],
        ));
        let status = wait_status(
            &url,
            &run,
            DEADLINE,
            "streaming with changes applied",
            |v| {
                inspect::phase(v) == "streaming"
                    && inspect::int(v, "applied_changes").unwrap_or(0) > 0
            },
        )
        .await;

        // Every documented field is there, and the live ones make sense.
        for field in DOCUMENTED_FIELDS {
            assert!(
                status.get(field).is_some(),
                "PostgreSQL {major}: status has no {field}: {status}"
            );
        }
        assert_eq!(status["running"], Value::Bool(true), "{status}");
        assert!(
            status["runner"]
                .as_str()
                .is_some_and(|r| r.starts_with("pid ")),
            "{status}"
        );
        assert_eq!(status["paused"], Value::Bool(false), "{status}");
        assert_eq!(status["cutover_waiting"], Value::Bool(true), "{status}");
        assert_eq!(
            inspect::int(&status, "ranges_done"),
            inspect::int(&status, "ranges_total")
        );
        assert!(
            inspect::int(&status, "rows_copied").unwrap() >= 29_000,
            "{status}"
        );
        // Every range copied once: the rows sent come to the rows committed (no COPY trailer
        // counted). The run records rows_streamed once a second, so it may trail by a moment.
        wait_status(
            &url,
            &run,
            DEADLINE,
            "rows sent to equal rows committed",
            |v| inspect::int(v, "rows_streamed") == inspect::int(v, "rows_copied"),
        )
        .await;
        assert!(
            inspect::int(&status, "wal_retained_bytes").is_some(),
            "{status}"
        );
        assert!(
            status["lag_seconds"].as_f64().is_some_and(|l| l >= 0.0),
            "{status}"
        );
        assert_eq!(status["eta_seconds"].as_f64(), Some(0.0), "{status}");

        // The endpoint serves the figures of the run's last one-second tick.
        let streaming = "pgrepart_phase{table=\"public.orders_flat\",phase=\"streaming\"} 1";
        let deadline = std::time::Instant::now() + DEADLINE;
        let text = loop {
            let text = inspect::scrape_metrics(&metrics).await;
            assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
            if text.contains(streaming) {
                break text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "metrics never said streaming: {text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            text.contains("pgrepart_applied_changes{table=\"public.orders_flat\"}"),
            "{text}"
        );

        // Paused: the writers go on, nothing more is applied, the lag grows.
        // Once the pause is in effect, nothing more is applied while the writers go on.
        let a = pause(&url, &run, DEADLINE).await;
        // The stream is parked: no walsender on the slot, and the run still counts as running.
        let slot = status["slot_name"].as_str().unwrap().to_string();
        let (c, s) = (&client, slot.as_str());
        let slot_active = move |want: bool| async move { inspect::slot_active(c, s).await == want };
        support::wait_until(DEADLINE, "the paused run to close its stream", || {
            slot_active(false)
        })
        .await;
        writers.wait_for_more_ops(500, DEADLINE).await;
        let b = wait_status(&url, &run, DEADLINE, "the lag to grow while paused", |v| {
            inspect::int(v, "lag_bytes") > inspect::int(&a, "lag_bytes")
        })
        .await;
        assert_eq!(
            inspect::int(&a, "applied_changes"),
            inspect::int(&b, "applied_changes"),
            "PostgreSQL {major}: changes were applied while paused: {a} then {b}"
        );
        assert_eq!(b["running"], Value::Bool(true), "{b}");
        assert!(!slot_active(true).await, "the stream reopened while paused");

        // Resumed: the stream opens again where it stopped and every change arrives (the rows are
        // compared below).
        resume(&url).await;
        support::wait_until(DEADLINE, "the resumed run to open its stream", || {
            slot_active(true)
        })
        .await;
        let applied_paused = inspect::int(&b, "applied_changes").unwrap();
        wait_status(
            &url,
            &run,
            DEADLINE,
            "changes applied again after resume",
            |v| inspect::int(v, "applied_changes").unwrap_or(0) > applied_paused,
        )
        .await;

        // Writers stop; the lag returns to (near) zero.
        let report = writers.stop().await;
        report.assert_no_anomalies("the writers' check");
        wait_lag_near_zero(&url, &run, DEADLINE).await;
        compare::wait_table_matches(&client, "orders_flat_repart", &report.rows, DEADLINE).await;

        // The DEFAULT partition's statistics estimate comes near its exact row count (the seed's
        // LATAM rows and the writers' moves land there); it is an estimate: a few rows off is fine.
        let default_rows: i64 = client
            .query_one("SELECT count(*) FROM orders_flat_default", &[])
            .await
            .unwrap()
            .get(0);
        assert!(default_rows > 0);
        let waited = std::time::Instant::now();
        let v = wait_status(
            &url,
            &run,
            DEADLINE,
            "the DEFAULT partition's estimate to come within 5% of its row count",
            |v| {
                inspect::int(v, "default_partition_rows_estimate")
                    .is_some_and(|e| (e - default_rows).abs() * 20 <= default_rows)
            },
        )
        .await;
        assert_eq!(
            v["default_partition"].as_str(),
            Some("public.orders_flat_default"),
            "{v}"
        );
        eprintln!(
            "PostgreSQL {major}: the DEFAULT partition's estimate {} for its {default_rows} rows after {:.1} s",
            v["default_partition_rows_estimate"],
            waited.elapsed().as_secs_f64()
        );

        cut_over(&url, run, DEADLINE, format_args!("PostgreSQL {major}")).await;
        compare::assert_table_matches(&client, "orders_flat", &report.rows).await;
    }
}

#[tokio::test]
async fn a_second_run_is_refused_and_ctrl_c_stops_gracefully_for_a_rerun() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let db = unique_name("twice");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_seed_table(&client, "orders_flat", 20_000).await;
        let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;

        let args = seed_run_args(&url, &["--cutover", "manual"]);
        let first = spawn(&args);
        wait_status(&url, &first, DEADLINE, "streaming", |v| {
            inspect::phase(v) == "streaming"
        })
        .await;

        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let second = pgrepart(&refs).await;
        let text = output_text(&second);
        assert_eq!(second.status.code(), Some(1), "{text}");
        assert!(
            text.contains("already being run") && text.contains("pid "),
            "PostgreSQL {major}: {text}"
        );

        // SIGINT: a graceful stop that keeps the slot and the state, and says how to go on.
        first.interrupt();
        let out = first.wait_within(DEADLINE).await;
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(text.contains("run the same command again"), "{text}");
        assert_eq!(inspect::slots(&client).await.len(), 1, "the slot is kept");
        let v = inspect::status_json(&url, "orders_flat").await.unwrap();
        assert_eq!(
            inspect::phase(&v),
            "streaming",
            "a graceful stop is not a failure: {v}"
        );

        writers.wait_for_more_ops(200, DEADLINE).await;
        let rerun = spawn(&args);
        wait_status(&url, &rerun, DEADLINE, "the rerun streaming again", |v| {
            inspect::phase(v) == "streaming" && v["running"] == Value::Bool(true)
        })
        .await;
        let report = writers.stop().await;
        report.assert_no_anomalies("the writers' check");
        cut_over(&url, rerun, DEADLINE, format_args!("PostgreSQL {major}")).await;
        compare::assert_table_matches(&client, "orders_flat", &report.rows).await;
    }
}

#[tokio::test]
async fn the_retained_wal_guard_stops_the_run_and_drops_the_slot() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let db = unique_name("walguard");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_seed_table(&client, "orders_flat", 20_000).await;
        let before = inspect::relations(&client).await;
        let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;

        // The copy alone writes far more than 2 x 256 kB of WAL.
        let run = spawn(&seed_run_args(
            &url,
            &["--cutover", "manual", "--max-retained-wal", "256kB"],
        ));
        let out = run.wait_within(DEADLINE).await;
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(1), "PostgreSQL {major}: {text}");
        assert!(
            text.contains("max-retained-wal") && text.contains("slot was dropped"),
            "{text}"
        );
        assert!(
            inspect::slots(&client).await.is_empty(),
            "the slot must be gone to free the WAL"
        );
        let v = inspect::status_json(&url, "orders_flat").await.unwrap();
        assert_eq!(inspect::phase(&v), "failed", "{v}");
        assert!(
            v["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("max-retained-wal")),
            "{v}"
        );

        // The state says what happened; abort then removes everything.
        let out = pgrepart(&["abort", "--source", &url, "--table", "orders_flat"]).await;
        assert!(out.status.success(), "{}", output_text(&out));
        inspect::assert_nothing_left_behind(&client, &before).await;
        let report = writers.stop().await;
        report.assert_no_anomalies("the writers' check");
        compare::assert_table_matches(&client, "orders_flat", &report.rows).await;
    }
}

/// A transaction left open on the source holds up the slot's creation: `status` names it (pid,
/// open since, last query) and `run` logs it, until it ends; then the run goes on.
#[tokio::test]
async fn a_long_transaction_holding_up_slot_creation_is_named() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let db = unique_name("slotwait");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_seed_table(&client, "orders_flat", 2_000).await;
        let before = inspect::relations(&client).await;
        let long = cluster.client(&db).await;
        let pid: i32 = long
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        long.batch_execute("BEGIN; SELECT txid_current()")
            .await
            .unwrap();

        let run = spawn(&seed_run_args(&url, &["--cutover", "manual"]));
        let named = format!("pid {pid} (");
        let v = wait_status(
            &url,
            &run,
            DEADLINE,
            "status to name the open transaction",
            |v| {
                v["waiting_for"].as_array().is_some_and(|w| {
                    w.iter()
                        .any(|t| t.as_str().is_some_and(|t| t.starts_with(&named)))
                })
            },
        )
        .await;
        let shown = v["waiting_for"][0].as_str().unwrap().to_string();
        assert!(
            shown.contains("transaction open") && shown.contains("last query started"),
            "{shown}"
        );
        let human = pgrepart(&["status", "--source", &url, "--table", "orders_flat"]).await;
        assert!(
            output_text(&human).contains(&named),
            "{}",
            output_text(&human)
        );
        support::wait_until(DEADLINE, "run to log the transaction it waits for", || {
            let text = run.stderr_so_far();
            let pid_field = format!("pid={pid}");
            async move { text.contains("slot creation is waiting") && text.contains(&pid_field) }
        })
        .await;

        long.batch_execute("COMMIT").await.unwrap();
        let v = wait_status(
            &url,
            &run,
            DEADLINE,
            "streaming once the transaction ended",
            |v| inspect::phase(v) == "streaming",
        )
        .await;
        assert_eq!(v["waiting_for"], Value::Array(vec![]), "{v}");
        let out = pgrepart(&["abort", "--source", &url, "--table", "orders_flat"]).await;
        assert!(out.status.success(), "{}", output_text(&out));
        run.wait_within(DEADLINE).await;
        inspect::assert_nothing_left_behind(&client, &before).await;
    }
}
