//! The main promise: `pgrepart run` with an automatic cutover turns a table that is being written to
//! (before, during and after the migration) into a partitioned table that holds exactly the rows the
//! application wrote, with the old table kept, the slot and publication gone, and the id default
//! still working.

mod support;

use support::flow::{seed_run_args, spawn};

use std::time::{Duration, Instant};

use support::inspect::{self, output_text};
use support::{Cluster, Writers, WritersConfig, compare, schema, test_majors, unique_name};

const SEED_ROWS: usize = 80_000;
const DEADLINE: Duration = Duration::from_secs(120);

/// `lock held N ms` in `run`'s final line.
fn lock_held_ms(stdout: &str) -> Option<u64> {
    let at = stdout.find("lock held ")?;
    let rest = &stdout[at + "lock held ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

#[tokio::test]
async fn an_automatic_cutover_under_load_keeps_every_row() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let started = Instant::now();
        let db = unique_name("load");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_seed_table(&client, "orders_flat", SEED_ROWS).await;
        assert!(
            schema::toast_bytes(&client, "orders_flat").await > 0,
            "the seed table has no TOASTed rows"
        );
        // The seed's secondary indexes: the new table gets them after the copy, built per
        // partition in parallel sessions while the writers go on.
        client
            .batch_execute(
                "CREATE INDEX orders_flat_order_date_idx ON orders_flat (order_date); \
                 CREATE INDEX orders_flat_customer_idx ON orders_flat (customer_id, order_date DESC)",
            )
            .await
            .unwrap_or_else(|e| panic!("secondary indexes: {}", support::describe(&e)));

        let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
        // Writers are running (and one big transaction each is on its way) before the migration.
        writers.wait_for_more_ops(300, DEADLINE).await;
        let ops_at_start = writers.ops();

        let args = seed_run_args(&url, &[]);
        let run = spawn(&args);
        let out = run.wait_within(DEADLINE).await;
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "pgrepart run failed on PostgreSQL {major}: {}\nserver log tail:\n{}",
            output_text(&out),
            support::program::tail(&cluster.server_log(), 3000)
        );
        let ops_during = writers.ops() - ops_at_start;
        assert!(
            ops_during > 0,
            "the writers committed nothing during the migration"
        );

        // The writers go on against the new table (they write by name) after the cutover.
        writers.wait_for_more_ops(300, DEADLINE).await;
        let report = writers.stop().await;
        eprintln!("PostgreSQL {major}: {}", report.summary());
        eprintln!("PostgreSQL {major}: pgrepart said: {}", stdout.trim());

        assert_eq!(
            inspect::relkind(&client, "orders_flat").await,
            Some('p'),
            "orders_flat is not the partitioned table after the cutover"
        );
        assert_eq!(
            inspect::partitions(&client, "orders_flat").await,
            vec![
                "orders_flat_asia",
                "orders_flat_default",
                "orders_flat_eu",
                "orders_flat_us"
            ]
        );
        report.assert_no_anomalies("during the migration");
        compare::assert_table_matches(&client, "orders_flat", &report.rows).await;
        assert_eq!(
            inspect::relkind(&client, "orders_flat_old").await,
            Some('r'),
            "the old table orders_flat_old is not there"
        );
        inspect::assert_no_slot_or_publication(&client).await;

        // The secondary indexes, valid on the new table and on each partition, same definitions.
        let indexes: Vec<(String, i64, bool)> = client
            .query(
                "SELECT regexp_replace(pg_get_indexdef(i.indexrelid), '^.* USING ', ''), \
                        (SELECT count(*) FROM pg_inherits h JOIN pg_index p ON p.indexrelid = h.inhrelid \
                         WHERE h.inhparent = i.indexrelid AND p.indisvalid), \
                        i.indisvalid \
                 FROM pg_index i WHERE i.indrelid = 'orders_flat'::regclass AND NOT i.indisprimary ORDER BY 1",
                &[],
            )
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        assert_eq!(
            indexes,
            vec![
                ("btree (customer_id, order_date DESC)".to_string(), 4, true),
                ("btree (order_date)".to_string(), 4, true),
            ],
            "PostgreSQL {major}: the new table's secondary indexes"
        );

        // The new table was analyzed before the cutover: the parent's statistics over all its
        // partitions (autovacuum never makes these) and each partition's own, by an ANALYZE
        // (autovacuum's would count in autoanalyze_count).
        let inherited: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stats WHERE schemaname = 'public' \
                 AND tablename = 'orders_flat' AND inherited",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(
            inherited >= 6,
            "PostgreSQL {major}: the new table has no statistics over its partitions ({inherited} columns)"
        );
        support::wait_until(DEADLINE, "every partition's ANALYZE to show", || {
            let client = &client;
            async move {
                let analyzed: i64 = client
                    .query_one(
                        "SELECT count(*) FROM pg_stat_user_tables s JOIN pg_inherits i ON i.inhrelid = s.relid \
                         WHERE i.inhparent = 'orders_flat'::regclass AND s.analyze_count > 0",
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                analyzed == 4
            }
        })
        .await;

        // New rows still get their id from the sequence, above every id in the table.
        let max_id: i64 = client
            .query_one("SELECT max(id) FROM orders_flat", &[])
            .await
            .unwrap()
            .get(0);
        let new_id: i64 = client
            .query_one(
                "INSERT INTO orders_flat (order_date, customer_id, region, amount, details) \
                 VALUES (now(), 1, 'EU', 1.00, 'after cutover') RETURNING id",
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("insert through the id default: {}", support::describe(&e)))
            .get(0);
        assert!(
            new_id > max_id,
            "new id {new_id} is not above the max id {max_id}"
        );

        // Status says done; running the same command again, or `cutover`, has nothing left to do.
        let v = inspect::status_json(&url, "orders_flat").await.unwrap();
        assert_eq!(inspect::phase(&v), "done", "{v}");
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let again = support::pgrepart(&refs).await;
        assert!(
            again.status.success(),
            "rerunning the finished migration failed: {}",
            output_text(&again)
        );
        let cut = support::pgrepart(&["cutover", "--source", &url, "--table", "orders_flat"]).await;
        assert!(
            cut.status.success(),
            "cutover of a finished migration failed: {}",
            output_text(&cut)
        );
        assert_eq!(inspect::relkind(&client, "orders_flat").await, Some('p'));
        inspect::assert_no_slot_or_publication(&client).await;

        let held = lock_held_ms(&stdout)
            .unwrap_or_else(|| panic!("no \"lock held N ms\" in the output: {stdout}"));
        assert!(held < 2000, "the table lock was held {held} ms");
        eprintln!(
            "PostgreSQL {major}: migration under load passed in {:.1} s (lock held {held} ms, {ops_during} writer ops during the run)",
            started.elapsed().as_secs_f64()
        );
    }
}
