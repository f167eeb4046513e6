//! A table whose key is `GENERATED ALWAYS AS IDENTITY`, migrated while a writer inserts (through
//! the identity), updates and deletes: every row arrives, and afterwards the new table's identity
//! is ALWAYS again and continues above every existing id.

mod support;

use std::time::Duration;

use support::inspect::output_text;
use support::{Cluster, pgrepart, test_majors, unique_name, wait_until};

const DEADLINE: Duration = Duration::from_secs(120);

#[tokio::test]
async fn an_always_identity_key_is_carried_and_continues() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let db = unique_name("ident");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        client
            .batch_execute(
                "CREATE TABLE events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
                   kind text NOT NULL, payload text); \
                 INSERT INTO events (kind, payload) SELECT (ARRAY['a','b','c'])[1 + g % 3], 'p' || g \
                   FROM generate_series(1, 20000) g;",
            )
            .await
            .unwrap();

        // A writer that inserts through the identity, updates the partition key, and deletes.
        let writer_client = cluster.client(&db).await;
        let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
        let ops = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = ops.clone();
        let writer = tokio::spawn(async move {
            let mut i: i64 = 0;
            let mut deleted: Vec<i64> = Vec::new();
            while !*stop_rx.borrow_and_update() {
                i += 1;
                if i % 3 == 2 {
                    deleted.push(1 + (i * 13) % 20000);
                }
                let sql = match i % 3 {
                    0 => "INSERT INTO events (kind, payload) VALUES ('b', 'new')".to_string(),
                    1 => format!(
                        "UPDATE events SET kind = 'c', payload = 'moved' WHERE id = {}",
                        1 + (i * 7) % 20000
                    ),
                    _ => format!("DELETE FROM events WHERE id = {}", 1 + (i * 13) % 20000),
                };
                // Statements blocked by the swap's lock fail or wait; either is fine here.
                let _ = writer_client.batch_execute(&sql).await;
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // Bounds the load; not a synchronisation.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            deleted
        });
        wait_until(DEADLINE, "the writer to start", || {
            let ops = ops.clone();
            async move { ops.load(std::sync::atomic::Ordering::Relaxed) > 50 }
        })
        .await;
        let out = pgrepart(&[
            "run",
            "--source",
            &url,
            "--table",
            "events",
            "--partition-by",
            "LIST (kind)",
            "--partition",
            "events_a=FOR VALUES IN ('a')",
            "--partition",
            "events_rest=DEFAULT",
        ])
        .await;
        assert!(
            out.status.success(),
            "PostgreSQL {major}: {}",
            output_text(&out)
        );
        let _ = stop_tx.send(true);
        let deleted = writer.await.unwrap();

        // Rows written before the swap are all in the new table: compare with the old one, less
        // what the writer did after the swap (it wrote to the new table then).
        let identity: String = client
            .query_one(
                "SELECT attidentity::text FROM pg_attribute WHERE attrelid = 'events'::regclass AND attname = 'id'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            identity, "a",
            "PostgreSQL {major}: the identity is not ALWAYS after the swap"
        );
        let max_old: i64 = client
            .query_one("SELECT max(id) FROM events_old", &[])
            .await
            .unwrap()
            .get(0);
        let row = client
            .query_one("INSERT INTO events (kind) VALUES ('a') RETURNING id", &[])
            .await
            .unwrap();
        let id: i64 = row.get(0);
        assert!(
            id > max_old,
            "PostgreSQL {major}: new id {id} is not above the old table's max {max_old}"
        );
        let missing: i64 = client
            .query_one(
                "SELECT count(*) FROM events_old o WHERE NOT EXISTS \
                   (SELECT 1 FROM events n WHERE n.id = o.id) \
                   AND o.id <> ALL($1)",
                &[&deleted],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            missing, 0,
            "PostgreSQL {major}: rows of the old table missing from the new one"
        );
    }
}
