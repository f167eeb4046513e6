//! Our own replication connection (startup with `replication=database`, auth, simple query,
//! CopyBoth), built on postgres-protocol. STUB: being written; signatures are the contract.
use crate::lsn::Lsn;
use crate::protocol::copydata::ServerCopyData;

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
    #[error("replication protocol error: {0}")]
    Protocol(String),
    #[error(transparent)]
    Decode(#[from] crate::protocol::DecodeError),
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

pub struct ReplicationClient {}

impl ReplicationClient {
    pub async fn connect(
        config: &tokio_postgres::Config,
        application_name: &str,
    ) -> Result<Self, ReplicationError> {
        let _ = (config, application_name);
        todo!()
    }
    pub fn backend_pid(&self) -> i32 {
        todo!()
    }
    pub async fn simple_query(&mut self, sql: &str) -> Result<QueryResult, ReplicationError> {
        let _ = sql;
        todo!()
    }
    pub async fn create_logical_slot_exported(
        &mut self,
        slot: &str,
    ) -> Result<CreatedSlot, ReplicationError> {
        let _ = slot;
        todo!()
    }
    pub async fn start_logical_replication(
        self,
        slot: &str,
        start: Lsn,
        options: &[(&str, &str)],
    ) -> Result<ReplicationStream, ReplicationError> {
        let _ = (slot, start, options);
        todo!()
    }
}

pub struct ReplicationStream {}

impl ReplicationStream {
    pub async fn recv(&mut self) -> Result<Option<ServerCopyData>, ReplicationError> {
        todo!()
    }
    pub async fn send_status(
        &mut self,
        write: Lsn,
        flush: Lsn,
        apply: Lsn,
        reply_requested: bool,
    ) -> Result<(), ReplicationError> {
        let _ = (write, flush, apply, reply_requested);
        todo!()
    }
}
