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
//! A market none of whose records is within [`IDLE_MS`] of the newest timestamp counted for any
//! market (it closed, settled or left) is forgotten whole: markets come and go for the life of
//! the process, and each one's last counts stayed (the hour-long soak's gatherers grew about
//! 10 MiB per 10 minutes as the simulator opened and settled markets). A record of a forgotten
//! market at or before its last counted time is beyond the horizon too (and counted so).
//! It must never hand out an occurrence twice for one key within the horizon.

use std::hash::Hash;
use std::sync::Mutex;

/// Counted once per delta and ticker: foldhash (seeded per map) instead of SipHash, which was
/// a third of this module's cost at 120,000 msg/s.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Counted when a record is older than the horizon (its count restarts from what is left).
pub const BEYOND_HORIZON_METRIC: &str = "conn_manager_occurrence_beyond_horizon_total";

/// How far behind a market's newest timestamp counts are kept.
pub const HORIZON_MS: i64 = 10_000;

/// How far behind the newest timestamp of any market a market's newest may fall before the
/// market is forgotten: far beyond the horizon and any delivery delay, so that only a market
/// gone quiet is dropped. Memory is the markets live within it.
pub const IDLE_MS: i64 = 600_000;

#[derive(Debug)]
struct MarketCounts<K> {
    counts: HashMap<(i64, K), u32>,
    newest: i64,
    /// The timestamp of the last record counted (not the newest: clocks step back).
    last: i64,
    pruned_below: i64,
}

#[derive(Debug)]
struct Markets<K> {
    by_ticker: HashMap<String, MarketCounts<K>>,
    /// The newest timestamp counted for any market.
    newest: i64,
    /// `newest` at the last sweep for quiet markets.
    swept_at: i64,
    /// The newest timestamp of any market forgotten so far.
    forgotten_through: i64,
}

/// Occurrence counters of one record kind, for every market.
#[derive(Debug)]
pub struct Occurrences<K> {
    markets: Mutex<Markets<K>>,
    horizon_ms: i64,
    idle_ms: i64,
}

impl<K: Hash + Eq + Clone> Default for Occurrences<K> {
    fn default() -> Self {
        Self::with_limits(HORIZON_MS, IDLE_MS)
    }
}

impl<K: Hash + Eq + Clone> Occurrences<K> {
    pub fn with_horizon(horizon_ms: i64) -> Self {
        Self::with_limits(horizon_ms, IDLE_MS)
    }

    /// Counts kept `horizon_ms` behind a market's newest; a market `idle_ms` behind the
    /// newest of all forgotten (never less than twice the horizon).
    pub fn with_limits(horizon_ms: i64, idle_ms: i64) -> Self {
        Occurrences {
            markets: Mutex::new(Markets {
                by_ticker: HashMap::default(),
                newest: i64::MIN,
                swept_at: i64::MIN,
                forgotten_through: i64::MIN,
            }),
            horizon_ms,
            idle_ms: idle_ms.max(horizon_ms.saturating_mul(2)),
        }
    }

    /// The occurrence of one more record `(market, ts, key)`; 0 for a record without `ts`
    /// (it is kept under its gatherer's own key downstream and never merged).
    pub fn next(&self, market: &str, ts: Option<i64>, key: K) -> u32 {
        let Some(ts) = ts else { return 0 };
        let mut guard = self
            .markets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let all = &mut *guard;
        if ts > all.newest {
            all.newest = ts;
            // Sweep for quiet markets a few times per idle period: O(markets) each time.
            if ts.saturating_sub(all.swept_at) >= self.idle_ms / 4 {
                let floor = ts.saturating_sub(self.idle_ms);
                let mut forgotten = all.forgotten_through;
                all.by_ticker.retain(|_, m| {
                    let keep = m.newest >= floor;
                    if !keep {
                        forgotten = forgotten.max(m.newest);
                    }
                    keep
                });
                all.forgotten_through = forgotten;
                all.swept_at = ts;
            }
        }
        let forgotten_through = all.forgotten_through;
        let mc = match all.by_ticker.get_mut(market) {
            Some(mc) => mc,
            None => all
                .by_ticker
                .entry(market.to_owned())
                .or_insert_with(|| MarketCounts {
                    counts: HashMap::default(),
                    newest: ts,
                    last: ts,
                    // Possibly a forgotten market's: what it counted is gone.
                    pruned_below: if ts <= forgotten_through {
                        ts.saturating_add(1)
                    } else {
                        i64::MIN
                    },
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
            .by_ticker
            .get(market)
            .map(|m| m.last)
    }

    /// Entries held (for tests and metrics).
    pub fn entries(&self) -> usize {
        self.markets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .by_ticker
            .values()
            .map(|m| m.counts.len())
            .sum()
    }

    /// Markets held (for tests and metrics).
    pub fn markets(&self) -> usize {
        self.markets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .by_ticker
            .len()
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
    fn quiet_markets_are_forgotten_and_live_ones_kept() {
        let o: Occurrences<u8> = Occurrences::with_limits(100, 1_000);
        // Markets that trade once and go quiet, one every 10 ms, while "LIVE" goes on.
        for i in 0..10_000i64 {
            o.next(&format!("M{i}"), Some(i * 10), 1);
            assert_eq!(o.next("LIVE", Some(i * 10), 1), 0);
        }
        // Those within the idle period of the newest (99,990) stay, with their counts; the
        // rest are gone (a sweep every quarter period: at most 1.25 periods of them held).
        assert!(o.markets() <= 126, "{} markets held", o.markets());
        assert_eq!(
            o.next("M9950", Some(99_500), 1),
            1,
            "a recent market keeps its count"
        );
        assert_eq!(o.next("LIVE", Some(99_990), 1), 1);
        assert_eq!(o.last_ts("M0"), None);
        // A forgotten market's record at its old time: counted again from zero, and as
        // beyond the horizon; a later one is an ordinary new millisecond.
        assert_eq!(o.next("M0", Some(0), 1), 0);
        assert_eq!(o.next("M0", Some(0), 1), 1, "and counted on from there");
        assert_eq!(o.next("M1", Some(100_000), 1), 0);
        assert_eq!(o.last_ts("M1"), Some(100_000));
    }

    #[test]
    fn lifecycle_occurrences_continue_from_the_database() {
        let seen = LifecycleSeen::new([("market", "h".to_owned(), 2)]);
        assert_eq!(seen.next("market", "h"), 2);
        assert_eq!(seen.next("market", "h"), 3);
        assert_eq!(seen.next("event", "h"), 0, "per kind");
    }
}
