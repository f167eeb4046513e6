//! Command-line interface. The doc comments are the help text.

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Online, trigger-free conversion of a live PostgreSQL table into a partitioned table, through
/// logical replication.
#[derive(Debug, Parser)]
#[command(name = "pgrepart", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log format on standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// More detail in the logs (-v debug, -vv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check everything and print what `run` would do; changes nothing. Exit 1 if a check fails.
    Plan(PlanArgs),
    /// Run a migration (or resume the one in progress for this table) until it has cut over.
    Run(RunArgs),
    /// Show a migration's phase, copy progress and lag.
    Status(StatusArgs),
    /// Ask a running migration in manual cutover mode to cut over now, and wait until it has.
    Cutover(TableArgs),
    /// Stop a migration and remove everything it created: slot, publication, new table, state.
    Abort(TableArgs),
    /// Pause a running migration: it stops copying and applying; the slot keeps the changes.
    Pause(TableArgs),
    /// Resume a paused migration.
    Resume(TableArgs),
    /// Compare the table with the new table row by row at a consistent point, without locks
    /// (needs the running `run`). Exit 0 when equal, 1 on differences (their keys are listed).
    Verify(VerifyArgs),
}

#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub conn: SourceArgs,

    /// The table being migrated, as name or schema.name.
    #[arg(long)]
    pub table: String,

    /// Compare about PCT percent of the key ranges, picked at random, instead of all.
    #[arg(long, value_name = "PCT")]
    pub sample: Option<f64>,

    /// Copy the differing rows again from the source's snapshot, then compare them again.
    #[arg(long)]
    pub repair: bool,

    /// Sessions per side [default: number of cores].
    #[arg(long)]
    pub jobs: Option<usize>,

    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Where the table lives, and where it goes.
