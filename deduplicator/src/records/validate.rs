//! Validation: what a record must hold to become a production row (non-empty identities,
//! bounded text and JSON, known sides). A record that fails goes to quarantine as it is.
//!
//! It must never let a record through that the production schema would refuse for its
//! shape, nor refuse one that it would accept.

use super::*;

/// Why a record cannot become a production row at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

pub(super) const MAX_TEXT: usize = 512;
pub(super) const MAX_JSON: usize = kalshi_shared::identity::MAX_RECORD_JSON;

pub(super) fn text(field: &str, v: &str) -> Result<(), Invalid> {
    if v.len() > MAX_TEXT {
        return Err(Invalid(format!(
            "{field} is {} bytes (max {MAX_TEXT})",
            v.len()
        )));
    }
    Ok(())
}

pub(super) fn nonempty(field: &str, v: &str) -> Result<(), Invalid> {
    if v.is_empty() {
        return Err(Invalid(format!("{field} is empty")));
    }
    text(field, v)
}

pub(super) fn json(field: &str, v: &str) -> Result<(), Invalid> {
    if v.len() > MAX_JSON {
        return Err(Invalid(format!(
            "{field} is {} bytes (max {MAX_JSON})",
            v.len()
        )));
    }
    serde_json::from_str::<&serde_json::value::RawValue>(v)
        .map(|_| ())
        .map_err(|e| Invalid(format!("{field} is not JSON: {e}")))
}

pub(super) fn side(v: i32) -> Result<i16, Invalid> {
    match pb::Side::try_from(v) {
        Ok(pb::Side::Yes) => Ok(1),
        Ok(pb::Side::No) => Ok(2),
        _ => Err(Invalid(format!("side {v} is neither yes nor no"))),
    }
}

/// Checks that `r` is a well-formed record of `stream` (the body type matches, required fields
/// are present, text and JSON are bounded). The values themselves are the database's to judge.
pub fn validate(stream: Stream, r: &pb::Record) -> Result<(), Invalid> {
    use pb::record::Body;
    let Some(body) = r.body.as_ref() else {
        return Err(Invalid("record has no body".into()));
    };
    match (stream, body) {
        (Stream::Trades, Body::Trade(t)) => {
            nonempty("trade_id", &t.trade_id)?;
            nonempty("market_ticker", &t.market_ticker)?;
            text("taker_book_side", &t.taker_book_side)?;
            text("source", &t.source)?;
            if t.ts_ms <= 0 {
                return Err(Invalid(format!("trade ts_ms {} is not a time", t.ts_ms)));
            }
        }
        (Stream::OrderbookDeltas, Body::Delta(d)) => {
            nonempty("market_ticker", &d.market_ticker)?;
            side(d.side)?;
            if d.ts_ms < 0 {
                return Err(Invalid(format!("delta ts_ms {} is negative", d.ts_ms)));
            }
            if d.ts_ms == 0 && d.origin.is_none() {
                return Err(Invalid(
                    "delta without ts_ms has no origin to key it by".into(),
                ));
            }
        }
        (Stream::OrderbookSnapshots, Body::Snapshot(s)) => {
            nonempty("market_ticker", &s.market_ticker)?;
            text("source", &s.source)?;
            if s.yes.len() + s.no.len() > 10_000 {
                return Err(Invalid("snapshot has more than 10000 levels".into()));
            }
        }
        (Stream::Tickers, Body::Ticker(t)) => {
            nonempty("market_ticker", &t.market_ticker)?;
            nonempty("content_hash", &t.content_hash)?;
            json("body_json", &t.body_json)?;
        }
        (Stream::Lifecycle, Body::Lifecycle(l)) => {
            nonempty("ticker", &l.ticker)?;
            nonempty("event_type", &l.event_type)?;
            nonempty("content_hash", &l.content_hash)?;
            text("kind", &l.kind)?;
            json("body_json", &l.body_json)?;
        }
        (Stream::UnknownMessages, Body::Unknown(u)) => {
            nonempty("type", &u.r#type)?;
            nonempty("content_hash", &u.content_hash)?;
            text("channel", &u.channel)?;
            text("market_ticker", &u.market_ticker)?;
            json("body_json", &u.body_json)?;
        }
        (
            Stream::Markets | Stream::Events | Stream::Series | Stream::Exchange,
            Body::Registry(v),
        ) => {
            nonempty("ticker", &v.ticker)?;
            json("body_json", &v.body_json)?;
            if Some(v.kind.as_str()) != stream.registry_kind() {
                return Err(Invalid(format!(
                    "registry kind {:?} in the {} stream",
                    v.kind,
                    stream.table()
                )));
            }
            if stream == Stream::Exchange && super::exchange_endpoint(&v.ticker).is_empty() {
                return Err(Invalid(format!(
                    "exchange object {:?}: neither status nor schedule",
                    v.ticker
                )));
            }
        }
        (Stream::Gaps, Body::Gap(g)) => {
            if Stream::from_pb(g.stream).is_none() {
                return Err(Invalid(format!("gap of unknown stream {}", g.stream)));
            }
            text("market_ticker", &g.market_ticker)?;
            nonempty("reason", &g.reason)?;
            if g.detail.len() > 4096 {
                return Err(Invalid("gap detail longer than 4096 bytes".into()));
            }
            if g.to_ms < g.from_ms {
                return Err(Invalid(format!(
                    "gap ends ({}) before it starts ({})",
                    g.to_ms, g.from_ms
                )));
            }
        }
        (s, _) => {
            return Err(Invalid(format!(
                "a {} record in the {} stream",
                body_name(body),
                s.table()
            )));
        }
    }
    Ok(())
}

pub(super) fn body_name(b: &pb::record::Body) -> &'static str {
    use pb::record::Body;
    match b {
        Body::Trade(_) => "trade",
        Body::Delta(_) => "delta",
        Body::Snapshot(_) => "snapshot",
        Body::Ticker(_) => "ticker",
        Body::Lifecycle(_) => "lifecycle",
        Body::Registry(_) => "registry",
        Body::Gap(_) => "gap",
        Body::Unknown(_) => "unknown message",
    }
}
