//! Routing a change to its copy range by the server's order, for keys that are not a single
//! integer: text under its collation, uuid, numeric, dates and times, composite keys. The
//! comparison is never made in Rust, where a collation or a type's text form could order keys
//! otherwise than the copy's `WHERE` did: a session on the source is asked how many of the
//! ranges' cut points are at or below the key (its range number), with the cut points compiled
//! into one prepared statement, under each key column's type and collation.
//!
//! ```text
//!  keys of a batch ──► cache? ──no──► one round trip: the keys and the cut points sorted together
//!                                     by the server, each key's range = cut points sorted before it
//! ```
//! The applier hands over the keys of many changes at once ([`Lookup::ranges_of`]), so a backlog
//! costs a round trip per few thousand keys, not one per key. A key's range never changes during
//! a migration, so answers are cached (bounded); once every range is copied no key is looked up at
//! all and the session is closed.

use std::collections::HashMap;

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, Statement};

use super::compact::Key;
use crate::copy::ranges::{Bound, Bounds, KeyColumn};
use crate::error::{Error, Result};
use crate::pg::ident::quote_literal;

/// Keys whose range is remembered, at most (then the cache starts over).
const CACHE_KEYS: usize = 200_000;

/// Keys asked in one round trip, at most.
pub const BATCH_KEYS: usize = 4096;

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

    /// The statement giving the range numbers of many keys at once (pure): the key columns come
    /// as one `text[]` per column (`$1`, `$2`, ...), are cast to their types under their
    /// collations and sorted together with the cut points by the server, cut points before keys
    /// equal to them; a key's range number is the count of cut points up to it. Rows come in the
    /// keys' order (`ord`, from 1). The same order as the copy's `WHERE` row comparisons: a
    /// row's `ORDER BY` is the row comparison's, column by column.
    pub fn batch_sql(&self) -> String {
        let n = self.width();
        let typed = |expr: &str, c: &KeyColumn| match &c.collation {
            Some(coll) => format!("({expr})::{} COLLATE {coll}", c.type_sql),
            None => format!("({expr})::{}", c.type_sql),
        };
        let cuts: Vec<String> = self
            .cuts
            .iter()
            .map(|cut| {
                let cols: Vec<String> = cut[..n]
                    .iter()
                    .zip(&self.key)
                    .map(|(v, c)| typed(&quote_literal(v), c))
                    .collect();
                format!("({}, NULL::bigint)", cols.join(", "))
            })
            .collect();
        let names: Vec<String> = (1..=n).map(|i| format!("k{i}")).collect();
        let keys: Vec<String> = self.key[..n]
            .iter()
            .zip(&names)
            .map(|(c, k)| typed(&format!("u.{k}"), c))
            .collect();
        let arrays: Vec<String> = (1..=n).map(|i| format!("${i}::text[]")).collect();
        let order: Vec<String> = names.iter().map(|k| format!("m.{k}")).collect();
        format!(
            "SELECT s.ord, s.below FROM (SELECT m.ord, count(*) FILTER (WHERE m.ord IS NULL) \
             OVER (ORDER BY {}, m.ord NULLS FIRST ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS below \
             FROM (VALUES {} UNION ALL SELECT {}, u.ord FROM unnest({}) WITH ORDINALITY AS u({}, ord)) \
             AS m({}, ord)) AS s WHERE s.ord IS NOT NULL ORDER BY s.ord",
            order.join(", "),
            cuts.join(", "),
            keys.join(", "),
            arrays.join(", "),
            names.join(", "),
            names.join(", ")
        )
    }
}

/// Work done by a [`Lookup`]: keys asked of the server, round trips, and time spent in them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LookupStats {
    pub keys: u64,
    pub round_trips: u64,
    pub micros: u64,
}

/// The source session that answers, its prepared lookup, and the answers so far.
pub struct Lookup {
    order: ServerOrder,
    source: Option<Config>,
    session: Option<(Client, Statement)>,
    cache: HashMap<Key, usize>,
    stats: LookupStats,
}

impl Lookup {
    pub fn new(order: ServerOrder, source: Option<Config>) -> Lookup {
        Lookup {
            order,
            source,
            session: None,
            cache: HashMap::new(),
            stats: LookupStats::default(),
        }
    }

    pub fn ranges(&self) -> usize {
        self.order.cuts.len() + 1
    }

    pub fn stats(&self) -> LookupStats {
        self.stats
    }

    /// The range of `key` if it is known without asking.
    pub fn cached(&self, key: &Key) -> Option<usize> {
        self.cache.get(key).copied()
    }

    /// The range number of `key`, asked of the source unless cached.
    pub async fn range_of(&mut self, key: &Key) -> Result<usize> {
        Ok(self.ranges_of(std::slice::from_ref(key)).await?[0])
    }

    /// The range numbers of `keys`, in their order: the ones not cached are asked of the source,
    /// [`BATCH_KEYS`] at a time.
    pub async fn ranges_of(&mut self, keys: &[Key]) -> Result<Vec<usize>> {
        let mut unknown: Vec<&Key> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for k in keys {
            if !self.cache.contains_key(k) && seen.insert(k) {
                unknown.push(k);
            }
        }
        let mut answers: HashMap<&Key, usize> = HashMap::with_capacity(unknown.len());
        for chunk in unknown.chunks(BATCH_KEYS) {
            for (k, r) in chunk.iter().zip(self.ask(chunk).await?) {
                answers.insert(k, r);
            }
        }
        let out = keys
            .iter()
            .map(|k| self.cache.get(k).or_else(|| answers.get(k)).copied())
            .collect::<Option<Vec<usize>>>()
            .expect("every key answered");
        if self.cache.len() + answers.len() > CACHE_KEYS {
            self.cache.clear();
        }
        for (k, r) in answers {
            self.cache.insert(k.clone(), r);
        }
        Ok(out)
    }

