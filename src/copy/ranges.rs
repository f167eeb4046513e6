//! Key-range planning (pure): the source key space cut into half-open ranges `[lo, hi)`.
//!
//! ```text
//!   None ..... r0 ..... | ..... r1 ..... | ... | ..... rN ..... None
//!        (keys < min)   min                      max    (keys > max: new inserts)
//! ```
//! The first range is open below and the last open above, so every key, including ones inserted
//! after the snapshot, falls in exactly one range.
//!
//! Two forms of the same thing: [`KeyRange`], integer bounds on a single integer key (compared in
//! Rust by the applier, and used by `verify`), and [`Bounds`], the bounds of any key with a btree
//! order as the server's text of each key column (`'...'::type`), compared only by the server, as
//! rows (`(a, b) >= ('1', '7')`) under each column's collation. Bounds are cut from a sample of the
//! keys read in the server's order ([`bounds_from_sample`]), so ranges hold about as many rows each
//! whatever the distribution of the keys; where large rows are together in the key, on rows and
//! bytes together ([`choose_cuts`]).

use serde::{Deserialize, Serialize};

use crate::pg::ident::quote_literal;

/// The type OIDs of the integer key columns that ranges are cut on (int8, int2, int4).
pub const INT_TYPES: [u32; 3] = [20, 21, 23];

/// `[lo, hi)`; `None` is unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRange {
    pub lo: Option<i64>,
    pub hi: Option<i64>,
}

impl KeyRange {
    pub const ALL: KeyRange = KeyRange { lo: None, hi: None };

    pub fn contains(&self, key: i64) -> bool {
        self.lo.is_none_or(|lo| key >= lo) && self.hi.is_none_or(|hi| key < hi)
    }

    /// The WHERE condition selecting this range on `column_sql` (already quoted); `None` for ALL.
    pub fn where_sql(&self, column_sql: &str) -> Option<String> {
        match (self.lo, self.hi) {
            (None, None) => None,
            (Some(lo), None) => Some(format!("{column_sql} >= {lo}")),
            (None, Some(hi)) => Some(format!("{column_sql} < {hi}")),
            (Some(lo), Some(hi)) => Some(format!("{column_sql} >= {lo} AND {column_sql} < {hi}")),
        }
    }
}

/// Cuts `[min, max]` into at most `count` ranges of equal width, the outer ones unbounded.
/// An empty table (`None`) or `count <= 1` gives the single range ALL.
pub fn plan_ranges(min_max: Option<(i64, i64)>, count: usize) -> Vec<KeyRange> {
    let Some((min, max)) = min_max else {
        return vec![KeyRange::ALL];
    };
    let span = (i128::from(max) - i128::from(min) + 1).max(1);
    let count = (count.max(1) as i128).min(span);
    if count <= 1 {
        return vec![KeyRange::ALL];
    }
    let mut bounds: Vec<i64> = (1..count)
        .map(|i| (i128::from(min) + span * i / count) as i64)
        .collect();
    bounds.dedup();
    let mut ranges = Vec::with_capacity(bounds.len() + 1);
    let mut lo = None;
    for b in bounds {
        ranges.push(KeyRange { lo, hi: Some(b) });
        lo = Some(b);
    }
    ranges.push(KeyRange { lo, hi: None });
    ranges
}

/// Rows per range at most.
pub const ROWS_PER_RANGE: i64 = 250_000;
/// Ranges at most; enough for 100 TB at 8 MiB a range.
pub const MAX_RANGES: usize = 16_384;

/// The table bytes (`pg_total_relation_size`) a range may hold when `jobs` ranges are copied at
/// once. A range's rows are one transaction on the target, and when the target is in the source
/// database the slot's walsender decodes those inserts too, before pgoutput drops them as
/// unpublished: the transactions in flight together must stay under `logical_decoding_work_mem`
/// (64 MB by default), or the walsender spills them to disk and reads them back, which cost a
/// fifth of the whole copy here (bench/run.sh, 2,000,000 rows: 13.0 s in 10 ranges, 10.5 s in 52).
pub fn bytes_per_range(jobs: usize) -> i64 {
    ((24 << 20) / jobs.max(1) as i64).clamp(1 << 20, 8 << 20)
}

