//! What pgrepart needs to know about the server and the table, read from the catalogs once.
//! Everything downstream (preflight verdicts, DDL, copy and apply statements) is a pure function
//! of these facts.

use tokio_postgres::{Client, GenericClient};

use super::ident::{QualifiedName, quote_ident};
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// e.g. 150004
    pub version_num: u32,
    pub wal_level: String,
    pub encoding: String,
    pub database: String,
    /// The database's OID (slot names carry it: they are unique per cluster).
    pub database_oid: u32,
}

impl ServerInfo {
    pub fn major(&self) -> u32 {
        self.version_num / 10000
    }
}

pub async fn server_info(client: &Client) -> Result<ServerInfo> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int, current_setting('wal_level'), \
                    pg_encoding_to_char(encoding)::text, current_database()::text, oid \
             FROM pg_database WHERE datname = current_database()",
            &[],
        )
        .await
        .map_err(|e| Error::db("reading server settings", e))?;
    Ok(ServerInfo {
        version_num: row.get::<_, i32>(0) as u32,
        wal_level: row.get(1),
        encoding: row.get(2),
        database: row.get(3),
        database_oid: row.get(4),
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ColumnInfo {
    pub name: String,
    /// `format_type` of the column, e.g. `numeric(10,2)`.
    pub type_sql: String,
    pub type_oid: u32,
    pub not_null: bool,
    pub default: Option<String>,
    /// A non-default collation, already quoted (`"C"` or `"pg_catalog"."C"`).
    pub collation: Option<String>,
    /// The expression of a stored generated column.
    pub generated: Option<String>,
    /// `a` (ALWAYS) or `d` (BY DEFAULT) identity.
    pub identity: Option<char>,
    /// A compression method set on the column (`pglz` or `lz4`); `None` follows the server's
    /// `default_toast_compression`.
    pub compression: Option<String>,
    /// The column's storage mode (`PLAIN`, `EXTERNAL`, `EXTENDED` or `MAIN`) when it differs from
    /// its type's default (`ALTER COLUMN ... SET STORAGE`); `None` is the type's default.
    pub storage: Option<String>,
}

impl ColumnInfo {
    /// Columns that logical replication sends and COPY must carry: not generated.
    pub fn is_replicated(&self) -> bool {
        self.generated.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IndexInfo {
    pub name: String,
    /// `pg_get_indexdef` text.
    pub definition: String,
    pub is_primary: bool,
    pub is_unique: bool,
    pub is_replica_identity: bool,
    /// Plain key columns (expression columns are left out; see `has_expressions`).
    pub columns: Vec<String>,
    pub has_expressions: bool,
    pub has_predicate: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckConstraint {
    pub name: String,
    /// `pg_get_constraintdef`, e.g. `CHECK ((amount >= (0)::numeric))`.
    pub definition: String,
    pub no_inherit: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedSequence {
    pub column: String,
    /// Quoted, schema-qualified.
    pub sequence_sql: String,
    /// `a` for a serial-style OWNED BY, `i` for an identity column's internal sequence.
    pub dependency: char,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Quoted role name or `PUBLIC`.
    pub grantee: String,
    pub privilege: String,
    pub grantable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableInfo {
    pub oid: u32,
    pub name: QualifiedName,
    /// `r` table, `p` partitioned table, ...
    pub relkind: char,
    /// `p` permanent, `u` unlogged, `t` temporary.
    pub persistence: char,
    /// `d` default, `n` nothing, `f` full, `i` index.
    pub replica_identity: char,
    pub owner: String,
    pub estimated_rows: i64,
    pub total_bytes: i64,
    pub columns: Vec<ColumnInfo>,
    pub indexes: Vec<IndexInfo>,
    pub checks: Vec<CheckConstraint>,
    pub sequences: Vec<OwnedSequence>,
    pub grants: Vec<Grant>,
    /// `constraint on other_table` for every foreign key that references this table.
    pub inbound_foreign_keys: Vec<crate::dependents::fk::InboundFk>,
    /// Storage parameters (`reloptions`, e.g. `fillfactor=70`), the TOAST table's prefixed with
    /// `toast.`. A partitioned table takes none: they go to each partition.
    pub storage_options: Vec<String>,
    /// Rewrite rules on the table (not a view's `_RETURN`): refused by preflight.
    pub rules: Vec<String>,
}

impl TableInfo {
    pub fn column(&self, name: &str) -> Option<&ColumnInfo> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The columns logical replication sends, in attribute order.
    pub fn replicated_columns(&self) -> Vec<&ColumnInfo> {
        self.columns.iter().filter(|c| c.is_replicated()).collect()
    }

    /// The index whose columns identify a row in the change stream: the replica identity index,
    /// else the primary key. `None` when the table has neither.
    pub fn key_index(&self) -> Option<&IndexInfo> {
        match self.replica_identity {
            'i' => self.indexes.iter().find(|i| i.is_replica_identity),
            'n' => None,
            _ => self.indexes.iter().find(|i| i.is_primary),
        }
    }
}

/// Reads everything about `name`; `Ok(None)` when no such table exists.
/// A transaction that holds an xid, as a slot being created must wait for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenTransaction {
    pub pid: i32,
    pub application: String,
    /// Seconds since the transaction began, and since its last query started.
    pub open_s: i64,
    pub query_s: i64,
    pub state: String,
}

impl std::fmt::Display for OpenTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} ({}, transaction open {} s, last query started {} s ago, {})",
            self.pid, self.application, self.open_s, self.query_s, self.state
        )
    }
}

/// The oldest transactions holding an xid (at most five), other than this session's: the ones a
/// logical slot being created waits for.
pub async fn open_transactions(client: &impl GenericClient) -> Result<Vec<OpenTransaction>> {
    let rows = client
        .query(
            "SELECT pid, coalesce(application_name, ''), \
                    coalesce(extract(epoch FROM now() - xact_start)::bigint, 0), \
                    coalesce(extract(epoch FROM now() - query_start)::bigint, 0), coalesce(state, '') \
             FROM pg_stat_activity \
             WHERE backend_xid IS NOT NULL AND backend_type = 'client backend' AND pid <> pg_backend_pid() \
             ORDER BY xact_start LIMIT 5",
            &[],
        )
        .await
        .map_err(|e| Error::db("reading running transactions", e))?;
    Ok(rows
        .iter()
        .map(|r| OpenTransaction {
            pid: r.get(0),
            application: r.get(1),
            open_s: r.get(2),
            query_s: r.get(3),
            state: r.get(4),
        })
        .collect())
}

/// Whether a process is attached to the replication slot (false when there is no such slot).
pub async fn slot_active(client: &impl GenericClient, slot: &str) -> Result<bool> {
    Ok(client
        .query_opt(
            "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| Error::db("reading the replication slot", e))?
        .is_some_and(|r| r.get(0)))
}

/// Whether a table, view or other relation of this name exists.
pub async fn relation_exists(client: &impl GenericClient, name: &QualifiedName) -> Result<bool> {
    Ok(client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name.sql()])
        .await
        .map_err(|e| Error::db(format!("looking up {name}"), e))?
        .get(0))
}

/// The OID of a relation, if it exists.
pub async fn relation_oid(
    client: &impl GenericClient,
    name: &QualifiedName,
) -> Result<Option<u32>> {
    Ok(client
        .query_one("SELECT to_regclass($1)::oid", &[&name.sql()])
        .await
        .map_err(|e| Error::db(format!("looking up {name}"), e))?
        .get(0))
}

pub async fn table_info(client: &Client, name: &QualifiedName) -> Result<Option<TableInfo>> {
    let ctx = |what: &str| format!("reading the catalog ({what}) of {name}");
    let Some(row) = client
        .query_opt(
            "SELECT c.oid, c.relkind::text, c.relpersistence::text, c.relreplident::text, \
                    pg_get_userbyid(c.relowner)::text, \
                    CASE WHEN c.relkind = 'p' THEN (SELECT coalesce(sum(greatest(pc.reltuples, 0)), 0)::bigint \
                        FROM pg_partition_tree(c.oid) pt JOIN pg_class pc ON pc.oid = pt.relid WHERE pt.isleaf) \
                      ELSE greatest(c.reltuples, 0)::bigint END, \
                    CASE WHEN c.relkind = 'p' THEN (SELECT coalesce(sum(pg_total_relation_size(pt.relid)), 0)::bigint \
                        FROM pg_partition_tree(c.oid) pt) \
                      ELSE pg_total_relation_size(c.oid) END, \
                    coalesce(c.reloptions, '{}'::text[]) || coalesce((SELECT array_agg('toast.' || o) \
                        FROM pg_class tc, unnest(tc.reloptions) o WHERE tc.oid = c.reltoastrelid), '{}'::text[]) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
            &[&name.schema, &name.name],
        )
        .await
        .map_err(|e| Error::db(ctx("table"), e))?
    else {
        return Ok(None);
    };
    let oid: u32 = row.get(0);
    let first_char = |i: usize| row.get::<_, String>(i).chars().next().unwrap_or('?');

    let columns = client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.atttypid, a.attnotnull, \
                    CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END, \
                    CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation THEN \
                      (SELECT quote_ident(cn.nspname) || '.' || quote_ident(co.collname) \
                       FROM pg_collation co JOIN pg_namespace cn ON cn.oid = co.collnamespace \
                       WHERE co.oid = a.attcollation) END, \
                    CASE WHEN a.attgenerated <> '' THEN pg_get_expr(d.adbin, d.adrelid) END, \
                    a.attidentity::text, \
                    CASE a.attcompression WHEN 'p' THEN 'pglz' WHEN 'l' THEN 'lz4' END, \
                    CASE WHEN a.attstorage <> t.typstorage THEN CASE a.attstorage \
                      WHEN 'p' THEN 'PLAIN' WHEN 'e' THEN 'EXTERNAL' WHEN 'x' THEN 'EXTENDED' WHEN 'm' THEN 'MAIN' END END \
             FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
             LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(|e| Error::db(ctx("columns"), e))?
        .into_iter()
        .map(|r| ColumnInfo {
            name: r.get(0),
            type_sql: r.get(1),
            type_oid: r.get(2),
            not_null: r.get(3),
            default: r.get(4),
            collation: r.get(5),
            generated: r.get(6),
            identity: r.get::<_, String>(7).chars().next(),
            compression: r.get(8),
            storage: r.get(9),
        })
        .collect();

    let indexes = client
        .query(
            "SELECT c.relname::text, pg_get_indexdef(i.indexrelid), i.indisprimary, i.indisunique, \
                    i.indisreplident, \
                    ARRAY(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord) \
                          JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                          ORDER BY k.ord), \
                    i.indexprs IS NOT NULL, i.indpred IS NOT NULL \
             FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE i.indrelid = $1 ORDER BY c.relname",
            &[&oid],
        )
        .await
        .map_err(|e| Error::db(ctx("indexes"), e))?
        .into_iter()
        .map(|r| IndexInfo {
            name: r.get(0),
            definition: r.get(1),
            is_primary: r.get(2),
            is_unique: r.get(3),
            is_replica_identity: r.get(4),
            columns: r.get(5),
            has_expressions: r.get(6),
            has_predicate: r.get(7),
        })
        .collect();

    let checks = client
        .query(
            "SELECT conname::text, pg_get_constraintdef(oid), connoinherit FROM pg_constraint \
             WHERE conrelid = $1 AND contype = 'c' ORDER BY conname",
            &[&oid],
        )
        .await
        .map_err(|e| Error::db(ctx("check constraints"), e))?
        .into_iter()
        .map(|r| CheckConstraint {
            name: r.get(0),
            definition: r.get(1),
            no_inherit: r.get(2),
        })
        .collect();

    let sequences = client
        .query(
            "SELECT a.attname::text, quote_ident(sn.nspname) || '.' || quote_ident(s.relname), d.deptype::text \
             FROM pg_depend d \
             JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' \
             JOIN pg_namespace sn ON sn.oid = s.relnamespace \
             JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid \
             WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass \
               AND d.refobjid = $1 AND d.deptype IN ('a', 'i') ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(|e| Error::db(ctx("sequences"), e))?
        .into_iter()
        .map(|r| OwnedSequence {
            column: r.get(0),
            sequence_sql: r.get(1),
            dependency: r.get::<_, String>(2).chars().next().unwrap_or('a'),
        })
        .collect();

    let grants = grants_of(client, oid)
        .await
        .map_err(|e| Error::db(ctx("grants"), e))?;

    let inbound_foreign_keys = crate::dependents::read::inbound_fks(client, oid).await?;

    let rules = client
        .query(
            "SELECT rulename::text FROM pg_rewrite WHERE ev_class = $1 AND rulename <> '_RETURN' ORDER BY 1",
            &[&oid],
        )
        .await
        .map_err(|e| Error::db(ctx("rules"), e))?
        .into_iter()
        .map(|r| r.get(0))
        .collect();

    Ok(Some(TableInfo {
        oid,
        name: name.clone(),
        relkind: first_char(1),
        persistence: first_char(2),
        replica_identity: first_char(3),
        owner: row.get(4),
        estimated_rows: row.get(5),
        total_bytes: row.get(6),
        columns,
        indexes,
        checks,
        sequences,
        grants,
        inbound_foreign_keys,
        storage_options: row.get(7),
        rules,
    }))
}

/// The partitions of a partitioned table with their bounds, for `--into` targets and reports.
pub async fn partitions(client: &Client, table_oid: u32) -> Result<Vec<(String, String)>> {
    let rows = client
        .query(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), pg_get_expr(c.relpartbound, c.oid) \
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE i.inhparent = $1 ORDER BY 1",
            &[&table_oid],
        )
        .await
        .map_err(|e| Error::db("reading partitions", e))?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// For an already partitioned table: its partitions at every level (`schema.name`, unquoted, as
/// preflight lists taken names), and the leaf partitions whose UPDATEs and DELETEs logical
/// replication cannot send with the table's `key` columns, each with the reason. A leaf is fine
/// with REPLICA IDENTITY FULL, or with a primary key / identity index that holds every key column.
pub async fn partition_tree_facts(
    client: &Client,
    table_oid: u32,
    key: &[String],
) -> Result<(Vec<String>, Vec<String>)> {
    let rows = client
        .query(
            "SELECT n.nspname::text || '.' || c.relname::text, pt.isleaf, c.relkind::text, c.relpersistence::text, \
                    c.relreplident::text, \
                    (SELECT array_agg(a.attname::text) FROM pg_index i \
                       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey::int2[]) \
                     WHERE i.indrelid = c.oid AND CASE c.relreplident WHEN 'i' THEN i.indisreplident ELSE i.indisprimary END) \
             FROM pg_partition_tree($1::oid::regclass) pt JOIN pg_class c ON c.oid = pt.relid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE pt.relid <> $1::oid::regclass ORDER BY 1",
            &[&table_oid],
        )
        .await
        .map_err(|e| Error::db("reading the partitions of the source table", e))?;
    let mut all = Vec::new();
    let mut bad = Vec::new();
    for r in rows {
        let name: String = r.get(0);
        let leaf: bool = r.get(1);
        let relkind: String = r.get(2);
        let persistence: String = r.get(3);
        let ident: String = r.get(4);
        let ident_cols: Option<Vec<String>> = r.get(5);
        all.push(name.clone());
        if !leaf {
            continue;
        }
        let reason = if relkind == "f" {
            Some("a foreign table: its changes are not in this server's WAL".to_string())
        } else if persistence != "p" {
            Some("not a permanent (logged) table".to_string())
        } else if ident == "f" {
            None
        } else if ident == "n" {
            Some("REPLICA IDENTITY NOTHING".to_string())
        } else {
            match ident_cols {
                Some(cols) if key.iter().all(|k| cols.contains(k)) => None,
                Some(cols) => Some(format!(
                    "its replica identity ({}) lacks key column(s) of the table",
                    cols.join(", ")
                )),
                None => Some("no primary key or replica identity index".to_string()),
            }
        };
        if let Some(reason) = reason {
            bad.push(format!("{name}: {reason}"));
        }
    }
    Ok((all, bad))
}

/// Quoted column list, e.g. `"id", "region"`.
pub fn column_list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names
        .into_iter()
        .map(quote_ident)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A row-level security policy, as `pg_policy` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub name: String,
    pub permissive: bool,
    /// `ALL`, `SELECT`, `INSERT`, `UPDATE` or `DELETE`.
    pub command: String,
    /// Quoted role names, or `PUBLIC`.
    pub roles: Vec<String>,
    pub using: Option<String>,
    pub with_check: Option<String>,
}

/// A user trigger on the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    pub name: String,
    /// `pg_get_triggerdef`: `CREATE TRIGGER ... ON schema.table ...`.
    pub definition: String,
    /// `O` origin (default), `D` disabled, `R` replica, `A` always.
    pub enabled: char,
}

