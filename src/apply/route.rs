//! Routing a change to its copy range by the server's order, for keys that are not a single
//! integer: text under its collation, uuid, numeric, dates and times, composite keys. The
//! comparison is never made in Rust, where a collation or a type's text form could order keys
//! otherwise than the copy's `WHERE` did: a session on the source is asked how many of the
//! ranges' cut points are at or below the key (its range number), with the cut points compiled
//! into one prepared statement, under each key column's type and collation.
//!
//! ```text
//!  key ('acme', '42') ──► cache? ──no──► SELECT count(*) FROM (VALUES cuts) b WHERE b <= key ──► range
//! ```
//! A key's range never changes during a migration, so answers are cached (bounded); once every
//! range is copied no key is looked up at all.

use std::collections::HashMap;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, Statement};

use super::compact::Key;
use crate::copy::ranges::{Bound, Bounds, KeyColumn};
use crate::error::{Error, Result};
use crate::pg::ident::quote_literal;

/// Keys whose range is remembered, at most (then the cache starts over).
const CACHE_KEYS: usize = 200_000;

/// The cut points of a migration's ranges over a key the server orders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerOrder {
    pub key: Vec<KeyColumn>,
    /// The lower bound of every range but the first, ascending.
    pub cuts: Vec<Bound>,
}

impl ServerOrder {
    /// From contiguous ranges (the first open below); `None` for a single range.
    pub fn new(key: Vec<KeyColumn>, ranges: &[Bounds]) -> Option<ServerOrder> {
        let cuts: Vec<Bound> = ranges.iter().skip(1).filter_map(|r| r.lo.clone()).collect();
        (!cuts.is_empty() && cuts.len() + 1 == ranges.len()).then_some(ServerOrder { key, cuts })
    }

    /// Columns the cut points are on: all of the key, or the first one for ranges recorded by
    /// an older pgrepart.
    fn width(&self) -> usize {
        self.cuts[0].len().min(self.key.len())
    }

    /// The statement giving a key's range number (pure): the number of cut points at or below
    /// it, the key's columns as `$1::text ...` cast to their types, compared as a row.
    pub fn lookup_sql(&self) -> String {
        let n = self.width();
        let typed = |expr: &str, c: &KeyColumn| match &c.collation {
            Some(coll) => format!("({expr})::{} COLLATE {coll}", c.type_sql),
            None => format!("({expr})::{}", c.type_sql),
        };
        let values: Vec<String> = self
            .cuts
            .iter()
            .map(|cut| {
                let cols: Vec<String> = cut[..n]
                    .iter()
                    .zip(&self.key)
                    .map(|(v, c)| typed(&quote_literal(v), c))
                    .collect();
                format!("({})", cols.join(", "))
            })
            .collect();
        let names: Vec<String> = (1..=n).map(|i| format!("k{i}")).collect();
        let params: Vec<String> = self.key[..n]
            .iter()
            .enumerate()
            .map(|(i, c)| typed(&format!("${}::text", i + 1), c))
            .collect();
        let (lhs, rhs) = if n == 1 {
            (format!("b.{}", names[0]), params[0].clone())
        } else {
            (
                format!(
                    "({})",
                    names
                        .iter()
                        .map(|k| format!("b.{k}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                format!("({})", params.join(", ")),
            )
        };
        format!(
            "SELECT count(*) FROM (VALUES {}) AS b({}) WHERE {lhs} <= {rhs}",
            values.join(", "),
            names.join(", ")
        )
    }
}

/// The source session that answers, its prepared lookup, and the answers so far.
pub struct Lookup {
    order: ServerOrder,
    source: Option<Config>,
    session: Option<(Client, Statement)>,
    cache: HashMap<Key, usize>,
}

impl Lookup {
    pub fn new(order: ServerOrder, source: Option<Config>) -> Lookup {
        Lookup {
            order,
            source,
            session: None,
            cache: HashMap::new(),
        }
    }

    pub fn ranges(&self) -> usize {
        self.order.cuts.len() + 1
    }

    /// The range number of `key`, asked of the source unless cached.
    pub async fn range_of(&mut self, key: &Key) -> Result<usize> {
        if let Some(&r) = self.cache.get(key) {
            return Ok(r);
        }
        if self.session.is_none() {
            let config = self
                .source
                .as_ref()
                .ok_or_else(|| Error::failed("routing a change needs a session on the source"))?;
            let client = crate::pg::connect(config, "pgrepart route").await?;
            let stmt = client
                .prepare(&self.order.lookup_sql())
                .await
                .map_err(|e| Error::db("preparing the range lookup", e))?;
            self.session = Some((client, stmt));
        }
        let (client, stmt) = self.session.as_ref().expect("connected above");
        let texts: Vec<&str> = key[..self.order.width()]
            .iter()
            .map(|b| std::str::from_utf8(b))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| Error::failed("a key in the change stream is not UTF-8"))?;
        let params: Vec<&(dyn ToSql + Sync)> =
            texts.iter().map(|t| t as &(dyn ToSql + Sync)).collect();
        let below: i64 = client
            .query_one(stmt, &params)
            .await
            .map_err(|e| Error::db("looking up a key's range", e))?
            .get(0);
        let range = (below.max(0) as usize).min(self.order.cuts.len());
        if self.cache.len() >= CACHE_KEYS {
            self.cache.clear();
        }
        self.cache.insert(key.clone(), range);
        Ok(range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: &str, coll: Option<&str>) -> KeyColumn {
        KeyColumn {
            name_sql: format!("\"{name}\""),
            type_sql: ty.into(),
            collation: coll.map(str::to_string),
        }
    }

    fn bound(v: &[&str]) -> Bound {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn cut_points_come_from_the_ranges_lower_bounds() {
        let ranges = crate::copy::ranges::ranges_from_cuts(vec![bound(&["b"]), bound(&["m"])]);
        let o = ServerOrder::new(vec![col("k", "text", None)], &ranges).unwrap();
        assert_eq!(o.cuts, vec![bound(&["b"]), bound(&["m"])]);
        assert_eq!(
            ServerOrder::new(vec![col("k", "text", None)], &[Bounds::ALL]),
            None
        );
    }

    #[test]
    fn the_lookup_compares_typed_rows_under_the_collation() {
        let o = ServerOrder {
            key: vec![
                col("tenant", "integer", None),
                col("name", "text", Some("\"de\"")),
            ],
            cuts: vec![bound(&["1", "x'y"]), bound(&["2", "a"])],
        };
        assert_eq!(
            o.lookup_sql(),
            "SELECT count(*) FROM (VALUES (('1')::integer, ('x''y')::text COLLATE \"de\"), \
             (('2')::integer, ('a')::text COLLATE \"de\")) AS b(k1, k2) \
             WHERE (b.k1, b.k2) <= (($1::text)::integer, ($2::text)::text COLLATE \"de\")"
        );
        let single = ServerOrder {
            key: vec![col("id", "uuid", None)],
            cuts: vec![bound(&["00000000-0000-0000-0000-000000000001"])],
        };
        assert_eq!(
            single.lookup_sql(),
            "SELECT count(*) FROM (VALUES (('00000000-0000-0000-0000-000000000001')::uuid)) AS b(k1) \
             WHERE b.k1 <= ($1::text)::uuid"
        );
    }
}
