//! A run that dies inside the cutover, at each of its steps, under concurrent writes: before the
//! lock, holding the lock after the fence was reached, with the renames done but not committed, and
//! after the commit but before the slot and publication are dropped. Running the same command again
//! must finish the migration with every row right and nothing left behind.
//!
//! The process is stopped by the test fault points (`PGREPART_TEST_FAULT`, see `src/fault.rs`),
//! which exit at once without any cleanup: to the server this is the same as `kill -9`.

mod support;

use std::time::{Duration, Instant};

use support::flow::{seed_run_args, wait_not_running};
use support::inspect::{self, output_text};
use support::{
    Cluster, Writers, WritersConfig, compare, schema, spawn_pgrepart, spawn_pgrepart_with_env,
    test_majors, unique_name,
};

const DEADLINE: Duration = Duration::from_secs(120);

/// The exit status of a run stopped at a fault point (`pgrepart::fault::EXIT_STATUS`).
const FAULT_EXIT: i32 = 86;

/// Each cutover step, and whether the swap has committed when a run dies there.
const POINTS: [(&str, bool); 4] = [
    ("cutover-before-lock", false),
    ("cutover-locked", false),
    ("cutover-before-commit", false),
    ("cutover-after-commit", true),
];

#[tokio::test]
async fn a_run_killed_at_each_step_of_the_cutover_is_finished_by_the_next_run() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        for (point, swapped) in POINTS {
            let started = Instant::now();
            let db = unique_name("cutfault");
            let url = cluster.create_database(&db).await;
            let client = cluster.client(&db).await;
            schema::create_seed_table(&client, "orders_flat", 5_000).await;
            let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
            writers.wait_for_more_ops(100, DEADLINE).await;

            let args = seed_run_args(&url, &["--cutover", "auto", "--lock-timeout-ms", "2000"]);
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let first = spawn_pgrepart_with_env(&refs, &[("PGREPART_TEST_FAULT", point)]);
            let out = first.wait_within(DEADLINE).await;
            assert_eq!(
                out.status.code(),
                Some(FAULT_EXIT),
                "PostgreSQL {major}: the run should have stopped at {point}: {}",
                output_text(&out)
            );
            let expected_kind = if swapped { 'p' } else { 'r' };
            assert_eq!(
                inspect::relkind(&client, "orders_flat").await,
                Some(expected_kind),
                "PostgreSQL {major}: after dying at {point}, orders_flat should be relkind {expected_kind}"
            );
            // The lock died with the run's session: the application writes on, whichever table
            // now carries the name.
            writers.wait_for_more_ops(200, DEADLINE).await;
            wait_not_running(&url, DEADLINE).await;

            let second = spawn_pgrepart(&refs);
            let out = second.wait_within(DEADLINE).await;
            assert!(
                out.status.success(),
                "PostgreSQL {major}: the run after dying at {point} failed: {}",
                output_text(&out)
            );
            if swapped {
                assert!(
                    String::from_utf8_lossy(&out.stdout).contains("already migrated"),
                    "PostgreSQL {major}: the rerun after {point} should only clean up: {}",
                    output_text(&out)
                );
            }
            writers.wait_for_more_ops(200, DEADLINE).await;
            let report = writers.stop().await;
            report.assert_no_anomalies(format_args!("PostgreSQL {major}, {point}"));
            compare::assert_table_matches(&client, "orders_flat", &report.rows).await;
            assert_eq!(inspect::relkind(&client, "orders_flat").await, Some('p'));
            assert_eq!(
                inspect::relkind(&client, "orders_flat_old").await,
                Some('r')
            );
            inspect::assert_no_slot_or_publication(&client).await;
            eprintln!(
                "PostgreSQL {major}: died at {point}, rerun finished: {} in {:.1} s",
                report.summary(),
                started.elapsed().as_secs_f64()
            );
        }
    }
}

/// Which relation a materialized view's query reads.
async fn matview_reads(client: &tokio_postgres::Client, matview: &str) -> Vec<String> {
    client
        .query(
            "SELECT DISTINCT d.refobjid::regclass::text FROM pg_rewrite r \
             JOIN pg_depend d ON d.objid = r.oid AND d.classid = 'pg_rewrite'::regclass \
             WHERE r.ev_class = $1::text::regclass AND d.refclassid = 'pg_class'::regclass \
               AND d.refobjid <> r.ev_class ORDER BY 1",
            &[&matview],
        )
        .await
        .unwrap_or_else(|e| panic!("reading what {matview} reads: {}", support::describe(&e)))
        .into_iter()
        .map(|r| r.get(0))
        .collect()
}

