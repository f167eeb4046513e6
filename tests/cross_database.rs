//! Cross-database, cross-cluster, cross-major migrations (`--target`): the partitioned table is
//! built in another cluster of another major while the application writes to the source; a manual
//! cutover moves the name there, hands the sequence over above the source's, and renames the
//! source table so that stray writes fail. Plus a cutover interrupted between its two commits.
//!
//! Each test starts two throwaway clusters of fixed majors (14 -> 18, 15 -> 17, 18 -> 15, and
//! 15 -> 18 for the interrupted cutover); a pair whose binaries are missing is skipped, or fails
//! under `PGREPART_REQUIRE_SERVERS=1`. `PGREPART_TEST_MAJORS` does not apply to them.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::flow::{seed_run_args, spawn};
use support::inspect::{self, output_text};
use support::program::{Background, tail};
use support::{
    Cluster, Writers, WritersConfig, compare, pgrepart, schema, spawn_pgrepart_with_env,
    unique_name,
};
use tokio_postgres::Client;

const SEED_ROWS: usize = 12_000;
const DEADLINE: Duration = Duration::from_secs(120);

/// Both clusters of a pair, or `None` (skipped) when one's binaries are missing.
fn start_pair(source: u32, target: u32) -> Option<(Cluster, Cluster)> {
    let s = Cluster::start_or_skip(source)?;
    let t = Cluster::start_or_skip(target)?;
    Some((s, t))
}

