//! A market's book as one connection sees it, and the occurrence counters of its records.

use std::collections::{BTreeMap, HashMap};

use kalshi_shared::wire::Side;

#[derive(Debug, Default)]
pub struct MarketBook {
    /// A snapshot has arrived in this run and nothing since broke the chain.
    pub valid: bool,
    pub yes: BTreeMap<i64, i64>,
    pub no: BTreeMap<i64, i64>,
    pub last_delta_ts: Option<i64>,
    occ_ts: Option<i64>,
    occ: HashMap<(Side, i64, i64), u32>,
    ticker_occ_ts: Option<i64>,
    ticker_occ: HashMap<String, u32>,
}

impl MarketBook {
    pub fn load(&mut self, yes: &[(i64, i64)], no: &[(i64, i64)]) {
        self.yes = yes.iter().copied().collect();
        self.no = no.iter().copied().collect();
        self.valid = true;
    }

    pub fn invalidate(&mut self) {
        self.valid = false;
        self.yes.clear();
        self.no.clear();
    }

    /// Applies a delta; false if it would make the level negative (the chain is broken).
    pub fn apply(&mut self, side: Side, price: i64, delta: i64) -> bool {
        let levels = match side {
            Side::Yes => &mut self.yes,
            Side::No => &mut self.no,
        };
        let next = levels.get(&price).copied().unwrap_or(0).checked_add(delta);
        match next {
            Some(n) if n > 0 => {
                levels.insert(price, n);
                true
            }
            Some(0) => {
                levels.remove(&price);
                true
            }
            _ => false,
        }
    }

    /// How many identical deltas (same ts, side, price, delta) came before this one in the run.
    pub fn delta_occurrence(&mut self, ts: Option<i64>, side: Side, price: i64, delta: i64) -> u32 {
        let Some(ts) = ts else { return 0 };
        if self.occ_ts != Some(ts) {
            self.occ_ts = Some(ts);
            self.occ.clear();
        }
        let n = self.occ.entry((side, price, delta)).or_insert(0);
        let o = *n;
        *n += 1;
        o
    }

    /// The same for tickers, keyed by content hash.
    pub fn ticker_occurrence(&mut self, ts: Option<i64>, hash: &str) -> u32 {
        let Some(ts) = ts else { return 0 };
        if self.ticker_occ_ts != Some(ts) {
            self.ticker_occ_ts = Some(ts);
            self.ticker_occ.clear();
        }
        let n = self.ticker_occ.entry(hash.to_owned()).or_insert(0);
        let o = *n;
        *n += 1;
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_and_detects_negative_levels() {
        let mut b = MarketBook::default();
        b.load(&[(400_000, 1_000)], &[]);
        assert!(b.apply(Side::Yes, 400_000, -400));
        assert_eq!(b.yes[&400_000], 600);
        assert!(b.apply(Side::Yes, 400_000, -600));
        assert!(!b.yes.contains_key(&400_000));
        assert!(
            !b.apply(Side::No, 300_000, -1),
            "a level that does not exist cannot shrink"
        );
    }

    #[test]
    fn occurrences_count_identical_records_per_millisecond() {
        let mut b = MarketBook::default();
        assert_eq!(b.delta_occurrence(Some(1), Side::Yes, 5, 100), 0);
        assert_eq!(b.delta_occurrence(Some(1), Side::Yes, 5, 100), 1);
        assert_eq!(b.delta_occurrence(Some(1), Side::Yes, 5, -100), 0);
        assert_eq!(b.delta_occurrence(Some(1), Side::Yes, 5, 100), 2);
        assert_eq!(
            b.delta_occurrence(Some(2), Side::Yes, 5, 100),
            0,
            "a new millisecond"
        );
        assert_eq!(b.delta_occurrence(None, Side::Yes, 5, 100), 0);
        assert_eq!(b.ticker_occurrence(Some(7), "h"), 0);
        assert_eq!(b.ticker_occurrence(Some(7), "h"), 1);
        assert_eq!(b.ticker_occurrence(Some(8), "h"), 0);
    }
}
