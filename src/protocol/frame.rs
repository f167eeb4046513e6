//! Backend message framing (tag byte + i32 length), as a cancel-safe tokio-util Decoder, and the
//! small parsers for the backend messages the replication connection needs.
//!
//! ```text
//! +-----+----------------+------------------+
//! | tag | i32 len (BE)   | body (len - 4)   |     len counts itself, not the tag
//! +-----+----------------+------------------+
//! 'd' 00 00 00 0a  77 ...                      CopyData with a 6-byte body
//! ```
//!
//! The decoder only splits the byte stream; it keeps partial frames in the `FramedRead` buffer,
//! so a `recv` future dropped inside `tokio::select!` loses nothing. postgres-protocol's backend
//! parser has no CopyBothResponse ('W'), which is why frames are parsed here.
//!
//! As an `Encoder`, `FrameCodec` passes already-encoded frontend messages (built with
//! `postgres_protocol::message::frontend`) through unchanged.

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::DecodeError;
use super::reader::Reader;

/// Largest frame accepted: anything bigger is a corrupt stream, not a real message.
pub const MAX_FRAME_LEN: usize = 1 << 30;

/// Most the decoder reserves ahead of the bytes it has seen.
const RESERVE_STEP: usize = 64 * 1024;

/// Backend message tags used by the replication connection.
pub mod tag {
    pub const AUTHENTICATION: u8 = b'R';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const COMMAND_COMPLETE: u8 = b'C';
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    pub const COPY_DATA: u8 = b'd';
    pub const COPY_DONE: u8 = b'c';
    pub const COPY_IN_RESPONSE: u8 = b'G';
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    pub const DATA_ROW: u8 = b'D';
    pub const EMPTY_QUERY_RESPONSE: u8 = b'I';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const ROW_DESCRIPTION: u8 = b'T';
}

/// One backend message: its tag and its body (without tag and length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub tag: u8,
    pub body: Bytes,
}

/// Why the byte stream could not be split into frames.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error(
        "backend message {:?} declares length {len}: the stream is corrupt or not PostgreSQL",
        char::from(*tag)
    )]
    BadLength { tag: u8, len: i32 },
}

/// Splits backend bytes into [`Frame`]s; passes frontend bytes through on encode.
#[derive(Debug, Default, Clone, Copy)]
pub struct FrameCodec;

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if src.len() < 5 {
            src.reserve(5 - src.len());
            return Ok(None);
        }
        let tag = src[0];
        let len = i32::from_be_bytes([src[1], src[2], src[3], src[4]]);
        let body_len = match usize::try_from(len) {
            Ok(l) if (4..=MAX_FRAME_LEN).contains(&l) => l - 4,
            _ => return Err(FrameError::BadLength { tag, len }),
        };
        if src.len() < 5 + body_len {
            // Grow towards the frame in steps: a declared length alone never allocates much.
            src.reserve((5 + body_len - src.len()).min(RESERVE_STEP));
            return Ok(None);
        }
        src.advance(5);
        let body = src.split_to(body_len).freeze();
        Ok(Some(Frame { tag, body }))
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> Result<(), FrameError> {
        dst.extend_from_slice(&item);
        Ok(())
    }
}

/// The fields of an ErrorResponse or NoticeResponse that we report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFields {
    /// 'V' (never localized), else 'S'.
    pub severity: String,
    /// 'C': the SQLSTATE.
    pub code: String,
    /// 'M'
    pub message: String,
    /// 'D'
    pub detail: Option<String>,
    /// 'H'
    pub hint: Option<String>,
}

/// Parses ErrorResponse / NoticeResponse: (u8 field type, cstring value)* terminated by a 0 byte.
/// Invalid UTF-8 in a value is replaced rather than rejected: an error must still be reportable.
pub fn parse_error_fields(body: &Bytes) -> Result<ErrorFields, DecodeError> {
    let mut r = Reader::new(body);
    let mut out = ErrorFields::default();
    let mut localized_severity = None;
    loop {
        let field = r.u8("error field type")?;
        if field == 0 {
            break;
        }
        let value = lossy_cstr(&mut r, "error field value")?;
        match field {
            b'V' => out.severity = value,
            b'S' => localized_severity = Some(value),
            b'C' => out.code = value,
            b'M' => out.message = value,
            b'D' => out.detail = Some(value),
            b'H' => out.hint = Some(value),
            _ => {}
        }
    }
    if out.severity.is_empty() {
        out.severity = localized_severity.unwrap_or_default();
    }
    Ok(out)
}

