//! The client against a scripted fake server over an in-memory pipe: auth flows, error draining,
//! CopyBoth, cancel safety of `recv`.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::authentication::md5_hash;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_util::codec::Framed;

use super::*;

/// The server end of the pipe.
struct Server(DuplexStream);

impl Server {
    async fn read_startup(&mut self) -> Vec<(String, String)> {
        let len = self.0.read_i32().await.unwrap() as usize;
        let mut body = vec![0; len - 4];
        self.0.read_exact(&mut body).await.unwrap();
        assert_eq!(&body[..4], &[0, 3, 0, 0], "protocol 3.0");
        let fields: Vec<String> = body[4..]
            .split(|b| *b == 0)
            .map(|s| String::from_utf8(s.to_vec()).unwrap())
            .collect();
        fields
            .chunks(2)
            .filter(|kv| kv.len() == 2 && !kv[0].is_empty())
            .map(|kv| (kv[0].clone(), kv[1].clone()))
            .collect()
    }

    async fn read_msg(&mut self) -> (u8, Bytes) {
        let tag = self.0.read_u8().await.unwrap();
        let len = self.0.read_i32().await.unwrap() as usize;
        let mut body = vec![0; len - 4];
        self.0.read_exact(&mut body).await.unwrap();
        (tag, Bytes::from(body))
    }

    async fn write(&mut self, tag: u8, body: &[u8]) {
        let mut b = BytesMut::new();
        b.put_u8(tag);
        b.put_i32(body.len() as i32 + 4);
        b.put_slice(body);
        self.0.write_all(&b).await.unwrap();
    }

    async fn ready(&mut self) {
        self.write(b'Z', b"I").await;
    }

    async fn auth_ok_and_ready(&mut self) {
        self.write(b'R', &[0, 0, 0, 0]).await;
        self.write(b'S', b"server_version\x0015.4 (Debian 15.4-1.pgdg120+1)\0")
            .await;
        self.write(b'K', &[0, 0, 0x30, 0x39, 9, 9, 9, 9]).await;
        self.ready().await;
    }

    async fn error(&mut self, code: &str, message: &str) {
        let body = format!("SERROR\0VERROR\0C{code}\0M{message}\0\0");
        self.write(b'E', body.as_bytes()).await;
    }

    async fn copy_data(&mut self, body: &[u8]) {
        self.write(b'd', body).await;
    }
}

fn pipe() -> (Conn, Server) {
    let (client, server) = tokio::io::duplex(1 << 16);
    let io: Box<dyn connect::Io> = Box::new(client);
    (Framed::new(io, FrameCodec), Server(server))
}

async fn client_with(
    password: Option<&'static [u8]>,
    script: impl AsyncFnOnce(&mut Server),
) -> (Result<ReplicationClient, ReplicationError>, Server) {
    let (conn, mut server) = pipe();
    let (session, ()) = tokio::join!(
        connect::startup(
            conn,
            "alice",
            "shop",
            "pgrepart-test",
            connect::SESSION_OPTIONS,
            password,
        ),
        script(&mut server)
    );
    let client = session.map(|s| ReplicationClient {
        conn: s.conn,
        server_version: s.server_version,
        backend_pid: s.backend_pid,
    });
    (client, server)
}

async fn trusted_client() -> (ReplicationClient, Server) {
    let (client, server) = client_with(None, async |s: &mut Server| {
        s.read_startup().await;
        s.auth_ok_and_ready().await;
    })
    .await;
    (client.unwrap(), server)
}

#[tokio::test]
async fn startup_sends_replication_parameters_and_reads_version_and_pid() {
    let (client, _server) = client_with(None, async |s: &mut Server| {
        let params = s.read_startup().await;
        let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(get("user").as_deref(), Some("alice"));
        assert_eq!(get("database").as_deref(), Some("shop"));
        assert_eq!(get("replication").as_deref(), Some("database"));
        assert_eq!(get("application_name").as_deref(), Some("pgrepart-test"));
        assert_eq!(
            get("options").as_deref(),
            Some("-c datestyle=ISO -c intervalstyle=postgres -c extra_float_digits=3")
        );
        s.auth_ok_and_ready().await;
    })
    .await;
    let client = client.unwrap();
    assert_eq!(client.backend_pid(), 12345);
    assert_eq!(client.server_version_num(), 150004);
}

