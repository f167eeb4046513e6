//! Talking to PostgreSQL over ordinary connections: connecting, catalog facts, quoting, DDL.

pub mod catalog;
pub mod ddl;
pub mod ident;

use std::str::FromStr;

use tokio_postgres::{Client, Config, NoTls};

use crate::error::{Error, Result};

/// Parses a libpq URL or `key=value` conninfo. The text may hold a password: it is never echoed.
pub fn parse_conninfo(flag: &str, text: &str) -> Result<Config> {
    Config::from_str(text).map_err(|_| {
        Error::refused(format!("{flag} is not a valid connection string"))
            .with_hint("use a URL like postgresql://user@host:5432/dbname or key=value pairs like \"host=... dbname=...\"")
    })
}

/// Opens an ordinary SQL connection and drives it on a background task.
pub async fn connect(config: &Config, application_name: &str) -> Result<Client> {
    let mut config = config.clone();
    config.application_name(application_name);
    let (client, connection) = config.connect(NoTls).await.map_err(|e| {
        let where_ = describe_target(&config);
        Error::db(format!("could not connect to {where_}"), e)
            .with_hint("check that the server is running and the connection string (host, port, user, dbname) is right")
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "connection closed");
        }
    });
    Ok(client)
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
