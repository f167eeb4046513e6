//! The compression of the TOASTed values written into the new table (`--toast-compression`): lz4
//! by default where the server has it, the server's default with `server`, and a column's own
//! method always; for the rows the copy writes and for those the applier writes.

mod support;

use std::time::Duration;

use support::flow::{seed_run_args, spawn, wait_status};
use support::inspect::{self, output_text};
use support::{Cluster, compare, pgrepart, schema, test_majors, unique_name, wait_until};
use tokio_postgres::Client;

const SEED_ROWS: usize = 3_000;
const DEADLINE: Duration = Duration::from_secs(180);

/// The methods of `column`'s long values in `table`, with their counts.
async fn methods(client: &Client, table: &str, column: &str) -> Vec<(Option<String>, i64)> {
    client
        .query(
            &format!(
                "SELECT pg_column_compression({column})::text, count(*) FROM {} \
                 WHERE length({column}) > 4000 GROUP BY 1 ORDER BY 1",
                schema::ident(table)
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn new_values_get_lz4_unless_told_otherwise_and_a_columns_own_method_stays() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let probe = cluster.client("postgres").await;
        let lz4: bool = probe
            .query_one(
                "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        let by_default = if lz4 { "lz4" } else { "pglz" };
        for (flag, expected) in [(None, by_default), (Some("server"), "pglz")] {
            let db = unique_name("toast");
            let url = cluster.create_database(&db).await;
            let client = cluster.client(&db).await;
            schema::create_seed_table(&client, "orders_flat", SEED_ROWS).await;
            // Long, compressible values; `notes` has a method of its own.
            client
                .batch_execute(
                    "ALTER TABLE orders_flat ADD COLUMN notes text COMPRESSION pglz;
                     UPDATE orders_flat SET details = repeat('compressible details ', 500),
                                            notes = repeat('a note ', 1500)
                     WHERE id % 10 = 0;",
                )
                .await
                .unwrap();
            let mut extra = vec!["--cutover", "manual", "--verify", "off"];
            if let Some(f) = flag {
                extra.extend(["--toast-compression", f]);
            }
            let run = spawn(&seed_run_args(&url, &extra));
            wait_status(&url, &run, DEADLINE, "the migration to stream", |v| {
                inspect::phase(v) == "streaming"
            })
            .await;
            // A row the applier writes.
            client
                .batch_execute(
                    "INSERT INTO orders_flat (order_date, customer_id, region, details, notes)
                     VALUES (now(), 1, 'EU', repeat('applied details ', 600), repeat('an applied note ', 600))",
                )
                .await
                .unwrap();
            let applied = || async {
                client
                    .query_one(
                        "SELECT count(*) FROM orders_flat_repart WHERE details LIKE 'applied%'",
                        &[],
                    )
                    .await
                    .unwrap()
                    .get::<_, i64>(0)
                    == 1
            };
            wait_until(DEADLINE, "the applier to write the new row", applied).await;

            let rows = (SEED_ROWS / 10 + 1) as i64;
            assert_eq!(
                methods(&client, "orders_flat_repart", "details").await,
                vec![(Some(expected.to_string()), rows)],
                "PostgreSQL {major}, --toast-compression {flag:?}: the new table's details"
            );
            assert_eq!(
                methods(&client, "orders_flat_repart", "notes").await,
                vec![(Some("pglz".to_string()), rows)],
                "PostgreSQL {major}, --toast-compression {flag:?}: a column's own method must stay"
            );
            let cut = pgrepart(&["cutover", "--source", &url, "--table", "orders_flat"]).await;
            assert!(cut.status.success(), "{}", output_text(&cut));
            let out = run.wait_within(DEADLINE).await;
            assert!(out.status.success(), "{}", output_text(&out));
            compare::assert_same_rows(&client, "orders_flat_old", "orders_flat").await;
            inspect::assert_no_slot_or_publication(&client).await;
        }
    }
}
