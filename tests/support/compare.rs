//! Row-by-row comparison of a table with an expected set of rows (the writers' record) or with
//! another table.
//!
//! Rows are read as text (`order_date::text`, `amount::text` under DateStyle ISO), so the comparison
//! is exact and needs no date or decimal types. Reports never print large values: `details` shows as
//! its length and a 64-bit FNV-1a hash.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use tokio_postgres::Client;

use crate::support::schema::ident;

/// How many differences a report lists before it only counts.
const SHOWN: usize = 20;

/// One row of a seed-like table, keyed elsewhere by `id`. Values are the server's text forms.
#[derive(Clone, PartialEq, Eq)]
pub struct Row {
    /// `YYYY-MM-DD HH:MM:SS` (whole seconds).
    pub order_date: String,
    pub customer_id: i32,
    pub region: String,
    /// Two decimals, e.g. `12.30`.
    pub amount: Option<String>,
    pub details: Option<String>,
}

impl fmt::Debug for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{order_date: {}, customer_id: {}, region: {}, amount: {}, details: {}}}",
            self.order_date,
            self.customer_id,
            self.region,
            self.amount.as_deref().unwrap_or("NULL"),
            details_summary(&self.details)
        )
    }
}

/// `NULL`, or `len=N fnv=XXXXXXXXXXXXXXXX` (plus the text itself when it is short).
pub fn details_summary(details: &Option<String>) -> String {
    match details {
        None => "NULL".to_string(),
        Some(d) if d.len() <= 40 => format!("{d:?}"),
        Some(d) => format!("len={} fnv={:016x}", d.len(), fnv1a(d.as_bytes())),
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The names of the columns in which two rows differ.
pub fn differing_columns(a: &Row, b: &Row) -> Vec<&'static str> {
    let mut cols = Vec::new();
    if a.order_date != b.order_date {
        cols.push("order_date");
    }
    if a.customer_id != b.customer_id {
        cols.push("customer_id");
    }
    if a.region != b.region {
        cols.push("region");
    }
    if a.amount != b.amount {
        cols.push("amount");
    }
    if a.details != b.details {
        cols.push("details");
    }
    cols
}

/// Every row of `table` in id order, duplicates included (a broken partitioned copy can hold one id twice).
/// Sets the session's DateStyle to ISO first.
pub async fn read_rows(client: &Client, table: &str) -> Vec<(i64, Row)> {
    client
        .batch_execute("SET DateStyle = 'ISO, MDY'")
        .await
        .unwrap_or_else(|e| panic!("set DateStyle: {}", crate::support::describe(&e)));
    let sql = format!(
        "SELECT id, order_date::text, customer_id, region, amount::text, details FROM {} ORDER BY id",
        ident(table)
    );
    let rows = client
        .query(&sql, &[])
        .await
        .unwrap_or_else(|e| panic!("read {table}: {}", crate::support::describe(&e)));
    rows.iter()
        .map(|r| {
            let row = Row {
                order_date: r.get(1),
                customer_id: r.get(2),
                region: r.get(3),
                amount: r.get(4),
                details: r.get(5),
            };
            (r.get(0), row)
        })
        .collect()
}

/// `table` as a map by id. Panics if an id occurs twice.
pub async fn read_table(client: &Client, table: &str) -> BTreeMap<i64, Row> {
    let mut map = BTreeMap::new();
    for (id, row) in read_rows(client, table).await {
        assert!(
            map.insert(id, row).is_none(),
            "{table} holds id {id} more than once"
        );
    }
    map
}

/// What differs between a table and what it should hold.
#[derive(Debug, Default)]
pub struct Mismatch {
    pub table: String,
    pub expected_rows: usize,
    pub actual_rows: usize,
    /// Expected but absent.
    pub missing: Vec<i64>,
    /// Present but not expected.
    pub unexpected: Vec<i64>,
    /// Present more than once.
    pub duplicated: Vec<i64>,
    /// Present with other values: id, differing columns, expected row, actual row.
    pub differing: Vec<(i64, Vec<&'static str>, Row, Row)>,
}

impl Mismatch {
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty()
            && self.unexpected.is_empty()
            && self.duplicated.is_empty()
            && self.differing.is_empty()
    }

    /// Every id involved in a difference, sorted.
    pub fn ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .missing
            .iter()
            .chain(&self.unexpected)
            .chain(&self.duplicated)
            .copied()
            .chain(self.differing.iter().map(|d| d.0))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "table {} does not hold the expected rows: expected {} rows, found {}; \
             {} missing, {} unexpected, {} duplicated, {} differing",
            self.table,
            self.expected_rows,
            self.actual_rows,
            self.missing.len(),
            self.unexpected.len(),
            self.duplicated.len(),
            self.differing.len()
        )?;
        let list = |ids: &[i64]| {
            let shown: Vec<String> = ids.iter().take(SHOWN).map(i64::to_string).collect();
            let more = ids.len().saturating_sub(SHOWN);
            if more > 0 {
                format!("{} ... and {more} more", shown.join(", "))
            } else {
                shown.join(", ")
            }
        };
        if !self.missing.is_empty() {
            writeln!(f, "  missing ids: {}", list(&self.missing))?;
        }
        if !self.unexpected.is_empty() {
            writeln!(f, "  unexpected ids: {}", list(&self.unexpected))?;
        }
        if !self.duplicated.is_empty() {
            writeln!(f, "  duplicated ids: {}", list(&self.duplicated))?;
        }
        for (id, cols, expected, actual) in self.differing.iter().take(SHOWN) {
            writeln!(f, "  id {id} differs in {}:", cols.join(", "))?;
            writeln!(f, "    expected {expected:?}")?;
            writeln!(f, "    actual   {actual:?}")?;
        }
        if self.differing.len() > SHOWN {
            writeln!(
                f,
                "  ... and {} more differing rows",
                self.differing.len() - SHOWN
            )?;
        }
        Ok(())
    }
}

