//! Live figures of a running migration: rates, the progress display (a bar on a terminal, log lines
//! otherwise), the Prometheus endpoint, and the retained-WAL guard. The decisions are pure.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::error::{Error, Result};

/// A rate from successive samples of a counter, smoothed.
#[derive(Debug, Default)]
pub struct Rate {
    last: Option<(Instant, u64)>,
    per_s: Option<f64>,
}

impl Rate {
    pub fn sample(&mut self, now: Instant, value: u64) -> Option<f64> {
        if let Some((t, v)) = self.last {
            let dt = now.duration_since(t).as_secs_f64();
            if dt >= 0.5 {
                let r = value.saturating_sub(v) as f64 / dt;
                self.per_s = Some(match self.per_s {
                    Some(prev) => 0.7 * prev + 0.3 * r,
                    None => r,
                });
                self.last = Some((now, value));
            }
        } else {
            self.last = Some((now, value));
        }
        self.per_s
    }
}

/// The figures shown by the progress display and served as metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    pub phase: &'static str,
    pub rows_copied: u64,
    pub rows_total_estimate: u64,
    pub bytes_copied: u64,
    pub applied_changes: u64,
    pub lag_bytes: u64,
    pub lag_seconds: f64,
    pub wal_retained_bytes: u64,
    pub copy_rows_per_s: f64,
    pub apply_changes_per_s: f64,
    pub paused: bool,
    /// The copy's rate limit now, if any (the ETA follows it).
    pub copy_rate_limit: Option<u64>,
    /// Why the load governor holds the pace it does.
    pub governor: Option<String>,
    /// During a rollback window (phase `window`): seconds left, the reverse stream's figures,
    /// and the conflicts now (see `crate::rollback`).
    pub window_seconds_left: f64,
    pub reverse_applied_changes: u64,
    pub reverse_lag_bytes: u64,
    pub reverse_lag_seconds: f64,
    pub reverse_changes_per_s: f64,
    pub reverse_conflicts: u64,
}

/// Seconds until the copy is done at the pace it holds: the rate it moves, or its limit when
/// that is lower (a limit just set below the rate of the last seconds is the pace from now on).
pub fn copy_eta_seconds(
    rows_copied: u64,
    rows_total: u64,
    rows_per_s: f64,
    limit: Option<u64>,
) -> Option<f64> {
    let pace = match limit {
        Some(l) if rows_per_s <= 0.0 || (l as f64) < rows_per_s => l as f64,
        _ => rows_per_s,
    };
    if pace <= 0.0 {
        return None;
    }
    Some(rows_total.saturating_sub(rows_copied) as f64 / pace)
}

/// Prometheus text exposition of a snapshot.
pub fn prometheus_text(s: &Snapshot, table: &str) -> String {
    let label = format!(
        "table=\"{}\"",
        table.replace('\\', "\\\\").replace('"', "\\\"")
    );
    let phases = [
        "copying",
        "streaming",
        "cutting_over",
        "done",
        "failed",
        "window",
        "reverted",
    ];
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, kind: &str, value: f64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{{label}}} {value}\n"
        ));
    };
    metric(
        "pgrepart_rows_copied",
        "Rows copied into the new table.",
        "counter",
        s.rows_copied as f64,
    );
    metric(
        "pgrepart_rows_total_estimate",
        "Estimated rows in the source table.",
        "gauge",
        s.rows_total_estimate as f64,
    );
    metric(
        "pgrepart_bytes_copied",
        "Bytes of COPY data streamed.",
        "counter",
        s.bytes_copied as f64,
    );
    metric(
        "pgrepart_applied_changes",
        "Source changes applied to the new table.",
        "counter",
        s.applied_changes as f64,
    );
    metric(
        "pgrepart_lag_bytes",
        "WAL not yet confirmed applied.",
        "gauge",
        s.lag_bytes as f64,
    );
    metric(
        "pgrepart_lag_seconds",
        "Age of the oldest change not yet applied.",
        "gauge",
        s.lag_seconds,
    );
    metric(
        "pgrepart_wal_retained_bytes",
        "WAL the replication slot holds on the source.",
        "gauge",
        s.wal_retained_bytes as f64,
    );
    metric(
        "pgrepart_copy_rows_per_second",
        "Copy rate.",
        "gauge",
        s.copy_rows_per_s,
    );
    metric(
        "pgrepart_apply_changes_per_second",
        "Apply rate.",
        "gauge",
        s.apply_changes_per_s,
    );
    metric(
        "pgrepart_paused",
        "1 while paused.",
        "gauge",
        if s.paused { 1.0 } else { 0.0 },
    );
    metric(
        "pgrepart_window_seconds_left",
        "Seconds left in the rollback window (0 without one).",
        "gauge",
        s.window_seconds_left,
    );
    metric(
        "pgrepart_reverse_applied_changes",
        "Changes of the new table applied back to the old one during the rollback window.",
        "counter",
        s.reverse_applied_changes as f64,
    );
    metric(
        "pgrepart_reverse_lag_bytes",
        "WAL the reverse stream has not confirmed applied.",
        "gauge",
        s.reverse_lag_bytes as f64,
    );
    metric(
        "pgrepart_reverse_lag_seconds",
        "Age of the oldest change of the new table not yet applied back.",
        "gauge",
        s.reverse_lag_seconds,
    );
    metric(
        "pgrepart_reverse_apply_changes_per_second",
        "Reverse apply rate.",
        "gauge",
        s.reverse_changes_per_s,
    );
    metric(
        "pgrepart_reverse_conflicts",
        "Keys of the old table with more than one row in the new table.",
        "gauge",
        s.reverse_conflicts as f64,
    );
    out.push_str("# HELP pgrepart_phase 1 for the current phase.\n# TYPE pgrepart_phase gauge\n");
    for p in phases {
        out.push_str(&format!(
            "pgrepart_phase{{{label},phase=\"{p}\"}} {}\n",
            u8::from(s.phase == p)
        ));
    }
    out
}

