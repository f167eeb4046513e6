//! pgoutput logical decoding messages (protocol version 1, `messages 'true'`).
//!
//! Each XLogData payload of a logical replication stream is exactly one pgoutput message. This
//! module turns such a payload into a typed [`PgOutput`]. It is pure: bytes in, values out. Every
//! read is bounds-checked, counts are checked against the bytes left before anything is allocated,
//! and a message with trailing bytes is rejected, so arbitrary input gives a `DecodeError`, never a
//! panic. Text values stay as `Bytes` views of the payload (no copy).
//!
//! ```text
//! 'B' i64 final_lsn  i64 commit_ts  i32 xid
//! 'I' u32 rel  'N' TupleData
//! 'U' u32 rel  [('K'|'O') TupleData]  'N' TupleData
//! 'D' u32 rel  ('K'|'O') TupleData
//! 'C' u8 flags  i64 commit_lsn  i64 end_lsn  i64 commit_ts
//! TupleData = i16 ncols, per column: 'n' | 'u' | 't' i32 len bytes | 'b' i32 len bytes
//! ```
//!
//! Protocol version 1 only: the streamed-transaction messages (S, E, c, A) and the xid prefix of
//! proto 2+ are not decoded (they give `UnknownTag`).
use bytes::Bytes;

use super::DecodeError;
use super::reader::Reader;
use crate::lsn::Lsn;

/// One column value of a TupleData.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datum {
    /// 'n': SQL NULL (or, in a 'K' old tuple, "not part of the key").
    Null,
    /// 'u': unchanged TOASTed value, not sent.
    UnchangedToast,
    /// 't': the value in the type's text output form.
    Text(Bytes),
    /// 'b': the value in the type's binary send form.
    Binary(Bytes),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TupleData(pub Vec<Datum>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// 1 = part of the replica identity key.
    pub flags: u8,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    /// "" means pg_catalog.
    pub namespace: String,
    pub name: String,
    /// b'd', b'n', b'f' or b'i'.
    pub replica_identity: u8,
    pub columns: Vec<Column>,
}

/// The old row image of an Update or Delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// 'K': the replica-identity key columns; the other columns are `Null` meaning "not sent".
    Key(TupleData),
    /// 'O': the whole old row (REPLICA IDENTITY FULL).
    Full(TupleData),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgOutput {
    Begin {
        final_lsn: Lsn,
        commit_ts: i64,
        xid: u32,
    },
    Commit {
        flags: u8,
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_ts: i64,
    },
    Origin {
        lsn: Lsn,
        name: String,
    },
    Relation(Relation),
    Type {
        oid: u32,
        namespace: String,
        name: String,
    },
    Insert {
        rel: u32,
        new: TupleData,
    },
    Update {
        rel: u32,
        old: Option<OldTuple>,
        new: TupleData,
    },
    Delete {
        rel: u32,
        old: OldTuple,
    },
    /// options: 1 = CASCADE, 2 = RESTART IDENTITY.
    Truncate {
        options: u8,
        rels: Vec<u32>,
    },
    Message {
        transactional: bool,
        lsn: Lsn,
        prefix: String,
        content: Bytes,
    },
}

