//! The stream reader's channel to the applier, bounded by the bytes of the events in it rather
//! than by their count.
//!
//! ```text
//! reader: acquire cost ──► send (event, cost) ──► applier: recv ──► release cost
//!         (waits while the budget is spent: the socket is not read, the slot holds the WAL)
//! ```
//!
//! A count bound had to be small enough for the widest rows, which capped a batch of narrow
//! single-row transactions (three events each) at about a third of the count; a byte budget lets
//! the applier take as many small transactions per target transaction as its batch limit allows,
//! with the same bound on memory.

use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};

use super::Event;

/// Bytes charged for an event on top of its pgoutput message: the decoded form's own fields.
pub const EVENT_OVERHEAD: usize = 128;

/// The default budget: at most this many bytes of events wait for the applier.
pub const DEFAULT_BUDGET: usize = 16 << 20;

/// Sending half, held by the stream reader.
pub struct EventSender {
    tx: mpsc::UnboundedSender<(Event, u32)>,
    budget: Arc<Semaphore>,
    max: u32,
}

/// Receiving half, held by the applier.
pub struct EventReceiver {
    rx: mpsc::UnboundedReceiver<(Event, u32)>,
    budget: Arc<Semaphore>,
}

/// A channel holding at most `budget_bytes` of events (an event larger than the whole budget
/// still passes, alone).
pub fn event_channel(budget_bytes: usize) -> (EventSender, EventReceiver) {
    let max = budget_bytes.clamp(1, u32::MAX as usize) as u32;
    let budget = Arc::new(Semaphore::new(max as usize));
    let (tx, rx) = mpsc::unbounded_channel();
    (
        EventSender {
            tx,
            budget: budget.clone(),
            max,
        },
        EventReceiver { rx, budget },
    )
}

/// What an event of `message_len` bytes (its pgoutput message; 0 for a keepalive) costs.
pub fn cost(message_len: usize) -> usize {
    message_len.saturating_add(EVENT_OVERHEAD)
}

/// The channel's receiver is gone.
#[derive(Debug)]
pub struct Closed;

/// Room for one event in the channel's budget; sending consumes it, dropping it gives it back.
pub struct Reservation<'a> {
    permit: tokio::sync::SemaphorePermit<'a>,
    tx: &'a mpsc::UnboundedSender<(Event, u32)>,
    cost: u32,
}

impl Reservation<'_> {
    pub fn send(self, event: Event) -> Result<(), Closed> {
        self.tx.send((event, self.cost)).map_err(|_| Closed)?;
        self.permit.forget();
        Ok(())
    }
}

impl EventSender {
    /// Waits until `cost` bytes fit in the budget. Cancel-safe: a reservation not yet returned
    /// holds nothing, so the caller keeps its event until it has room for it.
    pub async fn reserve(&self, cost: usize) -> Result<Reservation<'_>, Closed> {
        let cost = cost.clamp(1, self.max as usize) as u32;
        let permit = self.budget.acquire_many(cost).await.map_err(|_| Closed)?;
        Ok(Reservation {
            permit,
            tx: &self.tx,
            cost,
        })
    }

    /// Reserves, then sends.
    pub async fn send(&self, event: Event, cost: usize) -> Result<(), Closed> {
        self.reserve(cost).await?.send(event)
    }

    /// Bytes of events sent and not yet received.
    pub fn queued_bytes(&self) -> usize {
        self.max as usize - self.budget.available_permits()
    }
}

impl EventReceiver {
    /// The next event; `None` once the sender is gone and everything sent was received.
    /// Cancel-safe (as `mpsc::UnboundedReceiver::recv`).
    pub async fn recv(&mut self) -> Option<Event> {
        let (event, cost) = self.rx.recv().await?;
        self.budget.add_permits(cost as usize);
        Some(event)
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        let (event, cost) = self.rx.try_recv().ok()?;
        self.budget.add_permits(cost as usize);
        Some(event)
    }
}

impl Drop for EventReceiver {
    fn drop(&mut self) {
        // Wakes a sender waiting for budget: it sees the channel closed.
        self.budget.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lsn::Lsn;
    use std::time::Duration;

    fn idle(n: u64) -> Event {
        Event::Idle(Lsn(n))
    }

    fn lsn_of(e: Event) -> u64 {
        match e {
            Event::Idle(l) => l.0,
            Event::Message(_) => panic!("not a keepalive"),
        }
    }

    #[tokio::test]
    async fn events_arrive_in_order_and_give_their_bytes_back() {
        let (tx, mut rx) = event_channel(1000);
        tx.send(idle(1), 300).await.unwrap();
        tx.send(idle(2), 300).await.unwrap();
        assert_eq!(tx.queued_bytes(), 600);
        assert_eq!(lsn_of(rx.recv().await.unwrap()), 1);
        assert_eq!(tx.queued_bytes(), 300);
        assert_eq!(lsn_of(rx.try_recv().unwrap()), 2);
        assert_eq!(tx.queued_bytes(), 0);
        assert!(rx.try_recv().is_none());
    }

    #[tokio::test]
    async fn a_full_budget_holds_the_sender_until_the_receiver_takes() {
        let (tx, mut rx) = event_channel(1000);
        tx.send(idle(1), 700).await.unwrap();
        // 700 + 400 > 1000: the send waits.
        let blocked = tokio::time::timeout(Duration::from_millis(50), tx.send(idle(2), 400)).await;
        assert!(blocked.is_err(), "a send over the budget must wait");
        // The abandoned send charged nothing and sent nothing.
        assert_eq!(tx.queued_bytes(), 700);
        // A reservation dropped unsent gives its bytes back.
        drop(tx.reserve(300).await.unwrap());
        assert_eq!(tx.queued_bytes(), 700);
        let (tx, rx_task) = (Arc::new(tx), async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let first = lsn_of(rx.recv().await.unwrap());
            (first, rx)
        });
        let sender = {
            let tx = tx.clone();
            tokio::spawn(async move { tx.send(idle(2), 400).await })
        };
        let (first, mut rx) = rx_task.await;
        assert_eq!(first, 1);
        sender.await.unwrap().unwrap();
        assert_eq!(lsn_of(rx.recv().await.unwrap()), 2);
    }

    #[tokio::test]
    async fn an_event_larger_than_the_budget_still_passes_alone() {
        let (tx, mut rx) = event_channel(100);
        tx.send(idle(1), 5_000).await.unwrap();
        assert_eq!(tx.queued_bytes(), 100);
        assert_eq!(lsn_of(rx.recv().await.unwrap()), 1);
        assert_eq!(tx.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn a_dropped_receiver_releases_a_waiting_sender() {
        let (tx, rx) = event_channel(100);
        tx.send(idle(1), 100).await.unwrap();
        let tx = Arc::new(tx);
        let waiting = {
            let tx = tx.clone();
            tokio::spawn(async move { tx.send(idle(2), 50).await })
        };
        tokio::task::yield_now().await;
        drop(rx);
        assert!(waiting.await.unwrap().is_err());
        assert!(tx.send(idle(3), 1).await.is_err());
    }

    #[test]
    fn cost_counts_the_message_and_the_overhead() {
        assert_eq!(cost(0), EVENT_OVERHEAD);
        assert_eq!(cost(100), 100 + EVENT_OVERHEAD);
        assert_eq!(cost(usize::MAX), usize::MAX);
    }
}