/// `status --json` of `orders_flat`, read from the target's state.
async fn status(source: &str, target: &str) -> Option<Value> {
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

async fn wait_status(
    source: &str,
    target: &str,
    run: &Background,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + DEADLINE;
    let mut last = None;
    loop {
        if let Some(v) = status(source, target).await {
            if ready(&v) {
                return v;
            }
            last = Some(v);
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last status {last:?}; run stderr:\n{}",
            tail(&run.stderr_so_far(), 4000)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A role on the source with a grant, and a table comment, to see what crosses over.
async fn decorate_source(source: &Client, target: &Client) {
    source
        .batch_execute(
            "CREATE ROLE app; CREATE ROLE only_on_source; \
             GRANT SELECT, INSERT ON orders_flat TO app; GRANT SELECT ON orders_flat TO only_on_source; \
             COMMENT ON TABLE orders_flat IS 'one row per order'",
        )
        .await
        .unwrap_or_else(|e| panic!("decorate the source: {}", support::describe(&e)));
    target
        .batch_execute("CREATE ROLE app")
        .await
        .unwrap_or_else(|e| panic!("create role on the target: {}", support::describe(&e)));
}

/// After the cutover: the target's `orders_flat` is the partitioned table holding `expected`,
/// equal row for row to the source's `orders_flat_old`; the source's old name is gone so writes
/// to it fail; inserts on the target get ids above the source's; no slot or publication is left.
async fn assert_moved(
    source: &Client,
    target: &Client,
    expected: &std::collections::BTreeMap<i64, compare::Row>,
    partitions_of: &str,
) {
    assert_eq!(
        inspect::relkind(target, "orders_flat").await,
        Some('p'),
        "orders_flat in the target is not the partitioned table"
    );
    assert_eq!(
        inspect::partitions(target, "orders_flat").await,
        ["asia", "default", "eu", "us"]
            .iter()
            .map(|p| format!("{partitions_of}_{p}"))
            .collect::<Vec<_>>()
    );
    compare::assert_table_matches(target, "orders_flat", expected).await;
    let source_rows = compare::read_table(source, "orders_flat_old").await;
    compare::assert_table_matches(target, "orders_flat", &source_rows).await;

    // Writes that still reach the source under the old name fail loudly.
    assert_eq!(inspect::relkind(source, "orders_flat").await, None);
    let stray = source
        .execute(
            "INSERT INTO orders_flat (order_date, customer_id, region, amount, details) \
             VALUES (now(), 1, 'EU', 1.00, 'stray')",
            &[],
        )
        .await
        .expect_err("a write to the source's old name succeeded after the cutover");
    assert_eq!(
        stray.code(),
        Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE),
        "{}",
        support::describe(&stray)
    );
    inspect::assert_no_slot_or_publication(source).await;
    assert!(
        inspect::slots(target).await.is_empty(),
        "a slot was created on the target"
    );

    // The application inserts into the target through the id default, above every source id.
    let source_max: i64 = source
        .query_one(
            "SELECT greatest(max(id), (SELECT last_value FROM orders_flat_id_seq)) FROM orders_flat_old",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let new_id: i64 = target
        .query_one(
            "INSERT INTO orders_flat (order_date, customer_id, region, amount, details) \
             VALUES (now(), 1, 'EU', 1.00, 'after cutover') RETURNING id",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("insert through the id default: {}", support::describe(&e)))
        .get(0);
    assert!(
        new_id > source_max,
        "new id {new_id} is not above the source's {source_max}"
    );
    let owned: bool = target
        .query_one(
            "SELECT pg_get_serial_sequence('orders_flat', 'id') IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        owned,
        "the target's sequence is not owned by orders_flat.id"
    );
}

async fn a_table_moves_to_another_cluster_under_load(source_major: u32, target_major: u32) {
    let Some((src, dst)) = start_pair(source_major, target_major) else {
        return;
    };
    let started = Instant::now();
    let db = unique_name("xdb");
    let src_url = src.create_database(&db).await;
    let dst_url = dst.create_database(&db).await;
    let source = src.client(&db).await;
    let target = dst.client(&db).await;
    schema::create_seed_table(&source, "orders_flat", SEED_ROWS).await;
    decorate_source(&source, &target).await;

    let writers = Writers::start(WritersConfig::new(&src_url, "orders_flat")).await;
    writers.wait_for_more_ops(200, DEADLINE).await;
    let args = seed_run_args(&src_url, &["--target", &dst_url, "--cutover", "manual"]);
    let run = spawn(&args);
    wait_status(
        &src_url,
        &dst_url,
        &run,
        "streaming, waiting for the manual cutover",
        |v| v["cutover_waiting"] == true,
    )
    .await;
    // The state is in the target, not on the source.
    assert!(inspect::schema_exists(&target, "pgrepart").await);
    assert!(!inspect::schema_exists(&source, "pgrepart").await);
    writers.wait_for_more_ops(300, DEADLINE).await;
    let report = writers.stop().await;
    eprintln!("{source_major} -> {target_major}: {}", report.summary());
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
        "{source_major} -> {target_major}: cutover: {}\nrun: {}",
        output_text(&cut),
        output_text(&out)
    );
    let said = format!(
        "point the application at 127.0.0.1:{}/{db}, table public.orders_flat",
        dst.port()
    );
    let run_stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        String::from_utf8_lossy(&cut.stdout).contains(&said) && run_stdout.contains(&said),
        "no {said:?} in: {}\n{}",
        output_text(&cut),
        run_stdout
    );
    assert!(
        run_stdout.contains("NOT carried over: GRANT SELECT to only_on_source"),
        "{run_stdout}"
    );

    assert_moved(&source, &target, &report.rows, "orders_flat").await;
    let carried: (bool, Option<String>) = target
        .query_one(
            "SELECT has_table_privilege('app', 'orders_flat', 'INSERT'), obj_description('orders_flat'::regclass, 'pg_class')",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(carried, (true, Some("one row per order".to_string())));
    let v = status(&src_url, &dst_url)
        .await
        .expect("status after the cutover");
    assert_eq!(inspect::phase(&v), "done", "{v}");
    eprintln!(
        "{source_major} -> {target_major}: moved under load in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test]
async fn a_table_moves_from_postgres_14_to_18_under_load() {
    a_table_moves_to_another_cluster_under_load(14, 18).await;
}

#[tokio::test]
async fn a_table_moves_from_postgres_15_to_17_under_load() {
    a_table_moves_to_another_cluster_under_load(15, 17).await;
}

#[tokio::test]
async fn a_table_moves_from_postgres_18_down_to_15_under_load() {
    a_table_moves_to_another_cluster_under_load(18, 15).await;
}

/// The process dies right after the target's commit, before the source's: the source table is
/// not renamed and the lock died with the session, so the application goes on writing there.
/// The next `run` applies those writes from the slot, renames the source table, and ends equal.
#[tokio::test]
async fn a_cutover_interrupted_between_its_two_commits_is_finished_by_the_next_run() {
    let Some((src, dst)) = start_pair(15, 18) else {
        return;
    };
    let db = unique_name("xdb_crash");
    let src_url = src.create_database(&db).await;
    let dst_url = dst.create_database(&db).await;
    let source = src.client(&db).await;
    let target = dst.client(&db).await;
    schema::create_seed_table(&source, "orders_flat", SEED_ROWS).await;

    let writers = Writers::start(WritersConfig::new(&src_url, "orders_flat")).await;
    writers.wait_for_more_ops(200, DEADLINE).await;
    let args = seed_run_args(&src_url, &["--target", &dst_url]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let crashed = spawn_pgrepart_with_env(
        &refs,
        &[("PGREPART_TEST_FAULT", "cutover-after-target-commit")],
    )
    .wait_within(DEADLINE)
    .await;
    assert_eq!(
        crashed.status.code(),
        Some(86),
        "the run did not stop at the fault point: {}",
        output_text(&crashed)
    );

    // Half done: the target has the final name, the source table is still there, state says so.
    assert_eq!(inspect::relkind(&target, "orders_flat").await, Some('p'));
    assert_eq!(inspect::relkind(&source, "orders_flat").await, Some('r'));
    let fence: Option<String> = target
        .query_one(
            "SELECT target_committed_fence FROM pgrepart.migrations",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(fence.is_some(), "the target's commit is not recorded");
    let v = status(&src_url, &dst_url)
        .await
        .expect("status after the crash");
    assert_eq!(v["target_committed"], true, "{v}");
    let max_at_crash: i64 = target
        .query_one("SELECT max(id) FROM orders_flat", &[])
        .await
        .unwrap()
        .get(0);
    let aborted = pgrepart(&[
        "abort",
        "--source",
        &src_url,
        "--target",
        &dst_url,
        "--table",
        "orders_flat",
    ])
    .await;
    assert!(
        !aborted.status.success() && output_text(&aborted).contains("finishes the cutover"),
        "abort of a half-committed cutover: {}",
        output_text(&aborted)
    );

    // The application, not told to move, goes on writing to the source.
    writers.wait_for_more_ops(300, DEADLINE).await;
    let report = writers.stop().await;
    eprintln!("interrupted cutover: {}", report.summary());
    assert!(
        report.rows.keys().any(|id| *id > max_at_crash),
        "no row was inserted on the source after the crash"
    );

    let again = pgrepart(&refs).await;
    assert!(
        again.status.success(),
        "the rerun did not finish the cutover: {}\nserver log tail:\n{}",
        output_text(&again),
        tail(&src.server_log(), 2000)
    );
    assert_moved(&source, &target, &report.rows, "orders_flat").await;
    let v = status(&src_url, &dst_url)
        .await
        .expect("status after the rerun");
    assert_eq!(inspect::phase(&v), "done", "{v}");
}

/// A column type the target lacks is refused before anything is created, on either side.
#[tokio::test]
async fn a_column_type_missing_on_the_target_is_refused_and_nothing_is_left_behind() {
    let Some((src, dst)) = start_pair(15, 18) else {
        return;
    };
    let db = unique_name("xdb_refuse");
    let src_url = src.create_database(&db).await;
    let dst_url = dst.create_database(&db).await;
    let source = src.client(&db).await;
    let target = dst.client(&db).await;
    schema::create_seed_table(&source, "orders_flat", 1_000).await;
    source
        .batch_execute(
            "CREATE TYPE mood AS ENUM ('calm', 'busy'); ALTER TABLE orders_flat ADD COLUMN mood mood",
        )
        .await
        .unwrap();
    let source_before = inspect::relations(&source).await;
    let target_before = inspect::relations(&target).await;
    let args = seed_run_args(&src_url, &["--target", &dst_url]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = pgrepart(&refs).await;
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("these columns' types do not exist on the target: mood mood"),
        "{}",
        output_text(&out)
    );
    // `plan --target` says the same, and the rest of its checks look at the target too.
    let mut plan_args = args.clone();
    plan_args[0] = "plan".into();
    let plan_refs: Vec<&str> = plan_args.iter().map(String::as_str).collect();
    let plan = pgrepart(&plan_refs).await;
    assert_eq!(plan.status.code(), Some(1), "{}", output_text(&plan));
    let text = output_text(&plan);
    assert!(
        text.contains("mood mood")
            && text.contains("target server")
            && text.contains("PostgreSQL 18"),
        "{text}"
    );
    inspect::assert_nothing_left_behind(&source, &source_before).await;
    inspect::assert_nothing_left_behind(&target, &target_before).await;
}

/// `--into` a table made in the target, and a process that dies after both commits but before
/// recording it: the rerun records it, drops the slot and says where to point the application.
#[tokio::test]
async fn into_a_target_table_and_a_crash_after_both_commits_are_finished_by_the_next_run() {
    let Some((src, dst)) = start_pair(17, 14) else {
        return;
    };
    let db = unique_name("xdb_into");
    let src_url = src.create_database(&db).await;
    let dst_url = dst.create_database(&db).await;
    let source = src.client(&db).await;
    let target = dst.client(&db).await;
    schema::create_seed_table(&source, "orders_flat", SEED_ROWS).await;
    schema::create_seed_target(&target, "orders_list").await;
    let writers = Writers::start(WritersConfig::new(&src_url, "orders_flat")).await;
    writers.wait_for_more_ops(200, DEADLINE).await;
    let args = [
        "run",
        "--source",
        &src_url,
        "--target",
        &dst_url,
        "--table",
        "orders_flat",
        "--into",
        "orders_list",
        "--cutover",
        "manual",
    ];
    let run = spawn_pgrepart_with_env(
        &args,
        &[("PGREPART_TEST_FAULT", "cutover-after-source-commit")],
    );
    wait_status(
        &src_url,
        &dst_url,
        &run,
        "streaming, waiting for the manual cutover",
        |v| v["cutover_waiting"] == true,
    )
    .await;
    writers.wait_for_more_ops(300, DEADLINE).await;
    let report = writers.stop().await;
    let cutover_args: Vec<String> = [
        "cutover",
        "--source",
        &src_url,
        "--target",
        &dst_url,
        "--table",
        "orders_flat",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let request = tokio::spawn(async move {
        let refs: Vec<&str> = cutover_args.iter().map(String::as_str).collect();
        pgrepart(&refs).await
    });
    let crashed = run.wait_within(DEADLINE).await;
    assert_eq!(
        crashed.status.code(),
        Some(86),
        "the run did not stop at the fault point: {}",
        output_text(&crashed)
    );
    // The cutover command waits for `done`, which only the rerun records.
    let again = pgrepart(&args).await;
    assert!(again.status.success(), "rerun: {}", output_text(&again));
    let said = format!(
        "point the application at 127.0.0.1:{}/{db}, table public.orders_flat",
        dst.port()
    );
    assert!(
        String::from_utf8_lossy(&again.stdout).contains(&said),
        "no {said:?} in: {}",
        output_text(&again)
    );
    let cut = request.await.expect("the cutover request task");
    assert!(cut.status.success(), "cutover: {}", output_text(&cut));
    assert_moved(&source, &target, &report.rows, "orders_list").await;
}
