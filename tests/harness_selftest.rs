//! Tests of the test harness itself, against real servers: clusters start, stop and run side by
//! side; the seed schema is what the tests rely on; the writers' record is exact; the comparison
//! catches a corrupted table.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::compare::{self, Row, check_table_matches, diff_rows, read_table};
use support::schema::{self, SEED_BIG_DETAILS_LEN, create_seed_table, create_seed_target};
use support::{Cluster, Writers, WritersConfig, test_majors, unique_name};

/// The major for tests that need only one server: the first of `PGREPART_TEST_MAJORS`.
fn one_major() -> u32 {
    test_majors()[0]
}

async fn show(client: &tokio_postgres::Client, setting: &str) -> String {
    client
        .query_one(&format!("SHOW {setting}"), &[])
        .await
        .unwrap_or_else(|e| panic!("SHOW {setting}: {}", support::describe(&e)))
        .get(0)
}

#[tokio::test]
async fn a_cluster_of_each_test_major_starts_with_logical_decoding_and_goes_away_when_dropped() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let client = cluster.client("postgres").await;
        let version: String = show(&client, "server_version_num").await;
        assert_eq!(
            version.parse::<u32>().unwrap() / 10000,
            major,
            "server_version_num {version}"
        );
        assert_eq!(cluster.major(), major);
        assert!(cluster.bin_dir().join("postgres").is_file());
        assert_eq!(show(&client, "wal_level").await, "logical");
        assert_eq!(show(&client, "max_replication_slots").await, "20");
        assert_eq!(show(&client, "max_wal_senders").await, "20");
        assert_eq!(show(&client, "logical_decoding_work_mem").await, "64kB");
        assert_eq!(show(&client, "max_connections").await, "200");
        assert_eq!(show(&client, "fsync").await, "off");
        assert_eq!(show(&client, "server_encoding").await, "UTF8");
        let collate: String = client
            .query_one(
                "SELECT datcollate::text FROM pg_database WHERE datname = current_database()",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(collate, "C");

        let url = cluster.create_database(&unique_name("selftest")).await;
        assert!(url.starts_with(&format!(
            "postgresql://postgres@127.0.0.1:{}/selftest_",
            cluster.port()
        )));
        let (client2, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let one: i32 = client2.query_one("SELECT 1", &[]).await.unwrap().get(0);
        assert_eq!(one, 1);

        let data = cluster.data_dir().to_path_buf();
        let port = cluster.port();
        drop(client);
        drop(client2);
        drop(cluster);
        assert!(!data.exists(), "data dir {} left behind", data.display());
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "a server still listens on {port} after drop"
        );
    }
}

#[tokio::test]
async fn two_clusters_run_side_by_side_on_different_ports() {
    let major = one_major();
    if support::find_bin_dir(major).is_err() {
        Cluster::start_or_skip(major);
        return;
    }
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Cluster::start(major));
        let b = s.spawn(|| Cluster::start(major));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_ne!(a.port(), b.port());
    let ca = a.client("postgres").await;
    let cb = b.client("postgres").await;
    ca.batch_execute("CREATE TABLE only_in_a (x int)")
        .await
        .unwrap();
    let in_b: i64 = cb
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname = 'only_in_a'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_b, 0, "the two clusters share a catalog");
}

#[tokio::test]
async fn a_restarted_cluster_keeps_its_data_and_port() {
    let Some(mut cluster) = Cluster::start_or_skip(one_major()) else {
        return;
    };
    let port = cluster.port();
    let client = cluster.client("postgres").await;
    client
        .batch_execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
        .await
        .unwrap();
    cluster.restart();
    assert_eq!(cluster.port(), port);
    assert!(
        client.query_one("SELECT 1", &[]).await.is_err(),
        "old connection survived a restart"
    );
    let client = cluster.client("postgres").await;
    let x: i32 = client
        .query_one("SELECT x FROM kept", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(x, 42);
}

#[tokio::test]
async fn the_seed_table_has_every_region_null_amounts_and_out_of_line_details() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let db = unique_name("seed");
        cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        create_seed_table(&client, "orders_flat", 1000).await;

        let rows = read_table(&client, "orders_flat").await;
        assert_eq!(rows.len(), 1000);
        for region in schema::REGIONS {
            assert_eq!(
                rows.values().filter(|r| r.region == region).count(),
                250,
                "{region}"
            );
        }
        assert_eq!(rows.values().filter(|r| r.amount.is_none()).count(), 100);
        let big = rows
            .values()
            .filter(|r| {
                r.details
                    .as_ref()
                    .is_some_and(|d| d.len() == SEED_BIG_DETAILS_LEN)
            })
            .count();
        assert_eq!(big, 20);
        // Stored out of line, not compressed inline: the TOAST relation holds at least their bytes.
        let toast = schema::toast_bytes(&client, "orders_flat").await;
        assert!(
            toast >= (big * SEED_BIG_DETAILS_LEN) as i64,
            "toast holds {toast} bytes"
        );

        // The sequence goes on after the seeded ids.
        let next: i64 = client
            .query_one("SELECT nextval('orders_flat_id_seq')", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(next, 1001);
    }
}

