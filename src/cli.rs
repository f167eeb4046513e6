//! Command-line interface. The doc comments are the help text; `docs/flags.md` has one entry per
//! flag (a test keeps the two in step).
//!
//! ```text
//! plan   = MigrationArgs + --primary-key + --json
//! run    = MigrationArgs + copy/apply, cutover, throttling and output flags of its own
//! MigrationArgs = SourceArgs (connection) + --table + partitioning + --old-name + --jobs
//! ```
//!
//! Flags are grouped in the help by concern (`help_heading`): connection, partitioning, copy and
//! apply, cutover, throttling, output. Sizes and durations are checked here, by clap, so a bad
//! value is a usage error (exit 2) before anything connects.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::units::{BareUnit, parse_duration, parse_size};

const CONNECTION: &str = "Connection";
const PARTITIONING: &str = "Partitioning";
const COPY: &str = "Copy and apply";
const CUTOVER: &str = "Cutover";
const THROTTLING: &str = "Throttling";
const OUTPUT: &str = "Output";
const COMPARISON: &str = "Comparison";
const CONFIRMATION: &str = "Confirmation";

const AFTER_HELP: &str = "\
Connections: --source and --target take a libpq URL (postgresql://user@host:5432/db), key=value
conninfo (\"host=db1 dbname=shop\"), a database name or service=NAME; what they leave out comes from
the service file and PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD, ~/.pgpass, PGSSLMODE, ... as
with psql. Logs go to standard error; PGREPART_LOG (e.g. PGREPART_LOG=pgrepart=debug) sets their
filter. Exit status: 0 ok, 1 failed or refused, 2 bad usage.

Examples:
  pgrepart plan -d shop -t orders --partition-by 'RANGE (created_at)' --interval month
  pgrepart run  -d shop -t orders --partition-by 'RANGE (created_at)' --interval month
  pgrepart status -d shop --watch";

/// Online, trigger-free conversion of a live PostgreSQL table into a partitioned table, through
/// logical replication.
#[derive(Debug, Parser)]
#[command(name = "pgrepart", version = crate::VERSION, about, long_about = None, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log format on standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, help_heading = OUTPUT)]
    pub log_format: LogFormat,

    /// More detail in the logs (-v debug, -vv trace). PGREPART_LOG, when set, wins.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = OUTPUT)]
    pub verbose: u8,

    /// Only warnings and errors in the logs, and no progress bars.
    #[arg(short, long, global = true, conflicts_with = "verbose", help_heading = OUTPUT)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check everything and print what `run` would do; changes nothing. Exit 1 if a check fails.
    #[command(after_help = PLAN_EXAMPLES)]
    Plan(PlanArgs),
    /// Run a migration (or resume the one in progress for this table) until it has cut over.
    #[command(after_help = RUN_EXAMPLES)]
    Run(RunArgs),
    /// Show a migration's phase, copy progress and lag.
    #[command(after_help = STATUS_EXAMPLES)]
    Status(StatusArgs),
    /// Ask a running migration in manual cutover mode to cut over now, and wait until it has.
    #[command(after_help = CUTOVER_EXAMPLES)]
    Cutover(TableArgs),
    /// Stop a migration and remove everything it created: slot, publication, new table, state.
    /// Asks first on a terminal (--yes does not).
    #[command(after_help = ABORT_EXAMPLES)]
    Abort(AbortArgs),
    /// Pause a running migration: it stops copying and applying; the slot keeps the changes.
    #[command(after_help = PAUSE_EXAMPLES)]
    Pause(TableArgs),
    /// Resume a paused migration.
    #[command(after_help = RESUME_EXAMPLES)]
    Resume(TableArgs),
    /// Compare the table with the new table row by row at a consistent point, without locks
    /// (needs the running `run`). Exit 0 when equal, 1 on differences (their keys are listed).
    #[command(after_help = VERIFY_EXAMPLES)]
    Verify(VerifyArgs),
    /// Swap back during the rollback window (`run --rollback-window`): the old table takes its
    /// name back, with every write made since the cutover; waits until it has. Exit 1 when
    /// refused (conflicting rows, without --force).
    #[command(after_help = REVERT_EXAMPLES)]
    Revert(RevertArgs),
    /// End the rollback window now: the reverse stream, its slot and publication go, and `run
    /// --drop-old` takes effect; waits until it has.
    #[command(after_help = FINISH_EXAMPLES)]
    Finish(TableArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on standard output.
    #[command(after_help = COMPLETIONS_EXAMPLES)]
    Completions(CompletionsArgs),
    /// Print the manual page (roff) on standard output.
    #[command(after_help = MAN_EXAMPLES)]
    Man,
}

const PLAN_EXAMPLES: &str = "\
Examples:
  # LIST by region, partitions named on the command line
  pgrepart plan -d postgresql://dba@db1/shop -t orders --partition-by 'LIST (region)' \\
      --partition \"orders_us=FOR VALUES IN ('US')\" --partition 'orders_rest=DEFAULT'
  # RANGE by month, partitions generated from the data; as JSON
  pgrepart plan -d shop -t orders --partition-by 'RANGE (created_at)' --interval month --json
  # 16 HASH partitions
  pgrepart plan -d shop -t events --partition-by 'HASH (id)' --modulus 16";

const RUN_EXAMPLES: &str = "\
Examples:
  pgrepart run -d postgresql://dba@db1/shop -t orders --partition-by 'RANGE (created_at)' \\
      --interval month -j 8 --max-retained-wal 20GB
  # wait for `pgrepart cutover` instead of swapping as soon as the lag is small
  pgrepart run -d shop -t orders --partition-by 'LIST (region)' --list-values-from-data \\
      --cutover manual
  # into an existing, empty partitioned table in another cluster
  pgrepart run -d service=prod -t orders --target service=newprod --into orders_new";

const STATUS_EXAMPLES: &str = "\
Examples:
  pgrepart status -d shop                 # every migration recorded in the database
  pgrepart status -d shop -t orders --watch 5s
  pgrepart status -d shop -t orders --json";

const CUTOVER_EXAMPLES: &str = "\
Examples:
  pgrepart cutover -d shop -t orders";

const ABORT_EXAMPLES: &str = "\
Examples:
  pgrepart abort -d shop -t orders        # asks first on a terminal
  pgrepart abort -d shop -t orders --yes  # in a script";

const PAUSE_EXAMPLES: &str = "\
Examples:
  pgrepart pause -d shop -t orders";

const RESUME_EXAMPLES: &str = "\
Examples:
  pgrepart resume -d shop -t orders";

const VERIFY_EXAMPLES: &str = "\
Examples:
  pgrepart verify -d shop -t orders
  pgrepart verify -d shop -t orders --sample 5 --repair -j 4";

const REVERT_EXAMPLES: &str = "\
Examples:
  pgrepart revert -d shop -t orders
  pgrepart revert -d shop -t orders --force   # conflicting keys keep their newest row";

const FINISH_EXAMPLES: &str = "\
Examples:
  pgrepart finish -d shop -t orders";

const COMPLETIONS_EXAMPLES: &str = "\
Examples:
  pgrepart completions bash > /etc/bash_completion.d/pgrepart
  pgrepart completions zsh > \"${fpath[1]}/_pgrepart\"";

const MAN_EXAMPLES: &str = "\
Examples:
  pgrepart man > /usr/local/share/man/man1/pgrepart.1";

#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
    Elvish,
    Powershell,
}

