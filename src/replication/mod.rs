//! Our own replication connection (startup with `replication=database`, auth, simple query,
//! CopyBoth), built on postgres-protocol's frontend encoders and our own frame codec.
//!
//! ```text
//! ReplicationClient::connect --startup/auth--> simple_query(IDENTIFY_SYSTEM, SQL, ...)
//!        |                                     create_logical_slot_exported(slot)
//!        v start_logical_replication (CopyBoth 'W')
//! ReplicationStream: recv() -> 'w' XLogData | 'k' keepalive     (cancel-safe, one frame at a time)
//!                    send_status(write, flush, apply)  -> 'd' CopyData('r' ...)
//!                    finish() -> CopyDone, drain to ReadyForQuery -> ReplicationClient again
//! ```
//!
//! Reads go through `Framed<_, FrameCodec>`: a partial frame stays in the codec's buffer when a
//! `recv` future is dropped, so `recv` can sit in `tokio::select!` next to timers. TLS (SSLRequest,
//! then rustls) follows `sslmode`/`sslrootcert` as for ordinary connections: see `pg::tls`.

mod commands;
mod connect;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use postgres_protocol::message::frontend;
use tokio_util::codec::Framed;

pub use commands::{parse_server_version_num, quote_ident, quote_literal};

use crate::lsn::Lsn;
use crate::protocol::copydata::{ServerCopyData, encode_standby_status, parse_server};
use crate::protocol::frame::{
    Frame, FrameCodec, FrameError, parse_copy_response, parse_data_row, parse_error_fields,
    parse_row_description, tag,
};

type Conn = Framed<Box<dyn connect::Io>, FrameCodec>;

#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("could not reach the server: {0}")]
    Io(#[from] std::io::Error),
    #[error("server error {code}: {message}{}", hint.as_deref().map(|h| format!(" (hint: {h})")).unwrap_or_default())]
    Server {
        severity: String,
        code: String,
        message: String,
        detail: Option<String>,
        hint: Option<String>,
    },
    #[error("authentication failed: {0}")]
    Auth(String),
    /// TLS could not be set up or the handshake failed (retrying does not help).
    #[error("TLS: {0}")]
    Tls(String),
    #[error("replication protocol error: {0}")]
    Protocol(String),
    #[error(transparent)]
    Decode(#[from] crate::protocol::DecodeError),
}

impl From<FrameError> for ReplicationError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Io(e) => ReplicationError::Io(e),
            other => ReplicationError::Protocol(other.to_string()),
        }
    }
}

impl ReplicationError {
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            ReplicationError::Server { code, .. } => Some(code),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct QueryResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

#[derive(Debug, Clone)]
pub struct CreatedSlot {
    pub slot_name: String,
    pub consistent_point: Lsn,
    pub snapshot_name: String,
}

pub struct ReplicationClient {
    conn: Conn,
    server_version: String,
    backend_pid: i32,
}

impl ReplicationClient {
    /// Connects with `replication=database` to the first reachable host of `config`.
    /// Auth: trust, cleartext, md5, SCRAM-SHA-256 (no channel binding); the password may come from
    /// `PGPASSWORD` or the password file. TCP (TLS per `sslmode`) or Unix socket.
    pub async fn connect(
        config: &tokio_postgres::Config,
        application_name: &str,
    ) -> Result<Self, ReplicationError> {
        let name = crate::pg::session_name(config, application_name);
        let session = connect::connect(config, &name).await?;
        Ok(ReplicationClient {
            conn: session.conn,
            server_version: session.server_version,
            backend_pid: session.backend_pid,
        })
    }

    /// Ends the session (Terminate) and closes the connection: the walsender exits without
    /// logging an unexpected end of file.
    pub async fn close(mut self) -> Result<(), ReplicationError> {
        let mut buf = BytesMut::new();
        frontend::terminate(&mut buf);
        send(&mut self.conn, buf).await
    }

    /// The walsender's process id (BackendKeyData).
    pub fn backend_pid(&self) -> i32 {
        self.backend_pid
    }

    /// The server's `server_version` text, e.g. "15.4 (Debian 15.4-1.pgdg120+1)".
    pub fn server_version(&self) -> &str {
        &self.server_version
    }

