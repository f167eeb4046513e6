//! The rollback window across databases (`run --target ... --rollback-window`): after the
//! two-commit cutover the application writes to the target's partitioned table, the reverse
//! stream (from a slot on the target) applies every write back to the source's old table, and
//! `pgrepart revert` swaps back in two commits (the source's rename, then the target's), after
//! which the source's table equals the writers' record row by row and its sequence continues past
//! every id the target handed out. The run then streams the source's writes into the target's
//! partitioned table again (from the position the source's commit recorded), and `pgrepart
//! cutover` cuts over a second time. A run killed during the window and between the revert's two
//! commits is finished by the same command, losing none of the source's writes made in between;
//! a key reused in another partition is a conflict; a target without `wal_level = logical` is
//! refused by `plan` and `run` with nothing left.
//!
//! Each test starts two clusters: for each test major M (`PGREPART_TEST_MAJORS`) the target is
//! the next major of the list (the last one's is the first's), so that the reverse stream also
//! crosses majors; the crash and conflict cases take the first two.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::flow::{seed_run_args, spawn, spawn_with_env};
use support::inspect::{self, output_text};
use support::program::{Background, tail};
use support::{
    Cluster, Writers, WritersConfig, compare, pgrepart, schema, test_majors, unique_name,
};
use tokio_postgres::Client;

const SEED_ROWS: usize = 8_000;
const DEADLINE: Duration = Duration::from_secs(180);

/// The source and target majors of each case: every test major with the next one.
fn pairs() -> Vec<(u32, u32)> {
    let majors = test_majors();
    (0..majors.len())
        .map(|i| (majors[i], majors[(i + 1) % majors.len()]))
        .collect()
}

struct Pair {
    src: Cluster,
    dst: Cluster,
    src_url: String,
    dst_url: String,
    source: Client,
    target: Client,
    ctx: String,
}

/// Two clusters, a database of the same name on each, the seed table on the source.
async fn start_pair((s, t): (u32, u32), prefix: &str, rows: usize) -> Option<Pair> {
    let src = Cluster::start_or_skip(s)?;
    let dst = Cluster::start_or_skip(t)?;
    let db = unique_name(prefix);
    let src_url = src.create_database(&db).await;
    let dst_url = dst.create_database(&db).await;
    let source = src.client(&db).await;
    let target = dst.client(&db).await;
    schema::create_seed_table(&source, "orders_flat", rows).await;
    Some(Pair {
        src,
        dst,
        src_url,
        dst_url,
        source,
        target,
        ctx: format!("PostgreSQL {s} -> {t}"),
    })
}

impl Pair {
    fn run_args(&self) -> Vec<String> {
        seed_run_args(
            &self.src_url,
            &["--target", &self.dst_url, "--rollback-window", "10min"],
        )
    }

