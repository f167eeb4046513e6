//! `ALTER TABLE ... ADD COLUMN` on the source during a migration, under concurrent writes:
//! a nullable column without a default is followed (added to the new table, its values applied),
//! also when it was added while no run was going (the rerun adds it and replays the older changes);
//! any other addition stops the run with a message naming the column.

mod support;

use std::time::Duration;

use support::flow::{cut_over, seed_run_args, spawn, wait_not_running, wait_status};
use support::inspect::{self, output_text};
use support::{
    Cluster, Writers, WritersConfig, compare, pgrepart, schema, test_majors, unique_name,
    wait_until,
};
use tokio_postgres::Client;

const DEADLINE: Duration = Duration::from_secs(120);

/// (id, note, memo) of every row, in id order.
async fn added_values(client: &Client, table: &str) -> Vec<(i64, Option<String>, Option<String>)> {
    client
        .query(
            &format!("SELECT id, note, memo::text FROM {table} ORDER BY id"),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn added_nullable_columns_are_followed_live_and_across_a_restart() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let db = unique_name("addcol");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_seed_table(&client, "orders_flat", 10_000).await;
        let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
        let args = seed_run_args(&url, &["--cutover", "manual"]);

        // Added while the run streams: followed at once.
        let first = spawn(&args);
        wait_status(&url, &first, DEADLINE, "streaming", |v| {
            inspect::phase(v) == "streaming"
        })
        .await;
        client
            .batch_execute(
                "ALTER TABLE orders_flat ADD COLUMN note text; \
                 UPDATE orders_flat SET note = 'note ' || id WHERE id % 13 = 0",
            )
            .await
            .unwrap();
        wait_until(DEADLINE, "the notes to reach the new table", || async {
            client
                .query_one(
                    "SELECT count(*) FROM pg_attribute WHERE attrelid = 'orders_flat_repart'::regclass AND attname = 'note'",
                    &[],
                )
                .await
                .is_ok_and(|r| r.get::<_, i64>(0) == 1)
                && client
                    .query_one(
                        "SELECT count(*) FROM orders_flat_repart WHERE note IS NOT NULL",
                        &[],
                    )
                    .await
                    .is_ok_and(|r| r.get::<_, i64>(0) > 0)
        })
        .await;
        assert!(
            first
                .stderr_so_far()
                .contains("columns added on the source"),
            "{}",
            first.stderr_so_far()
        );

        // Added while no run goes: the rerun adds it, then replays the changes from before it.
        let out = first.kill9().await;
        assert!(!out.status.success());
        client
            .batch_execute(
                "ALTER TABLE orders_flat ADD COLUMN memo varchar(20) COLLATE \"C\"; \
                 UPDATE orders_flat SET memo = 'memo ' || id WHERE id % 17 = 0; \
                 UPDATE orders_flat SET note = NULL WHERE id % 39 = 0",
            )
            .await
            .unwrap();
        writers.wait_for_more_ops(200, DEADLINE).await;
        wait_not_running(&url, DEADLINE).await;
        let second = spawn(&args);
        wait_status(&url, &second, DEADLINE, "the rerun to stream", |v| {
            inspect::phase(v) == "streaming"
                && v.get("running") == Some(&serde_json::Value::Bool(true))
        })
        .await;
        writers.wait_for_more_ops(200, DEADLINE).await;
        let report = writers.stop().await;
        cut_over(&url, second, DEADLINE, format_args!("PostgreSQL {major}")).await;

        report.assert_no_anomalies("the writers' check");
        compare::assert_table_matches(&client, "orders_flat", &report.rows).await;
        // Nothing wrote after the writers stopped: the old table is the source's final state.
        let new = added_values(&client, "orders_flat").await;
        let old = added_values(&client, "orders_flat_old").await;
        assert_eq!(new.len(), old.len());
        let differing: Vec<_> = new
            .iter()
            .zip(&old)
            .filter(|(a, b)| a != b)
            .take(10)
            .collect();
        assert!(
            differing.is_empty(),
            "PostgreSQL {major}: added columns differ (new, old): {differing:?}"
        );
        assert!(new.iter().any(|r| r.1.is_some()) && new.iter().any(|r| r.2.is_some()));
        let collation: String = client
            .query_one(
                "SELECT c.collname::text FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation \
                 WHERE a.attrelid = 'orders_flat'::regclass AND a.attname = 'memo'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(collation, "C");
        inspect::assert_no_slot_or_publication(&client).await;
        eprintln!(
            "PostgreSQL {major}: ADD COLUMN followed; {}",
            report.summary()
        );
    }
}

/// A column added with a default, and the last column dropped (which makes the stream look like
/// one from before an addition): each stops the run, naming the column.
#[tokio::test]
async fn other_column_changes_stop_the_run_naming_the_column() {
    let cases = [
        (
            "ALTER TABLE orders_flat ADD COLUMN flag int NOT NULL DEFAULT 0; \
             UPDATE orders_flat SET flag = 1 WHERE id = 1",
            "flag has a default",
        ),
        (
            "ALTER TABLE orders_flat DROP COLUMN details; \
             UPDATE orders_flat SET amount = 1 WHERE id = 1",
            "details: dropped",
        ),
    ];
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        for (ddl, expected) in cases {
            let db = unique_name("addcol_stop");
            let url = cluster.create_database(&db).await;
            let client = cluster.client(&db).await;
            schema::create_seed_table(&client, "orders_flat", 2_000).await;
            let run = spawn(&seed_run_args(&url, &["--cutover", "manual"]));
            wait_status(&url, &run, DEADLINE, "streaming", |v| {
                inspect::phase(v) == "streaming"
            })
            .await;
            client.batch_execute(ddl).await.unwrap();
            let out = run.wait_within(DEADLINE).await;
            let text = output_text(&out);
            assert_eq!(out.status.code(), Some(1), "PostgreSQL {major}: {text}");
            assert!(
                text.contains(expected),
                "PostgreSQL {major}, expected {expected:?}: {text}"
            );
            let out = pgrepart(&["abort", "--source", &url, "--table", "orders_flat"]).await;
            assert!(out.status.success(), "{}", output_text(&out));
            inspect::assert_no_slot_or_publication(&client).await;
        }
    }
}
