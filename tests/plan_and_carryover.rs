//! `pgrepart plan`, generated partitions (RANGE by month, HASH, LIST from data) and what the
//! cutover carries over to the new table (view, grant, RLS policy, comment, trigger), against real
//! servers.

mod support;

use std::process::Output;
use std::time::Duration;

use support::schema::create_seed_table;
use support::{Cluster, pgrepart, spawn_pgrepart, test_majors, unique_name};
use tokio_postgres::Client;

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        support::program::tail(&String::from_utf8_lossy(&o.stderr), 4000)
    )
}

async fn count(client: &Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap_or_else(|e| panic!("count {table}: {}", support::describe(&e)))
        .get(0)
}

async fn partitions_of(client: &Client, table: &str) -> Vec<String> {
    client
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = $1::text::regclass ORDER BY 1",
            &[&table],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.get(0))
        .collect()
}

async fn relkind(client: &Client, table: &str) -> String {
    client
        .query_one(
            "SELECT relkind::text FROM pg_class WHERE oid = $1::text::regclass",
            &[&table],
        )
        .await
        .unwrap()
        .get(0)
}

/// `YYYY_MM` of the month `ahead` months after the server's current month.
async fn month_suffix(client: &Client, ahead: i32) -> String {
    client
        .query_one(
            "SELECT to_char(date_trunc('month', current_date) + make_interval(months => $1), 'YYYY_MM')",
            &[&ahead],
        )
        .await
        .unwrap()
        .get(0)
}

/// Runs a migration to the end (auto cutover) and checks it left equal row counts behind.
async fn migrate(url: &str, client: &Client, table: &str, extra: &[&str]) -> Output {
    let mut args = vec!["run", "--source", url, "--table", table, "--jobs", "2"];
    args.extend_from_slice(extra);
    let out = spawn_pgrepart(&args)
        .wait_within(Duration::from_secs(180))
        .await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(relkind(client, table).await, "p", "{}", text(&out));
    let old = format!("{table}_old");
    assert_eq!(count(client, table).await, count(client, &old).await);
    out
}

/// `pgrepart plan --source URL --table orders_flat`, then `extra`.
async fn plan(url: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["plan", "--source", url, "--table", "orders_flat"];
    args.extend_from_slice(extra);
    pgrepart(&args).await
}

