//! The fault matrix: every session `pgrepart run` opens, terminated (`pg_terminate_backend`) in
//! every phase where it exists, under a concurrent write load; and a server restart during the
//! copy and while streaming. Each case ends with the migration cut over and the new table compared
//! row by row with the writers' record: the run recovered by itself, or it stopped with a message
//! and the same command, run again, finished the job.
//!
//! The phases that pass too quickly to hit from outside are held at test points
//! (`PGREPART_TEST_HOLD`, see src/fault.rs): the process writes `<point>.reached` and waits for
//! `<point>.release`, with the sessions of that phase open.
//!
//! | phase | held at | sessions |
//! | --- | --- | --- |
//! | setup | the slot's snapshot imported by the copy sessions | state, source, replication, copy source, probe |
//! | copy | a range's COPY in flight on both sides | state, source, replication, copy source, copy target, apply, probe, route |
//! | index build | an index session open, the parent locked | state, source, replication, apply, index, probe |
//! | catch-up | the supervisor, as streaming begins | state, source, replication, apply, probe |
//! | streaming | (not held: changes applied) | state, source, replication, apply, probe |
//! | verify | every verify session open, the applier held | state, source, replication, apply, verify |
//! | cutover | the fence session open, before the lock | state, source, replication, apply, fence; `pgrepart cutover`'s own, waiting |
//! | rollback window | (not held: changes applied back) | state, source, reverse replication, reverse apply |
//! | revert: forward slot | before the forward slot is made (before the revert's lock); and, for `pgrepart source`, while the slot's creation waits for a transaction | state, source, reverse replication, reverse apply; `pgrepart revert`'s own, waiting |
//! | revert | the fence session open, before the lock | state, source, reverse replication, reverse apply, fence; `pgrepart revert`'s own, waiting |
//! | window across databases | (not held) | reverse replication (on the target), reverse apply (source), state (target) |
//! | revert across databases | the fence session open, before the lock | state (target: the revert's locked session), fence (target), reverse replication (target), source |
//! | revert across databases, forward slot | before the forward slot is made on the source; its creation waiting | source (makes the slot), state (target) |
//!
//! `pgrepart route` lives only during the copy and only for keys other than a single integer: its
//! case moves the table's primary key to `(customer_id, id)` first. Two sessions are not in the
//! matrix because they live for one statement: `pgrepart cancel` (cancels index builds when a run
//! stops) and the applier's `pgrepart source` that reads the table's definition when a column is
//! added during the migration (tests/add_column.rs).
//!
//! The copy cases run on a small table; each case has its own cluster.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::flow::{seed_run_args, spawn_with_env, wait_status};
use support::inspect::{self, output_text};
use support::program::{Background, spawn_pgrepart_with_env, tail};
use support::{Cluster, Writers, WritersConfig, compare, schema, test_majors, unique_name};

const SEED_ROWS: usize = 4_000;
const DEADLINE: Duration = Duration::from_secs(150);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Setup,
    Copy,
    IndexBuild,
    CatchUp,
    Streaming,
    Verify,
    Cutover,
}

impl Phase {
    /// The test point that holds the run in this phase (none: streaming is long enough).
    fn hold_point(self) -> Option<&'static str> {
        match self {
            Phase::Setup => Some("setup-snapshot-imported"),
            Phase::Copy => Some("copy-range"),
            Phase::IndexBuild => Some("index-build"),
            Phase::CatchUp => Some("catch-up"),
            Phase::Streaming => None,
            Phase::Verify => Some("verify-sessions"),
            Phase::Cutover => Some("cutover"),
        }
    }

    /// The cutover is asked for before the phase is reached (the verify before it, the swap).
    fn needs_cutover_request(self) -> bool {
        matches!(self, Phase::Verify | Phase::Cutover)
    }
}

/// What is done to the run once it is in the phase.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// `pg_terminate_backend` of every session with this `application_name`.
    Terminate(&'static str),
    /// `pg_ctl restart -m fast`.
    Restart,
}

/// A running case: the cluster, its database, the writers and the run.
struct Case {
    cluster: Cluster,
    url: String,
    db: String,
    writers: Writers,
    args: Vec<String>,
    env: Vec<(String, String)>,
    hold_dir: tempfile::TempDir,
    context: String,
}

