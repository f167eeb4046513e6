//! What `verify` compares and how (the statements are pure; the differ is pure).
//!
//! ```text
//! per key range, both sides:  SELECT count(*), sum(hash_record_extended(ROW(c1, c2, ...), 0))
//! a range that differs:       SELECT k::text, hash_record_extended(ROW(...), 0)  ──► diff by key
//! ```
//! The columns are named explicitly in the source's order (the target may order them differently,
//! or be partitioned). Rows are hashed by value, with each type's own extended hash function (a
//! third of the time of hashing their text on the bench's table: 0.84 s against 2.8 s for
//! 2,000,000 rows), so values equal under `=` hash alike (1.50 and 1.5). A column with a collation
//! of its own is hashed under "C" (a nondeterministic collation would hash 'A' and 'a' alike).
//! When a column's type has no extended hash function (json, point, xml, ...), every row is
//! hashed by its text instead, `hashtextextended(ROW(...)::text, 0)`, and both sessions pin every
//! setting that changes a value's text form.

use std::collections::BTreeMap;

use crate::copy::ranges::KeyRange;
use crate::pg::ident::{QualifiedName, quote_ident, quote_literal};

/// Settings that decide how values print as text; set on every session of both sides.
pub const PIN_SETTINGS: &str = "SET datestyle = 'ISO, YMD'; SET intervalstyle = 'postgres'; \
     SET extra_float_digits = 3; SET timezone = 'UTC'; SET bytea_output = 'hex'; \
     SET statement_timeout = 0; SET lock_timeout = 0";

/// The compared table's shape: replicated columns (name, type) in the source's order, and the
/// positions of the source key's columns among them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    pub columns: Vec<(String, String)>,
    pub key: Vec<usize>,
    /// The first key column is an integer: the key space is cut into ranges on it.
    pub int_key: bool,
    /// Per column: it has a collation of its own (hashed by value under "C").
    pub collated: Vec<bool>,
    /// Rows are hashed by value (`hash_record_extended`), not by their text: every column's type
    /// has an extended hash function on both sides ([`Columns::by_value_probe_sql`]).
    pub by_value: bool,
}

impl Columns {
    fn row_text(&self) -> String {
        if self.by_value {
            return format!(
                "hash_record_extended(ROW({}), 0)",
                self.values(|(name, _)| quote_ident(name))
            );
        }
        let cols: Vec<String> = self.columns.iter().map(|c| quote_ident(&c.0)).collect();
        format!("hashtextextended(ROW({})::text, 0)", cols.join(", "))
    }

