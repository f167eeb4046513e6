//! Per-key batch compaction (pure). Many source changes collapse into one state-setting operation
//! per key, so a batch becomes three set-wise statements: delete, insert, patch.
//!
//! | earlier \ later | Upsert  | Patch          | Delete |
//! |-----------------|---------|----------------|--------|
//! | (none)          | Upsert  | Patch          | Delete |
//! | Upsert          | Upsert  | Upsert (merged)| Delete |
//! | Patch           | Upsert  | Patch (merged) | Delete |
//! | Delete          | Upsert  | Delete         | Delete |
//!
//! A Patch after a Delete cannot happen in a real stream without an Insert in between; if it did,
//! updating a missing row changes nothing, so Delete stays.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

/// One column value as the stream carries it, in text form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Value {
    Null,
    Text(Bytes),
    /// Unchanged TOAST value: not sent, must be left as it is in the target.
    Unchanged,
}

/// Values of every replicated column, in the relation's column order.
pub type Row = Vec<Value>;

/// The source key of a row: the text of its key columns, in key order.
pub type Key = Vec<Bytes>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// The row's whole state: delete by key, insert this.
    Upsert(Row),
    /// Only the columns that are not `Unchanged` are set; the row keeps the rest.
    Patch(Row),
    Delete,
}

impl Op {
    /// Widens the row to `width` columns for columns added after it was read: a full row had NULL
    /// there (the columns did not exist), a patch leaves them as they are.
    pub fn widen(&mut self, width: usize) {
        match self {
            Op::Upsert(row) => widen_row(row, width, Value::Null),
            Op::Patch(row) => widen_row(row, width, Value::Unchanged),
            Op::Delete => {}
        }
    }
}

/// Pads `row` to `width` columns with `fill`.
pub fn widen_row(row: &mut Row, width: usize, fill: Value) {
    if row.len() < width {
        row.resize(width, fill);
    }
}

fn merge_into(base: &mut Row, patch: Row) {
    for (slot, v) in base.iter_mut().zip(patch) {
        if v != Value::Unchanged {
            *slot = v;
        }
    }
}

/// The compacted batch: at most one operation per key.
#[derive(Debug, Default)]
pub struct Compactor {
    ops: HashMap<Key, Op>,
    /// Source changes folded in, for counters.
    pub changes: u64,
}

impl Compactor {
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Widens every row held to `width` columns (see `Op::widen`).
    pub fn widen(&mut self, width: usize) {
        for op in self.ops.values_mut() {
            op.widen(width);
        }
    }

    pub fn push(&mut self, key: Key, op: Op) {
        self.changes += 1;
        match self.ops.get_mut(&key) {
            None => {
                self.ops.insert(key, op);
            }
            Some(existing) => {
                let merged = match (std::mem::replace(existing, Op::Delete), op) {
                    (_, Op::Upsert(row)) => Op::Upsert(row),
                    (_, Op::Delete) => Op::Delete,
                    (Op::Upsert(mut row), Op::Patch(p)) => {
                        merge_into(&mut row, p);
                        Op::Upsert(row)
                    }
                    (Op::Patch(mut row), Op::Patch(p)) => {
                        merge_into(&mut row, p);
                        Op::Patch(row)
                    }
                    (Op::Delete, Op::Patch(_)) => Op::Delete,
                };
                *existing = merged;
            }
        }
    }

    /// Deals the keys out into `n` compactors (by a hash of the key), for `n` sessions that apply
    /// them side by side: keys are unique in a batch, so no two parts touch the same row. The
    /// count of source changes stays with the first part.
    pub fn split(self, n: usize) -> Vec<Compactor> {
        let n = n.max(1);
        let mut parts: Vec<Compactor> = (0..n).map(|_| Compactor::default()).collect();
        parts[0].changes = self.changes;
        for (key, op) in self.ops {
            let i = (fnv1a(&key) % n as u64) as usize;
            parts[i].ops.insert(key, op);
        }
        parts
    }

