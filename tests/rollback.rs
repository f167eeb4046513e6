//! The rollback window (`run --rollback-window`): after the cutover every write to the new table
//! goes back to the old one, so that `pgrepart revert` swaps back with nothing lost (the old table
//! then equals the writers' record row by row, its sequence continues, its grants, view, policy
//! and trigger are its own again), and `pgrepart finish` ends the window (then `--drop-old`). A run
//! killed during the window or inside the revert is finished by the same command; rows the old
//! table cannot hold (an old key reused in another partition) are conflicts that `revert` refuses
//! without `--force`. After a revert the partitioned table follows the original one again: the
//! run streams on without cutting over by itself, `pgrepart cutover` cuts over again (with a new
//! window), `pgrepart abort` drops it and leaves no slot or publication.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::flow::{seed_run_args, spawn, spawn_with_env, wait_not_running, wait_status};
use support::inspect::{self, output_text};
use support::{
    Cluster, Writers, WritersConfig, compare, pgrepart, schema, test_majors, unique_name,
};

const SEED_ROWS: usize = 20_000;
const DEADLINE: Duration = Duration::from_secs(180);

fn window_args(url: &str, extra: &[&str]) -> Vec<String> {
    let mut more = vec!["--rollback-window", "10min"];
    more.extend_from_slice(extra);
    seed_run_args(url, &more)
}

fn window_open(v: &Value) -> bool {
    inspect::phase(v) == "done" && v["window_state"] == "open" && v["running"] == true
}

/// The seed table with what the swap carries: a grant, a view, a policy (RLS on), a trigger, a
/// comment.
async fn create_with_dependents(client: &tokio_postgres::Client, rows: usize) {
    schema::create_seed_table(client, "orders_flat", rows).await;
    client
        .batch_execute(
            "DO $$BEGIN CREATE ROLE app_reader; EXCEPTION WHEN duplicate_object THEN NULL; END$$; \
             GRANT SELECT ON orders_flat TO app_reader; \
             CREATE VIEW big_orders AS SELECT id, region, amount FROM orders_flat WHERE amount > 5000; \
             ALTER TABLE orders_flat ENABLE ROW LEVEL SECURITY; \
             CREATE POLICY readers ON orders_flat FOR SELECT TO app_reader USING (region <> 'ASIA'); \
             CREATE TABLE audit (id bigint); \
             CREATE FUNCTION audit_insert() RETURNS trigger LANGUAGE plpgsql AS \
               $$BEGIN INSERT INTO audit VALUES (NEW.id); RETURN NULL; END$$; \
             CREATE TRIGGER orders_audit AFTER INSERT ON orders_flat FOR EACH ROW EXECUTE FUNCTION audit_insert(); \
             COMMENT ON TABLE orders_flat IS 'one row per order';",
        )
        .await
        .unwrap_or_else(|e| panic!("dependents: {}", support::describe(&e)));
}

/// A cluster of `major` with a database holding the seed table (with `create_with_dependents`
/// when `dependents`); `None` without a major or when the server is missing (skipped).
async fn seeded(
    major: Option<u32>,
    prefix: &str,
    rows: usize,
    dependents: bool,
) -> Option<(Cluster, String, tokio_postgres::Client, String)> {
    let major = major?;
    let cluster = Cluster::start_or_skip(major)?;
    let db = unique_name(prefix);
    let url = cluster.create_database(&db).await;
    let client = cluster.client(&db).await;
    if dependents {
        create_with_dependents(&client, rows).await;
    } else {
        schema::create_seed_table(&client, "orders_flat", rows).await;
    }
    Some((cluster, url, client, format!("PostgreSQL {major}")))
}

/// The first of the test majors.
fn first_major() -> Option<u32> {
    test_majors().first().copied()
}

async fn one_i64(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", support::describe(&e)))
        .get(0)
}

