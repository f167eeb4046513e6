//! TRUNCATE of the source: applied to the new table once the copy is done. Issued during the copy
//! (slowed down with `--max-copy-rate`), it waits for the range being read (its transaction holds
//! ACCESS SHARE on the table), commits between two ranges, and is applied once every range is
//! copied (docs/design.md §5a).

mod support;

use std::time::Duration;

use support::flow::{cut_over, seed_run_args, spawn, wait_status};
use support::inspect;
use support::{Cluster, compare, schema, test_majors, unique_name};

const DEADLINE: Duration = Duration::from_secs(120);

#[tokio::test]
async fn a_truncate_after_the_copy_is_applied() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let db = unique_name("trunc");
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
                "TRUNCATE orders_flat; \
                 INSERT INTO orders_flat (order_date, customer_id, region, amount, details) \
                 SELECT timestamp '2025-01-01' + g * interval '1 hour', g, \
                        (ARRAY['US','EU','ASIA','LATAM'])[1 + g % 4], g, 'after truncate' \
                 FROM generate_series(1, 40) g",
            )
            .await
            .unwrap();
        let expected = compare::read_table(&client, "orders_flat").await;
        assert_eq!(expected.len(), 40);
        support::wait_until(
            DEADLINE,
            "the new table to hold exactly the rows after the TRUNCATE",
            || {
                let (client, expected) = (&client, &expected);
                async move { compare::read_table(client, "orders_flat_repart").await == *expected }
            },
        )
        .await;

        cut_over(&url, run, DEADLINE, format_args!("PostgreSQL {major}")).await;
        compare::assert_table_matches(&client, "orders_flat", &expected).await;
    }
}

#[tokio::test]
async fn a_truncate_issued_during_the_copy_waits_for_it_and_is_applied() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let db = unique_name("trunccopy");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_seed_table(&client, "orders_flat", 12_000).await;
        // A few seconds of copy: time enough to truncate in the middle of it.
        let run = spawn(&seed_run_args(
            &url,
            &[
                "--cutover",
                "manual",
                "--max-copy-rate",
                "3000",
                "--jobs",
                "1",
            ],
        ));
        wait_status(&url, &run, DEADLINE, "the copy under way", |v| {
            inspect::phase(v) == "copying" && inspect::int(v, "rows_streamed").unwrap_or(0) > 0
        })
        .await;
        let truncater = cluster.client(&db).await;
        let truncate =
            tokio::spawn(async move { truncater.batch_execute("TRUNCATE orders_flat").await });
        let v = inspect::status_json(&url, "orders_flat").await.unwrap();
        assert_eq!(
            inspect::phase(&v),
            "copying",
            "PostgreSQL {major}: the copy ended too soon for this test: {v}"
        );
        truncate.await.unwrap().unwrap();

        wait_status(&url, &run, DEADLINE, "streaming", |v| {
            inspect::phase(v) == "streaming"
        })
        .await;
        support::wait_until(
            DEADLINE,
            "the new table to be empty after the TRUNCATE",
            || {
                let client = &client;
                async move {
                    compare::read_table(client, "orders_flat_repart")
                        .await
                        .is_empty()
                }
            },
        )
        .await;
        cut_over(&url, run, DEADLINE, format_args!("PostgreSQL {major}")).await;
        assert!(compare::read_table(&client, "orders_flat").await.is_empty());
    }
}
