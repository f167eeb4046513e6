//! The checked configuration of a run: every argument parsed and validated before the first
//! connection, so that a usage error (exit 2) is found before anything exists. The engine
//! (`crate::migration`) is handed a [`RunConfig`], never raw `clap` arguments.
//!
//! ```text
//! RunArgs (clap) ──► Prepared (connections, table, target, partitions) ─┐
//!                ──► sizes, durations, rates, the metrics listener ─────┴─► RunConfig ──► engine
//! ```

use std::time::Duration;

use crate::cli::{CutoverMode, MigrationArgs, RunArgs, SourceArgs};
use crate::error::{Error, Result};
use crate::partitioning::{self, Generator, GeneratorFlags};
use crate::pg::ident::QualifiedName;
use crate::preflight::Target;
use crate::spec::{PartitionBy, PartitionSpec, check_partitions};

/// The source database and the database the new table and the state go to (`--target`).
#[derive(Debug, Clone)]
pub struct Databases {
    pub source: tokio_postgres::Config,
    /// The source again when `--target` is absent or names the source's host, port and database.
    pub target: tokio_postgres::Config,
    /// `--target` names another database (same cluster or not): the cutover is cross-database.
    pub cross: bool,
}

impl Databases {
    /// A `--target` naming the same host, port and database as `--source` (whatever the user or
    /// options) is the same-database case: one database, one locked swap transaction.
    pub fn from_args(args: &SourceArgs) -> Result<Databases> {
        let port = args.port.map(|p| p.to_string());
        let options: Vec<(&str, &str)> = [
            ("host", args.host.as_deref()),
            ("port", port.as_deref()),
            ("user", args.username.as_deref()),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
        .collect();
        let source = crate::pg::connection_config("--source", args.source.as_deref(), &options)
            .map_err(Error::into_usage)?;
        let Some(text) = &args.target else {
            return Ok(Databases {
                target: source.clone(),
                source,
                cross: false,
            });
        };
        let target = crate::pg::parse_conninfo("--target", text).map_err(Error::into_usage)?;
        let cross = crate::pg::describe_target(&source) != crate::pg::describe_target(&target);
        Ok(Databases {
            source,
            target,
            cross,
        })
    }

    /// The connection that holds the state: the target database (its errors name its host,
    /// port and database).
    pub async fn connect_state(&self, application_name: &str) -> Result<tokio_postgres::Client> {
        crate::pg::connect(&self.target, application_name).await
    }

    /// The source database (slot, publication, the table itself).
    pub async fn connect_source(&self, application_name: &str) -> Result<tokio_postgres::Client> {
        crate::pg::connect(&self.source, application_name).await
    }

    /// "host:port/db" of the target, for the message saying where the application must now go.
    pub fn target_description(&self) -> String {
        crate::pg::describe_target(&self.target)
    }
}

/// `run`/`plan` arguments, validated before any I/O.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub source: tokio_postgres::Config,
    pub dbs: Databases,
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
    /// Every check here reads the arguments alone: a failure is a usage error (exit 2).
    pub fn from_args(args: &RunArgs) -> Result<Self> {
        Self::from_migration(&args.migration)
    }

    /// As `from_args`, for what `plan` and `run` share.
    pub fn from_migration(args: &MigrationArgs) -> Result<Self> {
        Self::parse(args).map_err(Error::into_usage)
    }

