//! The run's hold on its migration: a session-level advisory lock in the target database, and
//! the name it records as the runner.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::state;

/// "pid 1234 on dbhost": who runs a migration, for the refusal of a second run.
pub fn runner_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "this host".into());
    format!("pid {} on {host}", std::process::id())
}

/// A session-level advisory lock per migration: held by the `run` process working on it, released
/// by the server when that process's connection ends, however it ends.
pub async fn try_run_lock(control: &Client, migration_id: i64) -> Result<bool> {
    // A previous attempt of ours may have just lost its connection: the server frees its lock
    // when it notices, so look a few times before concluding that another run holds it.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let row = control
            .query_one(
                "SELECT pg_try_advisory_lock($1, $2::int)",
                &[&state::RUN_LOCK, &(migration_id as i32)],
            )
            .await
            .map_err(|e| Error::db("taking the migration's lock", e))?;
        if row.get(0) {
            return Ok(true);
        }
        if Instant::now() > deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
