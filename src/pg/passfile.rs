//! Where a connection's password comes from when the connection string has none, as libpq does it.
//!
//! ```text
//! password in the URL / password=...   (non-empty)        -> used as is
//!   else PGPASSWORD                     (non-empty)        -> used
//!   else PGPASSFILE or ~/.pgpass        (0600 or stricter) -> first line matching
//!                                          host:port:database:user (`*` matches anything)
//!   else no password (the server may not ask for one)
//! ```
//!
//! A password file that the group or others may read is ignored with a warning naming the file, as
//! libpq does. Matching uses the first host of the connection string; a Unix-socket host (or none)
//! is looked up as `localhost`, the port defaults to 5432 and the database to the user name.
//!
//! Parsing and matching are pure (`PassFile::parse`, `PassFile::find`); `resolve` reads the
//! environment and the file through the `Env` it is given, so tests pass their own. No password
//! ever goes into a log line or an error message: only where it came from ([`PasswordSource`]).

use std::fmt;
use std::path::{Path, PathBuf};

use tokio_postgres::Config;
use tokio_postgres::config::Host;

/// Where the password of a connection came from, for messages ("password from ~/.pgpass").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// The connection string had none and nothing else supplied one.
    None,
    /// `password=...` or `postgresql://user:PASSWORD@...`.
    ConnectionString,
    /// The `PGPASSWORD` environment variable.
    Environment,
    /// A line of this password file.
    File(PathBuf),
}

impl fmt::Display for PasswordSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordSource::None => f.write_str("no password"),
            PasswordSource::ConnectionString => f.write_str("password from the connection string"),
            PasswordSource::Environment => f.write_str("password from PGPASSWORD"),
            PasswordSource::File(p) => write!(f, "password from the file {}", p.display()),
        }
    }
}

/// What `resolve` may read: environment variables, the home directory and files.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
    fn home(&self) -> Option<PathBuf>;
    /// The file's text if it exists and may be used; `Err` with a warning text (naming the file,
    /// never its content) if it exists but must be ignored.
    fn read_password_file(&self, path: &Path) -> Option<Result<String, String>>;
}

/// The real process environment and file system.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn home(&self) -> Option<PathBuf> {
        std::env::var_os("HOME").map(PathBuf::from)
    }

    fn read_password_file(&self, path: &Path) -> Option<Result<String, String>> {
        let meta = std::fs::metadata(path).ok()?;
        if !meta.is_file() {
            return Some(Err(format!(
                "password file {} is not a plain file; ignoring it",
                path.display()
            )));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                return Some(Err(format!(
                    "password file {} has group or world access; permissions should be u=rw (0600) \
                     or less; ignoring it",
                    path.display()
                )));
            }
        }
        match std::fs::read_to_string(path) {
            Ok(text) => Some(Ok(text)),
            Err(e) => Some(Err(format!(
                "could not read password file {}: {}; ignoring it",
                path.display(),
                e.kind()
            ))),
        }
    }
}

/// One `host:port:database:user:password` line; `None` fields are `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    host: Option<String>,
    port: Option<String>,
    database: Option<String>,
    user: Option<String>,
    password: String,
}

impl Entry {
    fn matches(&self, key: &Key<'_>) -> bool {
        fn field(pattern: &Option<String>, value: &str) -> bool {
            pattern.as_deref().is_none_or(|p| p == value)
        }
        field(&self.host, key.host)
            && field(&self.port, key.port)
            && field(&self.database, key.database)
            && field(&self.user, key.user)
    }
}

/// The parsed lines of a password file, in file order.
pub struct PassFile {
    entries: Vec<Entry>,
}

// Deliberately no derived Debug: it would print passwords.
impl fmt::Debug for PassFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PassFile({} entries)", self.entries.len())
    }
}

/// What a password file line is matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key<'a> {
    pub host: &'a str,
    pub port: &'a str,
    pub database: &'a str,
    pub user: &'a str,
}

