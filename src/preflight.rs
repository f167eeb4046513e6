//! Preflight: every reason to refuse a migration, checked before anything is created.
//! `gather` reads the facts; `evaluate` (pure) turns them into verdicts with the fix for each.

use serde::Serialize;
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::pg::catalog::{self, ServerInfo, TableInfo};
use crate::pg::ident::QualifiedName;
use crate::spec::{PartitionBy, PartitionSpec};

/// What the new table is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// pgrepart creates it.
    Generate {
        name: QualifiedName,
        by: PartitionBy,
        partitions: Vec<PartitionSpec>,
    },
    /// The DBA created it (`--into`).
    Into(QualifiedName),
}

impl Target {
    pub fn name(&self) -> &QualifiedName {
        match self {
            Target::Generate { name, .. } | Target::Into(name) => name,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Facts {
    pub server: ServerInfo,
    pub table: Option<TableInfo>,
    pub can_replicate: bool,
    pub owns_table: bool,
    pub free_slots: i64,
    pub free_wal_senders: i64,
    /// Names (target table, partitions, old name) that are already taken by other relations.
    pub taken_names: Vec<String>,
    pub into: Option<TableInfo>,
    pub into_has_rows: bool,
    /// (column, rows with NULL) for partition-key columns that allow NULL.
    pub partition_key_nulls: Vec<(String, i64)>,
    /// An already partitioned source: its partitions (every level, schema.name).
    pub source_partitions: Vec<String>,
    /// An already partitioned source: leaf partitions whose changes logical replication cannot
    /// match by the source's key, each with the reason.
    pub leaves_not_replicable: Vec<String>,
    /// The partitioned table the source is itself a partition of (`schema.name`).
    pub partition_of: Option<String>,
    /// `--into`: the partitioned table's partition-key columns.
    pub into_partition_key: Vec<String>,
    /// What the run may do with foreign keys that reference the table (set by the caller).
    pub inbound_fks: InboundFkPolicy,
    /// `CREATE` grants the run needs and lacks, each as the GRANT that gives it.
    pub missing_grants: Vec<String>,
}

/// What the run may do with foreign keys onto the table (see `dependents`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InboundFkPolicy {
    /// `--drop-inbound-fks`.
    pub drop: bool,
    /// `--target` is another database: the referencing tables stay on the source, so no key can
    /// follow the table.
    pub cross_db: bool,
}

/// What the swap would do with each foreign key onto the table (pure), given the new table's key.
pub fn inbound_actions(
    facts: &Facts,
    target: &Target,
) -> Vec<(
    crate::dependents::fk::InboundFk,
    crate::dependents::fk::InboundAction,
)> {
    use crate::dependents::fk::{InboundAction, NewKey, inbound_action, inbound_definition};
    let Some(t) = &facts.table else {
        return Vec::new();
    };
    let source_key: Vec<String> = t.key_index().map(|k| k.columns.clone()).unwrap_or_default();
    let (primary_key, partition_key) = match target {
        Target::Generate { by, .. } => (
            crate::pg::ddl::target_primary_key(&source_key, by),
            by.columns.clone(),
        ),
        Target::Into(_) => (
            facts
                .into
                .as_ref()
                .and_then(|i| i.indexes.iter().find(|x| x.is_primary))
                .map(|x| x.columns.clone())
                .unwrap_or_default(),
            facts.into_partition_key.clone(),
        ),
    };
    let key = NewKey {
        primary_key,
        partition_key: partition_key
            .iter()
            .map(|c| {
                let ty = t.column(c).map(|c| c.type_sql.clone()).unwrap_or_default();
                (c.clone(), ty)
            })
            .collect(),
        server_major: facts.server.major(),
    };
    t.inbound_foreign_keys
        .iter()
        .map(|f| {
            let action = if facts.inbound_fks.cross_db {
                if facts.inbound_fks.drop {
                    InboundAction::LeftOnSource
                } else {
                    InboundAction::Refuse {
                        reason: "the table moves to another database; the key would stay in the source database, on the old table".into(),
                        recreate: format!(
                            "ALTER TABLE {} ADD CONSTRAINT {} {}",
                            f.table.sql(),
                            crate::pg::ident::quote_ident(&f.name),
                            inbound_definition(f, &f.columns, &t.name, &f.referenced)
                        ),
                    }
                }
            } else {
                inbound_action(f, &key, &t.name, facts.inbound_fks.drop)
            };
            (f.clone(), action)
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

fn pass(name: &'static str, detail: impl Into<String>) -> Check {
    Check {
        name,
        status: Status::Pass,
        detail: detail.into(),
        hint: None,
    }
}

fn fail(name: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Check {
    Check {
        name,
        status: Status::Fail,
        detail: detail.into(),
        hint: Some(hint.into()),
    }
}

fn warn(name: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Check {
    Check {
        name,
        status: Status::Warn,
        detail: detail.into(),
        hint: Some(hint.into()),
    }
}

pub async fn gather(
    client: &Client,
    table: &QualifiedName,
    target: &Target,
    old_name: &str,
) -> Result<Facts> {
    let server = catalog::server_info(client).await?;
    let info = catalog::table_info(client, table).await?;
    let row = client
        .query_one(
            "SELECT r.rolsuper OR r.rolreplication \
                    OR CASE WHEN to_regrole('rds_replication') IS NULL THEN false \
                            ELSE pg_has_role(current_user, to_regrole('rds_replication'), 'MEMBER') END, \
                    (current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots))::bigint, \
                    (current_setting('max_wal_senders')::int - (SELECT count(*) FROM pg_stat_replication))::bigint \
             FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await
        .map_err(|e| Error::db("reading the role's rights", e))?;
    let owns_table = match &info {
        Some(t) => client
            .query_one(
                "SELECT pg_has_role(current_user, $1::text::regrole, 'MEMBER')",
                &[&t.owner],
            )
            .await
            .map_err(|e| Error::db("reading the table's owner", e))?
            .get(0),
        None => false,
    };
    let mut wanted: Vec<QualifiedName> = vec![table.sibling(old_name)];
    if let Target::Generate {
        name, partitions, ..
    } = target
    {
        wanted.push(name.clone());
        wanted.extend(partitions.iter().map(|p| name.sibling(p.name.clone())));
    }
    let mut taken_names = Vec::new();
    for n in &wanted {
        if crate::pg::catalog::relation_exists(client, n).await? {
            taken_names.push(n.to_string());
        }
    }
    let mut partition_key_nulls = Vec::new();
    if let (Target::Generate { by, .. }, Some(t)) = (target, &info)
        && (t.relkind == 'r' || t.relkind == 'p')
    {
        for c in &by.columns {
            if t.column(c).is_some_and(|c| !c.not_null) {
                let n: i64 = client
                    .query_one(
                        &format!(
                            "SELECT count(*) FROM {} WHERE {} IS NULL",
                            table.sql(),
                            crate::pg::ident::quote_ident(c)
                        ),
                        &[],
                    )
                    .await
                    .map_err(|e| Error::db("counting NULLs in the partition key", e))?
                    .get(0);
                partition_key_nulls.push((c.clone(), n));
            }
        }
    }
    let (source_partitions, leaves_not_replicable) = match &info {
        Some(t) if t.relkind == 'p' => {
            let key: Vec<String> = t.key_index().map(|k| k.columns.clone()).unwrap_or_default();
            catalog::partition_tree_facts(client, t.oid, &key).await?
        }
        _ => (Vec::new(), Vec::new()),
    };
    let partition_of = match &info {
        Some(t) => client
            .query_one(
                "SELECT (SELECT pn.nspname::text || '.' || p.relname::text FROM pg_inherits i \
                 JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent \
                 JOIN pg_namespace pn ON pn.oid = p.relnamespace \
                 WHERE i.inhrelid = $1::oid AND c.relispartition)",
                &[&t.oid],
            )
            .await
            .map_err(|e| Error::db("checking whether the table is a partition", e))?
            .get(0),
        None => None,
    };
    let into_partition_key = match target {
        Target::Into(name) => catalog::partition_key_columns(client, name)
            .await?
            .unwrap_or_default(),
        Target::Generate { .. } => Vec::new(),
    };
    let (into, into_has_rows) = match target {
        Target::Into(name) => {
            let into = catalog::table_info(client, name).await?;
            let has_rows = match &into {
                Some(t) if t.relkind == 'p' => client
                    .query_one(
                        &format!("SELECT EXISTS (SELECT 1 FROM {})", name.sql()),
                        &[],
                    )
                    .await
                    .map_err(|e| Error::db("checking that the --into table is empty", e))?
                    .get(0),
                _ => false,
            };
            (into, has_rows)
        }
        Target::Generate { .. } => (None, false),
    };
    let mut missing_grants =
        missing_database_create(client, "the publication and schema pgrepart").await?;
    if let Target::Generate { name, .. } = target {
        let owner = info.as_ref().map(|t| t.owner.as_str());
        missing_grants.extend(missing_schema_create(client, &name.schema, owner).await?);
    }
    Ok(Facts {
        missing_grants,
        server,
        table: info,
        can_replicate: row.get(0),
        free_slots: row.get(1),
        free_wal_senders: row.get(2),
        owns_table,
        taken_names,
        into,
        into_has_rows,
        partition_key_nulls,
        source_partitions,
        leaves_not_replicable,
        partition_of,
        into_partition_key,
        inbound_fks: InboundFkPolicy::default(),
    })
}

/// Turns facts into verdicts, in the order a DBA would fix them.
pub fn evaluate(facts: &Facts, table_name: &QualifiedName, target: &Target) -> Vec<Check> {
    let mut checks = Vec::new();
    let s = &facts.server;
    checks.push(if s.major() >= 14 {
        pass("server version", format!("PostgreSQL {}", s.major()))
    } else {
        fail(
            "server version",
            format!("PostgreSQL {} is too old", s.major()),
            "pgrepart needs PostgreSQL 14 or newer",
        )
    });
    checks.push(if s.wal_level == "logical" {
        pass("wal_level", "logical")
    } else {
        fail(
            "wal_level",
            format!(
                "wal_level is {}, logical decoding needs logical",
                s.wal_level
            ),
            "run ALTER SYSTEM SET wal_level = logical; then restart the server",
        )
    });
    checks.push(if s.encoding == "UTF8" {
        pass("encoding", "UTF8")
    } else {
        fail(
            "encoding",
            format!("database encoding is {}", s.encoding),
            "pgrepart supports UTF8 databases only",
        )
    });
    checks.push(if facts.can_replicate {
        pass("replication rights", "the role may replicate (SUPERUSER, REPLICATION, or rds_replication)")
    } else {
        fail(
            "replication rights",
            "the connecting role has neither REPLICATION nor SUPERUSER (nor, on RDS and Aurora, rds_replication)",
            "ALTER ROLE <role> REPLICATION (on RDS and Aurora: GRANT rds_replication TO <role>), or connect as a role that has it",
        )
    });
    checks.push(if facts.free_slots > 0 && facts.free_wal_senders > 0 {
        pass(
            "replication slots",
            format!(
                "{} slot(s) and {} wal sender(s) free",
                facts.free_slots, facts.free_wal_senders
            ),
        )
    } else {
        fail(
            "replication slots",
            format!(
                "{} free replication slot(s), {} free wal sender(s)",
                facts.free_slots.max(0),
                facts.free_wal_senders.max(0)
            ),
            "raise max_replication_slots / max_wal_senders (restart needed) or drop unused slots",
        )
    });
    let Some(t) = &facts.table else {
        checks.push(fail(
            "table",
            format!("table {table_name} does not exist"),
            "check the --table name and the database in --source (use schema.name outside public)",
        ));
        return checks;
    };
    checks.push(match (t.relkind, t.persistence) {
        ('r', 'p') => pass(
            "table",
            format!("{} ({} rows estimated)", t.name, t.estimated_rows),
        ),
        ('p', 'p') => pass(
            "table",
            format!(
                "{} is partitioned ({} partition(s), {} rows estimated): its changes are published under its own name (publish_via_partition_root)",
                t.name,
                facts.source_partitions.len(),
                t.estimated_rows
            ),
        ),
        ('r', 'u') => fail(
            "table",
            format!("{} is UNLOGGED: logical replication cannot read it", t.name),
            "ALTER TABLE ... SET LOGGED first",
        ),
        ('r' | 'p', _) => fail(
            "table",
            format!("{} is a temporary table", t.name),
            "temporary tables cannot be migrated online",
        ),
        _ => fail(
            "table",
            format!("{} is not a table", t.name),
            "give a plain table to --table",
        ),
    });
    if let Some(parent) = &facts.partition_of {
        checks.push(fail(
            "table",
            format!("{} is a partition of {parent}", t.name),
            format!("pgrepart swaps whole tables: the new table would not be a partition of {parent}; repartition {parent} instead, or DETACH the partition first"),
        ));
    }
    checks.push(if facts.missing_grants.is_empty() {
        pass(
            "create rights",
            "the role may create the publication, the state schema and the new table",
        )
    } else {
        fail(
            "create rights",
            format!(
                "missing: {}",
                facts
                    .missing_grants
                    .iter()
                    .map(|g| g.split("  --").next().unwrap_or(g))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            format!(
                "as a superuser or the owner: {}",
                facts.missing_grants.join("; ")
            ),
        )
    });
    checks.push(if facts.owns_table {
        pass("ownership", format!("the role may act as the owner ({})", t.owner))
    } else {
        fail(
            "ownership",
            format!("the connecting role is not the owner of {} ({})", t.name, t.owner),
            format!("connect as {} (or a member of it): creating the publication and renaming the table need ownership", t.owner),
        )
    });
    match t.key_index() {
        Some(k) if t.replica_identity != 'n' => {
            checks.push(pass("replica identity", format!("rows are matched by ({}) from {}", k.columns.join(", "), k.name)))
        }
        _ => checks.push(fail(
            "replica identity",
            format!("{} has no primary key (or replica identity index) to match rows by", t.name),
            "add a primary key, or ALTER TABLE ... REPLICA IDENTITY USING INDEX <unique index on NOT NULL columns>",
        )),
    }
    if t.relkind == 'p' {
        checks.push(if facts.leaves_not_replicable.is_empty() {
            warn(
                "partitions",
                format!("every partition of {} publishes its changes with the key", t.name),
                "during the migration, do not TRUNCATE, DETACH, ATTACH or DROP single partitions: logical replication \
                 (publish_via_partition_root) does not send those, so the new table would not see them (TRUNCATE of the whole table is applied)",
            )
        } else {
            fail(
                "partitions",
                format!(
                    "partitions whose UPDATEs and DELETEs cannot be matched by the key: {}",
                    facts.leaves_not_replicable.join("; ")
                ),
                "give each of them a primary key on the table's key, or ALTER TABLE <partition> REPLICA IDENTITY FULL",
            )
        });
    }
    let inbound = inbound_actions(facts, target);
    let refused: Vec<String> = inbound
        .iter()
        .filter(|(_, a)| matches!(a, crate::dependents::fk::InboundAction::Refuse { .. }))
        .map(|(f, a)| crate::dependents::fk::inbound_report(f, a))
        .collect();
    checks.push(if inbound.is_empty() {
        pass("foreign keys", "no foreign key references the table")
    } else if refused.is_empty() {
        pass(
            "foreign keys",
            inbound
                .iter()
                .map(|(f, a)| crate::dependents::fk::inbound_report(f, a))
                .collect::<Vec<_>>()
                .join("; "),
        )
    } else {
        fail(
            "foreign keys",
            refused.join("; "),
            "a foreign key cannot point at the partitioned table through the old key alone: give the referencing table the partition-key column(s) (it is then recreated onto the new key at the swap), or pass --drop-inbound-fks",
        )
    });
    // Rules rewrite the application's writes before they reach the table. Recreated on the new
    // table they could behave differently (partition routing, ON CONFLICT restrictions), and left
    // on the old one they would silently stop applying: the DBA decides, before the migration.
    checks.push(if t.rules.is_empty() {
        pass("rules", "no rewrite rules on the table")
    } else {
        fail(
            "rules",
            format!("rewrite rule(s) on the table: {}", t.rules.join(", ")),
            format!(
                "pgrepart does not carry rules: save them (SELECT pg_get_ruledef(oid) FROM pg_rewrite WHERE ev_class = '{}'::regclass), \
                 DROP RULE ... ON {} before the migration, and recreate them on the new table after the swap",
                t.name.sql().replace('\'', "''"),
                t.name.sql()
            ),
        )
    });
    checks.push(if facts.taken_names.is_empty() {
        pass(
            "names",
            "the new table, partition and old-table names are free",
        )
    } else {
        let of_source: Vec<&str> = facts
            .taken_names
            .iter()
            .filter(|n| facts.source_partitions.contains(n))
            .map(String::as_str)
            .collect();
        let listed: Vec<String> = facts
            .taken_names
            .iter()
            .map(|n| {
                if of_source.contains(&n.as_str()) {
                    format!("{n} (a partition of the source table)")
                } else {
                    n.clone()
                }
            })
            .collect();
        fail(
            "names",
            format!("already in use: {}", listed.join(", ")),
            if of_source.is_empty() {
                "choose other names (--old-name, partition names) or remove those relations"
            } else {
                "the source's partitions keep their names after the swap: name the new partitions differently \
                 (--partition NAME=..., or --no-default when the clash is <table>_default)"
            },
        )
    });
    match target {
        Target::Generate { by, .. } => {
            let missing: Vec<&str> = by
                .columns
                .iter()
                .filter(|c| t.column(c).is_none())
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                let have: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
                checks.push(fail(
                    "partition key",
                    format!(
                        "column(s) {} do not exist in {}",
                        missing.join(", "),
                        t.name
                    ),
                    format!("partition by one of its columns: {}", have.join(", ")),
                ));
            } else if let Some(generated) = by
                .columns
                .iter()
                .find(|c| t.column(c).is_some_and(|c| c.generated.is_some()))
            {
                checks.push(fail(
                    "partition key",
                    format!("{generated} is a generated column"),
                    "partition by a stored, non-generated column",
                ));
            } else {
                checks.push(pass("partition key", by.sql()));
                checks.extend(partition_key_null_checks(&facts.partition_key_nulls, t, by));
                if let Some(k) = t.key_index()
                    && by.columns.iter().any(|c| !k.columns.contains(c))
                {
                    checks.push(warn(
                        "uniqueness",
                        format!(
                            "the new primary key is ({}): ({}) alone is no longer enforced unique",
                            crate::pg::ddl::target_primary_key(&k.columns, by).join(", "),
                            k.columns.join(", ")
                        ),
                        format!(
                            "application upserts ON CONFLICT ({}) must name the new key",
                            k.columns.join(", ")
                        ),
                    ));
                }
            }
        }
        Target::Into(name) => checks.push(into_check(facts, t, name)),
    }
    let generated: Vec<&str> = t
        .columns
        .iter()
        .filter(|c| c.generated.is_some())
        .map(|c| c.name.as_str())
        .collect();
    if !generated.is_empty() {
        checks.push(warn(
            "generated columns",
            format!(
                "{} {} generated: not replicated, recomputed by the new table",
                generated.join(", "),
                if generated.len() == 1 { "is" } else { "are" }
            ),
            "nothing to do unless the expression calls volatile functions (their values would differ)",
        ));
    }
    if let Target::Generate { name, by, .. } = target {
        let demoted: Vec<String> = crate::pg::ddl::secondary_indexes(t, name, by)
            .into_iter()
            .filter(|i| i.warning.is_some())
            .map(|i| i.source_index)
            .collect();
        if !demoted.is_empty() {
            checks.push(warn(
                "unique indexes",
                format!(
                    "unique index(es) {} lack the partition key ({}): rebuilt as plain indexes, their uniqueness is no longer enforced",
                    demoted.join(", "),
                    by.columns.join(", ")
                ),
                "enforce it in the application, or add the partition key to the index and to ON CONFLICT clauses",
            ));
        }
    }
    checks
}

/// A nullable partition-key column: the new primary key includes it, which makes it NOT NULL.
fn partition_key_null_checks(
    nulls: &[(String, i64)],
    t: &TableInfo,
    by: &PartitionBy,
) -> Vec<Check> {
    let key = t
        .key_index()
        .map(|k| crate::pg::ddl::target_primary_key(&k.columns, by).join(", "))
        .unwrap_or_default();
    nulls
        .iter()
        .map(|(c, n)| {
            if *n > 0 {
                fail(
                    "partition key nulls",
                    format!("{n} row(s) have NULL {c}; the new primary key ({key}) makes {c} NOT NULL, so they cannot be copied"),
                    format!("set {c} on those rows, then ALTER TABLE {} ALTER COLUMN {} SET NOT NULL", t.name.sql(), crate::pg::ident::quote_ident(c)),
                )
            } else {
                warn(
                    "partition key nulls",
                    format!("{c} allows NULL; the new primary key ({key}) makes it NOT NULL, and a NULL written during the migration stops it"),
                    format!("ALTER TABLE {} ALTER COLUMN {} SET NOT NULL first", t.name.sql(), crate::pg::ident::quote_ident(c)),
                )
            }
        })
        .collect()
}

/// Rows that fall in no non-DEFAULT partition (`plan` counts them by creating the target in a
/// transaction it rolls back).
pub fn rows_fit_check(outside: i64, has_default: bool) -> Check {
    match (outside, has_default) {
        (0, _) => pass("rows fit", "every existing row fits a partition"),
        (n, true) => warn(
            "rows fit",
            format!("{n} existing row(s) fit no partition but the DEFAULT one"),
            "fine if intended; otherwise add partitions for their values",
        ),
        (n, false) => fail(
            "rows fit",
            format!("{n} existing row(s) fit no partition"),
            "add partitions for their values, or a DEFAULT partition",
        ),
    }
}

fn into_check(facts: &Facts, source: &TableInfo, name: &QualifiedName) -> Check {
    let Some(into) = &facts.into else {
        return fail(
            "--into table",
            format!("{name} does not exist"),
            "create the partitioned table first, or use --partition-by",
        );
    };
    if into.relkind != 'p' {
        return fail(
            "--into table",
            format!("{name} is not a partitioned table"),
            "create it with PARTITION BY, or use --partition-by",
        );
    }
    if into.name.schema != source.name.schema {
        return fail(
            "--into table",
            format!("{name} is in another schema than {}", source.name),
            "create the partitioned table in the same schema as the source table",
        );
    }
    let mut problems = Vec::new();
    for c in source.replicated_columns() {
        match into.column(&c.name) {
            None => problems.push(format!("column {} is missing", c.name)),
            Some(ic) if ic.type_sql != c.type_sql => problems.push(format!(
                "column {} is {} but the source has {}",
                c.name, ic.type_sql, c.type_sql
            )),
            Some(_) => {}
        }
    }
    for ic in &into.columns {
        if source.column(&ic.name).is_none() {
            problems.push(format!("column {} does not exist in the source", ic.name));
        }
    }
    if !problems.is_empty() {
        return fail(
            "--into table",
            format!(
                "{name} does not match {}: {}",
                source.name,
                problems.join("; ")
            ),
            "make the columns' names and types match the source table",
        );
    }
    if facts.into_has_rows {
        return fail(
            "--into table",
            format!("{name} is not empty"),
            "pgrepart fills the target itself: TRUNCATE it first",
        );
    }
    pass(
        "--into table",
        format!("{name} is partitioned, empty, and matches the source's columns"),
    )
}

/// The first failed check as an error, or Ok.
pub fn refuse_on_failure(checks: &[Check]) -> Result<()> {
    match checks.iter().find(|c| c.status == Status::Fail) {
        None => Ok(()),
        Some(c) => {
            let mut err = Error::refused(format!("refused: {}", c.detail));
            if let Some(h) = &c.hint {
                err = err.with_hint(h.clone());
            }
            Err(err)
        }
    }
}

/// Cross-database (`--target`): the target-side facts come from the target database. Replaces
/// `facts.taken_names` (the old name is looked up on the source; the new table, its partitions
/// and the final name in the target) and the `--into` facts, and returns the checks only the
/// target can answer: server version, encoding, and whether every column type exists there.
pub async fn gather_cross(
    facts: &mut Facts,
    source: &Client,
    target_db: &Client,
    table: &QualifiedName,
    target: &Target,
    old_name: &str,
) -> Result<Vec<Check>> {
    let mut taken = Vec::new();
    if name_taken(source, &table.sibling(old_name)).await? {
        taken.push(format!("{} (on the source)", table.sibling(old_name)));
    }
    let mut wanted = vec![target.name().sibling(table.name.clone())];
    if let Target::Generate {
        name, partitions, ..
    } = target
    {
        wanted.push(name.clone());
        wanted.extend(partitions.iter().map(|p| name.sibling(p.name.clone())));
    }
    for n in wanted {
        if name_taken(target_db, &n).await? {
            taken.push(format!("{n} (on the target)"));
        }
    }
    facts.taken_names = taken;
    let mut grants = missing_database_create(source, "the publication").await?;
    grants.extend(
        missing_database_create(target_db, "schema pgrepart, the migration's state").await?,
    );
    if let Target::Generate { name, .. } = target {
        let owner = facts.table.as_ref().map(|t| t.owner.clone());
        grants.extend(missing_schema_create(target_db, &name.schema, owner.as_deref()).await?);
    }
    facts.missing_grants = grants;
    if let Target::Into(name) = target {
        facts.into = catalog::table_info(target_db, name).await?;
        facts.into_has_rows = match &facts.into {
            Some(t) if t.relkind == 'p' => target_db
                .query_one(
                    &format!("SELECT EXISTS (SELECT 1 FROM {})", name.sql()),
                    &[],
                )
                .await
                .map_err(|e| Error::db("checking that the --into table is empty", e))?
                .get(0),
            _ => false,
        };
    }
    let server = catalog::server_info(target_db).await?;
    let mut missing_types = Vec::new();
    if let Some(t) = &facts.table {
        for c in t.replicated_columns() {
            let found: bool = target_db
                .query_one("SELECT to_regtype($1) IS NOT NULL", &[&c.type_sql])
                .await
                .map_err(|e| Error::db("checking the column types on the target", e))?
                .get(0);
            if !found {
                missing_types.push(format!("{} {}", c.name, c.type_sql));
            }
        }
    }
    Ok(cross_checks(&server, &missing_types))
}

/// `GRANT CREATE ON DATABASE` for the connecting role, when it lacks it (`for_what` says why).
async fn missing_database_create(client: &Client, for_what: &str) -> Result<Vec<String>> {
    let row = client
        .query_one(
            "SELECT has_database_privilege(current_database(), 'CREATE'), quote_ident(current_database()), quote_ident(current_user)",
            &[],
        )
        .await
        .map_err(|e| Error::db("reading the role's grants on the database", e))?;
    Ok(if row.get(0) {
        Vec::new()
    } else {
        vec![format!(
            "GRANT CREATE ON DATABASE {} TO {}  -- {for_what}",
            row.get::<_, String>(1),
            row.get::<_, String>(2)
        )]
    })
}

/// The grants on `schema` that creating the new table there needs and that are missing: CREATE
/// for the connecting role, and for `owner` (the table's owner, who will own the new table).
async fn missing_schema_create(
    client: &Client,
    schema: &str,
    owner: Option<&str>,
) -> Result<Vec<String>> {
    let row = client
        .query_one(
            "SELECT to_regnamespace(quote_ident($1)) IS NULL, \
                    to_regnamespace(quote_ident($1)) IS NULL OR (has_schema_privilege($1, 'USAGE') AND has_schema_privilege($1, 'CREATE')), \
                    $2::text IS NULL OR to_regnamespace(quote_ident($1)) IS NULL OR to_regrole(quote_ident($2)) IS NULL \
                      OR has_schema_privilege(to_regrole(quote_ident($2)), to_regnamespace(quote_ident($1)), 'CREATE'), \
                    quote_ident(current_user), quote_ident($1), quote_ident($2)",
            &[&schema, &owner],
        )
        .await
        .map_err(|e| Error::db("reading the role's grants on the schema", e))?;
    let (absent, mine, owners): (bool, bool, bool) = (row.get(0), row.get(1), row.get(2));
    let (me, schema_sql, owner_sql): (String, String, Option<String>) =
        (row.get(3), row.get(4), row.get(5));
    let mut out = Vec::new();
    if absent {
        return Ok(out);
    }
    if !mine {
        out.push(format!(
            "GRANT USAGE, CREATE ON SCHEMA {schema_sql} TO {me}  -- the new table and its partitions"
        ));
    }
    if let (false, Some(o)) = (owners, owner_sql) {
        out.push(format!(
            "GRANT CREATE ON SCHEMA {schema_sql} TO {o}  -- the table's owner, who will own the new table"
        ));
    }
    Ok(out)
}

async fn name_taken(client: &Client, n: &QualifiedName) -> Result<bool> {
    Ok(client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&n.sql()])
        .await
        .map_err(|e| Error::db("checking names", e))?
        .get(0))
}

/// The target database's own verdicts (pure).
pub fn cross_checks(target: &ServerInfo, missing_types: &[String]) -> Vec<Check> {
    let mut checks = vec![if target.major() >= 14 {
        pass(
            "target server",
            format!("PostgreSQL {} ({})", target.major(), target.database),
        )
    } else {
        fail(
            "target server",
            format!("the target is PostgreSQL {}", target.major()),
            "pgrepart needs PostgreSQL 14 or newer on the target too",
        )
    }];
    checks.push(if target.encoding == "UTF8" {
        pass("target encoding", "UTF8")
    } else {
        fail(
            "target encoding",
            format!("the target database's encoding is {}", target.encoding),
            "pgrepart supports UTF8 databases only",
        )
    });
    checks.push(if missing_types.is_empty() {
        pass("target types", "every column type exists on the target")
    } else {
        fail(
            "target types",
            format!(
                "these columns' types do not exist on the target: {}",
                missing_types.join(", ")
            ),
            "create the types (extensions, enums, domains) in the target database first",
        )
    });
    checks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::ddl::tests::orders_flat;

    fn facts() -> Facts {
        Facts {
            server: ServerInfo {
                version_num: 150004,
                wal_level: "logical".into(),
                encoding: "UTF8".into(),
                database: "shop".into(),
                database_oid: 16384,
            },
            table: Some(orders_flat()),
            can_replicate: true,
            owns_table: true,
            free_slots: 5,
            free_wal_senders: 5,
            taken_names: vec![],
            into: None,
            into_has_rows: false,
            partition_key_nulls: vec![],
            source_partitions: vec![],
            leaves_not_replicable: vec![],
            partition_of: None,
            into_partition_key: vec![],
            inbound_fks: InboundFkPolicy::default(),
            missing_grants: vec![],
        }
    }

    fn generate(by: &str) -> Target {
        Target::Generate {
            name: QualifiedName::new("public", "orders_flat_repart"),
            by: PartitionBy::parse(by).unwrap(),
            partitions: vec![PartitionSpec::parse("d=DEFAULT").unwrap()],
        }
    }

    fn failures(f: &Facts, t: &Target) -> Vec<&'static str> {
        evaluate(f, &QualifiedName::new("public", "orders_flat"), t)
            .into_iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| c.name)
            .collect()
    }

    #[test]
    fn the_seed_table_passes_with_a_warning_about_uniqueness() {
        let checks = evaluate(
            &facts(),
            &QualifiedName::new("public", "orders_flat"),
            &generate("LIST (region)"),
        );
        assert!(
            checks.iter().all(|c| c.status != Status::Fail),
            "{checks:#?}"
        );
        let w = checks.iter().find(|c| c.name == "uniqueness").unwrap();
        assert_eq!(w.status, Status::Warn);
        assert!(w.detail.contains("(id, region)"));
        assert!(refuse_on_failure(&checks).is_ok());
    }

    #[test]
    fn each_broken_fact_is_refused_with_a_hint() {
        let t = generate("LIST (region)");
        let mut f = facts();
        f.server.wal_level = "replica".into();
        assert_eq!(failures(&f, &t), vec!["wal_level"]);
        let err = refuse_on_failure(&evaluate(
            &f,
            &QualifiedName::new("public", "orders_flat"),
            &t,
        ))
        .unwrap_err();
        assert!(err.to_string().contains("wal_level = logical"), "{err}");

        let mut f = facts();
        f.server.version_num = 130010;
        assert_eq!(failures(&f, &t), vec!["server version"]);

        let mut f = facts();
        f.table = None;
        assert_eq!(failures(&f, &t), vec!["table"]);

        let mut f = facts();
        f.table.as_mut().unwrap().indexes.retain(|i| !i.is_primary);
        assert_eq!(failures(&f, &t), vec!["replica identity"]);

        let mut f = facts();
        let items = crate::dependents::fk::tests::order_items_fk(false);
        f.table.as_mut().unwrap().inbound_foreign_keys = vec![items.clone()];
        assert_eq!(failures(&f, &t), vec!["foreign keys"]);
        f.inbound_fks.drop = true;
        assert!(failures(&f, &t).is_empty());
        let mut f = facts();
        f.table.as_mut().unwrap().inbound_foreign_keys =
            vec![crate::dependents::fk::tests::order_items_fk(true)];
        assert!(failures(&f, &t).is_empty());
        f.inbound_fks.cross_db = true;
        assert_eq!(failures(&f, &t), vec!["foreign keys"]);

        let mut f = facts();
        f.table.as_mut().unwrap().rules = vec!["log_updates".into()];
        assert_eq!(failures(&f, &t), vec!["rules"]);

        let f = facts();
        assert_eq!(
            failures(&f, &generate("LIST (regoin)")),
            vec!["partition key"]
        );

        let mut f = facts();
        f.taken_names = vec!["public.orders_flat_old".into()];
        assert_eq!(failures(&f, &t), vec!["names"]);

        let mut f = facts();
        f.can_replicate = false;
        f.free_slots = 0;
        assert_eq!(
            failures(&f, &t),
            vec!["replication rights", "replication slots"]
        );
    }

    #[test]
    fn into_targets_must_be_partitioned_matching_and_empty() {
        let name = QualifiedName::new("public", "orders_list");
        let target = Target::Into(name.clone());
        let mut into = orders_flat();
        into.name = name.clone();
        into.relkind = 'p';
        let mut f = facts();
        f.into = Some(into.clone());
        assert!(failures(&f, &target).is_empty());

        f.into_has_rows = true;
        assert_eq!(failures(&f, &target), vec!["--into table"]);

        let mut f = facts();
        let mut wrong = into.clone();
        wrong.columns[4].type_sql = "numeric".into();
        f.into = Some(wrong);
        let checks = evaluate(&f, &QualifiedName::new("public", "orders_flat"), &target);
        let c = checks.iter().find(|c| c.name == "--into table").unwrap();
        assert_eq!(c.status, Status::Fail);
        assert!(
            c.detail
                .contains("amount is numeric but the source has numeric(10,2)"),
            "{}",
            c.detail
        );

        let mut f = facts();
        let mut plain = into;
        plain.relkind = 'r';
        f.into = Some(plain);
        assert_eq!(failures(&f, &target), vec!["--into table"]);
    }

    #[test]
    fn nullable_partition_keys_warn_and_null_rows_fail() {
        let t = generate("LIST (region)");
        let mut f = facts();
        f.partition_key_nulls = vec![("region".into(), 0)];
        let checks = evaluate(&f, &QualifiedName::new("public", "orders_flat"), &t);
        let c = checks
            .iter()
            .find(|c| c.name == "partition key nulls")
            .unwrap();
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.contains("(id, region)"), "{}", c.detail);
        f.partition_key_nulls = vec![("region".into(), 3)];
        assert_eq!(failures(&f, &t), vec!["partition key nulls"]);
    }

    #[test]
    fn generated_columns_and_demoted_unique_indexes_are_named() {
        let mut f = facts();
        f.table
            .as_mut()
            .unwrap()
            .columns
            .push(crate::pg::catalog::ColumnInfo {
                name: "total".into(),
                type_sql: "numeric".into(),
                generated: Some("(amount * 2)".into()),
                ..Default::default()
            });
        let checks = evaluate(
            &f,
            &QualifiedName::new("public", "orders_flat"),
            &generate("LIST (region)"),
        );
        let g = checks
            .iter()
            .find(|c| c.name == "generated columns")
            .unwrap();
        assert_eq!(g.status, Status::Warn);
        assert!(g.detail.starts_with("total is generated"), "{}", g.detail);
        let u = checks.iter().find(|c| c.name == "unique indexes").unwrap();
        assert!(u.detail.contains("orders_flat_ref_key"), "{}", u.detail);
        let by_customer = evaluate(
            &facts(),
            &QualifiedName::new("public", "orders_flat"),
            &generate("HASH (customer_id)"),
        );
        assert!(by_customer.iter().all(|c| c.name != "unique indexes"));
    }

    #[test]
    fn rows_outside_partitions_are_counted() {
        assert_eq!(rows_fit_check(0, false).status, Status::Pass);
        assert_eq!(rows_fit_check(5, true).status, Status::Warn);
        let c = rows_fit_check(5, false);
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains('5'));
    }

    fn partitioned() -> Facts {
        let mut f = facts();
        f.table.as_mut().unwrap().relkind = 'p';
        f.source_partitions = vec![
            "public.orders_flat_us".into(),
            "public.orders_flat_other".into(),
        ];
        f
    }

    #[test]
    fn an_already_partitioned_table_is_accepted_via_the_partition_root() {
        let f = partitioned();
        let t = generate("RANGE (order_date)");
        assert!(failures(&f, &t).is_empty(), "{:?}", failures(&f, &t));
        let checks = evaluate(&f, &QualifiedName::new("public", "orders_flat"), &t);
        let table = checks.iter().find(|c| c.name == "table").unwrap();
        assert_eq!(table.status, Status::Pass);
        assert!(
            table.detail.contains("partitioned (2 partition(s)"),
            "{}",
            table.detail
        );
        assert!(table.detail.contains("publish_via_partition_root"));
        let parts = checks.iter().find(|c| c.name == "partitions").unwrap();
        assert_eq!(parts.status, Status::Warn);
        assert!(parts.hint.as_deref().unwrap().contains("TRUNCATE"));
        // A plain table has no such check.
        let plain = evaluate(&facts(), &QualifiedName::new("public", "orders_flat"), &t);
        assert!(plain.iter().all(|c| c.name != "partitions"));
    }

    #[test]
    fn a_partitioned_table_with_a_leaf_lacking_an_identity_is_refused() {
        let mut f = partitioned();
        f.leaves_not_replicable =
            vec!["public.orders_flat_other: no primary key or replica identity index".into()];
        let t = generate("HASH (id)");
        assert_eq!(failures(&f, &t), vec!["partitions"]);
        let c = evaluate(&f, &QualifiedName::new("public", "orders_flat"), &t)
            .into_iter()
            .find(|c| c.name == "partitions")
            .unwrap();
        assert!(
            c.detail.contains("public.orders_flat_other"),
            "{}",
            c.detail
        );
        assert!(c.hint.unwrap().contains("REPLICA IDENTITY FULL"));
    }

    #[test]
    fn a_new_name_taken_by_a_partition_of_the_source_says_so() {
        let mut f = partitioned();
        f.taken_names = vec![
            "public.orders_flat_other".into(),
            "public.orders_flat_old".into(),
        ];
        let t = generate("RANGE (order_date)");
        assert_eq!(failures(&f, &t), vec!["names"]);
        let c = evaluate(&f, &QualifiedName::new("public", "orders_flat"), &t)
            .into_iter()
            .find(|c| c.name == "names")
            .unwrap();
        assert!(
            c.detail
                .contains("public.orders_flat_other (a partition of the source table)"),
            "{}",
            c.detail
        );
        assert!(!c.detail.contains("orders_flat_old (a partition"));
        assert!(c.hint.unwrap().contains("--partition NAME="));
    }

    #[test]
    fn a_partition_of_another_table_is_refused() {
        let mut f = partitioned();
        f.partition_of = Some("public.orders_all".into());
        let checks = evaluate(
            &f,
            &QualifiedName::new("public", "orders_flat"),
            &generate("HASH (id)"),
        );
        let c = checks
            .iter()
            .find(|c| c.name == "table" && c.status == Status::Fail)
            .unwrap();
        assert!(
            c.detail.contains("is a partition of public.orders_all"),
            "{}",
            c.detail
        );
        assert!(c.hint.as_deref().unwrap().contains("DETACH"));
    }

    #[test]
    fn a_temporary_partitioned_table_is_refused() {
        let mut f = partitioned();
        f.table.as_mut().unwrap().persistence = 't';
        assert_eq!(failures(&f, &generate("LIST (region)")), vec!["table"]);
    }
}
