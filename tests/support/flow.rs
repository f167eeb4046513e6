//! Driving the seed migration from a test: its `run` arguments, starting it in the background, and
//! waiting on `status --json` with a deadline.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::inspect::{self, output_text};
use crate::support::program::{Background, pgrepart, spawn_pgrepart_with_env, tail};

/// `run` of `orders_flat` into LIST partitions by region (US, EU, ASIA, DEFAULT), then `extra`.
pub fn seed_run_args(url: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "run",
        "--source",
        url,
        "--table",
        "orders_flat",
        "--partition-by",
        "LIST (region)",
        "--partition",
        "orders_flat_us=FOR VALUES IN ('US')",
        "--partition",
        "orders_flat_eu=FOR VALUES IN ('EU')",
        "--partition",
        "orders_flat_asia=FOR VALUES IN ('ASIA')",
        "--partition",
        "orders_flat_default=DEFAULT",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Asks the running `--cutover manual` migration of `orders_flat` to cut over (`pgrepart
/// cutover`), waits up to `within` for its `run` to end, and asserts that both succeeded; returns
/// the run's output.
pub async fn cut_over(
    url: &str,
    run: Background,
    within: Duration,
    context: impl std::fmt::Display,
) -> std::process::Output {
    let cut = pgrepart(&["cutover", "--source", url, "--table", "orders_flat"]).await;
    assert!(
        cut.status.success(),
        "{context}: pgrepart cutover failed: {}",
        output_text(&cut)
    );
    let out = run.wait_within(within).await;
    assert!(
        out.status.success(),
        "{context}: pgrepart run failed: {}",
        output_text(&out)
    );
    out
}

/// Starts `pgrepart` with owned arguments in the background.
pub fn spawn(args: &[String]) -> Background {
    spawn_with_env(args, &[])
}

/// Starts `pgrepart` with owned arguments and extra environment variables in the background.
pub fn spawn_with_env(args: &[String], env: &[(&str, &str)]) -> Background {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    spawn_pgrepart_with_env(&refs, env)
}

/// Polls `status --json` of `orders_flat` until `ready` holds and returns that status; panics
/// after `within` with the last status seen and the run's stderr.
pub async fn wait_status(
    url: &str,
    run: &Background,
    within: Duration,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    let mut last = None;
    loop {
        if let Some(v) = inspect::status_json(url, "orders_flat").await {
            if ready(&v) {
                return v;
            }
            last = Some(v);
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last status {last:?}; run stderr:\n{}",
            tail(&run.stderr_so_far(), 4000)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `pgrepart pause` of `orders_flat`, then waits up to `within` until the run says the pause is
/// in effect; returns that status.
pub async fn pause(url: &str, run: &Background, within: Duration) -> Value {
    let out = pgrepart(&["pause", "--source", url, "--table", "orders_flat"]).await;
    assert!(out.status.success(), "{}", output_text(&out));
    wait_status(url, run, within, "the pause to take effect", |v| {
        v["pause_in_effect"] == Value::Bool(true)
    })
    .await
}

/// `pgrepart resume` of `orders_flat`.
pub async fn resume(url: &str) {
    let out = pgrepart(&["resume", "--source", url, "--table", "orders_flat"]).await;
    assert!(out.status.success(), "{}", output_text(&out));
}

/// Waits up to `within` until the run's lag is under 64 kB (the writers have stopped).
pub async fn wait_lag_near_zero(url: &str, run: &Background, within: Duration) {
    wait_status(url, run, within, "the lag back near zero", |v| {
        inspect::int(v, "lag_bytes").is_some_and(|l| l < 64 * 1024)
    })
    .await;
}

/// Waits until `status --json` of `orders_flat` says no run is attached (a killed run's walsender
/// is gone), as an operator would check before starting it again.
pub async fn wait_not_running(url: &str, within: Duration) {
    crate::support::wait_until(
        within,
        "status to say the killed run is no longer running",
        || async {
            inspect::status_json(url, "orders_flat")
                .await
                .is_some_and(|v| v.get("running") == Some(&Value::Bool(false)))
        },
    )
    .await;
}
