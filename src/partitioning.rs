//! Generated partition lists: `--interval` (RANGE), `--modulus` (HASH) and
//! `--list-values-from-data` (LIST) turned into concrete `--partition` specs.
//!
//! ```text
//! generator flags ──► Generator (validated, before I/O)
//! source table    ──► DataFacts (min/max or distinct values; `read_data_facts`)
//! Generator + DataFacts ──► generate() (pure) ──► Vec<PartitionSpec>  (stored in the migration's spec)
//! ```
//! The list depends on the data, so it is computed once when a migration starts and stored; a
//! resumed run uses the stored list and compares only the generator arguments.

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::pg::catalog::TableInfo;
use crate::pg::ident::{QualifiedName, quote_ident, quote_literal};
use crate::spec::{Method, PartitionBy, PartitionSpec};

/// Type oids of the columns the generators understand.
const DATE: u32 = 1082;
const TIMESTAMP: u32 = 1114;
const TIMESTAMPTZ: u32 = 1184;
const INTS: [u32; 3] = [20, 21, 23];

/// Default number of future RANGE partitions.
pub const DEFAULT_PREMAKE: u32 = 4;
/// Default cap on LIST partitions made from data.
pub const DEFAULT_MAX_LIST: usize = 50;
/// Default cap on RANGE partitions.
pub const DEFAULT_MAX_RANGE: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    Day,
    Week,
    Month,
    Year,
    /// A width for integer partition keys.
    Int(i64),
}

impl Interval {
    pub fn parse(text: &str) -> Result<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "day" | "daily" => Ok(Interval::Day),
            "week" | "weekly" => Ok(Interval::Week),
            "month" | "monthly" => Ok(Interval::Month),
            "year" | "yearly" => Ok(Interval::Year),
            other => match other.parse::<i64>() {
                Ok(n) if n > 0 => Ok(Interval::Int(n)),
                _ => Err(Error::refused(format!("--interval {text:?} is not understood"))
                    .with_hint("use day, week, month or year for date/timestamp keys, or a positive integer width for integer keys")),
            },
        }
    }
}

/// How to generate the partitions; stored with the migration so a rerun can be compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Generator {
    Range {
        interval: Interval,
        premake: u32,
        default: bool,
        max_partitions: usize,
    },
    Hash {
        modulus: u32,
    },
    ListFromData {
        max_partitions: usize,
        default: bool,
    },
}

/// The generator flags as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct GeneratorFlags {
    pub interval: Option<String>,
    pub premake: Option<u32>,
    pub no_default: bool,
    pub modulus: Option<u32>,
    pub list_values_from_data: bool,
    pub max_partitions: Option<usize>,
}

impl GeneratorFlags {
    fn any(&self) -> bool {
        self.interval.is_some() || self.modulus.is_some() || self.list_values_from_data
    }
}

