//! Secondary indexes of a generated target, built once the copy is done: per partition, on up to
//! `jobs` sessions at once, instead of one `CREATE INDEX ON parent` that builds the partitions one
//! after the other.
//!
//! ```text
//! control:   CREATE INDEX ON ONLY parent (...)           (invalid until every partition has one)
//! session 1: CREATE INDEX ON part_a (...); ... ──┐
//! session 2: CREATE INDEX ON part_b (...); ... ──┼──► control: ALTER INDEX parent_idx
//!   ...                                        ──┘              ATTACH PARTITION part_idx
//!                                                    (the parent index turns valid with the last one)
//! ```
//! One session builds all the indexes of a partition, so the index a build created is the one that
//! appeared on that partition. The control session holds a SHARE lock on the parent (ONLY the
//! parent) from start to end: the applier writes through the parent, so it waits there rather than
//! taking partitions' locks between the builds (a convoy that slowed them down tenfold under
//! writes). Partition builds commit one by one: a rerun (resume) first drops what an interrupted
//! build left, which on a generated target is every index that backs no constraint.
//!
//! A primary key built after the copy (`--primary-key`, `KeyTiming`) goes the same way: each
//! session first runs `ALTER TABLE part ADD PRIMARY KEY (...)` on its partition (its own lock on
//! the partition is why the parent's lock is ONLY), and the control session ends with
//! `ALTER TABLE parent ADD PRIMARY KEY (...)`, which attaches the partitions' keys instead of
//! building them again. A partition whose key an interrupted run already built keeps it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio_postgres::{Client, Config};

use crate::error::{Error, Result};
use crate::pg::ddl::IndexPlan;
use crate::pg::ident::QualifiedName;

/// When a generated target gets its primary key (`pgrepart run --primary-key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyTiming {
    /// After the copy when the source server commits no write transactions of its own as the run
    /// starts (nothing would wait for the key); before it otherwise.
    Auto,
    /// With the new table: changes to copied key ranges apply while the copy runs.
    BeforeCopy,
    /// With the other indexes once the copy is done: each row copied costs no index insert, but
    /// every change waits (in the stream's channel, then in the slot) until the key is built.
    AfterCopy,
}

impl KeyTiming {
    /// Whether the key is built after the copy, given whether the source was quiet at the start.
    pub fn after_copy(self, source_quiet: bool) -> bool {
        match self {
            KeyTiming::Auto => source_quiet,
            KeyTiming::BeforeCopy => false,
            KeyTiming::AfterCopy => true,
        }
    }
}

/// `CREATE [UNIQUE] INDEX ON target USING ...` split around its table: ("CREATE [UNIQUE] INDEX",
/// "USING ..."). `None` when the statement does not have that form.
pub fn split_plan(sql: &str, target: &QualifiedName) -> Option<(String, String)> {
    let on = format!(" ON {} ", target.sql());
    let at = sql.find(&on)?;
    let (head, tail) = (&sql[..at], &sql[at + on.len()..]);
    (head == "CREATE INDEX" || head == "CREATE UNIQUE INDEX")
        .then(|| (head.to_string(), tail.to_string()))
}

/// The backends that build the new table's indexes (and analyze it), so that an interrupted run can
/// stop them: a client dropped in the middle of a statement does not stop the statement, its
/// connection waits for the answer, and the server goes on building.
#[derive(Debug, Clone, Default)]
pub struct Backends(Arc<Mutex<Vec<i32>>>);

impl Backends {
    /// Adds `session`'s backend.
    pub async fn register(&self, session: &Client) -> Result<()> {
        let pid: i32 = session
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .map_err(|e| Error::db("preparing an index build session", e))?
            .get(0);
        self.0.lock().expect("backends").push(pid);
        Ok(())
    }

    pub fn pids(&self) -> Vec<i32> {
        self.0.lock().expect("backends").clone()
    }

