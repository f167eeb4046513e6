//! The stream reader: reads CopyData from the replication connection, decodes pgoutput, and hands
//! events to the applier through a bounded channel (the bound is the backpressure). It answers
//! keepalives and sends a standby status every second, also while the applier is busy, so the
//! walsender never times us out; the flush it reports is only what the applier confirmed safe.
//! It passes changes on at the pace the load governor sets (`ApplyPace`): while it waits it reads
//! nothing, so the walsender stops decoding once the socket's buffers are full.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::apply::Event;
use crate::apply::channel::{self, EventSender};
use crate::copy::governor::{ApplyPace, Pacer};
use crate::error::{Error, Result};
use crate::lsn::{Lsn, Monotonic};
use crate::protocol::copydata::ServerCopyData;
use crate::protocol::pgoutput::{self, PgOutput};
use crate::replication::ReplicationStream;

pub async fn read_stream(
    mut stream: ReplicationStream,
    events: EventSender,
    flush: watch::Receiver<Lsn>,
    mut stop: watch::Receiver<bool>,
    pace: Arc<ApplyPace>,
) -> Result<()> {
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
        if resume_at.is_none() && pace.held() {
            resume_at = Some(tokio::time::Instant::now() + HELD_LOOK_EVERY);
        }
        tokio::select! {
            biased;
            _ = stop.changed() => {
                // Best effort: confirm what is safe before closing.
                let _ = send_status(&mut stream, &flush, written.get(), false).await;
                return Ok(());
            }
            _ = status_every.tick() => {
                // While idle, ask for a keepalive: its walEnd lets the flush position move on.
                send_status(&mut stream, &flush, written.get(), !in_txn).await?;
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
            msg = stream.recv(), if pending.is_none() && resume_at.is_none() => {
                match msg.map_err(|e| Error::replication("reading the replication stream", e))? {
                    None => return Err(Error::transient("the server ended the replication stream")),
                    Some(ServerCopyData::XLogData { data, .. }) => {
                        let msg = pgoutput::decode(&data)
                            .map_err(|e| Error::failed(format!("could not decode a pgoutput message: {e}")))?;
                        match &msg {
                            PgOutput::Begin { .. } => in_txn = true,
                            PgOutput::Commit { end_lsn, .. } => {
                                in_txn = false;
                                written.advance(*end_lsn);
                            }
                            PgOutput::Insert { .. }
                            | PgOutput::Update { .. }
                            | PgOutput::Delete { .. }
                            | PgOutput::Truncate { .. } => {
                                pace.count(1);
                                let now = std::time::Instant::now();
                                let wait = pacer.delay(now, 1, pace.limit(), 1);
                                // Short waits add up in the pacer and are taken together.
                                if wait >= MIN_WAIT {
                                    resume_at = Some(tokio::time::Instant::now() + wait);
                                }
                            }
                            _ => {}
                        }
                        pending = Some((Event::Message(msg), channel::cost(data.len())));
                    }
                    Some(ServerCopyData::Keepalive { wal_end, reply_requested, .. }) => {
                        if reply_requested {
                            send_status(&mut stream, &flush, written.get(), false).await?;
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
