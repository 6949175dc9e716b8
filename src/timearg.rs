//! Points in time on the command line (`query --as-of`, `backfill --since/--until`): source
//! commit times, compared with the audit files' `_cdc_ts`.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// Parses `2026-11-01`, `2026-11-01 12:00`, `2026-11-01 12:00:05.25` (UTC, `T` or a space
/// between date and time) or RFC 3339 with an offset (`2026-11-01T12:00:00+01:00`).
pub fn parse(text: &str) -> Result<DateTime<Utc>, String> {
    let s = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let naive = s.strip_suffix('Z').unwrap_or(s).replacen('T', " ", 1);
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(&naive, format) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(&naive, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    Err(format!(
        "{text:?} is not a time; write 2026-11-01, '2026-11-01 12:00[:00[.000000]]' (UTC) or 2026-11-01T12:00:00+01:00"
    ))
}

/// Microseconds since the epoch, as `_cdc_ts` holds them.
pub fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// `2026-11-01 12:00:00.000000 UTC`: how messages show a time.
pub fn show(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.6f UTC").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_utc_unless_an_offset_is_given() {
        let at = |s: &str| show(parse(s).unwrap());
        assert_eq!(at("2026-11-01"), "2026-11-01 00:00:00.000000 UTC");
        assert_eq!(at("2026-11-01 12:00"), "2026-11-01 12:00:00.000000 UTC");
        assert_eq!(at("2026-11-01T12:00:05"), "2026-11-01 12:00:05.000000 UTC");
        assert_eq!(
            at("2026-11-01 12:00:05.25"),
            "2026-11-01 12:00:05.250000 UTC"
        );
        assert_eq!(
            at("2026-11-01T12:00:05.123456Z"),
            "2026-11-01 12:00:05.123456 UTC"
        );
        assert_eq!(
            at("2026-11-01T12:00:00+01:00"),
            "2026-11-01 11:00:00.000000 UTC"
        );
        for bad in ["", "yesterday", "2026-13-01", "2026-11-01 25:00"] {
            assert!(parse(bad).unwrap_err().contains("is not a time"), "{bad}");
        }
    }
}
