//! The load governor (`--max-impact`, 50 by default; these tests set 15, the other tests turn it
//! off): with no workload of its own on the source it never limits the copy; with one, the copy
//! starts at its slow-start rate and is governed from the probe's commits, and the migration still
//! ends with every row. The apply's pace (`--max-apply-rate`, which the governor moves too) holds
//! until the cutover is due, and the cutover then catches up. A source that waits whatever the
//! apply does (a test fault point) has its stream parked until the cutover. The governor's reason
//! reaches `status` (text and JSON), and the copy's ETA follows the limit it holds. With
//! `pg_stat_statements` preloaded the governor reads the application's statements and its
//! transaction time; a workload that only reads is measured from `pg_stat_database`; a physical
//! standby replaying late paces the copy under `--max-replica-lag`.

mod support;

use std::time::Duration;

use support::flow::{cut_over, seed_run_args, spawn, spawn_with_env, wait_status};
use support::inspect::{self, output_text};
use support::{Cluster, Writers, WritersConfig, compare, schema, test_majors, unique_name};

const SEED_ROWS: usize = 60_000;
// A governed copy under writers may go down to 500 rows/s: 60,000 rows in two minutes at worst.
const DEADLINE: Duration = Duration::from_secs(300);
const GOVERNED: [(&str, &str); 2] = [
    ("PGREPART_MAX_IMPACT", "15"),
    ("PGREPART_LOG", "info,pgrepart::copy::governor=debug"),
];

/// The run's standard error (a file, so without colour codes).
fn log_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A new database in `cluster` holding the seed table; its URL and a client.
async fn seeded(cluster: &Cluster, prefix: &str) -> (String, tokio_postgres::Client) {
    let db = unique_name(prefix);
    let url = cluster.create_database(&db).await;
    let client = cluster.client(&db).await;
    schema::create_seed_table(&client, "orders_flat", SEED_ROWS).await;
    (url, client)
}

/// A governed run (`--verify off`, then `extra`) of a newly seeded table under writers in
/// `cluster`: asserts that it succeeds with every row right and nothing left behind, and returns
/// its log.
async fn governed_run_under_writers(
    cluster: &Cluster,
    major: u32,
    prefix: &str,
    extra: &[&str],
) -> String {
    governed_run_with_writers(cluster, major, prefix, extra, |c| c).await
}

/// [`governed_run_under_writers`] with writers set up by `config`.
async fn governed_run_with_writers(
    cluster: &Cluster,
    major: u32,
    prefix: &str,
    extra: &[&str],
    config: impl FnOnce(WritersConfig) -> WritersConfig,
) -> String {
    let (url, client) = seeded(cluster, prefix).await;
    let writers = Writers::start(config(WritersConfig::new(&url, "orders_flat"))).await;
    writers.wait_for_more_ops(300, DEADLINE).await;
    let mut args = vec!["--verify", "off"];
    args.extend_from_slice(extra);
    let out = spawn_with_env(&seed_run_args(&url, &args), &GOVERNED)
        .wait_within(DEADLINE)
        .await;
    assert!(
        out.status.success(),
        "PostgreSQL {major}: {}\nserver log tail:\n{}",
        output_text(&out),
        support::program::tail(&cluster.server_log(), 3000)
    );
    writers.wait_for_more_ops(200, DEADLINE).await;
    let report = writers.stop().await;
    report.assert_no_anomalies(format_args!("PostgreSQL {major}, during the migration"));
    compare::assert_table_matches(&client, "orders_flat", &report.rows).await;
    inspect::assert_no_slot_or_publication(&client).await;
    log_of(&out)
}

/// `name=value` on the governor's first line.
fn field<'a>(log: &'a str, name: &str) -> Option<&'a str> {
    let line = log.lines().find(|l| l.contains("load governor:"))?;
    let at = line.find(&format!("{name}="))? + name.len() + 1;
    let rest = &line[at..];
    Some(match rest.strip_prefix('"') {
        Some(quoted) => &quoted[..quoted.find('"')?],
        None => rest.split_whitespace().next()?,
    })
}

