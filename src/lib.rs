//! pgrepart: online, triggerless conversion of a live PostgreSQL table into a partitioned table.

pub mod lsn;
pub mod protocol;
pub mod replication;