/// Validates the generator flags against the method; `Ok(None)` when no generator was asked for.
pub fn generator_from_flags(
    by: &PartitionBy,
    flags: &GeneratorFlags,
    explicit_partitions: bool,
) -> Result<Option<Generator>> {
    let kinds = [
        flags.interval.is_some(),
        flags.modulus.is_some(),
        flags.list_values_from_data,
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if kinds > 1 {
        return Err(Error::refused(
            "--interval, --modulus and --list-values-from-data cannot be combined",
        )
        .with_hint(
            "--interval goes with RANGE, --modulus with HASH, --list-values-from-data with LIST",
        ));
    }
    if !flags.any() {
        if flags.premake.is_some() || flags.no_default || flags.max_partitions.is_some() {
            return Err(Error::refused(
                "--premake, --no-default and --max-partitions only apply to generated partitions",
            )
            .with_hint("add --interval (RANGE) or --list-values-from-data (LIST)"));
        }
        return Ok(None);
    }
    if explicit_partitions {
        return Err(Error::refused(
            "--partition cannot be combined with generated partitions",
        )
        .with_hint(
            "either list every partition with --partition, or let --interval / --modulus / --list-values-from-data make them",
        ));
    }
    let generator = if let Some(interval) = &flags.interval {
        if by.method != Method::Range || by.columns.len() != 1 {
            return Err(Error::refused(
                "--interval needs --partition-by \"RANGE (column)\" with one column",
            ));
        }
        Generator::Range {
            interval: Interval::parse(interval)?,
            premake: flags.premake.unwrap_or(DEFAULT_PREMAKE),
            default: !flags.no_default,
            max_partitions: flags.max_partitions.unwrap_or(DEFAULT_MAX_RANGE),
        }
    } else if let Some(modulus) = flags.modulus {
        if by.method != Method::Hash {
            return Err(Error::refused(
                "--modulus needs --partition-by \"HASH (column, ...)\"",
            ));
        }
        if flags.premake.is_some() || flags.no_default || flags.max_partitions.is_some() {
            return Err(Error::refused(
                "--premake, --no-default and --max-partitions do not apply to HASH partitions",
            ));
        }
        if !(1..=1024).contains(&modulus) {
            return Err(
                Error::refused(format!("--modulus {modulus} is out of range"))
                    .with_hint("use 1 to 1024 partitions"),
            );
        }
        Generator::Hash { modulus }
    } else {
        if by.method != Method::List {
            return Err(Error::refused(
                "--list-values-from-data needs --partition-by \"LIST (column)\"",
            ));
        }
        if flags.premake.is_some() {
            return Err(Error::refused("--premake only applies to RANGE partitions"));
        }
        Generator::ListFromData {
            max_partitions: flags.max_partitions.unwrap_or(DEFAULT_MAX_LIST),
            default: !flags.no_default,
        }
    };
    Ok(Some(generator))
}

/// What the generators need to know about the data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataFacts {
    /// Type oid of the (first) partition-key column.
    pub column_type: u32,
    /// Min and max of a date/timestamp key as `YYYY-MM-DD` (in the session's time zone).
    pub date_extent: Option<(String, String)>,
    /// Min and max of an integer key.
    pub int_extent: Option<(i64, i64)>,
    /// The server's `current_date`, for empty tables.
    pub today: Option<String>,
    /// Distinct values of a LIST key as text, in the column's order (None = NULL); at most
    /// `max_partitions + 1` of them.
    pub distinct: Vec<Option<String>>,
}

/// Reads the facts `generator` needs from `table`. Nothing is read for HASH.
pub async fn read_data_facts(
    client: &Client,
    table: &TableInfo,
    by: &PartitionBy,
    generator: &Generator,
) -> Result<DataFacts> {
    let column = &by.columns[0];
    let Some(col) = table.column(column) else {
        return Ok(DataFacts::default());
    };
    let mut facts = DataFacts {
        column_type: col.type_oid,
        ..Default::default()
    };
    let c = quote_ident(column);
    let t = table.name.sql();
    let ctx = |what: &str| format!("reading the {what} of {column} to generate partitions");
    match generator {
        Generator::Hash { .. } => {}
        Generator::Range { .. } if [DATE, TIMESTAMP, TIMESTAMPTZ].contains(&col.type_oid) => {
            let row = client
                .query_one(
                    &format!(
                        "SELECT min({c})::date::text, max({c})::date::text, current_date::text FROM {t}"
                    ),
                    &[],
                )
                .await
                .map_err(|e| Error::db(ctx("range"), e))?;
            let (min, max): (Option<String>, Option<String>) = (row.get(0), row.get(1));
            facts.date_extent = min.zip(max);
            facts.today = row.get(2);
        }
        Generator::Range { .. } if INTS.contains(&col.type_oid) => {
            let row = client
                .query_one(
                    &format!("SELECT min({c})::bigint, max({c})::bigint FROM {t}"),
                    &[],
                )
                .await
                .map_err(|e| Error::db(ctx("range"), e))?;
            let (min, max): (Option<i64>, Option<i64>) = (row.get(0), row.get(1));
            facts.int_extent = min.zip(max);
        }
        Generator::Range { .. } => {}
        Generator::ListFromData { max_partitions, .. } => {
            let limit = *max_partitions as i64 + 1;
            facts.distinct = client
                .query(
                    &format!(
                        "SELECT {c}::text FROM {t} GROUP BY {c} ORDER BY {c} NULLS LAST LIMIT {limit}"
                    ),
                    &[],
                )
                .await
                .map_err(|e| Error::db(ctx("distinct values"), e))?
                .into_iter()
                .map(|r| r.get(0))
                .collect();
        }
    }
    Ok(facts)
}