    /// Splits into the statements' inputs: keys to delete (deleted and upserted rows), rows to
    /// insert, and patches grouped by the set of columns they set (key columns excluded).
    pub fn finish(self, key_columns: &[usize]) -> Compacted {
        let mut out = Compacted {
            changes: self.changes,
            ..Default::default()
        };
        for (key, op) in self.ops {
            match op {
                Op::Delete => {
                    out.removals.push(key.clone());
                    out.deletes.push(key);
                }
                Op::Upsert(row) => {
                    out.deletes.push(key);
                    out.inserts.push(row);
                }
                Op::Patch(row) => {
                    let cols: Vec<usize> = row
                        .iter()
                        .enumerate()
                        .filter(|(i, v)| **v != Value::Unchanged && !key_columns.contains(i))
                        .map(|(i, _)| i)
                        .collect();
                    if !cols.is_empty() {
                        out.patches.entry(cols).or_default().push((key, row));
                    }
                }
            }
        }
        out
    }
}

#[derive(Debug, Default)]
pub struct Compacted {
    /// Keys whose row is replaced (upserts) or removed (deletes).
    pub deletes: Vec<Key>,
    /// Keys whose row is removed and not replaced: the deletes alone.
    pub removals: Vec<Key>,
    pub inserts: Vec<Row>,
    /// Column indexes set by the patch -> (key, row) pairs.
    pub patches: BTreeMap<Vec<usize>, Vec<(Key, Row)>>,
    pub changes: u64,
}

