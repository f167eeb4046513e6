//! Opening the socket, TLS, and the startup + authentication exchange of a replication connection.
//!
//! ```text
//! client                                   server
//! SSLRequest (unless sslmode=disable
//!   or a Unix socket)           ------->
//!                               <-------  'S' (TLS handshake follows) | 'N' (plain: prefer only)
//! StartupMessage(user, database,
//!   replication=database, ...)  ------->
//!                               <-------  'R' auth request (0 ok | 3 | 5 salt | 10 SASL)
//! 'p' password / SASL messages  <------>  'R' 11 continue, 'R' 12 final, 'R' 0 ok
//!                               <-------  'S' ParameterStatus*, 'K' BackendKeyData, 'Z'
//! ```
//!
//! The password (filled in by `pg::prepare_session` from the connection string, `PGPASSWORD` or
//! the password file, like ordinary connections) is only ever fed to the wire encoders; no error
//! message or log line carries it.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio_postgres::config::Host;
use tokio_util::codec::Framed;

use super::{Conn, ReplicationError, next_frame, send, server_error};
use crate::pg::passfile::PasswordSource;
use crate::pg::tls::{self, SslMode, TlsPlan};
use crate::protocol::frame::{
    Authentication, FrameCodec, parse_authentication, parse_backend_key_data,
    parse_parameter_status, tag,
};

/// What every replication connection sets, like the server's own walreceiver.
pub(crate) const SESSION_OPTIONS: &str =
    "-c datestyle=ISO -c intervalstyle=postgres -c extra_float_digits=3";

const DEFAULT_PORT: u16 = 5432;

pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// One place to try, in the order of the connection string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Tcp {
        host: String,
        port: u16,
    },
    /// `hostaddr`, with the `host` of the same index (if any) for TLS name checks.
    Addr {
        addr: IpAddr,
        port: u16,
        name: Option<String>,
    },
    Unix {
        socket: PathBuf,
    },
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Tcp { host, port } => write!(f, "{host}:{port}"),
            Target::Addr { addr, port, .. } => write!(f, "{addr}:{port}"),
            Target::Unix { socket } => write!(f, "{}", socket.display()),
        }
    }
}

/// The hosts of a parsed config paired with their ports (one port for all, or one per host), as
/// tokio-postgres pairs them; `hostaddr` wins over `host` at the same index. Without any host,
/// the usual local sockets and then localhost.
pub(crate) fn targets(config: &tokio_postgres::Config) -> Vec<Target> {
    let hosts = config.get_hosts();
    let addrs = config.get_hostaddrs();
    let ports = config.get_ports();
    let port_at = |i: usize| match ports {
        [] => DEFAULT_PORT,
        [one] => *one,
        many => many.get(i).copied().unwrap_or(DEFAULT_PORT),
    };
    let n = hosts.len().max(addrs.len());
    if n == 0 {
        let port = port_at(0);
        return vec![
            unix_target(&PathBuf::from("/var/run/postgresql"), port),
            unix_target(&PathBuf::from("/tmp"), port),
            Target::Tcp {
                host: "localhost".into(),
                port,
            },
        ];
    }
    (0..n)
        .map(|i| {
            let port = port_at(i);
            match (addrs.get(i), hosts.get(i)) {
                (Some(addr), host) => Target::Addr {
                    addr: *addr,
                    port,
                    name: match host {
                        Some(Host::Tcp(h)) => Some(h.clone()),
                        _ => None,
                    },
                },
                (None, Some(Host::Tcp(host))) => Target::Tcp {
                    host: host.clone(),
                    port,
                },
                (None, Some(Host::Unix(dir))) => unix_target(dir, port),
                (None, None) => unreachable!("index below the longer list"),
            }
        })
        .collect()
}

fn unix_target(dir: &std::path::Path, port: u16) -> Target {
    Target::Unix {
        socket: dir.join(format!(".s.PGSQL.{port}")),
    }
}

