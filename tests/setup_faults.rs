//! A run that dies while setting up the stream, under concurrent writes: with the publication made,
//! while the slot is being created (a real `kill -9` while the slot waits for a transaction), with
//! the slot made, and with the key ranges recorded but nothing copied. Running the same command again
//! sets up what is missing and finishes the migration with every row right and nothing left behind.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::flow::{seed_run_args, spawn, wait_status};
use support::inspect::{self, output_text};
use support::{
    Cluster, Writers, WritersConfig, compare, schema, spawn_pgrepart_with_env, test_majors,
    unique_name, wait_until,
};

const DEADLINE: Duration = Duration::from_secs(120);

/// The exit status of a run stopped at a fault point (`pgrepart::fault::EXIT_STATUS`).
const FAULT_EXIT: i32 = 86;

/// The moments of the setup a run is stopped at; "slot-creating" is a kill -9 while the slot waits.
const POINTS: [&str; 4] = [
    "setup-publication-created",
    "slot-creating",
    "setup-slot-created",
    "setup-ranges-recorded",
];

#[tokio::test]
async fn a_run_killed_during_setup_is_finished_by_the_next_run() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        for point in POINTS {
            let db = unique_name("setupfault");
            let url = cluster.create_database(&db).await;
            let client = cluster.client(&db).await;
            schema::create_seed_table(&client, "orders_flat", 5_000).await;
            let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
            writers.wait_for_more_ops(100, DEADLINE).await;
            let args = seed_run_args(&url, &["--cutover", "auto"]);
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();

            if point == "slot-creating" {
                // An open transaction holds the slot's creation; the run is killed while it waits.
                let long = cluster.client(&db).await;
                long.batch_execute("BEGIN; SELECT txid_current()")
                    .await
                    .unwrap();
                let first = spawn(&args);
                wait_status(&url, &first, DEADLINE, "slot creation waiting", |v| {
                    v["waiting_for"].as_array().is_some_and(|w| !w.is_empty())
                })
                .await;
                let out = first.kill9().await;
                assert!(!out.status.success());
                long.batch_execute("COMMIT").await.unwrap();
            } else {
                let first = spawn_pgrepart_with_env(&refs, &[("PGREPART_TEST_FAULT", point)]);
                let out = first.wait_within(DEADLINE).await;
                assert_eq!(
                    out.status.code(),
                    Some(FAULT_EXIT),
                    "PostgreSQL {major}: the run should have stopped at {point}: {}",
                    output_text(&out)
                );
            }
            assert_eq!(inspect::relkind(&client, "orders_flat").await, Some('r'));
            writers.wait_for_more_ops(200, DEADLINE).await;
            wait_until(DEADLINE, "the dead run's walsender to be gone", || async {
                inspect::status_json(&url, "orders_flat")
                    .await
                    .is_none_or(|v| v.get("running") == Some(&Value::Bool(false)))
            })
            .await;

            let second = spawn(&args);
            let out = second.wait_within(DEADLINE).await;
            assert!(
                out.status.success(),
                "PostgreSQL {major}: the run after dying at {point} failed: {}",
                output_text(&out)
            );
            writers.wait_for_more_ops(200, DEADLINE).await;
            let report = writers.stop().await;
            report.assert_no_anomalies(format_args!("PostgreSQL {major}, {point}"));
            compare::assert_table_matches(&client, "orders_flat", &report.rows).await;
            assert_eq!(inspect::relkind(&client, "orders_flat").await, Some('p'));
            inspect::assert_no_slot_or_publication(&client).await;
            eprintln!(
                "PostgreSQL {major}: died at {point}, rerun finished: {}",
                report.summary()
            );
        }
    }
}
