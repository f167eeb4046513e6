//! Concurrent writers that play the application during a migration and keep an exact record of
//! what the table must contain.
//!
//! ```text
//! start: read the table once -> rows split by id % N -> writer i owns its slice
//! writer i loop:  plan a transaction against its own record
//!                 BEGIN; op; op; ...; COMMIT      (by table NAME: after a rename it follows the name)
//!                 committed -> apply the effects to the record, count ops
//!                 any error -> ROLLBACK, record nothing, count the error, back off, go on
//! stop: watch channel -> each writer finishes its transaction -> records merged
//! ```
//!
//! A writer only touches ids it owns (its slice of the rows present at start, plus ids it inserted),
//! so no two writers race on a row and the merged record is exactly what a correct table holds.
//!
//! Only a COMMIT whose answer is lost with the connection is ambiguous: then the writer reconnects,
//! reads the rows that transaction touched and adopts what it finds (counted as `ambiguous`).
//! An UPDATE or DELETE that finds no row is applied to the record anyway (the correct table has the
//! row) and listed in `anomalies`: the table had lost a row it should have had.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use crate::support::compare::{Row, read_table};
use crate::support::describe;
use crate::support::schema::{REGIONS, ident};

/// Length range of the large `details` writers insert: well above the 2 kB TOAST threshold and
/// incompressible (random hex), so it is stored out of line.
const BIG_DETAILS: std::ops::Range<u64> = 9_000..16_000;

/// Settings for `Writers::start`.
#[derive(Clone, Debug)]
pub struct WritersConfig {
    /// libpq URL of the database holding the table.
    pub url: String,
    /// Unqualified table name; looked up by name on every statement.
    pub table: String,
    /// Number of writer tasks (and connections).
    pub writers: usize,
    /// Pause after each transaction, to bound the load.
    pub pause: Duration,
    /// Whether each writer runs one big transaction (`big_transaction_ops` ops, well over 64 kB of
    /// changes) at a random point early in its run.
    pub big_transaction: bool,
    pub big_transaction_ops: usize,
    /// `statement_timeout` of the writers' sessions, so a blocked writer gives up and retries.
    pub statement_timeout: Duration,
    /// Seed of the writers' choices (`PGREPART_TEST_SEED` or the clock). Printed at start.
    pub seed: u64,
}

impl WritersConfig {
    pub fn new(url: &str, table: &str) -> WritersConfig {
        let seed = std::env::var("PGREPART_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        WritersConfig {
            url: url.to_string(),
            table: table.to_string(),
            writers: 4,
            pause: Duration::from_millis(2),
            big_transaction: true,
            big_transaction_ops: 400,
            statement_timeout: Duration::from_secs(10),
            seed,
        }
    }
}

/// Live counters shared by the writers.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Operations (statements) in committed transactions.
    pub ops: AtomicU64,
    pub transactions: AtomicU64,
    pub big_transactions: AtomicU64,
    /// Failed transactions (rolled back, not recorded) and failed connection attempts.
    pub errors: AtomicU64,
    pub ambiguous: AtomicU64,
    /// Failures by SQLSTATE (`"io"` for a lost connection).
    pub error_codes: Mutex<BTreeMap<String, u64>>,
    pub last_error: Mutex<Option<String>>,
}

impl WriterStats {
    fn error(&self, code: String, text: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *lock(&self.error_codes).entry(code).or_default() += 1;
        *lock(&self.last_error) = Some(text);
    }
}

/// What the writers leave when stopped.
#[derive(Debug)]
pub struct WritersReport {
    /// What the table must contain now (given nobody else wrote to it).
    pub rows: BTreeMap<i64, Row>,
    pub ops: u64,
    pub transactions: u64,
    pub big_transactions: u64,
    pub errors: u64,
    pub ambiguous: u64,
    pub error_codes: BTreeMap<String, u64>,
    /// Statements that found the table not holding a row it should have had.
    pub anomalies: Vec<String>,
}

