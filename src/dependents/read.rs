//! Catalog reads for the dependents: the foreign keys both ways (also read by `plan`), the new
//! table's key and leaves, and the index and constraint names the swap renames.

use std::collections::BTreeSet;

use tokio_postgres::GenericClient;

use super::fk::{InboundFk, NewKey, OutboundFk};
use super::names::{ConstraintName, IndexName};
use crate::error::{Error, Result};
use crate::pg::ident::QualifiedName;

/// The table's own foreign keys onto other tables, and (separately) self-references by name.
pub async fn outbound_fks(
    client: &impl GenericClient,
    oid: u32,
) -> Result<(Vec<OutboundFk>, Vec<String>)> {
    let rows = client
        .query(
            "SELECT c.conname::text, pg_get_constraintdef(c.oid), rn.nspname::text, r.relname::text, \
                    c.convalidated, c.confrelid = c.conrelid, obj_description(c.oid, 'pg_constraint') \
             FROM pg_constraint c JOIN pg_class r ON r.oid = c.confrelid \
             JOIN pg_namespace rn ON rn.oid = r.relnamespace \
             WHERE c.conrelid = $1 AND c.contype = 'f' AND c.conparentid = 0 ORDER BY 1",
            &[&oid],
        )
        .await
        .map_err(|e| Error::db("reading the table's foreign keys", e))?;
    let mut fks = Vec::new();
    let mut self_refs = Vec::new();
    for r in rows {
        let name: String = r.get(0);
        if r.get::<_, bool>(5) {
            self_refs.push(name);
            continue;
        }
        let def: String = r.get(1);
        fks.push(OutboundFk {
            name,
            definition: def.trim_end_matches(" NOT VALID").to_string(),
            referenced: QualifiedName::new(r.get::<_, String>(2), r.get::<_, String>(3)),
            validated: r.get(4),
            comment: r.get(6),
        });
    }
    Ok((fks, self_refs))
}

/// The foreign keys of other tables onto the table.
pub async fn inbound_fks(client: &impl GenericClient, oid: u32) -> Result<Vec<InboundFk>> {
    let rows = client
        .query(
            "SELECT c.conname::text, n.nspname::text, t.relname::text, t.relkind = 'p', \
                    ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(num, ord) \
                          JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.num ORDER BY k.ord), \
                    ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(num, ord) \
                          JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.num ORDER BY k.ord), \
                    ARRAY(SELECT a.attname::text FROM pg_attribute a \
                          WHERE a.attrelid = c.conrelid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum), \
                    ARRAY(SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
                          WHERE a.attrelid = c.conrelid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum), \
                    c.confupdtype::text, c.confdeltype::text, c.confmatchtype::text, \
                    c.condeferrable, c.condeferred, c.convalidated, pg_get_constraintdef(c.oid), c.oid \
             FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid \
             JOIN pg_namespace n ON n.oid = t.relnamespace \
             WHERE c.confrelid = $1 AND c.contype = 'f' AND c.conrelid <> $1 AND c.conparentid = 0 \
             ORDER BY 2, 3, 1",
            &[&oid],
        )
        .await
        .map_err(|e| Error::db("reading the foreign keys that reference the table", e))?;
    let ch = |s: String| s.chars().next().unwrap_or(' ');
    Ok(rows
        .into_iter()
        .map(|r| {
            let names: Vec<String> = r.get(6);
            let types: Vec<String> = r.get(7);
            InboundFk {
                oid: r.get(15),
                name: r.get(0),
                table: QualifiedName::new(r.get::<_, String>(1), r.get::<_, String>(2)),
                table_partitioned: r.get(3),
                columns: r.get(4),
                referenced: r.get(5),
                table_columns: names.into_iter().zip(types).collect(),
                on_update: ch(r.get(8)),
                on_delete: ch(r.get(9)),
                match_type: ch(r.get(10)),
                deferrable: r.get(11),
                deferred: r.get(12),
                validated: r.get(13),
                definition: r.get(14),
            }
        })
        .collect())
}

