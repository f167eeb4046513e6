//! `--apply-sessions`: a large batch of changes (a backlog built while the run is paused) is dealt
//! out by key to two target sessions that apply it side by side. Real migrations under concurrent
//! writes (inserts, updates that move rows between partitions, deletes), compared row by row.

mod support;

use std::time::Duration;

use support::flow::{
    cut_over, pause, resume, seed_run_args, spawn, spawn_with_env, wait_lag_near_zero, wait_status,
};
use support::inspect::{self, output_text};
use support::program::Background;
use support::{Cluster, Writers, WritersConfig, compare, schema, test_majors, unique_name};

const DEADLINE: Duration = Duration::from_secs(120);

/// The apply's debug lines say how many sessions applied each batch.
const DEBUG_APPLY: (&str, &str) = ("PGREPART_LOG", "info,pgrepart::apply=debug");

/// The apply's `batch applied` lines of a run's log.
fn batch_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("batch applied"))
        .collect()
}

/// Pauses the streaming run, lets the writers make `ops` more changes, resumes, and waits until
/// more changes than before are applied.
async fn backlog(url: &str, run: &Background, writers: &Writers, ops: u64) {
    let paused = pause(url, run, DEADLINE).await;
    writers.wait_for_more_ops(ops, DEADLINE).await;
    resume(url).await;
    let before = inspect::int(&paused, "applied_changes").unwrap_or(0);
    wait_status(url, run, DEADLINE, "the backlog applied", |v| {
        inspect::int(v, "applied_changes").unwrap_or(0) > before + ops as i64 / 2
    })
    .await;
}

#[tokio::test]
async fn a_backlog_is_applied_by_two_sessions_and_loses_nothing() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let db = unique_name("parapply");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_seed_table(&client, "orders_flat", 20_000).await;
        let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
        writers.wait_for_more_ops(100, DEADLINE).await;

        let run = spawn_with_env(
            &seed_run_args(&url, &["--cutover", "manual", "--apply-sessions", "2"]),
            &[DEBUG_APPLY],
        );
        wait_status(&url, &run, DEADLINE, "streaming", |v| {
            inspect::phase(v) == "streaming"
        })
        .await;
        backlog(&url, &run, &writers, 4_000).await;
        let log = run.stderr_so_far();
        assert!(
            batch_lines(&log).iter().any(|l| l.contains("sessions=2")),
            "PostgreSQL {major}: no batch was applied by two sessions: {}",
            support::program::tail(&log, 4000)
        );

        // The writers stop; everything they did is on the new table, then after the cutover.
        let report = writers.stop().await;
        report.assert_no_anomalies("the writers' check");
        wait_lag_near_zero(&url, &run, DEADLINE).await;
        compare::wait_table_matches(&client, "orders_flat_repart", &report.rows, DEADLINE).await;
        cut_over(&url, run, DEADLINE, format_args!("PostgreSQL {major}")).await;
        compare::assert_table_matches(&client, "orders_flat", &report.rows).await;
    }
}

#[tokio::test]
async fn a_table_with_another_unique_index_is_applied_on_one_session() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let db = unique_name("parunique");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_seed_table(&client, "orders_flat", 20_000).await;
        // Unique besides the key, and it covers the partition key, so it stays unique.
        client
            .batch_execute("CREATE UNIQUE INDEX orders_flat_id_region ON orders_flat (id, region)")
            .await
            .unwrap();
        let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
        writers.wait_for_more_ops(100, DEADLINE).await;

        let run = spawn_with_env(
            &seed_run_args(&url, &["--cutover", "manual"]),
            &[DEBUG_APPLY],
        );
        wait_status(&url, &run, DEADLINE, "streaming", |v| {
            inspect::phase(v) == "streaming"
        })
        .await;
        backlog(&url, &run, &writers, 3_000).await;
        let log = run.stderr_so_far();
        assert!(
            log.contains("changes are applied on one session")
                && log.contains("orders_flat_id_region"),
            "PostgreSQL {major}: the unique index was not named: {}",
            support::program::tail(&log, 4000)
        );
        assert!(
            !batch_lines(&log).is_empty()
                && !batch_lines(&log).iter().any(|l| l.contains("sessions=")),
            "PostgreSQL {major}: a batch was dealt out to several sessions: {}",
            support::program::tail(&log, 4000)
        );

        let report = writers.stop().await;
        report.assert_no_anomalies("the writers' check");
        wait_lag_near_zero(&url, &run, DEADLINE).await;
        cut_over(&url, run, DEADLINE, format_args!("PostgreSQL {major}")).await;
        compare::assert_table_matches(&client, "orders_flat", &report.rows).await;
    }
}

#[tokio::test]
async fn a_crash_between_the_sessions_commits_is_repaired_by_the_next_run() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let db = unique_name("parcrash");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_seed_table(&client, "orders_flat", 20_000).await;
        let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
        writers.wait_for_more_ops(100, DEADLINE).await;

        // The first large batch: one session's share commits, then the process dies.
        let args = seed_run_args(&url, &["--cutover", "manual"]);
        let run = spawn_with_env(&args, &[("PGREPART_TEST_FAULT", "apply-share-committed")]);
        wait_status(&url, &run, DEADLINE, "streaming", |v| {
            inspect::phase(v) == "streaming"
        })
        .await;
        pause(&url, &run, DEADLINE).await;
        writers.wait_for_more_ops(3_000, DEADLINE).await;
        resume(&url).await;
        let out = run.wait_within(DEADLINE).await;
        assert_eq!(
            out.status.code(),
            Some(86),
            "PostgreSQL {major}: the run did not stop at the fault point: {}",
            output_text(&out)
        );

        // The same command again: it replays from the confirmed position, the writers go on.
        let run = spawn(&args);
        wait_status(&url, &run, DEADLINE, "streaming again", |v| {
            inspect::phase(v) == "streaming"
        })
        .await;
        writers.wait_for_more_ops(500, DEADLINE).await;
        let report = writers.stop().await;
        report.assert_no_anomalies("the writers' check");
        wait_lag_near_zero(&url, &run, DEADLINE).await;
        compare::wait_table_matches(&client, "orders_flat_repart", &report.rows, DEADLINE).await;
        cut_over(&url, run, DEADLINE, format_args!("PostgreSQL {major}")).await;
        compare::assert_table_matches(&client, "orders_flat", &report.rows).await;
    }
}
