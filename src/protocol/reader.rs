//! A bounds-checked big-endian cursor over a `Bytes` buffer, shared by the protocol decoders.
//!
//! Every read checks the remaining length first and returns `DecodeError::Truncated` instead of
//! panicking. Byte slices are returned as `Bytes` views of the input (no copy).

use bytes::Bytes;

use super::DecodeError;

pub(crate) struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a Bytes) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Checks that `n` more bytes are available.
    fn need(&self, n: usize, what: &'static str) -> Result<(), DecodeError> {
        let remaining = self.remaining();
        if remaining < n {
            return Err(DecodeError::Truncated {
                what,
                needed: n - remaining,
            });
        }
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        self.need(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[self.pos..self.pos + N]);
        self.pos += N;
        Ok(out)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(crate) fn i16(&mut self, what: &'static str) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    /// The next `n` bytes as a view of the input.
    pub(crate) fn bytes(&mut self, n: usize, what: &'static str) -> Result<Bytes, DecodeError> {
        self.need(n, what)?;
        let out = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(out)
    }

    /// Everything that is left, without consuming it.
    pub(crate) fn rest_view(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Everything that is left.
    pub(crate) fn rest(&mut self) -> Bytes {
        let out = self.buf.slice(self.pos..);
        self.pos = self.buf.len();
        out
    }

    /// A length prefix (i32) that must be >= 0; the bytes it announces must be present.
    pub(crate) fn len_prefixed(&mut self, what: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.i32(what)?;
        let len = usize::try_from(len).map_err(|_| DecodeError::Invalid {
            what,
            detail: format!("negative length {len}"),
        })?;
        self.bytes(len, what)
    }

    /// A NUL-terminated string that must be valid UTF-8.
    pub(crate) fn cstr(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let rest = &self.buf[self.pos..];
        let Some(nul) = rest.iter().position(|&b| b == 0) else {
            return Err(DecodeError::Truncated { what, needed: 1 });
        };
        let s = std::str::from_utf8(&rest[..nul]).map_err(|e| DecodeError::Invalid {
            what,
            detail: format!("not valid UTF-8: {e}"),
        })?;
        let s = s.to_owned();
        self.pos += nul + 1;
        Ok(s)
    }

    /// A count (i16 or i32 already read) checked to be non-negative and small enough that
    /// `count * min_item_len` bytes could still follow. Guards allocations against huge counts.
    pub(crate) fn count(
        &self,
        count: i64,
        min_item_len: usize,
        what: &'static str,
    ) -> Result<usize, DecodeError> {
        let n = usize::try_from(count).map_err(|_| DecodeError::Invalid {
            what,
            detail: format!("negative count {count}"),
        })?;
        let needed = n.saturating_mul(min_item_len);
        self.need(needed, what)?;
        Ok(n)
    }

    /// Fails if bytes are left over: a decoder that disagrees with the sender about a layout
    /// must not silently accept the message.
    pub(crate) fn finish(&self, what: &'static str) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::Invalid {
                what,
                detail: format!("{n} unexpected trailing bytes"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_big_endian_integers_and_reports_what_is_missing() {
        let buf = Bytes::from_static(&[0, 1, 0, 0, 0, 2, 9]);
        let mut r = Reader::new(&buf);
        assert_eq!(r.i16("a").unwrap(), 1);
        assert_eq!(r.i32("b").unwrap(), 2);
        assert_eq!(
            r.i64("c"),
            Err(DecodeError::Truncated {
                what: "c",
                needed: 7
            })
        );
        assert_eq!(r.u8("d").unwrap(), 9);
        assert!(r.finish("end").is_ok());
    }

    #[test]
    fn cstr_needs_a_terminator_and_valid_utf8() {
        let buf = Bytes::from_static(b"abc\0def");
        let mut r = Reader::new(&buf);
        assert_eq!(r.cstr("s").unwrap(), "abc");
        assert!(matches!(r.cstr("s"), Err(DecodeError::Truncated { .. })));
        let bad = Bytes::from_static(b"\xff\xfe\0");
        assert!(matches!(
            Reader::new(&bad).cstr("s"),
            Err(DecodeError::Invalid { .. })
        ));
    }

    #[test]
    fn huge_or_negative_counts_are_rejected_before_allocating() {
        let buf = Bytes::from_static(&[1, 2, 3]);
        let r = Reader::new(&buf);
        assert!(r.count(i64::from(i32::MAX), 4, "n").is_err());
        assert!(r.count(-1, 1, "n").is_err());
        assert_eq!(r.count(3, 1, "n").unwrap(), 3);
    }

    #[test]
    fn negative_length_prefix_is_invalid() {
        let buf = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            Reader::new(&buf).len_prefixed("v"),
            Err(DecodeError::Invalid { .. })
        ));
    }
}