#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub conn: SourceArgs,

    /// The table being migrated, as name or schema.name.
    #[arg(short, long)]
    pub table: String,

    /// Compare about PCT percent of the key ranges, picked at random, instead of all (above 0,
    /// at most 100).
    #[arg(long, value_name = "PCT", value_parser = sample_percent, help_heading = COMPARISON)]
    pub sample: Option<f64>,

    /// Copy the differing rows again from the source's snapshot, then compare them again.
    #[arg(long, help_heading = COMPARISON)]
    pub repair: bool,

    /// Sessions per side [default: number of cores].
    #[arg(short, long, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64), help_heading = COMPARISON)]
    pub jobs: Option<usize>,

    /// Print the report as one JSON object.
    #[arg(long, help_heading = OUTPUT)]
    pub json: bool,
}

/// Where the table lives, and where it goes.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = CONNECTION)]
pub struct SourceArgs {
    /// Source database: a libpq URL (postgresql://user@host:5432/db), key=value conninfo, a
    /// database name or service=NAME. What it leaves out comes from the service file
    /// (pg_service.conf) and PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD, PGSSLMODE, ... as
    /// with psql; without it, from those alone.
    #[arg(
        short = 'd',
        long,
        visible_alias = "dbname",
        value_name = "CONNINFO",
        env = "PGREPART_SOURCE"
    )]
    pub source: Option<String>,

    /// The source's host or Unix socket directory, when --source names none (as psql's -h,
    /// which here is --help).
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,

    /// The source's port, when --source names none (as psql's -p).
    #[arg(short = 'p', long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,

    /// The source's user, when --source names none (as psql's -U).
    #[arg(short = 'U', long, value_name = "USER")]
    pub username: Option<String>,

    /// Target database, when the partitioned table goes to another database or cluster (the new
    /// table and pgrepart's state live there). Default: the source database. --host, -p and -U
    /// do not apply to it.
    #[arg(long, value_name = "CONNINFO", env = "PGREPART_TARGET")]
    pub target: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct TableArgs {
    #[command(flatten)]
    pub conn: SourceArgs,

    /// The table being migrated, as name or schema.name.
    #[arg(short, long)]
    pub table: String,
}

