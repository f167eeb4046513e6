//! The supervisor's longer steps, each a function of what it needs: the end of the copy (index
//! builds and ANALYZE), the check before cutover, and the cutover's bounded attempts.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_postgres::Client;

use super::setup::key_columns;
use crate::config::{Prepared, RunConfig};
use crate::copy;
use crate::cross_cutover::{self, CrossAttempt, CrossPlan};
use crate::cutover::{self, Attempt, Outcome, SwapPlan};
use crate::error::{Error, Result};
use crate::pg::catalog::{self, ServerInfo, TableInfo};
use crate::pg::ddl;
use crate::pg::ident::QualifiedName;
use crate::preflight::Target;
use crate::state::{self, Migration, Phase};

/// A primary key left for after the copy, and the applier's channel of finished ranges, which
/// hears `apply::KEY_BUILT` once it is built.
pub struct KeyBuilt {
    pub pending: bool,
    pub applier: mpsc::UnboundedSender<usize>,
}

/// Builds the secondary indexes (generated targets, per partition in parallel) and the primary
/// key if it was left for now, then analyzes the new table and enters `streaming` in one
/// transaction. Safe to repeat after a failure: builds skip what exists.
pub async fn finish_copy(
    control: &mut Client,
    prep: &Prepared,
    info: &TableInfo,
    m: &Migration,
    backends: &copy::indexes::Backends,
    key: KeyBuilt,
    gentle: bool,
) -> Result<()> {
    // The control session builds the parent's indexes and runs the ANALYZE.
    backends.register(control).await?;
    if let Target::Generate { by, .. } = &prep.target {
        let plans = ddl::secondary_indexes(info, &m.target, by);
        for w in plans.iter().filter_map(|p| p.warning.as_ref()) {
            tracing::warn!("{w}");
        }
        let primary_key = if key.pending {
            Some(ddl::primary_key_sql(&key_columns(info)?, by))
        } else {
            None
        };
        copy::indexes::build(
            control,
            &prep.dbs.target,
            prep.jobs,
            &m.target,
            copy::indexes::Work {
                plans: &plans,
                primary_key: primary_key.as_deref(),
                gentle,
            },
            backends,
        )
        .await?;
    } else if key.pending {
        return Err(Error::failed(format!(
            "{} has no primary key yet; rerun with the same --partition-by and --partition arguments to build it",
            m.target
        )));
    }
    if key.pending {
        // The applier takes the changes from here, with every range copied.
        let _ = key.applier.send(crate::apply::KEY_BUILT);
    }
    let tx = control
        .transaction()
        .await
        .map_err(|e| Error::db("starting the index build", e))?;
    if matches!(prep.target, Target::Generate { .. }) {
        if gentle {
            // The cost-based delay of autovacuum's ANALYZE (2 ms after every 200 pages'
            // worth): a manual ANALYZE has none and takes a core for as long as it reads.
            tx.batch_execute(
                "SET LOCAL vacuum_cost_delay = '2ms'; SET LOCAL vacuum_cost_limit = 200",
            )
            .await
            .map_err(|e| Error::db("pacing the new table's ANALYZE", e))?;
        }
        tx.batch_execute(&format!("ANALYZE {}", m.target.sql()))
            .await
            .map_err(|e| Error::db("analyzing the new table", e))?;
    }
    state::mark_streaming(&tx, m.id).await?;
    tx.commit()
        .await
        .map_err(|e| Error::db("committing the index build", e))
}

/// The verdict of the check before cutover.
pub enum Verified {
    /// Equal (or the check is off): cut over.
    Pass,
    /// Rows differ: wait for `pgrepart verify --repair`.
    Differs,
    /// The check could not finish (e.g. a session lost): try again soon.
    Unfinished,
}

