//! Rows the old table cannot hold. The old table's key (`id`) is unique there but not in the new
//! table (`(id, region)`): after the swap an insert may reuse an `id` in another region. The
//! reverse apply then keeps the newest row in the old table and records the old key as a
//! candidate (`pgrepart.reverse_conflicts`, see `apply::sql::Narrow`).
//!
//! A candidate is a conflict while the new table holds more than one row with that old key; it is
//! checked again against the new table whenever it matters (`status`, and the revert, under its
//! lock). Under the revert's lock, with the reverse stream drained, the old table's rows of every
//! candidate that is no longer a conflict are copied again from the new table, exactly; the
//! conflicts left make the revert refuse, or with `--force` keep the row the old table holds (the
//! last one the reverse stream wrote). Key values are shown by `status`, never logged.

use tokio_postgres::GenericClient;

use crate::error::{Error, Result};
use crate::pg::ident::{QualifiedName, quote_ident};
use crate::state::Migration;

/// The statements that judge and settle the candidates of one migration (pure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictSql {
    /// The candidate keys (`text[]`) for which the new table holds more than one row.
    pub open: String,
    /// Removes the old table's rows of the candidates that are not conflicts...
    pub delete: String,
    /// ...and copies those keys' rows (at most one each) from the new table again.
    pub insert: String,
}

