//! Repartitioning a table that is already partitioned: `orders_flat` LIST-partitioned by region
//! becomes RANGE-partitioned by order_date (generated monthly partitions) under concurrent writers,
//! its changes published through the root (publish_via_partition_root). Before that, `plan`
//! refuses a leaf partition without a usable replica identity and new partition names that clash
//! with the source's partitions, and changes nothing.

mod support;

use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use support::flow::cut_over;
use support::inspect::{self, output_text};
use support::{
    Cluster, Writers, WritersConfig, compare, pgrepart, schema, test_majors, unique_name,
};
use tokio_postgres::Client;

const SEED_ROWS: usize = 30_000;
const DEADLINE: Duration = Duration::from_secs(180);
/// Generated monthly partitions.
const MONTHLY: &[&str] = &["--interval", "month"];

fn range_args<'a>(url: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--source",
        url,
        "--table",
        "orders_flat",
        "--partition-by",
        "RANGE (order_date)",
        "--jobs",
        "2",
    ];
    args.extend_from_slice(extra);
    args
}

async fn plan_json(url: &str, extra: &[&str]) -> (Output, Value) {
    let mut args = vec!["plan", "--json"];
    args.extend(range_args(url, extra));
    let out = pgrepart(&args).await;
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("plan --json is not JSON ({e}): {}", output_text(&out)));
    (out, v)
}

fn check<'a>(plan: &'a Value, name: &str) -> &'a Value {
    plan["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no check {name} in {plan}"))
}