#[tokio::test]
async fn plan_prints_checks_and_ddl_and_fails_on_a_missing_column() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let db = unique_name("plan");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        create_seed_table(&client, "orders_flat", 2000).await;

        let ok = plan(
            &url,
            &[
                "--partition-by",
                "RANGE (order_date)",
                "--interval",
                "month",
                "--premake",
                "2",
            ],
        )
        .await;
        assert!(ok.status.success(), "{}", text(&ok));
        let out = String::from_utf8_lossy(&ok.stdout);
        assert!(
            out.contains("CREATE TABLE \"public\".\"orders_flat_repart\""),
            "{out}"
        );
        assert!(
            out.contains("PARTITION OF \"public\".\"orders_flat_repart\" FOR VALUES FROM ('2024-01-01') TO ('2024-02-01')"),
            "{out}"
        );
        // 2000 seed rows reach July 2024, which is past: the partitions go on to today's month,
        // then two more are premade, and a DEFAULT.
        let last = month_suffix(&client, 2).await;
        assert!(
            out.contains(&format!("\"orders_flat_{last}\" PARTITION OF")),
            "{out}"
        );
        let beyond = month_suffix(&client, 3).await;
        assert!(!out.contains(&format!("orders_flat_{beyond}")), "{out}");
        assert!(
            out.contains("\"orders_flat_default\" PARTITION OF"),
            "{out}"
        );
        assert!(out.contains("[pass]"), "{out}");
        assert!(out.contains("key ranges"), "{out}");
        assert!(
            out.contains("PRIMARY KEY (\"id\", \"order_date\")\n) PARTITION BY"),
            "{out}"
        );

        // A key left for after the copy: declared at the end, and accepted by the server.
        let later = plan(
            &url,
            &[
                "--partition-by",
                "RANGE (order_date)",
                "--interval",
                "month",
                "--primary-key",
                "after-copy",
            ],
        )
        .await;
        assert!(later.status.success(), "{}", text(&later));
        let out = String::from_utf8_lossy(&later.stdout);
        let add = "ALTER TABLE \"public\".\"orders_flat_repart\" ADD PRIMARY KEY (\"id\", \"order_date\")";
        assert!(out.contains(add), "{out}");
        assert_eq!(out.matches("PRIMARY KEY").count(), 1, "{out}");
        assert!(!out.contains("[FAIL]"), "{out}");

        let json = plan(
            &url,
            &[
                "--partition-by",
                "HASH (customer_id)",
                "--modulus",
                "4",
                "--json",
            ],
        )
        .await;
        assert!(json.status.success(), "{}", text(&json));
        let v: serde_json::Value =
            serde_json::from_slice(&json.stdout).expect("plan --json is JSON");
        assert_eq!(v["ddl"].as_array().unwrap().len(), 1 + 4, "{v:#}");
        assert!(
            v["checks"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["status"] != "fail"),
            "{v:#}"
        );

        let bad = plan(
            &url,
            &[
                "--partition-by",
                "LIST (regoin)",
                "--partition",
                "x=DEFAULT",
            ],
        )
        .await;
        assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
        let out = String::from_utf8_lossy(&bad.stdout);
        assert!(out.contains("[FAIL] partition key"), "{out}");
        assert!(out.contains("fix:"), "{out}");
        // plan changed nothing
        assert_eq!(relkind(&client, "orders_flat").await, "r");
        let leftovers: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_class WHERE relname LIKE 'orders_flat\\_%' AND relkind IN ('r','p')",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(leftovers, 0);
    }
}

#[tokio::test]
async fn generated_range_hash_and_list_partitions_take_readable_names() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let db = unique_name("gen");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;

        // 4000 seed rows' order_date spans all of 2024: its 12 months, the months from then to
        // today's, 2 premade after today's, a default.
        create_seed_table(&client, "by_month", 4000).await;
        let out = migrate(
            &url,
            &client,
            "by_month",
            &[
                "--partition-by",
                "RANGE (order_date)",
                "--interval",
                "month",
                "--premake",
                "2",
            ],
        )
        .await;
        let mut expected: Vec<String> = client
            .query(
                "SELECT 'by_month_' || to_char(m, 'YYYY_MM') FROM generate_series(date '2024-01-01', \
                 date_trunc('month', current_date) + interval '2 months', interval '1 month') m",
                &[],
            )
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.get(0))
            .collect();
        expected.push("by_month_default".into());
        expected.sort();
        assert_eq!(partitions_of(&client, "by_month").await, expected);
        let in_default = count(&client, "by_month_default").await;
        assert_eq!(in_default, 0);
        assert!(
            String::from_utf8_lossy(&out.stdout)
                .contains("; the DEFAULT partition public.by_month_default holds 0 row(s)"),
            "{}",
            text(&out)
        );

        create_seed_table(&client, "by_hash", 3000).await;
        migrate(
            &url,
            &client,
            "by_hash",
            &["--partition-by", "HASH (customer_id)", "--modulus", "4"],
        )
        .await;
        assert_eq!(
            partitions_of(&client, "by_hash").await,
            vec!["by_hash_p0", "by_hash_p1", "by_hash_p2", "by_hash_p3"]
        );

        create_seed_table(&client, "by_region", 3000).await;
        migrate(
            &url,
            &client,
            "by_region",
            &["--partition-by", "LIST (region)", "--list-values-from-data"],
        )
        .await;
        assert_eq!(
            partitions_of(&client, "by_region").await,
            vec![
                "by_region_asia",
                "by_region_default",
                "by_region_eu",
                "by_region_latam",
                "by_region_us"
            ]
        );
        assert_eq!(count(&client, "by_region_latam").await, 750);

        // --drop-old: the old table is gone once the swap has committed.
        create_seed_table(&client, "dropped", 1000).await;
        let out = spawn_pgrepart(&[
            "run",
            "--source",
            &url,
            "--table",
            "dropped",
            "--jobs",
            "2",
            "--partition-by",
            "HASH (id)",
            "--modulus",
            "2",
            "--drop-old",
        ])
        .wait_within(Duration::from_secs(180))
        .await;
        assert!(out.status.success(), "{}", text(&out));
        assert_eq!(count(&client, "dropped").await, 1000);
        let gone: bool = client
            .query_one("SELECT to_regclass('dropped_old') IS NULL", &[])
            .await
            .unwrap()
            .get(0);
        assert!(gone, "{}", text(&out));
    }
}

