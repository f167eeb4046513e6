//! Key-range planning (pure): the source key space cut into half-open ranges `[lo, hi)`.
//!
//! ```text
//!   None ..... r0 ..... | ..... r1 ..... | ... | ..... rN ..... None
//!        (keys < min)   min                      max    (keys > max: new inserts)
//! ```
//! The first range is open below and the last open above, so every key, including ones inserted
//! after the snapshot, falls in exactly one range. Only integer keys are split; any other key type
//! gets one range covering everything (its order cannot be reproduced reliably outside the server).

use serde::{Deserialize, Serialize};

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
