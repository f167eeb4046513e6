//! The outcome of a verify, printed for people or as JSON. Keys only: never row values.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Duration;

use super::Mode;
use super::compare::{Difference, Key};
use crate::lsn::Lsn;

#[derive(Debug, Clone)]
pub struct Report {
    pub mode: Mode,
    pub consistent_point: Lsn,
    pub elapsed: Duration,
    /// Source rows in the compared ranges.
    pub rows_compared: i64,
    pub ranges_total: usize,
    pub ranges_compared: usize,
    pub ranges_differing: usize,
    /// The first `MAX_LISTED` differences, in key order per range.
    pub differences: Vec<Difference>,
    pub differences_total: usize,
    /// Every differing key (for repair).
    pub all_keys: BTreeSet<Key>,
    /// With --repair: keys that compare equal after it, and those still differing.
    pub repaired: Option<usize>,
    pub left_after_repair: Option<usize>,
}

impl Default for Report {
    fn default() -> Self {
        Report {
            mode: Mode::Full,
            consistent_point: Lsn::ZERO,
            elapsed: Duration::ZERO,
            rows_compared: 0,
            ranges_total: 0,
            ranges_compared: 0,
            ranges_differing: 0,
            differences: Vec::new(),
            differences_total: 0,
            all_keys: BTreeSet::new(),
            repaired: None,
            left_after_repair: None,
        }
    }
}

impl Report {
    pub fn add(&mut self, diffs: Vec<Difference>) {
        self.differences_total += diffs.len();
        for d in diffs {
            self.all_keys.insert(d.key.clone());
            if self.differences.len() < super::MAX_LISTED {
                self.differences.push(d);
            }
        }
    }

    /// Equal: no difference, or every one repaired.
    pub fn is_equal(&self) -> bool {
        self.differences_total == 0 || self.left_after_repair == Some(0)
    }

    /// One line for logs and `last_error`: counts and the first keys.
    pub fn summary_line(&self) -> String {
        if self.differences_total == 0 {
            return format!(
                "verify ({}): equal: {} rows in {} of {} key ranges compared at {} in {:.1} s",
                self.mode.describe(),
                self.rows_compared,
                self.ranges_compared,
                self.ranges_total,
                self.consistent_point,
                self.elapsed.as_secs_f64()
            );
        }
        let first: Vec<String> = self
            .differences
            .iter()
            .take(5)
            .map(|d| format!("{} ({})", key_text(&d.key), d.kind.as_str()))
            .collect();
        let mut s = format!(
            "verify ({}): {} rows differ between the source and the new table: {}{}",
            self.mode.describe(),
            self.differences_total,
            first.join(", "),
            if self.differences_total > first.len() {
                ", ..."
            } else {
                ""
            }
        );
        if let (Some(r), Some(l)) = (self.repaired, self.left_after_repair) {
            let _ = write!(s, "; repaired {r}, {l} still differ");
        }
        s
    }

    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "verify ({}) at consistent point {}: {} rows compared in {} of {} key ranges, {:.1} s",
            self.mode.describe(),
            self.consistent_point,
            self.rows_compared,
            self.ranges_compared,
            self.ranges_total,
            self.elapsed.as_secs_f64()
        );
        if self.differences_total == 0 {
            let _ = writeln!(s, "equal: the new table matches the source row for row");
            return s;
        }
        let _ = writeln!(
            s,
            "{} differing rows in {} ranges (key: how the new table differs):",
            self.differences_total, self.ranges_differing
        );
        for d in &self.differences {
            let _ = writeln!(s, "  {}: {}", key_text(&d.key), d.kind.as_str());
        }
        if self.differences_total > self.differences.len() {
            let _ = writeln!(
                s,
                "  ... and {} more",
                self.differences_total - self.differences.len()
            );
        }
        match (self.repaired, self.left_after_repair) {
            (Some(r), Some(0)) => {
                let _ = writeln!(
                    s,
                    "repaired: {r} rows copied again from the snapshot; they match now"
                );
            }
            (Some(r), Some(l)) => {
                let _ = writeln!(s, "repaired {r}; {l} still differ");
            }
            _ => {
                let _ = writeln!(
                    s,
                    "run `pgrepart verify --repair` with the same arguments to copy them again"
                );
            }
        }
        s
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "equal": self.is_equal(),
            "mode": self.mode.describe(),
            "consistent_point": self.consistent_point.to_string(),
            "seconds": self.elapsed.as_secs_f64(),
            "rows_compared": self.rows_compared,
            "ranges_total": self.ranges_total,
            "ranges_compared": self.ranges_compared,
            "ranges_differing": self.ranges_differing,
            "differences_total": self.differences_total,
            "differences": self.differences,
            "repaired": self.repaired,
            "left_after_repair": self.left_after_repair,
        })
    }
}

/// `42`, or `(42,EU)` for a key of several columns.
pub fn key_text(key: &Key) -> String {
    match key.as_slice() {
        [one] => one.clone(),
        many => format!("({})", many.join(",")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::compare::DiffKind;

    #[test]
    fn a_report_names_keys_and_kinds_never_values() {
        let mut r = Report {
            rows_compared: 10,
            ..Report::default()
        };
        r.add(vec![
            Difference {
                key: vec!["7".into()],
                kind: DiffKind::Different,
            },
            Difference {
                key: vec!["9".into(), "EU".into()],
                kind: DiffKind::ExtraOnTarget,
            },
        ]);
        assert!(!r.is_equal());
        let line = r.summary_line();
        assert!(line.contains("2 rows differ"), "{line}");
        assert!(
            line.contains("7 (different)") && line.contains("(9,EU) (extra on target)"),
            "{line}"
        );
        let text = r.text();
        assert!(text.contains("--repair"), "{text}");
        assert_eq!(r.json()["differences"][0]["kind"], "different");
        r.repaired = Some(2);
        r.left_after_repair = Some(0);
        assert!(r.is_equal());
        assert!(r.text().contains("match now"));
    }

    #[test]
    fn an_equal_report_says_so() {
        let r = Report::default();
        assert!(r.is_equal());
        assert!(r.summary_line().contains("equal"));
        assert_eq!(r.json()["equal"], true);
    }
}