/// How many ranges to cut a table into: at most [`ROWS_PER_RANGE`] rows and
/// [`bytes_per_range`] bytes each, at least two per worker, a multiple of the workers (so that no
/// worker copies the last range alone), at most [`MAX_RANGES`].
pub fn range_count(estimated_rows: i64, total_bytes: i64, jobs: usize) -> usize {
    let jobs = jobs.max(1);
    let by_rows = (estimated_rows.max(0) / ROWS_PER_RANGE) as usize + 1;
    let by_bytes = (total_bytes.max(0) / bytes_per_range(jobs)) as usize + 1;
    let count = by_rows.max(by_bytes).max(jobs * 2).min(MAX_RANGES);
    (count.div_ceil(jobs) * jobs).min(MAX_RANGES)
}

/// The key columns as the server compares them: quoted name, type (`format_type`) and the
/// column's collation when it is not its type's default (already quoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyColumn {
    pub name_sql: String,
    pub type_sql: String,
    pub collation: Option<String>,
}

/// A key column as SQL: `expr` cast to the column's type, under its collation.
fn typed(expr: &str, col: &KeyColumn) -> String {
    match &col.collation {
        Some(c) => format!("({expr})::{} COLLATE {c}", col.type_sql),
        None => format!("({expr})::{}", col.type_sql),
    }
}

/// `(a, b)` or `a`: the first `n` key columns of a row of the table.
fn row_sql(key: &[KeyColumn], n: usize) -> String {
    let cols: Vec<&str> = key[..n].iter().map(|c| c.name_sql.as_str()).collect();
    if n == 1 {
        cols[0].to_string()
    } else {
        format!("({})", cols.join(", "))
    }
}

/// One bound: the text of the first key columns (all of them, or a prefix for bounds recorded by
/// an older pgrepart on the first column only).
pub type Bound = Vec<String>;

/// `[lo, hi)` over the key in the server's order; `None` is unbounded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bounds {
    pub lo: Option<Bound>,
    pub hi: Option<Bound>,
}

impl Bounds {
    pub const ALL: Bounds = Bounds { lo: None, hi: None };

    /// The WHERE condition selecting this range (`None` for ALL): the bounds as literals cast to
    /// the key's types (COPY takes no parameters), compared as rows under the columns' collations.
    pub fn where_sql(&self, key: &[KeyColumn]) -> Option<String> {
        let side = |b: &Bound, op: &str| {
            let n = b.len().min(key.len());
            let vals: Vec<String> = b[..n]
                .iter()
                .zip(key)
                .map(|(v, c)| typed(&quote_literal(v), c))
                .collect();
            let vals = if n == 1 {
                vals[0].clone()
            } else {
                format!("({})", vals.join(", "))
            };
            format!("{} {op} {vals}", row_sql(key, n))
        };
        match (&self.lo, &self.hi) {
            (None, None) => None,
            (Some(lo), None) => Some(side(lo, ">=")),
            (None, Some(hi)) => Some(side(hi, "<")),
            (Some(lo), Some(hi)) => Some(format!("{} AND {}", side(lo, ">="), side(hi, "<"))),
        }
    }
}

impl From<KeyRange> for Bounds {
    fn from(r: KeyRange) -> Self {
        Bounds {
            lo: r.lo.map(|v| vec![v.to_string()]),
            hi: r.hi.map(|v| vec![v.to_string()]),
        }
    }
}

/// Integer ranges, when every bound is one integer (a single integer key, or ranges recorded by
/// an older pgrepart on an integer first column): the applier then routes in Rust.
pub fn as_int_ranges(ranges: &[Bounds]) -> Option<Vec<KeyRange>> {
    let int = |b: &Option<Bound>| -> Option<Option<i64>> {
        match b {
            None => Some(None),
            Some(v) if v.len() == 1 => v[0].parse().ok().map(Some),
            Some(_) => None,
        }
    };
    ranges
        .iter()
        .map(|r| {
            Some(KeyRange {
                lo: int(&r.lo)?,
                hi: int(&r.hi)?,
            })
        })
        .collect()
}