/// A run that dies after the swap committed but before a materialized view over the table was
/// rebuilt (right after the commit, and inside the rebuild's own transaction) leaves the rebuild
/// recorded: `status` lists it and the next run does it, with the matview's index and data.
#[tokio::test]
async fn a_run_killed_before_the_matview_rebuild_has_it_done_by_the_next_run() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        for point in ["cutover-after-commit", "matview-rebuilt-before-commit"] {
            let db = unique_name("mvfault");
            let url = cluster.create_database(&db).await;
            let client = cluster.client(&db).await;
            schema::create_seed_table(&client, "orders_flat", 3_000).await;
            client
                .batch_execute(
                    "CREATE MATERIALIZED VIEW region_totals AS \
                       SELECT region, count(*) AS orders FROM orders_flat GROUP BY region; \
                     CREATE UNIQUE INDEX region_totals_region ON region_totals (region);",
                )
                .await
                .unwrap_or_else(|e| panic!("matview: {}", support::describe(&e)));
            // Changes during the migration, so a rebuilt matview's data differs from the old one's.
            let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
            writers.wait_for_more_ops(100, DEADLINE).await;

            let args = seed_run_args(&url, &["--cutover", "auto"]);
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = spawn_pgrepart_with_env(&refs, &[("PGREPART_TEST_FAULT", point)])
                .wait_within(DEADLINE)
                .await;
            assert_eq!(
                out.status.code(),
                Some(FAULT_EXIT),
                "PostgreSQL {major}: the run should have stopped at {point}: {}",
                output_text(&out)
            );
            assert_eq!(inspect::relkind(&client, "orders_flat").await, Some('p'));
            assert_eq!(
                matview_reads(&client, "region_totals").await,
                vec!["orders_flat_old".to_string()],
                "PostgreSQL {major}, {point}: the matview should still read the old table"
            );
            wait_not_running(&url, DEADLINE).await;
            let status = inspect::status_json(&url, "orders_flat")
                .await
                .expect("status of the migration");
            assert_eq!(
                status["pending_matviews"],
                serde_json::json!(["public.region_totals"]),
                "PostgreSQL {major}, {point}: {status}"
            );

            // The writes stop here, so the rebuilt matview must count exactly the table's rows.
            let report = writers.stop().await;
            report.assert_no_anomalies(format_args!("PostgreSQL {major}, {point}"));
            compare::assert_table_matches(&client, "orders_flat", &report.rows).await;

            let out = spawn_pgrepart(&refs).wait_within(DEADLINE).await;
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success()
                    && stdout.contains(
                        "recreated materialized view public.region_totals on the new table"
                    ),
                "PostgreSQL {major}: the run after dying at {point} should rebuild the matview: {}",
                output_text(&out)
            );
            assert_eq!(
                matview_reads(&client, "region_totals").await,
                vec!["orders_flat".to_string()],
                "PostgreSQL {major}, {point}: the matview should read the new table"
            );
            let row = client
                .query_one(
                    "SELECT (SELECT sum(orders)::bigint FROM region_totals), \
                            (SELECT count(*) FROM orders_flat), \
                            (SELECT indisunique FROM pg_index WHERE indexrelid = 'region_totals_region'::regclass), \
                            (SELECT count(*) FROM pg_class WHERE relname LIKE '%pgrepart_new')",
                    &[],
                )
                .await
                .unwrap_or_else(|e| panic!("read the matview: {}", support::describe(&e)));
            assert_eq!(
                row.get::<_, i64>(0),
                row.get::<_, i64>(1),
                "PostgreSQL {major}, {point}: the rebuilt matview counts the new table's rows"
            );
            assert_eq!(
                row.get::<_, Option<bool>>(2),
                Some(true),
                "its unique index"
            );
            assert_eq!(row.get::<_, i64>(3), 0, "temporary names left behind");
            let status = inspect::status_json(&url, "orders_flat")
                .await
                .expect("status of the migration");
            assert_eq!(
                status["pending_matviews"],
                serde_json::json!([]),
                "PostgreSQL {major}, {point}: {status}"
            );
            inspect::assert_no_slot_or_publication(&client).await;
            // A third run has nothing left to do.
            let out = spawn_pgrepart(&refs).wait_within(DEADLINE).await;
            assert!(
                out.status.success()
                    && String::from_utf8_lossy(&out.stdout).contains("nothing left to do"),
                "PostgreSQL {major}: {}",
                output_text(&out)
            );
        }
    }
}