/// Decodes one pgoutput message (the payload of an XLogData).
pub fn decode(buf: &Bytes) -> Result<PgOutput, DecodeError> {
    let mut r = Reader::new(buf);
    let tag = r.u8("pgoutput message tag")?;
    let msg = match tag {
        b'B' => PgOutput::Begin {
            final_lsn: Lsn(r.u64("Begin final_lsn")?),
            commit_ts: r.i64("Begin commit_ts")?,
            xid: r.u32("Begin xid")?,
        },
        b'C' => PgOutput::Commit {
            flags: r.u8("Commit flags")?,
            commit_lsn: Lsn(r.u64("Commit commit_lsn")?),
            end_lsn: Lsn(r.u64("Commit end_lsn")?),
            commit_ts: r.i64("Commit commit_ts")?,
        },
        b'O' => PgOutput::Origin {
            lsn: Lsn(r.u64("Origin lsn")?),
            name: r.cstr("Origin name")?,
        },
        b'R' => PgOutput::Relation(relation(&mut r)?),
        b'Y' => PgOutput::Type {
            oid: r.u32("Type oid")?,
            namespace: r.cstr("Type namespace")?,
            name: r.cstr("Type name")?,
        },
        b'I' => {
            let rel = r.u32("Insert relation oid")?;
            expect_new_marker(&mut r, "Insert")?;
            PgOutput::Insert {
                rel,
                new: tuple(&mut r)?,
            }
        }
        b'U' => {
            let rel = r.u32("Update relation oid")?;
            let old = match r.u8("Update tuple marker")? {
                b'K' => Some(OldTuple::Key(tuple(&mut r)?)),
                b'O' => Some(OldTuple::Full(tuple(&mut r)?)),
                b'N' => None,
                other => return Err(unknown("Update tuple marker", other)),
            };
            if old.is_some() {
                expect_new_marker(&mut r, "Update")?;
            }
            PgOutput::Update {
                rel,
                old,
                new: tuple(&mut r)?,
            }
        }
        b'D' => {
            let rel = r.u32("Delete relation oid")?;
            let old = match r.u8("Delete tuple marker")? {
                b'K' => OldTuple::Key(tuple(&mut r)?),
                b'O' => OldTuple::Full(tuple(&mut r)?),
                other => return Err(unknown("Delete tuple marker", other)),
            };
            PgOutput::Delete { rel, old }
        }
        b'T' => {
            let nrels = r.i32("Truncate relation count")?;
            let options = r.u8("Truncate options")?;
            let n = r.count(i64::from(nrels), 4, "Truncate relation oids")?;
            let mut rels = Vec::with_capacity(n);
            for _ in 0..n {
                rels.push(r.u32("Truncate relation oid")?);
            }
            PgOutput::Truncate { options, rels }
        }
        b'M' => {
            let flags = r.u8("Message flags")?;
            PgOutput::Message {
                transactional: flags & 1 != 0,
                lsn: Lsn(r.u64("Message lsn")?),
                prefix: r.cstr("Message prefix")?,
                content: r.len_prefixed("Message content")?,
            }
        }
        other => return Err(unknown("pgoutput message", other)),
    };
    r.finish("pgoutput message")?;
    Ok(msg)
}

fn unknown(what: &'static str, tag: u8) -> DecodeError {
    DecodeError::UnknownTag {
        what,
        tag: char::from(tag),
    }
}

fn expect_new_marker(r: &mut Reader<'_>, what: &'static str) -> Result<(), DecodeError> {
    match r.u8("new tuple marker")? {
        b'N' => Ok(()),
        other => Err(DecodeError::Invalid {
            what: "new tuple marker",
            detail: format!("{what}: expected 'N', got {:?}", char::from(other)),
        }),
    }
}

fn relation(r: &mut Reader<'_>) -> Result<Relation, DecodeError> {
    let oid = r.u32("Relation oid")?;
    let namespace = r.cstr("Relation namespace")?;
    let name = r.cstr("Relation name")?;
    let replica_identity = r.u8("Relation replica identity")?;
    let ncols = r.i16("Relation column count")?;
    // Smallest column: flags + empty name + type oid + typmod.
    let n = r.count(i64::from(ncols), 1 + 1 + 4 + 4, "Relation columns")?;
    let mut columns = Vec::with_capacity(n);
    for _ in 0..n {
        columns.push(Column {
            flags: r.u8("Relation column flags")?,
            name: r.cstr("Relation column name")?,
            type_oid: r.u32("Relation column type oid")?,
            type_modifier: r.i32("Relation column type modifier")?,
        });
    }
    Ok(Relation {
        oid,
        namespace,
        name,
        replica_identity,
        columns,
    })
}

fn tuple(r: &mut Reader<'_>) -> Result<TupleData, DecodeError> {
    let ncols = r.i16("TupleData column count")?;
    let n = r.count(i64::from(ncols), 1, "TupleData columns")?;
    let mut values = Vec::with_capacity(n);
    for _ in 0..n {
        let datum = match r.u8("TupleData column kind")? {
            b'n' => Datum::Null,
            b'u' => Datum::UnchangedToast,
            b't' => Datum::Text(r.len_prefixed("TupleData text value")?),
            b'b' => Datum::Binary(r.len_prefixed("TupleData binary value")?),
            other => return Err(unknown("TupleData column kind", other)),
        };
        values.push(datum);
    }
    Ok(TupleData(values))
}

#[cfg(test)]
pub(crate) mod test_encode {
    //! A test-only pgoutput encoder: builds byte fixtures the way pgoutput's proto.c lays them out.
    use bytes::{BufMut, Bytes, BytesMut};

    use super::*;

    fn cstr(b: &mut BytesMut, s: &str) {
        b.put_slice(s.as_bytes());
        b.put_u8(0);
    }