    /// One expression per column, a collated one under "C".
    fn values(&self, value: impl Fn(&(String, String)) -> String) -> String {
        self.columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let v = value(c);
                if self.collated.get(i).copied().unwrap_or(false) {
                    format!("{v} COLLATE \"C\"")
                } else {
                    v
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Fails unless every column's type has an extended hash function: `hash_record_extended`
    /// looks each one up even for a NULL, so a row of typed NULLs answers without reading the
    /// table.
    pub fn by_value_probe_sql(&self) -> String {
        format!(
            "SELECT hash_record_extended(ROW({}), 0)",
            self.values(|(_, ty)| format!("NULL::{ty}"))
        )
    }

    fn range_filter(&self, range: &KeyRange) -> String {
        range
            .where_sql(&quote_ident(&self.columns[self.key[0]].0))
            .map(|w| format!(" WHERE {w}"))
            .unwrap_or_default()
    }

    /// Row count and the sum of the rows' 64-bit hashes (as text: a numeric), of one range.
    pub fn summary_sql(&self, table: &QualifiedName, range: &KeyRange) -> String {
        format!(
            "SELECT count(*), coalesce(sum({}), 0)::text FROM {}{}",
            self.row_text(),
            table.sql(),
            self.range_filter(range)
        )
    }

    /// (key columns as text..., row hash) of every row of one range.
    pub fn rows_sql(&self, table: &QualifiedName, range: &KeyRange) -> String {
        format!(
            "SELECT {}, {} FROM {}{}",
            self.key_texts(),
            self.row_text(),
            table.sql(),
            self.range_filter(range)
        )
    }

    fn key_texts(&self) -> String {
        self.key
            .iter()
            .map(|&k| format!("{}::text", quote_ident(&self.columns[k].0)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `(k1, k2) IN (VALUES ('..'::t1, '..'::t2), ...)`: the rows of these keys.
    pub fn keys_filter(&self, keys: &[Key]) -> String {
        let cols: Vec<String> = self
            .key
            .iter()
            .map(|&k| quote_ident(&self.columns[k].0))
            .collect();
        let values: Vec<String> = keys
            .iter()
            .map(|key| {
                let vals: Vec<String> = key
                    .iter()
                    .zip(&self.key)
                    .map(|(v, &k)| format!("{}::{}", quote_literal(v), self.columns[k].1))
                    .collect();
                format!("({})", vals.join(", "))
            })
            .collect();
        format!("({}) IN (VALUES {})", cols.join(", "), values.join(", "))
    }

    /// (key texts, row hash) of the rows of these keys.
    pub fn keyed_rows_sql(&self, table: &QualifiedName, keys: &[Key]) -> String {
        format!(
            "SELECT {}, {} FROM {} WHERE {}",
            self.key_texts(),
            self.row_text(),
            table.sql(),
            self.keys_filter(keys)
        )
    }

    /// Binary COPY of the full rows of these keys (repair, on the source under the snapshot).
    pub fn copy_out_sql(&self, table: &QualifiedName, keys: &[Key]) -> String {
        format!(
            "COPY (SELECT {} FROM {} WHERE {}) TO STDOUT (FORMAT binary)",
            self.column_list(),
            table.sql(),
            self.keys_filter(keys)
        )
    }

    pub fn copy_in_sql(&self, table: &QualifiedName) -> String {
        format!(
            "COPY {} ({}) FROM STDIN (FORMAT binary)",
            table.sql(),
            self.column_list()
        )
    }

    pub fn delete_sql(&self, table: &QualifiedName, keys: &[Key]) -> String {
        format!(
            "DELETE FROM {} WHERE {}",
            table.sql(),
            self.keys_filter(keys)
        )
    }

    fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| quote_ident(&c.0))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A source key, each column as text.
pub type Key = Vec<String>;

/// One range's figures on one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub rows: i64,
    /// Sum of the rows' hashes, as PostgreSQL prints the numeric.
    pub hash_sum: String,
}

/// How a row differs, seen from the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiffKind {
    /// In the source (as of the snapshot), not in the target.
    MissingOnTarget,
    /// In the target, not in the source.
    ExtraOnTarget,
    /// On both sides with different values.
    Different,
}

impl DiffKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DiffKind::MissingOnTarget => "missing on target",
            DiffKind::ExtraOnTarget => "extra on target",
            DiffKind::Different => "different",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Difference {
    pub key: Key,
    pub kind: DiffKind,
}

/// The rows of both sides, keyed, compared: every key whose row is not the same, in key order.
/// A key seen twice on one side (which a unique source key rules out on the source) counts with
/// its hashes summed, so a duplicate on the target shows as `Different`.
pub fn diff_rows(source: &[(Key, i64)], target: &[(Key, i64)]) -> Vec<Difference> {
    fn index(rows: &[(Key, i64)]) -> BTreeMap<&Key, (i64, u32)> {
        let mut m: BTreeMap<&Key, (i64, u32)> = BTreeMap::new();
        for (k, h) in rows {
            let e = m.entry(k).or_insert((0, 0));
            e.0 = e.0.wrapping_add(*h);
            e.1 += 1;
        }
        m
    }
    let (s, t) = (index(source), index(target));
    let mut out = Vec::new();
    for (k, sv) in &s {
        match t.get(k) {
            None => out.push(Difference {
                key: (*k).clone(),
                kind: DiffKind::MissingOnTarget,
            }),
            Some(tv) if tv != sv => out.push(Difference {
                key: (*k).clone(),
                kind: DiffKind::Different,
            }),
            Some(_) => {}
        }
    }
    for k in t.keys() {
        if !s.contains_key(k) {
            out.push(Difference {
                key: (*k).clone(),
                kind: DiffKind::ExtraOnTarget,
            });
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// The key ranges to compare: `count` ranges over the union of both sides' key bounds (so rows the
/// target has beyond the source's keys are compared too), or one range for other key types.
pub fn plan(bounds: [Option<(i64, i64)>; 2], count: usize) -> Vec<KeyRange> {
    let merged = match bounds {
        [Some(a), Some(b)] => Some((a.0.min(b.0), a.1.max(b.1))),
        [a, b] => a.or(b),
    };
    crate::copy::ranges::plan_ranges(merged, count)
}

/// Picks about `pct` percent of `n` ranges (at least one), spread by a seeded generator.
pub fn sample(n: usize, pct: f64, seed: u64) -> Vec<usize> {
    let want = ((n as f64 * pct / 100.0).ceil() as usize).clamp(1, n.max(1));
    let mut all: Vec<usize> = (0..n).collect();
    let mut x = seed | 1;
    // Partial Fisher-Yates with xorshift64.
    for i in 0..want.min(n) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let j = i + (x % (n - i) as u64) as usize;
        all.swap(i, j);
    }
    let mut chosen: Vec<usize> = all.into_iter().take(want.min(n)).collect();
    chosen.sort_unstable();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(v: &str) -> Key {
        vec![v.to_string()]
    }

    #[test]
    fn diffing_names_missing_extra_and_different_keys_in_key_order() {
        let source = vec![(k("1"), 10), (k("2"), 20), (k("3"), 30)];
        let target = vec![(k("3"), 31), (k("1"), 10), (k("4"), 40)];
        let d = diff_rows(&source, &target);
        assert_eq!(
            d,
            vec![
                Difference {
                    key: k("2"),
                    kind: DiffKind::MissingOnTarget
                },
                Difference {
                    key: k("3"),
                    kind: DiffKind::Different
                },
                Difference {
                    key: k("4"),
                    kind: DiffKind::ExtraOnTarget
                },
            ]
        );
        assert!(diff_rows(&source, &source).is_empty());
    }

    #[test]
    fn a_key_doubled_on_the_target_is_a_difference() {
        let source = vec![(k("1"), 10)];
        let target = vec![(k("1"), 10), (k("1"), 10)];
        assert_eq!(diff_rows(&source, &target)[0].kind, DiffKind::Different);
    }

    #[test]
    fn the_plan_covers_both_sides_bounds() {
        let r = plan([Some((10, 100)), Some((5, 200))], 4);
        assert_eq!(r.first().unwrap().lo, None);
        assert_eq!(r.last().unwrap().hi, None);
        assert!(r.len() > 1);
        assert_eq!(plan([None, None], 4), vec![KeyRange::ALL]);
        assert!(plan([None, Some((1, 1000))], 4).len() > 1);
    }

    #[test]
    fn sampling_picks_distinct_sorted_ranges() {
        let s = sample(100, 10.0, 42);
        assert_eq!(s.len(), 10);
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(sample(3, 1.0, 7).len(), 1);
        assert_eq!(sample(4, 100.0, 7), vec![0, 1, 2, 3]);
    }

    #[test]
    fn statements_name_columns_in_the_source_order_and_cast_keys() {
        let c = Columns {
            columns: vec![
                ("id".into(), "bigint".into()),
                ("Region".into(), "text".into()),
            ],
            key: vec![0],
            int_key: true,
            collated: vec![false, true],
            by_value: false,
        };
        let t = QualifiedName::new("public", "t_new");
        let sql = c.summary_sql(
            &t,
            &KeyRange {
                lo: Some(1),
                hi: Some(5),
            },
        );
        assert!(
            sql.contains("hashtextextended(ROW(\"id\", \"Region\")::text, 0)"),
            "{sql}"
        );
        // By value: the collated column under "C"; the probe names the types only.
        let v = Columns {
            by_value: true,
            ..c.clone()
        };
        let whole = v.summary_sql(&t, &KeyRange::ALL);
        assert!(
            whole.contains("sum(hash_record_extended(ROW(\"id\", \"Region\" COLLATE \"C\"), 0))"),
            "{whole}"
        );
        assert_eq!(
            v.by_value_probe_sql(),
            "SELECT hash_record_extended(ROW(NULL::bigint, NULL::text COLLATE \"C\"), 0)"
        );
        assert!(sql.contains("WHERE \"id\" >= 1 AND \"id\" < 5"), "{sql}");
        let keys = vec![k("7"), k("it's")];
        assert!(
            c.delete_sql(&t, &keys)
                .ends_with("(\"id\") IN (VALUES ('7'::bigint), ('it''s'::bigint))")
        );
    }
}
