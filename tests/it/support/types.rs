//! The type table: one column per PostgreSQL type of the type map
//! ([`db_sync::types#the-type-map`]), with the expressions that render a PostgreSQL value and its
//! copy (in an audit file read by DuckDB, or in MariaDB) as comparable text, and how to compare
//! them. The type tests of audit files and apply share it.

/// How a PostgreSQL value and an audit value, both rendered as text, are compared.
#[derive(Clone, Copy, Debug)]
pub enum Cmp {
    Exact,
    /// Both parse to the same f32 (NaN equals NaN; -0 is not 0).
    F32,
    F64,
    /// Same number: trailing fraction zeros and a leading `+` do not count.
    Decimal,
    /// PostgreSQL's `extract(epoch)` µs of a timetz against Debezium's ZonedTime string: the
    /// same UTC time of day.
    TimeTz,
    /// Microseconds; the DuckDB side depends on how DuckDB reads Duration (BIGINT or INTERVAL).
    Duration,
}

/// A column of the type table: PostgreSQL and DuckDB expressions giving comparable text
/// (`{c}` is the column), how to compare, and the DuckDB types the audit column may read as.
pub struct Col {
    pub name: &'static str,
    pub pg: &'static str,
    pub duck: &'static str,
    pub cmp: Cmp,
    pub types: &'static [&'static str],
}

pub const PG_OUT: &str = "{c}"; // the type's own output text (simple query protocol)
pub const PG_TEXT: &str = "{c}::text";
pub const DUCK_TEXT: &str = "{c}::VARCHAR";
pub const PG_EPOCH_US: &str = "(extract(epoch FROM {c}) * 1000000)::bigint::text";
pub const DUCK_EPOCH_US: &str = "epoch_us({c})::VARCHAR";
pub const PG_DAYS: &str = "({c} - date '1970-01-01')::text";
pub const DUCK_DAYS: &str = "({c} - DATE '1970-01-01')::VARCHAR";
pub const PG_INT_LIST: &str = "CASE WHEN {c} IS NULL THEN NULL ELSE '[' || coalesce((SELECT string_agg(coalesce(e::text, 'NULL'), ',' ORDER BY i) FROM unnest({c}) WITH ORDINALITY AS u(e, i)), '') || ']' END";
pub const DUCK_INT_LIST: &str = "CASE WHEN {c} IS NULL THEN NULL ELSE '[' || coalesce(array_to_string(list_transform({c}, lambda x: coalesce(x::VARCHAR, 'NULL')), ','), '') || ']' END";
// Text elements as hex of their UTF-8 bytes, so commas, quotes and the string 'NULL' stay apart.
pub const PG_TEXT_LIST: &str = "CASE WHEN {c} IS NULL THEN NULL ELSE '[' || coalesce((SELECT string_agg(coalesce(encode(convert_to(e, 'UTF8'), 'hex'), 'NULL'), ',' ORDER BY i) FROM unnest({c}) WITH ORDINALITY AS u(e, i)), '') || ']' END";
pub const DUCK_TEXT_LIST: &str = "CASE WHEN {c} IS NULL THEN NULL ELSE '[' || coalesce(array_to_string(list_transform({c}, lambda x: coalesce(lower(hex(x)), 'NULL')), ','), '') || ']' END";
pub const DUCK_INTERVAL_US: &str = "(datepart('day', {c})::BIGINT * 86400000000 + datepart('hour', {c})::BIGINT * 3600000000 + datepart('minute', {c})::BIGINT * 60000000 + datepart('microseconds', {c}))::VARCHAR";

pub const fn col(
    name: &'static str,
    pg: &'static str,
    duck: &'static str,
    cmp: Cmp,
    types: &'static [&'static str],
) -> Col {
    Col {
        name,
        pg,
        duck,
        cmp,
        types,
    }
}