impl Case {
    async fn start(phase: Phase, fault: Fault) -> Option<Case> {
        let major = *test_majors().first()?;
        let cluster = Cluster::start_or_skip(major)?;
        let db = unique_name("matrix");
        let url = cluster.create_database(&db).await;
        let client = cluster.client(&db).await;
        schema::create_seed_table(&client, "orders_flat", SEED_ROWS).await;
        // A secondary index, so that the index build has sessions of its own.
        client
            .batch_execute("CREATE INDEX orders_flat_customer_idx ON orders_flat (customer_id)")
            .await
            .unwrap_or_else(|e| panic!("secondary index: {}", support::describe(&e)));
        if matches!(fault, Fault::Terminate("pgrepart route")) {
            // A key the server orders (not a single integer): its changes are routed to their
            // copy range by the route session. The writers never change customer_id.
            client
                .batch_execute(
                    "ALTER TABLE orders_flat DROP CONSTRAINT orders_flat_pkey, \
                     ADD PRIMARY KEY (customer_id, id); \
                     CREATE INDEX orders_flat_id_idx ON orders_flat (id)",
                )
                .await
                .unwrap_or_else(|e| panic!("composite key: {}", support::describe(&e)));
        }
        let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
        writers.wait_for_more_ops(100, DEADLINE).await;
        let mut run_flags = vec!["--cutover", "manual"];
        if matches!(fault, Fault::Terminate("pgrepart route")) {
            // Changes are taken (and routed) during the copy only with the key declared first.
            run_flags.extend(["--primary-key", "before-copy"]);
        }
        let hold_dir = tempfile::Builder::new()
            .prefix("pgrepart-hold-")
            .tempdir()
            .expect("hold dir");
        let mut env = vec![];
        if let Some(point) = phase.hold_point() {
            env.push(("PGREPART_TEST_HOLD".to_string(), point.to_string()));
            env.push((
                "PGREPART_TEST_HOLD_DIR".to_string(),
                hold_dir.path().to_string_lossy().into_owned(),
            ));
        }
        if matches!(fault, Fault::Terminate("pgrepart probe")) {
            // The probe belongs to the load governor, which the harness turns off by default.
            env.push(("PGREPART_MAX_IMPACT".to_string(), "15".to_string()));
        }
        Some(Case {
            cluster,
            url: url.clone(),
            db,
            writers,
            args: seed_run_args(&url, &run_flags),
            env,
            hold_dir,
            context: format!("PostgreSQL {major}, {phase:?} phase, {fault:?}"),
        })
    }

    fn spawn_run(&self) -> Background {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        spawn_with_env(&self.args, &env)
    }

    fn marker(&self, point: &str, what: &str) -> PathBuf {
        self.hold_dir.path().join(format!("{point}.{what}"))
    }

    async fn wait_held(&self, run: &mut Background, point: &str) {
        wait_marker(&self.marker(point, "reached"), run, &self.context).await;
    }

    fn release(&self, point: &str) {
        std::fs::write(self.marker(point, "release"), b"").expect("release marker");
    }

    async fn terminate(&self, application_name: &str) -> u64 {
        let client = self.cluster.client("postgres").await;
        // Sessions opened on demand (the route session, at the first change to route) may come
        // a moment after the phase is reached.
        let deadline = Instant::now() + DEADLINE;
        loop {
            let open: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                    &[&application_name],
                )
                .await
                .unwrap_or_else(|e| panic!("sessions: {}", support::describe(&e)))
                .get(0);
            if open > 0 || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        client
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = $1 AND pid <> pg_backend_pid()",
                &[&application_name],
            )
            .await
            .unwrap_or_else(|e| panic!("terminate: {}", support::describe(&e)))
            .len() as u64
    }
}

