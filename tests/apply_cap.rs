//! The applier's intake against a real server: changes queued on a range still being copied stop
//! it at the memory cap, and the range's copy finishing drains them; a primary key left for after
//! the copy stops it until the key is built.

mod support;
use std::time::Duration;

use std::collections::VecDeque;

use bytes::Bytes;
use pgrepart::apply::channel::{cost, event_channel};
use pgrepart::apply::sql::Shape;
use pgrepart::apply::{Applier, ApplierConfig, Event, Router};
use pgrepart::copy::ranges::KeyRange;
use pgrepart::lsn::Lsn;
use pgrepart::pg::ident::QualifiedName;
use pgrepart::protocol::pgoutput::{Column, Datum, PgOutput, Relation, TupleData};
use tokio::sync::{mpsc, watch};

fn text(s: &str) -> Datum {
    Datum::Text(Bytes::copy_from_slice(s.as_bytes()))
}

fn relation() -> PgOutput {
    PgOutput::Relation(Relation {
        oid: 7,
        namespace: "public".into(),
        name: "src".into(),
        replica_identity: b'd',
        columns: vec![
            Column {
                flags: 1,
                name: "id".into(),
                type_oid: 20,
                type_modifier: -1,
            },
            Column {
                flags: 0,
                name: "v".into(),
                type_oid: 25,
                type_modifier: -1,
            },
        ],
    })
}

fn txn(lsn: u64, id: i64) -> [Event; 3] {
    [
        Event::Message(PgOutput::Begin {
            final_lsn: Lsn(lsn),
            commit_ts: 0,
            xid: 1,
        }),
        Event::Message(PgOutput::Insert {
            rel: 7,
            new: TupleData(vec![text(&id.to_string()), text(&"x".repeat(100))]),
        }),
        Event::Message(PgOutput::Commit {
            flags: 0,
            commit_lsn: Lsn(lsn),
            end_lsn: Lsn(lsn + 1),
            commit_ts: 0,
        }),
    ]
}

/// A full queue on an unfinished range stops the intake of events; the range's copy finishing
/// is still taken, drains the queue and lifts the stop.
#[tokio::test]
async fn a_full_range_queue_stops_the_intake_until_the_range_is_copied() {
    let Some(cluster) = support::Cluster::start_or_skip(support::test_majors()[0]) else {
        return;
    };
    let url = cluster.url("postgres");
    let config = pgrepart::pg::parse_conninfo("url", &url).unwrap();
    let client = pgrepart::pg::connect(&config, "pgrepart test")
        .await
        .unwrap();
    let table = format!("apply_cap_test_{}", std::process::id());
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id bigint PRIMARY KEY, v text)"
        ))
        .await
        .unwrap();
    let check = pgrepart::pg::connect(&config, "pgrepart test")
        .await
        .unwrap();
    let (applier, _handles) = Applier::new(
        client,
        ApplierConfig {
            helpers: vec![],
            shape: Shape {
                target: QualifiedName::new("public", table.clone()),
                columns: vec![("id".into(), "bigint".into()), ("v".into(), "text".into())],
                key: vec![0],
                partitioned: false,
                route: vec![],
            },
            // Keys below 1000 are in range 0 (being copied), the rest in range 1 (done).
            router: Router::Int(vec![
                KeyRange {
                    lo: None,
                    hi: Some(1000),
                },
                KeyRange {
                    lo: Some(1000),
                    hi: None,
                },
            ]),
            done: vec![false, true],
            key_pending: false,
            expected_columns: vec![("id".into(), 20), ("v".into(), 25)],
            source: None,
            source_name: ("public".into(), "src".into()),
            start: Lsn(1),
            max_batch: 100,
            // About five queued changes.
            max_queued_bytes: 1000,
        },
    );
    // Room for four events.
    let (events_tx, events_rx) = event_channel(4 * cost(0));
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let (_stop_tx, stop_rx) = watch::channel(false);
    let (_pause_tx, pause_rx) = watch::channel(false);
    let task = tokio::spawn(applier.run(events_rx, done_rx, stop_rx, pause_rx));

    events_tx
        .send(Event::Message(relation()), cost(0))
        .await
        .unwrap();
    let mut events: VecDeque<Event> = (0..100).flat_map(|i| txn(10 + 10 * i as u64, i)).collect();
    // Changes of range 0 queue up until the cap; then the channel stays full.
    let mut sent = 0;
    while !events.is_empty() {
        let Ok(permit) =
            tokio::time::timeout(Duration::from_millis(500), events_tx.reserve(cost(0))).await
        else {
            break;
        };
        permit
            .unwrap()
            .send(events.pop_front().expect("not empty"))
            .unwrap();
        sent += 1;
    }
    assert!(
        sent < 60,
        "the applier kept taking events ({sent} sent) past its queue cap"
    );
    // The range's copy finishes: its queue drains and the rest of the stream is taken.
    done_tx.send(0).unwrap();
    for e in events {
        tokio::time::timeout(Duration::from_secs(10), events_tx.send(e, cost(0)))
            .await
            .expect("the applier took no more events after its range was copied")
            .unwrap();
    }
    drop(events_tx);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the applier did not finish")
        .unwrap()
        .unwrap();
    let n: i64 = check
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0);
    check
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
    assert_eq!(n, 100, "every insert is applied");
}

