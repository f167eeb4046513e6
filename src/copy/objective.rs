//! The load governor's objective (pure): the copy's pace that costs the application least over
//! the whole migration, within a ceiling on any moment.
//!
//! The harm a migration does is the application's latency excess integrated over the migration's
//! duration, not the excess at one instant: every second the migration lasts, the slot's walsender
//! decodes the database's WAL and the application pays for it, however slowly the copy goes. A
//! copy held to a crawl so that each second costs a little can cost more in total than a short
//! burst. So the governor predicts, for a few candidate paces, the total excess left:
//!
//! ```text
//! total(pace) = excess(pace) x rows left / pace
//! excess(pace): learned from the seconds seen at about that pace (bands a factor of 2 apart,
//!               forgotten after 20 s); between two known paces, a straight line; below the
//!               slowest, the intercept: the stream's floor (the excess with the copy held), or
//!               the least excess seen when that is higher; above the fastest, the line from
//!               the intercept through it
//! candidates:   half the pace now, the pace now, twice it (or none above the unlimited cap)
//! ```
//!
//! and keeps the one with the least total whose predicted excess stays within `--max-impact`
//! (the ceiling: the application's latency at most `1 + max impact` times its reference). A
//! second over the ceiling cuts the pace in proportion at once, and so does a physical standby
//! whose replay lags more than `--max-replica-lag`. Untried faster paces are predicted on the
//! straight line, which makes them look cheaper in total: the governor tries them one step at a
//! time, and learns when the excess grows faster than the pace (a saturated source).

use std::fmt;

/// Write transactions per second, besides pgrepart's own, from which the source counts as busy.
pub const MIN_WORKLOAD_XACTS: f64 = 30.0;
/// Added to the allowed latency: a reference of a few hundredths of a millisecond would
/// otherwise make scheduling noise look like an impact.
pub const SLACK_MS: f64 = 0.1;
/// The slack of the application's statements' mean (ms): a statement takes a tenth of a
/// millisecond where the probe's commit takes one, and the probe's slack would hide a doubling.
pub const STATEMENTS_SLACK_MS: f64 = 0.01;
/// The lowest pace the governor sets for the copy (rows/s): the copy always moves.
pub const MIN_RATE: u64 = 500;
/// Above this a limit is no limit (rows/s).
pub const UNLIMITED_ABOVE: u64 = 2_000_000;
/// Where the copy starts on a busy source (rows/s), before anything is learned.
pub const START_RATE: u64 = 20_000;
/// A faster candidate must promise this much less total excess than the pace now to be taken
/// (a slower one this much less too): equal predictions do not make the pace swing.
pub const HYSTERESIS: f64 = 0.05;
/// A learned excess older than this many decisions (seconds) is forgotten: the workload changes.
pub const FORGET_AFTER: u64 = 20;
/// Decisions (seconds) after a cut for a ceiling before the next: the readings are smoothed, and
/// the cut shows in them a few seconds later; cutting again meanwhile would overshoot to the
/// floor.
pub const CUT_EVERY: u64 = 2;
/// Above the excess the application pays at the slowest pace seen (the walsender's share, other
/// work on the machine), the share of `--max-impact` within which the copy may still speed up:
/// past it the pace holds. An open loop's queue shows first as a small rise (its clients stay
/// busy a little longer), and a pace that grows until the ceiling overshoots it before the
/// readings show it.
pub const HEADROOM: f64 = 0.25;
/// After the first cut for a ceiling, the copy speeds up by this factor at most per decision
/// (before it, by 2: a slow start that finds the source's room in a few seconds, then probes
/// around it gently).
pub const GROW_AFTER_CUT: f64 = 1.25;
/// In the slow start (before the first cut for a ceiling), decisions (seconds) a doubled pace is
/// held before the next doubling: the readings are smoothed, and a pace doubled every second
/// went from 20,000 to 320,000 rows/s before the first second at 40,000 showed (the TPC-B-like
/// open loop's transactions then took 222 ms in one second against 2.6 alone).
pub const DOUBLE_EVERY: u64 = 2;
/// The weight of a new second in a band's learned excess, and in the smoothed readings.
const LEARN_WEIGHT: f64 = 0.5;

/// The weight of a new second in the smoothed readings: the ceiling holds over a window of
/// several seconds (a worst window of 10 s is what the application notices), not over one
/// second's few probes, whose median wandered from 0.3 to 4 ms with nothing changed on a busy
/// bench machine.
pub const SMOOTH_WEIGHT: f64 = 0.2;

/// `x` folded into a running mean (pure): the readings a decision uses are smoothed over several
/// seconds, so that one second's noise (a probe's commit waiting for a core) cuts nothing.
pub fn smoothed(before: Option<f64>, x: f64) -> f64 {
    smoothed_by(before, x, SMOOTH_WEIGHT)
}

/// The weight of a new second in the readings that are means over many samples already (the
/// application's statements, its sessions): they react within two seconds.
pub const FAST_WEIGHT: f64 = 0.5;

/// `x` folded into a running mean with weight `weight` (pure).
pub fn smoothed_by(before: Option<f64>, x: f64, weight: f64) -> f64 {
    before.map_or(x, |b| b + weight * (x - b))
}

/// The application's transactions' time (ms) by Little's law (pure): its sessions seen busy (in
/// a transaction or a statement, on average) over its transactions per second; `None` below
/// [`MIN_WORKLOAD_XACTS`].
pub fn sessions_ms(busy_sessions: f64, xacts_per_s: f64) -> Option<f64> {
    (xacts_per_s >= MIN_WORKLOAD_XACTS).then(|| busy_sessions.max(0.0) / xacts_per_s * 1000.0)
}

/// What the application feels now, against what it felt without the migration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// The workload's latency now (ms): the mean of its own statements (`pg_stat_statements`), or
    /// the probe's median commit.
    pub latency_ms: f64,
    /// The same without the migration.
    pub reference_ms: f64,
    /// Where the latency comes from (for the reason shown).
    pub latency_of: LatencyOf,
    /// The application's write transactions per second now, and at the reference.
    pub xacts: f64,
    pub reference_xacts: f64,
    /// The worst `replay_lag` of the physical standbys (seconds); `None`: none reports one.
    pub replica_lag_s: Option<f64>,
    /// The queue the application's clients hold on their side ([`Backlog`], ms of waiting for
    /// each transaction); 0 for an application whose sessions did not wait for work.
    pub backlog_ms: f64,
    /// What one of its transactions took without the migration (ms): the queue's reference.
    pub backlog_reference_ms: f64,
    /// For an application that waits for its work: the share of its sessions busy in the last
    /// second (not smoothed) and the share allowed ([`pool_ceiling`]).
    pub pool: Option<Pool>,
}