#[tokio::test]
async fn the_copy_is_limited_only_while_the_source_has_a_workload() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };

        // No workload: the governor measures, and never limits.
        let (url, client) = seeded(&cluster, "gov_idle").await;
        let out = spawn_with_env(&seed_run_args(&url, &["--verify", "off"]), &GOVERNED)
            .wait_within(DEADLINE)
            .await;
        assert!(out.status.success(), "{}", output_text(&out));
        let log = log_of(&out);
        assert_eq!(
            field(&log, "start_limit"),
            Some("none"),
            "PostgreSQL {major}: an idle source must not limit the copy:\n{log}"
        );
        assert!(
            !log.contains("copy slowed"),
            "PostgreSQL {major}: the copy was slowed with no workload on the source:\n{log}"
        );
        compare::assert_same_rows(&client, "orders_flat", "orders_flat_old").await;

        // A write workload: slow start, decisions every second, and every row at the end.
        let log = governed_run_under_writers(&cluster, major, "gov_busy", &[]).await;
        let workload: u64 = field(&log, "workload_xacts_per_s")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("PostgreSQL {major}: no governor line:\n{log}"));
        assert!(
            workload >= 30,
            "PostgreSQL {major}: the writers' {workload} transactions/s were not seen as a workload:\n{log}"
        );
        assert_eq!(
            field(&log, "start_limit"),
            Some("20000 rows/s"),
            "PostgreSQL {major}: a busy source must start the copy slowly:\n{log}"
        );
        assert!(
            ["copy limit", "copy slowed", "copy limit lifted"]
                .iter()
                .any(|d| log.contains(d)),
            "PostgreSQL {major}: the governor made no decision while the copy ran:\n{log}"
        );
    }
}

#[tokio::test]
async fn status_shows_the_limit_the_copy_is_held_to() {
    let Some(major) = test_majors().into_iter().next() else {
        return;
    };
    let Some(cluster) = Cluster::start_or_skip(major) else {
        return;
    };
    let (url, _client) = seeded(&cluster, "gov_status").await;
    // 4,000 rows/s: the copy of 60,000 rows takes about 15 s.
    let run = spawn(&seed_run_args(
        &url,
        &[
            "--max-copy-rate",
            "4000",
            "--cutover",
            "manual",
            "--verify",
            "off",
        ],
    ));
    wait_status(
        &url,
        &run,
        DEADLINE,
        "status to show the copy's limit",
        |v| v["copy_rate_limit"].as_i64() == Some(4000),
    )
    .await;
    let text = support::pgrepart(&["status", "--source", &url, "--table", "orders_flat"]).await;
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    // The text was taken while the copy still ran if the limit still shows after it.
    let v = inspect::status_json(&url, "orders_flat").await.unwrap();
    if v["copy_rate_limit"].as_i64() == Some(4000) {
        assert!(
            text.contains("(limited to 4000 rows/s)"),
            "status text does not show the limit:\n{text}"
        );
    }
    // Once streaming, no limit is shown.
    wait_status(&url, &run, DEADLINE, "the migration to stream", |v| {
        inspect::phase(v) == "streaming" && v["copy_rate_limit"].is_null()
    })
    .await;
    drop(run);
    let out = support::pgrepart(&["abort", "--source", &url, "--table", "orders_flat"]).await;
    assert!(out.status.success(), "{}", output_text(&out));
}

