//! After a revert: the migration streams forward again, so that it can be cut over again later
//! (or dropped by `abort`). Symmetric to the reverse stream of the window (docs/design.md §11,
//! "After the revert"):
//!
//! ```text
//! before the revert's lock:  CREATE PUBLICATION <pub> FOR TABLE T_old        (the migration's own names)
//!                            pg_create_logical_replication_slot('<slot>', 'pgoutput')   (waits for running txns)
//! in the revert's transaction, after the renames:
//!                            extra rows of --force conflicts deleted from T_repart; candidates cleared;
//!                            phase = streaming, forward_start_lsn = F = pg_current_wal_insert_lsn(),
//!                            window_state = 'reverted', reverted_at = now()
//! after the commit:          reverse slot and publication dropped, window closed;
//!                            the run resumes streaming at max(F, the slot's confirmed position)
//! ```
//! The slot and publication take the migration's own names (`slot_name`, `publication_name`),
//! which the forward stream of the first cutover used and dropped: every path that removes the
//! forward stream (`abort`, the cleanup after a swap, the window's close) removes them too.
//! The run does not cut over again by itself after a revert, whatever `--cutover` says: it waits
//! for `pgrepart cutover`. Across databases the slot is on the source and F is read in the
//! revert's first commit, the source's (`cross`, design.md §11).

use tokio_postgres::{Client, GenericClient};

use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::pg::ident::{QualifiedName, quote_ident};
use crate::state::{self, Migration, Phase};

/// The forward publication on the old table (pure): an already partitioned old table publishes
/// its partitions' changes under its own name, as at the migration's start.
pub fn forward_publication_sql(
    publication: &str,
    table: &QualifiedName,
    partitioned: bool,
) -> String {
    format!(
        "CREATE PUBLICATION {} FOR TABLE {}{}",
        quote_ident(publication),
        table.sql(),
        if partitioned {
            " WITH (publish_via_partition_root = true)"
        } else {
            ""
        }
    )
}

/// Before the revert's lock: the forward publication on the old table `old` (under its working
/// name during the window; across databases, under `T` again after a crash between the revert's
/// commits) and the forward slot, on the source, unless they exist (a revert tried before).
/// Creating the slot waits for the transactions running then, which is why it is never done
/// under the lock.
pub async fn prepare_forward(source: &Client, m: &Migration, old: &QualifiedName) -> Result<()> {
    let row = source
        .query_one(
            "SELECT EXISTS (SELECT FROM pg_publication WHERE pubname = $1), \
                    coalesce((SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass($2)), false)",
            &[&m.publication_name, &old.sql()],
        )
        .await
        .map_err(|e| Error::db("looking for the forward publication", e))?;
    let (has_publication, partitioned): (bool, bool) = (row.get(0), row.get(1));
    if !has_publication {
        source
            .batch_execute(&forward_publication_sql(
                &m.publication_name,
                old,
                partitioned,
            ))
            .await
            .map_err(|e| Error::db("creating the forward publication", e))?;
    }
    if crate::migration::slot::slot_row(source, &m.slot_name)
        .await?
        .is_some()
    {
        return Ok(());
    }
    // Tests: hold with the window's sessions open, before the slot is made.
    crate::fault::pause("revert-forward").await;
    tracing::info!(slot = %m.slot_name, "creating the forward slot, to stream to the partitioned table again after the revert (it waits for the transactions running now)");
    source
        .query_one(
            "SELECT pg_create_logical_replication_slot($1, 'pgoutput')::text",
            &[&m.slot_name],
        )
        .await
        .map_err(|e| Error::db("creating the forward replication slot", e))?;
    crate::fault::point("revert-forward-slot-created");
    Ok(())
}

/// Drops the forward slot and publication made for a revert that did not happen (refused, or the
/// window closed before it). Safe to repeat.
pub async fn drop_forward(source: &Client, m: &Migration) -> Result<()> {
    crate::migration::slot::finish_cleanup(source, m).await
}

/// The rows of the partitioned table (`repart`, after the renames) that the old table (`table`,
/// back under its name) does not hold, among the candidates' keys (pure). Under `--force` a
/// conflicting key keeps in the old table one of the partitioned table's rows of it, the one with
/// the same new key (`new_key`); the others go, so that the next `verify` is exact. Driven by the
/// candidates (a probe of the new key's leading old-key columns for each), never a scan.
/// `old_key`: the old table's key (name, type), the candidates' `key` array.
pub fn extra_rows_sql(
    repart: &QualifiedName,
    table: &QualifiedName,
    old_key: &[(String, String)],
    new_key: &[String],
    migration_id: i64,
) -> String {
    let by_candidate: Vec<String> = old_key
        .iter()
        .enumerate()
        .map(|(i, (name, ty))| format!("n.{} = c.key[{}]::{ty}", quote_ident(name), i + 1))
        .collect();
    let same_row: Vec<String> = new_key
        .iter()
        .map(|k| format!("o.{0} = n.{0}", quote_ident(k)))
        .collect();
    format!(
        "DELETE FROM {} n USING pgrepart.reverse_conflicts c WHERE c.migration_id = {migration_id} \
         AND {} AND NOT EXISTS (SELECT FROM {} o WHERE {})",
        repart.sql(),
        by_candidate.join(" AND "),
        table.sql(),
        same_row.join(" AND ")
    )
}

