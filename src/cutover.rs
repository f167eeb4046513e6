//! Cutover: lock, fence, drain, swap — in one transaction on the source, so the application sees
//! either the old table or the new one, and waits milliseconds in between.
//!
//! ```text
//! BEGIN; SET LOCAL lock_timeout; LOCK TABLE t IN ACCESS EXCLUSIVE MODE     (timeout: roll back, retry later)
//! pg_logical_emit_message(false, 'pgrepart', fence)  ──► stream ──► applier commits all before it
//! wait for the applier to report the fence                                 (timeout: roll back, retry later)
//! read what is bound to t (comments, policies, triggers, views, ...)     (no one can change it: we hold the lock)
//! ALTER TABLE t RENAME TO t_old; ALTER TABLE t_new RENAME TO t; sequences, owner, grants;
//! comments, statistics targets, RLS and policies, triggers, publications; CREATE OR REPLACE VIEW
//! for each view over t (its text names t, which now is the new table); comment t_old; phase = done
//! COMMIT
//! ```
//! Triggers are created only here, so they never fire while pgrepart applies changes to the new
//! table during the migration.
//! Why the fence works: a non-transactional message is decoded at its own WAL position, so every
//! transaction that committed before it is delivered before it (design.md §6).

use std::time::Duration;

use tokio::sync::watch;
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::pg::catalog::{CarryOver, Grant, OwnedSequence};
use crate::pg::ident::{QualifiedName, quote_ident, quote_literal};

/// Everything the swap must carry over, computed before the lock is taken.
#[derive(Debug, Clone)]
pub struct SwapPlan {
    pub migration_id: i64,
    pub source: QualifiedName,
    pub target: QualifiedName,
    pub old_name: String,
    pub sequences: Vec<OwnedSequence>,
    pub grants: Vec<Grant>,
    /// Set when the new table must be given to the old table's owner.
    pub new_owner: Option<String>,
    /// Partitions pgrepart created (quoted names), which get the same owner.
    pub partitions: Vec<String>,
    /// Whether the target has the identity columns pgrepart generated.
    pub target_created: bool,
}

/// The statements of the swap, in order (pure). `carry` was read under the lock before the
/// renames; `replaced_at` goes into the old table's comment.
pub fn swap_statements(plan: &SwapPlan, carry: &CarryOver, replaced_at: &str) -> Vec<String> {
    let final_name = plan.source.clone();
    let mut sql = vec![
        format!(
            "ALTER TABLE {} RENAME TO {}",
            plan.source.sql(),
            quote_ident(&plan.old_name)
        ),
        format!(
            "ALTER TABLE {} RENAME TO {}",
            plan.target.sql(),
            quote_ident(&plan.source.name)
        ),
    ];
    for seq in &plan.sequences {
        match seq.dependency {
            'i' if plan.target_created => sql.push(format!(
                "SELECT setval(pg_get_serial_sequence({}, {}), s.last_value, s.is_called) FROM {} s",
                quote_literal(&final_name.sql()),
                quote_literal(&seq.column),
                seq.sequence_sql
            )),
            'i' => {}
            _ => {
                // An --into table has no default of its own on this column: give it the old one's.
                if !plan.target_created {
                    sql.push(format!(
                        "ALTER TABLE {} ALTER COLUMN {} SET DEFAULT nextval({}::regclass)",
                        final_name.sql(),
                        quote_ident(&seq.column),
                        quote_literal(&seq.sequence_sql)
                    ));
                }
                sql.push(format!("ALTER SEQUENCE {} OWNED BY {}.{}", seq.sequence_sql, final_name.sql(), quote_ident(&seq.column)));
            }
        }
    }
    if let Some(owner) = &plan.new_owner {
        sql.push(format!(
            "ALTER TABLE {} OWNER TO {}",
            final_name.sql(),
            quote_ident(owner)
        ));
        for p in &plan.partitions {
            sql.push(format!("ALTER TABLE {p} OWNER TO {}", quote_ident(owner)));
        }
    }
    for g in &plan.grants {
        sql.push(format!(
            "GRANT {} ON TABLE {} TO {}{}",
            g.privilege,
            final_name.sql(),
            g.grantee,
            if g.grantable {
                " WITH GRANT OPTION"
            } else {
                ""
            }
        ));
    }
    sql.extend(carry_statements(plan, carry, replaced_at));
    sql.push(format!(
        "UPDATE pgrepart.migrations SET phase = 'done', phase_since = now(), finished_at = now(), updated_at = now(), \
         last_error = NULL WHERE id = {}",
        plan.migration_id
    ));
    sql
}