    pub(crate) fn tuple(b: &mut BytesMut, t: &TupleData) {
        b.put_i16(t.0.len() as i16);
        for d in &t.0 {
            match d {
                Datum::Null => b.put_u8(b'n'),
                Datum::UnchangedToast => b.put_u8(b'u'),
                Datum::Text(v) => {
                    b.put_u8(b't');
                    b.put_i32(v.len() as i32);
                    b.put_slice(v);
                }
                Datum::Binary(v) => {
                    b.put_u8(b'b');
                    b.put_i32(v.len() as i32);
                    b.put_slice(v);
                }
            }
        }
    }

    fn old(b: &mut BytesMut, o: &OldTuple) {
        match o {
            OldTuple::Key(t) => {
                b.put_u8(b'K');
                tuple(b, t);
            }
            OldTuple::Full(t) => {
                b.put_u8(b'O');
                tuple(b, t);
            }
        }
    }

    pub(crate) fn encode(m: &PgOutput) -> Bytes {
        let mut b = BytesMut::new();
        match m {
            PgOutput::Begin {
                final_lsn,
                commit_ts,
                xid,
            } => {
                b.put_u8(b'B');
                b.put_u64(final_lsn.0);
                b.put_i64(*commit_ts);
                b.put_u32(*xid);
            }
            PgOutput::Commit {
                flags,
                commit_lsn,
                end_lsn,
                commit_ts,
            } => {
                b.put_u8(b'C');
                b.put_u8(*flags);
                b.put_u64(commit_lsn.0);
                b.put_u64(end_lsn.0);
                b.put_i64(*commit_ts);
            }
            PgOutput::Origin { lsn, name } => {
                b.put_u8(b'O');
                b.put_u64(lsn.0);
                cstr(&mut b, name);
            }
            PgOutput::Relation(rel) => {
                b.put_u8(b'R');
                b.put_u32(rel.oid);
                cstr(&mut b, &rel.namespace);
                cstr(&mut b, &rel.name);
                b.put_u8(rel.replica_identity);
                b.put_i16(rel.columns.len() as i16);
                for c in &rel.columns {
                    b.put_u8(c.flags);
                    cstr(&mut b, &c.name);
                    b.put_u32(c.type_oid);
                    b.put_i32(c.type_modifier);
                }
            }
            PgOutput::Type {
                oid,
                namespace,
                name,
            } => {
                b.put_u8(b'Y');
                b.put_u32(*oid);
                cstr(&mut b, namespace);
                cstr(&mut b, name);
            }
            PgOutput::Insert { rel, new } => {
                b.put_u8(b'I');
                b.put_u32(*rel);
                b.put_u8(b'N');
                tuple(&mut b, new);
            }
            PgOutput::Update { rel, old: o, new } => {
                b.put_u8(b'U');
                b.put_u32(*rel);
                if let Some(o) = o {
                    old(&mut b, o);
                }
                b.put_u8(b'N');
                tuple(&mut b, new);
            }
            PgOutput::Delete { rel, old: o } => {
                b.put_u8(b'D');
                b.put_u32(*rel);
                old(&mut b, o);
            }
            PgOutput::Truncate { options, rels } => {
                b.put_u8(b'T');
                b.put_i32(rels.len() as i32);
                b.put_u8(*options);
                for r in rels {
                    b.put_u32(*r);
                }
            }
            PgOutput::Message {
                transactional,
                lsn,
                prefix,
                content,
            } => {
                b.put_u8(b'M');
                b.put_u8(u8::from(*transactional));
                b.put_u64(lsn.0);
                cstr(&mut b, prefix);
                b.put_i32(content.len() as i32);
                b.put_slice(content);
            }
        }
        b.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::test_encode::encode;
    use super::*;

    fn text(s: &str) -> Datum {
        Datum::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn round_trip(m: PgOutput) {
        let bytes = encode(&m);
        assert_eq!(decode(&bytes).unwrap(), m, "bytes {bytes:?}");
    }

    fn sample_relation() -> PgOutput {
        PgOutput::Relation(Relation {
            oid: 16385,
            namespace: "public".into(),
            name: "orders".into(),
            replica_identity: b'd',
            columns: vec![
                Column {
                    flags: 1,
                    name: "id".into(),
                    type_oid: 20,
                    type_modifier: -1,
                },
                Column {
                    flags: 0,
                    name: "note".into(),
                    type_oid: 1043,
                    type_modifier: 68,
                },
            ],
        })
    }

    fn sample_messages() -> Vec<PgOutput> {
        vec![
            PgOutput::Begin {
                final_lsn: Lsn(0x1_0000_0028),
                commit_ts: 767_000_000_000_000,
                xid: 742,
            },
            PgOutput::Commit {
                flags: 0,
                commit_lsn: Lsn(0x1_0000_0028),
                end_lsn: Lsn(0x1_0000_0058),
                commit_ts: 767_000_000_000_001,
            },
            PgOutput::Origin {
                lsn: Lsn(0x99),
                name: "upstream".into(),
            },
            sample_relation(),
            PgOutput::Type {
                oid: 70000,
                namespace: "public".into(),
                name: "mood".into(),
            },
            PgOutput::Insert {
                rel: 16385,
                new: TupleData(vec![
                    text("1"),
                    Datum::Null,
                    Datum::UnchangedToast,
                    Datum::Binary(Bytes::from_static(&[0, 1, 2])),
                ]),
            },
            PgOutput::Update {
                rel: 16385,
                old: Some(OldTuple::Key(TupleData(vec![text("1"), Datum::Null]))),
                new: TupleData(vec![text("2"), Datum::UnchangedToast]),
            },
            PgOutput::Update {
                rel: 16385,
                old: Some(OldTuple::Full(TupleData(vec![text("1"), text("a")]))),
                new: TupleData(vec![text("1"), text("b")]),
            },
            PgOutput::Update {
                rel: 16385,
                old: None,
                new: TupleData(vec![text("1"), text("c")]),
            },
            PgOutput::Delete {
                rel: 16385,
                old: OldTuple::Key(TupleData(vec![text("1"), Datum::Null])),
            },
            PgOutput::Delete {
                rel: 16385,
                old: OldTuple::Full(TupleData(vec![text("1"), text("c")])),
            },
            PgOutput::Truncate {
                options: 3,
                rels: vec![16385, 16390, 16400],
            },
            PgOutput::Message {
                transactional: true,
                lsn: Lsn(0x2_0000_0000),
                prefix: "pgrepart".into(),
                content: Bytes::from_static(b"fence 7"),
            },
            PgOutput::Message {
                transactional: false,
                lsn: Lsn(0x2_0000_0100),
                prefix: "x".into(),
                content: Bytes::new(),
            },
        ]
    }

    #[test]
    fn every_message_kind_round_trips() {
        for m in sample_messages() {
            round_trip(m);
        }
    }

    #[test]
    fn insert_decodes_from_hand_written_bytes() {
        // 'I', rel 0x4001, 'N', 3 columns: 't' "42", 'n', 'u'
        let bytes = Bytes::from_static(&[
            b'I', 0, 0, 0x40, 0x01, b'N', 0, 3, b't', 0, 0, 0, 2, b'4', b'2', b'n', b'u',
        ]);
        assert_eq!(
            decode(&bytes).unwrap(),
            PgOutput::Insert {
                rel: 0x4001,
                new: TupleData(vec![text("42"), Datum::Null, Datum::UnchangedToast]),
            }
        );
    }

    #[test]
    fn begin_decodes_from_hand_written_bytes() {
        let bytes = Bytes::from_static(&[
            b'B', 0, 0, 0, 1, 0, 0, 0, 0x28, // final_lsn 1/28
            0, 0, 0, 0, 0, 0, 0, 5, // commit_ts 5
            0, 0, 2, 0xe6, // xid 742
        ]);
        assert_eq!(
            decode(&bytes).unwrap(),
            PgOutput::Begin {
                final_lsn: Lsn(0x1_0000_0028),
                commit_ts: 5,
                xid: 742
            }
        );
    }

    #[test]
    fn non_transactional_message_flag_is_read() {
        let m = decode(&encode(&PgOutput::Message {
            transactional: false,
            lsn: Lsn(1),
            prefix: "x".into(),
            content: Bytes::from_static(b"y"),
        }))
        .unwrap();
        assert!(
            matches!(m, PgOutput::Message { transactional: false, ref content, .. } if content == "y")
        );
    }

    #[test]
    fn empty_input_is_truncated() {
        assert!(matches!(
            decode(&Bytes::new()),
            Err(DecodeError::Truncated { .. })
        ));
    }

    #[test]
    fn every_prefix_of_a_valid_message_is_an_error() {
        for m in sample_messages() {
            let full = encode(&m);
            for len in 0..full.len() {
                let cut = full.slice(..len);
                assert!(decode(&cut).is_err(), "{m:?} cut at {len} decoded");
            }
        }
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut v = encode(&sample_messages()[0]).to_vec();
        v.push(0);
        assert!(matches!(
            decode(&Bytes::from(v)),
            Err(DecodeError::Invalid { .. })
        ));
    }

    #[test]
    fn unknown_tags_are_reported() {
        assert_eq!(
            decode(&Bytes::from_static(b"Z")),
            Err(DecodeError::UnknownTag {
                what: "pgoutput message",
                tag: 'Z'
            })
        );
        // A streamed-transaction message (proto 2+) is not decoded.
        assert!(matches!(
            decode(&Bytes::from_static(b"S\0\0\0\x01\x01")),
            Err(DecodeError::UnknownTag { tag: 'S', .. })
        ));
        // Unknown column kind inside a tuple.
        let bytes = Bytes::from_static(&[b'I', 0, 0, 0, 1, b'N', 0, 1, b'x']);
        assert!(matches!(
            decode(&bytes),
            Err(DecodeError::UnknownTag { tag: 'x', .. })
        ));
        // Unknown old-tuple marker in a Delete.
        let bytes = Bytes::from_static(&[b'D', 0, 0, 0, 1, b'N', 0, 0]);
        assert!(matches!(
            decode(&bytes),
            Err(DecodeError::UnknownTag { tag: 'N', .. })
        ));
    }

    #[test]
    fn update_with_old_tuple_but_no_new_marker_is_invalid() {
        let bytes = Bytes::from_static(&[b'U', 0, 0, 0, 1, b'K', 0, 0, b'K', 0, 0]);
        assert!(matches!(decode(&bytes), Err(DecodeError::Invalid { .. })));
    }

    #[test]
    fn huge_counts_and_lengths_fail_without_allocating() {
        // Truncate claiming i32::MAX relations.
        let bytes = Bytes::from_static(&[b'T', 0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1]);
        assert!(matches!(decode(&bytes), Err(DecodeError::Truncated { .. })));
        // Negative relation count.
        let bytes = Bytes::from_static(&[b'T', 0xff, 0xff, 0xff, 0xff, 0]);
        assert!(matches!(decode(&bytes), Err(DecodeError::Invalid { .. })));
        // Text value claiming 2 GiB.
        let bytes = Bytes::from_static(&[
            b'I', 0, 0, 0, 1, b'N', 0, 1, b't', 0x7f, 0xff, 0xff, 0xff, b'a',
        ]);
        assert!(matches!(decode(&bytes), Err(DecodeError::Truncated { .. })));
        // Message content with a negative length.
        let mut v = vec![b'M', 0];
        v.extend_from_slice(&[0; 8]);
        v.extend_from_slice(b"p\0");
        v.extend_from_slice(&(-5i32).to_be_bytes());
        assert!(matches!(
            decode(&Bytes::from(v)),
            Err(DecodeError::Invalid { .. })
        ));
        // Tuple claiming 32767 columns with none present.
        let bytes = Bytes::from_static(&[b'I', 0, 0, 0, 1, b'N', 0x7f, 0xff]);
        assert!(matches!(decode(&bytes), Err(DecodeError::Truncated { .. })));
    }

    #[test]
    fn invalid_utf8_in_names_is_invalid() {
        let bytes = Bytes::from_static(&[b'O', 0, 0, 0, 0, 0, 0, 0, 1, 0xc3, 0x28, 0]);
        assert!(matches!(decode(&bytes), Err(DecodeError::Invalid { .. })));
    }

    #[test]
    fn pseudo_random_bytes_never_panic() {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let tags = b"BCORYIUDTMx";
        for _ in 0..20_000 {
            let len = (next() % 64) as usize;
            let mut v: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if let Some(first) = v.first_mut() {
                *first = tags[(next() % tags.len() as u64) as usize];
            }
            let _ = decode(&Bytes::from(v));
        }
        // Mutations of valid messages reach deeper into the decoders.
        let samples: Vec<Bytes> = sample_messages().iter().map(encode).collect();
        for _ in 0..20_000 {
            let base = &samples[(next() % samples.len() as u64) as usize];
            let mut v = base.to_vec();
            for _ in 0..=(next() % 3) {
                let i = (next() % v.len() as u64) as usize;
                v[i] = next() as u8;
            }
            let _ = decode(&Bytes::from(v));
        }
    }
}
