//! Cross-database cutover: the new table is in another database (often another cluster and major),
//! so no single transaction can swap both names. Two transactions, the source's held open around
//! the target's:
//!
//! ```text
//! source: BEGIN; SET LOCAL lock_timeout; LOCK TABLE t ACCESS EXCLUSIVE; fence; wait for the drain
//!         read t's sequences (last_value) and what is bound to t            (nobody can change them)
//! target: BEGIN; ALTER TABLE t_new RENAME TO t; CREATE SEQUENCE IF NOT EXISTS, OWNED BY, DEFAULT
//!         nextval, setval above the source's; owner, grants (roles that exist there), comments,
//!         statistics targets, RLS flags; target_committed_fence = <fence>; COMMIT        (1st commit)
//! source: ALTER TABLE t RENAME TO t_old; COMMENT ON t_old (where it went); COMMIT        (2nd commit)
//! target: phase = done;  then drop the slot and the publication on the source
//! ```
//! After the source's commit every write that still reaches `t` on the source fails (relation
//! does not exist) instead of being lost.
//!
//! **A crash between the two commits.** The target has the new table under its final name; the
//! source's lock died with our session, so the application may have written to `t` on the source
//! again after the fence. Those writes are not lost: the slot is dropped only after the second
//! commit, and it was confirmed only up to positions the stream had reached before the crash,
//! while the table was locked from the fence until the crash; so every write to the table after
//! the crash lies after the slot's confirmed position and is streamed again. The next
//! `run` (or the same one, when only the source's commit failed) sees `target_committed_fence`
//! and finishes: it resumes streaming into the new table under its final name, takes the source
//! lock again, writes a new fence, applies everything up to it (the writes after the first fence
//! included), raises the target's sequences above the source's again (those writes used the
//! source's sequence), and then renames the source table. Replaying changes is idempotent
//! (design.md §3), so changes before the first fence that are seen again are harmless.
//! The window's one hazard is an application that already writes to the target's table before
//! pgrepart has said to (it says so only after the second commit): a row it inserts there with an
//! id that a write on the source also took would be replaced by the source's row.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::sync::watch;
use tokio_postgres::{Client, GenericClient};

use crate::cutover::{FenceSpec, Locked, Outcome};
use crate::error::{Error, Result};
use crate::pg::catalog::{CarryOver, Grant, OwnedSequence};
use crate::pg::ident::{QualifiedName, quote_ident, quote_literal};

/// What a cross-database cutover does, computed before the lock is taken.
#[derive(Debug, Clone)]
pub struct CrossPlan {
    pub migration_id: i64,
    /// The table on the source.
    pub source: QualifiedName,
    /// The new table in the target under its current name (`t_new`, or already `t` when the
    /// target side committed earlier).
    pub target: QualifiedName,
    pub old_name: String,
    /// The migration's own publication (not reported as "not carried").
    pub publication: String,
    pub sequences: Vec<OwnedSequence>,
    pub grants: Vec<Grant>,
    /// The source table's owner.
    pub owner: String,
    /// Partitions pgrepart created (quoted names, in the target), which get the owner too.
    pub partitions: Vec<String>,
    pub target_created: bool,
    /// Identity columns that are GENERATED ALWAYS on the source.
    pub always_identity: Vec<String>,
    /// The target side committed in an earlier attempt (the recovery after a crash between the
    /// two commits): only the sequences are raised again there.
    pub target_committed: bool,
    /// "host:port/db" of the target, for the old table's comment (never a password).
    pub target_desc: String,
    /// A rollback window opens with the swap: its start is read in the target's transaction,
    /// after the rename (design.md §11).
    pub window: bool,
}

impl CrossPlan {
    /// The new table's final name: the source table's name, in the target table's schema.
    pub fn final_name(&self) -> QualifiedName {
        self.target.sibling(self.source.name.clone())
    }
}

