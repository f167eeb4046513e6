//! `--into` an existing partitioned table with `--cutover manual`: `status --json` while it streams,
//! `pgrepart cutover` from another process, and the DBA's table (with its indexes) taking the
//! name. And an `--into` table whose columns do not match is refused with nothing left behind.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::inspect::{self, output_text};
use support::{
    Cluster, Writers, WritersConfig, compare, pgrepart, schema, spawn_pgrepart, test_majors,
    unique_name, wait_until,
};

const SEED_ROWS: usize = 30_000;
const DEADLINE: Duration = Duration::from_secs(120);

async fn count(client: &tokio_postgres::Client, table: &str) -> i64 {
    client
        .query_one(
            &format!("SELECT count(*) FROM {}", schema::ident(table)),
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// The columns of each index on `table`, e.g. `["customer_id", "id,region", "order_date"]`.
async fn index_columns(client: &tokio_postgres::Client, table: &str) -> Vec<String> {
    client
        .query(
            "SELECT string_agg(a.attname, ',' ORDER BY k.ord) FROM pg_index i \
             CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = to_regclass($1) GROUP BY i.indexrelid ORDER BY 1",
            &[&schema::ident(table)],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn into_an_existing_table_with_a_manual_cutover() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let started = Instant::now();
        let db = unique_name("into");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_seed_table(&client, "orders_flat", SEED_ROWS).await;
        schema::create_seed_target(&client, "orders_list").await;
        let target_indexes = index_columns(&client, "orders_list").await;
        assert_eq!(
            target_indexes,
            vec!["customer_id", "id,region", "order_date"]
        );

        let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
        writers.wait_for_more_ops(100, DEADLINE).await;
        let rows_at_start = count(&client, "orders_flat").await;
        let ops_at_start = writers.ops();

        let run = spawn_pgrepart(&[
            "run",
            "--source",
            &url,
            "--table",
            "orders_flat",
            "--into",
            "orders_list",
            "--cutover",
            "manual",
        ]);

        // Streaming, with the documented fields, and changes applied.
        let last: Arc<Mutex<Option<Value>>> = Arc::default();
        wait_until(
            DEADLINE,
            "status --json to say streaming with changes applied",
            || {
                let (url, last) = (url.clone(), last.clone());
                async move {
                    let Some(v) = inspect::status_json(&url, "orders_flat").await else {
                        return false;
                    };
                    let ready = inspect::phase(&v) == "streaming"
                        && inspect::int(&v, "applied_changes").unwrap_or(0) > 0;
                    *last.lock().unwrap() = Some(v);
                    ready
                }
            },
        )
        .await;
        let ops_at_streaming = writers.ops();
        let status = last.lock().unwrap().clone().unwrap();
        eprintln!("PostgreSQL {major}: status while streaming: {status}");
        for field in [
            "phase",
            "rows_copied",
            "lag_bytes",
            "applied_changes",
            "running",
        ] {
            assert!(
                status.get(field).is_some(),
                "status has no {field}: {status}"
            );
        }
        let copied = inspect::int(&status, "rows_copied").expect("rows_copied is an integer");
        // Every writer op changes the row count by at most one.
        let slack = (ops_at_streaming - ops_at_start) as i64;
        assert!(
            copied >= rows_at_start - slack && copied <= rows_at_start + slack,
            "rows_copied {copied}, but the table held {rows_at_start} rows when the run started \
             (and the writers did {slack} ops since)"
        );
        assert!(copied >= SEED_ROWS as i64 / 2, "rows_copied {copied}");
        let lag = status.get("lag_bytes").unwrap();
        assert!(
            lag.as_i64().is_some_and(|l| l >= 0),
            "lag_bytes is not a non-negative number: {lag}"
        );
        assert_eq!(status.get("running"), Some(&Value::Bool(true)), "{status}");

        // Manual mode: it keeps streaming until asked.
        writers.wait_for_more_ops(200, DEADLINE).await;
        let v = inspect::status_json(&url, "orders_flat").await.unwrap();
        assert_eq!(inspect::phase(&v), "streaming", "{v}");
        assert_eq!(inspect::relkind(&client, "orders_flat").await, Some('r'));

        let cut = pgrepart(&["cutover", "--source", &url, "--table", "orders_flat"]).await;
        assert!(
            cut.status.success(),
            "pgrepart cutover failed on PostgreSQL {major}: {}",
            output_text(&cut)
        );
        // The swap is done when `cutover` returns.
        assert_eq!(
            inspect::relkind(&client, "orders_flat").await,
            Some('p'),
            "orders_flat is not partitioned when `pgrepart cutover` returned"
        );
        let out = run.wait_within(DEADLINE).await;
        assert!(
            out.status.success(),
            "pgrepart run failed on PostgreSQL {major}: {}",
            output_text(&out)
        );

        writers.wait_for_more_ops(200, DEADLINE).await;
        let report = writers.stop().await;
        eprintln!("PostgreSQL {major}: {}", report.summary());
        report.assert_no_anomalies("the writers' check");
        compare::assert_table_matches(&client, "orders_flat", &report.rows).await;
        assert_eq!(inspect::relkind(&client, "orders_list").await, None);
        assert_eq!(
            inspect::relkind(&client, "orders_flat_old").await,
            Some('r')
        );
        assert_eq!(
            inspect::partitions(&client, "orders_flat").await,
            vec![
                "orders_list_asia",
                "orders_list_default",
                "orders_list_eu",
                "orders_list_us"
            ]
        );
        assert_eq!(
            index_columns(&client, "orders_flat").await,
            target_indexes,
            "the --into table's indexes changed"
        );
        inspect::assert_no_slot_or_publication(&client).await;
        // The --into table had no default on id: the cutover hands the old table's one over.
        let max_id: i64 = client
            .query_one("SELECT max(id) FROM orders_flat", &[])
            .await
            .unwrap()
            .get(0);
        let new_id: i64 = client
            .query_one(
                "INSERT INTO orders_flat (order_date, customer_id, region, amount, details) \
                 VALUES (now(), 1, 'US', 1.00, 'after cutover') RETURNING id",
                &[],
            )
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL {major}: insert through the id default after an --into cutover: {}",
                    support::describe(&e)
                )
            })
            .get(0);
        assert!(
            new_id > max_id,
            "new id {new_id} is not above the max id {max_id}"
        );
        let v = inspect::status_json(&url, "orders_flat").await.unwrap();
        assert_eq!(inspect::phase(&v), "done", "{v}");
        assert_eq!(v.get("running"), Some(&Value::Bool(false)), "{v}");
        eprintln!(
            "PostgreSQL {major}: --into with manual cutover passed in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
}

#[tokio::test]
async fn into_a_table_whose_columns_do_not_match_is_refused() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let db = unique_name("into_bad");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_seed_table(&client, "orders_flat", 1_000).await;
        client
            .batch_execute(
                "CREATE TABLE orders_bad (
                     id BIGINT NOT NULL,
                     order_date TIMESTAMP NOT NULL,
                     customer_id BIGINT NOT NULL,
                     region TEXT NOT NULL,
                     amount NUMERIC(10,2),
                     details TEXT,
                     PRIMARY KEY (id, region)
                 ) PARTITION BY LIST (region);
                 CREATE TABLE orders_bad_all PARTITION OF orders_bad DEFAULT;",
            )
            .await
            .unwrap();
        let before = inspect::relations(&client).await;

        let out = pgrepart(&[
            "run",
            "--source",
            &url,
            "--table",
            "orders_flat",
            "--into",
            "orders_bad",
        ])
        .await;
        assert_eq!(
            out.status.code(),
            Some(1),
            "expected exit 1 on PostgreSQL {major}: {}",
            output_text(&out)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("customer_id"),
            "the refusal does not name the column customer_id: {stderr}"
        );
        inspect::assert_nothing_left_behind(&client, &before).await;
        compare::assert_same_rows(&client, "orders_flat", "orders_flat").await;
        assert_eq!(count(&client, "orders_flat").await, 1_000);
        assert_eq!(count(&client, "orders_bad").await, 0);
    }
}