    /// Cancels whatever the registered backends are running, from a session of its own.
    pub async fn cancel(&self, config: &Config) -> Result<()> {
        let pids = self.pids();
        if pids.is_empty() {
            return Ok(());
        }
        let session = crate::pg::connect(config, "pgrepart cancel").await?;
        session
            .execute(
                "SELECT pg_cancel_backend(p) FROM unnest($1::int4[]) AS p",
                &[&pids],
            )
            .await
            .map_err(|e| Error::db("cancelling the index builds", e))?;
        Ok(())
    }
}

/// What `build` builds: the source's secondary indexes, and the primary key when it was left
/// for after the copy (its quoted column list).
pub struct Work<'a> {
    pub plans: &'a [IndexPlan],
    pub primary_key: Option<&'a str>,
    /// The source runs a workload (the governor paced the copy): one session, no parallel
    /// workers, and after each partition's builds a pause as long as they took.
    pub gentle: bool,
}

/// The sessions that build the indexes of `partitions` partitions with `jobs` allowed (pure):
/// one when `gentle`.
pub fn build_sessions(jobs: usize, partitions: usize, gentle: bool) -> usize {
    if gentle {
        partitions.min(1)
    } else {
        jobs.max(1).min(partitions)
    }
}

/// Builds `work` on `target` and its partitions; returns when every index is valid. The sessions
/// it opens are added to `backends`.
pub async fn build(
    control: &Client,
    config: &Config,
    jobs: usize,
    target: &QualifiedName,
    work: Work<'_>,
    backends: &Backends,
) -> Result<()> {
    if work.plans.is_empty() && work.primary_key.is_none() {
        return Ok(());
    }
    // Each in a transaction of its own: dropping an index locks its table ACCESS EXCLUSIVE, and
    // held to the end of the build's transaction those locks would stop every partition's build.
    drop_leftovers(control, target).await?;
    control
        .batch_execute(&format!(
            "BEGIN; LOCK TABLE ONLY {} IN SHARE MODE",
            target.sql()
        ))
        .await
        .map_err(|e| Error::db("locking the new table for its index build", e))?;
    let built = build_locked(control, config, jobs, target, work, backends).await;
    let end = if built.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = control
        .batch_execute(end)
        .await
        .map_err(|e| Error::db("committing the index build", e));
    built.and(ended)
}

