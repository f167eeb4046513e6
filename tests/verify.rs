//! `pgrepart verify`: a row-level comparison of the table and its new partitioned table at a
//! consistent point, while the migration streams. It passes under a write load; a difference
//! planted in the new table is found and named by key, repaired, and then passes; the check `run`
//! makes before cutting over blocks the swap on a difference until it is repaired, and
//! `--verify off` skips it.

mod support;

use std::process::Output;
use std::time::{Duration, Instant};

use support::flow::{cut_over, seed_run_args, spawn, wait_status};
use support::inspect::{self, output_text};
use support::program::Background;
use support::{Cluster, Writers, WritersConfig, compare, schema, test_majors, unique_name};
use tokio_postgres::Client;

const DEADLINE: Duration = Duration::from_secs(180);

async fn verify(url: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "verify",
        "--source",
        url,
        "--table",
        "orders_flat",
        "--jobs",
        "2",
    ];
    args.extend_from_slice(extra);
    support::pgrepart(&args).await
}

async fn wait_streaming(url: &str, run: &Background) {
    wait_status(url, run, DEADLINE, "phase streaming", |v| {
        inspect::phase(v) == "streaming" && v["running"] == true
    })
    .await;
}

/// Three differences made directly in the new table: a changed row, a deleted one, an extra one.
/// Returns their ids.
async fn plant(client: &Client) -> (i64, i64, i64) {
    let ids: Vec<i64> = client
        .query(
            "SELECT id FROM orders_flat_repart WHERE details IS NOT NULL ORDER BY id LIMIT 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let (changed, deleted, extra) = (ids[0], ids[1], 9_000_000_000i64);
    client
        .batch_execute(&format!(
            "UPDATE orders_flat_repart SET details = details || ' (planted)' WHERE id = {changed};
             DELETE FROM orders_flat_repart WHERE id = {deleted};
             INSERT INTO orders_flat_repart (id, order_date, customer_id, region, amount, details)
             VALUES ({extra}, now(), 1, 'EU', 1.00, 'planted');"
        ))
        .await
        .unwrap_or_else(|e| panic!("planting differences: {}", support::describe(&e)));
    (changed, deleted, extra)
}

fn assert_names_the_planted_keys(out: &Output, (changed, deleted, extra): (i64, i64, i64)) {
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "verify did not exit 1: {}",
        output_text(out)
    );
    for line in [
        format!("{changed}: different"),
        format!("{deleted}: missing on target"),
        format!("{extra}: extra on target"),
    ] {
        assert!(
            text.contains(&line),
            "verify did not report {line:?}: {}",
            output_text(out)
        );
    }
    assert!(
        !text.contains("(planted)") && !text.contains("planted'"),
        "verify printed row values: {text}"
    );
}

