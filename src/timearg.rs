//! Points in time on the command line (`query --as-of`, `backfill --since/--until`): source
//! commit times, compared with the audit files' `_cdc_ts`. The forms accepted and the text
//! shown are [`crate::types::time`]'s.

use chrono::{DateTime, Utc};

use crate::types::time;

/// A command-line value that is not a point in time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a time; write 2026-11-01, '2026-11-01 12:00[:00[.000000]]' (UTC) or 2026-11-01T12:00:00+01:00"
)]
pub struct NotATime(pub String);

/// Parses `2026-11-01`, `2026-11-01 12:00`, `2026-11-01 12:00:05.25` (UTC, `T` or a space
/// between date and time) or RFC 3339 with an offset (`2026-11-01T12:00:00+01:00`).
pub fn parse(text: &str) -> Result<DateTime<Utc>, NotATime> {
    time::parse_instant(text).ok_or_else(|| NotATime(text.to_string()))
}

/// Microseconds since the epoch, as `_cdc_ts` holds them.
pub fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// `2026-11-01 12:00:00.000000 UTC`: how messages show a time.
pub fn show(t: DateTime<Utc>) -> String {
    time::show_utc(t)
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
            assert!(
                parse(bad)
                    .unwrap_err()
                    .to_string()
                    .contains("is not a time"),
                "{bad}"
            );
        }
    }
}
