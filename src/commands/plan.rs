//! `pgrepart plan`: the same checks as `run`, the DDL it would execute (with generated
//! partitions), the table's size and key ranges, a rough WAL retention estimate, and what the
//! cutover carries over; changes nothing.
//!
//! ```text
//! args ─► Prepared ─► generated partitions (reads the data) ─► preflight facts ─► verdicts
//!      ─► DDL tried in a transaction that is rolled back (validates bounds, counts rows for DEFAULT)
//!      ─► key ranges, WAL rate, carry-over ─► human text or one JSON object; exit 1 on a failed check
//! ```

use std::time::Duration;

use serde::Serialize;
use tokio_postgres::Client;

use super::Prepared;
use crate::cli::PlanArgs;
use crate::copy::ranges;
use crate::dependents::inventory;
use crate::error::{Error, Result};
use crate::pg::catalog::{self, TableInfo};
use crate::pg::ddl;
use crate::preflight::{self, Check, Status, Target};

/// Assumed copy speed per worker, for the rough duration and WAL estimates.
const COPY_BYTES_PER_SECOND_PER_WORKER: f64 = 20.0 * 1024.0 * 1024.0;

#[derive(Debug, Serialize)]
struct Plan {
    table: String,
    target: String,
    checks: Vec<Check>,
    ddl: Vec<String>,
    rows_estimate: Option<i64>,
    total_bytes: Option<i64>,
    /// The copy's key ranges as `run` would cut them now (`None` without a usable table or key).
    copy_ranges: Option<CopyRanges>,
    /// Each range's bounds, for a single integer key (other keys' bounds are data, not shown).
    key_ranges: Vec<String>,
    wal: Option<WalEstimate>,
    carried_over: Vec<String>,
    not_carried_over: Vec<String>,
    /// Every object `pg_depend` ties to the table, and its catalog properties, each with what
    /// the migration does with it.
    dependents: Vec<inventory::Dependent>,
}

/// The ranges `run` would copy in parallel, planned by the same code from a sample of the key.
#[derive(Debug, Serialize, PartialEq)]
struct CopyRanges {
    /// The key the ranges are cut on, in the server's order: `(name type, ...)`.
    key: String,
    count: usize,
    /// Keys read to cut them, and whether that was every key (a small table) or a sample.
    sampled_keys: usize,
    whole_table: bool,
    /// Rows per range, estimated from the sample (exact when every key was read).
    rows_per_range_min: i64,
    rows_per_range_max: i64,
    /// Bytes of row data in the largest range, estimated from the sample: ranges are cut on rows
    /// and bytes together (`ranges::bounds_from_sized_sample`).
    bytes_per_range_max: i64,
    /// Cut on rows and bytes together, the large rows being clustered in the key
    /// (`ranges::choose_cuts`); else on rows alone.
    cut_on_bytes: bool,
    /// `pg_stats.correlation` of the key's first column: how closely the table's physical order
    /// follows the key (`None` before the table is analyzed).
    key_correlation: Option<f64>,
    /// The key's order is not the table's physical order: each range's rows lie on most of its
    /// pages, which each range's read visits again (docs/limits.md).
    scattered: bool,
}

/// Below this `|correlation|` a range's rows are taken to lie on most of the table's pages.
const SCATTERED_BELOW: f64 = 0.5;

/// Whether ranges over a key with this correlation to the physical order are scattered (pure).
fn scattered(correlation: Option<f64>, ranges: usize) -> bool {
    ranges > 1 && correlation.is_some_and(|c| c.abs() < SCATTERED_BELOW)
}

