//! A market's book as one connection sees it, and the exact splice point of the snapshots it
//! stores. Occurrence counting is process-wide, in `kalshi_shared::identity::occurrence`.
//!
//! **The splice point.** A stored snapshot says exactly which deltas it reflects: every delta of
//! its market with `ts_ms <= last_delta_ts_ms`, and none after (docs/archive.md's rebuild). An
//! exchange snapshot carries no time, and deltas stamped in the same millisecond can fall on
//! either side of it, so it is not stored when it arrives. The book keeps it *pending* and
//! applies the deltas that follow; it is stored, as the book then stands, at the first moment
//! the boundary is certain:
//! - a delta of a later millisecond arrives: the book before it reflects every delta up to the
//!   last one applied (`ts_ms = x`), and none after. Stored with splice `x`, as of `x`;
//! - no delta for `HOLD` after the last one applied: nothing more of millisecond `x` is
//!   coming (the exchange sends a millisecond's deltas together). Stored with splice `x`;
//!   (`HOLD` is `ws.snapshot_hold`, 2 s by default);
//! - no delta at all for `HOLD` after the snapshot: it reflects everything the exchange
//!   published before it (stamped at or before its receipt, within the clocks' skew), and any
//!   later delta arrives after `HOLD` and is stamped after the receipt plus `HOLD / 2` (within
//!   the delivery latency). Stored with splice `received + HOLD / 2`, as of its receipt.
//!   A later delta stamped at or before that splice proves the bound wrong: counted
//!   (`conn_manager_splice_violations_total`), logged, and a fresh snapshot is stored at the
//!   next boundary.
//!
//! "No delta for `HOLD`" counts only while the connection is live: some frame (any market's
//! delta, a ticker, a pong) must have arrived `HOLD` or more after the book was last touched.
//! A stalled socket is silent for every market at once and proves nothing; its snapshot stays
//! pending until the stall ends or the connection is declared lost (then it is not stored).
//!
//! A pending snapshot whose chain breaks (a hole, the connection lost, the market left) before
//! its boundary is certain is not stored (`conn_manager_snapshots_unstored_total{reason}`):
//! the hole is declared and the resnapshot after it is stored instead.
//!
//! It must never let a level go negative: `apply` refuses such a delta, and the caller then
//! treats the book as broken until a fresh snapshot. It must never store a snapshot whose
//! splice point it cannot vouch for.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kalshi_shared::wire::Side;

use crate::store::rows::Origin;

/// A book's levels, `(price micros, quantity centi)` ascending by price: yes, then no.
pub type Levels = (Vec<(i64, i64)>, Vec<(i64, i64)>);

/// A snapshot waiting for its splice point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// Where and when the exchange's snapshot was received.
    pub origin: Origin,
    /// When the last delta was applied to it, or when it arrived (for the hold).
    pub touched: Instant,
}

/// A snapshot ready to be stored: the book as it stands, exact up to `splice_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Splice {
    /// Every delta with `ts_ms <= splice_ms` is in the book, none after.
    pub splice_ms: i64,
    /// The time from which the stored book is the exchange's book (the row's `ts`).
    pub as_of_ms: i64,
    /// Where and when the exchange's snapshot was received.
    pub origin: Origin,
    /// Spliced by a delta (`delta`) or by quiet (`quiet`), for the metric.
    pub how: &'static str,
}

#[derive(Debug, Default)]
pub struct MarketBook {
    /// A snapshot has arrived in this run and nothing since broke the chain.
    pub valid: bool,
    pub yes: BTreeMap<i64, i64>,
    pub no: BTreeMap<i64, i64>,
    /// Exchange time of the newest delta applied since the last snapshot.
    pub last_delta_ts: Option<i64>,
    /// The snapshot not stored yet.
    pub pending: Option<Pending>,
    /// The splice point of the last snapshot stored when it came from quiet (a later delta
    /// stamped at or before it proves the quiet bound wrong).
    pub quiet_splice: Option<i64>,
    /// A row of this book was not stored (a writer's buffer overflowed: a delta, or the
    /// snapshot itself): the stored deltas have a hole, so the book, exact in memory, is stored
    /// again at its next boundary.
    pub restore: bool,
    /// A delta was applied since the last snapshot of this book was spliced: a periodic
    /// snapshot would hold something new.
    pub changed: bool,
    /// When the book was last set pending by [`MarketBook::periodic`] (its phase at first).
    pub periodic_at: Option<Instant>,
}