/// A view that reads the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependentView {
    /// Quoted, schema-qualified.
    pub name_sql: String,
    /// `pg_get_viewdef`, without the trailing `;`.
    pub definition: String,
    /// `reloptions`, e.g. `security_barrier=true`, `check_option=local`.
    pub options: Vec<String>,
}

/// A materialized view that reads the table, with what a rebuild over the new table must keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependentMatView {
    pub schema: String,
    pub name: String,
    /// `pg_get_viewdef` read before the renames, so it names the table the new one takes over.
    pub definition: String,
    /// `false` for a matview created `WITH NO DATA` and never refreshed: rebuilt the same way.
    pub populated: bool,
    /// `reloptions`, e.g. `fillfactor=90`.
    pub options: Vec<String>,
    pub owner: String,
    pub grants: Vec<Grant>,
    pub comment: Option<String>,
    /// (column, comment)
    pub column_comments: Vec<(String, String)>,
    /// (index name, `pg_get_indexdef`)
    pub indexes: Vec<(String, String)>,
}

impl DependentMatView {
    pub fn name(&self) -> QualifiedName {
        QualifiedName::new(self.schema.clone(), self.name.clone())
    }
}

/// Everything bound to the table's OID that the swap hands to the new table, read in the same
/// session (names in definitions are printed for its search_path), and what it cannot hand over.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CarryOver {
    pub table_comment: Option<String>,
    /// (column, comment)
    pub column_comments: Vec<(String, String)>,
    pub rls_enabled: bool,
    pub rls_forced: bool,
    pub policies: Vec<Policy>,
    pub triggers: Vec<Trigger>,
    pub views: Vec<DependentView>,
    /// Rebuilt over the new table right after the swap has committed (see `cutover`).
    pub matviews: Vec<DependentMatView>,
    /// (column, statistics target) for columns with a non-default target.
    pub statistics_targets: Vec<(String, i32)>,
    /// Quoted names of publications that list the table explicitly.
    pub publications: Vec<String>,
    /// (is a constraint (else an index), name, comment) for the table's constraints and indexes:
    /// set on the new table's namesakes after the index and constraint renames.
    pub object_comments: Vec<(bool, String, String)>,
    /// (name, definition ending in NOT VALID) of CHECK constraints the old table does not
    /// guarantee for its existing rows: left out of the generated table (the copy would fail on
    /// such rows), added NOT VALID at the swap (no scan; enforced from then on).
    pub not_valid_checks: Vec<(String, String)>,
    /// The table's foreign keys onto other tables (see `dependents`).
    pub foreign_keys: Vec<crate::dependents::fk::OutboundFk>,
    /// Other tables' foreign keys onto the table (see `dependents`).
    pub inbound_foreign_keys: Vec<crate::dependents::fk::InboundFk>,
    /// What stays bound to the old table, each with what to do about it.
    pub not_carried: Vec<String>,
}

