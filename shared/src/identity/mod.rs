//! Record identity, in one place: what makes two copies of one exchange record the same record,
//! for the gatherers (content hashes, occurrences) and the deduplicator (keys).
//!
//! - Registry objects (markets, events, series) are versioned by the SHA-256 of their canonical
//!   JSON; a market's hash leaves out the fields that move with trading.
//! - Tickers and lifecycle messages have no id: their identity is their content (hashed here)
//!   plus an occurrence among identical ones ([`occurrence`]).
//! - A trade is its `trade_id` within one whole second of exchange time: a legacy WebSocket
//!   trade carries whole seconds, REST milliseconds ([`trade_second`]).
//! - Keys are 128-bit digests of a record's identity fields ([`KeyHasher`]).
//!
//! These values are stored in gatherers' databases and in production's primary keys, so they
//! must never change for the same input: the golden tests below pin them. A change here is a
//! schema change.

pub mod coverage;
pub mod occurrence;

use crate::wire::ws::TickerMsg;

/// Fields that move with trading; left out of a market's content hash.
pub const MARKET_TRADING_FIELDS: &[&str] = &[
    "yes_bid",
    "yes_ask",
    "no_bid",
    "no_ask",
    "last_price",
    "volume",
    "volume_24h",
    "open_interest",
    "liquidity",
    "yes_bid_dollars",
    "yes_ask_dollars",
    "no_bid_dollars",
    "no_ask_dollars",
    "last_price_dollars",
    "previous_yes_bid",
    "previous_yes_ask",
    "previous_price",
    "previous_yes_bid_dollars",
    "previous_yes_ask_dollars",
    "previous_price_dollars",
    "volume_fp",
    "volume_24h_fp",
    "open_interest_fp",
    "liquidity_dollars",
    "yes_bid_size_fp",
    "yes_ask_size_fp",
    "no_bid_size_fp",
    "no_ask_size_fp",
];

/// The largest JSON body one record may carry (bytes): the deduplicator refuses a larger one as
/// malformed, so a gatherer never stores one.
pub const MAX_RECORD_JSON: usize = 1 << 20;

/// SHA-256 (hex) of a JSON value in canonical form (sorted keys, exact numbers).
pub fn content_hash(v: &serde_json::Value) -> String {
    sha256_hex(serde_json::to_string(v).unwrap_or_default().as_bytes())
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of bytes, as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// The content hash of a market's REST JSON without its trading fields (`None`: not JSON).
pub fn market_hash(raw: &str) -> Option<String> {
    let mut v: serde_json::Value = serde_json::from_str(raw).ok()?;
    if let Some(obj) = v.as_object_mut() {
        for f in MARKET_TRADING_FIELDS {
            obj.remove(*f);
        }
    }
    Some(content_hash(&v))
}

/// The content hash of an event's or series' REST JSON (`None`: not JSON).
pub fn json_hash(raw: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(raw)
        .ok()
        .map(|v| content_hash(&v))
}

/// A lifecycle message's stored body and its content hash, from the typed message (only for
/// a message whose raw text is not at hand; see [`raw_content`]).
pub fn lifecycle_hash<T: serde::Serialize>(msg: &T) -> (String, String) {
    let v = serde_json::to_value(msg).unwrap_or(serde_json::Value::Null);
    let body = serde_json::to_string(&v).unwrap_or_default();
    (body, content_hash(&v))
}

/// A message kept as sent: its body is the exchange's text, its hash covers every field the
/// exchange sent, known or not, in canonical form (sorted keys, numbers as written), so two
/// gatherers (or two versions of one, one of which learned a new field) hash one message alike
/// whatever the order of its keys or its whitespace. None: not JSON.
pub fn raw_content(raw: &str) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(raw).ok()?;
    Some((raw.to_owned(), content_hash(&v)))
}