/// The check before cutover (`--verify`). On a difference, or a verify that could not finish,
/// it says so (log and `last_error`) and the run streams on.
pub async fn verified_before_cutover(
    control: &Client,
    cfg: &RunConfig,
    info: &TableInfo,
    m: &Migration,
    hold_tx: &watch::Sender<crate::apply::Hold>,
    shared: &Arc<crate::apply::Shared>,
    pace: Option<u64>,
) -> Result<Verified> {
    if cfg.verify == crate::verify::Mode::Off {
        return Ok(Verified::Pass);
    }
    let prep = &cfg.prep;
    tracing::info!(
        mode = %cfg.verify.describe(),
        pace = pace.map_or_else(|| "none".to_string(), |p| format!("{p} rows/s")),
        "verifying the new table against the source before cutting over{}",
        if pace.is_some() { ", at a pace that follows the copy's" } else { "" }
    );
    // The table as it is now: columns added on the source since the start (and followed) are
    // compared too.
    let fresh = match crate::pg::connect(&prep.dbs.source, "pgrepart verify").await {
        Ok(c) => catalog::table_info(&c, &info.name).await.ok().flatten(),
        Err(_) => None,
    };
    let outcome = crate::verify::gate::before_cutover(
        &prep.dbs.source,
        &prep.dbs.target,
        fresh.as_ref().unwrap_or(info),
        &m.target,
        prep.jobs,
        cfg.verify,
        pace,
        hold_tx,
        shared,
    )
    .await;
    let (msg, verdict) = match outcome {
        Ok(report) if report.is_equal() => {
            tracing::info!("{}", report.summary_line());
            return Ok(Verified::Pass);
        }
        Ok(report) => (
            format!(
                "{}: {}; run `pgrepart verify --repair` (then the cutover goes on), or rerun with --verify off to skip the check",
                crate::verify::gate::BLOCKED_PREFIX,
                report.summary_line()
            ),
            Verified::Differs,
        ),
        Err(e) => (
            format!("cutover postponed: the verify before it did not finish: {e}"),
            Verified::Unfinished,
        ),
    };
    tracing::warn!("{msg}");
    state::set_error(control, m.id, Some(&msg)).await?;
    Ok(verdict)
}

/// The connections a cutover uses: the state's (target) and the source's (the same database
/// unless `--target` names another).
pub struct Dbs<'a> {
    pub control: &'a mut Client,
    pub source: &'a mut Client,
}

/// Tries to cut over with bounded retries; `Ok(None)` when the lock could not be had. The fence
/// session is opened for this try (a session lost while streaming is not found at the swap).
pub async fn try_cutover(
    dbs: Dbs<'_>,
    cfg: &RunConfig,
    fence: &mut watch::Receiver<Option<String>>,
    server: &ServerInfo,
    info: &TableInfo,
    m: &Migration,
) -> Result<Option<Duration>> {
    let Dbs { control, source } = dbs;
    let prep = &cfg.prep;
    let flusher = crate::cutover::fence_session(&prep.source).await?;
    let current_user: String = control
        .query_one("SELECT current_user::text", &[])
        .await
        .map_err(|e| Error::db("reading current_user", e))?
        .get(0);
    let mut plan = SwapPlan {
        migration_id: m.id,
        source: m.source.clone(),
        target: m.target.clone(),
        old_name: m.old_name.clone(),
        sequences: info.sequences.clone(),
        grants: info.grants.clone(),
        new_owner: (m.target_created && info.owner != current_user).then(|| info.owner.clone()),
        partitions: m.created_partitions.clone(),
        target_created: m.target_created,
        always_identity: info
            .columns
            .iter()
            .filter(|c| c.identity == Some('a'))
            .map(|c| c.name.clone())
            .collect(),
        drop_inbound_fks: cfg.drop_inbound_fks,
        kind: cutover::SwapKind::Cutover,
        window: false,
    };
    let mut cross = prep.cross_db().then(|| CrossPlan {
        migration_id: m.id,
        source: m.source.clone(),
        target: m.target.clone(),
        old_name: m.old_name.clone(),
        publication: m.publication_name.clone(),
        sequences: info.sequences.clone(),
        grants: info.grants.clone(),
        owner: info.owner.clone(),
        partitions: m.created_partitions.clone(),
        target_created: m.target_created,
        always_identity: plan.always_identity.clone(),
        target_committed: m.target_committed_fence.is_some(),
        target_desc: prep.dbs.target_description(),
        window: false,
    });
    // A rollback window: its publication and slot before the swap (slot creation waits for the
    // transactions running then; never under the lock).
    let window_asked = state::get(&*control, m.id).await?.window.asked_s.is_some();
    if let Some(cross) = cross.as_mut() {
        // Across databases the reverse slot is on the target (design.md §11).
        if window_asked {
            crate::rollback::cross::prepare(source, control, m).await?;
            cross.window = true;
        } else {
            crate::rollback::drop_reverse(control, m).await?;
        }
    } else if window_asked {
        // The keys onto the table are judged in the swap, with the new table's key.
        crate::rollback::refuse_foreign_keys(source, &m.source, &[]).await?;
        crate::rollback::prepare_reverse(source, m).await?;
        plan.window = true;
    } else {
        // Made for a window asked for earlier, then withdrawn (`--rollback-window 0`).
        crate::rollback::drop_reverse(source, m).await?;
    }
    state::set_phase(&*control, m.id, Phase::CuttingOver, None).await?;
    // Tests: hold with the fence session open, before the table is locked.
    crate::fault::pause("cutover").await;
    let mut backoff = Duration::from_millis(500);
    for attempt_no in 1..=cfg.cutover_attempts {
        let fence_id = cutover::fence_id(m.id, &format!(":{attempt_no}"));
        let outcome = match &cross {
            Some(cross) => {
                let outcome = cross_cutover::attempt(
                    source,
                    control,
                    &flusher,
                    fence,
                    CrossAttempt {
                        plan: cross,
                        server_major: server.major(),
                        lock_timeout: cfg.lock_timeout,
                        drain_timeout: cfg.drain_timeout,
                        fence_id,
                    },
                )
                .await?;
                if matches!(outcome, Outcome::Done { .. }) {
                    state::set_phase(&*control, m.id, Phase::Done, None).await?;
                }
                outcome
            }
            None => {
                cutover::attempt(
                    control,
                    &flusher,
                    fence,
                    Attempt {
                        plan: &plan,
                        server_major: server.major(),
                        lock_timeout: cfg.lock_timeout,
                        drain_timeout: cfg.drain_timeout,
                        fence_id,
                    },
                )
                .await?
            }
        };
        match outcome {
            Outcome::Done { lock_held } => {
                tracing::info!(lock_held_ms = lock_held.as_millis() as u64, "cut over");
                return Ok(Some(lock_held));
            }
            Outcome::LockTimeout => {
                let holders = lock_holders(source, &m.source).await;
                tracing::warn!(attempt = attempt_no, holders = %holders, "could not lock the table in time; backing off");
            }
            Outcome::DrainTimeout => {
                tracing::warn!(
                    attempt = attempt_no,
                    "the last changes were not applied in time; released the lock, backing off"
                );
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
    let msg = format!(
        "cutover gave up after {} attempts; streaming on and trying again in a minute",
        cfg.cutover_attempts
    );
    tracing::warn!("{msg}");
    state::set_phase(&*control, m.id, Phase::Streaming, Some(&msg)).await?;
    Ok(None)
}

/// "pid 123 (app, idle in transaction)" for sessions holding locks on the table.
async fn lock_holders(control: &Client, table: &QualifiedName) -> String {
    let rows = control
        .query(
            "SELECT a.pid, coalesce(a.application_name, ''), coalesce(a.state, '') FROM pg_locks l \
             JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.relation = $1::text::regclass AND l.granted AND a.pid <> pg_backend_pid()",
            &[&table.sql()],
        )
        .await
        .unwrap_or_default();
    let list: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "pid {} ({}, {})",
                r.get::<_, i32>(0),
                r.get::<_, String>(1),
                r.get::<_, String>(2)
            )
        })
        .collect();
    if list.is_empty() {
        "none seen".into()
    } else {
        list.join("; ")
    }
}