/// The new table's leaf partitions (quoted, qualified) and its key, read in the swap before the
/// renames (`table` is its working name).
pub async fn new_table(
    client: &impl GenericClient,
    table: &QualifiedName,
    server_major: u32,
) -> Result<(Vec<String>, NewKey)> {
    let ctx = |e| Error::db(format!("reading the partitions and key of {table}"), e);
    let leaves = client
        .query(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) \
             FROM pg_partition_tree($1::text::regclass) pt JOIN pg_class c ON c.oid = pt.relid \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE pt.isleaf AND c.relkind = 'r' ORDER BY 1",
            &[&table.sql()],
        )
        .await
        .map_err(ctx)?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    let primary_key: Vec<String> = client
        .query_opt(
            "SELECT ARRAY(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(num, ord) \
                    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.num ORDER BY k.ord) \
             FROM pg_index i WHERE i.indrelid = $1::text::regclass AND i.indisprimary",
            &[&table.sql()],
        )
        .await
        .map_err(ctx)?
        .map(|r| r.get(0))
        .unwrap_or_default();
    let columns = crate::pg::catalog::partition_key_columns(client, table)
        .await?
        .unwrap_or_default();
    let mut partition_key = Vec::new();
    for c in columns {
        let ty: String = client
            .query_one(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = $1::text::regclass AND attname = $2",
                &[&table.sql(), &c],
            )
            .await
            .map_err(ctx)?
            .get(0);
        partition_key.push((c, ty));
    }
    Ok((
        leaves,
        NewKey {
            primary_key,
            partition_key,
            server_major,
        },
    ))
}

/// The names the swap renames, read after the table renames: the old table's indexes, the new
/// table's and its partitions' indexes and constraints without an index (a partition's inherited
/// ones are left out: renaming the parent's renames them), every relation name in the schema.
pub async fn names(
    client: &impl GenericClient,
    table: &QualifiedName,
    old: &QualifiedName,
) -> Result<(
    Vec<IndexName>,
    Vec<IndexName>,
    Vec<ConstraintName>,
    BTreeSet<String>,
)> {
    let ctx = |e| {
        Error::db(
            format!("reading the index and constraint names of {table}"),
            e,
        )
    };
    let using = |def: String| {
        def.find(" USING ")
            .map(|p| def[p + 1..].to_string())
            .unwrap_or(def)
    };
    let old_indexes = client
        .query(
            "SELECT c.relname::text, pg_get_indexdef(i.indexrelid), i.indisprimary FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = $1::text::regclass ORDER BY 1",
            &[&old.sql()],
        )
        .await
        .map_err(ctx)?
        .into_iter()
        .map(|r| IndexName {
            name: r.get(0),
            using: using(r.get(1)),
            primary: r.get(2),
            on_parent: true,
        })
        .collect();
    let new_indexes = client
        .query(
            "SELECT c.relname::text, pg_get_indexdef(i.indexrelid), i.indisprimary, pt.level = 0 \
             FROM pg_partition_tree($1::text::regclass) pt JOIN pg_index i ON i.indrelid = pt.relid \
             JOIN pg_class c ON c.oid = i.indexrelid ORDER BY pt.level, 1",
            &[&table.sql()],
        )
        .await
        .map_err(ctx)?
        .into_iter()
        .map(|r| IndexName {
            name: r.get(0),
            using: using(r.get(1)),
            primary: r.get(2),
            on_parent: r.get(3),
        })
        .collect();
    let constraints = client
        .query(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(t.relname), c.conname::text \
             FROM pg_partition_tree($1::text::regclass) pt JOIN pg_constraint c ON c.conrelid = pt.relid \
             JOIN pg_class t ON t.oid = pt.relid JOIN pg_namespace n ON n.oid = t.relnamespace \
             WHERE c.contype NOT IN ('p', 'u', 'x') AND (pt.level = 0 OR c.conislocal) ORDER BY pt.level, 1, 2",
            &[&table.sql()],
        )
        .await
        .map_err(ctx)?
        .into_iter()
        .map(|r| ConstraintName {
            table_sql: r.get(0),
            name: r.get(1),
        })
        .collect();
    let schema_names = client
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1",
            &[&table.schema],
        )
        .await
        .map_err(ctx)?
        .into_iter()
        .map(|r| r.get(0))
        .collect();
    Ok((old_indexes, new_indexes, constraints, schema_names))
}

