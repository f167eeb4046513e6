//! Fault points for tests: with `PGREPART_TEST_FAULT=<name>[,<name>...]` in its environment, the
//! process exits at once (status 86, no cleanup, no destructors) when it reaches a named point, as
//! if it had been killed there. The server sees the connections drop, exactly as after `kill -9`.
//! Tests use this to stop a run at moments too short to hit with a signal (inside the cutover).
//! A few places instead ask whether a name is listed ([`enabled`]) and then behave as a slow
//! server would (an index build that never ends). Nothing else reads the variable; unset, a point
//! costs one environment lookup.

/// The environment variable that names the points to stop at.
pub const ENV: &str = "PGREPART_TEST_FAULT";

/// The exit status of a process stopped at a fault point.
pub const EXIT_STATUS: i32 = 86;

/// Whether `name` is among the points listed in `value`.
fn listed(value: &str, name: &str) -> bool {
    value.split(',').map(str::trim).any(|p| p == name)
}

/// Whether `name` is one of the points asked for in `PGREPART_TEST_FAULT`.
pub fn enabled(name: &str) -> bool {
    std::env::var(ENV).is_ok_and(|value| listed(&value, name))
}

/// Exits the process if `name` is one of the points asked for in `PGREPART_TEST_FAULT`.
pub fn point(name: &str) {
    if enabled(name) {
        eprintln!("pgrepart: stopping at test fault point '{name}' ({ENV})");
        std::process::exit(EXIT_STATUS);
    }
}

/// The environment variables of held points: `PGREPART_TEST_HOLD=<name>[,<name>...]` and the
/// directory of their marker files, `PGREPART_TEST_HOLD_DIR`.
pub const HOLD_ENV: &str = "PGREPART_TEST_HOLD";
pub const HOLD_DIR_ENV: &str = "PGREPART_TEST_HOLD_DIR";

/// Holds the process at a named point until the test lets it go: with `name` listed in
/// `PGREPART_TEST_HOLD`, it creates `<dir>/<name>.reached` and waits until `<dir>/<name>.release`
/// exists (each point holds once per process). Tests use it to act on a phase that would
/// otherwise pass too quickly (terminate a session while the index builds run). Unset, it costs
/// one environment lookup.
pub async fn pause(name: &str) {
    let (Ok(points), Ok(dir)) = (std::env::var(HOLD_ENV), std::env::var(HOLD_DIR_ENV)) else {
        return;
    };
    if !listed(&points, name) {
        return;
    }
    let dir = std::path::Path::new(&dir);
    let reached = dir.join(format!("{name}.reached"));
    if reached.exists() {
        return;
    }
    eprintln!("pgrepart: holding at test point '{name}' ({HOLD_ENV})");
    let _ = std::fs::write(&reached, b"");
    let release = dir.join(format!("{name}.release"));
    while !release.exists() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::listed;

    #[test]
    fn points_are_matched_whole_in_a_comma_separated_list() {
        assert!(listed("cutover-locked", "cutover-locked"));
        assert!(listed("a, cutover-locked", "cutover-locked"));
        assert!(!listed("cutover-locked-x", "cutover-locked"));
        assert!(!listed("", "cutover-locked"));
    }
}
