//! Dependents: what else is tied to the table, and what the swap does with it, so that nothing
//! is silently lost. `CarryOver` (pg/catalog.rs) surveys it; this module handles the foreign keys
//! (both ways) and the names of indexes and constraints; what is left is reported as not carried.
//!
//! # Foreign keys of the table (outbound), e.g. `orders_flat.customer_id -> customers(id)`
//!
//! The new table cannot have the key while the changes stream into it: the apply runs behind the
//! source, and `customers` is shared and current. An order inserted and later deleted together
//! with its customer is applied as the old INSERT after the customer is already gone, and a key
//! on the new table would refuse it and stop the apply. The first moment the new table provably
//! satisfies the key is inside the swap's transaction: the old table is locked ACCESS EXCLUSIVE
//! and drained (new = old, and the old table satisfies its validated key), and no one can delete
//! or re-key a referenced row without our lock, since the old key's own triggers on `customers`
//! must lock the old table to check or cascade. So, in the swap's transaction (pre-locked, under
//! `lock_timeout`, so a busy referenced table means "try again later", never a long wait):
//!
//! ```text
//! ALTER TABLE t_old DROP CONSTRAINT fk              (else its stale rows keep holding customers)
//! ALTER TABLE t_part ADD CONSTRAINT fk ... NOT VALID   per leaf partition: no scan; enforced for
//!                                                     every later write; PostgreSQL < 18 refuses
//!                                                     NOT VALID keys on a partitioned table
//! COMMIT
//! ALTER TABLE t_part VALIDATE CONSTRAINT fk          per leaf, one transaction each (SHARE UPDATE
//!                                                     EXCLUSIVE on the partition, ROW SHARE on
//!                                                     customers: writes go on)
//! ALTER TABLE t ADD CONSTRAINT fk ...                 attaches the partitions' validated keys
//!                                                     without a scan (tryAttachPartitionForeignKey
//!                                                     accepts a validated child with the same
//!                                                     actions, match type and deferrability;
//!                                                     checked on 14, 15 and 18: no seq scan, ms)
//! ```
//! ON DELETE / ON UPDATE, DEFERRABLE and MATCH kind are kept (`pg_get_constraintdef`). A key that
//! was NOT VALID on the old table is carried NOT VALID on each partition and left so. The steps
//! after the commit are recorded by the swap's own transaction (`post_swap`), so a run killed in
//! between finishes them when run again; until then every partition enforces the key on new rows.
//! A key onto the table itself (self-reference) is not carried, and is reported.
//!
//! # Foreign keys onto the table (inbound), e.g. `order_items.order_id -> orders_flat(id)`
//!
//! The new table's only unique key is the old key plus the partition key, so a key can follow
//! only if the referencing table carries the partition-key columns too (same name and type): it
//! is then recreated in the swap as `(order_id, region) -> orders_flat(id, region)`, NOT VALID,
//! and validated after the commit (the same argument: new = old under the lock, and the old key
//! holds, so the widened key fails only where `order_items.region` disagrees with its order's
//! region, which the validation reports without failing the run). Otherwise `run` refuses, unless
//! `--drop-inbound-fks`: they are dropped in the swap's transaction (a key left on the old table
//! would refuse every new row that references a new order) and the statements that recreate them
//! once the referencing tables carry the partition key are printed. `fk::inbound_action` says
//! which keys can be widened.
//!
//! # Names
//!
//! See `names`: the new table's indexes take the old names, the old table's get `_old`.

pub mod fk;
pub mod inventory;
pub mod names;
pub mod post_swap;
pub mod read;

use tokio_postgres::GenericClient;

use crate::error::{Error, Result};
use crate::pg::catalog::CarryOver;
use crate::pg::ident::{QualifiedName, quote_ident, quote_literal};
use fk::{FkSwap, InboundAction};

/// What the swap does with the table's dependents beyond `cutover::swap_statements`.
#[derive(Debug, Clone, Default)]
pub struct DependentsSwap {
    /// Tables locked (ACCESS EXCLUSIVE, under lock_timeout) before anything changes.
    pub lock: Vec<String>,
    pub fks: FkSwap,
}