    fn command(&self, verb: &str, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = [
            verb,
            "--source",
            &self.src_url,
            "--target",
            &self.dst_url,
            "--table",
            "orders_flat",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    async fn pgrepart(&self, verb: &str, extra: &[&str]) -> std::process::Output {
        let args = self.command(verb, extra);
        pgrepart(&args.iter().map(String::as_str).collect::<Vec<_>>()).await
    }

    async fn status(&self) -> Option<Value> {
        let out = self.pgrepart("status", &["--json"]).await;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    async fn wait_status(
        &self,
        run: &Background,
        what: &str,
        ready: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + DEADLINE;
        let mut last = None;
        loop {
            if let Some(v) = self.status().await {
                if ready(&v) {
                    return v;
                }
                last = Some(v);
            }
            assert!(
                Instant::now() < deadline,
                "{}: timed out waiting for {what}; last status {last:?}; run stderr:\n{}",
                self.ctx,
                tail(&run.stderr_so_far(), 4000)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_not_running(&self) {
        let deadline = Instant::now() + DEADLINE;
        while self.status().await.is_none_or(|v| v["running"] != false) {
            assert!(
                Instant::now() < deadline,
                "{}: status still says running",
                self.ctx
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The source's table is the original one again and equals `expected`; the target's
    /// partitioned table is aside under its working name; on the source only the forward
    /// stream's slot and publication, none on the target; the next insert on the source takes an
    /// id above every id either side handed out (its row then streams to the target).
    async fn check_reverted(&self, expected: &std::collections::BTreeMap<i64, compare::Row>) {
        let ctx = &self.ctx;
        assert_eq!(
            inspect::relkind(&self.source, "orders_flat").await,
            Some('r'),
            "{ctx}: orders_flat on the source is not the original table again"
        );
        assert_eq!(
            inspect::relkind(&self.source, "orders_flat_old").await,
            None
        );
        assert_eq!(inspect::relkind(&self.target, "orders_flat").await, None);
        assert_eq!(
            inspect::relkind(&self.target, "orders_flat_repart").await,
            Some('p'),
            "{ctx}: the partitioned table is kept on the target under its working name"
        );
        compare::assert_table_matches(&self.source, "orders_flat", expected).await;
        assert_eq!(
            (
                inspect::slots(&self.source).await.len(),
                inspect::publications(&self.source).await.len()
            ),
            (1, 1),
            "{ctx}: the forward slot and publication on the source"
        );
        inspect::assert_no_slot_or_publication(&self.target).await;
        let target_max: i64 = self
            .target
            .query_one("SELECT coalesce(max(id), 0) FROM orders_flat_repart", &[])
            .await
            .unwrap()
            .get(0);
        let next: i64 = self
            .source
            .query_one(
                "INSERT INTO orders_flat (order_date, customer_id, region) VALUES (now(), 1, 'US') RETURNING id",
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("{ctx}: insert after the revert: {}", support::describe(&e)))
            .get(0);
        let known = expected.keys().next_back().copied().unwrap_or(0);
        assert!(
            next > target_max && next > known,
            "{ctx}: the sequence reuses an id: next {next}, target's max {target_max}, writers' max {known}"
        );
        let comment: Option<String> = self
            .source
            .query_one(
                "SELECT obj_description('orders_flat'::regclass, 'pg_class')",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(comment, None, "{ctx}: the cutover's note is taken off");
    }
}

fn window_open(v: &Value) -> bool {
    inspect::phase(v) == "done" && v["window_state"] == "open" && v["running"] == true
}

fn applied_back(v: &Value) -> bool {
    window_open(v) && inspect::int(v, "reverse_applied_changes").unwrap_or(0) > 0
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

/// The source's pgrepart records of the migrations: candidates and recorded revert positions.
async fn source_records(source: &Client) -> i64 {
    if !inspect::schema_exists(source, "pgrepart").await {
        return 0;
    }
    source
        .query_one(
            "SELECT (SELECT count(*) FROM pgrepart.reverse_conflicts) \
             + coalesce((SELECT count(*) FROM pgrepart.revert_positions), 0)",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("source records: {}", support::describe(&e)))
        .get(0)
}

/// Writes through the cutover on the source, then on the target through the window and the
/// revert: the source's table ends equal to the writers' record. Then the application writes to
/// the source again, the target's partitioned table follows, and `pgrepart cutover` cuts over a
/// second time (a second window opens); both tables equal the writers' record, and after
/// `finish` nothing is left on either side.
#[tokio::test]
async fn a_revert_across_databases_under_load_streams_forward_again_and_cuts_over_a_second_time() {
    for pair in pairs() {
        let Some(p) = start_pair(pair, "xwin", SEED_ROWS).await else {
            continue;
        };
        let ctx = p.ctx.clone();
        // On the source through the cutover: writes after the source's rename fail.
        let writers = Writers::start(WritersConfig::new(&p.src_url, "orders_flat")).await;
        writers.wait_for_more_ops(200, DEADLINE).await;
        let run = spawn(&p.run_args());
        p.wait_status(&run, "the rollback window open", window_open)
            .await;
        let before = writers.stop().await;
        before.assert_no_anomalies(&ctx);
        compare::assert_table_matches(&p.target, "orders_flat", &before.rows).await;
        assert_eq!(
            inspect::slots(&p.target).await.len(),
            1,
            "{ctx}: the reverse slot is on the target"
        );
        // The forward slot is dropped after both commits, a moment after the window opens.
        support::wait_until(
            DEADLINE,
            "the forward slot to go from the source",
            || async { inspect::slots(&p.source).await.is_empty() },
        )
        .await;

        // The application moves to the target; its writes go back to the source's old table.
        let writers = Writers::start(WritersConfig::new(&p.dst_url, "orders_flat")).await;
        writers.wait_for_more_ops(300, DEADLINE).await;
        p.wait_status(&run, "changes applied back", applied_back)
            .await;
        let out = p.pgrepart("revert", &[]).await;
        assert!(out.status.success(), "{ctx}: revert: {}", output_text(&out));
        let said = format!("point the application back at 127.0.0.1:{}/", p.src.port());
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&said),
            "{ctx}: revert says where to point: {}",
            output_text(&out)
        );
        let v = p
            .wait_status(&run, "streaming forward again", streaming_again)
            .await;
        assert_streaming_again(&v, &ctx);
        // Writes that still reach the target's old name fail from here.
        let report = writers.stop().await;
        eprintln!("{ctx}: {}", report.summary());
        report.assert_no_anomalies(&ctx);
        p.check_reverted(&report.rows).await;
        assert_eq!(
            source_records(&p.source).await,
            0,
            "{ctx}: the candidates and F are removed from the source"
        );

        // The application back on the source: the target's partitioned table follows it, and the
        // run does not cut over by itself although started with automatic cutover.
        let applied = inspect::int(&v, "applied_changes").unwrap_or(0);
        let writers = Writers::start(WritersConfig::new(&p.src_url, "orders_flat")).await;
        writers.wait_for_more_ops(300, DEADLINE).await;
        let v = p
            .wait_status(&run, "changes applied forward", |v| {
                streaming_again(v)
                    && inspect::int(v, "applied_changes").unwrap_or(0) > applied + 100
            })
            .await;
        assert_streaming_again(&v, &ctx);
        assert_eq!(inspect::relkind(&p.source, "orders_flat").await, Some('r'));

        // Cut over again, by request: a second window opens (the run has --rollback-window).
        let out = p.pgrepart("cutover", &[]).await;
        assert!(
            out.status.success(),
            "{ctx}: cutover: {}",
            output_text(&out)
        );
        p.wait_status(&run, "the second window open", window_open)
            .await;
        let report = writers.stop().await;
        eprintln!("{ctx}: {}", report.summary());
        report.assert_no_anomalies(&ctx);
        assert_eq!(
            inspect::relkind(&p.target, "orders_flat").await,
            Some('p'),
            "{ctx}: the partitioned table has the name again on the target"
        );
        assert_eq!(
            inspect::relkind(&p.target, "orders_flat_repart").await,
            None
        );
        compare::assert_table_matches(&p.target, "orders_flat", &report.rows).await;
        compare::assert_table_matches(&p.source, "orders_flat_old", &report.rows).await;
        // The target's sequence continues past every id written, without reuse.
        let max_id = report.rows.keys().max().copied().unwrap_or(0);
        let next: i64 = p
            .target
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

        let out = p.pgrepart("finish", &[]).await;
        assert!(out.status.success(), "{ctx}: finish: {}", output_text(&out));
        let out = run.wait_within(DEADLINE).await;
        let text = output_text(&out);
        assert!(out.status.success(), "{ctx}: run: {text}");
        assert!(
            text.contains("is the original table again")
                && text.contains("not cut over again until `pgrepart cutover`"),
            "{ctx}: {text}"
        );
        inspect::assert_no_slot_or_publication(&p.source).await;
        inspect::assert_no_slot_or_publication(&p.target).await;
        assert_eq!(source_records(&p.source).await, 0, "{ctx}");
        let v = p.status().await.expect("status after finish");
        assert_eq!(inspect::phase(&v), "done", "{ctx}: {v}");
    }
}

/// Killed during the window, then between the revert's two commits (the source's table renamed
/// back, the target's still under the name and written to): the same command finishes the revert
/// with the writes made to the target after the crash, and streams forward from the F the
/// source's commit recorded: the source's writes made between the commits reach the target.
/// `abort` then removes everything on both sides.
#[tokio::test]
async fn a_run_killed_in_the_window_and_between_the_reverts_commits_is_finished_by_the_rerun() {
    let Some(p) = start_pair(pairs()[0], "xwinkill", SEED_ROWS).await else {
        return;
    };
    let ctx = p.ctx.clone();
    let args = p.run_args();
    let run = spawn(&args);
    p.wait_status(&run, "the rollback window open", window_open)
        .await;
    let writers = Writers::start(WritersConfig::new(&p.dst_url, "orders_flat")).await;
    writers.wait_for_more_ops(200, DEADLINE).await;
    p.wait_status(&run, "changes applied back", applied_back)
        .await;
    let _ = run.kill9().await;
    p.wait_not_running().await;
    writers.wait_for_more_ops(200, DEADLINE).await;

    // Rerun, stopped after the source's commit of the revert.
    let run = spawn_with_env(
        &args,
        &[("PGREPART_TEST_FAULT", "revert-after-source-commit")],
    );
    p.wait_status(&run, "the window served again", window_open)
        .await;
    let revert = support::spawn_pgrepart(
        &p.command("revert", &[])
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let out = run.wait_within(DEADLINE).await;
    assert_eq!(
        out.status.code(),
        Some(86),
        "{ctx}: stopped at revert-after-source-commit: {}",
        output_text(&out)
    );
    let _ = revert.kill9().await;
    p.wait_not_running().await;
    assert_eq!(inspect::relkind(&p.source, "orders_flat").await, Some('r'));
    assert_eq!(inspect::relkind(&p.source, "orders_flat_old").await, None);
    assert_eq!(inspect::relkind(&p.target, "orders_flat").await, Some('p'));
    let v = p.status().await.expect("status between the commits");
    assert_eq!(inspect::phase(&v), "done", "{ctx}: {v}");
    assert_eq!(v["revert_requested"], true, "{ctx}: the request stays: {v}");
    let recorded: String = p
        .source
        .query_one(
            "SELECT forward_start_lsn::text FROM pgrepart.revert_positions",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{ctx}: F on the source: {}", support::describe(&e)))
        .get(0);
    // The application, not told to move back, goes on writing to the target; another writes to
    // the source's table, back under its name: ids of their own (negative: neither sequence
    // hands them out), inserted, updated, deleted.
    let max_at_crash: i64 = p
        .target
        .query_one("SELECT max(id) FROM orders_flat", &[])
        .await
        .unwrap()
        .get(0);
    p.source
        .batch_execute(
            "INSERT INTO orders_flat (id, order_date, customer_id, region, amount) \
             SELECT -g, now(), g, CASE WHEN g % 2 = 0 THEN 'EU' ELSE 'US' END, g \
             FROM generate_series(1, 60) g; \
             UPDATE orders_flat SET amount = amount + 1000, region = 'APAC' WHERE id BETWEEN -10 AND -1; \
             DELETE FROM orders_flat WHERE id BETWEEN -60 AND -51;",
        )
        .await
        .unwrap_or_else(|e| panic!("{ctx}: source writes in the gap: {}", support::describe(&e)));
    writers.wait_for_more_ops(300, DEADLINE).await;

    let run = spawn(&args);
    let v = p
        .wait_status(
            &run,
            "the revert finished, streaming forward",
            streaming_again,
        )
        .await;
    assert_streaming_again(&v, &ctx);
    let report = writers.stop().await;
    report.assert_no_anomalies(&ctx);
    assert!(
        report.rows.keys().any(|id| *id > max_at_crash),
        "{ctx}: no row was inserted on the target after the crash"
    );
    let state_f: String = p
        .target
        .query_one(
            "SELECT forward_start_lsn::text FROM pgrepart.migrations",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        state_f, recorded,
        "{ctx}: the rerun kept the F the source's commit recorded"
    );
    let mut expected = report.rows.clone();
    let gap = compare::read_table(&p.source, "orders_flat").await;
    let gap: std::collections::BTreeMap<i64, compare::Row> =
        gap.into_iter().filter(|(id, _)| *id < 0).collect();
    assert_eq!(gap.len(), 50, "{ctx}: the source's writes in the gap");
    expected.extend(gap);
    p.check_reverted(&expected).await;
    // The source's writes between the commits reach the target's partitioned table (with the
    // row check_reverted inserted, which the source holds too).
    let source_now = compare::read_table(&p.source, "orders_flat").await;
    compare::wait_table_matches(&p.target, "orders_flat_repart", &source_now, DEADLINE).await;

    let out = p.pgrepart("abort", &["--yes"]).await;
    assert!(out.status.success(), "{ctx}: abort: {}", output_text(&out));
    let _ = run.wait_within(DEADLINE).await;
    inspect::assert_no_slot_or_publication(&p.source).await;
    inspect::assert_no_slot_or_publication(&p.target).await;
    assert_eq!(
        inspect::relkind(&p.target, "orders_flat_repart").await,
        None
    );
    assert_eq!(source_records(&p.source).await, 0, "{ctx}");
    assert_eq!(inspect::relkind(&p.source, "orders_flat").await, Some('r'));
}

/// An id reused in another region on the target is a conflict: named by `status` (read across
/// the two databases), the revert refuses without `--force`, and with it keeps the newest row;
/// a candidate that is no longer a conflict is copied again exactly.
#[tokio::test]
async fn an_id_reused_on_the_target_is_a_conflict_across_databases() {
    let Some(p) = start_pair(pairs()[0], "xwinconf", 2_000).await else {
        return;
    };
    let ctx = p.ctx.clone();
    let mut plan = p.run_args();
    plan[0] = "plan".into();
    let out = pgrepart(&plan.iter().map(String::as_str).collect::<Vec<_>>()).await;
    let text = output_text(&out);
    assert!(out.status.success(), "{ctx}: plan: {text}");
    assert!(
        text.contains("rollback window") && text.contains("conflicts"),
        "{ctx}: {text}"
    );
    let run = spawn(&p.run_args());
    p.wait_status(&run, "the rollback window open", window_open)
        .await;
    // Seeded regions: id 5 is US, id 6 is EU.
    p.target
        .batch_execute(
            "INSERT INTO orders_flat (id, order_date, customer_id, region, amount) VALUES (5, now(), 1, 'EU', 1.00); \
             INSERT INTO orders_flat (id, order_date, customer_id, region, amount) VALUES (6, now(), 1, 'US', 2.00); \
             DELETE FROM orders_flat WHERE id = 6 AND region = 'EU';",
        )
        .await
        .unwrap_or_else(|e| panic!("{ctx}: {}", support::describe(&e)));
    p.wait_status(&run, "the conflict in status", |v| {
        v["conflicts"] == serde_json::json!(["id=5"])
    })
    .await;
    let out = p.pgrepart("revert", &[]).await;
    let text = output_text(&out);
    assert_eq!(out.status.code(), Some(1), "{ctx}: refused: {text}");
    assert!(
        text.contains("id=5") && text.contains("--force"),
        "{ctx}: {text}"
    );
    assert_eq!(
        inspect::relkind(&p.source, "orders_flat_old").await,
        Some('r')
    );
    assert_eq!(inspect::relkind(&p.target, "orders_flat").await, Some('p'));

    let out = p.pgrepart("revert", &["--force"]).await;
    assert!(
        out.status.success(),
        "{ctx}: --force: {}",
        output_text(&out)
    );
    p.wait_status(&run, "streaming forward again", streaming_again)
        .await;
    let region = |id: i64| {
        let client = &p.source;
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
        "{ctx}: copied again"
    );
    // The partitioned table keeps only the row the source kept (the extra row of id 5 deleted
    // in the target's commit), so the forward stream finds one row per id.
    let source_rows = compare::read_table(&p.source, "orders_flat").await;
    compare::assert_table_matches(&p.target, "orders_flat_repart", &source_rows).await;
    assert_eq!(
        count(&p.source, "orders_flat").await,
        count(&p.target, "orders_flat_repart").await,
        "{ctx}"
    );
    assert_eq!(
        source_records(&p.source).await,
        0,
        "{ctx}: the candidates are removed from the source"
    );
    inspect::assert_no_slot_or_publication(&p.target).await;
    // The kept row goes on following the source.
    p.source
        .batch_execute("UPDATE orders_flat SET region = 'APAC', amount = 5.00 WHERE id = 5")
        .await
        .unwrap();
    let source_rows = compare::read_table(&p.source, "orders_flat").await;
    compare::wait_table_matches(&p.target, "orders_flat_repart", &source_rows, DEADLINE).await;
    let out = p.pgrepart("abort", &["--yes"]).await;
    assert!(out.status.success(), "{ctx}: abort: {}", output_text(&out));
    let _ = run.wait_within(DEADLINE).await;
    inspect::assert_no_slot_or_publication(&p.source).await;
}

/// A target whose wal_level is not logical cannot feed the reverse stream: `plan` fails the
/// rollback window's check and `run` refuses, with nothing left on either side.
#[tokio::test]
async fn a_target_without_logical_wal_is_refused_by_plan_and_run() {
    let Some(mut p) = start_pair(pairs()[0], "xwinwal", 500).await else {
        return;
    };
    let ctx = p.ctx.clone();
    p.target
        .batch_execute("ALTER SYSTEM SET wal_level = replica")
        .await
        .unwrap();
    p.dst.restart();
    let db = p.dst_url.rsplit('/').next().unwrap().to_string();
    p.target = p.dst.client(&db).await;
    let src_before = inspect::relations(&p.source).await;
    let dst_before = inspect::relations(&p.target).await;
    let mut plan = p.run_args();
    plan[0] = "plan".into();
    for args in [plan, p.run_args()] {
        let out = pgrepart(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
        let text = output_text(&out);
        assert_eq!(out.status.code(), Some(1), "{ctx}: {} {text}", args[0]);
        assert!(
            text.contains("the target's wal_level is replica")
                && text.contains("wal_level = logical"),
            "{ctx}: {} {text}",
            args[0]
        );
        inspect::assert_nothing_left_behind(&p.source, &src_before).await;
        inspect::assert_nothing_left_behind(&p.target, &dst_before).await;
    }
}

async fn count(c: &Client, table: &str) -> i64 {
    c.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap_or_else(|e| panic!("count {table}: {}", support::describe(&e)))
        .get(0)
}