impl WritersReport {
    /// One line of counters (never the rows).
    pub fn summary(&self) -> String {
        format!(
            "{} rows expected; {} ops in {} transactions ({} big); {} errors {:?}; {} ambiguous; {} anomalies",
            self.rows.len(),
            self.ops,
            self.transactions,
            self.big_transactions,
            self.errors,
            self.error_codes,
            self.ambiguous,
            self.anomalies.len()
        )
    }

    /// Panics unless every statement found the table as the writers left it: `context` says
    /// where ("PostgreSQL 15, cutover-locked"), then the first anomalies and the counters follow.
    #[track_caller]
    pub fn assert_no_anomalies(&self, context: impl std::fmt::Display) {
        assert!(
            self.anomalies.is_empty(),
            "{context}: the writers found rows missing or wrong, the first of them: {:?}; {}",
            &self.anomalies[..self.anomalies.len().min(20)],
            self.summary()
        );
    }
}

/// Running writers; `stop` ends them and returns the merged record.
pub struct Writers {
    stop: watch::Sender<bool>,
    handles: Vec<JoinHandle<WriterOutcome>>,
    stats: Arc<WriterStats>,
    table: String,
}

struct WriterOutcome {
    rows: BTreeMap<i64, Row>,
    anomalies: Vec<String>,
}

impl Writers {
    /// Reads the table once, splits its rows among `config.writers` writers and starts them.
    pub async fn start(config: WritersConfig) -> Writers {
        assert!(config.writers > 0, "at least one writer");
        eprintln!(
            "writers: {} on {} with seed {} (PGREPART_TEST_SEED={} repeats the choices)",
            config.writers, config.table, config.seed, config.seed
        );
        let client = crate::support::cluster::connect(&config.url).await;
        let existing = read_table(&client, &config.table).await;
        let n = config.writers as i64;
        let mut slices: Vec<BTreeMap<i64, Row>> = vec![BTreeMap::new(); config.writers];
        for (id, row) in existing {
            slices[id.rem_euclid(n) as usize].insert(id, row);
        }
        let stats = Arc::new(WriterStats::default());
        let (stop, stop_rx) = watch::channel(false);
        let config = Arc::new(config);
        let handles = slices
            .into_iter()
            .enumerate()
            .map(|(index, rows)| {
                let writer = Writer::new(index, rows, config.clone(), stats.clone());
                tokio::spawn(writer.run(stop_rx.clone()))
            })
            .collect();
        Writers {
            stop,
            handles,
            stats,
            table: config.table.clone(),
        }
    }

    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Operations committed so far, by all writers.
    pub fn ops(&self) -> u64 {
        self.stats.ops.load(Ordering::Relaxed)
    }

    pub fn errors(&self) -> u64 {
        self.stats.errors.load(Ordering::Relaxed)
    }

    /// Waits until the writers committed `more` operations beyond the count at the call.
    pub async fn wait_for_more_ops(&self, more: u64, within: Duration) {
        let target = self.ops() + more;
        self.wait_for_ops(target, within).await;
    }

    /// Waits until the writers committed at least `total` operations since they started.
    pub async fn wait_for_ops(&self, total: u64, within: Duration) {
        let what = format!("writers on {} to reach {total} committed ops", self.table);
        let stats = self.stats.clone();
        let reached = crate::support::poll_until(within, || {
            let stats = stats.clone();
            async move { stats.ops.load(Ordering::Relaxed) >= total }
        })
        .await;
        if !reached {
            panic!(
                "timed out after {within:?} waiting for {what}: at {} ops, {} errors {:?}, last error: {}",
                self.ops(),
                self.errors(),
                lock(&self.stats.error_codes),
                lock(&self.stats.last_error).as_deref().unwrap_or("none")
            );
        }
    }