/// The content hash of a ticker: its values, normalised, so decimals' formatting and the
/// deprecated fields do not matter.
pub fn ticker_hash(t: &TickerMsg) -> String {
    let p = |d: Option<crate::wire::Dollars>| d.map(|d| d.price().raw());
    let q = |v: Option<crate::Quantity>| v.map(crate::Quantity::raw);
    let v = serde_json::json!({
        "market_ticker": t.market_ticker,
        "price": p(t.price_dollars),
        "yes_bid": p(t.yes_bid_dollars),
        "yes_ask": p(t.yes_ask_dollars),
        "volume": q(t.volume_fp),
        "open_interest": q(t.open_interest_fp),
        "dollar_volume": t.dollar_volume,
        "dollar_open_interest": t.dollar_open_interest,
        "yes_bid_size": q(t.yes_bid_size_fp),
        "yes_ask_size": q(t.yes_ask_size_fp),
        "last_trade_size": q(t.last_trade_size_fp),
        "ts_ms": t.ts_ms_value(),
    });
    content_hash(&v)
}

/// The second a trade is known by: one trade is one record whatever precision its time came
/// with (a legacy WebSocket `ts` in whole seconds, REST milliseconds).
pub fn trade_second(ts_ms: i64) -> i64 {
    ts_ms.div_euclid(1000)
}

/// A 128-bit digest of identity fields, each length-prefixed so that field boundaries count.
pub struct KeyHasher(ring::digest::Context);

impl KeyHasher {
    /// Starts a key in a namespace (the stream), so equal fields of two streams never meet.
    pub fn new(namespace: u8) -> Self {
        let mut c = ring::digest::Context::new(&ring::digest::SHA256);
        c.update(&[namespace]);
        KeyHasher(c)
    }

    pub fn s(&mut self, v: &str) -> &mut Self {
        self.0.update(&(v.len() as u64).to_le_bytes());
        self.0.update(v.as_bytes());
        self
    }

    pub fn i(&mut self, v: i64) -> &mut Self {
        self.0.update(&v.to_le_bytes());
        self
    }

