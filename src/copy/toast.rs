//! Which compression method the values we write into the new table get.
//!
//! COPY carries TOASTed values uncompressed, so every one the copy writes is compressed again; the
//! applier's are too. With pglz that compression was a sixth of the server's CPU time during the
//! copy of the bench's table (perf, `pglz_compress`), and lz4 does the same work several times
//! faster. Columns with a method of their own keep it (the new table's columns carry it); the
//! others follow the session's `default_toast_compression`, which is what this chooses.

use clap::ValueEnum;
use tokio_postgres::Client;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ToastCompression {
    /// lz4 where the target server has it and its `default_toast_compression` was not set by
    /// its administrator; the server's default otherwise.
    Auto,
    /// lz4 (the server's default, with a warning, where the server lacks it).
    Lz4,
    /// pglz.
    Pglz,
    /// The target server's `default_toast_compression`.
    Server,
}

/// The target server's setting, as `pg_settings` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSetting {
    /// `default_toast_compression`.
    pub default: String,
    /// Set by the administrator (configuration file, `ALTER SYSTEM`, database or role), not the
    /// built-in default.
    pub configured: bool,
    /// The server was built with lz4.
    pub lz4: bool,
}

/// The method to set in our sessions (`None`: leave the server's), and a warning for the log.
pub fn choose(
    asked: ToastCompression,
    server: Option<&ServerSetting>,
) -> (Option<&'static str>, Option<String>) {
    // A server without the setting (before PostgreSQL 14) has only pglz.
    let Some(server) = server else {
        return (None, None);
    };
    let want = match asked {
        ToastCompression::Server => return (None, None),
        ToastCompression::Pglz => "pglz",
        ToastCompression::Auto if server.configured => return (None, None),
        ToastCompression::Auto if !server.lz4 => return (None, None),
        ToastCompression::Auto => "lz4",
        ToastCompression::Lz4 if !server.lz4 => {
            return (
                None,
                Some(format!(
                    "the target server was built without lz4: the new table's values are compressed with its default ({})",
                    server.default
                )),
            );
        }
        ToastCompression::Lz4 => "lz4",
    };
    if server.default == want {
        (None, None)
    } else {
        (Some(want), None)
    }
}

/// Chooses the method for `asked` from the target server's setting, says so in the log, and sets
/// it in `client` (a session on the target); the copy's sessions are given the same with [`apply`].
pub async fn prepare(client: &Client, asked: ToastCompression) -> Result<Option<&'static str>> {
    let setting = server_setting(client).await?;
    let (method, warning) = choose(asked, setting.as_ref());
    if let Some(w) = warning {
        tracing::warn!("{w}");
    }
    if let Some(m) = method {
        tracing::info!(
            method = m,
            "TOASTed values written into the new table are compressed with this method (--toast-compression)"
        );
    }
    apply(client, method).await?;
    Ok(method)
}

/// Reads the target server's setting (`None` before PostgreSQL 14).
async fn server_setting(client: &Client) -> Result<Option<ServerSetting>> {
    let row = client
        .query_opt(
            "SELECT setting, source NOT IN ('default', 'override'), 'lz4' = ANY(enumvals) \
             FROM pg_settings WHERE name = 'default_toast_compression'",
            &[],
        )
        .await
        .map_err(|e| Error::db("reading the target's default_toast_compression", e))?;
    Ok(row.map(|r| ServerSetting {
        default: r.get(0),
        configured: r.get(1),
        lz4: r.get(2),
    }))
}

/// Sets the chosen method in a session that writes into the new table.
pub async fn apply(client: &Client, method: Option<&str>) -> Result<()> {
    if let Some(m) = method {
        client
            .batch_execute(&format!("SET default_toast_compression = {m}"))
            .await
            .map_err(|e| Error::db("setting the compression of the new table's values", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(default: &str, configured: bool, lz4: bool) -> ServerSetting {
        ServerSetting {
            default: default.into(),
            configured,
            lz4,
        }
    }

    #[test]
    fn auto_takes_lz4_only_where_nobody_chose_and_the_server_has_it() {
        use ToastCompression::Auto;
        assert_eq!(
            choose(Auto, Some(&server("pglz", false, true))),
            (Some("lz4"), None)
        );
        // An administrator's pglz stands.
        assert_eq!(
            choose(Auto, Some(&server("pglz", true, true))),
            (None, None)
        );
        // No lz4 in this build: the server's default, quietly.
        assert_eq!(
            choose(Auto, Some(&server("pglz", false, false))),
            (None, None)
        );
        // Already lz4: nothing to set.
        assert_eq!(choose(Auto, Some(&server("lz4", true, true))), (None, None));
        // Before PostgreSQL 14.
        assert_eq!(choose(Auto, None), (None, None));
    }

    #[test]
    fn an_explicit_choice_is_set_unless_it_is_already_the_default() {
        let s = server("pglz", true, true);
        assert_eq!(choose(ToastCompression::Lz4, Some(&s)), (Some("lz4"), None));
        assert_eq!(choose(ToastCompression::Pglz, Some(&s)), (None, None));
        assert_eq!(choose(ToastCompression::Server, Some(&s)), (None, None));
        let s = server("lz4", false, true);
        assert_eq!(
            choose(ToastCompression::Pglz, Some(&s)),
            (Some("pglz"), None)
        );
    }

    #[test]
    fn lz4_asked_of_a_server_without_it_warns_and_keeps_its_default() {
        let (method, warning) = choose(ToastCompression::Lz4, Some(&server("pglz", false, false)));
        assert_eq!(method, None);
        assert!(warning.unwrap().contains("without lz4"));
    }
}
