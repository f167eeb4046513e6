//! The run's engine at its edges: arguments checked before anything is created, a resumed run that
//! refuses tables that are no longer the ones it started on, and the metrics endpoint surviving a
//! reconnect.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::flow::{seed_run_args, spawn, wait_status};
use support::inspect::{self, output_text};
use support::{
    Cluster, Writers, WritersConfig, compare, pgrepart, schema, test_majors, unique_name,
};

const DEADLINE: Duration = Duration::from_secs(120);

fn args_ref(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[tokio::test]
async fn a_bad_size_or_a_taken_metrics_port_exits_2_before_anything_is_created() {
    let Some(major) = test_majors().first().copied() else {
        return;
    };
    let Some(cluster) = Cluster::start_or_skip(major) else {
        return;
    };
    let db = unique_name("usage");
    let url = cluster.create_database(&db).await;
    let client = cluster.client(&db).await;
    schema::create_seed_table(&client, "orders_flat", 1_000).await;
    let before = inspect::relations(&client).await;

    let out = pgrepart(&args_ref(&seed_run_args(
        &url,
        &["--max-retained-wal", "20XB"],
    )))
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(output_text(&out).contains("20XB"), "{}", output_text(&out));
    inspect::assert_nothing_left_behind(&client, &before).await;

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = pgrepart(&args_ref(&seed_run_args(&url, &["--metrics-addr", &addr]))).await;
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("--metrics-addr"),
        "{}",
        output_text(&out)
    );
    inspect::assert_nothing_left_behind(&client, &before).await;
}

/// Starts a manual-cutover run of the seed table, waits until it streams, kills it (-9).
async fn streaming_then_killed(url: &str) {
    let run = spawn(&seed_run_args(url, &["--cutover", "manual"]));
    wait_status(url, &run, DEADLINE, "streaming", |v| {
        inspect::phase(v) == "streaming"
    })
    .await;
    run.kill9().await;
}

#[tokio::test]
async fn a_resumed_run_refuses_a_table_dropped_and_created_again_or_left_out_of_the_publication() {
    let Some(major) = test_majors().first().copied() else {
        return;
    };
    let Some(cluster) = Cluster::start_or_skip(major) else {
        return;
    };
    for how in ["recreated", "unpublished"] {
        let db = unique_name(how);
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_seed_table(&client, "orders_flat", 2_000).await;
        let before = inspect::relations(&client).await;
        streaming_then_killed(&url).await;
        let v = inspect::status_json(&url, "orders_flat").await.unwrap();
        assert_eq!(v["identity_problem"], Value::Null, "{v}");
        let expected = match how {
            "recreated" => {
                client
                    .batch_execute("DROP TABLE orders_flat CASCADE")
                    .await
                    .unwrap();
                schema::create_seed_table(&client, "orders_flat", 3_000).await;
                "dropped and created again"
            }
            _ => {
                let publication = v["slot_name"].as_str().unwrap().to_string();
                client
                    .batch_execute(&format!(
                        "ALTER PUBLICATION {publication} DROP TABLE orders_flat"
                    ))
                    .await
                    .unwrap();
                "no longer in the publication"
            }
        };
        let v = inspect::status_json(&url, "orders_flat").await.unwrap();
        assert!(
            v["identity_problem"]
                .as_str()
                .is_some_and(|p| p.contains(expected)),
            "{how}: status does not say it: {v}"
        );
        let status = pgrepart(&["status", "--source", &url, "--table", "orders_flat"]).await;
        assert!(
            output_text(&status).contains("CANNOT RESUME"),
            "{}",
            output_text(&status)
        );
        let out = pgrepart(&args_ref(&seed_run_args(&url, &["--cutover", "manual"]))).await;
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(1), "{how}: {text}");
        assert!(
            text.contains("cannot resume")
                && text.contains(expected)
                && text.contains("pgrepart abort"),
            "{how}: {text}"
        );
        // The way out the message names.
        let out = pgrepart(&["abort", "--source", &url, "--table", "orders_flat"]).await;
        assert!(out.status.success(), "{}", output_text(&out));
        inspect::assert_nothing_left_behind(&client, &before).await;
    }
}