impl MarketBook {
    /// A fresh exchange snapshot: the book is replaced and waits for its splice point. A
    /// pending one it replaces is returned (it was never stored).
    pub fn load(
        &mut self,
        yes: &[(i64, i64)],
        no: &[(i64, i64)],
        origin: Origin,
        now: Instant,
    ) -> Option<Pending> {
        self.yes = yes.iter().copied().collect();
        self.no = no.iter().copied().collect();
        self.valid = true;
        self.last_delta_ts = None;
        self.quiet_splice = None;
        self.changed = false;
        self.pending.replace(Pending {
            origin,
            touched: now,
        })
    }

    /// The chain is broken: the book is unknown until a fresh snapshot. A pending snapshot is
    /// dropped (returned, to be counted): its boundary can no longer be vouched for.
    pub fn invalidate(&mut self) -> Option<Pending> {
        self.valid = false;
        self.yes.clear();
        self.no.clear();
        self.last_delta_ts = None;
        self.quiet_splice = None;
        self.restore = false;
        self.pending.take()
    }

    /// Before a delta stamped `ts` is applied: the pending snapshot, stored now if this delta
    /// opens a later millisecond than the last one applied.
    pub fn before_delta(&mut self, ts: Option<i64>) -> Option<Splice> {
        let (Some(p), Some(last), Some(ts)) = (self.pending, self.last_delta_ts, ts) else {
            return None;
        };
        if ts <= last {
            return None;
        }
        self.pending = None;
        self.changed = false;
        Some(Splice {
            splice_ms: last,
            as_of_ms: last,
            origin: p.origin,
            how: "delta",
        })
    }

    /// Applies a delta; false if it would make the level negative (the chain is broken).
    /// `now` restarts the pending snapshot's quiet time. True with `Some(splice)` as the second
    /// value when the delta is stamped at or before the last quiet splice point (the bound
    /// proved wrong: the book is pending again, to be stored at its next boundary).
    pub fn apply(
        &mut self,
        side: Side,
        price: i64,
        delta: i64,
        ts: Option<i64>,
        origin: Origin,
        now: Instant,
    ) -> (bool, Option<i64>) {
        let levels = match side {
            Side::Yes => &mut self.yes,
            Side::No => &mut self.no,
        };
        let next = levels.get(&price).copied().unwrap_or(0).checked_add(delta);
        match next {
            Some(n) if n > 0 => {
                levels.insert(price, n);
            }
            Some(0) => {
                levels.remove(&price);
            }
            _ => return (false, None),
        }
        self.changed = true;
        let Some(ts) = ts else {
            return (true, None);
        };
        self.last_delta_ts = Some(self.last_delta_ts.map_or(ts, |l| l.max(ts)));
        if let Some(p) = &mut self.pending {
            p.touched = now;
        }
        match self.quiet_splice {
            Some(q) if ts <= q => {
                self.quiet_splice = None;
                if self.pending.is_none() {
                    self.pending = Some(Pending {
                        origin,
                        touched: now,
                    });
                }
                (true, Some(q))
            }
            _ => (true, None),
        }
    }

    /// At a tick: the pending snapshot, stored now if it has been quiet for `hold` *while the
    /// connection was live*: `last_rx` (when the connection last received any frame) must lie
    /// `hold` or more after the book was last touched. A stalled socket delivers nothing, so
    /// its silence proves nothing (found by `kalshi-stack chaos --scenario mixed`: a snapshot
    /// stored by "quiet" during a ws-stall was not the exchange's book at its splice point).
    /// Frames arrive in order, so every delta sent before that frame has been applied.
    pub fn on_tick(&mut self, last_rx: Instant, hold: Duration) -> Option<Splice> {
        let p = self.pending?;
        if last_rx.saturating_duration_since(p.touched) < hold {
            return None;
        }
        self.pending = None;
        self.changed = false;
        Some(match self.last_delta_ts {
            Some(last) => Splice {
                splice_ms: last,
                as_of_ms: last,
                origin: p.origin,
                how: "delta",
            },
            None => {
                let received = p.origin.received_ms;
                let splice = received + i64::try_from(hold.as_millis() / 2).unwrap_or(0);
                self.quiet_splice = Some(splice);
                Splice {
                    splice_ms: splice,
                    as_of_ms: received,
                    origin: p.origin,
                    how: "quiet",
                }
            }
        })
    }

    /// After a row of this book was dropped: stores the book again (as a snapshot pending from
    /// now) once rows are taken again.
    pub fn rearm(&mut self, origin: Origin, now: Instant) {
        if self.restore && self.valid && self.pending.is_none() {
            self.restore = false;
            self.pending = Some(Pending {
                origin,
                touched: now,
            });
        }
    }

