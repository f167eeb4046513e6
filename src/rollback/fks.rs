//! Foreign keys and the rollback window. The cutover moves the table's keys to the partitioned
//! table (outbound: dropped from the old table, NOT VALID on each partition, validated after the
//! commit; inbound: recreated onto the new key, widened by the partition key), so during the
//! window the old table has none and the reverse stream's writes are checked by nothing but the
//! table in use. The revert moves them back the same way, in its transaction after the renames:
//!
//! ```text
//! outbound:  ALTER TABLE t_repart DROP CONSTRAINT fk      (and each partition's own, if any)
//!            ALTER TABLE t ADD CONSTRAINT fk ... NOT VALID
//! inbound:   ALTER TABLE items DROP CONSTRAINT fk
//!            ALTER TABLE items ADD CONSTRAINT fk FOREIGN KEY (order_id) REFERENCES t (id) NOT VALID
//! COMMIT;    then VALIDATE each (post_swap), as after the cutover
//! ```
//! Why the validation holds: under the revert's lock, drained and settled, the old table holds
//! one row of every old key the table in use holds (the same row unless `--force` kept another
//! of a conflicting key's rows, which references what one of the new table's rows does), and the
//! table in use satisfied its keys. An inbound key is narrowed back by the columns the cutover
//! widened it with (the partition-key columns, same name on both sides), and must then match a
//! unique key of the old table; one that does not (added during the window onto the new key)
//! makes the revert refuse, naming it.
//!
//! Keys that cannot come back exactly are refused before the window opens: a key of the table
//! onto itself (not carried by the cutover, so the old table would keep it and the reverse
//! stream's writes, applied in commit order, could break it), and an inbound key the cutover
//! would drop (`--drop-inbound-fks`: nothing enforces it during the window, so the revert could
//! not recreate it valid).

use std::collections::BTreeSet;

use tokio_postgres::GenericClient;

use crate::dependents::fk::{
    InboundAction, InboundFk, OutboundFk, PostSwapStep, inbound_definition,
};
use crate::error::{Error, Result};
use crate::pg::ident::{QualifiedName, quote_ident, quote_literal};

/// Why a window cannot be opened for the table's foreign keys (pure): one entry per key, naming
/// it. `self_refs` are the table's keys onto itself; `inbound` the keys onto it with what the
/// cutover would do with each.
pub fn window_refusals(
    self_refs: &[String],
    inbound: &[(InboundFk, InboundAction)],
) -> Vec<String> {
    let mut out: Vec<String> = self_refs
        .iter()
        .map(|n| {
            format!(
                "foreign key {n} references the table itself (the cutover does not carry it, so the revert could not bring it back)"
            )
        })
        .collect();
    for (fk, action) in inbound {
        if let InboundAction::Drop { .. } | InboundAction::LeftOnSource = action {
            out.push(format!(
                "foreign key {} would be dropped at the cutover (--drop-inbound-fks): nothing enforces it during the window, so the revert could not recreate it valid",
                fk.label()
            ));
        }
    }
    out
}

/// What the revert does with the foreign keys.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RevertFks {
    /// The other tables, locked (ACCESS EXCLUSIVE, under lock_timeout) before any change.
    pub lock: Vec<String>,
    /// In the revert's transaction, after the renames.
    pub statements: Vec<String>,
    /// After its commit (`post_swap`).
    pub post: Vec<PostSwapStep>,
    pub report: Vec<String>,
}

/// The table in use and the old one, as read under the revert's lock before the renames.
#[derive(Debug, Clone, Default)]
pub struct RevertFkFacts {
    /// Keys of the partitioned table onto other tables: its own and any of a partition not yet
    /// attached to one of it (a validation after the cutover not done), by name.
    pub outbound: Vec<OutboundFk>,
    /// Its keys onto itself.
    pub self_refs: Vec<String>,
    /// Keys of other tables onto it.
    pub inbound: Vec<InboundFk>,
    /// Its leaf partitions (quoted, qualified).
    pub leaves: Vec<String>,
    pub partition_key: Vec<String>,
    /// The old table's unique keys (primary key, unique constraints, unique indexes without a
    /// predicate or expression), each as its columns.
    pub unique_keys: Vec<Vec<String>>,
    pub server_major: u32,
}