#[tokio::test]
async fn status_shows_why_the_governor_holds_its_pace() {
    let Some(major) = test_majors().into_iter().next() else {
        return;
    };
    let Some(cluster) = Cluster::start_or_skip(major) else {
        return;
    };
    let (url, _client) = seeded(&cluster, "gov_reason").await;
    let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
    writers.wait_for_more_ops(300, DEADLINE).await;
    // At most 3,000 rows/s: the copy of 60,000 rows outlasts the governor's first decisions.
    let run = spawn_with_env(
        &seed_run_args(
            &url,
            &[
                "--max-copy-rate",
                "3000",
                "--cutover",
                "manual",
                "--verify",
                "off",
            ],
        ),
        &GOVERNED,
    );
    const REASONS: [&str; 2] = ["full speed: ", "paced: "];
    let copying = wait_status(
        &url,
        &run,
        DEADLINE,
        "status to show the governor's reason",
        |v| inspect::phase(v) == "copying" && v["governor"].as_str().is_some(),
    )
    .await;
    let reason = copying["governor"].as_str().unwrap().to_string();
    assert!(
        REASONS.iter().any(|r| reason.starts_with(r)),
        "PostgreSQL {major}: an unexpected reason {reason:?}: {copying}"
    );
    // The ETA follows the limit: 3,000 rows/s at most, so at least what is left over 3,000.
    let left = inspect::int(&copying, "rows_total_estimate").unwrap()
        - inspect::int(&copying, "rows_streamed").unwrap();
    if let Some(eta) = copying["eta_seconds"].as_f64() {
        assert!(
            eta + 1.0 >= left as f64 / 3_000.0,
            "PostgreSQL {major}: an ETA of {eta} s for {left} rows at 3,000 rows/s at most: {copying}"
        );
    }
    let text = support::pgrepart(&["status", "--source", &url, "--table", "orders_flat"]).await;
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("load governor")
                && REASONS.iter().any(|r| l.contains(r))),
        "PostgreSQL {major}: status text does not show the governor's reason:\n{text}"
    );
    // Streaming, it still says why the apply runs as it does.
    let streaming = wait_status(&url, &run, DEADLINE, "the migration to stream", |v| {
        inspect::phase(v) == "streaming" && v["governor"].as_str().is_some()
    })
    .await;
    let reason = streaming["governor"].as_str().unwrap();
    assert!(
        REASONS.iter().any(|r| reason.starts_with(r)),
        "PostgreSQL {major}: an unexpected reason {reason:?}: {streaming}"
    );
    drop(run);
    writers.stop().await;
    let out = support::pgrepart(&["abort", "--source", &url, "--table", "orders_flat"]).await;
    assert!(out.status.success(), "{}", output_text(&out));
}

#[tokio::test]
async fn the_copy_is_held_while_the_source_is_measured_again() {
    let Some(major) = test_majors().into_iter().next() else {
        return;
    };
    let Some(cluster) = Cluster::start_or_skip(major) else {
        return;
    };
    // At most 2,000 rows/s: the copy of 60,000 rows outlasts the governor's first 20 decisions
    // (it holds the copy and takes its baselines again after 5, then every 20), and every row is
    // still right at the end.
    let log =
        governed_run_under_writers(&cluster, major, "gov_rebase", &["--max-copy-rate", "2000"])
            .await;
    let held = log
        .lines()
        .filter(|l| l.contains("measured again with the migration held"))
        .count();
    assert!(
        held >= 1,
        "the governor never measured the source again during a copy of over 20 s:\n{log}"
    );
    // The copy went on after each hold: ranges were copied after the first one.
    let first_hold = log
        .find("measured again with the migration held")
        .expect("a hold");
    assert!(
        log[first_hold..].contains("range copied"),
        "no range was copied after the copy was held:\n{log}"
    );
}

