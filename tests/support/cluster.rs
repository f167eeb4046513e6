//! Throwaway PostgreSQL clusters for integration tests.
//!
//! ```text
//! find_bin_dir(major)          PGREPART_PG<major>_BIN > <repo>/.pg/<major>/bin > PATH > /usr/lib/postgresql/<major>/bin
//!   -> initdb (temp dir)       trust auth, user postgres, UTF8, locale C
//!   -> postgresql.conf         wal_level=logical, slots/senders 20, 64kB decoding memory, fsync off
//!   -> pg_ctl start -w         on a free 127.0.0.1 port (retried on a bind race)
//!   ... test ...
//! Drop: pg_ctl stop -m immediate, temp dir removed
//! ```
//!
//! `initdb` and `postgres` refuse to run as root: when the test process is root, every server
//! command runs as the `postgres` user through `runuser`, in a temp dir that user owns.
//!
//! Starting and stopping is synchronous (it runs processes and waits for them). Call `start` at the
//! top of a `#[tokio::test]` before spawning tasks, or from `std::thread::scope` /
//! `tokio::task::spawn_blocking` to start several clusters at once.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use tempfile::TempDir;
use tokio_postgres::{Client, NoTls};

/// How many times `start` picks a new port when the server could not bind the one it was given.
const PORT_ATTEMPTS: usize = 8;

/// Ports handed out by this process, so two tests starting at once never get the same one.
static PORTS_TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A running PostgreSQL server in its own temp dir. Dropping it stops the server and removes the dir.
pub struct Cluster {
    major: u32,
    bin: PathBuf,
    port: u16,
    data: PathBuf,
    log: PathBuf,
    as_postgres_user: bool,
    running: bool,
    // Last field: dropped after `Drop::drop` stopped the server.
    dir: TempDir,
}

impl Cluster {
    /// Starts a cluster of `major`, panicking if its binaries cannot be found or it fails to start.
    pub fn start(major: u32) -> Cluster {
        match find_bin_dir(major) {
            Ok(bin) => Cluster::start_with(major, bin),
            Err(why) => panic!("no PostgreSQL {major} binaries: {why}"),
        }
    }

    /// Starts a cluster of `major`, or returns `None` after printing why when no binaries for that
    /// major are installed. With `PGREPART_REQUIRE_SERVERS` set (CI), a missing major panics instead.
    ///
    /// ```ignore
    /// let Some(cluster) = Cluster::start_or_skip(14) else { return };
    /// ```
    pub fn start_or_skip(major: u32) -> Option<Cluster> {
        match find_bin_dir(major) {
            Ok(bin) => Some(Cluster::start_with(major, bin)),
            Err(why) if servers_required() => {
                panic!("no PostgreSQL {major} binaries and PGREPART_REQUIRE_SERVERS is set: {why}")
            }
            Err(why) => {
                eprintln!(
                    "SKIPPED: no PostgreSQL {major} binaries ({why}); run `scripts/fetch-pg.sh {major}` \
                     or set PGREPART_PG{major}_BIN"
                );
                None
            }
        }
    }

    fn start_with(major: u32, bin: PathBuf) -> Cluster {
        let as_postgres_user = running_as_root();
        let dir = tempfile::Builder::new()
            .prefix(&format!("pgrepart-pg{major}-"))
            .tempdir()
            .expect("create temp dir for a cluster");
        if as_postgres_user {
            run_checked(Command::new("chown").arg("postgres:").arg(dir.path()));
        }
        let data = dir.path().join("data");
        let sockets = dir.path().join("sockets");
        let log = dir.path().join("server.log");
        let mut cluster = Cluster {
            major,
            bin,
            port: 0,
            data,
            log,
            as_postgres_user,
            running: false,
            dir,
        };
        run_checked(
            cluster
                .server_command("initdb")
                .arg("-D")
                .arg(&cluster.data)
                .args([
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "-N",
                ]),
        );
        run_checked(cluster.server_command("mkdir").arg(&sockets));
        cluster.append_config(&format!(
            "\n# pgrepart test cluster\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             wal_level = logical\n\
             max_replication_slots = 20\n\
             max_wal_senders = 20\n\
             logical_decoding_work_mem = '64kB'\n\
             fsync = off\n\
             max_connections = 200\n",
            sockets.display()
        ));

        for attempt in 1..=PORT_ATTEMPTS {
            cluster.port = free_port();
            cluster.append_config(&format!("port = {}\n", cluster.port));
            match cluster.try_pg_ctl_start() {
                Ok(()) => return cluster,
                Err(log) if attempt < PORT_ATTEMPTS && is_bind_failure(&log) => continue,
                Err(log) => panic!(
                    "PostgreSQL {major} ({}) did not start on port {}; server log:\n{log}",
                    cluster.bin.display(),
                    cluster.port
                ),
            }
        }
        unreachable!("the last attempt either returns or panics")
    }

