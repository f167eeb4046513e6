//! `pgrepart verify`: compares the source table with the new table of its running migration,
//! row by row, at a consistent point, without locking the application out (src/verify). `run`'s
//! own check before every cutover is `verify::gate`.

use std::sync::Arc;

use crate::cli::VerifyArgs;
use crate::error::{Error, Result};
use crate::pg::catalog::{self, TableInfo};
use crate::pg::ident::QualifiedName;
use crate::state;
use crate::verify::hold::StateHold;
use crate::verify::{self, Mode, Plan};

pub use crate::verify::gate::{BLOCKED_PREFIX, columns_of};

pub async fn run(args: VerifyArgs) -> Result<()> {
    let dbs = super::Databases::from_args(&args.conn)?;
    let (source, target) = (dbs.source, dbs.target);
    // `--sample` was checked by clap (above 0, at most 100).
    let mode = args.sample.map_or(Mode::Full, Mode::Sample);
    let table = super::table_arg(&args.table)?;
    // The state lives with the new table.
    let state_client = crate::pg::connect(&target, "pgrepart verify").await?;
    let m = super::require_migration(&state_client, &table).await?;
    let source_client = crate::pg::connect(&source, "pgrepart verify").await?;
    let info = catalog::table_info(&source_client, &table)
        .await?
        .ok_or_else(|| Error::refused(format!("{table} does not exist on the source")))?;
    let columns = columns_of(&info)?;
    check_target(&state_client, &info, &m.target).await?;
    let plan = Plan {
        source,
        source_table: table.clone(),
        target,
        target_table: m.target.clone(),
        columns,
        jobs: args
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
            .clamp(1, 64),
        mode,
        repair: args.repair,
        pace: None,
    };
    let state_client = Arc::new(state_client);
    let mut hold = StateHold::new(state_client.clone(), m.id).await?;
    let report = verify::verify(&plan, &mut hold).await?;
    if report.is_equal() {
        // Lifts a cutover the run's own check blocked: it goes on at once.
        state::clear_error_if(&*state_client, m.id, BLOCKED_PREFIX).await?;
    }
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    if report.is_equal() {
        Ok(())
    } else {
        Err(Error::failed(report.summary_line()).with_hint(
            "run `pgrepart verify --repair` with the same arguments to copy those rows again; the cutover waits until verify passes (or `run --verify off`)",
        ))
    }
}

async fn check_target(
    client: &tokio_postgres::Client,
    source: &TableInfo,
    target: &QualifiedName,
) -> Result<()> {
    let Some(t) = catalog::table_info(client, target).await? else {
        return Err(Error::refused(format!(
            "the new table {target} does not exist"
        )));
    };
    let differ: Vec<String> = source
        .replicated_columns()
        .iter()
        .filter(|c| t.column(&c.name).is_none_or(|tc| tc.type_sql != c.type_sql))
        .map(|c| c.name.clone())
        .collect();
    if differ.is_empty() {
        Ok(())
    } else {
        Err(Error::refused(format!(
            "the new table {target} lacks (or types differently) these columns of {}: {}",
            source.name,
            differ.join(", ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command};
    use crate::verify::Mode;
    use clap::Parser;

    fn run_verify_flag(extra: &[&str]) -> Result<Mode, clap::Error> {
        let mut argv = vec![
            "pgrepart", "run", "--source", "x", "--table", "t", "--into", "t_new",
        ];
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv).map(|cli| match cli.command {
            Command::Run(args) => args.verify,
            _ => unreachable!(),
        })
    }

    #[test]
    fn run_verifies_fully_by_default_and_takes_off_or_a_sample() {
        assert_eq!(run_verify_flag(&[]).unwrap(), Mode::Full);
        assert_eq!(run_verify_flag(&["--verify", "off"]).unwrap(), Mode::Off);
        assert_eq!(
            run_verify_flag(&["--verify", "sample 10"]).unwrap(),
            Mode::Sample(10.0)
        );
        assert!(run_verify_flag(&["--verify", "sometimes"]).is_err());
    }

    #[test]
    fn verify_takes_a_target_a_sample_repair_and_json() {
        let cli = Cli::try_parse_from([
            "pgrepart", "verify", "--source", "s", "--target", "t", "--table", "orders",
            "--sample", "5", "--repair", "--json",
        ])
        .unwrap();
        let Command::Verify(a) = cli.command else {
            panic!("not verify")
        };
        assert_eq!(a.conn.target.as_deref(), Some("t"));
        assert_eq!(a.sample, Some(5.0));
        assert!(a.repair && a.json);
        assert!(Cli::try_parse_from(["pgrepart", "verify", "--source", "s"]).is_err());
    }
}
