//! Looking at what a migration left in a database: `status --json` as a JSON value, the relations,
//! slots, publications and the `pgrepart` schema, and "nothing left behind" after a refusal or an abort.
//!
//! ```ignore
//! let before = inspect::relations(&client).await;
//! let out = pgrepart(&["run", ...]).await;          // refused
//! inspect::assert_nothing_left_behind(&client, &before).await;
//! ```

use std::collections::BTreeSet;
use std::process::Output;

use serde_json::Value;
use tokio_postgres::Client;

use crate::support::describe;
use crate::support::program::pgrepart;
use crate::support::schema::ident;

/// `stdout` and `stderr` of a finished run, for failure messages.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}\n--- stdout:\n{}\n--- stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `pgrepart status --source url --table table --json`; `None` when it fails (e.g. no
/// migration is recorded yet), else the object it printed. Panics if it prints something that is
/// not one JSON object.
pub async fn status_json(url: &str, table: &str) -> Option<Value> {
    let out = pgrepart(&["status", "--source", url, "--table", table, "--json"]).await;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "status --json printed no JSON ({e}):\n{}",
            output_text(&out)
        )
    });
    assert!(
        v.is_object(),
        "status --json printed {v} instead of an object"
    );
    Some(v)
}

/// The `phase` of a status object (`""` when absent).
pub fn phase(v: &Value) -> &str {
    v.get("phase").and_then(Value::as_str).unwrap_or("")
}

/// An integer field of a status object, if present and a number.
pub fn int(v: &Value, field: &str) -> Option<i64> {
    v.get(field).and_then(Value::as_i64)
}

/// Every relation (table, partitioned table, index, sequence, view, ...) outside the system
/// schemas, as `schema.name`.
pub async fn relations(client: &Client) -> BTreeSet<String> {
    client
        .query(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') \
               AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast_temp%'",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("list relations: {}", describe(&e)))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Replication slots of the client's database.
pub async fn slots(client: &Client) -> Vec<String> {
    client
        .query(
            "SELECT slot_name::text FROM pg_replication_slots WHERE database = current_database()",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("list slots: {}", describe(&e)))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Whether `slot` has a walsender (a parked or stopped run's slot has none).
pub async fn slot_active(client: &Client, slot: &str) -> bool {
    client
        .query_one(
            "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap_or_else(|e| panic!("read slot {slot}: {}", describe(&e)))
        .get(0)
}

/// Publications of the client's database.
pub async fn publications(client: &Client) -> Vec<String> {
    client
        .query("SELECT pubname::text FROM pg_publication", &[])
        .await
        .unwrap_or_else(|e| panic!("list publications: {}", describe(&e)))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

pub async fn schema_exists(client: &Client, schema: &str) -> bool {
    client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            &[&schema],
        )
        .await
        .unwrap_or_else(|e| panic!("look for schema {schema}: {}", describe(&e)))
        .get(0)
}

/// `relkind` of `table` (`'r'` plain, `'p'` partitioned), `None` when there is no such relation.
pub async fn relkind(client: &Client, table: &str) -> Option<char> {
    client
        .query_one(
            "SELECT (SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1))",
            &[&ident(table)],
        )
        .await
        .unwrap_or_else(|e| panic!("relkind of {table}: {}", describe(&e)))
        .get::<_, Option<String>>(0)
        .and_then(|s| s.chars().next())
}

/// The partitions of `table` (names), empty when it has none or does not exist.
pub async fn partitions(client: &Client, table: &str) -> Vec<String> {
    client
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = to_regclass($1) ORDER BY 1",
            &[&ident(table)],
        )
        .await
        .unwrap_or_else(|e| panic!("partitions of {table}: {}", describe(&e)))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Valid indexes on `table` and on its partitions whose definition ends with `(column)`.
pub async fn valid_indexes_on(client: &Client, table: &str, column: &str) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_index i \
              WHERE (i.indrelid = to_regclass($1) OR i.indrelid IN (SELECT inhrelid FROM pg_inherits \
                     WHERE inhparent = to_regclass($1))) \
                AND i.indisvalid AND pg_get_indexdef(i.indexrelid) LIKE '%(' || $2 || ')'",
            &[&ident(table), &column],
        )
        .await
        .unwrap_or_else(|e| panic!("indexes of {table}: {}", describe(&e)))
        .get(0)
}

/// Panics unless the database has no replication slot, no publication, no `pgrepart` schema and
/// exactly the relations in `before` (so no new table, partition, index or sequence).
pub async fn assert_nothing_left_behind(client: &Client, before: &BTreeSet<String>) {
    let mut problems = Vec::new();
    let slots = slots(client).await;
    if !slots.is_empty() {
        problems.push(format!("replication slots left: {slots:?}"));
    }
    let pubs = publications(client).await;
    if !pubs.is_empty() {
        problems.push(format!("publications left: {pubs:?}"));
    }
    if schema_exists(client, "pgrepart").await {
        problems.push("schema pgrepart left".to_string());
    }
    let now = relations(client).await;
    let added: Vec<&String> = now
        .difference(before)
        .filter(|r| !r.starts_with("pgrepart."))
        .collect();
    if !added.is_empty() {
        problems.push(format!("new relations left: {added:?}"));
    }
    let removed: Vec<&String> = before.difference(&now).collect();
    if !removed.is_empty() {
        problems.push(format!("relations gone: {removed:?}"));
    }
    assert!(problems.is_empty(), "left behind: {}", problems.join("; "));
}

/// Panics unless the database has no replication slot and no publication.
pub async fn assert_no_slot_or_publication(client: &Client) {
    let slots = slots(client).await;
    let pubs = publications(client).await;
    assert!(
        slots.is_empty() && pubs.is_empty(),
        "left behind: slots {slots:?}, publications {pubs:?}"
    );
}

/// `GET /metrics` of a run's Prometheus endpoint (`--metrics-addr`): the whole response.
pub async fn scrape_metrics(addr: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("metrics endpoint accepts");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    body
}
