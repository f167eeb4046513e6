//! What `pgrepart run` must refuse, with exit code 1, a message naming the problem, and nothing
//! left behind: no slot, no publication, no `pgrepart` schema, no new table or partition.
//! A command-line usage error exits 2.

mod support;

use std::collections::BTreeSet;

use support::inspect::{self, output_text};
use support::{Cluster, pgrepart, schema, test_majors, unique_name};

const PARTITIONS: [&str; 4] = [
    "orders_flat_us=FOR VALUES IN ('US')",
    "orders_flat_eu=FOR VALUES IN ('EU')",
    "orders_flat_asia=FOR VALUES IN ('ASIA')",
    "orders_flat_default=DEFAULT",
];

/// `run --source url --table table --partition-by by --partition p...`.
fn run_args<'a>(url: &'a str, table: &'a str, by: &'a str, parts: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        "--source",
        url,
        "--table",
        table,
        "--partition-by",
        by,
    ];
    for p in parts {
        args.push("--partition");
        args.push(p);
    }
    args
}

/// Runs `args`, asserts exit code 1 and that stderr holds every one of `words` (case-insensitive);
/// returns stderr.
async fn assert_refused(case: &str, major: u32, args: &[&str], words: &[&str]) -> String {
    assert_exit(case, major, args, words, 1).await
}