/// The application's sessions in use, for one that waits for its work.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pool {
    /// The share of its sessions busy in the last second.
    pub busy: f64,
    /// The share allowed.
    pub ceiling: f64,
}

/// The share of busy sessions from which an application that waits for its work is over a
/// ceiling, whatever the reference: a fixed number of sessions serving transactions sent at the
/// clients' own pace queues them once most sessions are busy (the wait grows without bound as
/// the share nears 1). In the TPC-B-like open loop (4 clients, 1.5 busy alone) the transactions
/// queued for 100 to 230 ms while the smoothed transaction time read 1.6 to 2.2 times the
/// reference.
pub const POOL_BUSY_MAX: f64 = 0.75;

/// The share of its sessions an application that waits for its work may keep busy (pure):
/// [`POOL_BUSY_MAX`], or, when it kept more busy alone (`reference`), that share and a tenth of
/// the rest. Below it the transaction time's ceiling (`--max-impact`, smoothed) governs; this one
/// catches, within the second, the saturation that the smoothed readings show too late. (As the
/// transaction time's ceiling at the same rate, `reference x (1 + max impact)`, read every second
/// unsmoothed, it held the TPC-B-like open loop's copy near 9,000 rows/s: 1,620,000 of 2,000,000
/// rows in 180 s, at 2.2 times the latency alone.)
pub fn pool_ceiling(reference: f64) -> f64 {
    if reference >= POOL_BUSY_MAX {
        (reference + (1.0 - reference) * 0.1).min(1.0)
    } else {
        POOL_BUSY_MAX
    }
}

/// Which latency the governor reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatencyOf {
    /// The application's own statements (`pg_stat_statements`, pgrepart's left out).
    Statements,
    /// The probe's small write transaction (no `pg_stat_statements`, or too few calls).
    Probe,
    /// The application's transactions' time from its sessions, by Little's law: its sessions
    /// seen in a transaction or a statement (sampled 20 times a second), over its transactions
    /// per second. It holds the commits' WAL flushes, the round trips inside a transaction and,
    /// where clients queue their work (an open loop), the queue: every client then stays busy.
    Sessions,
}

/// The ceilings the user set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ceilings {
    /// `--max-impact` as a fraction (0.5 for 50%).
    pub max_impact: f64,
    /// `--max-replica-lag` in seconds.
    pub max_replica_lag_s: Option<f64>,
    /// `--max-copy-rate`: never exceeded.
    pub copy_cap: Option<u64>,
}

impl LatencyOf {
    /// What is added to the allowed latency ([`SLACK_MS`], [`STATEMENTS_SLACK_MS`]).
    pub fn slack_ms(self) -> f64 {
        match self {
            LatencyOf::Probe | LatencyOf::Sessions => SLACK_MS,
            LatencyOf::Statements => STATEMENTS_SLACK_MS,
        }
    }
}

impl Reading {
    /// The source carries a write workload of its own (now or at the reference).
    pub fn busy(&self) -> bool {
        self.xacts >= MIN_WORKLOAD_XACTS || self.reference_xacts >= MIN_WORKLOAD_XACTS
    }

    /// The latency's rise over its reference (less its slack), as a fraction of it.
    pub fn latency_excess(&self) -> f64 {
        (self.latency_ms - self.reference_ms - self.latency_of.slack_ms()).max(0.0)
            / self.reference_ms.max(0.001)
    }

    /// The throughput's fall, as the latency rise it means to clients that send their next
    /// transaction when the last one is done (`reference / now - 1`); 0 without a workload at
    /// the reference.
    pub fn throughput_excess(&self) -> f64 {
        if self.reference_xacts < MIN_WORKLOAD_XACTS {
            return 0.0;
        }
        (self.reference_xacts / self.xacts.max(1.0) - 1.0).max(0.0)
    }

    /// The queue at the application's clients, as a fraction of its transactions' time.
    pub fn backlog_excess(&self) -> f64 {
        if self.backlog_reference_ms <= 0.0 {
            return 0.0;
        }
        self.backlog_ms.max(0.0) / self.backlog_reference_ms
    }

    /// What the application pays now, as a fraction of its latency without the migration: the
    /// worst of the three.
    pub fn excess(&self) -> f64 {
        self.latency_excess()
            .max(self.throughput_excess())
            .max(self.backlog_excess())
    }

    /// The highest latency the ceiling allows (ms).
    pub fn allowed_ms(&self, max_impact: f64) -> f64 {
        self.reference_ms * (1.0 + max_impact) + self.latency_of.slack_ms()
    }

    /// The lowest workload rate the ceiling allows.
    pub fn xacts_floor(&self, max_impact: f64) -> f64 {
        self.reference_xacts / (1.0 + max_impact)
    }
}

/// An application whose sessions sat idle at least this share of the time without the migration
/// waits for its work: it sends transactions at its own pace (an open loop, a pool of
/// connections serving requests), and a rate below its reference is a queue on its side.
/// (pgbench's TPC-B-like script at half the machine's rate kept its 4 sessions busy 0.6 to 0.7
/// of the time, its closed loop above 0.9.)
pub const WAITING_SHARE: f64 = 0.2;

/// Whether the application waits for its work (pure): its sessions, `busy` of `sessions` on
/// average without the migration, sat idle [`WAITING_SHARE`] of the time or more.
pub fn waits_for_work(busy: Option<f64>, sessions: Option<f64>) -> bool {
    match (busy, sessions) {
        (Some(b), Some(n)) if n >= 1.0 => 1.0 - b / n >= WAITING_SHARE,
        _ => false,
    }
}

