//! The rollback window across databases (`--target`): the reverse stream runs from the target
//! back to the source, and the revert is two commits, like the cross-database cutover
//! (`crate::cross_cutover`) with the roles exchanged (docs/design.md §11).
//!
//! ```text
//! before the lock:  on the target: CREATE PUBLICATION <rev> FOR TABLE T_new (publish_via_partition_root),
//!                   pg_create_logical_replication_slot(<rev>); on the source: pgrepart.reverse_conflicts
//! cutover (§7):     target: ... rename ...; reverse_start_lsn = pg_current_wal_insert_lsn(); COMMIT
//! window:           target T ──<rev>──► applier ──► source T_old (session_replication_role = replica)
//! revert:           source: forward publication on T_old and forward slot (`prepare_forward`)
//!                   target: BEGIN; lock T; fence; drain; read T's sequences and the candidates' rows
//!                   source: BEGIN; settle the candidates; T_old -> T; setval past the target's;
//!                           F recorded in pgrepart.revert_positions; COMMIT                      (1st)
//!                   target: --force extra rows deleted; T -> T_repart; streaming from F; COMMIT (2nd)
//! after:            drop <rev> on the target; the candidates and F on the source; the run streams
//!                   source T ──forward slot from F──► target T_repart until `pgrepart cutover`
//! finish / end:     drop <rev> on the target; the migration's candidates on the source
//! ```
//!
//! **A crash between the revert's two commits.** The source has T under its name again; the
//! target's lock died with the session, so the application may write to the target's T again.
//! Those writes are in the reverse slot (dropped only after the second commit, confirmed only up
//! to positions reached while the target's T was locked), so the rerun streams them into the
//! source's T (the old table's name is gone: [`old_table`] finds it), locks the target again,
//! fences, drains, settles, raises the sequences again and renames there, with the F the first
//! commit recorded ([`record_start_sql`]): the source's writes since are in the forward slot.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tokio_postgres::{Client, GenericClient};

use super::revert::Outcome;
use crate::config::RunConfig;
use crate::cutover::{self, FenceSpec, Locked};
use crate::error::{Error, Result};
use crate::lsn::Lsn;
use crate::pg::ident::{QualifiedName, quote_ident, quote_literal};
use crate::state::Migration;

/// What the target and the source must allow for a window across databases (pure): the
/// target's `wal_level`, whether the role may replicate there, whether the source database holds
/// pgrepart's state of its own migrations (whose `reverse_conflicts` references them), and whether
/// the source session may set `session_replication_role` (the reverse apply's writes must not
/// fire the old table's triggers, which stay on it).
pub fn target_refusals(
    target_wal_level: &str,
    target_can_replicate: bool,
    source_holds_state: bool,
    source_replica_role: bool,
) -> Vec<String> {
    let mut why = Vec::new();
    if target_wal_level != "logical" {
        why.push(format!(
            "the target's wal_level is {target_wal_level}: the reverse stream decodes the target's WAL, which needs wal_level = logical there (ALTER SYSTEM SET wal_level = logical on the target, then restart it)"
        ));
    }
    if !target_can_replicate {
        why.push(
            "the role has neither REPLICATION nor superuser on the target: the reverse slot is made there"
                .into(),
        );
    }
    if source_holds_state {
        why.push(
            "the source database holds pgrepart's state of migrations of its own (schema pgrepart): the reverse stream's conflict table there would be theirs"
                .into(),
        );
    }
    if !source_replica_role {
        why.push(
            "the role cannot set session_replication_role on the source (superuser, or on 15+ GRANT SET ON PARAMETER session_replication_role): the reverse stream's writes to the old table would fire its triggers"
                .into(),
        );
    }
    why
}

/// Reads what [`target_refusals`] judges.
pub async fn refusals(source: &Client, target: &Client) -> Result<Vec<String>> {
    let ctx = |e| Error::db("checking the target for the rollback window", e);
    let row = target
        .query_one(
            "SELECT current_setting('wal_level'), \
             (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user)",
            &[],
        )
        .await
        .map_err(ctx)?;
    let (wal_level, replicate): (String, bool) = (row.get(0), row.get(1));
    let holds_state: bool = source
        .query_one("SELECT to_regclass('pgrepart.migrations') IS NOT NULL", &[])
        .await
        .map_err(ctx)?
        .get(0);
    let replica_role = source
        .batch_execute("SET session_replication_role = replica; RESET session_replication_role")
        .await
        .is_ok();
    Ok(target_refusals(
        &wal_level,
        replicate,
        holds_state,
        replica_role,
    ))
}

/// Refuses a window across databases that cannot work, before anything is made.
pub async fn refuse(source: &Client, target: &Client) -> Result<()> {
    let why = refusals(source, target).await?;
    if why.is_empty() {
        return Ok(());
    }
    Err(Error::refused(format!(
        "--rollback-window with --target: {}",
        why.join("; ")
    ))
    .with_hint("fix that, or run without --rollback-window"))
}