/// As `assert_refused`, for exit code `code` (2: a usage error, found before any connection).
async fn assert_exit(case: &str, major: u32, args: &[&str], words: &[&str], code: i32) -> String {
    let out = pgrepart(args).await;
    assert_eq!(
        out.status.code(),
        Some(code),
        "{case} on PostgreSQL {major}: expected exit code {code}: {}",
        output_text(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let lower = stderr.to_lowercase();
    for w in words {
        assert!(
            lower.contains(&w.to_lowercase()),
            "{case} on PostgreSQL {major}: the message does not mention {w:?}: {stderr}"
        );
    }
    eprintln!(
        "PostgreSQL {major}: {case}: {}",
        stderr
            .lines()
            .find(|l| l.starts_with("error"))
            .unwrap_or("")
    );
    stderr
}

/// A database with the seed table `orders_flat` (1,000 rows), its client and the relations in it.
async fn seeded(
    cluster: &Cluster,
    prefix: &str,
) -> (String, tokio_postgres::Client, BTreeSet<String>) {
    let db = unique_name(prefix);
    let url = cluster.create_database(&db).await;
    let client = cluster.client(&db).await;
    schema::create_seed_table(&client, "orders_flat", 1_000).await;
    let before = inspect::relations(&client).await;
    (url, client, before)
}

async fn seed_untouched(client: &tokio_postgres::Client) {
    let n: i64 = client
        .query_one("SELECT count(*) FROM orders_flat", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1_000, "orders_flat changed");
    assert_eq!(inspect::relkind(client, "orders_flat").await, Some('r'));
}

#[tokio::test]
async fn refused_when_wal_level_is_not_logical() {
    for major in test_majors() {
        let Some(mut cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        cluster
            .client("postgres")
            .await
            .batch_execute("ALTER SYSTEM SET wal_level = replica")
            .await
            .unwrap();
        cluster.restart();
        let (url, client, before) = seeded(&cluster, "wal_level").await;
        let wal_level: String = client
            .query_one("SHOW wal_level", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(wal_level, "replica");
        assert_refused(
            "wal_level replica",
            major,
            &run_args(&url, "orders_flat", "LIST (region)", &PARTITIONS),
            &["wal_level"],
        )
        .await;
        inspect::assert_nothing_left_behind(&client, &before).await;
        seed_untouched(&client).await;
    }
}

#[tokio::test]
async fn refused_with_a_clear_message_and_nothing_left_behind() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let (url, client, before) = seeded(&cluster, "refusals").await;
        let args = |table, by, parts: &[&'static str]| -> Vec<String> {
            run_args(&url, table, by, parts)
                .into_iter()
                .map(String::from)
                .collect()
        };
        let check_exit =
            |case: &'static str, args: Vec<String>, words: &'static [&'static str], code: i32| {
                let client = &client;
                let before = &before;
                async move {
                    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                    assert_exit(case, major, &refs, words, code).await;
                    inspect::assert_nothing_left_behind(client, before).await;
                    seed_untouched(client).await;
                }
            };
        let check = |case, args, words| check_exit(case, args, words, 1);
        // Errors in the arguments alone are usage errors.
        let check_usage = |case, args, words| check_exit(case, args, words, 2);

        check(
            "missing table",
            args("no_such_table", "LIST (region)", &PARTITIONS),
            &["no_such_table", "does not exist"],
        )
        .await;

        check(
            "no such partition column",
            args("orders_flat", "LIST (regoin)", &PARTITIONS),
            &["regoin"],
        )
        .await;

        check(
            "rows fit no partition",
            args(
                "orders_flat",
                "LIST (region)",
                &PARTITIONS[..3], // US, EU, ASIA, no DEFAULT: LATAM has nowhere to go
            ),
            &["LATAM", "partition"],
        )
        .await;

        check_usage(
            "--partition without '='",
            args(
                "orders_flat",
                "LIST (region)",
                &[
                    "orders_flat_us FOR VALUES IN ('US')",
                    "orders_flat_default=DEFAULT",
                ],
            ),
            &["--partition", "orders_flat_us"],
        )
        .await;

        check(
            "--partition bound that is not SQL",
            args(
                "orders_flat",
                "LIST (region)",
                &[
                    "orders_flat_us=FOR VALUES IN ('US'",
                    "orders_flat_default=DEFAULT",
                ],
            ),
            &["orders_flat_us"],
        )
        .await;

        check_usage(
            "--partition-by that is not understood",
            args("orders_flat", "SIDEWAYS (region)", &PARTITIONS),
            &["--partition-by"],
        )
        .await;

        // The name the old table would get is taken.
        client
            .batch_execute("CREATE TABLE orders_flat_old (x int)")
            .await
            .unwrap();
        let before_taken = inspect::relations(&client).await;
        assert_refused(
            "old name taken",
            major,
            &run_args(&url, "orders_flat", "LIST (region)", &PARTITIONS),
            &["orders_flat_old"],
        )
        .await;
        inspect::assert_nothing_left_behind(&client, &before_taken).await;
        client
            .batch_execute("DROP TABLE orders_flat_old")
            .await
            .unwrap();

        // A table without a primary key.
        client
            .batch_execute("CREATE TABLE orders_nopk AS SELECT * FROM orders_flat")
            .await
            .unwrap();
        let before_nopk = inspect::relations(&client).await;
        assert_refused(
            "no primary key",
            major,
            &run_args(&url, "orders_nopk", "LIST (region)", &PARTITIONS),
            &["orders_nopk", "primary key"],
        )
        .await;
        inspect::assert_nothing_left_behind(&client, &before_nopk).await;

        // A table another table's foreign key points at.
        client
            .batch_execute(
                "CREATE TABLE order_items (
                     item_id BIGSERIAL PRIMARY KEY,
                     order_id BIGINT NOT NULL REFERENCES orders_flat (id)
                 );
                 INSERT INTO order_items (order_id) SELECT id FROM orders_flat WHERE id % 100 = 0;",
            )
            .await
            .unwrap();
        let before_fk = inspect::relations(&client).await;
        assert_refused(
            "inbound foreign key",
            major,
            &run_args(&url, "orders_flat", "LIST (region)", &PARTITIONS),
            &["foreign key", "order_items"],
        )
        .await;
        inspect::assert_nothing_left_behind(&client, &before_fk).await;
        seed_untouched(&client).await;

        // The server is not there: a port nobody listens on.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let nowhere = format!("postgresql://postgres@127.0.0.1:{closed}/postgres");
        assert_refused(
            "server unreachable",
            major,
            &run_args(&nowhere, "orders_flat", "LIST (region)", &PARTITIONS),
            &["could not connect"],
        )
        .await;

        // An unparseable --source is a usage error (exit 2), found before any connection.
        let out = pgrepart(&run_args(
            "postgresql://postgres@127.0.0.1:notaport/x",
            "orders_flat",
            "LIST (region)",
            &PARTITIONS,
        ))
        .await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "unparseable --source: {}",
            output_text(&out)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--source") && stderr.contains("invalid port number"),
            "unparseable --source: {stderr}"
        );
        inspect::assert_nothing_left_behind(&client, &before_fk).await;

        // A usage error: --table missing.
        let out = pgrepart(&[
            "run",
            "--source",
            &url,
            "--partition-by",
            "LIST (region)",
            "--partition",
            PARTITIONS[3],
        ])
        .await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "a missing --table should be a usage error: {}",
            output_text(&out)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--table"),
            "{}",
            output_text(&out)
        );
        inspect::assert_nothing_left_behind(&client, &before_fk).await;
    }
}