#[tokio::test]
async fn the_seed_target_takes_every_seed_row_with_latam_in_the_default_partition() {
    let Some(cluster) = Cluster::start_or_skip(one_major()) else {
        return;
    };
    let db = unique_name("target");
    cluster.create_database(&db).await;
    let client = cluster.client(&db).await;
    create_seed_table(&client, "orders_flat", 400).await;
    create_seed_target(&client, "orders_list").await;
    client
        .batch_execute("INSERT INTO orders_list SELECT * FROM orders_flat")
        .await
        .unwrap();
    compare::assert_same_rows(&client, "orders_flat", "orders_list").await;

    let count = |table: &'static str| {
        let client = &client;
        async move {
            let n: i64 = client
                .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .await
                .unwrap()
                .get(0);
            n
        }
    };
    assert_eq!(count("orders_list_us").await, 100);
    assert_eq!(count("orders_list_default").await, 100);
    let indexes: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'orders_list'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(indexes, 3, "primary key and two indexes");
}

#[tokio::test]
async fn writers_keep_an_exact_record_of_the_table_they_write() {
    for major in test_majors() {
        let Some(cluster) = Cluster::start_or_skip(major) else {
            continue;
        };
        let db = unique_name("writers");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        create_seed_table(&client, "orders_flat", 2000).await;

        let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
        // 4 big transactions of 400 ops, then plenty of ordinary ones.
        writers.wait_for_ops(2400, Duration::from_secs(120)).await;
        let report = writers.stop().await;
        eprintln!("PostgreSQL {major}: {}", report.summary());

        assert_eq!(
            report.big_transactions, 4,
            "each writer ran its big transaction"
        );
        report.assert_no_anomalies("the writers' check");
        assert_eq!(report.errors, 0, "{:?}", report.error_codes);
        compare::assert_table_matches(&client, "orders_flat", &report.rows).await;
        let inserted = report.rows.keys().filter(|id| **id > 2000).count();
        assert!(inserted > 0, "the writers inserted rows");
    }
}

#[tokio::test]
async fn writers_follow_the_table_name_through_a_swap_to_a_partitioned_table() {
    let Some(cluster) = Cluster::start_or_skip(one_major()) else {
        return;
    };
    let db = unique_name("swap");
    let url = cluster.create_database(&db).await;
    let client = cluster.client(&db).await;
    create_seed_table(&client, "orders_flat", 1000).await;
    create_seed_target(&client, "orders_list").await;

    let mut config = WritersConfig::new(&url, "orders_flat");
    config.big_transaction = false;
    let writers = Writers::start(config).await;
    writers
        .wait_for_more_ops(200, Duration::from_secs(60))
        .await;
    // What a cutover does, by hand: copy under an exclusive lock and swap names and sequence.
    client
        .batch_execute(
            "BEGIN;
             LOCK TABLE orders_flat IN ACCESS EXCLUSIVE MODE;
             INSERT INTO orders_list SELECT * FROM orders_flat;
             ALTER TABLE orders_flat RENAME TO orders_flat_old;
             ALTER TABLE orders_list RENAME TO orders_flat;
             ALTER TABLE orders_flat ALTER COLUMN id SET DEFAULT nextval('orders_flat_id_seq');
             ALTER TABLE orders_flat_old ALTER COLUMN id DROP DEFAULT;
             ALTER SEQUENCE orders_flat_id_seq OWNED BY orders_flat.id;
             COMMIT;",
        )
        .await
        .unwrap();
    writers
        .wait_for_more_ops(200, Duration::from_secs(60))
        .await;
    let report = writers.stop().await;
    eprintln!("{}", report.summary());

    let kind: i8 = client
        .query_one(
            "SELECT relkind::\"char\" FROM pg_class WHERE relname = 'orders_flat'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kind as u8, b'p', "orders_flat is the partitioned table now");
    report.assert_no_anomalies("the writers' check");
    compare::assert_table_matches(&client, "orders_flat", &report.rows).await;
}

#[tokio::test]
async fn writers_record_nothing_of_transactions_that_fail_and_go_on_after_the_failure() {
    let Some(cluster) = Cluster::start_or_skip(one_major()) else {
        return;
    };
    let db = unique_name("failures");
    let url = cluster.create_database(&db).await;
    let client = cluster.client(&db).await;
    create_seed_table(&client, "orders_flat", 500).await;

    let mut config = WritersConfig::new(&url, "orders_flat");
    config.statement_timeout = Duration::from_millis(300);
    let writers = Writers::start(config).await;
    writers
        .wait_for_more_ops(100, Duration::from_secs(60))
        .await;

    // The table is briefly gone: "relation does not exist".
    let errors = writers.errors();
    client
        .batch_execute("ALTER TABLE orders_flat RENAME TO orders_flat_away")
        .await
        .unwrap();
    support::wait_until(
        Duration::from_secs(30),
        "writers to fail on a missing table",
        || async { writers.errors() > errors },
    )
    .await;
    client
        .batch_execute("ALTER TABLE orders_flat_away RENAME TO orders_flat")
        .await
        .unwrap();
    writers
        .wait_for_more_ops(100, Duration::from_secs(60))
        .await;

    // The table is locked longer than the writers' statement_timeout.
    let errors = writers.errors();
    let locker = cluster.client(&db).await;
    locker
        .batch_execute("BEGIN; LOCK TABLE orders_flat IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    support::wait_until(
        Duration::from_secs(30),
        "writers to time out on a lock",
        || async { writers.errors() > errors },
    )
    .await;
    locker.batch_execute("COMMIT").await.unwrap();
    writers
        .wait_for_more_ops(100, Duration::from_secs(60))
        .await;

    // Their sessions are killed (some may be killed in the middle of a COMMIT).
    client
        .batch_execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name LIKE 'pgrepart-test-writer-%'",
        )
        .await
        .unwrap();
    writers
        .wait_for_more_ops(100, Duration::from_secs(60))
        .await;

    let report = writers.stop().await;
    eprintln!("{}", report.summary());
    let codes = &report.error_codes;
    assert!(
        codes.contains_key("42P01"),
        "no error for the missing table: {codes:?}"
    );
    assert!(
        codes.contains_key("57014"),
        "no statement timeout: {codes:?}"
    );
    // A killed session fails with the server's 57P01 or, when that message is lost, as closed.
    assert!(
        codes.contains_key("57P01") || codes.contains_key("io"),
        "no error for the killed sessions: {codes:?}"
    );
    report.assert_no_anomalies("the writers' check");
    compare::assert_table_matches(&client, "orders_flat", &report.rows).await;
}