/// The transactions an application that waits for its work has been sent and has not been
/// served, as its rate tells: the server cannot see that queue (it forms at the clients), and
/// it delays every transaction after it until it drains. In the TPC-B-like open loop one second
/// at 80% of the offered rate left a queue that made the next seconds' transactions take 110
/// to 190 ms against 2.6 alone, while the server's statements and transactions took a quarter
/// longer. Each window adds what the workload fell short of its reference rate and drains what
/// it made above it, less a second's noise (the count of transactions that arrive at random
/// varies by about its square root; twice that is left out).
///
/// The rate the workload is sent is not known: it is its rate without the migration, taken again
/// at each of the governor's holds, which also end the count. A hold lets the clients work
/// their queue off (the copy and the apply wait for the slot's walsender to settle, then for a
/// second's measure), and what a workload makes with the migration held is what it is sent
/// now, whether it changed by itself or never queued: an application whose clients pause
/// between transactions (a closed loop with think time) also has idle sessions and a rate that
/// falls as the migration slows its transactions, and a count that ran on would hold its copy
/// at the floor for good.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Backlog {
    txns: f64,
    /// The rate the workload is sent, as far as the governor can tell (transactions/s).
    reference: f64,
}

impl Backlog {
    pub fn new(reference: f64) -> Self {
        Backlog {
            txns: 0.0,
            reference,
        }
    }

    /// What a second's count varies by, twice over.
    fn noise(&self) -> f64 {
        2.0 * self.reference.max(0.0).sqrt()
    }

    /// One more window of `secs`: the workload made `rate` transactions a second.
    pub fn add(&mut self, rate: f64, secs: f64) {
        if self.reference < MIN_WORKLOAD_XACTS {
            self.txns = 0.0;
            return;
        }
        let short = self.reference - rate - self.noise();
        self.txns = (self.txns + short * secs.max(0.0)).max(0.0);
    }

    /// A hold of the migration, in which the workload made `rate` transactions a second: the
    /// queue was worked off, and `rate` is what the workload is sent now.
    pub fn after_hold(&mut self, rate: f64) {
        *self = Backlog::new(rate);
    }

    /// The queue's wait for each transaction (ms), of what is beyond a second's noise: the
    /// rate of a window is read from transaction ids between two probes, whose timing wanders
    /// too (in one TPC-B-like run, queues of 5 to 24 ms were counted while the clients waited
    /// for none).
    pub fn ms(&self) -> f64 {
        if self.reference < MIN_WORKLOAD_XACTS {
            return 0.0;
        }
        (self.txns - self.noise()).max(0.0) / self.reference * 1000.0
    }

    pub fn txns(&self) -> f64 {
        self.txns
    }
}

/// Why the pace is what it is: shown by `status`, on the progress line and in the log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reason {
    /// No write workload on the source, nor at the reference: nothing to protect.
    NoWorkload,
    /// Full speed has the least predicted total.
    LeastTotalFull,
    /// A pace has the least predicted total (rows/s).
    LeastTotal { rows_per_s: u64 },
    /// Over the latency ceiling.
    Latency {
        of: LatencyOf,
        ms: f64,
        allowed_ms: f64,
    },
    /// The workload's rate under its floor.
    Throughput { xacts: f64, floor: f64 },
    /// The application's clients hold a queue ([`Backlog`]) of this many ms.
    Backlog { ms: f64 },
    /// Too many of the application's sessions busy ([`Pool`]): its clients are about to queue.
    Pool { busy: f64, ceiling: f64 },
    /// A physical standby's replay lags more than `--max-replica-lag`.
    ReplicaLag { seconds: f64, max: f64 },
}

impl Reason {
    /// The pace is held below full speed by a ceiling, not chosen for the least total.
    pub fn over_a_ceiling(&self) -> bool {
        matches!(
            self,
            Reason::Latency { .. }
                | Reason::Throughput { .. }
                | Reason::Backlog { .. }
                | Reason::Pool { .. }
                | Reason::ReplicaLag { .. }
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NoWorkload => write!(f, "full speed: no workload"),
            Reason::LeastTotalFull => write!(f, "full speed: least total impact"),
            Reason::LeastTotal { rows_per_s } => {
                write!(f, "paced: least total impact at {rows_per_s} rows/s")
            }
            Reason::Latency { of, ms, allowed_ms } => write!(
                f,
                "paced: {} {} ms over {} ms",
                match of {
                    LatencyOf::Statements => "latency",
                    LatencyOf::Probe => "commit latency",
                    LatencyOf::Sessions => "transaction time",
                },
                crate::units::millis(*ms),
                crate::units::millis(*allowed_ms),
            ),
            Reason::Throughput { xacts, floor } => {
                write!(f, "paced: workload {xacts:.0} tps under {floor:.0} tps")
            }
            Reason::Backlog { ms } => write!(
                f,
                "paced: the application's clients queue {} ms",
                crate::units::millis(*ms)
            ),
            Reason::ReplicaLag { seconds, max } => {
                write!(f, "paced: replica lag {seconds:.0} s over {max:.0} s")
            }
            Reason::Pool { busy, ceiling } => write!(
                f,
                "paced: {:.0}% of the application's sessions busy, over {:.0}%",
                busy * 100.0,
                ceiling * 100.0
            ),
        }
    }
}

/// One decision: the copy's limit (`None`: none) and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    pub copy: Option<u64>,
    pub reason: Reason,
    /// The predicted excess left, as fraction x seconds (multiply by the reference latency for
    /// ms x s); `None` when the plan follows a ceiling or there is no workload.
    pub predicted_total: Option<f64>,
}

/// The ceiling the reading is over, if any (pure): a physical standby's replay lag over
/// `--max-replica-lag` first, then the application's excess over `--max-impact`, as latency or as
/// throughput, whichever is worse.
pub fn ceiling_reason(reading: &Reading, ceilings: &Ceilings) -> Option<Reason> {
    if let (Some(lag), Some(max)) = (reading.replica_lag_s, ceilings.max_replica_lag_s)
        && lag > max
    {
        return Some(Reason::ReplicaLag { seconds: lag, max });
    }
    if let Some(p) = reading.pool
        && p.busy > p.ceiling
    {
        return Some(Reason::Pool {
            busy: p.busy,
            ceiling: p.ceiling,
        });
    }
    let m = ceilings.max_impact;
    if reading.excess() <= m {
        return None;
    }
    if reading.backlog_excess() >= reading.latency_excess().max(reading.throughput_excess()) {
        return Some(Reason::Backlog {
            ms: reading.backlog_ms,
        });
    }
    Some(if reading.latency_excess() >= reading.throughput_excess() {
        Reason::Latency {
            of: reading.latency_of,
            ms: reading.latency_ms,
            allowed_ms: reading.allowed_ms(m),
        }
    } else {
        Reason::Throughput {
            xacts: reading.xacts,
            floor: reading.xacts_floor(m),
        }
    })
}

