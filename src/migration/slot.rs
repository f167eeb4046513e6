//! The migration's replication slot and publication as the engine sees them on the source: is
//! the slot still there, how far behind is it, and removing both once they have served.

use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::pg::ident::quote_ident;
use crate::state::Migration;

pub fn slot_gone(m: &Migration) -> Error {
    Error::failed(format!(
        "the replication slot {} of migration {} is gone",
        m.slot_name, m.id
    ))
    .with_hint(
        "the changes since the copy cannot be recovered: run `pgrepart abort`, then start again",
    )
}

pub fn slot_lost(m: &Migration) -> Error {
    Error::failed(format!(
        "the replication slot {} was invalidated (max_slot_wal_keep_size exceeded)",
        m.slot_name
    ))
    .with_hint("run `pgrepart abort`, then start again (consider raising max_slot_wal_keep_size)")
}

/// (active, active_pid, wal_status) of a slot, if it exists.
pub async fn slot_row(
    control: &Client,
    slot: &str,
) -> Result<Option<(bool, Option<i32>, Option<String>)>> {
    let row = control
        .query_opt(
            "SELECT active, active_pid, wal_status FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| Error::db("reading the replication slot", e))?;
    Ok(row.map(|r| (r.get(0), r.get(1), r.get(2))))
}

pub async fn confirmed_flush(control: &Client, slot: &str) -> Result<Lsn> {
    let row = control
        .query_one(
            "SELECT coalesce(confirmed_flush_lsn, '0/0')::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .map_err(|e| Error::db("reading the slot's confirmed position", e))?;
    row.get::<_, String>(0)
        .parse()
        .map_err(|e| Error::failed(format!("{e}")))
}

/// Drops the slot, waiting (bounded) for its walsender to let go of it.
pub async fn drop_slot(control: &Client, slot: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match slot_row(control, slot).await? {
            None => return Ok(()),
            Some((false, _, _)) => {
                match control
                    .execute("SELECT pg_drop_replication_slot($1)", &[&slot])
                    .await
                {
                    Ok(_) => return Ok(()),
                    // Taken again between the check and the drop: look again.
                    Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE) => {
                    }
                    Err(e) => return Err(Error::db("dropping the replication slot", e)),
                }
            }
            Some((true, pid, _)) => {
                if Instant::now() > deadline {
                    return Err(Error::failed(format!(
                        "the replication slot {slot} is still in use by pid {}",
                        pid.unwrap_or_default()
                    ))
                    .with_hint(format!(
                        "stop that process, then SELECT pg_drop_replication_slot('{slot}')"
                    )));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// After the swap: the slot and publication go. Safe to repeat.
pub async fn finish_cleanup(control: &Client, m: &Migration) -> Result<()> {
    drop_slot(control, &m.slot_name).await?;
    control
        .batch_execute(&format!(
            "DROP PUBLICATION IF EXISTS {}",
            quote_ident(&m.publication_name)
        ))
        .await
        .map_err(|e| Error::db("dropping the publication", e))?;
    Ok(())
}

/// Whether the server lets a slot hold WAL without bound.
pub async fn unbounded_slot_wal(control: &Client) -> Result<bool> {
    let row = control
        .query_one(
            "SELECT current_setting('max_slot_wal_keep_size') = '-1'",
            &[],
        )
        .await
        .map_err(|e| Error::db("reading max_slot_wal_keep_size", e))?;
    Ok(row.get(0))
}

/// The slot now: gone, invalidated, or kept with the lag behind the source's WAL, the WAL it
/// retains, and how much more the server lets it retain (`safe_wal_size`; `None` when
/// `max_slot_wal_keep_size` is -1), in bytes.
pub enum SlotNow {
    Gone,
    Lost,
    Kept {
        lag: u64,
        retained: u64,
        safe_wal: Option<i64>,
    },
}

pub async fn lag_and_retained(control: &Client, confirmed: Lsn, slot: &str) -> Result<SlotNow> {
    let row = control
        .query_opt(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::bigint, \
                    coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, 0), \
                    safe_wal_size, wal_status = 'lost' \
             FROM pg_replication_slots WHERE slot_name = $2",
            &[&confirmed.to_string(), &slot],
        )
        .await
        .map_err(|e| Error::db("measuring the lag", e))?;
    Ok(match row {
        None => SlotNow::Gone,
        Some(r) if r.get::<_, Option<bool>>(3) == Some(true) => SlotNow::Lost,
        Some(r) => SlotNow::Kept {
            lag: r.get::<_, i64>(0).max(0) as u64,
            retained: r.get::<_, i64>(1).max(0) as u64,
            safe_wal: r.get(2),
        },
    })
}
