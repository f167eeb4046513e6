//! One error type for the whole program. Every error knows whether it is worth retrying
//! (`is_transient`) and carries, in its message, what the user should do next.

use std::fmt;

/// What kind of failure, which decides the exit code and whether a retry can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
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
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn refused(message: impl Into<String>) -> Self {
        Error {
            kind: Kind::Refused,
            message: message.into(),
            hint: None,
            source: None,
        }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Error {
            kind: Kind::Failed,
            message: message.into(),
            hint: None,
            source: None,
        }
    }

    pub fn transient(message: impl Into<String>) -> Self {
        Error {
            kind: Kind::Transient,
            message: message.into(),
            hint: None,
            source: None,
        }
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

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// Wraps a database error with what we were doing, classifying it by SQLSTATE.
    pub fn db(context: impl Into<String>, err: tokio_postgres::Error) -> Self {
        let context = context.into();
        let transient = is_transient_pg(&err);
        let (message, hint) = match err.as_db_error() {
            Some(db) => (
                format!("{context}: {}", db.message()),
                db.hint().map(str::to_string),
            ),
            None => (format!("{context}: {err}"), None),
        };
        Error {
            kind: if transient {
                Kind::Transient
            } else {
                Kind::Failed
            },
            message,
            hint,
            source: Some(Box::new(err)),
        }
    }

    pub fn replication(
        context: impl Into<String>,
        err: crate::replication::ReplicationError,
    ) -> Self {
        use crate::replication::ReplicationError as R;
        let kind = match &err {
            R::Io(_) => Kind::Transient,
            R::Server { code, .. } if transient_sqlstate(code) => Kind::Transient,
            _ => Kind::Failed,
        };
        let message = format!("{}: {err}", context.into());
        Error {
            kind,
            message,
            hint: None,
            source: Some(Box::new(err)),
        }
    }
}

/// SQLSTATE classes that a retry can cure: connection loss, shutdown, serialization, lock timeouts.
pub fn transient_sqlstate(code: &str) -> bool {
    code.starts_with("08") // connection exception
        || code.starts_with("57P") // admin/crash shutdown, cannot connect now
        || code == "40001" // serialization failure
        || code == "40P01" // deadlock
        || code == "55P03" // lock not available (lock_timeout)
        || code == "53300" // too many connections
}

fn is_transient_pg(err: &tokio_postgres::Error) -> bool {
    if err.is_closed() {
        return true;
    }
    match err.code() {
        Some(code) => transient_sqlstate(code.code()),
        // No SQLSTATE: an I/O or protocol failure of the connection itself.
        None => err.as_db_error().is_none(),
    }
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