/// The conflict candidates' table in the source database (the reverse apply records them in its
/// own transaction there); without the state's foreign key, the state being in the target. And
/// the position where the forward stream starts again after a revert (F), recorded by the
/// revert's first commit (the source's), so that it outlives a crash before the second.
const SOURCE_CONFLICTS_DDL: &str = "CREATE SCHEMA IF NOT EXISTS pgrepart; \
CREATE TABLE IF NOT EXISTS pgrepart.reverse_conflicts (\
 migration_id bigint NOT NULL, key text[] NOT NULL, first_seen timestamptz NOT NULL DEFAULT now(), \
 PRIMARY KEY (migration_id, key)); \
CREATE TABLE IF NOT EXISTS pgrepart.revert_positions (\
 migration_id bigint PRIMARY KEY, forward_start_lsn pg_lsn NOT NULL, \
 recorded_at timestamptz NOT NULL DEFAULT now())";

/// Before the cutover's lock: the checks, the source's conflict table, the reverse publication
/// and slot on the target (`super::prepare_reverse`, whose client is the target here).
pub async fn prepare(source: &Client, target: &Client, m: &Migration) -> Result<()> {
    refuse(source, target).await?;
    source
        .batch_execute(SOURCE_CONFLICTS_DDL)
        .await
        .map_err(|e| Error::db("creating the conflict table on the source", e))?;
    super::prepare_reverse(target, m).await
}

/// The migration's records removed from the source: its candidates and its revert's F (safe to
/// repeat; nothing when a table is not there).
pub async fn forget_conflicts(source: &Client, migration_id: i64) -> Result<()> {
    source
        .batch_execute(&format!(
            "DO $$ BEGIN IF to_regclass('pgrepart.reverse_conflicts') IS NOT NULL THEN \
             DELETE FROM pgrepart.reverse_conflicts WHERE migration_id = {migration_id}; END IF; \
             IF to_regclass('pgrepart.revert_positions') IS NOT NULL THEN \
             DELETE FROM pgrepart.revert_positions WHERE migration_id = {migration_id}; END IF; END $$"
        ))
        .await
        .map_err(|e| Error::db("removing the migration's records on the source", e))
}

/// Before the revert's lock, across databases: the forward publication and slot on the source
/// (`again::prepare_forward`), on the old table under the name it has now (`T_old`, or `T`
/// after a crash between the revert's commits), and the table that records F there.
pub async fn prepare_forward(source: &Client, m: &Migration) -> Result<()> {
    source
        .batch_execute(SOURCE_CONFLICTS_DDL)
        .await
        .map_err(|e| Error::db("creating pgrepart's tables on the source", e))?;
    let old = old_table(source, m).await?;
    super::again::prepare_forward(source, m, &old).await
}

/// In the source's transaction of the revert, after the rename (pure): F recorded and returned.
/// The first commit of a revert reads F here (`first`), replacing a position left by an earlier
/// revert of the migration; a rerun after a crash between the two commits keeps the F that
/// commit recorded (a new one would skip the source's writes made since), or reads one when
/// none was recorded.
pub fn record_start_sql(migration_id: i64, first: bool) -> String {
    format!(
        "INSERT INTO pgrepart.revert_positions AS r (migration_id, forward_start_lsn) \
         VALUES ({migration_id}, pg_current_wal_insert_lsn()) ON CONFLICT (migration_id) DO UPDATE \
         SET forward_start_lsn = {}, recorded_at = {} RETURNING r.forward_start_lsn::text",
        if first {
            "excluded.forward_start_lsn"
        } else {
            "r.forward_start_lsn"
        },
        if first { "now()" } else { "r.recorded_at" }
    )
}

/// Whether a refused revert drops the forward slot (pure): not once the source's commit renamed
/// the table back (a rerun after a crash between the commits, refused by a conflict made in the
/// gap): F is recorded, and a slot made again later would start after the source's writes
/// since F.
pub fn refusal_drops_forward(source_reverted: bool) -> bool {
    !source_reverted
}

/// Under `--force`, the rows of the conflicts that the source's table does not hold, deleted
/// from the partitioned table in the target's commit (pure). `kept`, on the source (`$1` a JSON
/// array of the open keys): the source's rows of them, as objects of the new key's columns;
/// `delete`, on the target (`$1` the same keys, `$2` what `kept` returned): the partitioned
/// table's rows of those keys whose new key is not among them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraRowsSql {
    pub kept: String,
    pub delete: String,
}

