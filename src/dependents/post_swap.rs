//! Work left for after the swap's commit (validating foreign keys, setting them on the
//! partitioned table), recorded by the swap's own transaction in `pgrepart.post_swap_steps`
//! so that a run stopped in between finishes it when run again (as `pending_matviews` does for
//! materialized views). Each step runs in a transaction of its own, under `lock_timeout`, and
//! deletes its own row in that transaction.

use std::time::Duration;

use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use super::fk::PostSwapStep;
use crate::error::{Error, Result};
use crate::pg::ident::quote_literal;

const CREATE: &str = "CREATE TABLE IF NOT EXISTS pgrepart.post_swap_steps (\
    migration_id bigint NOT NULL, step int NOT NULL, step_json jsonb NOT NULL, \
    PRIMARY KEY (migration_id, step))";

/// How many times a step is tried when a lock is not had in time.
const ATTEMPTS: u32 = 5;

/// The statements, in the swap's transaction, that record `steps` (none without steps).
pub fn record_statements(migration_id: i64, steps: &[PostSwapStep]) -> Vec<String> {
    if steps.is_empty() {
        return Vec::new();
    }
    let rows: Vec<String> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let json = serde_json::to_string(s).expect("plain strings serialize");
            format!("({migration_id}, {i}, {}::jsonb)", quote_literal(&json))
        })
        .collect();
    vec![
        CREATE.to_string(),
        format!("DELETE FROM pgrepart.post_swap_steps WHERE migration_id = {migration_id}"),
        format!(
            "INSERT INTO pgrepart.post_swap_steps (migration_id, step, step_json) VALUES {}",
            rows.join(", ")
        ),
    ]
}

/// The steps still to do for `migration_id`, in order (none when the table does not exist).
pub async fn pending(client: &Client, migration_id: i64) -> Result<Vec<(i32, PostSwapStep)>> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('pgrepart.post_swap_steps') IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| Error::db("looking for post-swap steps", e))?
        .get(0);
    if !exists {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            "SELECT step, step_json::text FROM pgrepart.post_swap_steps WHERE migration_id = $1 ORDER BY step",
            &[&migration_id],
        )
        .await
        .map_err(|e| Error::db("reading the post-swap steps", e))?;
    rows.into_iter()
        .map(|r| {
            let json: String = r.get(1);
            let step = serde_json::from_str(&json).map_err(|e| {
                Error::failed(format!("unreadable step in pgrepart.post_swap_steps: {e}"))
            })?;
            Ok((r.get(0), step))
        })
        .collect()
}

/// Does the recorded steps of `migration_id` (see the module's doc) and returns one line per
/// constraint for the run's output. A step whose rows violate the key ends that constraint's
/// steps: it stays NOT VALID (still enforced for every new row) and the line says how to find the
/// rows. A step that cannot have its locks in time stays recorded for the next run.
pub async fn finish(client: &mut Client, migration_id: i64, lock_timeout: Duration) -> Vec<String> {
    let steps = match pending(client, migration_id).await {
        Ok(s) => s,
        Err(e) => {
            return vec![format!(
                "NOT finished: the post-swap steps could not be read: {e}"
            )];
        }
    };
    let mut lines = Vec::new();
    // Constraints whose rows violate them (their later steps are dropped), and constraints
    // whose step failed otherwise (their later steps wait for the next run).
    let mut given_up: Vec<String> = Vec::new();
    let mut held: Vec<String> = Vec::new();
    let mut done: Vec<String> = Vec::new();
    for (n, step) in steps {
        if held.contains(&step.constraint) {
            continue;
        }
        if given_up.contains(&step.constraint) {
            let _ = client
                .execute(
                    "DELETE FROM pgrepart.post_swap_steps WHERE migration_id = $1 AND step = $2",
                    &[&migration_id, &n],
                )
                .await;
            continue;
        }
        let started = std::time::Instant::now();
        let mut backoff = Duration::from_millis(200);
        let mut attempt = 1;
        let outcome = loop {
            match run_step(client, migration_id, n, &step, lock_timeout).await {
                Err(e)
                    if (e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE)
                        || e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED))
                        && attempt < ATTEMPTS =>
                {
                    tracing::warn!(step = %step.what, attempt, "a table the step needs is in use; trying again");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                other => break other,
            }
        };
        match outcome {
            Ok(()) => {
                tracing::info!(step = %step.what, elapsed_ms = started.elapsed().as_millis() as u64, "post-swap step done");
                if !done.contains(&step.constraint) {
                    done.push(step.constraint.clone());
                }
            }
            Err(e) if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) => {
                let _ = client
                    .execute(
                        "DELETE FROM pgrepart.post_swap_steps WHERE migration_id = $1 AND step = $2",
                        &[&migration_id, &n],
                    )
                    .await;
                done.retain(|c| c != &step.constraint);
                given_up.push(step.constraint.clone());
                lines.push(format!(
                    "NOT validated: {} stays NOT VALID (it is enforced for every new or changed row): existing rows violate it; find them, fix them, then: {}",
                    step.constraint, step.sql
                ));
            }
            Err(e) => {
                done.retain(|c| c != &step.constraint);
                held.push(step.constraint.clone());
                lines.push(format!(
                    "NOT finished: {} ({}): {}; run the same `pgrepart run` again to retry",
                    step.what,
                    step.sql,
                    e.as_db_error()
                        .map_or_else(|| e.to_string(), |d| d.message().to_string())
                ));
            }
        }
    }
    for c in done {
        lines.push(format!("validated {c}"));
    }
    lines
}

async fn run_step(
    client: &mut Client,
    migration_id: i64,
    n: i32,
    step: &PostSwapStep,
    lock_timeout: Duration,
) -> std::result::Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = '{}ms'",
        lock_timeout.as_millis()
    ))
    .await?;
    tx.batch_execute(&step.sql).await?;
    tx.execute(
        "DELETE FROM pgrepart.post_swap_steps WHERE migration_id = $1 AND step = $2",
        &[&migration_id, &n],
    )
    .await?;
    crate::fault::point("post-swap-step-before-commit");
    tx.commit().await
}
