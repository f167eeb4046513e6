//! TLS and password lookup against a real server: a throwaway PostgreSQL 15 cluster with `ssl=on`
//! and a certificate for `localhost`/`127.0.0.1` signed by a CA made here (rcgen), a role that may
//! only log in over TLS with a SCRAM password (`hostssl ... scram-sha-256`, `hostnossl ... reject`).
//!
//! Both connection kinds are checked: `pgrepart::pg::connect` (tokio-postgres) and
//! `ReplicationClient::connect` (our own startup). No error text may contain the password.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use pgrepart::replication::ReplicationClient;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};

const ROLE: &str = "tls_login";
const PASSWORD: &str = "Tls-s3cret-pw";

/// A CA (PEM) and, if asked, a server certificate and key signed by it.
struct Pki {
    ca_pem: String,
    server_pem: String,
    server_key_pem: String,
}

fn make_pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);

    let server_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        server_pem: server_cert.pem(),
        server_key_pem: server_key.serialize_pem(),
    }
}

/// Writes a file readable only by the owner of the data dir (the server's user).
fn write_private(path: &Path, text: &str, owner_of: &Path) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let meta = std::fs::metadata(owner_of).unwrap();
    std::os::unix::fs::chown(path, Some(meta.uid()), Some(meta.gid())).unwrap();
}

fn assert_no_password(text: &str) {
    assert!(
        !text.contains(PASSWORD),
        "the password leaked into a message: {text}"
    );
}