/// Polls until the held run writes `reached` (a `<point>.reached` marker); panics with its
/// stderr if it ends first or not within the deadline.
async fn wait_marker(reached: &Path, run: &mut Background, context: &str) {
    let deadline = Instant::now() + DEADLINE;
    while !reached.exists() {
        if let Some(status) = run.try_status() {
            panic!(
                "{context}: the run ended ({status}) before reaching {}:\n{}",
                reached.display(),
                tail(&run.stderr_so_far(), 4000)
            );
        }
        assert!(
            Instant::now() < deadline,
            "{context}: the run did not reach {}:\n{}",
            reached.display(),
            tail(&run.stderr_so_far(), 4000)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `pgrepart cutover` in the background (it waits until the run has cut over).
fn request_cutover(url: &str) -> Background {
    spawn_pgrepart_with_env(&["cutover", "--source", url, "--table", "orders_flat"], &[])
}

fn done(v: &Value) -> bool {
    inspect::phase(v) == "done"
}

async fn matrix_case(phase: Phase, fault: Fault) {
    let Some(mut case) = Case::start(phase, fault).await else {
        return;
    };
    let ctx = case.context.clone();
    let mut run = case.spawn_run();
    let mut cutover = None;
    if phase.needs_cutover_request() {
        wait_status(&case.url, &run, DEADLINE, "streaming", |v| {
            inspect::phase(v) == "streaming" && inspect::int(v, "applied_changes").unwrap_or(0) > 0
        })
        .await;
        cutover = Some(request_cutover(&case.url));
    }
    match phase.hold_point() {
        Some(point) => case.wait_held(&mut run, point).await,
        None => {
            wait_status(
                &case.url,
                &run,
                DEADLINE,
                "streaming with changes applied",
                |v| {
                    inspect::phase(v) == "streaming"
                        && inspect::int(v, "applied_changes").unwrap_or(0) > 0
                },
            )
            .await;
        }
    }
    match fault {
        Fault::Terminate(session) => {
            let ended = case.terminate(session).await;
            assert!(
                ended > 0,
                "{ctx}: no session named '{session}' to terminate"
            );
        }
        Fault::Restart => case.cluster.restart(),
    }
    if let Some(point) = phase.hold_point() {
        case.release(point);
    }

    // Recovered: the run streams again (or is cutting over), applying changes. A run that
    // stopped instead must have said why, and the same command must take it from there.
    let mut reruns = 0;
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = run.try_status() {
            let out = run.wait_within(DEADLINE).await;
            let v = inspect::status_json(&case.url, "orders_flat").await;
            if status.success() && v.as_ref().is_some_and(done) {
                run = case.spawn_run();
                break;
            }
            assert_eq!(
                status.code(),
                Some(1),
                "{ctx}: the run ended with {status}:\n{}",
                output_text(&out)
            );
            let text = output_text(&out);
            assert!(
                text.contains("error:") && text.contains("hint:"),
                "{ctx}: a run that stops says why and what to do:\n{text}"
            );
            reruns += 1;
            assert!(
                reruns <= 2,
                "{ctx}: the same command did not finish the job:\n{text}"
            );
            run = case.spawn_run();
            continue;
        }
        let v = inspect::status_json(&case.url, "orders_flat").await;
        let streaming = v.as_ref().is_some_and(|v| {
            v["running"] == Value::Bool(true)
                && matches!(inspect::phase(v), "streaming" | "cutting_over" | "done")
        });
        if streaming || v.as_ref().is_some_and(done) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{ctx}: the run did not recover:\n{}\nserver log:\n{}",
            tail(&run.stderr_so_far(), 6000),
            tail(&case.cluster.server_log(), 3000)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if matches!(fault, Fault::Terminate("pgrepart route")) {
        // Once every range is copied nothing is routed: the session is closed.
        let admin = case.cluster.client("postgres").await;
        support::wait_until(DEADLINE, "the route session to close after the copy", || async {
            let v = inspect::status_json(&case.url, "orders_flat").await;
            let copied = v.as_ref().is_some_and(|v| {
                matches!(inspect::phase(v), "streaming" | "cutting_over" | "done")
            });
            let open: i64 = admin
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgrepart route'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            copied && open == 0
        })
        .await;
    }
    eprintln!(
        "{ctx}: {} after the fault; the run said:\n{}",
        if reruns == 0 {
            "recovered by itself"
        } else {
            "finished by the same command"
        },
        tail(&run.stderr_so_far(), 3000)
    );
    case.writers.wait_for_more_ops(100, DEADLINE).await;
    if cutover.is_none() {
        cutover = Some(request_cutover(&case.url));
    }
    let out = run.wait_within(DEADLINE).await;
    let v = inspect::status_json(&case.url, "orders_flat").await;
    if !out.status.success() || !v.as_ref().is_some_and(done) {
        // Stopped after the recovery (e.g. in the cutover): the same command finishes it.
        assert_eq!(out.status.code(), Some(1), "{ctx}: {}", output_text(&out));
        let again = case.spawn_run().wait_within(DEADLINE).await;
        assert!(
            again.status.success(),
            "{ctx}: the same command did not finish the job:\n{}\nfirst run:\n{}",
            output_text(&again),
            output_text(&out)
        );
    }
    if let Some(c) = cutover {
        let out = c.wait_within(DEADLINE).await;
        if matches!(fault, Fault::Terminate("pgrepart cutover")) {
            // The request was recorded before its sessions went: the command opens them again
            // and waits on for the swap instead of failing while the run performs it.
            let text = output_text(&out);
            assert!(
                out.status.success() && text.contains("is now the partitioned table"),
                "{ctx}: `pgrepart cutover` did not ride out the loss of its sessions:\n{text}"
            );
            assert!(
                text.contains("opening it again"),
                "{ctx}: `pgrepart cutover` did not say it lost a session:\n{text}"
            );
        }
    }
    // The writers go on against the new table (they write by name) after the cutover.
    case.writers.wait_for_more_ops(100, DEADLINE).await;
    let report = case.writers.stop().await;
    report.assert_no_anomalies(&ctx);
    // A new session: the case's first ones may have gone with a restart.
    let client = case.cluster.client(&case.db).await;
    assert_eq!(
        inspect::relkind(&client, "orders_flat").await,
        Some('p'),
        "{ctx}: orders_flat is not the partitioned table"
    );
    compare::assert_table_matches(&client, "orders_flat", &report.rows).await;
    inspect::assert_no_slot_or_publication(&client).await;
}

macro_rules! matrix {
    ($($name:ident: $phase:ident, $fault:expr;)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                matrix_case(Phase::$phase, $fault).await;
            }
        )*
    };
}

use Fault::{Restart, Terminate};

matrix! {
    setup_state_session_terminated: Setup, Terminate("pgrepart state");
    setup_source_session_terminated: Setup, Terminate("pgrepart source");
    setup_replication_connection_terminated: Setup, Terminate("pgrepart replication");
    setup_copy_source_sessions_terminated: Setup, Terminate("pgrepart copy source");
    setup_probe_session_terminated: Setup, Terminate("pgrepart probe");

    copy_state_session_terminated: Copy, Terminate("pgrepart state");
    copy_source_session_terminated: Copy, Terminate("pgrepart source");
    copy_replication_connection_terminated: Copy, Terminate("pgrepart replication");
    copy_copy_source_sessions_terminated: Copy, Terminate("pgrepart copy source");
    copy_copy_target_sessions_terminated: Copy, Terminate("pgrepart copy target");
    copy_apply_sessions_terminated: Copy, Terminate("pgrepart apply");
    copy_probe_session_terminated: Copy, Terminate("pgrepart probe");
    copy_route_session_terminated: Copy, Terminate("pgrepart route");
    copy_server_restarted: Copy, Restart;

    index_build_state_session_terminated: IndexBuild, Terminate("pgrepart state");
    index_build_source_session_terminated: IndexBuild, Terminate("pgrepart source");
    index_build_replication_connection_terminated: IndexBuild, Terminate("pgrepart replication");
    index_build_apply_sessions_terminated: IndexBuild, Terminate("pgrepart apply");
    index_build_index_sessions_terminated: IndexBuild, Terminate("pgrepart index");
    index_build_probe_session_terminated: IndexBuild, Terminate("pgrepart probe");

    catch_up_state_session_terminated: CatchUp, Terminate("pgrepart state");
    catch_up_source_session_terminated: CatchUp, Terminate("pgrepart source");
    catch_up_replication_connection_terminated: CatchUp, Terminate("pgrepart replication");
    catch_up_apply_sessions_terminated: CatchUp, Terminate("pgrepart apply");
    catch_up_probe_session_terminated: CatchUp, Terminate("pgrepart probe");

    streaming_state_session_terminated: Streaming, Terminate("pgrepart state");
    streaming_source_session_terminated: Streaming, Terminate("pgrepart source");
    streaming_replication_connection_terminated: Streaming, Terminate("pgrepart replication");
    streaming_apply_sessions_terminated: Streaming, Terminate("pgrepart apply");
    streaming_probe_session_terminated: Streaming, Terminate("pgrepart probe");
    streaming_server_restarted: Streaming, Restart;

    verify_state_session_terminated: Verify, Terminate("pgrepart state");
    verify_source_session_terminated: Verify, Terminate("pgrepart source");
    verify_replication_connection_terminated: Verify, Terminate("pgrepart replication");
    verify_apply_sessions_terminated: Verify, Terminate("pgrepart apply");
    verify_verify_sessions_terminated: Verify, Terminate("pgrepart verify");

    cutover_state_session_terminated: Cutover, Terminate("pgrepart state");
    cutover_source_session_terminated: Cutover, Terminate("pgrepart source");
    cutover_replication_connection_terminated: Cutover, Terminate("pgrepart replication");
    cutover_apply_sessions_terminated: Cutover, Terminate("pgrepart apply");
    cutover_fence_session_terminated: Cutover, Terminate("pgrepart fence");
    cutover_request_sessions_terminated: Cutover, Terminate("pgrepart cutover");
}

/// The first test major's cluster with the seed table and writers on it (the rollback window's
/// cases); `None` when skipped.
async fn seeded_with_writers(
    prefix: &str,
) -> Option<(Cluster, String, tokio_postgres::Client, Writers, u32)> {
    let major = test_majors().first().copied()?;
    let cluster = Cluster::start_or_skip(major)?;
    let db = unique_name(prefix);
    let url = cluster.create_database(&db).await;
    let client = cluster.client(&db).await;
    schema::create_seed_table(&client, "orders_flat", SEED_ROWS).await;
    let writers = Writers::start(WritersConfig::new(&url, "orders_flat")).await;
    writers.wait_for_more_ops(100, DEADLINE).await;
    Some((cluster, url, client, writers, major))
}

/// `pg_terminate_backend` of every session named `session`; at least one must be there.
async fn terminate_all(cluster: &Cluster, session: &str, ctx: &str) {
    let admin = cluster.client("postgres").await;
    let ended = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1 AND pid <> pg_backend_pid()",
            &[&session],
        )
        .await
        .unwrap_or_else(|e| panic!("terminate: {}", support::describe(&e)))
        .len();
    assert!(
        ended > 0,
        "{ctx}: no session named '{session}' to terminate"
    );
}