async fn index_definitions(client: &Client, table: &str) -> Vec<String> {
    client
        .query(
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = $1::text::regclass ORDER BY 1",
            &[&table],
        )
        .await
        .unwrap_or_else(|e| panic!("indexes of {table}: {}", support::describe(&e)))
        .into_iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn a_list_partitioned_table_becomes_range_partitioned_under_load() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let db = unique_name("partsrc");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_list_partitioned_seed_table(&client, "orders_flat", SEED_ROWS).await;
        let reader = unique_name("reader");
        client
            .batch_execute(&format!(
                "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{reader}') THEN CREATE ROLE {reader}; END IF; END $$;
                 GRANT SELECT ON orders_flat TO {reader};
                 COMMENT ON TABLE orders_flat IS 'all orders, by region';
                 CREATE POLICY only_us ON orders_flat FOR SELECT TO {reader} USING (region = 'US');
                 CREATE FUNCTION noop() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN RETURN NEW; END $f$;
                 CREATE TRIGGER orders_noop AFTER INSERT ON orders_flat FOR EACH ROW EXECUTE FUNCTION noop();"
            ))
            .await
            .unwrap_or_else(|e| panic!("setup: {}", support::describe(&e)));
        let before = inspect::relations(&client).await;

        // A leaf that cannot publish its UPDATEs and DELETEs with the key is refused, by name.
        client
            .batch_execute("ALTER TABLE orders_flat_other REPLICA IDENTITY NOTHING")
            .await
            .unwrap();
        let (out, v) = plan_json(&url, MONTHLY).await;
        assert!(!out.status.success(), "{}", output_text(&out));
        let c = check(&v, "partitions");
        assert_eq!(c["status"], "fail", "{c}");
        assert!(
            c["detail"].as_str().unwrap().contains("orders_flat_other"),
            "{c}"
        );
        client
            .batch_execute("ALTER TABLE orders_flat_other REPLICA IDENTITY DEFAULT")
            .await
            .unwrap();

        // New partition names that are the source's partitions' names are refused, saying so.
        let (out, v) = plan_json(
            &url,
            &[
                "--partition",
                "orders_flat_us=FOR VALUES FROM (MINVALUE) TO ('2025-01-01')",
                "--partition",
                "orders_flat_later=FOR VALUES FROM ('2025-01-01') TO (MAXVALUE)",
            ],
        )
        .await;
        assert!(!out.status.success(), "{}", output_text(&out));
        let c = check(&v, "names");
        assert_eq!(c["status"], "fail", "{c}");
        assert!(
            c["detail"]
                .as_str()
                .unwrap()
                .contains("public.orders_flat_us (a partition of the source table)"),
            "{c}"
        );

        // The plan passes and says how the changes are read.
        let (out, v) = plan_json(&url, MONTHLY).await;
        assert!(out.status.success(), "{}", output_text(&out));
        let table = check(&v, "table");
        assert_eq!(table["status"], "pass", "{table}");
        let detail = table["detail"].as_str().unwrap();
        assert!(
            detail.contains("is partitioned (4 partition(s)")
                && detail.contains("publish_via_partition_root"),
            "{detail}"
        );
        assert!(
            v["rows_estimate"].as_i64().unwrap() >= SEED_ROWS as i64 / 2,
            "the row estimate is not summed over the partitions: {}",
            v["rows_estimate"]
        );
        assert!(v["total_bytes"].as_i64().unwrap() > 0);
        assert_eq!(check(&v, "partitions")["status"], "warn");
        inspect::assert_nothing_left_behind(&client, &before).await;

        // The migration, under load (the writers also move rows between the old partitions by
        // updating region).
        let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
        writers.wait_for_more_ops(300, DEADLINE).await;
        let mut args = vec!["run"];
        args.extend(range_args(&url, MONTHLY));
        let run = support::spawn_pgrepart(&args);
        let out = run.wait_within(DEADLINE).await;
        assert!(
            out.status.success(),
            "pgrepart run failed on PostgreSQL {major}: {}\nserver log tail:\n{}",
            output_text(&out),
            support::program::tail(&cluster.server_log(), 3000)
        );
        writers.wait_for_more_ops(300, DEADLINE).await;
        let report = writers.stop().await;
        eprintln!("PostgreSQL {major}: {}", report.summary());
        report.assert_no_anomalies("during the migration");
        compare::assert_table_matches(&client, "orders_flat", &report.rows).await;

        // The new table is RANGE-partitioned by month; the old one keeps its partitions' names.
        assert_eq!(inspect::relkind(&client, "orders_flat").await, Some('p'));
        assert_eq!(
            inspect::relkind(&client, "orders_flat_old").await,
            Some('p')
        );
        assert_eq!(
            inspect::partitions(&client, "orders_flat_old").await,
            vec![
                "orders_flat_asia",
                "orders_flat_eu",
                "orders_flat_other",
                "orders_flat_us"
            ]
        );
        let parts = inspect::partitions(&client, "orders_flat").await;
        assert!(
            parts.contains(&"orders_flat_2024_01".to_string())
                && parts.contains(&"orders_flat_2025_12".to_string())
                && parts.contains(&"orders_flat_default".to_string()),
            "{parts:?}"
        );
        let strategy: String = client
            .query_one(
                "SELECT partstrat::text FROM pg_partitioned_table WHERE partrelid = 'orders_flat'::regclass",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(strategy, "r");
        // The source's partitioned index on customer_id was built on the new table.
        let indexes = index_definitions(&client, "orders_flat").await;
        assert!(
            indexes
                .iter()
                .any(|d| d.contains("(customer_id)") && !d.contains("orders_flat_old")),
            "{indexes:?}"
        );
        // Grant, comment, policy and trigger of the partitioned parent were carried over.
        let row = client
            .query_one(
                &format!(
                    "SELECT has_table_privilege('{reader}', 'orders_flat', 'SELECT'), \
                            obj_description('orders_flat'::regclass, 'pg_class'), \
                            (SELECT count(*) FROM pg_policy WHERE polrelid = 'orders_flat'::regclass AND polname = 'only_us'), \
                            (SELECT count(*) FROM pg_trigger WHERE tgrelid = 'orders_flat'::regclass AND tgname = 'orders_noop')"
                ),
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("read carried objects: {}", support::describe(&e)));
        assert!(row.get::<_, bool>(0), "grant");
        assert_eq!(
            row.get::<_, Option<String>>(1).as_deref(),
            Some("all orders, by region")
        );
        assert_eq!(row.get::<_, i64>(2), 1, "policy");
        assert_eq!(row.get::<_, i64>(3), 1, "trigger");
        // Nothing of the migration is left: no slot, no publication, no table under the
        // working name (the new table's indexes keep the names they were built with).
        inspect::assert_no_slot_or_publication(&client).await;
        let leftovers: Vec<String> = client
            .query(
                "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname <> 'pgrepart' AND c.relkind IN ('r', 'p') AND c.relname LIKE '%repart%'",
                &[],
            )
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.get(0))
            .collect();
        assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
        let v = inspect::status_json(&url, "orders_flat").await.unwrap();
        assert_eq!(inspect::phase(&v), "done", "{v}");
        eprintln!(
            "PostgreSQL {major}: a LIST-partitioned table was repartitioned by RANGE under load"
        );
    }
}

/// A TRUNCATE of the whole partitioned source is published under its name (pgoutput sends the
/// root, not the partitions, with publish_via_partition_root) and applied; here into HASH
/// partitions, with a manual cutover.
#[tokio::test]
async fn a_truncate_of_the_partitioned_source_is_applied() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let db = unique_name("partsrctrunc");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_list_partitioned_seed_table(&client, "orders_flat", 3_000).await;
        let run = support::spawn_pgrepart(&[
            "run",
            "--source",
            &url,
            "--table",
            "orders_flat",
            "--partition-by",
            "HASH (id)",
            "--modulus",
            "4",
            "--cutover",
            "manual",
        ]);
        support::flow::wait_status(&url, &run, DEADLINE, "streaming", |v| {
            inspect::phase(v) == "streaming"
        })
        .await;
        client
            .batch_execute(
                "TRUNCATE orders_flat; \
                 INSERT INTO orders_flat (order_date, customer_id, region, amount, details) \
                 SELECT timestamp '2025-01-01' + g * interval '1 hour', g, \
                        (ARRAY['US','EU','ASIA','LATAM'])[1 + g % 4], g, 'after truncate' \
                 FROM generate_series(1, 40) g; \
                 UPDATE orders_flat SET region = 'EU' WHERE region = 'US'",
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
        assert_eq!(
            inspect::partitions(&client, "orders_flat").await,
            vec![
                "orders_flat_p0",
                "orders_flat_p1",
                "orders_flat_p2",
                "orders_flat_p3"
            ]
        );
        assert_eq!(
            inspect::relkind(&client, "orders_flat_old").await,
            Some('p')
        );
        inspect::assert_no_slot_or_publication(&client).await;
    }
}