/// Contiguous ranges from cut points in ascending order: `(-inf, c1), [c1, c2), ..., [cn, +inf)`.
pub fn ranges_from_cuts(cuts: Vec<Bound>) -> Vec<Bounds> {
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut lo = None;
    for c in cuts {
        out.push(Bounds {
            lo,
            hi: Some(c.clone()),
        });
        lo = Some(c);
    }
    out.push(Bounds { lo, hi: None });
    out
}

/// Cut points for `count` ranges of about equal rows (pure): `sample` is a sample of the table's
/// keys, sorted by the server in the key's order (their text). The k-th cut is the sample's
/// `k * len / count`-th key; equal neighbours are merged (a key's rows cannot be split), so
/// heavily repeated prefixes give fewer ranges. An empty sample or `count <= 1` gives no cut (one
/// range).
pub fn bounds_from_sample(sample: &[Bound], count: usize) -> Vec<Bound> {
    bounds_from_sized_sample(sample, &[], count)
}

/// Cut points for `count` ranges balanced on rows and bytes together (pure): `bytes[i]` is the
/// stored size of the sampled row `sample[i]` (`pg_column_size` of the row). Each sampled row
/// weighs half its share of the sample's rows plus half its share of the sample's bytes, and the
/// k-th cut is the key at which the weight below reaches `k / count` of the whole. So a range
/// holds at most about twice its share of the rows and twice its share of the bytes, even where
/// the large rows cluster in the key (the TOASTed rows of one tenant): cut on rows alone, such a
/// range would hold many times the bytes [`bytes_per_range`] allows. Without sizes (`bytes`
/// empty, or all zero) the rows are weighed alike: [`bounds_from_sample`]. Equal neighbours are
/// merged as there.
pub fn bounds_from_sized_sample(sample: &[Bound], bytes: &[u64], count: usize) -> Vec<Bound> {
    let count = count.min(sample.len());
    if count <= 1 {
        return Vec::new();
    }
    let n = sample.len() as u128;
    let total_bytes: u128 = if bytes.len() == sample.len() {
        bytes.iter().map(|&b| u128::from(b)).sum()
    } else {
        0
    };
    // Row i weighs total_bytes + n * bytes[i] (twice the mean of its two shares, times n * total_bytes);
    // 1 each without sizes.
    let weight = |i: usize| -> u128 {
        if total_bytes == 0 {
            1
        } else {
            total_bytes + n * u128::from(bytes[i])
        }
    };
    let total: u128 = (0..sample.len()).map(weight).sum();
    let mut cuts: Vec<Bound> = Vec::with_capacity(count - 1);
    // `at` rows lie below the cut, weighing `below`: the most rows whose weight stays within
    // k / count of the whole.
    let (mut at, mut below) = (0usize, 0u128);
    for k in 1..count {
        let target = k as u128 * total;
        while at < sample.len() && (below + weight(at)) * count as u128 <= target {
            below += weight(at);
            at += 1;
        }
        if at >= sample.len() {
            break;
        }
        let cut = &sample[at];
        // The first key is no cut: nothing sampled is below it.
        if at == 0 || cuts.last() == Some(cut) || *cut == sample[0] {
            continue;
        }
        cuts.push(cut.clone());
    }
    cuts
}

/// The cuts for `count` ranges (pure), and whether they weigh the bytes: the row cuts
/// ([`bounds_from_sample`]) unless one of their ranges would hold more than three times its share
/// of the sampled bytes (large rows clustered in the key), then [`bounds_from_sized_sample`].
/// Where the large rows are spread over the key, the row cuts share their bytes about evenly, and a
/// sample holds too few of them (a few per range) to place cuts by their bytes: weighed, the rows
/// per range varied from 1 to 2.1 instead of 1 to 1.3 (bench/keys.sh, the dense key).
pub fn choose_cuts(sample: &[Bound], bytes: &[u64], count: usize) -> (Vec<Bound>, bool) {
    let by_rows = bounds_from_sample(sample, count);
    let total: u64 = bytes.iter().sum();
    let ranges = by_rows.len() as u64 + 1;
    let largest = sample_bytes(sample, bytes, &by_rows)
        .into_iter()
        .max()
        .unwrap_or(0);
    if bytes.len() != sample.len() || ranges < 2 || largest * ranges <= 3 * total {
        return (by_rows, false);
    }
    (bounds_from_sized_sample(sample, bytes, count), true)
}

