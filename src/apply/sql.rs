//! The statements the applier runs against the target, built once from the table's shape (pure).
//! Values travel as text arrays and are cast to each column's type by the server.

use crate::pg::ident::{QualifiedName, quote_ident};

/// The target table as the applier sees it: the replicated columns in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    pub target: QualifiedName,
    /// (name, type as `format_type` prints it)
    pub columns: Vec<(String, String)>,
    /// Indexes into `columns` of the source key, in key order.
    pub key: Vec<usize>,
    /// The target is partitioned. Rows are then found by a join of the batch with the table that
    /// the server can prune row by row (a nested loop over the batch, probing one partition for
    /// each row), where a key array (`= ANY`) probes every partition for every key.
    pub partitioned: bool,
    /// Indexes into `columns` of the target's partition-key columns that are not key columns.
    /// A row's new image names its partition through them: the first attempt to find it looks
    /// there only, and the rows it misses (new rows, or rows whose partition key changed) are
    /// looked for by key alone.
    pub route: Vec<usize>,
    /// The reverse stream's target (`crate::rollback`): the old table, whose key is a subset of
    /// the stream's key. `None` for the forward apply.
    pub narrow: Option<Narrow>,
}

/// The old table as the reverse stream's target: its key (`key`, indexes into `columns`) is a
/// subset of the stream's (`Shape::key`, the new table's). Rows are found by the stream's key; a
/// full image whose row is not found but whose old key another row holds replaces that row (the
/// newest wins), and the old key is recorded as a conflict candidate for migration
/// `migration_id` (docs/design.md §11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Narrow {
    pub key: Vec<usize>,
    pub migration_id: i64,
}

impl Shape {
    fn col(&self, i: usize) -> String {
        quote_ident(&self.columns[i].0)
    }

    fn ty(&self, i: usize) -> &str {
        &self.columns[i].1
    }

    /// Deletes rows by source key. Parameters: one `text[]` per key column.
    pub fn delete_sql(&self) -> String {
        if let [k] = self.key.as_slice() {
            return format!(
                "DELETE FROM {} WHERE {} = ANY($1::text[]::{}[])",
                self.target.sql(),
                self.col(*k),
                self.ty(*k)
            );
        }
        let args: Vec<String> = (1..=self.key.len())
            .map(|i| format!("${i}::text[]"))
            .collect();
        let names: Vec<String> = (0..self.key.len()).map(|i| format!("k{i}")).collect();
        let cond: Vec<String> = self
            .key
            .iter()
            .enumerate()
            .map(|(j, &k)| format!("t.{} = d.k{j}::{}", self.col(k), self.ty(k)))
            .collect();
        format!(
            "DELETE FROM {} t USING unnest({}) AS d({}) WHERE {}",
            self.target.sql(),
            args.join(", "),
            names.join(", "),
            cond.join(" AND ")
        )
    }

    /// COPY of full rows in text format.
    pub fn copy_in_sql(&self) -> String {
        let cols: Vec<String> = (0..self.columns.len()).map(|i| self.col(i)).collect();
        format!(
            "COPY {} ({}) FROM STDIN",
            self.target.sql(),
            cols.join(", ")
        )
    }

    /// Sets every column of the rows found by key to the given full images, and returns the
    /// (1-based) positions of the images whose row was found; the others are new rows, inserted
    /// with COPY. Updating in place keeps untouched indexes (HOT) and the row's partition when its
    /// partition key did not change, where delete + insert rewrote every index entry.
    /// Parameters: one `text[]` per column, all of one length.
    pub fn update_rows_sql(&self) -> String {
        let mut cond = self.image_cond(&self.key);
        let narrow_single = match &self.narrow {
            Some(n) if n.key.len() == 1 => Some(n.key[0]),
            _ => None,
        };
        if let Some(k) = narrow_single.or(match self.key.as_slice() {
            [k] => Some(*k),
            _ => None,
        }) {
            // Lets the planner see which keys are wanted: index scans rather than a hash join
            // over the whole table.
            cond.push(self.any_cond(k));
        }
        self.update_images_sql(&cond, &self.key)
    }

    fn any_cond(&self, k: usize) -> String {
        format!(
            "t.{} = ANY(${}::text[]::{}[])",
            self.col(k),
            k + 1,
            self.ty(k)
        )
    }

