//! Nothing tied to the table is silently lost at the swap: its foreign key onto `customers` is
//! carried (NOT VALID per partition in the swap, validated and set on the partitioned table after
//! it), the foreign key of `order_items` onto it is recreated onto the new primary key (the
//! referencing table carries the partition-key column), indexes and constraints keep their names
//! (the old table's end in `_old`), and a foreign key that cannot follow makes the run refuse
//! unless `--drop-inbound-fks`. `plan`'s inventory holds every object `pg_depend` ties to the
//! table, and each kind of dependent is carried or named at the swap.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use support::flow::{seed_run_args, spawn, spawn_with_env};
use support::inspect::output_text;
use support::program::pgrepart;
use support::{Cluster, Writers, WritersConfig, compare, schema, test_majors, unique_name};

const SEED_ROWS: usize = 40_000;
const DEADLINE: Duration = Duration::from_secs(180);

/// Inserts a customer and an order of theirs, then deletes both, over and over: the stream then
/// holds order INSERTs whose customer is gone by the time they are applied (nothing of it is left
/// when it stops, so the writers' expected rows stay right).
fn churn_customers(
    url: String,
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = support::cluster::connect(&url).await;
        let mut n: i32 = 300_000;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let r = client
                .batch_execute(&format!(
                    "INSERT INTO customers VALUES ({n}, 'churn'); \
                     INSERT INTO orders_flat (order_date, customer_id, region, amount) VALUES (now(), {n}, 'EU', 1)"
                ))
                .await;
            if r.is_err() {
                continue;
            }
            // Removing the customer cascades to its orders (old or new table, whichever is live).
            loop {
                if client
                    .batch_execute(&format!("DELETE FROM customers WHERE id = {n}"))
                    .await
                    .is_ok()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            done.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

async fn sqlstate_of(client: &tokio_postgres::Client, sql: &str) -> Option<String> {
    client.batch_execute(sql).await.err().map(|e| {
        e.code()
            .map_or_else(|| e.to_string(), |c| c.code().to_string())
    })
}

#[tokio::test]
async fn foreign_keys_both_ways_and_names_follow_the_table_under_load() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let db = unique_name("deps");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_shop(&client, SEED_ROWS, true).await;

        let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
        writers.wait_for_more_ops(200, DEADLINE).await;
        let stop = Arc::new(AtomicBool::new(false));
        let churned = Arc::new(AtomicU64::new(0));
        let churn = churn_customers(url.clone(), stop.clone(), churned.clone());

        let mut plan_args = seed_run_args(&url, &[]);
        plan_args[0] = "plan".into();
        let plan = pgrepart(&plan_args.iter().map(String::as_str).collect::<Vec<_>>()).await;
        let plan_text = output_text(&plan);
        assert!(
            plan.status.success(),
            "plan on PostgreSQL {major}: {plan_text}"
        );
        assert!(
            plan_text.contains("foreign key orders_flat_customer_id_fkey")
                && plan_text.contains("order_items_order_id_fkey on public.order_items recreated at the swap as (order_id, region) -> (id, region)"),
            "plan on PostgreSQL {major} does not say what happens to the foreign keys: {plan_text}"
        );

        let run = spawn(&seed_run_args(&url, &[]));
        let out = run.wait_within(DEADLINE).await;
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "pgrepart run failed on PostgreSQL {major}: {}\nserver log tail:\n{}",
            output_text(&out),
            support::program::tail(&cluster.server_log(), 3000)
        );
        writers.wait_for_more_ops(200, DEADLINE).await;
        stop.store(true, Ordering::Relaxed);
        churn.await.unwrap();
        let report = writers.stop().await;
        eprintln!(
            "PostgreSQL {major}: {}; {} customers churned",
            report.summary(),
            churned.load(Ordering::Relaxed)
        );
        eprintln!("PostgreSQL {major}: pgrepart said: {}", stdout.trim());
        assert!(
            churned.load(Ordering::Relaxed) > 0,
            "no customer churn during the run"
        );
        report.assert_no_anomalies("during the migration");
        compare::assert_table_matches(&client, "orders_flat", &report.rows).await;

        // The outbound key: on the partitioned table, validated, each partition's attached.
        let fks: Vec<(String, String, bool, bool)> = client
            .query(
                "SELECT conrelid::regclass::text, pg_get_constraintdef(oid), convalidated, conparentid <> 0 \
                 FROM pg_constraint WHERE conname = 'orders_flat_customer_id_fkey' ORDER BY 1",
                &[],
            )
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
        let def = "FOREIGN KEY (customer_id) REFERENCES customers(id) ON UPDATE CASCADE ON DELETE CASCADE DEFERRABLE";
        let expected: Vec<(String, String, bool, bool)> = [
            ("orders_flat", false),
            ("orders_flat_asia", true),
            ("orders_flat_default", true),
            ("orders_flat_eu", true),
            ("orders_flat_us", true),
        ]
        .into_iter()
        .map(|(t, attached)| (t.to_string(), def.to_string(), true, attached))
        .collect();
        assert_eq!(fks, expected, "PostgreSQL {major}: the key onto customers");
        assert_eq!(
            sqlstate_of(&client, "INSERT INTO orders_flat (order_date, customer_id, region) VALUES (now(), 999999, 'US')").await,
            Some("23503".to_string()),
            "PostgreSQL {major}: an order of a missing customer is accepted"
        );
        assert_eq!(
            sqlstate_of(
                &client,
                "INSERT INTO orders_flat (order_date, customer_id, region) VALUES (now(), 7, 'US')"
            )
            .await,
            None,
            "PostgreSQL {major}: an order of an existing customer is refused"
        );

        // The inbound key: onto (id, region), validated, and enforced.
        let (idef, ivalid): (String, bool) = client
            .query_one(
                "SELECT pg_get_constraintdef(oid), convalidated FROM pg_constraint \
                 WHERE conname = 'order_items_order_id_fkey' AND conrelid = 'order_items'::regclass",
                &[],
            )
            .await
            .map(|r| (r.get(0), r.get(1)))
            .unwrap();
        assert_eq!(
            (idef.as_str(), ivalid),
            (
                "FOREIGN KEY (order_id, region) REFERENCES orders_flat(id, region) ON UPDATE CASCADE ON DELETE CASCADE",
                true
            ),
            "PostgreSQL {major}: the key of order_items"
        );
        let (some_id, some_region): (i64, String) = client
            .query_one(
                "SELECT id, region FROM orders_flat ORDER BY id LIMIT 1",
                &[],
            )
            .await
            .map(|r| (r.get(0), r.get(1)))
            .unwrap();
        let other_region = if some_region == "US" { "EU" } else { "US" };
        assert_eq!(
            sqlstate_of(&client, &format!("INSERT INTO order_items (order_id, region, qty) VALUES ({some_id}, '{other_region}', 1)")).await,
            Some("23503".to_string()),
            "PostgreSQL {major}: an item of an order in another region is accepted"
        );
        assert_eq!(
            sqlstate_of(&client, &format!("INSERT INTO order_items (order_id, region, qty) VALUES ({some_id}, '{some_region}', 1)")).await,
            None,
            "PostgreSQL {major}: an item of an existing order is refused"
        );
        // Nothing is tied to the old table any more.
        let left: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_constraint WHERE contype = 'f' \
                 AND (conrelid = 'orders_flat_old'::regclass OR confrelid = 'orders_flat_old'::regclass)",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            left, 0,
            "PostgreSQL {major}: foreign keys left on the old table"
        );

        // Names: the new table has the old ones, the old table's end in _old.
        let names: Vec<(String, String)> = client
            .query(
                "SELECT indrelid::regclass::text, indexrelid::regclass::text FROM pg_index \
                 WHERE indrelid IN ('orders_flat'::regclass, 'orders_flat_old'::regclass) ORDER BY 1, 2",
                &[],
            )
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let pair = |t: &str, i: &str| (t.to_string(), i.to_string());
        assert_eq!(
            names,
            vec![
                pair("orders_flat", "orders_flat_customer_id_idx"),
                pair("orders_flat", "orders_flat_pkey"),
                pair("orders_flat_old", "orders_flat_customer_id_idx_old"),
                pair("orders_flat_old", "orders_flat_pkey_old"),
            ],
            "PostgreSQL {major}: index names"
        );
        let pending: i64 = client
            .query_one("SELECT count(*) FROM pgrepart.post_swap_steps", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(pending, 0, "PostgreSQL {major}: post-swap steps left");
        assert!(
            stdout.contains("validated foreign key orders_flat_customer_id_fkey"),
            "{stdout}"
        );
    }
}

