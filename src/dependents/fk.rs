//! Foreign keys at the swap (pure): what the swap's transaction does with each foreign key of
//! the table (outbound) and each one that references it (inbound), and what is left for after
//! the commit. See the module above for why this order is sound.

use serde::{Deserialize, Serialize};

use crate::pg::ident::{QualifiedName, quote_ident, quote_literal};

/// A foreign key of the table onto another table, as `pg_get_constraintdef` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboundFk {
    pub name: String,
    /// `FOREIGN KEY (...) REFERENCES ... [MATCH FULL] [ON ...] [DEFERRABLE ...]`, without `NOT VALID`.
    pub definition: String,
    /// The referenced table.
    pub referenced: QualifiedName,
    /// Whether the old table's constraint is validated (a NOT VALID one is carried NOT VALID).
    pub validated: bool,
    /// The constraint's comment, set again once the key is on the partitioned table.
    #[serde(default)]
    pub comment: Option<String>,
}

/// A foreign key of another table onto this one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundFk {
    /// The constraint's `pg_constraint.oid` (what the inventory matches it by).
    #[serde(default)]
    pub oid: u32,
    pub name: String,
    /// The referencing table.
    pub table: QualifiedName,
    /// The referencing table is partitioned.
    pub table_partitioned: bool,
    /// Referencing columns, in the key's order.
    pub columns: Vec<String>,
    /// The columns of this table they reference, in the same order.
    pub referenced: Vec<String>,
    /// (name, type) of every column of the referencing table.
    pub table_columns: Vec<(String, String)>,
    /// `pg_constraint.confupdtype`, `confdeltype`, `confmatchtype`.
    pub on_update: char,
    pub on_delete: char,
    pub match_type: char,
    pub deferrable: bool,
    pub deferred: bool,
    pub validated: bool,
    /// `pg_get_constraintdef` of the constraint as it is.
    pub definition: String,
}

impl InboundFk {
    pub fn label(&self) -> String {
        format!("{} on {}", self.name, self.table)
    }
}

/// What happens to an inbound foreign key at the swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundAction {
    /// Recreated onto the new primary key: referencing `columns` onto `referenced` (the old
    /// columns plus the partition key).
    Composite {
        columns: Vec<String>,
        referenced: Vec<String>,
    },
    /// Dropped in the swap's transaction (`--drop-inbound-fks`); `recreate` is what would
    /// recreate it once the referencing table carries the partition key.
    Drop { reason: String, recreate: String },
    /// The run refuses (no `--drop-inbound-fks`).
    Refuse { reason: String, recreate: String },
    /// Across databases with `--drop-inbound-fks`: left as it is in the source database,
    /// referencing the old table there.
    LeftOnSource,
}

/// The facts about the new table an inbound key is judged by.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewKey {
    /// The new table's primary key columns (the old key plus the partition key).
    pub primary_key: Vec<String>,
    /// The partition-key columns, with their types.
    pub partition_key: Vec<(String, String)>,
    /// The PostgreSQL major the swap runs on.
    pub server_major: u32,
}

fn action_sql(code: char) -> &'static str {
    match code {
        'r' => "RESTRICT",
        'c' => "CASCADE",
        'n' => "SET NULL",
        'd' => "SET DEFAULT",
        _ => "NO ACTION",
    }
}

