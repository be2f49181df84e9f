//! The registry on a settled system: every market, event and series the exchange serves (MVE
//! excluded, as the gatherers exclude them), with every field it serves, as its latest REST
//! view has it.
//!
//! Market fields that move with every trade (quotes, volume, open interest, last price) are
//! what the exchange's REST view shows at one moment; the gatherer stores a version when a
//! market changes, not on every trade, and the ticker stream carries those fields, compared
//! there. Every other field must be equal.
//!
//! It must never take an expected value from the store.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;

use crate::sim::Truth;

/// REST market fields that change with every trade (see the module's text). The gatherer's
/// list (`kalshi_shared::identity::MARKET_TRADING_FIELDS`) is kept apart on purpose: the oracle
/// must not share what it judges.
pub const QUOTE_FIELDS: &[&str] = &[
    "yes_bid_dollars",
    "yes_bid_size_fp",
    "yes_ask_dollars",
    "yes_ask_size_fp",
    "no_bid_dollars",
    "no_ask_dollars",
    "last_price_dollars",
    "previous_yes_bid_dollars",
    "previous_yes_ask_dollars",
    "previous_price_dollars",
    "volume_fp",
    "volume_24h_fp",
    "open_interest_fp",
    "liquidity_dollars",
    "yes_bid",
    "yes_ask",
    "no_bid",
    "no_ask",
    "last_price",
    "previous_yes_bid",
    "previous_yes_ask",
    "previous_price",
    "volume",
    "volume_24h",
    "open_interest",
    "liquidity",
];

/// One registry stream compared.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RegistryVerdict {
    pub kind: String,
    pub compared: u64,
    pub wrong: u64,
    /// Versions in the store's history (production's `registry_versions`; 0: it keeps none).
    pub versions: u64,
}

/// The first field (in name order) where `held` and `want` differ, ignoring `skip`.
fn first_difference(held: &Value, want: &Value, skip: &[&str]) -> Option<String> {
    let (Some(h), Some(w)) = (held.as_object(), want.as_object()) else {
        return (held != want).then(|| "the whole body".to_owned());
    };
    let mut keys: Vec<&String> = h.keys().chain(w.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| !skip.contains(&k.as_str()))
        .find(|k| h.get(*k) != w.get(*k))
        .map(|k| {
            format!(
                "{k} is {} but the exchange says {}",
                h.get(k).map_or("absent".to_owned(), Value::to_string),
                w.get(k).map_or("absent".to_owned(), Value::to_string)
            )
        })
}

/// Compares one kind (`market`, `event`, `series`): every exchange entry that is not MVE must
/// be held with equal fields; every held one must be the exchange's (and not an MVE market:
/// the gatherers exclude those; MVE events and series may be held, and are not compared).
///
/// Where the store keeps a history (`versions`), every compared entry's newest version must be
/// the exchange's too, and no two of its versions may be the same content (a version is a
/// change).
fn compare(
    kind: &str,
    want: &mut dyn Iterator<Item = (&String, bool, &Value)>,
    settled: &HashMap<String, Value>,
    held: &HashMap<String, Value>,
    versions: &HashMap<(String, String), Vec<Value>>,
    skip: &[&str],
    problems: &mut Vec<String>,
) -> RegistryVerdict {
    let mve_held_is_wrong = kind == "market";
    let mut v = RegistryVerdict {
        kind: kind.to_owned(),
        ..RegistryVerdict::default()
    };
    let history = !versions.is_empty();
    v.versions = versions
        .iter()
        .filter(|((k, _), _)| k == kind)
        .map(|(_, b)| b.len() as u64)
        .sum();
    let mut known: HashMap<&str, bool> = HashMap::new();
    let mut say = |p: String| {
        if problems.len() < 60 {
            problems.push(p);
        }
    };
    for (ticker, is_mve, rest) in want {
        known.insert(ticker.as_str(), is_mve);
        if is_mve {
            continue;
        }
        v.compared += 1;
        match held.get(ticker) {
            None => {
                v.wrong += 1;
                say(format!("{kind} {ticker} is not in the registry"));
            }
            Some(body) => {
                if let Some(d) = first_difference(body, rest, skip) {
                    v.wrong += 1;
                    say(format!("{kind} {ticker}: {d}"));
                } else if history {
                    let mine = versions.get(&(kind.to_owned(), ticker.clone()));
                    match mine.and_then(|m| m.last()) {
                        None => {
                            v.wrong += 1;
                            say(format!("{kind} {ticker} has no version in the history"));
                        }
                        Some(newest) => {
                            if let Some(d) = first_difference(newest, rest, skip) {
                                v.wrong += 1;
                                say(format!("{kind} {ticker}: its newest version: {d}"));
                            }
                        }
                    }
                    let m = mine.map(Vec::as_slice).unwrap_or_default();
                    if m.iter().enumerate().any(|(i, a)| {
                        m[i + 1..]
                            .iter()
                            .any(|b| first_difference(a, b, skip).is_none())
                    }) {
                        v.wrong += 1;
                        say(format!(
                            "{kind} {ticker}: two versions of one content in the history"
                        ));
                    }
                }
            }
        }
    }
    for (ticker, body) in held {
        // A settled market an import brought in (`/historical/markets`): as the exchange
        // serves it, every field.
        if let (None, Some(rest)) = (known.get(ticker.as_str()), settled.get(ticker)) {
            if let Some(d) = first_difference(body, rest, &[]) {
                v.wrong += 1;
                say(format!("{kind} {ticker} (settled, imported): {d}"));
            }
            continue;
        }
        let wrong = match known.get(ticker.as_str()) {
            None => true,
            Some(is_mve) => *is_mve && mve_held_is_wrong,
        };
        if wrong {
            v.wrong += 1;
            say(format!(
                "{kind} {ticker} is in the registry but not the exchange's"
            ));
        }
    }
    v
}

/// Markets, events and series of `held` against the truth's.
pub(super) fn check(
    truth: &Truth,
    held: &crate::held::Held,
    problems: &mut Vec<String>,
) -> Vec<RegistryVerdict> {
    vec![
        compare(
            "market",
            &mut truth.markets.iter().map(|(t, m)| (t, m.is_mve, &m.rest)),
            &truth.historical_markets,
            &held.markets,
            &held.versions,
            QUOTE_FIELDS,
            problems,
        ),
        compare(
            "event",
            &mut truth.events.iter().map(|(t, e)| (t, e.is_mve, &e.rest)),
            &HashMap::new(),
            &held.events,
            &held.versions,
            &["markets"],
            problems,
        ),
        compare(
            "series",
            &mut truth.series.iter().map(|(t, s)| (t, s.is_mve, &s.rest)),
            &HashMap::new(),
            &held.series,
            &held.versions,
            &[],
            problems,
        ),
    ]
}
