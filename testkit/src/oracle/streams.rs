//! The record streams judged as multisets of content: which missing records are excused, and
//! by what.
//!
//! A missing record (published, not held as often as published) is, in this order:
//! - **in flight**: published after the cut (a live audit);
//! - **silent**, lost downstream: some gatherer holds more copies of it than the judged store
//!   (whatever window or bound it lies in);
//! - **silent**: neither inside a window every gatherer declared nor before its market's
//!   subscription;
//! - **inconclusive**: excusable, but a configured gatherer could not be read, or no longer
//!   holds records of that time (its retention horizon): nobody can say whether it held it;
//! - **declared**: inside a window every gatherer declared, and no gatherer holds it;
//! - **before subscription**: before the first record of its market and stream that any
//!   gatherer holds, within the subscription bound after the market appeared, and no gatherer
//!   holds it.
//!
//! It must never excuse a record that any gatherer holds, nor widen a declared window.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use super::{Rules, StreamVerdict};
use crate::held::{DeclaredGap, Held};
use crate::sim::{DeltaKey, Fact, LifecycleKey, TickerKey, TradeFact, Truth, UnknownKey};

/// One gatherer's declared windows of one stream, merged: per market, and for every market.
#[derive(Default)]
struct Windows<'a> {
    every: Vec<(i64, i64)>,
    by_market: HashMap<&'a str, Vec<(i64, i64)>>,
}

/// Whether `ts` lies in one of `v` (sorted, merged closed intervals).
fn inside(v: &[(i64, i64)], ts: i64) -> bool {
    let i = v.partition_point(|w| w.0 <= ts);
    i > 0 && ts <= v[i - 1].1
}

/// Declared windows, by stream and gatherer, indexed by market: an hour of faults over 1,000
/// markets is ~100,000 windows, and every published record is looked up.
pub(super) struct Declarations<'a> {
    gatherers: &'a [String],
    by: HashMap<(&'a str, &'a str), Windows<'a>>,
}

impl<'a> Declarations<'a> {
    pub(super) fn new(gaps: &'a [DeclaredGap], gatherers: &'a [String]) -> Self {
        let mut by: HashMap<(&str, &str), Windows<'a>> = HashMap::new();
        for g in gaps {
            let w = by
                .entry((g.stream.as_str(), g.gatherer.as_str()))
                .or_default();
            let into = if g.market.is_empty() {
                &mut w.every
            } else {
                w.by_market.entry(g.market.as_str()).or_default()
            };
            into.push((g.from_ms, g.to_ms));
        }
        for w in by.values_mut() {
            w.every = merge(std::mem::take(&mut w.every));
            for v in w.by_market.values_mut() {
                *v = merge(std::mem::take(v));
            }
        }
        Declarations { gatherers, by }
    }

    /// Whether every gatherer declared `(stream, market)` at `ts`, exactly as declared.
    pub(super) fn all_declared(&self, stream: &str, market: &str, ts: i64) -> bool {
        !self.gatherers.is_empty()
            && self.gatherers.iter().all(|g| {
                self.by.get(&(stream, g.as_str())).is_some_and(|w| {
                    inside(&w.every, ts) || w.by_market.get(market).is_some_and(|v| inside(v, ts))
                })
            })
    }

    /// The windows every gatherer declared for `(stream, market)`: the intersection over
    /// gatherers of each one's windows (market-wide and stream-wide), as closed intervals.
    pub(super) fn all_declared_windows(&self, stream: &str, market: &str) -> Vec<(i64, i64)> {
        let mut acc: Option<Vec<(i64, i64)>> = None;
        for g in self.gatherers {
            let mine: Vec<(i64, i64)> = self
                .by
                .get(&(stream, g.as_str()))
                .map(|w| {
                    let mut v = w.every.clone();
                    if !market.is_empty()
                        && let Some(m) = w.by_market.get(market)
                    {
                        v.extend_from_slice(m);
                    }
                    merge(v)
                })
                .unwrap_or_default();
            acc = Some(match acc {
                None => mine,
                Some(prev) => intersect(&prev, &mine),
            });
        }
        acc.unwrap_or_default()
    }
}