    /// The reverse stream only (`narrow`): full images found by the old table's key alone, each
    /// replacing the row it finds (every column but that key set); returns the (1-based)
    /// positions of the images found, like `update_rows_sql`, with the same parameters.
    pub fn narrow_update_sql(&self) -> Option<String> {
        let narrow = self.narrow.as_ref()?;
        let mut cond = self.image_cond(&narrow.key);
        if let [k] = narrow.key.as_slice() {
            cond.push(self.any_cond(*k));
        }
        Some(self.update_images_sql(&cond, &narrow.key))
    }

    /// The reverse stream only: records old keys as conflict candidates. Parameters: one
    /// `text[]` per old-key column.
    pub fn record_conflicts_sql(&self) -> Option<String> {
        let narrow = self.narrow.as_ref()?;
        let n = narrow.key.len();
        let args: Vec<String> = (1..=n).map(|i| format!("${i}::text[]")).collect();
        let names: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
        let elems: Vec<String> = names.iter().map(|k| format!("d.{k}")).collect();
        Some(format!(
            "INSERT INTO pgrepart.reverse_conflicts (migration_id, key) SELECT {}, ARRAY[{}] \
             FROM unnest({}) AS d({}) ON CONFLICT DO NOTHING",
            narrow.migration_id,
            elems.join(", "),
            args.join(", "),
            names.join(", ")
        ))
    }

    /// The first attempt of `update_rows_sql` on a partitioned target: rows found by key and
    /// partition-key columns, joined row by row so that each probes one partition (see
    /// `partitioned`). Same parameters and result. `None` on a plain table.
    pub fn update_routed_sql(&self) -> Option<String> {
        if !self.partitioned {
            return None;
        }
        let cols: Vec<usize> = self.key.iter().chain(&self.route).copied().collect();
        Some(self.update_images_sql(&self.image_cond(&cols), &self.key))
    }

    /// `t.col = d.c<i>::type` for each column `i` of a full image.
    fn image_cond(&self, cols: &[usize]) -> Vec<String> {
        cols.iter()
            .map(|&k| format!("t.{} = d.c{k}::{}", self.col(k), self.ty(k)))
            .collect()
    }

    /// The UPDATE of full images (one `text[]` per column) of the rows matching `cond`, which
    /// sets every column but `keep` and returns the positions of the images found.
    fn update_images_sql(&self, cond: &[String], keep: &[usize]) -> String {
        let n = self.columns.len();
        let args: Vec<String> = (1..=n).map(|i| format!("${i}::text[]")).collect();
        let names: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
        let mut set: Vec<usize> = (0..n).filter(|i| !keep.contains(i)).collect();
        if set.is_empty() {
            set = (0..n).collect();
        }
        let assign: Vec<String> = set
            .iter()
            .map(|&c| format!("{} = d.c{c}::{}", self.col(c), self.ty(c)))
            .collect();
        format!(
            "UPDATE {} t SET {} FROM unnest({}) WITH ORDINALITY AS d({}, n) WHERE {} RETURNING d.n",
            self.target.sql(),
            assign.join(", "),
            args.join(", "),
            names.join(", "),
            cond.join(" AND ")
        )
    }

    /// Whether the rows an `update_routed_sql` missed must be looked for again by key alone:
    /// when the partition key has columns outside the key, a row may sit in another partition
    /// than its new image names (its partition key changed).
    pub fn misses_need_key_lookup(&self) -> bool {
        self.partitioned && !self.route.is_empty()
    }

    /// The first attempt of `patch_sql(set)` on a partitioned target whose partition-key columns
    /// are all in `set`: found by key and those columns, with the (1-based) positions of the rows
    /// found returned. Same parameters as `patch_sql`. `None` otherwise (`patch_sql` alone).
    pub fn patch_routed_sql(&self, set: &[usize]) -> Option<String> {
        if !self.misses_need_key_lookup() || !self.route.iter().all(|r| set.contains(r)) {
            return None;
        }
        let route = self.route.iter().map(|&r| {
            let j = set.iter().position(|&c| c == r).expect("checked above");
            format!("t.{} = d.c{j}::{}", self.col(r), self.ty(r))
        });
        Some(self.patch_update_sql(set, route.collect(), true))
    }

    /// Sets `set` columns of rows found by key. Parameters: key columns' `text[]`, then one
    /// `text[]` per set column.
    pub fn patch_sql(&self, set: &[usize]) -> String {
        self.patch_update_sql(set, vec![], false)
    }

