//! CopyData sub-messages of the streaming replication protocol. STUB: being written.
use bytes::Bytes;

use super::DecodeError;
use crate::lsn::Lsn;

/// A CopyData message from the server during START_REPLICATION.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerCopyData {
    /// 'w': WAL data; in logical mode `data` is one pgoutput message. The LSNs may be 0.
    XLogData {
        wal_start: Lsn,
        wal_end: Lsn,
        send_time: i64,
        data: Bytes,
    },
    /// 'k': keepalive; `wal_end` is how far the walsender has decoded.
    Keepalive {
        wal_end: Lsn,
        send_time: i64,
        reply_requested: bool,
    },
}

pub fn parse_server(buf: Bytes) -> Result<ServerCopyData, DecodeError> {
    let _ = buf;
    todo!()
}

/// Standby status update ('r'). `clock` is microseconds since 2000-01-01 UTC.
pub fn encode_standby_status(
    write: Lsn,
    flush: Lsn,
    apply: Lsn,
    clock: i64,
    reply_requested: bool,
) -> Bytes {
    let _ = (write, flush, apply, clock, reply_requested);
    todo!()
}

/// Microseconds since 2000-01-01 00:00:00 UTC, the PostgreSQL epoch.
pub fn pg_epoch_micros_now() -> i64 {
    todo!()
}