/// `repart`: the partitioned table after the target's rename; `old`: the source's table;
/// `old_key`: its key (name, type); `new_key`: the partitioned table's (name, type).
pub fn cross_extra_rows_sql(
    repart: &QualifiedName,
    old: &QualifiedName,
    old_key: &[(String, String)],
    new_key: &[(String, String)],
) -> ExtraRowsSql {
    let by_key = |alias: &str| -> String {
        old_key
            .iter()
            .enumerate()
            .map(|(i, (name, ty))| format!("{alias}.{} = (c.key->>{i})::{ty}", quote_ident(name)))
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    let object: Vec<String> = new_key
        .iter()
        .map(|(name, _)| format!("{}, o.{}", quote_literal(name), quote_ident(name)))
        .collect();
    let same_row: Vec<String> = new_key
        .iter()
        .map(|(name, ty)| {
            format!(
                "n.{} = (k.row->>{})::{ty}",
                quote_ident(name),
                quote_literal(name)
            )
        })
        .collect();
    ExtraRowsSql {
        kept: format!(
            "SELECT coalesce(jsonb_agg(jsonb_build_object({})), '[]'::jsonb)::text FROM {} o \
             WHERE EXISTS (SELECT FROM jsonb_array_elements($1::text::jsonb) AS c(key) WHERE {})",
            object.join(", "),
            old.sql(),
            by_key("o")
        ),
        delete: format!(
            "DELETE FROM {} n USING jsonb_array_elements($1::text::jsonb) AS c(key) WHERE {} \
             AND NOT EXISTS (SELECT FROM jsonb_array_elements($2::text::jsonb) AS k(row) WHERE {})",
            repart.sql(),
            by_key("n"),
            same_row.join(" AND ")
        ),
    }
}

/// The source table the reverse stream writes to: `T_old`, or `T` once the revert's first
/// commit (the source's) has renamed it back.
pub async fn old_table(source: &Client, m: &Migration) -> Result<QualifiedName> {
    if source_reverted(source, m).await? {
        Ok(m.source.clone())
    } else {
        Ok(m.source.sibling(m.old_name.clone()))
    }
}

/// Whether the revert's first commit happened: the source has `T` and no `T_old`.
pub async fn source_reverted(source: &Client, m: &Migration) -> Result<bool> {
    crate::cross_cutover::source_renamed(
        source,
        &m.source.sibling(m.old_name.clone()),
        &m.source.name,
    )
    .await
}

/// The statements of the conflict check across the two databases (pure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrossConflictSql {
    /// Source: the candidate keys (`text[]`), oldest first.
    pub candidates: String,
    /// Target, `$1` a JSON array of keys (arrays of text): per key its position (1-based), the
    /// new table's rows of it, and the row (jsonb) when there is exactly one.
    pub probe: String,
    /// Source, `$1` a JSON array of keys: the old table's rows of them removed...
    pub delete: String,
    /// ...and `$1` a JSON array of rows (objects by column name) inserted.
    pub insert: String,
}

