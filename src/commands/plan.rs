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
use crate::pg::ident::quote_ident;
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
    key_ranges: Vec<String>,
    wal: Option<WalEstimate>,
    carried_over: Vec<String>,
    not_carried_over: Vec<String>,
    /// Every object `pg_depend` ties to the table, and its catalog properties, each with what
    /// the migration does with it.
    dependents: Vec<inventory::Dependent>,
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
    let mut wal = None;
    let mut carried_over = Vec::new();
    let mut not_carried_over = Vec::new();
    let mut dependents = Vec::new();
    if let Some(t) = usable {
        dependents =
            dependents_inventory(&client, t, &prep.target, &facts, prep.cross_db()).await?;
        key_ranges = plan_key_ranges(&client, t, prep.jobs).await?;
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
    if !plan.key_ranges.is_empty() {
        println!(
            "key ranges copied in parallel ({}): {}",
            plan.key_ranges.len(),
            plan.key_ranges.join(" ")
        );
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
        let Some((fk, action)) = actions.iter().find(|(fk, _)| {
            // pg_describe_object qualifies the table only when it is not on the search path.
            d.object == format!("constraint {} on table {}", fk.name, fk.table)
                || d.object == format!("constraint {} on table {}", fk.name, fk.table.name)
        }) else {
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

async fn plan_key_ranges(client: &Client, t: &TableInfo, jobs: usize) -> Result<Vec<String>> {
    let Some(k) = t.key_index() else {
        return Ok(vec![]);
    };
    let Some(first) = t.column(&k.columns[0]) else {
        return Ok(vec![]);
    };
    if !crate::copy::ranges::INT_TYPES.contains(&first.type_oid) {
        return Ok(vec![format!(
            "one range: the key {} ({}) is not an integer, so it is copied by one worker",
            first.name, first.type_sql
        )]);
    }
    let row = client
        .query_one(
            &format!(
                "SELECT min({c})::bigint, max({c})::bigint FROM {}",
                t.name.sql(),
                c = quote_ident(&first.name)
            ),
            &[],
        )
        .await
        .map_err(|e| Error::db("reading the key's bounds", e))?;
    let bounds = row
        .get::<_, Option<i64>>(0)
        .zip(row.get::<_, Option<i64>>(1));
    let count = ranges::range_count(t.estimated_rows, t.total_bytes, jobs);
    Ok(ranges::plan_ranges(bounds, count)
        .iter()
        .map(|r| {
            format!(
                "[{}, {})",
                r.lo.map_or("-inf".into(), |v| v.to_string()),
                r.hi.map_or("+inf".into(), |v| v.to_string())
            )
        })
        .collect())
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
