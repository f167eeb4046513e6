//! `pgrepart abort`: stop a migration and remove everything it created (slot, publication, the
//! generated target table, state), also when the `run` process is gone.

use std::time::{Duration, Instant};

use crate::cli::AbortArgs;
use crate::error::{Error, Result};
use crate::pg::ident::quote_ident;
use crate::state::{self, Phase, Request};

pub async fn run(args: AbortArgs) -> Result<()> {
    let dbs = super::Databases::from_args(&args.conn)?;
    let table = super::table_arg(&args.table)?;
    // `client`: the state and the new table (target database); `source`: slot and publication.
    let client = dbs.connect_state("pgrepart abort").await?;
    let source = dbs.connect_source("pgrepart abort").await?;
    let m = super::require_migration(&client, &table).await?;
    // A reverted migration is aborted whole, across databases too.
    if m.target_committed_fence.is_some() && m.phase != Phase::Reverted {
        return Err(Error::refused(format!(
            "migration {} of {table} has cut over in the target database already (the new table has its final name there); only the source's rename is left",
            m.id
        ))
        .with_hint("run the same `pgrepart run` command again: it finishes the cutover"));
    }
    if m.phase == Phase::Done {
        return Err(Error::refused(format!(
            "migration {} of {table} has already cut over; there is nothing to abort",
            m.id
        ))
        .with_hint(if m.window.is_open() {
            "its rollback window is open: `pgrepart revert` swaps back, `pgrepart finish` ends the window".to_string()
        } else {
            format!(
                "the old table is {}; drop it when you no longer need it",
                table.sibling(m.old_name.clone())
            )
        }));
    }
    if !args.yes && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        let question = format!(
            "Abort migration {} of {table} ({})? This drops its replication slot and publication, \
             the new table {} (if pgrepart created it) and its state; {table} itself is not touched. [y/N] ",
            m.id,
            m.phase.as_str(),
            m.target
        );
        if !ask(&question)? {
            return Err(Error::refused("not aborted: the answer was not yes")
                .with_hint("answer y, or pass --yes (scripts: stdin that is not a terminal is never asked)"));
        }
    }
    state::request(&client, m.id, Request::Abort).await?;

    // Give a running `run` a moment to notice and let go of the slot; then end its walsender, or
    // its state session when its stream is parked (no walsender, the slot inactive).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // Who still holds the migration: its run, by its lock (a run whose stream is parked has no
        // walsender), else the slot's walsender; with neither, the slot is dropped.
        let (holder, stuck) = match state::run_lock_holder(&client, m.id).await? {
            Some(pid) => (
                Some((&client, pid, "ending the migration's run session")),
                format!("a `pgrepart run` still runs migration {}", m.id),
            ),
            None => {
                let row = source
                    .query_opt(
                        "SELECT active, active_pid FROM pg_replication_slots WHERE slot_name = $1",
                        &[&m.slot_name],
                    )
                    .await
                    .map_err(|e| Error::db("reading the replication slot", e))?;
                let walsender = match row {
                    Some(r) if r.get::<_, bool>(0) => Some((
                        &source,
                        r.get::<_, i32>(1),
                        "ending the migration's walsender",
                    )),
                    Some(_) => {
                        match source
                            .execute("SELECT pg_drop_replication_slot($1)", &[&m.slot_name])
                            .await
                        {
                            Ok(_) => break,
                            // Taken again between the look and the drop: look again.
                            Err(e)
                                if e.code()
                                    == Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE) =>
                            {
                                None
                            }
                            Err(e) => return Err(Error::db("dropping the replication slot", e)),
                        }
                    }
                    None => break,
                };
                (
                    walsender,
                    format!("the replication slot {} stays in use", m.slot_name),
                )
            }
        };
        if let Some((session, pid, what)) = holder
            && Instant::now() > deadline
        {
            session
                .execute("SELECT pg_terminate_backend($1)", &[&pid])
                .await
                .map_err(|e| Error::db(what, e))?;
        }
        if Instant::now() > deadline + Duration::from_secs(20) {
            return Err(Error::failed(stuck)
                .with_hint("stop the `pgrepart run` process, then run abort again"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    source
        .batch_execute(&format!(
            "DROP PUBLICATION IF EXISTS {}",
            quote_ident(&m.publication_name)
        ))
        .await
        .map_err(|e| Error::db("dropping the publication", e))?;
    // A rollback window prepared before a cutover that did not happen, or left by a revert.
    crate::rollback::drop_reverse(&source, &m).await?;
    if dbs.cross {
        // Across databases the reverse slot is on the target, its candidates on the source.
        crate::rollback::drop_reverse(&client, &m).await?;
        crate::rollback::cross::forget_conflicts(&source, m.id).await?;
    }
    if m.target_created {
        client
            .batch_execute(&format!("DROP TABLE IF EXISTS {} CASCADE", m.target.sql()))
            .await
            .map_err(|e| Error::db("dropping the new table", e))?;
    } else {
        // An --into table was empty when the migration started: give it back empty.
        client
            .batch_execute(&format!("TRUNCATE {}", m.target.sql()))
            .await
            .map_err(|e| Error::db("emptying the --into table", e))?;
    }
    state::delete(&client, m.id).await?;
    println!(
        "migration {} of {table} aborted: slot, publication{} and state removed; {table} is untouched",
        m.id,
        if m.target_created {
            format!(", {}", m.target)
        } else {
            String::new()
        }
    );
    Ok(())
}

/// Asks `question` on standard error and reads one line from standard input.
fn ask(question: &str) -> Result<bool> {
    use std::io::Write;
    eprint!("{question}");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|e| Error::failed(format!("could not read the answer: {e}")))?;
    Ok(is_yes(&answer))
}

/// `y` or `yes`, in any case; anything else (an empty line, end of input) is no.
fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_y_or_yes_confirms() {
        for yes in ["y\n", "YES\n", " yes "] {
            assert!(super::is_yes(yes), "{yes:?}");
        }
        for no in ["", "\n", "n\n", "no", "yess", "abort"] {
            assert!(!super::is_yes(no), "{no:?}");
        }
    }
}
