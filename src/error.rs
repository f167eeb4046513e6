//! One error type for the whole program. Every error knows its kind (which decides the exit code
//! and whether a retry can help) and carries, in its message, what the user should do next.
//!
//! Transient means transient: an error is retried only when one of the rules below matched it,
//! and the rule's name travels with it so that the log says why a failure was retried.
//!
//! | rule | what it covers |
//! | --- | --- |
//! | `connection closed` | the client saw its connection end (server gone, backend terminated) |
//! | `I/O error` | reading or writing the socket failed (reset, refused, timed out) |
//! | `SQLSTATE class 08` | connection exception, as reported by the server |
//! | `SQLSTATE 57P01/57P02/57P03` | admin or crash shutdown (a restart, `pg_terminate_backend`), the server not accepting connections yet |
//! | `SQLSTATE 53300` | too many connections (a restarted server filling up again) |
//! | `SQLSTATE 25006` | a read-only transaction: a server that is still a standby during a failover |
//! | `SQLSTATE 40001/40P01` | serialization failure and deadlock (the apply retries its batch) |
//! | `SQLSTATE 55P03` | lock not available (a lock_timeout) |
//!
//! Everything else is definite: a client-side conversion or row-count error, a configuration
//! error, a constraint violation, a permission error. Those stop the run with what to do.

use std::fmt;

/// What kind of failure, which decides the exit code and whether a retry can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The command line is wrong (a bad flag value, a missing argument). Found before any
    /// connection is made, so nothing was created. Exit status 2.
    Usage,
    /// The request cannot be carried out as given (bad input, unsupported setup). Nothing was changed.
    Refused,
    /// Something failed while working; state is kept so that running the same command again resumes.
    Failed,
    /// A connection dropped or a lock could not be had in time: retrying can help.
    Transient,
}

#[derive(Debug)]
pub struct Error {
    pub kind: Kind,
    message: String,
    hint: Option<String>,
    /// For a transient error: the rule that classified it (see the module's table).
    rule: Option<&'static str>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    fn new(kind: Kind, message: String) -> Self {
        Error {
            kind,
            message,
            hint: None,
            rule: None,
            source: None,
        }
    }

    /// A bad command line: exit 2, found before anything was created.
    pub fn usage(message: impl Into<String>) -> Self {
        Error::new(Kind::Usage, message.into())
    }

    pub fn refused(message: impl Into<String>) -> Self {
        Error::new(Kind::Refused, message.into())
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Error::new(Kind::Failed, message.into())
    }

    /// A transient error that our own code decided on (e.g. the server ended the stream);
    /// `rule` names why it is transient.
    pub fn transient(message: impl Into<String>) -> Self {
        let mut e = Error::new(Kind::Transient, message.into());
        e.rule = Some("connection closed");
        e
    }

    /// The same error, as a usage error: for a check of the command line's own content (a
    /// partition bound's grammar, a name), made before any connection.
    pub fn into_usage(mut self) -> Self {
        self.kind = Kind::Usage;
        self.rule = None;
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    pub fn is_transient(&self) -> bool {
        self.kind == Kind::Transient
    }

    pub fn is_usage(&self) -> bool {
        self.kind == Kind::Usage
    }

    /// The rule that made this error transient (`None` for a definite one).
    pub fn transient_rule(&self) -> Option<&'static str> {
        self.rule
    }

    /// The exit status this error ends the program with: 2 for a usage error, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self.kind {
            Kind::Usage => 2,
            _ => 1,
        }
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// An error of the kind and rule given, for the constructors of other modules
    /// (`Error::replication`).
    pub(crate) fn classified(
        message: String,
        rule: Option<&'static str>,
        source: Box<dyn std::error::Error + Send + Sync>,
    ) -> Self {
        Error {
            kind: if rule.is_some() {
                Kind::Transient
            } else {
                Kind::Failed
            },
            message,
            hint: None,
            rule,
            source: Some(source),
        }
    }

    /// As [`Error::db`], with the whole message given (e.g. psql's wording of a refused
    /// connection) instead of `context: error`.
    pub fn db_described(message: impl Into<String>, err: tokio_postgres::Error) -> Self {
        let mut e = Error::db("", err);
        e.message = message.into();
        e
    }

    /// Wraps a database error with what we were doing, classifying it by rule.
    pub fn db(context: impl Into<String>, err: tokio_postgres::Error) -> Self {
        let context = context.into();
        let rule = transient_pg_rule(&err);
        let (message, hint) = match err.as_db_error() {
            Some(db) => (
                format!("{context}: {}", db.message()),
                db.hint().map(str::to_string),
            ),
            None => (format!("{context}: {err}"), None),
        };
        let mut e = Error::classified(message, rule, Box::new(err));
        e.hint = hint;
        e
    }
}

