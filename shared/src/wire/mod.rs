//! Kalshi's wire formats (WebSocket v2 and REST v2), newest shapes from `kalshi-api.md`.
//!
//! Tolerant on input: unknown fields are ignored, fixed-point values arrive as strings or JSON
//! numbers, and legacy integer fields (cents, whole contracts, `ts` in seconds) are accepted and
//! used only when the newer field is absent. Exact on output: what serializes is the newest shape,
//! with legacy fields only when they are set, and dollar strings keep the precision they were
//! given (see [`Dollars`]).
//!
//! Rule for everything here: it must never use `#[serde(tag)]`, `untagged` or `flatten`, because serde buffers
//! such content and the workspace's exact-number mode (`arbitrary_precision`) does not survive
//! buffering. Frames are routed by [`ws::parse_frame`] in two steps instead.

pub mod rest;
pub mod ws;

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::fixed::{FixedError, Price, parse_scaled};

/// A side of a binary market.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Yes,
    No,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Yes => "yes",
            Side::No => "no",
        }
    }
}

/// The book side a taker hit: `bid` means buy YES, `ask` means sell YES.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BookSide {
    Bid,
    Ask,
}

impl BookSide {
    pub fn as_str(self) -> &'static str {
        match self {
            BookSide::Bid => "bid",
            BookSide::Ask => "ask",
        }
    }
}

/// A `*_dollars` value as it appears on the wire: an exact [`Price`] plus the number of decimals
/// it was written with, so that re-serializing a parsed message reproduces its text and the
/// simulator can vary precision as Kalshi does (`"0.960"`, `"0.0800"`).
///
/// Equality compares the text form; compare [`Dollars::price`] for the value.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dollars {
    price: Price,
    decimals: u8,
}

impl Dollars {
    /// The default REST precision: four decimals, more if the value needs them.
    pub const DEFAULT_DECIMALS: u8 = 4;

    pub fn new(price: Price) -> Self {
        Self {
            price,
            decimals: Self::DEFAULT_DECIMALS,
        }
    }

    /// A value written with at least `decimals` decimals (clamped to six).
    pub fn with_decimals(price: Price, decimals: u8) -> Self {
        Self {
            price,
            decimals: decimals.min(Price::SCALE as u8),
        }
    }

    pub fn price(self) -> Price {
        self.price
    }

    pub fn decimals(self) -> u8 {
        self.decimals
    }

    pub fn parse(text: &str) -> Result<Self, FixedError> {
        let price = Price::from_raw(parse_scaled(text, Price::SCALE)?);
        let decimals = text
            .split_once('.')
            .map(|(_, frac)| {
                frac.bytes()
                    .take_while(u8::is_ascii_digit)
                    .count()
                    .min(Price::SCALE as usize)
            })
            .unwrap_or(0) as u8;
        Ok(Self { price, decimals })
    }
}

impl From<Price> for Dollars {
    fn from(price: Price) -> Self {
        Self::new(price)
    }
}

impl fmt::Display for Dollars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.price.format_with(u32::from(self.decimals)))
    }
}

impl fmt::Debug for Dollars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dollars({self})")
    }
}

impl Serialize for Dollars {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Dollars {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = deserializer.deserialize_any(DecimalTextVisitor)?;
        Dollars::parse(&text).map_err(de::Error::custom)
    }
}

/// Text that is not a JSON number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a decimal number")]
pub struct NotADecimal(pub String);

/// A JSON number that Kalshi sometimes sends as a string (`floor_strike: 4487` or `"4487"`),
/// kept exact as decimal text and written back as a JSON number.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct JsonDecimal(String);

impl JsonDecimal {
    /// Validates `text` as a JSON number.
    pub fn parse(text: &str) -> Result<Self, NotADecimal> {
        let n: serde_json::Number = text.parse().map_err(|_| NotADecimal(text.to_owned()))?;
        Ok(Self(n.to_string()))
    }