    fn parse(args: &MigrationArgs) -> Result<Self> {
        let dbs = Databases::from_args(&args.conn)?;
        let source = dbs.source.clone();
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
                if generator.is_none() && partitions.is_empty() {
                    return Err(Error::usage(format!(
                        "--partition-by {:?} needs its partitions: --partition NAME=BOUND (repeated), or a generator: --interval, --modulus or --list-values-from-data",
                        args.partition_by.as_deref().unwrap_or_default()
                    )));
                }
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
                return Err(Error::usage(
                    "say how to partition the table: --partition-by with --partition NAME=BOUND (repeated) or a generator (--interval, --modulus or --list-values-from-data), or --into an existing partitioned table",
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
            dbs,
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
        if !matches!(info.relkind, 'r' | 'p') || info.column(&by.columns[0]).is_none() {
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

impl Prepared {
    /// Whether the new table goes to another database (`--target`).
    pub fn cross_db(&self) -> bool {
        self.dbs.cross
    }

    /// Whether the new table is on the source's server (same host and port): its writes then
    /// take transaction ids of the source's cluster.
    pub fn same_cluster(&self) -> bool {
        let server =
            |c: &tokio_postgres::Config| (format!("{:?}", c.get_hosts()), c.get_ports().to_vec());
        server(&self.dbs.source) == server(&self.dbs.target)
    }
}

/// Everything `run` needs, checked: the engine's whole input.
#[derive(Debug)]
pub struct RunConfig {
    pub prep: Prepared,
    pub cutover: CutoverMode,
    pub drop_old: bool,
    /// `--drop-inbound-fks` (see `dependents`).
    pub drop_inbound_fks: bool,
    /// `--rollback-window` (see `rollback`); `Some(0)`: none, recorded as such.
    pub rollback_window: Option<Duration>,
    pub apply_sessions: u16,
    pub max_lag_bytes: u64,
    pub lock_timeout: Duration,
    pub cutover_attempts: u32,
    pub drain_timeout: Duration,
    pub max_copy_rate: Option<u64>,
    pub max_apply_rate: Option<u64>,
    /// The load governor's ceiling in percent; 0: no governor.
    pub max_impact: u32,
    /// `--max-replica-lag`: the governor's ceiling on a physical standby's replay lag.
    pub max_replica_lag: Option<Duration>,
    pub toast_compression: crate::copy::toast::ToastCompression,
    pub primary_key: crate::copy::indexes::KeyTiming,
    /// `--max-retained-wal` in bytes.
    pub max_retained_wal: Option<u64>,
    pub verify: crate::verify::Mode,
    /// The Prometheus endpoint, bound before anything is created and kept for the whole run
    /// (every attempt serves on the same socket).
    pub metrics: Option<std::net::TcpListener>,
}

impl RunConfig {
    /// Checks every argument and binds `--metrics-addr`; no connection is made. Every failure
    /// is a usage error (exit 2).
    pub fn from_args(args: &RunArgs) -> Result<RunConfig> {
        let prep = Prepared::from_args(args)?;
        let max_retained_wal = args
            .max_retained_wal
            .as_deref()
            .map(|t| {
                crate::units::parse_size(t)
                    .map_err(|e| Error::usage(format!("--max-retained-wal: {e}")))
            })
            .transpose()?;
        if args.max_replica_lag.is_some() && args.max_impact == 0 {
            return Err(Error::usage(
                "--max-replica-lag needs the load governor, which --max-impact 0 turns off",
            )
            .with_hint("drop --max-impact 0 (or PGREPART_MAX_IMPACT=0), or --max-replica-lag"));
        }
        let metrics = args.metrics_addr.map(bind_metrics).transpose()?;
        Ok(RunConfig {
            prep,
            cutover: args.cutover,
            drop_old: args.drop_old,
            drop_inbound_fks: args.migration.drop_inbound_fks,
            rollback_window: args.migration.rollback_window,
            apply_sessions: args.apply_sessions,
            max_lag_bytes: args.max_lag_bytes,
            lock_timeout: Duration::from_millis(args.lock_timeout_ms),
            cutover_attempts: args.cutover_attempts.max(1),
            drain_timeout: Duration::from_millis(args.drain_timeout_ms),
            max_copy_rate: args.max_copy_rate,
            max_apply_rate: args.max_apply_rate,
            max_impact: args.max_impact,
            max_replica_lag: args.max_replica_lag,
            toast_compression: args.toast_compression,
            primary_key: args.primary_key,
            max_retained_wal,
            verify: args.verify,
            metrics,
        })
    }
}

/// Binds the metrics address now, so that a taken port is a usage error before any slot exists.
fn bind_metrics(addr: std::net::SocketAddr) -> Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr).map_err(|e| {
        Error::usage(format!("cannot listen on --metrics-addr {addr}: {e}"))
            .with_hint("choose a free HOST:PORT")
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::usage(format!("cannot listen on --metrics-addr {addr}: {e}")))?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `pgrepart run --source ... --table orders` followed by `extra`, parsed.
    fn run_args(extra: &[&str]) -> crate::cli::RunArgs {
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
            crate::cli::Command::Run(args) => args,
            _ => unreachable!(),
        }
    }

    fn prepared(extra: &[&str]) -> Result<Prepared> {
        Prepared::from_args(&run_args(extra))
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
    fn a_target_is_cross_database_only_when_it_names_another_host_port_or_database() {
        let dbs = |target: Option<&str>| {
            Databases::from_args(&SourceArgs {
                source: Some("postgresql://u@h:5432/db".into()),
                host: None,
                port: None,
                username: None,
                target: target.map(str::to_string),
            })
            .unwrap()
        };
        assert!(!dbs(None).cross);
        assert!(!dbs(Some("host=h port=5432 dbname=db user=other")).cross);
        assert!(dbs(Some("postgresql://u@h:5432/other")).cross);
        assert!(dbs(Some("postgresql://u@h2:5432/db")).cross);
        assert!(dbs(Some("postgresql://u@h:5433/db")).cross);
        let p = prepared(&["--partition-by", "LIST (r)", "--partition", "a=DEFAULT"]).unwrap();
        assert!(!p.cross_db());
    }

    fn run_config(extra: &[&str]) -> Result<RunConfig> {
        let mut argv = vec!["--partition-by", "LIST (r)", "--partition", "a=DEFAULT"];
        argv.extend_from_slice(extra);
        RunConfig::from_args(&run_args(&argv))
    }

    #[test]
    fn a_replica_lag_ceiling_needs_the_governor_and_takes_units() {
        let c = run_config(&["--max-impact", "50", "--max-replica-lag", "1min"]).unwrap();
        assert_eq!(c.max_replica_lag, Some(Duration::from_secs(60)));
        let c = run_config(&["--max-impact", "50", "--max-replica-lag", "10"]).unwrap();
        assert_eq!(c.max_replica_lag, Some(Duration::from_secs(10)));
        let e = run_config(&["--max-impact", "0", "--max-replica-lag", "10s"]).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        for bad in ["0", "0s", "ten"] {
            let parsed = crate::cli::Cli::try_parse_from([
                "pgrepart",
                "run",
                "--source",
                "x",
                "--table",
                "t",
                "--max-replica-lag",
                bad,
            ]);
            assert!(parsed.is_err(), "--max-replica-lag {bad} parsed");
        }
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