/// What the revert must leave: the old table under the name with the writers' rows, its
/// dependents and sequence, the partitioned table beside it, nothing of the window left.
async fn check_reverted(
    client: &tokio_postgres::Client,
    url: &str,
    report: &support::WritersReport,
    ctx: &str,
) {
    assert_eq!(
        inspect::relkind(client, "orders_flat").await,
        Some('r'),
        "{ctx}: orders_flat is not the original table again"
    );
    assert_eq!(
        inspect::relkind(client, "orders_flat_repart").await,
        Some('p'),
        "{ctx}: the partitioned table is kept under its working name"
    );
    compare::assert_table_matches(client, "orders_flat", &report.rows).await;
    assert_forward_slot_only(client, ctx).await;
    // Dependents are the original table's again.
    let checks = [
        (
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'orders_flat'::regclass AND tgname = 'orders_audit'",
            1,
        ),
        (
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'orders_flat_repart'::regclass AND tgname = 'orders_audit'",
            0,
        ),
        (
            "SELECT count(*) FROM pg_policy WHERE polrelid = 'orders_flat'::regclass AND polname = 'readers'",
            1,
        ),
        (
            "SELECT count(*) FROM pg_class WHERE oid = 'orders_flat'::regclass AND relrowsecurity",
            1,
        ),
        (
            "SELECT count(DISTINCT d.refobjid) FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid \
             WHERE r.ev_class = 'big_orders'::regclass AND d.refobjid = 'orders_flat'::regclass",
            1,
        ),
        (
            "SELECT count(*) FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid \
             WHERE r.ev_class = 'big_orders'::regclass AND d.refobjid = 'orders_flat_repart'::regclass",
            0,
        ),
        (
            "SELECT has_table_privilege('app_reader', 'orders_flat', 'SELECT')::int::bigint",
            1,
        ),
        (
            "SELECT count(*) FROM pg_class WHERE oid = 'orders_flat'::regclass \
             AND obj_description(oid, 'pg_class') = 'one row per order'",
            1,
        ),
        (
            "SELECT count(*) FROM pg_index WHERE indrelid = 'orders_flat'::regclass \
             AND indexrelid = 'orders_flat_pkey'::regclass",
            1,
        ),
    ];
    for (sql, want) in checks {
        assert_eq!(one_i64(client, sql).await, want, "{ctx}: {sql}");
    }
    // The view reads the original table.
    assert_eq!(
        one_i64(client, "SELECT count(*) FROM big_orders").await,
        one_i64(
            client,
            "SELECT count(*) FROM orders_flat WHERE amount > 5000"
        )
        .await,
        "{ctx}: the view"
    );
    // The sequence is the original table's and continues past every id written.
    let max_id = report.rows.keys().max().copied().unwrap_or(0);
    let seq: Option<String> = client
        .query_one("SELECT pg_get_serial_sequence('orders_flat', 'id')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        seq.is_some(),
        "{ctx}: the sequence is owned by orders_flat.id"
    );
    let next: i64 = client
        .query_one(
            "INSERT INTO orders_flat (order_date, customer_id, region) VALUES (now(), 1, 'EU') RETURNING id",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{ctx}: insert after the revert: {}", support::describe(&e)))
        .get(0);
    assert!(
        next > max_id,
        "{ctx}: id {next} reused (max written {max_id})"
    );
    let v = inspect::status_json(url, "orders_flat")
        .await
        .expect("status");
    assert_streaming_again(&v, ctx);
}

/// After a revert: the migration streams forward again, waiting for `pgrepart cutover`.
fn streaming_again(v: &Value) -> bool {
    inspect::phase(v) == "streaming"
        && v["window_state"] == "closed"
        && v["reverted_at"].is_string()
        && v["running"] == true
}

fn assert_streaming_again(v: &Value, ctx: &str) {
    assert!(streaming_again(v), "{ctx}: {v}");
    assert_eq!(v["cutover_waiting"], true, "{ctx}: {v}");
    assert!(
        v["note"]
            .as_str()
            .is_some_and(|n| n.contains("`pgrepart cutover` cuts over again")),
        "{ctx}: {v}"
    );
}

/// One slot and one publication: the forward stream's (the reverse one's are gone).
async fn assert_forward_slot_only(client: &tokio_postgres::Client, ctx: &str) {
    let slots = inspect::slots(client).await;
    let pubs = inspect::publications(client).await;
    assert!(
        slots.len() == 1 && !slots[0].starts_with("pgrepart_r_") && pubs == slots,
        "{ctx}: slots {slots:?}, publications {pubs:?}"
    );
}

/// `pgrepart abort` after a revert: the run streaming forward stops, and the forward slot and
/// publication and the partitioned table go; the original table stays.
async fn abort_after_revert(
    client: &tokio_postgres::Client,
    url: &str,
    run: support::Background,
    ctx: &str,
) -> std::process::Output {
    let out = pgrepart(&["abort", "--source", url, "--table", "orders_flat", "--yes"]).await;
    assert!(out.status.success(), "{ctx}: abort: {}", output_text(&out));
    let out = run.wait_within(DEADLINE).await;
    assert_eq!(out.status.code(), Some(1), "{ctx}: {}", output_text(&out));
    inspect::assert_no_slot_or_publication(client).await;
    assert_eq!(
        inspect::relkind(client, "orders_flat_repart").await,
        None,
        "{ctx}"
    );
    assert_eq!(
        inspect::relkind(client, "orders_flat").await,
        Some('r'),
        "{ctx}"
    );
    out
}

#[tokio::test]
async fn revert_under_load_gives_back_the_old_table_with_every_write() {
    for major in test_majors() {
        let Some((_cluster, url, client, ctx)) =
            seeded(Some(major), "revert", SEED_ROWS, true).await
        else {
            continue;
        };
        let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
        writers.wait_for_more_ops(200, DEADLINE).await;

        let run = spawn(&window_args(&url, &[]));
        wait_status(
            &url,
            &run,
            DEADLINE,
            "the rollback window open",
            window_open,
        )
        .await;
        // The writers go on against the partitioned table; their changes go back.
        writers.wait_for_more_ops(300, DEADLINE).await;
        wait_status(&url, &run, DEADLINE, "changes applied back", |v| {
            inspect::int(v, "reverse_applied_changes").unwrap_or(0) > 0
        })
        .await;
        assert_eq!(
            one_i64(
                &client,
                "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'orders_flat_old'::regclass AND tgname = 'orders_audit'"
            )
            .await,
            0,
            "{ctx}: during the window the old table's trigger is the new table's"
        );

        // Revert while the writers write.
        let out = pgrepart(&["revert", "--source", &url, "--table", "orders_flat"]).await;
        assert!(out.status.success(), "{ctx}: revert: {}", output_text(&out));
        // The run goes on, streaming to the partitioned table again.
        wait_status(
            &url,
            &run,
            DEADLINE,
            "streaming forward again",
            streaming_again,
        )
        .await;
        writers.wait_for_more_ops(200, DEADLINE).await;
        let report = writers.stop().await;
        report.assert_no_anomalies(&ctx);
        compare::wait_table_matches(&client, "orders_flat_repart", &report.rows, DEADLINE).await;
        check_reverted(&client, &url, &report, &ctx).await;
        let out = abort_after_revert(&client, &url, run, &ctx).await;
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("is the original table again"),
            "{ctx}: {}",
            output_text(&out)
        );
    }
}

