//! The applier's intake against a real server: changes queued on a range still being copied stop
//! it at the memory cap, and the range's copy finishing drains them; a primary key left for after
//! the copy stops it until the key is built.

mod support;
use std::time::Duration;

use std::collections::VecDeque;

use bytes::Bytes;
use pgrepart::apply::channel::{EventSender, cost, event_channel};
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

/// An applier on a fresh `(id bigint PRIMARY KEY, v text)` table of a throwaway cluster, fed
/// through a channel with room for four events.
struct Harness {
    _cluster: support::Cluster,
    events_tx: EventSender,
    done_tx: mpsc::UnboundedSender<usize>,
    task: tokio::task::JoinHandle<pgrepart::error::Result<()>>,
    check: tokio_postgres::Client,
    table: String,
    _stop: watch::Sender<bool>,
    _pause: watch::Sender<bool>,
}

impl Harness {
    /// `None` when no server of the first test major is found (the test is skipped).
    async fn start(
        prefix: &str,
        router: Router,
        done: Vec<bool>,
        key_pending: bool,
        max_queued_bytes: usize,
    ) -> Option<Harness> {
        let cluster = support::Cluster::start_or_skip(support::test_majors()[0])?;
        let url = cluster.url("postgres");
        let config = pgrepart::pg::parse_conninfo("url", &url).unwrap();
        let client = pgrepart::pg::connect(&config, "pgrepart test")
            .await
            .unwrap();
        let table = format!("{prefix}_{}", std::process::id());
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
                    narrow: None,
                },
                router,
                done,
                key_pending,
                expected_columns: vec![("id".into(), 20), ("v".into(), 25)],
                source: None,
                source_name: ("public".into(), "src".into()),
                start: Lsn(1),
                max_batch: 100,
                max_queued_bytes,
                own_writes: Default::default(),
            },
        );
        let (events_tx, events_rx) = event_channel(4 * cost(0));
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (stop, stop_rx) = watch::channel(false);
        let (pause, pause_rx) = watch::channel(false);
        let task = tokio::spawn(applier.run(events_rx, done_rx, stop_rx, pause_rx));
        Some(Harness {
            _cluster: cluster,
            events_tx,
            done_tx,
            task,
            check,
            table,
            _stop: stop,
            _pause: pause,
        })
    }

    /// Sends events from the front of `events` until the channel stays full for half a second;
    /// returns how many were sent.
    async fn send_until_blocked(&self, events: &mut VecDeque<Event>) -> usize {
        let mut sent = 0;
        while !events.is_empty() {
            let Ok(permit) =
                tokio::time::timeout(Duration::from_millis(500), self.events_tx.reserve(cost(0)))
                    .await
            else {
                break;
            };
            permit
                .unwrap()
                .send(events.pop_front().expect("not empty"))
                .unwrap();
            sent += 1;
        }
        sent
    }

    async fn rows(&self) -> i64 {
        let sql = format!("SELECT count(*) FROM {}", self.table);
        self.check.query_one(&sql, &[]).await.unwrap().get(0)
    }

    /// Sends the rest of `events` (each must be taken within 10 s: `stuck` says what it means
    /// when one is not), closes the stream, waits for the applier to finish and returns the rows
    /// of the table, which it drops.
    async fn finish(self, events: VecDeque<Event>, stuck: &str) -> i64 {
        for e in events {
            tokio::time::timeout(Duration::from_secs(10), self.events_tx.send(e, cost(0)))
                .await
                .expect(stuck)
                .unwrap();
        }
        drop(self.events_tx);
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the applier did not finish")
            .unwrap()
            .unwrap();
        let sql = format!("SELECT count(*) FROM {}", self.table);
        let n: i64 = self.check.query_one(&sql, &[]).await.unwrap().get(0);
        self.check
            .batch_execute(&format!("DROP TABLE {}", self.table))
            .await
            .unwrap();
        n
    }
}

/// A full queue on an unfinished range stops the intake of events; the range's copy finishing
/// is still taken, drains the queue and lifts the stop.
#[tokio::test]
async fn a_full_range_queue_stops_the_intake_until_the_range_is_copied() {
    // Keys below 1000 are in range 0 (being copied), the rest in range 1 (done); the cap is
    // about five queued changes.
    let router = Router::Int(vec![
        KeyRange {
            lo: None,
            hi: Some(1000),
        },
        KeyRange {
            lo: Some(1000),
            hi: None,
        },
    ]);
    let Some(h) = Harness::start("apply_cap_test", router, vec![false, true], false, 1000).await
    else {
        return;
    };
    h.events_tx
        .send(Event::Message(relation()), cost(0))
        .await
        .unwrap();
    let mut events: VecDeque<Event> = (0..100).flat_map(|i| txn(10 + 10 * i as u64, i)).collect();
    // Changes of range 0 queue up until the cap; then the channel stays full.
    let sent = h.send_until_blocked(&mut events).await;
    assert!(
        sent < 60,
        "the applier kept taking events ({sent} sent) past its queue cap"
    );
    // The range's copy finishes: its queue drains and the rest of the stream is taken.
    h.done_tx.send(0).unwrap();
    let n = h
        .finish(
            events,
            "the applier took no more events after its range was copied",
        )
        .await;
    assert_eq!(n, 100, "every insert is applied");
}

/// With the primary key pending, no event is taken, even on ranges already copied, until
/// `KEY_BUILT` arrives; then every change is applied.
#[tokio::test]
async fn a_pending_primary_key_stops_the_intake_until_it_is_built() {
    let Some(h) = Harness::start("apply_key_test", Router::Single, vec![true], true, 1 << 20).await
    else {
        return;
    };
    let mut events: VecDeque<Event> = std::iter::once(Event::Message(relation()))
        .chain((0..20).flat_map(|i| txn(10 + 10 * i as u64, i)))
        .collect();
    let sent = h.send_until_blocked(&mut events).await;
    assert!(
        sent <= 4,
        "the applier took events ({sent} sent) before the key was built"
    );
    assert_eq!(h.rows().await, 0, "nothing applied before the key");
    h.done_tx.send(pgrepart::apply::KEY_BUILT).unwrap();
    let n = h
        .finish(events, "the applier took no events after the key was built")
        .await;
    assert_eq!(n, 20, "every insert is applied");
}