/// The revert's foreign-key statements (pure), or the keys that cannot be moved back, each
/// named with why. `repart` is the partitioned table's name after the renames, `original` the
/// old table's (the final name).
pub fn revert_fks(
    f: &RevertFkFacts,
    repart: &QualifiedName,
    original: &QualifiedName,
) -> std::result::Result<RevertFks, Vec<String>> {
    let mut out = RevertFks::default();
    let mut refused: Vec<String> = f
        .self_refs
        .iter()
        .map(|n| {
            format!(
                "foreign key {n} on {repart} references the table itself; the old table cannot take it: drop it, or recreate it there after the revert"
            )
        })
        .collect();
    let mut lock: BTreeSet<String> = BTreeSet::new();
    for fk in &f.outbound {
        let name = quote_ident(&fk.name);
        let label = format!("foreign key {} on {original}", fk.name);
        out.statements.push(format!(
            "ALTER TABLE {} DROP CONSTRAINT IF EXISTS {name}",
            repart.sql()
        ));
        for leaf in &f.leaves {
            out.statements.push(format!(
                "ALTER TABLE {leaf} DROP CONSTRAINT IF EXISTS {name}"
            ));
        }
        out.statements.push(format!(
            "ALTER TABLE {} ADD CONSTRAINT {name} {} NOT VALID",
            original.sql(),
            fk.definition
        ));
        if let Some(comment) = &fk.comment {
            out.statements.push(format!(
                "COMMENT ON CONSTRAINT {name} ON {} IS {}",
                original.sql(),
                quote_literal(comment)
            ));
        }
        lock.insert(fk.referenced.sql());
        if fk.validated {
            out.post.push(PostSwapStep {
                constraint: label.clone(),
                what: format!("validate {label}"),
                sql: format!("ALTER TABLE {} VALIDATE CONSTRAINT {name}", original.sql()),
            });
        }
        out.report.push(format!(
            "{label} ({}) moved back from the partitioned table: NOT VALID in the revert{}",
            fk.definition,
            if fk.validated {
                ", validated right after it"
            } else {
                ", left NOT VALID as it was"
            }
        ));
    }
    let set = |v: &[String]| -> BTreeSet<String> { v.iter().cloned().collect() };
    let keys: Vec<BTreeSet<String>> = f.unique_keys.iter().map(|k| set(k)).collect();
    for fk in &f.inbound {
        let (columns, referenced): (Vec<String>, Vec<String>) =
            if keys.contains(&set(&fk.referenced)) {
                (fk.columns.clone(), fk.referenced.clone())
            } else {
                // The cutover widened it by the partition-key columns, same name on both sides.
                fk.columns
                    .iter()
                    .zip(&fk.referenced)
                    .filter(|(c, r)| !(c == r && f.partition_key.contains(r)))
                    .map(|(c, r)| (c.clone(), r.clone()))
                    .unzip()
            };
        let why = if referenced.is_empty() || !keys.contains(&set(&referenced)) {
            Some(format!(
                "it references ({}) of {repart}, and the old table has no unique key on {}",
                fk.referenced.join(", "),
                if referenced.len() == fk.referenced.len() || referenced.is_empty() {
                    "those columns".to_string()
                } else {
                    format!("({})", referenced.join(", "))
                }
            ))
        } else if fk.table_partitioned && f.server_major < 18 {
            Some(format!(
                "{} is partitioned, and PostgreSQL {} cannot add a NOT VALID foreign key to it without a scan under the revert's lock",
                fk.table, f.server_major
            ))
        } else {
            None
        };
        if let Some(why) = why {
            refused.push(format!("foreign key {} ({why})", fk.label()));
            continue;
        }
        let name = quote_ident(&fk.name);
        let label = format!("foreign key {}", fk.label());
        out.statements.push(format!(
            "ALTER TABLE {} DROP CONSTRAINT {name}",
            fk.table.sql()
        ));
        out.statements.push(format!(
            "ALTER TABLE {} ADD CONSTRAINT {name} {} NOT VALID",
            fk.table.sql(),
            inbound_definition(fk, &columns, original, &referenced)
        ));
        lock.insert(fk.table.sql());
        if fk.validated {
            out.post.push(PostSwapStep {
                constraint: label.clone(),
                what: format!("validate {label}"),
                sql: format!("ALTER TABLE {} VALIDATE CONSTRAINT {name}", fk.table.sql()),
            });
        }
        out.report.push(format!(
            "{label} points at {original} again as ({}) -> ({}): NOT VALID in the revert{}",
            columns.join(", "),
            referenced.join(", "),
            if fk.validated {
                ", validated right after it"
            } else {
                ""
            }
        ));
    }
    if !refused.is_empty() {
        return Err(refused);
    }
    out.lock = lock.into_iter().collect();
    Ok(out)
}