#[tokio::test]
async fn after_a_revert_the_run_streams_on_and_cuts_over_again_when_asked() {
    for major in test_majors() {
        let Some((_cluster, url, client, ctx)) =
            seeded(Some(major), "again", SEED_ROWS, true).await
        else {
            continue;
        };
        let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
        writers.wait_for_more_ops(200, DEADLINE).await;
        // Automatic cutover (the default): the first cutover happens by itself.
        let run = spawn(&window_args(&url, &[]));
        wait_status(
            &url,
            &run,
            DEADLINE,
            "the rollback window open",
            window_open,
        )
        .await;
        writers.wait_for_more_ops(300, DEADLINE).await;
        wait_status(&url, &run, DEADLINE, "changes applied back", |v| {
            inspect::int(v, "reverse_applied_changes").unwrap_or(0) > 0
        })
        .await;
        let out = pgrepart(&["revert", "--source", &url, "--table", "orders_flat"]).await;
        assert!(out.status.success(), "{ctx}: revert: {}", output_text(&out));
        let v = wait_status(
            &url,
            &run,
            DEADLINE,
            "streaming forward again",
            streaming_again,
        )
        .await;
        assert_streaming_again(&v, &ctx);
        let applied = inspect::int(&v, "applied_changes").unwrap_or(0);
        // The forward stream applies the writers' changes to the partitioned table, and the run
        // does not cut over by itself although started with automatic cutover.
        writers.wait_for_more_ops(300, DEADLINE).await;
        let v = wait_status(&url, &run, DEADLINE, "changes applied forward", |v| {
            inspect::int(v, "applied_changes").unwrap_or(0) > applied + 100
        })
        .await;
        assert_streaming_again(&v, &ctx);
        assert_eq!(
            inspect::relkind(&client, "orders_flat").await,
            Some('r'),
            "{ctx}"
        );

        // Cut over again, by request: a new window opens (the run has --rollback-window).
        let out = pgrepart(&["cutover", "--source", &url, "--table", "orders_flat"]).await;
        assert!(
            out.status.success(),
            "{ctx}: cutover: {}",
            output_text(&out)
        );
        wait_status(&url, &run, DEADLINE, "the second window open", window_open).await;
        assert_eq!(
            inspect::relkind(&client, "orders_flat").await,
            Some('p'),
            "{ctx}"
        );
        assert_eq!(
            one_i64(
                &client,
                "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'orders_flat'::regclass AND tgname = 'orders_audit'"
            )
            .await,
            1,
            "{ctx}: the trigger moved again"
        );
        writers.wait_for_more_ops(300, DEADLINE).await;
        let report = writers.stop().await;
        report.assert_no_anomalies(&ctx);
        compare::assert_table_matches(&client, "orders_flat", &report.rows).await;
        // The second window keeps the old table in step again.
        compare::wait_table_matches(&client, "orders_flat_old", &report.rows, DEADLINE).await;
        let v = inspect::status_json(&url, "orders_flat").await.unwrap();
        assert_eq!(v["conflicts"], serde_json::json!([]), "{ctx}: {v}");
        assert!(v["note"].is_null(), "{ctx}: {v}");
        // The sequence continues past every id written, without reuse.
        let max_id = report.rows.keys().max().copied().unwrap_or(0);
        let next: i64 = client
            .query_one(
                "INSERT INTO orders_flat (order_date, customer_id, region) VALUES (now(), 1, 'EU') RETURNING id",
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("{ctx}: insert: {}", support::describe(&e)))
            .get(0);
        assert!(
            next > max_id,
            "{ctx}: id {next} reused (max written {max_id})"
        );

        let out = pgrepart(&["finish", "--source", &url, "--table", "orders_flat"]).await;
        assert!(out.status.success(), "{ctx}: finish: {}", output_text(&out));
        let out = run.wait_within(DEADLINE).await;
        assert!(out.status.success(), "{ctx}: run: {}", output_text(&out));
        let text = output_text(&out);
        assert!(
            text.contains("is the original table again")
                && text.contains("not cut over again until `pgrepart cutover`")
                && text.contains("is now partitioned"),
            "{ctx}: {text}"
        );
        inspect::assert_no_slot_or_publication(&client).await;
        let v = inspect::status_json(&url, "orders_flat").await.unwrap();
        assert_eq!(inspect::phase(&v), "done", "{ctx}: {v}");
    }
}