/// `status --json` of `orders_flat` with `--target` (the state is in the target).
async fn cross_status(source: &str, target: &str) -> Option<Value> {
    let out = pgrepart(&[
        "status",
        "--source",
        source,
        "--target",
        target,
        "--table",
        "orders_flat",
        "--json",
    ])
    .await;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Cross-database (`--target`, another database of the same cluster): the partitioned source's
/// rows, written to meanwhile, end up in the new RANGE-partitioned table in the target; the source
/// keeps the old partitioned table under the old name.
#[tokio::test]
async fn a_partitioned_table_moves_to_another_database() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let src_db = unique_name("partsrcx");
        let dst_db = unique_name("partdstx");
        let src_url = cluster.create_database(&src_db).await;
        let dst_url = cluster.create_database(&dst_db).await;
        let source = cluster.client(&src_db).await;
        let target = cluster.client(&dst_db).await;
        schema::create_list_partitioned_seed_table(&source, "orders_flat", 8_000).await;
        let writers = Writers::start(WritersConfig::new(&src_url, "orders_flat")).await;
        writers.wait_for_more_ops(200, DEADLINE).await;
        let mut args = vec!["run"];
        args.extend(range_args(
            &src_url,
            &[
                "--interval",
                "month",
                "--target",
                &dst_url,
                "--cutover",
                "manual",
            ],
        ));
        let run = support::spawn_pgrepart(&args);
        let ready = support::poll_until(DEADLINE, || {
            let (s, t) = (&src_url, &dst_url);
            async move {
                cross_status(s, t)
                    .await
                    .is_some_and(|v| v["cutover_waiting"] == true)
            }
        })
        .await;
        assert!(
            ready,
            "PostgreSQL {major}: the cross-database run never waited for the cutover; run stderr:\n{}",
            support::program::tail(&run.stderr_so_far(), 4000)
        );
        writers.wait_for_more_ops(300, DEADLINE).await;
        let report = writers.stop().await;
        eprintln!("PostgreSQL {major} (cross-database): {}", report.summary());
        report.assert_no_anomalies("the writers' check");
        let cut = pgrepart(&[
            "cutover",
            "--source",
            &src_url,
            "--target",
            &dst_url,
            "--table",
            "orders_flat",
        ])
        .await;
        let out = run.wait_within(DEADLINE).await;
        assert!(
            cut.status.success() && out.status.success(),
            "PostgreSQL {major}: cutover: {}\nrun: {}",
            output_text(&cut),
            output_text(&out)
        );
        compare::assert_table_matches(&target, "orders_flat", &report.rows).await;
        assert_eq!(inspect::relkind(&target, "orders_flat").await, Some('p'));
        assert!(
            inspect::partitions(&target, "orders_flat")
                .await
                .contains(&"orders_flat_2024_01".to_string())
        );
        assert_eq!(inspect::relkind(&source, "orders_flat").await, None);
        assert_eq!(
            inspect::relkind(&source, "orders_flat_old").await,
            Some('p')
        );
        assert_eq!(
            inspect::partitions(&source, "orders_flat_old").await,
            vec![
                "orders_flat_asia",
                "orders_flat_eu",
                "orders_flat_other",
                "orders_flat_us"
            ]
        );
        inspect::assert_no_slot_or_publication(&source).await;
    }
}

/// A partition (here a leaf of the partitioned seed table) cannot be swapped on its own: refused,
/// naming its parent, and nothing is created.
#[tokio::test]
async fn a_partition_of_another_table_is_refused() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let db = unique_name("partleaf");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_list_partitioned_seed_table(&client, "orders_flat", 500).await;
        let before = inspect::relations(&client).await;
        let out = pgrepart(&[
            "run",
            "--source",
            &url,
            "--table",
            "orders_flat_us",
            "--partition-by",
            "HASH (id)",
            "--modulus",
            "2",
        ])
        .await;
        assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
        let text = output_text(&out);
        assert!(
            text.contains("public.orders_flat_us is a partition of public.orders_flat"),
            "PostgreSQL {major}: {text}"
        );
        inspect::assert_nothing_left_behind(&client, &before).await;
    }
}