/// `new_t`: the partitioned table (target); `old`: the table on the source; `key`: the old
/// table's key (name, type); `columns`: the columns written.
pub fn cross_conflict_sql(
    new_t: &QualifiedName,
    old: &QualifiedName,
    key: &[(String, String)],
    columns: &[String],
    migration_id: i64,
) -> CrossConflictSql {
    let cond = |alias: &str| -> String {
        key.iter()
            .enumerate()
            .map(|(i, (name, ty))| format!("{alias}.{} = (c.key->>{i})::{ty}", quote_ident(name)))
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    let cols: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
    let r_cols: Vec<String> = cols.iter().map(|c| format!("r.{c}")).collect();
    CrossConflictSql {
        candidates: format!(
            "SELECT key FROM pgrepart.reverse_conflicts WHERE migration_id = {migration_id} \
             ORDER BY first_seen, key"
        ),
        probe: format!(
            "SELECT c.ord, x.rows, CASE WHEN x.rows = 1 THEN x.one::text END \
             FROM jsonb_array_elements($1::text::jsonb) WITH ORDINALITY AS c(key, ord) \
             CROSS JOIN LATERAL (SELECT count(*) AS rows, (array_agg(to_jsonb(n)))[1] AS one \
             FROM {} n WHERE {}) x ORDER BY c.ord",
            new_t.sql(),
            cond("n")
        ),
        delete: format!(
            "DELETE FROM {} o USING jsonb_array_elements($1::text::jsonb) AS c(key) WHERE {}",
            old.sql(),
            cond("o")
        ),
        insert: format!(
            "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} \
             FROM jsonb_populate_recordset(NULL::{}, $1::text::jsonb) r",
            old.sql(),
            cols.join(", "),
            r_cols.join(", "),
            old.sql()
        ),
    }
}

/// What the probe found (pure): the keys still conflicting (more than one row), and the keys
/// and rows that settle the others (zero or one row).
#[derive(Debug, Default, PartialEq)]
pub struct Judged {
    pub open: Vec<Vec<Option<String>>>,
    pub settle_keys: Vec<Vec<Option<String>>>,
    pub settle_rows: Vec<Value>,
}

pub fn judge(keys: &[Vec<Option<String>>], probed: &[(i64, i64, Option<Value>)]) -> Judged {
    let mut j = Judged::default();
    for (ord, rows, one) in probed {
        let Some(key) = keys.get((*ord - 1) as usize) else {
            continue;
        };
        if *rows > 1 {
            j.open.push(key.clone());
        } else {
            j.settle_keys.push(key.clone());
            if let Some(row) = one {
                j.settle_rows.push(row.clone());
            }
        }
    }
    j
}

struct Shape {
    sql: CrossConflictSql,
    names: Vec<String>,
}

/// The statements for `m` with the old table `old` on the source; `None` when a table is gone.
async fn shape(
    target: &impl GenericClient,
    source: &impl GenericClient,
    m: &Migration,
    old: &QualifiedName,
) -> Result<Option<Shape>> {
    let key = super::conflicts::key_of(source, old).await?;
    let columns = super::conflicts::columns_of(target, &m.final_name()).await?;
    if key.is_empty() || columns.is_empty() {
        return Ok(None);
    }
    Ok(Some(Shape {
        sql: cross_conflict_sql(&m.final_name(), old, &key, &columns, m.id),
        names: key.into_iter().map(|k| k.0).collect(),
    }))
}

async fn candidates(
    source: &impl GenericClient,
    sql: &CrossConflictSql,
) -> Result<Vec<Vec<Option<String>>>> {
    let rows = source
        .query(&sql.candidates, &[])
        .await
        .map_err(|e| Error::db("reading the conflict candidates on the source", e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

async fn probe(
    target: &impl GenericClient,
    sql: &CrossConflictSql,
    keys: &[Vec<Option<String>>],
) -> Result<Judged> {
    let json = serde_json::to_string(keys).expect("keys serialize");
    let rows = target
        .query(&sql.probe, &[&json])
        .await
        .map_err(|e| Error::db("reading the candidates' rows on the target", e))?;
    let mut probed = Vec::with_capacity(rows.len());
    for r in &rows {
        let one: Option<String> = r.get(2);
        let one = match one {
            Some(t) => Some(serde_json::from_str(&t).map_err(|e| {
                Error::failed(format!("a row read on the target is not JSON: {e}"))
            })?),
            None => None,
        };
        probed.push((r.get::<_, i64>(0), r.get::<_, i64>(1), one));
    }
    Ok(judge(keys, &probed))
}

/// The conflicts of `m` now (`status`, the window's figures): the candidates recorded on the
/// source of which the target's table holds more than one row.
pub async fn open_conflicts(
    target: &Client,
    source: &Client,
    m: &Migration,
) -> Result<Vec<String>> {
    let old = old_table(source, m).await?;
    let Some(s) = shape(target, source, m, &old).await? else {
        return Ok(Vec::new());
    };
    let keys = candidates(source, &s.sql).await?;
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let j = probe(target, &s.sql, &keys).await?;
    Ok(j.open
        .iter()
        .map(|k| super::conflicts::describe_key(&s.names, k))
        .collect())
}

/// The conflicts left by the settling: their keys (the candidates' `text[]`) and, for messages,
/// their descriptions.
#[derive(Debug, Default)]
struct Open {
    keys: Vec<Vec<Option<String>>>,
    described: Vec<String>,
}

/// Under the revert: the candidates judged on the target (`ttx`, holding the lock) and settled
/// on the source (`stx`); returns the conflicts left.
async fn settle(
    ttx: &impl GenericClient,
    stx: &impl GenericClient,
    m: &Migration,
    old: &QualifiedName,
) -> Result<Open> {
    let Some(s) = shape(ttx, stx, m, old).await? else {
        return Ok(Open::default());
    };
    let keys = candidates(stx, &s.sql).await?;
    if keys.is_empty() {
        return Ok(Open::default());
    }
    let j = probe(ttx, &s.sql, &keys).await?;
    let ctx = |e| Error::db("settling the conflict candidates on the source", e);
    if !j.settle_keys.is_empty() {
        let keys = serde_json::to_string(&j.settle_keys).expect("keys serialize");
        stx.execute(&s.sql.delete, &[&keys]).await.map_err(ctx)?;
    }
    if !j.settle_rows.is_empty() {
        let rows = Value::Array(j.settle_rows.clone()).to_string();
        stx.execute(&s.sql.insert, &[&rows]).await.map_err(ctx)?;
    }
    Ok(Open {
        described: j
            .open
            .iter()
            .map(|k| super::conflicts::describe_key(&s.names, k))
            .collect(),
        keys: j.open,
    })
}

/// Under `--force`, in the source's transaction (the table back under its name): the source's
/// rows of the conflicts left, by the partitioned table's key (`cross_extra_rows_sql`); with the
/// statement that deletes the others from the partitioned table on the target.
async fn kept_rows(
    ttx: &impl GenericClient,
    stx: &impl GenericClient,
    m: &Migration,
    open_keys: &[Vec<Option<String>>],
) -> Result<(String, String)> {
    let old_key = super::conflicts::key_of(stx, &m.source).await?;
    let new_key = super::conflicts::key_of(ttx, &m.final_name()).await?;
    if old_key.is_empty() || new_key.is_empty() {
        return Err(Error::failed(format!(
            "{} or {} has no primary key: the conflicts' extra rows cannot be found",
            m.source,
            m.final_name()
        )));
    }
    let sql = cross_extra_rows_sql(&m.final_name(), &m.source, &old_key, &new_key);
    let keys = serde_json::to_string(open_keys).expect("keys serialize");
    let kept: String = stx
        .query_one(&sql.kept, &[&keys])
        .await
        .map_err(|e| Error::db("reading the conflicts' rows kept on the source", e))?
        .get(0);
    Ok((sql.delete, kept))
}

/// The source table's comment after the revert (pure): the original one the cutover kept in its
/// note (`cross_cutover::source_statements`), none when it had none; a comment changed since is
/// left as it is (`None` here: no statement).
pub fn comment_back(current: Option<&str>) -> Option<Option<String>> {
    let c = current?;
    if !c.starts_with("Moved at ") || !c.contains("(pgrepart migration ") {
        return None;
    }
    Some(
        c.split_once(" Original comment: ")
            .map(|(_, original)| original.to_string()),
    )
}

/// The source's statements of the revert's first commit (pure): the old table takes its name
/// back (unless an earlier attempt did), its comment back, and each sequence of its own is set
/// past the target's value for the same column.
pub fn source_statements(
    old: &QualifiedName,
    table: &QualifiedName,
    renamed_already: bool,
    comment: Option<Option<String>>,
    own_sequences: &[(String, String)],
    target_values: &BTreeMap<String, i64>,
) -> Vec<String> {
    let mut sql = Vec::new();
    if !renamed_already {
        sql.push(format!(
            "ALTER TABLE {} RENAME TO {}",
            old.sql(),
            quote_ident(&table.name)
        ));
    }
    if let Some(c) = comment {
        sql.push(format!(
            "COMMENT ON TABLE {} IS {}",
            table.sql(),
            c.as_deref().map_or("NULL".to_string(), quote_literal)
        ));
    }
    for (column, seq) in own_sequences {
        if let Some(v) = target_values.get(column) {
            sql.push(format!(
                "SELECT setval({seq_lit}::regclass, greatest({v}, (SELECT last_value FROM {seq})), true)",
                seq_lit = quote_literal(seq),
            ));
        }
    }
    sql
}

/// The target's statements of the revert's second commit (pure): the partitioned table steps
/// aside under its working name, and the state streams forward again from `f`, the F the
/// source's commit recorded.
pub fn target_statements(
    final_name: &QualifiedName,
    working: &str,
    migration_id: i64,
    f: Lsn,
) -> Vec<String> {
    vec![
        format!(
            "ALTER TABLE {} RENAME TO {}",
            final_name.sql(),
            quote_ident(working)
        ),
        super::again::streaming_again_update(migration_id, Some(f)),
    ]
}

/// The revert across databases, in bounded attempts (`--cutover-attempts`, `--lock-timeout`,
/// `--drain-timeout`). `target` holds the state (the run's control session), `source` the old
/// table; `fence` is the reverse applier's.
pub async fn try_revert(
    cfg: &RunConfig,
    target: &mut Client,
    source: &mut Client,
    fence: &mut watch::Receiver<Option<String>>,
    target_major: u32,
    m: &Migration,
    force: bool,
) -> Result<Outcome> {
    let flusher = crate::cutover::fence_session(&cfg.prep.dbs.target).await?;
    let final_name = m.final_name();
    let info = crate::pg::catalog::table_info(target, &final_name)
        .await?
        .ok_or_else(|| Error::failed(format!("the table {final_name} is gone from the target")))?;
    crate::fault::pause("revert").await;
    let mut backoff = Duration::from_millis(500);
    for attempt_no in 1..=cfg.cutover_attempts {
        let fence_id = cutover::fence_id(m.id, &format!(":revert:{attempt_no}"));
        let spec = FenceSpec {
            table: &final_name,
            server_major: target_major,
            lock_timeout: cfg.lock_timeout,
            drain_timeout: cfg.drain_timeout,
            fence_id: &fence_id,
            pre_lock: &[],
        };
        crate::fault::point("revert-before-lock");
        let why = match cutover::lock_fence_drain(target, &flusher, fence, &spec).await? {
            Locked::Drained { tx, locked_at } => {
                crate::fault::point("revert-locked");
                match second_half(cfg, tx, source, m, &info, force).await? {
                    Some(Ok(lines)) => {
                        return Ok(Outcome::Reverted {
                            lock_held: locked_at.elapsed(),
                            lines,
                        });
                    }
                    Some(Err(refused)) => return Ok(Outcome::Refused(refused)),
                    None => "the source table could not be locked in time",
                }
            }
            Locked::Not(cutover::Outcome::LockTimeout) => "could not lock the table in time",
            Locked::Not(_) => "the reverse stream's last changes were not applied in time",
        };
        tracing::warn!(attempt = attempt_no, "{why}; backing off");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
    Ok(Outcome::Later(format!(
        "revert postponed: the table could not be locked and drained in {} attempts; trying again in a minute",
        cfg.cutover_attempts
    )))
}

/// With the target's table locked and drained (`ttx`): the source's transaction and commit,
/// then the target's. `None`: the source's table was busy (try again); `Some(Err)`: refused.
async fn second_half(
    cfg: &RunConfig,
    ttx: tokio_postgres::Transaction<'_>,
    source: &mut Client,
    m: &Migration,
    info: &crate::pg::catalog::TableInfo,
    force: bool,
) -> Result<Option<std::result::Result<Vec<String>, String>>> {
    let renamed_already = source_reverted(source, m).await?;
    let old = if renamed_already {
        m.source.clone()
    } else {
        m.source.sibling(m.old_name.clone())
    };
    // Under the lock nobody changes the target's sequences' use by the table.
    let target_seqs = crate::cross_cutover::read_sequences(&ttx, &info.sequences).await?;
    let old_info = crate::pg::catalog::table_info(source, &old)
        .await?
        .ok_or_else(|| Error::failed(format!("the old table {old} is gone from the source")))?;
    let comment: Option<String> = source
        .query_one(
            "SELECT obj_description($1::text::regclass, 'pg_class')",
            &[&old.sql()],
        )
        .await
        .map_err(|e| Error::db("reading the old table's comment", e))?
        .get(0);
    let stx = source
        .transaction()
        .await
        .map_err(|e| Error::db("starting the source's revert transaction", e))?;
    stx.batch_execute(&format!(
        "SET LOCAL lock_timeout = '{}ms'",
        cfg.lock_timeout.as_millis()
    ))
    .await
    .map_err(|e| Error::db("setting lock_timeout on the source", e))?;
    if let Err(e) = stx
        .batch_execute(&format!(
            "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            old.sql()
        ))
        .await
    {
        if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) {
            let _ = stx.rollback().await;
            let _ = ttx.rollback().await;
            return Ok(None);
        }
        return Err(Error::db("locking the old table on the source", e));
    }
    let Open {
        keys: open_keys,
        described: open,
    } = settle(&ttx, &stx, m, &old).await?;
    if !open.is_empty() && !force {
        let _ = stx.rollback().await;
        let _ = ttx.rollback().await;
        return Ok(Some(Err(format!(
            "revert refused: {} key(s) of the old table have more than one row in {} ({}); `pgrepart revert --force` keeps the newest row of each, or remove the extra rows first",
            open.len(),
            m.final_name(),
            list(&open)
        ))));
    }
    let values: BTreeMap<String, i64> = target_seqs
        .iter()
        .filter(|s| s.is_called)
        .map(|s| (s.column.clone(), s.last_value))
        .collect();
    let own: Vec<(String, String)> = old_info
        .sequences
        .iter()
        .map(|s| (s.column.clone(), s.sequence_sql.clone()))
        .collect();
    let comment = if renamed_already {
        None
    } else {
        comment_back(comment.as_deref())
    };
    for stmt in source_statements(&old, &m.source, renamed_already, comment, &own, &values) {
        stx.batch_execute(&stmt)
            .await
            .map_err(|e| Error::db("renaming the old table back on the source", e))?;
    }
    // F, after the rename (whose ACCESS EXCLUSIVE lock orders the source's writes around it),
    // recorded in this commit: the target's commit copies it into the state (design.md §11).
    let f: String = stx
        .query_one(&record_start_sql(m.id, !renamed_already), &[])
        .await
        .map_err(|e| Error::db("recording the forward stream's start on the source", e))?
        .get(0);
    let f: Lsn = f.parse().map_err(|e| {
        Error::failed(format!(
            "the forward stream's start read on the source is not an LSN: {e}"
        ))
    })?;
    let extra = if open_keys.is_empty() {
        None
    } else {
        Some(kept_rows(&ttx, &stx, m, &open_keys).await?)
    };
    stx.commit()
        .await
        .map_err(|e| Error::db("committing the source's side of the revert", e))?;
    tracing::info!(forward_start = %f, "source side of the revert committed; renaming the target's table aside");
    crate::fault::point("revert-after-source-commit");
    let unfinished = "the source side has committed: run the same `pgrepart run` command again to finish the revert";
    if let Some((delete, kept)) = extra {
        let keys = serde_json::to_string(&open_keys).expect("keys serialize");
        let deleted = ttx.execute(&delete, &[&keys, &kept]).await.map_err(|e| {
            Error::db("deleting the conflicts' extra rows on the target", e).with_hint(unfinished)
        })?;
        tracing::info!(
            rows = deleted,
            "rows of conflicting keys that the original table does not hold deleted from the partitioned table"
        );
    }
    for stmt in target_statements(&m.final_name(), &m.target.name, m.id, f) {
        ttx.batch_execute(&stmt).await.map_err(|e| {
            Error::db("renaming the partitioned table aside on the target", e).with_hint(unfinished)
        })?;
    }
    crate::fault::point("revert-before-commit");
    ttx.commit().await.map_err(|e| {
        Error::db("committing the target's side of the revert", e).with_hint(unfinished)
    })?;
    crate::fault::point("revert-after-commit");
    let mut lines = Vec::new();
    if !open.is_empty() {
        lines.push(format!(
            "--force: {} conflicting key(s) keep the newest row: {}",
            open.len(),
            list(&open)
        ));
    }
    lines.push(point_back_message(
        &m.source,
        &crate::pg::describe_target(&cfg.prep.source),
        &m.target,
        &cfg.prep.dbs.target_description(),
    ));
    Ok(Some(Ok(lines)))
}

fn list(keys: &[String]) -> String {
    let mut s = keys.iter().take(10).cloned().collect::<Vec<_>>().join(", ");
    if keys.len() > 10 {
        s.push_str(&format!(", and {} more", keys.len() - 10));
    }
    s
}

/// What the application must point at after a revert across databases (no user, no password).
pub fn point_back_message(
    table: &QualifiedName,
    source_desc: &str,
    aside: &QualifiedName,
    target_desc: &str,
) -> String {
    format!(
        "point the application back at {source_desc}, table {table}; on {target_desc} the partitioned table is now {aside} and writes to the old name fail"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_without_logical_wal_or_replication_is_refused_with_the_fix() {
        assert!(target_refusals("logical", true, false, true).is_empty());
        let why = target_refusals("replica", false, true, false);
        assert_eq!(why.len(), 4, "{why:?}");
        assert!(why[0].contains("wal_level is replica"), "{}", why[0]);
        assert!(why[0].contains("ALTER SYSTEM SET wal_level = logical"));
        assert!(why[1].contains("REPLICATION"));
        assert!(why[2].contains("schema pgrepart"));
        assert!(why[3].contains("session_replication_role"));
    }

    #[test]
    fn the_candidates_are_probed_on_the_target_and_settled_on_the_source() {
        let sql = cross_conflict_sql(
            &QualifiedName::new("public", "orders_flat"),
            &QualifiedName::new("public", "orders_flat_old"),
            &[("id".into(), "bigint".into())],
            &["id".into(), "region".into()],
            4,
        );
        assert_eq!(
            sql.candidates,
            "SELECT key FROM pgrepart.reverse_conflicts WHERE migration_id = 4 ORDER BY first_seen, key"
        );
        assert_eq!(
            sql.probe,
            "SELECT c.ord, x.rows, CASE WHEN x.rows = 1 THEN x.one::text END \
             FROM jsonb_array_elements($1::text::jsonb) WITH ORDINALITY AS c(key, ord) \
             CROSS JOIN LATERAL (SELECT count(*) AS rows, (array_agg(to_jsonb(n)))[1] AS one \
             FROM \"public\".\"orders_flat\" n WHERE n.\"id\" = (c.key->>0)::bigint) x ORDER BY c.ord"
        );
        assert_eq!(
            sql.delete,
            "DELETE FROM \"public\".\"orders_flat_old\" o USING jsonb_array_elements($1::text::jsonb) AS c(key) \
             WHERE o.\"id\" = (c.key->>0)::bigint"
        );
        assert_eq!(
            sql.insert,
            "INSERT INTO \"public\".\"orders_flat_old\" (\"id\", \"region\") OVERRIDING SYSTEM VALUE \
             SELECT r.\"id\", r.\"region\" FROM jsonb_populate_recordset(NULL::\"public\".\"orders_flat_old\", $1::text::jsonb) r"
        );
        let two = cross_conflict_sql(
            &QualifiedName::new("s", "t"),
            &QualifiedName::new("s", "t_old"),
            &[("a".into(), "int".into()), ("b".into(), "text".into())],
            &["a".into()],
            1,
        );
        assert!(
            two.probe
                .contains("n.\"a\" = (c.key->>0)::int AND n.\"b\" = (c.key->>1)::text"),
            "{}",
            two.probe
        );
    }

    #[test]
    fn keys_with_one_row_or_none_are_settled_and_the_others_stay_conflicts() {
        let k = |v: &str| vec![Some(v.to_string())];
        let keys = vec![k("1"), k("2"), k("3")];
        let row = serde_json::json!({"id": 2, "region": "eu"});
        let j = judge(
            &keys,
            &[(1, 2, None), (2, 1, Some(row.clone())), (3, 0, None)],
        );
        assert_eq!(j.open, vec![k("1")]);
        assert_eq!(j.settle_keys, vec![k("2"), k("3")]);
        assert_eq!(j.settle_rows, vec![row]);
    }

    #[test]
    fn the_revert_renames_back_restores_the_comment_and_raises_the_sequences() {
        let note = "Moved at 2026-01-02 03:04:05 UTC to the partitioned table public.t in db2:5433/shop (pgrepart migration 3); kept as the original table.";
        assert_eq!(comment_back(Some(note)), Some(None));
        assert_eq!(
            comment_back(Some(&format!("{note} Original comment: orders"))),
            Some(Some("orders".into()))
        );
        assert_eq!(comment_back(Some("changed by hand")), None);
        assert_eq!(comment_back(None), None);
        let old = QualifiedName::new("public", "t_old");
        let t = QualifiedName::new("public", "t");
        let values: BTreeMap<String, i64> = [("id".to_string(), 20417)].into_iter().collect();
        let own = vec![
            ("id".to_string(), "\"public\".\"t_id_seq\"".to_string()),
            ("n".to_string(), "\"public\".\"t_n_seq\"".to_string()),
        ];
        assert_eq!(
            source_statements(&old, &t, false, Some(Some("orders".into())), &own, &values),
            vec![
                "ALTER TABLE \"public\".\"t_old\" RENAME TO \"t\"".to_string(),
                "COMMENT ON TABLE \"public\".\"t\" IS 'orders'".into(),
                "SELECT setval('\"public\".\"t_id_seq\"'::regclass, greatest(20417, (SELECT last_value FROM \"public\".\"t_id_seq\")), true)".into(),
            ]
        );
        // The rerun after a crash between the commits: only the sequences again.
        assert_eq!(
            source_statements(&t, &t, true, None, &own, &values).len(),
            1
        );
        assert_eq!(
            target_statements(&t, "t_repart", 3, Lsn(0x2_0000_0010)),
            vec![
                "ALTER TABLE \"public\".\"t\" RENAME TO \"t_repart\"".to_string(),
                super::super::again::streaming_again_update(3, Some(Lsn(0x2_0000_0010))),
            ]
        );
        let msg = point_back_message(
            &t,
            "db1:5432/shop",
            &QualifiedName::new("public", "t_repart"),
            "db2:5433/shop",
        );
        assert!(msg.starts_with("point the application back at db1:5432/shop, table public.t"));
    }

    #[test]
    fn f_is_read_in_the_sources_commit_and_a_rerun_keeps_the_one_recorded() {
        let first = record_start_sql(7, true);
        assert_eq!(
            first,
            "INSERT INTO pgrepart.revert_positions AS r (migration_id, forward_start_lsn) \
             VALUES (7, pg_current_wal_insert_lsn()) ON CONFLICT (migration_id) DO UPDATE \
             SET forward_start_lsn = excluded.forward_start_lsn, recorded_at = now() \
             RETURNING r.forward_start_lsn::text"
        );
        let rerun = record_start_sql(7, false);
        assert!(
            rerun.contains(
                "SET forward_start_lsn = r.forward_start_lsn, recorded_at = r.recorded_at"
            ),
            "{rerun}"
        );
        // A refusal after the source's commit keeps the slot that holds the writes since F.
        assert!(refusal_drops_forward(false));
        assert!(!refusal_drops_forward(true));
    }

    #[test]
    fn forced_conflicts_keep_on_the_target_only_the_rows_the_source_holds() {
        let sql = cross_extra_rows_sql(
            &QualifiedName::new("public", "orders_flat"),
            &QualifiedName::new("public", "orders_flat"),
            &[("id".into(), "bigint".into())],
            &[
                ("id".into(), "bigint".into()),
                ("region".into(), "text".into()),
            ],
        );
        assert_eq!(
            sql.kept,
            "SELECT coalesce(jsonb_agg(jsonb_build_object('id', o.\"id\", 'region', o.\"region\")), '[]'::jsonb)::text \
             FROM \"public\".\"orders_flat\" o WHERE EXISTS (SELECT FROM jsonb_array_elements($1::text::jsonb) AS c(key) \
             WHERE o.\"id\" = (c.key->>0)::bigint)"
        );
        assert_eq!(
            sql.delete,
            "DELETE FROM \"public\".\"orders_flat\" n USING jsonb_array_elements($1::text::jsonb) AS c(key) \
             WHERE n.\"id\" = (c.key->>0)::bigint AND NOT EXISTS (SELECT FROM jsonb_array_elements($2::text::jsonb) AS k(row) \
             WHERE n.\"id\" = (k.row->>'id')::bigint AND n.\"region\" = (k.row->>'region')::text)"
        );
    }
}
