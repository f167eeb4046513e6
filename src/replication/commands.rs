//! Text of the replication commands we send, and the server version parsing. Pure, tested here.
//!
//! The walsender's command scanner (repl_scanner.l) reads `"..."` identifiers with `""` for an
//! embedded quote and `'...'` literals with `''` for an embedded quote; backslashes are literal.

use super::ReplicationError;
use crate::lsn::Lsn;

/// `"name"` with embedded double quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'value'` with embedded single quotes doubled.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn is_plain_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

pub fn create_logical_slot_exported(slot: &str) -> String {
    format!(
        "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput EXPORT_SNAPSHOT",
        quote_ident(slot)
    )
}

/// A slot that lives only as long as the replication connection (`verify`'s consistent point).
/// The legacy `EXPORT_SNAPSHOT` form is accepted by 14..18, as for `create_logical_slot_exported`.
pub fn create_temporary_logical_slot_exported(slot: &str) -> String {
    format!(
        "CREATE_REPLICATION_SLOT {} TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT",
        quote_ident(slot)
    )
}

/// `START_REPLICATION SLOT "s" LOGICAL X/Y (key 'value', ...)`. Option names must be plain
/// lower-case identifiers (they are pgoutput's option names, not user input).
pub fn start_logical_replication(
    slot: &str,
    start: Lsn,
    options: &[(&str, &str)],
) -> Result<String, ReplicationError> {
    let mut sql = format!(
        "START_REPLICATION SLOT {} LOGICAL {start}",
        quote_ident(slot)
    );
    if !options.is_empty() {
        let mut parts = Vec::with_capacity(options.len());
        for (key, value) in options {
            if !is_plain_identifier(key) {
                return Err(ReplicationError::Protocol(format!(
                    "replication option name {key:?} is not a plain lower-case identifier"
                )));
            }
            parts.push(format!("{key} {}", quote_literal(value)));
        }
        sql.push_str(&format!(" ({})", parts.join(", ")));
    }
    Ok(sql)
}

/// `server_version` text to the `server_version_num` form: "15.4 (Debian 15.4-1)" -> 150004,
/// "18.0" -> 180000, "17beta2" -> 170000, "9.6.24" -> 90624. `None` when there is no leading number.
pub fn parse_server_version_num(text: &str) -> Option<u32> {
    let numeric: &str = text
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()
        .unwrap_or("");
    let mut parts = numeric.split('.').filter(|p| !p.is_empty());
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    if major >= 10 {
        major.checked_mul(10_000)?.checked_add(minor.min(9_999))
    } else {
        let patch: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        Some(major * 10_000 + minor.min(99) * 100 + patch.min(99))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_temporary_slot_uses_the_legacy_export_form() {
        assert_eq!(
            create_temporary_logical_slot_exported("pgrepart_verify_1"),
            "CREATE_REPLICATION_SLOT \"pgrepart_verify_1\" TEMPORARY LOGICAL pgoutput EXPORT_SNAPSHOT"
        );
    }

    #[test]
    fn identifiers_and_literals_double_their_quotes() {
        assert_eq!(quote_ident("slot"), "\"slot\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("\"pub\""), "'\"pub\"'");
    }

    #[test]
    fn create_slot_command_quotes_the_slot_name() {
        assert_eq!(
            create_logical_slot_exported("pgrepart_\"x"),
            "CREATE_REPLICATION_SLOT \"pgrepart_\"\"x\" LOGICAL pgoutput EXPORT_SNAPSHOT"
        );
    }

    #[test]
    fn start_replication_command_lists_quoted_options() {
        assert_eq!(
            start_logical_replication(
                "s",
                Lsn(0x1_0000_00AB),
                &[
                    ("proto_version", "1"),
                    ("publication_names", "\"my pub\",\"o'k\""),
                    ("messages", "true"),
                ],
            )
            .unwrap(),
            "START_REPLICATION SLOT \"s\" LOGICAL 1/AB (proto_version '1', \
             publication_names '\"my pub\",\"o''k\"', messages 'true')"
        );
        assert_eq!(
            start_logical_replication("s", Lsn::ZERO, &[]).unwrap(),
            "START_REPLICATION SLOT \"s\" LOGICAL 0/0"
        );
    }

    #[test]
    fn start_replication_refuses_option_names_that_need_quoting() {
        for bad in ["", "Proto", "a b", "x'", "1abc"] {
            assert!(
                start_logical_replication("s", Lsn::ZERO, &[(bad, "1")]).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn server_versions_parse_to_their_numeric_form() {
        for (text, num) in [
            ("15.4 (Debian 15.4-1.pgdg120+1)", Some(150004)),
            ("18.0", Some(180000)),
            ("14.10", Some(140010)),
            ("17beta2", Some(170000)),
            ("16devel", Some(160000)),
            ("16", Some(160000)),
            ("9.6.24", Some(90624)),
            ("", None),
            ("abc", None),
        ] {
            assert_eq!(parse_server_version_num(text), num, "{text:?}");
        }
    }
}