/// Serves `GET /metrics` (any path, in fact) with the latest snapshot on `listener` (bound when
/// the arguments were checked), until the returned handle is dropped.
pub fn serve_metrics(
    listener: std::net::TcpListener,
    table: String,
    figures: watch::Receiver<Snapshot>,
) -> Result<tokio_util::task::AbortOnDropHandle<()>> {
    let addr = listener
        .local_addr()
        .map_err(|e| Error::failed(format!("the metrics listener: {e}")))?;
    let listener = tokio::net::TcpListener::from_std(listener)
        .map_err(|e| Error::failed(format!("cannot serve metrics on {addr}: {e}")))?;
    tracing::info!(addr = %addr, "serving Prometheus metrics");
    Ok(tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
        async move {
            let mut answers = tokio::task::JoinSet::new();
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    continue;
                };
                while answers.try_join_next().is_some() {}
                let body = prometheus_text(&figures.borrow(), &table);
                answers.spawn(async move {
                let mut buf = [0u8; 1024];
                // Read (part of) the request; its content does not matter.
                let _ = tokio::time::timeout(Duration::from_secs(2), socket.read(&mut buf)).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
            }
        },
    )))
}

/// What the retained-WAL guard says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalVerdict {
    Fine,
    /// Above the limit: the copy (which writes WAL itself) pauses; apply goes on.
    PauseCopy,
    /// Twice the limit: stop before the source's disk fills.
    Stop,
}

/// Whether the copy pauses: when the user paused the migration, or above the retained-WAL limit
/// so that the apply catches up, unless nothing can be applied before the copy ends (a primary
/// key left for after it): pausing it then would only let the WAL grow.
pub fn copy_paused(paused: bool, verdict: WalVerdict, key_pending: bool) -> bool {
    paused || (verdict == WalVerdict::PauseCopy && !key_pending)
}

pub fn wal_guard(retained: u64, limit: Option<u64>) -> WalVerdict {
    match limit {
        Some(l) if retained >= l.saturating_mul(2) => WalVerdict::Stop,
        Some(l) if retained >= l => WalVerdict::PauseCopy,
        _ => WalVerdict::Fine,
    }
}

/// `--quiet`: set once by `main` before any `Display` exists.
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `--quiet`: no progress bars; progress goes to the log lines instead, which `--quiet` filters
/// out (only warnings and errors are logged).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, std::sync::atomic::Ordering::Relaxed);
}

/// The progress display: a bar per phase on a terminal (not with `--quiet`), a log line every
/// 10 s otherwise.
pub struct Display {
    bar: Option<ProgressBar>,
    phase: &'static str,
    last_line: Option<Instant>,
}

impl Display {
    pub fn new(terminal: bool) -> Self {
        let bars = terminal && !QUIET.load(std::sync::atomic::Ordering::Relaxed);
        Display {
            bar: bars.then(ProgressBar::hidden),
            phase: "",
            last_line: None,
        }
    }

