//! When a failed attempt is retried: the reconnect budget (pure).
//!
//! A transient failure (see `crate::error`) ends the attempt; the next one starts after a backoff
//! that doubles from 1 s up to 30 s. The budget counts failures **in a row**: an attempt that ran
//! for a healthy stretch before failing starts the count again, so a migration that runs for days
//! survives any number of scattered blips, while one that cannot get going gives up after
//! `max_in_row` and says so.

use std::time::Duration;

/// Failures in a row after which the run gives up.
pub const MAX_FAILURES_IN_ROW: u32 = 20;
/// An attempt that lasted this long was healthy: its failure is the first of a new row.
pub const HEALTHY_STRETCH: Duration = Duration::from_secs(120);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct RetryBudget {
    max_in_row: u32,
    healthy_after: Duration,
    in_row: u32,
    backoff: Duration,
}

/// What to do after a transient failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Try again after this wait; `failure` is the count in the current row (1 for the first).
    After { wait: Duration, failure: u32 },
    /// The row is too long: stop.
    GiveUp { failures: u32 },
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget::new(MAX_FAILURES_IN_ROW, HEALTHY_STRETCH)
    }
}

impl RetryBudget {
    pub fn new(max_in_row: u32, healthy_after: Duration) -> Self {
        RetryBudget {
            max_in_row,
            healthy_after,
            in_row: 0,
            backoff: FIRST_BACKOFF,
        }
    }

    /// A transient failure of an attempt that ran for `ran`.
    pub fn after_failure(&mut self, ran: Duration) -> Retry {
        if ran >= self.healthy_after {
            self.in_row = 0;
            self.backoff = FIRST_BACKOFF;
        }
        self.in_row += 1;
        if self.in_row > self.max_in_row {
            return Retry::GiveUp {
                failures: self.in_row,
            };
        }
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        Retry::After {
            wait,
            failure: self.in_row,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUICK: Duration = Duration::from_secs(1);

    #[test]
    fn failures_in_a_row_back_off_and_then_give_up() {
        let mut b = RetryBudget::new(3, HEALTHY_STRETCH);
        let waits: Vec<Retry> = (0..4).map(|_| b.after_failure(QUICK)).collect();
        assert_eq!(
            waits,
            vec![
                Retry::After {
                    wait: Duration::from_secs(1),
                    failure: 1
                },
                Retry::After {
                    wait: Duration::from_secs(2),
                    failure: 2
                },
                Retry::After {
                    wait: Duration::from_secs(4),
                    failure: 3
                },
                Retry::GiveUp { failures: 4 },
            ]
        );
    }

    #[test]
    fn a_healthy_stretch_starts_the_count_and_the_backoff_again() {
        let mut b = RetryBudget::new(3, HEALTHY_STRETCH);
        for _ in 0..3 {
            assert!(matches!(b.after_failure(QUICK), Retry::After { .. }));
        }
        // Scattered blips over days: each after a long healthy run.
        for _ in 0..100 {
            assert_eq!(
                b.after_failure(HEALTHY_STRETCH),
                Retry::After {
                    wait: Duration::from_secs(1),
                    failure: 1
                }
            );
        }
    }

    #[test]
    fn the_backoff_stops_growing_at_thirty_seconds() {
        let mut b = RetryBudget::new(100, HEALTHY_STRETCH);
        let last = (0..10).map(|_| b.after_failure(QUICK)).last().unwrap();
        assert_eq!(
            last,
            Retry::After {
                wait: MAX_BACKOFF,
                failure: 10
            }
        );
    }
}