#[tokio::test]
async fn an_inbound_key_without_the_partition_key_is_refused_unless_dropped_and_a_killed_run_finishes_the_validation()
 {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let db = unique_name("depsdrop");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_shop(&client, 2_000, true).await;
        client
            .batch_execute(
                "CREATE TABLE order_notes (note_id serial PRIMARY KEY, order_id bigint \
                   CONSTRAINT order_notes_order_id_fkey REFERENCES orders_flat (id) ON DELETE CASCADE, note text); \
                 INSERT INTO order_notes (order_id, note) SELECT id, 'n' FROM orders_flat WHERE id % 10 = 0; \
                 UPDATE orders_flat SET amount = 13.37 WHERE id = 3; \
                 ALTER TABLE orders_flat ADD CONSTRAINT not_leet CHECK (amount <> 13.37) NOT VALID; \
                 COMMENT ON INDEX orders_flat_customer_id_idx IS 'by customer'; \
                 COMMENT ON CONSTRAINT orders_flat_pkey ON orders_flat IS 'the key'; \
                 CREATE FUNCTION order_amount(o orders_flat) RETURNS numeric LANGUAGE sql AS 'SELECT o.amount';",
            )
            .await
            .unwrap();
        let mut plan_args = seed_run_args(&url, &["--json"]);
        plan_args[0] = "plan".into();
        let plan = pgrepart(&plan_args.iter().map(String::as_str).collect::<Vec<_>>()).await;
        let json: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap_or_else(|e| {
            panic!(
                "plan --json on PostgreSQL {major}: {e}: {}",
                output_text(&plan)
            )
        });
        let not_carried = json["not_carried_over"].to_string();
        for wanted in [
            "order_notes_order_id_fkey on public.order_notes cannot be kept",
            "function order_amount(orders_flat) uses the table's row type",
        ] {
            assert!(
                not_carried.contains(wanted),
                "PostgreSQL {major}: plan does not list {wanted:?}: {not_carried}"
            );
        }
        let carried = json["carried_over"].to_string();
        assert!(
            carried.contains("CHECK constraint not_leet"),
            "PostgreSQL {major}: {carried}"
        );

        let args = seed_run_args(&url, &[]);
        let refused = spawn(&args).wait_within(DEADLINE).await;
        let text = output_text(&refused);
        assert!(
            !refused.status.success(),
            "PostgreSQL {major}: run did not refuse: {text}"
        );
        assert!(
            text.contains("order_notes_order_id_fkey on public.order_notes cannot be kept")
                && text.contains("--drop-inbound-fks"),
            "PostgreSQL {major}: the refusal does not name the key and the way out: {text}"
        );
        assert!(
            support::inspect::slots(&client).await.is_empty(),
            "PostgreSQL {major}: a refused run left a slot"
        );

        // Accepted with --drop-inbound-fks; stopped right after the swap's commit, before the
        // keys are validated: the partitions enforce them already, and the rerun finishes.
        let args = seed_run_args(&url, &["--drop-inbound-fks"]);
        let first = spawn_with_env(&args, &[("PGREPART_TEST_FAULT", "cutover-after-commit")])
            .wait_within(DEADLINE)
            .await;
        assert_eq!(
            first.status.code(),
            Some(86),
            "PostgreSQL {major}: {}",
            output_text(&first)
        );
        let unvalidated: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_constraint WHERE conname = 'orders_flat_customer_id_fkey' AND NOT convalidated",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            unvalidated, 4,
            "PostgreSQL {major}: each partition has the key NOT VALID"
        );
        assert_eq!(
            sqlstate_of(&client, "INSERT INTO orders_flat (order_date, customer_id, region) VALUES (now(), 999999, 'EU')").await,
            Some("23503".to_string()),
            "PostgreSQL {major}: NOT VALID keys do not hold new rows"
        );
        // status names the steps left for after the swap.
        let status = pgrepart(&["status", "--source", &url]).await;
        let status_text = output_text(&status);
        assert!(
            status.status.success()
                && status_text.contains(
                    "after the swap   still to do: foreign key orders_flat_customer_id_fkey"
                ),
            "PostgreSQL {major}: status does not show the pending post-swap steps: {status_text}"
        );
        let dropped: i64 = client
            .query_one("SELECT count(*) FROM pg_constraint WHERE conrelid = 'order_notes'::regclass AND contype = 'f'", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            dropped, 0,
            "PostgreSQL {major}: the key of order_notes was not dropped"
        );

        let second = spawn(&args).wait_within(DEADLINE).await;
        let text = output_text(&second);
        assert!(second.status.success(), "PostgreSQL {major}: rerun: {text}");
        assert!(
            text.contains("validated foreign key orders_flat_customer_id_fkey"),
            "PostgreSQL {major}: {text}"
        );
        let parent: bool = client
            .query_one(
                "SELECT convalidated FROM pg_constraint WHERE conname = 'orders_flat_customer_id_fkey' AND conrelid = 'orders_flat'::regclass",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(
            parent,
            "PostgreSQL {major}: the key is not on the partitioned table"
        );
        compare::assert_same_rows(&client, "orders_flat", "orders_flat_old").await;
        // The NOT VALID check is there, NOT VALID, and holds new rows; the comments followed.
        let (valid, comments): (bool, Vec<Option<String>>) = client
            .query_one(
                "SELECT (SELECT convalidated FROM pg_constraint WHERE conname = 'not_leet' AND conrelid = 'orders_flat'::regclass), \
                        ARRAY[obj_description('orders_flat_customer_id_idx'::regclass, 'pg_class'), \
                              (SELECT obj_description(oid, 'pg_constraint') FROM pg_constraint \
                               WHERE conname = 'orders_flat_pkey' AND conrelid = 'orders_flat'::regclass)]",
                &[],
            )
            .await
            .map(|r| (r.get(0), r.get(1)))
            .unwrap();
        assert!(!valid, "PostgreSQL {major}: not_leet is validated");
        assert_eq!(
            comments,
            vec![Some("by customer".to_string()), Some("the key".to_string())]
        );
        assert_eq!(
            sqlstate_of(&client, "INSERT INTO orders_flat (order_date, customer_id, region, amount) VALUES (now(), 7, 'US', 13.37)").await,
            Some("23514".to_string()),
            "PostgreSQL {major}: the NOT VALID check does not hold new rows"
        );
    }
}