/// What the swap hands over besides sequences, owner and grants (pure). Runs after the renames:
/// the final name is then the new table's, and definitions read before the renames name it.
pub fn carry_statements(plan: &SwapPlan, carry: &CarryOver, replaced_at: &str) -> Vec<String> {
    let t = plan.source.sql();
    let old = plan.source.sibling(plan.old_name.clone()).sql();
    let mut sql = Vec::new();
    if let Some(c) = &carry.table_comment {
        sql.push(format!("COMMENT ON TABLE {t} IS {}", quote_literal(c)));
    }
    for (column, c) in &carry.column_comments {
        sql.push(format!(
            "COMMENT ON COLUMN {t}.{} IS {}",
            quote_ident(column),
            quote_literal(c)
        ));
    }
    for (column, target) in &carry.statistics_targets {
        sql.push(format!(
            "ALTER TABLE {t} ALTER COLUMN {} SET STATISTICS {target}",
            quote_ident(column)
        ));
    }
    if carry.rls_enabled {
        sql.push(format!("ALTER TABLE {t} ENABLE ROW LEVEL SECURITY"));
    }
    if carry.rls_forced {
        sql.push(format!("ALTER TABLE {t} FORCE ROW LEVEL SECURITY"));
    }
    for p in &carry.policies {
        let mut s = format!(
            "CREATE POLICY {} ON {t} AS {} FOR {} TO {}",
            quote_ident(&p.name),
            if p.permissive {
                "PERMISSIVE"
            } else {
                "RESTRICTIVE"
            },
            p.command,
            p.roles.join(", ")
        );
        if let Some(u) = &p.using {
            s.push_str(&format!(" USING ({u})"));
        }
        if let Some(w) = &p.with_check {
            s.push_str(&format!(" WITH CHECK ({w})"));
        }
        sql.push(s);
    }
    for trg in &carry.triggers {
        sql.push(trg.definition.clone());
        let state = match trg.enabled {
            'D' => Some("DISABLE TRIGGER"),
            'R' => Some("ENABLE REPLICA TRIGGER"),
            'A' => Some("ENABLE ALWAYS TRIGGER"),
            _ => None,
        };
        if let Some(state) = state {
            sql.push(format!(
                "ALTER TABLE {t} {state} {}",
                quote_ident(&trg.name)
            ));
        }
    }
    for p in &carry.publications {
        sql.push(format!("ALTER PUBLICATION {p} ADD TABLE {t}"));
    }
    for v in &carry.views {
        let with = if v.options.is_empty() {
            String::new()
        } else {
            format!(" WITH ({})", v.options.join(", "))
        };
        sql.push(format!(
            "CREATE OR REPLACE VIEW {}{with} AS {}",
            v.name_sql, v.definition
        ));
    }
    let mut note = format!(
        "Replaced at {replaced_at} by the partitioned table {} (pgrepart migration {}); kept as the original table.",
        plan.source, plan.migration_id
    );
    if let Some(c) = &carry.table_comment {
        note.push_str(&format!(" Original comment: {c}"));
    }
    sql.push(format!(
        "COMMENT ON TABLE {old} IS {}",
        quote_literal(&note)
    ));
    sql
}