/// A sequence of the source table, read under the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceState {
    pub column: String,
    /// `a` serial-style (OWNED BY), `i` identity.
    pub dependency: char,
    /// The sequence's own name, without schema (the target's goes in the new table's schema).
    pub name: String,
    /// e.g. `integer`, `bigint`.
    pub type_sql: String,
    pub last_value: i64,
    /// Whether `nextval` has handed out `last_value` (false: the sequence was never used).
    pub is_called: bool,
}

/// The target's statements, in order, and what could not be carried (pure). `roles` are the
/// target's role names, both as they are and as SQL's `quote_ident` quotes them (the form of
/// `Grant::grantee`).
pub fn target_statements(
    plan: &CrossPlan,
    seqs: &[SequenceState],
    carry: &CarryOver,
    roles: &BTreeSet<String>,
    fence_id: &str,
) -> (Vec<String>, Vec<String>) {
    let t = plan.final_name();
    let ts = t.sql();
    let mut sql = Vec::new();
    let mut not_carried = Vec::new();
    let first = !plan.target_committed;
    if first {
        sql.push(format!(
            "ALTER TABLE {} RENAME TO {}",
            plan.target.sql(),
            quote_ident(&plan.source.name)
        ));
    }
    for s in seqs {
        let col = quote_ident(&s.column);
        let seq_expr = if s.dependency == 'i' {
            if first && plan.target_created && plan.always_identity.contains(&s.column) {
                sql.push(format!(
                    "ALTER TABLE {ts} ALTER COLUMN {col} SET GENERATED ALWAYS"
                ));
            }
            format!(
                "pg_get_serial_sequence({}, {})",
                quote_literal(&ts),
                quote_literal(&s.column)
            )
        } else {
            let seq = t.sibling(s.name.clone()).sql();
            if first {
                sql.push(format!(
                    "CREATE SEQUENCE IF NOT EXISTS {seq} AS {}",
                    s.type_sql
                ));
                sql.push(format!("ALTER SEQUENCE {seq} OWNED BY {ts}.{col}"));
                sql.push(format!(
                    "ALTER TABLE {ts} ALTER COLUMN {col} SET DEFAULT nextval({}::regclass)",
                    quote_literal(&seq)
                ));
            }
            quote_literal(&seq)
        };
        // Never lower it: the target's own value wins when it is higher already.
        if s.is_called {
            sql.push(format!(
                "SELECT setval(q.s, greatest({}, (SELECT ps.last_value FROM pg_sequences ps \
                 WHERE format('%I.%I', ps.schemaname, ps.sequencename)::regclass = q.s)), true) \
                 FROM (SELECT {seq_expr}::regclass AS s) q",
                s.last_value
            ));
        }
    }
    if !first {
        return (sql, not_carried);
    }
    if plan.target_created {
        if roles.contains(&plan.owner) {
            sql.push(format!(
                "ALTER TABLE {ts} OWNER TO {}",
                quote_ident(&plan.owner)
            ));
            for p in &plan.partitions {
                sql.push(format!(
                    "ALTER TABLE {p} OWNER TO {}",
                    quote_ident(&plan.owner)
                ));
            }
        } else {
            not_carried.push(format!(
                "owner {}: no such role on the target; the new table belongs to the connecting role",
                plan.owner
            ));
        }
    }
    for g in &plan.grants {
        if g.grantee == "PUBLIC" || roles.contains(&g.grantee) {
            sql.push(format!(
                "GRANT {} ON TABLE {ts} TO {}{}",
                g.privilege,
                g.grantee,
                if g.grantable {
                    " WITH GRANT OPTION"
                } else {
                    ""
                }
            ));
        } else {
            not_carried.push(format!(
                "GRANT {} to {}: no such role on the target",
                g.privilege, g.grantee
            ));
        }
    }
    // Row level security on, without the policies, denies rather than exposes.
    sql.extend(crate::cutover::table_property_statements(&ts, carry));
    for p in &carry.policies {
        not_carried.push(format!(
            "policy {} (its roles and functions may not exist on the target): recreate it there",
            quote_ident(&p.name)
        ));
    }
    for trg in &carry.triggers {
        not_carried.push(format!(
            "trigger {} (its function is in the source database): recreate it on the target",
            quote_ident(&trg.name)
        ));
    }
    for p in &carry.publications {
        not_carried.push(format!(
            "publication {p} is in the source database: add {t} to a publication on the target"
        ));
    }
    for v in &carry.views {
        not_carried.push(format!(
            "view {} stays in the source database and reads the old table: recreate it on the target",
            v.name_sql
        ));
    }
    for (name, def) in &carry.not_valid_checks {
        not_carried.push(format!(
            "CHECK constraint {} ({def}) was NOT VALID on the source: ALTER TABLE {t} ADD CONSTRAINT {} {def} on the target",
            quote_ident(name),
            quote_ident(name)
        ));
    }
    for fk in &carry.inbound_foreign_keys {
        not_carried.push(format!(
            "foreign key {} of {} stays in the source database, referencing the old table",
            quote_ident(&fk.name),
            fk.table
        ));
    }
    not_carried.extend(carry.not_carried.iter().cloned());
    if plan.window {
        sql.push(crate::rollback::window_start_sql(plan.migration_id));
    }
    sql.push(crate::state::mark_target_committed_sql(
        plan.migration_id,
        fence_id,
    ));
    (sql, not_carried)
}

