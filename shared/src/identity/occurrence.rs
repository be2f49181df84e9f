//! Occurrence counting for records whose identity is their content: how many identical
//! `(market, ts_ms, content)` a gatherer process received before this one ([`Occurrences`],
//! deltas and tickers), and how many identical lifecycle messages its database holds
//! ([`LifecycleSeen`]).
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

use std::hash::Hash;
use std::sync::Mutex;

/// Counted once per delta and ticker: foldhash (seeded per map) instead of SipHash, which was
/// a third of this module's cost at 120,000 msg/s.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Counted when a record is older than the horizon (its count restarts from what is left).
pub const BEYOND_HORIZON_METRIC: &str = "conn_manager_occurrence_beyond_horizon_total";

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
            markets: Mutex::new(HashMap::default()),
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
                counts: HashMap::default(),
                newest: ts,
                last: ts,
                pruned_below: i64::MIN,
            }),
        };
        mc.last = ts;
        if ts < mc.pruned_below {
            metrics::counter!(BEYOND_HORIZON_METRIC).increment(1);
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

/// How many lifecycle messages of each content a gatherer has received, over the life of its
/// database (seeded from it at start): identical messages (a market paused twice) get
/// occurrences 0, 1, ... so that all of them reach production. One entry per distinct
/// lifecycle message: markets times their transitions, small next to any data stream.
#[derive(Debug, Default)]
pub struct LifecycleSeen {
    counts: Mutex<HashMap<(&'static str, String), u32>>,
}

impl LifecycleSeen {
    /// Seeded with the next occurrence of each `(kind, content_hash)` already stored.
    pub fn new(seed: impl IntoIterator<Item = (&'static str, String, u32)>) -> Self {
        LifecycleSeen {
            counts: Mutex::new(seed.into_iter().map(|(k, h, n)| ((k, h), n)).collect()),
        }
    }

    /// The occurrence of one more message of this content.
    pub fn next(&self, kind: &'static str, hash: &str) -> u32 {
        let mut g = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = g.entry((kind, hash.to_owned())).or_insert(0);
        let o = *n;
        *n = n.saturating_add(1);
        o
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

    #[test]
    fn lifecycle_occurrences_continue_from_the_database() {
        let seen = LifecycleSeen::new([("market", "h".to_owned(), 2)]);
        assert_eq!(seen.next("market", "h"), 2);
        assert_eq!(seen.next("market", "h"), 3);
        assert_eq!(seen.next("event", "h"), 0, "per kind");
    }
}