#[derive(Debug, Clone, Args)]
pub struct RevertArgs {
    #[command(flatten)]
    pub conn: SourceArgs,

    /// The table being migrated, as name or schema.name.
    #[arg(short, long)]
    pub table: String,

    /// Revert even when keys of the old table have more than one row in the new table: the
    /// old table keeps the newest row of each (the others stay in the partitioned table).
    #[arg(long, help_heading = CUTOVER)]
    pub force: bool,
}

#[derive(Debug, Clone, Args)]
pub struct AbortArgs {
    #[command(flatten)]
    pub conn: SourceArgs,

    /// The table being migrated, as name or schema.name.
    #[arg(short, long)]
    pub table: String,

    /// Do not ask for confirmation (it is only asked on a terminal).
    #[arg(short, long, help_heading = CONFIRMATION)]
    pub yes: bool,
}

/// What `plan` and `run` share: where the table is, how to partition it, the old table's name and
/// the copy's workers.
#[derive(Debug, Clone, Args)]
pub struct MigrationArgs {
    #[command(flatten)]
    pub conn: SourceArgs,

    /// The table to convert, as name or schema.name.
    #[arg(short, long)]
    pub table: String,

    /// How to partition a generated target: "LIST (col)", "RANGE (col)" or "HASH (col, ...)";
    /// with --partition (repeated), --interval, --modulus or --list-values-from-data.
    #[arg(long, conflicts_with = "into", help_heading = PARTITIONING)]
    pub partition_by: Option<String>,

    /// A partition of the generated target, as NAME=<bound>: "orders_us=FOR VALUES IN ('US')",
    /// "p0=FOR VALUES WITH (MODULUS 4, REMAINDER 0)", "rest=DEFAULT". Repeat for each partition.
    #[arg(long = "partition", value_name = "NAME=BOUND", requires = "partition_by", help_heading = PARTITIONING)]
    pub partitions: Vec<String>,

    /// Use this existing, empty partitioned table as the target instead of generating one.
    #[arg(long, value_name = "TABLE", help_heading = PARTITIONING)]
    pub into: Option<String>,

    /// Generate RANGE partitions of this width covering the existing data (dates: up to today at
    /// least): day, week, month, year (date/timestamp keys) or an integer width (integer keys).
    /// Named <table>_2024_01 and so on.
    #[arg(long, requires = "partition_by", conflicts_with = "partitions", help_heading = PARTITIONING)]
    pub interval: Option<String>,

    /// With --interval: how many partitions to make beyond the newest data (dates: beyond the
    /// later of the newest data and today) [default: 4].
    #[arg(long, value_name = "N", requires = "interval", help_heading = PARTITIONING)]
    pub premake: Option<u32>,

    /// With --interval or --list-values-from-data: no DEFAULT partition (rows outside every
    /// partition are then refused).
    #[arg(long, help_heading = PARTITIONING)]
    pub no_default: bool,

