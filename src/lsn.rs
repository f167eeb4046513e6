//! `Lsn`: a position in the write-ahead log, printed and parsed in PostgreSQL's `X/Y` form.
//!
//! Every LSN in pgrepart is an `Lsn`, never a raw `u64`, so that a byte count or an xid cannot be
//! passed where a WAL position is meant.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A WAL position. `Lsn::ZERO` (`0/0`) means "unknown" in the replication protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    pub const ZERO: Lsn = Lsn(0);

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Bytes from `earlier` to `self`; zero when `earlier` is ahead.
    pub fn bytes_since(self, earlier: Lsn) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid LSN {0:?}: expected two hexadecimal numbers separated by '/', like 16/B374D848")]
pub struct ParseLsnError(String);

impl FromStr for Lsn {
    type Err = ParseLsnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseLsnError(s.to_string());
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        if hi.is_empty() || lo.is_empty() || hi.len() > 8 || lo.len() > 8 {
            return Err(err());
        }
        let hi = u32::from_str_radix(hi, 16).map_err(|_| err())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| err())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A position that only moves forward: `advance` ignores anything older than what it holds.
/// Used for the write and flush positions reported to the server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Monotonic(Lsn);

impl Monotonic {
    pub fn new(start: Lsn) -> Self {
        Monotonic(start)
    }

    pub fn get(self) -> Lsn {
        self.0
    }

    /// Moves to `to` if it is ahead; returns whether it moved.
    pub fn advance(&mut self, to: Lsn) -> bool {
        if to > self.0 {
            self.0 = to;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_prints_and_parses_in_postgres_form() {
        let lsn = Lsn(0x16_B374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!("16/B374D848".parse::<Lsn>().unwrap(), lsn);
        assert_eq!("0/0".parse::<Lsn>().unwrap(), Lsn::ZERO);
        assert_eq!("FFFFFFFF/FFFFFFFF".parse::<Lsn>().unwrap(), Lsn(u64::MAX));
        assert_eq!("0/1a2b".parse::<Lsn>().unwrap(), Lsn(0x1a2b));
    }

    #[test]
    fn lsn_rejects_malformed_text() {
        for bad in [
            "",
            "/",
            "1/",
            "/1",
            "12",
            "g/1",
            "1/2/3",
            "123456789/0",
            "-1/0",
        ] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn lsn_orders_numerically_and_measures_distance() {
        assert!(Lsn(0x1_0000_0000) > Lsn(0xFFFF_FFFF));
        assert_eq!(Lsn(100).bytes_since(Lsn(40)), 60);
        assert_eq!(Lsn(40).bytes_since(Lsn(100)), 0);
    }

    #[test]
    fn lsn_round_trips_through_serde_as_text() {
        let json = serde_json::to_string(&Lsn(0x2_0000_0010)).unwrap();
        assert_eq!(json, "\"2/10\"");
        assert_eq!(
            serde_json::from_str::<Lsn>(&json).unwrap(),
            Lsn(0x2_0000_0010)
        );
    }

    #[test]
    fn monotonic_never_moves_backwards() {
        let mut m = Monotonic::new(Lsn(10));
        assert!(m.advance(Lsn(20)));
        assert!(!m.advance(Lsn(15)));
        assert!(!m.advance(Lsn(20)));
        assert_eq!(m.get(), Lsn(20));
    }
}