    /// `server_version` as a number like `server_version_num`: 150004 for "15.4 (...)",
    /// 180000 for "18.0". 0 if the server did not report a parsable version.
    pub fn server_version_num(&self) -> u32 {
        parse_server_version_num(&self.server_version).unwrap_or(0)
    }

    /// Runs `sql` with the simple query protocol and returns the last result set as text.
    /// An ErrorResponse gives `ReplicationError::Server`, after reading on to ReadyForQuery so
    /// the connection stays usable.
    pub async fn simple_query(&mut self, sql: &str) -> Result<QueryResult, ReplicationError> {
        let mut buf = BytesMut::new();
        frontend::query(sql, &mut buf)
            .map_err(|e| ReplicationError::Protocol(format!("query text: {e}")))?;
        send(&mut self.conn, buf).await?;

        let mut result = QueryResult::default();
        let mut first_error: Option<ReplicationError> = None;
        loop {
            let frame = next_frame(&mut self.conn).await?;
            match frame.tag {
                tag::ROW_DESCRIPTION => {
                    result = QueryResult {
                        columns: parse_row_description(&frame.body)?,
                        rows: Vec::new(),
                    };
                }
                tag::DATA_ROW => match data_row_text(&frame.body) {
                    Ok(row) => result.rows.push(row),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                },
                tag::ERROR_RESPONSE => {
                    first_error.get_or_insert(server_error(&frame.body));
                }
                tag::NOTICE_RESPONSE => log_notice(&frame),
                tag::COMMAND_COMPLETE
                | tag::EMPTY_QUERY_RESPONSE
                | tag::PARAMETER_STATUS
                | tag::COPY_OUT_RESPONSE
                | tag::COPY_DATA
                | tag::COPY_DONE => {}
                tag::COPY_IN_RESPONSE => {
                    let mut buf = BytesMut::new();
                    frontend::copy_fail(
                        "COPY FROM STDIN is not supported by simple_query",
                        &mut buf,
                    )
                    .map_err(|e| ReplicationError::Protocol(e.to_string()))?;
                    send(&mut self.conn, buf).await?;
                }
                tag::COPY_BOTH_RESPONSE => {
                    let mut buf = BytesMut::new();
                    frontend::copy_done(&mut buf);
                    send(&mut self.conn, buf).await?;
                    first_error.get_or_insert(ReplicationError::Protocol(
                        "the command started streaming; use start_logical_replication".into(),
                    ));
                }
                tag::READY_FOR_QUERY => break,
                other => {
                    return Err(ReplicationError::Protocol(format!(
                        "unexpected message {:?} in a simple query",
                        char::from(other)
                    )));
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(result),
        }
    }

    /// `CREATE_REPLICATION_SLOT "slot" LOGICAL pgoutput EXPORT_SNAPSHOT`. Waits for every running
    /// transaction on the server to end. The snapshot stays valid until the next command on this
    /// connection or its close.
    pub async fn create_logical_slot_exported(
        &mut self,
        slot: &str,
    ) -> Result<CreatedSlot, ReplicationError> {
        self.create_slot(&commands::create_logical_slot_exported(slot))
            .await
    }

    /// As `create_logical_slot_exported`, but TEMPORARY: the server drops the slot when this
    /// connection ends (or errors). Used by `verify` for its consistent point.
    pub async fn create_temporary_logical_slot_exported(
        &mut self,
        slot: &str,
    ) -> Result<CreatedSlot, ReplicationError> {
        self.create_slot(&commands::create_temporary_logical_slot_exported(slot))
            .await
    }

    async fn create_slot(&mut self, sql: &str) -> Result<CreatedSlot, ReplicationError> {
        let result = self.simple_query(sql).await?;
        let [row] = result.rows.as_slice() else {
            return Err(ReplicationError::Protocol(format!(
                "CREATE_REPLICATION_SLOT returned {} rows, expected 1",
                result.rows.len()
            )));
        };
        let field = |name: &str| -> Result<&str, ReplicationError> {
            result
                .columns
                .iter()
                .position(|c| c == name)
                .and_then(|i| row.get(i))
                .and_then(|v| v.as_deref())
                .ok_or_else(|| {
                    ReplicationError::Protocol(format!(
                        "CREATE_REPLICATION_SLOT reply has no {name}"
                    ))
                })
        };
        let consistent_point = field("consistent_point")?;
        Ok(CreatedSlot {
            slot_name: field("slot_name")?.to_owned(),
            consistent_point: consistent_point.parse::<Lsn>().map_err(|e| {
                ReplicationError::Protocol(format!("CREATE_REPLICATION_SLOT consistent_point: {e}"))
            })?,
            snapshot_name: field("snapshot_name")?.to_owned(),
        })
    }

    /// `START_REPLICATION SLOT "slot" LOGICAL start (key 'value', ...)`; returns once the server
    /// has answered CopyBothResponse. The server starts at max(start, confirmed_flush_lsn).
    pub async fn start_logical_replication(
        mut self,
        slot: &str,
        start: Lsn,
        options: &[(&str, &str)],
    ) -> Result<ReplicationStream, ReplicationError> {
        let sql = commands::start_logical_replication(slot, start, options)?;
        let mut buf = BytesMut::new();
        frontend::query(&sql, &mut buf)
            .map_err(|e| ReplicationError::Protocol(format!("query text: {e}")))?;
        send(&mut self.conn, buf).await?;
        loop {
            let frame = next_frame(&mut self.conn).await?;
            match frame.tag {
                tag::COPY_BOTH_RESPONSE => {
                    parse_copy_response(&frame.body)?;
                    break;
                }
                tag::ERROR_RESPONSE => return Err(server_error(&frame.body)),
                tag::NOTICE_RESPONSE => log_notice(&frame),
                tag::PARAMETER_STATUS => {}
                other => {
                    return Err(ReplicationError::Protocol(format!(
                        "expected CopyBothResponse after START_REPLICATION, got message {:?}",
                        char::from(other)
                    )));
                }
            }
        }
        Ok(ReplicationStream {
            client: self,
            state: StreamState::Streaming,
        })
    }
}

/// Where a replication stream is in the end-of-COPY handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    /// CopyBoth in progress.
    Streaming,
    /// The server sent CopyDone (we answered with ours); CommandComplete and ReadyForQuery follow.
    Ending,
    /// ReadyForQuery seen: the connection takes commands again.
    Ready,
    /// The server closed the connection.
    Closed,
}

pub struct ReplicationStream {
    client: ReplicationClient,
    state: StreamState,
}

impl ReplicationStream {
    /// The next 'w' or 'k' message. `Ok(None)` once the server ended the stream (CopyDone, then
    /// again until ReadyForQuery) or closed the connection.
    ///
    /// Cancel-safe: each await reads at most one whole frame, which is handled before the next
    /// await, and partial frames stay buffered in the codec.
    pub async fn recv(&mut self) -> Result<Option<ServerCopyData>, ReplicationError> {
        loop {
            if matches!(self.state, StreamState::Ready | StreamState::Closed) {
                return Ok(None);
            }
            let Some(frame) = self.client.conn.next().await else {
                self.state = StreamState::Closed;
                return Ok(None);
            };
            let frame = frame?;
            match frame.tag {
                tag::COPY_DATA if self.state == StreamState::Streaming => {
                    return Ok(Some(parse_server(frame.body)?));
                }
                tag::COPY_DATA => {}
                tag::COPY_DONE => {
                    if self.state == StreamState::Streaming {
                        self.state = StreamState::Ending;
                        // Queue our CopyDone without awaiting; it goes out with the next flush.
                        frontend::copy_done(self.client.conn.write_buffer_mut());
                        self.client.conn.flush().await?;
                        return Ok(None);
                    }
                }
                tag::COMMAND_COMPLETE
                | tag::ROW_DESCRIPTION
                | tag::DATA_ROW
                | tag::PARAMETER_STATUS => {}
                tag::READY_FOR_QUERY => {
                    self.state = StreamState::Ready;
                    return Ok(None);
                }
                tag::NOTICE_RESPONSE => log_notice(&frame),
                tag::ERROR_RESPONSE => return Err(server_error(&frame.body)),
                other => {
                    return Err(ReplicationError::Protocol(format!(
                        "unexpected message {:?} in the replication stream",
                        char::from(other)
                    )));
                }
            }
        }
    }