#[tokio::test]
async fn the_metrics_endpoint_outlives_a_reconnect() {
    let Some(major) = test_majors().first().copied() else {
        return;
    };
    let Some(cluster) = Cluster::start_or_skip(major) else {
        return;
    };
    let db = unique_name("metrics");
    let url = cluster.create_database(&db).await;
    let client = cluster.client(&db).await;
    schema::create_seed_table(&client, "orders_flat", 2_000).await;
    let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let run = spawn(&seed_run_args(
        &url,
        &["--cutover", "manual", "--metrics-addr", &addr],
    ));
    let v = wait_status(&url, &run, DEADLINE, "streaming", |v| {
        inspect::phase(v) == "streaming" && inspect::int(v, "applied_changes").unwrap_or(0) > 0
    })
    .await;
    let applied = inspect::int(&v, "applied_changes").unwrap();
    // Every session of the run at once: the attempt ends, the next one takes over.
    let ended = client
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name LIKE 'pgrepart %' AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .len();
    assert!(ended >= 4, "only {ended} sessions of the run");
    writers.wait_for_more_ops(100, DEADLINE).await;
    wait_status(&url, &run, DEADLINE, "applying again", |v| {
        v["running"] == Value::Bool(true)
            && inspect::int(v, "applied_changes").unwrap_or(0) > applied
    })
    .await;
    let text = inspect::scrape_metrics(&addr).await;
    assert!(text.contains("pgrepart_applied_changes"), "{text}");
    let err = run.stderr_so_far();
    assert!(
        err.contains("reconnecting") && err.contains("rule="),
        "{err}"
    );
    assert!(!err.contains("Address already in use"), "{err}");
    let report = writers.stop().await;
    report.assert_no_anomalies("the writers' check");
    support::flow::wait_lag_near_zero(&url, &run, DEADLINE).await;
    compare::wait_table_matches(&client, "orders_flat_repart", &report.rows, DEADLINE).await;
    support::flow::cut_over(&url, run, DEADLINE, "after the reconnect").await;
    compare::assert_table_matches(&client, "orders_flat", &report.rows).await;
}

#[tokio::test]
async fn an_idle_table_shows_no_lag_in_seconds_while_other_tables_are_written() {
    let Some(major) = test_majors().first().copied() else {
        return;
    };
    let Some(cluster) = Cluster::start_or_skip(major) else {
        return;
    };
    let db = unique_name("idlelag");
    let url = cluster.create_database(&db).await;
    let client = cluster.client(&db).await;
    schema::create_seed_table(&client, "orders_flat", 2_000).await;
    client
        .batch_execute("CREATE TABLE other (id bigserial PRIMARY KEY, filler text)")
        .await
        .unwrap();
    let run = spawn(&seed_run_args(&url, &["--cutover", "manual"]));
    wait_status(&url, &run, DEADLINE, "streaming", |v| {
        inspect::phase(v) == "streaming"
    })
    .await;
    // Some changes of the table, applied: the last applied commit then grows old.
    client
        .batch_execute("UPDATE orders_flat SET amount = amount WHERE id <= 50")
        .await
        .unwrap();
    wait_status(&url, &run, DEADLINE, "the table's changes applied", |v| {
        inspect::int(v, "applied_changes").unwrap_or(0) >= 50
    })
    .await;
    // Only another table is written now, a megabyte of WAL at a time.
    let mut lag_seen = 0;
    let mut samples = 0;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(8) {
        client
            .batch_execute(
                "INSERT INTO other (filler) SELECT repeat('x', 1000) FROM generate_series(1, 1000)",
            )
            .await
            .unwrap();
        let v = inspect::status_json(&url, "orders_flat").await.unwrap();
        let lag_bytes = inspect::int(&v, "lag_bytes").unwrap_or(0);
        if lag_bytes > 16 * 1024 {
            lag_seen += 1;
        }
        if v["running"] == Value::Bool(true) && !v["lag_seconds"].is_null() {
            samples += 1;
            assert_eq!(
                v["lag_seconds"].as_f64(),
                Some(0.0),
                "nothing of the table is pending, yet: {v}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        samples > 5,
        "too few samples with a lag in seconds ({samples})"
    );
    assert!(
        lag_seen > 0,
        "the other table's WAL never showed in lag_bytes"
    );
    support::flow::cut_over(&url, run, DEADLINE, "after the idle stretch").await;
    compare::assert_same_rows(&client, "orders_flat", "orders_flat_old").await;
}