#[rustfmt::skip]
pub const COLS: &[Col] = &[
    col("c_int2",     PG_OUT,        DUCK_TEXT,          Cmp::Exact,    &["SMALLINT"]),
    col("c_int4",     PG_OUT,        DUCK_TEXT,          Cmp::Exact,    &["INTEGER"]),
    col("c_int8",     PG_OUT,        DUCK_TEXT,          Cmp::Exact,    &["BIGINT"]),
    col("c_real",     PG_OUT,        DUCK_TEXT,          Cmp::F32,      &["FLOAT"]),
    col("c_double",   PG_OUT,        DUCK_TEXT,          Cmp::F64,      &["DOUBLE"]),
    col("c_num",      PG_OUT,        DUCK_TEXT,          Cmp::Decimal,  &["DECIMAL(12,2)"]),
    col("c_num38",    PG_OUT,        DUCK_TEXT,          Cmp::Decimal,  &["DECIMAL(38,10)"]),
    col("c_num50",    PG_OUT,        DUCK_TEXT,          Cmp::Decimal,  &["VARCHAR"]),
    col("c_numu",     PG_OUT,        DUCK_TEXT,          Cmp::Decimal,  &["VARCHAR"]),
    col("c_money",    "{c}::numeric", DUCK_TEXT,         Cmp::Decimal,  &["DECIMAL(*,2)"]),
    col("c_bool",     PG_TEXT,       DUCK_TEXT,          Cmp::Exact,    &["BOOLEAN"]),
    col("c_text",     PG_OUT,        DUCK_TEXT,          Cmp::Exact,    &["VARCHAR"]),
    col("c_varchar",  PG_OUT,        DUCK_TEXT,          Cmp::Exact,    &["VARCHAR"]),
    // char(n) as PostgreSQL outputs it, blank-padded (a cast to text would trim).
    col("c_char",     PG_OUT,        DUCK_TEXT,          Cmp::Exact,    &["VARCHAR"]),
    col("c_bytea",    "encode({c}, 'hex')", "lower(hex({c}))", Cmp::Exact, &["BLOB"]),
    col("c_date",     PG_DAYS,       DUCK_DAYS,          Cmp::Exact,    &["DATE"]),
    col("c_ts",       PG_EPOCH_US,   DUCK_EPOCH_US,      Cmp::Exact,    &["TIMESTAMP"]),
    // timestamp(3) and time(3): Debezium's millisecond types under adaptive time precision.
    col("c_ts3",      PG_EPOCH_US,   DUCK_EPOCH_US,      Cmp::Exact,    &["TIMESTAMP", "TIMESTAMP_MS"]),
    col("c_tstz",     PG_EPOCH_US,   DUCK_EPOCH_US,      Cmp::Exact,    &["TIMESTAMP WITH TIME ZONE"]),
    col("c_time",     PG_EPOCH_US,   DUCK_EPOCH_US,      Cmp::Exact,    &["TIME"]),
    col("c_time3",    PG_EPOCH_US,   DUCK_EPOCH_US,      Cmp::Exact,    &["TIME"]),
    col("c_timetz",   PG_EPOCH_US,   "{c}",              Cmp::TimeTz,   &["VARCHAR"]),
    col("c_interval", PG_EPOCH_US,   DUCK_TEXT,          Cmp::Duration, &["BIGINT", "INTERVAL"]),
    col("c_uuid",     PG_OUT,        DUCK_TEXT,          Cmp::Exact,    &["VARCHAR"]),
    col("c_json",     PG_OUT,        DUCK_TEXT,          Cmp::Exact,    &["VARCHAR", "JSON"]),
    col("c_jsonb",    PG_OUT,        DUCK_TEXT,          Cmp::Exact,    &["VARCHAR", "JSON"]),
    col("c_enum",     PG_OUT,        DUCK_TEXT,          Cmp::Exact,    &["VARCHAR"]),
    // inet as output (a cast to text would add /32).
    col("c_inet",     PG_OUT,        DUCK_TEXT,          Cmp::Exact,    &["VARCHAR"]),
    col("c_cidr",     PG_OUT,        DUCK_TEXT,          Cmp::Exact,    &["VARCHAR"]),
    col("c_macaddr",  PG_OUT,        DUCK_TEXT,          Cmp::Exact,    &["VARCHAR"]),
    col("c_xml",      PG_TEXT,       DUCK_TEXT,          Cmp::Exact,    &["VARCHAR"]),
    col("c_ints",     PG_INT_LIST,   DUCK_INT_LIST,      Cmp::Exact,    &["INTEGER[]"]),
    col("c_texts",    PG_TEXT_LIST,  DUCK_TEXT_LIST,     Cmp::Exact,    &["VARCHAR[]"]),
];