    /// Tells every writer to stop after its current transaction, waits for them (at most a minute)
    /// and merges their records.
    pub async fn stop(self) -> WritersReport {
        let _ = self.stop.send(true);
        let mut rows = BTreeMap::new();
        let mut anomalies = Vec::new();
        for handle in self.handles {
            let outcome = tokio::time::timeout(Duration::from_secs(60), handle)
                .await
                .expect("a writer did not stop within 60 s")
                .expect("a writer task panicked");
            for (id, row) in outcome.rows {
                assert!(rows.insert(id, row).is_none(), "two writers own id {id}");
            }
            anomalies.extend(outcome.anomalies);
        }
        let s = &self.stats;
        WritersReport {
            rows,
            ops: s.ops.load(Ordering::Relaxed),
            transactions: s.transactions.load(Ordering::Relaxed),
            big_transactions: s.big_transactions.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
            ambiguous: s.ambiguous.load(Ordering::Relaxed),
            error_codes: lock(&s.error_codes).clone(),
            anomalies,
        }
    }
}

/// One statement of a planned transaction.
#[derive(Clone, Debug)]
enum Op {
    Insert(Row),
    /// Sets `column` of row `id`; `new` is the whole row after the statement.
    Update {
        id: i64,
        column: &'static str,
        new: Row,
    },
    Delete(i64),
}

enum Outcome {
    /// Committed; the effects to apply, and statements that found no row.
    Committed(Vec<(i64, Option<Row>)>, Vec<String>),
    Failed,
    /// COMMIT sent, answer lost: these ids may or may not have changed.
    Ambiguous(Vec<i64>),
}

struct Writer {
    index: usize,
    config: Arc<WritersConfig>,
    stats: Arc<WriterStats>,
    rng: SplitMix,
    rows: BTreeMap<i64, Row>,
    /// The ids in `rows`, for picking one at random; `slot` maps an id to its index here.
    ids: Vec<i64>,
    slot: HashMap<i64, usize>,
    anomalies: Vec<String>,
}

