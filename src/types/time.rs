//! Dates and times as text, in one place: the journal dump's values, Debezium's
//! `ZonedTimestamp` strings, the MySQL values apply writes, and points in time on the command
//! line all format and parse here.
//!
//! The numbers: a date is days since 1970-01-01, a timestamp is µs (or ns) since 1970-01-01
//! 00:00:00 UTC, a time of day is µs since midnight. Values before 1970 are negative and split
//! by floor division: -1 µs is 1969-12-31 23:59:59.999999, never a truncated second.
//!
//! The calendar is the proleptic Gregorian one with ISO 8601 year numbers: year 0 is 1 BC,
//! year -43 is 44 BC. Years 0 to 9999 are written with four digits, any other year with a sign
//! and at least four digits (`+10000-01-01`, `-0043-03-15`), as Debezium (Java's ISO
//! formatter) and chrono write them. RFC 3339 parsers refuse both; [`parse_zoned_timestamp`]
//! reads them exactly, as PostgreSQL holds them.

use std::io::Write as _;

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Timelike, Utc};

/// A `ZonedTimestamp` text that is not one: a bridge bug or corruption.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad zoned timestamp {0:?}")]
pub struct BadTimestamp(pub String);

/// How many fraction digits a timestamp's text has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fraction {
    Micros,
    Nanos,
}

/// The date `days` after 1970-01-01 (before it when negative); `None` beyond chrono's years
/// (±262,143).
pub fn date(days: i64) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(1970, 1, 1)?.checked_add_signed(chrono::TimeDelta::try_days(days)?)
}

/// The UTC date and time `us` µs after the epoch (floor division before it).
pub fn timestamp_us(us: i64) -> Option<NaiveDateTime> {
    DateTime::from_timestamp_micros(us).map(|t| t.naive_utc())
}

/// The UTC date and time `ns` ns after the epoch (floor division before it).
pub fn timestamp_ns(ns: i64) -> Option<NaiveDateTime> {
    let nanos = ns.rem_euclid(1_000_000_000) as u32;
    DateTime::from_timestamp(ns.div_euclid(1_000_000_000), nanos).map(|t| t.naive_utc())
}

/// Appends `YYYY-MM-DD` (a signed year outside 0..=9999: see the module doc).
pub fn write_date(out: &mut Vec<u8>, d: &impl Datelike) {
    let year = d.year();
    if (0..=9999).contains(&year) {
        write_digits(out, year as u32, 4);
    } else {
        let _ = write!(out, "{year:+05}");
    }
    out.push(b'-');
    write_digits(out, d.month(), 2);
    out.push(b'-');
    write_digits(out, d.day(), 2);
}

/// Appends `YYYY-MM-DD<sep>HH:MM:SS.ffffff` (or nine fraction digits).
pub fn write_timestamp(out: &mut Vec<u8>, t: &NaiveDateTime, sep: u8, fraction: Fraction) {
    write_date(out, t);
    out.push(sep);
    // A leap second (never made from a count of µs, but chrono parses `:60`) shows as :60.
    let nanos = t.nanosecond();
    write_digits(out, t.hour(), 2);
    out.push(b':');
    write_digits(out, t.minute(), 2);
    out.push(b':');
    write_digits(out, t.second() + nanos / 1_000_000_000, 2);
    out.push(b'.');
    match fraction {
        Fraction::Micros => write_digits(out, nanos / 1000 % 1_000_000, 6),
        Fraction::Nanos => write_digits(out, nanos % 1_000_000_000, 9),
    }
}

/// Appends `HH:MM:SS.ffffff` for `us` µs (hours past 24 as they are: MySQL's TIME and
/// PostgreSQL's `24:00:00` need them).
pub fn write_clock_us(out: &mut Vec<u8>, us: u64) {
    let _ = write!(
        out,
        "{:02}:{:02}:{:02}.{:06}",
        us / 3_600_000_000,
        us / 60_000_000 % 60,
        us / 1_000_000 % 60,
        us % 1_000_000
    );
}

