//! `--primary-key`: a generated new table's primary key built before the copy (changes apply
//! while it runs) or after it, with the other indexes (a faster copy; every change waits until
//! the key is built). Real migrations under concurrent writes, compared row by row.

mod support;

use std::time::Duration;

use support::flow::{cut_over, seed_run_args, spawn, spawn_with_env, wait_status};
use support::inspect::{self, output_text};
use support::{
    Cluster, Writers, WritersConfig, compare, pgrepart, schema, test_majors, unique_name,
};

const DEADLINE: Duration = Duration::from_secs(120);

/// (table, constraint name, has a parent constraint) of every primary key on `table` and its
/// partitions.
async fn primary_keys(client: &tokio_postgres::Client, table: &str) -> Vec<(String, String, bool)> {
    client
        .query(
            "SELECT c.conrelid::regclass::text, c.conname::text, c.conparentid <> 0 FROM pg_constraint c \
              WHERE c.contype = 'p' AND (c.conrelid = $1::text::regclass \
                    OR c.conrelid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = $1::text::regclass)) \
              ORDER BY 1",
            &[&table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// The new table's key is the parent's, attached to one on each partition, named as
/// `CREATE TABLE ... PRIMARY KEY` would have named them.
async fn assert_keys_attached(client: &tokio_postgres::Client, context: &str) {
    let keys = primary_keys(client, "orders_flat").await;
    assert_eq!(keys.len(), 5, "{context}: {keys:?}");
    for (table, name, attached) in &keys {
        if table == "orders_flat" {
            assert!(!attached, "{context}: {keys:?}");
        } else {
            assert_eq!(name, &format!("{table}_pkey"), "{context}: {keys:?}");
            assert!(
                attached,
                "{context}: {table}'s key is not attached: {keys:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_key_built_after_the_copy_applies_nothing_before_it_and_loses_nothing() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let db = unique_name("pkafter");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_seed_table(&client, "orders_flat", 20_000).await;
        let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
        writers.wait_for_more_ops(200, DEADLINE).await;

        // A slow copy, so that the writers change many rows while it runs.
        let args = seed_run_args(
            &url,
            &[
                "--cutover",
                "manual",
                "--verify",
                "off",
                "--primary-key",
                "after-copy",
                "--max-copy-rate",
                "2000",
                "--max-impact",
                "0",
            ],
        );
        let run = spawn(&args);
        wait_status(&url, &run, DEADLINE, "the copy under way", |v| {
            inspect::phase(v) == "copying" && inspect::int(v, "rows_streamed").unwrap_or(0) > 0
        })
        .await;
        writers.wait_for_more_ops(300, DEADLINE).await;
        // Rows of the copy are still uncommitted, so the key cannot exist yet: nothing applied.
        let v = inspect::status_json(&url, "orders_flat").await.unwrap();
        assert!(
            inspect::phase(&v) == "copying" && inspect::int(&v, "rows_copied").unwrap() < 20_000,
            "PostgreSQL {major}: the copy ended too soon for this test: {v}"
        );
        assert_eq!(
            inspect::int(&v, "applied_changes"),
            Some(0),
            "PostgreSQL {major}: a change was applied before the key was built: {v}"
        );
        assert_eq!(
            v.get("primary_key_pending"),
            Some(&serde_json::Value::Bool(true)),
            "PostgreSQL {major}: {v}"
        );
        let text = pgrepart(&["status", "--source", &url, "--table", "orders_flat"]).await;
        assert!(
            output_text(&text).contains("primary key      built after the copy"),
            "PostgreSQL {major}: {}",
            output_text(&text)
        );
        let keys = primary_keys(&client, "orders_flat_repart").await;
        assert!(
            keys.is_empty(),
            "PostgreSQL {major}: a key before the copy ended: {keys:?}"
        );

        // Once the key is built the queued changes go in, then the stream.
        let v = wait_status(&url, &run, DEADLINE, "changes applied", |v| {
            inspect::phase(v) == "streaming" && inspect::int(v, "applied_changes").unwrap_or(0) > 0
        })
        .await;
        assert_eq!(
            v.get("primary_key_pending"),
            Some(&serde_json::Value::Bool(false)),
            "PostgreSQL {major}: {v}"
        );
        writers.wait_for_more_ops(200, DEADLINE).await;
        let report = writers.stop().await;
        report.assert_no_anomalies(format_args!("PostgreSQL {major}"));
        let out = cut_over(&url, run, DEADLINE, format_args!("PostgreSQL {major}")).await;
        assert!(
            output_text(&out).contains("the primary key is built after the copy"),
            "PostgreSQL {major}: {}",
            output_text(&out)
        );
        // A copy under --max-copy-rate: its index builds go gently too.
        assert!(
            output_text(&out).contains("one at a time with a pause as long as each"),
            "PostgreSQL {major}: {}",
            output_text(&out)
        );
        compare::assert_table_matches(&client, "orders_flat", &report.rows).await;
        assert_keys_attached(&client, &format!("PostgreSQL {major}")).await;
        inspect::assert_no_slot_or_publication(&client).await;
    }
}

#[tokio::test]
async fn auto_leaves_the_key_for_after_the_copy_only_on_a_quiet_source() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        // Nothing else writes on the server: the key is built after the copy.
        let db = unique_name("pkquiet");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_seed_table(&client, "orders_flat", 5_000).await;
        let before = compare::read_table(&client, "orders_flat").await;
        let args = seed_run_args(&url, &["--verify", "off"]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = pgrepart(&refs).await;
        let text = output_text(&out);
        assert!(out.status.success(), "PostgreSQL {major}: {text}");
        assert!(
            text.contains("runs no writes of its own: the primary key is built after the copy"),
            "PostgreSQL {major}: {text}"
        );
        compare::assert_table_matches(&client, "orders_flat", &before).await;
        assert_keys_attached(&client, &format!("PostgreSQL {major}, quiet")).await;

        // With writers at work the key comes first.
        let db = unique_name("pkbusy");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_seed_table(&client, "orders_flat", 5_000).await;
        let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
        writers.wait_for_more_ops(200, DEADLINE).await;
        let run = spawn(&seed_run_args(
            &url,
            &["--cutover", "manual", "--verify", "off"],
        ));
        wait_status(&url, &run, DEADLINE, "streaming", |v| {
            inspect::phase(v) == "streaming"
        })
        .await;
        writers.wait_for_more_ops(200, DEADLINE).await;
        let report = writers.stop().await;
        report.assert_no_anomalies(format_args!("PostgreSQL {major}"));
        let out = cut_over(&url, run, DEADLINE, format_args!("PostgreSQL {major}")).await;
        let text = output_text(&out);
        assert!(
            text.contains("the source server runs writes: the primary key comes first"),
            "PostgreSQL {major}: {text}"
        );
        compare::assert_table_matches(&client, "orders_flat", &report.rows).await;
        assert_keys_attached(&client, &format!("PostgreSQL {major}, busy")).await;
        inspect::assert_no_slot_or_publication(&client).await;
    }
}

#[tokio::test]
async fn runs_killed_before_the_key_exists_are_finished_by_the_same_command() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let db = unique_name("pkresume");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_seed_table(&client, "orders_flat", 20_000).await;
        client
            .batch_execute("CREATE INDEX orders_flat_order_date_idx ON orders_flat (order_date)")
            .await
            .unwrap();
        let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
        writers.wait_for_more_ops(200, DEADLINE).await;
        let args = seed_run_args(
            &url,
            &[
                "--cutover",
                "manual",
                "--verify",
                "off",
                "--primary-key",
                "after-copy",
                "--max-impact",
                "0",
            ],
        );

        // 1. Killed in the middle of a slow copy: some ranges committed, no key.
        let mut slow = args.clone();
        slow.extend(["--max-copy-rate".to_string(), "2000".to_string()]);
        let run = spawn(&slow);
        wait_status(&url, &run, DEADLINE, "a range copied", |v| {
            inspect::int(v, "rows_copied").unwrap_or(0) > 0
        })
        .await;
        let out = run.kill9().await;
        assert!(!out.status.success(), "PostgreSQL {major}");
        support::flow::wait_not_running(&url, DEADLINE).await;
        assert!(
            primary_keys(&client, "orders_flat_repart").await.is_empty(),
            "PostgreSQL {major}"
        );
        writers.wait_for_more_ops(200, DEADLINE).await;

        // 2. Stopped once every partition has its key and indexes, before any is attached.
        let run = spawn_with_env(&args, &[("PGREPART_TEST_FAULT", "partition-indexes-built")]);
        let out = run.wait_within(DEADLINE).await;
        assert_eq!(
            out.status.code(),
            Some(86),
            "PostgreSQL {major}: {}",
            output_text(&out)
        );
        support::flow::wait_not_running(&url, DEADLINE).await;
        let keys = primary_keys(&client, "orders_flat_repart").await;
        let target_keys: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_constraint c JOIN pg_inherits i ON i.inhrelid = c.conrelid \
                  WHERE c.contype = 'p' AND i.inhparent = 'orders_flat_repart'::regclass",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            target_keys, 4,
            "PostgreSQL {major}: each partition's key built, none attached ({keys:?})"
        );
        writers.wait_for_more_ops(200, DEADLINE).await;

        // 3. The same command keeps those keys, attaches them, and finishes.
        let run = spawn(&args);
        wait_status(&url, &run, DEADLINE, "streaming", |v| {
            inspect::phase(v) == "streaming"
        })
        .await;
        writers.wait_for_more_ops(200, DEADLINE).await;
        let report = writers.stop().await;
        report.assert_no_anomalies(format_args!("PostgreSQL {major}"));
        cut_over(&url, run, DEADLINE, format_args!("PostgreSQL {major}")).await;
        compare::assert_table_matches(&client, "orders_flat", &report.rows).await;
        assert_keys_attached(&client, &format!("PostgreSQL {major}")).await;
        let valid = inspect::valid_indexes_on(&client, "orders_flat", "order_date").await;
        assert_eq!(valid, 5, "PostgreSQL {major}: the order_date indexes");
        inspect::assert_no_slot_or_publication(&client).await;
    }
}
