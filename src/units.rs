//! Sizes and durations as DBAs write them (`SET lock_timeout = '3s'`, `20GB`): one parser for
//! each, with PostgreSQL's units. Pure.

/// Parses sizes like `500MB`, `10GB`, `1TB`, `1048576` (bytes). Units are powers of 1024, as in
/// PostgreSQL's settings (`kB`, `MB`, `GB`, `TB`; `K`, `KiB` and the like are taken too).
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a size; write e.g. 500MB or 10GB"))?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
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

#[cfg(test)]
mod tests {
    use super::*;

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