    /// The UPDATE of `set` columns of the rows found by key and `more` conditions; with
    /// `positions`, it returns the (1-based) positions of the rows found.
    fn patch_update_sql(&self, set: &[usize], more: Vec<String>, positions: bool) -> String {
        let n = self.key.len() + set.len();
        let args: Vec<String> = (1..=n).map(|i| format!("${i}::text[]")).collect();
        let mut names: Vec<String> = (0..self.key.len()).map(|i| format!("k{i}")).collect();
        names.extend((0..set.len()).map(|i| format!("c{i}")));
        let assign: Vec<String> = set
            .iter()
            .enumerate()
            .map(|(j, &c)| format!("{} = d.c{j}::{}", self.col(c), self.ty(c)))
            .collect();
        let mut cond: Vec<String> = self
            .key
            .iter()
            .enumerate()
            .map(|(j, &k)| format!("t.{} = d.k{j}::{}", self.col(k), self.ty(k)))
            .collect();
        cond.extend(more);
        let (ordinality, n_name, returning) = if positions {
            (" WITH ORDINALITY", ", n", " RETURNING d.n")
        } else {
            ("", "", "")
        };
        format!(
            "UPDATE {} t SET {} FROM unnest({}){ordinality} AS d({}{n_name}) WHERE {}{returning}",
            self.target.sql(),
            assign.join(", "),
            args.join(", "),
            names.join(", "),
            cond.join(" AND ")
        )
    }