/// Across databases the key onto `customers` is added on the target's `customers` after both
/// commits (validated, on the partitioned table), and a key onto a table the target lacks is
/// reported with the statement that adds it.
#[tokio::test]
async fn across_databases_a_key_is_carried_onto_the_targets_table_of_the_same_name() {
    let major = test_majors()[0];
    let Some(cluster) = Cluster::start_or_skip(major) else {
        return;
    };
    let src_db = unique_name("depsrc");
    let dst_db = unique_name("depdst");
    let src_url = cluster.create_database(&src_db).await;
    let dst_url = cluster.create_database(&dst_db).await;
    let src = cluster.client(&src_db).await;
    let dst = cluster.client(&dst_db).await;
    schema::create_shop(&src, 2_000, true).await;
    src.batch_execute(
        "DROP TABLE order_items; \
         CREATE TABLE vendors (id int PRIMARY KEY); INSERT INTO vendors SELECT generate_series(1, 10); \
         ALTER TABLE orders_flat ADD COLUMN vendor_id int REFERENCES vendors (id);",
    )
    .await
    .unwrap();
    dst.batch_execute(
        "CREATE TABLE customers (id int PRIMARY KEY, name text); \
         INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 100000) g;",
    )
    .await
    .unwrap();
    let out = spawn(&seed_run_args(&src_url, &["--target", &dst_url]))
        .wait_within(DEADLINE)
        .await;
    let text = output_text(&out);
    assert!(out.status.success(), "PostgreSQL {major}: {text}");
    assert!(
        text.contains("validated foreign key orders_flat_customer_id_fkey on public.orders_flat"),
        "PostgreSQL {major}: {text}"
    );
    assert!(
        text.contains("public.vendors is not on the target"),
        "PostgreSQL {major}: the key onto vendors is not reported: {text}"
    );
    let valid: bool = dst
        .query_one(
            "SELECT convalidated FROM pg_constraint WHERE conname = 'orders_flat_customer_id_fkey' \
             AND conrelid = 'orders_flat'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        valid,
        "PostgreSQL {major}: the key is not validated on the target"
    );
    assert_eq!(
        sqlstate_of(
            &dst,
            "INSERT INTO orders_flat (order_date, customer_id, region) VALUES (now(), 999999, 'US')"
        )
        .await,
        Some("23503".to_string()),
        "PostgreSQL {major}: the target accepts an order of a missing customer"
    );
}

