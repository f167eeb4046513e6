//! Shared pieces of the integration tests: throwaway clusters, the seed schema, concurrent writers
//! with an exact record, row-by-row comparison, condition polling and running the `pgrepart` binary.
//!
//! Each `tests/*.rs` file says `mod support;` and uses what it needs:
//!
//! ```ignore
//! mod support;
//! use support::{Cluster, Writers, WritersConfig, compare, schema, test_majors, unique_name};
//!
//! #[tokio::test]
//! async fn a_migration_under_load_keeps_every_row() {
//!     for major in test_majors() {
//!         let Some(cluster) = Cluster::start_or_skip(major) else { continue };
//!         let db = unique_name("load");
//!         let url = cluster.create_database(&db).await;
//!         let client = cluster.client(&db).await;
//!         schema::create_seed_table(&client, "orders_flat", 10_000).await;
//!         let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
//!         // ... run pgrepart ...
//!         let report = writers.stop().await;
//!         compare::assert_table_matches(&client, "orders_flat", &report.rows).await;
//!     }
//! }
//! ```
//!
//! Not every test file uses every helper, hence the `dead_code` and `unused_imports` allowances.
#![allow(dead_code, unused_imports)]

pub mod cluster;
pub mod compare;
pub mod flow;
pub mod inspect;
pub mod program;
pub mod schema;
pub mod writers;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use cluster::{Cluster, connect, find_bin_dir, test_majors};
pub use compare::{Row, assert_same_rows, assert_table_matches};
pub use program::{
    Background, pgrepart, pgrepart_with_env, spawn_pgrepart, spawn_pgrepart_with_env,
};
pub use writers::{Writers, WritersConfig, WritersReport};

/// How often `wait_until` checks its condition.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A name unique within this machine's test runs, for databases, slots, publications:
/// `<prefix>_<pid>_<counter>`, lowercase, at most 63 bytes.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let clean: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    format!("{clean}_{}_{n}", std::process::id())
}

/// Polls `condition` every 50 ms until it holds; panics with `what` if it does not within `within`.
pub async fn wait_until<F, Fut>(within: Duration, what: &str, condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    if !poll_until(within, condition).await {
        panic!("timed out after {within:?} waiting for {what}");
    }
}

/// Polls `condition` every 50 ms until it holds (`true`) or `within` has passed (`false`).
pub async fn poll_until<F, Fut>(within: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// An error with its SQLSTATE, message and detail, e.g. `42P01: relation "t" does not exist`.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{}: {}", db.code().code(), db.message());
            if let Some(detail) = db.detail() {
                s.push_str(&format!(" ({detail})"));
            }
            s
        }
        None => format!("{e:#}"),
    }
}