    /// One round trip: the range numbers of `keys`. A session lost meanwhile (terminated, the
    /// connection dropped) is opened again once and the keys asked again: the answer depends on
    /// the cut points only.
    async fn ask(&mut self, keys: &[&Key]) -> Result<Vec<usize>> {
        let width = self.order.width();
        let mut columns: Vec<Vec<&str>> = vec![Vec::with_capacity(keys.len()); width];
        for key in keys {
            for (i, part) in key[..width].iter().enumerate() {
                columns[i].push(
                    std::str::from_utf8(part)
                        .map_err(|_| Error::failed("a key in the change stream is not UTF-8"))?,
                );
            }
        }
        let params: Vec<&(dyn ToSql + Sync)> =
            columns.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
        let started = std::time::Instant::now();
        let mut retried = false;
        let rows = loop {
            let (client, stmt) = self.session().await?;
            match client.query(stmt, &params).await {
                Ok(rows) => break rows,
                Err(e) => {
                    // A new session next time (this one may be gone).
                    self.session = None;
                    let err = Error::db("looking up the ranges of changed keys", e);
                    if retried || !err.is_transient() {
                        return Err(err);
                    }
                    tracing::warn!(error = %err, "the session routing keys to their range failed; opening it again");
                    retried = true;
                }
            }
        };
        if rows.len() != keys.len() {
            return Err(Error::failed(format!(
                "the range lookup answered {} keys of {}",
                rows.len(),
                keys.len()
            )));
        }
        let last = self.order.cuts.len();
        let ranges = rows
            .iter()
            .map(|r| (r.get::<_, i64>(1).max(0) as usize).min(last))
            .collect();
        self.stats.keys += keys.len() as u64;
        self.stats.round_trips += 1;
        self.stats.micros += started.elapsed().as_micros() as u64;
        Ok(ranges)
    }

    /// The routing session and its prepared statement, opened if need be.
    async fn session(&mut self) -> Result<(&Client, &Statement)> {
        if self.session.is_none() {
            let config = self
                .source
                .as_ref()
                .ok_or_else(|| Error::failed("routing a change needs a session on the source"))?;
            let client = crate::pg::connect(config, "pgrepart route").await?;
            let stmt = client
                .prepare(&self.order.batch_sql())
                .await
                .map_err(|e| Error::db("preparing the range lookup", e))?;
            self.session = Some((client, stmt));
        }
        let (client, stmt) = self.session.as_ref().expect("opened above");
        Ok((client, stmt))
    }

    /// Closes the session (every range is copied: nothing is looked up any more).
    pub fn close(&mut self) {
        self.session = None;
        self.cache = HashMap::new();
        self.stats = LookupStats::default();
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
    fn the_lookup_sorts_typed_keys_with_the_cut_points_under_the_collation() {
        let o = ServerOrder {
            key: vec![
                col("tenant", "integer", None),
                col("name", "text", Some("\"de\"")),
            ],
            cuts: vec![bound(&["1", "x'y"]), bound(&["2", "a"])],
        };
        assert_eq!(
            o.batch_sql(),
            "SELECT s.ord, s.below FROM (SELECT m.ord, count(*) FILTER (WHERE m.ord IS NULL) \
             OVER (ORDER BY m.k1, m.k2, m.ord NULLS FIRST ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS below \
             FROM (VALUES (('1')::integer, ('x''y')::text COLLATE \"de\", NULL::bigint), \
             (('2')::integer, ('a')::text COLLATE \"de\", NULL::bigint) \
             UNION ALL SELECT (u.k1)::integer, (u.k2)::text COLLATE \"de\", u.ord \
             FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(k1, k2, ord)) \
             AS m(k1, k2, ord)) AS s WHERE s.ord IS NOT NULL ORDER BY s.ord"
        );
        let single = ServerOrder {
            key: vec![col("id", "uuid", None)],
            cuts: vec![bound(&["00000000-0000-0000-0000-000000000001"])],
        };
        assert_eq!(
            single.batch_sql(),
            "SELECT s.ord, s.below FROM (SELECT m.ord, count(*) FILTER (WHERE m.ord IS NULL) \
             OVER (ORDER BY m.k1, m.ord NULLS FIRST ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS below \
             FROM (VALUES (('00000000-0000-0000-0000-000000000001')::uuid, NULL::bigint) \
             UNION ALL SELECT (u.k1)::uuid, u.ord FROM unnest($1::text[]) WITH ORDINALITY AS u(k1, ord)) \
             AS m(k1, ord)) AS s WHERE s.ord IS NOT NULL ORDER BY s.ord"
        );
        // Cut points recorded on the first column only (an older pgrepart): one array.
        let prefix = ServerOrder {
            key: vec![col("tenant", "integer", None), col("id", "bigint", None)],
            cuts: vec![bound(&["5"])],
        };
        assert!(
            prefix
                .batch_sql()
                .contains("unnest($1::text[]) WITH ORDINALITY AS u(k1, ord)")
        );
    }
}
