//! The command line as a DBA meets it: connections from libpq's environment variables and service
//! file, usage errors that exit 2 before any connection and leave nothing behind, and the help.

mod support;

use std::process::Output;

use support::inspect::output_text;
use support::{Cluster, pgrepart_with_env, test_majors, unique_name};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// The `PG*` variables that must not leak in from the shell running the tests.
const CLEARED: [(&str, &str); 8] = [
    ("PGHOST", ""),
    ("PGPORT", ""),
    ("PGDATABASE", ""),
    ("PGUSER", ""),
    ("PGSERVICE", ""),
    ("PGSERVICEFILE", ""),
    ("PGSSLMODE", ""),
    ("PGREPART_SOURCE", ""),
];

/// `CLEARED`, then `env` on top.
fn with_env<'a>(env: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all = CLEARED.to_vec();
    all.extend_from_slice(env);
    all
}

#[tokio::test]
async fn pghost_pgport_pgdatabase_and_pguser_alone_reach_the_server() {
    let major = test_majors()[0];
    let Some(cluster) = Cluster::start_or_skip(major) else {
        return;
    };
    let db = unique_name("cli_env");
    cluster.create_database(&db).await;
    let port = cluster.port().to_string();

    let env = [
        ("PGHOST", "127.0.0.1"),
        ("PGPORT", port.as_str()),
        ("PGDATABASE", db.as_str()),
        ("PGUSER", "postgres"),
    ];
    let out = pgrepart_with_env(&["status"], &with_env(&env)).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no pgrepart migrations"),
        "{}",
        output_text(&out)
    );

    // PGDATABASE is the database asked for: another name is another (missing) database.
    let missing = format!("{db}_missing");
    let env = [
        ("PGHOST", "127.0.0.1"),
        ("PGPORT", port.as_str()),
        ("PGDATABASE", missing.as_str()),
        ("PGUSER", "postgres"),
    ];
    let out = pgrepart_with_env(&["status"], &with_env(&env)).await;
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(stderr(&out).contains(&missing), "{}", output_text(&out));

    // PGUSER is the role asked for.
    let env = [
        ("PGHOST", "127.0.0.1"),
        ("PGPORT", port.as_str()),
        ("PGDATABASE", db.as_str()),
        ("PGUSER", "no_such_role_here"),
    ];
    let out = pgrepart_with_env(&["status"], &with_env(&env)).await;
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(
        stderr(&out).contains("no_such_role_here"),
        "{}",
        output_text(&out)
    );
}

#[tokio::test]
async fn pgport_fills_a_connection_string_without_a_port_and_a_refusal_names_its_cause() {
    let major = test_majors()[0];
    let Some(cluster) = Cluster::start_or_skip(major) else {
        return;
    };
    let db = unique_name("cli_port");
    cluster.create_database(&db).await;
    let source = format!("host=127.0.0.1 user=postgres dbname={db}");
    let port = cluster.port().to_string();

    let out = pgrepart_with_env(
        &["status", "--source", &source],
        &with_env(&[("PGPORT", &port)]),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));

    let out = pgrepart_with_env(
        &["status", "--source", &source],
        &with_env(&[("PGPORT", "1")]),
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(
        stderr(&out)
            .contains("connection to server at \"127.0.0.1\", port 1 failed: Connection refused"),
        "{}",
        output_text(&out)
    );

    // A URL's own port wins over PGPORT.
    let url = cluster.url(&db);
    let out = pgrepart_with_env(&["status", "--source", &url], &with_env(&[("PGPORT", "1")])).await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));
}