pub const TYPES_SCHEMA: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy 😀');
CREATE TABLE all_types (
  id int PRIMARY KEY,
  c_int2 smallint, c_int4 integer, c_int8 bigint,
  c_real real, c_double double precision,
  c_num numeric(12,2), c_num38 numeric(38,10), c_num50 numeric(50,20), c_numu numeric,
  c_money money, c_bool boolean,
  c_text text, c_varchar varchar(20), c_char char(5), c_bytea bytea,
  c_date date, c_ts timestamp(6), c_ts3 timestamp(3), c_tstz timestamptz(6),
  c_time time(6), c_time3 time(3), c_timetz timetz, c_interval interval,
  c_uuid uuid, c_json json, c_jsonb jsonb, c_enum mood,
  c_inet inet, c_cidr cidr, c_macaddr macaddr, c_xml xml,
  c_ints int[], c_texts text[]
);
-- 1: every column NULL.
INSERT INTO all_types (id) VALUES (1);
-- 2: minimums, negatives, empties, 1900.
INSERT INTO all_types (id, c_int2, c_int4, c_int8, c_real, c_double, c_num, c_num38, c_num50, c_numu,
  c_money, c_bool, c_text, c_varchar, c_char, c_bytea, c_date, c_ts, c_ts3, c_tstz, c_time, c_time3,
  c_timetz, c_interval, c_uuid, c_json, c_jsonb, c_enum, c_inet, c_cidr, c_macaddr, c_xml, c_ints, c_texts)
VALUES (2, -32768, -2147483648, -9223372036854775808, '-3.4028235e+38', '-1.7976931348623157e+308',
  -9999999999.99, '-9999999999999999999999999999.9999999999',
  '-999999999999999999999999999999.99999999999999999999', '-1234567890123456789012345678901234567890',
  '-9999999999.99', false, '', '', '', '\x', '1900-01-01', '1900-01-01 00:00:00.000001',
  '1900-01-01 00:00:00.001', '1900-06-15 12:34:56.789012+00', '00:00:00', '00:00:00', '00:00:00+00',
  '-3 days -00:00:00.000001', '00000000-0000-0000-0000-000000000000', '{}', '[]', 'sad', '0.0.0.0',
  '0.0.0.0/0', '00:00:00:00:00:00', '<a/>', '{}', '{}');
-- 3: maximums, unicode, year 9999.
INSERT INTO all_types (id, c_int2, c_int4, c_int8, c_real, c_double, c_num, c_num38, c_num50, c_numu,
  c_money, c_bool, c_text, c_varchar, c_char, c_bytea, c_date, c_ts, c_ts3, c_tstz, c_time, c_time3,
  c_timetz, c_interval, c_uuid, c_json, c_jsonb, c_enum, c_inet, c_cidr, c_macaddr, c_xml, c_ints, c_texts)
VALUES (3, 32767, 2147483647, 9223372036854775807, '3.4028235e+38', '1.7976931348623157e+308',
  9999999999.99, '9999999999999999999999999999.9999999999',
  '999999999999999999999999999999.99999999999999999999', '0.0000000000000000000000000000000000000001',
  '9999999999.99', true, E'tab\t nl\n cr\r quote'' dq" backslash\\ ctl\x01 ünïcödé ✓ 中文 😀',
  repeat('😀', 20), 'ü😀', '\x00017f80feff', '9999-12-31', '9999-12-31 23:59:59.999999',
  '9999-12-31 23:59:59.999', '9999-12-31 23:59:59.999999+00', '23:59:59.999999', '23:59:59.999',
  '23:59:59.999999+14', '100000 hours 0.000001 seconds', 'ffffffff-ffff-ffff-ffff-ffffffffffff',
  '{"k": [1, 2.5, "x"],  "e": "😀", "n": null}', '{"b": {"c": null}, "a": 1, "u": "ü"}', 'happy 😀',
  '2001:db8::1/64', '2001:db8::/32', '08:00:2b:01:02:03', '<r a="1">ü &amp; 😀</r>',
  '{2147483647,NULL,-2147483648}', ARRAY['a,b', NULL, '', '😀', 'quote"', 'NULL', '{x}']);
-- 4: zeros, the epoch, NaN, a JSON null, arrays of one NULL.
INSERT INTO all_types (id, c_int2, c_int4, c_int8, c_real, c_double, c_num, c_num38, c_num50, c_numu,
  c_money, c_bool, c_text, c_date, c_ts, c_ts3, c_tstz, c_time, c_time3, c_timetz, c_interval, c_json,
  c_ints, c_texts)
VALUES (4, 0, 0, 0, '-0', 'NaN', 0, 0, '-12345678901234567890.123456789', '123.450', 0, true, 'x',
  '1970-01-01', '1970-01-01 00:00:00', '1970-01-01 00:00:00', '1970-01-01 00:00:00+00', '12:00:00.5',
  '12:00:00.5', '12:34:56.789+02', '0', 'null', '{NULL}', '{NULL}');
