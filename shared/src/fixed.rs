//! Fixed-point money and sizes.
//!
//! Kalshi sends prices as dollar strings (`"0.5600"`, `"0.960"`) and contract counts as
//! two-decimal strings (`"136.00"`), sometimes as JSON numbers. This module owns their exact
//! representation: [`Price`] is an integer number of micro-dollars (1e-6 USD) and [`Quantity`]
//! an integer number of centi-contracts (0.01). Nothing here ever goes through a float: text is
//! parsed digit by digit, and a value with more precision than the type holds is an error, never
//! a rounding. Arithmetic is checked; there is no operator that can overflow silently.
//!
//! It must never convert through `f64`, round, or wrap.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a fixed-point text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FixedError {
    #[error("empty fixed-point value")]
    Empty,
    #[error(
        "invalid fixed-point value {0:?}: expected digits with an optional sign and decimal point"
    )]
    Invalid(String),
    #[error("fixed-point value {value:?} has more than {max} decimal places")]
    TooPrecise { value: String, max: u32 },
    #[error("fixed-point value {0:?} is out of range")]
    Overflow(String),
}

/// Longest text accepted, so that a hostile input cannot make parsing expensive.
const MAX_TEXT_LEN: usize = 64;

/// Parses `text` into an integer scaled by `10^scale`.
///
/// Accepts an optional sign, digits, an optional fraction and an optional exponent (JSON numbers
/// may use one). Trailing zeros beyond `scale` are accepted because they do not change the value;
/// any other digit beyond `scale` is [`FixedError::TooPrecise`].
pub fn parse_scaled(text: &str, scale: u32) -> Result<i64, FixedError> {
    let invalid = || FixedError::Invalid(truncate(text));
    if text.is_empty() {
        return Err(FixedError::Empty);
    }
    if text.len() > MAX_TEXT_LEN {
        return Err(invalid());
    }
    let bytes = text.as_bytes();
    let (negative, rest) = match bytes[0] {
        b'-' => (true, &bytes[1..]),
        b'+' => (false, &bytes[1..]),
        _ => (false, bytes),
    };
    // Split off an exponent.
    let (mantissa, exponent) = match rest.iter().position(|b| *b == b'e' || *b == b'E') {
        Some(i) => {
            let exp_text = std::str::from_utf8(&rest[i + 1..]).map_err(|_| invalid())?;
            let exp: i32 = exp_text.parse().map_err(|_| invalid())?;
            if !(-40..=40).contains(&exp) {
                return Err(FixedError::Overflow(truncate(text)));
            }
            (&rest[..i], exp)
        }
        None => (rest, 0),
    };
    let (int_part, frac_part) = match mantissa.iter().position(|b| *b == b'.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, &[][..]),
    };
    if int_part.is_empty() || (mantissa.len() > int_part.len() && frac_part.is_empty()) {
        return Err(invalid());
    }
    if !int_part.iter().all(u8::is_ascii_digit) || !frac_part.iter().all(u8::is_ascii_digit) {
        return Err(invalid());
    }
    // digits = int_part ++ frac_part, value = digits * 10^(exponent - frac_len)
    let shift = exponent - frac_part.len() as i32 + scale as i32;
    let digits = int_part.iter().chain(frac_part.iter()).copied();
    let total = int_part.len() + frac_part.len();
    let mut acc: i64 = 0;
    if shift >= 0 {
        for d in digits {
            acc = mul_add(acc, d, text)?;
        }
        for _ in 0..shift {
            acc = acc
                .checked_mul(10)
                .ok_or_else(|| FixedError::Overflow(truncate(text)))?;
        }
    } else {
        let drop = (-shift) as usize;
        let keep = total.saturating_sub(drop);
        for (i, d) in digits.enumerate() {
            if i < keep {
                acc = mul_add(acc, d, text)?;
            } else if d != b'0' {
                return Err(FixedError::TooPrecise {
                    value: truncate(text),
                    max: scale,
                });
            }
        }
    }
    Ok(if negative { -acc } else { acc })
}

fn mul_add(acc: i64, digit: u8, text: &str) -> Result<i64, FixedError> {
    acc.checked_mul(10)
        .and_then(|v| v.checked_add(i64::from(digit - b'0')))
        .ok_or_else(|| FixedError::Overflow(truncate(text)))
}

fn truncate(text: &str) -> String {
    if text.len() <= MAX_TEXT_LEN {
        text.to_owned()
    } else {
        let mut end = MAX_TEXT_LEN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &text[..end])
    }
}