#[tokio::test]
async fn md5_auth_sends_the_salted_hash() {
    let (client, _server) = client_with(Some(b"s3cret"), async |s: &mut Server| {
        s.read_startup().await;
        s.write(b'R', &[0, 0, 0, 5, 1, 2, 3, 4]).await;
        let (tag, body) = s.read_msg().await;
        assert_eq!(tag, b'p');
        let want = md5_hash(b"alice", b"s3cret", [1, 2, 3, 4]);
        assert_eq!(&body[..body.len() - 1], want.as_bytes());
        s.auth_ok_and_ready().await;
    })
    .await;
    client.unwrap();
}

#[tokio::test]
async fn cleartext_auth_sends_the_password() {
    let (client, _server) = client_with(Some(b"pw"), async |s: &mut Server| {
        s.read_startup().await;
        s.write(b'R', &[0, 0, 0, 3]).await;
        let (tag, body) = s.read_msg().await;
        assert_eq!((tag, &body[..]), (b'p', &b"pw\0"[..]));
        s.auth_ok_and_ready().await;
    })
    .await;
    client.unwrap();
}

#[tokio::test]
async fn missing_password_says_to_put_it_in_the_connection_string() {
    let (client, _server) = client_with(None, async |s: &mut Server| {
        s.read_startup().await;
        s.write(b'R', &[0, 0, 0, 5, 1, 2, 3, 4]).await;
    })
    .await;
    let err = client.err().unwrap();
    assert!(matches!(err, ReplicationError::Auth(_)), "{err:?}");
    assert!(err.to_string().contains("connection string"), "{err}");
}

#[tokio::test]
async fn wrong_password_is_a_server_error_without_the_password() {
    let (client, _server) = client_with(Some(b"hunter2"), async |s: &mut Server| {
        s.read_startup().await;
        s.write(b'R', &[0, 0, 0, 3]).await;
        s.read_msg().await;
        s.error("28P01", "password authentication failed for user \"alice\"")
            .await;
    })
    .await;
    let err = client.err().unwrap();
    assert_eq!(err.sqlstate(), Some("28P01"));
    assert!(!format!("{err} {err:?}").contains("hunter2"));
}

#[tokio::test]
async fn unsupported_sasl_mechanism_is_an_auth_error() {
    let (client, _server) = client_with(Some(b"pw"), async |s: &mut Server| {
        s.read_startup().await;
        s.write(b'R', b"\0\0\0\x0aSCRAM-SHA-256-PLUS\0\0").await;
    })
    .await;
    assert!(matches!(client.err().unwrap(), ReplicationError::Auth(_)));
}

#[tokio::test]
async fn scram_starts_with_a_client_first_message_without_channel_binding() {
    let (client, _server) = client_with(Some(b"pw"), async |s: &mut Server| {
        s.read_startup().await;
        s.write(b'R', b"\0\0\0\x0aSCRAM-SHA-256\0\0").await;
        let (tag, body) = s.read_msg().await;
        assert_eq!(tag, b'p');
        let mech_end = body.iter().position(|b| *b == 0).unwrap();
        assert_eq!(&body[..mech_end], b"SCRAM-SHA-256");
        let first = &body[mech_end + 5..];
        assert!(first.starts_with(b"n,,n=,r="), "{first:?}");
        s.error("28P01", "stop here").await;
    })
    .await;
    assert_eq!(client.err().unwrap().sqlstate(), Some("28P01"));
}