#[tokio::test]
async fn verify_passes_under_load_then_finds_names_and_repairs_a_planted_difference() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let started = Instant::now();
        let db = unique_name("verify");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_seed_table(&client, "orders_flat", 40_000).await;
        let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
        writers.wait_for_more_ops(200, DEADLINE).await;

        let run = spawn(&seed_run_args(
            &url,
            &["--cutover", "manual", "--verify", "off"],
        ));
        wait_streaming(&url, &run).await;

        // Under the write load: equal, twice (the second one while the writers go on).
        for round in 0..2 {
            let before = writers.ops();
            let out = verify(&url, &[]).await;
            assert!(
                out.status.success(),
                "PostgreSQL {major}: verify under load (round {round}) failed: {}\nrun stderr:\n{}",
                output_text(&out),
                support::program::tail(&run.stderr_so_far(), 3000)
            );
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("equal"),
                "{}",
                output_text(&out)
            );
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("rows are hashed by value"),
                "PostgreSQL {major}: every column of the seed table has a hash function: {}",
                output_text(&out)
            );
            assert!(
                writers.ops() > before,
                "the writers were idle during verify"
            );
        }
        let json = verify(&url, &["--json", "--sample", "50"]).await;
        assert!(json.status.success(), "{}", output_text(&json));
        let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
        assert_eq!(v["equal"], true, "{v}");
        assert!(
            v["ranges_compared"].as_u64().unwrap() < v["ranges_total"].as_u64().unwrap(),
            "{v}"
        );

        // The writers stop, so that the planted rows stay as planted (they may touch any row).
        let report = writers.stop().await;
        eprintln!("PostgreSQL {major}: {}", report.summary());
        // Equal once more after the writers' last commits, which the run has then applied: the
        // planted rows are not overwritten by a late change.
        let settled = verify(&url, &[]).await;
        assert!(
            settled.status.success(),
            "verify after the load failed: {}",
            output_text(&settled)
        );
        let planted = plant(&client).await;
        let out = verify(&url, &[]).await;
        assert_names_the_planted_keys(&out, planted);

        let repaired = verify(&url, &["--repair"]).await;
        assert!(
            repaired.status.success(),
            "verify --repair failed: {}",
            output_text(&repaired)
        );
        assert!(
            String::from_utf8_lossy(&repaired.stdout).contains("repaired"),
            "{}",
            output_text(&repaired)
        );
        let again = verify(&url, &[]).await;
        assert!(
            again.status.success(),
            "verify after repair failed: {}",
            output_text(&again)
        );

        // The hold is lifted: the run still applies changes, and cuts over.
        client
            .batch_execute("UPDATE orders_flat SET amount = 1.23 WHERE id = 1")
            .await
            .unwrap();
        cut_over(&url, run, DEADLINE, format_args!("PostgreSQL {major}")).await;
        let mut expected = report.rows.clone();
        let row1 = compare::read_table(&client, "orders_flat_old")
            .await
            .remove(&1);
        if let Some(r) = row1 {
            expected.insert(1, r);
        }
        compare::assert_table_matches(&client, "orders_flat", &expected).await;
        eprintln!(
            "PostgreSQL {major}: verify under load, planted difference found and repaired in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
}

#[tokio::test]
async fn the_check_before_cutover_blocks_on_a_difference_until_repaired_and_verify_off_skips_it() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let db = unique_name("verify_cut");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_seed_table(&client, "orders_flat", 20_000).await;
        let run = spawn(&seed_run_args(&url, &["--cutover", "manual"]));
        wait_streaming(&url, &run).await;
        let planted = plant(&client).await;

        let cut = support::spawn_pgrepart(&["cutover", "--source", &url, "--table", "orders_flat"]);
        let v = wait_status(&url, &run, DEADLINE, "the cutover blocked by verify", |v| {
            v["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("cutover blocked by verify"))
        })
        .await;
        let err = v["last_error"].as_str().unwrap();
        assert!(err.contains(&format!("{} (different)", planted.0)), "{err}");
        assert_eq!(
            inspect::relkind(&client, "orders_flat").await,
            Some('r'),
            "cut over despite a difference"
        );

        let repaired = verify(&url, &["--repair"]).await;
        assert!(
            repaired.status.success(),
            "verify --repair failed: {}",
            output_text(&repaired)
        );
        let cut = cut.wait_within(DEADLINE).await;
        assert!(
            cut.status.success(),
            "cutover after repair failed: {}",
            output_text(&cut)
        );
        let out = run.wait_within(DEADLINE).await;
        assert!(out.status.success(), "run failed: {}", output_text(&out));
        assert!(
            output_text(&out).contains("equal"),
            "run did not report its verify: {}",
            output_text(&out)
        );
        support::assert_same_rows(&client, "orders_flat", "orders_flat_old").await;

        // --verify off: the same difference goes through the cutover unchecked.
        let db = unique_name("verify_off");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_seed_table(&client, "orders_flat", 5_000).await;
        let run = spawn(&seed_run_args(
            &url,
            &["--cutover", "manual", "--verify", "off"],
        ));
        wait_streaming(&url, &run).await;
        let (_, deleted, _) = plant(&client).await;
        cut_over(&url, run, DEADLINE, format_args!("PostgreSQL {major}")).await;
        let gone: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM orders_flat WHERE id = {deleted}"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(gone, 0, "--verify off did not skip the check");
        eprintln!(
            "PostgreSQL {major}: the check before cutover blocked, repaired, and --verify off skipped it"
        );
    }
}