async fn build_locked(
    control: &Client,
    config: &Config,
    jobs: usize,
    target: &QualifiedName,
    work: Work<'_>,
    backends: &Backends,
) -> Result<()> {
    let Work {
        plans,
        primary_key,
        gentle,
    } = work;
    let partitions = partitions_largest_first(control, target).await?;
    let splits: Option<Vec<(String, String)>> =
        plans.iter().map(|p| split_plan(&p.sql, target)).collect();
    let (Some(splits), Some(partitions)) = (splits, partitions) else {
        // Sub-partitioned target or an unusual statement: let PostgreSQL recurse.
        if let Some(key) = primary_key {
            tracing::info!("building the primary key");
            control
                .batch_execute(&add_primary_key(&target.sql(), key))
                .await
                .map_err(|e| Error::db("building the new table's primary key", e))?;
        }
        for plan in plans {
            tracing::info!(index = %plan.source_index, "building index");
            control
                .batch_execute(&plan.sql)
                .await
                .map_err(|e| build_error(plan, e))?;
        }
        return Ok(());
    };

    let mut parent_indexes = Vec::with_capacity(plans.len());
    for (plan, (head, tail)) in plans.iter().zip(&splits) {
        let before = index_oids(control, &target.sql()).await?;
        control
            .batch_execute(&format!("{head} ON ONLY {} {tail}", target.sql()))
            .await
            .map_err(|e| build_error(plan, e))?;
        parent_indexes.push(new_index(control, &target.sql(), &before).await?);
    }

    let queue = Arc::new(Mutex::new(VecDeque::from(partitions)));
    let work = Arc::new((plans.to_vec(), splits, primary_key.map(str::to_string)));
    let mut workers = tokio::task::JoinSet::new();
    let sessions = build_sessions(jobs, queue.lock().expect("index queue").len(), gentle);
    tracing::info!(
        indexes = plans.len(),
        primary_key = primary_key.is_some(),
        sessions,
        gentle,
        "building indexes per partition{}",
        if gentle {
            ", one at a time with a pause as long as each (the source runs a workload)"
        } else {
            ""
        }
    );
    for _ in 0..sessions {
        let (queue, work, config) = (queue.clone(), work.clone(), config.clone());
        let backends = backends.clone();
        workers.spawn(async move {
            let session = crate::pg::connect(&config, "pgrepart index").await?;
            backends.register(&session).await?;
            // Tests: hold with an index session open, the parent's lock taken.
            crate::fault::pause("index-build").await;
            if crate::fault::enabled("index-build-waits") {
                // Tests: a build that takes as long as the test wants.
                session
                    .batch_execute("SELECT pg_sleep(3600)")
                    .await
                    .map_err(|e| Error::db("waiting at test fault point index-build-waits", e))?;
            }
            if sessions > 1 || gentle {
                // The sessions already use the cores: parallel workers of their own would
                // only contend with the other builds (or with the application).
                session
                    .batch_execute("SET max_parallel_maintenance_workers = 0")
                    .await
                    .map_err(|e| Error::db("preparing an index build session", e))?;
            }
            let mut built = Vec::new();
            loop {
                let next = queue.lock().expect("index queue").pop_front();
                let Some(partition) = next else { break };
                let started = std::time::Instant::now();
                if let Some(key) = &work.2 {
                    add_partition_key(&session, &partition, key).await?;
                }
                for (i, (plan, (head, tail))) in work.0.iter().zip(&work.1).enumerate() {
                    tracing::info!(index = %plan.source_index, partition = %partition, "building index");
                    let before = index_oids(&session, &partition).await?;
                    session
                        .batch_execute(&format!("{head} ON {partition} {tail}"))
                        .await
                        .map_err(|e| build_error(plan, e))?;
                    built.push((i, new_index(&session, &partition, &before).await?));
                }
                if gentle {
                    // The application's queue drains before the next partition's burst.
                    tokio::time::sleep(started.elapsed()).await;
                }
            }
            Ok::<_, Error>(built)
        });
    }
    let mut built = Vec::new();
    while let Some(result) = workers.join_next().await {
        let result =
            result.unwrap_or_else(|e| Err(Error::failed(format!("an index build crashed: {e}"))));
        match result {
            Ok(b) => built.extend(b),
            Err(e) => {
                workers.abort_all();
                return Err(e);
            }
        }
    }
    // Tests: every partition's indexes (and key) committed, none attached yet.
    crate::fault::point("partition-indexes-built");
    for (i, index) in built {
        control
            .batch_execute(&format!(
                "ALTER INDEX {} ATTACH PARTITION {index}",
                parent_indexes[i]
            ))
            .await
            .map_err(|e| Error::db("attaching a partition's index", e))?;
    }
    if let Some(key) = primary_key {
        // Every partition has its key now: this attaches them and builds nothing.
        control
            .batch_execute(&add_primary_key(&target.sql(), key))
            .await
            .map_err(|e| Error::db("attaching the partitions' primary keys", e))?;
    }
    Ok(())
}

fn add_primary_key(table: &str, key: &str) -> String {
    format!("ALTER TABLE {table} ADD PRIMARY KEY ({key})")
}

/// Builds `partition`'s primary key, unless an interrupted run already did.
async fn add_partition_key(session: &Client, partition: &str, key: &str) -> Result<()> {
    let has_key: bool = session
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = $1::text::regclass AND contype = 'p')",
            &[&partition],
        )
        .await
        .map_err(|e| Error::db("looking for a partition's primary key", e))?
        .get(0);
    if has_key {
        return Ok(());
    }
    tracing::info!(partition = %partition, "building the primary key");
    session
        .batch_execute(&add_primary_key(partition, key))
        .await
        .map_err(|e| Error::db(format!("building the primary key of {partition}"), e))
}

fn build_error(plan: &IndexPlan, e: tokio_postgres::Error) -> Error {
    Error::db(
        format!("building the copy of index {}", plan.source_index),
        e,
    )
}

