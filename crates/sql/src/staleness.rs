//! `SET READ_ONLY_STALENESS = '...'` values, in Spanner JDBC's syntax:
//!
//! | value                              | meaning                                         |
//! |------------------------------------|-------------------------------------------------|
//! | `STRONG`                           | everything committed before the read began      |
//! | `EXACT_STALENESS 10s`              | exactly this long ago (`ns`, `us`, `ms`, `s`)   |
//! | `MAX_STALENESS 500ms`              | no older than this (the replica may pick)       |
//! | `READ_TIMESTAMP <t>`               | at `t`: RFC 3339 or integer nanoseconds         |
//! | `MIN_READ_TIMESTAMP <t>`           | at `t` or later                                 |

use std::time::Duration;

use storage::key::Value;
use truetime::Timestamp;

use crate::error::{SqlError, SqlResult};
use crate::kv::TimestampBound;
use crate::types::{display_value, parse_timestamp, timestamp_from_nanos, timestamp_nanos};

const USAGE: &str = "write 'STRONG', 'EXACT_STALENESS 10s', 'MAX_STALENESS 500ms', \
                     'READ_TIMESTAMP 2024-05-01T12:00:00Z' or 'MIN_READ_TIMESTAMP <t>' \
                     (durations in ns, us, ms or s; timestamps RFC 3339 or integer nanoseconds)";

/// Parses a staleness setting.
pub fn parse_staleness(s: &str) -> SqlResult<TimestampBound> {
    let bad = || SqlError::invalid(format!("bad READ_ONLY_STALENESS {s:?}: {USAGE}"));
    let mut parts = s.split_whitespace();
    let kind = parts.next().ok_or_else(bad)?.to_uppercase();
    let arg = parts.next();
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(match (kind.as_str(), arg) {
        ("STRONG", None) => TimestampBound::Strong,
        ("EXACT_STALENESS", Some(d)) => {
            TimestampBound::ExactStaleness(duration(d).ok_or_else(bad)?)
        }
        ("MAX_STALENESS", Some(d)) => TimestampBound::MaxStaleness(duration(d).ok_or_else(bad)?),
        ("READ_TIMESTAMP", Some(t)) => TimestampBound::ReadTimestamp(timestamp(t).ok_or_else(bad)?),
        ("MIN_READ_TIMESTAMP", Some(t)) => {
            TimestampBound::MinReadTimestamp(timestamp(t).ok_or_else(bad)?)
        }
        _ => return Err(bad()),
    })
}

fn duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "ns" => Duration::from_nanos(n),
        "us" => Duration::from_micros(n),
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        _ => return None,
    })
}

fn timestamp(s: &str) -> Option<Timestamp> {
    if let Ok(n) = s.parse::<u64>() {
        return Some(Timestamp::from_nanos(n));
    }
    let Ok(Value::Timestamp { secs, nanos }) = parse_timestamp(s) else {
        return None;
    };
    let ns = timestamp_nanos(secs, nanos).ok()?;
    u64::try_from(ns).ok().map(Timestamp::from_nanos)
}

fn show_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    match ns {
        n if n % 1_000_000_000 == 0 => format!("{}s", n / 1_000_000_000),
        n if n % 1_000_000 == 0 => format!("{}ms", n / 1_000_000),
        n if n % 1_000 == 0 => format!("{}us", n / 1_000),
        n => format!("{n}ns"),
    }
}

fn show_timestamp(t: Timestamp) -> String {
    match i64::try_from(t.as_nanos()) {
        Ok(n) => display_value(&timestamp_from_nanos(n)),
        Err(_) => t.as_nanos().to_string(),
    }
}

/// The setting in the syntax [`parse_staleness`] reads.
pub fn format_staleness(b: TimestampBound) -> String {
    match b {
        TimestampBound::Strong => "STRONG".into(),
        TimestampBound::ExactStaleness(d) => format!("EXACT_STALENESS {}", show_duration(d)),
        TimestampBound::MaxStaleness(d) => format!("MAX_STALENESS {}", show_duration(d)),
        TimestampBound::ReadTimestamp(t) => format!("READ_TIMESTAMP {}", show_timestamp(t)),
        TimestampBound::MinReadTimestamp(t) => format!("MIN_READ_TIMESTAMP {}", show_timestamp(t)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trips() {
        for s in [
            "STRONG",
            "EXACT_STALENESS 10s",
            "MAX_STALENESS 500ms",
            "EXACT_STALENESS 7ns",
            "READ_TIMESTAMP 2024-05-01T12:00:00Z",
            "MIN_READ_TIMESTAMP 2024-05-01T12:00:00.000000001Z",
        ] {
            assert_eq!(format_staleness(parse_staleness(s).unwrap()), s);
        }
        assert_eq!(
            parse_staleness("read_timestamp 5").unwrap(),
            TimestampBound::ReadTimestamp(Timestamp::from_nanos(5))
        );
        for bad in [
            "",
            "STRONG 1s",
            "EXACT_STALENESS",
            "EXACT_STALENESS 10",
            "MAX_STALENESS 1h",
            "SOON",
        ] {
            assert!(parse_staleness(bad).is_err(), "{bad}");
        }
    }
}