async fn open(target: &Target, timeout: Option<Duration>) -> io::Result<Box<dyn Io>> {
    let connect = async {
        let io: Box<dyn Io> = match target {
            Target::Tcp { host, port } => {
                let s = TcpStream::connect((host.as_str(), *port)).await?;
                s.set_nodelay(true)?;
                Box::new(s)
            }
            Target::Addr { addr, port, .. } => {
                let s = TcpStream::connect((*addr, *port)).await?;
                s.set_nodelay(true)?;
                Box::new(s)
            }
            Target::Unix { socket } => Box::new(UnixStream::connect(socket).await?),
        };
        Ok(io)
    };
    match timeout {
        Some(t) => tokio::time::timeout(t, connect)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?,
        None => connect.await,
    }
}

/// What the startup exchange tells us about the session.
pub(crate) struct Session {
    pub(crate) conn: Conn,
    pub(crate) server_version: String,
    pub(crate) backend_pid: i32,
}

/// The name the server's certificate is checked against (and sent as SNI): the host name, or for
/// `hostaddr` the `host` of the same index, else the address itself. `None` for Unix sockets.
fn tls_name(target: &Target) -> Option<String> {
    match target {
        Target::Tcp { host, .. } => Some(host.clone()),
        Target::Addr { addr, name, .. } => Some(name.clone().unwrap_or_else(|| addr.to_string())),
        Target::Unix { .. } => None,
    }
}

/// The SSLRequest exchange and, if the server agrees, the TLS handshake. Plain text when TLS is
/// off, over a Unix socket, or when the server says 'N' under sslmode=prefer.
async fn negotiate_tls(
    mut io: Box<dyn Io>,
    target: &Target,
    plan: &TlsPlan,
) -> Result<Box<dyn Io>, ReplicationError> {
    let Some(name) = tls_name(target) else {
        return Ok(io);
    };
    if plan.mode == SslMode::Disable {
        return Ok(io);
    }
    let mut buf = BytesMut::new();
    frontend::ssl_request(&mut buf);
    io.write_all(&buf).await?;
    io.flush().await?;
    // Exactly one byte: anything the server sent after it belongs to the TLS handshake.
    let answer = io.read_u8().await?;
    match answer {
        b'S' => {}
        b'N' if plan.mode == SslMode::Prefer => {
            tracing::debug!(target = %target, "server declined TLS; sslmode=prefer goes on in plain text");
            return Ok(io);
        }
        b'N' => {
            return Err(ReplicationError::Tls(format!(
                "the server at {target} does not accept TLS connections ({}): turn on ssl in its \
                 postgresql.conf, or use sslmode=prefer",
                plan.describe()
            )));
        }
        other => {
            return Err(ReplicationError::Protocol(format!(
                "unexpected answer {:?} to SSLRequest",
                char::from(other)
            )));
        }
    }
    let server_name = tls::server_name(&name).ok_or_else(|| {
        ReplicationError::Tls(format!(
            "{name:?} is not a host name or IP address usable for TLS"
        ))
    })?;
    match plan.connector().connect(server_name, io).await {
        Ok(stream) => Ok(Box::new(stream)),
        Err(e) => {
            let (reason, hint) =
                tls::explain_handshake_failure(&e, plan, &name).unwrap_or_else(|| {
                    (
                        format!("TLS handshake failed ({}): {e}", plan.describe()),
                        String::new(),
                    )
                });
            let hint = if hint.is_empty() {
                String::new()
            } else {
                format!(" (hint: {hint})")
            };
            Err(ReplicationError::Tls(format!("{target}: {reason}{hint}")))
        }
    }
}

