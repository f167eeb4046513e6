//! Hostile conditions while a migration streams under a write load: its connections terminated,
//! the server restarted, its slot dropped by someone else, its table altered. The run either rides
//! through (and every row is right) or stops with a message that says what happened.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::flow::{cut_over, pause, seed_run_args, spawn, wait_lag_near_zero, wait_status};
use support::inspect::{self, output_text};
use support::{
    Background, Cluster, Writers, WritersConfig, compare, pgrepart, schema, test_majors,
    unique_name,
};
use tokio_postgres::Client;

const DEADLINE: Duration = Duration::from_secs(120);

/// Waits until the run applies changes again: running, and more applied than `before`.
async fn wait_applying_past(url: &str, run: &Background, before: i64) -> i64 {
    let v = wait_status(url, run, DEADLINE, "changes applied again", |v| {
        v["running"] == Value::Bool(true)
            && inspect::int(v, "applied_changes").unwrap_or(0) > before
    })
    .await;
    inspect::int(&v, "applied_changes").unwrap()
}

async fn terminate(client: &Client, which: &str) -> u64 {
    let sql = match which {
        "walsender" => {
            "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE active"
        }
        _ => {
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgrepart apply'"
        }
    };
    client.query(sql, &[]).await.unwrap().len() as u64
}

#[tokio::test]
async fn terminated_connections_and_a_server_restart_are_ridden_through() {
    for major in test_majors() {
        let Some(mut cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let db = unique_name("faults");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_seed_table(&client, "orders_flat", 20_000).await;
        let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
        let run = spawn(&seed_run_args(&url, &["--cutover", "manual"]));
        let v = wait_status(
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
        let mut applied = inspect::int(&v, "applied_changes").unwrap();

        // The replication connection, then the apply connections (the applier's own and its
        // second session, `--apply-sessions` 2 by default), ended by an administrator.
        for (which, sessions) in [("walsender", 1), ("apply", 2)] {
            assert_eq!(
                terminate(&client, which).await,
                sessions,
                "PostgreSQL {major}: the {which} sessions to terminate"
            );
            writers.wait_for_more_ops(200, DEADLINE).await;
            applied = wait_applying_past(&url, &run, applied).await;
        }

        // A fast restart of the server: every connection drops at once.
        drop(client);
        cluster.restart();
        let client = cluster.client(&db).await;
        writers.wait_for_more_ops(200, DEADLINE).await;
        wait_applying_past(&url, &run, applied).await;
        let err = run.stderr_so_far();
        assert!(
            err.contains("reconnecting"),
            "PostgreSQL {major}: no reconnect logged:\n{err}"
        );

        let report = writers.stop().await;
        report.assert_no_anomalies("the writers' check");
        wait_lag_near_zero(&url, &run, DEADLINE).await;
        compare::wait_table_matches(&client, "orders_flat_repart", &report.rows, DEADLINE).await;
        cut_over(&url, run, DEADLINE, format_args!("PostgreSQL {major}")).await;
        compare::assert_table_matches(&client, "orders_flat", &report.rows).await;
    }
}

#[tokio::test]
async fn a_slot_dropped_by_someone_else_stops_the_run_with_what_to_do() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let db = unique_name("slotgone");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_seed_table(&client, "orders_flat", 10_000).await;
        let before = inspect::relations(&client).await;
        let run = spawn(&seed_run_args(&url, &["--cutover", "manual"]));
        let v = wait_status(&url, &run, DEADLINE, "streaming", |v| {
            inspect::phase(v) == "streaming"
        })
        .await;
        let slot = v["slot_name"].as_str().unwrap().to_string();

        // End its walsender and drop the slot before the run reconnects (it backs off a second).
        let deadline = std::time::Instant::now() + DEADLINE;
        loop {
            terminate(&client, "walsender").await;
            let dropped = client
                .query(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                     WHERE slot_name = $1 AND NOT active",
                    &[&slot],
                )
                .await
                .map(|rows| rows.len() == 1)
                .unwrap_or(false);
            if dropped {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "could not drop the slot"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let out = run.wait_within(DEADLINE).await;
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(1), "PostgreSQL {major}: {text}");
        assert!(
            text.contains("is gone") && text.contains("pgrepart abort"),
            "{text}"
        );

        let out = pgrepart(&["abort", "--source", &url, "--table", "orders_flat"]).await;
        assert!(out.status.success(), "{}", output_text(&out));
        inspect::assert_nothing_left_behind(&client, &before).await;
    }
}

#[tokio::test]
async fn a_column_change_on_the_source_stops_the_run_naming_it() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let db = unique_name("ddl");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_seed_table(&client, "orders_flat", 5_000).await;
        let run = spawn(&seed_run_args(&url, &["--cutover", "manual"]));
        wait_status(&url, &run, DEADLINE, "streaming", |v| {
            inspect::phase(v) == "streaming"
        })
        .await;

        client
            .batch_execute(
                "ALTER TABLE orders_flat ALTER COLUMN customer_id TYPE bigint; \
                 UPDATE orders_flat SET customer_id = 1 WHERE id = (SELECT min(id) FROM orders_flat)",
            )
            .await
            .unwrap();
        let out = run.wait_within(DEADLINE).await;
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(1), "PostgreSQL {major}: {text}");
        assert!(
            text.contains("changed on the source") && text.contains("customer_id: type changed"),
            "{text}"
        );
        let v = inspect::status_json(&url, "orders_flat").await.unwrap();
        assert_eq!(inspect::phase(&v), "failed", "{v}");
        assert!(
            v["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("customer_id")),
            "{v}"
        );
        let out = pgrepart(&["abort", "--source", &url, "--table", "orders_flat"]).await;
        assert!(out.status.success(), "{}", output_text(&out));
    }
}