    /// Generate N HASH partitions <table>_p0..p{N-1}.
    #[arg(long, value_name = "N", requires = "partition_by", conflicts_with = "partitions", help_heading = PARTITIONING)]
    pub modulus: Option<u32>,

    /// Generate one LIST partition per distinct value in the table (<table>_us, ...) plus a DEFAULT.
    #[arg(long, requires = "partition_by", conflicts_with = "partitions", help_heading = PARTITIONING)]
    pub list_values_from_data: bool,

    /// Refuse to generate more partitions than this [default: 50 for LIST, 1000 for RANGE].
    #[arg(long, value_name = "N", help_heading = PARTITIONING)]
    pub max_partitions: Option<usize>,

    /// Drop the foreign keys of other tables that reference this one and cannot be recreated onto
    /// the new key (their table lacks the partition-key columns), inside the swap's transaction;
    /// the statements that recreate them are printed. Without it such keys make the run refuse.
    #[arg(long, help_heading = CUTOVER)]
    pub drop_inbound_fks: bool,

    /// After the cutover, keep applying every change of the new table back to the old one for
    /// this long (2h, 3d; a bare number is seconds), so that `pgrepart revert` can swap back
    /// without losing a write; `pgrepart finish` ends it sooner. `run` serves the window and
    /// exits when it ends. Given again on a rerun, it sets the window's length anew (from the
    /// cutover); 0: none (an open window ends). With --target the reverse stream runs from the
    /// target, which needs wal_level = logical.
    #[arg(long, value_name = "DURATION", value_parser = window_duration, help_heading = CUTOVER)]
    pub rollback_window: Option<Duration>,

    /// The name the old table gets at cutover [default: <table>_old].
    #[arg(long, value_name = "NAME", help_heading = CUTOVER)]
    pub old_name: Option<String>,

    /// Parallel copy workers [default: number of cores].
    #[arg(short, long, value_name = "N", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64), help_heading = COPY)]
    pub jobs: Option<usize>,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub migration: MigrationArgs,

