//! The replication client against a real server: IDENTIFY_SYSTEM, an exported-snapshot slot,
//! pgoutput decoding of a committed transaction and of a non-transactional logical message,
//! status updates, then cleanup.
//!
//! Runs against a throwaway cluster of each `test_majors()` major (or, when `PGREPART_TEST_URL` is
//! set, against that server). The password tests make roles whose pg_hba.conf lines send them
//! through md5, SCRAM-SHA-256 and cleartext password authentication.

mod support;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use pgrepart::lsn::Lsn;
use pgrepart::protocol::copydata::ServerCopyData;
use pgrepart::protocol::pgoutput::{self, Datum, OldTuple, PgOutput};
use pgrepart::replication::{ReplicationClient, ReplicationError, ReplicationStream};
use tokio_postgres::NoTls;

async fn sql_session(config: &tokio_postgres::Config) -> Result<tokio_postgres::Client> {
    let (client, conn) = config.connect(NoTls).await.context("plain SQL session")?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("sql connection ended: {e}");
        }
    });
    Ok(client)
}

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{}_{nanos}", std::process::id())
}

fn text(d: &Datum) -> Option<&str> {
    match d {
        Datum::Text(b) => std::str::from_utf8(b).ok(),
        _ => None,
    }
}

/// Receives messages until `done` says so, answering keepalives, within a deadline.
async fn collect_until(
    stream: &mut ReplicationStream,
    seen: &mut Vec<PgOutput>,
    mut done: impl FnMut(&[PgOutput]) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut flushed = Lsn::ZERO;
    while !done(seen) {
        let left = deadline
            .checked_duration_since(Instant::now())
            .ok_or_else(|| anyhow!("timed out; decoded so far: {seen:#?}"))?;
        let msg = tokio::select! {
            biased;
            msg = stream.recv() => msg?,
            // Cancelling recv here exercises its cancel safety against a real server.
            _ = tokio::time::sleep(Duration::from_millis(200).min(left)) => {
                stream.send_status(flushed, flushed, flushed, false).await?;
                continue;
            }
        };
        match msg {
            Some(ServerCopyData::XLogData { data, .. }) => {
                let decoded = pgoutput::decode(&data)?;
                if let PgOutput::Commit { end_lsn, .. } = decoded {
                    flushed = end_lsn;
                }
                seen.push(decoded);
            }
            Some(ServerCopyData::Keepalive {
                reply_requested, ..
            }) => {
                if reply_requested {
                    stream.send_status(flushed, flushed, flushed, false).await?;
                }
            }
            None => bail!("stream ended early; decoded so far: {seen:#?}"),
        }
    }
    Ok(())
}

struct Names {
    table: String,
    publication: String,
    slot: String,
}

