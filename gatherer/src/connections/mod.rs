//! The WebSocket connections: markets sharded over `ws.connections` sockets, each signed,
//! kept alive by ping/pong with a silence timeout, reconnected forever with capped jittered
//! backoff, and checked for `seq` continuity per `(connection, sid)` before any frame is routed.
//!
//! Connection 0 also carries the global `trade` and `market_lifecycle_v2` subscriptions; every
//! connection carries `orderbook_delta` and `ticker` for its shard of markets.
//!
//! On a seq gap, an error 10/17/25, a book that goes negative, or a disconnect, the affected
//! books are invalid: their deltas are dropped until fresh snapshots arrive (`get_snapshot`,
//! or resubscribe), and the hole is declared as a `gaps` record when it closes. Trade holes
//! are handed to backfill instead. Nothing here may ever stop retrying, and it must never
//! block on the database.

mod book;
mod conn;
mod open_holes;
pub mod unknown;

use std::collections::HashSet;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kalshi_shared::auth::LiveSigner;
use kalshi_shared::retry::BackoffConfig;
use kalshi_shared::service::Group;
use tokio::sync::{Notify, mpsc, watch};

use crate::health::Health;
use crate::registry::{Desired, Note, Scope};
use crate::store::Sinks;
use crate::store::rows::GapReason;

pub use conn::shard_of;
pub use kalshi_shared::identity::occurrence::{LifecycleSeen, Occurrences};
pub use open_holes::{OpenHole, OpenHoles};

/// Settings for every connection.
#[derive(Clone)]
pub struct ConnConfig {
    pub ws_url: String,
    pub connections: usize,
    pub ping_interval: Duration,
    pub silence_timeout: Duration,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub max_frame_bytes: usize,
    pub backoff: BackoffConfig,
    pub subscribe_batch: usize,
    pub gap_margin_ms: i64,
    /// How long a snapshot waits for a delta before it is stored (`book.rs`).
    pub snapshot_hold: std::time::Duration,
    /// Every this long a changed book is stored again (`book.rs`); zero: never.
    pub snapshot_every: std::time::Duration,
    pub signer: Option<Arc<LiveSigner>>,
    pub tls: Arc<rustls::ClientConfig>,
}

/// A window in which trades may have been missed, for backfill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TradeHole {
    pub from_ms: i64,
    pub to_ms: i64,
    pub reason: GapReason,
}

/// Trade holes waiting for backfill. Never bounded by dropping: holes are merged instead.
/// Every hole is also handed to the backfill's recorder as soon as it is found, which writes
/// it to `pending_trade_holes` while the backfill may still be busy with another window: a
/// hole is never held only in memory for longer than a database write.
#[derive(Debug, Default)]
pub struct Holes {
    list: Mutex<Vec<TradeHole>>,
    pub notify: Notify,
    /// Found and not yet recorded in the database.
    fresh: Mutex<Vec<TradeHole>>,
    pub fresh_notify: Notify,
}

impl Holes {
    pub fn push(&self, hole: TradeHole) {
        let mut list = self
            .list
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        list.push(hole);
        if list.len() > 1000 {
            merge(&mut list);
        }
        drop(list);
        let mut fresh = self
            .fresh
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        fresh.push(hole);
        if fresh.len() > 1000 {
            merge(&mut fresh);
        }
        drop(fresh);
        self.notify.notify_one();
        self.fresh_notify.notify_one();
    }

    /// Holes found since the last call (merged), for the recorder.
    pub fn take_fresh(&self) -> Vec<TradeHole> {
        let mut fresh = self
            .fresh
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = std::mem::take(&mut *fresh);
        merge(&mut out);
        out
    }

    /// Gives unrecorded holes back (the database refused them for now).
    pub fn unrecorded(&self, holes: Vec<TradeHole>) {
        self.fresh
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(holes);
    }

    /// Takes every pending hole, merged.
    pub fn take(&self) -> Vec<TradeHole> {
        let mut list = self
            .list
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = std::mem::take(&mut *list);
        merge(&mut out);
        out
    }
}

/// Merges overlapping windows (keeping the first reason).
pub fn merge(holes: &mut Vec<TradeHole>) {
    holes.sort_by_key(|h| (h.from_ms, h.to_ms));
    let mut out: Vec<TradeHole> = Vec::with_capacity(holes.len());
    for h in holes.drain(..) {
        match out.last_mut() {
            Some(last) if h.from_ms <= last.to_ms => last.to_ms = last.to_ms.max(h.to_ms),
            _ => out.push(h),
        }
    }
    *holes = out;
}

/// Trade ids the WebSocket delivered recently (bounded), so backfill stores only the others.
#[derive(Debug)]
pub struct RecentTrades {
    inner: Mutex<(HashSet<String>, std::collections::VecDeque<String>)>,
    capacity: usize,
}