#[tokio::test]
async fn the_apply_keeps_its_pace_until_the_cutover_is_due() {
    let Some(major) = test_majors().into_iter().next() else {
        return;
    };
    let Some(cluster) = Cluster::start_or_skip(major) else {
        return;
    };
    // Far below what the writers make even on a loaded machine (they do hundreds of ops a second).
    const PACE: f64 = 50.0;
    let (url, client) = seeded(&cluster, "gov_apply").await;
    let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
    writers.wait_for_more_ops(300, DEADLINE).await;
    let run = spawn(&seed_run_args(
        &url,
        &[
            "--max-apply-rate",
            "50",
            "--cutover",
            "manual",
            "--verify",
            "off",
        ],
    ));
    let before = wait_status(&url, &run, DEADLINE, "the paced migration to stream", |v| {
        inspect::phase(v) == "streaming" && v["apply_rate_limit"].as_i64() == Some(PACE as i64)
    })
    .await;
    let (t0, ops0) = (std::time::Instant::now(), writers.ops());
    // The writers make changes far faster than 50 a second: the apply keeps its pace and the
    // lag grows.
    writers.wait_for_more_ops(4000, DEADLINE).await;
    let after = inspect::status_json(&url, "orders_flat").await.unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let ops = writers.ops() - ops0;
    let applied = |v: &serde_json::Value| v["applied_changes"].as_i64().unwrap_or(0);
    let moved = (applied(&after) - applied(&before)) as f64;
    // The recorded figures are up to a second old at each end, and the pacer lends a second.
    let bound = PACE * (secs + 3.0) * 1.2;
    assert!(
        moved <= bound,
        "PostgreSQL {major}: {moved} changes applied in {secs:.1} s at a pace of {PACE}/s (bound {bound:.0}), while the writers made {ops} ops"
    );
    assert!(
        (ops as f64) > 2.0 * bound,
        "PostgreSQL {major}: the writers made only {ops} ops in {secs:.1} s: the pace was never tested"
    );
    assert!(
        after["lag_bytes"].as_i64().unwrap_or(0) > 0,
        "PostgreSQL {major}: no lag behind a paced apply: {after}"
    );
    let text = support::pgrepart(&["status", "--source", &url, "--table", "orders_flat"]).await;
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(
        text.contains("(paced to 50 changes/s)"),
        "status text does not show the pace:\n{text}"
    );

    // The cutover is due: the apply catches up at full speed and the swap happens.
    cut_over(&url, run, DEADLINE, format_args!("PostgreSQL {major}")).await;
    writers.wait_for_more_ops(200, DEADLINE).await;
    let report = writers.stop().await;
    report.assert_no_anomalies(format_args!(
        "PostgreSQL {major}, during the paced migration"
    ));
    compare::assert_table_matches(&client, "orders_flat", &report.rows).await;
    inspect::assert_no_slot_or_publication(&client).await;
}