    /// One row whose key changed while some columns were not sent: update it in place.
    /// Parameters: the `set` columns' text, then the OLD key's text.
    pub fn key_move_sql(&self, set: &[usize]) -> String {
        let assign: Vec<String> = set
            .iter()
            .enumerate()
            .map(|(j, &c)| format!("{} = ${}::text::{}", self.col(c), j + 1, self.ty(c)))
            .collect();
        let cond: Vec<String> = self
            .key
            .iter()
            .enumerate()
            .map(|(j, &k)| {
                format!(
                    "{} = ${}::text::{}",
                    self.col(k),
                    set.len() + j + 1,
                    self.ty(k)
                )
            })
            .collect();
        format!(
            "UPDATE {} SET {} WHERE {}",
            self.target.sql(),
            assign.join(", "),
            cond.join(" AND ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(key: Vec<usize>) -> Shape {
        Shape {
            target: QualifiedName::new("public", "t_new"),
            columns: vec![
                ("id".into(), "bigint".into()),
                ("region".into(), "text".into()),
                ("amount".into(), "numeric(10,2)".into()),
            ],
            key,
            partitioned: false,
            route: vec![],
            narrow: None,
        }
    }

    /// The reverse stream's target: the old table keyed by `id`, found by `(id, region)`.
    fn reverse() -> Shape {
        Shape {
            target: QualifiedName::new("public", "orders_flat_old"),
            narrow: Some(Narrow {
                key: vec![0],
                migration_id: 7,
            }),
            ..shape(vec![0, 1])
        }
    }

    #[test]
    fn the_reverse_stream_finds_rows_by_the_new_key_and_replaces_them_by_the_old_one() {
        let s = reverse();
        assert_eq!(
            s.update_rows_sql(),
            "UPDATE \"public\".\"orders_flat_old\" t SET \"amount\" = d.c2::numeric(10,2) \
             FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS d(c0, c1, c2, n) \
             WHERE t.\"id\" = d.c0::bigint AND t.\"region\" = d.c1::text AND t.\"id\" = ANY($1::text[]::bigint[]) RETURNING d.n"
        );
        assert_eq!(
            s.narrow_update_sql().unwrap(),
            "UPDATE \"public\".\"orders_flat_old\" t SET \"region\" = d.c1::text, \"amount\" = d.c2::numeric(10,2) \
             FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS d(c0, c1, c2, n) \
             WHERE t.\"id\" = d.c0::bigint AND t.\"id\" = ANY($1::text[]::bigint[]) RETURNING d.n"
        );
        assert_eq!(
            s.record_conflicts_sql().unwrap(),
            "INSERT INTO pgrepart.reverse_conflicts (migration_id, key) SELECT 7, ARRAY[d.k0] \
             FROM unnest($1::text[]) AS d(k0) ON CONFLICT DO NOTHING"
        );
        // The forward apply has neither.
        assert_eq!(shape(vec![0]).narrow_update_sql(), None);
        assert_eq!(shape(vec![0]).record_conflicts_sql(), None);
    }

    /// The seed's shape: partitioned by `region`, keyed by `id`.
    fn by_region() -> Shape {
        Shape {
            partitioned: true,
            route: vec![1],
            ..shape(vec![0])
        }
    }

    #[test]
    fn a_plain_table_has_no_routed_statements() {
        let s = shape(vec![0]);
        assert_eq!(s.update_routed_sql(), None);
        assert_eq!(s.patch_routed_sql(&[1, 2]), None);
        assert!(!s.misses_need_key_lookup());
    }

    #[test]
    fn partitioned_targets_find_full_images_by_key_and_partition_key_without_a_key_array() {
        assert_eq!(
            by_region().update_routed_sql().unwrap(),
            "UPDATE \"public\".\"t_new\" t SET \"region\" = d.c1::text, \"amount\" = d.c2::numeric(10,2) \
             FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS d(c0, c1, c2, n) \
             WHERE t.\"id\" = d.c0::bigint AND t.\"region\" = d.c1::text RETURNING d.n"
        );
        assert!(by_region().misses_need_key_lookup());
        // Partitioned by a key column (HASH (id)): the key names the partition, a miss is a new
        // row.
        let by_key = Shape {
            partitioned: true,
            ..shape(vec![0])
        };
        assert_eq!(
            by_key.update_routed_sql().unwrap(),
            "UPDATE \"public\".\"t_new\" t SET \"region\" = d.c1::text, \"amount\" = d.c2::numeric(10,2) \
             FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS d(c0, c1, c2, n) \
             WHERE t.\"id\" = d.c0::bigint RETURNING d.n"
        );
        assert!(!by_key.misses_need_key_lookup());
    }

    #[test]
    fn patches_are_routed_only_when_they_carry_the_partition_key() {
        assert_eq!(by_region().patch_routed_sql(&[2]), None);
        assert_eq!(
            by_region().patch_routed_sql(&[2, 1]).unwrap(),
            "UPDATE \"public\".\"t_new\" t SET \"amount\" = d.c0::numeric(10,2), \"region\" = d.c1::text \
             FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS d(k0, c0, c1, n) \
             WHERE t.\"id\" = d.k0::bigint AND t.\"region\" = d.c1::text RETURNING d.n"
        );
    }

    #[test]
    fn single_column_keys_delete_with_any() {
        assert_eq!(
            shape(vec![0]).delete_sql(),
            "DELETE FROM \"public\".\"t_new\" WHERE \"id\" = ANY($1::text[]::bigint[])"
        );
    }

    #[test]
    fn composite_keys_delete_through_unnest() {
        assert_eq!(
            shape(vec![0, 1]).delete_sql(),
            "DELETE FROM \"public\".\"t_new\" t USING unnest($1::text[], $2::text[]) AS d(k0, k1) \
             WHERE t.\"id\" = d.k0::bigint AND t.\"region\" = d.k1::text"
        );
    }

    #[test]
    fn patches_set_only_the_sent_columns() {
        assert_eq!(
            shape(vec![0]).patch_sql(&[2]),
            "UPDATE \"public\".\"t_new\" t SET \"amount\" = d.c0::numeric(10,2) FROM unnest($1::text[], $2::text[]) \
             AS d(k0, c0) WHERE t.\"id\" = d.k0::bigint"
        );
    }

    #[test]
    fn full_images_update_the_non_key_columns_by_key_and_return_their_positions() {
        assert_eq!(
            shape(vec![0]).update_rows_sql(),
            "UPDATE \"public\".\"t_new\" t SET \"region\" = d.c1::text, \"amount\" = d.c2::numeric(10,2) \
             FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS d(c0, c1, c2, n) \
             WHERE t.\"id\" = d.c0::bigint AND t.\"id\" = ANY($1::text[]::bigint[]) RETURNING d.n"
        );
        assert_eq!(
            shape(vec![0, 1]).update_rows_sql(),
            "UPDATE \"public\".\"t_new\" t SET \"amount\" = d.c2::numeric(10,2) \
             FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS d(c0, c1, c2, n) \
             WHERE t.\"id\" = d.c0::bigint AND t.\"region\" = d.c1::text RETURNING d.n"
        );
    }

    #[test]
    fn copy_and_key_moves_name_every_column() {
        let s = shape(vec![0]);
        assert_eq!(
            s.copy_in_sql(),
            "COPY \"public\".\"t_new\" (\"id\", \"region\", \"amount\") FROM STDIN"
        );
        assert_eq!(
            s.key_move_sql(&[0, 2]),
            "UPDATE \"public\".\"t_new\" SET \"id\" = $1::text::bigint, \"amount\" = $2::text::numeric(10,2) WHERE \"id\" = $3::text::bigint"
        );
    }
}
