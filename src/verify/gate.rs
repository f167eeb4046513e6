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

/// The check `run` makes before cutting over, with its own applier held directly.
#[allow(clippy::too_many_arguments)]
pub async fn before_cutover(
    source: &Config,
    target: &Config,
    info: &TableInfo,
    target_table: &QualifiedName,
    jobs: usize,
    mode: Mode,
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
    };
    let mut hold = LocalHold {
        tx: hold,
        shared: shared.clone(),
    };
    super::verify(&plan, &mut hold).await
}