/// The partitions of `table` (the source table's name: partitions are named after it).
pub fn generate(
    table: &QualifiedName,
    by: &PartitionBy,
    generator: &Generator,
    data: &DataFacts,
) -> Result<Vec<PartitionSpec>> {
    let mut names = Names::new(&table.name);
    let column = &by.columns[0];
    let mut parts = Vec::new();
    match generator {
        Generator::Hash { modulus } => {
            for i in 0..*modulus {
                parts.push(PartitionSpec {
                    name: names.take(&format!("p{i}")),
                    bound: format!("FOR VALUES WITH (MODULUS {modulus}, REMAINDER {i})"),
                });
            }
        }
        Generator::Range {
            interval,
            premake,
            default,
            max_partitions,
        } => {
            let default_name = default.then(|| names.take("default"));
            let periods = range_periods(column, *interval, *premake, data)?;
            if periods.len() > *max_partitions {
                return Err(Error::refused(format!(
                    "--interval would make {} partitions of {column}, more than --max-partitions {max_partitions}",
                    periods.len()
                ))
                .with_hint("use a coarser --interval, or raise --max-partitions"));
            }
            for p in periods {
                parts.push(PartitionSpec {
                    name: names.take(&p.suffix),
                    bound: format!("FOR VALUES FROM ({}) TO ({})", p.from, p.to),
                });
            }
            if let Some(name) = default_name {
                parts.push(PartitionSpec {
                    name,
                    bound: "DEFAULT".into(),
                });
            }
        }
        Generator::ListFromData {
            max_partitions,
            default,
        } => {
            if data.distinct.len() > *max_partitions {
                return Err(Error::refused(format!(
                    "{column} has more than {max_partitions} distinct values; one partition each would be too many"
                ))
                .with_hint("raise --max-partitions, or list the partitions with --partition (values that share one partition, and a DEFAULT)"));
            }
            let default_name = default.then(|| names.take("default"));
            for v in &data.distinct {
                let (suffix, literal) = match v {
                    None => ("null".to_string(), "NULL".to_string()),
                    Some(v) => (suffix_of(v), quote_literal(v)),
                };
                parts.push(PartitionSpec {
                    name: names.take(&suffix),
                    bound: format!("FOR VALUES IN ({literal})"),
                });
            }
            if let Some(name) = default_name {
                parts.push(PartitionSpec {
                    name,
                    bound: "DEFAULT".into(),
                });
            }
        }
    }
    if parts.is_empty() {
        return Err(Error::refused(format!(
            "{} is empty: there are no values of {column} to make partitions from",
            table
        ))
        .with_hint("list the partitions with --partition instead"));
    }
    Ok(parts)
}

/// Partition names `<table>_<suffix>`, unique, at most 63 bytes (the table part is cut to fit).
struct Names {
    table: String,
    taken: std::collections::HashSet<String>,
}

impl Names {
    fn new(table: &str) -> Self {
        Names {
            table: table.to_string(),
            taken: Default::default(),
        }
    }

    fn take(&mut self, suffix: &str) -> String {
        // At most 40 bytes of suffix, so that the table's name always shows.
        let suffix = truncate_ident_to(suffix, 40).to_string();
        let mut n = 1;
        loop {
            let s = if n == 1 {
                suffix.clone()
            } else {
                format!("{}_{n}", truncate_ident_to(&suffix, 36))
            };
            let room = 63usize.saturating_sub(s.len() + 1);
            let name = format!("{}_{s}", truncate_ident_to(&self.table, room));
            if self.taken.insert(name.clone()) {
                return name;
            }
            n += 1;
        }
    }
}

