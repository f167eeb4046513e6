//! Short snapshots and the visibility condition (docs/design.md §5a): a transaction whose commit
//! record precedes the slot's consistent point while it is still in progress (held by a
//! synchronous standby that does not exist) is counted as committed by the exported snapshot,
//! never sent by the stream, and invisible to a snapshot taken then. The copy waits for it to
//! become visible before reading a range, says so in its log, and the row arrives.

mod support;

use std::time::{Duration, Instant};

use support::flow::spawn;
use support::inspect::output_text;
use support::{Cluster, test_majors, unique_name, wait_until};
use tokio_postgres::Client;

const DEADLINE: Duration = Duration::from_secs(120);

async fn xid_of(session: &Client) -> String {
    session.batch_execute("BEGIN").await.expect("begin");
    let xid: i64 = session
        .query_one("SELECT txid_current()", &[])
        .await
        .unwrap()
        .get(0);
    xid.to_string()
}

/// Waits until some session waits for the transaction `xid` to end (slot creation does).
async fn wait_for_lock_wait(client: &Client, xid: &str, what: &str) {
    wait_until(DEADLINE, what, || async {
        client
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid' AND NOT granted \
                 AND transactionid::text = $1",
                &[&xid],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
            > 0
    })
    .await;
}

#[tokio::test]
async fn a_row_committed_before_the_slot_but_not_yet_visible_still_arrives() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let started = Instant::now();
        let db = unique_name("visibility");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        client
            .batch_execute(&format!(
                "CREATE TABLE kt (k bigint PRIMARY KEY, region text NOT NULL, v int NOT NULL);
                 INSERT INTO kt SELECT g, (ARRAY['US','EU'])[1 + g % 2], g FROM generate_series(1, 2000) g;
                 ANALYZE kt;
                 -- Every session of this database commits without a standby, except the one that
                 -- asks for it below.
                 ALTER DATABASE {db} SET synchronous_commit = local;"
            ))
            .await
            .unwrap();
        client
            .batch_execute("ALTER SYSTEM SET synchronous_standby_names = 'no_such_standby'")
            .await
            .unwrap();
        client
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .unwrap();
        // Sessions opened from here take the database's setting.
        let l1 = cluster.client(&db).await;
        let l2 = cluster.client(&db).await;
        let watcher = cluster.client(&db).await;
        let xid1 = xid_of(&l1).await;

        let args: Vec<String> = [
            "run",
            "--source",
            &url,
            "--table",
            "kt",
            "--partition-by",
            "LIST (region)",
            "--partition",
            "kt_us=FOR VALUES IN ('US')",
            "--partition",
            "kt_other=DEFAULT",
            "--cutover",
            "auto",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let run = spawn(&args);
        // The slot's snapshot builder waits for l1: it starts building.
        wait_for_lock_wait(
            &watcher,
            &xid1,
            "slot creation to wait for the first transaction",
        )
        .await;
        let xid2 = xid_of(&l2).await;
        l1.batch_execute("COMMIT").await.unwrap();
        // Now it has a full snapshot and waits for l2 (begun before that) to be consistent.
        wait_for_lock_wait(
            &watcher,
            &xid2,
            "slot creation to wait for the second transaction",
        )
        .await;

        // A transaction that writes its commit record now and then waits for the standby: in
        // progress for every snapshot, committed for the slot, which becomes consistent after it.
        let held = cluster.client(&db).await;
        let held_pid: i32 = held
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        let insert = tokio::spawn(async move {
            held.batch_execute(
                "SET synchronous_commit = on; INSERT INTO kt VALUES (1000001, 'US', 7)",
            )
            .await
        });
        wait_until(DEADLINE, "the insert to wait for its standby", || async {
            watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event = 'SyncRep'",
                    &[&held_pid],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
                > 0
        })
        .await;
        l2.batch_execute("COMMIT").await.unwrap();

        // The copy must not read a range while that transaction is invisible.
        wait_until(
            DEADLINE,
            "the copy to say it waits for the transaction",
            || async { run.stderr_so_far().contains("is not visible yet") },
        )
        .await;
        let copied: i64 = watcher
            .query_one(
                "SELECT coalesce(sum(rows_copied), 0)::bigint FROM pgrepart.ranges",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            copied, 0,
            "a range was copied while the transaction was invisible"
        );
        watcher
            .batch_execute("ALTER SYSTEM RESET synchronous_standby_names")
            .await
            .unwrap();
        watcher
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .unwrap();
        insert.await.unwrap().expect("the held insert");

        let out = run.wait_within(DEADLINE).await;
        assert!(
            out.status.success(),
            "PostgreSQL {major}: the run failed: {}",
            output_text(&out)
        );
        let row = client
            .query_opt("SELECT v FROM kt WHERE k = 1000001", &[])
            .await
            .unwrap();
        assert_eq!(
            row.map(|r| r.get::<_, i32>(0)),
            Some(7),
            "PostgreSQL {major}: the row committed before the slot's consistent point is missing"
        );
        let count: i64 = client
            .query_one("SELECT count(*) FROM kt", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(count, 2001);
        eprintln!(
            "PostgreSQL {major}: a transaction held between its commit record and its visibility across the slot's creation arrived, in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
}
