//! Names at the swap (pure): the new table's indexes and constraints take the old table's names
//! (`orders_flat_pkey`, `orders_flat_customer_id_idx`), the old table's get `_old`, in the swap's
//! transaction. Index names are unique per schema, so the old ones are renamed first.
//!
//! An index of the new table takes the name of the old table's index it was built from: the
//! primary key the old primary key's, any other the old index with the same access method,
//! columns and predicate (`USING ...` of `pg_get_indexdef`, UNIQUE or not: a unique index without
//! the partition key is built as a plain one). A name still derived from the new table's working
//! name (`orders_flat_repart_...`, on the table or its partitions) gets the final name instead.

use std::collections::BTreeSet;

use crate::pg::ident::{QualifiedName, quote_ident};

/// An index (or the constraint it backs) of the old or the new table, read after the renames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexName {
    pub name: String,
    /// `USING ...` of `pg_get_indexdef` (method, columns, predicate).
    pub using: String,
    pub primary: bool,
    /// It belongs to the partitioned table itself (not one of its partitions).
    pub on_parent: bool,
}

/// A constraint without an index of its own (CHECK, NOT NULL, foreign key) of the new table or
/// its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConstraintName {
    /// The table it is on (quoted, qualified).
    pub table_sql: String,
    pub name: String,
}

/// `name` + `suffix`, cut so that the whole fits in 63 bytes.
pub fn suffixed(name: &str, suffix: &str) -> String {
    let mut end = name.len().min(63 - suffix.len());
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{suffix}", &name[..end])
}

/// A name not in `taken`: `base`, else `base` with `2`, `3`, ... appended (within 63 bytes).
fn free_name(base: &str, taken: &BTreeSet<String>) -> String {
    if !taken.contains(base) {
        return base.to_string();
    }
    (2..)
        .map(|n| suffixed(base, &n.to_string()))
        .find(|c| !taken.contains(c))
        .expect("some suffix is free")
}

/// `name` with the working name's prefix replaced by the final one, when it has it.
fn derived(name: &str, working: &str, final_name: &str) -> Option<String> {
    let rest = name.strip_prefix(working)?;
    (rest.is_empty() || rest.starts_with('_')).then(|| suffixed(&format!("{final_name}{rest}"), ""))
}