#[tokio::test]
async fn cutover_carries_view_grant_policy_comment_and_trigger_to_the_new_table() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let db = unique_name("carry");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        create_seed_table(&client, "orders_flat", 2000).await;
        let reader = unique_name("reader");
        client
            .batch_execute(&format!(
                "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{reader}') THEN CREATE ROLE {reader}; END IF; END $$;
                 GRANT SELECT ON orders_flat TO {reader};
                 CREATE VIEW big_orders AS SELECT id, region, amount FROM orders_flat WHERE amount > 5000;
                 COMMENT ON TABLE orders_flat IS 'all orders';
                 COMMENT ON COLUMN orders_flat.region IS 'sales region';
                 ALTER TABLE orders_flat ENABLE ROW LEVEL SECURITY;
                 CREATE POLICY only_us ON orders_flat FOR SELECT TO {reader} USING (region = 'US');
                 CREATE TABLE audit (order_id bigint, at timestamptz DEFAULT now());
                 CREATE FUNCTION audit_insert() RETURNS trigger LANGUAGE plpgsql AS
                   $f$ BEGIN INSERT INTO audit (order_id) VALUES (NEW.id); RETURN NEW; END $f$;
                 CREATE TRIGGER orders_audit AFTER INSERT ON orders_flat FOR EACH ROW EXECUTE FUNCTION audit_insert();
                 ALTER TABLE orders_flat ALTER COLUMN region SET STATISTICS 321;"
            ))
            .await
            .unwrap_or_else(|e| panic!("setup: {}", support::describe(&e)));

        let out = migrate(
            &url,
            &client,
            "orders_flat",
            &["--partition-by", "LIST (region)", "--list-values-from-data"],
        )
        .await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("recreated view public.big_orders"),
            "{}",
            text(&out)
        );

        // The trigger did not fire for the rows pgrepart applied: only the insert below counts.
        assert_eq!(count(&client, "audit").await, 0);
        // The view reads the new table.
        let bound: bool = client
            .query_one(
                "SELECT EXISTS (SELECT FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid \
                 WHERE r.ev_class = 'big_orders'::regclass AND d.refobjid = 'orders_flat'::regclass)",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(bound, "big_orders does not read the new orders_flat");
        let via_view = count(&client, "big_orders").await;
        let direct: i64 = client
            .query_one("SELECT count(*) FROM orders_flat WHERE amount > 5000", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(via_view, direct);
        // The grant, the policy, RLS, the comments and the statistics target.
        let row = client
            .query_one(
                &format!(
                    "SELECT has_table_privilege('{reader}', 'orders_flat', 'SELECT'), \
                            (SELECT count(*) FROM pg_policy WHERE polrelid = 'orders_flat'::regclass AND polname = 'only_us'), \
                            c.relrowsecurity, obj_description(c.oid, 'pg_class'), \
                            col_description(c.oid, (SELECT attnum FROM pg_attribute WHERE attrelid = c.oid AND attname = 'region')), \
                            (SELECT attstattarget::int FROM pg_attribute WHERE attrelid = c.oid AND attname = 'region'), \
                            obj_description('orders_flat_old'::regclass, 'pg_class') \
                     FROM pg_class c WHERE c.oid = 'orders_flat'::regclass"
                ),
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("read carried objects: {}", support::describe(&e)));
        assert!(row.get::<_, bool>(0), "grant");
        assert_eq!(row.get::<_, i64>(1), 1, "policy");
        assert!(row.get::<_, bool>(2), "row level security");
        assert_eq!(
            row.get::<_, Option<String>>(3).as_deref(),
            Some("all orders")
        );
        assert_eq!(
            row.get::<_, Option<String>>(4).as_deref(),
            Some("sales region")
        );
        assert_eq!(row.get::<_, Option<i32>>(5), Some(321));
        let old_comment: String = row.get(6);
        assert!(
            old_comment.contains("Replaced at") && old_comment.contains("pgrepart"),
            "{old_comment}"
        );
        // The policy is in force for the reader.
        client
            .batch_execute(&format!("SET ROLE {reader}"))
            .await
            .unwrap();
        let seen: i64 = client
            .query_one("SELECT count(DISTINCT region) FROM orders_flat", &[])
            .await
            .unwrap()
            .get(0);
        client.batch_execute("RESET ROLE").await.unwrap();
        assert_eq!(seen, 1, "the policy lets the reader see US rows only");
        // The trigger fires on the new table.
        client
            .batch_execute(
                "INSERT INTO orders_flat (order_date, customer_id, region) VALUES (now(), 1, 'EU')",
            )
            .await
            .unwrap();
        assert_eq!(count(&client, "audit").await, 1);
    }
}