/// With the primary key pending, no event is taken, even on ranges already copied, until
/// `KEY_BUILT` arrives; then every change is applied.
#[tokio::test]
async fn a_pending_primary_key_stops_the_intake_until_it_is_built() {
    let Some(cluster) = support::Cluster::start_or_skip(support::test_majors()[0]) else {
        return;
    };
    let url = cluster.url("postgres");
    let config = pgrepart::pg::parse_conninfo("url", &url).unwrap();
    let client = pgrepart::pg::connect(&config, "pgrepart test")
        .await
        .unwrap();
    let table = format!("apply_key_test_{}", std::process::id());
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id bigint PRIMARY KEY, v text)"
        ))
        .await
        .unwrap();
    let check = pgrepart::pg::connect(&config, "pgrepart test")
        .await
        .unwrap();
    let (applier, _handles) = Applier::new(
        client,
        ApplierConfig {
            helpers: vec![],
            shape: Shape {
                target: QualifiedName::new("public", table.clone()),
                columns: vec![("id".into(), "bigint".into()), ("v".into(), "text".into())],
                key: vec![0],
                partitioned: false,
                route: vec![],
            },
            router: Router::Single,
            done: vec![true],
            key_pending: true,
            expected_columns: vec![("id".into(), 20), ("v".into(), 25)],
            source: None,
            source_name: ("public".into(), "src".into()),
            start: Lsn(1),
            max_batch: 100,
            max_queued_bytes: 1 << 20,
        },
    );
    // Room for four events.
    let (events_tx, events_rx) = event_channel(4 * cost(0));
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let (_stop_tx, stop_rx) = watch::channel(false);
    let (_pause_tx, pause_rx) = watch::channel(false);
    let task = tokio::spawn(applier.run(events_rx, done_rx, stop_rx, pause_rx));
    let mut events: VecDeque<Event> = std::iter::once(Event::Message(relation()))
        .chain((0..20).flat_map(|i| txn(10 + 10 * i as u64, i)))
        .collect();
    let mut sent = 0;
    while !events.is_empty() {
        let Ok(permit) =
            tokio::time::timeout(Duration::from_millis(500), events_tx.reserve(cost(0))).await
        else {
            break;
        };
        permit
            .unwrap()
            .send(events.pop_front().expect("not empty"))
            .unwrap();
        sent += 1;
    }
    assert!(
        sent <= 4,
        "the applier took events ({sent} sent) before the key was built"
    );
    let count_sql = format!("SELECT count(*) FROM {table}");
    let before: i64 = check.query_one(&count_sql, &[]).await.unwrap().get(0);
    assert_eq!(before, 0, "nothing applied before the key");
    done_tx.send(pgrepart::apply::KEY_BUILT).unwrap();
    for e in events {
        tokio::time::timeout(Duration::from_secs(10), events_tx.send(e, cost(0)))
            .await
            .expect("the applier took no events after the key was built")
            .unwrap();
    }
    drop(events_tx);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the applier did not finish")
        .unwrap()
        .unwrap();
    let n: i64 = check.query_one(&count_sql, &[]).await.unwrap().get(0);
    check
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
    assert_eq!(n, 20, "every insert is applied");
}