impl PassFile {
    /// Parses a password file. Blank lines, `#` comments and lines with fewer than five fields are
    /// skipped (libpq skips them silently too). `\` escapes the next character, so `\:` is a colon
    /// inside a field and `\\` a backslash. A field that is exactly `*` (unescaped) matches
    /// anything; the password is the rest of the line after the fourth separator.
    pub fn parse(text: &str) -> PassFile {
        let entries = text
            .lines()
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(parse_line)
            .collect();
        PassFile { entries }
    }

    /// The password of the first line matching `key`.
    pub fn find(&self, key: &Key<'_>) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.matches(key))
            .map(|e| e.password.as_str())
    }
}

/// One field of a line: its unescaped text and whether it was a bare `*`.
fn parse_line(line: &str) -> Option<Entry> {
    let mut fields: Vec<Option<String>> = Vec::with_capacity(4);
    let mut chars = line.chars();
    while fields.len() < 4 {
        let mut text = String::new();
        let mut escaped_any = false;
        let mut ended = false;
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    escaped_any = true;
                    match chars.next() {
                        Some(next) => text.push(next),
                        None => return None,
                    }
                }
                ':' => {
                    ended = true;
                    break;
                }
                c => text.push(c),
            }
        }
        if !ended {
            return None; // fewer than five fields
        }
        fields.push(if text == "*" && !escaped_any {
            None
        } else {
            Some(text)
        });
    }
    let mut password = String::new();
    let mut chars = chars.peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    password.push(next);
                }
            }
            c => password.push(c),
        }
    }
    let mut fields = fields.into_iter();
    Some(Entry {
        host: fields.next()?,
        port: fields.next()?,
        database: fields.next()?,
        user: fields.next()?,
        password,
    })
}

/// The password file to use: `PGPASSFILE`, else `~/.pgpass`.
pub fn password_file_path(env: &dyn Env) -> Option<PathBuf> {
    match env.var("PGPASSFILE") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => env.home().map(|h| h.join(".pgpass")),
    }
}