const RULE_CLOSED: &str = "connection closed";
pub(crate) const RULE_IO: &str = "I/O error";

/// The rule under which a SQLSTATE is transient, if one is (see the module's table).
pub fn transient_sqlstate_rule(code: &str) -> Option<&'static str> {
    Some(match code {
        c if c.starts_with("08") => "SQLSTATE class 08 (connection exception)",
        "57P01" => "SQLSTATE 57P01 (admin shutdown: a server stop or pg_terminate_backend)",
        "57P02" => "SQLSTATE 57P02 (crash shutdown)",
        "57P03" => "SQLSTATE 57P03 (the server does not accept connections yet)",
        "53300" => "SQLSTATE 53300 (too many connections)",
        "25006" => "SQLSTATE 25006 (read-only transaction: a standby during a failover)",
        "40001" => "SQLSTATE 40001 (serialization failure)",
        "40P01" => "SQLSTATE 40P01 (deadlock)",
        "55P03" => "SQLSTATE 55P03 (lock not available)",
        _ => return None,
    })
}

/// Whether a SQLSTATE is transient (see [`transient_sqlstate_rule`]).
pub fn transient_sqlstate(code: &str) -> bool {
    transient_sqlstate_rule(code).is_some()
}

/// The rule that makes a client error transient: a closed connection, an I/O error underneath,
/// or a transient SQLSTATE. An error with no SQLSTATE is transient only for the first two.
fn transient_pg_rule(err: &tokio_postgres::Error) -> Option<&'static str> {
    if err.is_closed() {
        return Some(RULE_CLOSED);
    }
    if let Some(code) = err.code() {
        return transient_sqlstate_rule(code.code());
    }
    if err.as_db_error().is_some() {
        return None;
    }
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return Some(RULE_IO);
        }
        source = s.source();
    }
    // tokio-postgres's connect timeout carries no source.
    err.to_string()
        .starts_with("timeout waiting for server")
        .then_some(RULE_IO)
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_of_lost_connections_and_lock_timeouts_are_transient() {
        for code in ["08006", "08001", "57P01", "40P01", "55P03", "40001"] {
            assert!(transient_sqlstate(code), "{code}");
        }
        for code in ["42P01", "23505", "42501", "22P02"] {
            assert!(!transient_sqlstate(code), "{code}");
        }
    }

    #[test]
    fn each_transient_sqlstate_names_its_rule_and_others_are_definite() {
        assert!(
            transient_sqlstate_rule("08P01")
                .unwrap()
                .contains("class 08")
        );
        assert!(
            transient_sqlstate_rule("57P01")
                .unwrap()
                .contains("pg_terminate_backend")
        );
        // Query cancelled, database dropped, out of disk, bad data: a retry does not cure them.
        for code in ["57014", "57P04", "53100", "22003", "XX000", "0A000"] {
            assert_eq!(transient_sqlstate_rule(code), None, "{code}");
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_transient_by_the_io_rule() {
        // Port 1 on loopback: nothing listens there.
        let err = tokio_postgres::connect(
            "host=127.0.0.1 port=1 user=x connect_timeout=5",
            tokio_postgres::NoTls,
        )
        .await
        .err()
        .expect("nothing listens on port 1");
        let e = Error::db("connecting", err);
        assert!(e.is_transient(), "{e}");
        assert_eq!(e.transient_rule(), Some(RULE_IO));
    }

    #[test]
    fn a_client_side_error_without_a_sqlstate_is_definite() {
        let err = "port=notanumber"
            .parse::<tokio_postgres::Config>()
            .expect_err("a bad port does not parse");
        let e = Error::db("reading the connection string", err);
        assert!(!e.is_transient(), "{e}");
        assert_eq!(e.transient_rule(), None);
        assert_eq!(e.exit_code(), 1);
        assert_eq!(Error::usage("bad flag").exit_code(), 2);
    }

    #[test]
    fn display_puts_the_hint_on_its_own_line() {
        let e =
            Error::refused("wal_level is replica").with_hint("set wal_level = logical and restart");
        assert_eq!(
            e.to_string(),
            "wal_level is replica\n  hint: set wal_level = logical and restart"
        );
        assert!(!e.is_transient());
    }
}