pub(crate) async fn connect(
    config: &tokio_postgres::Config,
    application_name: &str,
) -> Result<Session, ReplicationError> {
    let prepared =
        crate::pg::prepare_session(config).map_err(|e| ReplicationError::Tls(e.to_string()))?;
    let config = &prepared.config;
    let password_source = &prepared.password_source;
    let user = match config.get_user() {
        Some(u) => u.to_owned(),
        None => std::env::var("USER").map_err(|_| {
            ReplicationError::Auth(
                "no user name: put user=... (or postgresql://USER@host/db) in the connection string"
                    .into(),
            )
        })?,
    };
    let dbname = config.get_dbname().unwrap_or(&user).to_owned();
    let options = match config.get_options() {
        Some(extra) if !extra.trim().is_empty() => format!("{SESSION_OPTIONS} {extra}"),
        _ => SESSION_OPTIONS.to_owned(),
    };

    let mut failures = Vec::new();
    for target in targets(config) {
        match open(&target, config.get_connect_timeout().copied()).await {
            Ok(io) => {
                let io = negotiate_tls(io, &target, &prepared.tls).await?;
                tracing::debug!(target = %target, "connected, starting up replication session");
                let conn = Framed::new(io, FrameCodec);
                return startup(
                    conn,
                    &user,
                    &dbname,
                    application_name,
                    &options,
                    config.get_password(),
                )
                .await
                .map_err(|e| with_password_source(e, password_source));
            }
            Err(e) => {
                tracing::debug!(target = %target, error = %e, "could not connect");
                failures.push((target, e));
            }
        }
    }
    let kind = failures
        .last()
        .map(|(_, e)| e.kind())
        .unwrap_or(io::ErrorKind::NotFound);
    let detail = failures
        .iter()
        .map(|(t, e)| format!("{t}: {e}"))
        .collect::<Vec<_>>()
        .join("; ");
    Err(ReplicationError::Io(io::Error::new(kind, detail)))
}

pub(crate) async fn startup(
    mut conn: Conn,
    user: &str,
    dbname: &str,
    application_name: &str,
    options: &str,
    password: Option<&[u8]>,
) -> Result<Session, ReplicationError> {
    let mut buf = BytesMut::new();
    frontend::startup_message(
        [
            ("user", user),
            ("database", dbname),
            ("replication", "database"),
            ("application_name", application_name),
            ("options", options),
        ],
        &mut buf,
    )
    .map_err(|e| ReplicationError::Protocol(format!("startup parameters: {e}")))?;
    send(&mut conn, buf).await?;

    authenticate(&mut conn, user, password).await?;

    let mut server_version = String::new();
    let mut backend_pid = 0;
    loop {
        let frame = next_frame(&mut conn).await?;
        match frame.tag {
            tag::PARAMETER_STATUS => {
                let (name, value) = parse_parameter_status(&frame.body)?;
                if name == "server_version" {
                    server_version = value;
                }
            }
            tag::BACKEND_KEY_DATA => backend_pid = parse_backend_key_data(&frame.body)?.pid,
            tag::NOTICE_RESPONSE | tag::NEGOTIATE_PROTOCOL_VERSION => {}
            tag::ERROR_RESPONSE => return Err(server_error(&frame.body)),
            tag::READY_FOR_QUERY => break,
            other => {
                return Err(ReplicationError::Protocol(format!(
                    "unexpected message {:?} during startup",
                    char::from(other)
                )));
            }
        }
    }
    Ok(Session {
        conn,
        server_version,
        backend_pid,
    })
}

/// A rejected password says where it came from (never what it was).
fn with_password_source(e: ReplicationError, source: &PasswordSource) -> ReplicationError {
    match e {
        ReplicationError::Server {
            severity,
            code,
            message,
            detail,
            hint,
        } if code == "28P01" => ReplicationError::Server {
            severity,
            code,
            message: format!("{message} ({source})"),
            detail,
            hint,
        },
        other => other,
    }
}

fn password_needed(user: &str, method: &str) -> ReplicationError {
    ReplicationError::Auth(format!(
        "the server asks for a password ({method}) for user {user:?} but none was given: \
         put it in the connection string (password=... or postgresql://user:PASSWORD@host/db), \
         in PGPASSWORD, or in the password file (PGPASSFILE, ~/.pgpass)"
    ))
}