#[tokio::test]
async fn cutover_carries_forced_rls_trigger_states_a_materialized_view_storage_and_replica_identity()
 {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let db = unique_name("carry2");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        create_seed_table(&client, "orders_flat", 2000).await;
        let reader = unique_name("mvreader");
        let owner = unique_name("mvowner");
        client
            .batch_execute(&format!(
                "CREATE ROLE {reader}; CREATE ROLE {owner};
                 GRANT SELECT ON orders_flat TO {owner};
                 ALTER TABLE orders_flat ENABLE ROW LEVEL SECURITY;
                 ALTER TABLE orders_flat FORCE ROW LEVEL SECURITY;
                 CREATE POLICY everything ON orders_flat USING (true) WITH CHECK (true);
                 CREATE FUNCTION noop() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN RETURN NEW; END $f$;
                 CREATE TRIGGER t_replica BEFORE UPDATE ON orders_flat FOR EACH ROW EXECUTE FUNCTION noop();
                 CREATE TRIGGER t_always BEFORE UPDATE ON orders_flat FOR EACH ROW EXECUTE FUNCTION noop();
                 CREATE TRIGGER t_disabled BEFORE UPDATE ON orders_flat FOR EACH ROW EXECUTE FUNCTION noop();
                 ALTER TABLE orders_flat ENABLE REPLICA TRIGGER t_replica;
                 ALTER TABLE orders_flat ENABLE ALWAYS TRIGGER t_always;
                 ALTER TABLE orders_flat DISABLE TRIGGER t_disabled;
                 CREATE MATERIALIZED VIEW region_totals AS
                   SELECT region, count(*) AS orders, sum(amount) AS total FROM orders_flat GROUP BY region;
                 CREATE UNIQUE INDEX region_totals_region ON region_totals (region);
                 ALTER MATERIALIZED VIEW region_totals OWNER TO {owner};
                 GRANT SELECT ON region_totals TO {reader};
                 COMMENT ON MATERIALIZED VIEW region_totals IS 'orders per region';
                 ALTER TABLE orders_flat SET (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02);
                 ALTER TABLE orders_flat REPLICA IDENTITY FULL;"
            ))
            .await
            .unwrap_or_else(|e| panic!("setup: {}", support::describe(&e)));

        let plan = pgrepart(&[
            "plan",
            "--source",
            &url,
            "--table",
            "orders_flat",
            "--partition-by",
            "LIST (region)",
            "--list-values-from-data",
        ])
        .await;
        assert!(plan.status.success(), "{}", text(&plan));
        let planned = String::from_utf8_lossy(&plan.stdout);
        for expected in [
            "materialized view public.region_totals (rebuilt over the new table right after the swap",
            "storage parameters fillfactor=80, autovacuum_vacuum_scale_factor=0.02",
            "REPLICA IDENTITY FULL (set on the new table and each partition",
            "WITH (fillfactor='80', autovacuum_vacuum_scale_factor='0.02')",
            "row level security (enabled, forced)",
        ] {
            assert!(
                planned.contains(expected),
                "{expected:?} not in:\n{planned}"
            );
        }

        // A write during the migration, so the matview's data is older than the table's.
        client
            .batch_execute(
                "INSERT INTO orders_flat (order_date, customer_id, region) VALUES (now(), 1, 'EU')",
            )
            .await
            .unwrap();
        let out = migrate(
            &url,
            &client,
            "orders_flat",
            &["--partition-by", "LIST (region)", "--list-values-from-data"],
        )
        .await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("recreated materialized view public.region_totals on the new table"),
            "{}",
            text(&out)
        );

        // FORCE RLS and the trigger states.
        let forced: bool = client
            .query_one(
                "SELECT relforcerowsecurity AND relrowsecurity FROM pg_class WHERE oid = 'orders_flat'::regclass",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(forced, "FORCE ROW LEVEL SECURITY was not carried");
        let states: Vec<(String, String)> = client
            .query(
                "SELECT tgname::text, tgenabled::text FROM pg_trigger \
                 WHERE tgrelid = 'orders_flat'::regclass AND NOT tgisinternal ORDER BY 1",
                &[],
            )
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        assert_eq!(
            states,
            vec![
                ("t_always".to_string(), "A".to_string()),
                ("t_disabled".to_string(), "D".to_string()),
                ("t_replica".to_string(), "R".to_string()),
            ]
        );

        // The matview reads the new table, with its data, index, owner, grant and comment.
        let row = client
            .query_one(
                &format!(
                    "SELECT c.relispopulated, pg_get_userbyid(c.relowner)::text, \
                            has_table_privilege('{reader}', c.oid, 'SELECT'), obj_description(c.oid, 'pg_class'), \
                            EXISTS (SELECT FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid \
                                    WHERE r.ev_class = c.oid AND d.refobjid = 'orders_flat'::regclass), \
                            (SELECT indisunique FROM pg_index WHERE indexrelid = 'region_totals_region'::regclass), \
                            (SELECT count(*) FROM pg_class WHERE relname LIKE '%pgrepart_new') \
                     FROM pg_class c WHERE c.oid = 'region_totals'::regclass"
                ),
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("read the matview: {}", support::describe(&e)));
        assert!(row.get::<_, bool>(0), "populated");
        assert_eq!(row.get::<_, String>(1), owner);
        assert!(row.get::<_, bool>(2), "grant");
        assert_eq!(
            row.get::<_, Option<String>>(3).as_deref(),
            Some("orders per region")
        );
        assert!(
            row.get::<_, bool>(4),
            "region_totals does not read the new orders_flat"
        );
        assert_eq!(row.get::<_, Option<bool>>(5), Some(true), "unique index");
        assert_eq!(row.get::<_, i64>(6), 0, "temporary names left behind");
        let in_view: i64 = client
            .query_one("SELECT sum(orders)::bigint FROM region_totals", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(in_view, count(&client, "orders_flat").await);
        client
            .batch_execute("REFRESH MATERIALIZED VIEW CONCURRENTLY region_totals")
            .await
            .unwrap_or_else(|e| panic!("refresh: {}", support::describe(&e)));

        // Storage parameters on every partition, REPLICA IDENTITY FULL on the table and partitions.
        let parts: Vec<(String, Vec<String>, String)> = client
            .query(
                "SELECT c.relname::text, coalesce(c.reloptions, '{}'), c.relreplident::text FROM pg_class c \
                 WHERE c.oid = 'orders_flat'::regclass \
                    OR c.oid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = 'orders_flat'::regclass) \
                 ORDER BY 1",
                &[],
            )
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        assert_eq!(parts.len(), 6, "{parts:?}");
        for (name, options, identity) in &parts {
            assert_eq!(identity, "f", "replica identity of {name}");
            if name != "orders_flat" {
                assert_eq!(
                    options,
                    &vec![
                        "fillfactor=80".to_string(),
                        "autovacuum_vacuum_scale_factor=0.02".to_string()
                    ],
                    "storage parameters of {name}"
                );
            }
        }

        // The old matview is gone, so --drop-old could drop the old table: do it by hand here.
        client
            .batch_execute("DROP TABLE orders_flat_old")
            .await
            .unwrap_or_else(|e| panic!("drop the old table: {}", support::describe(&e)));
    }
}