/// Every kind of dependent PostgreSQL lets a test make without an extension, on one table.
/// (Security labels need a label provider module and are left to the unit tests.)
fn every_kind_sql(major: u32) -> String {
    let mut sql = String::from(
        "CREATE ROLE dep_reader; \
         ALTER TABLE orders_flat ADD COLUMN parent_id bigint CONSTRAINT orders_flat_parent_fkey REFERENCES orders_flat (id); \
         ALTER TABLE orders_flat ADD CONSTRAINT amount_floor CHECK (amount > -100000000); \
         ALTER TABLE orders_flat ADD CONSTRAINT amount_ceiling CHECK (amount < 50000000) NOT VALID; \
         ALTER TABLE orders_flat ADD CONSTRAINT region_named CHECK (region <> '') NO INHERIT; \
         ALTER TABLE orders_flat ADD CONSTRAINT orders_flat_id_region_key UNIQUE (id, region); \
         ALTER TABLE orders_flat ADD CONSTRAINT one_per_id EXCLUDE USING btree (id WITH =); \
         CREATE INDEX orders_flat_date_idx ON orders_flat (order_date); \
         CREATE STATISTICS orders_flat_stats ON region, customer_id FROM orders_flat; \
         CREATE FUNCTION noop() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NULL; END'; \
         CREATE TRIGGER audit_stmt AFTER INSERT ON orders_flat FOR EACH STATEMENT EXECUTE FUNCTION noop(); \
         CREATE CONSTRAINT TRIGGER audit_deferred AFTER INSERT ON orders_flat DEFERRABLE INITIALLY DEFERRED \
           FOR EACH ROW EXECUTE FUNCTION noop(); \
         CREATE TRIGGER audit_rows AFTER INSERT ON orders_flat REFERENCING NEW TABLE AS fresh \
           FOR EACH ROW EXECUTE FUNCTION noop(); \
         CREATE RULE orders_flat_no_truncate AS ON DELETE TO orders_flat WHERE old.id < 0 DO INSTEAD NOTHING; \
         ALTER TABLE orders_flat ENABLE ROW LEVEL SECURITY; \
         CREATE POLICY regional ON orders_flat TO dep_reader USING (region = 'EU'); \
         GRANT SELECT ON orders_flat TO dep_reader; \
         GRANT UPDATE (amount) ON orders_flat TO dep_reader; \
         COMMENT ON TABLE orders_flat IS 'orders'; \
         COMMENT ON COLUMN orders_flat.amount IS 'in cents'; \
         COMMENT ON CONSTRAINT amount_floor ON orders_flat IS 'floor'; \
         COMMENT ON INDEX orders_flat_date_idx IS 'by date'; \
         COMMENT ON CONSTRAINT orders_flat_customer_id_fkey ON orders_flat IS 'who bought it'; \
         ALTER TABLE orders_flat ALTER COLUMN region SET STATISTICS 500; \
         ALTER TABLE orders_flat SET (fillfactor = 90); \
         ALTER TABLE orders_flat REPLICA IDENTITY USING INDEX orders_flat_pkey; \
         CREATE PUBLICATION app_pub FOR TABLE orders_flat; \
         CREATE PUBLICATION app_all FOR ALL TABLES WITH (publish = 'insert'); \
         CREATE VIEW eu_orders AS SELECT id, amount FROM orders_flat WHERE region = 'EU'; \
         CREATE MATERIALIZED VIEW orders_by_region AS SELECT region, count(*) AS n FROM orders_flat GROUP BY region; \
         CREATE FUNCTION orders_of(c int) RETURNS SETOF orders_flat LANGUAGE sql AS 'SELECT * FROM orders_flat WHERE customer_id = c'; \
         CREATE FUNCTION order_total(o orders_flat) RETURNS numeric LANGUAGE sql AS 'SELECT o.amount'; \
         CREATE FUNCTION order_count() RETURNS bigint LANGUAGE sql BEGIN ATOMIC SELECT count(*) FROM orders_flat; END; \
         CREATE TABLE order_snapshots (taken timestamptz, o orders_flat); \
         CREATE TABLE orders_archive () INHERITS (orders_flat); \
         ALTER TABLE orders_archive REPLICA IDENTITY FULL;",
    );
    if major >= 15 {
        sql += "CREATE PUBLICATION app_big FOR TABLE orders_flat WHERE (id > 1000);";
    }
    sql
}