impl CopyRanges {
    /// One line for the human output (pure).
    fn line(&self) -> String {
        let how = if self.whole_table {
            format!("counted over all {} keys", self.sampled_keys)
        } else {
            format!("estimated from a sample of {} keys", self.sampled_keys)
        };
        let ratio = if self.rows_per_range_min > 0 {
            format!(
                ", max/min {:.2}",
                self.rows_per_range_max as f64 / self.rows_per_range_min as f64
            )
        } else {
            String::new()
        };
        let on = if self.cut_on_bytes {
            ", cut on rows and bytes (the large rows are together in the key)"
        } else {
            ""
        };
        let mut line = format!(
            "{} key range{} on {}, copied in parallel: {} to {} rows each{ratio}, at most {} of rows each{on} ({how})",
            self.count,
            if self.count == 1 { "" } else { "s" },
            self.key,
            self.rows_per_range_min,
            self.rows_per_range_max,
            crate::commands::status::bytes(self.bytes_per_range_max),
        );
        if self.scattered {
            line.push_str(&format!(
                "\n  the key is not in the table's physical order (correlation {:.2}): each range's rows lie on most of the table's pages, and each range reads them again (docs/limits.md)",
                self.key_correlation.unwrap_or(0.0)
            ));
        }
        line
    }
}

#[derive(Debug, Serialize)]
struct WalEstimate {
    /// WAL written per second on the server, measured over one second.
    wal_bytes_per_second: i64,
    copy_seconds_estimate: i64,
    /// WAL the slot holds back by the end of the copy and index build, roughly.
    retained_bytes_estimate: i64,
    max_slot_wal_keep_size: String,
    note: String,
}