#[tokio::test]
async fn a_corrupted_table_is_reported_with_the_ids_and_columns_that_differ() {
    let Some(cluster) = Cluster::start_or_skip(one_major()) else {
        return;
    };
    let db = unique_name("corrupt");
    let url = cluster.create_database(&db).await;
    let client = cluster.client(&db).await;
    create_seed_table(&client, "orders_flat", 200).await;
    let expected = read_table(&client, "orders_flat").await;
    compare::assert_table_matches(&client, "orders_flat", &expected).await;

    client
        .batch_execute(
            "UPDATE orders_flat SET amount = amount + 1 WHERE id = 5;
             UPDATE orders_flat SET details = details || 'x', region = 'ASIA' WHERE id = 50;
             DELETE FROM orders_flat WHERE id = 7;
             INSERT INTO orders_flat (order_date, customer_id, region) VALUES ('2024-06-01', 1, 'US');",
        )
        .await
        .unwrap();

    let m = check_table_matches(&client, "orders_flat", &expected)
        .await
        .expect_err("the corruption must be found");
    assert_eq!(m.missing, vec![7]);
    assert_eq!(m.unexpected, vec![201]);
    let differing: Vec<(i64, Vec<&str>)> = m.differing.iter().map(|d| (d.0, d.1.clone())).collect();
    assert_eq!(
        differing,
        vec![(5, vec!["amount"]), (50, vec!["region", "details"])]
    );
    assert_eq!(m.ids(), vec![5, 7, 50, 201]);
    let report = m.to_string();
    assert!(report.contains("id 5 differs in amount"), "{report}");
    assert!(
        report.contains(&format!("len={}", SEED_BIG_DETAILS_LEN + 1)),
        "{report}"
    );
    assert!(
        report.len() < 2000,
        "the report prints large values: {} bytes",
        report.len()
    );

    // The asserting form panics; run it in a task so the panic is observed, not propagated.
    let task = tokio::spawn(async move {
        let client = support::connect(&url).await;
        compare::assert_table_matches(&client, "orders_flat", &expected).await;
    });
    let err = task
        .await
        .expect_err("assert_table_matches must panic on a corrupted table");
    assert!(err.is_panic());
}

#[test]
fn a_duplicated_id_is_reported_without_a_server() {
    let row = |region: &str| Row {
        order_date: "2024-01-01 00:00:00".into(),
        customer_id: 1,
        region: region.into(),
        amount: None,
        details: Some("z".repeat(20_000)),
    };
    let expected: BTreeMap<i64, Row> = [(1, row("US")), (2, row("EU"))].into();
    let actual = vec![(1, row("US")), (2, row("EU")), (2, row("ASIA"))];
    let m = diff_rows("t", &actual, &expected);
    assert_eq!(m.duplicated, vec![2]);
    assert!(m.missing.is_empty() && m.unexpected.is_empty() && m.differing.is_empty());
    assert!(!m.to_string().contains("zzzz"));
}

#[tokio::test]
async fn the_pgrepart_binary_can_be_run_in_the_foreground_and_in_the_background() {
    let out = support::pgrepart(&["--help"]).await;
    assert!(
        out.status.code().is_some(),
        "pgrepart --help was killed by a signal"
    );
    let background = support::spawn_pgrepart(&["--help"]);
    let out = background.wait_within(Duration::from_secs(30)).await;
    assert!(out.status.code().is_some());
}