/// One pace band's learned excess.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Band {
    /// The mean rows/s of the seconds learned in it.
    rows_per_s: f64,
    excess: f64,
    /// The decision that last taught it.
    at: u64,
}

/// What the governor has seen: the excess at each pace it ran, and with the copy held.
#[derive(Debug, Clone, Default)]
pub struct Model {
    /// By `floor(log2(rows/s))`.
    bands: std::collections::BTreeMap<i32, Band>,
    /// The excess with the copy and the apply held: the slot's walsender alone.
    floor: f64,
    /// Decisions so far (the model's clock).
    now: u64,
    /// The decision of the last cut for a ceiling.
    last_cut: Option<u64>,
    /// Cuts for a ceiling so far.
    cuts: u64,
    /// The decision of the last speed-up.
    last_raise: Option<u64>,
}

impl Model {
    /// One more second: the copy moved `rows_per_s` and the application paid `excess`.
    pub fn learn(&mut self, rows_per_s: f64, excess: f64) {
        self.now += 1;
        if rows_per_s < 1.0 {
            return;
        }
        let key = rows_per_s.log2().floor() as i32;
        let now = self.now;
        let band = self.bands.entry(key).or_insert(Band {
            rows_per_s,
            excess,
            at: now,
        });
        if now - band.at > FORGET_AFTER {
            *band = Band {
                rows_per_s,
                excess,
                at: now,
            };
        } else {
            band.rows_per_s += LEARN_WEIGHT * (rows_per_s - band.rows_per_s);
            band.excess += LEARN_WEIGHT * (excess - band.excess);
            band.at = now;
        }
    }

    /// The excess measured with the migration held (its walsender still running).
    pub fn learn_floor(&mut self, excess: f64) {
        self.floor = excess.max(0.0);
    }

    pub fn floor(&self) -> f64 {
        self.floor
    }

    /// The copy's limit was cut for a ceiling now.
    pub fn note_cut(&mut self) {
        self.last_cut = Some(self.now);
        self.cuts += 1;
    }

    /// The copy's limit was raised now.
    pub fn note_raise(&mut self) {
        self.last_raise = Some(self.now);
    }

    /// Whether a faster pace may be tried now: in the slow start, not until the last doubling
    /// has been held [`DOUBLE_EVERY`] decisions; after the first cut (steps of a quarter), at
    /// every decision.
    pub fn may_speed_up(&self) -> bool {
        self.cuts > 0 || self.last_raise.is_none_or(|r| self.now - r >= DOUBLE_EVERY)
    }

    /// How much faster the next candidate pace is: [`GROW_AFTER_CUT`] once a ceiling was met,
    /// else twice the pace now.
    pub fn growth(&self) -> f64 {
        if self.cuts > 0 { GROW_AFTER_CUT } else { 2.0 }
    }

    /// A cut for a ceiling less than [`CUT_EVERY`] decisions ago.
    pub fn cut_recently(&self) -> bool {
        self.last_cut.is_some_and(|c| self.now - c < CUT_EVERY)
    }

    /// The paces seen lately and their excess, slowest first.
    fn known(&self) -> Vec<(f64, f64)> {
        let mut known: Vec<(f64, f64)> = self
            .bands
            .values()
            .filter(|b| self.now - b.at <= FORGET_AFTER)
            .map(|b| (b.rows_per_s, b.excess))
            .collect();
        known.sort_by(|a, b| a.0.total_cmp(&b.0));
        known
    }

    /// What the application pays at no pace at all, as far as the governor can tell (see
    /// `intercept`).
    pub fn background(&self) -> f64 {
        self.intercept(&self.known())
    }

    /// The excess predicted at `rows_per_s`.
    pub fn predict(&self, rows_per_s: f64) -> f64 {
        let known = self.known();
        let intercept = self.intercept(&known);
        let mut below = (0.0, intercept);
        for &(r, e) in &known {
            if rows_per_s <= r {
                let (r0, e0) = below;
                let t = if r > r0 {
                    (rows_per_s - r0) / (r - r0)
                } else {
                    1.0
                };
                return (e0 + t * (e - e0)).max(0.0);
            }
            below = (r, e);
        }
        // Above every known pace: the line from the intercept through the fastest one.
        match known.last() {
            Some(&(r, e)) if r > 0.0 => (intercept + (e - intercept) * rows_per_s / r).max(0.0),
            _ => self.floor,
        }
    }

    /// The excess at no pace at all: the floor measured with the migration held, or the least
    /// excess seen at any pace when that is higher. What the application pays at the slowest
    /// pace seen is not that pace's doing alone (the walsender still decodes what the copy wrote
    /// before, the workload's latency wanders), and a line from the lower floor through it would
    /// make every faster pace look over the ceiling: the copy would crawl for good.
    fn intercept(&self, known: &[(f64, f64)]) -> f64 {
        let least = known.iter().map(|&(_, e)| e).fold(f64::INFINITY, f64::min);
        if least.is_finite() {
            least.max(self.floor)
        } else {
            self.floor
        }
    }
}

