//! Running the `pgrepart` binary that cargo built for this test run, in the foreground or in the
//! background (to kill it with SIGKILL, interrupt it, or wait for it with a deadline).
//!
//! Background output goes to files in a temp dir, so a test can read it while the process runs and a
//! chatty process never blocks on a full pipe.

use std::path::PathBuf;
use std::process::{ExitStatus, Output, Stdio};
use std::time::Duration;

use tempfile::TempDir;
use tokio::process::{Child, Command};

/// The binary under test.
pub const PGREPART: &str = env!("CARGO_BIN_EXE_pgrepart");

/// Runs `pgrepart args...` to completion and returns its output.
pub async fn pgrepart(args: &[&str]) -> Output {
    pgrepart_with_env(args, &[]).await
}

/// The environment every run gets unless the test overrides it: the copy's load governor is off
/// (the test writers are no workload to protect, and a governed copy would only make the
/// correctness tests slower); tests/governor.rs turns it on.
const DEFAULT_ENV: [(&str, &str); 1] = [("PGREPART_MAX_IMPACT", "0")];

/// Runs `pgrepart args...` with extra environment variables to completion.
pub async fn pgrepart_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(PGREPART)
        .args(args)
        .envs(DEFAULT_ENV)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {PGREPART}: {e}"))
}

/// Starts `pgrepart args...` in the background.
pub fn spawn_pgrepart(args: &[&str]) -> Background {
    spawn_pgrepart_with_env(args, &[])
}

/// Starts `pgrepart args...` in the background with extra environment variables.
pub fn spawn_pgrepart_with_env(args: &[&str], env: &[(&str, &str)]) -> Background {
    let dir = tempfile::Builder::new()
        .prefix("pgrepart-run-")
        .tempdir()
        .expect("temp dir for pgrepart output");
    let stdout = dir.path().join("stdout");
    let stderr = dir.path().join("stderr");
    let child = Command::new(PGREPART)
        .args(args)
        .envs(DEFAULT_ENV)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).expect("create stdout file"))
        .stderr(std::fs::File::create(&stderr).expect("create stderr file"))
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {PGREPART}: {e}"));
    Background {
        child,
        stdout,
        stderr,
        _dir: dir,
    }
}

/// A `pgrepart` running in the background. Dropping it kills the process (SIGKILL).
pub struct Background {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    _dir: TempDir,
}

impl Background {
    /// The process id, while it runs.
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    pub fn stdout_so_far(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn stderr_so_far(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The exit status if it has ended, without waiting.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("poll pgrepart")
    }

    /// Sends SIGINT (the user's Ctrl-C); use `wait_within` to see how it ends.
    pub fn interrupt(&self) {
        let pid = self.id().expect("pgrepart already ended");
        let status = std::process::Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -INT {pid} failed");
    }

    /// Kills it with SIGKILL (a crash) and waits for it to be gone; returns what it printed.
    pub async fn kill9(mut self) -> Output {
        self.child.start_kill().expect("kill pgrepart");
        let status = self.child.wait().await.expect("wait for pgrepart");
        self.output(status)
    }

    /// Waits at most `within` for it to end; on timeout kills it and panics with its stderr.
    pub async fn wait_within(mut self, within: Duration) -> Output {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => {
                let status = status.expect("wait for pgrepart");
                self.output(status)
            }
            Err(_) => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                panic!(
                    "pgrepart did not end within {within:?}; stderr:\n{}",
                    tail(&self.stderr_so_far(), 4000)
                );
            }
        }
    }

    fn output(&self, status: ExitStatus) -> Output {
        Output {
            status,
            stdout: std::fs::read(&self.stdout).unwrap_or_default(),
            stderr: std::fs::read(&self.stderr).unwrap_or_default(),
        }
    }
}

/// The last `max` bytes of `s` (on a char boundary).
pub fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}