    pub fn update(&mut self, s: &Snapshot) {
        let phase_changed = s.phase != self.phase;
        self.phase = s.phase;
        let detail = format!(
            "applied {} changes ({:.0}/s), lag {} B{}{}",
            s.applied_changes,
            s.apply_changes_per_s,
            s.lag_bytes,
            if s.paused { ", PAUSED" } else { "" },
            s.governor
                .as_deref()
                .map(|g| format!(", {g}"))
                .unwrap_or_default()
        );
        if let Some(bar) = &mut self.bar {
            if phase_changed {
                bar.finish_and_clear();
                *bar = if s.phase == "copying" {
                    let b = ProgressBar::new(s.rows_total_estimate.max(1));
                    b.set_style(
                        ProgressStyle::with_template(
                            "{prefix:>10} [{bar:30}] {pos}/{len} rows {per_sec} ETA {eta} {msg}",
                        )
                        .expect("template")
                        .progress_chars("=> "),
                    );
                    b
                } else {
                    let b = ProgressBar::new_spinner();
                    b.set_style(
                        ProgressStyle::with_template("{prefix:>10} {spinner} {msg}")
                            .expect("template"),
                    );
                    b.enable_steady_tick(Duration::from_millis(200));
                    b
                };
                bar.set_prefix(s.phase);
            }
            if s.phase == "copying" {
                bar.set_length(s.rows_total_estimate.max(s.rows_copied).max(1));
                bar.set_position(s.rows_copied);
            }
            bar.set_message(detail);
        } else if phase_changed
            || self
                .last_line
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            self.last_line = Some(Instant::now());
            if s.phase == "copying" {
                let eta = copy_eta_seconds(
                    s.rows_copied,
                    s.rows_total_estimate,
                    s.copy_rows_per_s,
                    s.copy_rate_limit,
                );
                tracing::info!(
                    rows = s.rows_copied,
                    of = s.rows_total_estimate,
                    rows_per_s = s.copy_rows_per_s as u64,
                    eta_s = eta.map(|e| e as u64),
                    applied = s.applied_changes,
                    lag_bytes = s.lag_bytes,
                    governor = s.governor.as_deref(),
                    "copying"
                );
            } else {
                tracing::info!(
                    phase = s.phase,
                    applied = s.applied_changes,
                    changes_per_s = s.apply_changes_per_s as u64,
                    lag_bytes = s.lag_bytes,
                    lag_s = s.lag_seconds,
                    paused = s.paused,
                    governor = s.governor.as_deref(),
                    "progress"
                );
            }
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wal_guard_pauses_the_copy_then_stops() {
        assert_eq!(wal_guard(10, None), WalVerdict::Fine);
        assert_eq!(wal_guard(99, Some(100)), WalVerdict::Fine);
        assert_eq!(wal_guard(100, Some(100)), WalVerdict::PauseCopy);
        assert!(copy_paused(false, WalVerdict::PauseCopy, false));
        assert!(!copy_paused(false, WalVerdict::PauseCopy, true));
        assert!(copy_paused(true, WalVerdict::Fine, true));
        assert!(!copy_paused(false, WalVerdict::Fine, false));
        assert_eq!(wal_guard(200, Some(100)), WalVerdict::Stop);
    }

    #[test]
    fn rates_come_from_successive_samples() {
        let mut r = Rate::default();
        let t0 = Instant::now();
        assert_eq!(r.sample(t0, 0), None);
        assert_eq!(r.sample(t0 + Duration::from_secs(1), 100), Some(100.0));
        let smoothed = r.sample(t0 + Duration::from_secs(2), 300).unwrap();
        assert!((smoothed - 130.0).abs() < 1e-9, "{smoothed}");
    }

    #[test]
    fn eta_needs_a_rate() {
        assert_eq!(copy_eta_seconds(50, 150, 10.0, None), Some(10.0));
        assert_eq!(copy_eta_seconds(50, 150, 0.0, None), None);
        assert_eq!(copy_eta_seconds(200, 150, 10.0, None), Some(0.0));
    }

    #[test]
    fn the_eta_follows_the_pace_held() {
        // A limit just set below the rate of the last seconds.
        assert_eq!(
            copy_eta_seconds(0, 100_000, 50_000.0, Some(1_000)),
            Some(100.0)
        );
        // A limit the copy does not reach is not its pace.
        assert_eq!(
            copy_eta_seconds(0, 100_000, 500.0, Some(1_000)),
            Some(200.0)
        );
        assert_eq!(copy_eta_seconds(0, 100_000, 0.0, Some(1_000)), Some(100.0));
    }

    #[test]
    fn the_rollback_window_has_metrics_of_its_own() {
        let s = Snapshot {
            phase: "window",
            window_seconds_left: 90.0,
            reverse_lag_bytes: 7,
            reverse_conflicts: 2,
            ..Default::default()
        };
        let text = prometheus_text(&s, "t");
        for line in [
            "pgrepart_window_seconds_left{table=\"t\"} 90\n",
            "pgrepart_reverse_lag_bytes{table=\"t\"} 7\n",
            "pgrepart_reverse_conflicts{table=\"t\"} 2\n",
            "pgrepart_phase{table=\"t\",phase=\"window\"} 1\n",
            "pgrepart_phase{table=\"t\",phase=\"done\"} 0\n",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn metrics_are_labelled_and_name_the_phase() {
        let s = Snapshot {
            phase: "streaming",
            lag_bytes: 42,
            ..Default::default()
        };
        let text = prometheus_text(&s, "public.orders");
        assert!(
            text.contains("pgrepart_lag_bytes{table=\"public.orders\"} 42\n"),
            "{text}"
        );
        assert!(text.contains("pgrepart_phase{table=\"public.orders\",phase=\"streaming\"} 1\n"));
        assert!(text.contains("pgrepart_phase{table=\"public.orders\",phase=\"copying\"} 0\n"));
    }
}