/// The rollback window (`run --rollback-window`): a session of the run serving it terminated
/// while the writers write to the partitioned table. The run goes on by itself (or the same
/// command does), the old table ends equal to the writers' record, and `pgrepart finish` closes
/// the window.
async fn window_case(session: &'static str) {
    let Some((cluster, url, client, writers, major)) = seeded_with_writers("window").await else {
        return;
    };
    let ctx = format!("PostgreSQL {major}, rollback window, {session} terminated");
    let args = seed_run_args(&url, &["--rollback-window", "10min"]);
    let mut run = spawn_with_env(&args, &[]);
    let applied_back = |v: &Value| {
        inspect::phase(v) == "done"
            && v["window_state"] == "open"
            && v["running"] == true
            && inspect::int(v, "reverse_applied_changes").unwrap_or(0) > 0
    };
    let before = wait_status(&url, &run, DEADLINE, "changes applied back", applied_back).await;
    terminate_all(&cluster, session, &ctx).await;
    let applied_before = inspect::int(&before, "reverse_applied_changes").unwrap_or(0);
    // Recovered: applying back again, past what it had applied.
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = run.try_status() {
            let out = run.wait_within(DEADLINE).await;
            assert_eq!(status.code(), Some(1), "{ctx}: {}", output_text(&out));
            run = spawn_with_env(&args, &[]);
        }
        let v = inspect::status_json(&url, "orders_flat").await;
        if v.as_ref().is_some_and(|v| {
            applied_back(v)
                && inspect::int(v, "reverse_applied_changes").unwrap_or(0) > applied_before
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{ctx}: the window did not recover:\n{}",
            tail(&run.stderr_so_far(), 6000)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    writers.wait_for_more_ops(100, DEADLINE).await;
    let report = writers.stop().await;
    report.assert_no_anomalies(&ctx);
    compare::wait_table_matches(&client, "orders_flat_old", &report.rows, DEADLINE).await;
    compare::assert_table_matches(&client, "orders_flat", &report.rows).await;
    let out = support::pgrepart(&["finish", "--source", &url, "--table", "orders_flat"]).await;
    assert!(out.status.success(), "{ctx}: finish: {}", output_text(&out));
    let out = run.wait_within(DEADLINE).await;
    assert!(out.status.success(), "{ctx}: run: {}", output_text(&out));
    inspect::assert_no_slot_or_publication(&client).await;
}

/// One test per session, each running `$case(session)`.
macro_rules! session_cases {
    ($case:ident { $($name:ident: $session:expr;)* }) => {
        $(
            #[tokio::test]
            async fn $name() {
                $case($session).await;
            }
        )*
    };
}

session_cases!(window_case {
    window_state_session_terminated: "pgrepart state";
    window_source_session_terminated: "pgrepart source";
    window_reverse_replication_connection_terminated: "pgrepart reverse replication";
    window_reverse_apply_session_terminated: "pgrepart reverse apply";
});

/// The revert (`pgrepart revert` during the rollback window), held with its fence session open
/// before the lock: a session terminated there. The revert happens (by the run recovering, or by
/// the same command run again, the request being kept), and the old table, back under its name,
/// equals the writers' record; the run streams to the partitioned table again, which then equals
/// it too, and `pgrepart abort` leaves no slot or publication.
async fn revert_case(session: &'static str) {
    revert_case_at("revert", session).await
}

/// The same, held before the forward slot is made for the stream after the revert (its
/// publication exists then; a retried attempt reuses it and makes the slot).
async fn revert_forward_case(session: &'static str) {
    revert_case_at("revert-forward", session).await
}

async fn revert_case_at(point: &'static str, session: &'static str) {
    revert_case_with(point, session, false).await
}

/// The forward slot's creation itself: it waits for a transaction the test holds open (status
/// names it under `waiting_for`), and the session creating it is terminated then.
#[tokio::test]
async fn revert_forward_slot_creation_terminated_while_it_waits() {
    revert_case_with("revert-forward", "pgrepart source", true).await
}

async fn revert_case_with(point: &'static str, session: &'static str, blocked: bool) {
    let Some((cluster, url, client, writers, major)) = seeded_with_writers("revfault").await else {
        return;
    };
    let ctx = format!(
        "PostgreSQL {major}, {point}{}, {session} terminated",
        if blocked {
            " (slot creation waiting)"
        } else {
            ""
        }
    );
    let hold = tempfile::tempdir().expect("hold dir");
    let dir = hold.path().to_string_lossy().into_owned();
    let env: Vec<(&str, &str)> = if blocked {
        vec![]
    } else {
        vec![
            ("PGREPART_TEST_HOLD", point),
            ("PGREPART_TEST_HOLD_DIR", dir.as_str()),
        ]
    };
    let args = seed_run_args(&url, &["--rollback-window", "10min"]);
    let mut run = spawn_with_env(&args, &env);
    wait_status(&url, &run, DEADLINE, "changes applied back", |v| {
        v["window_state"] == "open" && inspect::int(v, "reverse_applied_changes").unwrap_or(0) > 0
    })
    .await;
    // A transaction with an xid, open: a slot's creation waits for it.
    let blocker = if blocked {
        let b = support::cluster::connect(&url).await;
        b.batch_execute("BEGIN; SELECT txid_current();")
            .await
            .unwrap_or_else(|e| panic!("{ctx}: blocker: {}", support::describe(&e)));
        Some(b)
    } else {
        None
    };
    let revert =
        spawn_pgrepart_with_env(&["revert", "--source", &url, "--table", "orders_flat"], &[]);
    if let Some(b) = &blocker {
        wait_status(
            &url,
            &run,
            DEADLINE,
            "the forward slot's creation waiting",
            |v| v["waiting_for"].as_array().is_some_and(|a| !a.is_empty()),
        )
        .await;
        terminate_all(&cluster, session, &ctx).await;
        b.batch_execute("COMMIT")
            .await
            .unwrap_or_else(|e| panic!("{ctx}: blocker: {}", support::describe(&e)));
    } else {
        wait_marker(
            &hold.path().join(format!("{point}.reached")),
            &mut run,
            &ctx,
        )
        .await;
        terminate_all(&cluster, session, &ctx).await;
        std::fs::write(hold.path().join(format!("{point}.release")), b"").expect("release marker");
    }
    // Reverted: the run (or the same command run again) streams forward again.
    let streaming_again = |v: &Value| {
        inspect::phase(v) == "streaming"
            && v["window_state"] == "closed"
            && v["reverted_at"].is_string()
            && v["running"] == true
    };
    let mut reruns = 0;
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = run.try_status() {
            let out = run.wait_within(DEADLINE).await;
            let text = output_text(&out);
            assert_eq!(status.code(), Some(1), "{ctx}: {text}");
            assert!(
                text.contains("error:") && text.contains("hint:"),
                "{ctx}: a run that stops says why and what to do:\n{text}"
            );
            reruns += 1;
            assert!(
                reruns <= 2,
                "{ctx}: the same command did not revert:\n{text}"
            );
            // The hold is passed once per directory: the rerun does not stop there.
            run = spawn_with_env(&args, &env);
            continue;
        }
        if inspect::status_json(&url, "orders_flat")
            .await
            .as_ref()
            .is_some_and(streaming_again)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{ctx}: the run did not revert:\n{}",
            tail(&run.stderr_so_far(), 6000)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let revert_out = revert.wait_within(DEADLINE).await;
    if session == "pgrepart revert" {
        // The request was recorded before its session went: the command opens it again and
        // waits on for the swap back.
        let text = output_text(&revert_out);
        assert!(
            revert_out.status.success()
                && text.contains("is the original table again")
                && text.contains("opening it again"),
            "{ctx}: `pgrepart revert` did not ride out the loss of its session:\n{text}"
        );
    }
    writers.wait_for_more_ops(100, DEADLINE).await;
    let report = writers.stop().await;
    report.assert_no_anomalies(&ctx);
    assert_eq!(
        inspect::relkind(&client, "orders_flat").await,
        Some('r'),
        "{ctx}"
    );
    compare::assert_table_matches(&client, "orders_flat", &report.rows).await;
    compare::wait_table_matches(&client, "orders_flat_repart", &report.rows, DEADLINE).await;
    let out =
        support::pgrepart(&["abort", "--source", &url, "--table", "orders_flat", "--yes"]).await;
    assert!(out.status.success(), "{ctx}: abort: {}", output_text(&out));
    let out = run.wait_within(DEADLINE).await;
    assert_eq!(out.status.code(), Some(1), "{ctx}: {}", output_text(&out));
    inspect::assert_no_slot_or_publication(&client).await;
}

session_cases!(revert_case {
    revert_state_session_terminated: "pgrepart state";
    revert_source_session_terminated: "pgrepart source";
    revert_reverse_replication_connection_terminated: "pgrepart reverse replication";
    revert_reverse_apply_session_terminated: "pgrepart reverse apply";
    revert_fence_session_terminated: "pgrepart fence";
    revert_request_session_terminated: "pgrepart revert";
});

session_cases!(revert_forward_case {
    revert_forward_state_session_terminated: "pgrepart state";
    revert_forward_source_session_terminated: "pgrepart source";
    revert_forward_reverse_replication_connection_terminated: "pgrepart reverse replication";
    revert_forward_reverse_apply_session_terminated: "pgrepart reverse apply";
    revert_forward_request_session_terminated: "pgrepart revert";
});

/// The case a new user hit: no write load (so the primary key is left for after the copy), the
/// run's two control sessions terminated once the copy runs. The first attempt's workers must
/// not outlive it: every range is copied once (the key builds), and a rerun is not needed.
#[tokio::test]
async fn copy_control_sessions_terminated_without_writers_copy_each_range_once() {
    let Some(major) = test_majors().first().copied() else {
        return;
    };
    let Some(cluster) = Cluster::start_or_skip(major) else {
        return;
    };
    let db = unique_name("once");
    let url = cluster.create_database(&db).await;
    let client = cluster.client(&db).await;
    schema::create_seed_table(&client, "orders_flat", 20_000).await;
    let hold = tempfile::tempdir().expect("hold dir");
    let dir = hold.path().to_string_lossy().into_owned();
    let args = seed_run_args(&url, &["--cutover", "manual", "--jobs", "2"]);
    let env = [
        ("PGREPART_TEST_HOLD", "copy-range"),
        ("PGREPART_TEST_HOLD_DIR", dir.as_str()),
    ];
    let mut run = spawn_with_env(&args, &env);
    wait_marker(
        &hold.path().join("copy-range.reached"),
        &mut run,
        "the copy",
    )
    .await;
    let admin = cluster.client("postgres").await;
    let ended = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name IN ('pgrepart state', 'pgrepart source')",
            &[],
        )
        .await
        .unwrap()
        .len();
    assert_eq!(ended, 2, "the run's state and source sessions");
    std::fs::write(hold.path().join("copy-range.release"), b"").unwrap();
    let v = wait_status(&url, &run, DEADLINE, "streaming", |v| {
        inspect::phase(v) == "streaming"
    })
    .await;
    assert_eq!(inspect::int(&v, "rows_copied"), Some(20_000), "{v}");
    assert_eq!(
        inspect::int(&v, "ranges_done"),
        inspect::int(&v, "ranges_total")
    );
    let rows: i64 = client
        .query_one("SELECT count(*) FROM orders_flat_repart", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 20_000, "every row copied once");
    assert!(
        run.stderr_so_far().contains("reconnecting"),
        "the run recovered by itself:\n{}",
        run.stderr_so_far()
    );
    support::flow::cut_over(&url, run, DEADLINE, "after the recovery").await;
    compare::assert_same_rows(&client, "orders_flat", "orders_flat_old").await;
}

/// The rollback window across databases (`--target`): the reverse slot and its replication
/// connection are on the target, the reverse apply and the old table on the source, and the
/// revert's locked session is the run's state session on the target. `phase` is `window`,
/// `revert` (held with the fence session open, before the lock), `revert-forward` (held before
/// the forward slot is made on the source) or `revert-forward-waiting` (the forward slot's
/// creation waiting for a transaction the test holds open on the source); `session` is
/// terminated on whichever cluster has it, in that phase. The run (or the same command again)
/// goes on; a window ends with `finish`, a revert happens and the run streams forward again;
/// either way the source's table equals the writers' record, who write to the target's table,
/// and after a revert the target's partitioned table follows it.
async fn cross_window_case(phase: &'static str, session: &'static str) {
    let Some(major) = test_majors().first().copied() else {
        return;
    };
    let (Some(src), Some(dst)) = (Cluster::start_or_skip(major), Cluster::start_or_skip(major))
    else {
        return;
    };
    let ctx = format!("PostgreSQL {major}, across databases, {phase}, {session} terminated");
    let db = unique_name("xwinfault");
    let src_url = src.create_database(&db).await;
    let dst_url = dst.create_database(&db).await;
    let source = src.client(&db).await;
    let target = dst.client(&db).await;
    schema::create_seed_table(&source, "orders_flat", SEED_ROWS).await;
    let hold = tempfile::tempdir().expect("hold dir");
    let dir = hold.path().to_string_lossy().into_owned();
    let blocked = phase == "revert-forward-waiting";
    let env: Vec<(&str, &str)> = if blocked {
        vec![]
    } else {
        vec![
            ("PGREPART_TEST_HOLD", phase),
            ("PGREPART_TEST_HOLD_DIR", dir.as_str()),
        ]
    };
    let args = seed_run_args(
        &src_url,
        &["--target", &dst_url, "--rollback-window", "10min"],
    );
    let command = |verb: &'static str| {
        [
            verb,
            "--source",
            src_url.as_str(),
            "--target",
            dst_url.as_str(),
            "--table",
            "orders_flat",
        ]
    };
    let status = || async {
        let out = support::pgrepart(&[
            "status",
            "--source",
            &src_url,
            "--target",
            &dst_url,
            "--table",
            "orders_flat",
            "--json",
        ])
        .await;
        out.status
            .success()
            .then(|| serde_json::from_slice::<Value>(&out.stdout).ok())
            .flatten()
    };
    let applied_back = |v: &Value| {
        inspect::phase(v) == "done"
            && v["window_state"] == "open"
            && v["running"] == true
            && inspect::int(v, "reverse_applied_changes").unwrap_or(0) > 0
    };
    let mut run = spawn_with_env(&args, &env);
    let deadline = Instant::now() + DEADLINE;
    let mut writers = None;
    let before = loop {
        let v = status().await;
        if writers.is_none() && v.as_ref().is_some_and(|v| v["window_state"] == "open") {
            let w = Writers::start(WritersConfig::new(&dst_url, "orders_flat")).await;
            w.wait_for_more_ops(100, DEADLINE).await;
            writers = Some(w);
        }
        if let Some(v) = v.filter(|v| applied_back(v)) {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "{ctx}: no changes applied back:\n{}",
            tail(&run.stderr_so_far(), 4000)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let writers = writers.expect("writers started");
    let terminate = || async {
        let mut ended = 0;
        for cluster in [&src, &dst] {
            ended += cluster
                .client("postgres")
                .await
                .query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE application_name = $1 AND pid <> pg_backend_pid()",
                    &[&session],
                )
                .await
                .unwrap_or_else(|e| panic!("terminate: {}", support::describe(&e)))
                .len();
        }
        assert!(
            ended > 0,
            "{ctx}: no session named '{session}' to terminate"
        );
    };
    if phase == "window" {
        terminate().await;
        let applied_before = inspect::int(&before, "reverse_applied_changes").unwrap_or(0);
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = run.try_status() {
                let out = run.wait_within(DEADLINE).await;
                assert_eq!(status.code(), Some(1), "{ctx}: {}", output_text(&out));
                run = spawn_with_env(&args, &env);
            }
            if status().await.is_some_and(|v| {
                applied_back(&v)
                    && inspect::int(&v, "reverse_applied_changes").unwrap_or(0) > applied_before
            }) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{ctx}: the window did not recover:\n{}",
                tail(&run.stderr_so_far(), 6000)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        writers.wait_for_more_ops(100, DEADLINE).await;
        let report = writers.stop().await;
        report.assert_no_anomalies(&ctx);
        compare::wait_table_matches(&source, "orders_flat_old", &report.rows, DEADLINE).await;
        let out = support::pgrepart(&command("finish")).await;
        assert!(out.status.success(), "{ctx}: finish: {}", output_text(&out));
        let out = run.wait_within(DEADLINE).await;
        assert!(out.status.success(), "{ctx}: run: {}", output_text(&out));
        inspect::assert_no_slot_or_publication(&target).await;
        return;
    }
    // A transaction with an xid, open on the source: the forward slot's creation waits for it.
    let blocker = if blocked {
        let b = src.client(&db).await;
        b.batch_execute("BEGIN; SELECT txid_current();")
            .await
            .unwrap_or_else(|e| panic!("{ctx}: blocker: {}", support::describe(&e)));
        Some(b)
    } else {
        None
    };
    let revert = spawn_pgrepart_with_env(&command("revert"), &[]);
    if let Some(b) = &blocker {
        let deadline = Instant::now() + DEADLINE;
        while status()
            .await
            .is_none_or(|v| v["waiting_for"].as_array().is_none_or(|a| a.is_empty()))
        {
            assert!(
                Instant::now() < deadline,
                "{ctx}: the forward slot's creation never waited:\n{}",
                tail(&run.stderr_so_far(), 4000)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        terminate().await;
        b.batch_execute("COMMIT")
            .await
            .unwrap_or_else(|e| panic!("{ctx}: blocker: {}", support::describe(&e)));
    } else {
        wait_marker(
            &hold.path().join(format!("{phase}.reached")),
            &mut run,
            &ctx,
        )
        .await;
        terminate().await;
        std::fs::write(hold.path().join(format!("{phase}.release")), b"").expect("release marker");
    }
    // Reverted: the run (or the same command run again) streams forward again.
    let streaming_again = |v: &Value| {
        inspect::phase(v) == "streaming"
            && v["window_state"] == "closed"
            && v["reverted_at"].is_string()
            && v["running"] == true
    };
    let mut reruns = 0;
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(exit) = run.try_status() {
            let out = run.wait_within(DEADLINE).await;
            let text = output_text(&out);
            assert_eq!(exit.code(), Some(1), "{ctx}: {text}");
            assert!(
                text.contains("error:") && text.contains("hint:"),
                "{ctx}: a run that stops says why and what to do:\n{text}"
            );
            reruns += 1;
            assert!(
                reruns <= 2,
                "{ctx}: the same command did not revert:\n{text}"
            );
            // The hold is passed once per directory: the rerun does not stop there.
            run = spawn_with_env(&args, &env);
            continue;
        }
        if status().await.as_ref().is_some_and(streaming_again) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{ctx}: the run did not revert:\n{}",
            tail(&run.stderr_so_far(), 6000)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = revert.wait_within(DEADLINE).await;
    let report = writers.stop().await;
    report.assert_no_anomalies(&ctx);
    assert_eq!(
        inspect::relkind(&source, "orders_flat").await,
        Some('r'),
        "{ctx}"
    );
    compare::assert_table_matches(&source, "orders_flat", &report.rows).await;
    inspect::assert_no_slot_or_publication(&target).await;
    // The target's partitioned table follows the source's table again, from the revert.
    source
        .batch_execute("UPDATE orders_flat SET amount = amount + 1 WHERE id <= 50")
        .await
        .unwrap_or_else(|e| panic!("{ctx}: update: {}", support::describe(&e)));
    let now = compare::read_table(&source, "orders_flat").await;
    compare::wait_table_matches(&target, "orders_flat_repart", &now, DEADLINE).await;
    let out = support::pgrepart(
        &command("abort")
            .iter()
            .copied()
            .chain(["--yes"])
            .collect::<Vec<_>>(),
    )
    .await;
    assert!(out.status.success(), "{ctx}: abort: {}", output_text(&out));
    let _ = run.wait_within(DEADLINE).await;
    inspect::assert_no_slot_or_publication(&source).await;
    inspect::assert_no_slot_or_publication(&target).await;
}

macro_rules! cross_cases {
    ($($name:ident: $phase:expr, $session:expr;)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                cross_window_case($phase, $session).await;
            }
        )*
    };
}

cross_cases! {
    cross_window_reverse_replication_connection_terminated: "window", "pgrepart reverse replication";
    cross_window_reverse_apply_session_terminated: "window", "pgrepart reverse apply";
    cross_window_state_session_terminated: "window", "pgrepart state";
    cross_revert_target_session_terminated: "revert", "pgrepart state";
    cross_revert_fence_session_terminated: "revert", "pgrepart fence";
    cross_revert_reverse_replication_connection_terminated: "revert", "pgrepart reverse replication";
    cross_revert_source_session_terminated: "revert", "pgrepart source";
    cross_revert_forward_source_session_terminated: "revert-forward", "pgrepart source";
    cross_revert_forward_state_session_terminated: "revert-forward", "pgrepart state";
    cross_revert_forward_slot_creation_terminated_while_it_waits: "revert-forward-waiting", "pgrepart source";
}
