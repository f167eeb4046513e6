//! The check `run` makes before every cutover (`--verify`), with its own applier held directly,
//! and what it shares with `pgrepart verify`: the compared columns and the mark of a blocked
//! cutover.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_postgres::Config;

use super::compare::Columns;
use super::hold::LocalHold;
use super::{Mode, Plan, Report};
use crate::apply::{Hold, Shared};
use crate::copy::ranges::INT_TYPES;
use crate::error::{Error, Result};
use crate::pg::catalog::TableInfo;
use crate::pg::ident::QualifiedName;

/// How `last_error` starts when the check before cutover blocked it.
pub const BLOCKED_PREFIX: &str = "cutover blocked by verify";

/// The compared columns: the source's replicated ones in its order, and its key.
pub fn columns_of(info: &TableInfo) -> Result<Columns> {
    let replicated = info.replicated_columns();
    let key = info.key_index().map(|k| k.columns.clone()).ok_or_else(|| {
        Error::refused(format!(
            "{} has no primary key or replica identity index",
            info.name
        ))
    })?;
    let key_pos: Vec<usize> = key
        .iter()
        .map(|k| replicated.iter().position(|c| &c.name == k))
        .collect::<Option<_>>()
        .ok_or_else(|| Error::refused("a key column is not replicated (generated?)"))?;
    let int_key = INT_TYPES.contains(&replicated[key_pos[0]].type_oid);
    Ok(Columns {
        columns: replicated
            .iter()
            .map(|c| (c.name.clone(), c.type_sql.clone()))
            .collect(),
        key: key_pos,
        int_key,
        collated: replicated.iter().map(|c| c.collation.is_some()).collect(),
        // Decided on both sides' sessions (`verify::hashes_by_value`).
        by_value: false,
    })
}

/// A row compared costs about a quarter of a row copied: the comparison reads and hashes each
/// row on both sides (1.4 CPU seconds for pgbench's 2,000,000 accounts, `bench/cpu.py`), the
/// copy reads, sends, writes, logs and decodes it (about 6.5).
pub const CHECK_PER_COPY: u64 = 4;
/// The slowest pace of a paced check (rows/s): it holds the applier at its consistent point
/// and a snapshot on the source for as long as it lasts.
pub const CHECK_MIN_RATE: u64 = 50_000;

/// The pace of the check before the cutover (pure): with the copy's last limit (the load
/// governor's, or `--max-copy-rate`), about the load the copy was allowed; without one, none.
/// At full speed the check takes every core for a second or two, and an application sending
/// its transactions at its own pace queues behind it (in the TPC-B-like open loop, seconds of
/// 260 and 315 ms against 1.8 ms alone, most of the run's latency excess).
pub fn check_pace(copy_limit: Option<u64>) -> Option<u64> {
    copy_limit.map(|l| l.saturating_mul(CHECK_PER_COPY).max(CHECK_MIN_RATE))
}

/// The check `run` makes before cutting over, with its own applier held directly.
#[allow(clippy::too_many_arguments)]
pub async fn before_cutover(
    source: &Config,
    target: &Config,
    info: &TableInfo,
    target_table: &QualifiedName,
    jobs: usize,
    mode: Mode,
    pace: Option<u64>,
    hold: &watch::Sender<Hold>,
    shared: &Arc<Shared>,
) -> Result<Report> {
    let plan = Plan {
        source: source.clone(),
        source_table: info.name.clone(),
        target: target.clone(),
        target_table: target_table.clone(),
        columns: columns_of(info)?,
        jobs,
        mode,
        repair: false,
        pace,
    };
    let mut hold = LocalHold {
        tx: hold,
        shared: shared.clone(),
    };
    super::verify(&plan, &mut hold).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_follows_the_copys_pace_within_bounds() {
        assert_eq!(check_pace(None), None);
        assert_eq!(check_pace(Some(40_000)), Some(160_000));
        // Never a crawl: a copy held at its floor still has its check done in a minute or so.
        assert_eq!(check_pace(Some(500)), Some(CHECK_MIN_RATE));
        assert_eq!(check_pace(Some(u64::MAX)), Some(u64::MAX));
    }
}