/// `v` as exactly `width` decimal digits (zero-padded; `v` has at most `width` digits). Digits
/// are written directly: this is the hot path of every DATE and DATETIME value apply writes.
fn write_digits(out: &mut Vec<u8>, mut v: u32, width: usize) {
    let start = out.len();
    out.resize(start + width, b'0');
    for slot in out[start..].iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

fn text(out: Vec<u8>) -> String {
    // Every writer above appends ASCII digits and separators only.
    String::from_utf8(out).expect("date and time text is ASCII")
}

/// Days since 1970-01-01 as `YYYY-MM-DD`; `"<days> days"` beyond chrono's years.
pub fn format_date(days: i64) -> String {
    match date(days) {
        Some(d) => {
            let mut out = Vec::with_capacity(10);
            write_date(&mut out, &d);
            text(out)
        }
        None => format!("{days} days"),
    }
}

/// µs since the epoch as ISO 8601 (`1969-12-31T23:59:59.999999`, with `Z` when `utc`);
/// `"<us> us"` beyond chrono's years.
pub fn format_timestamp_us(us: i64, utc: bool) -> String {
    match timestamp_us(us) {
        Some(t) => {
            let mut out = Vec::with_capacity(28);
            write_timestamp(&mut out, &t, b'T', Fraction::Micros);
            if utc {
                out.push(b'Z');
            }
            text(out)
        }
        None => format!("{us} us"),
    }
}

/// ns since the epoch as ISO 8601 with nine fraction digits; `"<ns> ns"` when out of range.
pub fn format_timestamp_ns(ns: i64) -> String {
    match timestamp_ns(ns) {
        Some(t) => {
            let mut out = Vec::with_capacity(30);
            write_timestamp(&mut out, &t, b'T', Fraction::Nanos);
            text(out)
        }
        None => format!("{ns} ns"),
    }
}

/// µs since midnight as `HH:MM:SS.ffffff` (24:00:00 is valid in PostgreSQL); a negative
/// value, which no time of day has, shows as midnight.
pub fn format_time_us(us: i64) -> String {
    let mut out = Vec::with_capacity(15);
    write_clock_us(&mut out, us.max(0) as u64);
    text(out)
}

/// `2026-11-01 12:00:00.000000 UTC`: how messages show a point in time.
pub fn show_utc(t: DateTime<Utc>) -> String {
    let mut out = Vec::with_capacity(30);
    write_timestamp(&mut out, &t.naive_utc(), b' ', Fraction::Micros);
    out.extend_from_slice(b" UTC");
    text(out)
}

/// A point in time as people write one: `2026-11-01`, `2026-11-01 12:00`,
/// `2026-11-01 12:00:05.25` (UTC; `T` or a space between date and time, an optional `Z`) or
/// RFC 3339 with an offset (`2026-11-01T12:00:00+01:00`).
pub fn parse_instant(text: &str) -> Option<DateTime<Utc>> {
    let s = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    let naive = s.strip_suffix('Z').unwrap_or(s).replacen('T', " ", 1);
    for format in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(&naive, format) {
            return Some(t.and_utc());
        }
    }
    let d = NaiveDate::parse_from_str(&naive, "%Y-%m-%d").ok()?;
    Some(d.and_time(chrono::NaiveTime::MIN).and_utc())
}

/// Debezium's `ZonedTimestamp` text (`2026-01-02T03:04:05.123456Z`, any offset) as UTC µs.
/// Years beyond 9999 and before year 1 are read exactly (see the module doc); PostgreSQL's
/// `infinity` / `-infinity` become the extreme values PostgreSQL itself uses.
pub fn parse_zoned_timestamp(v: &str) -> Result<i64, BadTimestamp> {
    match v {
        "infinity" => return Ok(i64::MAX),
        "-infinity" => return Ok(i64::MIN),
        _ => {}
    }
    parse_iso_instant(v).ok_or_else(|| BadTimestamp(v.to_string()))
}