fn lossy_cstr(r: &mut Reader<'_>, what: &'static str) -> Result<String, DecodeError> {
    let rest = r.rest_view();
    let Some(nul) = rest.iter().position(|&b| b == 0) else {
        return Err(DecodeError::Truncated { what, needed: 1 });
    };
    let raw = r.bytes(nul + 1, what)?;
    Ok(String::from_utf8_lossy(&raw[..nul]).into_owned())
}

/// RowDescription: the column names.
pub fn parse_row_description(body: &Bytes) -> Result<Vec<String>, DecodeError> {
    let mut r = Reader::new(body);
    let n = r.i16("RowDescription field count")?;
    // name NUL + table oid + attnum + type oid + typlen + typmod + format
    let n = r.count(
        i64::from(n),
        1 + 4 + 2 + 4 + 2 + 4 + 2,
        "RowDescription fields",
    )?;
    let mut names = Vec::with_capacity(n);
    for _ in 0..n {
        names.push(r.cstr("RowDescription field name")?);
        r.bytes(4 + 2 + 4 + 2 + 4 + 2, "RowDescription field attributes")?;
    }
    r.finish("RowDescription")?;
    Ok(names)
}

/// DataRow: the column values, `None` for NULL.
pub fn parse_data_row(body: &Bytes) -> Result<Vec<Option<Bytes>>, DecodeError> {
    let mut r = Reader::new(body);
    let n = r.i16("DataRow column count")?;
    let n = r.count(i64::from(n), 4, "DataRow columns")?;
    let mut values = Vec::with_capacity(n);
    for _ in 0..n {
        let len = r.i32("DataRow value length")?;
        values.push(match len {
            -1 => None,
            len => {
                let len = usize::try_from(len).map_err(|_| DecodeError::Invalid {
                    what: "DataRow value length",
                    detail: format!("negative length {len}"),
                })?;
                Some(r.bytes(len, "DataRow value")?)
            }
        });
    }
    r.finish("DataRow")?;
    Ok(values)
}

/// An Authentication ('R') request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authentication {
    /// 0
    Ok,
    /// 3
    CleartextPassword,
    /// 5
    Md5Password { salt: [u8; 4] },
    /// 10: the mechanisms the server offers.
    Sasl { mechanisms: Vec<String> },
    /// 11
    SaslContinue(Bytes),
    /// 12
    SaslFinal(Bytes),
    /// Kerberos, GSSAPI, SSPI, ...: not supported by this client.
    Other(i32),
}

pub fn parse_authentication(body: &Bytes) -> Result<Authentication, DecodeError> {
    let mut r = Reader::new(body);
    let auth = match r.i32("Authentication request code")? {
        0 => Authentication::Ok,
        3 => Authentication::CleartextPassword,
        5 => {
            let salt = r.bytes(4, "md5 salt")?;
            Authentication::Md5Password {
                salt: [salt[0], salt[1], salt[2], salt[3]],
            }
        }
        10 => {
            let mut mechanisms = Vec::new();
            loop {
                let m = r.cstr("SASL mechanism")?;
                if m.is_empty() {
                    break;
                }
                mechanisms.push(m);
            }
            Authentication::Sasl { mechanisms }
        }
        11 => Authentication::SaslContinue(r.rest()),
        12 => Authentication::SaslFinal(r.rest()),
        other => return Ok(Authentication::Other(other)),
    };
    r.finish("Authentication")?;
    Ok(auth)
}

/// ParameterStatus: (name, value).
pub fn parse_parameter_status(body: &Bytes) -> Result<(String, String), DecodeError> {
    let mut r = Reader::new(body);
    let name = r.cstr("ParameterStatus name")?;
    let value = r.cstr("ParameterStatus value")?;
    r.finish("ParameterStatus")?;
    Ok((name, value))
}

/// BackendKeyData: the backend's process id and its cancel key (4 bytes in protocol 3.0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendKeyData {
    pub pid: i32,
    pub secret_key: Bytes,
}

pub fn parse_backend_key_data(body: &Bytes) -> Result<BackendKeyData, DecodeError> {
    let mut r = Reader::new(body);
    let pid = r.i32("BackendKeyData pid")?;
    let secret_key = r.rest();
    if secret_key.len() < 4 {
        return Err(DecodeError::Truncated {
            what: "BackendKeyData secret key",
            needed: 4 - secret_key.len(),
        });
    }
    Ok(BackendKeyData { pid, secret_key })
}

/// CopyInResponse / CopyOutResponse / CopyBothResponse ('W').
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyResponse {
    /// 0 text, 1 binary.
    pub format: u8,
    pub column_formats: Vec<i16>,
}

