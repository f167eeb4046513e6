//! Crashes and aborts: a `pgrepart run` killed with SIGKILL while streaming or while copying is
//! finished by running the same command again, with every row right; `pgrepart abort` from another
//! terminal stops a running migration and removes everything it created.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::flow::{cut_over, seed_run_args, spawn, wait_not_running};
use support::inspect::{self, output_text};
use support::{
    Background, Cluster, Writers, WritersConfig, compare, pgrepart, schema, test_majors,
    unique_name, wait_until,
};

const DEADLINE: Duration = Duration::from_secs(120);

/// Polls `status --json` until `ready` holds for it; returns that status. Panics with the last
/// status seen and the run's stderr when `run` ends first or the deadline passes.
async fn wait_for_status(
    url: &str,
    run: &mut Background,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + DEADLINE;
    let mut last = None;
    loop {
        if let Some(status) = run.try_status() {
            panic!(
                "pgrepart run ended ({status}) while waiting for {what}; last status {last:?}; stderr:\n{}",
                support::program::tail(&run.stderr_so_far(), 4000)
            );
        }
        if let Some(v) = inspect::status_json(url, "orders_flat").await {
            if ready(&v) {
                return v;
            }
            last = Some(v);
        }
        if Instant::now() > deadline {
            panic!(
                "timed out after {DEADLINE:?} waiting for {what}; last status {last:?}; stderr:\n{}",
                support::program::tail(&run.stderr_so_far(), 4000)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn check_partitioned_and_clean(client: &tokio_postgres::Client) {
    assert_eq!(inspect::relkind(client, "orders_flat").await, Some('p'));
    assert_eq!(inspect::relkind(client, "orders_flat_old").await, Some('r'));
    inspect::assert_no_slot_or_publication(client).await;
}

#[tokio::test]
async fn a_run_killed_while_streaming_resumes_and_cuts_over() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let started = Instant::now();
        let db = unique_name("resume_stream");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_seed_table(&client, "orders_flat", 30_000).await;
        let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
        writers.wait_for_more_ops(100, DEADLINE).await;

        let args = seed_run_args(&url, &["--cutover", "manual"]);
        let mut first = spawn(&args);
        let v = wait_for_status(&url, &mut first, "streaming with changes applied", |v| {
            inspect::phase(v) == "streaming" && inspect::int(v, "applied_changes").unwrap_or(0) > 0
        })
        .await;
        eprintln!("PostgreSQL {major}: killing the run at {v}");
        let out = first.kill9().await;
        assert!(!out.status.success());

        // The application goes on while nothing replicates.
        writers.wait_for_more_ops(300, DEADLINE).await;
        wait_not_running(&url, DEADLINE).await;

        let mut second = spawn(&args);
        wait_until(DEADLINE, "the rerun to say it is resuming", || {
            let text = second.stderr_so_far();
            async move { text.contains("resuming") }
        })
        .await;
        let applied_before = inspect::int(&v, "applied_changes").unwrap();
        wait_for_status(&url, &mut second, "the rerun to stream and apply", |s| {
            inspect::phase(s) == "streaming"
                && s.get("running") == Some(&Value::Bool(true))
                && inspect::int(s, "applied_changes").unwrap_or(0) > applied_before
        })
        .await;

        cut_over(&url, second, DEADLINE, format_args!("PostgreSQL {major}")).await;
        writers.wait_for_more_ops(200, DEADLINE).await;
        let report = writers.stop().await;
        eprintln!("PostgreSQL {major}: {}", report.summary());
        report.assert_no_anomalies("the writers' check");
        compare::assert_table_matches(&client, "orders_flat", &report.rows).await;
        check_partitioned_and_clean(&client).await;
        eprintln!(
            "PostgreSQL {major}: kill -9 while streaming, resumed, passed in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
}

#[tokio::test]
async fn a_run_killed_during_the_copy_resumes_and_finishes() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let started = Instant::now();
        let db = unique_name("resume_copy");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_seed_table(&client, "orders_flat", 200_000).await;
        eprintln!(
            "PostgreSQL {major}: seeded 200k rows in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
        writers.wait_for_more_ops(100, DEADLINE).await;

        let args = seed_run_args(&url, &["--cutover", "auto", "--jobs", "2"]);
        let mut first = spawn(&args);
        let v = wait_for_status(&url, &mut first, "a range copied, still copying", |v| {
            inspect::phase(v) == "copying" && inspect::int(v, "ranges_done").unwrap_or(0) >= 1
        })
        .await;
        eprintln!("PostgreSQL {major}: killing the run at {v}");
        let out = first.kill9().await;
        assert!(!out.status.success());
        let total = inspect::int(&v, "ranges_total").unwrap();
        let done = inspect::int(&v, "ranges_done").unwrap();
        assert!(done < total, "{v}");

        writers.wait_for_more_ops(200, DEADLINE).await;
        wait_not_running(&url, DEADLINE).await;
        let after_kill = inspect::status_json(&url, "orders_flat").await.unwrap();
        assert!(
            inspect::int(&after_kill, "ranges_done").unwrap() >= done,
            "finished ranges were lost by the crash: {after_kill}"
        );

        rerun_to_the_end(&args, "resuming", &client, writers, major).await;
        eprintln!(
            "PostgreSQL {major}: kill -9 during the copy, resumed, passed in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
}

/// The rerun `args` to its end after a kill: it succeeds and its log says `says`; then, with the
/// writers stopped, their check, the table compared row by row, and nothing left behind.
async fn rerun_to_the_end(
    args: &[String],
    says: &str,
    client: &tokio_postgres::Client,
    writers: Writers,
    major: u32,
) {
    let out = spawn(args).wait_within(DEADLINE).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the resumed run failed on PostgreSQL {major}: {}",
        output_text(&out)
    );
    assert!(
        stderr.contains(says),
        "the rerun's log does not say {says:?}: {stderr}"
    );
    writers.wait_for_more_ops(200, DEADLINE).await;
    let report = writers.stop().await;
    eprintln!("PostgreSQL {major}: {}", report.summary());
    report.assert_no_anomalies("the writers' check");
    compare::assert_table_matches(client, "orders_flat", &report.rows).await;
    check_partitioned_and_clean(client).await;
}

/// Ranges whose copy stands part way (`copied_to` set, not done).
async fn ranges_part_copied(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pgrepart.ranges WHERE NOT done AND copied_to IS NOT NULL",
            &[],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or(0)
}

#[tokio::test]
async fn a_paced_copy_commits_its_ranges_in_pieces_and_a_rerun_goes_on_from_the_last_one() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let started = Instant::now();
        let db = unique_name("resume_pieces");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_seed_table(&client, "orders_flat", 100_000).await;
        let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
        writers.wait_for_more_ops(100, DEADLINE).await;

        // 2,000 rows/s over two workers: pieces of 2,000 rows, ranges of several pieces.
        let paced = seed_run_args(
            &url,
            &[
                "--cutover",
                "auto",
                "--jobs",
                "2",
                "--max-copy-rate",
                "2000",
            ],
        );
        let mut first = spawn(&paced);
        wait_until(DEADLINE, "a range copied part way", || {
            let client = &client;
            async move { ranges_part_copied(client).await > 0 }
        })
        .await;
        let rows_before: i64 = client
            .query_one(
                "SELECT coalesce(sum(rows_copied), 0)::bigint FROM pgrepart.ranges WHERE NOT done",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(
            first.try_status().is_none(),
            "the paced run ended early: {}",
            first.stderr_so_far()
        );
        let out = first.kill9().await;
        assert!(!out.status.success());
        assert!(
            rows_before > 0,
            "a range part copied records no rows copied"
        );
        // The crash keeps the pieces committed.
        assert!(ranges_part_copied(&client).await > 0);

        writers.wait_for_more_ops(200, DEADLINE).await;
        wait_not_running(&url, DEADLINE).await;
        // The rerun, unpaced, goes on where the pieces stopped.
        let unpaced = seed_run_args(&url, &["--cutover", "auto", "--jobs", "2"]);
        rerun_to_the_end(
            &unpaced,
            "going on from its last piece",
            &client,
            writers,
            major,
        )
        .await;
        eprintln!(
            "PostgreSQL {major}: a paced copy killed part way through a range, resumed, passed in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
}

#[tokio::test]
async fn abort_from_another_terminal_stops_the_run_and_removes_everything() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let started = Instant::now();
        let db = unique_name("abort");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_seed_table(&client, "orders_flat", 20_000).await;
        let before = inspect::relations(&client).await;
        let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
        writers.wait_for_more_ops(100, DEADLINE).await;

        let mut run = spawn(&seed_run_args(&url, &["--cutover", "manual"]));
        wait_for_status(&url, &mut run, "streaming", |v| {
            inspect::phase(v) == "streaming"
        })
        .await;
        assert_eq!(
            inspect::relkind(&client, "orders_flat_repart").await,
            Some('p'),
            "no generated target while streaming"
        );

        let abort = pgrepart(&["abort", "--source", &url, "--table", "orders_flat"]).await;
        assert!(
            abort.status.success(),
            "pgrepart abort failed on PostgreSQL {major}: {}",
            output_text(&abort)
        );
        let out = run.wait_within(DEADLINE).await;
        assert!(
            !out.status.success(),
            "the aborted run exited 0: {}",
            output_text(&out)
        );

        writers.wait_for_more_ops(200, DEADLINE).await;
        let report = writers.stop().await;
        eprintln!("PostgreSQL {major}: {}", report.summary());
        inspect::assert_nothing_left_behind(&client, &before).await;
        assert_eq!(inspect::relkind(&client, "orders_flat").await, Some('r'));
        report.assert_no_anomalies("the writers' check");
        compare::assert_table_matches(&client, "orders_flat", &report.rows).await;
        eprintln!(
            "PostgreSQL {major}: abort passed in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
}

#[tokio::test]
async fn a_generated_migration_killed_during_the_copy_resumes_with_the_partitions_it_started_with()
{
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let started = Instant::now();
        let db = unique_name("resume_generated");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_seed_table(&client, "orders_flat", 200_000).await;

        let args: Vec<String> = [
            "run",
            "--source",
            &url,
            "--table",
            "orders_flat",
            "--partition-by",
            "RANGE (order_date)",
            "--interval",
            "month",
            "--premake",
            "2",
            "--jobs",
            "2",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut first = spawn(&args);
        let v = wait_for_status(&url, &mut first, "a range copied, still copying", |v| {
            inspect::phase(v) == "copying" && inspect::int(v, "ranges_done").unwrap_or(0) >= 1
        })
        .await;
        let generated = inspect::partitions(&client, "orders_flat_repart").await;
        eprintln!(
            "PostgreSQL {major}: killing the generated run at {v} ({} partitions)",
            generated.len()
        );
        let out = first.kill9().await;
        assert!(!out.status.success());
        assert!(
            generated.len() > 12 && generated.contains(&"orders_flat_default".to_string()),
            "{generated:?}"
        );
        wait_not_running(&url, DEADLINE).await;

        // A row far beyond every generated partition: generating the list again would now make
        // partitions up to 2040; the resumed run must keep the list it started with, and the row
        // goes to the DEFAULT partition.
        client
            .batch_execute(
                "INSERT INTO orders_flat (order_date, customer_id, region) VALUES ('2040-06-01', 1, 'US')",
            )
            .await
            .unwrap();

        let out = spawn(&args).wait_within(DEADLINE).await;
        assert!(
            out.status.success(),
            "the resumed run failed on PostgreSQL {major}: {}",
            output_text(&out)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("resuming"),
            "the rerun did not say it resumed: {stderr}"
        );
        assert_eq!(
            inspect::partitions(&client, "orders_flat").await,
            generated,
            "the resumed run changed the partition list"
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("the DEFAULT partition public.orders_flat_default holds 1 row(s)"),
            "{}",
            output_text(&out)
        );
        let differ: i64 = client
            .query_one(
                "SELECT (SELECT count(*) FROM (SELECT * FROM orders_flat EXCEPT ALL SELECT * FROM orders_flat_old) a) \
                      + (SELECT count(*) FROM (SELECT * FROM orders_flat_old EXCEPT ALL SELECT * FROM orders_flat) b)",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            differ, 0,
            "the new table's rows differ from the old table's"
        );
        check_partitioned_and_clean(&client).await;
        eprintln!(
            "PostgreSQL {major}: generated migration killed during the copy, resumed, passed in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
}

/// Backends of the run's index sessions in `client`'s server.
async fn index_sessions(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgrepart index'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn ctrl_c_during_the_index_builds_stops_them_and_the_rerun_finishes() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let db = unique_name("idxint");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_seed_table(&client, "orders_flat", 20_000).await;
        client
            .batch_execute("CREATE INDEX orders_flat_order_date_idx ON orders_flat (order_date)")
            .await
            .unwrap();
        let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
        writers.wait_for_more_ops(200, DEADLINE).await;

        // Each index session first waits in the server as long as a build of an hour would.
        let args = seed_run_args(&url, &["--cutover", "manual", "--verify", "off"]);
        let run =
            support::flow::spawn_with_env(&args, &[("PGREPART_TEST_FAULT", "index-build-waits")]);
        wait_until(DEADLINE, "an index session at work", || async {
            index_sessions(&client).await > 0
        })
        .await;
        run.interrupt();
        // Promptly: the builds are cancelled, not waited for.
        let out = run.wait_within(Duration::from_secs(30)).await;
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(1), "PostgreSQL {major}: {text}");
        assert!(
            text.contains("stopped by a signal") && text.contains("run the same command again"),
            "PostgreSQL {major}: {text}"
        );
        // Nothing of them goes on in the server.
        wait_until(
            Duration::from_secs(30),
            "the index sessions to end",
            || async { index_sessions(&client).await == 0 },
        )
        .await;
        assert_eq!(inspect::slots(&client).await.len(), 1, "the slot is kept");
        let v = inspect::status_json(&url, "orders_flat").await.unwrap();
        assert_eq!(inspect::phase(&v), "copying", "PostgreSQL {major}: {v}");

        // The same command again builds the indexes and streams; the cutover finishes it.
        let rerun = spawn(&args);
        support::flow::wait_status(&url, &rerun, DEADLINE, "the rerun streaming", |v| {
            inspect::phase(v) == "streaming"
        })
        .await;
        writers.wait_for_more_ops(200, DEADLINE).await;
        let report = writers.stop().await;
        report.assert_no_anomalies(format_args!("PostgreSQL {major}"));
        cut_over(&url, rerun, DEADLINE, format_args!("PostgreSQL {major}")).await;
        compare::assert_table_matches(&client, "orders_flat", &report.rows).await;
        // One valid index on order_date on the new table and on each of its partitions.
        let valid = inspect::valid_indexes_on(&client, "orders_flat", "order_date").await;
        assert_eq!(
            valid, 5,
            "PostgreSQL {major}: the parent's index and its 4 partitions'"
        );
        inspect::assert_no_slot_or_publication(&client).await;
    }
}