#[tokio::test]
async fn a_source_still_waiting_after_the_copy_has_the_stream_parked_until_the_cutover() {
    let Some(major) = test_majors().into_iter().next() else {
        return;
    };
    let Some(cluster) = Cluster::start_or_skip(major) else {
        return;
    };
    let (url, client) = seeded(&cluster, "gov_park").await;
    let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
    writers.wait_for_more_ops(300, DEADLINE).await;
    // The fault point makes the governor see every probe's commit four times slower than allowed
    // once the copy is done: the apply goes down to its floor, and 3 s later the stream parks.
    let mut env = GOVERNED.to_vec();
    env.push(("PGREPART_TEST_FAULT", "governor-slow-source"));
    let run = spawn_with_env(
        &seed_run_args(&url, &["--cutover", "manual", "--verify", "off"]),
        &env,
    );
    let parked = wait_status(
        &url,
        &run,
        DEADLINE,
        "the governor to park the stream",
        |v| inspect::phase(v) == "streaming" && v["apply_rate_limit"].as_i64() == Some(0),
    )
    .await;
    let slot = parked["slot_name"].as_str().unwrap().to_string();
    // Parked: the slot has no walsender, and `status` says why.
    support::wait_until(DEADLINE, "the parked stream's walsender to go", || async {
        !inspect::slot_active(&client, &slot).await
    })
    .await;
    let text = support::pgrepart(&["status", "--source", &url, "--table", "orders_flat"]).await;
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    let v = inspect::status_json(&url, "orders_flat").await.unwrap();
    if v["apply_rate_limit"].as_i64() == Some(0) {
        assert!(
            text.contains("stream parked: the source is busy"),
            "PostgreSQL {major}: status text does not say the stream is parked:\n{text}"
        );
    }
    assert_eq!(v["running"], serde_json::Value::Bool(true), "{v}");

    // The cutover is due: the stream opens again, catches up, and the swap loses nothing.
    writers.wait_for_more_ops(300, DEADLINE).await;
    let out = cut_over(&url, run, DEADLINE, format_args!("PostgreSQL {major}")).await;
    let log = log_of(&out);
    assert!(
        log.contains("stream parked")
            && log.contains("the workload waits even with the apply at its floor"),
        "PostgreSQL {major}: the governor's park is not in the log:\n{log}"
    );
    assert!(
        log.contains("stream resumed"),
        "PostgreSQL {major}: the stream never opened again after its park:\n{log}"
    );
    // The apply's floor follows the writers' changes to the table (read from its statistics).
    let seen: Vec<f64> = log
        .lines()
        .filter(|l| l.contains("apply floor"))
        .filter_map(|l| {
            l.split("table_changes_per_s=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(
        seen.iter().any(|&c| c > 0.0),
        "PostgreSQL {major}: the table's changes were never read for the apply's floor:\n{log}"
    );
    writers.wait_for_more_ops(200, DEADLINE).await;
    let report = writers.stop().await;
    report.assert_no_anomalies(format_args!(
        "PostgreSQL {major}, during the parked migration"
    ));
    compare::assert_table_matches(&client, "orders_flat", &report.rows).await;
    inspect::assert_no_slot_or_publication(&client).await;
}

#[tokio::test]
async fn a_state_recorded_before_the_governors_reason_resumes() {
    let Some(major) = test_majors().into_iter().next() else {
        return;
    };
    let Some(cluster) = Cluster::start_or_skip(major) else {
        return;
    };
    let (url, client) = seeded(&cluster, "gov_old_state").await;
    let args = seed_run_args(&url, &["--cutover", "manual", "--verify", "off"]);
    let run = spawn(&args);
    wait_status(&url, &run, DEADLINE, "the migration to stream", |v| {
        inspect::phase(v) == "streaming"
    })
    .await;
    run.kill9().await;
    // The state as a pgrepart without the governor's reason left it.
    client
        .batch_execute("ALTER TABLE pgrepart.migrations DROP COLUMN governor_reason")
        .await
        .unwrap();
    // `status` reads it (and brings the column back), and a rerun resumes and cuts over.
    let v = inspect::status_json(&url, "orders_flat").await.unwrap();
    assert_eq!(inspect::phase(&v), "streaming", "{v}");
    assert!(v["governor"].is_null(), "{v}");
    let run = spawn(&args);
    wait_status(
        &url,
        &run,
        DEADLINE,
        "the resumed migration to stream",
        |v| inspect::phase(v) == "streaming" && v["running"] == serde_json::Value::Bool(true),
    )
    .await;
    cut_over(&url, run, DEADLINE, format_args!("PostgreSQL {major}")).await;
    compare::assert_same_rows(&client, "orders_flat", "orders_flat_old").await;
    let back: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'pgrepart.migrations'::regclass \
               AND attname = 'governor_reason' AND NOT attisdropped)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(back, "PostgreSQL {major}: the state was not upgraded");
}

/// Readers on `url` (four sessions, one primary-key lookup per transaction) until the returned
/// flag turns true; the count of their transactions.
fn spawn_readers(
    url: &str,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
    Vec<tokio::task::JoinHandle<()>>,
) {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let done = std::sync::Arc::new(AtomicU64::new(0));
    let tasks = (0..4)
        .map(|i| {
            let (url, stop, done) = (url.to_string(), stop.clone(), done.clone());
            tokio::spawn(async move {
                let client = support::cluster::connect(&url).await;
                let mut id: i64 = 1 + i * 1_000;
                while !stop.load(Ordering::Relaxed) {
                    client
                        .query_opt("SELECT amount FROM orders_flat WHERE id = $1", &[&id])
                        .await
                        .expect("a reader's lookup");
                    done.fetch_add(1, Ordering::Relaxed);
                    id = id % SEED_ROWS as i64 + 1;
                }
            })
        })
        .collect();
    (stop, done, tasks)
}

#[tokio::test]
async fn the_applications_statements_and_sessions_are_read_where_pg_stat_statements_is_loaded() {
    for major in test_majors() {
        let Some(mut cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        // A library the server cannot find would keep it from starting again.
        let lib = cluster.bin_dir().join("..").join("lib");
        if !["postgresql/pg_stat_statements.so", "pg_stat_statements.so"]
            .iter()
            .any(|f| lib.join(f).exists())
        {
            eprintln!("SKIPPED on PostgreSQL {major}: no pg_stat_statements library");
            continue;
        }
        let admin = cluster.client("postgres").await;
        admin
            .batch_execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
            .await
            .expect("preload pg_stat_statements");
        drop(admin);
        cluster.restart();
        // In template1: every database created from here on has it.
        let template = cluster.client("template1").await;
        if let Err(e) = template
            .batch_execute("CREATE EXTENSION pg_stat_statements")
            .await
        {
            eprintln!(
                "SKIPPED on PostgreSQL {major}: pg_stat_statements is not installed ({})",
                support::describe(&e)
            );
            continue;
        }
        drop(template);
        let log = governed_run_under_writers(&cluster, major, "gov_statements", &[]).await;
        // Read before the migration or when measured again with it held (a second of the
        // writers may hold fewer than the 20 calls a reading needs, or no busy session).
        let read = |name: &str| {
            log.lines()
                .filter(|l| l.contains("load governor:"))
                .filter_map(|l| {
                    let at = l.find(&format!("{name}=\""))? + name.len() + 2;
                    l[at..].split('"').next()?.parse::<f64>().ok()
                })
                .next()
        };
        assert!(
            read("statements_ms").is_some(),
            "PostgreSQL {major}: the application's statements were not read:\n{log}"
        );
        assert!(
            read("transaction_ms").is_some(),
            "PostgreSQL {major}: the application's transaction time was not read:\n{log}"
        );
    }
}

#[tokio::test]
async fn a_workload_that_only_reads_is_seen_from_the_database_statistics() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let (url, client) = seeded(&cluster, "gov_reads").await;
        let (stop, done, readers) = spawn_readers(&url);
        // The readers are under way before the governor looks.
        let deadline = std::time::Instant::now() + DEADLINE;
        while done.load(std::sync::atomic::Ordering::Relaxed) < 2_000 {
            assert!(
                std::time::Instant::now() < deadline,
                "the readers made no progress"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let out = spawn_with_env(&seed_run_args(&url, &["--verify", "off"]), &GOVERNED)
            .wait_within(DEADLINE)
            .await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for r in readers {
            r.await.expect("a reader");
        }
        assert!(
            out.status.success(),
            "PostgreSQL {major}: {}",
            output_text(&out)
        );
        let log = log_of(&out);
        assert_eq!(
            field(&log, "workload_rate_of"),
            Some("Statistics"),
            "PostgreSQL {major}: a read-only workload must be measured from pg_stat_database:\n{log}"
        );
        let workload: u64 = field(&log, "workload_xacts_per_s")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(
            workload >= 30,
            "PostgreSQL {major}: the readers' {workload} transactions/s were not seen:\n{log}"
        );
        assert_eq!(
            field(&log, "start_limit"),
            Some("20000 rows/s"),
            "PostgreSQL {major}: a source busy with reads must start the copy slowly:\n{log}"
        );
        compare::assert_same_rows(&client, "orders_flat", "orders_flat_old").await;
        inspect::assert_no_slot_or_publication(&client).await;
    }
}

#[tokio::test]
async fn a_standby_replaying_late_paces_the_copy() {
    for major in test_majors() {
        let Some(mut cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        // A physical standby that replays every change 3 s late: its replay_lag is 3 s at least
        // while the source writes.
        let _standby = cluster.start_standby("recovery_min_apply_delay = '3s'");
        let admin = cluster.client("postgres").await;
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            let streaming: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'standby' \
                        AND state = 'streaming'",
                    &[],
                )
                .await
                .expect("pg_stat_replication")
                .get(0);
            if streaming == 1 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "PostgreSQL {major}: the standby never streamed:\n{}",
                cluster.server_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = governed_run_under_writers(
            &cluster,
            major,
            "gov_replica",
            &["--max-replica-lag", "1s"],
        )
        .await;
        assert!(
            log.contains("paced: replica lag"),
            "PostgreSQL {major}: a standby 3 s behind did not pace the copy under --max-replica-lag 1s:\n{log}"
        );
    }
}

#[tokio::test]
async fn an_application_whose_sessions_wait_for_work_has_its_clients_queue_watched() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        // Writers that pause 25 ms after each transaction: their sessions sit idle most of the
        // time, as an application's that sends its work at its own pace.
        let log = governed_run_with_writers(&cluster, major, "gov_waits", &[], |c| WritersConfig {
            pause: Duration::from_millis(25),
            big_transaction: false,
            ..c
        })
        .await;
        assert_eq!(
            field(&log, "waits_for_work"),
            Some("true"),
            "PostgreSQL {major}: writers idle most of the time were not seen to wait for work:\n{log}"
        );
        let busy = field(&log, "sessions_busy").unwrap_or_else(|| {
            panic!("PostgreSQL {major}: no sessions on the governor's line:\n{log}")
        });
        let of: Vec<f64> = busy
            .split(" of ")
            .map(|x| x.parse().expect("a count of sessions"))
            .collect();
        assert!(
            of.len() == 2 && of[1] >= 4.0 && of[0] <= of[1] * 0.8,
            "PostgreSQL {major}: the 4 writers' sessions read as {busy}:\n{log}"
        );
    }
}

