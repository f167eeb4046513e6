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
