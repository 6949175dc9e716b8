//! Numbers and booleans that may also be written as strings: a `${VAR}` always substitutes a
//! string (its exact text), so `batch_rows: ${BATCH_ROWS}` must still read as a number.

use std::fmt::Display;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

/// `T` as itself, or parsed from a string.
pub fn parse<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + FromStr,
    T::Err: Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either<T> {
        Value(T),
        Text(String),
    }
    match Either::<T>::deserialize(d)? {
        Either::Value(v) => Ok(v),
        Either::Text(s) => from_text(&s),
    }
}

/// `s` parsed as `T`, or an error that says what the value should be.
fn from_text<T, E>(s: &str) -> Result<T, E>
where
    T: FromStr,
    T::Err: Display,
    E: serde::de::Error,
{
    s.trim().parse().map_err(|e| {
        let want = std::any::type_name::<T>();
        let want = want.rsplit("::").next().unwrap_or(want);
        let want = if want == "bool" {
            "true or false"
        } else {
            "a whole number"
        };
        E::custom(format!("{s:?} is not {want} ({e})"))
    })
}

/// [`parse`] for an optional value: `null` (or no key) is `None`.
pub fn parse_opt<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + FromStr,
    T::Err: Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either<T> {
        Value(T),
        Text(String),
    }
    match Option::<Either<T>>::deserialize(d)? {
        None => Ok(None),
        Some(Either::Value(v)) => Ok(Some(v)),
        Some(Either::Text(s)) => from_text(&s).map(Some),
    }
}
