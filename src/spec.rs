//! The partitioning the user asked for, parsed and validated before any I/O.
//!
//! `--partition-by "LIST (region)"` becomes a [`PartitionBy`]; each
//! `--partition "orders_flat_us=FOR VALUES IN ('US')"` becomes a [`PartitionSpec`].

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::pg::ident::{QualifiedName, quote_ident};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Method {
    List,
    Range,
    Hash,
}

impl Method {
    pub fn sql(self) -> &'static str {
        match self {
            Method::List => "LIST",
            Method::Range => "RANGE",
            Method::Hash => "HASH",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionBy {
    pub method: Method,
    /// Partition-key columns, unquoted.
    pub columns: Vec<String>,
}

impl PartitionBy {
    /// Parses `LIST (region)`, `RANGE (order_date)`, `HASH (a, "B")`.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || {
            Error::refused(format!("--partition-by {text:?} is not understood"))
                .with_hint("write it as \"LIST (column)\", \"RANGE (column)\" or \"HASH (column[, column...])\"")
        };
        let text = text.trim();
        let open = text.find('(').ok_or_else(bad)?;
        let method = match text[..open].trim().to_ascii_uppercase().as_str() {
            "LIST" => Method::List,
            "RANGE" => Method::Range,
            "HASH" => Method::Hash,
            _ => return Err(bad()),
        };
        let inner = text[open + 1..].strip_suffix(')').ok_or_else(bad)?;
        let mut columns = Vec::new();
        for part in inner.split(',') {
            let part = part.trim();
            let column = if let Some(quoted) =
                part.strip_prefix('"').and_then(|p| p.strip_suffix('"'))
            {
                quoted.replace("\"\"", "\"")
            } else if !part.is_empty() && part.chars().all(|c| c.is_alphanumeric() || c == '_') {
                part.to_lowercase()
            } else {
                return Err(bad()
                    .with_hint("partition keys are plain column names, e.g. \"LIST (region)\""));
            };
            if columns.contains(&column) {
                return Err(Error::refused(format!(
                    "column {column:?} appears twice in --partition-by"
                )));
            }
            columns.push(column);
        }
        if method == Method::List && columns.len() != 1 {
            return Err(Error::refused("LIST partitioning takes exactly one column"));
        }
        Ok(PartitionBy { method, columns })
    }

    /// `LIST ("region")`
    pub fn sql(&self) -> String {
        let cols: Vec<String> = self.columns.iter().map(|c| quote_ident(c)).collect();
        format!("{} ({})", self.method.sql(), cols.join(", "))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSpec {
    pub name: String,
    /// `FOR VALUES ...` or `DEFAULT`, exactly as the user gave it.
    pub bound: String,
}

impl PartitionSpec {
    /// Parses `NAME=FOR VALUES ...` or `NAME=DEFAULT`.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::refused(format!("--partition {text:?}: {why}"))
                .with_hint("write it as NAME=FOR VALUES IN ('US'), NAME=FOR VALUES FROM (..) TO (..), NAME=FOR VALUES WITH (MODULUS 4, REMAINDER 0) or NAME=DEFAULT")
        };
        let (name, bound) = text.split_once('=').ok_or_else(|| bad("missing '='"))?;
        let name = QualifiedName::parse(name.trim())
            .map_err(|_| bad("the partition name is not a valid name"))?;
        if name.schema != "public" && name.name.contains('.') {
            return Err(bad("the partition name is not a valid name"));
        }
        let bound = bound.trim();
        let upper = bound.to_ascii_uppercase();
        let ok = upper == "DEFAULT" || upper.starts_with("FOR VALUES ");
        if !ok {
            return Err(bad("the bound must start with FOR VALUES or be DEFAULT"));
        }
        if bound.contains(';') {
            return Err(bad("the bound may not contain ';'"));
        }
        Ok(PartitionSpec {
            name: name.name,
            bound: bound.to_string(),
        })
    }

    pub fn is_default(&self) -> bool {
        self.bound.eq_ignore_ascii_case("DEFAULT")
    }
}

/// Validates a set of partitions against the method before any I/O.
pub fn check_partitions(by: &PartitionBy, parts: &[PartitionSpec]) -> Result<()> {
    if parts.is_empty() {
        return Err(Error::refused("no partitions given")
            .with_hint("add one --partition \"NAME=FOR VALUES ...\" per partition (and one NAME=DEFAULT to catch the rest)"));
    }
    let mut names = std::collections::HashSet::new();
    for p in parts {
        if !names.insert(p.name.as_str()) {
            return Err(Error::refused(format!(
                "partition name {:?} is given twice",
                p.name
            )));
        }
    }
    if parts.iter().filter(|p| p.is_default()).count() > 1 {
        return Err(Error::refused("only one DEFAULT partition is allowed"));
    }
    if by.method == Method::Hash && parts.iter().any(|p| p.is_default()) {
        return Err(Error::refused(
            "a HASH-partitioned table cannot have a DEFAULT partition",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_by_parses_the_three_methods() {
        let l = PartitionBy::parse("LIST (region)").unwrap();
        assert_eq!(
            l,
            PartitionBy {
                method: Method::List,
                columns: vec!["region".into()]
            }
        );
        assert_eq!(l.sql(), "LIST (\"region\")");
        let r = PartitionBy::parse(" range(Order_Date) ").unwrap();
        assert_eq!(r.columns, vec!["order_date".to_string()]);
        let h = PartitionBy::parse("HASH (a, \"B c\")").unwrap();
        assert_eq!(h.columns, vec!["a".to_string(), "B c".to_string()]);
    }

    #[test]
    fn partition_by_refuses_what_it_cannot_read() {
        for bad in [
            "",
            "LIST region",
            "TREE (a)",
            "LIST (a, b)",
            "RANGE ()",
            "RANGE (a))",
            "HASH (a, a)",
            "LIST (lower(a))",
        ] {
            assert!(PartitionBy::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn partitions_parse_name_and_bound() {
        let p = PartitionSpec::parse("orders_flat_us=FOR VALUES IN ('US')").unwrap();
        assert_eq!(p.name, "orders_flat_us");
        assert_eq!(p.bound, "FOR VALUES IN ('US')");
        assert!(PartitionSpec::parse("d = default").unwrap().is_default());
        for bad in [
            "x",
            "=DEFAULT",
            "x=VALUES IN (1)",
            "x=FOR VALUES IN (1); DROP TABLE t",
            "a b=DEFAULT",
        ] {
            assert!(PartitionSpec::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn partition_sets_are_checked() {
        let list = PartitionBy::parse("LIST (r)").unwrap();
        let hash = PartitionBy::parse("HASH (r)").unwrap();
        let a = PartitionSpec::parse("a=FOR VALUES IN (1)").unwrap();
        let d = PartitionSpec::parse("d=DEFAULT").unwrap();
        assert!(check_partitions(&list, &[a.clone(), d.clone()]).is_ok());
        assert!(check_partitions(&list, &[]).is_err());
        assert!(check_partitions(&list, &[a.clone(), a.clone()]).is_err());
        assert!(check_partitions(&hash, &[d]).is_err());
    }
}
