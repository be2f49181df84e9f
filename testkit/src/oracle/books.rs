//! Books: what a user rebuilds from the store, against the exchange's book at that time.
//!
//! The exchange's book of a market at exchange time `T` is its book before any delta (walked
//! back from its current book over every published delta) plus every delta stamped at or before
//! `T`. Checked, per market:
//! - every WebSocket snapshot equals the exchange's book at its splice point (a snapshot whose
//!   splice point is off by one delta fails);
//! - every REST snapshot (no splice point) equals the exchange's book at some moment of the
//!   ten seconds before it was received (an empty REST book of a non-empty market fails);
//! - docs/archive.md's rebuild (the latest snapshot at or before `T` by `ts`, plus the stored
//!   deltas after its splice point up to `T`) equals the exchange's book at the time of each
//!   next snapshot and at the end (the cut, or everything when settled). A rebuild across a
//!   window every gatherer declared is unknown, not judged; at the end it must not be needed:
//!   after such a window there must be a fresh snapshot, unless nothing was lost in it.
//!
//! A market whose published timestamps go backwards has no book "at a time": it is counted
//! and not judged.
//!
//! It must never take an expected book from the store.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::streams::Declarations;
use crate::held::{Held, HeldSnapshot};
use crate::sim::Truth;

/// `(side, price) -> quantity`.
type Book = BTreeMap<(i16, i64), i64>;
/// `(ts, side, price, delta)`.
type D = (i64, i16, i64, i64);

/// How far back of its receipt a REST snapshot may show the book.
const REST_WINDOW_MS: i64 = 10_000;

/// The books' judgement.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct BookVerdict {
    /// Markets with at least one stored snapshot.
    pub markets: u64,
    /// WebSocket snapshots, and those not equal to the exchange's book at their splice point.
    pub snapshots: u64,
    pub snapshots_wrong: u64,
    /// REST snapshots, and those equal to no book of the ten seconds before their receipt.
    pub rest: u64,
    pub rest_wrong: u64,
    /// Rebuilds compared, wrong, and not judged (across a window every gatherer declared).
    pub rebuilds: u64,
    pub rebuilds_wrong: u64,
    pub rebuilds_unknown: u64,
    /// Markets whose published timestamps go backwards (no book at a time: not judged).
    pub unordered_markets: u64,
}

impl BookVerdict {
    pub fn ok(&self) -> bool {
        self.snapshots_wrong == 0 && self.rest_wrong == 0 && self.rebuilds_wrong == 0
    }
}

fn apply(b: &mut Book, side: i16, price: i64, delta: i64) {
    let q = b.entry((side, price)).or_default();
    *q += delta;
    if *q == 0 {
        b.remove(&(side, price));
    }
}

fn of_snapshot(s: &HeldSnapshot) -> Book {
    let mut b = Book::new();
    for (p, q) in &s.yes {
        *b.entry((1, *p)).or_default() += q;
    }
    for (p, q) in &s.no {
        *b.entry((2, *p)).or_default() += q;
    }
    b.retain(|_, q| *q != 0);
    b
}