async fn streams_changes(
    config: &tokio_postgres::Config,
    sql: &tokio_postgres::Client,
    names: &Names,
) -> Result<()> {
    let Names {
        table,
        publication,
        slot,
    } = names;
    sql.batch_execute(&format!(
        "CREATE TABLE {table} (id int PRIMARY KEY, note text);
         CREATE PUBLICATION {publication} FOR TABLE {table};"
    ))
    .await?;

    let mut client = ReplicationClient::connect(config, "pgrepart-test").await?;
    assert!(
        client.server_version_num() >= 100000,
        "{}",
        client.server_version_num()
    );
    assert!(client.backend_pid() > 0);

    let ident = client.simple_query("IDENTIFY_SYSTEM").await?;
    assert_eq!(
        ident.columns,
        vec!["systemid", "timeline", "xlogpos", "dbname"]
    );
    let xlogpos: Lsn = ident.rows[0][2].as_deref().unwrap().parse()?;

    let created = client.create_logical_slot_exported(slot).await?;
    assert_eq!(&created.slot_name, slot);
    assert!(created.consistent_point >= xlogpos);
    assert!(!created.snapshot_name.is_empty());

    // The exported snapshot sees the table empty, while the slot still exists.
    let snap_session = sql_session(config).await?;
    snap_session
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT '{}';",
            created.snapshot_name
        ))
        .await?;

    // Three statements, three transactions (one batch would be one implicit transaction).
    for stmt in [
        format!("INSERT INTO {table} VALUES (1, 'one'), (2, NULL), (3, 'it''s')"),
        format!("UPDATE {table} SET id = 4 WHERE id = 3"),
        format!("DELETE FROM {table} WHERE id = 1"),
    ] {
        sql.batch_execute(&stmt).await?;
    }
    let n: i64 = snap_session
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await?
        .get(0);
    assert_eq!(n, 0, "the exported snapshot predates the inserts");
    snap_session.batch_execute("COMMIT").await?;

    let mut stream = client
        .start_logical_replication(
            slot,
            Lsn::ZERO,
            &[
                ("proto_version", "1"),
                ("publication_names", &format!("\"{publication}\"")),
                ("messages", "true"),
            ],
        )
        .await?;

    let mut seen = Vec::new();
    collect_until(&mut stream, &mut seen, |s| {
        s.iter()
            .filter(|m| matches!(m, PgOutput::Commit { .. }))
            .count()
            >= 3
    })
    .await?;

    let rel_oid = match &seen[1] {
        PgOutput::Relation(rel) => {
            assert_eq!(&rel.name, table);
            assert_eq!(rel.namespace, "public");
            let cols: Vec<_> = rel
                .columns
                .iter()
                .map(|c| (c.name.as_str(), c.flags))
                .collect();
            assert_eq!(cols, vec![("id", 1), ("note", 0)]);
            rel.oid
        }
        other => bail!("expected Relation second, got {other:?}; all: {seen:#?}"),
    };
    assert!(matches!(seen[0], PgOutput::Begin { .. }), "{seen:#?}");
    let changes: Vec<&PgOutput> = seen
        .iter()
        .filter(|m| {
            matches!(
                m,
                PgOutput::Insert { .. } | PgOutput::Update { .. } | PgOutput::Delete { .. }
            )
        })
        .collect();
    assert_eq!(changes.len(), 5, "{seen:#?}");
    let inserted: Vec<(Option<&str>, Option<&str>)> = changes[..3]
        .iter()
        .map(|m| match m {
            PgOutput::Insert { rel, new } => {
                assert_eq!(*rel, rel_oid);
                (text(&new.0[0]), text(&new.0[1]))
            }
            other => panic!("expected Insert, got {other:?}"),
        })
        .collect();
    assert_eq!(
        inserted,
        vec![
            (Some("1"), Some("one")),
            (Some("2"), None),
            (Some("3"), Some("it's"))
        ]
    );
    // A key change sends the old key as a 'K' tuple, the non-key column as 'n'.
    match changes[3] {
        PgOutput::Update {
            old: Some(OldTuple::Key(old)),
            new,
            ..
        } => {
            assert_eq!(text(&old.0[0]), Some("3"));
            assert_eq!(old.0[1], Datum::Null);
            assert_eq!(text(&new.0[0]), Some("4"));
        }
        other => bail!("expected Update with a key, got {other:?}"),
    }
    match changes[4] {
        PgOutput::Delete {
            old: OldTuple::Key(old),
            ..
        } => assert_eq!(text(&old.0[0]), Some("1")),
        other => bail!("expected Delete with a key, got {other:?}"),
    }

    // A non-transactional message is decoded outside any transaction once its WAL is flushed;
    // a committed write afterwards makes sure of that on servers before 17.
    sql.batch_execute("SELECT pg_logical_emit_message(false, 'x', 'y')")
        .await?;
    sql.batch_execute(&format!("INSERT INTO {table} VALUES (10, 'flush')"))
        .await?;
    let before = seen.len();
    collect_until(&mut stream, &mut seen, |s| {
        s[before..]
            .iter()
            .any(|m| matches!(m, PgOutput::Commit { .. }))
    })
    .await?;
    let message = seen[before..]
        .iter()
        .find(|m| matches!(m, PgOutput::Message { .. }))
        .ok_or_else(|| anyhow!("no logical message in {:#?}", &seen[before..]))?;
    match message {
        PgOutput::Message {
            transactional,
            prefix,
            content,
            lsn,
        } => {
            assert!(!transactional);
            assert_eq!(prefix, "x");
            assert_eq!(&content[..], b"y");
            assert!(!lsn.is_zero());
        }
        _ => unreachable!(),
    }

    let last_end = seen
        .iter()
        .rev()
        .find_map(|m| match m {
            PgOutput::Commit { end_lsn, .. } => Some(*end_lsn),
            _ => None,
        })
        .unwrap();
    stream
        .send_status(last_end, last_end, last_end, true)
        .await?;
    // The server confirms the flush position in pg_replication_slots.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let confirmed: String = sql
            .query_one(
                "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
                &[slot],
            )
            .await?
            .get(0);
        if confirmed.parse::<Lsn>()? >= last_end {
            break;
        }
        if Instant::now() > deadline {
            bail!("confirmed_flush_lsn stayed at {confirmed}, sent {last_end}");
        }
        // Keep the stream read so the walsender processes our reply.
        tokio::select! {
            _ = stream.recv() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        stream
            .send_status(last_end, last_end, last_end, false)
            .await?;
    }

    let mut client = stream.finish().await?;
    client
        .simple_query(&format!("DROP_REPLICATION_SLOT \"{slot}\""))
        .await?;
    // A server error keeps the connection usable.
    let err = client
        .simple_query(&format!("DROP_REPLICATION_SLOT \"{slot}\""))
        .await
        .err()
        .ok_or_else(|| anyhow!("dropping a missing slot succeeded"))?;
    assert_eq!(err.sqlstate(), Some("42704"), "{err}");
    client.simple_query("IDENTIFY_SYSTEM").await?;
    Ok(())
}