pub async fn run(args: PlanArgs) -> Result<()> {
    let prep = Prepared::from_migration(&args.migration)?;
    let mut client = crate::pg::connect(&prep.source, "pgrepart plan").await?;
    let mut extra_checks = Vec::new();
    let prep = match prep.with_generated_partitions(&client).await {
        Ok(p) => p,
        Err(e) => {
            extra_checks.push(Check {
                name: "partitions",
                status: Status::Fail,
                detail: e.message().to_string(),
                hint: e.hint().map(str::to_string),
            });
            prep
        }
    };
    let mut facts = preflight::gather(&client, &prep.table, &prep.target, &prep.old_name).await?;
    if prep.cross_db() {
        let target_db = prep.dbs.connect_state("pgrepart plan").await?;
        extra_checks.extend(
            preflight::gather_cross(
                &mut facts,
                &client,
                &target_db,
                &prep.table,
                &prep.target,
                &prep.old_name,
            )
            .await?,
        );
    }
    facts.inbound_fks = preflight::InboundFkPolicy {
        drop: args.migration.drop_inbound_fks,
        cross_db: prep.cross_db(),
    };
    let mut checks = preflight::evaluate(&facts, &prep.table, &prep.target);
    checks.extend(extra_checks);
    if args.migration.rollback_window.is_some_and(|w| !w.is_zero())
        && let Some(k) = facts.table.as_ref().and_then(|t| t.key_index())
    {
        let new_key = match &prep.target {
            Target::Generate { by, .. } => Some(ddl::target_primary_key(&k.columns, by)),
            _ => None,
        };
        let refused = crate::rollback::fks::window_refusals(
            &crate::rollback::fks::self_references(&client, &prep.table).await?,
            &preflight::inbound_actions(&facts, &prep.target),
        );
        let fks = (!refused.is_empty()).then(|| refused.join("; "));
        let cross = if prep.cross_db() {
            let target_db = prep.dbs.connect_state("pgrepart plan").await?;
            Some(crate::rollback::cross::refusals(&client, &target_db).await?)
        } else {
            None
        };
        checks.push(crate::rollback::plan_check(
            &k.columns,
            new_key.as_deref(),
            cross,
            fks,
        ));
    }

    let mut statements = Vec::new();
    if let (
        Some(t),
        Target::Generate {
            name,
            by,
            partitions,
        },
    ) = (&facts.table, &prep.target)
        && let Some(k) = t.key_index()
        && !partitions.is_empty()
    {
        // `auto` decides when the run starts; the plan shows the key declared up front.
        let later = args.primary_key == crate::copy::indexes::KeyTiming::AfterCopy;
        let key = if later {
            ddl::KeyClause::Later
        } else {
            ddl::KeyClause::Declared
        };
        statements.extend(ddl::create_partitioned_table_statements(
            t, name, by, &k.columns, key,
        ));
        statements.extend(
            partitions
                .iter()
                .map(|p| ddl::create_partition(name, p, &t.storage_options)),
        );
        statements.extend(ddl::replica_identity_statements(t, name, partitions));
        statements.extend(
            ddl::secondary_indexes(t, name, by)
                .into_iter()
                .map(|i| i.sql),
        );
        if later {
            statements.push(format!(
                "ALTER TABLE {} ADD PRIMARY KEY ({})",
                name.sql(),
                ddl::primary_key_sql(&k.columns, by)
            ));
        }
        if checks.iter().all(|c| c.status != Status::Fail) {
            let has_default = partitions.iter().any(|p| p.is_default());
            checks.push(match try_ddl(&mut client, &statements, t, name).await {
                Ok(outside) => preflight::rows_fit_check(outside, has_default),
                Err(e) => Check {
                    name: "ddl",
                    status: Status::Fail,
                    detail: e.message().to_string(),
                    hint: Some(
                        "fix the partition bounds (--partition) so PostgreSQL accepts them".into(),
                    ),
                },
            });
        }
    }

    let usable = facts
        .table
        .as_ref()
        .filter(|t| matches!(t.relkind, 'r' | 'p'));
    let mut key_ranges = Vec::new();
    let mut copy_ranges = None;
    let mut wal = None;
    let mut carried_over = Vec::new();
    let mut not_carried_over = Vec::new();
    let mut dependents = Vec::new();
    if let Some(t) = usable {
        dependents =
            dependents_inventory(&client, t, &prep.target, &facts, prep.cross_db()).await?;
        if let Some((ranges, bounds)) = plan_key_ranges(&client, t, prep.jobs).await? {
            copy_ranges = Some(ranges);
            key_ranges = bounds;
        }
        wal = Some(estimate_wal(&client, t, prep.jobs).await?);
        (carried_over, not_carried_over) =
            carry_over_report(&client, t, &prep.target, &facts, prep.cross_db()).await?;
        if let Target::Generate { name, by, .. } = &prep.target {
            for i in ddl::secondary_indexes(t, name, by) {
                if let Some(w) = i.warning {
                    not_carried_over.push(w);
                }
            }
        }
    }

    let plan = Plan {
        table: prep.table.to_string(),
        target: prep.target.name().to_string(),
        rows_estimate: facts.table.as_ref().map(|t| t.estimated_rows),
        total_bytes: facts.table.as_ref().map(|t| t.total_bytes),
        checks,
        ddl: statements,
        copy_ranges,
        key_ranges,
        wal,
        carried_over,
        not_carried_over,
        dependents,
    };
    let failed = plan
        .checks
        .iter()
        .filter(|c| c.status == Status::Fail)
        .count();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&plan).expect("plan serializes")
        );
    } else {
        print_human(&plan);
    }
    if failed > 0 {
        return Err(Error::refused(format!("{failed} check(s) failed")));
    }
    Ok(())
}

