//! One module per subcommand: its `run`.

pub mod abort;
pub mod cutover;
pub mod pause;
pub mod plan;
pub mod run;
pub mod status;

use crate::cli::RunArgs;
use crate::error::{Error, Result};
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
}

/// What identifies a migration's shape; a rerun must ask for the same one to resume it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredSpec {
    pub partition_by: Option<PartitionBy>,
    pub partitions: Vec<PartitionSpec>,
    pub into: Option<QualifiedName>,
    pub old_name: String,
}

impl Prepared {
    pub fn from_args(args: &RunArgs) -> Result<Self> {
        let source = crate::pg::parse_conninfo("--source", &args.conn.source)?;
        let table = QualifiedName::parse(&args.table)?;
        let target = match (&args.partition_by, &args.into) {
            (Some(by), None) => {
                let by = PartitionBy::parse(by)?;
                let partitions = args
                    .partitions
                    .iter()
                    .map(|p| PartitionSpec::parse(p))
                    .collect::<Result<Vec<_>>>()?;
                check_partitions(&by, &partitions)?;
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
                    "give either --partition-by with --partition, or --into",
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
        })
    }

    pub fn spec(&self) -> StoredSpec {
        match &self.target {
            Target::Generate { by, partitions, .. } => StoredSpec {
                partition_by: Some(by.clone()),
                partitions: partitions.clone(),
                into: None,
                old_name: self.old_name.clone(),
            },
            Target::Into(name) => StoredSpec {
                partition_by: None,
                partitions: vec![],
                into: Some(name.clone()),
                old_name: self.old_name.clone(),
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