#[tokio::test]
async fn the_check_before_the_cutover_follows_the_copys_pace() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let (url, client) = seeded(&cluster, "gov_check").await;
        // A copy limited to 5,000 rows/s: the check may compare 20,000 rows/s, and never fewer
        // than 50,000, so its 60,000 rows take 1.2 s at least.
        let out = spawn_with_env(
            &seed_run_args(&url, &["--verify", "full", "--max-copy-rate", "5000"]),
            &GOVERNED,
        )
        .wait_within(DEADLINE)
        .await;
        assert!(
            out.status.success(),
            "PostgreSQL {major}: {}",
            output_text(&out)
        );
        let log = log_of(&out);
        assert!(
            log.contains("at a pace that follows the copy's")
                && log.contains("pace=\"50000 rows/s\""),
            "PostgreSQL {major}: the check was not paced:\n{log}"
        );
        let seconds: f64 = log
            .lines()
            .find(|l| l.contains("verify (full): equal"))
            .and_then(|l| l.rsplit(" in ").next())
            .and_then(|t| t.trim().trim_end_matches(" s").parse().ok())
            .unwrap_or_else(|| panic!("PostgreSQL {major}: no verify result:\n{log}"));
        assert!(
            seconds >= 1.1,
            "PostgreSQL {major}: 60,000 rows compared in {seconds} s at 50,000 rows/s:\n{log}"
        );
        compare::assert_same_rows(&client, "orders_flat", "orders_flat_old").await;
        inspect::assert_no_slot_or_publication(&client).await;
    }
}