#[tokio::test]
async fn a_table_with_rules_is_refused_with_the_way_out_and_nothing_is_created() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let db = unique_name("rules");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        create_seed_table(&client, "orders_flat", 500).await;
        client
            .batch_execute(
                "CREATE TABLE changes (id bigint);
                 CREATE RULE log_updates AS ON UPDATE TO orders_flat DO ALSO INSERT INTO changes VALUES (NEW.id);",
            )
            .await
            .unwrap();
        let before = support::inspect::relations(&client).await;
        let args = [
            "--source",
            &url,
            "--table",
            "orders_flat",
            "--partition-by",
            "HASH (id)",
            "--modulus",
            "2",
        ];
        let plan = pgrepart(&[&["plan"], &args[..]].concat()).await;
        assert_eq!(plan.status.code(), Some(1), "{}", text(&plan));
        let out = String::from_utf8_lossy(&plan.stdout);
        assert!(out.contains("[FAIL] rules"), "{out}");
        assert!(out.contains("log_updates"), "{out}");
        assert!(out.contains("DROP RULE"), "{out}");
        let run = pgrepart(&[&["run"], &args[..]].concat()).await;
        assert_eq!(run.status.code(), Some(1), "{}", text(&run));
        assert!(
            String::from_utf8_lossy(&run.stderr).contains("log_updates"),
            "{}",
            text(&run)
        );
        support::inspect::assert_nothing_left_behind(&client, &before).await;
    }
}

