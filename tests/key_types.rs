//! Keys of every kind under concurrent writes: uuid, text under a non-C collation, a composite
//! (tenant int, id bigint) key and a skewed bigint key (1 % of the keys near 2^62) are cut into
//! several ranges from a sample of the key in the server's order, a run killed with SIGKILL during
//! the copy is finished by the same command, and the new table equals what the writers left, row
//! by row. The skewed key's ranges hold about as many rows each. `plan` shows the ranges the run
//! would cut, for every kind of key, and creates nothing; over large rows clustered in the key it
//! cuts on bytes as well as rows.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::flow::spawn;
use support::inspect::{self, output_text};
use support::{Background, Cluster, connect, test_majors, unique_name, wait_until};
use tokio_postgres::Client;

const DEADLINE: Duration = Duration::from_secs(180);
const ROWS: usize = 40_000;

/// A key as the server prints it (one text per key column).
type Key = Vec<String>;
/// What a row holds besides its key: (region, v).
type Rest = (String, i32);

/// A tiny deterministic generator (xorshift), seeded per test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Uuid,
    Text,
    Composite,
    SkewedInt,
}

impl Kind {
    /// Key columns: (name, type SQL as the writer casts to).
    fn columns(self, collation: &str) -> Vec<(&'static str, String)> {
        match self {
            Kind::Uuid => vec![("k", "uuid".into())],
            Kind::Text => vec![("k", format!("text COLLATE \"{collation}\""))],
            Kind::Composite => vec![("tenant", "integer".into()), ("id", "bigint".into())],
            Kind::SkewedInt => vec![("k", "bigint".into())],
        }
    }

    /// The n-th new key, as the server prints it.
    fn key(self, rng: &mut Rng, n: u64) -> Key {
        match self {
            Kind::Uuid => {
                let (a, b) = (rng.next(), rng.next());
                let hex = format!("{a:016x}{b:016x}");
                vec![format!(
                    "{}-{}-{}-{}-{}",
                    &hex[0..8],
                    &hex[8..12],
                    &hex[12..16],
                    &hex[16..20],
                    &hex[20..32]
                )]
            }
            // Mixed case, accents and punctuation: C order and a linguistic order differ.
            Kind::Text => {
                let words = [
                    "apple", "Apple", "éclair", "Zebra", "zoo", "_under", "Ölfeld", "b-b", "bb",
                ];
                vec![format!(
                    "{} {n:07}",
                    words[rng.below(words.len() as u64) as usize]
                )]
            }
            // A few tenants, ids spread: ranges must cut inside a tenant.
            Kind::Composite => vec![rng.below(3).to_string(), (n * 7 + rng.below(7)).to_string()],
            // 99 % small, 1 % near 2^62.
            Kind::SkewedInt => {
                if rng.below(100) == 0 {
                    vec![((1i64 << 62) + n as i64).to_string()]
                } else {
                    vec![n.to_string()]
                }
            }
        }
    }
}

struct Table {
    kind: Kind,
    collation: String,
}

impl Table {
    fn key_cols(&self) -> Vec<(&'static str, String)> {
        self.kind.columns(&self.collation)
    }

    fn create_sql(&self) -> String {
        let cols: Vec<String> = self
            .key_cols()
            .iter()
            .map(|(n, t)| format!("{n} {t} NOT NULL"))
            .collect();
        let names: Vec<&str> = self.key_cols().iter().map(|(n, _)| *n).collect();
        format!(
            "CREATE TABLE kt ({}, region text NOT NULL, v int NOT NULL, PRIMARY KEY ({}))",
            cols.join(", "),
            names.join(", ")
        )
    }

    /// `k = $1::type AND ...` with parameters from `first`.
    fn key_match(&self, first: usize) -> String {
        self.key_cols()
            .iter()
            .enumerate()
            .map(|(i, (n, t))| format!("{n} = ${}::text::{}", first + i, base_type(t)))
            .collect::<Vec<_>>()
            .join(" AND ")
    }

    fn key_names(&self) -> Vec<&'static str> {
        self.key_cols().iter().map(|(n, _)| *n).collect()
    }
}

fn base_type(t: &str) -> &str {
    t.split(" COLLATE").next().unwrap()
}

