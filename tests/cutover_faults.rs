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
            assert!(
                report.anomalies.is_empty(),
                "PostgreSQL {major}, {point}: the writers found rows missing: {:?}",
                &report.anomalies[..report.anomalies.len().min(20)]
            );
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