#[tokio::test]
async fn a_verify_killed_while_holding_the_run_lets_go_when_its_lease_runs_out() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let db = unique_name("verify_lease");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_seed_table(&client, "orders_flat", 5_000).await;
        let run = spawn(&seed_run_args(
            &url,
            &["--cutover", "manual", "--verify", "off"],
        ));
        wait_streaming(&url, &run).await;

        // A transaction with an xid keeps verify's temporary slot waiting, after the run holds.
        let blocker = cluster.client(&db).await;
        blocker
            .batch_execute("CREATE TABLE side (x int); BEGIN; INSERT INTO side VALUES (1)")
            .await
            .unwrap();
        let verify =
            support::spawn_pgrepart(&["verify", "--source", &url, "--table", "orders_flat"]);
        let held = || async {
            client
                .query_one(
                    "SELECT held_at_lsn IS NOT NULL FROM pgrepart.migrations",
                    &[],
                )
                .await
                .map(|r| r.get::<_, bool>(0))
                .unwrap_or(false)
        };
        support::wait_until(DEADLINE, "the run to hold for verify", held).await;
        verify.kill9().await;
        blocker.batch_execute("COMMIT").await.unwrap();

        // Held: a change is not applied; after the lease (30 s) it is.
        client
            .batch_execute("UPDATE orders_flat SET amount = 4.56 WHERE id = 10")
            .await
            .unwrap();
        let applied = || async {
            client
                .query_one(
                    "SELECT coalesce(amount = 4.56, false) FROM orders_flat_repart WHERE id = 10",
                    &[],
                )
                .await
                .map(|r| r.get::<_, bool>(0))
                .unwrap_or(false)
        };
        assert!(!applied().await, "applied while held");
        support::wait_until(
            Duration::from_secs(60),
            "the hold's lease to run out",
            || async { !held().await && applied().await },
        )
        .await;
        let out = cut_over(&url, run, DEADLINE, format_args!("PostgreSQL {major}")).await;
        assert!(
            output_text(&out).contains("lease ran out"),
            "the run did not say why it let go: {}",
            output_text(&out)
        );
        support::assert_same_rows(&client, "orders_flat", "orders_flat_old").await;
        eprintln!("PostgreSQL {major}: a killed verify's hold was lifted by its lease");
    }
}

#[tokio::test]
async fn a_column_without_a_hash_function_is_compared_by_its_text() {
    let Some(major) = test_majors().into_iter().next() else {
        return;
    };
    let Some(cluster) = Cluster::start_or_skip(major) else {
        return;
    };
    let db = unique_name("verify_json");
    let url = cluster.create_database(&db).await;
    let client = cluster.client(&db).await;
    schema::create_seed_table(&client, "orders_flat", 5_000).await;
    // json has no hash function: rows are hashed by their text, and a json value changed on the
    // new table alone is found.
    client
        .batch_execute(
            "ALTER TABLE orders_flat ADD COLUMN doc json; \
             UPDATE orders_flat SET doc = json_build_object('n', id % 7)",
        )
        .await
        .unwrap();
    let run = spawn(&seed_run_args(
        &url,
        &["--cutover", "manual", "--verify", "off"],
    ));
    wait_streaming(&url, &run).await;
    let out = verify(&url, &[]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rows are hashed by their text"),
        "PostgreSQL {major}: {}",
        output_text(&out)
    );
    let id: i64 = client
        .query_one("SELECT min(id) FROM orders_flat_repart", &[])
        .await
        .unwrap()
        .get(0);
    client
        .batch_execute(&format!(
            "UPDATE orders_flat_repart SET doc = '{{\"n\": 99}}' WHERE id = {id}"
        ))
        .await
        .unwrap();
    let out = verify(&url, &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("{id}: different")),
        "PostgreSQL {major}: {}",
        output_text(&out)
    );
    drop(run);
    let out = support::pgrepart(&["abort", "--source", &url, "--table", "orders_flat"]).await;
    assert!(out.status.success(), "{}", output_text(&out));
}
