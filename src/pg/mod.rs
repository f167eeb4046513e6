//! Talking to PostgreSQL over ordinary connections: connecting, catalog facts, quoting, DDL.
//!
//! ```text
//! parse_conninfo(text) --conninfo::resolve (service file, PG* variables, defaults)
//!     --tls::split_conninfo--> Config (+ sslmode/sslrootcert kept in tls)
//! pg::connect / ReplicationClient::connect
//!     --prepare_session(config)--> password filled in (passfile), TlsPlan --> socket
//! ```

pub mod catalog;
pub mod conninfo;
pub mod ddl;
pub mod ident;
pub mod passfile;
pub mod tls;

use std::str::FromStr;

use tokio_postgres::{Client, Config};

use crate::error::{Error, Result};

/// Parses a libpq URL, `key=value` conninfo or bare database name, completed as libpq does from
/// the service file and the `PG*` environment variables (see `conninfo`). The text may hold a
/// password: it is never echoed. `sslmode` (all five libpq values) and `sslrootcert` are taken out
/// and kept by `tls`.
pub fn parse_conninfo(flag: &str, text: &str) -> Result<Config> {
    connection_config(flag, Some(text), &[])
}

/// As `parse_conninfo`; `None` (the flag was not given) is the environment and defaults alone,
/// as `psql` with no arguments. `options` are psql-style `--host`, `-p`, `-U` values (see
/// `conninfo::resolve_with`).
pub fn connection_config(
    flag: &str,
    text: Option<&str>,
    options: &[(&str, &str)],
) -> Result<Config> {
    let vars: std::collections::HashMap<String, String> = std::env::vars().collect();
    let read_file = |p: &std::path::Path| std::fs::read_to_string(p).ok();
    let dir_exists = |p: &std::path::Path| p.is_dir();
    let env = conninfo::Environment {
        vars: &vars,
        read_file: &read_file,
        dir_exists: &dir_exists,
    };
    let params = conninfo::resolve_with(text, options, &env).map_err(|why| {
        Error::refused(format!("{flag}: {why}"))
            .with_hint("use a URL like postgresql://user@host:5432/dbname, key=value pairs like \"host=... dbname=...\", a database name, or service=NAME")
    })?;
    let (rest, settings) = tls::split_conninfo(&params.to_keyword_text())
        .map_err(|why| Error::refused(format!("{flag}: {why}")))?;
    let mut config = Config::from_str(&rest).map_err(|e| {
        // tokio-postgres names the option ("invalid value for option `port`"), never the text.
        Error::refused(format!("{flag} is not a valid connection string: {e}"))
            .with_hint("use a URL like postgresql://user@host:5432/dbname or key=value pairs like \"host=... dbname=...\"")
    })?;
    config.ssl_mode(settings.mode.for_tokio_postgres());
    tls::remember(&config, settings);
    Ok(config)
}

/// The `application_name` a pgrepart session announces: its role (`pgrepart apply`), after the
/// user's own `application_name` or `PGAPPNAME` when one was given (`nightly: pgrepart apply`),
/// so that every session stays recognisable in `pg_stat_activity`.
pub fn session_name(config: &Config, role: &str) -> String {
    match config.get_application_name() {
        Some(own) if !own.is_empty() => format!("{own}: {role}"),
        _ => role.to_string(),
    }
}

/// What a connection uses beyond the parsed config, worked out in this one place for ordinary
/// and replication connections alike.
pub struct Session {
    /// The config with the password filled in (see `passfile`) and, for Unix sockets only,
    /// sslmode=disable.
    pub config: Config,
    pub password_source: passfile::PasswordSource,
    pub tls: tls::TlsPlan,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("target", &describe_target(&self.config))
            .field("password_source", &self.password_source)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Fills in the password (`PGPASSWORD`, then `PGPASSFILE` or `~/.pgpass`) and builds the TLS
/// plan for `config`. An ignored password file is logged as a warning naming the file.
pub fn prepare_session(config: &Config) -> std::result::Result<Session, tls::TlsError> {
    let env = passfile::ProcessEnv;
    let (mut config, password_source) = passfile::resolve(config, &env, &mut |warning| {
        tracing::warn!("{warning}");
    });
    let mut settings = tls::settings_for(&config);
    if tls::all_unix_sockets(&config) {
        settings.mode = tls::SslMode::Disable;
    }
    config.ssl_mode(settings.mode.for_tokio_postgres());
    let home = passfile::Env::home(&env);
    let tls = tls::TlsPlan::new(&settings, home.as_deref())?;
    Ok(Session {
        config,
        password_source,
        tls,
    })
}

/// Opens an ordinary SQL connection and drives it on a background task.
pub async fn connect(config: &Config, application_name: &str) -> Result<Client> {
    let where_ = describe_target(config);
    let session = prepare_session(config)
        .map_err(|e| Error::refused(format!("could not connect to {where_}: {e}")))?;
    let mut config = session.config;
    config.application_name(session_name(&config, application_name));
    let (client, connection) = config
        .connect(session.tls.make_tls_connect())
        .await
        .map_err(|e| connect_error(&where_, e, &session.tls, &session.password_source, &config))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "connection closed");
        }
    });
    Ok(client)
}