/// Formats `value / 10^scale` with at least `min_decimals` and at most `scale` decimals,
/// dropping only trailing zeros beyond `min_decimals`.
pub fn format_scaled(value: i64, scale: u32, min_decimals: u32) -> String {
    let min_decimals = min_decimals.min(scale);
    let unit = 10u64.pow(scale);
    let magnitude = value.unsigned_abs();
    let int = magnitude / unit;
    let mut frac = magnitude % unit;
    let mut decimals = scale;
    while decimals > min_decimals && frac.is_multiple_of(10) {
        frac /= 10;
        decimals -= 1;
    }
    let sign = if value < 0 { "-" } else { "" };
    if decimals == 0 {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac:0width$}", width = decimals as usize)
    }
}

macro_rules! fixed_type {
    ($(#[$meta:meta])* $name:ident, scale = $scale:expr, min_decimals = $min:expr, unit = $unit:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(i64);

        impl $name {
            /// Decimal places held exactly.
            pub const SCALE: u32 = $scale;
            /// Raw units per whole unit (dollar or contract).
            pub const ONE: i64 = 10i64.pow($scale);
            pub const ZERO: Self = Self(0);

            #[doc = concat!("Builds a value from raw ", $unit, ".")]
            pub const fn from_raw(raw: i64) -> Self {
                Self(raw)
            }

            #[doc = concat!("The raw integer number of ", $unit, ".")]
            pub const fn raw(self) -> i64 {
                self.0
            }

            /// Parses an exact decimal text; see [`parse_scaled`].
            pub fn parse(text: &str) -> Result<Self, FixedError> {
                parse_scaled(text, $scale).map(Self)
            }

            /// Formats with at least `min_decimals` decimals (up to the type's scale).
            pub fn format_with(self, min_decimals: u32) -> String {
                format_scaled(self.0, $scale, min_decimals)
            }

            pub fn checked_add(self, other: Self) -> Option<Self> {
                self.0.checked_add(other.0).map(Self)
            }

            pub fn checked_sub(self, other: Self) -> Option<Self> {
                self.0.checked_sub(other.0).map(Self)
            }

            pub fn checked_neg(self) -> Option<Self> {
                self.0.checked_neg().map(Self)
            }

            pub fn checked_mul_int(self, factor: i64) -> Option<Self> {
                self.0.checked_mul(factor).map(Self)
            }

            pub const fn is_zero(self) -> bool {
                self.0 == 0
            }

            pub const fn is_negative(self) -> bool {
                self.0 < 0
            }

            pub const fn is_positive(self) -> bool {
                self.0 > 0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&format_scaled(self.0, $scale, $min))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }

        impl FromStr for $name {
            type Err = FixedError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_any(FixedVisitor { scale: $scale }).map(Self)
            }
        }
    };
}

fixed_type!(
    /// A dollar amount in micro-dollars (1e-6 USD): prices, settlement values, notional values.
    ///
    /// Displays with at least four decimals (`"0.5600"`), as Kalshi's REST API does.
    Price, scale = 6, min_decimals = 4, unit = "micro-dollars"
);

fixed_type!(
    /// A contract count in centi-contracts (0.01): sizes, volumes, deltas.
    ///
    /// Displays with exactly two decimals (`"136.00"`), as every `*_fp` field does.
    Quantity, scale = 2, min_decimals = 2, unit = "centi-contracts"
);

impl Price {
    /// One dollar: the notional value of a binary contract.
    pub const ONE_DOLLAR: Self = Self(1_000_000);

    /// Whole cents, if the price is an exact number of cents (for legacy integer fields).
    pub fn to_cents(self) -> Option<i64> {
        (self.0 % 10_000 == 0).then_some(self.0 / 10_000)
    }

    /// A price from whole cents (legacy integer fields).
    pub fn from_cents(cents: i64) -> Option<Self> {
        cents.checked_mul(10_000).map(Self)
    }

    /// `1 - self`: the complementary side's price of a binary contract.
    pub fn complement(self) -> Option<Self> {
        Self::ONE.checked_sub(self.0).map(Self)
    }
}

impl Quantity {
    /// Whole contracts, if the quantity is an exact number of contracts (legacy integer fields).
    pub fn to_whole(self) -> Option<i64> {
        (self.0 % 100 == 0).then_some(self.0 / 100)
    }

    /// A quantity from whole contracts (legacy integer fields).
    pub fn from_whole(contracts: i64) -> Option<Self> {
        contracts.checked_mul(100).map(Self)
    }
}

/// The key serde_json uses for a number deserialized through `deserialize_any` when its
/// `arbitrary_precision` feature is on (the workspace enables it so numbers stay exact).
const SERDE_JSON_NUMBER_TOKEN: &str = "$serde_json::private::Number";