    /// libpq URL of database `db`: `postgresql://postgres@127.0.0.1:<port>/<db>`.
    pub fn url(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates database `name` and returns its URL.
    pub async fn create_database(&self, name: &str) -> String {
        let client = self.client("postgres").await;
        client
            .batch_execute(&format!(
                "CREATE DATABASE {}",
                crate::support::schema::ident(name)
            ))
            .await
            .unwrap_or_else(|e| panic!("create database {name}: {}", crate::support::describe(&e)));
        self.url(name)
    }

    /// A connected client on database `db`; its connection task runs on the current runtime.
    pub async fn client(&self, db: &str) -> Client {
        connect(&self.url(db)).await
    }

    pub fn major(&self) -> u32 {
        self.major
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding this cluster's `postgres`, `pg_ctl` and `initdb`.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The server log so far (for failure messages; never assert on its exact wording).
    pub fn server_log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Restarts the server (fast shutdown, then start on the same port and data).
    pub fn restart(&mut self) {
        self.stop_server();
        self.start_server();
    }

    /// Stops the server (fast shutdown); `start_server` brings it back on the same port.
    pub fn stop_server(&mut self) {
        let out = self.pg_ctl(&["stop", "-m", "fast"]);
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            output_text(&out)
        );
        self.running = false;
    }

    /// Starts a server stopped with `stop_server`.
    pub fn start_server(&mut self) {
        if let Err(log) = self.try_pg_ctl_start() {
            panic!(
                "PostgreSQL {} did not start again; server log:\n{log}",
                self.major
            );
        }
    }

    fn try_pg_ctl_start(&mut self) -> Result<(), String> {
        let log = self.log.clone();
        let out = self.pg_ctl(&["start", "-w", "-t", "60", "-l", &log.to_string_lossy()]);
        if out.status.success() {
            self.running = true;
            Ok(())
        } else {
            // pg_ctl may leave a postmaster that started late: make sure nothing is left behind.
            let _ = self.pg_ctl(&["stop", "-m", "immediate"]);
            Err(format!("{}\n{}", output_text(&out), self.server_log()))
        }
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        self.server_command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(args)
            .output()
            .expect("run pg_ctl")
    }

    /// A command run as the server user: `postgres` via runuser when we are root. Programs other than
    /// the server binaries (e.g. `mkdir`) are taken from PATH.
    fn server_command(&self, program: &str) -> Command {
        let exe = match program {
            "initdb" | "pg_ctl" | "postgres" => self.bin.join(program),
            other => PathBuf::from(other),
        };
        let mut cmd = if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        // The server user may not be able to enter the test's working directory.
        cmd.current_dir(self.dir.path());
        for var in [
            "PGDATA",
            "PGPORT",
            "PGHOST",
            "PGUSER",
            "PGDATABASE",
            "PGOPTIONS",
        ] {
            cmd.env_remove(var);
        }
        cmd
    }

    /// A physical standby of this cluster, streaming from it, with `settings` (postgresql.conf
    /// lines) added: the server is stopped, its data directory copied, and both started. Stopped
    /// when dropped (drop it before the cluster).
    pub fn start_standby(&mut self, settings: &str) -> Standby {
        self.stop_server();
        let data = self.dir.path().join("standby");
        run_checked(
            self.server_command("cp")
                .arg("-a")
                .arg(&self.data)
                .arg(&data),
        );
        self.start_server();
        run_checked(
            self.server_command("touch")
                .arg(data.join("standby.signal")),
        );
        let port = free_port();
        let mut f = OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .expect("open the standby's postgresql.conf");
        write!(
            f,
            "\n# standby\nport = {port}\n\
             primary_conninfo = 'host=127.0.0.1 port={} user=postgres application_name=standby'\n\
             {settings}\n",
            self.port
        )
        .expect("write the standby's postgresql.conf");
        let log = self.dir.path().join("standby.log");
        let out = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["start", "-w", "-t", "60", "-l"])
            .arg(&log)
            .output()
            .expect("run pg_ctl");
        assert!(
            out.status.success(),
            "the standby did not start: {}\n{}",
            output_text(&out),
            fs::read_to_string(&log).unwrap_or_default()
        );
        Standby {
            stop: self
                .server_command("pg_ctl")
                .arg("-D")
                .arg(&data)
                .args(["stop", "-m", "immediate", "-w"])
                .get_args()
                .map(|a| a.to_os_string())
                .collect(),
            program: self.server_command("pg_ctl").get_program().to_os_string(),
        }
    }