fn connect_error(
    where_: &str,
    e: tokio_postgres::Error,
    tls: &tls::TlsPlan,
    password_source: &passfile::PasswordSource,
    config: &Config,
) -> Error {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.as_str(),
        _ => "",
    };
    if let Some((reason, hint)) = tls::explain_handshake_failure(&e, tls, host) {
        return Error::failed(format!("could not connect to {where_}: {reason}"))
            .with_hint(hint)
            .with_source(e);
    }
    // tokio-postgres' own TLS errors ("error performing TLS handshake") keep the cause in source().
    let mut chain = e.to_string();
    let mut cur = std::error::Error::source(&e);
    while let Some(s) = cur {
        chain.push_str(&format!(": {s}"));
        cur = s.source();
    }
    if chain.contains("server does not support TLS") {
        return Error::failed(format!(
            "could not connect to {where_}: the server does not accept TLS connections ({})",
            tls.describe()
        ))
        .with_hint("turn on ssl in the server's postgresql.conf, or use sslmode=prefer")
        .with_source(e);
    }
    if chain.starts_with("error performing TLS handshake") {
        return Error::failed(format!(
            "could not connect to {where_}: {chain} ({})",
            tls.describe()
        ))
        .with_hint(
            "check sslmode and sslrootcert here and ssl_cert_file/ssl_key_file on the server",
        )
        .with_source(e);
    }
    if e.code() == Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD) {
        return Error::db(format!("could not connect to {where_} ({password_source})"), e)
            .with_hint("check the password: in the connection string, PGPASSWORD or the password file (PGPASSFILE, ~/.pgpass)");
    }
    if let Some(why) = connection_failure(config, &e) {
        return Error::db_described(format!("could not connect to {where_}: {why}"), e)
            .with_hint("check that the server is running and accepts connections there (host, port; PGHOST, PGPORT)");
    }
    Error::db(format!("could not connect to {where_}"), e)
        .with_hint("check that the server is running and the connection string (host, port, user, dbname) is right")
}

/// psql's wording of a connection that failed before the server answered, with the cause:
/// `connection to server at "127.0.0.1", port 1 failed: Connection refused` (for a Unix socket:
/// `connection to server on socket "/tmp/.s.PGSQL.5432" failed: No such file or directory`).
/// `None` when the error is not such a failure. With several hosts tokio-postgres keeps the
/// last host's error, so all of them are named.
fn connection_failure(config: &Config, e: &tokio_postgres::Error) -> Option<String> {
    if e.as_db_error().is_some() {
        return None;
    }
    let mut cause = None;
    let mut cur = std::error::Error::source(e);
    while let Some(s) = cur {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            cause = Some(io_cause(io));
        }
        cur = s.source();
    }
    let cause = match cause {
        Some(c) => c,
        None if e.to_string().starts_with("timeout waiting for server") => {
            "timeout expired".to_string()
        }
        None => return None,
    };
    let ports = config.get_ports();
    let port_of = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
    let mut servers: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| match h {
            tokio_postgres::config::Host::Tcp(h) => format!("at \"{h}\", port {}", port_of(i)),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(dir) => format!(
                "on socket \"{}\"",
                dir.join(format!(".s.PGSQL.{}", port_of(i))).display()
            ),
        })
        .collect();
    if servers.is_empty() {
        servers = config
            .get_hostaddrs()
            .iter()
            .enumerate()
            .map(|(i, a)| format!("at \"{a}\", port {}", port_of(i)))
            .collect();
    }
    Some(match servers.as_slice() {
        [one] => format!("connection to server {one} failed: {cause}"),
        many => format!(
            "connection to servers {} failed (the last: {cause})",
            many.join("; ")
        ),
    })
}

/// An I/O error as psql words it: "Connection refused", without Rust's " (os error 111)".
fn io_cause(io: &std::io::Error) -> String {
    let text = io.to_string();
    match text.find(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// `host:port/dbname` for messages, without user or password.
pub fn describe_target(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config
        .get_dbname()
        .or(config.get_user())
        .unwrap_or("postgres");
    format!("{host}:{port}/{db}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_users_application_name_leads_every_sessions_own() {
        let mut config = Config::new();
        assert_eq!(session_name(&config, "pgrepart apply"), "pgrepart apply");
        config.application_name("nightly");
        assert_eq!(
            session_name(&config, "pgrepart apply"),
            "nightly: pgrepart apply"
        );
    }
}