/// Reads what the swap must carry over from `table` to its replacement. `skip_publications` are
/// pgrepart's own publications.
pub async fn carry_over(
    client: &impl GenericClient,
    table: &QualifiedName,
    skip_publications: &[String],
) -> Result<CarryOver> {
    let ctx = |what: &str| format!("reading the {what} of {table} to carry over");
    let row = client
        .query_one(
            "SELECT c.oid, obj_description(c.oid, 'pg_class'), c.relrowsecurity, c.relforcerowsecurity \
             FROM pg_class c WHERE c.oid = $1::text::regclass",
            &[&table.sql()],
        )
        .await
        .map_err(|e| Error::db(ctx("comment"), e))?;
    let oid: u32 = row.get(0);
    let mut out = CarryOver {
        table_comment: row.get(1),
        rls_enabled: row.get(2),
        rls_forced: row.get(3),
        ..Default::default()
    };
    let (foreign_keys, self_refs) = crate::dependents::read::outbound_fks(client, oid).await?;
    out.foreign_keys = foreign_keys;
    for name in self_refs {
        out.not_carried.push(format!(
            "foreign key {name} references the table itself: recreate it on the new table (onto its key and partition key)"
        ));
    }
    out.inbound_foreign_keys = crate::dependents::read::inbound_fks(client, oid).await?;
    out.not_carried
        .extend(crate::dependents::read::not_carried(client, oid).await?);
    // What the survey does not know is reported too, whatever it is.
    use crate::dependents::inventory::{Kind, survey};
    for d in survey(client, oid, skip_publications, false).await? {
        if d.kind == Kind::Unknown {
            out.not_carried.push(format!("{}: {}", d.object, d.how));
        }
    }
    out.object_comments = client
        .query(
            "SELECT true, conname::text, obj_description(oid, 'pg_constraint') FROM pg_constraint \
             WHERE conrelid = $1 AND obj_description(oid, 'pg_constraint') IS NOT NULL \
             UNION ALL \
             SELECT false, c.relname::text, obj_description(c.oid, 'pg_class') FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE i.indrelid = $1 AND obj_description(c.oid, 'pg_class') IS NOT NULL ORDER BY 1, 2",
            &[&oid],
        )
        .await
        .map_err(|e| Error::db(ctx("comments on constraints and indexes"), e))?
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    out.not_valid_checks = client
        .query(
            "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE conrelid = $1 AND contype = 'c' AND NOT convalidated AND NOT connoinherit ORDER BY 1",
            &[&oid],
        )
        .await
        .map_err(|e| Error::db(ctx("NOT VALID check constraints"), e))?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for r in client
        .query(
            "SELECT a.attname::text, col_description(a.attrelid, a.attnum), a.attstattarget::int, a.attacl IS NOT NULL \
             FROM pg_attribute a WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(|e| Error::db(ctx("columns"), e))?
    {
        let column: String = r.get(0);
        if let Some(comment) = r.get::<_, Option<String>>(1) {
            out.column_comments.push((column.clone(), comment));
        }
        if let Some(target) = r.get::<_, Option<i32>>(2).filter(|t| *t >= 0) {
            out.statistics_targets.push((column.clone(), target));
        }
        if r.get::<_, bool>(3) {
            out.not_carried.push(format!(
                "column privileges on {column}: GRANT them again on the new table"
            ));
        }
    }
    out.policies = client
        .query(
            "SELECT p.polname::text, p.polpermissive, p.polcmd::text, \
                    CASE WHEN p.polroles = '{0}'::oid[] THEN ARRAY['PUBLIC'] \
                         ELSE ARRAY(SELECT quote_ident(r.rolname) FROM pg_roles r WHERE r.oid = ANY (p.polroles) ORDER BY r.rolname) END, \
                    pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid) \
             FROM pg_policy p WHERE p.polrelid = $1 ORDER BY p.polname",
            &[&oid],
        )
        .await
        .map_err(|e| Error::db(ctx("policies"), e))?
        .into_iter()
        .map(|r| Policy {
            name: r.get(0),
            permissive: r.get(1),
            command: match r.get::<_, String>(2).as_str() {
                "r" => "SELECT",
                "a" => "INSERT",
                "w" => "UPDATE",
                "d" => "DELETE",
                _ => "ALL",
            }
            .to_string(),
            roles: r.get(3),
            using: r.get(4),
            with_check: r.get(5),
        })
        .collect();
    for r in client
        .query(
            "SELECT t.tgname::text, pg_get_triggerdef(t.oid, false), t.tgenabled::text, t.tgconstraint <> 0, \
                    (t.tgtype & 1) = 1 AND (t.tgoldtable IS NOT NULL OR t.tgnewtable IS NOT NULL) \
             FROM pg_trigger t WHERE t.tgrelid = $1 AND NOT t.tgisinternal ORDER BY t.tgname",
            &[&oid],
        )
        .await
        .map_err(|e| Error::db(ctx("triggers"), e))?
    {
        let name: String = r.get(0);
        if r.get::<_, bool>(3) {
            out.not_carried.push(format!(
                "constraint trigger {name}: recreate it on the new table (or its partitions)"
            ));
        } else if r.get::<_, bool>(4) {
            out.not_carried.push(format!(
                "row trigger {name} uses transition tables, which partitioned tables do not support: rewrite it as a statement trigger"
            ));
        } else {
            out.triggers.push(Trigger {
                name,
                definition: r.get(1),
                enabled: r.get::<_, String>(2).chars().next().unwrap_or('O'),
            });
        }
    }
    for r in client
        .query(
            "SELECT DISTINCT quote_ident(n.nspname) || '.' || quote_ident(v.relname), v.relkind::text, \
                    CASE WHEN v.relkind = 'v' THEN pg_get_viewdef(v.oid) END, \
                    coalesce(v.reloptions, '{}'::text[]), pg_has_role(v.relowner, 'USAGE'), v.oid, \
                    EXISTS (SELECT FROM pg_depend d2 JOIN pg_rewrite rw2 ON rw2.oid = d2.objid \
                            WHERE d2.classid = 'pg_rewrite'::regclass AND d2.refobjid = v.oid AND rw2.ev_class <> v.oid) \
             FROM pg_depend d JOIN pg_rewrite rw ON rw.oid = d.objid \
             JOIN pg_class v ON v.oid = rw.ev_class JOIN pg_namespace n ON n.oid = v.relnamespace \
             WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass \
               AND d.refobjid = $1 AND v.oid <> $1 ORDER BY 1",
            &[&oid],
        )
        .await
        .map_err(|e| Error::db(ctx("views"), e))?
    {
        let name: String = r.get(0);
        let kind: String = r.get(1);
        let may_replace: bool = r.get(4);
        if kind == "v" && may_replace {
            let def: String = r.get::<_, Option<String>>(2).unwrap_or_default();
            out.views.push(DependentView {
                name_sql: name,
                definition: def.trim_end().trim_end_matches(';').to_string(),
                options: r.get(3),
            });
        } else if kind == "v" {
            out.not_carried.push(format!(
                "view {name} belongs to a role pgrepart cannot act as: it keeps reading the old table; CREATE OR REPLACE it as its owner"
            ));
        } else if kind == "m" && !may_replace {
            out.not_carried.push(format!(
                "materialized view {name} belongs to a role pgrepart cannot act as: it keeps reading the old table; recreate it as its owner after the cutover"
            ));
        } else if kind == "m" && r.get::<_, bool>(6) {
            out.not_carried.push(format!(
                "materialized view {name} is read by other views, which a rebuild would have to drop: it keeps reading the old table; recreate it and its readers after the cutover"
            ));
        } else if kind == "m" {
            out.matviews.push(matview(client, r.get(5)).await?);
        } else {
            out.not_carried.push(format!(
                "rule-based dependent {name} keeps reading the old table"
            ));
        }
    }
    for r in client
        .query(
            "SELECT quote_ident(p.pubname), p.pubname::text, \
                    (to_jsonb(pr) ->> 'prqual') IS NOT NULL OR (to_jsonb(pr) ->> 'prattrs') IS NOT NULL \
             FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid \
             WHERE pr.prrelid = $1 ORDER BY 2",
            &[&oid],
        )
        .await
        .map_err(|e| Error::db(ctx("publications"), e))?
    {
        let plain: String = r.get(1);
        if skip_publications.contains(&plain) {
            continue;
        }
        if r.get::<_, bool>(2) {
            out.not_carried.push(format!(
                "publication {plain} has a row filter or column list for the table: ALTER PUBLICATION ... ADD TABLE it again"
            ));
        } else {
            out.publications.push(r.get(0));
        }
    }
    for r in client
        .query(
            "SELECT coalesce((SELECT attname::text FROM pg_attribute WHERE attrelid = l.objoid AND attnum = l.objsubid), ''), \
                    l.provider FROM pg_seclabel l \
             WHERE l.classoid = 'pg_class'::regclass AND l.objoid = $1 ORDER BY l.objsubid, l.provider",
            &[&oid],
        )
        .await
        .map_err(|e| Error::db(ctx("security labels"), e))?
    {
        let column: String = r.get(0);
        let provider: String = r.get(1);
        let on = if column.is_empty() {
            "the table".to_string()
        } else {
            format!("column {column}")
        };
        out.not_carried.push(format!(
            "security label of provider {provider} on {on}: SECURITY LABEL FOR {provider} ON ... again on the new table"
        ));
    }
    for r in client
        .query(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(s.stxname) FROM pg_statistic_ext s \
             JOIN pg_namespace n ON n.oid = s.stxnamespace WHERE s.stxrelid = $1 ORDER BY 1",
            &[&oid],
        )
        .await
        .map_err(|e| Error::db(ctx("extended statistics"), e))?
    {
        let name: String = r.get(0);
        out.not_carried.push(format!(
            "extended statistics {name} stay on the old table: CREATE STATISTICS again on the new one"
        ));
    }
    Ok(out)
}

/// The privileges granted on relation `oid` to roles other than its owner.
async fn grants_of(
    client: &impl GenericClient,
    oid: u32,
) -> std::result::Result<Vec<Grant>, tokio_postgres::Error> {
    Ok(client
        .query(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END, \
                    a.privilege_type, a.is_grantable \
             FROM pg_class c, aclexplode(c.relacl) a \
             WHERE c.oid = $1 AND a.grantee <> c.relowner ORDER BY 1, 2",
            &[&oid],
        )
        .await
        ?
        .into_iter()
        .map(|r| Grant { grantee: r.get(0), privilege: r.get(1), grantable: r.get(2) })
        .collect())
}

/// The definition and attachments of the materialized view `oid`.
async fn matview(client: &impl GenericClient, oid: u32) -> Result<DependentMatView> {
    let ctx = "reading a materialized view over the table to rebuild it";
    let row = client
        .query_one(
            "SELECT n.nspname::text, c.relname::text, pg_get_viewdef(c.oid), c.relispopulated, \
                    coalesce(c.reloptions, '{}'::text[]), pg_get_userbyid(c.relowner)::text, \
                    obj_description(c.oid, 'pg_class') \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
            &[&oid],
        )
        .await
        .map_err(|e| Error::db(ctx, e))?;
    let grants = grants_of(client, oid)
        .await
        .map_err(|e| Error::db(ctx, e))?;
    let column_comments = client
        .query(
            "SELECT a.attname::text, col_description(a.attrelid, a.attnum) FROM pg_attribute a \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND col_description(a.attrelid, a.attnum) IS NOT NULL \
             ORDER BY a.attnum",
            &[&oid],
        )
        .await
        .map_err(|e| Error::db(ctx, e))?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let indexes = client
        .query(
            "SELECT c.relname::text, pg_get_indexdef(i.indexrelid) FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = $1 ORDER BY 1",
            &[&oid],
        )
        .await
        .map_err(|e| Error::db(ctx, e))?
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let definition: String = row.get(2);
    Ok(DependentMatView {
        schema: row.get(0),
        name: row.get(1),
        definition: definition.trim_end().trim_end_matches(';').to_string(),
        populated: row.get(3),
        options: row.get(4),
        owner: row.get(5),
        grants,
        comment: row.get(6),
        column_comments,
        indexes,
    })
}

/// A unique index (other than the primary key) or exclusion constraint of `table`, by name, if it
/// has one.
pub async fn other_unique_index(
    client: &impl GenericClient,
    table: &QualifiedName,
) -> Result<Option<String>> {
    let row = client
        .query_opt(
            "SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
             WHERE i.indrelid = to_regclass($1) AND (i.indisunique OR i.indisexclusion) \
               AND NOT i.indisprimary \
             ORDER BY 1 LIMIT 1",
            &[&table.sql()],
        )
        .await
        .map_err(|e| Error::db("reading the new table's unique indexes", e))?;
    Ok(row.map(|r| r.get(0)))
}

/// The partition-key columns of `table` and of the partitioned tables under it, top level first
/// (expressions left out), or `None` when `table` is not partitioned.
pub async fn partition_key_columns(
    client: &impl GenericClient,
    table: &QualifiedName,
) -> Result<Option<Vec<String>>> {
    let partitioned: bool = client
        .query_one(
            "SELECT coalesce((SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass($1)), false)",
            &[&table.sql()],
        )
        .await
        .map_err(|e| Error::db("reading the new table's partition key", e))?
        .get(0);
    if !partitioned {
        return Ok(None);
    }
    let rows = client
        .query(
            "SELECT a.attname::text FROM pg_partition_tree(to_regclass($1)) pt \
             JOIN pg_partitioned_table p ON p.partrelid = pt.relid \
             CROSS JOIN LATERAL unnest(p.partattrs::int2[]) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = k.attnum \
             ORDER BY pt.level, k.ord",
            &[&table.sql()],
        )
        .await
        .map_err(|e| Error::db("reading the new table's partition key", e))?;
    let mut columns: Vec<String> = Vec::new();
    for r in rows {
        let name: String = r.get(0);
        if !columns.contains(&name) {
            columns.push(name);
        }
    }
    Ok(Some(columns))
}

/// The DEFAULT partition of `partitioned` (quoted, qualified) and its row count; `None` without one.
pub async fn default_partition_rows(
    client: &impl GenericClient,
    partitioned: &QualifiedName,
) -> Result<Option<(String, i64)>> {
    let Some((partition, _)) = default_partition_estimate(client, partitioned).await? else {
        return Ok(None);
    };
    let rows: i64 = client
        .query_one(&format!("SELECT count(*) FROM {partition}"), &[])
        .await
        .map_err(|e| Error::db(format!("counting the rows of {partition}"), e))?
        .get(0);
    Ok(Some((partition, rows)))
}

/// Whether `table` exists without a primary key (a generated new table builds its key after the
/// copy when `--primary-key` says so).
pub async fn lacks_primary_key(client: &Client, table: &QualifiedName) -> Result<bool> {
    Ok(client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL AND NOT EXISTS \
               (SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass($1) AND contype = 'p')",
            &[&table.sql()],
        )
        .await
        .map_err(|e| Error::db("looking for the new table's primary key", e))?
        .get(0))
}