/// Compares rows read from a table (in id order, possibly with duplicates) with the expected map.
pub fn diff_rows(table: &str, actual: &[(i64, Row)], expected: &BTreeMap<i64, Row>) -> Mismatch {
    let mut m = Mismatch {
        table: table.to_string(),
        expected_rows: expected.len(),
        actual_rows: actual.len(),
        ..Mismatch::default()
    };
    let mut seen: BTreeMap<i64, &Row> = BTreeMap::new();
    for (id, row) in actual {
        if seen.insert(*id, row).is_some() {
            if m.duplicated.last() != Some(id) {
                m.duplicated.push(*id);
            }
            continue;
        }
        match expected.get(id) {
            None => m.unexpected.push(*id),
            Some(want) if want != row => {
                m.differing
                    .push((*id, differing_columns(want, row), want.clone(), row.clone()))
            }
            Some(_) => {}
        }
    }
    m.missing = expected
        .keys()
        .filter(|id| !seen.contains_key(id))
        .copied()
        .collect();
    m
}

/// Reads `table` and compares it with `expected`; `Err` describes every difference.
pub async fn check_table_matches(
    client: &Client,
    table: &str,
    expected: &BTreeMap<i64, Row>,
) -> Result<(), Mismatch> {
    let actual = read_rows(client, table).await;
    let m = diff_rows(table, &actual, expected);
    if m.is_empty() { Ok(()) } else { Err(m) }
}

/// Waits up to `within` until `table` holds exactly `expected`; panics with the differences if
/// it never does. For a run still applying the writers' last transactions: a lag of a few
/// kilobytes at the slot can be those very transactions.
pub async fn wait_table_matches(
    client: &Client,
    table: &str,
    expected: &BTreeMap<i64, Row>,
    within: Duration,
) {
    let matched = crate::support::poll_until(within, || async {
        check_table_matches(client, table, expected).await.is_ok()
    })
    .await;
    if !matched {
        assert_table_matches(client, table, expected).await;
    }
}

/// Panics, listing the first differences, unless `table` holds exactly `expected`.
pub async fn assert_table_matches(client: &Client, table: &str, expected: &BTreeMap<i64, Row>) {
    if let Err(m) = check_table_matches(client, table, expected).await {
        panic!("{m}");
    }
}

/// Panics, listing the first differences, unless `table_a` and `table_b` hold the same rows
/// (`table_a` is taken as the expected side).
pub async fn assert_same_rows(client: &Client, table_a: &str, table_b: &str) {
    let expected = read_table(client, table_a).await;
    let actual = read_rows(client, table_b).await;
    let m = diff_rows(table_b, &actual, &expected);
    if !m.is_empty() {
        panic!("compared with {table_a}: {m}");
    }
}