/// One line for the run's output: what the swap carried over and what it could not.
pub fn carry_summary(carry: &CarryOver) -> Vec<String> {
    let mut lines = Vec::new();
    let mut done = Vec::new();
    if carry.table_comment.is_some() || !carry.column_comments.is_empty() {
        done.push("comments".to_string());
    }
    if carry.rls_enabled {
        done.push(format!(
            "row level security{}",
            if carry.rls_forced { " (forced)" } else { "" }
        ));
    }
    if !carry.policies.is_empty() {
        done.push(format!("{} policy(ies)", carry.policies.len()));
    }
    if !carry.triggers.is_empty() {
        let names: Vec<&str> = carry.triggers.iter().map(|t| t.name.as_str()).collect();
        done.push(format!("trigger(s) {}", names.join(", ")));
    }
    if !carry.statistics_targets.is_empty() {
        done.push("column statistics targets".into());
    }
    if !carry.publications.is_empty() {
        done.push(format!("publication(s) {}", carry.publications.join(", ")));
    }
    if !done.is_empty() {
        lines.push(format!("carried over: {}", done.join("; ")));
    }
    for v in &carry.views {
        lines.push(format!("recreated view {} on the new table", v.name_sql));
    }
    for n in &carry.not_carried {
        lines.push(format!("NOT carried over: {n}"));
    }
    lines
}

/// `--drop-old`: drops the old table after the swap has committed and the slot is gone.
pub async fn drop_old(control: &Client, old: &QualifiedName) -> Result<()> {
    control
        .batch_execute(&format!("DROP TABLE {}", old.sql()))
        .await
        .map_err(|e| {
            Error::db(format!("dropping the old table {old}"), e).with_hint(format!(
                "something still depends on it (see NOT carried over above): move it, then DROP TABLE {old}"
            ))
        })?;
    println!("dropped the old table {old} (--drop-old)");
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Done {
        lock_held: Duration,
    },
    /// The lock could not be had within lock_timeout; nothing changed.
    LockTimeout,
    /// The applier did not reach the fence in time; rolled back, nothing changed.
    DrainTimeout,
}

pub struct Attempt<'a> {
    pub plan: &'a SwapPlan,
    pub server_major: u32,
    pub lock_timeout: Duration,
    pub drain_timeout: Duration,
    pub fence_id: String,
}