/// Reads `RevertFkFacts` for `table` (the partitioned table, under the final name) and `old`
/// (the old table), under the revert's lock before the renames.
pub async fn read_facts(
    client: &impl GenericClient,
    table: &QualifiedName,
    old: &QualifiedName,
    server_major: u32,
) -> Result<RevertFkFacts> {
    let ctx = |e| Error::db("reading the foreign keys to move back", e);
    let oid_of = |t: &QualifiedName| {
        let t = t.sql();
        async move {
            client
                .query_one("SELECT $1::text::regclass::oid", &[&t])
                .await
                .map_err(ctx)
                .map(|r| r.get::<_, u32>(0))
        }
    };
    let oid = oid_of(table).await?;
    let (leaves, key) = crate::dependents::read::new_table(client, table, server_major).await?;
    let (mut outbound, self_refs) = crate::dependents::read::outbound_fks(client, oid).await?;
    for leaf in &leaves {
        let leaf_oid: u32 = client
            .query_one("SELECT $1::text::regclass::oid", &[leaf])
            .await
            .map_err(ctx)?
            .get(0);
        let (own, _) = crate::dependents::read::outbound_fks(client, leaf_oid).await?;
        for fk in own {
            if !outbound.iter().any(|o| o.name == fk.name) {
                outbound.push(fk);
            }
        }
    }
    let inbound = crate::dependents::read::inbound_fks(client, oid).await?;
    let unique_keys = client
        .query(
            "SELECT ARRAY(SELECT a.attname::text FROM unnest(i.indkey::int2[]) k(num) \
                    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.num) \
             FROM pg_index i WHERE i.indrelid = $1::text::regclass AND i.indisunique \
               AND i.indpred IS NULL AND i.indexprs IS NULL",
            &[&old.sql()],
        )
        .await
        .map_err(ctx)?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    Ok(RevertFkFacts {
        outbound,
        self_refs,
        inbound,
        leaves,
        partition_key: key.partition_key.into_iter().map(|(c, _)| c).collect(),
        unique_keys,
        server_major,
    })
}

