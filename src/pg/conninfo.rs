//! Connection parameters gathered the way libpq gathers them, so that a DBA's `PGHOST`,
//! `PGPORT`, `~/.pg_service.conf` and bare database names work as they do with psql.
//!
//! ```text
//! --source text: URL, key=value, a bare dbname, or nothing
//!   └─► explicit parameters                       (win over everything below)
//!        + the service's  (service=... or PGSERVICE; PGSERVICEFILE or ~/.pg_service.conf,
//!                          then PGSYSCONFDIR/pg_service.conf)
//!        + the environment's (PGHOST, PGPORT, PGDATABASE, PGUSER, PGSSLMODE, ...)
//!        + defaults        (the Unix socket directory, the OS user)
//!   └─► one key=value text ──► tls::split_conninfo ──► tokio_postgres::Config
//! ```
//!
//! Each parameter is taken from the first of these that has it, which is libpq's order ("a
//! service file setting overrides the corresponding environment variable, and in turn can be
//! overridden by a value given directly in the connection string"). `PGPASSWORD` and the password
//! file are left to `passfile`, which runs when connecting and only when no password was found
//! here.
//!
//! Everything here is pure: the environment and the files come in through [`Environment`].
//! Errors name the parameter or the file, never the text (it may hold a password).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Environment variables and the connection parameter each one supplies (libpq's names). The
/// password variables are `passfile`'s.
pub const ENV_PARAMETERS: &[(&str, &str)] = &[
    ("PGHOST", "host"),
    ("PGHOSTADDR", "hostaddr"),
    ("PGPORT", "port"),
    ("PGDATABASE", "dbname"),
    ("PGUSER", "user"),
    ("PGOPTIONS", "options"),
    ("PGAPPNAME", "application_name"),
    ("PGSSLMODE", "sslmode"),
    ("PGSSLROOTCERT", "sslrootcert"),
    ("PGCONNECT_TIMEOUT", "connect_timeout"),
    ("PGTARGETSESSIONATTRS", "target_session_attrs"),
    ("PGCHANNELBINDING", "channel_binding"),
    ("PGLOADBALANCEHOSTS", "load_balance_hosts"),
];

/// The parameters pgrepart understands (tokio-postgres' and the TLS ones `tls` keeps); a
/// service file or URL naming another one is refused by name.
const KNOWN: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "options",
    "application_name",
    "sslmode",
    "sslrootcert",
    "sslnegotiation",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
    "service",
];

/// Where libpq looks for a server when no host is given: the Unix socket directory (Debian's
/// and upstream's defaults, the first that exists).
const SOCKET_DIRS: &[&str] = &["/var/run/postgresql", "/tmp"];

/// The system-wide service file's directories when `PGSYSCONFDIR` is not set (Debian's libpq,
/// then the plain `/etc`).
const SYSCONF_DIRS: &[&str] = &["/etc/postgresql-common", "/etc"];

/// What resolving may read. Tests pass their own maps.
pub struct Environment<'a> {
    pub vars: &'a HashMap<String, String>,
    /// A file's text, or `None` when it does not exist or cannot be read.
    pub read_file: &'a dyn Fn(&Path) -> Option<String>,
    /// Whether a directory exists (for the default socket directory).
    pub dir_exists: &'a dyn Fn(&Path) -> bool,
}

impl Environment<'_> {
    fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// Connection parameters in the order they were given; a later value of a key replaces an
/// earlier one.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Params {
    entries: Vec<(String, String)>,
}

// No derived Debug: it would print the password.
impl fmt::Debug for Params {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_map();
        for (k, v) in &self.entries {
            if k == "password" {
                list.entry(k, &"***");
            } else {
                list.entry(k, v);
            }
        }
        list.finish()
    }
}

impl Params {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn set(&mut self, key: &str, value: &str) {
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value.to_string(),
            None => self.entries.push((key.to_string(), value.to_string())),
        }
    }

    fn set_default(&mut self, key: &str, value: &str) {
        if self.get(key).is_none() {
            self.set(key, value);
        }
    }

    fn remove(&mut self, key: &str) {
        self.entries.retain(|(k, _)| k != key);
    }

    /// `key='value' ...`, quoted so that tokio-postgres and `tls::split_conninfo` read it back.
    pub fn to_keyword_text(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.entries {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(k);
            out.push_str("='");
            for c in v.chars() {
                if c == '\'' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('\'');
        }
        out
    }
}