fn show(b: &Book) -> String {
    let side = |s: i16| {
        b.iter()
            .filter(|((x, _), _)| *x == s)
            .map(|((_, p), q)| format!("{p}:{q}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!("yes [{}] no [{}]", side(1), side(2))
}

/// The exchange's book of one market, walked forward in time.
struct Sweep<'a> {
    deltas: &'a [D],
    next: usize,
    book: Book,
}

impl<'a> Sweep<'a> {
    fn new(initial: &Book, deltas: &'a [D]) -> Sweep<'a> {
        Sweep {
            deltas,
            next: 0,
            book: initial.clone(),
        }
    }

    /// The book at `t`: every delta stamped at or before it (`t` never decreases).
    fn at(&mut self, t: i64) -> &Book {
        while self.next < self.deltas.len() && self.deltas[self.next].0 <= t {
            let (_, s, p, d) = self.deltas[self.next];
            apply(&mut self.book, s, p, d);
            self.next += 1;
        }
        &self.book
    }
}

/// The exchange's book of `market` at exchange time `at_ms`: `(yes, no)` levels ascending by
/// price. None: the market is unknown, or its timestamps go backwards (no book at a time).
pub fn exchange_book(truth: &Truth, market: &str, at_ms: i64) -> Option<super::super::sim::Levels> {
    let now = truth.markets.get(market)?;
    let deltas: Vec<D> = truth
        .deltas
        .iter()
        .filter(|d| d.market == market)
        .map(|d| (d.ts_ms, d.key.2, d.key.3, d.key.4))
        .collect();
    if deltas.windows(2).any(|w| w[1].0 < w[0].0) {
        return None;
    }
    let mut book = Book::new();
    for (p, q) in &now.yes {
        apply(&mut book, 1, *p, *q);
    }
    for (p, q) in &now.no {
        apply(&mut book, 2, *p, *q);
    }
    for (_, s, p, d) in &deltas {
        apply(&mut book, *s, *p, -*d);
    }
    let mut sweep = Sweep::new(&book, &deltas);
    let at = sweep.at(at_ms);
    let side = |s: i16| {
        at.iter()
            .filter(|((x, _), _)| *x == s)
            .map(|((_, p), q)| (*p, *q))
            .collect::<Vec<_>>()
    };
    Some((side(1), side(2)))
}

/// Judges every stored book of `held` against the truth. `end_ms`: the rebuild's last time
/// (the cut; `i64::MAX` when settled).
pub(super) fn check(
    truth: &Truth,
    held: &Held,
    decl: &Declarations<'_>,
    end_ms: i64,
    problems: &mut Vec<String>,
) -> BookVerdict {
    let mut v = BookVerdict::default();
    let mut say = |p: String| {
        if problems.len() < 40 {
            problems.push(p);
        }
    };
    let mut published: HashMap<&str, Vec<D>> = HashMap::new();
    for d in &truth.deltas {
        let (_, _, side, price, delta) = d.key;
        published
            .entry(d.market.as_str())
            .or_default()
            .push((d.ts_ms, side, price, delta));
    }
    let mut stored: HashMap<&str, Vec<D>> = HashMap::new();
    for (m, ts, side, price, delta) in &held.deltas {
        if *ts > 0 {
            stored
                .entry(m.as_str())
                .or_default()
                .push((*ts, *side, *price, *delta));
        }
    }
    for d in stored.values_mut() {
        d.sort_unstable();
    }
    let mut snaps: HashMap<&str, Vec<&HeldSnapshot>> = HashMap::new();
    for s in &held.snapshots {
        snaps.entry(s.market.as_str()).or_default().push(s);
    }
    let none: Vec<D> = Vec::new();
    let mut markets: Vec<&&str> = snaps.keys().collect();
    markets.sort();
    for market in markets {
        let market = *market;
        let list = &snaps[market];
        v.markets += 1;
        let deltas = published.get(market).unwrap_or(&none);
        if deltas.windows(2).any(|w| w[1].0 < w[0].0) {
            v.unordered_markets += 1;
            continue;
        }
        let Some(now) = truth.markets.get(market) else {
            say(format!(
                "snapshots of {market}, which the exchange does not have"
            ));
            v.snapshots_wrong += list.len() as u64;
            continue;
        };
        let mut initial = Book::new();
        for (p, q) in &now.yes {
            apply(&mut initial, 1, *p, *q);
        }
        for (p, q) in &now.no {
            apply(&mut initial, 2, *p, *q);
        }
        for (_, s, p, d) in deltas {
            apply(&mut initial, *s, *p, -*d);
        }
        let windows = decl.all_declared_windows("orderbook_deltas", market);
        let in_window = |t: i64| windows.iter().any(|(a, b)| *a <= t && t <= *b);
        let crosses = |after: i64, to: i64| windows.iter().any(|(a, b)| *a <= to && *b > after);

        // WebSocket snapshots at their splice points.
        let mut ws: Vec<&HeldSnapshot> = list
            .iter()
            .copied()
            .filter(|s| s.source != "rest")
            .collect();
        ws.sort_by_key(|s| (s.splice_ms.unwrap_or(i64::MIN), s.as_of_ms));
        let mut sweep = Sweep::new(&initial, deltas);
        for s in &ws {
            v.snapshots += 1;
            let Some(x) = s.splice_ms else {
                v.snapshots_wrong += 1;
                say(format!(
                    "snapshot of {market} from {} (received {}) has no splice point",
                    s.gatherer, s.received_ms
                ));
                continue;
            };
            let want = sweep.at(x);
            let got = of_snapshot(s);
            if &got != want {
                v.snapshots_wrong += 1;
                say(format!(
                    "snapshot of {market} from {} (received {}, splice {x}) is not the exchange's book at its splice point: stored {}, exchange {}",
                    s.gatherer,
                    s.received_ms,
                    show(&got),
                    show(want)
                ));
            }
        }

        // REST snapshots: some book of the ten seconds before their receipt.
        for s in list.iter().filter(|s| s.source == "rest") {
            v.rest += 1;
            let got = of_snapshot(s);
            let mut sw = Sweep::new(&initial, deltas);
            let mut found = sw.at(s.received_ms - REST_WINDOW_MS) == &got;
            while !found && sw.next < deltas.len() && deltas[sw.next].0 <= s.received_ms + 1_000 {
                let t = deltas[sw.next].0;
                found = sw.at(t) == &got;
            }
            if !found {
                v.rest_wrong += 1;
                say(format!(
                    "REST snapshot of {market} from {} (received {}) is no book of the exchange's in the {} s before: stored {}",
                    s.gatherer,
                    s.received_ms,
                    REST_WINDOW_MS / 1000,
                    show(&got)
                ));
            }
        }

        // Rebuilds: the latest snapshot by `ts` plus the stored deltas after its splice point.
        let mut chain: Vec<&HeldSnapshot> = ws
            .iter()
            .copied()
            .filter(|s| s.splice_ms.is_some() && s.as_of_ms <= end_ms)
            .collect();
        chain.sort_by_key(|s| (s.as_of_ms, s.splice_ms));
        let stored_deltas = stored.get(market).unwrap_or(&none);
        let mut truth_sweep = Sweep::new(&initial, deltas);
        for (i, s) in chain.iter().enumerate() {
            let x = s.splice_ms.unwrap_or_default();
            let next = chain[i + 1..]
                .iter()
                .map(|n| n.as_of_ms)
                .find(|t| *t > s.as_of_ms);
            let last = next.is_none();
            let t = next.unwrap_or(end_ms);
            if chain[i + 1..].iter().any(|n| n.as_of_ms == s.as_of_ms) {
                // Another snapshot from the same moment takes its place in the chain.
                continue;
            }
            let mut rebuilt = of_snapshot(s);
            for (ts, side, price, delta) in stored_deltas {
                if *ts > x && *ts <= t {
                    apply(&mut rebuilt, *side, *price, *delta);
                }
            }
            let want = truth_sweep.at(t).clone();
            // Across a declared window the rebuild is unknown; at the end it is judged all the
            // same when the market traded after the window (its subscribers resnapshot): it is
            // what a user gets, and a fresh snapshot must have made it right.
            let traded_after = windows
                .iter()
                .filter(|(a, b)| *a <= t && *b > x)
                .map(|(_, b)| *b)
                .max()
                .is_none_or(|end| deltas.iter().any(|d| d.0 > end && d.0 <= t));
            if in_window(t) || (crosses(x, t) && !(last && traded_after)) {
                v.rebuilds_unknown += 1;
                continue;
            }
            v.rebuilds += 1;
            if rebuilt != want {
                v.rebuilds_wrong += 1;
                let at = if t == i64::MAX {
                    "the end".to_owned()
                } else {
                    format!("{t}")
                };
                let why = if crosses(x, t) {
                    "no snapshot after a window every gatherer declared"
                } else {
                    "deltas missing, extra or misplaced"
                };
                say(format!(
                    "the book of {market} rebuilt from the snapshot of {} (splice {x}) at {at} is not the exchange's ({why}): rebuilt {}, exchange {}",
                    s.gatherer,
                    show(&rebuilt),
                    show(&want)
                ));
            }
        }
    }
    v
}