fn print_human(plan: &Plan) {
    println!("plan for {} -> {}", plan.table, plan.target);
    for c in &plan.checks {
        let mark = match c.status {
            Status::Pass => "pass",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        };
        println!("  [{mark}] {:<20} {}", c.name, c.detail);
        if c.status != Status::Pass
            && let Some(h) = &c.hint
        {
            println!("         {:<20} fix: {h}", "");
        }
    }
    if let (Some(rows), Some(bytes)) = (plan.rows_estimate, plan.total_bytes) {
        println!(
            "\ntable: about {rows} rows, {} MiB with indexes and TOAST",
            bytes / (1024 * 1024)
        );
    }
    if let Some(r) = &plan.copy_ranges {
        println!("{}", r.line());
    }
    if !plan.key_ranges.is_empty() {
        println!("  bounds: {}", plan.key_ranges.join(" "));
    }
    if let Some(w) = &plan.wal {
        println!("WAL: {}", w.note);
    }
    if !plan.ddl.is_empty() {
        println!("\nDDL that `run` executes:");
        for s in &plan.ddl {
            println!("{s};");
        }
    }
    if !plan.carried_over.is_empty() {
        println!("\ncarried over to the new table at cutover:");
        for c in &plan.carried_over {
            println!("  - {c}");
        }
    }
    if !plan.not_carried_over.is_empty() {
        println!("\nNOT carried over:");
        for c in &plan.not_carried_over {
            println!("  - {c}");
        }
    }
    if !plan.dependents.is_empty() {
        println!(
            "\ndependents ({}: everything pg_depend ties to the table, and its own catalog entries):",
            plan.dependents.len()
        );
        for l in inventory::lines(&plan.dependents) {
            println!("  {l}");
        }
    }
}

/// The inventory of the table's dependents, with each inbound foreign key's fate as the run
/// will decide it (widened, dropped or refused).
async fn dependents_inventory(
    client: &Client,
    t: &TableInfo,
    target: &Target,
    facts: &preflight::Facts,
    cross_db: bool,
) -> Result<Vec<inventory::Dependent>> {
    use crate::dependents::fk::InboundAction;
    let mut items = inventory::survey(client, t.oid, &[], cross_db).await?;
    let actions = preflight::inbound_actions(facts, target);
    for d in items
        .iter_mut()
        .filter(|d| d.kind == inventory::Kind::InboundForeignKey)
    {
        // By the constraint's oid: pg_describe_object's text depends on the search path and quoting.
        let Some((fk, action)) = actions
            .iter()
            .find(|(fk, _)| d.id.map(|(_, objid)| objid) == Some(fk.oid))
        else {
            continue;
        };
        d.fate = match action {
            InboundAction::Composite { .. } => inventory::Fate::Carried,
            InboundAction::Refuse { .. } => inventory::Fate::Refused,
            InboundAction::Drop { .. } | InboundAction::LeftOnSource => inventory::Fate::NotCarried,
        };
        d.how = crate::dependents::fk::inbound_report(fk, action);
    }
    Ok(items)
}

/// Creates the target in a transaction that is always rolled back; returns how many existing rows
/// fit none of the non-DEFAULT partitions.
async fn try_ddl(
    client: &mut Client,
    statements: &[String],
    source: &TableInfo,
    target: &crate::pg::ident::QualifiedName,
) -> Result<i64> {
    let tx = client
        .transaction()
        .await
        .map_err(|e| Error::db("starting the trial transaction", e))?;
    for s in statements {
        tx.batch_execute(s)
            .await
            .map_err(|e| Error::db("the DDL does not run", e))?;
    }
    let fits = catalog::partition_fit_predicate(&tx, target).await?;
    let outside: i64 = tx
        .query_one(
            &format!(
                "SELECT count(*) FROM {} WHERE NOT coalesce({fits}, false)",
                source.name.sql()
            ),
            &[],
        )
        .await
        .map_err(|e| Error::db("counting rows outside the partitions", e))?
        .get(0);
    let _ = tx.rollback().await;
    Ok(outside)
}