/// Parses what the user wrote: a `postgresql://` or `postgres://` URL, `key=value` pairs, or a
/// bare database name (as `psql -d shop`). Every key must be one pgrepart understands.
pub fn parse(text: &str) -> Result<Params, String> {
    let text = text.trim();
    let params = if let Some(rest) = text
        .strip_prefix("postgresql://")
        .or_else(|| text.strip_prefix("postgres://"))
    {
        parse_url(rest)?
    } else if text.contains('=') {
        parse_keywords(text)?
    } else {
        let mut p = Params::default();
        if !text.is_empty() {
            p.set("dbname", text);
        }
        p
    };
    for (k, _) in &params.entries {
        check_known(k)?;
    }
    Ok(params)
}

fn check_known(key: &str) -> Result<(), String> {
    if KNOWN.contains(&key) {
        Ok(())
    } else {
        Err(format!("unknown connection parameter {key:?}"))
    }
}

fn decode(text: &str, what: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| format!("the URL's {what} is not valid UTF-8 once %-decoded"))
}

/// `[user[:password]@][host[:port][,...]][/dbname][?key=value&...]`
fn parse_url(rest: &str) -> Result<Params, String> {
    let mut p = Params::default();
    let (before_query, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let (netloc, path) = match before_query.find('/') {
        Some(i) => (&before_query[..i], Some(&before_query[i + 1..])),
        None => (before_query, None),
    };
    let hosts = match netloc.rsplit_once('@') {
        Some((creds, hosts)) => {
            let (user, password) = match creds.split_once(':') {
                Some((u, pw)) => (u, Some(pw)),
                None => (creds, None),
            };
            if !user.is_empty() {
                p.set("user", &decode(user, "user")?);
            }
            if let Some(pw) = password {
                p.set("password", &decode(pw, "password")?);
            }
            hosts
        }
        None => netloc,
    };
    if !hosts.is_empty() {
        let mut names = Vec::new();
        let mut ports = Vec::new();
        for chunk in hosts.split(',') {
            let (host, port) = if let Some(v6) = chunk.strip_prefix('[') {
                let (host, after) = v6
                    .split_once(']')
                    .ok_or("the URL's host has a '[' without its ']'")?;
                let port = match after.strip_prefix(':') {
                    Some(port) => port,
                    None if after.is_empty() => "",
                    None => return Err("the URL has text after a host's ']'".into()),
                };
                (host.to_string(), port)
            } else {
                match chunk.split_once(':') {
                    Some((h, port)) => (decode(h, "host")?, port),
                    None => (decode(chunk, "host")?, ""),
                }
            };
            if !port.is_empty() {
                check_port(port)?;
            }
            names.push(host);
            ports.push(port.to_string());
        }
        if names.iter().any(|h| !h.is_empty()) {
            p.set("host", &names.join(","));
        }
        if ports.iter().any(|port| !port.is_empty()) {
            p.set("port", &ports.join(","));
        }
    }
    if let Some(db) = path.filter(|d| !d.is_empty()) {
        p.set("dbname", &decode(db, "database name")?);
    }
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("the URL's parameter {pair:?} has no '='"))?;
        let k = decode(k, "parameter name")?;
        let v = decode(v, "parameter value")?;
        // libpq's JDBC-compatible spelling.
        if k == "ssl" && v == "true" {
            p.set("sslmode", "require");
        } else {
            p.set(&k, &v);
        }
    }
    if let Some(port) = p.get("port") {
        for one in port.split(',').filter(|x| !x.is_empty()) {
            check_port(one)?;
        }
    }
    Ok(p)
}

fn check_port(port: &str) -> Result<(), String> {
    match port.parse::<u16>() {
        Ok(n) if n > 0 => Ok(()),
        _ => Err(format!("invalid port number {port:?}")),
    }
}

/// libpq's `key = value` syntax: values may be single-quoted; `\` escapes the next character.
fn parse_keywords(text: &str) -> Result<Params, String> {
    let mut p = Params::default();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(p);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!(
                "missing \"=\" after {key:?} in the connection string"
            ));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => {
                        return Err(format!(
                            "unterminated quoted value of {key:?} in the connection string"
                        ));
                    }
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        p.set(&key, &value);
    }
}