/// The tables `table`'s foreign keys reference (quoted, qualified, sorted; itself left out).
pub async fn referenced_tables(
    client: &impl GenericClient,
    table: &QualifiedName,
) -> Result<Vec<String>> {
    Ok(client
        .query(
            "SELECT DISTINCT quote_ident(n.nspname) || '.' || quote_ident(r.relname) \
             FROM pg_constraint c JOIN pg_class r ON r.oid = c.confrelid \
             JOIN pg_namespace n ON n.oid = r.relnamespace \
             WHERE c.conrelid = to_regclass($1) AND c.contype = 'f' AND c.confrelid <> c.conrelid ORDER BY 1",
            &[&table.sql()],
        )
        .await
        .map_err(|e| Error::db(format!("reading the tables {table}'s foreign keys reference"), e))?
        .into_iter()
        .map(|r| r.get(0))
        .collect())
}

/// What else is tied to the table (oid `oid`) that the swap leaves on the old table, one line
/// each with what to do: CHECK constraints a partitioned table cannot take (NO INHERIT),
/// exclusion constraints, a tablespace, inheritance children, functions whose bodies name the
/// table (SQL-standard bodies), and every object that uses the table's row type (function
/// arguments and results, other tables' columns, domains, ...): the type stays with the old
/// table. Everything else that depends on the table is either carried or reported by
/// `catalog::carry_over`.
pub async fn not_carried(client: &impl GenericClient, oid: u32) -> Result<Vec<String>> {
    let ctx = |e| Error::db("surveying what depends on the table", e);
    let mut out = Vec::new();
    for r in client
        .query(
            "SELECT conname::text, contype::text, pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid = $1 AND ((contype = 'c' AND connoinherit) OR contype = 'x') ORDER BY 1",
            &[&oid],
        )
        .await
        .map_err(ctx)?
    {
        let name: String = r.get(0);
        let def: String = r.get(2);
        out.push(if r.get::<_, String>(1) == "x" {
            format!(
                "exclusion constraint {name} ({def}): the new table has its index without the constraint; add it on the new table (with the partition-key columns compared by =)"
            )
        } else {
            format!(
                "CHECK constraint {name} ({def}) is NO INHERIT, which a partitioned table cannot have: add it on each partition"
            )
        });
    }
    for r in client
        .query(
            "SELECT t.spcname::text FROM pg_class c JOIN pg_tablespace t ON t.oid = c.reltablespace WHERE c.oid = $1",
            &[&oid],
        )
        .await
        .map_err(ctx)?
    {
        let ts: String = r.get(0);
        out.push(format!(
            "tablespace {ts}: the new table's partitions are in the database's default tablespace; ALTER TABLE ... SET TABLESPACE {ts} on each"
        ));
    }
    for r in client
        .query(
            "SELECT DISTINCT pg_describe_object(d.classid, d.objid, d.objsubid), d.classid = 'pg_class'::regclass \
             FROM pg_depend d \
             WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = $1 AND d.deptype = 'n' \
               AND d.classid IN ('pg_class'::regclass, 'pg_proc'::regclass) ORDER BY 1",
            &[&oid],
        )
        .await
        .map_err(ctx)?
    {
        let what: String = r.get(0);
        out.push(if r.get::<_, bool>(1) {
            format!("{what} inherits from the table and stays a child of the old table")
        } else {
            format!("{what} names the table in its body and keeps using the old table: CREATE OR REPLACE it after the swap")
        });
    }
    for r in client
        .query(
            "SELECT DISTINCT pg_describe_object(d.classid, d.objid, d.objsubid) FROM pg_class c \
             JOIN pg_type t ON t.oid = c.reltype \
             JOIN pg_depend d ON d.refclassid = 'pg_type'::regclass AND d.refobjid IN (t.oid, t.typarray) \
             WHERE c.oid = $1 AND d.deptype = 'n' AND NOT (d.classid = 'pg_class'::regclass AND d.objid = c.oid) ORDER BY 1",
            &[&oid],
        )
        .await
        .map_err(ctx)?
    {
        let what: String = r.get(0);
        out.push(format!(
            "{what} uses the table's row type, which stays with the old table: recreate it with the new table's type"
        ));
    }
    Ok(out)
}