/// FNV-1a over a key's columns: stable and cheap, enough to deal keys out evenly.
fn fnv1a(key: &Key) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for col in key {
        for &b in col.iter().chain(std::iter::once(&0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Appends `row` to `buf` as one line of COPY text format (tab-separated, `\N` for NULL).
/// Rows given here never hold `Unchanged`.
pub fn encode_copy_text_row(row: &Row, buf: &mut Vec<u8>) {
    for (i, v) in row.iter().enumerate() {
        if i > 0 {
            buf.push(b'\t');
        }
        match v {
            Value::Null | Value::Unchanged => buf.extend_from_slice(b"\\N"),
            Value::Text(t) => {
                for &b in t.iter() {
                    match b {
                        b'\\' => buf.extend_from_slice(b"\\\\"),
                        b'\t' => buf.extend_from_slice(b"\\t"),
                        b'\n' => buf.extend_from_slice(b"\\n"),
                        b'\r' => buf.extend_from_slice(b"\\r"),
                        _ => buf.push(b),
                    }
                }
            }
        }
    }
    buf.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Value {
        Value::Text(Bytes::copy_from_slice(s.as_bytes()))
    }
    fn k(s: &str) -> Key {
        vec![Bytes::copy_from_slice(s.as_bytes())]
    }

    #[test]
    fn widening_gives_full_rows_null_and_leaves_patched_columns_alone() {
        let mut c = Compactor::default();
        c.push(k("1"), Op::Upsert(vec![t("1"), t("a")]));
        c.push(k("2"), Op::Patch(vec![t("2"), Value::Unchanged]));
        c.push(k("3"), Op::Delete);
        c.widen(3);
        // A later change of the new shape merges with the widened one.
        c.push(k("2"), Op::Patch(vec![t("2"), Value::Unchanged, t("n")]));
        let out = c.finish(&[0]);
        assert_eq!(out.inserts, vec![vec![t("1"), t("a"), Value::Null]]);
        assert_eq!(out.removals, vec![k("3")]);
        let patches: Vec<_> = out.patches.into_iter().collect();
        assert_eq!(
            patches,
            vec![(
                vec![2],
                vec![(k("2"), vec![t("2"), Value::Unchanged, t("n")])]
            )]
        );
        // Never narrows.
        let mut row = vec![t("x"), t("y")];
        widen_row(&mut row, 1, Value::Null);
        assert_eq!(row.len(), 2);
    }

    #[test]
    fn a_split_deals_every_key_to_exactly_one_part_and_keeps_the_count() {
        let mut c = Compactor::default();
        for i in 0..1000 {
            c.push(
                k(&i.to_string()),
                Op::Upsert(vec![t(&i.to_string()), t("a")]),
            );
        }
        c.push(k("7"), Op::Delete);
        let parts = c.split(2);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].changes + parts[1].changes, 1001);
        assert_eq!(parts[0].len() + parts[1].len(), 1000);
        // Roughly even, and each key in one part only, with its compacted op.
        assert!(
            parts.iter().all(|p| p.len() > 400),
            "{} / {}",
            parts[0].len(),
            parts[1].len()
        );
        let holding_7: Vec<_> = parts
            .iter()
            .filter(|p| p.ops.contains_key(&k("7")))
            .collect();
        assert_eq!(holding_7.len(), 1);
        assert_eq!(holding_7[0].ops[&k("7")], Op::Delete);
        assert_eq!(Compactor::default().split(0).len(), 1);
    }

    #[test]
    fn later_full_images_win_and_deletes_drop_earlier_images() {
        let mut c = Compactor::default();
        c.push(k("1"), Op::Upsert(vec![t("1"), t("a")]));
        c.push(k("1"), Op::Upsert(vec![t("1"), t("b")]));
        c.push(k("2"), Op::Upsert(vec![t("2"), t("x")]));
        c.push(k("2"), Op::Delete);
        c.push(k("3"), Op::Delete);
        c.push(k("3"), Op::Upsert(vec![t("3"), t("y")]));
        assert_eq!(c.changes, 6);
        let out = c.finish(&[0]);
        let mut deletes = out.deletes.clone();
        deletes.sort();
        assert_eq!(deletes, vec![k("1"), k("2"), k("3")]);
        let mut inserts = out.inserts.clone();
        inserts.sort_by_key(|r| format!("{r:?}"));
        assert_eq!(inserts, vec![vec![t("1"), t("b")], vec![t("3"), t("y")]]);
        assert!(out.patches.is_empty());
    }

    #[test]
    fn patches_merge_into_full_images_and_into_each_other() {
        let mut c = Compactor::default();
        c.push(k("1"), Op::Upsert(vec![t("1"), t("big"), t("5")]));
        c.push(k("1"), Op::Patch(vec![t("1"), Value::Unchanged, t("6")]));
        c.push(k("2"), Op::Patch(vec![t("2"), Value::Unchanged, t("7")]));
        c.push(
            k("2"),
            Op::Patch(vec![t("2"), Value::Unchanged, Value::Null]),
        );
        let out = c.finish(&[0]);
        assert_eq!(out.inserts, vec![vec![t("1"), t("big"), t("6")]]);
        assert_eq!(out.deletes, vec![k("1")]);
        assert_eq!(out.patches.len(), 1);
        assert_eq!(
            out.patches[&vec![2]],
            vec![(k("2"), vec![t("2"), Value::Unchanged, Value::Null])]
        );
    }

    #[test]
    fn a_patch_after_a_delete_keeps_the_delete_and_a_full_image_replaces_a_patch() {
        let mut c = Compactor::default();
        c.push(k("1"), Op::Delete);
        c.push(k("1"), Op::Patch(vec![t("1"), t("z")]));
        c.push(k("2"), Op::Patch(vec![t("2"), t("p")]));
        c.push(k("2"), Op::Upsert(vec![t("2"), t("q")]));
        let out = c.finish(&[0]);
        let mut deletes = out.deletes.clone();
        deletes.sort();
        assert_eq!(deletes, vec![k("1"), k("2")]);
        assert_eq!(out.inserts, vec![vec![t("2"), t("q")]]);
        assert!(out.patches.is_empty());
    }

    #[test]
    fn removals_hold_the_deleted_keys_only() {
        let mut c = Compactor::default();
        c.push(k("1"), Op::Upsert(vec![t("1"), t("a")]));
        c.push(k("2"), Op::Upsert(vec![t("2"), t("x")]));
        c.push(k("2"), Op::Delete);
        c.push(k("3"), Op::Patch(vec![t("3"), t("p")]));
        c.push(k("4"), Op::Delete);
        let out = c.finish(&[0]);
        let mut removals = out.removals.clone();
        removals.sort();
        assert_eq!(removals, vec![k("2"), k("4")]);
        assert_eq!(out.inserts, vec![vec![t("1"), t("a")]]);
    }

    #[test]
    fn patches_group_by_the_columns_they_set() {
        let mut c = Compactor::default();
        c.push(k("1"), Op::Patch(vec![t("1"), Value::Unchanged, t("a")]));
        c.push(k("2"), Op::Patch(vec![t("2"), Value::Unchanged, t("b")]));
        c.push(k("3"), Op::Patch(vec![t("3"), t("c"), Value::Unchanged]));
        let out = c.finish(&[0]);
        assert_eq!(out.patches.len(), 2);
        assert_eq!(out.patches[&vec![2]].len(), 2);
        assert_eq!(out.patches[&vec![1]].len(), 1);
    }

    #[test]
    fn copy_text_escapes_control_characters_and_nulls() {
        let mut buf = Vec::new();
        encode_copy_text_row(&vec![t("1"), Value::Null, t("a\tb\nc\\d\re")], &mut buf);
        assert_eq!(buf, b"1\t\\N\ta\\tb\\nc\\\\d\\re\n");
    }
}
