//! One module per subcommand: its `run`.

pub mod abort;
pub mod cutover;
pub mod pause;
pub mod plan;
pub mod run;
pub mod status;
pub mod verify;

use crate::cli::RunArgs;
use crate::error::{Error, Result};
use crate::partitioning::{self, Generator, GeneratorFlags};
use crate::pg::ident::QualifiedName;
use crate::preflight::Target;
use crate::spec::{PartitionBy, PartitionSpec, check_partitions};

/// `run`/`plan` arguments, validated before any I/O.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub source: tokio_postgres::Config,
    pub table: QualifiedName,
    pub target: Target,
    pub old_name: String,
    pub jobs: usize,
    /// Set when the partitions are generated (`--interval`, `--modulus`, `--list-values-from-data`);
    /// `Target::Generate::partitions` is then empty until `with_generated_partitions`.
    pub generator: Option<Generator>,
}

/// What identifies a migration's shape; a rerun must ask for the same one to resume it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredSpec {
    pub partition_by: Option<PartitionBy>,
    pub partitions: Vec<PartitionSpec>,
    pub into: Option<QualifiedName>,
    pub old_name: String,
    /// The generator flags, when the partitions were generated from the data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generator: Option<Generator>,
}

impl StoredSpec {
    /// Whether `other` asks for the same migration. Generated partitions depend on the data at the
    /// start, so for them the generator arguments are compared, not the list.
    pub fn same_request(&self, other: &StoredSpec) -> bool {
        self.partition_by == other.partition_by
            && self.into == other.into
            && self.old_name == other.old_name
            && self.generator == other.generator
            && (self.generator.is_some() || self.partitions == other.partitions)
    }
}

impl Prepared {
    pub fn from_args(args: &RunArgs) -> Result<Self> {
        let source = crate::pg::parse_conninfo("--source", &args.conn.source)?;
        let table = QualifiedName::parse(&args.table)?;
        let mut generator = None;
        let target = match (&args.partition_by, &args.into) {
            (Some(by), None) => {
                let by = PartitionBy::parse(by)?;
                let partitions = args
                    .partitions
                    .iter()
                    .map(|p| PartitionSpec::parse(p))
                    .collect::<Result<Vec<_>>>()?;
                let flags = GeneratorFlags {
                    interval: args.interval.clone(),
                    premake: args.premake,
                    no_default: args.no_default,
                    modulus: args.modulus,
                    list_values_from_data: args.list_values_from_data,
                    max_partitions: args.max_partitions,
                };
                generator =
                    partitioning::generator_from_flags(&by, &flags, !partitions.is_empty())?;
                if generator.is_none() {
                    check_partitions(&by, &partitions)?;
                }
                let name = table.sibling(crate::pg::ident::truncate_ident(&format!(
                    "{}_repart",
                    table.name
                )));
                Target::Generate {
                    name,
                    by,
                    partitions,
                }
            }
            (None, Some(into)) => {
                let mut name = QualifiedName::parse(into)?;
                if !into.contains('.') {
                    name.schema = table.schema.clone();
                }
                Target::Into(name)
            }
            _ => {
                return Err(Error::refused(
                    "give either --partition-by with --partition (or a generator: --interval, --modulus, --list-values-from-data), or --into",
                ));
            }
        };
        let old_name = match &args.old_name {
            Some(n) => QualifiedName::parse(n)?.name,
            None => crate::pg::ident::truncate_ident(&format!("{}_old", table.name)),
        };
        let jobs = args
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
            .clamp(1, 64);
        Ok(Prepared {
            source,
            table,
            target,
            old_name,
            jobs,
            generator,
        })
    }