/// The target's direct partitions as quoted names, largest first; `None` when one of them is
/// itself partitioned.
async fn partitions_largest_first(
    control: &Client,
    target: &QualifiedName,
) -> Result<Option<Vec<String>>> {
    let rows = control
        .query(
            "SELECT c.oid::regclass::text, c.relkind = 'p' FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = $1::text::regclass ORDER BY pg_relation_size(c.oid) DESC, c.oid",
            &[&target.sql()],
        )
        .await
        .map_err(|e| Error::db("listing the new table's partitions", e))?;
    if rows.is_empty() || rows.iter().any(|r| r.get::<_, bool>(1)) {
        return Ok(None);
    }
    Ok(Some(rows.iter().map(|r| r.get(0)).collect()))
}

/// Indexes of `target` (first) and of its partitions that back no constraint: left by an
/// interrupted build. Dropping a parent index drops the partition indexes attached to it.
async fn drop_leftovers(control: &Client, target: &QualifiedName) -> Result<()> {
    let rows = control
        .query(
            "SELECT x.indexrelid::regclass::text FROM pg_index x \
             WHERE (x.indrelid = $1::text::regclass \
                    OR x.indrelid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = $1::text::regclass)) \
               AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid) \
             ORDER BY x.indrelid <> $1::text::regclass",
            &[&target.sql()],
        )
        .await
        .map_err(|e| Error::db("looking for indexes left by an interrupted build", e))?;
    for r in rows {
        let index: String = r.get(0);
        tracing::info!(index = %index, "dropping an index left by an interrupted build");
        control
            .batch_execute(&format!("DROP INDEX IF EXISTS {index}"))
            .await
            .map_err(|e| Error::db("dropping an index left by an interrupted build", e))?;
    }
    Ok(())
}

async fn index_oids(session: &Client, table: &str) -> Result<Vec<u32>> {
    let rows = session
        .query(
            "SELECT indexrelid FROM pg_index WHERE indrelid = $1::text::regclass",
            &[&table],
        )
        .await
        .map_err(|e| Error::db("listing indexes", e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

async fn new_index(session: &Client, table: &str, before: &[u32]) -> Result<String> {
    let rows = session
        .query(
            "SELECT indexrelid::regclass::text FROM pg_index \
             WHERE indrelid = $1::text::regclass AND NOT indexrelid = ANY($2)",
            &[&table, &before],
        )
        .await
        .map_err(|e| Error::db("finding a new index", e))?;
    match rows.as_slice() {
        [r] => Ok(r.get(0)),
        _ => Err(Error::failed(format!(
            "expected one new index on {table}, found {}",
            rows.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paced_copy_builds_its_indexes_on_one_session() {
        assert_eq!(build_sessions(4, 8, false), 4);
        assert_eq!(build_sessions(4, 2, false), 2);
        assert_eq!(build_sessions(0, 8, false), 1);
        assert_eq!(build_sessions(4, 8, true), 1);
        assert_eq!(build_sessions(4, 0, true), 0);
    }

    #[test]
    fn plans_split_around_the_target_name() {
        let t = QualifiedName::new("public", "orders_new");
        assert_eq!(
            split_plan(
                "CREATE INDEX ON \"public\".\"orders_new\" USING btree (order_date)",
                &t
            ),
            Some(("CREATE INDEX".into(), "USING btree (order_date)".into()))
        );
        assert_eq!(
            split_plan(
                "CREATE UNIQUE INDEX ON \"public\".\"orders_new\" USING btree (id, region) WHERE (amount > 0)",
                &t
            ),
            Some((
                "CREATE UNIQUE INDEX".into(),
                "USING btree (id, region) WHERE (amount > 0)".into()
            ))
        );
    }

    #[test]
    fn statements_of_another_form_are_not_split() {
        let t = QualifiedName::new("public", "orders_new");
        assert_eq!(
            split_plan("CREATE INDEX ON \"public\".\"other\" USING btree (a)", &t),
            None
        );
        assert_eq!(
            split_plan(
                "CREATE INDEX CONCURRENTLY ON \"public\".\"orders_new\" USING btree (a)",
                &t
            ),
            None
        );
    }
}