#[tokio::test]
async fn a_service_from_the_service_file_and_a_bare_database_name_connect() {
    let major = test_majors()[0];
    let Some(cluster) = Cluster::start_or_skip(major) else {
        return;
    };
    let db = unique_name("cli_service");
    cluster.create_database(&db).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pg_service.conf");
    std::fs::write(
        &file,
        format!(
            "# the DBA's services\n[shop]\nhost=127.0.0.1\nport={}\ndbname={db}\nuser=postgres\n",
            cluster.port()
        ),
    )
    .unwrap();
    let file = file.to_string_lossy().to_string();

    let out = pgrepart_with_env(
        &["status", "--source", "service=shop"],
        &with_env(&[("PGSERVICEFILE", &file), ("PGPORT", "1")]),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));

    // PGSERVICE names it when --source is left out.
    let out = pgrepart_with_env(
        &["status"],
        &with_env(&[("PGSERVICEFILE", &file), ("PGSERVICE", "shop")]),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));

    let port = cluster.port().to_string();
    let out = pgrepart_with_env(
        &["status", "--source", &db],
        &with_env(&[
            ("PGHOST", "127.0.0.1"),
            ("PGPORT", &port),
            ("PGUSER", "postgres"),
        ]),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));

    // psql's habits: -p and -U (and --host, -h being --help) with a bare database name.
    let out = pgrepart_with_env(
        &[
            "status",
            "--host",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-d",
            &db,
        ],
        &with_env(&[("PGPORT", "1")]),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", output_text(&out));

    let out = pgrepart_with_env(
        &["status", "--source", "service=nosuch"],
        &with_env(&[("PGSERVICEFILE", &file)]),
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(
        stderr(&out).contains("definition of service \"nosuch\" not found"),
        "{}",
        output_text(&out)
    );
}

/// Each bad argument of each subcommand: exit status 2, a message on standard error, and, with a
/// real server behind `--source` and a table that a good run would migrate, nothing created.
#[tokio::test]
async fn every_usage_error_exits_2_before_anything_is_created() {
    let major = test_majors()[0];
    let Some(cluster) = Cluster::start_or_skip(major) else {
        return;
    };
    let db = unique_name("cli_usage");
    let url = cluster.create_database(&db).await;
    let client = cluster.client(&db).await;
    support::schema::create_seed_table(&client, "orders_flat", 200).await;
    let before = support::inspect::relations(&client).await;
    // A port someone else holds, for --metrics-addr.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let bad_port_target = format!("postgresql://postgres@127.0.0.1:port/{db}");

    let good = [
        "--partition-by",
        "LIST (region)",
        "--partition",
        "orders_flat_rest=DEFAULT",
    ];
    let cases: Vec<(&str, Vec<&str>)> = vec![
        (
            "no parentheses",
            vec!["--partition-by", "LIST region", "--partition", "a=DEFAULT"],
        ),
        (
            "no '=' in --partition",
            vec![
                "--partition-by",
                "LIST (region)",
                "--partition",
                "a FOR VALUES IN ('US')",
            ],
        ),
        (
            "an unknown interval",
            vec![
                "--partition-by",
                "RANGE (created_at)",
                "--interval",
                "fortnight",
            ],
        ),
        (
            "modulus 0",
            vec!["--partition-by", "HASH (id)", "--modulus", "0"],
        ),
        ("no partitions", vec!["--partition-by", "LIST (region)"]),
        ("nothing about partitions", vec![]),
        (
            "a target URL with a non-numeric port",
            [&good[..], &["--target", &bad_port_target]].concat(),
        ),
        ("a bad --jobs", [&good[..], &["--jobs", "0"]].concat()),
        (
            "a rollback window that is no duration",
            [&good[..], &["--rollback-window", "soon"]].concat(),
        ),
    ];
    let run_only: Vec<(&str, Vec<&str>)> = vec![
        ("verify sample 0", vec!["--verify", "sample 0"]),
        (
            "a size without a known unit",
            vec!["--max-lag-bytes", "1XB"],
        ),
        (
            "a lock timeout in fortnights",
            vec!["--lock-timeout-ms", "3 fortnights"],
        ),
        (
            "a drain timeout that is no duration",
            vec!["--drain-timeout", "soon"],
        ),
        (
            "a retained WAL limit without a known unit",
            vec!["--max-retained-wal", "20XB"],
        ),
        ("a taken metrics port", vec!["--metrics-addr", &taken_addr]),
        ("zero cutover attempts", vec!["--cutover-attempts", "0"]),
    ];

    let mut all: Vec<(String, Vec<String>)> = Vec::new();
    for command in ["plan", "run"] {
        for (case, extra) in &cases {
            let mut argv = vec![command, "--source", &url, "--table", "orders_flat"];
            argv.extend(extra);
            all.push((
                format!("{command}: {case}"),
                argv.iter().map(|s| s.to_string()).collect(),
            ));
        }
    }
    for (case, extra) in &run_only {
        let mut argv = vec!["run", "--source", &url, "--table", "orders_flat"];
        argv.extend(good);
        argv.extend(extra);
        all.push((
            format!("run: {case}"),
            argv.iter().map(|s| s.to_string()).collect(),
        ));
    }
    for command in [
        "status", "cutover", "pause", "resume", "abort", "verify", "revert", "finish",
    ] {
        all.push((
            format!("{command}: a table name that does not parse"),
            [command, "--source", &url, "--table", "a.b.c"]
                .map(str::to_string)
                .to_vec(),
        ));
        all.push((
            format!("{command}: a source URL with a non-numeric port"),
            [
                command,
                "--source",
                &bad_port_target,
                "--table",
                "orders_flat",
            ]
            .map(str::to_string)
            .to_vec(),
        ));
    }
    for (case, extra) in [
        ("verify: sample 0", vec!["--sample", "0"]),
        ("verify: sample above 100", vec!["--sample", "150"]),
    ] {
        let mut argv = vec!["verify", "--source", &url, "--table", "orders_flat"];
        argv.extend(extra);
        all.push((
            case.to_string(),
            argv.iter().map(|s| s.to_string()).collect(),
        ));
    }
    all.push((
        "status: a watch interval of no length".into(),
        ["status", "--source", &url, "--watch", "0"]
            .map(str::to_string)
            .to_vec(),
    ));

    for (case, argv) in &all {
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = pgrepart_with_env(&args, &with_env(&[])).await;
        assert_eq!(out.status.code(), Some(2), "{case}: {}", output_text(&out));
        assert!(
            stderr(&out).contains("error"),
            "{case}: no message: {}",
            output_text(&out)
        );
        support::inspect::assert_nothing_left_behind(&client, &before).await;
    }
    drop(taken);
}

#[tokio::test]
async fn a_missing_partition_spec_names_every_way_to_give_one() {
    let out = pgrepart_with_env(
        &[
            "plan",
            "--source",
            "postgresql://u@127.0.0.1:1/db",
            "--table",
            "t",
            "--partition-by",
            "LIST (r)",
        ],
        &with_env(&[]),
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    for flag in [
        "--partition",
        "--interval",
        "--modulus",
        "--list-values-from-data",
    ] {
        assert!(
            stderr(&out).contains(flag),
            "no {flag}: {}",
            output_text(&out)
        );
    }
}

#[tokio::test]
async fn the_version_names_the_commit_and_the_help_its_groups() {
    let out = pgrepart_with_env(&["--version"], &[]).await;
    let version = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(version.starts_with("pgrepart "), "{version}");
    let in_git = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .is_ok_and(|o| o.status.success());
    if in_git {
        // "pgrepart 0.1.0 (1b1acc8)": the commit it was built from (the checkout may have moved
        // on since, so it is not compared with HEAD).
        let commit = version
            .split_once('(')
            .and_then(|(_, rest)| rest.split_once(')'))
            .map(|(c, _)| c.to_string())
            .unwrap_or_default();
        assert!(
            commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit()),
            "{version}: no commit"
        );
    }
    let out = pgrepart_with_env(&["run", "--help"], &[]).await;
    let help = String::from_utf8_lossy(&out.stdout).to_string();
    for heading in [
        "Connection:",
        "Partitioning:",
        "Copy and apply:",
        "Cutover:",
        "Throttling:",
        "Output:",
        "Examples:",
    ] {
        assert!(help.contains(heading), "run --help lacks {heading}");
    }
    let out = pgrepart_with_env(&["plan", "--help"], &[]).await;
    let help = String::from_utf8_lossy(&out.stdout).to_string();
    for run_only in [
        "--metrics-addr",
        "--lock-timeout-ms",
        "--verify",
        "--drop-old",
    ] {
        assert!(!help.contains(run_only), "plan --help lists {run_only}");
    }
}

#[tokio::test]
async fn abort_asks_nothing_when_stdin_is_not_a_terminal() {
    // The harness gives every run a null stdin: abort must go straight to its work (here: the
    // connection, which fails), not wait for an answer.
    let out = pgrepart_with_env(
        &[
            "abort",
            "--source",
            "host=127.0.0.1 port=1 user=u",
            "--table",
            "t",
        ],
        &with_env(&[]),
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    assert!(!stderr(&out).contains("[y/N]"), "{}", output_text(&out));
    assert!(
        stderr(&out).contains("Connection refused"),
        "{}",
        output_text(&out)
    );
}

/// Runs `pgrepart args...` on a terminal (`script` gives it a pseudo-terminal) and types `typed`.
/// Returns the exit code and what the terminal showed. `None` when `script` is not installed.
async fn on_a_terminal(args: &[&str], typed: &str) -> Option<(Option<i32>, String)> {
    use tokio::io::AsyncWriteExt;
    let quoted: Vec<String> = std::iter::once(support::program::PGREPART)
        .chain(args.iter().copied())
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    let mut child = tokio::process::Command::new("script")
        .args(["-qec", &quoted.join(" "), "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(typed.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("pgrepart on a terminal ends within 60 s")
        .unwrap();
    Some((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
    ))
}

#[tokio::test]
async fn abort_on_a_terminal_asks_first_and_no_keeps_the_migration() {
    let major = test_majors()[0];
    let Some(cluster) = Cluster::start_or_skip(major) else {
        return;
    };
    let db = unique_name("cli_abort");
    let url = cluster.create_database(&db).await;
    let client = cluster.client(&db).await;
    support::schema::create_seed_table(&client, "orders_flat", 300).await;
    let run = support::flow::spawn(&support::flow::seed_run_args(
        &url,
        &["--cutover", "manual"],
    ));
    support::flow::wait_status(
        &url,
        &run,
        std::time::Duration::from_secs(90),
        "the manual-cutover run to be caught up",
        |v| v["cutover_waiting"] == serde_json::Value::Bool(true),
    )
    .await;

    let abort = ["abort", "--source", url.as_str(), "--table", "orders_flat"];
    let Some((code, screen)) = on_a_terminal(&abort, "n\n").await else {
        eprintln!("SKIPPED: no `script` to give pgrepart a terminal");
        return;
    };
    assert_eq!(code, Some(1), "{screen}");
    assert!(screen.contains("[y/N]"), "no question: {screen}");
    assert!(screen.contains("not aborted"), "{screen}");
    assert!(
        !support::inspect::slots(&client).await.is_empty(),
        "a no still dropped the slot"
    );
    let status = support::inspect::status_json(&url, "orders_flat")
        .await
        .expect("the migration is still recorded");
    assert_ne!(status["phase"], "failed", "{status}");

    // --yes: no question, even on a terminal.
    let yes = [&abort[..], &["--yes"]].concat();
    let (code, screen) = on_a_terminal(&yes, "").await.unwrap();
    assert_eq!(code, Some(0), "{screen}");
    assert!(!screen.contains("[y/N]"), "{screen}");
    run.wait_within(std::time::Duration::from_secs(60)).await;
    support::inspect::assert_no_slot_or_publication(&client).await;
}