/// The source's statements after the target committed (pure): the rename that makes stray writes
/// fail, and a comment saying where the table went.
pub fn source_statements(
    plan: &CrossPlan,
    original_comment: Option<&str>,
    replaced_at: &str,
) -> Vec<String> {
    let old = plan.source.sibling(plan.old_name.clone());
    let mut note = format!(
        "Moved at {replaced_at} to the partitioned table {} in {} (pgrepart migration {}); kept as the original table.",
        plan.final_name(),
        plan.target_desc,
        plan.migration_id
    );
    if let Some(c) = original_comment {
        note.push_str(&format!(" Original comment: {c}"));
    }
    vec![
        format!(
            "ALTER TABLE {} RENAME TO {}",
            plan.source.sql(),
            quote_ident(&plan.old_name)
        ),
        format!("COMMENT ON TABLE {} IS {}", old.sql(), quote_literal(&note)),
    ]
}

/// Reads the source table's sequences (inside the locked transaction).
pub(crate) async fn read_sequences(
    client: &impl GenericClient,
    seqs: &[OwnedSequence],
) -> Result<Vec<SequenceState>> {
    let mut out = Vec::with_capacity(seqs.len());
    for s in seqs {
        let row = client
            .query_one(
                &format!(
                    "SELECT v.last_value, v.is_called, format_type(q.seqtypid, NULL), c.relname::text \
                     FROM {} v, pg_sequence q JOIN pg_class c ON c.oid = q.seqrelid \
                     WHERE q.seqrelid = {}::regclass",
                    s.sequence_sql,
                    quote_literal(&s.sequence_sql)
                ),
                &[],
            )
            .await
            .map_err(|e| Error::db(format!("reading the sequence {}", s.sequence_sql), e))?;
        out.push(SequenceState {
            column: s.column.clone(),
            dependency: s.dependency,
            last_value: row.get(0),
            is_called: row.get(1),
            type_sql: row.get(2),
            name: row.get(3),
        });
    }
    Ok(out)
}

