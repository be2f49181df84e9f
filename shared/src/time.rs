//! Exchange timestamps.
//!
//! Every timestamp that enters a record key is a whole number of Unix milliseconds (`i64`).
//! The WebSocket gives `ts_ms`; REST gives RFC 3339 text, sometimes with microseconds. Both are
//! normalised here by flooring to the millisecond, so one trade seen by WS and by REST has one key.
//! It must never round a timestamp up.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Why a timestamp text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid RFC 3339 timestamp {text:?}: {reason}")]
pub struct TimestampError {
    pub text: String,
    pub reason: String,
}

/// Parses RFC 3339 text (any offset, any fraction) into Unix milliseconds, flooring.
pub fn parse_rfc3339_ms(text: &str) -> Result<i64, TimestampError> {
    parse_rfc3339_us(text).map(|us| us.div_euclid(1_000))
}

/// A time given on a command line (`--from`, `--to`): Unix milliseconds or RFC 3339.
pub fn parse_cli_ms(text: &str) -> Result<i64, CliTimeError> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    parse_rfc3339_ms(text).map_err(|e| CliTimeError {
        text: e.text,
        reason: e.reason,
    })
}

/// Why a command line's time was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is neither RFC 3339 nor Unix milliseconds: {reason}")]
pub struct CliTimeError {
    pub text: String,
    pub reason: String,
}

/// Parses RFC 3339 text into Unix microseconds, flooring finer fractions.
pub fn parse_rfc3339_us(text: &str) -> Result<i64, TimestampError> {
    let err = |reason: String| TimestampError {
        text: text.chars().take(64).collect(),
        reason,
    };
    if text.len() > 64 {
        return Err(err("too long".into()));
    }
    let dt = OffsetDateTime::parse(text, &Rfc3339).map_err(|e| err(e.to_string()))?;
    let nanos = dt.unix_timestamp_nanos();
    i64::try_from(nanos.div_euclid(1_000)).map_err(|_| err("out of range".into()))
}

/// Formats Unix milliseconds as RFC 3339 UTC with millisecond precision (`...T20:44:01.123Z`).
pub fn format_rfc3339_ms(ms: i64) -> String {
    format_with_fraction(ms.div_euclid(1_000), ms.rem_euclid(1_000) as u32, 3)
}

/// Formats Unix microseconds as RFC 3339 UTC with microsecond precision.
pub fn format_rfc3339_us(us: i64) -> String {
    format_with_fraction(us.div_euclid(1_000_000), us.rem_euclid(1_000_000) as u32, 6)
}

/// Formats Unix seconds as RFC 3339 UTC without a fraction (`...T20:44:01Z`).
pub fn format_rfc3339_s(secs: i64) -> String {
    format_with_fraction(secs, 0, 0)
}

fn format_with_fraction(secs: i64, frac: u32, digits: usize) -> String {
    let dt = OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let base = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    );
    if digits == 0 {
        format!("{base}Z")
    } else {
        format!("{base}.{frac:0digits$}Z")
    }
}

/// The current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    now_us().div_euclid(1_000)
}

/// The current time in Unix microseconds.
pub fn now_us() -> i64 {
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
    i64::try_from(nanos.div_euclid(1_000)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_to_the_millisecond() {
        assert_eq!(
            parse_rfc3339_ms("2026-09-16T17:54:15.469939Z").unwrap(),
            1_789_581_255_469
        );
        assert_eq!(
            parse_rfc3339_ms("2026-09-16T17:54:15Z").unwrap(),
            1_789_581_255_000
        );
        assert_eq!(
            parse_rfc3339_ms("2026-09-16T19:54:15.5+02:00").unwrap(),
            1_789_581_255_500
        );
        // Before the epoch, floor goes down, not towards zero.
        assert_eq!(parse_rfc3339_ms("1969-12-31T23:59:59.9995Z").unwrap(), -1);
        // RFC 3339 allows a space for the `T`; accepted as the same instant.
        assert_eq!(
            parse_rfc3339_ms("2026-09-16 17:54:15Z").unwrap(),
            1_789_581_255_000
        );
        assert!(
            parse_rfc3339_ms("2026-09-16T17:54:15").is_err(),
            "an offset is required"
        );
        assert!(parse_rfc3339_ms("yesterday").is_err());
    }

    #[test]
    fn formats_round_trip() {
        let ms = 1_669_149_841_123;
        assert_eq!(format_rfc3339_ms(ms), "2022-11-22T20:44:01.123Z");
        assert_eq!(parse_rfc3339_ms(&format_rfc3339_ms(ms)).unwrap(), ms);
        let us = 1_789_581_255_469_939;
        assert_eq!(format_rfc3339_us(us), "2026-09-16T17:54:15.469939Z");
        assert_eq!(parse_rfc3339_us(&format_rfc3339_us(us)).unwrap(), us);
        assert_eq!(format_rfc3339_s(1_669_149_841), "2022-11-22T20:44:01Z");
        assert_eq!(format_rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
    }
}