async fn next_auth(conn: &mut Conn) -> Result<Authentication, ReplicationError> {
    let frame = next_frame(conn).await?;
    match frame.tag {
        tag::AUTHENTICATION => Ok(parse_authentication(&frame.body)?),
        tag::ERROR_RESPONSE => Err(server_error(&frame.body)),
        tag::NEGOTIATE_PROTOCOL_VERSION => Box::pin(next_auth(conn)).await,
        other => Err(ReplicationError::Protocol(format!(
            "expected an authentication request, got message {:?}",
            char::from(other)
        ))),
    }
}

/// Runs the authentication exchange until AuthenticationOk.
async fn authenticate(
    conn: &mut Conn,
    user: &str,
    password: Option<&[u8]>,
) -> Result<(), ReplicationError> {
    let encode_err = |e: io::Error| ReplicationError::Protocol(format!("encoding auth reply: {e}"));
    match next_auth(conn).await? {
        Authentication::Ok => return Ok(()),
        Authentication::CleartextPassword => {
            let password = password.ok_or_else(|| password_needed(user, "cleartext"))?;
            let mut buf = BytesMut::new();
            frontend::password_message(password, &mut buf).map_err(encode_err)?;
            send(conn, buf).await?;
        }
        Authentication::Md5Password { salt } => {
            let password = password.ok_or_else(|| password_needed(user, "md5"))?;
            let hashed = md5_hash(user.as_bytes(), password, salt);
            let mut buf = BytesMut::new();
            frontend::password_message(hashed.as_bytes(), &mut buf).map_err(encode_err)?;
            send(conn, buf).await?;
        }
        Authentication::Sasl { mechanisms } => {
            if !mechanisms.iter().any(|m| m == SCRAM_SHA_256) {
                return Err(ReplicationError::Auth(format!(
                    "the server offers SASL mechanisms {mechanisms:?}; only {SCRAM_SHA_256} \
                     (without channel binding) is supported"
                )));
            }
            let password = password.ok_or_else(|| password_needed(user, SCRAM_SHA_256))?;
            scram(conn, password).await?;
        }
        Authentication::SaslContinue(_) | Authentication::SaslFinal(_) => {
            return Err(ReplicationError::Protocol(
                "SASL message before SASL was started".into(),
            ));
        }
        Authentication::Other(code) => {
            return Err(ReplicationError::Auth(format!(
                "the server asks for authentication method {code} (Kerberos/GSSAPI/SSPI?), which \
                 is not supported: use trust, password, md5 or scram-sha-256 in pg_hba.conf"
            )));
        }
    }
    match next_auth(conn).await? {
        Authentication::Ok => Ok(()),
        other => Err(ReplicationError::Protocol(format!(
            "expected AuthenticationOk after the password, got {}",
            auth_name(&other)
        ))),
    }
}

async fn scram(conn: &mut Conn, password: &[u8]) -> Result<(), ReplicationError> {
    // No channel binding, with or without TLS: the client says "n" (does not support it), which
    // the server accepts also when it offers SCRAM-SHA-256-PLUS.
    let mut scram = ScramSha256::new(password, ChannelBinding::unsupported());
    let mut buf = BytesMut::new();
    frontend::sasl_initial_response(SCRAM_SHA_256, scram.message(), &mut buf)
        .map_err(|e| ReplicationError::Protocol(format!("encoding SASL message: {e}")))?;
    send(conn, buf).await?;

    let server_first = match next_auth(conn).await? {
        Authentication::SaslContinue(data) => data,
        other => {
            return Err(ReplicationError::Protocol(format!(
                "expected SASL continue, got {}",
                auth_name(&other)
            )));
        }
    };
    scram
        .update(&server_first)
        .map_err(|e| ReplicationError::Auth(format!("SCRAM exchange failed: {e}")))?;
    let mut buf = BytesMut::new();
    frontend::sasl_response(scram.message(), &mut buf)
        .map_err(|e| ReplicationError::Protocol(format!("encoding SASL message: {e}")))?;
    send(conn, buf).await?;

    let server_final = match next_auth(conn).await? {
        Authentication::SaslFinal(data) => data,
        other => {
            return Err(ReplicationError::Protocol(format!(
                "expected SASL final, got {}",
                auth_name(&other)
            )));
        }
    };
    scram.finish(&server_final).map_err(|e| {
        ReplicationError::Auth(format!(
            "the server's SCRAM signature did not verify ({e}): it may not know the password"
        ))
    })
}