/// The target's role names, as they are and quoted by SQL's `quote_ident`.
async fn target_roles(client: &impl GenericClient) -> Result<BTreeSet<String>> {
    let rows = client
        .query(
            "SELECT rolname::text FROM pg_roles UNION SELECT quote_ident(rolname) FROM pg_roles",
            &[],
        )
        .await
        .map_err(|e| Error::db("reading the target's roles", e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

pub struct CrossAttempt<'a> {
    pub plan: &'a CrossPlan,
    pub server_major: u32,
    pub lock_timeout: Duration,
    pub drain_timeout: Duration,
    pub fence_id: String,
}

/// One cross-database cutover attempt: `source` runs the locked transaction, `target` the
/// target's. Returns `Done` once the source's rename committed; the caller marks the migration
/// done in the target and drops the slot.
pub async fn attempt(
    source: &mut Client,
    target: &mut Client,
    flusher: &Client,
    fence: &mut watch::Receiver<Option<String>>,
    a: CrossAttempt<'_>,
) -> Result<Outcome> {
    let spec = FenceSpec {
        table: &a.plan.source,
        server_major: a.server_major,
        lock_timeout: a.lock_timeout,
        drain_timeout: a.drain_timeout,
        fence_id: &a.fence_id,
        pre_lock: &[],
    };
    let (stx, locked_at) =
        match crate::cutover::lock_fence_drain(source, flusher, fence, &spec).await? {
            Locked::Drained { tx, locked_at } => (tx, locked_at),
            Locked::Not(outcome) => return Ok(outcome),
        };
    // Nothing bound to the table, nor its sequences' use by it, can change while we hold the lock.
    let seqs = read_sequences(&stx, &a.plan.sequences).await?;
    let carry = crate::pg::catalog::carry_over(
        &stx,
        &a.plan.source,
        std::slice::from_ref(&a.plan.publication),
    )
    .await?;

    let ttx = target
        .transaction()
        .await
        .map_err(|e| Error::db("starting the target's cutover transaction", e))?;
    ttx.batch_execute(&format!(
        "SET LOCAL lock_timeout = '{}ms'",
        a.lock_timeout.as_millis()
    ))
    .await
    .map_err(|e| Error::db("setting lock_timeout on the target", e))?;
    let roles = target_roles(&ttx).await?;
    let (statements, not_carried) = target_statements(a.plan, &seqs, &carry, &roles, &a.fence_id);
    for stmt in &statements {
        // An error rolls back both transactions (the source's when `stx` is dropped).
        ttx.batch_execute(stmt)
            .await
            .map_err(|e| Error::db("renaming the new table in the target", e))?;
    }
    // The table's foreign keys, onto the target's tables of the same names: recorded here, done
    // after both commits (see `dependents::fk::cross_db_steps`).
    let mut fks = crate::dependents::fk::FkSwap::default();
    if !a.plan.target_committed && !carry.foreign_keys.is_empty() {
        let final_name = a.plan.final_name();
        let mut outbound = Vec::new();
        for fk in &carry.foreign_keys {
            let present: bool = ttx
                .query_one(
                    "SELECT to_regclass($1) IS NOT NULL",
                    &[&fk.referenced.sql()],
                )
                .await
                .map_err(|e| Error::db("looking for the referenced tables on the target", e))?
                .get(0);
            outbound.push((fk.clone(), present));
        }
        let (leaves, _) =
            crate::dependents::read::new_table(&ttx, &final_name, a.server_major).await?;
        fks = crate::dependents::fk::cross_db_steps(&outbound, &final_name, &leaves);
        for stmt in crate::dependents::post_swap::record_statements(a.plan.migration_id, &fks.post)
        {
            ttx.batch_execute(&stmt)
                .await
                .map_err(|e| Error::db("recording the foreign keys to add on the target", e))?;
        }
    }
    ttx.commit()
        .await
        .map_err(|e| Error::db("committing the target's side of the cutover", e))?;
    tracing::info!(fence = %a.fence_id, "target side of the cutover committed; renaming the source table");
    // Test fault point (crate::fault): the crash this module recovers from.
    crate::fault::point("cutover-after-target-commit");

    let replaced_at = crate::partitioning::Date::format_unix_utc(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    );
    for stmt in source_statements(a.plan, carry.table_comment.as_deref(), &replaced_at) {
        stx.batch_execute(&stmt).await.map_err(|e| {
            Error::db("renaming the source table", e).with_hint(
                "the target side has committed: run the same `pgrepart run` command again to finish the cutover",
            )
        })?;
    }
    stx.commit().await.map_err(|e| {
        Error::db("committing the source's side of the cutover", e).with_hint(
            "the target side has committed: run the same `pgrepart run` command again to finish the cutover",
        )
    })?;
    crate::fault::point("cutover-after-source-commit");
    if !a.plan.target_committed {
        for line in not_carried.iter().chain(&fks.not_carried) {
            println!("NOT carried over: {line}");
        }
        for line in &fks.report {
            println!("carried over: {line}");
        }
    }
    for line in
        crate::dependents::post_swap::finish(target, a.plan.migration_id, a.lock_timeout).await
    {
        println!("{line}");
    }
    for fk in &carry.foreign_keys {
        if !a.plan.target_committed {
            println!(
                "NOT carried over: the old table keeps its foreign key {} onto {} in the source database: drop it there if rows of {} are deleted (its rows would hold them)",
                fk.name, fk.referenced, fk.referenced
            );
        }
    }
    Ok(Outcome::Done {
        lock_held: locked_at.elapsed(),
    })
}

/// Whether the source's side of a cross-database cutover already committed: the table is gone
/// under its name and the old name exists (a crash after the second commit, before `done`).
pub async fn source_renamed(
    source: &Client,
    table: &QualifiedName,
    old_name: &str,
) -> Result<bool> {
    let row = source
        .query_one(
            "SELECT to_regclass($1) IS NULL AND to_regclass($2) IS NOT NULL",
            &[&table.sql(), &table.sibling(old_name.to_string()).sql()],
        )
        .await
        .map_err(|e| Error::db("looking for the source table", e))?;
    Ok(row.get(0))
}

/// What the application must now point at (no user, no password).
pub fn point_at_message(
    final_name: &QualifiedName,
    target_desc: &str,
    old: &QualifiedName,
    source_desc: &str,
) -> String {
    format!(
        "point the application at {target_desc}, table {final_name}; on {source_desc} the table is now {old} and writes to the old name fail"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::catalog::{DependentView, Trigger};

    fn plan() -> CrossPlan {
        CrossPlan {
            migration_id: 3,
            source: QualifiedName::new("public", "orders_flat"),
            target: QualifiedName::new("public", "orders_flat_repart"),
            old_name: "orders_flat_old".into(),
            publication: "pgrepart_3_orders_flat".into(),
            sequences: vec![],
            grants: vec![
                Grant {
                    grantee: "app".into(),
                    privilege: "SELECT".into(),
                    grantable: false,
                },
                Grant {
                    grantee: "reporting".into(),
                    privilege: "SELECT".into(),
                    grantable: false,
                },
            ],
            owner: "shop".into(),
            partitions: vec!["\"public\".\"orders_flat_us\"".into()],
            target_created: true,
            always_identity: vec![],
            target_committed: false,
            target_desc: "db2:5433/shop".into(),
            window: false,
        }
    }

    fn serial(last: i64, called: bool) -> SequenceState {
        SequenceState {
            column: "id".into(),
            dependency: 'a',
            name: "orders_flat_id_seq".into(),
            type_sql: "bigint".into(),
            last_value: last,
            is_called: called,
        }
    }

    const SETVAL_SERIAL: &str = "SELECT setval(q.s, greatest(20417, (SELECT ps.last_value FROM pg_sequences ps WHERE format('%I.%I', ps.schemaname, ps.sequencename)::regclass = q.s)), true) FROM (SELECT '\"public\".\"orders_flat_id_seq\"'::regclass AS s) q";

    #[test]
    fn target_renames_creates_the_sequence_above_the_sources_and_records_the_commit() {
        let roles: BTreeSet<String> = ["app", "shop"].iter().map(|s| s.to_string()).collect();
        let carry = CarryOver {
            table_comment: Some("orders".into()),
            views: vec![DependentView {
                name_sql: "public.big_orders".into(),
                definition: "SELECT 1".into(),
                options: vec![],
            }],
            triggers: vec![Trigger {
                name: "audit".into(),
                definition: String::new(),
                enabled: 'O',
            }],
            ..Default::default()
        };
        let (sql, not) =
            target_statements(&plan(), &[serial(20417, true)], &carry, &roles, "3:9:1");
        assert_eq!(
            sql,
            vec![
                "ALTER TABLE \"public\".\"orders_flat_repart\" RENAME TO \"orders_flat\"".to_string(),
                "CREATE SEQUENCE IF NOT EXISTS \"public\".\"orders_flat_id_seq\" AS bigint".into(),
                "ALTER SEQUENCE \"public\".\"orders_flat_id_seq\" OWNED BY \"public\".\"orders_flat\".\"id\"".into(),
                "ALTER TABLE \"public\".\"orders_flat\" ALTER COLUMN \"id\" SET DEFAULT nextval('\"public\".\"orders_flat_id_seq\"'::regclass)".into(),
                SETVAL_SERIAL.into(),
                "ALTER TABLE \"public\".\"orders_flat\" OWNER TO \"shop\"".into(),
                "ALTER TABLE \"public\".\"orders_flat_us\" OWNER TO \"shop\"".into(),
                "GRANT SELECT ON TABLE \"public\".\"orders_flat\" TO app".into(),
                "COMMENT ON TABLE \"public\".\"orders_flat\" IS 'orders'".into(),
                "UPDATE pgrepart.migrations SET target_committed_fence = '3:9:1', updated_at = now() WHERE id = 3".into(),
            ]
        );
        assert_eq!(not.len(), 3, "{not:?}");
        assert!(
            not[0].starts_with("GRANT SELECT to reporting: no such role"),
            "{not:?}"
        );
        assert!(not[1].starts_with("trigger \"audit\""), "{not:?}");
        assert!(
            not[2].starts_with("view public.big_orders stays in the source"),
            "{not:?}"
        );
    }

    #[test]
    fn the_recovery_only_raises_the_sequences_again() {
        let mut p = plan();
        p.target_committed = true;
        p.target = p.final_name();
        let roles = BTreeSet::new();
        let (sql, not) = target_statements(
            &p,
            &[serial(20417, true)],
            &CarryOver::default(),
            &roles,
            "3:9:7",
        );
        assert_eq!(sql, vec![SETVAL_SERIAL.to_string()]);
        assert!(not.is_empty());
    }

    #[test]
    fn identity_columns_use_the_targets_own_sequence_and_unused_sequences_are_left_alone() {
        let mut p = plan();
        p.always_identity = vec!["id".into()];
        let mut s = serial(5, true);
        s.dependency = 'i';
        let (sql, not) = target_statements(
            &p,
            &[
                s,
                SequenceState {
                    column: "n".into(),
                    ..serial(1, false)
                },
            ],
            &CarryOver::default(),
            &BTreeSet::new(),
            "f",
        );
        assert_eq!(
            sql[1],
            "ALTER TABLE \"public\".\"orders_flat\" ALTER COLUMN \"id\" SET GENERATED ALWAYS"
        );
        assert!(
            sql[2].contains("greatest(5,")
                && sql[2].contains(
                    "pg_get_serial_sequence('\"public\".\"orders_flat\"', 'id')::regclass"
                ),
            "{}",
            sql[2]
        );
        // The unused serial is created and attached, not set.
        assert!(sql[3].starts_with("CREATE SEQUENCE IF NOT EXISTS"));
        assert!(!sql.iter().any(|s| s.contains("greatest(1,")));
        assert!(not[0].starts_with("owner shop: no such role"), "{not:?}");
    }

    #[test]
    fn the_source_is_renamed_with_a_comment_naming_where_the_table_went_without_credentials() {
        let sql = source_statements(&plan(), Some("orders"), "2026-01-02 03:04:05 UTC");
        assert_eq!(
            sql[0],
            "ALTER TABLE \"public\".\"orders_flat\" RENAME TO \"orders_flat_old\""
        );
        assert_eq!(
            sql[1],
            "COMMENT ON TABLE \"public\".\"orders_flat_old\" IS 'Moved at 2026-01-02 03:04:05 UTC to the partitioned table public.orders_flat in db2:5433/shop (pgrepart migration 3); kept as the original table. Original comment: orders'"
        );
    }
}