/// The renames (pure). `working` is the new table's name during the migration (`t_repart`),
/// `table` its final name, `schema_names` every relation name in the schema (after the table
/// renames); `old_indexes` / `new_indexes` the indexes of the old table and of the new table
/// and its partitions; `new_constraints` the new tree's constraints without an index.
pub fn rename_statements(
    table: &QualifiedName,
    working: &str,
    old_indexes: &[IndexName],
    new_indexes: &[IndexName],
    new_constraints: &[ConstraintName],
    schema_names: &BTreeSet<String>,
) -> Vec<String> {
    let mut taken = schema_names.clone();
    let mut sql = Vec::new();
    let index_sql = |name: &str| table.sibling(name.to_string()).sql();
    // 1. The old table's indexes step aside.
    for ix in old_indexes {
        let to = free_name(&suffixed(&ix.name, "_old"), &taken);
        taken.remove(&ix.name);
        sql.push(format!(
            "ALTER INDEX {} RENAME TO {}",
            index_sql(&ix.name),
            quote_ident(&to)
        ));
        taken.insert(to);
    }
    // 2. The new table's take their names.
    let mut unmatched: Vec<&IndexName> = old_indexes.iter().collect();
    for ix in new_indexes {
        let wanted = if ix.on_parent {
            let pos = unmatched.iter().position(|o| {
                if ix.primary || o.primary {
                    ix.primary && o.primary
                } else {
                    o.using == ix.using
                }
            });
            pos.map(|p| unmatched.remove(p).name.clone())
        } else {
            None
        }
        .or_else(|| derived(&ix.name, working, &table.name));
        let Some(wanted) = wanted else { continue };
        if wanted == ix.name || taken.contains(&wanted) {
            continue;
        }
        taken.remove(&ix.name);
        sql.push(format!(
            "ALTER INDEX {} RENAME TO {}",
            index_sql(&ix.name),
            quote_ident(&wanted)
        ));
        taken.insert(wanted);
    }
    // 3. Constraints without an index are named per table: only derived names change.
    for c in new_constraints {
        if let Some(wanted) = derived(&c.name, working, &table.name) {
            sql.push(format!(
                "ALTER TABLE {} RENAME CONSTRAINT {} TO {}",
                c.table_sql,
                quote_ident(&c.name),
                quote_ident(&wanted)
            ));
        }
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ix(name: &str, using: &str, primary: bool, on_parent: bool) -> IndexName {
        IndexName {
            name: name.into(),
            using: using.into(),
            primary,
            on_parent,
        }
    }

    #[test]
    fn new_indexes_take_the_old_names_and_the_old_ones_get_old() {
        let t = QualifiedName::new("public", "orders_flat");
        let old = vec![
            ix("orders_flat_pkey", "USING btree (id)", true, true),
            ix(
                "orders_flat_customer_id_idx",
                "USING btree (customer_id)",
                false,
                true,
            ),
            ix("orders_flat_ref_key", "USING btree (ref)", false, true),
        ];
        let new = vec![
            ix(
                "orders_flat_repart_pkey",
                "USING btree (id, region)",
                true,
                true,
            ),
            ix(
                "orders_flat_repart_customer_id_idx",
                "USING btree (customer_id)",
                false,
                true,
            ),
            ix(
                "orders_flat_repart_ref_idx",
                "USING btree (ref)",
                false,
                true,
            ),
            ix(
                "orders_flat_repart_amount_idx",
                "USING btree (amount)",
                false,
                true,
            ),
            ix(
                "orders_flat_us_pkey",
                "USING btree (id, region)",
                true,
                false,
            ),
            ix(
                "orders_flat_repart_p0_pkey",
                "USING btree (id, region)",
                true,
                false,
            ),
        ];
        let constraints = vec![
            ConstraintName {
                table_sql: "\"public\".\"orders_flat\"".into(),
                name: "orders_flat_repart_id_not_null".into(),
            },
            ConstraintName {
                table_sql: "\"public\".\"orders_flat\"".into(),
                name: "amount_positive".into(),
            },
        ];
        let names: BTreeSet<String> = [
            "orders_flat",
            "orders_flat_old",
            "orders_flat_pkey",
            "orders_flat_customer_id_idx",
            "orders_flat_ref_key",
            "orders_flat_ref_key_old",
            "orders_flat_repart_pkey",
            "orders_flat_repart_customer_id_idx",
            "orders_flat_repart_ref_idx",
            "orders_flat_repart_amount_idx",
            "orders_flat_us_pkey",
            "orders_flat_repart_p0_pkey",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        let sql = rename_statements(&t, "orders_flat_repart", &old, &new, &constraints, &names);
        let q = |a: &str, b: &str| format!("ALTER INDEX \"public\".\"{a}\" RENAME TO \"{b}\"");
        assert_eq!(
            sql,
            vec![
                q("orders_flat_pkey", "orders_flat_pkey_old"),
                q("orders_flat_customer_id_idx", "orders_flat_customer_id_idx_old"),
                q("orders_flat_ref_key", "orders_flat_ref_key_old2"),
                q("orders_flat_repart_pkey", "orders_flat_pkey"),
                q("orders_flat_repart_customer_id_idx", "orders_flat_customer_id_idx"),
                q("orders_flat_repart_ref_idx", "orders_flat_ref_key"),
                q("orders_flat_repart_amount_idx", "orders_flat_amount_idx"),
                q("orders_flat_repart_p0_pkey", "orders_flat_p0_pkey"),
                "ALTER TABLE \"public\".\"orders_flat\" RENAME CONSTRAINT \"orders_flat_repart_id_not_null\" TO \"orders_flat_id_not_null\"".to_string(),
            ]
        );
    }

    #[test]
    fn long_names_are_cut_to_fit() {
        let long = "x".repeat(63);
        assert_eq!(suffixed(&long, "_old").len(), 63);
        assert!(suffixed(&long, "_old").ends_with("_old"));
        assert_eq!(derived("t_repartition", "t_repart", "t"), None);
        assert_eq!(
            derived("t_repart_idx", "t_repart", "t"),
            Some("t_idx".into())
        );
    }
}