async fn ssl_in_use_sql(url: &str) -> Result<bool, String> {
    let config = pgrepart::pg::parse_conninfo("--source", url).map_err(|e| e.to_string())?;
    let client = pgrepart::pg::connect(&config, "tls test")
        .await
        .map_err(|e| format!("{e} / {e:?}"))?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

async fn ssl_in_use_replication(url: &str) -> Result<bool, String> {
    let config = pgrepart::pg::parse_conninfo("--source", url).map_err(|e| e.to_string())?;
    let mut client = ReplicationClient::connect(&config, "tls test")
        .await
        .map_err(|e| format!("{e} / {e:?}"))?;
    let result = client
        .simple_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .await
        .map_err(|e| e.to_string())?;
    Ok(result.rows[0][0].as_deref() == Some("t"))
}

/// Both kinds of connection to `url`: `Ok(ssl in use)` each, or the error text.
async fn both(url: &str) -> [Result<bool, String>; 2] {
    let sql = ssl_in_use_sql(url).await;
    let repl = ssl_in_use_replication(url).await;
    for r in [&sql, &repl] {
        if let Err(e) = r {
            assert_no_password(e);
        }
    }
    [sql, repl]
}

fn expect_tls(url_label: &str, results: [Result<bool, String>; 2]) {
    for (kind, r) in ["pg::connect", "replication"].iter().zip(results) {
        match r {
            Ok(ssl) => assert!(ssl, "{url_label} via {kind}: connected without TLS"),
            Err(e) => panic!("{url_label} via {kind} failed: {e}"),
        }
    }
}

fn expect_failure(url_label: &str, results: [Result<bool, String>; 2], needle: &str) {
    for (kind, r) in ["pg::connect", "replication"].iter().zip(results) {
        match r {
            Ok(_) => panic!("{url_label} via {kind} connected but should not have"),
            Err(e) => assert!(
                e.contains(needle),
                "{url_label} via {kind}: expected {needle:?} in: {e}"
            ),
        }
    }
}

#[tokio::test]
async fn tls_modes_and_password_sources_work_for_both_connection_kinds() {
    let Some(mut cluster) = support::Cluster::start_or_skip(15) else {
        return;
    };
    let data = cluster.data_dir().to_path_buf();
    let pki = make_pki();
    let wrong_pki = make_pki();
    write_private(&data.join("server.crt"), &pki.server_pem, &data);
    write_private(&data.join("server.key"), &pki.server_key_pem, &data);

    let certs = tempfile::tempdir().unwrap();
    let ca = certs.path().join("ca.crt");
    let wrong_ca = certs.path().join("wrong-ca.crt");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    std::fs::write(&wrong_ca, &wrong_pki.ca_pem).unwrap();

    let admin = cluster.client("postgres").await;
    // One statement per call: ALTER SYSTEM refuses to run in the implicit transaction of a batch.
    for sql in [
        "SET password_encryption = 'scram-sha-256'".to_string(),
        format!("CREATE ROLE {ROLE} LOGIN REPLICATION PASSWORD '{PASSWORD}'"),
        "ALTER SYSTEM SET ssl = on".to_string(),
        "ALTER SYSTEM SET ssl_cert_file = 'server.crt'".to_string(),
        "ALTER SYSTEM SET ssl_key_file = 'server.key'".to_string(),
    ] {
        admin.batch_execute(&sql).await.unwrap();
    }
    drop(admin);
    let hba = data.join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!(
            "hostssl all {ROLE} 127.0.0.1/32 scram-sha-256\n\
             hostnossl all {ROLE} 127.0.0.1/32 reject\n{old}"
        ),
    )
    .unwrap();
    cluster.restart();

    let port = cluster.port();
    let ca_q = ca.display().to_string().replace('/', "%2F");
    let wrong_q = wrong_ca.display().to_string().replace('/', "%2F");
    let url = |host: &str, query: &str| {
        format!("postgresql://{ROLE}:{PASSWORD}@{host}:{port}/postgres?{query}")
    };

    // require: TLS, certificate not checked.
    expect_tls("require", both(&url("127.0.0.1", "sslmode=require")).await);
    // The default (prefer) uses TLS when the server offers it.
    expect_tls(
        "default",
        both(&format!(
            "postgresql://{ROLE}:{PASSWORD}@127.0.0.1:{port}/postgres"
        ))
        .await,
    );
    // verify-full with the right CA, by name and by IP address (both in the certificate).
    let full = format!("sslmode=verify-full&sslrootcert={ca_q}");
    expect_tls(
        "verify-full localhost",
        both(&url("localhost", &full)).await,
    );
    expect_tls(
        "verify-full 127.0.0.1",
        both(&url("127.0.0.1", &full)).await,
    );
    // A name not in the certificate: verify-ca accepts it, verify-full does not.
    let kv = |mode: &str, root: &Path| {
        format!(
            "host=db.invalid hostaddr=127.0.0.1 port={port} user={ROLE} password={PASSWORD} \
             dbname=postgres sslmode={mode} sslrootcert='{}'",
            root.display()
        )
    };
    expect_tls("verify-ca other name", both(&kv("verify-ca", &ca)).await);
    expect_failure(
        "verify-full other name",
        both(&kv("verify-full", &ca)).await,
        "not issued for host",
    );
    // A CA that did not sign the server's certificate.
    expect_failure(
        "verify-full wrong CA",
        both(&url(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={wrong_q}"),
        ))
        .await,
        "not signed by a CA",
    );
    expect_failure(
        "require + sslrootcert wrong CA",
        both(&url(
            "localhost",
            &format!("sslmode=require&sslrootcert={wrong_q}"),
        ))
        .await,
        "not signed by a CA",
    );
    // disable: the server's hostnossl line rejects the role.
    expect_failure(
        "disable",
        both(&url("127.0.0.1", "sslmode=disable")).await,
        "no encryption",
    );
    // A wrong password fails without echoing either password.
    let wrong =
        format!("postgresql://{ROLE}:not-{PASSWORD}@127.0.0.1:{port}/postgres?sslmode=require");
    expect_failure(
        "wrong password",
        both(&wrong).await,
        "password authentication failed",
    );

    // The binary, with the password only in a PGPASSFILE (mode 0600), connects over TLS.
    let pass_dir = tempfile::tempdir().unwrap();
    let passfile = pass_dir.path().join("pgpass");
    std::fs::write(
        &passfile,
        format!("# test\n127.0.0.1:{port}:postgres:{ROLE}:{PASSWORD}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    let no_pw = format!("postgresql://{ROLE}@127.0.0.1:{port}/postgres?sslmode=require");
    let passfile_s = passfile.display().to_string();
    let env = [
        ("PGPASSFILE", passfile_s.as_str()),
        ("PGPASSWORD", ""),
        ("PGREPART_LOG", "debug"),
    ];
    let out = support::pgrepart_with_env(&["status", "--source", &no_pw], &env).await;
    let text = support::inspect::output_text(&out);
    assert_no_password(&text);
    assert!(
        out.status.success(),
        "status did not connect with the password file: {text}"
    );
    // The same file readable by the group is ignored with a warning naming it.
    std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o640)).unwrap();
    let out = support::pgrepart_with_env(&["status", "--source", &no_pw], &env).await;
    let text = support::inspect::output_text(&out);
    assert_no_password(&text);
    assert!(
        !out.status.success(),
        "connected without a password: {text}"
    );
    assert!(
        text.contains(&passfile_s) && text.contains("group or world access"),
        "no warning naming the ignored password file: {text}"
    );

    // Without TLS on the server: prefer falls back to plain text, require says what is wrong.
    let admin = cluster.client("postgres").await;
    admin
        .batch_execute("ALTER SYSTEM SET ssl = off")
        .await
        .unwrap();
    drop(admin);
    cluster.restart();
    let trusted = |query: &str| format!("postgresql://postgres@127.0.0.1:{port}/postgres?{query}");
    for (kind, r) in ["pg::connect", "replication"]
        .iter()
        .zip(both(&trusted("sslmode=prefer")).await)
    {
        assert_eq!(r, Ok(false), "prefer without server TLS via {kind}");
    }
    expect_failure(
        "require without server TLS",
        both(&trusted("sslmode=require")).await,
        "does not accept TLS",
    );
}
