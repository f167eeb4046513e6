//! One module per subcommand: its `run`.

pub mod abort;
pub mod cutover;
pub mod docs;
pub mod pause;
pub mod plan;
pub mod run;
pub mod status;
pub mod verify;
pub mod window;

pub use crate::config::{Databases, Prepared, StoredSpec};
use crate::error::{Error, Result};
use crate::pg::ident::QualifiedName;

/// `--table` checked before any connection: a name that does not parse is a usage error (exit 2).
pub fn table_arg(text: &str) -> Result<QualifiedName> {
    QualifiedName::parse(text).map_err(Error::into_usage)
}

/// Reads the migration of `table`, or says there is none and what to do.
pub async fn require_migration(
    client: &tokio_postgres::Client,
    table: &QualifiedName,
) -> Result<crate::state::Migration> {
    crate::state::latest(client, table).await?.ok_or_else(|| {
        Error::refused(format!(
            "no pgrepart migration of {table} is recorded in this database"
        ))
        .with_hint(
            "check --source, --target (state lives in the target database) and --table; `pgrepart status` lists every migration",
        )
    })
}

/// The sessions of a command that waits for `run` to act on its request (`cutover`, `revert`,
/// `finish`). The request is recorded before the wait, so a session lost while waiting (a
/// terminated backend, a restart, a network cut) is opened again rather than ending the command
/// with an error while `run` goes on to act on the request.
pub struct Watch<'a> {
    dbs: &'a Databases,
    name: &'static str,
    /// The session on the state (target) database.
    pub state: tokio_postgres::Client,
    /// The session on the source, for the commands that look at the slot.
    pub source: Option<tokio_postgres::Client>,
    lost: u32,
}

/// How many transient errors in a row a wait rides out (with [`Watch::pause`] between them, about
/// a minute in all) before it gives up with the error.
const WATCH_RECONNECTS: u32 = 20;

impl<'a> Watch<'a> {
    pub async fn open(dbs: &'a Databases, name: &'static str, with_source: bool) -> Result<Self> {
        let state = dbs.connect_state(name).await?;
        let source = match with_source {
            true => Some(dbs.connect_source(name).await?),
            false => None,
        };
        Ok(Watch {
            dbs,
            name,
            state,
            source,
            lost: 0,
        })
    }

    /// The outcome of one poll of the wait: its value, or `None` after a lost session was
    /// opened again (poll again), or the command's error (see [`Watch::recover`]).
    pub async fn settle<T>(&mut self, polled: Result<T>) -> Result<Option<T>> {
        match polled {
            Ok(value) => {
                self.lost = 0;
                Ok(Some(value))
            }
            Err(e) => self.recover(e).await.map(|()| None),
        }
    }

    /// After a poll of the wait failed with `e`: a transient error (up to [`WATCH_RECONNECTS`] in
    /// a row) opens the sessions again and the wait goes on; any other is the command's error.
    async fn recover(&mut self, e: Error) -> Result<()> {
        if !e.is_transient() || self.lost >= WATCH_RECONNECTS {
            return Err(e);
        }
        self.lost += 1;
        eprintln!(
            "{}: lost a session while waiting ({}); opening it again, the request stands",
            self.name,
            e.message()
        );
        tokio::time::sleep(Self::pause(self.lost)).await;
        let reopened = async {
            let state = self.dbs.connect_state(self.name).await?;
            let source = match self.source {
                Some(_) => Some(self.dbs.connect_source(self.name).await?),
                None => None,
            };
            Ok::<_, Error>((state, source))
        };
        match reopened.await {
            Ok((state, source)) => {
                self.state = state;
                self.source = source;
                Ok(())
            }
            // The next poll fails on the old session and counts again.
            Err(e) if e.is_transient() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The pause before the `n`th reconnection in a row (pure): growing, at most 5 s.
    fn pause(n: u32) -> std::time::Duration {
        std::time::Duration::from_millis((250 * u64::from(n)).min(5_000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_rides_out_about_a_minute_of_lost_sessions_with_growing_pauses() {
        assert_eq!(Watch::pause(1).as_millis(), 250);
        assert_eq!(Watch::pause(4).as_millis(), 1_000);
        assert_eq!(Watch::pause(100).as_millis(), 5_000);
        let total: u128 = (1..=WATCH_RECONNECTS)
            .map(|n| Watch::pause(n).as_millis())
            .sum();
        assert!((45_000..=120_000).contains(&total), "{total} ms");
    }
}
