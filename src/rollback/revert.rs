//! The revert: the cutover's swap the other way (design.md §11). On the source, in one
//! transaction: `SET LOCAL lock_timeout`, `LOCK TABLE` the partitioned table (under the final
//! name), the fence through the reverse stream, the wait for the reverse apply to reach it, the
//! conflict candidates settled, then `cutover::swap_statements` with the roles exchanged: the old
//! table takes the name back with the sequence, grants, comments, RLS, policies, triggers,
//! publications and views, and the foreign keys both ways (NOT VALID, validated after the commit:
//! `super::fks`); the partitioned table its working name; the state streaming forward again
//! from the revert's position (`super::again`); COMMIT.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::sync::watch;
use tokio_postgres::{Client, GenericClient};

use crate::config::RunConfig;
use crate::cutover::{
    self, FenceSpec, Locked, MatViewRebuild, SwapKind, SwapPlan, carry_summary, matview_rebuild,
    swap_statements,
};
use crate::dependents::names::suffixed;
use crate::error::{Error, Result};
use crate::pg::ident::{QualifiedName, quote_ident};
use crate::state::Migration;

pub enum Outcome {
    Reverted {
        lock_held: Duration,
        /// What was carried back, for the run's output.
        lines: Vec<String>,
    },
    /// Nothing changed, and the request is withdrawn (conflicts without `--force`).
    Refused(String),
    /// Nothing changed; tried again later (the lock or the drain timed out every attempt).
    Later(String),
}

