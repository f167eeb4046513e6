//! The stream reader: reads CopyData from the replication connection, decodes pgoutput, and hands
//! events to the applier through a bounded channel (the bound is the backpressure). It answers
//! keepalives and sends a standby status every second, also while the applier is busy, so the
//! walsender never times us out; the flush it reports is only what the applier confirmed safe.
//! It passes changes on at the pace the load governor sets (`ApplyPace`): while it waits it reads
//! nothing, so the walsender stops decoding once the socket's buffers are full.
//!
//! It parks the stream while the migration is paused (`pgrepart pause`) or the governor parks it
//! (the source is busy and even the slowest pace weighs on it): between two transactions, with
//! nothing in hand, it reports its position, ends the stream and closes the connection. A
//! walsender that waits for a full socket is still woken by every WAL flush of the server; a closed
//! one costs nothing. It opens the stream again where it stopped reading (`written`): the server
//! skips what was already passed on, and what was not yet applied is in the applier's queue.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::apply::Event;
use crate::apply::channel::{self, EventSender};
use crate::copy::governor::{ApplyPace, Pacer};
use crate::error::{Error, Result};
use crate::lsn::{Lsn, Monotonic};
use crate::protocol::copydata::ServerCopyData;
use crate::protocol::pgoutput::{self, PgOutput};
use crate::replication::{ReplicationClient, ReplicationStream};

/// The table's transactions received from the stream and not yet known applied: each one's end
/// LSN and commit time (µs since 2000-01-01), oldest first. The lag in seconds is the age of the
/// oldest one the flush position has not passed (a change queued on a range still being copied
/// holds the flush back, so it counts as not applied). The publication holds the table alone, so
/// every transaction with a row change is the table's.
#[derive(Debug, Default)]
pub struct Received {
    txns: Mutex<VecDeque<(Lsn, i64)>>,
}

impl Received {
    pub fn push(&self, end: Lsn, commit_ts: i64) {
        self.txns
            .lock()
            .expect("received lock")
            .push_back((end, commit_ts));
    }

    /// The commit time of the oldest received transaction that ends past `flush`; those that
    /// end at or before it are applied and forgotten.
    pub fn oldest_unapplied(&self, flush: Lsn) -> Option<i64> {
        let mut txns = self.txns.lock().expect("received lock");
        while txns.front().is_some_and(|(end, _)| *end <= flush) {
            txns.pop_front();
        }
        txns.front().map(|(_, ts)| *ts)
    }
}

/// The options of our `START_REPLICATION`.
fn publication_options(publication: &str) -> Vec<(String, String)> {
    vec![
        ("proto_version".into(), "1".into()),
        (
            "publication_names".into(),
            crate::pg::ident::quote_ident(publication),
        ),
        ("messages".into(), "true".into()),
    ]
}

pub async fn start_stream(
    repl: ReplicationClient,
    slot: &str,
    publication: &str,
    start: Lsn,
) -> Result<ReplicationStream> {
    let opts = publication_options(publication);
    let refs: Vec<(&str, &str)> = opts.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    repl.start_logical_replication(slot, start, &refs)
        .await
        .map_err(|e| Error::replication("starting replication", e))
}

/// What the reader needs to open the stream again after parking it.
#[derive(Clone)]
pub struct Reopen {
    pub source: tokio_postgres::Config,
    pub slot: String,
    pub publication: String,
}

impl Reopen {
    async fn open(&self, start: Lsn) -> Result<ReplicationStream> {
        let repl = ReplicationClient::connect(&self.source, "pgrepart replication")
            .await
            .map_err(|e| Error::replication("opening the replication connection", e))?;
        start_stream(repl, &self.slot, &self.publication, start).await
    }
}

/// Reports the position, ends the stream and closes its connection (best effort, within
/// [`PARK_WITHIN`]: a stream that fails or stalls here is dropped, which closes it too, and the
/// slot keeps every change not confirmed).
async fn park(mut stream: ReplicationStream, flush: &watch::Receiver<Lsn>, written: Lsn) {
    let _ = tokio::time::timeout(PARK_WITHIN, async move {
        let _ = send_status(&mut stream, flush, written, false).await;
        if let Ok(client) = stream.finish().await {
            let _ = client.close().await;
        }
    })
    .await;
}

