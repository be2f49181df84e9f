//! An import of the exchange's past judged against the truth's `historical_trade` records:
//! in a window, production must hold exactly the exchange's trades, each once (content, with
//! the exchange's trade id; never read from the system under test for the expected side).

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
}

impl HistoryVerdict {
    pub fn ok(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.duplicated.is_empty()
    }

    pub fn line(&self) -> String {
        format!(
            "trades of [{}, {}): expected {}, present {}, missing {}, extra {}, duplicated {}{}",
            self.from_ms,
            self.to_ms,
            self.expected,
            self.present,
            self.missing.len(),
            self.extra.len(),
            self.duplicated.len(),
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
    for l in [&mut v.missing, &mut v.extra, &mut v.duplicated] {
        l.sort_by(|a, b| (a.ts_ms, &a.trade_id).cmp(&(b.ts_ms, &b.trade_id)));
    }
    v
}