    fn append_config(&self, text: &str) {
        let mut f = OpenOptions::new()
            .append(true)
            .open(self.data.join("postgresql.conf"))
            .expect("open postgresql.conf");
        f.write_all(text.as_bytes()).expect("write postgresql.conf");
    }
}

/// A physical standby started by [`Cluster::start_standby`]; stopped when dropped.
pub struct Standby {
    program: std::ffi::OsString,
    stop: Vec<std::ffi::OsString>,
}

impl Drop for Standby {
    fn drop(&mut self) {
        let _ = Command::new(&self.program)
            .args(&self.stop)
            .current_dir("/")
            .output();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running {
            let _ = self.pg_ctl(&["stop", "-m", "immediate", "-w"]);
        }
    }
}

/// Connects to `url` and spawns the connection task on the current runtime. Panics on failure.
pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {}", crate::support::describe(&e)));
    tokio::spawn(async move {
        // A connection that ends with an error (server stopped, backend killed) shows up as errors on
        // the client's next call; nothing to report here.
        let _ = connection.await;
    });
    client
}

/// The majors tests iterate over: `PGREPART_TEST_MAJORS` (comma separated, e.g. "14,15,18"), else 15.
pub fn test_majors() -> Vec<u32> {
    match std::env::var("PGREPART_TEST_MAJORS") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|m| {
                m.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("PGREPART_TEST_MAJORS: not a major version: {m:?}"))
            })
            .collect(),
        _ => vec![15],
    }
}

/// Where the binaries of `major` are, in the documented order of preference; `Err` says what was tried.
pub fn find_bin_dir(major: u32) -> Result<PathBuf, String> {
    let var = format!("PGREPART_PG{major}_BIN");
    if let Ok(dir) = std::env::var(&var) {
        let dir = PathBuf::from(dir);
        return match version_of(&dir) {
            Some(v) if v == major => Ok(dir),
            Some(v) => panic!("{var}={} holds PostgreSQL {v}, not {major}", dir.display()),
            None => panic!("{var}={} has no runnable postgres", dir.display()),
        };
    }
    let mut tried = vec![format!("{var} unset")];
    let fetched = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".pg")
        .join(major.to_string())
        .join("bin");
    let mut candidates = vec![fetched];
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    candidates.push(PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")));
    for dir in candidates {
        if !dir.join("postgres").is_file() {
            continue;
        }
        match version_of(&dir) {
            Some(v)
                if v == major && dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() =>
            {
                return Ok(dir);
            }
            Some(v) => tried.push(format!("{} is PostgreSQL {v}", dir.display())),
            None => tried.push(format!("{} does not run", dir.display())),
        }
    }
    tried.push(format!(
        ".pg/{major}/bin, PATH and /usr/lib/postgresql/{major}/bin have none"
    ));
    Err(tried.join("; "))
}

/// The major version `bin/postgres --version` reports ("postgres (PostgreSQL) 15.14 (Debian ...)").
fn version_of(bin: &Path) -> Option<u32> {
    let out = Command::new(bin.join("postgres"))
        .arg("--version")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let rest = text.split(") ").nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn servers_required() -> bool {
    std::env::var("PGREPART_REQUIRE_SERVERS").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn running_as_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// A port nobody listens on now: bind port 0, note the port, release it. Never the same twice in this
/// process; a race with another process is caught by `is_bind_failure` and a retry.
fn free_port() -> u16 {
    let mut taken = PORTS_TAKEN.lock().unwrap_or_else(|e| e.into_inner());
    let taken = taken.get_or_insert_with(HashSet::new);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind a free port on 127.0.0.1")
            .port();
        if taken.insert(port) {
            return port;
        }
    }
}

fn is_bind_failure(log: &str) -> bool {
    log.contains("could not bind")
        || log.contains("Address already in use")
        || log.contains("could not create any TCP/IP sockets")
}

fn run_checked(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        output_text(&out)
    );
}

fn output_text(out: &Output) -> String {
    format!(
        "{}; stdout: {}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}
