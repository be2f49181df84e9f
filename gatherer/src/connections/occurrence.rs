//! Occurrence counting for records whose identity is their content: how many identical
//! `(market, ts_ms, content)` this gatherer process received before this one.
//!
//! Counts live for the whole process, across every connection run, reconnect and
//! resubscription, and do not restart when `ts_ms` changes: timestamps going backwards, or a
//! reconnect inside one millisecond, can never give two real records the same occurrence. A
//! gatherer's count is a lower bound of the true multiplicity; production keeps the maximum over
//! gatherers, which is exact whenever one gatherer saw the whole millisecond. A gatherer that may
//! have missed part of a millisecond declares a gap covering it (docs/DESIGN.md, "Occurrence").
//!
//! Bounded: per market, counts older than [`HORIZON_MS`] behind the newest timestamp seen are
//! pruned. A record older than that (a timestamp more than the horizon backwards) is still
//! counted from what is left, and counted in `conn_manager_occurrence_beyond_horizon_total`.
//! It must never hand out an occurrence twice for one key.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

use crate::metrics as m;

/// How far behind a market's newest timestamp counts are kept.
pub const HORIZON_MS: i64 = 10_000;

#[derive(Debug)]
struct MarketCounts<K> {
    counts: HashMap<(i64, K), u32>,
    newest: i64,
    /// The timestamp of the last record counted (not the newest: clocks step back).
    last: i64,
    pruned_below: i64,
}

/// Occurrence counters of one record kind, for every market.
#[derive(Debug)]
pub struct Occurrences<K> {
    markets: Mutex<HashMap<String, MarketCounts<K>>>,
    horizon_ms: i64,
}

impl<K: Hash + Eq + Clone> Default for Occurrences<K> {
    fn default() -> Self {
        Self::with_horizon(HORIZON_MS)
    }
}

impl<K: Hash + Eq + Clone> Occurrences<K> {
    pub fn with_horizon(horizon_ms: i64) -> Self {
        Occurrences {
            markets: Mutex::new(HashMap::new()),
            horizon_ms,
        }
    }

    /// The occurrence of one more record `(market, ts, key)`; 0 for a record without `ts`
    /// (it is kept under its gatherer's own key downstream and never merged).
    pub fn next(&self, market: &str, ts: Option<i64>, key: K) -> u32 {
        let Some(ts) = ts else { return 0 };
        let mut g = self
            .markets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mc = match g.get_mut(market) {
            Some(mc) => mc,
            None => g.entry(market.to_owned()).or_insert(MarketCounts {
                counts: HashMap::new(),
                newest: ts,
                last: ts,
                pruned_below: i64::MIN,
            }),
        };
        mc.last = ts;
        if ts < mc.pruned_below {
            metrics::counter!(m::OCCURRENCE_BEYOND_HORIZON).increment(1);
        }
        if ts > mc.newest {
            mc.newest = ts;
            let floor = ts - self.horizon_ms;
            // Prune lazily: only once the map holds entries older than twice the horizon.
            if mc.pruned_below < floor - self.horizon_ms {
                mc.counts.retain(|(t, _), _| *t >= floor);
                mc.pruned_below = floor;
            }
        }
        let n = mc.counts.entry((ts, key)).or_insert(0);
        let o = *n;
        *n = n.saturating_add(1);
        o
    }

    /// The exchange time of the last record counted for `market`: a hole opened after it
    /// starts no later than this millisecond, whatever the wall clock says (the boundary rule).
    pub fn last_ts(&self, market: &str) -> Option<i64> {
        self.markets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(market)
            .map(|m| m.last)
    }

    /// Entries held (for tests and metrics).
    pub fn entries(&self) -> usize {
        self.markets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .map(|m| m.counts.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_records_are_numbered_across_time_going_backwards() {
        let o: Occurrences<(i64, i64)> = Occurrences::default();
        assert_eq!(o.next("M", Some(1_000), (5, 100)), 0);
        assert_eq!(o.next("M", Some(1_000), (5, 100)), 1);
        assert_eq!(o.next("M", Some(1_000), (5, -100)), 0);
        assert_eq!(o.next("N", Some(1_000), (5, 100)), 0, "per market");
        assert_eq!(o.next("M", Some(1_001), (5, 100)), 0, "a new millisecond");
        // The clock steps back to 1_000: the count goes on, it does not restart.
        assert_eq!(o.next("M", Some(1_000), (5, 100)), 2);
        assert_eq!(o.next("M", None, (5, 100)), 0);
    }

    #[test]
    fn counts_are_bounded_by_the_horizon() {
        let o: Occurrences<u8> = Occurrences::with_horizon(100);
        for ts in 0..1_000 {
            o.next("M", Some(ts), 1);
        }
        assert!(o.entries() <= 201, "{}", o.entries());
        // Within the horizon the count is kept.
        assert_eq!(o.next("M", Some(999), 1), 1);
    }
}
