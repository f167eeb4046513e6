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