/// One `[name]` section's parameters, from the text of a service file; `None` when the file has
/// no such section.
fn service_section(text: &str, name: &str, file: &Path) -> Result<Option<Params>, String> {
    let mut current: Option<Params> = None;
    let mut in_section = false;
    for (no, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[') {
            if in_section {
                break;
            }
            let section = section.strip_suffix(']').unwrap_or(section).trim();
            in_section = section == name;
            if in_section {
                current = Some(Params::default());
            }
            continue;
        }
        let Some(params) = current.as_mut().filter(|_| in_section) else {
            continue;
        };
        let (k, v) = line.split_once('=').ok_or_else(|| {
            format!(
                "syntax error in service file {}, line {}",
                file.display(),
                no + 1
            )
        })?;
        let k = k.trim();
        if k == "service" {
            return Err(format!(
                "nested service specifications are not supported in service file {}, line {}",
                file.display(),
                no + 1
            ));
        }
        check_known(k).map_err(|e| format!("{e} in service file {}", file.display()))?;
        params.set(k, v.trim());
    }
    Ok(current)
}

/// The parameters of service `name`: the user's file (`PGSERVICEFILE`, else
/// `~/.pg_service.conf`) first, then the system's (`PGSYSCONFDIR/pg_service.conf`).
fn service(name: &str, env: &Environment) -> Result<Params, String> {
    let mut files: Vec<PathBuf> = Vec::new();
    match env.var("PGSERVICEFILE") {
        Some(f) => files.push(PathBuf::from(f)),
        None => {
            if let Some(home) = env.var("HOME") {
                files.push(Path::new(home).join(".pg_service.conf"));
            }
        }
    }
    match env.var("PGSYSCONFDIR") {
        Some(dir) => files.push(Path::new(dir).join("pg_service.conf")),
        None => files.extend(
            SYSCONF_DIRS
                .iter()
                .map(|d| Path::new(d).join("pg_service.conf")),
        ),
    }
    for file in &files {
        let Some(text) = (env.read_file)(file) else {
            continue;
        };
        if let Some(params) = service_section(&text, name, file)? {
            return Ok(params);
        }
    }
    let looked = files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Err(format!(
        "definition of service {name:?} not found (looked in {looked})"
    ))
}

/// The complete parameters for `text` (or for nothing at all): explicit values, then the
/// service's, then the environment's, then the defaults.
pub fn resolve(text: Option<&str>, env: &Environment) -> Result<Params, String> {
    resolve_with(text, &[], env)
}