/// The last statements of the revert's transaction, after the renames (pure): the candidates are
/// settled (the revert's own statements) or their extra rows deleted (`extra_rows_sql`), so they
/// go; then the state streams forward again from `F`, read here, with the window marked
/// `reverted` until the reverse slot is dropped.
pub fn streaming_again_sql(migration_id: i64) -> Vec<String> {
    vec![
        format!("DELETE FROM pgrepart.reverse_conflicts WHERE migration_id = {migration_id}"),
        streaming_again_update(migration_id, None),
    ]
}

/// The state streaming forward again from `F` (pure): `None` reads F here
/// (`pg_current_wal_insert_lsn()`, the same database's revert); `Some(f)` is the F read on the
/// source in the first commit of a revert across databases (`cross::record_start_sql`).
/// `target_committed_fence` goes: the cutover it marked is undone, and the next one marks its own.
pub fn streaming_again_update(migration_id: i64, f: Option<Lsn>) -> String {
    let f = match f {
        None => "pg_current_wal_insert_lsn()".to_string(),
        Some(f) => format!("'{f}'::pg_lsn"),
    };
    format!(
        "UPDATE pgrepart.migrations SET phase = '{}', phase_since = now(), finished_at = NULL, \
         updated_at = now(), last_error = NULL, reverted_at = now(), \
         forward_start_lsn = p.f, confirmed_lsn = p.f, window_state = '{}', \
         target_committed_fence = NULL, \
         cutover_requested = false, finish_requested = false, revert_requested = false, \
         revert_force = false, reverse_applied_changes = 0, reverse_confirmed_lsn = NULL, \
         reverse_lag_seconds = NULL, reverse_apply_per_s = NULL \
         FROM (SELECT {f} AS f) p WHERE id = {migration_id}",
        Phase::Streaming.as_str(),
        state::WINDOW_REVERTED
    )
}

/// In the revert's transaction, after the renames: `table` is the old table back under its name,
/// `repart` the partitioned table under its working name. Runs `extra_rows_sql` (when there are
/// candidates) and `streaming_again_sql`.
pub async fn in_revert(
    tx: &impl GenericClient,
    m: &Migration,
    table: &QualifiedName,
    repart: &QualifiedName,
) -> Result<()> {
    let ctx = |e| Error::db("setting the forward stream up again in the revert", e);
    let candidates: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT FROM pgrepart.reverse_conflicts WHERE migration_id = $1)",
            &[&m.id],
        )
        .await
        .map_err(ctx)?
        .get(0);
    if candidates {
        let old_key = super::conflicts::key_of(tx, table).await?;
        let new_key: Vec<String> = super::conflicts::key_of(tx, repart)
            .await?
            .into_iter()
            .map(|k| k.0)
            .collect();
        if old_key.is_empty() || new_key.is_empty() {
            return Err(Error::failed(format!(
                "{table} or {repart} has no primary key: the conflicts' extra rows cannot be found"
            )));
        }
        let deleted = tx
            .execute(
                &extra_rows_sql(repart, table, &old_key, &new_key, m.id),
                &[],
            )
            .await
            .map_err(ctx)?;
        if deleted > 0 {
            tracing::info!(
                rows = deleted,
                "rows of conflicting keys that the original table does not hold deleted from the partitioned table"
            );
        }
    }
    for stmt in streaming_again_sql(m.id) {
        tx.batch_execute(&stmt).await.map_err(ctx)?;
    }
    Ok(())
}

/// The revert committed and the migration streams forward again (pure): `run` goes on with it
/// after the window's cleanup.
pub fn streams_again(m: &Migration) -> bool {
    m.reverted_at.is_some() && !matches!(m.phase, Phase::Done | Phase::Reverted)
}

/// Whether the run cuts over without being asked (pure): `--cutover auto`, unless the migration
/// was reverted (a DBA just swapped back: only `pgrepart cutover` cuts over again).
pub fn cuts_over_by_itself(auto: bool, reverted: bool) -> bool {
    auto && !reverted
}