/// `[±]YYYY…-MM-DDTHH:MM:SS[.f…](Z|±HH:MM[:SS])` as UTC µs; fractions beyond µs are dropped.
fn parse_iso_instant(v: &str) -> Option<i64> {
    let (year, rest) = split_year(v)?;
    let b = rest.as_bytes();
    // MM-DDTHH:MM:SS
    if b.get(2) != Some(&b'-') || b.get(5) != Some(&b'T') || b.get(8) != Some(&b':') {
        return None;
    }
    if b.get(11) != Some(&b':') {
        return None;
    }
    let (month, day) = (digits(b, 0, 2)?, digits(b, 3, 2)?);
    let (hour, minute, second) = (digits(b, 6, 2)?, digits(b, 9, 2)?, digits(b, 12, 2)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 24 || minute > 59 || second > 60 {
        return None;
    }
    let (micros, at) = fraction_us(b, 14)?;
    let offset_secs = zone_offset_secs(&b[at..])?;
    let days = days_from_civil(year, month, day);
    let secs = days
        .checked_mul(86_400)?
        .checked_add(hour * 3600 + minute * 60 + second)?
        .checked_sub(offset_secs)?;
    secs.checked_mul(1_000_000)?.checked_add(micros)
}

/// The signed year of an ISO date (at least four digits) and the text after its `-`.
fn split_year(v: &str) -> Option<(i64, &str)> {
    let (negative, rest) = match v.as_bytes().first()? {
        b'+' => (false, &v[1..]),
        b'-' => (true, &v[1..]),
        _ => (false, v),
    };
    let dash = rest.find('-')?;
    let year_digits = &rest[..dash];
    if year_digits.len() < 4 || !year_digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year: i64 = year_digits.parse().ok()?;
    Some((if negative { -year } else { year }, &rest[dash + 1..]))
}

/// The number written by the `n` ASCII digits at `at`.
fn digits(b: &[u8], at: usize, n: usize) -> Option<i64> {
    let s = b.get(at..at + n)?;
    s.iter()
        .all(u8::is_ascii_digit)
        .then(|| s.iter().fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0')))
}

/// An optional `.f…` (1 to 9 digits) at `at`, as µs, and where the text after it starts.
fn fraction_us(b: &[u8], mut at: usize) -> Option<(i64, usize)> {
    if b.get(at) != Some(&b'.') {
        return Some((0, at));
    }
    at += 1;
    let start = at;
    while b.get(at).is_some_and(u8::is_ascii_digit) {
        at += 1;
    }
    let n = at - start;
    if n == 0 || n > 9 {
        return None;
    }
    // Nanoseconds to microseconds; PostgreSQL has no finer unit.
    let nanos = digits(b, start, n)? * 10i64.pow(9 - n as u32);
    Some((nanos / 1000, at))
}

/// `Z`, `±HH:MM` or `±HH:MM:SS` (the whole rest of the text) as seconds east of UTC.
fn zone_offset_secs(b: &[u8]) -> Option<i64> {
    match b.first()? {
        b'Z' if b.len() == 1 => Some(0),
        sign @ (b'+' | b'-') => {
            let zone = &b[1..];
            let secs = match zone.len() {
                5 if zone[2] == b':' => digits(zone, 0, 2)? * 3600 + digits(zone, 3, 2)? * 60,
                8 if zone[2] == b':' && zone[5] == b':' => {
                    digits(zone, 0, 2)? * 3600 + digits(zone, 3, 2)? * 60 + digits(zone, 6, 2)?
                }
                _ => return None,
            };
            Some(if *sign == b'-' { -secs } else { secs })
        }
        _ => None,
    }
}

fn is_leap(year: i64) -> bool {
    year.rem_euclid(4) == 0 && (year.rem_euclid(100) != 0 || year.rem_euclid(400) == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date, for any year (ISO numbering: year 0
/// is 1 BC).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Midnight UTC of a proleptic Gregorian date, in µs since the epoch (chrono's count).
    fn midnight_us(y: i32, m: u32, d: u32) -> i64 {
        NaiveDate::from_ymd_opt(y, m, d)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_micros()
    }

    #[test]
    fn zoned_timestamps_parse_to_utc_micros() {
        assert_eq!(parse_zoned_timestamp("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(
            parse_zoned_timestamp("1969-12-31T23:59:59.999999Z").unwrap(),
            -1
        );
        assert_eq!(
            parse_zoned_timestamp("1970-01-01T01:00:00+01:00").unwrap(),
            0
        );
        assert_eq!(parse_zoned_timestamp("infinity").unwrap(), i64::MAX);
        assert!(parse_zoned_timestamp("yesterday").is_err());
        assert!(parse_zoned_timestamp("2026-02-30T00:00:00Z").is_err());
        // Beyond RFC 3339: year 10000 and 44 BC (ISO year -43), as chrono computes them.
        let chrono_us = midnight_us;
        assert_eq!(
            parse_zoned_timestamp("+10000-01-01T00:00:00Z").unwrap(),
            chrono_us(10000, 1, 1)
        );
        assert_eq!(
            parse_zoned_timestamp("-0043-03-15T00:00:00Z").unwrap(),
            chrono_us(-43, 3, 15)
        );
        assert_eq!(
            parse_zoned_timestamp("-0043-03-15T01:00:00.5+01:00").unwrap(),
            chrono_us(-43, 3, 15) + 500_000
        );
        assert_eq!(
            parse_zoned_timestamp("2026-11-27T10:00:00.123456789Z").unwrap() % 1_000_000,
            123_456
        );
    }

    #[test]
    fn negative_values_floor_to_the_instant_before() {
        assert_eq!(format_timestamp_us(-1, true), "1969-12-31T23:59:59.999999Z");
        assert_eq!(
            format_timestamp_us(-1_500_000, false),
            "1969-12-31T23:59:58.500000"
        );
        assert_eq!(format_timestamp_ns(-1), "1969-12-31T23:59:59.999999999");
        assert_eq!(format_date(-1), "1969-12-31");
        assert_eq!(format_date(-719_528), "0000-01-01");
        // Truncating division would put -1 µs in 1970 and its fraction below zero.
        assert_eq!(
            timestamp_us(-1).unwrap().date(),
            NaiveDate::from_ymd_opt(1969, 12, 31).unwrap()
        );
        assert_eq!(timestamp_ns(-1).unwrap().nanosecond(), 999_999_999);
    }

    #[test]
    fn years_beyond_9999_and_bc_carry_a_sign() {
        let us = midnight_us;
        assert_eq!(
            format_timestamp_us(us(10000, 1, 1), true),
            "+10000-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            format_timestamp_us(us(-43, 3, 15), true),
            "-0043-03-15T00:00:00.000000Z"
        );
        assert_eq!(
            format_timestamp_us(us(9999, 12, 31), false),
            "9999-12-31T00:00:00.000000"
        );
        assert_eq!(format_date(days_from_civil(-1, 12, 31)), "-0001-12-31");
        assert_eq!(format_date(days_from_civil(10000, 1, 1)), "+10000-01-01");
        // What the journal dump writes, the ZonedTimestamp parser reads back.
        for v in [
            us(10000, 1, 1) + 1,
            us(-43, 3, 15) - 1,
            us(0, 1, 1),
            -1,
            0,
            us(2026, 11, 1) + 123_456,
        ] {
            assert_eq!(
                parse_zoned_timestamp(&format_timestamp_us(v, true)).unwrap(),
                v
            );
        }
    }

    #[test]
    fn civil_days_agree_with_chrono_across_eras() {
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
        for (y, m, d) in [
            (1970, 1, 1),
            (1969, 12, 31),
            (2000, 2, 29),
            (1900, 3, 1),
            (0, 2, 29),
            (-43, 3, 15),
            (-400, 1, 1),
            (10000, 12, 31),
        ] {
            let want = (NaiveDate::from_ymd_opt(y, m, d).unwrap() - epoch).num_days();
            assert_eq!(
                days_from_civil(i64::from(y), i64::from(m), i64::from(d)),
                want,
                "{y}-{m}-{d}"
            );
        }
    }

    #[test]
    fn times_of_day_and_messages() {
        assert_eq!(format_time_us(86_400_000_000), "24:00:00.000000");
        assert_eq!(format_time_us(3_723_000_004), "01:02:03.000004");
        let mut out = Vec::new();
        write_clock_us(&mut out, 838 * 3_600_000_000);
        assert_eq!(out, b"838:00:00.000000");
        let t = parse_instant("2026-11-01T12:00:05.25+01:00").unwrap();
        assert_eq!(show_utc(t), "2026-11-01 11:00:05.250000 UTC");
        assert_eq!(parse_instant("2026-13-01"), None);
    }
}