/// The table's foreign keys onto itself, by name.
pub async fn self_references(
    client: &impl GenericClient,
    table: &QualifiedName,
) -> Result<Vec<String>> {
    Ok(client
        .query(
            "SELECT conname::text FROM pg_constraint WHERE contype = 'f' \
               AND conrelid = $1::text::regclass AND confrelid = conrelid AND conparentid = 0 ORDER BY 1",
            &[&table.sql()],
        )
        .await
        .map_err(|e| Error::db("reading the table's foreign keys", e))?
        .into_iter()
        .map(|r| r.get(0))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbound(columns: &[&str], referenced: &[&str]) -> InboundFk {
        InboundFk {
            oid: 0,
            name: "items_order_fkey".into(),
            table: QualifiedName::new("public", "items"),
            table_partitioned: false,
            columns: columns.iter().map(|s| s.to_string()).collect(),
            referenced: referenced.iter().map(|s| s.to_string()).collect(),
            table_columns: vec![],
            on_update: 'a',
            on_delete: 'c',
            match_type: 's',
            deferrable: false,
            deferred: false,
            validated: true,
            definition: String::new(),
        }
    }

    fn facts() -> RevertFkFacts {
        RevertFkFacts {
            outbound: vec![OutboundFk {
                name: "orders_customer_fkey".into(),
                definition: "FOREIGN KEY (customer_id) REFERENCES customers(id)".into(),
                referenced: QualifiedName::new("public", "customers"),
                validated: true,
                comment: Some("who bought it".into()),
            }],
            self_refs: vec![],
            inbound: vec![inbound(&["order_id", "region"], &["id", "region"])],
            leaves: vec!["public.orders_us".into()],
            partition_key: vec!["region".into()],
            unique_keys: vec![vec!["id".into()]],
            server_major: 15,
        }
    }

    #[test]
    fn the_revert_moves_both_kinds_of_key_back_to_the_old_table() {
        let repart = QualifiedName::new("public", "orders_repart");
        let original = QualifiedName::new("public", "orders");
        let r = revert_fks(&facts(), &repart, &original).unwrap();
        assert_eq!(
            r.statements,
            vec![
                "ALTER TABLE \"public\".\"orders_repart\" DROP CONSTRAINT IF EXISTS \"orders_customer_fkey\"",
                "ALTER TABLE public.orders_us DROP CONSTRAINT IF EXISTS \"orders_customer_fkey\"",
                "ALTER TABLE \"public\".\"orders\" ADD CONSTRAINT \"orders_customer_fkey\" FOREIGN KEY (customer_id) REFERENCES customers(id) NOT VALID",
                "COMMENT ON CONSTRAINT \"orders_customer_fkey\" ON \"public\".\"orders\" IS 'who bought it'",
                "ALTER TABLE \"public\".\"items\" DROP CONSTRAINT \"items_order_fkey\"",
                "ALTER TABLE \"public\".\"items\" ADD CONSTRAINT \"items_order_fkey\" FOREIGN KEY (\"order_id\") REFERENCES \"public\".\"orders\" (\"id\") ON UPDATE NO ACTION ON DELETE CASCADE NOT VALID",
            ]
        );
        assert_eq!(
            r.post.iter().map(|s| s.sql.as_str()).collect::<Vec<_>>(),
            vec![
                "ALTER TABLE \"public\".\"orders\" VALIDATE CONSTRAINT \"orders_customer_fkey\"",
                "ALTER TABLE \"public\".\"items\" VALIDATE CONSTRAINT \"items_order_fkey\"",
            ]
        );
        assert_eq!(
            r.lock,
            vec!["\"public\".\"customers\"", "\"public\".\"items\""]
        );
    }

    #[test]
    fn a_key_the_old_table_cannot_take_is_named() {
        let repart = QualifiedName::new("public", "orders_repart");
        let original = QualifiedName::new("public", "orders");
        // Onto (id, region) with another column name for region: not the cutover's widening,
        // and the old table has no unique key on (id, region).
        let mut f = facts();
        f.inbound = vec![inbound(&["order_id", "order_region"], &["id", "region"])];
        f.self_refs = vec!["orders_parent_fkey".into()];
        let e = revert_fks(&f, &repart, &original).unwrap_err();
        assert_eq!(e.len(), 2);
        assert!(e[0].contains("orders_parent_fkey"), "{}", e[0]);
        assert!(
            e[1].contains("items_order_fkey on public.items")
                && e[1].contains("no unique key on those columns"),
            "{}",
            e[1]
        );
        // A key onto a unique key the old table has stays as it is.
        let mut f = facts();
        f.unique_keys.push(vec!["region".into(), "id".into()]);
        let r = revert_fks(&f, &repart, &original).unwrap();
        assert!(
            r.statements.iter().any(|s| s.starts_with("ALTER TABLE \"public\".\"items\" ADD")
                && s.contains(
                    "(\"order_id\", \"region\") REFERENCES \"public\".\"orders\" (\"id\", \"region\")"
                )),
            "{:#?}",
            r.statements
        );
        // A partitioned referencing table before 18 cannot take a NOT VALID key.
        let mut f = facts();
        f.inbound[0].table_partitioned = true;
        let e = revert_fks(&f, &repart, &original).unwrap_err();
        assert!(e[0].contains("PostgreSQL 15"), "{}", e[0]);
        f.server_major = 18;
        assert!(revert_fks(&f, &repart, &original).is_ok());
    }

    #[test]
    fn keys_a_revert_could_not_bring_back_refuse_the_window() {
        let fk = inbound(&["order_id"], &["id"]);
        let drop = InboundAction::Drop {
            reason: "r".into(),
            recreate: "x".into(),
        };
        let widened = InboundAction::Composite {
            columns: vec!["order_id".into(), "region".into()],
            referenced: vec!["id".into(), "region".into()],
        };
        assert!(window_refusals(&[], &[(fk.clone(), widened)]).is_empty());
        let r = window_refusals(&["self_fkey".into()], &[(fk, drop)]);
        assert_eq!(r.len(), 2);
        assert!(r[0].contains("self_fkey"));
        assert!(
            r[1].contains("items_order_fkey on public.items")
                && r[1].contains("--drop-inbound-fks")
        );
    }
}