#[tokio::test]
async fn no_default_refuses_a_row_outside_every_partition_and_leaves_nothing_behind() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let db = unique_name("nodefault");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        // Generated RANGE partitions cover every date in the data; the one row no partition can
        // take is a NULL key, which only a DEFAULT partition would accept.
        client
            .batch_execute(
                "CREATE TABLE events (id bigserial PRIMARY KEY, happened date, note text);
                 INSERT INTO events (happened, note)
                   SELECT date '2024-01-01' + (g % 200), 'event ' || g FROM generate_series(1, 500) g;
                 INSERT INTO events (happened, note) VALUES (NULL, 'undated');",
            )
            .await
            .unwrap();
        let before = support::inspect::relations(&client).await;
        let args = [
            "--source",
            &url,
            "--table",
            "events",
            "--partition-by",
            "RANGE (happened)",
            "--interval",
            "month",
            "--no-default",
        ];
        let plan = pgrepart(&[&["plan"], &args[..]].concat()).await;
        assert_eq!(plan.status.code(), Some(1), "{}", text(&plan));
        let out = String::from_utf8_lossy(&plan.stdout);
        assert!(out.contains("[FAIL] partition key nulls"), "{out}");
        assert!(out.contains("1 row(s) have NULL happened"), "{out}");
        assert!(!out.contains("events_default"), "{out}");
        let run = pgrepart(&[&["run"], &args[..]].concat()).await;
        assert_eq!(run.status.code(), Some(1), "{}", text(&run));
        assert!(
            String::from_utf8_lossy(&run.stderr).contains("NULL happened"),
            "{}",
            text(&run)
        );
        support::inspect::assert_nothing_left_behind(&client, &before).await;

        // Once the row has a date, every row fits a generated partition and no DEFAULT is made.
        client
            .batch_execute("UPDATE events SET happened = date '2024-03-03' WHERE happened IS NULL")
            .await
            .unwrap();
        let plan = pgrepart(&[&["plan"], &args[..]].concat()).await;
        assert!(plan.status.success(), "{}", text(&plan));
        let out = String::from_utf8_lossy(&plan.stdout);
        assert!(out.contains("[pass] rows fit"), "{out}");
        assert!(out.contains("\"events_2024_07\" PARTITION OF"), "{out}");
        assert!(
            !out.contains("events_default") && !out.contains(" DEFAULT;"),
            "{out}"
        );
    }
}

