//! pgrepart: online, triggerless conversion of a live PostgreSQL table into a partitioned table.
//!
//! ```text
//! source: T ──publication + slot (pgoutput)──► stream ──► apply ──► T_new (partitioned)
//!         T ──parallel COPY of key ranges under the slot's snapshot──► T_new
//! cutover: lock T, fence, drain, rename T → T_old and T_new → T, hand over sequence and grants
//! ```

/// `pgrepart --version`: the crate's version and, when built from a git checkout, the commit.
pub const VERSION: &str = env!("PGREPART_VERSION");

pub mod apply;
pub mod cli;
pub mod commands;
pub mod config;
pub mod copy;
pub mod cross_cutover;
pub mod cutover;
pub mod dependents;
pub mod error;
pub mod fault;
pub mod lsn;
pub mod migration;
pub mod monitor;
pub mod partitioning;
pub mod pg;
pub mod preflight;
pub mod protocol;
pub mod replication;
pub mod rollback;
pub mod spec;
pub mod state;
pub mod stream;
pub mod units;
pub mod verify;
