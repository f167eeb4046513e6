//! pgoutput logical decoding messages (protocol version 1, `messages 'true'`). STUB: being written.
use bytes::Bytes;

use super::DecodeError;
use crate::lsn::Lsn;

/// One column value of a TupleData.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datum {
    /// 'n': SQL NULL (or, in a 'K' old tuple, "not part of the key").
    Null,
    /// 'u': unchanged TOASTed value, not sent.
    UnchangedToast,
    /// 't': the value in the type's text output form.
    Text(Bytes),
    /// 'b': the value in the type's binary send form.
    Binary(Bytes),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TupleData(pub Vec<Datum>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// 1 = part of the replica identity key.
    pub flags: u8,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    /// "" means pg_catalog.
    pub namespace: String,
    pub name: String,
    /// b'd', b'n', b'f' or b'i'.
    pub replica_identity: u8,
    pub columns: Vec<Column>,
}

/// The old row image of an Update or Delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// 'K': the replica-identity key columns; the other columns are `Null` meaning "not sent".
    Key(TupleData),
    /// 'O': the whole old row (REPLICA IDENTITY FULL).
    Full(TupleData),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgOutput {
    Begin {
        final_lsn: Lsn,
        commit_ts: i64,
        xid: u32,
    },
    Commit {
        flags: u8,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_ts: i64,
    },
    Origin {
        lsn: Lsn,
        name: String,
    },
    Relation(Relation),
    Type {
        oid: u32,
        namespace: String,
        name: String,
    },
    Insert {
        rel: u32,
        new: TupleData,
    },
    Update {
        rel: u32,
        old: Option<OldTuple>,
        new: TupleData,
    },
    Delete {
        rel: u32,
        old: OldTuple,
    },
    /// options: 1 = CASCADE, 2 = RESTART IDENTITY.
    Truncate {
        options: u8,
        rels: Vec<u32>,
    },
    Message {
        transactional: bool,
        lsn: Lsn,
        prefix: String,
        content: Bytes,
    },
}

/// Decodes one pgoutput message (the payload of an XLogData).
pub fn decode(buf: &Bytes) -> Result<PgOutput, DecodeError> {
    let _ = buf;
    todo!("pgoutput decoder")
}
