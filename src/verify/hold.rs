//! Holding the applier at an LSN while `verify` compares (see `apply::Hold`).
//!
//! ```text
//! verify ──hold_at_lsn, lease──► pgrepart.migrations ──(every second)──► run: applier holds
//! verify ◄──────────────── held_at_lsn ◄──────────────────────────────── run: acknowledges
//! ```
//! The lease (`hold_expires_at`) is renewed while verify works; when it runs out (verify died) the
//! run lifts the hold itself. Inside `run` (the check before cutover) the applier is local and is
//! held directly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio_postgres::Client;

use super::wait_until;
use crate::apply::{Hold, Shared};
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::state::{self, Phase};

/// How long the applier gets to reach a hold (apply what is before it).
const HOLD_DEADLINE: Duration = Duration::from_secs(120);
/// Lease of a hold asked through the state table, renewed every LEASE_S / 4.
const LEASE_S: f64 = 30.0;

pub trait HoldControl {
    /// Holds the applier at `at` and waits until it has applied everything before it.
    fn hold(&mut self, at: Lsn) -> impl std::future::Future<Output = Result<()>> + Send;
    /// Fails when the hold at `at` was lost since it was reached.
    fn check_still_held(&mut self, at: Lsn)
    -> impl std::future::Future<Output = Result<()>> + Send;
    /// Lets the applier go on.
    fn release(&mut self) -> impl std::future::Future<Output = Result<()>> + Send;
}

/// The applier of this process (`run`'s check before cutover).
pub struct LocalHold<'a> {
    pub tx: &'a watch::Sender<Hold>,
    pub shared: Arc<Shared>,
}

impl HoldControl for LocalHold<'_> {
    async fn hold(&mut self, at: Lsn) -> Result<()> {
        self.tx.send_replace(Some(at));
        let shared = self.shared.clone();
        let reached = wait_until(HOLD_DEADLINE, Duration::from_millis(20), || {
            let held = shared.held_at.load(Ordering::Relaxed);
            async move { Ok(held == at.0.max(1)) }
        })
        .await?;
        if !reached {
            return Err(Error::transient(format!(
                "the applier did not reach verify's consistent point {at} within {} s",
                HOLD_DEADLINE.as_secs()
            )));
        }
        Ok(())
    }

    async fn check_still_held(&mut self, at: Lsn) -> Result<()> {
        if self.shared.held_at.load(Ordering::Relaxed) == at.0.max(1) {
            Ok(())
        } else {
            Err(Error::transient(
                "the applier stopped holding during verify",
            ))
        }
    }

    async fn release(&mut self) -> Result<()> {
        self.tx.send_replace(None);
        Ok(())
    }
}

/// A `run` in another process, reached through the state table.
pub struct StateHold {
    client: Arc<Client>,
    migration_id: i64,
    owner: String,
    runner: Option<String>,
    lost: Arc<AtomicBool>,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

impl StateHold {
    /// Checks that a `run` is attached and streaming; refuses otherwise.
    pub async fn new(client: Arc<Client>, migration_id: i64) -> Result<StateHold> {
        let m = state::get(&*client, migration_id).await?;
        if m.phase != Phase::Streaming {
            return Err(Error::refused(format!(
                "migration {migration_id} is {}, not streaming: verify compares once every range is copied",
                m.phase.as_str()
            ))
            .with_hint("wait until `pgrepart status` shows phase streaming"));
        }
        if m.paused {
            return Err(Error::refused(format!(
                "migration {migration_id} is paused: its applier cannot catch up to a consistent point"
            ))
            .with_hint("`pgrepart resume` it, then verify"));
        }
        let active = state::run_attached(&*client, migration_id).await?;
        if m.runner.is_none() || !active {
            return Err(Error::refused(format!(
                "no `pgrepart run` is attached to migration {migration_id}: verify needs it to hold its applier"
            ))
            .with_hint("start (or resume) the migration with `pgrepart run`, then verify"));
        }
        Ok(StateHold {
            client,
            migration_id,
            owner: format!("verify pid {}", std::process::id()),
            runner: m.runner,
            lost: Arc::new(AtomicBool::new(false)),
            renewer: None,
        })
    }
}

impl HoldControl for StateHold {
    async fn hold(&mut self, at: Lsn) -> Result<()> {
        let (client, id) = (self.client.clone(), self.migration_id);
        if !state::request_hold(&*client, id, at, LEASE_S, &self.owner).await? {
            let m = state::get(&*client, id).await?;
            return Err(Error::refused(format!(
                "another verify holds migration {id} ({})",
                m.hold_owner.as_deref().unwrap_or("unknown")
            ))
            .with_hint("wait for it to finish, then verify again"));
        }
        if self.renewer.is_none() {
            let (client, lost) = (client.clone(), self.lost.clone());
            self.renewer = Some(tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs_f64(LEASE_S / 4.0));
                every.tick().await;
                loop {
                    every.tick().await;
                    let at = match state::get(&*client, id).await {
                        Ok(m) => m.hold_at,
                        Err(_) => continue,
                    };
                    match at {
                        Some(at)
                            if matches!(
                                state::renew_hold(&*client, id, at, LEASE_S).await,
                                Ok(true)
                            ) => {}
                        Some(_) | None => {
                            lost.store(true, Ordering::Relaxed);
                            return;
                        }
                    }
                }
            }));
        }
        tracing::info!(hold_at = %at, "verify: waiting for the run to apply everything before this position and hold");
        let reached = wait_until(HOLD_DEADLINE, Duration::from_millis(100), || {
            let client = client.clone();
            async move {
                let m = state::get(&*client, id).await?;
                if m.phase != Phase::Streaming {
                    return Err(Error::failed(format!(
                        "migration {id} left streaming (now {}) during verify",
                        m.phase.as_str()
                    )));
                }
                if m.runner.is_none() {
                    return Err(Error::failed(format!(
                        "the `pgrepart run` of migration {id} went away during verify"
                    ))
                    .with_hint("run it again, then verify"));
                }
                Ok(m.held_at == Some(Lsn(at.0.max(1))))
            }
        })
        .await?;
        if !reached {
            return Err(Error::transient(format!(
                "the running `pgrepart run` did not hold at {at} within {} s",
                HOLD_DEADLINE.as_secs()
            ))
            .with_hint(
                "check `pgrepart status` (a paused or lagging run holds late); then verify again",
            ));
        }
        Ok(())
    }

    async fn check_still_held(&mut self, at: Lsn) -> Result<()> {
        let m = state::get(&*self.client, self.migration_id).await?;
        if self.lost.load(Ordering::Relaxed)
            || m.held_at != Some(Lsn(at.0.max(1)))
            || m.runner != self.runner
        {
            return Err(Error::transient(
                "the run stopped holding during verify (lease lost, or the run restarted): the comparison does not count",
            )
            .with_hint("verify again"));
        }
        Ok(())
    }

    async fn release(&mut self) -> Result<()> {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
        state::clear_hold(&*self.client, self.migration_id, Some(&self.owner)).await?;
        Ok(())
    }
}