async fn cleanup(sql: &tokio_postgres::Client, names: &Names) {
    // The walsender may take a moment to exit after a failure: retry while the slot is active.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = sql
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                 WHERE slot_name = $1",
                &[&names.slot],
            )
            .await;
        if r.is_ok() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = sql
        .batch_execute(&format!(
            "DROP PUBLICATION IF EXISTS {}; DROP TABLE IF EXISTS {};",
            names.publication, names.table
        ))
        .await;
}

/// The servers to test against: `PGREPART_TEST_URL` if set, else a throwaway cluster per major.
fn servers() -> Vec<(Option<support::Cluster>, String)> {
    if let Ok(url) = std::env::var("PGREPART_TEST_URL")
        && !url.trim().is_empty()
    {
        return vec![(None, url)];
    }
    support::test_majors()
        .into_iter()
        .filter_map(support::Cluster::start_or_skip)
        .map(|c| {
            let url = c.url("postgres");
            (Some(c), url)
        })
        .collect()
}

#[tokio::test]
async fn replication_client_decodes_a_pgoutput_stream() -> Result<()> {
    for (_cluster, url) in servers() {
        decodes_a_pgoutput_stream(&url).await?;
    }
    Ok(())
}

async fn decodes_a_pgoutput_stream(url: &str) -> Result<()> {
    let config: tokio_postgres::Config = url.parse()?;
    let sql = sql_session(&config).await?;
    let suffix = unique_suffix();
    let names = Names {
        table: format!("repl_t_{suffix}"),
        publication: format!("repl_p_{suffix}"),
        slot: format!("repl_s_{suffix}"),
    };
    let result = streams_changes(&config, &sql, &names).await;
    cleanup(&sql, &names).await;
    result
}

/// Makes a REPLICATION role with a password stored for `method`, sends it through `method` in
/// pg_hba.conf, and checks logins through our replication client.
async fn password_login(method: &str) -> Result<()> {
    for (cluster, _) in servers() {
        let Some(cluster) = cluster else { continue };
        let role = format!("auth_{}", method.replace('-', "_"));
        let admin = cluster.client("postgres").await;
        let encryption = if method == "md5" {
            "md5"
        } else {
            "scram-sha-256"
        };
        admin
            .batch_execute(&format!(
                "SET password_encryption = '{encryption}'; CREATE ROLE {role} LOGIN REPLICATION PASSWORD 'secret pw';"
            ))
            .await?;
        let hba = cluster.data_dir().join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba)?;
        std::fs::write(
            &hba,
            format!("host all {role} 127.0.0.1/32 {method}\n{old}"),
        )?;
        admin.batch_execute("SELECT pg_reload_conf()").await?;
        let url = format!(
            "postgresql://{role}:secret%20pw@127.0.0.1:{}/postgres",
            cluster.port()
        );
        login_checks(&url)
            .await
            .with_context(|| format!("{method} on PostgreSQL {}", cluster.major()))?;
    }
    Ok(())
}

async fn login_checks(url: &str) -> Result<()> {
    let config: tokio_postgres::Config = url.parse()?;
    let mut client = ReplicationClient::connect(&config, "pgrepart-auth-test").await?;
    let ident = client.simple_query("IDENTIFY_SYSTEM").await?;
    assert_eq!(ident.rows.len(), 1);

    // The same target without a password: the error says where the password goes.
    let mut bare = tokio_postgres::Config::new();
    for host in config.get_hosts() {
        match host {
            tokio_postgres::config::Host::Tcp(h) => bare.host(h),
            tokio_postgres::config::Host::Unix(p) => bare.host_path(p),
        };
    }
    for port in config.get_ports() {
        bare.port(*port);
    }
    bare.user(config.get_user().unwrap_or_default());
    if let Some(db) = config.get_dbname() {
        bare.dbname(db);
    }
    match ReplicationClient::connect(&bare, "pgrepart-auth-test").await {
        Err(ReplicationError::Auth(msg)) => assert!(msg.contains("connection string"), "{msg}"),
        Err(e) => bail!("expected an Auth error, got {e}"),
        Ok(_) => bail!("connected without a password"),
    }

    // A wrong password is refused by the server and not echoed back.
    let mut wrong = config.clone();
    wrong.password("definitely-wrong-password");
    match ReplicationClient::connect(&wrong, "pgrepart-auth-test").await {
        Err(e) => {
            assert!(!format!("{e} {e:?}").contains("definitely-wrong"), "{e:?}");
            assert!(
                matches!(e.sqlstate(), Some("28P01")) || matches!(e, ReplicationError::Auth(_)),
                "{e:?}"
            );
        }
        Ok(_) => bail!("connected with a wrong password"),
    }
    Ok(())
}

#[tokio::test]
async fn md5_password_login_works() -> Result<()> {
    password_login("md5").await
}

#[tokio::test]
async fn scram_password_login_works() -> Result<()> {
    password_login("scram-sha-256").await
}

#[tokio::test]
async fn cleartext_password_login_works() -> Result<()> {
    password_login("password").await
}
