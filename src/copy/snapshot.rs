//! Short snapshots: each range is read in a source transaction of its own, on a fresh REPEATABLE
//! READ snapshot, so the copy holds the database's xmin horizon and its ACCESS SHARE lock for one
//! range at a time, not for the whole copy. This is correct under one condition (docs/design.md
//! §5): every transaction that the slot's exported snapshot counts as committed must be visible
//! in the fresh snapshot, because the stream never sends those. The exported snapshot's
//! `pg_current_snapshot()` is recorded while it is importable; each fresh snapshot is checked
//! against it ([`unseen_committed`]) and taken again while it misses one.
//!
//! ```text
//! exported (recorded once):  xmin ......... xmax     committed = { x < xmax, x not in xip }
//! fresh (per range):         xmin' ............ xmax'  running  = { x in xip' } ∪ { x >= xmax' }
//! condition:                 committed ∩ running = ∅
//! ```

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::error::{Error, Result};

/// A `pg_current_snapshot()` value: `xmin:xmax:xip,...` (64-bit transaction ids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgSnapshot {
    pub xmin: u64,
    pub xmax: u64,
    pub xip: Vec<u64>,
}

impl PgSnapshot {
    /// Parses the text form of `pg_snapshot` (`10:20:10,14,15`, or `10:20:` with no xip).
    ///
    /// The xmin may exceed the xmax: the snapshot a replication slot exports is built from the
    /// oldest running xid and the latest completed one, and with nothing running the first can be
    /// one past the second (`1096:1095:` was seen on PostgreSQL 14). The server's visibility test
    /// looks at the xmin first, so such a snapshot counts every id below its xmin as finished;
    /// [`finished`](Self::finished) and [`running`](Self::running) follow the same order.
    pub fn parse(text: &str) -> Option<PgSnapshot> {
        let mut parts = text.trim().splitn(3, ':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let xip = match parts.next()? {
            "" => Vec::new(),
            list => list
                .split(',')
                .map(|x| x.parse().ok())
                .collect::<Option<Vec<u64>>>()?,
        };
        Some(PgSnapshot { xmin, xmax, xip })
    }

    /// The first id this snapshot counts as running whatever its xip says.
    fn horizon(&self) -> u64 {
        self.xmin.max(self.xmax)
    }

    /// Whether this snapshot counts `xid` as finished (committed, or aborted: for the condition
    /// they are alike, an aborted transaction is in no later snapshot's xip either).
    fn finished(&self, xid: u64) -> bool {
        xid < self.xmin || (xid < self.xmax && !self.xip.contains(&xid))
    }

    /// Whether this snapshot counts `xid` as still running (invisible).
    fn running(&self, xid: u64) -> bool {
        !self.finished(xid)
    }
}

impl std::fmt::Display for PgSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let xip: Vec<String> = self.xip.iter().map(u64::to_string).collect();
        write!(f, "{}:{}:{}", self.xmin, self.xmax, xip.join(","))
    }
}