fn truncate_ident_to(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `US` -> `us`, `New York` -> `new_york`, `é` -> `_`; never empty.
pub fn suffix_of(value: &str) -> String {
    let s: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() { "empty".into() } else { s }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Period {
    suffix: String,
    /// SQL literals of the bounds.
    from: String,
    to: String,
}

fn range_periods(
    column: &str,
    interval: Interval,
    premake: u32,
    data: &DataFacts,
) -> Result<Vec<Period>> {
    let temporal = [DATE, TIMESTAMP, TIMESTAMPTZ].contains(&data.column_type);
    let integer = INTS.contains(&data.column_type);
    let mut out = Vec::new();
    match interval {
        Interval::Int(width) => {
            if !integer {
                return Err(Error::refused(format!(
                    "--interval {width} needs an integer partition key, and {column} is not one"
                ))
                .with_hint("use --interval day|week|month|year for date and timestamp keys"));
            }
            let (min, max) = data.int_extent.unwrap_or((0, 0));
            let mut lo = min.div_euclid(width) * width;
            let mut extra = 0;
            loop {
                let hi = lo.saturating_add(width);
                out.push(Period {
                    suffix: if lo < 0 {
                        format!("m{}", lo.unsigned_abs())
                    } else {
                        lo.to_string()
                    },
                    from: lo.to_string(),
                    to: hi.to_string(),
                });
                if hi > max {
                    extra += 1;
                }
                if (hi > max && extra > premake) || hi == i64::MAX || out.len() > 100_000 {
                    break;
                }
                lo = hi;
            }
        }
        _ => {
            if !temporal {
                return Err(Error::refused(format!(
                    "--interval {} needs a date or timestamp partition key, and {column} is not one",
                    format!("{interval:?}").to_lowercase()
                ))
                .with_hint("use a numeric --interval width for integer keys, or list the partitions with --partition"));
            }
            let (min, max) = temporal_extent(data)?;
            let mut start = interval_start(interval, min);
            let mut extra = 0;
            loop {
                let next = interval_next(interval, start);
                out.push(Period {
                    suffix: interval_suffix(interval, start),
                    from: quote_literal(&start.to_string()),
                    to: quote_literal(&next.to_string()),
                });
                if next > max {
                    extra += 1;
                }
                if (next > max && extra > premake) || out.len() > 100_000 {
                    break;
                }
                start = next;
            }
        }
    }
    Ok(out)
}

/// The dates RANGE partitions must cover before the premade ones: from the data's min to the
/// later of its max and today, so that a table whose newest rows are old still gets partitions
/// for today's writes (and the premade future after today). An empty table starts at today.
fn temporal_extent(data: &DataFacts) -> Result<(Date, Date)> {
    let today = data.today.as_deref().map(Date::parse).transpose()?;
    match (&data.date_extent, today) {
        (Some((a, b)), today) => {
            let (min, max) = (Date::parse(a)?, Date::parse(b)?);
            Ok((min, today.map_or(max, |t| max.max(t))))
        }
        (None, Some(t)) => Ok((t, t)),
        (None, None) => Err(Error::failed("no date to start the partitions from")),
    }
}

fn interval_start(i: Interval, d: Date) -> Date {
    match i {
        Interval::Day | Interval::Int(_) => d,
        Interval::Week => Date::from_days(d.days() - d.weekday_from_monday() as i64),
        Interval::Month => Date { day: 1, ..d },
        Interval::Year => Date {
            month: 1,
            day: 1,
            ..d
        },
    }
}

fn interval_next(i: Interval, d: Date) -> Date {
    match i {
        Interval::Day | Interval::Int(_) => Date::from_days(d.days() + 1),
        Interval::Week => Date::from_days(d.days() + 7),
        Interval::Month if d.month == 12 => Date {
            year: d.year + 1,
            month: 1,
            day: 1,
        },
        Interval::Month => Date {
            month: d.month + 1,
            day: 1,
            ..d
        },
        Interval::Year => Date {
            year: d.year + 1,
            month: 1,
            day: 1,
        },
    }
}

fn interval_suffix(i: Interval, d: Date) -> String {
    match i {
        Interval::Day | Interval::Int(_) => format!("{:04}_{:02}_{:02}", d.year, d.month, d.day),
        Interval::Week => {
            let (y, w) = d.iso_week();
            format!("{y:04}_w{w:02}")
        }
        Interval::Month => format!("{:04}_{:02}", d.year, d.month),
        Interval::Year => format!("{:04}", d.year),
    }
}

/// A proleptic Gregorian calendar date (years 1..9999 are all pgrepart needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date {
    pub year: i32,
    pub month: u32,
    pub day: u32,
}

impl Date {
    /// Parses `YYYY-MM-DD` (PostgreSQL's ISO date output).
    pub fn parse(text: &str) -> Result<Date> {
        let bad = || {
            Error::refused(format!("cannot make partitions from the date {text:?}")).with_hint(
                "partition keys holding infinity or dates BC need explicit --partition bounds",
            )
        };
        let mut it = text.split('-');
        let (Some(y), Some(m), Some(d), None) = (it.next(), it.next(), it.next(), it.next()) else {
            return Err(bad());
        };
        let (year, month, day) = (
            y.parse::<i32>().map_err(|_| bad())?,
            m.parse::<u32>().map_err(|_| bad())?,
            d.parse::<u32>().map_err(|_| bad())?,
        );
        if !(1..=9999).contains(&year) || !(1..=12).contains(&month) || day == 0 || day > 31 {
            return Err(bad());
        }
        Ok(Date { year, month, day })
    }

    /// Days since 1970-01-01 (Howard Hinnant's days_from_civil).
    pub fn days(self) -> i64 {
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(self.month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146097 + doe - 719468
    }

    pub fn from_days(z: i64) -> Date {
        let z = z + 719468;
        let era = z.div_euclid(146097);
        let doe = z - era * 146097;
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = (yoe + era * 400 + i64::from(month <= 2)) as i32;
        Date { year, month, day }
    }

    /// 0 for Monday .. 6 for Sunday.
    pub fn weekday_from_monday(self) -> u32 {
        // 1970-01-01 was a Thursday (3).
        ((self.days() + 3).rem_euclid(7)) as u32
    }

    /// ISO 8601 (week-year, week number).
    pub fn iso_week(self) -> (i32, u32) {
        let thursday = Date::from_days(self.days() - self.weekday_from_monday() as i64 + 3);
        let jan1 = Date {
            year: thursday.year,
            month: 1,
            day: 1,
        };
        let week = ((thursday.days() - jan1.days()) / 7 + 1) as u32;
        (thursday.year, week)
    }

    /// UTC date and time of a Unix timestamp, `YYYY-MM-DD HH:MM:SS UTC`.
    pub fn format_unix_utc(secs: i64) -> String {
        let d = Date::from_days(secs.div_euclid(86400));
        let s = secs.rem_euclid(86400);
        format!("{d} {:02}:{:02}:{:02} UTC", s / 3600, (s / 60) % 60, s % 60)
    }
}

impl std::fmt::Display for Date {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// Whether HASH partitions with these bounds (as `pg_get_expr` shows them: `FOR VALUES WITH
/// (modulus 8, remainder 0)`) take every row (pure): PostgreSQL makes each modulus a factor of
/// the next larger and lets no two partitions overlap, so with M the largest modulus a partition
/// of modulus m takes M/m of the M remainders, and together they take all when those add up to M.
/// A NULL key hashes like any value. False when a bound is not of that form.
pub fn hash_bounds_take_every_row(bounds: &[String]) -> bool {
    let parsed: Option<Vec<(u64, u64)>> = bounds.iter().map(|b| hash_bound(b)).collect();
    let Some(parsed) = parsed else {
        return false;
    };
    let Some(largest) = parsed.iter().map(|&(m, _)| m).max() else {
        return false;
    };
    let mut taken = 0;
    for &(m, r) in &parsed {
        if r >= m || largest % m != 0 {
            return false;
        }
        taken += largest / m;
    }
    taken == largest
}

/// `(modulus, remainder)` of `FOR VALUES WITH (modulus M, remainder R)` (any case, any spaces).
fn hash_bound(bound: &str) -> Option<(u64, u64)> {
    let lower = bound.to_ascii_lowercase();
    let inner = lower
        .trim()
        .strip_prefix("for values with")?
        .trim()
        .strip_prefix('(')?
        .strip_suffix(')')?;
    let (m, r) = inner.split_once(',')?;
    let m = m.trim().strip_prefix("modulus")?.trim().parse().ok()?;
    let r = r.trim().strip_prefix("remainder")?.trim().parse().ok()?;
    (m > 0).then_some((m, r))
}

#[cfg(test)]
mod tests {
    #[test]
    fn hash_partitions_take_every_row_only_when_their_remainders_add_up() {
        let b = |v: &[(u64, u64)]| -> Vec<String> {
            v.iter()
                .map(|(m, r)| format!("FOR VALUES WITH (modulus {m}, remainder {r})"))
                .collect()
        };
        assert!(super::hash_bounds_take_every_row(&b(&[
            (4, 0),
            (4, 1),
            (4, 2),
            (4, 3)
        ])));
        // Mixed moduli: 2 of 4 remainders, then 1 each.
        assert!(super::hash_bounds_take_every_row(&b(&[
            (2, 0),
            (4, 1),
            (4, 3)
        ])));
        // One remainder missing.
        assert!(!super::hash_bounds_take_every_row(&b(&[
            (4, 0),
            (4, 1),
            (4, 2)
        ])));
        assert!(!super::hash_bounds_take_every_row(&b(&[(2, 0), (4, 1)])));
        assert!(!super::hash_bounds_take_every_row(&[]));
        // Not a HASH bound, or one not understood: the rows are scanned.
        assert!(!super::hash_bounds_take_every_row(&[
            "FOR VALUES IN (1)".into()
        ]));
        assert!(!super::hash_bounds_take_every_row(&["DEFAULT".into()]));
        assert!(super::hash_bounds_take_every_row(&[
            "FOR VALUES WITH (MODULUS 1, REMAINDER 0)".into()
        ]));
    }

    use super::*;

    fn table() -> QualifiedName {
        QualifiedName::new("public", "orders")
    }

    fn flags() -> GeneratorFlags {
        GeneratorFlags::default()
    }

    fn names(parts: &[PartitionSpec]) -> Vec<&str> {
        parts.iter().map(|p| p.name.as_str()).collect()
    }

    fn range(interval: &str, premake: u32, default: bool) -> Generator {
        Generator::Range {
            interval: Interval::parse(interval).unwrap(),
            premake,
            default,
            max_partitions: DEFAULT_MAX_RANGE,
        }
    }

    fn dates(min: &str, max: &str) -> DataFacts {
        DataFacts {
            column_type: TIMESTAMP,
            date_extent: Some((min.into(), max.into())),
            today: Some("2024-01-01".into()),
            ..Default::default()
        }
    }

    #[test]
    fn dates_round_trip_through_day_numbers() {
        for (text, days) in [
            ("1970-01-01", 0),
            ("2000-02-29", 11016),
            ("2024-03-01", 19783),
            ("1969-12-31", -1),
        ] {
            let d = Date::parse(text).unwrap();
            assert_eq!(d.days(), days, "{text}");
            assert_eq!(Date::from_days(days), d);
            assert_eq!(d.to_string(), text);
        }
        assert!(Date::parse("infinity").is_err());
        assert!(Date::parse("2024-13-01").is_err());
        assert_eq!(
            Date::format_unix_utc(1_700_000_000),
            "2023-11-14 22:13:20 UTC"
        );
    }

    #[test]
    fn iso_weeks_follow_the_thursday_rule() {
        let w = |s: &str| Date::parse(s).unwrap().iso_week();
        assert_eq!(w("2024-01-01"), (2024, 1)); // a Monday
        assert_eq!(w("2021-01-03"), (2020, 53)); // a Sunday in 2020's last week
        assert_eq!(w("2024-12-30"), (2025, 1));
        assert_eq!(Date::parse("2024-01-17").unwrap().weekday_from_monday(), 2);
    }

    #[test]
    fn monthly_partitions_cover_the_data_then_premake_more_then_default() {
        let by = PartitionBy::parse("RANGE (order_date)").unwrap();
        let parts = generate(
            &table(),
            &by,
            &range("month", 2, true),
            &dates("2024-11-15", "2025-01-03"),
        )
        .unwrap();
        assert_eq!(
            names(&parts),
            vec![
                "orders_2024_11",
                "orders_2024_12",
                "orders_2025_01",
                "orders_2025_02",
                "orders_2025_03",
                "orders_default"
            ]
        );
        assert_eq!(
            parts[1].bound,
            "FOR VALUES FROM ('2024-12-01') TO ('2025-01-01')"
        );
        assert!(parts[5].is_default());
    }

    #[test]
    fn day_week_and_year_suffixes_are_readable() {
        let by = PartitionBy::parse("RANGE (d)").unwrap();
        let day = generate(
            &table(),
            &by,
            &range("day", 0, false),
            &dates("2024-02-28", "2024-03-01"),
        )
        .unwrap();
        assert_eq!(
            names(&day),
            vec![
                "orders_2024_02_28",
                "orders_2024_02_29",
                "orders_2024_03_01"
            ]
        );
        assert_eq!(
            day[2].bound,
            "FOR VALUES FROM ('2024-03-01') TO ('2024-03-02')"
        );
        let week = generate(
            &table(),
            &by,
            &range("week", 1, false),
            &dates("2024-01-17", "2024-01-17"),
        )
        .unwrap();
        assert_eq!(names(&week), vec!["orders_2024_w03", "orders_2024_w04"]);
        assert_eq!(
            week[0].bound,
            "FOR VALUES FROM ('2024-01-15') TO ('2024-01-22')"
        );
        let year = generate(
            &table(),
            &by,
            &range("year", 1, true),
            &dates("2023-05-01", "2024-12-31"),
        )
        .unwrap();
        assert_eq!(
            names(&year),
            vec![
                "orders_2023",
                "orders_2024",
                "orders_2025",
                "orders_default"
            ]
        );
    }

    #[test]
    fn an_empty_table_starts_at_today() {
        let by = PartitionBy::parse("RANGE (d)").unwrap();
        let data = DataFacts {
            column_type: DATE,
            today: Some("2026-05-20".into()),
            ..Default::default()
        };
        let parts = generate(&table(), &by, &range("month", 1, false), &data).unwrap();
        assert_eq!(names(&parts), vec!["orders_2026_05", "orders_2026_06"]);
    }

    #[test]
    fn old_data_still_gets_partitions_up_to_today_then_the_premade_ones() {
        let by = PartitionBy::parse("RANGE (d)").unwrap();
        let mut data = dates("2023-11-20", "2024-01-10");
        data.today = Some("2024-04-02".into());
        let parts = generate(&table(), &by, &range("month", 2, true), &data).unwrap();
        assert_eq!(
            names(&parts),
            vec![
                "orders_2023_11",
                "orders_2023_12",
                "orders_2024_01",
                "orders_2024_02",
                "orders_2024_03",
                "orders_2024_04",
                "orders_2024_05",
                "orders_2024_06",
                "orders_default"
            ]
        );
        // Data newer than today: today changes nothing.
        let mut future = dates("2024-05-03", "2024-06-01");
        future.today = Some("2024-04-02".into());
        let parts = generate(&table(), &by, &range("month", 1, false), &future).unwrap();
        assert_eq!(
            names(&parts),
            vec!["orders_2024_05", "orders_2024_06", "orders_2024_07"]
        );
        assert!(temporal_extent(&DataFacts::default()).is_err());
    }

    #[test]
    fn integer_keys_take_a_numeric_width_aligned_to_multiples() {
        let by = PartitionBy::parse("RANGE (n)").unwrap();
        let data = DataFacts {
            column_type: 20,
            int_extent: Some((-5, 2500)),
            ..Default::default()
        };
        let parts = generate(&table(), &by, &range("1000", 1, false), &data).unwrap();
        assert_eq!(
            names(&parts),
            vec![
                "orders_m1000",
                "orders_0",
                "orders_1000",
                "orders_2000",
                "orders_3000"
            ]
        );
        assert_eq!(parts[0].bound, "FOR VALUES FROM (-1000) TO (0)");
        assert!(generate(&table(), &by, &range("month", 1, false), &data).is_err());
        assert!(
            generate(
                &table(),
                &by,
                &range("10", 1, false),
                &dates("2024-01-01", "2024-01-01")
            )
            .is_err()
        );
    }

    #[test]
    fn too_many_range_partitions_are_refused() {
        let by = PartitionBy::parse("RANGE (d)").unwrap();
        let g = Generator::Range {
            interval: Interval::Day,
            premake: 0,
            default: true,
            max_partitions: 10,
        };
        let err = generate(&table(), &by, &g, &dates("2024-01-01", "2024-12-31")).unwrap_err();
        assert!(err.to_string().contains("366 partitions"), "{err}");
    }

    #[test]
    fn hash_partitions_are_numbered() {
        let by = PartitionBy::parse("HASH (customer_id)").unwrap();
        let parts = generate(
            &table(),
            &by,
            &Generator::Hash { modulus: 3 },
            &DataFacts::default(),
        )
        .unwrap();
        assert_eq!(names(&parts), vec!["orders_p0", "orders_p1", "orders_p2"]);
        assert_eq!(parts[2].bound, "FOR VALUES WITH (MODULUS 3, REMAINDER 2)");
    }

    #[test]
    fn list_partitions_are_named_after_values_deduplicated_and_capped() {
        let by = PartitionBy::parse("LIST (region)").unwrap();
        let g = Generator::ListFromData {
            max_partitions: 6,
            default: true,
        };
        let data = DataFacts {
            column_type: 25,
            distinct: vec![
                Some("US".into()),
                Some("us".into()),
                Some("New York".into()),
                Some("default".into()),
                Some("O'Hare".into()),
                None,
            ],
            ..Default::default()
        };
        let parts = generate(&table(), &by, &g, &data).unwrap();
        assert_eq!(
            names(&parts),
            vec![
                "orders_us",
                "orders_us_2",
                "orders_new_york",
                "orders_default_2",
                "orders_o_hare",
                "orders_null",
                "orders_default"
            ]
        );
        assert_eq!(parts[4].bound, "FOR VALUES IN ('O''Hare')");
        assert_eq!(parts[5].bound, "FOR VALUES IN (NULL)");
        let capped = Generator::ListFromData {
            max_partitions: 5,
            default: false,
        };
        assert!(generate(&table(), &by, &capped, &data).is_err());
    }

    #[test]
    fn names_fit_in_63_bytes() {
        let long = "t".repeat(70);
        let mut n = Names::new(&long);
        let a = n.take(&"x".repeat(80));
        assert!(a.len() <= 63, "{a}");
        let b = n.take(&"x".repeat(80));
        assert!(b.len() <= 63 && b != a && b.ends_with("_2"), "{b}");
        let c = n.take("2024_01");
        assert!(c.ends_with("_2024_01") && c.len() == 63, "{c}");
    }

    #[test]
    fn generator_flags_must_match_the_method_and_exclude_explicit_partitions() {
        let range_by = PartitionBy::parse("RANGE (d)").unwrap();
        let hash_by = PartitionBy::parse("HASH (d)").unwrap();
        let list_by = PartitionBy::parse("LIST (d)").unwrap();
        let mut f = flags();
        assert_eq!(generator_from_flags(&range_by, &f, true).unwrap(), None);
        f.interval = Some("month".into());
        assert_eq!(
            generator_from_flags(&range_by, &f, false).unwrap(),
            Some(range("month", DEFAULT_PREMAKE, true))
        );
        assert!(generator_from_flags(&range_by, &f, true).is_err());
        assert!(generator_from_flags(&hash_by, &f, false).is_err());
        f.modulus = Some(4);
        assert!(generator_from_flags(&range_by, &f, false).is_err());
        let mut f = flags();
        f.modulus = Some(4);
        assert_eq!(
            generator_from_flags(&hash_by, &f, false).unwrap(),
            Some(Generator::Hash { modulus: 4 })
        );
        f.no_default = true;
        assert!(generator_from_flags(&hash_by, &f, false).is_err());
        let mut f = flags();
        f.list_values_from_data = true;
        f.no_default = true;
        assert_eq!(
            generator_from_flags(&list_by, &f, false).unwrap(),
            Some(Generator::ListFromData {
                max_partitions: DEFAULT_MAX_LIST,
                default: false
            })
        );
        assert!(generator_from_flags(&range_by, &f, false).is_err());
        let mut f = flags();
        f.premake = Some(3);
        assert!(generator_from_flags(&range_by, &f, false).is_err());
        assert!(Interval::parse("fortnight").is_err());
        assert!(Interval::parse("0").is_err());
    }
}