fn columns_sql(columns: &[String]) -> String {
    columns
        .iter()
        .map(|c| quote_ident(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `FOREIGN KEY (columns) REFERENCES table (referenced) ...` keeping the key's MATCH kind,
/// actions and deferrability.
pub fn inbound_definition(
    fk: &InboundFk,
    columns: &[String],
    table: &QualifiedName,
    referenced: &[String],
) -> String {
    let mut s = format!(
        "FOREIGN KEY ({}) REFERENCES {} ({})",
        columns_sql(columns),
        table.sql(),
        columns_sql(referenced)
    );
    if fk.match_type == 'f' {
        s.push_str(" MATCH FULL");
    }
    s.push_str(&format!(
        " ON UPDATE {} ON DELETE {}",
        action_sql(fk.on_update),
        action_sql(fk.on_delete)
    ));
    if fk.deferrable {
        s.push_str(if fk.deferred {
            " DEFERRABLE INITIALLY DEFERRED"
        } else {
            " DEFERRABLE"
        });
    }
    s
}

/// Decides what the swap does with an inbound key onto `final_name` (pure). A key is recreated
/// onto the new primary key when it references the old key's columns, the referencing table has
/// every partition-key column the key lacks (same name and type), and widening it by those
/// columns keeps its meaning: not with `SET NULL`/`SET DEFAULT` actions (they would reset the
/// referencing table's partition-key column too) nor `MATCH FULL` (a row with a NULL key and a
/// set partition-key column would become a violation), and not on a partitioned referencing
/// table before PostgreSQL 18 (it cannot take a NOT VALID foreign key, so adding it would scan
/// under the swap's lock).
pub fn inbound_action(
    fk: &InboundFk,
    key: &NewKey,
    final_name: &QualifiedName,
    drop_allowed: bool,
) -> InboundAction {
    let extra: Vec<&(String, String)> = key
        .partition_key
        .iter()
        .filter(|(c, _)| !fk.referenced.contains(c))
        .collect();
    let mut columns = fk.columns.clone();
    let mut referenced = fk.referenced.clone();
    for (c, _) in &extra {
        columns.push(c.clone());
        referenced.push(c.clone());
    }
    let recreate = format!(
        "ALTER TABLE {} ADD CONSTRAINT {} {}",
        fk.table.sql(),
        quote_ident(&fk.name),
        inbound_definition(fk, &columns, final_name, &referenced)
    );
    let mut covered: Vec<&String> = referenced.iter().collect();
    covered.sort();
    covered.dedup();
    let mut pk: Vec<&String> = key.primary_key.iter().collect();
    pk.sort();
    pk.dedup();
    let missing: Vec<String> = extra
        .iter()
        .filter(|(c, ty)| !fk.table_columns.iter().any(|(n, t)| n == c && t == ty))
        .map(|(c, ty)| format!("{c} {ty}"))
        .collect();
    let reason = if covered != pk || covered.len() != referenced.len() {
        Some(format!(
            "it references ({}), not the new primary key ({}) less its partition-key columns",
            fk.referenced.join(", "),
            key.primary_key.join(", ")
        ))
    } else if !missing.is_empty() {
        Some(format!(
            "{} has no column {} to carry the partition key",
            fk.table,
            missing.join(", ")
        ))
    } else if !extra.is_empty()
        && (matches!(fk.on_delete, 'n' | 'd') || matches!(fk.on_update, 'n' | 'd'))
    {
        Some("its SET NULL / SET DEFAULT action would reset the partition-key column too".into())
    } else if !extra.is_empty() && fk.match_type == 'f' {
        Some("MATCH FULL over the partition-key column would refuse rows it accepts today".into())
    } else if fk.table_partitioned && key.server_major < 18 {
        Some(format!(
            "{} is partitioned, and PostgreSQL {} cannot add a NOT VALID foreign key to it without a scan under the swap's lock",
            fk.table, key.server_major
        ))
    } else {
        None
    };
    match reason {
        None => InboundAction::Composite {
            columns,
            referenced,
        },
        Some(reason) if drop_allowed => InboundAction::Drop { reason, recreate },
        Some(reason) => InboundAction::Refuse { reason, recreate },
    }
}

/// One line for `plan` and `run` saying what happens to an inbound key.
pub fn inbound_report(fk: &InboundFk, action: &InboundAction) -> String {
    match action {
        InboundAction::Composite {
            columns,
            referenced,
        } => format!(
            "foreign key {} recreated at the swap as ({}) -> ({}) onto the new primary key (NOT VALID in the swap, validated right after it){}",
            fk.label(),
            columns.join(", "),
            referenced.join(", "),
            if fk.on_update == 'c' {
                ""
            } else {
                "; ON UPDATE is not CASCADE, so changing the partition key of a referenced row is then refused"
            }
        ),
        InboundAction::Drop { reason, recreate } => format!(
            "foreign key {} is dropped at the swap (--drop-inbound-fks: {reason}); once {} carries the partition key: {recreate}",
            fk.label(),
            fk.table
        ),
        InboundAction::LeftOnSource => format!(
            "foreign key {} stays in the source database, referencing the old table (--drop-inbound-fks: the table moves to another database)",
            fk.label()
        ),
        InboundAction::Refuse { reason, recreate } => format!(
            "foreign key {} cannot be kept ({reason}): give {} the partition-key column(s) and it is recreated onto the new key, or pass --drop-inbound-fks to drop it at the swap and recreate it later with: {recreate}",
            fk.label(),
            fk.table
        ),
    }
}

/// One statement to run after the swap has committed, with the name of the constraint it
/// belongs to: when a step fails for good (rows violate the key), the later steps of the same
/// constraint are dropped with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostSwapStep {
    /// e.g. `foreign key orders_flat_customer_id_fkey on public.orders_flat`.
    pub constraint: String,
    /// What this step does, for the run's output.
    pub what: String,
    pub sql: String,
}

/// What the swap does with the foreign keys: `statements` run in its transaction after the
/// renames; `post` after its commit, in order; `report` says what was done.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FkSwap {
    pub statements: Vec<String>,
    pub post: Vec<PostSwapStep>,
    pub report: Vec<String>,
    pub not_carried: Vec<String>,
}

/// The swap's foreign-key statements (pure). `final_name` is the new table's name after the
/// renames, `old` the old table's; `leaves` the new table's leaf partitions (quoted, qualified).
pub fn fk_swap(
    outbound: &[OutboundFk],
    inbound: &[(InboundFk, InboundAction)],
    final_name: &QualifiedName,
    old: &QualifiedName,
    leaves: &[String],
) -> FkSwap {
    let mut out = FkSwap::default();
    for fk in outbound {
        let name = quote_ident(&fk.name);
        let label = format!("foreign key {} on {}", fk.name, final_name);
        // The old table's copy would keep holding the referenced rows against its stale rows.
        out.statements
            .push(format!("ALTER TABLE {} DROP CONSTRAINT {name}", old.sql()));
        for leaf in leaves {
            out.statements.push(format!(
                "ALTER TABLE {leaf} ADD CONSTRAINT {name} {} NOT VALID",
                fk.definition
            ));
        }
        if fk.validated {
            for leaf in leaves {
                out.post.push(PostSwapStep {
                    constraint: label.clone(),
                    what: format!("validate {label} on partition {leaf}"),
                    sql: format!("ALTER TABLE {leaf} VALIDATE CONSTRAINT {name}"),
                });
            }
            out.post.push(PostSwapStep {
                constraint: label.clone(),
                what: format!("add {label} on the partitioned table (attaches the partitions' validated ones, no scan)"),
                sql: format!(
                    "ALTER TABLE {} ADD CONSTRAINT {name} {}",
                    final_name.sql(),
                    fk.definition
                ),
            });
            if let Some(comment) = &fk.comment {
                out.post.push(PostSwapStep {
                    constraint: label.clone(),
                    what: format!("comment on {label}"),
                    sql: format!(
                        "COMMENT ON CONSTRAINT {name} ON {} IS {}",
                        final_name.sql(),
                        quote_literal(comment)
                    ),
                });
            }
            out.report.push(format!(
                "{label} ({}) carried{}: on each partition NOT VALID in the swap, validated and set on the partitioned table after it",
                fk.definition,
                if fk.comment.is_some() { " with its comment" } else { "" }
            ));
        } else {
            out.report.push(format!(
                "{label} ({}) carried NOT VALID on each partition, as it was NOT VALID on the old table: VALIDATE it per partition, then add it on the partitioned table",
                fk.definition
            ));
            if let Some(comment) = &fk.comment {
                out.not_carried.push(format!(
                    "comment on {label}: the key is not on the partitioned table until it is added there; then: COMMENT ON CONSTRAINT {name} ON {} IS {}",
                    final_name.sql(),
                    quote_literal(comment)
                ));
            }
        }
    }
    for (fk, action) in inbound {
        match action {
            InboundAction::Composite {
                columns,
                referenced,
            } => {
                let name = quote_ident(&fk.name);
                let label = format!("foreign key {}", fk.label());
                out.statements.push(format!(
                    "ALTER TABLE {} DROP CONSTRAINT {name}",
                    fk.table.sql()
                ));
                out.statements.push(format!(
                    "ALTER TABLE {} ADD CONSTRAINT {name} {} NOT VALID",
                    fk.table.sql(),
                    inbound_definition(fk, columns, final_name, referenced)
                ));
                if fk.validated {
                    out.post.push(PostSwapStep {
                        constraint: label.clone(),
                        what: format!("validate {label}"),
                        sql: format!("ALTER TABLE {} VALIDATE CONSTRAINT {name}", fk.table.sql()),
                    });
                }
                out.report.push(inbound_report(fk, action));
            }
            InboundAction::Drop { .. } => {
                out.statements.push(format!(
                    "ALTER TABLE {} DROP CONSTRAINT {}",
                    fk.table.sql(),
                    quote_ident(&fk.name)
                ));
                out.not_carried.push(inbound_report(fk, action));
            }
            InboundAction::Refuse { .. } | InboundAction::LeftOnSource => {
                out.not_carried.push(inbound_report(fk, action))
            }
        }
    }
    out
}

/// Cross-database: the steps that carry the table's keys onto the target's tables of the same
/// names, all after both commits (the target's copy of the table is then no longer written by the
/// apply, and the application is pointed at it only once they are done): per leaf NOT VALID,
/// then validated per leaf and set on the partitioned table, as in the same-database swap. Keys
/// whose referenced table is not on the target (`present` is false) are reported, not carried.
pub fn cross_db_steps(
    outbound: &[(OutboundFk, bool)],
    final_name: &QualifiedName,
    leaves: &[String],
) -> FkSwap {
    let mut out = FkSwap::default();
    for (fk, present) in outbound {
        let name = quote_ident(&fk.name);
        let label = format!("foreign key {} on {}", fk.name, final_name);
        if !present {
            out.not_carried.push(format!(
                "{label} ({}): {} is not on the target; once it is: ALTER TABLE {} ADD CONSTRAINT {name} {}",
                fk.definition,
                fk.referenced,
                final_name.sql(),
                fk.definition
            ));
            continue;
        }
        for leaf in leaves {
            out.post.push(PostSwapStep {
                constraint: label.clone(),
                what: format!("add {label} NOT VALID on partition {leaf}"),
                sql: format!(
                    "ALTER TABLE {leaf} ADD CONSTRAINT {name} {} NOT VALID",
                    fk.definition
                ),
            });
        }
        let swap = fk_swap(
            std::slice::from_ref(fk),
            &[],
            final_name,
            final_name,
            leaves,
        );
        out.post.extend(swap.post);
        out.report.extend(swap.report);
    }
    out
}

/// The tables the swap must lock, besides the table itself, before it touches their foreign keys
/// (quoted, qualified, sorted): dropping a foreign key takes ACCESS EXCLUSIVE on both its tables.
pub fn tables_to_lock(
    outbound: &[OutboundFk],
    inbound: &[(InboundFk, InboundAction)],
) -> Vec<String> {
    let mut t: Vec<String> = outbound
        .iter()
        .map(|f| f.referenced.sql())
        .chain(
            inbound
                .iter()
                .filter(|(_, a)| {
                    !matches!(
                        a,
                        InboundAction::Refuse { .. } | InboundAction::LeftOnSource
                    )
                })
                .map(|(f, _)| f.table.sql()),
        )
        .collect();
    t.sort();
    t.dedup();
    t
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// `order_items.order_id -> orders_flat(id)`, the referencing table with a `region text`
    /// column or not.
    pub fn order_items_fk(with_region: bool) -> InboundFk {
        let mut table_columns = vec![
            ("id".to_string(), "bigint".to_string()),
            ("order_id".to_string(), "bigint".to_string()),
        ];
        if with_region {
            table_columns.push(("region".into(), "text".into()));
        }
        InboundFk {
            oid: 0,
            name: "order_items_order_id_fkey".into(),
            table: QualifiedName::new("public", "order_items"),
            table_partitioned: false,
            columns: vec!["order_id".into()],
            referenced: vec!["id".into()],
            table_columns,
            on_update: 'a',
            on_delete: 'c',
            match_type: 's',
            deferrable: true,
            deferred: false,
            validated: true,
            definition:
                "FOREIGN KEY (order_id) REFERENCES orders_flat(id) ON DELETE CASCADE DEFERRABLE"
                    .into(),
        }
    }

    fn key() -> NewKey {
        NewKey {
            primary_key: vec!["id".into(), "region".into()],
            partition_key: vec![("region".into(), "text".into())],
            server_major: 15,
        }
    }

    fn orders() -> QualifiedName {
        QualifiedName::new("public", "orders_flat")
    }

    #[test]
    fn an_inbound_key_with_the_partition_key_column_is_widened_onto_the_new_primary_key() {
        let fk = order_items_fk(true);
        let action = inbound_action(&fk, &key(), &orders(), false);
        assert_eq!(
            action,
            InboundAction::Composite {
                columns: vec!["order_id".into(), "region".into()],
                referenced: vec!["id".into(), "region".into()],
            }
        );
        let swap = fk_swap(
            &[],
            &[(fk, action)],
            &orders(),
            &orders().sibling("orders_flat_old"),
            &[],
        );
        assert_eq!(
            swap.statements,
            vec![
                "ALTER TABLE \"public\".\"order_items\" DROP CONSTRAINT \"order_items_order_id_fkey\"".to_string(),
                "ALTER TABLE \"public\".\"order_items\" ADD CONSTRAINT \"order_items_order_id_fkey\" FOREIGN KEY (\"order_id\", \"region\") REFERENCES \"public\".\"orders_flat\" (\"id\", \"region\") ON UPDATE NO ACTION ON DELETE CASCADE DEFERRABLE NOT VALID".to_string(),
            ]
        );
        assert_eq!(
            swap.post[0].sql,
            "ALTER TABLE \"public\".\"order_items\" VALIDATE CONSTRAINT \"order_items_order_id_fkey\""
        );
    }

    #[test]
    fn an_inbound_key_that_cannot_be_widened_is_refused_or_dropped_with_the_statement_to_recreate_it()
     {
        let fk = order_items_fk(false);
        let InboundAction::Refuse { reason, recreate } =
            inbound_action(&fk, &key(), &orders(), false)
        else {
            panic!("refused without --drop-inbound-fks");
        };
        assert!(reason.contains("no column region text"), "{reason}");
        assert_eq!(
            recreate,
            "ALTER TABLE \"public\".\"order_items\" ADD CONSTRAINT \"order_items_order_id_fkey\" FOREIGN KEY (\"order_id\", \"region\") REFERENCES \"public\".\"orders_flat\" (\"id\", \"region\") ON UPDATE NO ACTION ON DELETE CASCADE DEFERRABLE"
        );
        let action = inbound_action(&fk, &key(), &orders(), true);
        assert!(matches!(action, InboundAction::Drop { .. }));
        let swap = fk_swap(
            &[],
            &[(fk.clone(), action)],
            &orders(),
            &orders().sibling("o"),
            &[],
        );
        assert_eq!(swap.statements.len(), 1);
        assert!(swap.statements[0].ends_with("DROP CONSTRAINT \"order_items_order_id_fkey\""));
        assert!(swap.post.is_empty());
        assert!(
            swap.not_carried[0].contains("--drop-inbound-fks"),
            "{:?}",
            swap.not_carried
        );

        // Widening would change what the key does.
        let mut set_null = order_items_fk(true);
        set_null.on_delete = 'n';
        assert!(matches!(
            inbound_action(&set_null, &key(), &orders(), false),
            InboundAction::Refuse { .. }
        ));
        let mut full = order_items_fk(true);
        full.match_type = 'f';
        assert!(matches!(
            inbound_action(&full, &key(), &orders(), false),
            InboundAction::Refuse { .. }
        ));
        let mut other_type = order_items_fk(false);
        other_type
            .table_columns
            .push(("region".into(), "varchar(2)".into()));
        assert!(matches!(
            inbound_action(&other_type, &key(), &orders(), false),
            InboundAction::Refuse { .. }
        ));
        // A key onto another unique column than the old key.
        let mut other_key = order_items_fk(true);
        other_key.referenced = vec!["ref".into()];
        assert!(matches!(
            inbound_action(&other_key, &key(), &orders(), false),
            InboundAction::Refuse { .. }
        ));
        // A partitioned referencing table takes a NOT VALID key only from 18 on.
        let mut partitioned = order_items_fk(true);
        partitioned.table_partitioned = true;
        assert!(matches!(
            inbound_action(&partitioned, &key(), &orders(), false),
            InboundAction::Refuse { .. }
        ));
        let k18 = NewKey {
            server_major: 18,
            ..key()
        };
        assert!(matches!(
            inbound_action(&partitioned, &k18, &orders(), false),
            InboundAction::Composite { .. }
        ));
    }

    #[test]
    fn an_outbound_key_goes_not_valid_on_each_partition_then_is_validated_and_set_on_the_parent() {
        let fk = OutboundFk {
            name: "orders_flat_customer_id_fkey".into(),
            definition: "FOREIGN KEY (customer_id) REFERENCES customers(id) MATCH FULL ON UPDATE CASCADE ON DELETE SET NULL DEFERRABLE INITIALLY DEFERRED".into(),
            referenced: QualifiedName::new("public", "customers"),
            validated: true,
            comment: None,
        };
        let leaves = vec![
            "\"public\".\"orders_flat_eu\"".to_string(),
            "\"public\".\"orders_flat_us\"".to_string(),
        ];
        let old = orders().sibling("orders_flat_old");
        let swap = fk_swap(std::slice::from_ref(&fk), &[], &orders(), &old, &leaves);
        let def = &fk.definition;
        assert_eq!(
            swap.statements,
            vec![
                "ALTER TABLE \"public\".\"orders_flat_old\" DROP CONSTRAINT \"orders_flat_customer_id_fkey\"".to_string(),
                format!("ALTER TABLE \"public\".\"orders_flat_eu\" ADD CONSTRAINT \"orders_flat_customer_id_fkey\" {def} NOT VALID"),
                format!("ALTER TABLE \"public\".\"orders_flat_us\" ADD CONSTRAINT \"orders_flat_customer_id_fkey\" {def} NOT VALID"),
            ]
        );
        let post: Vec<&str> = swap.post.iter().map(|p| p.sql.as_str()).collect();
        assert_eq!(
            post,
            vec![
                "ALTER TABLE \"public\".\"orders_flat_eu\" VALIDATE CONSTRAINT \"orders_flat_customer_id_fkey\"".to_string(),
                "ALTER TABLE \"public\".\"orders_flat_us\" VALIDATE CONSTRAINT \"orders_flat_customer_id_fkey\"".to_string(),
                format!("ALTER TABLE \"public\".\"orders_flat\" ADD CONSTRAINT \"orders_flat_customer_id_fkey\" {def}"),
            ]
        );
        assert!(
            swap.post
                .iter()
                .all(|p| p.constraint == swap.post[0].constraint)
        );
        assert_eq!(
            tables_to_lock(std::slice::from_ref(&fk), &[]),
            vec!["\"public\".\"customers\"".to_string()]
        );

        // A comment follows the key onto the partitioned table, after the key is there.
        let commented = OutboundFk {
            comment: Some("who bought it".into()),
            ..fk.clone()
        };
        let swap = fk_swap(
            std::slice::from_ref(&commented),
            &[],
            &orders(),
            &old,
            &leaves,
        );
        assert_eq!(
            swap.post.last().map(|p| p.sql.as_str()),
            Some(
                "COMMENT ON CONSTRAINT \"orders_flat_customer_id_fkey\" ON \"public\".\"orders_flat\" IS 'who bought it'"
            )
        );
        assert!(swap.report[0].contains("with its comment"));
        assert!(swap.not_carried.is_empty());

        let not_valid = OutboundFk {
            validated: false,
            ..fk
        };
        let swap = fk_swap(&[not_valid], &[], &orders(), &old, &leaves);
        assert_eq!(swap.statements.len(), 3);
        assert!(swap.post.is_empty());
        assert!(swap.report[0].contains("NOT VALID on the old table"));
        assert!(swap.not_carried.is_empty());

        // A NOT VALID key is not on the partitioned table, so neither can its comment be: named.
        let swap = fk_swap(
            &[OutboundFk {
                validated: false,
                ..commented
            }],
            &[],
            &orders(),
            &old,
            &leaves,
        );
        assert!(swap.post.is_empty());
        assert_eq!(swap.not_carried.len(), 1);
        assert!(
            swap.not_carried[0].starts_with("comment on foreign key orders_flat_customer_id_fkey")
        );
    }

    #[test]
    fn across_databases_a_key_is_carried_onto_the_targets_table_of_the_same_name_after_both_commits()
     {
        let fk = |name: &str, table: &str| OutboundFk {
            name: name.into(),
            definition: format!("FOREIGN KEY (x) REFERENCES {table}(id)"),
            referenced: QualifiedName::new("public", table),
            validated: true,
            comment: None,
        };
        let leaves = vec!["\"public\".\"orders_flat_us\"".to_string()];
        let out = cross_db_steps(
            &[
                (fk("a_fkey", "customers"), true),
                (fk("b_fkey", "vendors"), false),
            ],
            &orders(),
            &leaves,
        );
        let sql: Vec<&str> = out.post.iter().map(|p| p.sql.as_str()).collect();
        assert_eq!(
            sql,
            vec![
                "ALTER TABLE \"public\".\"orders_flat_us\" ADD CONSTRAINT \"a_fkey\" FOREIGN KEY (x) REFERENCES customers(id) NOT VALID",
                "ALTER TABLE \"public\".\"orders_flat_us\" VALIDATE CONSTRAINT \"a_fkey\"",
                "ALTER TABLE \"public\".\"orders_flat\" ADD CONSTRAINT \"a_fkey\" FOREIGN KEY (x) REFERENCES customers(id)",
            ]
        );
        assert!(out.statements.is_empty());
        assert_eq!(out.not_carried.len(), 1);
        assert!(
            out.not_carried[0].contains("public.vendors is not on the target"),
            "{:?}",
            out.not_carried
        );
    }

    #[test]
    fn post_swap_steps_are_recorded_in_the_swaps_transaction() {
        let steps = vec![PostSwapStep {
            constraint: "foreign key f on public.t".into(),
            what: "validate it's".into(),
            sql: "ALTER TABLE t VALIDATE CONSTRAINT f".into(),
        }];
        let sql = crate::dependents::post_swap::record_statements(3, &steps);
        assert!(sql[0].starts_with("CREATE TABLE IF NOT EXISTS pgrepart.post_swap_steps"));
        assert_eq!(
            sql[1],
            "DELETE FROM pgrepart.post_swap_steps WHERE migration_id = 3"
        );
        assert!(
            sql[2].contains(
                "(3, 0, '{\"constraint\":\"foreign key f on public.t\",\"what\":\"validate it''s\""
            ),
            "{}",
            sql[2]
        );
        assert!(crate::dependents::post_swap::record_statements(3, &[]).is_empty());
    }
}