/// The host, port, database and user that libpq would look up for the first host of `config`.
/// `default_user` stands in when the connection string names no user (libpq uses the OS user).
fn lookup_key(config: &Config, default_user: &str) -> (String, String, String, String) {
    let host = match (config.get_hosts().first(), config.get_hostaddrs().first()) {
        (Some(Host::Tcp(h)), _) if !h.is_empty() => h.clone(),
        (None, Some(addr)) => addr.to_string(),
        // A Unix-socket directory, or no host at all: libpq matches "localhost".
        _ => "localhost".to_string(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let user = config.get_user().unwrap_or(default_user).to_string();
    let database = config.get_dbname().unwrap_or(&user).to_string();
    (host, port, database, user)
}

/// `config` with its password filled in from `PGPASSWORD` or the password file when it has none,
/// and where the password came from. Warnings (an ignored password file) go to `warn`.
pub fn resolve(
    config: &Config,
    env: &dyn Env,
    warn: &mut dyn FnMut(&str),
) -> (Config, PasswordSource) {
    if config.get_password().is_some_and(|p| !p.is_empty()) {
        return (config.clone(), PasswordSource::ConnectionString);
    }
    let mut filled = config.clone();
    if let Some(pw) = env.var("PGPASSWORD").filter(|p| !p.is_empty()) {
        filled.password(pw);
        return (filled, PasswordSource::Environment);
    }
    let Some(path) = password_file_path(env) else {
        return (filled, PasswordSource::None);
    };
    let text = match env.read_password_file(&path) {
        None => return (filled, PasswordSource::None),
        Some(Err(warning)) => {
            warn(&warning);
            return (filled, PasswordSource::None);
        }
        Some(Ok(text)) => text,
    };
    let default_user = env.var("USER").unwrap_or_default();
    let (host, port, database, user) = lookup_key(config, &default_user);
    let key = Key {
        host: &host,
        port: &port,
        database: &database,
        user: &user,
    };
    match PassFile::parse(&text).find(&key) {
        Some(pw) if !pw.is_empty() => {
            filled.password(pw);
            (filled, PasswordSource::File(path))
        }
        _ => (filled, PasswordSource::None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn key<'a>(host: &'a str, port: &'a str, database: &'a str, user: &'a str) -> Key<'a> {
        Key {
            host,
            port,
            database,
            user,
        }
    }

    #[test]
    fn the_first_matching_line_wins_and_stars_match_anything() {
        let f = PassFile::parse(
            "# comment\n\
             \n\
             db1:5432:app:alice:first\n\
             *:5432:app:alice:second\n\
             *:*:*:*:fallback\n",
        );
        assert_eq!(f.find(&key("db1", "5432", "app", "alice")), Some("first"));
        assert_eq!(f.find(&key("db2", "5432", "app", "alice")), Some("second"));
        assert_eq!(
            f.find(&key("db2", "6543", "app", "alice")),
            Some("fallback")
        );
        assert_eq!(f.find(&key("db1", "5432", "app", "bob")), Some("fallback"));
    }

    #[test]
    fn escaped_colons_and_backslashes_are_part_of_fields_and_passwords() {
        let f = PassFile::parse("h\\:x:5432:d:u:pa\\:ss\\\\word\r\n");
        assert_eq!(f.find(&key("h:x", "5432", "d", "u")), Some("pa:ss\\word"));
        assert_eq!(f.find(&key("h", "5432", "d", "u")), None);
    }

    #[test]
    fn an_escaped_star_is_a_literal_star() {
        let f = PassFile::parse("\\*:5432:d:u:pw\n");
        assert_eq!(f.find(&key("*", "5432", "d", "u")), Some("pw"));
        assert_eq!(f.find(&key("h", "5432", "d", "u")), None);
    }

    #[test]
    fn colons_after_the_fourth_separator_belong_to_the_password() {
        let f = PassFile::parse("h:1:d:u:a:b:c\n");
        assert_eq!(f.find(&key("h", "1", "d", "u")), Some("a:b:c"));
    }

    #[test]
    fn short_lines_are_skipped() {
        let f = PassFile::parse("h:1:d:u\nh:1:d\n\nh:1:d:u:ok\n");
        assert_eq!(f.find(&key("h", "1", "d", "u")), Some("ok"));
    }

    #[test]
    fn debug_output_shows_no_password() {
        let f = PassFile::parse("h:1:d:u:s3cret\n");
        assert!(!format!("{f:?}").contains("s3cret"));
    }

    struct FakeEnv {
        vars: HashMap<&'static str, String>,
        files: HashMap<PathBuf, Result<String, String>>,
    }

    impl FakeEnv {
        fn new() -> FakeEnv {
            FakeEnv {
                vars: HashMap::from([("USER", "osuser".to_string())]),
                files: HashMap::new(),
            }
        }
    }

    impl Env for FakeEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.vars.get(name).cloned()
        }
        fn home(&self) -> Option<PathBuf> {
            Some(PathBuf::from("/home/me"))
        }
        fn read_password_file(&self, path: &Path) -> Option<Result<String, String>> {
            self.files.get(path).cloned()
        }
    }

    fn config(s: &str) -> Config {
        s.parse().unwrap()
    }

    fn resolved(c: &str, env: &FakeEnv) -> (Option<String>, PasswordSource, Vec<String>) {
        let mut warnings = Vec::new();
        let (cfg, source) = resolve(&config(c), env, &mut |w| warnings.push(w.to_string()));
        let pw = cfg
            .get_password()
            .map(|p| String::from_utf8(p.to_vec()).unwrap());
        (pw, source, warnings)
    }

    #[test]
    fn a_password_in_the_connection_string_wins_over_everything() {
        let mut env = FakeEnv::new();
        env.vars.insert("PGPASSWORD", "fromenv".into());
        let (pw, source, _) = resolved("postgresql://u:inurl@h/d", &env);
        assert_eq!(pw.as_deref(), Some("inurl"));
        assert_eq!(source, PasswordSource::ConnectionString);
    }

    #[test]
    fn pgpassword_comes_before_the_password_file() {
        let mut env = FakeEnv::new();
        env.vars.insert("PGPASSWORD", "fromenv".into());
        env.files
            .insert("/home/me/.pgpass".into(), Ok("*:*:*:*:fromfile\n".into()));
        let (pw, source, _) = resolved("host=h user=u dbname=d", &env);
        assert_eq!(pw.as_deref(), Some("fromenv"));
        assert_eq!(source, PasswordSource::Environment);
    }

    #[test]
    fn the_home_password_file_is_used_when_nothing_else_gives_one() {
        let mut env = FakeEnv::new();
        env.files.insert(
            "/home/me/.pgpass".into(),
            Ok("h:5432:d:u:right\n*:*:*:*:wrong\n".into()),
        );
        let (pw, source, _) = resolved("host=h user=u dbname=d", &env);
        assert_eq!(pw.as_deref(), Some("right"));
        assert_eq!(source, PasswordSource::File("/home/me/.pgpass".into()));
    }

    #[test]
    fn pgpassfile_replaces_the_home_password_file() {
        let mut env = FakeEnv::new();
        env.vars.insert("PGPASSFILE", "/etc/pw".into());
        env.files
            .insert("/home/me/.pgpass".into(), Ok("*:*:*:*:home\n".into()));
        env.files
            .insert("/etc/pw".into(), Ok("*:*:*:*:etc\n".into()));
        let (pw, _, _) = resolved("host=h user=u", &env);
        assert_eq!(pw.as_deref(), Some("etc"));
    }

    #[test]
    fn defaults_are_port_5432_the_user_as_database_and_the_os_user() {
        let mut env = FakeEnv::new();
        env.files.insert(
            "/home/me/.pgpass".into(),
            Ok("h:5432:osuser:osuser:defaults\n".into()),
        );
        let (pw, _, _) = resolved("host=h", &env);
        assert_eq!(pw.as_deref(), Some("defaults"));
        let (pw, _, _) = resolved("host=h port=6000", &env);
        assert_eq!(pw, None);
    }

    #[test]
    fn a_unix_socket_host_is_looked_up_as_localhost() {
        let mut env = FakeEnv::new();
        env.files.insert(
            "/home/me/.pgpass".into(),
            Ok("localhost:5432:d:u:sock\n".into()),
        );
        let (pw, _, _) = resolved("host=/var/run/postgresql user=u dbname=d", &env);
        assert_eq!(pw.as_deref(), Some("sock"));
    }

    #[test]
    fn an_unusable_password_file_is_ignored_with_a_warning_naming_it() {
        let mut env = FakeEnv::new();
        env.files.insert(
            "/home/me/.pgpass".into(),
            Err("password file /home/me/.pgpass has group or world access".into()),
        );
        let (pw, source, warnings) = resolved("host=h user=u", &env);
        assert_eq!(pw, None);
        assert_eq!(source, PasswordSource::None);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("/home/me/.pgpass"), "{warnings:?}");
    }

    #[test]
    fn empty_passwords_count_as_none() {
        let mut env = FakeEnv::new();
        env.vars.insert("PGPASSWORD", String::new());
        env.files
            .insert("/home/me/.pgpass".into(), Ok("*:*:*:*:fromfile\n".into()));
        let (pw, source, _) = resolved("host=h user=u password=''", &env);
        assert_eq!(pw.as_deref(), Some("fromfile"));
        assert!(matches!(source, PasswordSource::File(_)));
    }

    #[cfg(unix)]
    #[test]
    fn a_group_readable_file_on_disk_is_refused_and_a_private_one_is_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgpass");
        std::fs::write(&path, "*:*:*:*:s3cret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let warning = ProcessEnv.read_password_file(&path).unwrap().unwrap_err();
        assert!(warning.contains(&path.display().to_string()), "{warning}");
        assert!(!warning.contains("s3cret"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(ProcessEnv.read_password_file(&path).unwrap().is_ok());
        assert!(
            ProcessEnv
                .read_password_file(&dir.path().join("missing"))
                .is_none()
        );
    }
}