/// Inserts `keys` with their rows in one statement.
async fn insert_rows(client: &Client, t: &Table, rows: &[(Key, Rest)]) {
    let ncols = t.key_cols().len();
    let mut arrays: Vec<Vec<String>> = vec![Vec::new(); ncols];
    let mut regions = Vec::new();
    let mut vs = Vec::new();
    for (k, (r, v)) in rows {
        for (i, part) in k.iter().enumerate() {
            arrays[i].push(part.clone());
        }
        regions.push(r.clone());
        vs.push(*v);
    }
    let names = t.key_names();
    let unnest: Vec<String> = (0..ncols).map(|i| format!("${}::text[]", i + 1)).collect();
    let casts: Vec<String> = t
        .key_cols()
        .iter()
        .enumerate()
        .map(|(i, (_, ty))| format!("c{i}::{}", base_type(ty)))
        .collect();
    let aliases: Vec<String> = (0..ncols).map(|i| format!("c{i}")).collect();
    let sql = format!(
        "INSERT INTO kt ({}, region, v) SELECT {}, r, v FROM unnest({}, ${}::text[], ${}::int[]) AS u({}, r, v)",
        names.join(", "),
        casts.join(", "),
        unnest.join(", "),
        ncols + 1,
        ncols + 2,
        aliases.join(", ")
    );
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
    for a in &arrays {
        params.push(a);
    }
    params.push(&regions);
    params.push(&vs);
    client.execute(&sql, &params).await.expect("seeding");
}

/// Reads the table as `key -> rest`, keys in the server's text.
async fn read_table(client: &Client, t: &Table, table: &str) -> BTreeMap<Key, Rest> {
    let names = t.key_names();
    let cols: Vec<String> = names.iter().map(|n| format!("{n}::text")).collect();
    let sql = format!("SELECT {}, region, v FROM {table}", cols.join(", "));
    let n = names.len();
    client
        .query(&sql, &[])
        .await
        .expect("reading the table")
        .iter()
        .map(|r| {
            let k: Key = (0..n).map(|i| r.get::<_, String>(i)).collect();
            (k, (r.get::<_, String>(n), r.get::<_, i32>(n + 1)))
        })
        .collect()
}

fn region(rng: &mut Rng) -> String {
    ["US", "EU", "ASIA", "LATAM"][rng.below(4) as usize].to_string()
}

/// A writer of its own: inserts, updates (value, region: partition moves, and the key itself)
/// and deletes by key, each committed alone and recorded once committed.
struct KeyWriter {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<BTreeMap<Key, Rest>>,
}