    /// When a generated new table gets its primary key: before-copy (changes apply while the copy
    /// runs), after-copy (built with the other indexes: a faster copy, but every change waits
    /// in the slot until the copy and the index builds are done), or auto: after-copy
    /// when the source server commits no write transactions of its own as the run starts.
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = crate::copy::indexes::KeyTiming::Auto, help_heading = COPY)]
    pub primary_key: crate::copy::indexes::KeyTiming,

    /// Sessions on the target that apply a large batch of changes side by side, each its share
    /// of the keys (1: one session). A table with a unique index or exclusion constraint besides
    /// its key is applied on one session.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=16), help_heading = COPY)]
    pub apply_sessions: u16,

    /// The compression method of the TOASTed values written into the new table, for columns
    /// without one of their own (COPY carries them uncompressed, so each is compressed again).
    #[arg(long, value_enum, value_name = "METHOD", default_value_t = crate::copy::toast::ToastCompression::Auto, help_heading = COPY)]
    pub toast_compression: crate::copy::toast::ToastCompression,

    /// Cut over as soon as the copy is done and the lag is small (auto), or wait for
    /// `pgrepart cutover` (manual).
    #[arg(long, value_enum, default_value_t = CutoverMode::Auto, help_heading = CUTOVER)]
    pub cutover: CutoverMode,

    /// Drop the old table once the swap has committed (otherwise it is kept, with a comment);
    /// with --rollback-window, once the window has ended.
    #[arg(long, help_heading = CUTOVER)]
    pub drop_old: bool,

    /// Compare the tables row by row just before every cutover, and cut over only when they are
    /// equal: full, "sample PCT" (a random PCT% of the key ranges) or off.
    #[arg(long, default_value = "full", value_parser = crate::verify::Mode::parse, help_heading = CUTOVER)]
    pub verify: crate::verify::Mode,

    /// Cut over only when the apply lag is below this much WAL: bytes, or with a unit (512kB,
    /// 1MB).
    #[arg(long, value_name = "SIZE", default_value = "1MB", value_parser = size_bytes, help_heading = CUTOVER)]
    pub max_lag_bytes: u64,

    /// How long the cutover may wait for the table lock before backing off: 3s, 500ms (a bare
    /// number is milliseconds).
    #[arg(long, visible_alias = "lock-timeout", value_name = "DURATION", default_value = "3s", value_parser = millis, help_heading = CUTOVER)]
    pub lock_timeout_ms: u64,

    /// Cutover attempts before giving up for a while and streaming on.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..), help_heading = CUTOVER)]
    pub cutover_attempts: u32,

    /// How long, holding the lock, to wait for the last changes to be applied: 30s, 1min (a bare
    /// number is milliseconds).
    #[arg(long, visible_alias = "drain-timeout", value_name = "DURATION", default_value = "30s", value_parser = millis, help_heading = CUTOVER)]
    pub drain_timeout_ms: u64,

    /// Copy at most this many rows per second (all workers together).
    #[arg(long, value_name = "ROWS_PER_S", value_parser = clap::value_parser!(u64).range(1..), help_heading = THROTTLING)]
    pub max_copy_rate: Option<u64>,

    /// Pass at most this many changes per second from the stream to the apply (until the cutover
    /// is due: then the apply catches up at full speed). Beyond it the slot holds the WAL and the
    /// lag grows.
    #[arg(long, value_name = "CHANGES_PER_S", value_parser = clap::value_parser!(u64).range(1..), help_heading = THROTTLING)]
    pub max_apply_rate: Option<u64>,

    /// The load governor's ceiling: at no moment may the migration make the application's
    /// statements (or, from their rate, its transactions) take more than PCT% longer than without
    /// it; under that ceiling the copy's pace is the one that costs the application least over
    /// the whole migration (a short burst can cost less than a long crawl). 0 turns the governor
    /// off.
    #[arg(long, value_name = "PCT", env = "PGREPART_MAX_IMPACT", default_value_t = 50, value_parser = clap::value_parser!(u32).range(0..=1000), help_heading = THROTTLING)]
    pub max_impact: u32,

    /// Slow the copy and the apply while a physical standby's replay_lag (pg_stat_replication)
    /// is above this (e.g. 10s; a bare number is seconds). Needs the load governor.
    #[arg(long, value_name = "DURATION", value_parser = positive_seconds, help_heading = THROTTLING)]
    pub max_replica_lag: Option<std::time::Duration>,

    /// Pause the copy when the slot holds more WAL than this (e.g. 20GB), and stop cleanly at twice it.
    #[arg(long, value_name = "SIZE", value_parser = size_text, help_heading = THROTTLING)]
    pub max_retained_wal: Option<String>,

    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9187).
    #[arg(long, value_name = "HOST:PORT", help_heading = OUTPUT)]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CutoverMode {
    Auto,
    Manual,
}

impl CutoverMode {
    pub fn as_str(self) -> &'static str {
        match self {
            CutoverMode::Auto => "auto",
            CutoverMode::Manual => "manual",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub conn: SourceArgs,

    /// The migrated table; without it, every migration recorded in the database is listed.
    #[arg(short, long)]
    pub table: Option<String>,

    /// Print one JSON object (or, without --table, a JSON array).
    #[arg(long, help_heading = OUTPUT)]
    pub json: bool,

    /// Redraw every so often (default 2s; a bare number is seconds) until the migration is done
    /// or failed.
    // No -w: to psql and pg_dump users it means "never ask for a password".
    #[arg(long, value_name = "DURATION", num_args = 0..=1, default_missing_value = "2", value_parser = watch_interval, help_heading = OUTPUT)]
    pub watch: Option<Duration>,
}

#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub migration: MigrationArgs,

    /// When a generated new table would get its primary key (as `run --primary-key`): the plan's
    /// DDL shows it there.
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = crate::copy::indexes::KeyTiming::Auto, help_heading = COPY)]
    pub primary_key: crate::copy::indexes::KeyTiming,

    /// Print the plan as one JSON object.
    #[arg(long, help_heading = OUTPUT)]
    pub json: bool,
}

/// `--max-lag-bytes`: a size; a bare number is bytes.
fn size_bytes(text: &str) -> Result<u64, String> {
    parse_size(text)
}