/// The copy's limit for the next second (pure). `limit`: the limit in force; `moved_per_s`: the
/// rows/s the copy moved in the last second; `rows_left`: what is left to copy.
pub fn plan(
    model: &Model,
    reading: &Reading,
    ceilings: &Ceilings,
    limit: Option<u64>,
    moved_per_s: f64,
    rows_left: u64,
) -> Plan {
    let ceilings_in = ceilings;
    let capped = |n: u64| Some(ceilings.copy_cap.map_or(n, |c| c.min(n)));
    let ceiling_plan = |factor: f64, reason: Reason| Plan {
        copy: capped(((slow_from(limit, moved_per_s) * factor) as u64).max(MIN_RATE)),
        reason,
        predicted_total: None,
    };
    // The ceiling the copy's pace can keep: `--max-impact`, or, when the application pays more
    // than that even at the slowest pace seen lately (a walsender still decoding what the copy
    // wrote before, other work on the machine), that much and half of `--max-impact` more.
    // Cutting a pace that is not what the application pays for only makes the migration, and
    // what the application pays all along, last longer.
    let background = model.background();
    let m = ceilings
        .max_impact
        .max(background + ceilings.max_impact / 2.0);
    let ceilings = &Ceilings {
        max_impact: m,
        ..*ceilings
    };
    let over = ceiling_reason(reading, ceilings);
    // A standby's lag is a ceiling with or without a workload on the source.
    if !reading.busy() && !matches!(over, Some(Reason::ReplicaLag { .. })) {
        return Plan {
            copy: ceilings.copy_cap,
            reason: Reason::NoWorkload,
            predicted_total: None,
        };
    }
    if let Some(reason) = over {
        // In proportion to the excess: the workload waits now.
        let factor = match reason {
            Reason::ReplicaLag { seconds, max } => max / seconds,
            Reason::Pool { busy, ceiling } => ceiling / busy,
            _ => (1.0 + m) / (1.0 + reading.excess()),
        };
        if model.cut_recently() && limit.is_some() {
            // The last cut does not show in the readings yet.
            return Plan {
                copy: limit,
                reason,
                predicted_total: None,
            };
        }
        return ceiling_plan(factor.clamp(0.25, 0.7), reason);
    }
    // Within the ceiling: the candidate with the least total excess left.
    let now = limit.map_or(moved_per_s.max(MIN_RATE as f64), |l| l as f64);
    let left = rows_left.max(1) as f64;
    let total = |pace: f64| model.predict(pace) * left / pace.max(1.0);
    let full = |pace: f64| {
        (pace > UNLIMITED_ABOVE as f64 && ceilings.copy_cap.is_none())
            || ceilings.copy_cap.is_some_and(|c| pace >= c as f64)
    };
    let here = total(now);
    // (pace, total, full speed)
    let mut best = (now, here, limit.is_none());
    // Room to speed up: the application pays little more than at the slowest pace seen.
    let headroom = reading.excess() <= background + ceilings_in.max_impact * HEADROOM;
    if limit.is_some() && headroom && model.may_speed_up() {
        // A faster pace is taken when it costs no more in total: the shorter migration also
        // holds the source's WAL and the slot for less time.
        let faster = now * model.growth();
        let t = total(faster);
        if model.predict(faster) <= m && t <= here {
            best = (faster, t, full(faster));
        }
    }
    let slower = (now / 2.0).max(MIN_RATE as f64);
    let t = total(slower);
    if slower < now && t < here * (1.0 - HYSTERESIS) && t < best.1 {
        best = (slower, t, false);
    }
    let (pace, predicted, full_speed) = best;
    if full_speed {
        return Plan {
            copy: ceilings.copy_cap,
            reason: Reason::LeastTotalFull,
            predicted_total: Some(predicted),
        };
    }
    let n = capped((pace.round() as u64).max(MIN_RATE)).unwrap_or(MIN_RATE);
    Plan {
        copy: Some(n),
        reason: Reason::LeastTotal { rows_per_s: n },
        predicted_total: Some(predicted),
    }
}

