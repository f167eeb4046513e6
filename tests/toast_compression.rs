//! The compression of the TOASTed values written into the new table (`--toast-compression`): lz4
//! by default where the server has it, the server's default with `server`, and a column's own
//! method always; for the rows the copy writes and for those the applier writes. And a column's
//! own storage mode (`SET STORAGE`), which the new table and each of its partitions keep.

mod support;

use std::time::Duration;

use support::flow::{cut_over, seed_run_args, spawn, wait_status};
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
            cut_over(
                &url,
                run,
                DEADLINE,
                format_args!("PostgreSQL {major}, --toast-compression {flag:?}"),
            )
            .await;
            compare::assert_same_rows(&client, "orders_flat_old", "orders_flat").await;
            inspect::assert_no_slot_or_publication(&client).await;
        }
    }
}

/// `attstorage` of `column` in the partitioned `table` and in each of its partitions, as
/// (relation, storage).
async fn storage_tree(client: &Client, table: &str, column: &str) -> Vec<(String, String)> {
    client
        .query(
            "SELECT c.relname::text, a.attstorage::text \
             FROM pg_partition_tree(to_regclass($1)) pt \
             JOIN pg_class c ON c.oid = pt.relid \
             JOIN pg_attribute a ON a.attrelid = pt.relid AND a.attname = $2 \
             ORDER BY pt.level, 1",
            &[&schema::ident(table), &column],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn a_columns_storage_mode_goes_to_the_new_table_and_its_partitions() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let db = unique_name("storage");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_seed_table(&client, "orders_flat", SEED_ROWS).await;
        // Long, compressible values: EXTERNAL keeps them uncompressed; `notes` is MAIN.
        client
            .batch_execute(
                "ALTER TABLE orders_flat ADD COLUMN notes text;
                 ALTER TABLE orders_flat ALTER COLUMN details SET STORAGE EXTERNAL;
                 ALTER TABLE orders_flat ALTER COLUMN notes SET STORAGE MAIN;
                 UPDATE orders_flat SET details = repeat('compressible details ', 500),
                                        notes = repeat('a note ', 1500)
                 WHERE id % 10 = 0;",
            )
            .await
            .unwrap();

        let mut plan = seed_run_args(&url, &[]);
        plan[0] = "plan".into();
        let plan: Vec<&str> = plan.iter().map(String::as_str).collect();
        let out = pgrepart(&plan).await;
        assert!(out.status.success(), "{}", output_text(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        let external = "ALTER TABLE \"public\".\"orders_flat_repart\" ALTER COLUMN \"details\" SET STORAGE EXTERNAL;";
        let main = "ALTER TABLE \"public\".\"orders_flat_repart\" ALTER COLUMN \"notes\" SET STORAGE MAIN;";
        let first_partition = text
            .find(" PARTITION OF ")
            .expect("plan prints the partitions");
        for statement in [external, main] {
            let at = text.find(statement).unwrap_or_else(|| {
                panic!("PostgreSQL {major}: plan must print {statement}\n{text}")
            });
            assert!(
                at < first_partition,
                "PostgreSQL {major}: the storage is set before the partitions are created\n{text}"
            );
        }

        let out = pgrepart(
            &seed_run_args(&url, &["--cutover", "auto"])
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
        .await;
        assert!(out.status.success(), "{}", output_text(&out));
        assert_eq!(inspect::relkind(&client, "orders_flat").await, Some('p'));

        for (column, expected) in [("details", "e"), ("notes", "m")] {
            let tree = storage_tree(&client, "orders_flat", column).await;
            assert_eq!(
                tree.len(),
                5,
                "PostgreSQL {major}: the new table and its 4 partitions: {tree:?}"
            );
            assert!(
                tree.iter().all(|(_, s)| s == expected),
                "PostgreSQL {major}: {column} must keep storage {expected}: {tree:?}"
            );
            let source: String = client
                .query_one(
                    "SELECT attstorage::text FROM pg_attribute \
                     WHERE attrelid = 'orders_flat_old'::regclass AND attname = $1",
                    &[&column],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(
                source, expected,
                "PostgreSQL {major}: the old table's {column}"
            );
        }
        // EXTERNAL in effect when the copy wrote the values: none of them is compressed.
        assert_eq!(
            methods(&client, "orders_flat", "details").await,
            vec![(None, (SEED_ROWS / 10) as i64)],
            "PostgreSQL {major}: details is EXTERNAL, so its values stay uncompressed"
        );

        compare::assert_same_rows(&client, "orders_flat_old", "orders_flat").await;
        let differing: i64 = client
            .query_one(
                "SELECT count(*) FROM orders_flat_old o FULL JOIN orders_flat n USING (id) \
                 WHERE o.id IS NULL OR n.id IS NULL OR o.notes IS DISTINCT FROM n.notes",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            differing, 0,
            "PostgreSQL {major}: rows whose notes differ between the old and the new table"
        );
        inspect::assert_no_slot_or_publication(&client).await;
    }
}
