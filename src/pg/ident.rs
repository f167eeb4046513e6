//! Identifier and literal quoting, and `[schema.]name` parsing. Pure.

use std::fmt;

use crate::error::{Error, Result};

/// Quotes an identifier the way PostgreSQL's `quote_ident` does: always, doubling embedded quotes.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal, doubling embedded single quotes (standard_conforming_strings on).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A schema-qualified relation name, stored unquoted.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct QualifiedName {
    pub schema: String,
    pub name: String,
}

impl QualifiedName {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        QualifiedName {
            schema: schema.into(),
            name: name.into(),
        }
    }

    /// Parses `name`, `schema.name`, or their double-quoted forms. Unquoted parts fold to lower case,
    /// as in SQL. Without a schema, `public` is assumed.
    pub fn parse(text: &str) -> Result<Self> {
        let parts = split_ident_path(text)?;
        match parts.as_slice() {
            [name] => Ok(QualifiedName::new("public", name.clone())),
            [schema, name] => Ok(QualifiedName::new(schema.clone(), name.clone())),
            _ => Err(Error::refused(format!("{text:?} is not a table name"))
                .with_hint("give the table as name or schema.name")),
        }
    }

    /// The same schema with another relation name.
    pub fn sibling(&self, name: impl Into<String>) -> Self {
        QualifiedName::new(self.schema.clone(), name)
    }

    /// The quoted form, safe to paste into SQL.
    pub fn sql(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

impl fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// Splits a dotted identifier path, honouring double quotes.
fn split_ident_path(text: &str) -> Result<Vec<String>> {
    let bad = || {
        Error::refused(format!("{text:?} is not a valid name"))
            .with_hint("quote names with special characters: '\"My Table\"'")
    };
    let mut parts = Vec::new();
    let mut chars = text.trim().chars().peekable();
    loop {
        let mut part = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        part.push('"');
                    }
                    Some('"') => break,
                    Some(c) => part.push(c),
                    None => return Err(bad()),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                if !(c.is_alphanumeric() || c == '_' || c == '$') {
                    return Err(bad());
                }
                part.extend(c.to_lowercase());
                chars.next();
            }
        }
        if part.is_empty() {
            return Err(bad());
        }
        parts.push(part);
        match chars.next() {
            None => return Ok(parts),
            Some('.') => continue,
            Some(_) => return Err(bad()),
        }
    }
}

/// Builds a name from pieces, cut to PostgreSQL's 63-byte limit on a character boundary.
pub fn truncate_ident(name: &str) -> String {
    let mut end = name.len().min(63);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

/// A name safe as a replication slot name: lower-case letters, digits and underscores only.
pub fn slot_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_doubles_embedded_quotes() {
        assert_eq!(quote_ident("orders"), "\"orders\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_literal("O'Brien"), "'O''Brien'");
    }

    #[test]
    fn table_names_parse_with_default_schema_and_case_folding() {
        assert_eq!(
            QualifiedName::parse("orders_flat").unwrap(),
            QualifiedName::new("public", "orders_flat")
        );
        assert_eq!(
            QualifiedName::parse("Shop.Orders").unwrap(),
            QualifiedName::new("shop", "orders")
        );
        assert_eq!(
            QualifiedName::parse("\"My Schema\".\"Or\"\"ders\"").unwrap(),
            QualifiedName::new("My Schema", "Or\"ders")
        );
        assert_eq!(QualifiedName::new("a b", "c").sql(), "\"a b\".\"c\"");
    }

    #[test]
    fn malformed_table_names_are_refused() {
        for bad in ["", ".", "a.", ".a", "a.b.c", "\"open", "a b", "a;drop"] {
            assert!(QualifiedName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_are_cut_at_63_bytes_on_char_boundaries() {
        assert_eq!(truncate_ident(&"a".repeat(70)).len(), 63);
        let s = format!("{}é", "a".repeat(62));
        assert_eq!(truncate_ident(&s), "a".repeat(62));
        assert_eq!(slot_safe("Orders-Flat.1"), "orders_flat_1");
    }
}
