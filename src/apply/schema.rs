//! Schema changes seen in the stream (pure). pgoutput sends a Relation message before the first
//! change of a table after its definition changed. Two changes are followed:
//!
//! - columns appended on the source (`ALTER TABLE ... ADD COLUMN` of a nullable column without a
//!   default): the same columns are added to the new table, rows already held are widened, and the
//!   changes that follow carry them;
//! - after a resume, the stream may still describe the table as it was before such an addition (the
//!   slot restarts before it): those rows are narrower and are widened the same way.
//!
//! Widening is exact because a column added without a default is NULL in every row that existed
//! before it, and any later value arrives as a later change in the stream. Anything else (a column
//! dropped, renamed, retyped, reordered, or added with a default, NOT NULL, identity or generation
//! expression) stops the run with a message naming it.

use crate::pg::catalog::ColumnInfo;
use crate::pg::ident::quote_ident;

/// How the columns of a Relation message compare with the columns the applier knows, both as
/// (name, type oid) in the source's column order.
#[derive(Debug, PartialEq, Eq)]
pub enum RelationChange {
    /// The same columns.
    Same,
    /// The first `width` known columns only: either the stream describes the table before columns
    /// were added to it (a resumed run reading changes from before the `ADD COLUMN`), or the last
    /// columns were dropped. The source's catalog tells which: it still has them in the first case.
    Older { width: usize },
    /// The known columns followed by new ones, from this position of the message on.
    Added { from: usize },
    /// Any other difference.
    Other,
}

pub fn classify(known: &[(String, u32)], got: &[(String, u32)]) -> RelationChange {
    if known == got {
        RelationChange::Same
    } else if !got.is_empty() && got.len() < known.len() && known.starts_with(got) {
        RelationChange::Older { width: got.len() }
    } else if known.len() < got.len() && got.starts_with(known) {
        RelationChange::Added { from: known.len() }
    } else {
        RelationChange::Other
    }
}

/// What differs between two column lists, naming the columns: "amount: type changed; details:
/// dropped (or renamed); memo: added".
pub fn describe_change(known: &[(String, u32)], got: &[(String, u32)]) -> String {
    let mut parts = Vec::new();
    for (name, oid) in known {
        match got.iter().find(|(n, _)| n == name) {
            None => parts.push(format!("{name}: dropped (or renamed)")),
            Some((_, o)) if o != oid => parts.push(format!("{name}: type changed")),
            Some(_) => {}
        }
    }
    for (name, _) in got {
        if !known.iter().any(|(n, _)| n == name) {
            parts.push(format!("{name}: added"));
        }
    }
    if parts.is_empty() {
        "columns reordered".into()
    } else {
        parts.join("; ")
    }
}

/// The `ADD COLUMN` clause that gives the new table an added source column, or why that column
/// cannot be followed.
pub fn add_column_clause(c: &ColumnInfo) -> Result<String, String> {
    if c.generated.is_some() {
        return Err(format!("{} is a generated column", c.name));
    }
    if c.identity.is_some() {
        return Err(format!("{} is an identity column", c.name));
    }
    if c.default.is_some() {
        return Err(format!(
            "{} has a default (rows that existed before it would need it too)",
            c.name
        ));
    }
    if c.not_null {
        return Err(format!("{} is NOT NULL", c.name));
    }
    let mut clause = format!(
        "ADD COLUMN IF NOT EXISTS {} {}",
        quote_ident(&c.name),
        c.type_sql
    );
    if let Some(coll) = &c.collation {
        clause.push_str(" COLLATE ");
        clause.push_str(coll);
    }
    Ok(clause)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(list: &[(&str, u32)]) -> Vec<(String, u32)> {
        list.iter().map(|(n, t)| (n.to_string(), *t)).collect()
    }

    #[test]
    fn appended_columns_older_streams_and_other_changes_are_told_apart() {
        let known = cols(&[("id", 20), ("v", 25)]);
        assert_eq!(classify(&known, &known), RelationChange::Same);
        assert_eq!(
            classify(&known, &cols(&[("id", 20), ("v", 25), ("note", 25)])),
            RelationChange::Added { from: 2 }
        );
        assert_eq!(
            classify(&known, &cols(&[("id", 20)])),
            RelationChange::Older { width: 1 }
        );
        // Dropped, retyped, renamed, reordered.
        for other in [
            cols(&[("v", 25)]),
            cols(&[("id", 23), ("v", 25)]),
            cols(&[("id", 20), ("w", 25)]),
            cols(&[("v", 25), ("id", 20)]),
            cols(&[("id", 20), ("w", 25), ("note", 25)]),
            cols(&[]),
        ] {
            assert_eq!(classify(&known, &other), RelationChange::Other, "{other:?}");
        }
    }

    #[test]
    fn a_change_is_described_by_the_columns_it_touches() {
        let known = cols(&[("id", 20), ("amount", 1700), ("details", 25)]);
        assert_eq!(
            describe_change(&known, &cols(&[("id", 20), ("amount", 701), ("memo", 25)])),
            "amount: type changed; details: dropped (or renamed); memo: added"
        );
        assert_eq!(
            describe_change(
                &known,
                &cols(&[("details", 25), ("id", 20), ("amount", 1700)])
            ),
            "columns reordered"
        );
    }

    fn column(name: &str) -> ColumnInfo {
        ColumnInfo {
            name: name.into(),
            type_sql: "character varying(20)".into(),
            type_oid: 1043,
            not_null: false,
            default: None,
            collation: None,
            generated: None,
            identity: None,
            compression: None,
            storage: None,
        }
    }

    #[test]
    fn only_nullable_columns_without_a_default_are_followed() {
        assert_eq!(
            add_column_clause(&column("Note")).unwrap(),
            r#"ADD COLUMN IF NOT EXISTS "Note" character varying(20)"#
        );
        let collated = ColumnInfo {
            collation: Some(r#""C""#.into()),
            ..column("n")
        };
        assert_eq!(
            add_column_clause(&collated).unwrap(),
            r#"ADD COLUMN IF NOT EXISTS "n" character varying(20) COLLATE "C""#
        );
        let refused = [
            ColumnInfo {
                not_null: true,
                ..column("a")
            },
            ColumnInfo {
                default: Some("0".into()),
                ..column("b")
            },
            ColumnInfo {
                identity: Some('d'),
                ..column("c")
            },
            ColumnInfo {
                generated: Some("1".into()),
                ..column("d")
            },
        ];
        for c in refused {
            let why = add_column_clause(&c).unwrap_err();
            assert!(why.starts_with(&c.name), "{why}");
        }
    }
}