#[tokio::test]
async fn simple_query_error_leaves_the_connection_usable() {
    let (mut client, mut server) = trusted_client().await;
    let script = tokio::spawn(async move {
        let (tag, body) = server.read_msg().await;
        assert_eq!((tag, &body[..]), (b'Q', &b"SELEC 1\0"[..]));
        server.error("42601", "syntax error").await;
        server.ready().await;
        let (tag, _) = server.read_msg().await;
        assert_eq!(tag, b'Q');
        let mut rd = BytesMut::new();
        rd.put_i16(2);
        for name in ["a", "b"] {
            rd.put_slice(name.as_bytes());
            rd.put_u8(0);
            rd.put_bytes(0, 18);
        }
        server.write(b'T', &rd).await;
        server
            .write(b'D', &[0, 2, 0, 0, 0, 1, b'1', 0xff, 0xff, 0xff, 0xff])
            .await;
        server.write(b'C', b"SELECT 1\0").await;
        server.ready().await;
        server
    });
    let err = client.simple_query("SELEC 1").await.err().unwrap();
    assert_eq!(err.sqlstate(), Some("42601"));
    let result = client.simple_query("SELECT 1 a, NULL b").await.unwrap();
    assert_eq!(result.columns, vec!["a", "b"]);
    assert_eq!(result.rows, vec![vec![Some("1".to_string()), None]]);
    script.await.unwrap();
}

#[tokio::test]
async fn create_slot_reads_the_exported_snapshot() {
    let (mut client, mut server) = trusted_client().await;
    let script = tokio::spawn(async move {
        let (_, body) = server.read_msg().await;
        assert_eq!(
            &body[..],
            b"CREATE_REPLICATION_SLOT \"s\"\"1\" LOGICAL pgoutput EXPORT_SNAPSHOT\0"
        );
        let mut rd = BytesMut::new();
        let cols = [
            "slot_name",
            "consistent_point",
            "snapshot_name",
            "output_plugin",
        ];
        rd.put_i16(cols.len() as i16);
        for name in cols {
            rd.put_slice(name.as_bytes());
            rd.put_u8(0);
            rd.put_bytes(0, 18);
        }
        server.write(b'T', &rd).await;
        let mut dr = BytesMut::new();
        dr.put_i16(4);
        for v in ["s\"1", "0/1A2B3C8", "00000003-00000002-1", "pgoutput"] {
            dr.put_i32(v.len() as i32);
            dr.put_slice(v.as_bytes());
        }
        server.write(b'D', &dr).await;
        server.write(b'C', b"CREATE_REPLICATION_SLOT\0").await;
        server.ready().await;
        server
    });
    let slot = client.create_logical_slot_exported("s\"1").await.unwrap();
    assert_eq!(slot.slot_name, "s\"1");
    assert_eq!(slot.consistent_point, Lsn(0x1A2B3C8));
    assert_eq!(slot.snapshot_name, "00000003-00000002-1");
    script.await.unwrap();
}

fn keepalive(wal_end: u64, reply: bool) -> Vec<u8> {
    let mut b = vec![b'k'];
    b.extend_from_slice(&wal_end.to_be_bytes());
    b.extend_from_slice(&7i64.to_be_bytes());
    b.push(u8::from(reply));
    b
}

async fn streaming() -> (ReplicationStream, Server) {
    let (client, mut server) = trusted_client().await;
    let script = tokio::spawn(async move {
        let (tag, body) = server.read_msg().await;
        assert_eq!(tag, b'Q');
        assert_eq!(
            &body[..],
            &b"START_REPLICATION SLOT \"s\" LOGICAL 0/10 (proto_version '1', publication_names '\"p\"')\0"[..]
        );
        server.write(b'W', &[0, 0, 0]).await;
        server
    });
    let stream = client
        .start_logical_replication(
            "s",
            Lsn(0x10),
            &[("proto_version", "1"), ("publication_names", "\"p\"")],
        )
        .await
        .unwrap();
    (stream, script.await.unwrap())
}

#[tokio::test]
async fn start_replication_error_is_a_server_error() {
    let (client, mut server) = trusted_client().await;
    let script = tokio::spawn(async move {
        server.read_msg().await;
        server
            .error("42704", "replication slot \"s\" does not exist")
            .await;
        server.ready().await;
        server
    });
    let err = client
        .start_logical_replication("s", Lsn::ZERO, &[])
        .await
        .err()
        .unwrap();
    assert_eq!(err.sqlstate(), Some("42704"));
    script.await.unwrap();
}