    /// Sends a standby status update ('r') with the current time and flushes it. After the
    /// stream has ended this does nothing.
    pub async fn send_status(
        &mut self,
        write: Lsn,
        flush: Lsn,
        apply: Lsn,
        reply_requested: bool,
    ) -> Result<(), ReplicationError> {
        if self.state != StreamState::Streaming {
            return Ok(());
        }
        let status = encode_standby_status(
            write,
            flush,
            apply,
            crate::protocol::copydata::pg_epoch_micros_now(),
            reply_requested,
        );
        let mut buf = BytesMut::with_capacity(5 + status.len());
        buf.put_u8(tag::COPY_DATA);
        buf.put_i32(4 + status.len() as i32);
        buf.put_slice(&status);
        send(&mut self.client.conn, buf).await
    }

    /// Ends the stream (CopyDone), skips any data still in flight, reads to ReadyForQuery and
    /// hands back the connection for more commands (e.g. DROP_REPLICATION_SLOT).
    pub async fn finish(mut self) -> Result<ReplicationClient, ReplicationError> {
        if self.state == StreamState::Streaming {
            let mut buf = BytesMut::new();
            frontend::copy_done(&mut buf);
            send(&mut self.client.conn, buf).await?;
        }
        let mut first_error = None;
        while !matches!(self.state, StreamState::Ready | StreamState::Closed) {
            let frame = next_frame(&mut self.client.conn).await?;
            match frame.tag {
                tag::READY_FOR_QUERY => self.state = StreamState::Ready,
                tag::ERROR_RESPONSE => {
                    first_error.get_or_insert(server_error(&frame.body));
                }
                tag::NOTICE_RESPONSE => log_notice(&frame),
                _ => {}
            }
        }
        if self.state == StreamState::Closed {
            return Err(eof());
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(self.client),
        }
    }
}

fn eof() -> ReplicationError {
    ReplicationError::Io(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "the server closed the connection",
    ))
}

async fn next_frame(conn: &mut Conn) -> Result<Frame, ReplicationError> {
    match conn.next().await {
        Some(frame) => Ok(frame?),
        None => Err(eof()),
    }
}

async fn send(conn: &mut Conn, buf: BytesMut) -> Result<(), ReplicationError> {
    conn.send(buf.freeze()).await?;
    Ok(())
}

fn server_error(body: &Bytes) -> ReplicationError {
    match parse_error_fields(body) {
        Ok(f) => ReplicationError::Server {
            severity: f.severity,
            code: f.code,
            message: f.message,
            detail: f.detail,
            hint: f.hint,
        },
        Err(e) => ReplicationError::Decode(e),
    }
}

fn log_notice(frame: &Frame) {
    if let Ok(f) = parse_error_fields(&frame.body) {
        tracing::info!(severity = %f.severity, code = %f.code, message = %f.message, "server notice");
    }
}

fn data_row_text(body: &Bytes) -> Result<Vec<Option<String>>, ReplicationError> {
    parse_data_row(body)?
        .into_iter()
        .map(|v| {
            v.map(|b| {
                String::from_utf8(b.to_vec()).map_err(|_| {
                    ReplicationError::Protocol("a result value is not valid UTF-8".into())
                })
            })
            .transpose()
        })
        .collect()
}

#[cfg(test)]
mod fake_server_tests;

impl crate::error::Error {
    /// Wraps a replication connection's error with what we were doing, classified by the same
    /// rules as a database error (see `crate::error`).
    pub fn replication(context: impl Into<String>, err: ReplicationError) -> Self {
        let rule = match &err {
            ReplicationError::Io(_) => Some(crate::error::RULE_IO),
            ReplicationError::Server { code, .. } => crate::error::transient_sqlstate_rule(code),
            _ => None,
        };
        let message = format!("{}: {err}", context.into());
        crate::error::Error::classified(message, rule, Box::new(err))
    }
}
