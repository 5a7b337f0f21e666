//! Durations as people type them on a command line: `500ms`, `30s`, `2m`, `1h`.

use std::time::Duration;

/// Parses `<n><unit>` with unit `ms`, `s`, `m` or `h` (`n` a whole number; a bare number is
/// seconds). Used as a clap `value_parser`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: write e.g. 500ms, 30s, 2m or 1h"))?;
    let duration = match unit.trim() {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" | "min" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use ms, s, m or h (e.g. 30s)"
            ));
        }
    };
    Ok(duration)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn units_and_bare_seconds_parse() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration(" 2m ").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn malformed_durations_say_what_to_write() {
        for bad in ["", "s", "1.5s", "-3s", "10 parsecs", "3d"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(
                err.contains("duration") || err.contains("unit"),
                "{bad}: {err}"
            );
        }
    }
}