impl KeyWriter {
    fn start(url: &str, t: Arc<Table>, mut rows: BTreeMap<Key, Rest>, seed: u64) -> KeyWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let (stop2, ops2, url) = (stop.clone(), ops.clone(), url.to_string());
        let task = tokio::spawn(async move {
            let client = connect(&url).await;
            let mut rng = Rng(seed);
            let mut next = 10_000_000u64;
            let mut keys: Vec<Key> = rows.keys().cloned().collect();
            let ncols = t.key_cols().len();
            while !stop2.load(Ordering::Relaxed) {
                next += 1;
                let op = rng.below(10);
                let pick = keys[rng.below(keys.len() as u64) as usize].clone();
                let key_params = |k: &Key| -> Vec<String> { k.clone() };
                let done = if op < 3 || !rows.contains_key(&pick) {
                    let k = t.kind.key(&mut rng, next);
                    if rows.contains_key(&k) {
                        continue;
                    }
                    let rest = (region(&mut rng), rng.below(1000) as i32);
                    insert_rows(&client, &t, &[(k.clone(), rest.clone())]).await;
                    rows.insert(k.clone(), rest);
                    keys.push(k);
                    true
                } else if op < 6 {
                    let v = rng.below(1000) as i32;
                    let sql = format!("UPDATE kt SET v = $1 WHERE {}", t.key_match(2));
                    let p = key_params(&pick);
                    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&v];
                    params.extend(
                        p.iter()
                            .map(|s| s as &(dyn tokio_postgres::types::ToSql + Sync)),
                    );
                    client.execute(&sql, &params).await.expect("update");
                    rows.get_mut(&pick).unwrap().1 = v;
                    true
                } else if op < 7 {
                    let r = region(&mut rng);
                    let sql = format!("UPDATE kt SET region = $1 WHERE {}", t.key_match(2));
                    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&r];
                    params.extend(
                        pick.iter()
                            .map(|s| s as &(dyn tokio_postgres::types::ToSql + Sync)),
                    );
                    client.execute(&sql, &params).await.expect("region update");
                    rows.get_mut(&pick).unwrap().0 = r;
                    true
                } else if op < 8 {
                    // The key changes: a delete in one range and an insert in another.
                    let k = t.kind.key(&mut rng, next);
                    if rows.contains_key(&k) {
                        continue;
                    }
                    let sets: Vec<String> = t
                        .key_cols()
                        .iter()
                        .enumerate()
                        .map(|(i, (n, ty))| format!("{n} = ${}::text::{}", i + 1, base_type(ty)))
                        .collect();
                    let sql = format!(
                        "UPDATE kt SET {} WHERE {}",
                        sets.join(", "),
                        t.key_match(ncols + 1)
                    );
                    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
                    params.extend(
                        k.iter()
                            .map(|s| s as &(dyn tokio_postgres::types::ToSql + Sync)),
                    );
                    params.extend(
                        pick.iter()
                            .map(|s| s as &(dyn tokio_postgres::types::ToSql + Sync)),
                    );
                    client.execute(&sql, &params).await.expect("key update");
                    let rest = rows.remove(&pick).unwrap();
                    rows.insert(k.clone(), rest);
                    keys.push(k);
                    true
                } else {
                    let sql = format!("DELETE FROM kt WHERE {}", t.key_match(1));
                    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = pick
                        .iter()
                        .map(|s| s as &(dyn tokio_postgres::types::ToSql + Sync))
                        .collect();
                    client.execute(&sql, &params).await.expect("delete");
                    rows.remove(&pick);
                    true
                };
                if done {
                    ops2.fetch_add(1, Ordering::Relaxed);
                }
            }
            rows
        });
        KeyWriter { stop, ops, task }
    }

    async fn wait_for_more_ops(&self, n: u64) {
        let target = self.ops.load(Ordering::Relaxed) + n;
        wait_until(DEADLINE, "the key writer to write more", || async {
            self.ops.load(Ordering::Relaxed) >= target
        })
        .await;
    }

    async fn stop(self) -> BTreeMap<Key, Rest> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("the key writer panicked")
    }
}