/// One cutover attempt. `control` runs the locked transaction; `flusher` (PG < 17) commits a tiny
/// transaction so the fence's WAL is flushed and the walsender sends it at once.
pub async fn attempt(
    control: &mut Client,
    flusher: &Client,
    fence: &mut watch::Receiver<Option<String>>,
    a: Attempt<'_>,
) -> Result<Outcome> {
    let tx = control
        .transaction()
        .await
        .map_err(|e| Error::db("starting the cutover transaction", e))?;
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = '{}ms'",
        a.lock_timeout.as_millis()
    ))
    .await
    .map_err(|e| Error::db("setting lock_timeout", e))?;
    let lock = format!(
        "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        a.plan.source.sql()
    );
    if let Err(e) = tx.batch_execute(&lock).await {
        if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) {
            let _ = tx.rollback().await;
            return Ok(Outcome::LockTimeout);
        }
        return Err(Error::db("locking the source table", e));
    }
    let locked_at = std::time::Instant::now();
    // Nothing bound to the table can change while we hold the lock: read it now.
    let ours: Vec<String> = tx
        .query(
            "SELECT publication_name FROM pgrepart.migrations WHERE id = $1",
            &[&a.plan.migration_id],
        )
        .await
        .map_err(|e| Error::db("reading the migration's publication", e))?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    let carry = crate::pg::catalog::carry_over(&tx, &a.plan.source, &ours).await?;
    let emit = if a.server_major >= 17 {
        "SELECT pg_logical_emit_message(false, $1, $2, true)::text"
    } else {
        "SELECT pg_logical_emit_message(false, $1, $2)::text"
    };
    let fence_lsn: String = tx
        .query_one(emit, &[&crate::apply::FENCE_PREFIX, &a.fence_id])
        .await
        .map_err(|e| Error::db("writing the cutover fence", e))?
        .get(0);
    if a.server_major < 17 {
        flusher
            .query_one(
                "SELECT pg_logical_emit_message(true, 'pgrepart-flush', '')",
                &[],
            )
            .await
            .map_err(|e| Error::db("flushing the cutover fence", e))?;
    }
    tracing::info!(fence = %a.fence_id, lsn = %fence_lsn, "table locked; waiting for the applier to reach the fence");
    let reached = tokio::time::timeout(
        a.drain_timeout,
        fence.wait_for(|f| f.as_deref() == Some(a.fence_id.as_str())),
    )
    .await;
    match reached {
        Err(_) => {
            let _ = tx.rollback().await;
            return Ok(Outcome::DrainTimeout);
        }
        Ok(Err(_)) => {
            let _ = tx.rollback().await;
            return Err(Error::failed(
                "the applier stopped while the cutover waited for it",
            ));
        }
        Ok(Ok(_)) => {}
    }
    let replaced_at = crate::partitioning::Date::format_unix_utc(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    );
    for stmt in swap_statements(a.plan, &carry, &replaced_at) {
        tx.batch_execute(&stmt)
            .await
            .map_err(|e| Error::db("swapping the tables", e))?;
    }
    tx.commit()
        .await
        .map_err(|e| Error::db("committing the swap", e))?;
    for line in carry_summary(&carry) {
        println!("{line}");
    }
    Ok(Outcome::Done {
        lock_held: locked_at.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::catalog::{DependentView, Policy, Trigger};

    const AT: &str = "2025-01-02 03:04:05 UTC";

    fn plan() -> SwapPlan {
        SwapPlan {
            migration_id: 7,
            source: QualifiedName::new("public", "orders_flat"),
            target: QualifiedName::new("public", "orders_flat_repart"),
            old_name: "orders_flat_old".into(),
            sequences: vec![OwnedSequence {
                column: "id".into(),
                sequence_sql: "public.orders_flat_id_seq".into(),
                dependency: 'a',
            }],
            grants: vec![Grant {
                grantee: "app".into(),
                privilege: "SELECT".into(),
                grantable: false,
            }],
            new_owner: None,
            partitions: vec![],
            target_created: true,
        }
    }

    #[test]
    fn swap_renames_then_hands_over_sequence_and_grants_then_marks_done() {
        let sql = swap_statements(&plan(), &CarryOver::default(), AT);
        assert_eq!(
            sql,
            vec![
                "ALTER TABLE \"public\".\"orders_flat\" RENAME TO \"orders_flat_old\"".to_string(),
                "ALTER TABLE \"public\".\"orders_flat_repart\" RENAME TO \"orders_flat\"".to_string(),
                "ALTER SEQUENCE public.orders_flat_id_seq OWNED BY \"public\".\"orders_flat\".\"id\"".to_string(),
                "GRANT SELECT ON TABLE \"public\".\"orders_flat\" TO app".to_string(),
                "COMMENT ON TABLE \"public\".\"orders_flat_old\" IS 'Replaced at 2025-01-02 03:04:05 UTC by the partitioned table public.orders_flat (pgrepart migration 7); kept as the original table.'".to_string(),
                "UPDATE pgrepart.migrations SET phase = 'done', phase_since = now(), finished_at = now(), updated_at = now(), last_error = NULL WHERE id = 7".to_string(),
            ]
        );
    }

    #[test]
    fn an_into_target_gets_the_serial_default_of_the_old_table() {
        let mut p = plan();
        p.target = QualifiedName::new("public", "orders_list");
        p.target_created = false;
        let sql = swap_statements(&p, &CarryOver::default(), AT);
        assert_eq!(
            sql[2],
            "ALTER TABLE \"public\".\"orders_flat\" ALTER COLUMN \"id\" SET DEFAULT nextval('public.orders_flat_id_seq'::regclass)"
        );
        assert_eq!(
            sql[3],
            "ALTER SEQUENCE public.orders_flat_id_seq OWNED BY \"public\".\"orders_flat\".\"id\""
        );
    }

    #[test]
    fn identity_sequences_continue_where_the_old_one_stopped() {
        let mut p = plan();
        p.sequences[0].dependency = 'i';
        p.new_owner = Some("shop_owner".into());
        p.partitions = vec!["\"public\".\"orders_flat_us\"".into()];
        let sql = swap_statements(&p, &CarryOver::default(), AT);
        assert_eq!(
            sql[2],
            "SELECT setval(pg_get_serial_sequence('\"public\".\"orders_flat\"', 'id'), s.last_value, s.is_called) FROM public.orders_flat_id_seq s"
        );
        assert_eq!(
            sql[3],
            "ALTER TABLE \"public\".\"orders_flat\" OWNER TO \"shop_owner\""
        );
        assert_eq!(
            sql[4],
            "ALTER TABLE \"public\".\"orders_flat_us\" OWNER TO \"shop_owner\""
        );
    }

    fn carry() -> CarryOver {
        CarryOver {
            table_comment: Some("orders, one row each".into()),
            column_comments: vec![("region".into(), "ISO region".into())],
            rls_enabled: true,
            rls_forced: true,
            policies: vec![Policy {
                name: "own rows".into(),
                permissive: true,
                command: "SELECT".into(),
                roles: vec!["app".into()],
                using: Some("(customer_id = 7)".into()),
                with_check: None,
            }],
            triggers: vec![Trigger {
                name: "audit".into(),
                definition: "CREATE TRIGGER audit AFTER INSERT ON public.orders_flat FOR EACH ROW EXECUTE FUNCTION audit()".into(),
                enabled: 'D',
            }],
            views: vec![DependentView {
                name_sql: "public.big_orders".into(),
                definition: " SELECT id\n   FROM orders_flat\n  WHERE amount > 100".into(),
                options: vec!["security_barrier=true".into()],
            }],
            statistics_targets: vec![("region".into(), 500)],
            publications: vec!["analytics".into()],
            not_carried: vec!["materialized view public.mv keeps reading the old table".into()],
        }
    }

    #[test]
    fn carry_over_follows_the_renames_and_ends_with_the_old_tables_comment() {
        let sql = swap_statements(&plan(), &carry(), AT);
        let carried = &sql[4..sql.len() - 1];
        assert_eq!(
            carried,
            &[
                "COMMENT ON TABLE \"public\".\"orders_flat\" IS 'orders, one row each'",
                "COMMENT ON COLUMN \"public\".\"orders_flat\".\"region\" IS 'ISO region'",
                "ALTER TABLE \"public\".\"orders_flat\" ALTER COLUMN \"region\" SET STATISTICS 500",
                "ALTER TABLE \"public\".\"orders_flat\" ENABLE ROW LEVEL SECURITY",
                "ALTER TABLE \"public\".\"orders_flat\" FORCE ROW LEVEL SECURITY",
                "CREATE POLICY \"own rows\" ON \"public\".\"orders_flat\" AS PERMISSIVE FOR SELECT TO app USING ((customer_id = 7))",
                "CREATE TRIGGER audit AFTER INSERT ON public.orders_flat FOR EACH ROW EXECUTE FUNCTION audit()",
                "ALTER TABLE \"public\".\"orders_flat\" DISABLE TRIGGER \"audit\"",
                "ALTER PUBLICATION analytics ADD TABLE \"public\".\"orders_flat\"",
                "CREATE OR REPLACE VIEW public.big_orders WITH (security_barrier=true) AS  SELECT id\n   FROM orders_flat\n  WHERE amount > 100",
                "COMMENT ON TABLE \"public\".\"orders_flat_old\" IS 'Replaced at 2025-01-02 03:04:05 UTC by the partitioned table public.orders_flat (pgrepart migration 7); kept as the original table. Original comment: orders, one row each'",
            ]
        );
        assert!(
            sql.last()
                .unwrap()
                .starts_with("UPDATE pgrepart.migrations SET phase = 'done'")
        );
        let summary = carry_summary(&carry());
        assert!(summary[0].contains("trigger(s) audit"), "{summary:?}");
        assert_eq!(
            summary[1],
            "recreated view public.big_orders on the new table"
        );
        assert!(summary[2].starts_with("NOT carried over: materialized view"));
    }
}