#[tokio::test]
async fn stream_yields_copydata_sends_status_and_ends_on_copy_done() {
    let (mut stream, mut server) = streaming().await;
    server
        .write(b'N', b"SNOTICE\0VNOTICE\0C00000\0Mhello\0\0")
        .await;
    let mut w = vec![b'w'];
    w.extend_from_slice(&[0; 24]);
    w.extend_from_slice(b"B-payload");
    server.copy_data(&w).await;
    server.copy_data(&keepalive(0x55, true)).await;

    match stream.recv().await.unwrap().unwrap() {
        ServerCopyData::XLogData {
            data, wal_start, ..
        } => {
            assert_eq!(&data[..], b"B-payload");
            assert_eq!(wal_start, Lsn::ZERO);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        stream.recv().await.unwrap(),
        Some(ServerCopyData::Keepalive {
            wal_end: Lsn(0x55),
            send_time: 7,
            reply_requested: true
        })
    );
    stream
        .send_status(Lsn(0x50), Lsn(0x40), Lsn(0x40), false)
        .await
        .unwrap();
    let (tag, body) = server.read_msg().await;
    assert_eq!(tag, b'd');
    assert_eq!(body.len(), 34);
    let mut b = body.clone();
    assert_eq!(b.get_u8(), b'r');
    assert_eq!((b.get_u64(), b.get_u64(), b.get_u64()), (0x50, 0x40, 0x40));
    b.get_i64();
    assert_eq!(b.get_u8(), 0);

    server.write(b'c', b"").await;
    server.write(b'C', b"START_REPLICATION\0").await;
    server.ready().await;
    assert_eq!(stream.recv().await.unwrap(), None);
    let (tag, _) = server.read_msg().await;
    assert_eq!(tag, b'c', "client answers CopyDone");
    assert_eq!(stream.recv().await.unwrap(), None);
    assert_eq!(stream.recv().await.unwrap(), None);
}

#[tokio::test]
async fn recv_cancelled_mid_frame_loses_nothing() {
    let (mut stream, mut server) = streaming().await;
    let frame = {
        let body = keepalive(0x99, false);
        let mut b = vec![b'd'];
        b.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        b.extend_from_slice(&body);
        b
    };
    server.0.write_all(&frame[..7]).await.unwrap();
    let timed_out = tokio::select! {
        _ = stream.recv() => false,
        _ = tokio::time::sleep(Duration::from_millis(50)) => true,
    };
    assert!(timed_out, "half a frame must not yield a message");
    server.0.write_all(&frame[7..]).await.unwrap();
    assert_eq!(
        stream.recv().await.unwrap(),
        Some(ServerCopyData::Keepalive {
            wal_end: Lsn(0x99),
            send_time: 7,
            reply_requested: false
        })
    );
}

#[tokio::test]
async fn stream_error_response_is_a_server_error() {
    let (mut stream, mut server) = streaming().await;
    server
        .error("55000", "replication slot is invalidated")
        .await;
    let err = stream.recv().await.err().unwrap();
    assert_eq!(err.sqlstate(), Some("55000"));
}

#[tokio::test]
async fn closed_connection_ends_the_stream() {
    let (mut stream, server) = streaming().await;
    drop(server);
    assert_eq!(stream.recv().await.unwrap(), None);
}

#[tokio::test]
async fn finish_ends_copy_and_gives_back_a_usable_client() {
    let (stream, mut server) = streaming().await;
    let script = tokio::spawn(async move {
        // Data in flight when the client ends the stream is skipped.
        server.copy_data(&keepalive(1, false)).await;
        let (tag, _) = server.read_msg().await;
        assert_eq!(tag, b'c');
        server.write(b'c', b"").await;
        server.write(b'C', b"START_REPLICATION\0").await;
        server.ready().await;
        let (tag, _) = server.read_msg().await;
        assert_eq!(tag, b'Q');
        server.write(b'C', b"DROP_REPLICATION_SLOT\0").await;
        server.ready().await;
        server
    });
    let mut client = stream.finish().await.unwrap();
    let r = client
        .simple_query("DROP_REPLICATION_SLOT \"s\"")
        .await
        .unwrap();
    assert!(r.rows.is_empty());
    script.await.unwrap();
}