/// The first transaction that `exported` counts as committed and `fresh` does not see, if any
/// (pure). Only ids below the exported horizon can be committed there; of those, the fresh
/// snapshot misses the ones in its xip and the ones at or above its own horizon.
pub fn unseen_committed(exported: &PgSnapshot, fresh: &PgSnapshot) -> Option<u64> {
    let in_xip = fresh
        .xip
        .iter()
        .copied()
        .filter(|&x| exported.finished(x) && fresh.running(x))
        .min();
    // A fresh horizon below the exported one (never in practice: snapshots only move forward).
    let above =
        (fresh.horizon()..exported.horizon()).find(|&x| exported.finished(x) && fresh.running(x));
    match (in_xip, above) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `pg_current_snapshot()` of the session's transaction.
pub async fn current(session: &Client) -> Result<PgSnapshot> {
    let text: String = session
        .query_one("SELECT pg_current_snapshot()::text", &[])
        .await
        .map_err(|e| Error::db("reading the copy's snapshot", e))?
        .get(0);
    PgSnapshot::parse(&text).ok_or_else(|| {
        Error::failed(format!(
            "the server gave a snapshot pgrepart cannot read: {text}"
        ))
    })
}

/// How long a range waits, at most, for a transaction the exported snapshot counts as committed
/// to become visible (it is between its commit record and its end: a synchronous standby not
/// answering, a descheduled backend).
pub const VISIBILITY_WAIT: Duration = Duration::from_secs(600);
const RETAKE_AFTER: Duration = Duration::from_millis(100);

/// Opens the range's source transaction: REPEATABLE READ on a fresh snapshot that sees everything
/// `exported` counts as committed; while it does not, ends it, waits briefly and takes another.
/// `None` (state recorded by an older pgrepart): the fresh snapshot is taken unchecked.
pub async fn begin_range(session: &Client, exported: Option<&PgSnapshot>) -> Result<()> {
    let started = Instant::now();
    let mut warned = Instant::now() - Duration::from_secs(60);
    loop {
        session
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(|e| Error::db("starting a copy transaction", e))?;
        let fresh = current(session).await?;
        let Some(exported) = exported else {
            return Ok(());
        };
        let Some(xid) = unseen_committed(exported, &fresh) else {
            return Ok(());
        };
        session
            .batch_execute("ROLLBACK")
            .await
            .map_err(|e| Error::db("ending a copy transaction", e))?;
        if started.elapsed() > VISIBILITY_WAIT {
            return Err(Error::failed(format!(
                "transaction {xid} committed before the replication slot's consistent point but is still not visible after {} s",
                VISIBILITY_WAIT.as_secs()
            ))
            .with_hint("it is waiting between its commit and its end (a synchronous standby that does not answer?): fix that, then run the same command again"));
        }
        if warned.elapsed() >= Duration::from_secs(5) {
            tracing::warn!(
                xid,
                waited_s = started.elapsed().as_secs(),
                "a transaction committed before the slot's consistent point is not visible yet (waiting for a synchronous standby?); taking the range's snapshot again shortly"
            );
            warned = Instant::now();
        }
        tokio::time::sleep(RETAKE_AFTER).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> PgSnapshot {
        PgSnapshot::parse(text).unwrap()
    }

    #[test]
    fn snapshots_parse_from_their_text() {
        assert_eq!(
            s("10:20:"),
            PgSnapshot {
                xmin: 10,
                xmax: 20,
                xip: vec![]
            }
        );
        assert_eq!(
            s("10:20:10,14"),
            PgSnapshot {
                xmin: 10,
                xmax: 20,
                xip: vec![10, 14]
            }
        );
        assert_eq!(s("10:20:10,14").to_string(), "10:20:10,14");
        assert_eq!(PgSnapshot::parse(""), None);
        assert_eq!(PgSnapshot::parse("10:20"), None);
        // A slot's exported snapshot with nothing running: xmin one past xmax.
        assert_eq!(
            s("1096:1095:"),
            PgSnapshot {
                xmin: 1096,
                xmax: 1095,
                xip: vec![]
            }
        );
        assert_eq!(PgSnapshot::parse("10:20:x"), None);
    }

    #[test]
    fn a_fresh_snapshot_must_see_what_the_exported_one_counts_as_committed() {
        let cases = [
            // (exported, fresh, first committed xid the fresh snapshot misses)
            // Later and nothing running: sees all.
            ("100:100:", "105:105:", None),
            // Running in both: fine (the stream sends it).
            ("100:110:100,105", "100:120:100,105", None),
            // 103 committed in the exported snapshot (below its xmax, not in its xip) but
            // still in progress in the fresh one: the commit record preceded the consistent
            // point while the backend had not left the proc array.
            ("100:110:100,105", "100:120:100,103,105", Some(103)),
            // Started after the exported snapshot: running in the fresh one is fine.
            ("100:110:100", "100:120:100,115", None),
            // Exactly the exported xmax: not committed there.
            ("100:110:", "105:120:110", None),
            // Several: the first is named.
            ("100:110:", "100:120:107,104,115", Some(104)),
            // A fresh xmax below the exported one: the ids between are unseen.
            ("100:110:108", "100:105:", Some(105)),
            ("100:106:105", "100:105:", None),
            // An exported xmin one past its xmax counts the id between as finished: a fresh
            // snapshot must see it, and does once its own horizon is past it.
            ("1096:1095:", "1096:1096:", None),
            ("1096:1095:", "1095:1095:", Some(1095)),
            ("1096:1095:", "1095:1097:1095", Some(1095)),
            // A fresh xmin above an xip entry: the server counts that id as finished.
            ("100:110:", "108:110:104", None),
        ];
        for (exported, fresh, want) in cases {
            assert_eq!(
                unseen_committed(&s(exported), &s(fresh)),
                want,
                "exported {exported}, fresh {fresh}"
            );
        }
    }
}
