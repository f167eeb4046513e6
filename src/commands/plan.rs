//! `pgrepart plan`: the same checks as `run`, and the DDL it would execute; changes nothing.

use serde::Serialize;

use super::Prepared;
use crate::cli::PlanArgs;
use crate::error::{Error, Result};
use crate::pg::ddl;
use crate::preflight::{self, Check, Status, Target};

#[derive(Debug, Serialize)]
struct Plan {
    table: String,
    target: String,
    checks: Vec<Check>,
    ddl: Vec<String>,
    rows_estimate: Option<i64>,
    total_bytes: Option<i64>,
}

pub async fn run(args: PlanArgs) -> Result<()> {
    let prep = Prepared::from_args(&args.run)?;
    let client = crate::pg::connect(&prep.source, "pgrepart plan").await?;
    let facts = preflight::gather(&client, &prep.table, &prep.target, &prep.old_name).await?;
    let checks = preflight::evaluate(&facts, &prep.table, &prep.target);
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
    {
        statements.push(ddl::create_partitioned_table(t, name, by, &k.columns));
        statements.extend(partitions.iter().map(|p| ddl::create_partition(name, p)));
        statements.extend(
            ddl::secondary_indexes(t, name, by)
                .into_iter()
                .map(|i| i.sql),
        );
    }
    let plan = Plan {
        table: prep.table.to_string(),
        target: prep.target.name().to_string(),
        rows_estimate: facts.table.as_ref().map(|t| t.estimated_rows),
        total_bytes: facts.table.as_ref().map(|t| t.total_bytes),
        checks,
        ddl: statements,
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
        if !plan.ddl.is_empty() {
            println!("\nDDL that `run` executes:");
            for s in &plan.ddl {
                println!("{s};");
            }
        }
    }
    if failed > 0 {
        return Err(Error::refused(format!("{failed} check(s) failed")));
    }
    Ok(())
}