/// `new_t`: the partitioned table; `old`: the old table; `key`: the old table's key columns
/// (name, type); `columns`: the columns written (the new table's replicated ones).
pub fn conflict_sql(
    new_t: &QualifiedName,
    old: &QualifiedName,
    key: &[(String, String)],
    columns: &[String],
    migration_id: i64,
) -> ConflictSql {
    let cond = |alias: &str, other: &str| -> String {
        key.iter()
            .enumerate()
            .map(|(i, (name, ty))| match other {
                "c" => format!("{alias}.{} = c.key[{}]::{ty}", quote_ident(name), i + 1),
                _ => format!("{alias}.{0} = {other}.{0}", quote_ident(name)),
            })
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    let rows_of = |alias: &str, other: &str| {
        format!(
            "(SELECT count(*) FROM {} {alias} WHERE {})",
            new_t.sql(),
            cond(alias, other)
        )
    };
    let cols: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
    let n_cols: Vec<String> = cols.iter().map(|c| format!("n.{c}")).collect();
    ConflictSql {
        open: format!(
            "SELECT c.key FROM pgrepart.reverse_conflicts c WHERE c.migration_id = {migration_id} \
             AND {} > 1 ORDER BY c.first_seen, c.key",
            rows_of("n", "c")
        ),
        delete: format!(
            "DELETE FROM {} o USING pgrepart.reverse_conflicts c WHERE c.migration_id = {migration_id} \
             AND {} AND {} <= 1",
            old.sql(),
            cond("o", "c"),
            rows_of("n", "c")
        ),
        // Driven by the candidates (a lateral probe of the new table's key for each), never a
        // scan of the new table under the revert's lock.
        insert: format!(
            "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM pgrepart.reverse_conflicts c \
             CROSS JOIN LATERAL (SELECT * FROM {} n WHERE {}) n \
             WHERE c.migration_id = {migration_id} AND {} = 1",
            old.sql(),
            cols.join(", "),
            n_cols.join(", "),
            new_t.sql(),
            cond("n", "c"),
            rows_of("m", "n")
        ),
    }
}

/// `id=5` or `(id, region)=(5, EU)`: a key as `status` names it (pure).
pub fn describe_key(columns: &[String], values: &[Option<String>]) -> String {
    let v: Vec<String> = values
        .iter()
        .map(|v| v.clone().unwrap_or_else(|| "NULL".into()))
        .collect();
    if columns.len() == 1 {
        format!("{}={}", columns[0], v.join(""))
    } else {
        format!("({})=({})", columns.join(", "), v.join(", "))
    }
}

/// The key (name, type) of `table`: its replica identity index, else its primary key; empty
/// when the table is gone.
pub async fn key_of(
    client: &impl GenericClient,
    table: &QualifiedName,
) -> Result<Vec<(String, String)>> {
    let key = client
        .query(
            "WITH ix AS (SELECT i.indrelid, i.indkey FROM pg_index i WHERE i.indrelid = to_regclass($1) \
               AND (i.indisprimary OR i.indisreplident) ORDER BY i.indisreplident DESC LIMIT 1) \
             SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM ix \
             JOIN LATERAL unnest(ix.indkey::int2[]) WITH ORDINALITY AS k(attnum, n) ON true \
             JOIN pg_attribute a ON a.attrelid = ix.indrelid AND a.attnum = k.attnum ORDER BY k.n",
            &[&table.sql()],
        )
        .await
        .map_err(|e| Error::db("reading the tables' keys", e))?;
    Ok(key.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The replicated (not generated) columns of `table`; empty when the table is gone.
pub async fn columns_of(client: &impl GenericClient, table: &QualifiedName) -> Result<Vec<String>> {
    let columns = client
        .query(
            "SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = to_regclass($1) \
             AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '' ORDER BY a.attnum",
            &[&table.sql()],
        )
        .await
        .map_err(|e| Error::db("reading the tables' columns for the conflicts", e))?;
    Ok(columns.iter().map(|r| r.get(0)).collect())
}

/// The old table's key (name, type) and the replicated columns of the new table, read from the
/// catalog; `None` when either table is gone.
async fn shape_of(
    client: &impl GenericClient,
    m: &Migration,
) -> Result<Option<(Vec<(String, String)>, Vec<String>)>> {
    let key = key_of(client, &m.source.sibling(m.old_name.clone())).await?;
    let columns = columns_of(client, &m.final_name()).await?;
    if key.is_empty() || columns.is_empty() {
        return Ok(None);
    }
    Ok(Some((key, columns)))
}

/// The statements for `m` and the old key's column names; `None` when either table is gone.
async fn statements(
    client: &impl GenericClient,
    m: &Migration,
) -> Result<Option<(ConflictSql, Vec<String>)>> {
    let Some((key, columns)) = shape_of(client, m).await? else {
        return Ok(None);
    };
    let sql = conflict_sql(
        &m.final_name(),
        &m.source.sibling(m.old_name.clone()),
        &key,
        &columns,
        m.id,
    );
    Ok(Some((sql, key.into_iter().map(|k| k.0).collect())))
}

async fn open_keys(
    client: &impl GenericClient,
    sql: &ConflictSql,
    names: &[String],
) -> Result<Vec<String>> {
    let rows = client
        .query(&sql.open, &[])
        .await
        .map_err(|e| Error::db("reading the reverse stream's conflicts", e))?;
    Ok(rows
        .iter()
        .map(|r| describe_key(names, &r.get::<_, Vec<Option<String>>>(0)))
        .collect())
}

/// The conflicts of `m` now: each as `status` names it.
pub async fn open(client: &impl GenericClient, m: &Migration) -> Result<Vec<String>> {
    match statements(client, m).await? {
        Some((sql, names)) => open_keys(client, &sql, &names).await,
        None => Ok(Vec::new()),
    }
}

/// Under the revert's lock, with the reverse stream drained: the candidates that are no longer
/// conflicts are copied again from the new table; returns the conflicts left.
pub async fn settle(client: &impl GenericClient, m: &Migration) -> Result<Vec<String>> {
    let ctx = |e| Error::db("settling the reverse stream's conflict candidates", e);
    let any: bool = client
        .query_one(
            "SELECT EXISTS (SELECT FROM pgrepart.reverse_conflicts WHERE migration_id = $1)",
            &[&m.id],
        )
        .await
        .map_err(ctx)?
        .get(0);
    if !any {
        return Ok(Vec::new());
    }
    let Some((sql, names)) = statements(client, m).await? else {
        return Ok(Vec::new());
    };
    client.batch_execute(&sql.delete).await.map_err(ctx)?;
    client.batch_execute(&sql.insert).await.map_err(ctx)?;
    open_keys(client, &sql, &names).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_judged_and_copied_again_by_the_old_key() {
        let sql = conflict_sql(
            &QualifiedName::new("public", "orders_flat"),
            &QualifiedName::new("public", "orders_flat_old"),
            &[("id".into(), "bigint".into())],
            &["id".into(), "region".into()],
            4,
        );
        assert_eq!(
            sql.open,
            "SELECT c.key FROM pgrepart.reverse_conflicts c WHERE c.migration_id = 4 AND \
             (SELECT count(*) FROM \"public\".\"orders_flat\" n WHERE n.\"id\" = c.key[1]::bigint) > 1 \
             ORDER BY c.first_seen, c.key"
        );
        assert_eq!(
            sql.delete,
            "DELETE FROM \"public\".\"orders_flat_old\" o USING pgrepart.reverse_conflicts c \
             WHERE c.migration_id = 4 AND o.\"id\" = c.key[1]::bigint AND \
             (SELECT count(*) FROM \"public\".\"orders_flat\" n WHERE n.\"id\" = c.key[1]::bigint) <= 1"
        );
        assert_eq!(
            sql.insert,
            "INSERT INTO \"public\".\"orders_flat_old\" (\"id\", \"region\") OVERRIDING SYSTEM VALUE \
             SELECT n.\"id\", n.\"region\" FROM pgrepart.reverse_conflicts c \
             CROSS JOIN LATERAL (SELECT * FROM \"public\".\"orders_flat\" n WHERE n.\"id\" = c.key[1]::bigint) n \
             WHERE c.migration_id = 4 AND (SELECT count(*) FROM \"public\".\"orders_flat\" m WHERE m.\"id\" = n.\"id\") = 1"
        );
    }

    #[test]
    fn composite_old_keys_compare_every_column() {
        let sql = conflict_sql(
            &QualifiedName::new("s", "t"),
            &QualifiedName::new("s", "t_old"),
            &[("a".into(), "int".into()), ("b".into(), "text".into())],
            &["a".into(), "b".into(), "c".into()],
            1,
        );
        assert!(
            sql.open
                .contains("n.\"a\" = c.key[1]::int AND n.\"b\" = c.key[2]::text"),
            "{}",
            sql.open
        );
        assert!(
            sql.insert
                .contains("m.\"a\" = n.\"a\" AND m.\"b\" = n.\"b\""),
            "{}",
            sql.insert
        );
    }

    #[test]
    fn keys_are_named_column_by_column() {
        assert_eq!(describe_key(&["id".into()], &[Some("5".into())]), "id=5");
        assert_eq!(
            describe_key(&["a".into(), "b".into()], &[Some("1".into()), None]),
            "(a, b)=(1, NULL)"
        );
    }
}
