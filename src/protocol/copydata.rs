//! CopyData sub-messages of the streaming replication protocol.
//!
//! During START_REPLICATION both directions carry CopyData ('d') frames whose body starts with
//! its own tag byte:
//!
//! ```text
//! server 'w' XLogData  i64 dataStart  i64 walEnd  i64 sendTime  payload (one pgoutput message)
//! server 'k' keepalive i64 walEnd  i64 sendTime  u8 replyRequested
//! client 'r' status    i64 write  i64 flush  i64 apply  i64 clock  u8 replyRequested
//! ```
//!
//! All integers are big-endian; times are microseconds since 2000-01-01 UTC. In logical mode the
//! 'w' LSNs can be 0: progress comes from Commit end_lsn and keepalive walEnd, never from them.
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};

use super::DecodeError;
use super::reader::Reader;
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

/// Parses the body of a server CopyData frame. A keepalive with trailing bytes is accepted (the
/// extra bytes are ignored); an unknown sub-message tag is an error.
pub fn parse_server(buf: Bytes) -> Result<ServerCopyData, DecodeError> {
    let mut r = Reader::new(&buf);
    match r.u8("CopyData message tag")? {
        b'w' => Ok(ServerCopyData::XLogData {
            wal_start: Lsn(r.u64("XLogData dataStart")?),
            wal_end: Lsn(r.u64("XLogData walEnd")?),
            send_time: r.i64("XLogData sendTime")?,
            data: r.rest(),
        }),
        b'k' => Ok(ServerCopyData::Keepalive {
            wal_end: Lsn(r.u64("keepalive walEnd")?),
            send_time: r.i64("keepalive sendTime")?,
            reply_requested: r.u8("keepalive replyRequested")? != 0,
        }),
        other => Err(DecodeError::UnknownTag {
            what: "replication CopyData",
            tag: char::from(other),
        }),
    }
}

/// Length of an encoded standby status update: tag + 4 x i64 + u8.
pub const STANDBY_STATUS_LEN: usize = 1 + 8 * 4 + 1;

/// Standby status update ('r'). `clock` is microseconds since 2000-01-01 UTC.
pub fn encode_standby_status(
    write: Lsn,
    flush: Lsn,
    apply: Lsn,
    clock: i64,
    reply_requested: bool,
) -> Bytes {
    let mut b = BytesMut::with_capacity(STANDBY_STATUS_LEN);
    b.put_u8(b'r');
    b.put_u64(write.0);
    b.put_u64(flush.0);
    b.put_u64(apply.0);
    b.put_i64(clock);
    b.put_u8(u8::from(reply_requested));
    b.freeze()
}

/// Seconds from 1970-01-01 to 2000-01-01 (UTC).
const PG_EPOCH_UNIX_SECS: i64 = 946_684_800;

/// Microseconds since 2000-01-01 00:00:00 UTC, the PostgreSQL epoch.
pub fn pg_epoch_micros_now() -> i64 {
    unix_micros_to_pg(match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    })
}

fn unix_micros_to_pg(unix_micros: i64) -> i64 {
    unix_micros.saturating_sub(PG_EPOCH_UNIX_SECS * 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xlogdata_bytes(payload: &[u8]) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(b'w');
        b.put_u64(0x1_0000_0010);
        b.put_u64(0x1_0000_0020);
        b.put_i64(777);
        b.put_slice(payload);
        b.freeze()
    }

    #[test]
    fn xlogdata_carries_its_payload() {
        assert_eq!(
            parse_server(xlogdata_bytes(b"B...")).unwrap(),
            ServerCopyData::XLogData {
                wal_start: Lsn(0x1_0000_0010),
                wal_end: Lsn(0x1_0000_0020),
                send_time: 777,
                data: Bytes::from_static(b"B..."),
            }
        );
    }

    #[test]
    fn xlogdata_with_zero_lsns_and_empty_payload_parses() {
        let mut b = BytesMut::new();
        b.put_u8(b'w');
        b.put_bytes(0, 24);
        assert_eq!(
            parse_server(b.freeze()).unwrap(),
            ServerCopyData::XLogData {
                wal_start: Lsn::ZERO,
                wal_end: Lsn::ZERO,
                send_time: 0,
                data: Bytes::new(),
            }
        );
    }

    #[test]
    fn keepalive_parses_from_hand_written_bytes() {
        let bytes = Bytes::from_static(&[
            b'k', 0, 0, 0, 2, 0, 0, 0, 0x30, // walEnd 2/30
            0, 0, 0, 0, 0, 0, 0x01, 0x00, // sendTime 256
            1,
        ]);
        assert_eq!(
            parse_server(bytes).unwrap(),
            ServerCopyData::Keepalive {
                wal_end: Lsn(0x2_0000_0030),
                send_time: 256,
                reply_requested: true,
            }
        );
    }

    #[test]
    fn truncated_or_unknown_copydata_is_an_error() {
        assert!(matches!(
            parse_server(Bytes::new()),
            Err(DecodeError::Truncated { .. })
        ));
        let full = xlogdata_bytes(b"");
        for len in 0..full.len() {
            assert!(parse_server(full.slice(..len)).is_err(), "cut at {len}");
        }
        let keepalive = Bytes::from_static(&[b'k', 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2]);
        assert!(matches!(
            parse_server(keepalive),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            parse_server(Bytes::from_static(b"r")),
            Err(DecodeError::UnknownTag { tag: 'r', .. })
        ));
    }

    #[test]
    fn standby_status_is_34_big_endian_bytes() {
        let b = encode_standby_status(
            Lsn(0x1_0000_0002),
            Lsn(0x3),
            Lsn::ZERO,
            0x0102_0304_0506_0708,
            true,
        );
        assert_eq!(b.len(), 34);
        assert_eq!(
            &b[..],
            &[
                b'r', 0, 0, 0, 1, 0, 0, 0, 2, // write 1/2
                0, 0, 0, 0, 0, 0, 0, 3, // flush 0/3
                0, 0, 0, 0, 0, 0, 0, 0, // apply 0/0
                1, 2, 3, 4, 5, 6, 7, 8, // clock
                1, // reply requested
            ]
        );
        assert_eq!(
            encode_standby_status(Lsn(1), Lsn(1), Lsn(1), 0, false)[33],
            0
        );
    }

    #[test]
    fn clock_counts_from_the_postgres_epoch() {
        assert_eq!(unix_micros_to_pg(946_684_800_000_000), 0);
        assert_eq!(unix_micros_to_pg(946_684_800_000_001), 1);
        let now = pg_epoch_micros_now();
        // After 2024-01-01 and before 2100-01-01.
        assert!(now > 757_382_400_000_000, "{now}");
        assert!(now < 3_155_760_000_000_000, "{now}");
    }
}
