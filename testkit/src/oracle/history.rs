//! An import of the exchange's past judged against the truth's `historical_trade` records:
//! in a window, production must hold exactly the exchange's trades, each once (content, with
//! the exchange's trade id; never read from the system under test for the expected side), and
//! every settled market those trades are of (`historical_market`, served by
//! `/historical/markets` only), as the exchange serves it.

use std::collections::HashMap;

use crate::held::Held;
use crate::sim::{TradeFact, Truth};

/// What production holds of the exchange's trades in `[from_ms, to_ms)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryVerdict {
    pub from_ms: i64,
    pub to_ms: i64,
    /// The exchange's trades in the window (history and live).
    pub expected: u64,
    pub present: u64,
    /// Expected and not held.
    pub missing: Vec<TradeFact>,
    /// Held and not the exchange's (or another content than the exchange's).
    pub extra: Vec<TradeFact>,
    /// Held more often than the exchange has it.
    pub duplicated: Vec<TradeFact>,
    /// Settled markets the window's trades are of.
    pub settled_markets: u64,
    /// Of those, not held, or held with another content than the exchange's: `(ticker, why)`.
    pub settled_wrong: Vec<(String, String)>,
}

impl HistoryVerdict {
    pub fn ok(&self) -> bool {
        self.missing.is_empty()
            && self.extra.is_empty()
            && self.duplicated.is_empty()
            && self.settled_wrong.is_empty()
    }

    pub fn line(&self) -> String {
        format!(
            "trades of [{}, {}): expected {}, present {}, missing {}, extra {}, duplicated {}; settled markets {}/{}{}{}",
            self.from_ms,
            self.to_ms,
            self.expected,
            self.present,
            self.missing.len(),
            self.extra.len(),
            self.duplicated.len(),
            self.settled_markets - self.settled_wrong.len() as u64,
            self.settled_markets,
            self.settled_wrong
                .first()
                .map_or(String::new(), |(t, why)| format!(
                    " (first wrong: {t}: {why})"
                )),
            self.missing
                .first()
                .or(self.extra.first())
                .or(self.duplicated.first())
                .map_or(String::new(), |t| format!("; first: {t:?}"))
        )
    }
}

/// Production's trades in the window against the truth's (its past and its live trades).
pub fn judge(truth: &Truth, production: &Held, from_ms: i64, to_ms: i64) -> HistoryVerdict {
    let inside = |ts: i64| ts >= from_ms && ts < to_ms;
    let mut want: HashMap<&TradeFact, u64> = HashMap::new();
    for f in truth.history.iter().chain(&truth.trades) {
        if inside(f.key.ts_ms) {
            *want.entry(&f.key).or_default() += 1;
        }
    }
    let mut held: HashMap<&TradeFact, u64> = HashMap::new();
    for t in &production.trades {
        if inside(t.ts_ms) {
            *held.entry(t).or_default() += 1;
        }
    }
    let mut v = HistoryVerdict {
        from_ms,
        to_ms,
        expected: want.values().sum(),
        present: held.values().sum(),
        ..HistoryVerdict::default()
    };
    for (t, n) in &want {
        let h = held.get(t).copied().unwrap_or(0);
        if h < *n {
            v.missing.push((*t).clone());
        } else if h > *n {
            v.duplicated.push((*t).clone());
        }
    }
    for t in held.keys() {
        if !want.contains_key(t) {
            v.extra.push((*t).clone());
        }
    }
    let mut settled: Vec<&String> = want
        .keys()
        .map(|t| &t.market)
        .filter(|m| truth.historical_markets.contains_key(*m))
        .collect();
    settled.sort();
    settled.dedup();
    v.settled_markets = settled.len() as u64;
    for m in settled {
        let why = match production.markets.get(m) {
            None => Some("not held".to_owned()),
            Some(body) if Some(body) != truth.historical_markets.get(m) => {
                Some(format!("held as {body}"))
            }
            Some(_) => None,
        };
        if let Some(why) = why {
            v.settled_wrong.push((m.clone(), why));
        }
    }
    for l in [&mut v.missing, &mut v.extra, &mut v.duplicated] {
        l.sort_by(|a, b| (a.ts_ms, &a.trade_id).cmp(&(b.ts_ms, &b.trade_id)));
    }
    v
}