    pub fn finish(self) -> u128 {
        let d = self.0.finish();
        let mut b = [0u8; 16];
        b.copy_from_slice(&d.as_ref()[..16]);
        u128::from_le_bytes(b)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn a_raw_message_hashes_every_field_whatever_its_key_order_and_spacing() {
        let a = r#"{"market_ticker":"M","event_type":"deactivated","is_deactivated":true}"#;
        let b = r#"{ "is_deactivated": true, "event_type": "deactivated", "market_ticker": "M" }"#;
        let (body, ha) = raw_content(a).unwrap();
        assert_eq!(body, a, "kept as sent");
        assert_eq!(raw_content(b).unwrap().1, ha);
        // A field the typed struct does not know changes the identity (two messages), and a
        // gatherer that learned it hashes the same text as one that did not.
        let c = r#"{"market_ticker":"M","event_type":"deactivated","is_deactivated":true,"fee_waived":1.50}"#;
        assert_ne!(raw_content(c).unwrap().1, ha);
        assert_eq!(
            raw_content(c).unwrap().1,
            content_hash(&serde_json::from_str(c).unwrap())
        );
        assert!(raw_content("not json").is_none());
    }

    // Golden values: these are stored in databases and primary keys. If one of these tests
    // fails, the change breaks identity across versions; do not update the value, undo it.

    #[test]
    fn content_hash_golden() {
        assert_eq!(
            content_hash(&json!({"b": 2, "a": [1, "x"], "c": {"z": null, "y": 0.5}})),
            GOLDEN_CONTENT
        );
        assert_eq!(content_hash(&json!({})).len(), 64);
    }

    #[test]
    fn market_hash_ignores_trading_fields_golden() {
        let a = r#"{"ticker":"M","status":"active","yes_bid_dollars":"0.41","volume_fp":"10.00"}"#;
        let b = r#"{"ticker":"M","status":"active","yes_bid_dollars":"0.55","volume_fp":"99.00"}"#;
        let c = r#"{"ticker":"M","status":"closed","yes_bid_dollars":"0.41"}"#;
        assert_eq!(market_hash(a), market_hash(b));
        assert_ne!(market_hash(a), market_hash(c));
        assert_eq!(market_hash(a).unwrap(), GOLDEN_MARKET);
        assert_eq!(json_hash("not json"), None);
    }

    #[test]
    fn ticker_hash_golden_and_formatting_free() {
        let t = |price: &str, vol: &str| -> TickerMsg {
            serde_json::from_value(json!({
                "market_ticker": "KXA-1", "market_id": "id", "price_dollars": price,
                "yes_bid_dollars": "0.41", "yes_ask_dollars": "0.43", "volume_fp": vol,
                "open_interest_fp": "3.00", "dollar_volume": 1, "dollar_open_interest": 2,
                "yes_bid_size_fp": "1.00", "yes_ask_size_fp": "2.00",
                "last_trade_size_fp": "1.00", "ts_ms": 1_795_000_000_123i64
            }))
            .unwrap()
        };
        assert_eq!(
            ticker_hash(&t("0.42", "10.00")),
            ticker_hash(&t("0.4200", "10"))
        );
        assert_ne!(
            ticker_hash(&t("0.42", "10.00")),
            ticker_hash(&t("0.43", "10.00"))
        );
        assert_eq!(ticker_hash(&t("0.42", "10.00")), GOLDEN_TICKER);
    }

    #[test]
    fn ticker_hash_ignores_formatting_and_deprecated_fields() {
        let a: TickerMsg = serde_json::from_str(
            r#"{"market_ticker":"M","price_dollars":"0.48","volume_fp":"10.00","ts_ms":5}"#,
        )
        .unwrap();
        let b: TickerMsg = serde_json::from_str(
            r#"{"market_ticker":"M","price_dollars":"0.4800","volume_fp":"10","ts_ms":5,"ts":0}"#,
        )
        .unwrap();
        let c: TickerMsg = serde_json::from_str(
            r#"{"market_ticker":"M","price_dollars":"0.49","volume_fp":"10.00","ts_ms":5}"#,
        )
        .unwrap();
        assert_eq!(ticker_hash(&a), ticker_hash(&b));
        assert_ne!(ticker_hash(&a), ticker_hash(&c));
    }

    fn key(ns: u8, f: impl FnOnce(&mut KeyHasher)) -> u128 {
        let mut h = KeyHasher::new(ns);
        f(&mut h);
        h.finish()
    }

    #[test]
    fn keys_golden() {
        let k = |id: &str, ts: i64| {
            key(0, |h| {
                h.s(id).i(trade_second(ts));
            })
        };
        assert_eq!(k("t1", 1_795_000_123_000), k("t1", 1_795_000_123_999));
        assert_ne!(k("t1", 1_795_000_123_999), k("t1", 1_795_000_124_000));
        assert_ne!(
            key(0, |h| {
                h.s("ab").s("c");
            }),
            key(0, |h| {
                h.s("a").s("bc");
            })
        );
        assert_ne!(
            key(0, |h| {
                h.s("x");
            }),
            key(1, |h| {
                h.s("x");
            })
        );
        assert_eq!(k("t1", 1_795_000_123_000), GOLDEN_KEY);
        assert_eq!(trade_second(-1), -1);
    }

    // The content and market values are also what Python computes independently:
    // sha256(json.dumps(v, sort_keys=True, separators=(",", ":"))).
    const GOLDEN_CONTENT: &str = "cec68efe8f02b28fdf805b2ecf06a3999bc274e8179bafd8c6d01c27850cc2fe";
    const GOLDEN_MARKET: &str = "5f46842bd2255b2b14d46fd8cdf3287ed9abdd9e893f832f9689944b7a7a0db0";
    const GOLDEN_TICKER: &str = "14ff244c79ef1645ef9640d2f4eb0f3429f294fd6d01b2b5dc9fcef7c2ae9f18";
    const GOLDEN_KEY: u128 = 304_723_153_521_112_845_675_368_773_366_534_967_092;
}