/// `--max-retained-wal`: checked here, kept as written (the engine reads it with `parse_size`).
fn size_text(text: &str) -> Result<String, String> {
    match parse_size(text)? {
        0 => Err("must be above 0".into()),
        _ => Ok(text.to_string()),
    }
}

/// A duration above 0; a bare number is seconds.
fn positive_seconds(text: &str) -> Result<std::time::Duration, String> {
    let d = parse_duration(text, BareUnit::Seconds)?;
    if d.is_zero() {
        return Err("must be above 0".into());
    }
    Ok(d)
}

/// Durations of the `*-ms` flags: in milliseconds, whatever unit was written.
fn millis(text: &str) -> Result<u64, String> {
    let d = parse_duration(text, BareUnit::Milliseconds)?;
    u64::try_from(d.as_millis()).map_err(|_| format!("{text:?} is out of range"))
}

/// `--rollback-window`: a duration, a bare number in seconds.
fn window_duration(text: &str) -> Result<Duration, String> {
    parse_duration(text, BareUnit::Seconds)
}

/// `status --watch`: at least 100 ms.
fn watch_interval(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text, BareUnit::Seconds)?;
    if d < Duration::from_millis(100) {
        return Err("must be at least 100ms".into());
    }
    Ok(d)
}

/// `verify --sample`: a percentage above 0 and at most 100, as `run --verify "sample PCT"`.
fn sample_percent(text: &str) -> Result<f64, String> {
    match crate::verify::Mode::parse(&format!("sample {text}"))? {
        crate::verify::Mode::Sample(p) => Ok(p),
        _ => Err(format!("{text:?} is not a percentage")),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// clap's own consistency checks: no argument defined twice (e.g. a `--target` in a command
    /// and in the flattened connection arguments), valid defaults and relations.
    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("pgrepart").chain(args.iter().copied()))
    }

    fn run_args(extra: &[&str]) -> Result<RunArgs, clap::Error> {
        let mut argv = vec!["run", "-t", "orders", "--into", "orders_new"];
        argv.extend_from_slice(extra);
        match parse(&argv)?.command {
            Command::Run(args) => Ok(args),
            _ => unreachable!(),
        }
    }

    #[test]
    fn sizes_and_durations_take_units_and_bare_numbers_keep_the_old_ones() {
        let a = run_args(&[
            "--max-lag-bytes",
            "2MB",
            "--lock-timeout",
            "3s",
            "--drain-timeout-ms",
            "1min",
            "--max-retained-wal",
            "20GB",
        ])
        .unwrap();
        assert_eq!(a.max_lag_bytes, 2 << 20);
        assert_eq!(a.lock_timeout_ms, 3000);
        assert_eq!(a.drain_timeout_ms, 60_000);
        assert_eq!(a.max_retained_wal.as_deref(), Some("20GB"));
        let a = run_args(&["--max-lag-bytes", "4096", "--lock-timeout-ms", "250"]).unwrap();
        assert_eq!(a.max_lag_bytes, 4096);
        assert_eq!(a.lock_timeout_ms, 250);
        let a = run_args(&[]).unwrap();
        assert_eq!(
            (a.max_lag_bytes, a.lock_timeout_ms, a.drain_timeout_ms),
            (1 << 20, 3000, 30_000)
        );
        for bad in [
            ["--max-lag-bytes", "1XB"],
            ["--lock-timeout-ms", "3 fortnights"],
            ["--max-retained-wal", "lots"],
            ["--max-retained-wal", "0"],
            ["--cutover-attempts", "0"],
            ["--jobs", "0"],
        ] {
            let e = run_args(&bad).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn status_watch_takes_seconds_or_a_unit() {
        let watch = |extra: &[&str]| match parse(&[&["status"], extra].concat()).unwrap().command {
            Command::Status(s) => s.watch,
            _ => unreachable!(),
        };
        assert_eq!(watch(&[]), None);
        assert_eq!(watch(&["--watch"]), Some(Duration::from_secs(2)));
        assert_eq!(watch(&["--watch", "5"]), Some(Duration::from_secs(5)));
        assert_eq!(
            watch(&["--watch", "500ms"]),
            Some(Duration::from_millis(500))
        );
        assert!(parse(&["status", "--watch", "1ms"]).is_err());
    }

    #[test]
    fn verify_sample_is_a_usage_error_outside_0_to_100() {
        for bad in ["0", "101", "many"] {
            let e = parse(&["verify", "-t", "t", "--sample", bad]).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
        }
        assert!(parse(&["verify", "-t", "t", "--sample", "5"]).is_ok());
    }

    #[test]
    fn source_is_optional_and_takes_psql_s_short_flags() {
        let Command::Run(a) = parse(&[
            "run", "-d", "shop", "-t", "orders", "--into", "n", "-j", "4",
        ])
        .unwrap()
        .command
        else {
            unreachable!()
        };
        assert_eq!(a.migration.conn.source.as_deref(), Some("shop"));
        assert_eq!(a.migration.table, "orders");
        assert_eq!(a.migration.jobs, Some(4));
        assert!(parse(&["status"]).is_ok());
        assert!(parse(&["status", "--dbname", "shop"]).is_ok());
    }

    /// The long flags of a subcommand, as its help lists them.
    fn long_flags(cmd: &clap::Command) -> Vec<String> {
        cmd.get_arguments()
            .filter(|a| !a.is_hide_set())
            .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
            .collect()
    }

    #[test]
    fn plan_shows_only_its_own_flags() {
        let mut cli = Cli::command();
        cli.build();
        let plan = cli.find_subcommand("plan").unwrap();
        let flags = long_flags(plan);
        for run_only in [
            "--metrics-addr",
            "--lock-timeout-ms",
            "--verify",
            "--drop-old",
            "--cutover",
            "--max-copy-rate",
            "--max-retained-wal",
        ] {
            assert!(
                !flags.contains(&run_only.to_string()),
                "plan lists {run_only}"
            );
        }
        for shared in [
            "--source",
            "--table",
            "--partition-by",
            "--interval",
            "--jobs",
            "--json",
        ] {
            assert!(flags.contains(&shared.to_string()), "plan lacks {shared}");
        }
    }

    /// Every flag of every subcommand has its entry in docs/flags.md under that subcommand's
    /// section, and every flag there exists.
    #[test]
    fn docs_flags_md_lists_exactly_the_flags_of_each_subcommand() {
        let doc = include_str!("../docs/flags.md");
        let mut cli = Cli::command();
        cli.build();
        let mut problems = Vec::new();
        let global = long_flags(&cli);
        for sub in cli.get_subcommands() {
            let name = sub.get_name();
            if name == "help" {
                continue;
            }
            let section = doc_section(doc, &format!("## pgrepart {name}"))
                .unwrap_or_else(|| panic!("docs/flags.md has no section \"## pgrepart {name}\""));
            let documented = documented_flags(section);
            let flags: Vec<String> = long_flags(sub)
                .into_iter()
                .filter(|f| !global.contains(f) && f != "--help")
                .collect();
            for f in &flags {
                if !documented.contains(f) {
                    problems.push(format!("{name}: {f} is not in docs/flags.md"));
                }
            }
            for f in &documented {
                if !flags.contains(f) {
                    problems.push(format!(
                        "{name}: docs/flags.md lists {f}, which it does not have"
                    ));
                }
            }
        }
        let section = doc_section(doc, "## Every subcommand").expect("a section for global flags");
        let documented = documented_flags(section);
        for f in global
            .iter()
            .filter(|f| *f != "--help" && *f != "--version")
        {
            if !documented.contains(f) {
                problems.push(format!("global {f} is not in docs/flags.md"));
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }

    /// The text from `heading` to the next `## ` heading.
    fn doc_section<'a>(doc: &'a str, heading: &str) -> Option<&'a str> {
        let start = doc.find(&format!("\n{heading}\n"))? + heading.len() + 2;
        let rest = &doc[start..];
        Some(&rest[..rest.find("\n## ").unwrap_or(rest.len())])
    }

    /// Flags with an entry: lines starting `- `--flag`` (one entry per flag).
    fn documented_flags(section: &str) -> Vec<String> {
        section
            .lines()
            .filter_map(|l| l.strip_prefix("- `--"))
            .filter_map(|l| l.split(['`', ' ', '=']).next())
            .map(|f| format!("--{f}"))
            .collect()
    }
}
