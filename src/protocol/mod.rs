//! Pure protocol code: bytes in, typed messages out. No tokio, no sockets.
//!
//! ```text
//! socket bytes --frame::FrameCodec--> Frame{tag, body}
//!   'd' CopyData body --copydata::parse_server--> XLogData{payload} | Keepalive
//!        payload --pgoutput::decode--> Begin | Relation | Insert | ... | Commit
//! ```

pub mod copydata;
pub mod frame;
pub mod pgoutput;
mod reader;

/// Malformed or truncated input. Decoding never panics; it returns this.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    #[error("message truncated: needed {needed} more bytes while reading {what}")]
    Truncated { what: &'static str, needed: usize },
    #[error("unknown message tag {tag:?} in {what}")]
    UnknownTag { what: &'static str, tag: char },
    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
}