/// Where the forward stream starts, and the applier's first flush position (pure): the server
/// starts at the later of the requested position and the slot's confirmed one; after a revert the
/// slot is older than `F` (made before the revert), and `F` is where the stream must start, also
/// when it is opened again within the attempt (the reader reopens at its flush position).
pub fn forward_start(slot_confirmed: Lsn, recorded: Option<Lsn>) -> (Lsn, Lsn) {
    match recorded {
        Some(f) if f > slot_confirmed => (f, f),
        _ => (slot_confirmed, Lsn::ZERO),
    }
}

/// `status`'s line for a migration reverted and streaming forward again (pure).
pub fn status_note(reverted_at: &str, window_asked: bool) -> String {
    format!(
        "reverted at {reverted_at}; streaming to the partitioned table again: `pgrepart cutover` cuts over again{}, `pgrepart abort` drops it",
        if window_asked {
            " (with a new rollback window)"
        } else {
            ""
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forward_publication_is_on_the_old_table() {
        let old = QualifiedName::new("public", "orders_flat_old");
        assert_eq!(
            forward_publication_sql("pgrepart_1_2_orders_flat", &old, false),
            "CREATE PUBLICATION \"pgrepart_1_2_orders_flat\" FOR TABLE \"public\".\"orders_flat_old\""
        );
        assert!(
            forward_publication_sql("p", &old, true)
                .ends_with(" WITH (publish_via_partition_root = true)")
        );
    }

    #[test]
    fn the_extra_rows_are_those_of_candidates_the_old_table_does_not_hold_by_the_new_key() {
        let sql = extra_rows_sql(
            &QualifiedName::new("public", "orders_flat_repart"),
            &QualifiedName::new("public", "orders_flat"),
            &[("id".into(), "bigint".into())],
            &["id".into(), "region".into()],
            7,
        );
        assert_eq!(
            sql,
            "DELETE FROM \"public\".\"orders_flat_repart\" n USING pgrepart.reverse_conflicts c \
             WHERE c.migration_id = 7 AND n.\"id\" = c.key[1]::bigint AND NOT EXISTS \
             (SELECT FROM \"public\".\"orders_flat\" o WHERE o.\"id\" = n.\"id\" AND o.\"region\" = n.\"region\")"
        );
    }

    #[test]
    fn the_revert_streams_forward_again_from_its_own_position() {
        let sql = streaming_again_sql(9);
        assert_eq!(
            sql[0],
            "DELETE FROM pgrepart.reverse_conflicts WHERE migration_id = 9"
        );
        let update = &sql[1];
        for part in [
            "phase = 'streaming'",
            "reverted_at = now()",
            "forward_start_lsn = p.f",
            "confirmed_lsn = p.f",
            "window_state = 'reverted'",
            "cutover_requested = false",
            "revert_requested = false",
            "reverse_applied_changes = 0",
            "target_committed_fence = NULL",
            "FROM (SELECT pg_current_wal_insert_lsn() AS f) p WHERE id = 9",
        ] {
            assert!(update.contains(part), "{part}: {update}");
        }
        // Across databases F was read on the source, in the revert's first commit.
        let cross = streaming_again_update(9, Some(Lsn(0x1_0000_00A0)));
        assert!(
            cross.contains("FROM (SELECT '1/A0'::pg_lsn AS f) p WHERE id = 9"),
            "{cross}"
        );
        assert!(!cross.contains("pg_current_wal_insert_lsn"), "{cross}");
    }

    #[test]
    fn a_reverted_migration_cuts_over_only_when_asked() {
        assert!(cuts_over_by_itself(true, false));
        assert!(!cuts_over_by_itself(true, true));
        assert!(!cuts_over_by_itself(false, false));
        assert!(!cuts_over_by_itself(false, true));
    }

    #[test]
    fn the_forward_stream_starts_at_the_revert_not_at_the_older_slot() {
        let (slot, f) = (Lsn(100), Lsn(250));
        assert_eq!(forward_start(slot, Some(f)), (f, f));
        // The slot has moved past F (streamed since): its position, as for any resume.
        assert_eq!(forward_start(Lsn(300), Some(f)), (Lsn(300), Lsn::ZERO));
        assert_eq!(forward_start(slot, None), (slot, Lsn::ZERO));
    }

    #[test]
    fn status_says_how_to_go_on_after_a_revert() {
        let note = status_note("2026-01-02 03:04:05 UTC", true);
        assert!(note.starts_with("reverted at 2026-01-02 03:04:05 UTC;"));
        assert!(note.contains("`pgrepart cutover` cuts over again (with a new rollback window)"));
        assert!(!status_note("x", false).contains("window"));
    }
}