/// How many of the sampled keys fall in each range cut by `cuts` (pure): `sample` in the server's
/// order and `cuts` from [`bounds_from_sample`] on it, so each cut is a sampled key and a range
/// starts at the first sampled key equal to its cut. One count per range (`cuts.len() + 1`).
pub fn sample_shares(sample: &[Bound], cuts: &[Bound]) -> Vec<usize> {
    range_spans(sample, cuts)
        .into_iter()
        .map(|(lo, hi)| hi - lo)
        .collect()
}

/// The sampled bytes in each range cut by `cuts` (pure): `bytes[i]` the size of `sample[i]`, as
/// for [`bounds_from_sized_sample`]. One sum per range.
pub fn sample_bytes(sample: &[Bound], bytes: &[u64], cuts: &[Bound]) -> Vec<u64> {
    range_spans(sample, cuts)
        .into_iter()
        .map(|(lo, hi)| bytes.get(lo..hi).map_or(0, |b| b.iter().sum()))
        .collect()
}

/// Each range's sampled keys as `sample[lo..hi]`, one span per range (`cuts.len() + 1`).
fn range_spans(sample: &[Bound], cuts: &[Bound]) -> Vec<(usize, usize)> {
    let mut spans = Vec::with_capacity(cuts.len() + 1);
    let mut lo = 0;
    for cut in cuts {
        let at = sample[lo..]
            .iter()
            .position(|k| k == cut)
            .map_or(sample.len(), |i| lo + i);
        spans.push((lo, at));
        lo = at;
    }
    spans.push((lo, sample.len()));
    spans
}

/// How many keys to sample for `count` ranges: enough that each range's share is measured within
/// a few percent, bounded so the sample stays a few megabytes.
pub fn sample_size(count: usize) -> i64 {
    (count as i64 * 200).clamp(2_000, 500_000)
}

/// The `TABLESAMPLE` clause that reads about `want` of `estimated_rows` rows, or none (every key)
/// when the table is small or its size unknown. BERNOULLI picks rows (exact proportions, but
/// reads every page); above `SYSTEM_ABOVE` rows SYSTEM picks whole pages.
pub fn tablesample(estimated_rows: i64, want: i64) -> Option<String> {
    const SYSTEM_ABOVE: i64 = 20_000_000;
    if estimated_rows <= want.saturating_mul(2) {
        return None;
    }
    let pct = (want as f64 * 100.0 / estimated_rows as f64).clamp(0.0001, 100.0);
    let method = if estimated_rows > SYSTEM_ABOVE {
        "SYSTEM"
    } else {
        "BERNOULLI"
    };
    Some(format!("TABLESAMPLE {method} ({pct:.6})"))
}