/// The ranges `run` would cut now, by the same planner (`copy::plan_ranges_sampled`), read in a
/// READ ONLY transaction that is rolled back; with the bounds themselves for an integer key.
async fn plan_key_ranges(
    client: &Client,
    t: &TableInfo,
    jobs: usize,
) -> Result<Option<(CopyRanges, Vec<String>)>> {
    let Some(k) = t.key_index() else {
        return Ok(None);
    };
    if k.columns.iter().any(|c| t.column(c).is_none()) {
        return Ok(None);
    }
    let key = crate::copy::key_columns(t, &k.columns);
    let count = ranges::range_count(t.estimated_rows, t.total_bytes, jobs);
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(|e| Error::db("starting the key sample's transaction", e))?;
    let planned =
        crate::copy::plan_ranges_sampled(client, &t.name, &key, t.estimated_rows, count).await;
    client
        .batch_execute("ROLLBACK")
        .await
        .map_err(|e| Error::db("ending the key sample's transaction", e))?;
    let planned = planned?;
    let correlation: Option<f64> = client
        .query_opt(
            "SELECT correlation::float8 FROM pg_stats \
             WHERE schemaname = $1 AND tablename = $2 AND attname = $3 \
             ORDER BY inherited DESC LIMIT 1",
            &[&t.name.schema, &t.name.name, &k.columns[0]],
        )
        .await
        .map_err(|e| Error::db("reading the key's correlation", e))?
        .and_then(|r| r.get(0));
    let rows = planned.rows_per_range(t.estimated_rows);
    let bytes = planned.bytes_per_range(t.estimated_rows);
    let described: Vec<String> = k
        .columns
        .iter()
        .filter_map(|c| t.column(c))
        .map(|c| format!("{} {}", c.name, c.type_sql))
        .collect();
    let summary = CopyRanges {
        key: format!("({})", described.join(", ")),
        count: planned.ranges.len(),
        sampled_keys: planned.sampled.iter().sum(),
        whole_table: planned.whole_table,
        rows_per_range_min: rows.iter().copied().min().unwrap_or(0),
        rows_per_range_max: rows.iter().copied().max().unwrap_or(0),
        bytes_per_range_max: bytes.iter().copied().max().unwrap_or(0),
        cut_on_bytes: planned.on_bytes,
        key_correlation: correlation,
        scattered: scattered(correlation, planned.ranges.len()),
    };
    let bounds = match ranges::as_int_ranges(&planned.ranges) {
        Some(ints) if k.columns.len() == 1 => ints
            .iter()
            .map(|r| {
                format!(
                    "[{}, {})",
                    r.lo.map_or("-inf".into(), |v| v.to_string()),
                    r.hi.map_or("+inf".into(), |v| v.to_string())
                )
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(Some((summary, bounds)))
}

async fn estimate_wal(client: &Client, t: &TableInfo, jobs: usize) -> Result<WalEstimate> {
    let lsn = || async {
        client
            .query_one("SELECT pg_current_wal_lsn()::text", &[])
            .await
            .map(|r| r.get::<_, String>(0))
            .map_err(|e| Error::db("reading the WAL position", e))
    };
    let a = lsn().await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let b = lsn().await?;
    let row = client
        .query_one(
            "SELECT pg_wal_lsn_diff($2::text::pg_lsn, $1::text::pg_lsn)::bigint, current_setting('max_slot_wal_keep_size')",
            &[&a, &b],
        )
        .await
        .map_err(|e| Error::db("measuring the WAL rate", e))?;
    let rate: i64 = row.get::<_, i64>(0).max(0);
    let keep: String = row.get(1);
    let copy_seconds =
        (t.total_bytes as f64 / (COPY_BYTES_PER_SECOND_PER_WORKER * jobs.max(1) as f64)).ceil();
    // Copy, then the index build (about half as long again), then streaming: the slot holds
    // WAL written since the start until the applier confirms it.
    let retained = (rate as f64 * copy_seconds * 1.5) as i64;
    let note = format!(
        "{} kB/s written now; the copy takes roughly {}s at ~20 MiB/s per worker, so the slot holds back about {} MiB of WAL by the time it is done (rough; max_slot_wal_keep_size = {keep})",
        rate / 1024,
        copy_seconds as i64,
        retained / (1024 * 1024)
    );
    Ok(WalEstimate {
        wal_bytes_per_second: rate,
        copy_seconds_estimate: copy_seconds as i64,
        retained_bytes_estimate: retained,
        max_slot_wal_keep_size: keep,
        note,
    })
}

/// (carried over, not carried over) as readable lines.
async fn carry_over_report(
    client: &Client,
    t: &TableInfo,
    target: &Target,
    facts: &preflight::Facts,
    cross_db: bool,
) -> Result<(Vec<String>, Vec<String>)> {
    let carry = catalog::carry_over(client, &t.name, &[]).await?;
    let mut yes = vec![format!("owner ({})", t.owner)];
    yes.push(
        "index and constraint names (the new table's take the old names at the swap, the old table's end in _old)"
            .into(),
    );
    let mut fk_no = Vec::new();
    for (name, def) in &carry.not_valid_checks {
        let line = format!("CHECK constraint {name} ({def})");
        if matches!(target, Target::Generate { .. }) && !cross_db {
            yes.push(format!(
                "{line}: left out of the new table while it is filled (old rows may break it), added NOT VALID at the swap"
            ));
        } else {
            fk_no.push(format!("{line}: add it on the new table"));
        }
    }
    for fk in &carry.foreign_keys {
        let line = format!("foreign key {} ({})", fk.name, fk.definition);
        if cross_db {
            yes.push(format!(
                "{line}: onto {} in the target database after both commits (NOT VALID per partition, validated, then set on the partitioned table); reported as not carried when {} is not there",
                fk.referenced, fk.referenced
            ));
        } else if fk.validated {
            yes.push(format!(
                "{line}: added NOT VALID on each partition in the swap (no scan), validated per partition right after it, then set on the partitioned table (attaches them, no scan)"
            ));
        } else {
            yes.push(format!(
                "{line}: NOT VALID on the old table, so added NOT VALID on each partition in the swap and left so"
            ));
        }
    }
    for (fk, action) in preflight::inbound_actions(facts, target) {
        let line = crate::dependents::fk::inbound_report(&fk, &action);
        match action {
            crate::dependents::fk::InboundAction::Composite { .. } => yes.push(line),
            _ => fk_no.push(line),
        }
    }
    if !t.grants.is_empty() {
        let mut grants: Vec<String> = t
            .grants
            .iter()
            .map(|g| format!("{} to {}", g.privilege, g.grantee))
            .collect();
        grants.dedup();
        yes.push(format!("grants: {}", grants.join(", ")));
    }
    for s in &t.sequences {
        yes.push(format!(
            "sequence {} of column {}",
            s.sequence_sql, s.column
        ));
    }
    if carry.table_comment.is_some() {
        yes.push("table comment".into());
    }
    if !carry.column_comments.is_empty() {
        yes.push(format!("{} column comment(s)", carry.column_comments.len()));
    }
    if carry.rls_enabled {
        yes.push(format!(
            "row level security (enabled{})",
            if carry.rls_forced { ", forced" } else { "" }
        ));
    }
    for p in &carry.policies {
        yes.push(format!("policy {}", p.name));
    }
    for tr in &carry.triggers {
        yes.push(format!(
            "trigger {} (created at the swap, so it never fires for pgrepart's own writes)",
            tr.name
        ));
    }
    for v in &carry.views {
        yes.push(format!(
            "view {} (CREATE OR REPLACE after the renames)",
            v.name_sql
        ));
    }
    for m in &carry.matviews {
        yes.push(format!(
            "materialized view {} (rebuilt over the new table right after the swap, not under its lock: \
             {} under a temporary name with its indexes, owner, grants and comments, then swapped in; \
             the old one answers, with the data it had, until then)",
            m.name(),
            if m.populated {
                "CREATE ... WITH DATA"
            } else {
                "CREATE ... WITH NO DATA (as it is now)"
            }
        ));
    }
    for (c, n) in &carry.statistics_targets {
        yes.push(format!("statistics target {n} of {c}"));
    }
    for p in &carry.publications {
        yes.push(format!("membership in publication {p}"));
    }
    yes.push("planner statistics (the new table is analyzed before the cutover)".into());
    let mut no = carry.not_carried;
    let generated = matches!(target, Target::Generate { .. });
    if !t.storage_options.is_empty() {
        let list = t.storage_options.join(", ");
        if generated {
            yes.push(format!(
                "storage parameters {list} (on each partition when it is created: a partitioned table takes none; partitions added later need them too)"
            ));
        } else {
            no.push(format!(
                "storage parameters {list}: set them on the --into table's partitions"
            ));
        }
    }
    let storage: Vec<String> = t
        .columns
        .iter()
        .filter_map(|c| Some(format!("{} {}", c.name, c.storage.as_ref()?)))
        .collect();
    if !storage.is_empty() {
        let list = storage.join(", ");
        if generated {
            yes.push(format!(
                "column storage {list} (SET STORAGE on the new table when it is created; its partitions inherit it)"
            ));
        } else {
            no.push(format!(
                "column storage {list}: ALTER TABLE ... ALTER COLUMN ... SET STORAGE on the --into table"
            ));
        }
    }
    match (t.replica_identity, generated) {
        ('f', true) => yes.push(
            "REPLICA IDENTITY FULL (set on the new table and each partition when they are created)"
                .into(),
        ),
        ('f', false) => no.push(
            "REPLICA IDENTITY FULL: ALTER TABLE ... REPLICA IDENTITY FULL on the --into table and its partitions"
                .into(),
        ),
        ('i', _) => yes.push(
            "REPLICA IDENTITY USING INDEX: the new table's primary key (that index's columns plus the partition key) is its identity"
                .into(),
        ),
        _ => {}
    }
    for r in &t.rules {
        no.push(format!("rule {r} (refused: see the rules check)"));
    }
    no.extend(fk_no);
    Ok((yes, no))
}

#[cfg(test)]
mod tests {
    use super::{CopyRanges, scattered};

    #[test]
    fn a_key_far_from_the_physical_order_is_scattered() {
        assert!(scattered(Some(0.01), 8));
        assert!(scattered(Some(-0.3), 8));
        assert!(!scattered(Some(0.97), 8));
        assert!(!scattered(Some(-0.9), 8));
        // Not analyzed, or one range (read once whatever the order).
        assert!(!scattered(None, 8));
        assert!(!scattered(Some(0.0), 1));
    }

    #[test]
    fn the_ranges_line_gives_their_count_and_balance() {
        let mut r = CopyRanges {
            key: "(k uuid)".into(),
            count: 8,
            sampled_keys: 2000,
            whole_table: false,
            rows_per_range_min: 24_000,
            rows_per_range_max: 26_400,
            bytes_per_range_max: 3_984_588,
            cut_on_bytes: false,
            key_correlation: Some(0.98),
            scattered: false,
        };
        assert_eq!(
            r.line(),
            "8 key ranges on (k uuid), copied in parallel: 24000 to 26400 rows each, max/min 1.10, at most 3.8 MB of rows each (estimated from a sample of 2000 keys)"
        );
        r.count = 1;
        r.whole_table = true;
        r.rows_per_range_min = 0;
        r.rows_per_range_max = 0;
        r.sampled_keys = 0;
        r.bytes_per_range_max = 0;
        r.cut_on_bytes = true;
        assert_eq!(
            r.line(),
            "1 key range on (k uuid), copied in parallel: 0 to 0 rows each, at most 0 B of rows each, cut on rows and bytes (the large rows are together in the key) (counted over all 0 keys)"
        );
        r.scattered = true;
        r.key_correlation = Some(-0.012);
        assert!(r.line().ends_with(
            "\n  the key is not in the table's physical order (correlation -0.01): each range's rows lie on most of the table's pages, and each range reads them again (docs/limits.md)"
        ));
    }
}