fn auth_name(a: &Authentication) -> String {
    match a {
        Authentication::Ok => "AuthenticationOk".into(),
        Authentication::CleartextPassword => "cleartext password request".into(),
        Authentication::Md5Password { .. } => "md5 password request".into(),
        Authentication::Sasl { .. } => "SASL request".into(),
        Authentication::SaslContinue(_) => "SASL continue".into(),
        Authentication::SaslFinal(_) => "SASL final".into(),
        Authentication::Other(code) => format!("authentication request {code}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(s: &str) -> tokio_postgres::Config {
        s.parse().unwrap()
    }

    #[test]
    fn hosts_pair_with_one_shared_port_or_one_port_each() {
        assert_eq!(
            targets(&config("host=a,b port=6000 user=u")),
            vec![
                Target::Tcp {
                    host: "a".into(),
                    port: 6000
                },
                Target::Tcp {
                    host: "b".into(),
                    port: 6000
                },
            ]
        );
        assert_eq!(
            targets(&config("postgresql://u@a:1,b:2/db")),
            vec![
                Target::Tcp {
                    host: "a".into(),
                    port: 1
                },
                Target::Tcp {
                    host: "b".into(),
                    port: 2
                },
            ]
        );
        assert_eq!(
            targets(&config("host=a user=u")),
            vec![Target::Tcp {
                host: "a".into(),
                port: 5432
            }]
        );
    }

    #[test]
    fn unix_socket_directories_become_socket_paths() {
        assert_eq!(
            targets(&config("host=/tmp/replpg port=55432 user=u")),
            vec![Target::Unix {
                socket: PathBuf::from("/tmp/replpg/.s.PGSQL.55432")
            }]
        );
    }

    #[test]
    fn hostaddr_is_used_instead_of_the_host_name() {
        assert_eq!(
            targets(&config("host=db.example hostaddr=127.0.0.1 port=7 user=u")),
            vec![Target::Addr {
                addr: "127.0.0.1".parse().unwrap(),
                port: 7,
                name: Some("db.example".into()),
            }]
        );
    }

    #[test]
    fn no_host_tries_local_sockets_then_localhost() {
        let t = targets(&config("user=u"));
        assert_eq!(t.len(), 3);
        assert_eq!(
            t[2],
            Target::Tcp {
                host: "localhost".into(),
                port: 5432
            }
        );
    }

    #[test]
    fn tls_names_come_from_the_host_even_when_hostaddr_is_used() {
        let t = targets(&config("host=db.example hostaddr=127.0.0.1 user=u"));
        assert_eq!(tls_name(&t[0]).as_deref(), Some("db.example"));
        let t = targets(&config("hostaddr=127.0.0.1 user=u"));
        assert_eq!(tls_name(&t[0]).as_deref(), Some("127.0.0.1"));
        let t = targets(&config("host=/tmp user=u"));
        assert_eq!(tls_name(&t[0]), None);
    }

    #[tokio::test]
    async fn sslmode_verify_full_without_a_root_file_is_refused_before_any_io() {
        let conninfo = "host=127.0.0.1 port=1 user=u sslmode=verify-full \
                        sslrootcert=/nonexistent/pgrepart-ca.crt";
        let parsed = crate::pg::parse_conninfo("--source", conninfo).unwrap();
        let err = connect(&parsed, "t").await.err().unwrap().to_string();
        assert!(err.contains("/nonexistent/pgrepart-ca.crt"), "{err}");
    }

    #[test]
    fn missing_password_message_says_where_to_put_it() {
        let msg = password_needed("alice", "md5").to_string();
        assert!(msg.contains("connection string"), "{msg}");
    }
}