-- 5: past the nanosecond range of i64 (2262-04-11T23:47:16.854775807), infinities.
INSERT INTO all_types (id, c_int8, c_real, c_double, c_num38, c_numu, c_date, c_ts, c_ts3, c_tstz, c_time)
VALUES (5, -1, 'Infinity', 'Infinity', '0.0000000001', '-0.5', '2262-04-12', '2262-04-11 23:47:16.854776',
  '2262-04-11 23:47:16.855', '2262-04-12 00:00:00.000001+00', '00:00:00.000001');
-- 6: just before the epoch, with fractions; a timetz whose UTC time is the day before.
INSERT INTO all_types (id, c_real, c_double, c_num, c_date, c_ts, c_ts3, c_tstz, c_time3, c_timetz, c_interval)
VALUES (6, 'NaN', '-Infinity', -0.01, '1969-12-31', '1969-12-31 23:59:59.999999', '1969-12-31 23:59:59.999',
  '1969-07-20 20:17:40.123456+00', '00:00:00.001', '01:00:00.5+02', '-00:00:00.000001');
-- 7: a 1 MB text (multi-byte characters too) and a 256 KB bytea.
INSERT INTO all_types (id, c_text, c_bytea)
VALUES (7, repeat('0123456789abcdé😀', 52429), decode(repeat('deadbeef', 65536), 'hex'));
"#;
pub const TYPE_ROWS: usize = 7;

pub fn subst(template: &str, column: &str) -> String {
    template.replace("{c}", column)
}

pub fn same_value(cmp: Cmp, pg: &str, audit: &str) -> bool {
    match cmp {
        Cmp::Exact | Cmp::Duration => pg == audit,
        Cmp::F32 => match (pg.parse::<f32>(), audit.parse::<f32>()) {
            (Ok(a), Ok(b)) => a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
            _ => false,
        },
        Cmp::F64 => match (pg.parse::<f64>(), audit.parse::<f64>()) {
            (Ok(a), Ok(b)) => a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()),
            _ => false,
        },
        Cmp::Decimal => canonical_decimal(pg) == canonical_decimal(audit),
        Cmp::TimeTz => {
            pg.parse::<i64>().ok().map(|us| us.rem_euclid(DAY_US)) == utc_time_of_day_us(audit)
        }
    }
}

pub fn canonical_decimal(s: &str) -> String {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let body = if frac.is_empty() {
        int.to_string()
    } else {
        format!("{int}.{frac}")
    };
    if negative && body != "0" {
        format!("-{body}")
    } else {
        body
    }
}

pub const DAY_US: i64 = 86_400_000_000;

/// `HH:MM:SS[.ffffff](Z|±HH[:MM[:SS]])` as microseconds after midnight UTC.
pub fn utc_time_of_day_us(s: &str) -> Option<i64> {
    let (time, offset_s) = if let Some(t) = s.strip_suffix('Z') {
        (t, 0)
    } else {
        let at = s.rfind(['+', '-'])?;
        let (t, zone) = s.split_at(at);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let mut secs = 0;
        for (i, part) in zone[1..].split(':').enumerate() {
            secs += part.parse::<i64>().ok()? * [3600, 60, 1].get(i)?;
        }
        (t, sign * secs)
    };
    let mut hms = time.split(':');
    let h: i64 = hms.next()?.parse().ok()?;
    let m: i64 = hms.next()?.parse().ok()?;
    let sec_part = hms.next()?;
    let (sec, frac) = sec_part.split_once('.').unwrap_or((sec_part, ""));
    let sec: i64 = sec.parse().ok()?;
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let micros: i64 = format!("{frac:0<6}").parse().ok()?;
    Some((((h * 60 + m) * 60 + sec - offset_s) * 1_000_000 + micros).rem_euclid(DAY_US))
}

pub fn shown(v: &Option<String>) -> String {
    match v {
        None => "NULL".into(),
        Some(s) if s.chars().count() > 100 => format!(
            "{:?}… ({} bytes)",
            s.chars().take(60).collect::<String>(),
            s.len()
        ),
        Some(s) => format!("{s:?}"),
    }
}

/// `pattern` with `*` standing for any text.
pub fn type_matches(pattern: &str, actual: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == actual,
        Some((head, tail)) => {
            actual.len() >= head.len() + tail.len()
                && actual.starts_with(head)
                && actual.ends_with(tail)
        }
    }
}
