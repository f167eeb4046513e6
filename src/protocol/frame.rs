//! Backend message framing (tag byte + i32 length), as a cancel-safe tokio-util Decoder. STUB.