/// Index of the range holding `key`. `ranges` must come from `plan_ranges` (sorted, contiguous).
pub fn range_index(ranges: &[KeyRange], key: i64) -> usize {
    // The first range whose upper bound is above the key.
    ranges
        .partition_point(|r| r.hi.is_some_and(|hi| hi <= key))
        .min(ranges.len().saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_contiguous(ranges: &[KeyRange]) {
        assert_eq!(ranges.first().unwrap().lo, None);
        assert_eq!(ranges.last().unwrap().hi, None);
        for w in ranges.windows(2) {
            assert_eq!(w[0].hi, w[1].lo);
            assert!(w[1].lo.is_some());
        }
    }

    #[test]
    fn ranges_cover_every_key_exactly_once() {
        let ranges = plan_ranges(Some((1, 1000)), 4);
        assert_eq!(ranges.len(), 4);
        assert_contiguous(&ranges);
        for key in [i64::MIN, -5, 0, 1, 250, 251, 500, 999, 1000, 1001, i64::MAX] {
            let holders: Vec<usize> = (0..ranges.len())
                .filter(|&i| ranges[i].contains(key))
                .collect();
            assert_eq!(holders.len(), 1, "key {key} in {holders:?}");
            assert_eq!(range_index(&ranges, key), holders[0], "key {key}");
        }
    }

    #[test]
    fn small_and_empty_key_spaces_get_fewer_ranges() {
        assert_eq!(plan_ranges(None, 8), vec![KeyRange::ALL]);
        assert_eq!(plan_ranges(Some((7, 7)), 8), vec![KeyRange::ALL]);
        let r = plan_ranges(Some((1, 3)), 8);
        assert_eq!(r.len(), 3);
        assert_contiguous(&r);
    }

    #[test]
    fn extreme_keys_do_not_overflow() {
        let r = plan_ranges(Some((i64::MIN, i64::MAX)), 16);
        assert_eq!(r.len(), 16);
        assert_contiguous(&r);
        assert_eq!(range_index(&r, i64::MIN), 0);
        assert_eq!(range_index(&r, i64::MAX), 15);
    }

    #[test]
    fn where_clauses_match_the_bounds() {
        let col = "\"id\"";
        assert_eq!(KeyRange::ALL.where_sql(col), None);
        assert_eq!(
            KeyRange {
                lo: None,
                hi: Some(10)
            }
            .where_sql(col)
            .unwrap(),
            "\"id\" < 10"
        );
        assert_eq!(
            KeyRange {
                lo: Some(-3),
                hi: None
            }
            .where_sql(col)
            .unwrap(),
            "\"id\" >= -3"
        );
        assert_eq!(
            KeyRange {
                lo: Some(1),
                hi: Some(9)
            }
            .where_sql(col)
            .unwrap(),
            "\"id\" >= 1 AND \"id\" < 9"
        );
    }

    #[test]
    fn range_count_scales_with_rows_bytes_and_jobs() {
        // Small table: two ranges per worker.
        assert_eq!(range_count(0, 0, 2), 4);
        // Rows decide: 2,000,000 narrow rows in 20 MB.
        assert_eq!(range_count(2_000_000, 20 << 20, 2), 10);
        // Bytes decide: the bench's 442 MB table, 8 MiB a range with 2 workers.
        assert_eq!(range_count(2_000_000, 442 << 20, 2), 56);
        // More workers, smaller ranges (24 MiB in flight over 4 workers: 6 MiB each).
        assert_eq!(range_count(2_000_000, 442 << 20, 4), 76);
        // Always a multiple of the workers, and capped.
        assert_eq!(range_count(1_000_000, 0, 3) % 3, 0);
        assert_eq!(range_count(i64::MAX, i64::MAX, 2), MAX_RANGES);
        assert_eq!(range_count(i64::MAX, i64::MAX, 3), MAX_RANGES);
    }

    fn b(v: &[&str]) -> Bound {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sample_cuts_balance_a_skewed_key() {
        // 99 % of the keys are 1..=990, 1 % near 2^62: equal width would put nearly all in one range.
        let mut keys: Vec<i64> = (1..=990).collect();
        keys.extend((0..10).map(|i| (1i64 << 62) + i));
        let sample: Vec<Bound> = keys.iter().map(|k| b(&[&k.to_string()])).collect();
        let ranges = ranges_from_cuts(bounds_from_sample(&sample, 4));
        assert_eq!(ranges.len(), 4);
        let ints = as_int_ranges(&ranges).unwrap();
        let mut per = vec![0; ints.len()];
        for k in &keys {
            per[range_index(&ints, *k)] += 1;
        }
        assert!(per.iter().all(|&n| n == 250), "{per:?}");
    }

    #[test]
    fn sample_shares_count_the_keys_of_each_range() {
        let keys = |v: &[&str]| -> Vec<Bound> { v.iter().map(|k| b(&[k])).collect() };
        // Repeated keys before a cut belong to the range the cut starts.
        let sample = keys(&["a", "b", "b", "b", "c", "d", "d", "e"]);
        let cuts = bounds_from_sample(&sample, 4);
        assert_eq!(cuts, keys(&["b", "c", "d"]));
        assert_eq!(sample_shares(&sample, &cuts), vec![1, 3, 1, 3]);
        // No cut: one range holding everything; an empty sample: one empty range.
        assert_eq!(sample_shares(&sample, &[]), vec![8]);
        assert_eq!(sample_shares(&[], &[]), vec![0]);
        // The skewed key's cuts share the sample evenly.
        let mut ks: Vec<i64> = (1..=990).collect();
        ks.extend((0..10).map(|i| (1i64 << 62) + i));
        let sample: Vec<Bound> = ks.iter().map(|k| b(&[&k.to_string()])).collect();
        let cuts = bounds_from_sample(&sample, 4);
        assert_eq!(sample_shares(&sample, &cuts), vec![250; 4]);
        // A cut that is not in the sample (never from bounds_from_sample) leaves its range empty.
        assert_eq!(sample_shares(&keys(&["a", "b"]), &keys(&["x"])), vec![2, 0]);
    }

    #[test]
    fn sized_cuts_bound_both_the_rows_and_the_bytes_of_a_range() {
        // The first 20 of 1,000 keys (one tenant) hold 10,000-byte rows, 56 % of the bytes; the
        // other rows are 160 bytes.
        let sample: Vec<Bound> = (0..1000).map(|i| b(&[&format!("{i:04}")])).collect();
        let bytes: Vec<u64> = (0..1000)
            .map(|i| if i < 20 { 10_000 } else { 160 })
            .collect();
        let total: u64 = bytes.iter().sum();
        // Cut on rows alone, the first range holds most of the bytes.
        let by_rows = bounds_from_sample(&sample, 10);
        assert!(sample_bytes(&sample, &bytes, &by_rows)[0] > total / 2);
        let cuts = bounds_from_sized_sample(&sample, &bytes, 10);
        assert_eq!(cuts.len(), 9);
        let rows = sample_shares(&sample, &cuts);
        let sizes = sample_bytes(&sample, &bytes, &cuts);
        assert_eq!(rows.iter().sum::<usize>(), 1000);
        assert_eq!(sizes.iter().sum::<u64>(), total);
        // At most twice a tenth of each, give or take the row at the cut.
        assert!(rows.iter().all(|&r| r <= 2 * 100 + 1), "{rows:?}");
        assert!(
            sizes.iter().all(|&s| s <= 2 * total / 10 + 10_000),
            "{sizes:?}"
        );
        // The large rows are spread over several ranges.
        assert!(
            sizes.iter().filter(|&&s| s > total / 20).count() >= 4,
            "{sizes:?}"
        );
    }

    #[test]
    fn bytes_are_weighed_only_where_the_row_cuts_would_crowd_them() {
        let sample: Vec<Bound> = (0..1000).map(|i| b(&[&format!("{i:04}")])).collect();
        // Large rows every 100th key: the row cuts share them, and are kept.
        let spread: Vec<u64> = (0..1000)
            .map(|i| if i % 100 == 0 { 10_000 } else { 160 })
            .collect();
        assert_eq!(
            choose_cuts(&sample, &spread, 10),
            (bounds_from_sample(&sample, 10), false)
        );
        // The same large rows at the start of the key: cut on the bytes too.
        let clustered: Vec<u64> = (0..1000)
            .map(|i| if i < 10 { 10_000 } else { 160 })
            .collect();
        assert_eq!(
            choose_cuts(&sample, &clustered, 10),
            (bounds_from_sized_sample(&sample, &clustered, 10), true)
        );
        // No sizes, or one range: the row cuts.
        assert!(!choose_cuts(&sample, &[], 10).1);
        assert_eq!(choose_cuts(&sample, &clustered, 1), (Vec::new(), false));
    }

    #[test]
    fn sized_cuts_of_rows_alike_are_the_row_cuts() {
        let keys: Vec<Bound> = (0..997).map(|i| b(&[&format!("{i:04}")])).collect();
        for count in [2, 3, 7, 10, 30] {
            let rows = bounds_from_sample(&keys, count);
            assert_eq!(bounds_from_sized_sample(&keys, &[300; 997], count), rows);
            // No sizes, all-zero sizes and sizes of another length: the row cuts.
            assert_eq!(bounds_from_sized_sample(&keys, &[0; 997], count), rows);
            assert_eq!(bounds_from_sized_sample(&keys, &[5, 6], count), rows);
        }
        let repeated = [b(&["a"]), b(&["b"]), b(&["b"]), b(&["b"]), b(&["c"])];
        assert_eq!(
            bounds_from_sized_sample(&repeated, &[1, 1, 1, 1, 1], 4),
            bounds_from_sample(&repeated, 4)
        );
        assert!(bounds_from_sized_sample(&[], &[], 4).is_empty());
        assert_eq!(
            sample_bytes(&repeated, &[1, 2, 3, 4, 5], &[b(&["b"])]),
            vec![1, 14]
        );
    }

    #[test]
    fn sample_cuts_skip_repeated_keys_and_small_samples() {
        assert!(bounds_from_sample(&[], 8).is_empty());
        assert!(bounds_from_sample(&[b(&["a"])], 8).is_empty());
        assert!(bounds_from_sample(&[b(&["a"]), b(&["b"])], 1).is_empty());
        // Every sampled key equal: one range.
        let same = vec![b(&["x"]); 100];
        assert!(bounds_from_sample(&same, 10).is_empty());
        // Two distinct values: one cut, at the second.
        let mut two = vec![b(&["a"]); 50];
        two.extend(vec![b(&["b"]); 50]);
        assert_eq!(bounds_from_sample(&two, 10), vec![b(&["b"])]);
        // Composite keys cut on whole rows.
        let comp: Vec<Bound> = (0..9)
            .map(|i| b(&[&(i / 3).to_string(), &(i % 3).to_string()]))
            .collect();
        assert_eq!(
            bounds_from_sample(&comp, 3),
            vec![b(&["1", "0"]), b(&["2", "0"])]
        );
    }

    #[test]
    fn bounds_become_typed_row_comparisons() {
        let key = vec![
            KeyColumn {
                name_sql: "\"tenant\"".into(),
                type_sql: "integer".into(),
                collation: None,
            },
            KeyColumn {
                name_sql: "\"name\"".into(),
                type_sql: "text".into(),
                collation: Some("\"en_US\"".into()),
            },
        ];
        assert_eq!(Bounds::ALL.where_sql(&key), None);
        let r = Bounds {
            lo: Some(b(&["1", "o'k"])),
            hi: Some(b(&["2", "a"])),
        };
        assert_eq!(
            r.where_sql(&key).unwrap(),
            "(\"tenant\", \"name\") >= (('1')::integer, ('o''k')::text COLLATE \"en_US\") \
             AND (\"tenant\", \"name\") < (('2')::integer, ('a')::text COLLATE \"en_US\")"
        );
        // A bound on the first column only (recorded by an older pgrepart).
        let old = Bounds {
            lo: None,
            hi: Some(b(&["5"])),
        };
        assert_eq!(old.where_sql(&key).unwrap(), "\"tenant\" < ('5')::integer");
        assert_eq!(
            as_int_ranges(std::slice::from_ref(&old)).unwrap(),
            vec![KeyRange {
                lo: None,
                hi: Some(5)
            }]
        );
        assert_eq!(as_int_ranges(&[r]), None);
        assert_eq!(
            Bounds::from(KeyRange {
                lo: Some(-3),
                hi: None
            })
            .lo,
            Some(b(&["-3"]))
        );
    }

    #[test]
    fn samples_are_taken_only_from_large_tables() {
        assert_eq!(tablesample(1000, 2000), None);
        assert_eq!(tablesample(-1, 2000), None);
        assert_eq!(
            tablesample(1_000_000, 10_000).unwrap(),
            "TABLESAMPLE BERNOULLI (1.000000)"
        );
        assert!(
            tablesample(1_000_000_000, 10_000)
                .unwrap()
                .starts_with("TABLESAMPLE SYSTEM")
        );
        assert_eq!(sample_size(1), 2_000);
        assert_eq!(sample_size(16_384), 500_000);
    }

    #[test]
    fn ranges_in_flight_stay_under_the_decoding_memory() {
        for jobs in 1..=64 {
            assert!(bytes_per_range(jobs) >= 1 << 20);
            assert!(bytes_per_range(jobs) <= 8 << 20);
            if jobs <= 24 {
                assert!(
                    bytes_per_range(jobs) * jobs as i64 <= 24 << 20,
                    "jobs {jobs}"
                );
            }
        }
    }
}
