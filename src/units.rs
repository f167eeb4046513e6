//! Sizes and durations as DBAs write them (`SET lock_timeout = '3s'`, `20GB`): one parser for
//! each, with PostgreSQL's units. Pure.

use std::time::Duration;

/// `"1.5 GB"` as (1.5, "GB"): the leading decimal number (finite) and the unit after it, trimmed.
fn number_and_unit(text: &str) -> Option<(f64, &str)> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num.parse().ok().filter(|n: &f64| n.is_finite())?;
    Some((num, unit.trim()))
}

/// Parses sizes like `500MB`, `10GB`, `1TB`, `1048576` (bytes). Units are powers of 1024, as in
/// PostgreSQL's settings (`kB`, `MB`, `GB`, `TB`; `K`, `KiB` and the like are taken too).
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let (num, unit) = number_and_unit(text)
        .ok_or_else(|| format!("{text:?} is not a size; write e.g. 500MB or 10GB"))?;
    let mult: u64 = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => {
            return Err(format!(
                "{text:?} has an unknown unit; use B, kB, MB, GB or TB"
            ));
        }
    };
    Ok((num * mult as f64) as u64)
}

/// What a bare number means for a flag that takes a duration (each flag keeps its old unit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BareUnit {
    Milliseconds,
    Seconds,
}

/// Parses durations with PostgreSQL's units, as in `SET lock_timeout = '3s'`: `us`, `ms`, `s`,
/// `min`, `h`, `d` (a decimal part is allowed: `1.5s`); a bare number is in `bare`.
pub fn parse_duration(text: &str, bare: BareUnit) -> std::result::Result<Duration, String> {
    let (num, unit) = number_and_unit(text)
        .ok_or_else(|| format!("{text:?} is not a duration; write e.g. 500ms, 3s, 2min or 1h"))?;
    let seconds_per_unit = match unit {
        "" => match bare {
            BareUnit::Milliseconds => 0.001,
            BareUnit::Seconds => 1.0,
        },
        "us" => 0.000_001,
        "ms" => 0.001,
        "s" => 1.0,
        "min" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => {
            return Err(format!(
                "{text:?} has an unknown unit; use ms, s, min, h or d (PostgreSQL's units)"
            ));
        }
    };
    Duration::try_from_secs_f64(num * seconds_per_unit)
        .map_err(|_| format!("{text:?} is out of range"))
}

/// Milliseconds with two or three significant figures (pure): "0.021", "0.21", "2.1", "21", so
/// that the 0.02 ms statements of a fast workload do not read as 0.0.
pub fn millis(ms: f64) -> String {
    let a = ms.abs();
    if a >= 10.0 || a == 0.0 {
        format!("{ms:.0}")
    } else if a >= 1.0 {
        format!("{ms:.1}")
    } else if a >= 0.1 {
        format!("{ms:.2}")
    } else {
        format!("{ms:.3}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn milliseconds_keep_their_figures_however_small() {
        assert_eq!(super::millis(0.0), "0");
        assert_eq!(super::millis(0.0213), "0.021");
        assert_eq!(super::millis(0.213), "0.21");
        assert_eq!(super::millis(2.13), "2.1");
        assert_eq!(super::millis(21.3), "21");
        assert_eq!(super::millis(1.0), "1.0");
    }

    use super::*;

    #[test]
    fn durations_take_postgres_units_and_a_bare_number_keeps_the_flags_unit() {
        let ms = |t| parse_duration(t, BareUnit::Milliseconds);
        assert_eq!(ms("3000"), Ok(Duration::from_secs(3)));
        assert_eq!(ms("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(ms("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(ms("1.5 s"), Ok(Duration::from_millis(1500)));
        assert_eq!(ms("2min"), Ok(Duration::from_secs(120)));
        assert_eq!(ms("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(ms("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(
            parse_duration("2", BareUnit::Seconds),
            Ok(Duration::from_secs(2))
        );
        assert!(ms("3 fortnights").is_err());
        assert!(ms("3m").is_err(), "m is not a PostgreSQL unit (min is)");
        assert!(ms("s").is_err());
        assert!(ms("-1s").is_err());
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("500MB").unwrap(), 500 << 20);
        assert_eq!(parse_size("10 GB").unwrap(), 10 << 30);
        assert_eq!(parse_size("1.5kB").unwrap(), 1536);
        assert!(parse_size("ten").is_err());
        assert!(parse_size("10XB").is_err());
    }

    #[test]
    fn sizes_take_postgres_units() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("20GB"), Ok(20 << 30));
        assert_eq!(parse_size("64kB"), Ok(64 << 10));
        assert!(parse_size("20XB").is_err());
        assert!(parse_size("GB").is_err());
    }
}