#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// Source database: a libpq URL (postgresql://user@host:5432/db) or key=value conninfo.
    #[arg(long, env = "PGREPART_SOURCE")]
    pub source: String,

    /// Target database, when the partitioned table goes to another database or cluster (the new
    /// table and pgrepart's state live there). Default: the source database.
    #[arg(long, env = "PGREPART_TARGET")]
    pub target: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct TableArgs {
    #[command(flatten)]
    pub conn: SourceArgs,

    /// The table being migrated, as name or schema.name.
    #[arg(long)]
    pub table: String,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub conn: SourceArgs,

    /// The table to convert, as name or schema.name.
    #[arg(long)]
    pub table: String,

    /// How to partition a generated target: "LIST (col)", "RANGE (col)" or "HASH (col, ...)".
    #[arg(long, required_unless_present = "into", conflicts_with = "into")]
    pub partition_by: Option<String>,

    /// A partition of the generated target, as NAME=<bound>: "orders_us=FOR VALUES IN ('US')",
    /// "p0=FOR VALUES WITH (MODULUS 4, REMAINDER 0)", "rest=DEFAULT". Repeat for each partition.
    #[arg(long = "partition", requires = "partition_by")]
    pub partitions: Vec<String>,

    /// Use this existing, empty partitioned table as the target instead of generating one.
    #[arg(long)]
    pub into: Option<String>,

    /// Generate RANGE partitions of this width covering the existing data (dates: up to today at
    /// least): day, week, month, year (date/timestamp keys) or an integer width (integer keys).
    /// Named <table>_2024_01 and so on.
    #[arg(long, requires = "partition_by", conflicts_with = "partitions")]
    pub interval: Option<String>,

    /// With --interval: how many partitions to make beyond the newest data (dates: beyond the
    /// later of the newest data and today) [default: 4].
    #[arg(long, requires = "interval")]
    pub premake: Option<u32>,

    /// With --interval or --list-values-from-data: no DEFAULT partition (rows outside every
    /// partition are then refused).
    #[arg(long)]
    pub no_default: bool,

    /// Generate N HASH partitions <table>_p0..p{N-1}.
    #[arg(long, requires = "partition_by", conflicts_with = "partitions")]
    pub modulus: Option<u32>,

    /// Generate one LIST partition per distinct value in the table (<table>_us, ...) plus a DEFAULT.
    #[arg(long, requires = "partition_by", conflicts_with = "partitions")]
    pub list_values_from_data: bool,

    /// Refuse to generate more partitions than this [default: 50 for LIST, 1000 for RANGE].
    #[arg(long)]
    pub max_partitions: Option<usize>,

    /// Drop the old table once the swap has committed (otherwise it is kept, with a comment).
    #[arg(long)]
    pub drop_old: bool,

    /// Drop the foreign keys of other tables that reference this one and cannot be recreated onto
    /// the new key (their table lacks the partition-key columns), inside the swap's transaction;
    /// the statements that recreate them are printed. Without it such keys make the run refuse.
    #[arg(long)]
    pub drop_inbound_fks: bool,

    /// Cut over as soon as the copy is done and the lag is small (auto), or wait for
    /// `pgrepart cutover` (manual).
    #[arg(long, value_enum, default_value_t = CutoverMode::Auto)]
    pub cutover: CutoverMode,

    /// The name the old table gets at cutover [default: <table>_old].
    #[arg(long)]
    pub old_name: Option<String>,

    /// Parallel copy workers [default: number of cores].
    #[arg(long)]
    pub jobs: Option<usize>,

    /// Sessions on the target that apply a large batch of changes side by side, each its share
    /// of the keys (1: one session). A table with a unique index or exclusion constraint besides
    /// its key is applied on one session.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub apply_sessions: u16,

    /// Cut over only when the apply lag is below this many bytes of WAL.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_lag_bytes: u64,

    /// How long the cutover may wait for the table lock before backing off (milliseconds).
    #[arg(long, default_value_t = 3000)]
    pub lock_timeout_ms: u64,

    /// Cutover attempts before giving up for a while and streaming on.
    #[arg(long, default_value_t = 10)]
    pub cutover_attempts: u32,

    /// How long, holding the lock, to wait for the last changes to be applied (milliseconds).
    #[arg(long, default_value_t = 30000)]
    pub drain_timeout_ms: u64,

    /// Copy at most this many rows per second (all workers together).
    #[arg(long, value_name = "ROWS_PER_S")]
    pub max_copy_rate: Option<u64>,

    /// Pass at most this many changes per second from the stream to the apply (until the cutover
    /// is due: then the apply catches up at full speed). Beyond it the slot holds the WAL and the
    /// lag grows.
    #[arg(long, value_name = "CHANGES_PER_S", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_apply_rate: Option<u64>,

    /// While the source has a write workload of its own, slow the copy down (and, once the copy is
    /// at its floor or done, the apply, until the cutover is due) whenever a commit on the source
    /// takes more than PCT% longer, or the workload's write transactions run more than PCT%
    /// slower, than without the migration; 0 turns this off.
    #[arg(long, value_name = "PCT", env = "PGREPART_MAX_IMPACT", default_value_t = 15, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub max_impact: u32,

    /// The compression method of the TOASTed values written into the new table, for columns
    /// without one of their own (COPY carries them uncompressed, so each is compressed again).
    #[arg(long, value_enum, value_name = "METHOD", default_value_t = crate::copy::toast::ToastCompression::Auto)]
    pub toast_compression: crate::copy::toast::ToastCompression,

    /// When a generated new table gets its primary key: before-copy (changes apply while the copy
    /// runs), after-copy (built with the other indexes: a faster copy, but every change waits
    /// in the slot until the copy and the index builds are done), or auto: after-copy
    /// when the source server commits no write transactions of its own as the run starts.
    #[arg(long, value_enum, value_name = "WHEN", default_value_t = crate::copy::indexes::KeyTiming::Auto)]
    pub primary_key: crate::copy::indexes::KeyTiming,

    /// Pause the copy when the slot holds more WAL than this (e.g. 20GB), and stop cleanly at twice it.
    #[arg(long, value_name = "SIZE")]
    pub max_retained_wal: Option<String>,

    /// Compare the tables row by row just before every cutover, and cut over only when they are
    /// equal: full, "sample PCT" (a random PCT% of the key ranges) or off.
    #[arg(long, default_value = "full", value_parser = crate::verify::Mode::parse)]
    pub verify: crate::verify::Mode,

    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9187).
    #[arg(long, value_name = "HOST:PORT")]
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
    #[arg(long)]
    pub table: Option<String>,

    /// Print one JSON object (or, without --table, a JSON array).
    #[arg(long)]
    pub json: bool,

    /// Redraw every SECS seconds (default 2) until the migration is done or failed.
    #[arg(long, value_name = "SECS", num_args = 0..=1, default_missing_value = "2")]
    pub watch: Option<u64>,
}

#[derive(Debug, Clone, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub run: RunArgs,

    /// Print the plan as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    /// clap's own consistency checks: no argument defined twice (e.g. a `--target` in a command
    /// and in the flattened connection arguments), valid defaults and relations.
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