/// Reads the new table's partitions and key (in the swap, before the renames) and decides what
/// happens to each foreign key. Refuses when an inbound key can neither be widened nor dropped
/// (one added after the run's preflight, without `--drop-inbound-fks`), and with a rollback window
/// (`window`) a key the revert could not bring back (`rollback::fks::window_refusals`).
#[allow(clippy::too_many_arguments)]
pub async fn prepare(
    client: &impl GenericClient,
    carry: &CarryOver,
    working: &QualifiedName,
    final_name: &QualifiedName,
    old: &QualifiedName,
    server_major: u32,
    drop_inbound_fks: bool,
    window: bool,
) -> Result<DependentsSwap> {
    if carry.foreign_keys.is_empty() && carry.inbound_foreign_keys.is_empty() && !window {
        return Ok(DependentsSwap::default());
    }
    let (leaves, key) = read::new_table(client, working, server_major).await?;
    let inbound: Vec<(fk::InboundFk, InboundAction)> = carry
        .inbound_foreign_keys
        .iter()
        .map(|f| {
            let a = fk::inbound_action(f, &key, final_name, drop_inbound_fks);
            (f.clone(), a)
        })
        .collect();
    if window {
        // Keys added since the run's checks that a revert could not bring back.
        let self_refs = crate::rollback::fks::self_references(client, final_name).await?;
        let refused = crate::rollback::fks::window_refusals(&self_refs, &inbound);
        if !refused.is_empty() {
            return Err(Error::refused(format!(
                "--rollback-window cannot bring these foreign keys back at a revert: {}",
                refused.join("; ")
            ))
            .with_hint("run again without --rollback-window, or drop those foreign keys first"));
        }
    }
    let refused: Vec<String> = inbound
        .iter()
        .filter(|(_, a)| matches!(a, InboundAction::Refuse { .. }))
        .map(|(f, a)| fk::inbound_report(f, a))
        .collect();
    if !refused.is_empty() {
        return Err(Error::refused(format!(
            "the swap cannot keep these foreign keys: {}",
            refused.join("; ")
        ))
        .with_hint("run again with --drop-inbound-fks, or give the referencing tables the partition-key columns"));
    }
    Ok(DependentsSwap {
        lock: fk::tables_to_lock(&carry.foreign_keys, &inbound),
        fks: fk::fk_swap(&carry.foreign_keys, &inbound, final_name, old, &leaves),
    })
}

/// Renames the indexes and constraints (see `names`), in the swap's transaction after the table
/// renames, then sets the old ones' comments on their namesakes. Returns the lines for the run's
/// output.
pub async fn rename_indexes(
    client: &impl GenericClient,
    final_name: &QualifiedName,
    working: &str,
    old: &QualifiedName,
    carry: &CarryOver,
) -> Result<Vec<String>> {
    let (old_ix, new_ix, constraints, schema_names) = read::names(client, final_name, old).await?;
    let sql = names::rename_statements(
        final_name,
        working,
        &old_ix,
        &new_ix,
        &constraints,
        &schema_names,
    );
    let ctx = |e| Error::db("renaming the indexes and constraints", e);
    for s in &sql {
        client.batch_execute(s).await.map_err(ctx)?;
    }
    let mut lines = Vec::new();
    if !sql.is_empty() {
        lines.push(format!(
            "carried over: index and constraint names (the new table's carry the old names, the old table's end in _old; {} renamed)",
            sql.len()
        ));
    }
    for (is_constraint, name, comment) in &carry.object_comments {
        // An outbound key's comment goes with the key itself, after the swap (`fk::fk_swap`).
        if *is_constraint && carry.foreign_keys.iter().any(|fk| &fk.name == name) {
            continue;
        }
        let (exists, stmt) = if *is_constraint {
            (
                "SELECT EXISTS (SELECT FROM pg_constraint WHERE conrelid = $1::text::regclass AND conname = $2)",
                format!(
                    "COMMENT ON CONSTRAINT {} ON {} IS {}",
                    quote_ident(name),
                    final_name.sql(),
                    quote_literal(comment)
                ),
            )
        } else {
            (
                "SELECT EXISTS (SELECT FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
                 WHERE i.indrelid = $1::text::regclass AND c.relname = $2)",
                format!(
                    "COMMENT ON INDEX {} IS {}",
                    final_name.sibling(name.clone()).sql(),
                    quote_literal(comment)
                ),
            )
        };
        let there: bool = client
            .query_one(exists, &[&final_name.sql(), name])
            .await
            .map_err(ctx)?
            .get(0);
        let kind = if *is_constraint {
            "constraint"
        } else {
            "index"
        };
        if there {
            client.batch_execute(&stmt).await.map_err(ctx)?;
            lines.push(format!("carried over: comment on {kind} {name}"));
        } else {
            lines.push(format!(
                "NOT carried over: comment on {kind} {name} (the new table has no {kind} of that name at the swap): {stmt}"
            ));
        }
    }
    Ok(lines)
}