pub fn parse_copy_response(body: &Bytes) -> Result<CopyResponse, DecodeError> {
    let mut r = Reader::new(body);
    let format = r.u8("CopyResponse format")?;
    let n = r.i16("CopyResponse column count")?;
    let n = r.count(i64::from(n), 2, "CopyResponse column formats")?;
    let mut column_formats = Vec::with_capacity(n);
    for _ in 0..n {
        column_formats.push(r.i16("CopyResponse column format")?);
    }
    r.finish("CopyResponse")?;
    Ok(CopyResponse {
        format,
        column_formats,
    })
}

/// CommandComplete: the command tag, e.g. "SELECT 1" or "START_REPLICATION".
pub fn parse_command_complete(body: &Bytes) -> Result<String, DecodeError> {
    let mut r = Reader::new(body);
    let tag = r.cstr("CommandComplete tag")?;
    r.finish("CommandComplete")?;
    Ok(tag)
}

/// ReadyForQuery: the transaction status byte ('I' idle, 'T' in a transaction, 'E' failed).
pub fn parse_ready_for_query(body: &Bytes) -> Result<u8, DecodeError> {
    let mut r = Reader::new(body);
    let status = r.u8("ReadyForQuery status")?;
    r.finish("ReadyForQuery")?;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use bytes::BufMut;

    use super::*;

    fn frame_bytes(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn decoder_splits_frames_and_waits_for_partial_ones() {
        let mut stream = frame_bytes(b'Z', b"I");
        stream.extend(frame_bytes(b'c', b""));
        stream.extend(frame_bytes(b'd', b"hello"));
        // Feed one byte at a time: frames appear only once complete.
        let mut codec = FrameCodec;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for b in stream {
            buf.put_u8(b);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                out.push(f);
            }
        }
        assert!(buf.is_empty());
        assert_eq!(
            out,
            vec![
                Frame {
                    tag: b'Z',
                    body: Bytes::from_static(b"I")
                },
                Frame {
                    tag: b'c',
                    body: Bytes::new()
                },
                Frame {
                    tag: b'd',
                    body: Bytes::from_static(b"hello")
                },
            ]
        );
    }

    #[test]
    fn decoder_rejects_impossible_lengths() {
        for len in [0i32, 3, -1, i32::MIN, (MAX_FRAME_LEN as i32) + 1] {
            let mut buf = BytesMut::new();
            buf.put_u8(b'd');
            buf.put_i32(len);
            assert!(
                matches!(
                    FrameCodec.decode(&mut buf),
                    Err(FrameError::BadLength { .. })
                ),
                "length {len}"
            );
        }
    }

    #[test]
    fn decoder_waits_on_a_huge_declared_length_without_allocating_it() {
        let mut buf = BytesMut::new();
        buf.put_u8(b'd');
        buf.put_i32(MAX_FRAME_LEN as i32);
        // Accepted as a length, but the frame is incomplete: no item, no error.
        assert!(FrameCodec.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() <= 5 + RESERVE_STEP);
    }

    #[test]
    fn error_response_fields_prefer_unlocalized_severity() {
        let body = Bytes::from_static(
            b"SFEHLER\0VERROR\0C42P01\0Mrelation \"x\" does not exist\0Dsome detail\0Hsome hint\0P15\0\0",
        );
        let e = parse_error_fields(&body).unwrap();
        assert_eq!(
            e,
            ErrorFields {
                severity: "ERROR".into(),
                code: "42P01".into(),
                message: "relation \"x\" does not exist".into(),
                detail: Some("some detail".into()),
                hint: Some("some hint".into()),
            }
        );
        let old = parse_error_fields(&Bytes::from_static(b"SFATAL\0C28P01\0Mno\0\0")).unwrap();
        assert_eq!(old.severity, "FATAL");
        assert_eq!(old.detail, None);
        assert!(parse_error_fields(&Bytes::from_static(b"SFATAL\0C28P01")).is_err());
        assert!(parse_error_fields(&Bytes::new()).is_err());
    }

    fn row_description(names: &[&str]) -> Bytes {
        let mut b = BytesMut::new();
        b.put_i16(names.len() as i16);
        for n in names {
            b.put_slice(n.as_bytes());
            b.put_u8(0);
            b.put_u32(0);
            b.put_i16(0);
            b.put_u32(25);
            b.put_i16(-1);
            b.put_i32(-1);
            b.put_i16(0);
        }
        b.freeze()
    }

    #[test]
    fn row_description_gives_column_names() {
        let body = row_description(&["slot_name", "consistent_point", "snapshot_name"]);
        assert_eq!(
            parse_row_description(&body).unwrap(),
            vec!["slot_name", "consistent_point", "snapshot_name"]
        );
        for len in 0..body.len() {
            assert!(parse_row_description(&body.slice(..len)).is_err());
        }
        assert!(parse_row_description(&Bytes::from_static(&[0x7f, 0xff])).is_err());
    }

    #[test]
    fn data_row_gives_values_and_nulls() {
        let mut b = BytesMut::new();
        b.put_i16(3);
        b.put_i32(3);
        b.put_slice(b"abc");
        b.put_i32(-1);
        b.put_i32(0);
        let body = b.freeze();
        assert_eq!(
            parse_data_row(&body).unwrap(),
            vec![Some(Bytes::from_static(b"abc")), None, Some(Bytes::new())]
        );
        for len in 0..body.len() {
            assert!(parse_data_row(&body.slice(..len)).is_err());
        }
        assert!(parse_data_row(&Bytes::from_static(&[0, 1, 0xff, 0xff, 0xff, 0xfe])).is_err());
    }

    #[test]
    fn authentication_requests_parse() {
        let cases: Vec<(Vec<u8>, Authentication)> = vec![
            (vec![0, 0, 0, 0], Authentication::Ok),
            (vec![0, 0, 0, 3], Authentication::CleartextPassword),
            (
                vec![0, 0, 0, 5, 1, 2, 3, 4],
                Authentication::Md5Password { salt: [1, 2, 3, 4] },
            ),
            (
                b"\0\0\0\x0aSCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0".to_vec(),
                Authentication::Sasl {
                    mechanisms: vec!["SCRAM-SHA-256-PLUS".into(), "SCRAM-SHA-256".into()],
                },
            ),
            (
                b"\0\0\0\x0br=abc,s=xyz,i=4096".to_vec(),
                Authentication::SaslContinue(Bytes::from_static(b"r=abc,s=xyz,i=4096")),
            ),
            (
                b"\0\0\0\x0cv=sig".to_vec(),
                Authentication::SaslFinal(Bytes::from_static(b"v=sig")),
            ),
            (vec![0, 0, 0, 7], Authentication::Other(7)),
        ];
        for (body, want) in cases {
            assert_eq!(parse_authentication(&Bytes::from(body)).unwrap(), want);
        }
        assert!(parse_authentication(&Bytes::from_static(&[0, 0, 0, 5, 1, 2])).is_err());
        assert!(parse_authentication(&Bytes::from_static(b"\0\0\0\x0aSCRAM")).is_err());
        assert!(parse_authentication(&Bytes::from_static(&[0, 0])).is_err());
    }

    #[test]
    fn small_backend_messages_parse() {
        assert_eq!(
            parse_parameter_status(&Bytes::from_static(b"server_version\x0015.4 (Debian)\0"))
                .unwrap(),
            ("server_version".to_string(), "15.4 (Debian)".to_string())
        );
        assert!(parse_parameter_status(&Bytes::from_static(b"a\0b")).is_err());
        assert_eq!(
            parse_backend_key_data(&Bytes::from_static(&[0, 0, 0x30, 0x39, 1, 2, 3, 4]))
                .unwrap()
                .pid,
            12345
        );
        assert!(parse_backend_key_data(&Bytes::from_static(&[0, 0, 0x30, 0x39, 1])).is_err());
        assert_eq!(
            parse_copy_response(&Bytes::from_static(&[0, 0, 0])).unwrap(),
            CopyResponse {
                format: 0,
                column_formats: vec![]
            }
        );
        assert_eq!(
            parse_copy_response(&Bytes::from_static(&[1, 0, 2, 0, 1, 0, 1]))
                .unwrap()
                .column_formats,
            vec![1, 1]
        );
        assert!(parse_copy_response(&Bytes::from_static(&[0, 0x7f, 0xff])).is_err());
        assert_eq!(
            parse_command_complete(&Bytes::from_static(b"CREATE_REPLICATION_SLOT\0")).unwrap(),
            "CREATE_REPLICATION_SLOT"
        );
        assert_eq!(
            parse_ready_for_query(&Bytes::from_static(b"I")).unwrap(),
            b'I'
        );
        assert!(parse_ready_for_query(&Bytes::new()).is_err());
    }

    #[test]
    fn encoder_passes_frontend_bytes_through() {
        let mut dst = BytesMut::new();
        FrameCodec
            .encode(Bytes::from_static(b"Q\0\0\0\x05\0"), &mut dst)
            .unwrap();
        assert_eq!(&dst[..], b"Q\0\0\0\x05\0");
    }
}