struct FixedVisitor {
    scale: u32,
}

impl<'de> Visitor<'de> for FixedVisitor {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a decimal string or number with at most {} decimals",
            self.scale
        )
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
        parse_scaled(v, self.scale).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        v.checked_mul(10i64.pow(self.scale))
            .ok_or_else(|| E::custom(FixedError::Overflow(v.to_string())))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        i64::try_from(v)
            .ok()
            .and_then(|v| v.checked_mul(10i64.pow(self.scale)))
            .ok_or_else(|| E::custom(FixedError::Overflow(v.to_string())))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
        // Only reachable from deserializers other than serde_json with arbitrary_precision.
        // The shortest round-trip text of the float is the literal it was parsed from.
        if !v.is_finite() {
            return Err(E::custom(FixedError::Invalid(v.to_string())));
        }
        parse_scaled(&format!("{v}"), self.scale).map_err(E::custom)
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<i64, A::Error> {
        let key: Option<String> = map.next_key()?;
        match key.as_deref() {
            Some(SERDE_JSON_NUMBER_TOKEN) => {
                let text: String = map.next_value()?;
                parse_scaled(&text, self.scale).map_err(de::Error::custom)
            }
            _ => Err(de::Error::invalid_type(de::Unexpected::Map, &self)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kalshi_strings_exactly() {
        assert_eq!(Price::parse("0.5600").unwrap().raw(), 560_000);
        assert_eq!(Price::parse("0.960").unwrap().raw(), 960_000);
        assert_eq!(Price::parse("0.08").unwrap().raw(), 80_000);
        assert_eq!(Price::parse("1").unwrap().raw(), 1_000_000);
        assert_eq!(Price::parse("0.000001").unwrap().raw(), 1);
        assert_eq!(Price::parse("-0.25").unwrap().raw(), -250_000);
        assert_eq!(Price::parse("+0.25").unwrap().raw(), 250_000);
        assert_eq!(Quantity::parse("136.00").unwrap().raw(), 13_600);
        assert_eq!(Quantity::parse("1596.82").unwrap().raw(), 159_682);
        assert_eq!(Quantity::parse("-54.00").unwrap().raw(), -5_400);
        assert_eq!(Quantity::parse("10").unwrap().raw(), 1_000);
        assert_eq!(Quantity::parse("10.0").unwrap().raw(), 1_000);
    }

    #[test]
    fn too_many_decimals_is_an_error_not_a_rounding() {
        let err = Price::parse("0.1234567").unwrap_err();
        assert_eq!(
            err,
            FixedError::TooPrecise {
                value: "0.1234567".into(),
                max: 6
            }
        );
        assert_eq!(
            err.to_string(),
            "fixed-point value \"0.1234567\" has more than 6 decimal places"
        );
        assert!(matches!(
            Quantity::parse("1.001"),
            Err(FixedError::TooPrecise { max: 2, .. })
        ));
        // Zeros beyond the scale do not change the value and are accepted.
        assert_eq!(Price::parse("0.56000000").unwrap().raw(), 560_000);
        assert_eq!(Quantity::parse("3.000").unwrap().raw(), 300);
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "", "-", "+", ".5", "5.", "1.2.3", "0x10", " 1", "1 ", "1,5", "NaN", "inf", "1e",
            "--1", "1e999",
        ] {
            assert!(Price::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert_eq!(Price::parse(""), Err(FixedError::Empty));
        let long = "1".repeat(100);
        assert!(matches!(Price::parse(&long), Err(FixedError::Invalid(_))));
    }

    #[test]
    fn overflow_is_detected() {
        assert!(matches!(
            Price::parse("9223372036854.775807"),
            Ok(p) if p.raw() == i64::MAX
        ));
        assert!(matches!(
            Price::parse("9223372036854.775808"),
            Err(FixedError::Overflow(_))
        ));
        assert!(matches!(
            Price::parse("100000000000000"),
            Err(FixedError::Overflow(_))
        ));
        assert_eq!(
            Price::from_raw(i64::MAX).checked_add(Price::from_raw(1)),
            None
        );
        assert_eq!(Price::from_raw(i64::MIN).checked_neg(), None);
        assert_eq!(
            Quantity::from_raw(i64::MIN).checked_sub(Quantity::from_raw(1)),
            None
        );
        assert_eq!(Quantity::from_whole(i64::MAX / 10), None);
    }

    #[test]
    fn exponents_from_json_numbers() {
        assert_eq!(Price::parse("5e-1").unwrap().raw(), 500_000);
        assert_eq!(Price::parse("1.5E2").unwrap().raw(), 150_000_000);
        assert_eq!(Quantity::parse("2e1").unwrap().raw(), 2_000);
        assert!(matches!(
            Quantity::parse("1e-3"),
            Err(FixedError::TooPrecise { .. })
        ));
    }

    #[test]
    fn formats_canonically_and_with_chosen_precision() {
        assert_eq!(Price::from_raw(560_000).to_string(), "0.5600");
        assert_eq!(Price::from_raw(961_000).to_string(), "0.9610");
        assert_eq!(Price::from_raw(961_500).to_string(), "0.9615");
        assert_eq!(Price::from_raw(961_510).to_string(), "0.96151");
        assert_eq!(Price::from_raw(1).to_string(), "0.000001");
        assert_eq!(Price::from_raw(-250_000).to_string(), "-0.2500");
        assert_eq!(Price::from_raw(960_000).format_with(3), "0.960");
        assert_eq!(Price::from_raw(960_000).format_with(2), "0.96");
        assert_eq!(Price::from_raw(960_000).format_with(6), "0.960000");
        assert_eq!(Price::from_raw(961_000).format_with(2), "0.961");
        assert_eq!(Price::from_raw(3_000_000).format_with(0), "3");
        assert_eq!(Quantity::from_raw(13_600).to_string(), "136.00");
        assert_eq!(Quantity::from_raw(-5_400).to_string(), "-54.00");
        assert_eq!(Quantity::from_raw(5).to_string(), "0.05");
        assert_eq!(Quantity::from_raw(-5).to_string(), "-0.05");
        assert_eq!(Price::from_raw(-5).to_string(), "-0.000005");
        assert_eq!(
            Price::from_raw(i64::MIN).to_string(),
            "-9223372036854.775808"
        );
    }

    #[test]
    fn round_trips_every_format() {
        for raw in [
            0,
            1,
            9,
            10,
            99,
            100,
            5_000,
            123_456,
            999_999,
            1_000_000,
            -77,
            i64::MAX,
        ] {
            let p = Price::from_raw(raw);
            for dp in 0..=6 {
                assert_eq!(Price::parse(&p.format_with(dp)).unwrap(), p);
            }
            let q = Quantity::from_raw(raw);
            assert_eq!(Quantity::parse(&q.to_string()).unwrap(), q);
        }
    }

    #[test]
    fn legacy_integer_helpers() {
        assert_eq!(Price::from_cents(56).unwrap().to_string(), "0.5600");
        assert_eq!(Price::parse("0.56").unwrap().to_cents(), Some(56));
        assert_eq!(Price::parse("0.561").unwrap().to_cents(), None);
        assert_eq!(Quantity::from_whole(3).unwrap().raw(), 300);
        assert_eq!(Quantity::parse("1.50").unwrap().to_whole(), None);
        assert_eq!(
            Price::parse("0.3")
                .unwrap()
                .complement()
                .unwrap()
                .to_string(),
            "0.7000"
        );
    }

    #[test]
    fn serde_accepts_strings_and_exact_numbers() {
        #[derive(Deserialize, Serialize)]
        struct Row {
            p: Price,
            q: Quantity,
        }
        let r: Row = serde_json::from_str(r#"{"p":"0.960","q":"136.00"}"#).unwrap();
        assert_eq!((r.p.raw(), r.q.raw()), (960_000, 13_600));
        let r: Row = serde_json::from_str(r#"{"p":0.96,"q":136}"#).unwrap();
        assert_eq!((r.p.raw(), r.q.raw()), (960_000, 13_600));
        // A number with more precision than a float holds is kept exact, then refused.
        let err = serde_json::from_str::<Row>(r#"{"p":0.12345678901234567891,"q":1}"#)
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("more than 6 decimal places"),
            "{err}"
        );
        // A number that is exact but longer than a float's digits is not mangled.
        let r: Row = serde_json::from_str(r#"{"p":1234567.123456,"q":-12345678901.25}"#).unwrap();
        assert_eq!(
            (r.p.raw(), r.q.raw()),
            (1_234_567_123_456, -1_234_567_890_125)
        );
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"p":"1234567.123456","q":"-12345678901.25"}"#
        );
        assert!(serde_json::from_str::<Row>(r#"{"p":true,"q":1}"#).is_err());
        assert!(serde_json::from_str::<Row>(r#"{"p":{"a":1},"q":1}"#).is_err());
        // Through serde_json::Value as well (numbers buffered in a Value stay exact).
        let v: serde_json::Value = serde_json::from_str(r#"{"p":0.000001,"q":"2"}"#).unwrap();
        let r: Row = serde_json::from_value(v).unwrap();
        assert_eq!((r.p.raw(), r.q.raw()), (1, 200));
    }
}