// The oracle's own interval arithmetic: the system's (`kalshi_shared::identity::coverage`)
// computes the same windows, and the oracle must not share code with what it judges.
fn merge(mut v: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
    v.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

fn intersect(x: &[(i64, i64)], y: &[(i64, i64)]) -> Vec<(i64, i64)> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < x.len() && j < y.len() {
        let a = x[i].0.max(y[j].0);
        let b = x[i].1.min(y[j].1);
        if a <= b {
            out.push((a, b));
        }
        if x[i].1 < y[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// How many times each content occurs (keyed by reference: nothing is copied).
pub fn counts<'a, K: Hash + Eq + 'a>(keys: impl IntoIterator<Item = &'a K>) -> HashMap<&'a K, u64> {
    let mut m: HashMap<&K, u64> = HashMap::new();
    for k in keys {
        *m.entry(k).or_default() += 1;
    }
    m
}

/// What the gatherers say about one stream.
pub(super) struct Captured<'a, K> {
    /// Per key, the most copies any readable gatherer holds.
    pub max: HashMap<&'a K, u64>,
    /// Per market, the earliest exchange time of any record a gatherer holds.
    pub first: HashMap<&'a str, i64>,
    /// Whether a record of this time can be judged: every configured gatherer was read and
    /// still holds records of that time.
    pub knowable_from: Option<i64>,
}

/// Compares one stream: `stream` is judged; `declared_as` names the stream whose declared windows excuse its
/// records (itself, or the channel's stream that carries it: unknown messages come on the
/// lifecycle channel, and are missed when it is).
#[allow(clippy::too_many_arguments)]
pub(super) fn compare<K: Hash + Eq + Clone + std::fmt::Debug>(
    (stream, declared_as): (&str, &str),
    facts: &[Fact<K>],
    held: &[K],
    captured: &Captured<'_, K>,
    truth: &Truth,
    rules: &Rules,
    decl: &Declarations<'_>,
    subscription_needed: bool,
) -> StreamVerdict {
    let mut v = StreamVerdict {
        stream: stream.to_owned(),
        expected: facts.len() as u64,
        ..StreamVerdict::default()
    };
    let example = |v: &mut StreamVerdict, e: String| {
        if v.examples.len() < 8 {
            v.examples.push(e);
        }
    };
    let held_n = counts(held);
    let want = counts(facts.iter().map(|f| &f.key));
    for (k, n) in &held_n {
        match want.get(k) {
            None => {
                v.unexpected += n;
                example(&mut v, format!("never published: {k:?}"));
            }
            Some(w) if n > w => {
                v.duplicated += n - w;
                example(&mut v, format!("held {n} times, published {w}: {k:?}"));
            }
            Some(_) => {}
        }
    }
    let mut left = held_n.clone();
    // Copies a gatherer holds beyond the judged store's, per key, not yet counted as lost.
    let mut lost_downstream: HashMap<&K, u64> = HashMap::new();
    let mut by_market: BTreeMap<String, u64> = BTreeMap::new();
    for f in facts {
        let declared = decl.all_declared(declared_as, &f.market, f.ts_ms);
        if let Some(n) = left.get_mut(&f.key).filter(|n| **n > 0) {
            *n -= 1;
            v.present += 1;
            if declared {
                v.present_in_declared += 1;
            }
            continue;
        }
        let held_here = held_n.get(&f.key).copied().unwrap_or(0);
        if held_here > 0 {
            v.short_multiplicity += 1;
        }
        if rules.cut_ms.is_some_and(|cut| f.ts_ms > cut) {
            v.in_flight += 1;
            continue;
        }
        let beyond = captured
            .max
            .get(&f.key)
            .copied()
            .unwrap_or(0)
            .saturating_sub(held_here);
        let counted = lost_downstream.entry(&f.key).or_default();
        if *counted < beyond {
            *counted += 1;
            v.silent += 1;
            if declared {
                v.silent_behind_gap += 1;
            }
            example(
                &mut v,
                format!(
                    "lost downstream (a gatherer holds it{}): pos {} {:?}",
                    if declared {
                        ", inside a declared window"
                    } else {
                        ""
                    },
                    f.pos,
                    f.key
                ),
            );
            continue;
        }
        let window_end = (truth.appeared_ms(&f.market) + rules.subscription_latency_ms).min(
            captured
                .first
                .get(f.market.as_str())
                .copied()
                .unwrap_or(i64::MAX),
        );
        let early = subscription_needed && f.ts_ms < window_end;
        if !(declared || early) {
            v.silent += 1;
            example(
                &mut v,
                format!("silently missing (pos {}): {:?}", f.pos, f.key),
            );
        } else if captured.knowable_from.is_none_or(|from| f.ts_ms < from) {
            v.inconclusive += 1;
        } else if declared {
            v.declared += 1;
        } else {
            v.before_subscription += 1;
            *by_market.entry(f.market.clone()).or_default() += 1;
        }
    }
    v.before_subscription_by_market = by_market;
    v
}

/// What the gatherers hold of one stream, in the terms of [`compare`].
pub(super) fn captured<'a, K: Hash + Eq + Clone + 'a>(
    readable: &[&'a crate::held::Held],
    all_readable: bool,
    stream: &str,
    pick: fn(&'a crate::held::Held) -> Vec<(&'a str, i64, &'a K)>,
) -> Captured<'a, K> {
    let mut max: HashMap<&'a K, u64> = HashMap::new();
    let mut first: HashMap<&str, i64> = HashMap::new();
    let mut horizon = 0i64;
    for g in readable.iter().copied() {
        let mut mine: HashMap<&K, u64> = HashMap::new();
        for (market, ts, k) in pick(g) {
            *mine.entry(k).or_default() += 1;
            let e = first.entry(market).or_insert(i64::MAX);
            *e = (*e).min(ts);
        }
        for (k, n) in mine {
            let e = max.entry(k).or_default();
            *e = (*e).max(n);
        }
        horizon = horizon.max(g.retained_from_ms.get(stream).copied().unwrap_or(0));
    }
    Captured {
        max,
        first,
        knowable_from: all_readable.then_some(horizon),
    }
}

/// What a store holds of each stream, as `(market, exchange time, content)`.
pub(super) fn trade_keys(h: &Held) -> Vec<(&str, i64, &TradeFact)> {
    h.trades
        .iter()
        .map(|t| (t.market.as_str(), t.ts_ms, t))
        .collect()
}

pub(super) fn delta_keys(h: &Held) -> Vec<(&str, i64, &DeltaKey)> {
    h.deltas.iter().map(|d| (d.0.as_str(), d.1, d)).collect()
}

pub(super) fn ticker_keys(h: &Held) -> Vec<(&str, i64, &TickerKey)> {
    h.tickers.iter().map(|t| (t.0.as_str(), t.1, t)).collect()
}

/// Lifecycle records carry no exchange time: never "before subscription" (a global channel).
pub(super) fn lifecycle_keys(h: &Held) -> Vec<(&str, i64, &LifecycleKey)> {
    h.lifecycle.iter().map(|l| (l.1.as_str(), 0, l)).collect()
}

pub(super) fn unknown_keys(h: &Held) -> Vec<(&str, i64, &UnknownKey)> {
    h.unknown
        .iter()
        .filter(|u| u.0 == crate::sim::UNMODELLED_TYPE)
        .map(|u| (u.1.as_str(), 0, u))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_every_gatherer_declared_are_the_intersection_of_their_unions() {
        let g = |who: &str, market: &str, a: i64, b: i64| DeclaredGap {
            gatherer: who.into(),
            stream: "orderbook_deltas".into(),
            market: market.into(),
            from_ms: a,
            to_ms: b,
            reason: "r".into(),
        };
        let gaps = vec![
            g("g1", "M", 10, 20),
            g("g1", "", 30, 50),
            g("g2", "M", 15, 40),
            g("g2", "N", 0, 100),
        ];
        let ids = vec!["g1".to_owned(), "g2".to_owned()];
        let d = Declarations::new(&gaps, &ids);
        assert_eq!(
            d.all_declared_windows("orderbook_deltas", "M"),
            vec![(15, 20), (30, 40)]
        );
        assert_eq!(
            d.all_declared_windows("orderbook_deltas", "N"),
            vec![(30, 50)]
        );
        assert!(d.all_declared_windows("trades", "M").is_empty());
        // A point: every gatherer's window (its own market's or every market's) holds it,
        // bounds included; nothing widened.
        let at = |m: &str, ts: i64| d.all_declared("orderbook_deltas", m, ts);
        let m: Vec<i64> = (0..=60).filter(|t| at("M", *t)).collect();
        let want: Vec<i64> = (15..=20).chain(30..=40).collect();
        assert_eq!(m, want);
        let n: Vec<i64> = (0..=60).filter(|t| at("N", *t)).collect();
        assert_eq!(n, (30..=50).collect::<Vec<i64>>());
        // g2 declared only M and N: another market is declared by g1 alone.
        assert!(!at("O", 35) && !d.all_declared("trades", "M", 15));
        // Adjacent windows of one gatherer join; a point between two is not declared.
        let gaps = vec![
            g("g1", "M", 0, 9),
            g("g1", "M", 10, 19),
            g("g1", "M", 21, 30),
        ];
        let one = vec!["g1".to_owned()];
        let d = Declarations::new(&gaps, &one);
        let m: Vec<i64> = (0..=31)
            .filter(|t| d.all_declared("orderbook_deltas", "M", *t))
            .collect();
        assert_eq!(m, (0..=19).chain(21..=30).collect::<Vec<i64>>());
    }
}