/// The DEFAULT partition of `partitioned` (quoted, qualified) and the statistics' estimate of its
/// live rows (no scan; it trails the commits by a few seconds); `None` without one, or when
/// `partitioned` does not exist.
pub async fn default_partition_estimate(
    client: &impl GenericClient,
    partitioned: &QualifiedName,
) -> Result<Option<(String, i64)>> {
    let row = client
        .query_opt(
            "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), \
                    coalesce(pg_stat_get_live_tuples(c.oid), 0) \
             FROM pg_partitioned_table p \
             JOIN pg_class c ON c.oid = p.partdefid JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE p.partrelid = to_regclass($1)",
            &[&partitioned.sql()],
        )
        .await
        .map_err(|e| Error::db("finding the DEFAULT partition", e))?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// A predicate true for rows that some non-DEFAULT partition of `partitioned` accepts, built from
/// the partitions' own constraints (`false` when there are none). It names columns only, so it
/// applies to the source table as well.
/// The bounds of `partitioned`'s partitions as `pg_get_expr` shows them (`DEFAULT` included).
pub async fn partition_bounds(
    client: &impl tokio_postgres::GenericClient,
    partitioned: &QualifiedName,
) -> Result<Vec<String>> {
    Ok(client
        .query(
            "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i \
             JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::text::regclass",
            &[&partitioned.sql()],
        )
        .await
        .map_err(|e| Error::db("reading the partition bounds", e))?
        .into_iter()
        .filter_map(|r| r.get::<_, Option<String>>(0))
        .collect())
}

pub async fn partition_fit_predicate(
    client: &impl tokio_postgres::GenericClient,
    partitioned: &QualifiedName,
) -> Result<String> {
    let constraints: Vec<String> = client
        .query(
            "SELECT pg_get_partition_constraintdef(i.inhrelid) FROM pg_inherits i \
             JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = $1::text::regclass AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'",
            &[&partitioned.sql()],
        )
        .await
        .map_err(|e| Error::db("reading the partition bounds", e))?
        .into_iter()
        .filter_map(|r| r.get::<_, Option<String>>(0))
        .collect();
    Ok(if constraints.is_empty() {
        "false".to_string()
    } else {
        constraints
            .iter()
            .map(|c| format!("({c})"))
            .collect::<Vec<_>>()
            .join(" OR ")
    })
}