/// On RDS and Aurora the replication right is membership in `rds_replication`, not the
/// REPLICATION attribute: the check accepts it where that role exists, and still refuses a role
/// with none of them. The CREATE grants a run needs are checked too, each with the GRANT.
#[tokio::test]
async fn plan_checks_the_replication_right_including_rds_replication_and_the_create_grants() {
    let major = test_majors()[0];
    let Some(cluster) = Cluster::start_or_skip(major) else {
        return;
    };
    let db = unique_name("rdsrepl");
    cluster.create_database(&db).await;
    let client = cluster.client(&db).await;
    create_seed_table(&client, "orders_flat", 100).await;
    client
        .batch_execute(&format!(
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC; \
             CREATE ROLE rds_replication NOLOGIN; \
             CREATE ROLE rds_member LOGIN; GRANT rds_replication TO rds_member; \
             CREATE ROLE plain_member LOGIN; \
             GRANT CREATE ON DATABASE {db} TO rds_member; \
             GRANT USAGE, CREATE ON SCHEMA public TO rds_member; \
             GRANT SELECT ON orders_flat TO rds_member, plain_member;"
        ))
        .await
        .unwrap();
    let check_lines = |role: &str| {
        let url = format!("postgresql://{role}@127.0.0.1:{}/{db}", cluster.port());
        async move {
            let out = pgrepart(&[
                "plan",
                "--source",
                &url,
                "--table",
                "orders_flat",
                "--partition-by",
                "HASH (id)",
                "--modulus",
                "2",
            ])
            .await;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let line = |name: &str| {
                text.lines()
                    .find(|l| l.contains(name))
                    .unwrap_or_else(|| panic!("no {name} check: {text}"))
                    .to_string()
            };
            (
                line("replication rights"),
                line("create rights"),
                text.clone(),
            )
        }
    };
    let (repl, create, _) = check_lines("rds_member").await;
    assert!(repl.contains("[pass]"), "PostgreSQL {major}: {repl}");
    assert!(create.contains("[pass]"), "PostgreSQL {major}: {create}");
    let (repl, create, text) = check_lines("plain_member").await;
    assert!(
        repl.contains("[FAIL]") && repl.contains("rds_replication"),
        "PostgreSQL {major}: {repl}"
    );
    assert!(
        create.contains("[FAIL]")
            && text.contains(&format!("GRANT CREATE ON DATABASE {db} TO plain_member"))
            && text.contains("GRANT USAGE, CREATE ON SCHEMA public TO plain_member"),
        "PostgreSQL {major}: {text}"
    );
}