    /// For generated partitions: reads the data and fills in the partition list (once, when a
    /// migration starts, or for `plan`). A table or column that does not exist leaves the list
    /// empty for preflight to report.
    pub async fn with_generated_partitions(
        &self,
        client: &tokio_postgres::Client,
    ) -> Result<Prepared> {
        let mut out = self.clone();
        let (Some(generator), Target::Generate { by, partitions, .. }) =
            (&self.generator, &mut out.target)
        else {
            return Ok(out);
        };
        let Some(info) = crate::pg::catalog::table_info(client, &self.table).await? else {
            return Ok(out);
        };
        if info.relkind != 'r' || info.column(&by.columns[0]).is_none() {
            return Ok(out);
        }
        let data = partitioning::read_data_facts(client, &info, by, generator).await?;
        let generated = partitioning::generate(&self.table, by, generator, &data)?;
        check_partitions(by, &generated)?;
        *partitions = generated;
        Ok(out)
    }

    pub fn spec(&self) -> StoredSpec {
        match &self.target {
            Target::Generate { by, partitions, .. } => StoredSpec {
                partition_by: Some(by.clone()),
                partitions: partitions.clone(),
                into: None,
                old_name: self.old_name.clone(),
                generator: self.generator.clone(),
            },
            Target::Into(name) => StoredSpec {
                partition_by: None,
                partitions: vec![],
                into: Some(name.clone()),
                old_name: self.old_name.clone(),
                generator: None,
            },
        }
    }
}

/// Reads the migration of `table`, or says there is none and what to do.
pub async fn require_migration(
    client: &tokio_postgres::Client,
    table: &QualifiedName,
) -> Result<crate::state::Migration> {
    crate::state::latest(client, table).await?.ok_or_else(|| {
        Error::refused(format!(
            "no pgrepart migration of {table} is recorded in this database"
        ))
        .with_hint(
            "check --source and --table; `pgrepart status --source ...` lists every migration",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn prepared(extra: &[&str]) -> Result<Prepared> {
        let mut argv = vec![
            "pgrepart",
            "run",
            "--source",
            "postgresql://u@h/db",
            "--table",
            "orders",
        ];
        argv.extend_from_slice(extra);
        let cli = crate::cli::Cli::try_parse_from(argv).expect("arguments parse");
        match cli.command {
            crate::cli::Command::Run(args) => Prepared::from_args(&args),
            _ => unreachable!(),
        }
    }

    #[test]
    fn generated_specs_compare_by_their_arguments_not_their_list() {
        let p = prepared(&["--partition-by", "RANGE (d)", "--interval", "month"]).unwrap();
        let asked = p.spec();
        assert!(asked.partitions.is_empty());
        let mut stored = asked.clone();
        stored.partitions = vec![PartitionSpec::parse("orders_2024_01=DEFAULT").unwrap()];
        assert!(stored.same_request(&asked));
        let other = prepared(&["--partition-by", "RANGE (d)", "--interval", "week"]).unwrap();
        assert!(!stored.same_request(&other.spec()));

        let explicit =
            prepared(&["--partition-by", "LIST (r)", "--partition", "a=DEFAULT"]).unwrap();
        let mut changed = explicit.spec();
        assert!(changed.same_request(&explicit.spec()));
        changed.partitions[0].name = "b".into();
        assert!(!changed.same_request(&explicit.spec()));
    }

    #[test]
    fn generators_and_explicit_partitions_do_not_mix() {
        assert!(
            prepared(&["--partition-by", "HASH (c)", "--modulus", "4"])
                .unwrap()
                .generator
                .is_some()
        );
        assert!(prepared(&["--partition-by", "LIST (r)", "--interval", "month"]).is_err());
        assert!(prepared(&["--partition-by", "LIST (r)"]).is_err());
        let clash = crate::cli::Cli::try_parse_from([
            "pgrepart",
            "run",
            "--source",
            "x",
            "--table",
            "t",
            "--partition-by",
            "HASH (c)",
            "--modulus",
            "4",
            "--partition",
            "a=DEFAULT",
        ]);
        assert!(clash.is_err());
    }
}