/// The revert's bounded attempts (`--cutover-attempts`, `--lock-timeout`, `--drain-timeout`).
pub async fn try_revert(
    cfg: &RunConfig,
    source: &mut Client,
    fence: &mut watch::Receiver<Option<String>>,
    server_major: u32,
    m: &Migration,
    force: bool,
) -> Result<Outcome> {
    let flusher = crate::cutover::fence_session(&cfg.prep.source).await?;
    let final_name = m.final_name();
    // Sequences and grants of the table in use, handed back to the old table.
    let info = crate::pg::catalog::table_info(source, &final_name)
        .await?
        .ok_or_else(|| Error::failed(format!("the table {final_name} is gone")))?;
    let plan = SwapPlan {
        migration_id: m.id,
        source: final_name.clone(),
        target: m.source.sibling(m.old_name.clone()),
        old_name: m.target.name.clone(),
        sequences: info.sequences.clone(),
        grants: info.grants.clone(),
        new_owner: None,
        partitions: vec![],
        // The old table has its own column defaults; an identity sequence is set past the new
        // table's (as a generated target's is at the cutover).
        target_created: true,
        always_identity: vec![],
        drop_inbound_fks: false,
        kind: SwapKind::Revert,
        window: false,
    };
    crate::fault::pause("revert").await;
    let mut backoff = Duration::from_millis(500);
    for attempt_no in 1..=cfg.cutover_attempts {
        let fence_id = cutover::fence_id(m.id, &format!(":revert:{attempt_no}"));
        match attempt(
            source,
            &flusher,
            fence,
            &plan,
            m,
            force,
            cfg,
            server_major,
            &fence_id,
        )
        .await?
        {
            Step::Done(outcome) => return Ok(outcome),
            Step::Retry(why) => {
                tracing::warn!(attempt = attempt_no, "{why}; backing off");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
    Ok(Outcome::Later(format!(
        "revert postponed: the table could not be locked and drained in {} attempts; trying again in a minute",
        cfg.cutover_attempts
    )))
}

enum Step {
    Done(Outcome),
    Retry(&'static str),
}

#[allow(clippy::too_many_arguments)]
async fn attempt(
    source: &mut Client,
    flusher: &Client,
    fence: &mut watch::Receiver<Option<String>>,
    plan: &SwapPlan,
    m: &Migration,
    force: bool,
    cfg: &RunConfig,
    server_major: u32,
    fence_id: &str,
) -> Result<Step> {
    crate::fault::point("revert-before-lock");
    let spec = FenceSpec {
        table: &plan.source,
        server_major,
        lock_timeout: cfg.lock_timeout,
        drain_timeout: cfg.drain_timeout,
        fence_id,
        pre_lock: &[],
    };
    let (tx, locked_at) = match cutover::lock_fence_drain(source, flusher, fence, &spec).await? {
        Locked::Drained { tx, locked_at } => (tx, locked_at),
        Locked::Not(cutover::Outcome::LockTimeout) => {
            return Ok(Step::Retry("could not lock the table in time"));
        }
        Locked::Not(_) => {
            return Ok(Step::Retry(
                "the reverse stream's last changes were not applied in time",
            ));
        }
    };
    crate::fault::point("revert-locked");
    let open = super::conflicts::settle(&tx, m).await?;
    if !open.is_empty() && !force {
        let _ = tx.rollback().await;
        return Ok(Step::Done(Outcome::Refused(format!(
            "revert refused: {} key(s) of the old table have more than one row in {} ({}); `pgrepart revert --force` keeps the newest row of each, or remove the extra rows first",
            open.len(),
            plan.source,
            list(&open, 10)
        ))));
    }
    let reverse = super::reverse_name(&m.slot_name);
    let mut carry = crate::pg::catalog::carry_over(&tx, &plan.source, &[reverse]).await?;
    let repart = plan.source.sibling(plan.old_name.clone());
    let fk_facts = super::fks::read_facts(&tx, &plan.source, &plan.target, server_major).await?;
    let fks = match super::fks::revert_fks(&fk_facts, &repart, &plan.source) {
        Ok(fks) => fks,
        Err(keys) => {
            let _ = tx.rollback().await;
            return Ok(Step::Done(Outcome::Refused(format!(
                "revert refused: the old table cannot take these foreign keys back: {}",
                keys.join("; ")
            ))));
        }
    };
    if !fks.lock.is_empty() {
        // The keys' other tables, under the same lock_timeout: a busy one means trying again.
        let lock = format!(
            "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            fks.lock.join(", ")
        );
        if let Err(e) = tx.batch_execute(&lock).await {
            if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE)
                || e.code() == Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED)
            {
                let _ = tx.rollback().await;
                return Ok(Step::Retry("a table a foreign key ties to is in use"));
            }
            return Err(Error::db("locking the tables the foreign keys tie to", e));
        }
    }
    // The keys are moved by `fks`, not by the swap's carry-over.
    carry.foreign_keys.clear();
    carry.inbound_foreign_keys.clear();
    // The old table kept its CHECK constraints; the identity columns keep their own kind.
    carry.not_valid_checks.clear();
    let reverted_at = crate::partitioning::Date::format_unix_utc(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    );
    let post = crate::dependents::post_swap::record_statements(m.id, &fks.post);
    for stmt in swap_statements(plan, &carry, &reverted_at)
        .into_iter()
        .chain(fks.statements.iter().cloned())
        .chain(post)
    {
        tx.batch_execute(&stmt)
            .await
            .map_err(|e| Error::db("swapping the tables back", e))?;
    }
    let renamed = rename_indexes_back(&tx, &plan.source, &repart).await?;
    // The forward stream again from here (its slot made before the lock): `super::again`.
    super::again::in_revert(&tx, m, &plan.source, &repart).await?;
    crate::fault::point("revert-before-commit");
    tx.commit()
        .await
        .map_err(|e| Error::db("committing the revert", e))?;
    let lock_held = locked_at.elapsed();
    crate::fault::point("revert-after-commit");
    let mut lines: Vec<String> = carry_summary(&carry)
        .into_iter()
        .map(|l| l.replace("on the new table", "on the original table"))
        .collect();
    lines.extend(super::strip_summary(
        &plan.source.sibling(plan.old_name.clone()).to_string(),
        &carry,
    ));
    if renamed > 0 {
        lines.push(format!(
            "carried back: index names ({renamed} renamed; the partitioned table's end in _repart)"
        ));
    }
    if !open.is_empty() {
        lines.push(format!(
            "--force: {} conflicting key(s) keep the newest row: {}",
            open.len(),
            list(&open, 10)
        ));
    }
    lines.extend(fks.report.iter().map(|l| format!("carried back: {l}")));
    if !fks.post.is_empty() {
        lines.extend(crate::dependents::post_swap::finish(source, m.id, cfg.lock_timeout).await);
    }
    let rebuilds: Vec<MatViewRebuild> = carry.matviews.iter().map(matview_rebuild).collect();
    lines.extend(
        cutover::rebuild_matviews(source, m.id, &rebuilds, cfg.lock_timeout)
            .await
            .into_iter()
            .map(|l| l.replace("on the new table", "on the original table")),
    );
    Ok(Step::Done(Outcome::Reverted { lock_held, lines }))
}

fn list(keys: &[String], at_most: usize) -> String {
    let mut s = keys
        .iter()
        .take(at_most)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if keys.len() > at_most {
        s.push_str(&format!(", and {} more", keys.len() - at_most));
    }
    s
}

/// The index renames of the revert (pure): each index of the old table named `<name>_old` (as
/// the cutover named it) takes `<name>` back; an index of the partitioned table holding
/// `<name>` steps aside first, to `<name>_repart` (or the first free variant).
pub fn revert_index_renames(
    old_indexes: &[String],
    new_indexes: &[String],
    taken: &BTreeSet<String>,
) -> Vec<(String, String)> {
    let mut taken = taken.clone();
    let mut aside = Vec::new();
    let mut back = Vec::new();
    for old in old_indexes {
        let Some(base) = old.strip_suffix("_old") else {
            continue;
        };
        if new_indexes.iter().any(|n| n == base) {
            let mut to = suffixed(base, "_repart");
            let mut n = 2;
            while taken.contains(&to) {
                to = suffixed(base, &format!("_repart{n}"));
                n += 1;
            }
            taken.insert(to.clone());
            aside.push((base.to_string(), to));
        } else if taken.contains(base) {
            continue;
        }
        back.push((old.clone(), base.to_string()));
    }
    aside.extend(back);
    aside
}

/// Runs `revert_index_renames` on `table` (the old table, back under its name) and `repart`
/// (the partitioned table); returns how many indexes were renamed.
async fn rename_indexes_back(
    client: &impl GenericClient,
    table: &QualifiedName,
    repart: &QualifiedName,
) -> Result<usize> {
    let ctx = |e| Error::db("renaming the indexes back", e);
    let names =
        |rows: Vec<tokio_postgres::Row>| -> Vec<String> { rows.iter().map(|r| r.get(0)).collect() };
    let q = "SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE i.indrelid = $1::text::regclass ORDER BY 1";
    let old = names(client.query(q, &[&table.sql()]).await.map_err(ctx)?);
    let new = names(client.query(q, &[&repart.sql()]).await.map_err(ctx)?);
    let taken: BTreeSet<String> = names(
        client
            .query(
                "SELECT relname::text FROM pg_class WHERE relnamespace = $1::text::regnamespace",
                &[&quote_ident(&table.schema)],
            )
            .await
            .map_err(ctx)?,
    )
    .into_iter()
    .collect();
    let renames = revert_index_renames(&old, &new, &taken);
    for (from, to) in &renames {
        client
            .batch_execute(&format!(
                "ALTER INDEX {} RENAME TO {}",
                table.sibling(from.clone()).sql(),
                quote_ident(to)
            ))
            .await
            .map_err(ctx)?;
    }
    Ok(renames.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_old_tables_indexes_take_their_names_back() {
        let old = vec![
            "orders_flat_pkey_old".to_string(),
            "orders_flat_customer_idx_old".to_string(),
            "handmade".to_string(),
        ];
        let new = vec![
            "orders_flat_pkey".to_string(),
            "orders_flat_customer_idx".to_string(),
        ];
        let taken: BTreeSet<String> = old
            .iter()
            .chain(&new)
            .cloned()
            .chain(["orders_flat_pkey_repart".to_string()])
            .collect();
        assert_eq!(
            revert_index_renames(&old, &new, &taken),
            vec![
                (
                    "orders_flat_pkey".to_string(),
                    "orders_flat_pkey_repart2".to_string()
                ),
                (
                    "orders_flat_customer_idx".to_string(),
                    "orders_flat_customer_idx_repart".to_string()
                ),
                (
                    "orders_flat_pkey_old".to_string(),
                    "orders_flat_pkey".to_string()
                ),
                (
                    "orders_flat_customer_idx_old".to_string(),
                    "orders_flat_customer_idx".to_string()
                ),
            ]
        );
        // A name held by something else in the schema is left alone.
        let taken: BTreeSet<String> = ["x".to_string()].into_iter().collect();
        assert!(revert_index_renames(&["x_old".into()], &[], &taken).is_empty());
    }
}