/// The objects `pg_depend` ties to the table or its row type, named as `pg_describe_object` does
/// (asked here independently of pgrepart's own survey).
async fn described_dependents(client: &tokio_postgres::Client, table: &str) -> Vec<String> {
    client
        .query(
            "SELECT DISTINCT pg_describe_object(d.classid, d.objid, d.objsubid) FROM pg_depend d, pg_class t \
             WHERE t.oid = $1::text::regclass \
               AND ((d.refclassid = 'pg_class'::regclass AND d.refobjid = t.oid) \
                 OR (d.refclassid = 'pg_type'::regclass AND d.refobjid = t.reltype)) \
               AND NOT (d.classid = 'pg_class'::regclass AND d.objid = t.oid) ORDER BY 1",
            &[&table],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.get(0))
        .collect()
}

/// One table with every kind of dependent: `plan` lists each object `pg_depend` ties to it with
/// what happens to it (rules refused); without the rule, the run under load carries what it
/// says it carries and names every other object at the swap.
#[tokio::test]
async fn every_kind_of_dependent_is_carried_or_named_and_the_inventory_misses_nothing() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let db = unique_name("depsall");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_shop(&client, 5_000, true).await;
        client
            .batch_execute(&every_kind_sql(major))
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL {major}: {}", support::describe(&e)));
        // CREATE TABLESPACE refuses a transaction block: one statement at a time.
        for s in [
            "SET allow_in_place_tablespaces = on",
            "CREATE TABLESPACE orders_space LOCATION ''",
            "ALTER TABLE orders_flat SET TABLESPACE orders_space",
        ] {
            client
                .batch_execute(s)
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL {major}: {s}: {}", support::describe(&e)));
        }

        let mut plan_args = seed_run_args(&url, &["--json"]);
        plan_args[0] = "plan".into();
        let plan = pgrepart(&plan_args.iter().map(String::as_str).collect::<Vec<_>>()).await;
        let json: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap_or_else(|e| {
            panic!(
                "plan --json on PostgreSQL {major}: {e}: {}",
                output_text(&plan)
            )
        });
        assert_eq!(
            plan.status.code(),
            Some(1),
            "PostgreSQL {major}: plan accepts a table with a rule"
        );
        let inventory: Vec<(String, String, String)> = json["dependents"]
            .as_array()
            .unwrap_or_else(|| panic!("PostgreSQL {major}: no dependents in {json}"))
            .iter()
            .map(|d| {
                let s = |k: &str| d[k].as_str().unwrap_or_default().to_string();
                (s("kind"), s("object"), s("fate"))
            })
            .collect();
        for object in described_dependents(&client, "orders_flat").await {
            assert!(
                inventory.iter().any(|(_, o, _)| *o == object),
                "PostgreSQL {major}: pg_depend ties {object:?} to the table; plan's inventory lacks it: {inventory:#?}"
            );
        }
        let fate_of = |kind: &str| -> Vec<String> {
            inventory
                .iter()
                .filter(|(k, _, _)| k == kind)
                .map(|(_, _, f)| f.clone())
                .collect()
        };
        let mut expected = vec![
            ("owner", "carried"),
            ("grants", "carried"),
            ("owned_sequence", "carried"),
            ("comment", "carried"),
            ("statistics_target", "carried"),
            ("row_security", "carried"),
            ("policy", "carried"),
            ("trigger", "carried"),
            ("publication", "carried"),
            ("all_tables_publication", "carried"),
            ("view", "carried"),
            ("materialized_view", "carried"),
            ("outbound_foreign_key", "carried"),
            ("inbound_foreign_key", "carried"),
            ("not_valid_check", "carried"),
            ("default", "rebuilt"),
            ("check", "rebuilt"),
            ("primary_key", "rebuilt"),
            ("unique", "rebuilt"),
            ("index", "rebuilt"),
            ("storage_parameters", "rebuilt"),
            ("replica_identity", "rebuilt"),
            ("column_privileges", "not_carried"),
            ("extended_statistics", "not_carried"),
            ("tablespace", "not_carried"),
            ("exclusion", "not_carried"),
            ("no_inherit_check", "not_carried"),
            ("constraint_trigger", "not_carried"),
            ("transition_trigger", "not_carried"),
            ("function", "not_carried"),
            ("row_type_column", "not_carried"),
            ("inheritance_child", "not_carried"),
            ("self_foreign_key", "not_carried"),
            ("rule", "refused"),
            ("row_type", "stays_with_old"),
        ];
        if major >= 15 {
            expected.push(("filtered_publication", "not_carried"));
        }
        if major >= 18 {
            expected.push(("not_null", "rebuilt"));
        }
        for (kind, fate) in expected {
            let fates = fate_of(kind);
            assert!(
                !fates.is_empty() && fates.iter().all(|f| f == fate),
                "PostgreSQL {major}: {kind} should be {fate}, the inventory says {fates:?}"
            );
        }
        assert!(
            !inventory.iter().any(|(k, _, _)| k == "unknown"),
            "PostgreSQL {major}: an object of a kind the survey does not know: {inventory:#?}"
        );

        // Without the rule the run goes ahead, under writes.
        client
            .batch_execute("DROP RULE orders_flat_no_truncate ON orders_flat")
            .await
            .unwrap();
        let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
        writers.wait_for_more_ops(200, DEADLINE).await;
        let out = spawn(&seed_run_args(&url, &[])).wait_within(DEADLINE).await;
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "PostgreSQL {major}: run failed: {}",
            output_text(&out)
        );
        writers.wait_for_more_ops(200, DEADLINE).await;
        let report = writers.stop().await;
        report.assert_no_anomalies("during the migration");
        compare::assert_table_matches(&client, "orders_flat", &report.rows).await;

        // What is not carried is named at the swap.
        let not_carried: Vec<&str> = stdout
            .lines()
            .filter(|l| l.starts_with("NOT carried over"))
            .collect();
        let mut named = vec![
            "orders_flat_stats",
            "one_per_id",
            "region_named",
            "audit_deferred",
            "audit_rows",
            "orders_of",
            "order_total",
            "order_count",
            "order_snapshots",
            "orders_archive",
            "orders_flat_parent_fkey",
            "orders_space",
            "amount",
        ];
        if major >= 15 {
            named.push("app_big");
        }
        for name in named {
            assert!(
                not_carried.iter().any(|l| l.contains(name)),
                "PostgreSQL {major}: the run does not name {name} as not carried: {not_carried:#?}"
            );
        }

        // What is carried is on the new table.
        let carried: Vec<bool> = client
            .query_one(
                "SELECT ARRAY[ \
                   EXISTS (SELECT FROM pg_trigger WHERE tgrelid = 'orders_flat'::regclass AND tgname = 'audit_stmt'), \
                   EXISTS (SELECT FROM pg_policy WHERE polrelid = 'orders_flat'::regclass AND polname = 'regional'), \
                   (SELECT relrowsecurity FROM pg_class WHERE oid = 'orders_flat'::regclass), \
                   has_table_privilege('dep_reader', 'orders_flat', 'SELECT'), \
                   EXISTS (SELECT FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid \
                           WHERE p.pubname = 'app_pub' AND r.prrelid = 'orders_flat'::regclass), \
                   EXISTS (SELECT FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid \
                           WHERE d.classid = 'pg_rewrite'::regclass AND r.ev_class = 'eu_orders'::regclass \
                             AND d.refobjid = 'orders_flat'::regclass), \
                   EXISTS (SELECT FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid \
                           WHERE d.classid = 'pg_rewrite'::regclass AND r.ev_class = 'orders_by_region'::regclass \
                             AND d.refobjid = 'orders_flat'::regclass), \
                   obj_description('orders_flat'::regclass, 'pg_class') IS NOT DISTINCT FROM 'orders', \
                   col_description('orders_flat'::regclass, 4) IS NOT DISTINCT FROM 'in cents' \
                     OR EXISTS (SELECT FROM pg_attribute WHERE attrelid = 'orders_flat'::regclass AND attname = 'amount' \
                                AND col_description(attrelid, attnum) = 'in cents'), \
                   obj_description('orders_flat_date_idx'::regclass, 'pg_class') IS NOT DISTINCT FROM 'by date', \
                   (SELECT attstattarget::int FROM pg_attribute WHERE attrelid = 'orders_flat'::regclass AND attname = 'region') = 500, \
                   EXISTS (SELECT FROM pg_constraint WHERE conrelid = 'orders_flat'::regclass AND conname = 'orders_flat_customer_id_fkey' AND convalidated), \
                   EXISTS (SELECT FROM pg_constraint WHERE conrelid = 'orders_flat'::regclass AND conname = 'amount_ceiling'), \
                   EXISTS (SELECT FROM pg_constraint WHERE conrelid = 'orders_flat'::regclass AND conname = 'orders_flat_customer_id_fkey' \
                           AND obj_description(oid, 'pg_constraint') = 'who bought it')]",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        let what = [
            "statement trigger",
            "policy",
            "row security",
            "grant",
            "publication membership",
            "view",
            "materialized view",
            "table comment",
            "column comment",
            "index comment",
            "statistics target",
            "foreign key",
            "NOT VALID check",
            "comment on the foreign key",
        ];
        for (ok, what) in carried.iter().zip(what) {
            assert!(
                ok,
                "PostgreSQL {major}: {what} not carried to the new table; run said: {stdout}"
            );
        }
        assert_eq!(
            sqlstate_of(&client, "INSERT INTO orders_flat (order_date, customer_id, region, amount) VALUES (now(), 7, 'US', 60000000)").await,
            Some("23514".to_string()),
            "PostgreSQL {major}: the NOT VALID check does not hold new rows"
        );
        assert_eq!(
            sqlstate_of(&client, "INSERT INTO orders_flat (order_date, customer_id, region, amount) VALUES (now(), 7, 'US', 1)").await,
            None,
            "PostgreSQL {major}: a valid order is refused"
        );
    }
}