/// Passes a `verify` hold from the state to the applier, and lifts one whose lease ran out (its
/// verify process is gone). Returns the hold in effect.
pub async fn follow_hold(
    control: &Client,
    m: &Migration,
    hold_tx: &watch::Sender<crate::apply::Hold>,
) -> Result<crate::apply::Hold> {
    let hold = if m.hold_at.is_some() && m.hold_expired {
        if state::clear_hold(control, m.id, None).await? {
            tracing::warn!(owner = %m.hold_owner.as_deref().unwrap_or(""), "the verify hold's lease ran out (is that process gone?); applying again");
        }
        None
    } else {
        m.hold_at
    };
    hold_tx.send_if_modified(|h| std::mem::replace(h, hold) != hold);
    Ok(hold)
}

/// `; the DEFAULT partition p holds N row(s)` for the final line (empty without a DEFAULT), counted
/// once the swap has committed, so neither the copy nor the lock waits for it; logged too.
pub async fn default_partition_note(control: &Client, table: &QualifiedName) -> String {
    match catalog::default_partition_rows(control, table).await {
        Ok(Some((partition, rows))) => {
            tracing::info!(partition = %partition, rows, "rows in the DEFAULT partition");
            format!("; the DEFAULT partition {partition} holds {rows} row(s)")
        }
        Ok(None) => String::new(),
        Err(e) => {
            tracing::warn!(error = %e, "could not count the rows of the DEFAULT partition");
            String::new()
        }
    }
}

/// Cross-database: says exactly where the application must now go (never a password).
pub fn print_point_at(prep: &Prepared, m: &Migration) {
    if !prep.cross_db() {
        return;
    }
    println!(
        "{}",
        cross_cutover::point_at_message(
            &m.final_name(),
            &prep.dbs.target_description(),
            &m.source.sibling(m.old_name.clone()),
            &crate::pg::describe_target(&prep.source),
        )
    );
}