    /// `value / 10^scale`, e.g. `from_scaled(5, 1)` is `0.5`. Always a valid number.
    pub fn from_scaled(value: i64, scale: u32) -> Self {
        Self(crate::fixed::format_scaled(value, scale.min(18), 0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for JsonDecimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JsonDecimal({})", self.0)
    }
}

impl fmt::Display for JsonDecimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for JsonDecimal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0.parse::<serde_json::Number>() {
            Ok(n) => n.serialize(serializer),
            Err(_) => serializer.serialize_str(&self.0),
        }
    }
}

impl<'de> Deserialize<'de> for JsonDecimal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = deserializer.deserialize_any(DecimalTextVisitor)?;
        JsonDecimal::parse(text.trim()).map_err(de::Error::custom)
    }
}

/// Reads a string or a number as its exact decimal text.
struct DecimalTextVisitor;

const SERDE_JSON_NUMBER_TOKEN: &str = "$serde_json::private::Number";

impl<'de> Visitor<'de> for DecimalTextVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a decimal string or number")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        if v.len() > 64 {
            return Err(E::custom("decimal text longer than 64 characters"));
        }
        Ok(v.to_owned())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        if v.is_finite() {
            Ok(format!("{v}"))
        } else {
            Err(E::custom("non-finite number"))
        }
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<String, A::Error> {
        let key: Option<String> = map.next_key()?;
        match key.as_deref() {
            Some(SERDE_JSON_NUMBER_TOKEN) => map.next_value(),
            _ => Err(de::Error::invalid_type(de::Unexpected::Map, &self)),
        }
    }
}

/// A price level `[price_dollars, count_fp]`; either element may be a string or a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    pub price: Dollars,
    pub count: crate::fixed::Quantity,
}

impl Serialize for Level {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (self.price, self.count).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (price, count) = <(Dollars, crate::fixed::Quantity)>::deserialize(deserializer)?;
        Ok(Level { price, count })
    }
}

/// A legacy level `[cents, contracts]`, both integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyLevel(pub i64, pub i64);

/// A `{start, end, step}` entry of a market's tick grid, all dollar strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceRange {
    pub start: Dollars,
    pub end: Dollars,
    pub step: Dollars,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_keep_their_text() {
        for text in ["0.960", "0.0800", "0.56", "1", "0.000001", "0.123400"] {
            let d: Dollars = serde_json::from_str(&format!("\"{text}\"")).unwrap();
            assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{text}\""));
        }
        let d: Dollars = serde_json::from_str("0.96").unwrap();
        assert_eq!(d.price().raw(), 960_000);
        assert_eq!(d.to_string(), "0.96");
        assert_eq!(Dollars::new(Price::from_raw(80_000)).to_string(), "0.0800");
        assert!(serde_json::from_str::<Dollars>("\"0.1234567\"").is_err());
    }

    #[test]
    fn json_decimal_accepts_number_or_string_and_writes_a_number() {
        let a: JsonDecimal = serde_json::from_str("4487").unwrap();
        let b: JsonDecimal = serde_json::from_str("\"4487\"").unwrap();
        assert_eq!(a, b);
        let c: JsonDecimal = serde_json::from_str("114999.99").unwrap();
        assert_eq!(serde_json::to_string(&c).unwrap(), "114999.99");
        assert!(serde_json::from_str::<JsonDecimal>("\"abc\"").is_err());
    }

    #[test]
    fn levels_accept_mixed_encodings() {
        let l: Vec<Level> =
            serde_json::from_str(r#"[["0.0800","300.00"],["0.080",300],[0.08,"300"]]"#).unwrap();
        assert!(
            l.iter()
                .all(|x| x.price.price().raw() == 80_000 && x.count.raw() == 30_000)
        );
        assert_eq!(
            serde_json::to_string(&l[0]).unwrap(),
            r#"["0.0800","300.00"]"#
        );
        assert!(serde_json::from_str::<Level>(r#"["0.08"]"#).is_err());
        assert!(serde_json::from_str::<Level>(r#"["0.08","1","2"]"#).is_err());
    }
}