/// As `resolve`, with psql-style options (`--host`, `-p`, `-U`: `("host", ..)`, `("port", ..)`,
/// `("user", ..)`) that fill what `text` leaves out, before the service file and the environment:
/// as in psql, a value in the connection string itself wins.
pub fn resolve_with(
    text: Option<&str>,
    options: &[(&str, &str)],
    env: &Environment,
) -> Result<Params, String> {
    let mut p = match text {
        Some(t) => parse(t)?,
        None => Params::default(),
    };
    for (k, v) in options {
        check_known(k)?;
        p.set_default(k, v);
    }
    let service_name = p
        .get("service")
        .map(str::to_string)
        .or_else(|| env.var("PGSERVICE").map(str::to_string));
    if let Some(name) = service_name {
        for (k, v) in service(&name, env)?.entries {
            p.set_default(&k, &v);
        }
    }
    p.remove("service");
    for (var, key) in ENV_PARAMETERS {
        if let Some(v) = env.var(var) {
            p.set_default(key, v);
        }
    }
    if p.get("host").is_none() && p.get("hostaddr").is_none() {
        let dir = SOCKET_DIRS
            .iter()
            .find(|d| (env.dir_exists)(Path::new(d)))
            .unwrap_or(&SOCKET_DIRS[0]);
        p.set("host", dir);
    }
    if p.get("user").is_none()
        && let Some(user) = env.var("USER").or_else(|| env.var("LOGNAME"))
    {
        p.set("user", user);
    }
    if let Some(port) = p.get("port") {
        for one in port.split(',').filter(|x| !x.is_empty()) {
            check_port(one)?;
        }
    }
    if let Some(t) = p.get("connect_timeout")
        && t.trim().parse::<i64>().is_err()
    {
        return Err(format!("invalid connect_timeout {t:?}: give whole seconds"));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        vars: HashMap<String, String>,
        files: HashMap<PathBuf, String>,
    }

    impl Fixture {
        fn new(vars: &[(&str, &str)]) -> Fixture {
            Fixture {
                vars: vars
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                files: HashMap::new(),
            }
        }

        fn file(mut self, path: &str, text: &str) -> Fixture {
            self.files.insert(PathBuf::from(path), text.to_string());
            self
        }

        fn resolve(&self, text: Option<&str>) -> Result<Params, String> {
            let read = |p: &Path| self.files.get(p).cloned();
            let exists = |p: &Path| p == Path::new("/tmp");
            resolve(
                text,
                &Environment {
                    vars: &self.vars,
                    read_file: &read,
                    dir_exists: &exists,
                },
            )
        }
    }

    #[test]
    fn the_environment_fills_what_the_connection_string_leaves_out() {
        let env = Fixture::new(&[
            ("PGPORT", "1"),
            ("PGDATABASE", "shop"),
            ("PGUSER", "dba"),
            ("PGSSLMODE", "require"),
            ("PGAPPNAME", "nightly"),
            ("PGCONNECT_TIMEOUT", "7"),
        ]);
        let p = env.resolve(Some("host=127.0.0.1")).unwrap();
        assert_eq!(p.get("host"), Some("127.0.0.1"));
        assert_eq!(p.get("port"), Some("1"));
        assert_eq!(p.get("dbname"), Some("shop"));
        assert_eq!(p.get("user"), Some("dba"));
        assert_eq!(p.get("sslmode"), Some("require"));
        assert_eq!(p.get("application_name"), Some("nightly"));
        assert_eq!(p.get("connect_timeout"), Some("7"));
    }

    #[test]
    fn explicit_values_win_over_the_environment() {
        let env = Fixture::new(&[
            ("PGPORT", "1"),
            ("PGHOST", "envhost"),
            ("PGUSER", "envuser"),
        ]);
        let p = env
            .resolve(Some("postgresql://me@db1:5433/shop?sslmode=disable"))
            .unwrap();
        assert_eq!(p.get("host"), Some("db1"));
        assert_eq!(p.get("port"), Some("5433"));
        assert_eq!(p.get("user"), Some("me"));
        assert_eq!(p.get("dbname"), Some("shop"));
        assert_eq!(p.get("sslmode"), Some("disable"));
        // A URL without a port leaves it to the environment (tokio-postgres alone would say 5432).
        let p = env.resolve(Some("postgresql://db1/shop")).unwrap();
        assert_eq!(p.get("port"), Some("1"));
    }

    #[test]
    fn the_service_file_sits_between_explicit_values_and_the_environment() {
        let env = Fixture::new(&[
            ("HOME", "/home/dba"),
            ("PGPORT", "1"),
            ("PGUSER", "envuser"),
            ("PGDATABASE", "envdb"),
        ])
        .file(
            "/home/dba/.pg_service.conf",
            "# comment\n[other]\nport=9\n\n[shop]\nhost=svc-host\nport = 6543\nuser=svcuser\n",
        );
        let p = env.resolve(Some("service=shop user=me")).unwrap();
        assert_eq!(p.get("host"), Some("svc-host"));
        assert_eq!(p.get("port"), Some("6543"), "the service beats PGPORT");
        assert_eq!(
            p.get("user"),
            Some("me"),
            "the connection string beats the service"
        );
        assert_eq!(
            p.get("dbname"),
            Some("envdb"),
            "the environment fills the rest"
        );
        assert_eq!(p.get("service"), None);
    }

    #[test]
    fn pgservice_names_the_service_and_pgservicefile_the_file() {
        let env = Fixture::new(&[("PGSERVICE", "shop"), ("PGSERVICEFILE", "/srv/services")])
            .file("/srv/services", "[shop]\nhost=a\ndbname=shop\n");
        let p = env.resolve(None).unwrap();
        assert_eq!(p.get("host"), Some("a"));
        assert_eq!(p.get("dbname"), Some("shop"));
    }

    #[test]
    fn the_user_file_wins_over_the_system_file_and_the_system_file_is_read_too() {
        let env = Fixture::new(&[("HOME", "/h"), ("PGSYSCONFDIR", "/etc/pg")])
            .file("/h/.pg_service.conf", "[a]\nhost=user-a\n")
            .file(
                "/etc/pg/pg_service.conf",
                "[a]\nhost=sys-a\n[b]\nhost=sys-b\n",
            );
        assert_eq!(
            env.resolve(Some("service=a")).unwrap().get("host"),
            Some("user-a")
        );
        assert_eq!(
            env.resolve(Some("service=b")).unwrap().get("host"),
            Some("sys-b")
        );
        let missing = env.resolve(Some("service=c")).unwrap_err();
        assert!(
            missing.contains("definition of service \"c\" not found"),
            "{missing}"
        );
    }

    #[test]
    fn a_service_file_with_an_unknown_or_broken_line_is_refused_by_file_and_line() {
        let env = Fixture::new(&[("PGSERVICEFILE", "/s")]).file("/s", "[a]\nhost\n");
        let e = env.resolve(Some("service=a")).unwrap_err();
        assert!(e.contains("/s, line 2"), "{e}");
        let env = Fixture::new(&[("PGSERVICEFILE", "/s")]).file("/s", "[a]\nsslcompression=1\n");
        assert!(
            env.resolve(Some("service=a"))
                .unwrap_err()
                .contains("sslcompression")
        );
    }

    #[test]
    fn a_bare_word_is_a_database_name_and_nothing_at_all_is_the_defaults() {
        let env = Fixture::new(&[("USER", "osuser")]);
        let p = env.resolve(Some("shop")).unwrap();
        assert_eq!(p.get("dbname"), Some("shop"));
        assert_eq!(
            p.get("host"),
            Some("/tmp"),
            "the socket directory that exists"
        );
        assert_eq!(p.get("user"), Some("osuser"));
        let p = env.resolve(None).unwrap();
        assert_eq!(p.get("dbname"), None);
        assert_eq!(p.get("port"), None, "the port is left to its default, 5432");
    }

    #[test]
    fn urls_take_several_hosts_ipv6_sockets_and_encoded_parts() {
        let env = Fixture::new(&[]);
        let p = env
            .resolve(Some(
                "postgres://u:p%40ss@h1:5433,[::1]:5434,h3/d%20b?application_name=x",
            ))
            .unwrap();
        assert_eq!(p.get("host"), Some("h1,::1,h3"));
        assert_eq!(p.get("port"), Some("5433,5434,"));
        assert_eq!(p.get("password"), Some("p@ss"));
        assert_eq!(p.get("dbname"), Some("d b"));
        assert_eq!(p.get("application_name"), Some("x"));
        let p = env
            .resolve(Some("postgresql://%2Fvar%2Frun%2Fpostgresql/shop"))
            .unwrap();
        assert_eq!(p.get("host"), Some("/var/run/postgresql"));
        let p = env
            .resolve(Some("postgresql:///shop?host=/tmp&port=5999"))
            .unwrap();
        assert_eq!(p.get("host"), Some("/tmp"));
        assert_eq!(p.get("port"), Some("5999"));
    }

    #[test]
    fn malformed_text_is_refused_without_echoing_it() {
        let env = Fixture::new(&[]);
        let e = env
            .resolve(Some("postgresql://u:secret@h:port/db"))
            .unwrap_err();
        assert!(e.contains("invalid port number \"port\""), "{e}");
        assert!(!e.contains("secret"));
        let e = env.resolve(Some("host=h port=x5432")).unwrap_err();
        assert!(e.contains("invalid port number"), "{e}");
        assert!(
            env.resolve(Some("host=h password='secret"))
                .unwrap_err()
                .contains("unterminated")
        );
        let e = env.resolve(Some("host=h colour=blue")).unwrap_err();
        assert!(e.contains("unknown connection parameter \"colour\""), "{e}");
        let env = Fixture::new(&[("PGPORT", "five")]);
        assert!(
            env.resolve(Some("host=h"))
                .unwrap_err()
                .contains("\"five\"")
        );
    }

    #[test]
    fn psql_style_options_fill_what_the_text_leaves_out_before_service_and_environment() {
        let env = Fixture::new(&[
            ("PGSERVICEFILE", "/s"),
            ("PGPORT", "1"),
            ("PGUSER", "envuser"),
        ])
        .file("/s", "[a]\nport=7\nuser=svcuser\n");
        let options = [("host", "db9"), ("port", "5439"), ("user", "dba")];
        let read = |p: &Path| env.files.get(p).cloned();
        let exists = |_: &Path| false;
        let environment = Environment {
            vars: &env.vars,
            read_file: &read,
            dir_exists: &exists,
        };
        let p = resolve_with(Some("service=a"), &options, &environment).unwrap();
        assert_eq!(p.get("host"), Some("db9"));
        assert_eq!(
            p.get("port"),
            Some("5439"),
            "-p beats the service and PGPORT"
        );
        assert_eq!(p.get("user"), Some("dba"));
        let p = resolve_with(Some("host=h port=5 user=u"), &options, &environment).unwrap();
        assert_eq!(
            (p.get("host"), p.get("port"), p.get("user")),
            (Some("h"), Some("5"), Some("u")),
            "the connection string's own values win"
        );
    }

    #[test]
    fn keyword_text_round_trips_quotes_and_backslashes() {
        let mut p = Params::default();
        p.set("password", "it's a \\ secret");
        p.set("host", "h");
        let back = parse(&p.to_keyword_text()).unwrap();
        assert_eq!(back, p);
        assert!(!format!("{p:?}").contains("secret"));
    }
}