impl Writer {
    fn new(
        index: usize,
        rows: BTreeMap<i64, Row>,
        config: Arc<WritersConfig>,
        stats: Arc<WriterStats>,
    ) -> Writer {
        let ids: Vec<i64> = rows.keys().copied().collect();
        let slot = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let rng = SplitMix(config.seed ^ (index as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
        Writer {
            index,
            config,
            stats,
            rng,
            rows,
            ids,
            slot,
            anomalies: Vec::new(),
        }
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) -> WriterOutcome {
        let mut big_at = self.config.big_transaction.then(|| 3 + self.rng.below(30));
        let mut client: Option<Client> = None;
        let mut round = 0u64;
        // A dropped `Writers` (its test panicked) counts as stop.
        while !*stop.borrow() && stop.has_changed().is_ok() {
            if client.as_ref().is_none_or(|c| c.is_closed()) {
                if client.is_some() {
                    // Closed between transactions (e.g. terminated while idle).
                    self.stats
                        .error("io".into(), "connection closed while idle".into());
                }
                client = self.connect().await;
                if client.is_none() {
                    self.pause(&mut stop, Duration::from_millis(100)).await;
                }
                continue;
            }
            let c = client.as_ref().expect("connected above");
            let big = big_at == Some(round);
            let plan = if big {
                self.plan_big()
            } else {
                self.plan_random()
            };
            match self.execute(c, &plan).await {
                Outcome::Committed(effects, anomalies) => {
                    if big {
                        big_at = None;
                        self.stats.big_transactions.fetch_add(1, Ordering::Relaxed);
                    }
                    round += 1;
                    self.apply(effects);
                    self.anomalies.extend(anomalies);
                    self.stats
                        .ops
                        .fetch_add(plan.len() as u64, Ordering::Relaxed);
                    self.stats.transactions.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Failed => {
                    let backoff = Duration::from_millis(20 + self.rng.below(80));
                    self.pause(&mut stop, backoff).await;
                }
                Outcome::Ambiguous(ids) => {
                    self.stats.ambiguous.fetch_add(1, Ordering::Relaxed);
                    client = None;
                    self.resolve(&ids, &mut stop).await;
                }
            }
            let pause = self.config.pause;
            self.pause(&mut stop, pause).await;
        }
        WriterOutcome {
            rows: self.rows,
            anomalies: self.anomalies,
        }
    }

    async fn pause(&self, stop: &mut watch::Receiver<bool>, d: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = stop.changed() => {}
        }
    }

    async fn connect(&self) -> Option<Client> {
        let (client, connection) =
            match tokio_postgres::connect(&self.config.url, tokio_postgres::NoTls).await {
                Ok(pair) => pair,
                Err(e) => {
                    self.stats.error(error_code(&e), describe(&e));
                    return None;
                }
            };
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let setup = format!(
            "SET statement_timeout = {}; SET DateStyle = 'ISO, MDY'; SET application_name = 'pgrepart-test-writer-{}'",
            self.config.statement_timeout.as_millis(),
            self.index
        );
        match client.batch_execute(&setup).await {
            Ok(()) => Some(client),
            Err(e) => {
                self.stats.error(error_code(&e), describe(&e));
                None
            }
        }
    }

    /// The record's view of `id` with the effects planned so far in this transaction.
    fn view<'a>(&'a self, planned: &'a HashMap<i64, Option<Row>>, id: i64) -> Option<&'a Row> {
        match planned.get(&id) {
            Some(state) => state.as_ref(),
            None => self.rows.get(&id),
        }
    }

    /// One transaction: mostly a single statement, sometimes two to five.
    fn plan_random(&mut self) -> Vec<Op> {
        let len = if self.rng.chance(15) {
            2 + self.rng.below(4) as usize
        } else {
            1
        };
        let mut planned = HashMap::new();
        (0..len)
            .map(|_| self.plan_op(&mut planned, false))
            .collect()
    }

    /// One big transaction: many inserts (some with large details) and updates, well over the
    /// 64 kB of `logical_decoding_work_mem`, so decoding spills or streams it.
    fn plan_big(&mut self) -> Vec<Op> {
        let mut planned = HashMap::new();
        (0..self.config.big_transaction_ops)
            .map(|_| self.plan_op(&mut planned, true))
            .collect()
    }

    fn plan_op(&mut self, planned: &mut HashMap<i64, Option<Row>>, big: bool) -> Op {
        let roll = self.rng.below(100);
        let insert_share = if big { 70 } else { 30 };
        if roll < insert_share || self.ids.is_empty() {
            let mut row = self.random_row();
            if big && self.rng.chance(3) {
                row.details = Some(self.big_details());
            } else if big {
                let len = 200 + self.rng.below(200) as usize;
                row.details = Some(self.rng.hex(len));
            }
            return Op::Insert(row);
        }
        let id = self.ids[self.rng.below(self.ids.len() as u64) as usize];
        let Some(old) = self.view(planned, id).cloned() else {
            // Deleted earlier in this transaction.
            return Op::Insert(self.random_row());
        };
        let mut new = old.clone();
        let column = match roll {
            _ if roll < 50 => {
                new.amount = self.amount();
                "amount"
            }
            _ if roll < 65 => {
                let others: Vec<&str> = REGIONS
                    .iter()
                    .copied()
                    .filter(|r| *r != old.region)
                    .collect();
                new.region = others[self.rng.below(others.len() as u64) as usize].to_string();
                "region"
            }
            _ if roll < 75 => {
                // A row with large TOASTed details, updated without touching details: the change
                // carries the details as "unchanged TOAST".
                let mut big_id = None;
                for _ in 0..20 {
                    let candidate = self.ids[self.rng.below(self.ids.len() as u64) as usize];
                    let is_big = self
                        .view(planned, candidate)
                        .is_some_and(|r| r.details.as_ref().is_some_and(|d| d.len() > 8000));
                    if is_big {
                        big_id = Some(candidate);
                        break;
                    }
                }
                match big_id {
                    Some(big_id) => {
                        let mut row = self.view(planned, big_id).cloned().expect("checked");
                        row.amount = self.amount();
                        planned.insert(big_id, Some(row.clone()));
                        return Op::Update {
                            id: big_id,
                            column: "amount",
                            new: row,
                        };
                    }
                    None => {
                        let mut row = self.random_row();
                        row.details = Some(self.big_details());
                        return Op::Insert(row);
                    }
                }
            }
            _ if roll < 80 => {
                new.details = if self.rng.chance(30) {
                    Some(self.big_details())
                } else {
                    self.small_details()
                };
                "details"
            }
            _ if big => {
                new.amount = self.amount();
                "amount"
            }
            _ => {
                planned.insert(id, None);
                return Op::Delete(id);
            }
        };
        planned.insert(id, Some(new.clone()));
        Op::Update { id, column, new }
    }

    async fn execute(&self, client: &Client, plan: &[Op]) -> Outcome {
        let t = ident(&self.config.table);
        let mut effects = Vec::with_capacity(plan.len());
        let mut anomalies = Vec::new();
        let result: Result<(), tokio_postgres::Error> = async {
            client.batch_execute("BEGIN").await?;
            for op in plan {
                match op {
                    Op::Insert(row) => {
                        let sql = format!(
                            "INSERT INTO {t} (order_date, customer_id, region, amount, details) \
                             VALUES ($1::text::timestamp, $2, $3, $4::text::numeric, $5) RETURNING id"
                        );
                        let r = client
                            .query_one(
                                &sql,
                                &[&row.order_date, &row.customer_id, &row.region, &row.amount, &row.details],
                            )
                            .await?;
                        effects.push((r.get::<_, i64>(0), Some(row.clone())));
                    }
                    Op::Update { id, column, new } => {
                        let n = match *column {
                            "amount" => {
                                let sql = format!("UPDATE {t} SET amount = $2::text::numeric WHERE id = $1");
                                client.execute(&sql, &[id, &new.amount]).await?
                            }
                            "region" => {
                                let sql = format!("UPDATE {t} SET region = $2 WHERE id = $1");
                                client.execute(&sql, &[id, &new.region]).await?
                            }
                            "details" => {
                                let sql = format!("UPDATE {t} SET details = $2 WHERE id = $1");
                                client.execute(&sql, &[id, &new.details]).await?
                            }
                            other => unreachable!("no update planned for {other}"),
                        };
                        if n != 1 {
                            anomalies.push(format!("update of {column} on id {id} changed {n} rows"));
                        }
                        effects.push((*id, Some(new.clone())));
                    }
                    Op::Delete(id) => {
                        let n = client
                            .execute(&format!("DELETE FROM {t} WHERE id = $1"), &[id])
                            .await?;
                        if n != 1 {
                            anomalies.push(format!("delete of id {id} removed {n} rows"));
                        }
                        effects.push((*id, None));
                    }
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            self.stats.error(error_code(&e), describe(&e));
            if !client.is_closed() {
                let _ = client.batch_execute("ROLLBACK").await;
            }
            return Outcome::Failed;
        }
        match client.batch_execute("COMMIT").await {
            Ok(()) => Outcome::Committed(effects, anomalies),
            Err(e) => {
                self.stats.error(error_code(&e), describe(&e));
                if e.as_db_error().is_some() {
                    // The server answered: the transaction is rolled back.
                    let _ = client.batch_execute("ROLLBACK").await;
                    Outcome::Failed
                } else {
                    Outcome::Ambiguous(effects.into_iter().map(|(id, _)| id).collect())
                }
            }
        }
    }

    fn apply(&mut self, effects: Vec<(i64, Option<Row>)>) {
        for (id, state) in effects {
            match state {
                Some(row) => {
                    if self.rows.insert(id, row).is_none() {
                        self.slot.insert(id, self.ids.len());
                        self.ids.push(id);
                    }
                }
                None => {
                    if self.rows.remove(&id).is_some() {
                        let at = self.slot.remove(&id).expect("every recorded id has a slot");
                        self.ids.swap_remove(at);
                        if let Some(moved) = self.ids.get(at) {
                            self.slot.insert(*moved, at);
                        }
                    }
                }
            }
        }
    }

    /// After an ambiguous COMMIT: reconnect and adopt what the table holds for the touched ids.
    async fn resolve(&mut self, ids: &[i64], stop: &mut watch::Receiver<bool>) {
        loop {
            if let Some(client) = self.connect().await {
                let t = ident(&self.config.table);
                let sql = format!(
                    "SELECT id, order_date::text, customer_id, region, amount::text, details \
                     FROM {t} WHERE id = ANY($1)"
                );
                match client.query(&sql, &[&ids]).await {
                    Ok(found) => {
                        let mut found: HashMap<i64, Row> = found
                            .iter()
                            .map(|r| {
                                let row = Row {
                                    order_date: r.get(1),
                                    customer_id: r.get(2),
                                    region: r.get(3),
                                    amount: r.get(4),
                                    details: r.get(5),
                                };
                                (r.get(0), row)
                            })
                            .collect();
                        let effects = ids.iter().map(|id| (*id, found.remove(id))).collect();
                        self.apply(effects);
                        return;
                    }
                    Err(e) => self.stats.error(error_code(&e), describe(&e)),
                }
            }
            if *stop.borrow() || stop.has_changed().is_err() {
                // Cannot settle it; the record may be off for these ids, so say so.
                self.anomalies
                    .push(format!("ambiguous commit of ids {ids:?} never resolved"));
                return;
            }
            self.pause(stop, Duration::from_millis(100)).await;
        }
    }

    fn random_row(&mut self) -> Row {
        Row {
            order_date: format!(
                "2025-{:02}-{:02} {:02}:{:02}:{:02}",
                1 + self.rng.below(12),
                1 + self.rng.below(28),
                self.rng.below(24),
                self.rng.below(60),
                self.rng.below(60)
            ),
            customer_id: 1 + self.rng.below(100_000) as i32,
            region: REGIONS[self.rng.below(REGIONS.len() as u64) as usize].to_string(),
            amount: self.amount(),
            details: if self.rng.chance(5) {
                Some(self.big_details())
            } else {
                self.small_details()
            },
        }
    }

    fn amount(&mut self) -> Option<String> {
        if self.rng.chance(10) {
            None
        } else {
            let cents = self.rng.below(100_000_000);
            Some(format!("{}.{:02}", cents / 100, cents % 100))
        }
    }

    fn small_details(&mut self) -> Option<String> {
        if self.rng.chance(10) {
            None
        } else {
            Some(format!(
                "writer {} note {}",
                self.index,
                self.rng.below(1_000_000)
            ))
        }
    }

    fn big_details(&mut self) -> String {
        let len = BIG_DETAILS.start + self.rng.below(BIG_DETAILS.end - BIG_DETAILS.start);
        self.rng.hex(len as usize)
    }
}

/// SQLSTATE of an error, or `"io"` when the server gave none (connection lost, closed).
pub fn error_code(e: &tokio_postgres::Error) -> String {
    e.code()
        .map_or_else(|| "io".to_string(), |c| c.code().to_string())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// SplitMix64: small, seedable, good enough for picking operations.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// `len` random hex digits: incompressible for pglz.
    fn hex(&mut self, len: usize) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(len);
        while s.len() < len {
            let mut x = self.next();
            for _ in 0..16.min(len - s.len()) {
                s.push(DIGITS[(x & 15) as usize] as char);
                x >>= 4;
            }
        }
        s
    }
}