#[tokio::test]
async fn finish_ends_the_window_and_drops_the_old_table_then() {
    let Some((_cluster, url, client, ctx)) =
        seeded(first_major(), "finish", SEED_ROWS, false).await
    else {
        return;
    };
    let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
    writers.wait_for_more_ops(200, DEADLINE).await;
    let run = spawn(&window_args(&url, &["--drop-old"]));
    wait_status(
        &url,
        &run,
        DEADLINE,
        "the rollback window open",
        window_open,
    )
    .await;
    assert_eq!(
        inspect::relkind(&client, "orders_flat_old").await,
        Some('r'),
        "{ctx}: --drop-old waits for the window's end"
    );
    writers.wait_for_more_ops(300, DEADLINE).await;

    // `pgrepart pause` holds the reverse stream: nothing more is applied back while the writers
    // write, until `pgrepart resume`.
    let out = pgrepart(&["pause", "--source", &url, "--table", "orders_flat"]).await;
    assert!(out.status.success(), "{ctx}: pause: {}", output_text(&out));
    wait_status(&url, &run, DEADLINE, "the reverse stream paused", |v| {
        v["pause_in_effect"] == true
    })
    .await;
    let record = "SELECT reverse_applied_changes, updated_at::text FROM pgrepart.migrations";
    let row = client.query_one(record, &[]).await.unwrap();
    let (applied_when_held, at): (i64, String) = (row.get(0), row.get(1));
    writers.wait_for_more_ops(300, DEADLINE).await;
    // The run records its progress every second: wait for a record made after those writes.
    let deadline = std::time::Instant::now() + DEADLINE;
    let applied_later = loop {
        let row = client.query_one(record, &[]).await.unwrap();
        if row.get::<_, String>(1) != at {
            break row.get::<_, i64>(0);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{ctx}: no progress record"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        applied_later, applied_when_held,
        "{ctx}: changes were applied back while paused"
    );
    let out = pgrepart(&["resume", "--source", &url, "--table", "orders_flat"]).await;
    assert!(out.status.success(), "{ctx}: resume: {}", output_text(&out));
    wait_status(&url, &run, DEADLINE, "the reverse stream resumed", |v| {
        inspect::int(v, "reverse_applied_changes").unwrap_or(0) > applied_when_held
    })
    .await;

    let report = writers.stop().await;
    report.assert_no_anomalies(&ctx);
    // The old table follows the new one exactly.
    compare::wait_table_matches(&client, "orders_flat_old", &report.rows, DEADLINE).await;
    compare::assert_table_matches(&client, "orders_flat", &report.rows).await;
    let v = inspect::status_json(&url, "orders_flat").await.unwrap();
    assert!(
        v["window_seconds_left"].as_f64().is_some_and(|s| s > 500.0),
        "{ctx}: {v}"
    );
    assert!(v["reverse_lag_bytes"].as_i64().is_some(), "{ctx}: {v}");
    assert_eq!(v["conflicts"], serde_json::json!([]), "{ctx}: {v}");

    let out = pgrepart(&["finish", "--source", &url, "--table", "orders_flat"]).await;
    assert!(out.status.success(), "{ctx}: finish: {}", output_text(&out));
    let out = run.wait_within(DEADLINE).await;
    assert!(out.status.success(), "{ctx}: run: {}", output_text(&out));
    assert_eq!(inspect::relkind(&client, "orders_flat_old").await, None);
    assert_eq!(inspect::relkind(&client, "orders_flat").await, Some('p'));
    inspect::assert_no_slot_or_publication(&client).await;
    let v = inspect::status_json(&url, "orders_flat").await.unwrap();
    assert_eq!(v["window_state"], "closed", "{ctx}: {v}");
    // No window left to revert.
    let out = pgrepart(&["revert", "--source", &url, "--table", "orders_flat"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    // Nor anything left to pause.
    let out = pgrepart(&["pause", "--source", &url, "--table", "orders_flat"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("nothing to pause"),
        "{}",
        output_text(&out)
    );
}

#[tokio::test]
async fn a_run_killed_in_the_window_and_in_the_revert_is_finished_by_the_same_command() {
    let Some((_cluster, url, client, ctx)) =
        seeded(first_major(), "killwin", SEED_ROWS, true).await
    else {
        return;
    };
    let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
    writers.wait_for_more_ops(200, DEADLINE).await;
    let args = window_args(&url, &[]);

    // Killed during the window: the window stays open, the reverse slot keeps the changes.
    let run = spawn(&args);
    wait_status(
        &url,
        &run,
        DEADLINE,
        "the rollback window open",
        window_open,
    )
    .await;
    writers.wait_for_more_ops(200, DEADLINE).await;
    let _ = run.kill9().await;
    wait_not_running(&url, DEADLINE).await;
    writers.wait_for_more_ops(200, DEADLINE).await;

    // Rerun, killed inside the revert with the table locked: nothing changed.
    let run = spawn_with_env(&args, &[("PGREPART_TEST_FAULT", "revert-locked")]);
    wait_status(&url, &run, DEADLINE, "the window served again", window_open).await;
    writers.wait_for_more_ops(200, DEADLINE).await;
    let revert = support::spawn_pgrepart(&["revert", "--source", &url, "--table", "orders_flat"]);
    let out = run.wait_within(DEADLINE).await;
    assert_eq!(
        out.status.code(),
        Some(86),
        "{ctx}: stopped at revert-locked: {}",
        output_text(&out)
    );
    let _ = revert.kill9().await;
    wait_not_running(&url, DEADLINE).await;
    let v = inspect::status_json(&url, "orders_flat").await.unwrap();
    assert_eq!(inspect::phase(&v), "done", "{ctx}: {v}");
    assert_eq!(v["revert_requested"], true, "{ctx}: the request stays: {v}");
    // The forward slot was made before the lock; the rerun takes it up again.
    let forward = v["slot_name"].as_str().expect("slot_name").to_string();
    assert!(
        inspect::slots(&client).await.contains(&forward),
        "{ctx}: the forward slot {forward} is there: {:?}",
        inspect::slots(&client).await
    );
    // Rerun: it reverts as asked, and is killed right after the revert's commit.
    let run = spawn_with_env(&args, &[("PGREPART_TEST_FAULT", "revert-after-commit")]);
    let out = run.wait_within(DEADLINE).await;
    assert_eq!(
        out.status.code(),
        Some(86),
        "{ctx}: stopped at revert-after-commit: {}",
        output_text(&out)
    );
    wait_not_running(&url, DEADLINE).await;
    let v = inspect::status_json(&url, "orders_flat").await.unwrap();
    // The revert's transaction set the migration streaming forward again.
    assert_eq!(inspect::phase(&v), "streaming", "{ctx}: {v}");
    assert_eq!(
        v["window_state"], "reverted",
        "{ctx}: its cleanup is left: {v}"
    );
    assert!(v["reverted_at"].is_string(), "{ctx}: {v}");
    writers.wait_for_more_ops(200, DEADLINE).await;
    // The same command cleans up what it left, then carries on streaming from the revert.
    let run = spawn(&args);
    wait_status(
        &url,
        &run,
        DEADLINE,
        "streaming forward again",
        streaming_again,
    )
    .await;
    writers.wait_for_more_ops(200, DEADLINE).await;
    let report = writers.stop().await;
    report.assert_no_anomalies(&ctx);
    compare::wait_table_matches(&client, "orders_flat_repart", &report.rows, DEADLINE).await;
    check_reverted(&client, &url, &report, &ctx).await;
    abort_after_revert(&client, &url, run, &ctx).await;
}

#[tokio::test]
async fn an_old_key_reused_in_another_partition_is_a_conflict_revert_refuses_without_force() {
    let Some((_cluster, url, client, ctx)) = seeded(first_major(), "conflict", 2_000, false).await
    else {
        return;
    };

    let mut plan_args = window_args(&url, &[]);
    plan_args[0] = "plan".into();
    let plan = pgrepart(&plan_args.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let text = output_text(&plan);
    assert!(plan.status.success(), "{ctx}: plan: {text}");
    assert!(
        text.contains("WARN") && text.contains("rollback window") && text.contains("conflicts"),
        "{ctx}: plan warns of conflicts: {text}"
    );

    let run = spawn(&window_args(&url, &[]));
    wait_status(
        &url,
        &run,
        DEADLINE,
        "the rollback window open",
        window_open,
    )
    .await;
    // Seeded regions: id 5 is US, id 6 is EU.
    client
        .batch_execute(
            "INSERT INTO orders_flat (id, order_date, customer_id, region, amount) VALUES (5, now(), 1, 'EU', 1.00); \
             INSERT INTO orders_flat (id, order_date, customer_id, region, amount) VALUES (6, now(), 1, 'US', 2.00); \
             DELETE FROM orders_flat WHERE id = 6 AND region = 'EU';",
        )
        .await
        .unwrap_or_else(|e| panic!("{ctx}: {}", support::describe(&e)));
    let v = wait_status(&url, &run, DEADLINE, "the conflict in status", |v| {
        v["conflicts"] == serde_json::json!(["id=5"])
    })
    .await;
    assert_eq!(v["window_state"], "open", "{v}");
    // The old table keeps the newest row of id 5.
    support::wait_until(
        DEADLINE,
        "the newest row of id 5 in the old table",
        || async {
            client
                .query_one("SELECT region FROM orders_flat_old WHERE id = 5", &[])
                .await
                .is_ok_and(|r| r.get::<_, String>(0) == "EU")
        },
    )
    .await;

    let out = pgrepart(&["revert", "--source", &url, "--table", "orders_flat"]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{ctx}: refused: {text}");
    assert!(
        text.contains("id=5") && text.contains("--force"),
        "{ctx}: names the key and the way out: {text}"
    );
    let v = inspect::status_json(&url, "orders_flat").await.unwrap();
    assert_eq!(inspect::phase(&v), "done", "{ctx}: nothing changed: {v}");
    assert_eq!(v["window_state"], "open", "{v}");

    let out = pgrepart(&[
        "revert",
        "--source",
        &url,
        "--table",
        "orders_flat",
        "--force",
    ])
    .await;
    assert!(
        out.status.success(),
        "{ctx}: --force: {}",
        output_text(&out)
    );
    wait_status(
        &url,
        &run,
        DEADLINE,
        "streaming forward again",
        streaming_again,
    )
    .await;
    assert_eq!(inspect::relkind(&client, "orders_flat").await, Some('r'));
    let region = |id: i64| {
        let client = &client;
        async move {
            client
                .query_one("SELECT region FROM orders_flat WHERE id = $1", &[&id])
                .await
                .map(|r| r.get::<_, String>(0))
                .ok()
        }
    };
    assert_eq!(region(5).await.as_deref(), Some("EU"), "{ctx}: newest kept");
    assert_eq!(
        region(6).await.as_deref(),
        Some("US"),
        "{ctx}: a key no longer in conflict is copied again exactly"
    );
    // The other row of id 5 was deleted from the partitioned table in the revert: it holds
    // exactly the original table's rows, as the forward stream needs.
    compare::assert_same_rows(&client, "orders_flat", "orders_flat_repart").await;
    let out = pgrepart(&["verify", "--source", &url, "--table", "orders_flat"]).await;
    assert!(out.status.success(), "{ctx}: verify: {}", output_text(&out));
    assert_eq!(
        one_i64(&client, "SELECT count(*) FROM pgrepart.reverse_conflicts").await,
        0,
        "{ctx}: the candidates are cleared"
    );
    abort_after_revert(&client, &url, run, &ctx).await;
}

/// Inserts a customer and an order of theirs into whichever table is in use, then deletes the
/// customer (which cascades to the order), over and over, until `stop`; nothing of it is left
/// when it stops.
fn churn_customers(
    url: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    use std::sync::atomic::Ordering;
    tokio::spawn(async move {
        let client = support::cluster::connect(&url).await;
        let (mut n, mut done) = (300_000i32, 0u64);
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
            while client
                .batch_execute(&format!("DELETE FROM customers WHERE id = {n}"))
                .await
                .is_err()
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            done += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        done
    })
}

/// (conrelid, confrelid, referencing columns, validated) of the constraints named `name`.
async fn fk_rows(
    client: &tokio_postgres::Client,
    name: &str,
) -> Vec<(String, String, Vec<String>, bool)> {
    client
        .query(
            "SELECT conrelid::regclass::text, confrelid::regclass::text, \
                    ARRAY(SELECT a.attname::text FROM unnest(conkey) k(n) \
                          JOIN pg_attribute a ON a.attrelid = conrelid AND a.attnum = k.n), convalidated \
             FROM pg_constraint WHERE conname = $1 ORDER BY 1, 2",
            &[&name],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

#[tokio::test]
async fn a_revert_moves_the_foreign_keys_back_both_ways_under_load() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let ctx = format!("PostgreSQL {major}");
        let db = unique_name("revertfk");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_shop(&client, SEED_ROWS, false).await;
        let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
        let stop = Arc::new(AtomicBool::new(false));
        let churn = churn_customers(url.clone(), stop.clone());
        writers.wait_for_more_ops(200, DEADLINE).await;

        // `plan` says the keys come back at a revert.
        let mut plan_args = window_args(&url, &[]);
        plan_args[0] = "plan".into();
        let out = pgrepart(&plan_args.iter().map(String::as_str).collect::<Vec<_>>()).await;
        let text = output_text(&out);
        assert!(out.status.success(), "{ctx}: plan: {text}");
        assert!(
            !text.contains("cannot bring these foreign keys back"),
            "{ctx}: plan: {text}"
        );
        let run = spawn(&window_args(&url, &[]));
        wait_status(
            &url,
            &run,
            DEADLINE,
            "the rollback window open",
            window_open,
        )
        .await;
        // During the window the old table has no key either way: the partitioned table has them.
        assert_eq!(
            one_i64(
                &client,
                "SELECT count(*) FROM pg_constraint WHERE contype = 'f' \
                 AND (conrelid = 'orders_flat_old'::regclass OR confrelid = 'orders_flat_old'::regclass)"
            )
            .await,
            0,
            "{ctx}: the old table keeps no foreign key during the window"
        );
        writers.wait_for_more_ops(300, DEADLINE).await;
        wait_status(&url, &run, DEADLINE, "changes applied back", |v| {
            inspect::int(v, "reverse_applied_changes").unwrap_or(0) > 0
        })
        .await;

        let out = pgrepart(&["revert", "--source", &url, "--table", "orders_flat"]).await;
        assert!(out.status.success(), "{ctx}: revert: {}", output_text(&out));
        wait_status(
            &url,
            &run,
            DEADLINE,
            "streaming forward again",
            streaming_again,
        )
        .await;
        let text = run.stdout_so_far();
        assert!(
            text.contains("carried back: foreign key orders_flat_customer_id_fkey on public.orders_flat")
                && text.contains("carried back: foreign key order_items_order_id_fkey on public.order_items points at public.orders_flat again as (order_id) -> (id)"),
            "{ctx}: {text}"
        );
        writers.wait_for_more_ops(200, DEADLINE).await;
        stop.store(true, Ordering::Relaxed);
        let churned = churn.await.expect("churn task");
        assert!(churned > 0, "{ctx}: the customers' churn ran");
        let report = writers.stop().await;
        report.assert_no_anomalies(&ctx);
        assert_eq!(
            inspect::relkind(&client, "orders_flat").await,
            Some('r'),
            "{ctx}"
        );
        compare::assert_table_matches(&client, "orders_flat", &report.rows).await;
        assert_forward_slot_only(&client, &ctx).await;

        // Both keys are the original table's again, validated; none is left on the partitioned
        // table or its partitions.
        assert_eq!(
            fk_rows(&client, "orders_flat_customer_id_fkey").await,
            vec![(
                "orders_flat".to_string(),
                "customers".to_string(),
                vec!["customer_id".to_string()],
                true
            )],
            "{ctx}: the key onto customers"
        );
        assert_eq!(
            fk_rows(&client, "order_items_order_id_fkey").await,
            vec![(
                "order_items".to_string(),
                "orders_flat".to_string(),
                vec!["order_id".to_string()],
                true
            )],
            "{ctx}: the key of order_items"
        );
        // And they hold: an item of no order, an order of no customer are refused; deleting a
        // customer cascades to the original table.
        let refused = |sql: &'static str| {
            let client = &client;
            async move {
                client
                    .batch_execute(sql)
                    .await
                    .err()
                    .and_then(|e| e.code().map(|c| c.code().to_string()))
            }
        };
        assert_eq!(
            refused("INSERT INTO order_items (order_id, region) VALUES (-7, 'EU')")
                .await
                .as_deref(),
            Some("23503"),
            "{ctx}"
        );
        assert_eq!(
            refused("INSERT INTO orders_flat (order_date, customer_id, region) VALUES (now(), 999999, 'EU')")
                .await
                .as_deref(),
            Some("23503"),
            "{ctx}"
        );
        client
            .batch_execute(
                "INSERT INTO customers VALUES (400000, 'last'); \
                 INSERT INTO orders_flat (order_date, customer_id, region) VALUES (now(), 400000, 'US'); \
                 DELETE FROM customers WHERE id = 400000;",
            )
            .await
            .unwrap();
        assert_eq!(
            one_i64(
                &client,
                "SELECT count(*) FROM orders_flat WHERE customer_id = 400000"
            )
            .await,
            0,
            "{ctx}: the cascade reaches the original table"
        );
        let v = inspect::status_json(&url, "orders_flat").await.unwrap();
        assert_eq!(inspect::phase(&v), "streaming", "{ctx}: {v}");
        assert_eq!(
            v["pending_post_swap_steps"],
            serde_json::json!([]),
            "{ctx}: {v}"
        );
        abort_after_revert(&client, &url, run, &ctx).await;
    }
}

#[tokio::test]
async fn a_window_that_cannot_work_is_refused_before_anything_is_made() {
    let Some((cluster, url, client, _ctx)) = seeded(first_major(), "refuse", 500, false).await
    else {
        return;
    };
    // A key onto the table itself, and one of another table that cannot follow the new key
    // (no region column), dropped at the cutover with --drop-inbound-fks: a revert could bring
    // back neither.
    client
        .batch_execute(
            "ALTER TABLE orders_flat ADD COLUMN parent_id bigint CONSTRAINT orders_parent_fk REFERENCES orders_flat (id); \
             CREATE TABLE order_notes (order_id bigint CONSTRAINT order_notes_order_fk REFERENCES orders_flat (id), note text);",
        )
        .await
        .unwrap();
    let before = inspect::relations(&client).await;

    let args = window_args(&url, &["--drop-inbound-fks"]);
    let mut plan_args = args.clone();
    plan_args[0] = "plan".into();
    for args in [plan_args, args] {
        let out = pgrepart(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(1), "{} {text}", args[0]);
        assert!(
            text.contains("cannot bring these foreign keys back")
                && text.contains("foreign key orders_parent_fk references the table itself")
                && text.contains("foreign key order_notes_order_fk on public.order_notes would be dropped at the cutover"),
            "{} {text}",
            args[0]
        );
        inspect::assert_nothing_left_behind(&client, &before).await;
    }

    let other = cluster.create_database(&unique_name("other")).await;
    let out = pgrepart(
        &window_args(&url, &["--target", &other])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .await;
    let text = output_text(&out);
    // Across databases too (the window works there: tests/cross_rollback.rs), refused for the
    // foreign keys, before anything is made.
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("refused: foreign key"), "{text}");
    inspect::assert_nothing_left_behind(&client, &before).await;
}