/// What a slow-down starts from: what actually moved when that is below the limit (slowing a
/// limit that does not bind would change nothing), else the limit; with no limit, what moved.
pub fn slow_from(limit: Option<u64>, moved_per_s: f64) -> f64 {
    match limit {
        Some(l) if moved_per_s > 0.0 => (l as f64).min(moved_per_s),
        Some(l) => l as f64,
        None => moved_per_s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(latency_ms: f64, xacts: f64) -> Reading {
        Reading {
            latency_ms,
            reference_ms: 1.0,
            latency_of: LatencyOf::Probe,
            xacts,
            reference_xacts: 600.0,
            replica_lag_s: None,
            backlog_ms: 0.0,
            backlog_reference_ms: 0.0,
            pool: None,
        }
    }

    const CEIL: Ceilings = Ceilings {
        max_impact: 0.5,
        max_replica_lag_s: None,
        copy_cap: None,
    };

    #[test]
    fn an_application_that_waits_for_work_may_not_have_most_of_its_sessions_busy() {
        // Alone 1.5 of 4 busy: the cap.
        assert_eq!(pool_ceiling(0.375), POOL_BUSY_MAX);
        // Busier than the cap alone: that share and a tenth of what is left.
        assert!((pool_ceiling(0.8) - 0.82).abs() < 1e-9);
        assert_eq!(pool_ceiling(1.0), 1.0);
        let mut r = reading(1.0, 600.0);
        r.pool = Some(Pool {
            busy: 0.9,
            ceiling: 0.6,
        });
        // Over the pool's ceiling with the latency and the rate within theirs.
        assert_eq!(
            ceiling_reason(&r, &CEIL),
            Some(Reason::Pool {
                busy: 0.9,
                ceiling: 0.6
            })
        );
        let model = Model::default();
        let p = plan(&model, &r, &CEIL, Some(40_000), 40_000.0, 1_000_000);
        // Cut at once, in proportion (0.6 / 0.9), within the usual bounds.
        assert_eq!(p.copy, Some(26_666), "{p:?}");
        assert_eq!(
            p.reason.to_string(),
            "paced: 90% of the application's sessions busy, over 60%"
        );
        r.pool = Some(Pool {
            busy: 0.5,
            ceiling: 0.6,
        });
        assert_eq!(ceiling_reason(&r, &CEIL), None);
    }

    #[test]
    fn the_slow_start_holds_each_doubling_before_the_next() {
        let mut model = Model::default();
        assert!(model.may_speed_up());
        model.learn(20_000.0, 0.0);
        model.note_raise();
        assert!(!model.may_speed_up(), "the doubling does not show yet");
        let r = reading(1.0, 600.0);
        let p = plan(&model, &r, &CEIL, Some(40_000), 40_000.0, 1_000_000);
        assert_eq!(p.copy, Some(40_000), "{p:?}");
        // One second at the doubled pace: not yet.
        model.learn(40_000.0, 0.0);
        assert!(!model.may_speed_up());
        model.learn(40_000.0, 0.0);
        assert!(model.may_speed_up());
        let p = plan(&model, &r, &CEIL, Some(40_000), 40_000.0, 1_000_000);
        assert_eq!(p.copy, Some(80_000), "{p:?}");
        // After a cut, the quarter steps go on at every decision.
        model.note_cut();
        model.note_raise();
        assert!(model.may_speed_up());
    }

    #[test]
    fn an_application_whose_sessions_sat_idle_waits_for_its_work() {
        // The TPC-B-like open loop at half the machine: 2.7 of 4 sessions busy.
        assert!(waits_for_work(Some(2.7), Some(4.0)));
        // Its closed loop: every session busy but for the client's turn.
        assert!(!waits_for_work(Some(3.8), Some(4.0)));
        assert!(!waits_for_work(None, Some(4.0)));
        assert!(!waits_for_work(Some(0.0), Some(0.0)));
    }

    #[test]
    fn a_backlog_sums_what_the_workload_fell_short_less_the_noise() {
        let mut b = Backlog::new(1400.0);
        let noise = 2.0 * 1400f64.sqrt();
        // Within the noise: nothing.
        b.add(1400.0 - noise + 1.0, 1.0);
        assert_eq!(b.txns(), 0.0);
        // One second at 80% of the rate: 280 short, less the noise.
        b.add(1120.0, 1.0);
        assert!((b.txns() - (280.0 - noise)).abs() < 1e-9);
        // What counts is beyond a second's noise.
        assert!((b.ms() - (280.0 - 2.0 * noise) / 1400.0 * 1000.0).abs() < 1e-9);
        // Above the rate it drains, and never goes below nothing.
        b.add(1400.0 + 100.0, 1.0);
        assert!((b.txns() - (280.0 - 2.0 * noise - 100.0)).abs() < 1e-9);
        b.add(3000.0, 1.0);
        assert_eq!(b.txns(), 0.0);
        // No workload: no queue.
        let mut none = Backlog::new(10.0);
        none.add(0.0, 5.0);
        assert_eq!(none.ms(), 0.0);
    }

    #[test]
    fn a_hold_ends_the_count_and_takes_the_rate_again() {
        let mut b = Backlog::new(1000.0);
        b.add(500.0, 1.0);
        assert!(b.txns() > 400.0);
        b.after_hold(900.0);
        assert_eq!(b, Backlog::new(900.0));
        assert_eq!(b.ms(), 0.0);
    }

    #[test]
    fn a_queue_at_the_clients_is_a_ceiling_of_its_own() {
        let r = Reading {
            backlog_ms: 150.0,
            backlog_reference_ms: 2.0,
            ..reading(1.1, 590.0)
        };
        assert!((r.excess() - 75.0).abs() < 1e-9);
        assert_eq!(
            ceiling_reason(&r, &CEIL),
            Some(Reason::Backlog { ms: 150.0 })
        );
        assert_eq!(
            Reason::Backlog { ms: 150.0 }.to_string(),
            "paced: the application's clients queue 150 ms"
        );
        // The copy is cut as hard as a ceiling cuts it.
        let p = plan(
            &Model::default(),
            &r,
            &CEIL,
            Some(80_000),
            80_000.0,
            1_000_000,
        );
        assert_eq!(p.copy, Some(20_000));
        assert!(p.reason.over_a_ceiling());
        // No reference: no excess.
        let none = Reading {
            backlog_ms: 150.0,
            backlog_reference_ms: 0.0,
            ..reading(1.0, 600.0)
        };
        assert_eq!(none.backlog_excess(), 0.0);
    }

    #[test]
    fn the_excess_is_the_worse_of_the_latency_rise_and_the_throughput_fall() {
        let r = reading(1.6, 600.0);
        assert!((r.latency_excess() - 0.5).abs() < 1e-9);
        assert_eq!(r.throughput_excess(), 0.0);
        assert!((r.excess() - 0.5).abs() < 1e-9);
        // A closed loop at two thirds of its rate waits half as long again per transaction.
        let r = reading(1.0, 400.0);
        assert!((r.throughput_excess() - 0.5).abs() < 1e-9);
        assert!((r.excess() - 0.5).abs() < 1e-9);
        // No workload at the reference: a fall is nothing.
        let r = Reading {
            reference_xacts: 0.0,
            ..reading(1.0, 0.0)
        };
        assert_eq!(r.throughput_excess(), 0.0);
        assert!(!r.busy());
        assert!((r.allowed_ms(0.5) - 1.6).abs() < 1e-9);
    }

    #[test]
    fn the_statements_mean_has_a_slack_of_its_own() {
        // 0.1 ms statements at 0.2 ms: twice their latency, over a 50% ceiling.
        let r = Reading {
            latency_ms: 0.2,
            reference_ms: 0.1,
            latency_of: LatencyOf::Statements,
            ..reading(0.0, 600.0)
        };
        assert!(
            (r.latency_excess() - 0.9).abs() < 1e-9,
            "{}",
            r.latency_excess()
        );
        assert!((r.allowed_ms(0.5) - 0.16).abs() < 1e-9);
        let p = plan(
            &Model::default(),
            &r,
            &CEIL,
            Some(20_000),
            20_000.0,
            1_000_000,
        );
        assert_eq!(p.reason.to_string(), "paced: latency 0.20 ms over 0.16 ms");
        // The probe's slack would have hidden it.
        let probe = Reading {
            latency_of: LatencyOf::Probe,
            ..r
        };
        assert_eq!(probe.latency_excess(), 0.0);
    }

    #[test]
    fn no_workload_means_full_speed_or_the_users_cap() {
        let idle = Reading {
            reference_xacts: 0.0,
            ..reading(50.0, 5.0)
        };
        let p = plan(
            &Model::default(),
            &idle,
            &CEIL,
            Some(20_000),
            1e5,
            1_000_000,
        );
        assert_eq!(p.copy, None);
        assert_eq!(p.reason, Reason::NoWorkload);
        assert_eq!(p.reason.to_string(), "full speed: no workload");
        let capped = Ceilings {
            copy_cap: Some(9_000),
            ..CEIL
        };
        let p = plan(&Model::default(), &idle, &capped, None, 1e5, 1_000_000);
        assert_eq!(p.copy, Some(9_000));
    }

    #[test]
    fn over_the_latency_ceiling_the_copy_is_cut_in_proportion() {
        // Latency 3 ms against 1.6 allowed: (1.5 / 2.9) of what moved, at most 0.7 of it.
        let p = plan(
            &Model::default(),
            &reading(3.0, 600.0),
            &CEIL,
            Some(40_000),
            40_000.0,
            1e6 as u64,
        );
        assert_eq!(p.copy, Some((40_000.0 * 1.5 / 2.9) as u64));
        assert_eq!(
            p.reason.to_string(),
            "paced: commit latency 3.0 ms over 1.6 ms"
        );
        assert!(p.reason.over_a_ceiling());
        // A copy moving less than its limit is cut from what it moved; never below the floor.
        let p = plan(
            &Model::default(),
            &reading(30.0, 600.0),
            &CEIL,
            Some(40_000),
            1_000.0,
            1_000_000,
        );
        assert_eq!(p.copy, Some(MIN_RATE));
        // A workload slowed to a third by the copy: its fall decides.
        let p = plan(
            &Model::default(),
            &reading(1.0, 200.0),
            &CEIL,
            None,
            100_000.0,
            1_000_000,
        );
        assert_eq!(p.copy, Some(((100_000.0f64 * 0.5) as u64).min(70_000)));
        assert_eq!(
            p.reason.to_string(),
            "paced: workload 200 tps under 400 tps"
        );
    }

    #[test]
    fn what_the_application_pays_at_the_slowest_pace_is_not_cut_for() {
        // At 500 rows/s, and before at 2,000, the application paid 3 times its latency (another
        // load on the machine): pacing the copy does not remove that. The ceiling is that and
        // half of --max-impact more; the copy speeds up.
        let mut model = Model::default();
        model.learn_floor(0.1);
        model.learn(500.0, 3.0);
        model.learn(2_000.0, 3.1);
        let p = plan(
            &model,
            &reading(4.0, 600.0),
            &CEIL,
            Some(2_000),
            2_000.0,
            1_000_000,
        );
        assert_eq!(p.copy, Some(4_000), "{p:?}");
        // A pace that adds more than that is cut, and the reason says against what.
        let p = plan(
            &model,
            &reading(4.5, 600.0),
            &CEIL,
            Some(2_000),
            2_000.0,
            1_000_000,
        );
        assert!(p.copy < Some(2_000), "{p:?}");
        assert!(
            p.reason
                .to_string()
                .starts_with("paced: commit latency 4.5 ms over 4."),
            "{}",
            p.reason
        );
        // Without such a background the ceiling is --max-impact.
        let mut quiet = Model::default();
        quiet.learn(2_000.0, 0.1);
        let p = plan(
            &quiet,
            &reading(1.7, 600.0),
            &CEIL,
            Some(2_000),
            2_000.0,
            1_000_000,
        );
        assert_eq!(
            p.reason.to_string(),
            "paced: commit latency 1.7 ms over 1.6 ms"
        );
    }

    #[test]
    fn a_cut_waits_for_the_last_one_to_show() {
        let mut model = Model::default();
        let over = reading(3.0, 600.0);
        let p = plan(&model, &over, &CEIL, Some(40_000), 40_000.0, 1_000_000);
        assert!(p.copy < Some(40_000));
        model.note_cut();
        model.learn(40_000.0, 0.1);
        // A second later, still over: held where it is.
        let q = plan(&model, &over, &CEIL, p.copy, 40_000.0, 1_000_000);
        assert_eq!(q.copy, p.copy);
        assert!(q.reason.over_a_ceiling());
        // Two seconds later: cut again.
        model.learn(20_000.0, 0.1);
        let r = plan(&model, &over, &CEIL, p.copy, 20_000.0, 1_000_000);
        assert!(r.copy < p.copy, "{r:?}");
    }

    #[test]
    fn a_standby_lagging_over_its_ceiling_paces_the_copy() {
        let lagging = Reading {
            replica_lag_s: Some(20.0),
            backlog_ms: 0.0,
            backlog_reference_ms: 0.0,
            ..reading(1.0, 600.0)
        };
        let ceilings = Ceilings {
            max_replica_lag_s: Some(10.0),
            ..CEIL
        };
        let p = plan(
            &Model::default(),
            &lagging,
            &ceilings,
            None,
            80_000.0,
            1_000_000,
        );
        assert_eq!(p.copy, Some(40_000));
        assert_eq!(p.reason.to_string(), "paced: replica lag 20 s over 10 s");
        // Without the flag a standby's lag is not a ceiling.
        let p = plan(
            &Model::default(),
            &lagging,
            &CEIL,
            None,
            80_000.0,
            1_000_000,
        );
        assert_eq!(p.reason, Reason::LeastTotalFull);
    }

    #[test]
    fn untried_faster_paces_are_tried_one_step_at_a_time() {
        // At 20,000 rows/s the application pays 0.2; the stream alone 0.1.
        let mut model = Model::default();
        model.learn_floor(0.1);
        model.learn(20_000.0, 0.2);
        let p = plan(
            &model,
            &reading(1.3, 600.0),
            &CEIL,
            Some(20_000),
            20_000.0,
            1_000_000,
        );
        // Nothing says yet that the excess grows with the pace: 40,000 rows/s is predicted at
        // 0.2, for half as long: less in total.
        assert_eq!(p.copy, Some(40_000));
        assert_eq!(
            p.reason.to_string(),
            "paced: least total impact at 40000 rows/s"
        );
        let total = p.predicted_total.unwrap();
        assert!(
            (total - 0.2 * 1_000_000.0 / 40_000.0).abs() < 1e-6,
            "{total}"
        );
        // Seen at 40,000 rows/s: 0.3. On the line from the least excess seen (0.2) through it,
        // 80,000 costs 0.4: within the ceiling, and less in total.
        model.learn(40_000.0, 0.3);
        let p = plan(
            &model,
            &reading(1.4, 600.0),
            &CEIL,
            Some(40_000),
            40_000.0,
            1_000_000,
        );
        assert_eq!(p.copy, Some(80_000));
    }

    #[test]
    fn the_pace_grows_only_with_headroom_and_gently_after_a_cut() {
        let mut model = Model::default();
        model.learn(20_000.0, 0.0);
        // Nothing paid: a slow start doubles the pace.
        let p = plan(
            &model,
            &reading(1.0, 600.0),
            &CEIL,
            Some(20_000),
            20_000.0,
            1_000_000,
        );
        assert_eq!(p.copy, Some(40_000));
        // Within the ceiling but past a quarter of it above what the slowest pace costs: the
        // pace holds (an open loop's queue starts as a small rise).
        let p = plan(
            &model,
            &reading(1.3, 600.0),
            &CEIL,
            Some(20_000),
            20_000.0,
            1_000_000,
        );
        assert_eq!(p.copy, Some(20_000), "{p:?}");
        // Once a ceiling was met, faster by a quarter at most.
        model.note_cut();
        for _ in 0..CUT_EVERY {
            model.learn(20_000.0, 0.0);
        }
        let p = plan(
            &model,
            &reading(1.0, 600.0),
            &CEIL,
            Some(20_000),
            20_000.0,
            1_000_000,
        );
        assert_eq!(p.copy, Some(25_000), "{p:?}");
    }

    #[test]
    fn the_transaction_time_is_the_busy_sessions_over_the_rate() {
        // An open loop at 1,500 tps with one session busy on average: 0.67 ms each.
        let alone = sessions_ms(1.0, 1_500.0).unwrap();
        assert!((alone - 1_000.0 / 1_500.0).abs() < 1e-9);
        // Its clients all busy (a queue), at nearly the same rate: four times as long.
        let queued = sessions_ms(4.0, 1_400.0).unwrap();
        let r = Reading {
            latency_ms: queued,
            reference_ms: alone,
            latency_of: LatencyOf::Sessions,
            ..reading(0.0, 1_400.0)
        };
        assert!(r.latency_excess() > 3.0, "{}", r.latency_excess());
        assert!(
            ceiling_reason(&r, &CEIL)
                .unwrap()
                .to_string()
                .starts_with("paced: transaction time")
        );
        // A closed loop keeps its sessions busy: the time grows as the rate falls.
        let closed = sessions_ms(4.0, 2_000.0).unwrap() / sessions_ms(4.0, 3_000.0).unwrap();
        assert!((closed - 1.5).abs() < 1e-9);
        assert_eq!(sessions_ms(1.0, 10.0), None);
    }

    #[test]
    fn a_faster_pace_predicted_over_the_ceiling_is_not_taken() {
        let mut model = Model::default();
        model.learn_floor(0.1);
        model.learn(10_000.0, 0.25);
        model.learn(20_000.0, 0.45);
        // 40,000 would cost 0.65 on the line: over the ceiling of 0.5; 10,000 costs more in
        // total (0.25 for twice as long).
        let p = plan(
            &model,
            &reading(1.55, 600.0),
            &CEIL,
            Some(20_000),
            20_000.0,
            1_000_000,
        );
        assert_eq!(p.copy, Some(20_000));
    }

    #[test]
    fn a_copy_at_its_floor_with_the_application_paying_for_other_things_still_speeds_up() {
        // At 500 rows/s the application pays 0.4 (the walsender decoding what the copy wrote
        // before): not the slowest pace's doing, so 1,000 rows/s is not predicted at 0.75.
        let mut model = Model::default();
        model.learn_floor(0.05);
        model.learn(500.0, 0.4);
        let p = plan(
            &model,
            &reading(1.5, 600.0),
            &CEIL,
            Some(500),
            500.0,
            1_000_000,
        );
        assert_eq!(p.copy, Some(1_000));
    }

    #[test]
    fn a_burst_beats_a_crawl_when_the_stream_costs_most() {
        // The stream alone costs 0.15 whatever the pace; the copy adds little per row. A crawl at
        // 1,000 rows/s pays the stream for 1,000 s; full speed for a few.
        let mut model = Model::default();
        model.learn_floor(0.15);
        model.learn(1_000.0, 0.16);
        let mut limit = Some(1_000);
        for _ in 0..20 {
            let moved = limit.map_or(2_500_000.0, |l| l as f64);
            let p = plan(
                &model,
                &reading(1.16, 600.0),
                &CEIL,
                limit,
                moved,
                1_000_000,
            );
            // What the source showed at that pace: the floor and a little per row.
            model.learn(moved, 0.15 + moved * 1e-7);
            limit = p.copy;
            if limit.is_none() {
                assert_eq!(p.reason, Reason::LeastTotalFull);
                break;
            }
        }
        assert_eq!(limit, None, "never reached full speed");
    }

    #[test]
    fn a_pace_whose_excess_grows_faster_than_it_is_left_for_a_slower_one() {
        // A saturated source: twice the pace, four times the excess. The slower pace costs less
        // in total.
        let mut model = Model::default();
        model.learn_floor(0.02);
        model.learn(10_000.0, 0.08);
        model.learn(20_000.0, 0.32);
        let p = plan(
            &model,
            &reading(1.4, 600.0),
            &CEIL,
            Some(20_000),
            20_000.0,
            1_000_000,
        );
        assert_eq!(p.copy, Some(10_000));
        // And from the slower pace it does not go back up.
        let p = plan(
            &model,
            &reading(1.2, 600.0),
            &CEIL,
            Some(10_000),
            10_000.0,
            1_000_000,
        );
        assert_eq!(p.copy, Some(10_000));
    }

    #[test]
    fn the_users_cap_is_never_exceeded_and_reaching_it_is_full_speed() {
        let mut model = Model::default();
        model.learn(20_000.0, 0.1);
        let ceilings = Ceilings {
            copy_cap: Some(30_000),
            ..CEIL
        };
        let p = plan(
            &model,
            &reading(1.2, 600.0),
            &ceilings,
            Some(20_000),
            20_000.0,
            1_000_000,
        );
        assert_eq!(p.copy, Some(30_000));
        assert_eq!(p.reason, Reason::LeastTotalFull);
    }

    #[test]
    fn readings_are_smoothed() {
        assert_eq!(smoothed(None, 4.0), 4.0);
        assert!((smoothed(Some(1.0), 6.0) - 2.0).abs() < 1e-9);
    }

    #[test]
    fn the_model_interpolates_extrapolates_and_forgets() {
        let mut m = Model::default();
        assert_eq!(m.predict(10_000.0), 0.0);
        m.learn_floor(0.1);
        assert_eq!(m.predict(10_000.0), 0.1);
        m.learn(10_000.0, 0.3);
        m.learn(40_000.0, 0.9);
        // Below the slowest pace seen: its excess (the floor is lower, but the slowest pace's
        // excess is not all its own); between bands, a straight line.
        assert!((m.predict(5_000.0) - 0.3).abs() < 1e-9);
        assert!((m.predict(25_000.0) - 0.6).abs() < 1e-9);
        // Beyond the fastest: the line from there through it.
        assert!((m.predict(80_000.0) - 1.5).abs() < 1e-9);
        // A band learns a new second by half.
        m.learn(10_000.0, 0.5);
        assert!((m.predict(10_000.0) - 0.4).abs() < 1e-9);
        // Not seen for FORGET_AFTER seconds: forgotten.
        for _ in 0..FORGET_AFTER + 1 {
            m.learn(0.0, 0.0);
        }
        assert_eq!(m.predict(10_000.0), 0.1);
    }
}