#[allow(clippy::too_many_arguments)]
pub async fn read_stream(
    stream: ReplicationStream,
    reopen: Reopen,
    events: EventSender,
    flush: watch::Receiver<Lsn>,
    mut stop: watch::Receiver<bool>,
    pace: Arc<ApplyPace>,
    paused: watch::Receiver<bool>,
    received: Arc<Received>,
) -> Result<()> {
    let mut stream = Some(stream);
    // The open transaction carries a row change (it is the table's).
    let mut txn_changes = false;
    let mut status_every = tokio::time::interval(Duration::from_secs(1));
    status_every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The event read and not yet handed over, with its cost in the channel's byte budget.
    let mut pending: Option<(Event, usize)> = None;
    let mut in_txn = false;
    let mut written = Monotonic::new(*flush.borrow());
    let mut pacer = Pacer::default();
    // Nothing is read from the connection before this (the apply's pace, or a hold).
    let mut resume_at: Option<tokio::time::Instant> = None;
    loop {
        let parking = *paused.borrow() || pace.parked();
        if parking
            && !in_txn
            && pending.is_none()
            && let Some(s) = stream.take()
        {
            park(s, &flush, written.get()).await;
            tracing::info!(
                at = %written.get(),
                reason = if *paused.borrow() { "paused" } else { "the source is busy" },
                "stream parked: the replication connection is closed, the slot keeps the changes"
            );
        }
        let Some(s) = stream.as_mut() else {
            if !parking {
                stream = Some(reopen.open(written.get()).await?);
                tracing::info!(from = %written.get(), "stream resumed");
                continue;
            }
            tokio::select! {
                biased;
                _ = stop.changed() => return Ok(()),
                _ = tokio::time::sleep(PARKED_LOOK_EVERY) => continue,
            }
        };
        if resume_at.is_none() && pace.held() && !parking {
            resume_at = Some(tokio::time::Instant::now() + HELD_LOOK_EVERY);
        }
        tokio::select! {
            biased;
            _ = stop.changed() => {
                // Best effort: confirm what is safe before closing.
                let _ = send_status(s, &flush, written.get(), false).await;
                return Ok(());
            }
            _ = status_every.tick() => {
                // While idle, ask for a keepalive: its walEnd lets the flush position move on.
                send_status(s, &flush, written.get(), !in_txn).await?;
            }
            room = events.reserve(pending.as_ref().map_or(0, |p| p.1)), if pending.is_some() => {
                let Ok(room) = room else { return Ok(()) };
                if let Some((event, _)) = pending.take()
                    && room.send(event).is_err()
                {
                    return Ok(());
                }
            }
            _ = sleep_until(resume_at), if resume_at.is_some() => resume_at = None,
            msg = s.recv(), if pending.is_none() && resume_at.is_none() => {
                match msg.map_err(|e| Error::replication("reading the replication stream", e))? {
                    None => return Err(Error::transient("the server ended the replication stream")),
                    Some(ServerCopyData::XLogData { data, .. }) => {
                        let msg = pgoutput::decode(&data)
                            .map_err(|e| Error::failed(format!("could not decode a pgoutput message: {e}")))?;
                        match &msg {
                            PgOutput::Begin { .. } => in_txn = true,
                            PgOutput::Commit { end_lsn, commit_ts, .. } => {
                                in_txn = false;
                                written.advance(*end_lsn);
                                if std::mem::take(&mut txn_changes) {
                                    received.push(*end_lsn, *commit_ts);
                                }
                            }
                            PgOutput::Insert { .. }
                            | PgOutput::Update { .. }
                            | PgOutput::Delete { .. }
                            | PgOutput::Truncate { .. } => {
                                txn_changes = true;
                                pace.count(1);
                                let now = std::time::Instant::now();
                                let wait = pacer.delay(now, 1, pace.limit(), 1);
                                // Short waits add up in the pacer and are taken together.
                                // A transaction that stands between the reader and a park is
                                // read to its end at once.
                                if wait >= MIN_WAIT && !parking {
                                    resume_at = Some(tokio::time::Instant::now() + wait);
                                }
                            }
                            _ => {}
                        }
                        pending = Some((Event::Message(msg), channel::cost(data.len())));
                    }
                    Some(ServerCopyData::Keepalive { wal_end, reply_requested, .. }) => {
                        if reply_requested {
                            send_status(s, &flush, written.get(), false).await?;
                        }
                        if !in_txn {
                            written.advance(wal_end);
                            pending = Some((Event::Idle(wal_end), channel::cost(0)));
                        }
                    }
                }
            }
        }
    }
}

/// How often a held reader looks whether the governor has let it go.
const HELD_LOOK_EVERY: Duration = Duration::from_millis(50);
/// How long ending the stream politely may take before the connection is just dropped.
const PARK_WITHIN: Duration = Duration::from_secs(5);
/// How often a parked reader looks whether it may open the stream again.
const PARKED_LOOK_EVERY: Duration = Duration::from_millis(100);
/// The shortest wait the reader takes for the apply's pace.
const MIN_WAIT: Duration = Duration::from_millis(20);

async fn sleep_until(at: Option<tokio::time::Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

async fn send_status(
    stream: &mut ReplicationStream,
    flush: &watch::Receiver<Lsn>,
    written: Lsn,
    ask: bool,
) -> Result<()> {
    let f = *flush.borrow();
    stream
        .send_status(written.max(f), f, f, ask)
        .await
        .map_err(|e| Error::replication("sending standby status", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lag_is_the_age_of_the_oldest_transaction_the_flush_has_not_passed() {
        let r = Received::default();
        assert_eq!(r.oldest_unapplied(Lsn(0)), None);
        r.push(Lsn(100), 1_000);
        r.push(Lsn(200), 2_000);
        r.push(Lsn(300), 3_000);
        assert_eq!(r.oldest_unapplied(Lsn(50)), Some(1_000));
        // The flush at a commit's end: that one is applied.
        assert_eq!(r.oldest_unapplied(Lsn(200)), Some(3_000));
        assert_eq!(r.oldest_unapplied(Lsn(300)), None);
        // Nothing pending: no lag, whatever other WAL the server writes.
        assert_eq!(r.oldest_unapplied(Lsn(10_000)), None);
    }
}