    /// Every `every` (from `phase` before the first call, so a connection's books do not all
    /// come due together): a book that changed since its last snapshot becomes pending, and is
    /// stored at its next boundary like an exchange snapshot (its splice point is as exact).
    /// True when it did.
    pub fn periodic(
        &mut self,
        origin: Origin,
        now: Instant,
        every: Duration,
        phase: Duration,
    ) -> bool {
        if every.is_zero() || !self.valid {
            return false;
        }
        let since = *self
            .periodic_at
            .get_or_insert_with(|| now.checked_sub(phase).unwrap_or(now));
        if now.saturating_duration_since(since) < every {
            return false;
        }
        self.periodic_at = Some(now);
        if self.pending.is_some() || !self.changed {
            return false;
        }
        self.pending = Some(Pending {
            origin,
            touched: now,
        });
        true
    }

    /// The book's levels, ascending by price.
    pub fn levels(&self) -> Levels {
        (
            self.yes.iter().map(|(p, q)| (*p, *q)).collect(),
            self.no.iter().map(|(p, q)| (*p, *q)).collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOLD: Duration = Duration::from_secs(2);

    fn at(received_ms: i64) -> Origin {
        Origin {
            received_ms,
            conn_epoch: 1,
            sid: 1,
            seq: 7,
        }
    }

    fn book(now: Instant) -> MarketBook {
        let mut b = MarketBook::default();
        b.load(&[(400_000, 1_000)], &[], at(10_000), now);
        b
    }

    #[test]
    fn applies_and_detects_negative_levels() {
        let now = Instant::now();
        let mut b = book(now);
        assert!(b.apply(Side::Yes, 400_000, -400, Some(1), at(1), now).0);
        assert_eq!(b.yes[&400_000], 600);
        assert!(b.apply(Side::Yes, 400_000, -600, Some(1), at(1), now).0);
        assert!(!b.yes.contains_key(&400_000));
        assert!(
            !b.apply(Side::No, 300_000, -1, Some(1), at(1), now).0,
            "a level that does not exist cannot shrink"
        );
    }

    #[test]
    fn a_snapshot_is_stored_at_the_first_later_millisecond_with_every_delta_of_the_last() {
        let now = Instant::now();
        let mut b = book(now);
        // Deltas stamped before the snapshot's receipt but sent after it (the exchange clock
        // and the delivery): they are in the stored book, and its splice is their millisecond.
        assert_eq!(b.before_delta(Some(9_970)), None, "no boundary yet");
        b.apply(Side::Yes, 400_000, 100, Some(9_970), at(10_001), now);
        assert_eq!(b.before_delta(Some(9_970)), None, "the same millisecond");
        b.apply(Side::Yes, 400_000, 100, Some(9_970), at(10_001), now);
        let s = b.before_delta(Some(9_990)).unwrap();
        assert_eq!(
            s,
            Splice {
                splice_ms: 9_970,
                as_of_ms: 9_970,
                origin: at(10_000),
                how: "delta"
            }
        );
        assert_eq!(
            b.levels().0,
            vec![(400_000, 1_200)],
            "the book before 9_990"
        );
        assert_eq!(b.before_delta(Some(9_995)), None, "stored once");
    }

    #[test]
    fn quiet_books_are_stored_after_hold() {
        let now = Instant::now();
        // With a delta: its millisecond is the splice.
        let mut b = book(now);
        b.apply(Side::No, 300_000, 50, Some(10_005), at(10_006), now);
        assert_eq!(b.on_tick(now + HOLD / 2, HOLD), None);
        // No frame received since: the connection may be stalled, nothing is certain.
        assert_eq!(b.on_tick(now, HOLD), None);
        let s = b.on_tick(now + HOLD, HOLD).unwrap();
        assert_eq!((s.splice_ms, s.as_of_ms, s.how), (10_005, 10_005, "delta"));
        // Without one: the receipt plus half the hold, as of the receipt.
        let mut b = book(now);
        let s = b.on_tick(now + HOLD, HOLD).unwrap();
        assert_eq!((s.splice_ms, s.as_of_ms, s.how), (11_000, 10_000, "quiet"));
        // A later delta stamped inside that bound: counted, and the book is stored again.
        let (ok, violated) = b.apply(Side::Yes, 400_000, 1, Some(10_900), at(12_000), now + HOLD);
        assert!(ok);
        assert_eq!(violated, Some(11_000));
        assert!(b.pending.is_some());
        let s = b.before_delta(Some(12_000)).unwrap();
        assert_eq!(s.splice_ms, 10_900);
    }

    #[test]
    fn a_broken_chain_drops_the_pending_snapshot_and_forgets_the_old_splice() {
        let now = Instant::now();
        let mut b = book(now);
        b.apply(Side::Yes, 400_000, 1, Some(10_001), at(10_002), now);
        assert!(b.invalidate().is_some(), "dropped, to be counted");
        assert_eq!(
            b.last_delta_ts, None,
            "the last delta before the hole is forgotten"
        );
        // The resnapshot's splice comes from what follows it, never from before the hole.
        b.load(&[(400_000, 5)], &[], at(20_000), now);
        b.apply(Side::Yes, 400_000, 1, Some(19_980), at(20_001), now);
        assert_eq!(b.before_delta(Some(20_010)).unwrap().splice_ms, 19_980);
    }
}

#[cfg(test)]
mod restore_tests {
    use super::*;

    #[test]
    fn a_book_whose_row_was_dropped_is_stored_again_from_memory() {
        let now = Instant::now();
        let o = Origin {
            received_ms: 1,
            conn_epoch: 1,
            sid: 1,
            seq: 1,
        };
        let mut b = MarketBook::default();
        b.load(&[(1, 1)], &[], o, now);
        b.apply(Side::Yes, 1, 1, Some(100), o, now);
        assert!(b.before_delta(Some(101)).is_some());
        b.apply(Side::Yes, 1, 1, Some(101), o, now);
        // The writer refused the delta at 101: nothing pending until rows are taken again.
        b.restore = true;
        assert!(b.pending.is_none());
        b.apply(Side::Yes, 1, 1, Some(102), o, now);
        b.rearm(o, now);
        assert!(!b.restore && b.pending.is_some());
        let s = b.before_delta(Some(103)).unwrap();
        assert_eq!(s.splice_ms, 102);
        assert_eq!(
            b.levels().0,
            vec![(1, 4)],
            "the book in memory, every delta in it"
        );
    }
}

#[cfg(test)]
mod periodic_tests {
    use super::*;

    const EVERY: Duration = Duration::from_secs(300);

    fn o(received_ms: i64) -> Origin {
        Origin {
            received_ms,
            conn_epoch: 1,
            sid: 1,
            seq: received_ms.unsigned_abs(),
        }
    }

    #[test]
    fn a_changed_book_is_stored_again_every_period_from_its_phase_and_an_unchanged_one_is_not() {
        let t0 = Instant::now();
        let mut b = MarketBook::default();
        b.load(&[(1, 100)], &[], o(1), t0);
        b.apply(Side::Yes, 1, 5, Some(10), o(2), t0);
        assert!(
            b.before_delta(Some(11)).is_some(),
            "the exchange's snapshot"
        );
        b.apply(Side::Yes, 2, 7, Some(11), o(3), t0);
        // Phase 100 s: first due 200 s after the first look, then every 300 s.
        assert!(!b.periodic(o(4), t0, EVERY, Duration::from_secs(100)));
        assert!(!b.periodic(o(4), t0 + Duration::from_secs(199), EVERY, Duration::ZERO));
        let due = t0 + Duration::from_secs(200);
        assert!(b.periodic(o(5), due, EVERY, Duration::ZERO));
        assert_eq!(b.pending.map(|p| p.origin), Some(o(5)));
        // Spliced like any snapshot: at the first later millisecond, every delta of 12 in it.
        b.apply(Side::No, 3, 1, Some(12), o(6), due);
        let s = b.before_delta(Some(13)).unwrap();
        assert_eq!((s.splice_ms, s.as_of_ms, s.origin), (12, 12, o(5)));
        assert_eq!(b.levels(), (vec![(1, 105), (2, 7)], vec![(3, 1)]));
        // Nothing changed since: the next period stores nothing.
        assert!(!b.periodic(o(7), due + EVERY, EVERY, Duration::ZERO));
        // A change: the period after stores it.
        b.apply(Side::Yes, 1, -5, Some(20), o(8), due + EVERY);
        assert!(!b.periodic(o(9), due + EVERY + EVERY / 2, EVERY, Duration::ZERO));
        assert!(b.periodic(o(9), due + EVERY * 2, EVERY, Duration::ZERO));
        // Off, or a broken book: never.
        let mut b2 = MarketBook::default();
        b2.load(&[(1, 1)], &[], o(1), t0);
        b2.apply(Side::Yes, 1, 1, Some(1), o(1), t0);
        b2.pending = None;
        assert!(!b2.periodic(o(2), t0 + EVERY * 9, Duration::ZERO, Duration::ZERO));
        b2.invalidate();
        assert!(!b2.periodic(o(2), t0 + EVERY * 9, EVERY, Duration::ZERO));
    }
}