/// `max_slot_wal_keep_size` exceeded while the run is paused (the slot holds WAL it cannot confirm):
/// the server invalidates the slot and ends its walsender; the run reconnects, finds the slot lost
/// and stops saying so and what to do; `abort` then removes everything.
#[tokio::test]
async fn an_invalidated_slot_stops_the_run_with_what_to_do() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let db = unique_name("slotlost");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        for sql in [
            "ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'",
            "SELECT pg_reload_conf()",
        ] {
            client.batch_execute(sql).await.unwrap();
        }
        schema::create_seed_table(&client, "orders_flat", 5_000).await;
        let before = inspect::relations(&client).await;
        let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
        let run = spawn(&seed_run_args(&url, &["--cutover", "manual"]));
        let v = wait_status(&url, &run, DEADLINE, "streaming", |v| {
            inspect::phase(v) == "streaming"
        })
        .await;
        let slot = v["slot_name"].as_str().unwrap().to_string();
        pause(&url, &run, DEADLINE).await;

        // Write WAL past the limit, switching segments and checkpointing until the slot is lost.
        let deadline = std::time::Instant::now() + DEADLINE;
        client
            .batch_execute("CREATE TABLE filler (g int, t text)")
            .await
            .unwrap();
        loop {
            let status: Option<String> = client
                .query_one(
                    "SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1",
                    &[&slot],
                )
                .await
                .unwrap()
                .get(0);
            if status.as_deref() == Some("lost") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "PostgreSQL {major}: the slot was not invalidated (wal_status {status:?})"
            );
            client
                .batch_execute(
                    "INSERT INTO filler SELECT g, md5(g::text) FROM generate_series(1, 50000) g",
                )
                .await
                .unwrap();
            client
                .batch_execute("SELECT pg_switch_wal()")
                .await
                .unwrap();
            client.batch_execute("CHECKPOINT").await.unwrap();
        }
        let out = run.wait_within(DEADLINE).await;
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(1), "PostgreSQL {major}: {text}");
        assert!(
            text.contains("invalidated") && text.contains("pgrepart abort"),
            "PostgreSQL {major}: {text}"
        );
        writers.stop().await;
        let out = pgrepart(&["abort", "--source", &url, "--table", "orders_flat"]).await;
        assert!(out.status.success(), "{}", output_text(&out));
        client.batch_execute("DROP TABLE filler").await.unwrap();
        inspect::assert_nothing_left_behind(&client, &before).await;
    }
}