fn run_args(url: &str) -> Vec<String> {
    [
        "run",
        "--source",
        url,
        "--table",
        "kt",
        "--partition-by",
        "LIST (region)",
        "--partition",
        "kt_us=FOR VALUES IN ('US')",
        "--partition",
        "kt_eu=FOR VALUES IN ('EU')",
        "--partition",
        "kt_other=DEFAULT",
        "--cutover",
        "auto",
        "--jobs",
        "2",
        // Slow enough to be killed with some ranges copied and some not.
        "--max-copy-rate",
        "8000",
        // Changes are taken during the copy (so routed to their ranges), not after it.
        "--primary-key",
        "before-copy",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `plan` with the run's partitions and workers.
fn plan_args(url: &str, json: bool) -> Vec<String> {
    let run = run_args(url);
    let mut args = vec!["plan".to_string()];
    // The run's arguments up to `--cutover` (source, table, partitions), then its workers.
    let at = run.iter().position(|a| a == "--cutover").unwrap();
    args.extend(run[1..at].iter().cloned());
    args.extend(["--jobs".to_string(), "2".to_string()]);
    if json {
        args.push("--json".to_string());
    }
    args
}

/// Creates `kt` with `ROWS` rows of `kind`'s keys (a linguistic collation for text keys); `None`
/// when the server has no such collation.
async fn seed_table(
    client: &Client,
    kind: Kind,
    seed: u64,
) -> Option<(Arc<Table>, BTreeMap<Key, Rest>)> {
    let collation = match kind {
        Kind::Text => linguistic_collation(client).await?,
        _ => String::new(),
    };
    let t = Arc::new(Table { kind, collation });
    client.batch_execute(&t.create_sql()).await.unwrap();
    let mut rng = Rng(seed | 1);
    let mut rows = BTreeMap::new();
    for n in 0..ROWS as u64 {
        rows.insert(
            kind.key(&mut rng, n),
            (region(&mut rng), rng.below(1000) as i32),
        );
    }
    let seeded: Vec<(Key, Rest)> = rows.clone().into_iter().collect();
    for chunk in seeded.chunks(10_000) {
        insert_rows(client, &t, chunk).await;
    }
    client.batch_execute("ANALYZE kt").await.unwrap();
    Some((t, rows))
}

async fn wait_copying(url: &str, run: &mut Background) -> Value {
    let deadline = Instant::now() + DEADLINE;
    let mut last = None;
    loop {
        if let Some(status) = run.try_status() {
            panic!(
                "pgrepart run ended ({status}) before a range was copied; last status {last:?}; stderr:\n{}",
                support::program::tail(&run.stderr_so_far(), 4000)
            );
        }
        if let Some(v) = inspect::status_json(url, "kt").await {
            if inspect::phase(&v) == "copying" && inspect::int(&v, "ranges_done").unwrap_or(0) >= 1
            {
                return v;
            }
            last = Some(v);
        }
        assert!(Instant::now() < deadline, "timed out; last status {last:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A collation that orders otherwise than C: ICU's en-US if the server has ICU, else a libc one.
async fn linguistic_collation(client: &Client) -> Option<String> {
    for name in ["en-US-x-icu", "en_US.utf8", "en_US.UTF-8"] {
        let found = client
            .query_opt(
                "SELECT 1 FROM pg_collation WHERE collname = $1 AND collencoding IN (-1, 6)",
                &[&name],
            )
            .await
            .unwrap();
        if found.is_some() {
            return Some(name.to_string());
        }
    }
    None
}

fn test_seed(kind: Kind) -> u64 {
    std::env::var("PGREPART_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15u64 ^ kind as u64)
}

async fn a_key_of_kind_is_copied_in_ranges_and_resumed(kind: Kind) {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let started = Instant::now();
        let db = unique_name("keys");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        let seed = test_seed(kind);
        let Some((t, rows)) = seed_table(&client, kind, seed).await else {
            eprintln!("SKIPPED: no linguistic collation on PostgreSQL {major}");
            continue;
        };
        eprintln!(
            "PostgreSQL {major}, {kind:?}: seeded {} rows (seed {seed})",
            rows.len()
        );

        let writer = KeyWriter::start(&url, t.clone(), rows, seed.rotate_left(7) | 1);
        writer.wait_for_more_ops(100).await;
        let args = run_args(&url);
        let mut first = spawn(&args);
        let v = wait_copying(&url, &mut first).await;
        let total = inspect::int(&v, "ranges_total").unwrap();
        // Each range on a snapshot of its own: the copy's oldest snapshot is young.
        if let Some(age) = v.get("copy_snapshot_age_seconds").and_then(Value::as_f64) {
            assert!(
                age < 60.0,
                "{kind:?}: the copy holds a snapshot {age} s old: {v}"
            );
        }
        assert!(total > 1, "{kind:?}: one range planned: {v}");
        let out = first.kill9().await;
        assert!(!out.status.success());
        writer.wait_for_more_ops(200).await;
        wait_until(DEADLINE, "the killed run to be gone", || async {
            inspect::status_json(&url, "kt")
                .await
                .is_some_and(|v| v.get("running") == Some(&Value::Bool(false)))
        })
        .await;

        let second = spawn(&args);
        // Writes go on during the resumed copy and the cutover.
        let out = second.wait_within(DEADLINE).await;
        assert!(
            out.status.success(),
            "{kind:?}: the resumed run failed on PostgreSQL {major}: {}",
            output_text(&out)
        );
        if !matches!(kind, Kind::SkewedInt) {
            // The resumed copy's changes went to their ranges through the source, in batches.
            let log = String::from_utf8_lossy(&out.stderr);
            assert!(
                log.contains("the changes' keys were routed by the source"),
                "{kind:?}: no change was routed during the copy:\n{}",
                support::program::tail(&log, 4000)
            );
        }
        let expected = writer.stop().await;
        assert_eq!(inspect::relkind(&client, "kt").await, Some('p'), "{kind:?}");
        let got = read_table(&client, &t, "kt").await;
        let missing: Vec<&Key> = expected
            .keys()
            .filter(|k| !got.contains_key(*k))
            .take(5)
            .collect();
        let extra: Vec<&Key> = got
            .keys()
            .filter(|k| !expected.contains_key(*k))
            .take(5)
            .collect();
        let differ = expected
            .iter()
            .filter(|(k, r)| got.get(*k).is_some_and(|g| g != *r))
            .count();
        assert!(
            missing.is_empty() && extra.is_empty() && differ == 0,
            "{kind:?} on PostgreSQL {major}: {} rows expected, {} found; missing {missing:?}, extra {extra:?}, {differ} differ",
            expected.len(),
            got.len()
        );
        let copied: Vec<i64> = client
            .query(
                "SELECT rows_copied FROM pgrepart.ranges ORDER BY range_no",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        eprintln!(
            "PostgreSQL {major}, {kind:?}: {total} ranges, rows copied per range {copied:?}; killed and resumed, equal row by row, in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        if let Kind::SkewedInt = kind {
            let (min, max) = (copied.iter().min().unwrap(), copied.iter().max().unwrap());
            assert!(
                *max <= 2 * (*min).max(1),
                "{kind:?}: ranges not balanced: {copied:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_uuid_key_is_copied_in_ranges_and_a_killed_run_resumes() {
    a_key_of_kind_is_copied_in_ranges_and_resumed(Kind::Uuid).await;
}

#[tokio::test]
async fn a_text_key_under_a_linguistic_collation_is_copied_in_ranges_and_resumed() {
    a_key_of_kind_is_copied_in_ranges_and_resumed(Kind::Text).await;
}

#[tokio::test]
async fn a_composite_key_is_copied_in_ranges_and_a_killed_run_resumes() {
    a_key_of_kind_is_copied_in_ranges_and_resumed(Kind::Composite).await;
}

#[tokio::test]
async fn a_skewed_integer_key_gets_balanced_ranges_and_a_killed_run_resumes() {
    a_key_of_kind_is_copied_in_ranges_and_resumed(Kind::SkewedInt).await;
}

/// `plan` cuts every kind of key into the ranges the run would copy (the same planner), reports
/// their balance in text and JSON, and creates nothing: no table, slot, publication or state.
#[tokio::test]
async fn plan_shows_the_ranges_of_every_kind_of_key_and_creates_nothing() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        for kind in [Kind::Uuid, Kind::Text, Kind::Composite, Kind::SkewedInt] {
            let db = unique_name("plankeys");
            let url = cluster.create_database(&db).await;
            let client = cluster.client(&db).await;
            let Some(_) = seed_table(&client, kind, test_seed(kind)).await else {
                eprintln!("SKIPPED: {kind:?}: no linguistic collation on PostgreSQL {major}");
                continue;
            };
            let before = inspect::relations(&client).await;
            let args = plan_args(&url, true);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = support::pgrepart(&args).await;
            assert!(out.status.success(), "{kind:?}: {}", output_text(&out));
            let v: Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("{kind:?}: plan --json: {e}: {}", output_text(&out)));
            let r = &v["copy_ranges"];
            let count = r["count"].as_u64().unwrap_or(0);
            let (min, max) = (
                r["rows_per_range_min"].as_i64().unwrap(),
                r["rows_per_range_max"].as_i64().unwrap(),
            );
            assert!(count > 1, "{kind:?} on PostgreSQL {major}: one range: {r}");
            assert!(
                r["sampled_keys"].as_u64().unwrap() >= count,
                "{kind:?}: {r}"
            );
            // Cut at the sample's quantiles: every kind of key, the skewed one too, balanced.
            assert!(
                min > 0 && max <= 2 * min,
                "{kind:?} on PostgreSQL {major}: ranges not balanced: {r}"
            );
            let bounds = v["key_ranges"].as_array().unwrap();
            match kind {
                // An integer key's bounds are shown, one per range; other keys' are data.
                Kind::SkewedInt => assert_eq!(bounds.len() as u64, count, "{v}"),
                _ => assert!(bounds.is_empty(), "{kind:?}: {v}"),
            }

            let args = plan_args(&url, false);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = support::pgrepart(&args).await;
            assert!(out.status.success(), "{kind:?}: {}", output_text(&out));
            let text = String::from_utf8_lossy(&out.stdout);
            let key = if let Kind::Composite = kind {
                "(tenant integer, id bigint)"
            } else {
                "(k "
            };
            assert!(
                text.contains(&format!("{count} key ranges on {key}")),
                "{kind:?}: {text}"
            );
            assert!(text.contains("rows each"), "{kind:?}: {text}");
            inspect::assert_nothing_left_behind(&client, &before).await;
            eprintln!("PostgreSQL {major}, {kind:?}: plan shows {r}");
            assert!(
                r["bytes_per_range_max"].as_i64().unwrap() > 0,
                "{kind:?}: {r}"
            );
            // Rows of about one size: cut on rows alone.
            assert_eq!(r["cut_on_bytes"], Value::Bool(false), "{kind:?}: {r}");
            if let Kind::Composite = kind {
                plan_balances_large_rows_that_cluster_in_the_key(&client, &url, major).await;
            }
            if let Kind::Uuid = kind {
                // Seeded in key order: each range is a run of pages.
                assert_eq!(r["scattered"], Value::Bool(false), "{r}");
                // The same rows stored in another order: plan says each range reads most pages.
                client
                    .batch_execute(
                        "CREATE TABLE kt_shuffled (LIKE kt INCLUDING ALL); \
                         INSERT INTO kt_shuffled SELECT * FROM kt ORDER BY md5(k::text || 'x'); \
                         ANALYZE kt_shuffled",
                    )
                    .await
                    .unwrap();
                let mut args = plan_args(&url, false);
                let at = args.iter().position(|a| a == "--table").unwrap();
                args[at + 1] = "kt_shuffled".into();
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let out = support::pgrepart(&args).await;
                assert!(out.status.success(), "{}", output_text(&out));
                let text = String::from_utf8_lossy(&out.stdout);
                assert!(
                    text.contains("the key is not in the table's physical order"),
                    "PostgreSQL {major}: {text}"
                );
            }
        }
    }
}

/// The same rows with a 1,504-byte note on the lowest 2 % of the keys (one tenant's first rows):
/// those rows hold about half the bytes. Cut on rows alone, the range holding them would hold half
/// the table's bytes; cut on rows and bytes together, no range holds much more than twice its
/// share of either, and the ranges of the large rows hold fewer rows.
async fn plan_balances_large_rows_that_cluster_in_the_key(client: &Client, url: &str, major: u32) {
    client
        .batch_execute(
            "CREATE TABLE kt_heavy (LIKE kt INCLUDING ALL, note text); \
             INSERT INTO kt_heavy SELECT tenant, id, region, v, CASE WHEN n <= (SELECT count(*) / 50 FROM kt) THEN \
               (SELECT string_agg(md5(k.id::text || j::text), '') FROM generate_series(1, 47) j) END \
             FROM (SELECT kt.*, row_number() OVER (ORDER BY tenant, id) AS n FROM kt) AS k; \
             ANALYZE kt_heavy",
        )
        .await
        .unwrap();
    let total: i64 = client
        .query_one(
            "SELECT sum(pg_column_size(t.*))::bigint FROM kt_heavy AS t",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let mut args = plan_args(url, true);
    let at = args.iter().position(|a| a == "--table").unwrap();
    args[at + 1] = "kt_heavy".into();
    // 16 ranges: each one's share of the bytes is 1/16.
    let at = args.iter().position(|a| a == "--jobs").unwrap();
    args[at + 1] = "8".into();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = support::pgrepart(&args).await;
    assert!(out.status.success(), "{}", output_text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &v["copy_ranges"];
    let count = r["count"].as_i64().unwrap();
    let (min, max) = (
        r["rows_per_range_min"].as_i64().unwrap(),
        r["rows_per_range_max"].as_i64().unwrap(),
    );
    let bytes_max = r["bytes_per_range_max"].as_i64().unwrap();
    assert!(count >= 8, "PostgreSQL {major}: {r}");
    assert_eq!(
        r["cut_on_bytes"],
        Value::Bool(true),
        "PostgreSQL {major}: {r}"
    );
    // Cut on rows alone, one range would hold about half the bytes (1/2 of them on 1/50 of the
    // rows); cut on both, about 2/16 at most, a sample's error aside.
    assert!(
        bytes_max * 4 <= total,
        "PostgreSQL {major}: a range holds {bytes_max} of {total} bytes: {r}"
    );
    assert!(
        max >= 3 * min,
        "PostgreSQL {major}: the large rows' ranges hold as many rows as the others: {r}"
    );
    eprintln!("PostgreSQL {major}: large rows clustered in the key, {total} bytes: plan shows {r}");
}