impl RecentTrades {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new((HashSet::new(), std::collections::VecDeque::new())),
            capacity: capacity.max(1),
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
            .contains(id)
    }

    /// Records an id; returns false if it was already there.
    pub fn insert(&self, id: &str) -> bool {
        let mut g = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (set, order) = &mut *g;
        if set.contains(id) {
            return false;
        }
        set.insert(id.to_owned());
        order.push_back(id.to_owned());
        while order.len() > self.capacity {
            if let Some(old) = order.pop_front() {
                set.remove(&old);
            }
        }
        true
    }
}

/// What the connections share.
pub struct Shared {
    pub cfg: ConnConfig,
    pub sinks: Sinks,
    pub notes: mpsc::Sender<Note>,
    pub holes: Arc<Holes>,
    pub scope: Arc<RwLock<Scope>>,
    pub desired: watch::Receiver<Desired>,
    pub health: Arc<Health>,
    pub recent_trades: Arc<RecentTrades>,
    pub lifecycle_seen: LifecycleSeen,
    /// Unknown messages lately received, so one connection's copy is stored once.
    pub unknown_seen: unknown::RecentUnknown,
    /// Delta occurrences `(side, price, delta)` per market and millisecond, process-wide.
    pub delta_occ: Occurrences<(kalshi_shared::wire::Side, i64, i64)>,
    /// Ticker occurrences by content hash per market and millisecond, process-wide.
    pub ticker_occ: Occurrences<String>,
    /// Connection epochs: unique per connection run, across restarts too.
    pub epochs: AtomicI64,
    /// When this gatherer last received data before this start (from its database): the
    /// downtime is a hole in every stream until the first snapshots and acks close it.
    pub startup_from: Option<i64>,
    /// Markets an earlier run fetched (in the local registry at this start). One it never
    /// fetched it never held: its hole reaches back to when the market was live, not only to
    /// `startup_from` (a market created while REST refused, then the gatherer killed).
    pub known_before: std::collections::HashSet<String>,
    /// Open holes, recorded for the next start; with those the previous run left.
    pub open_holes: Arc<OpenHoles>,
}

/// Logs a repeated condition at most once per period, with the count in between.
pub struct LogLimiter {
    last: Mutex<std::collections::HashMap<&'static str, (Instant, u64)>>,
    period: Duration,
}

impl LogLimiter {
    pub fn new(period: Duration) -> Self {
        Self {
            last: Mutex::new(std::collections::HashMap::new()),
            period,
        }
    }

    /// Returns `Some(suppressed)` when this occurrence should be logged.
    pub fn check(&self, key: &'static str) -> Option<u64> {
        let mut g = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        match g.get_mut(key) {
            Some((t, n)) if now.duration_since(*t) < self.period => {
                *n += 1;
                None
            }
            Some((t, n)) => {
                let suppressed = *n;
                *t = now;
                *n = 0;
                Some(suppressed)
            }
            None => {
                g.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}

/// Starts every connection task.
pub fn spawn_all(shared: Arc<Shared>, group: &Group) {
    let limiter = Arc::new(LogLimiter::new(Duration::from_secs(10)));
    for k in 0..shared.cfg.connections {
        let (s, c, l) = (shared.clone(), group.token(), limiter.clone());
        group.spawn(format!("ws_{k}"), async move {
            conn::Connection::new(k, s, l).run(c).await;
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holes_merge() {
        let h = Holes::default();
        h.push(TradeHole {
            from_ms: 10,
            to_ms: 20,
            reason: GapReason::SeqGap,
        });
        h.push(TradeHole {
            from_ms: 15,
            to_ms: 30,
            reason: GapReason::Disconnect,
        });
        h.push(TradeHole {
            from_ms: 40,
            to_ms: 50,
            reason: GapReason::Polling,
        });
        assert_eq!(
            h.take(),
            vec![
                TradeHole {
                    from_ms: 10,
                    to_ms: 30,
                    reason: GapReason::SeqGap
                },
                TradeHole {
                    from_ms: 40,
                    to_ms: 50,
                    reason: GapReason::Polling
                }
            ]
        );
        assert!(h.take().is_empty());
    }

    #[test]
    fn recent_trades_are_bounded() {
        let r = RecentTrades::new(2);
        assert!(r.insert("a"));
        assert!(!r.insert("a"));
        assert!(r.insert("b"));
        assert!(r.insert("c"));
        assert!(r.insert("a"), "evicted");
    }

    #[test]
    fn limiter_counts_suppressed() {
        let l = LogLimiter::new(Duration::from_secs(3600));
        assert_eq!(l.check("x"), Some(0));
        assert_eq!(l.check("x"), None);
        assert_eq!(l.check("x"), None);
        assert_eq!(l.check("y"), Some(0));
    }
}
