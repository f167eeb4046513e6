//! Cutover: lock, fence, drain, swap — in one transaction on the source, so the application sees
//! either the old table or the new one, and waits milliseconds in between.
//!
//! ```text
//! BEGIN; SET LOCAL lock_timeout; LOCK TABLE t IN ACCESS EXCLUSIVE MODE     (timeout: roll back, retry later)
//! pg_logical_emit_message(false, 'pgrepart', fence)  ──► stream ──► applier commits all before it
//! wait for the applier to report the fence                                 (timeout: roll back, retry later)
//! ALTER TABLE t RENAME TO t_old; ALTER TABLE t_new RENAME TO t; sequences, owner, grants; phase = done
//! COMMIT
//! ```
//! Why the fence works: a non-transactional message is decoded at its own WAL position, so every
//! transaction that committed before it is delivered before it (design.md §6).

use std::time::Duration;

use tokio::sync::watch;
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::pg::catalog::{Grant, OwnedSequence};
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

/// The statements of the swap, in order (pure).
pub fn swap_statements(plan: &SwapPlan) -> Vec<String> {
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
    sql.push(format!(
        "UPDATE pgrepart.migrations SET phase = 'done', phase_since = now(), finished_at = now(), updated_at = now(), \
         last_error = NULL WHERE id = {}",
        plan.migration_id
    ));
    sql
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
    for stmt in swap_statements(a.plan) {
        tx.batch_execute(&stmt)
            .await
            .map_err(|e| Error::db("swapping the tables", e))?;
    }
    tx.commit()
        .await
        .map_err(|e| Error::db("committing the swap", e))?;
    Ok(Outcome::Done {
        lock_held: locked_at.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let sql = swap_statements(&plan());
        assert_eq!(
            sql,
            vec![
                "ALTER TABLE \"public\".\"orders_flat\" RENAME TO \"orders_flat_old\"".to_string(),
                "ALTER TABLE \"public\".\"orders_flat_repart\" RENAME TO \"orders_flat\"".to_string(),
                "ALTER SEQUENCE public.orders_flat_id_seq OWNED BY \"public\".\"orders_flat\".\"id\"".to_string(),
                "GRANT SELECT ON TABLE \"public\".\"orders_flat\" TO app".to_string(),
                "UPDATE pgrepart.migrations SET phase = 'done', phase_since = now(), finished_at = now(), updated_at = now(), last_error = NULL WHERE id = 7".to_string(),
            ]
        );
    }

    #[test]
    fn an_into_target_gets_the_serial_default_of_the_old_table() {
        let mut p = plan();
        p.target = QualifiedName::new("public", "orders_list");
        p.target_created = false;
        let sql = swap_statements(&p);
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
        let sql = swap_statements(&p);
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
}
