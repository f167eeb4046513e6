//! The tasks of one attempt, owned: the stream reader, the applier, the copy (and its workers),
//! the load governor and the pause merger. Dropping the [`Pipeline`] aborts every one of them,
//! whichever path leaves the attempt (`?`, an error, a signal); [`Pipeline::shutdown`] is the
//! orderly way: it asks each to stop between batches, then joins them all.
//!
//! ```text
//!             ┌──────── stop (watch) ────────┬──────────────┬────────────┐
//!             ▼                              ▼              ▼            ▼
//! slot ─► reader ─(bounded events)─► applier ◄─(ranges done)─ copy ─► workers (JoinSet)
//!            ▲ pace / park                  ▲ pause, hold            ▲ rate limit
//!            └──────────── governor ────────┴────────────────────────┘
//! ```

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::task::AbortOnDropHandle;

use crate::error::{Error, Result};

/// A stage's task, aborted when its handle is dropped.
pub type Task = AbortOnDropHandle<Result<()>>;

/// How long an orderly stop may take (the applier finishing its batch in flight) before the
/// stages still running are aborted.
const STOP_WITHIN: Duration = Duration::from_secs(30);

pub struct Pipeline {
    stop: watch::Sender<bool>,
    /// Each `None` once its task has been joined.
    pub reader: Option<Task>,
    pub applier: Option<Task>,
    pub copy: Option<Task>,
    /// Tasks that end with the attempt and report nothing (governor, pause merger).
    background: JoinSet<()>,
}

impl Pipeline {
    pub fn new() -> (Pipeline, watch::Receiver<bool>) {
        let (stop, stop_rx) = watch::channel(false);
        (
            Pipeline {
                stop,
                reader: None,
                applier: None,
                copy: None,
                background: JoinSet::new(),
            },
            stop_rx,
        )
    }

    pub fn spawn_stage(
        future: impl std::future::Future<Output = Result<()>> + Send + 'static,
    ) -> Task {
        AbortOnDropHandle::new(tokio::spawn(future))
    }

    pub fn spawn_background(
        &mut self,
        future: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        self.background.spawn(future);
    }

    /// Asks every stage to stop between batches, aborts the copy (its ranges are redone from
    /// the state), and joins them all; stages still running after [`STOP_WITHIN`] are aborted.
    /// Safe to call more than once.
    pub async fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        if let Some(copy) = self.copy.take() {
            copy.abort();
            let _ = copy.await;
        }
        let stages: Vec<Task> = [self.applier.take(), self.reader.take()]
            .into_iter()
            .flatten()
            .collect();
        for stage in stages {
            let abort = stage.abort_handle();
            if tokio::time::timeout(STOP_WITHIN, stage).await.is_err() {
                tracing::warn!("a stage did not stop in time; aborted");
                abort.abort();
            }
        }
        self.background.shutdown().await;
    }
}

/// Awaits a stage whose handle is present; pair with an `if handle.is_some()` select guard.
pub async fn join_some(handle: &mut Option<Task>) -> Result<()> {
    match handle.as_mut() {
        Some(h) => joined(h.await, "stage"),
        None => std::future::pending().await,
    }
}

pub fn joined(
    r: std::result::Result<Result<()>, tokio::task::JoinError>,
    what: &str,
) -> Result<()> {
    r.unwrap_or_else(|e| Err(Error::failed(format!("the {what} task crashed: {e}"))))
}

/// Keeps `out` true while either input is; ends once an input's sender is gone.
pub async fn merge_pauses(
    mut user: watch::Receiver<bool>,
    mut held: watch::Receiver<bool>,
    out: watch::Sender<bool>,
) {
    loop {
        let either = *user.borrow_and_update() || *held.borrow_and_update();
        out.send_if_modified(|p| std::mem::replace(p, either) != either);
        tokio::select! {
            r = user.changed() => if r.is_err() { return },
            r = held.changed() => if r.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A stage that never looks at the stop flag, and marks when it is dropped.
    struct Dropped(Arc<AtomicBool>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn dropping_the_pipeline_ends_every_task_it_owns() {
        let (copy_gone, bg_gone) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        {
            let (mut p, _stop) = Pipeline::new();
            let d = Dropped(copy_gone.clone());
            p.copy = Some(Pipeline::spawn_stage(async move {
                let _d = d;
                std::future::pending::<()>().await;
                Ok(())
            }));
            let d = Dropped(bg_gone.clone());
            p.spawn_background(async move {
                let _d = d;
                std::future::pending::<()>().await;
            });
            tokio::task::yield_now().await;
        }
        // Abort is asynchronous: poll with a deadline.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !(copy_gone.load(Ordering::SeqCst) && bg_gone.load(Ordering::SeqCst)) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "a task outlived its pipeline"
            );
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn shutdown_stops_the_stages_that_follow_the_flag_and_aborts_the_copy() {
        let (mut p, stop) = Pipeline::new();
        let mut s = stop.clone();
        p.applier = Some(Pipeline::spawn_stage(async move {
            let _ = s.wait_for(|v| *v).await;
            Ok(())
        }));
        let gone = Arc::new(AtomicBool::new(false));
        let d = Dropped(gone.clone());
        p.copy = Some(Pipeline::spawn_stage(async move {
            let _d = d;
            std::future::pending::<()>().await;
            Ok(())
        }));
        p.shutdown().await;
        assert!(gone.load(Ordering::SeqCst));
        assert!(p.applier.is_none() && p.copy.is_none());
        p.shutdown().await;
    }
}
