//! The one oracle: what a store holds against what the simulator published.
//!
//! Rules (DESIGN.md, "The oracle"):
//! - expected values come only from the truth ([`Truth`]); the store ([`Held`]) is only what is
//!   judged;
//! - content, not ids: trades by every field, deltas as a multiset of `(market, ts_ms, side,
//!   price, delta)`, tickers and lifecycle as multisets of canonical content, snapshots equal
//!   to the exchange's book at some point of its history, the registry equal to the exchange's
//!   REST view;
//! - a missing record is excused only (a) after the cut (`in flight`), (b) within the bounded
//!   subscription latency after its market appeared in the truth (`before subscription`), or
//!   (c) inside a window that every gatherer declared for that stream and market (or for the
//!   whole stream), exactly as declared. A record inside such a window that some gatherer did
//!   capture is not excused: that loss happened downstream;
//! - anything else missing, any duplicate, anything never published, any wrong snapshot and
//!   any quarantined row fails.
//!
//! It must never widen a window, guess a subscription time from the store, or read an
//! expected value from the system under test.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher as _};

use serde::Serialize;

use crate::held::{DeclaredGap, Held};
use crate::sim::{Fact, Truth};

/// How strictly to judge.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The gatherers whose declarations count: a window excuses a record only when every one
    /// of them declared it.
    pub gatherers: Vec<String>,
    /// The bound on the time from a market's appearance in the truth to its subscription.
    pub subscription_latency_ms: i64,
    /// Exchange time up to which the store is known complete; records after it are in flight.
    /// `None`: the system is settled and everything is judged.
    pub cut_ms: Option<i64>,
}

impl Rules {
    /// A settled system with these gatherers and a 5 s subscription bound.
    pub fn settled(gatherers: &[&str]) -> Rules {
        Rules {
            gatherers: gatherers.iter().map(|g| (*g).to_owned()).collect(),
            subscription_latency_ms: 5_000,
            cut_ms: None,
        }
    }

    /// The same rules with another subscription bound.
    pub fn with_subscription_latency_ms(mut self, ms: i64) -> Rules {
        self.subscription_latency_ms = ms;
        self
    }
}

/// One stream's comparison.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct StreamVerdict {
    pub stream: String,
    /// Published records.
    pub expected: u64,
    pub present: u64,
    /// Missing, published after the cut: not judged.
    pub in_flight: u64,
    /// Missing, within the subscription latency after the market appeared.
    pub before_subscription: u64,
    /// Missing, inside a window every gatherer declared, and captured by no gatherer.
    pub declared: u64,
    /// Missing and not excused: silent loss.
    pub silent: u64,
    /// Of the silent ones: inside a window every gatherer declared, but some gatherer holds
    /// it (lost downstream of the gatherers).
    pub silent_behind_gap: u64,
    /// Present although inside a window every gatherer declared.
    pub present_in_declared: u64,
    /// Missing while the store holds the same content fewer times (identical deltas of one
    /// millisecond): counted within the classes above as well.
    pub short_multiplicity: u64,
    /// Held more often than published.
    pub duplicated: u64,
    /// Held, never published (or published with other content).
    pub unexpected: u64,
    /// A few examples of silent, duplicated and unexpected records.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
}

impl StreamVerdict {
    pub fn ok(&self) -> bool {
        self.silent == 0 && self.duplicated == 0 && self.unexpected == 0
    }

    pub fn missing(&self) -> u64 {
        self.in_flight + self.before_subscription + self.declared + self.silent
    }
}

/// Observed subscription latencies of markets created while running.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Latency {
    pub markets: usize,
    pub p99_ms: i64,
    pub max_ms: i64,
}

/// The whole judgement.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verdict {
    pub streams: Vec<StreamVerdict>,
    /// Exchange time judged up to (`None`: everything, the system was settled).
    pub audited_through_ms: Option<i64>,
    pub snapshots_checked: u64,
    pub snapshots_wrong: u64,
    /// Registry comparison (only on a settled system): markets compared and wrong.
    pub registry_compared: Option<u64>,
    pub registry_wrong: u64,
    /// Markets that should have been subscribed (past the latency bound, still trading) and
    /// of which the store holds no book.
    pub never_subscribed: Vec<String>,
    pub subscription_latency: Latency,
    pub quarantined: u64,
    /// Deltas kept under their gatherer's own key (unmatchable across gatherers).
    pub unkeyed_deltas: u64,
    pub unreadable: Vec<String>,
    pub problems: Vec<String>,
    pub ok: bool,
}

impl Verdict {
    pub fn stream(&self, name: &str) -> Option<&StreamVerdict> {
        self.streams.iter().find(|s| s.stream == name)
    }

    /// A human-readable table.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<17} {:>8} {:>8} {:>9} {:>10} {:>8} {:>6} {:>9} {:>6} {:>5} {:>5}\n",
            "stream",
            "expected",
            "present",
            "in-flight",
            "before-sub",
            "declared",
            "silent",
            "in-gap-ok",
            "short",
            "dups",
            "extra"
        );
        for a in &self.streams {
            s.push_str(&format!(
                "{:<17} {:>8} {:>8} {:>9} {:>10} {:>8} {:>6} {:>9} {:>6} {:>5} {:>5}\n",
                a.stream,
                a.expected,
                a.present,
                a.in_flight,
                a.before_subscription,
                a.declared,
                a.silent,
                a.present_in_declared,
                a.short_multiplicity,
                a.duplicated,
                a.unexpected
            ));
        }
        s.push_str(&format!(
            "audited through: {}\n",
            self.audited_through_ms.map_or_else(
                || "everything (settled)".to_owned(),
                |t| format!("exchange time {t} ms")
            )
        ));
        s.push_str(&format!(
            "snapshots equal to the exchange's book: {}/{}; registry: {}\n",
            self.snapshots_checked - self.snapshots_wrong,
            self.snapshots_checked,
            self.registry_compared.map_or_else(
                || "not compared (live)".to_owned(),
                |n| format!("{}/{n} markets equal", n - self.registry_wrong)
            )
        ));
        s.push_str(&format!(
            "subscription latency of {} new markets: p99 {} ms, max {} ms; never subscribed: {}\n",
            self.subscription_latency.markets,
            self.subscription_latency.p99_ms,
            self.subscription_latency.max_ms,
            self.never_subscribed.len()
        ));
        s.push_str(&format!(
            "quarantined rows: {}; deltas without a cross-gatherer key: {}\n",
            self.quarantined, self.unkeyed_deltas
        ));
        for p in self.problems.iter().take(20) {
            s.push_str(&format!("problem: {p}\n"));
        }
        for a in &self.streams {
            for e in a.examples.iter().take(5) {
                s.push_str(&format!("{}: {e}\n", a.stream));
            }
        }
        s.push_str(if self.ok {
            "AUDIT PASSED: no silent loss, no duplicate\n"
        } else {
            "AUDIT FAILED\n"
        });
        s
    }
}

/// Declared windows, by stream and gatherer.
struct Declarations<'a> {
    gatherers: &'a [String],
    by: HashMap<(&'a str, &'a str), Vec<&'a DeclaredGap>>,
}

impl<'a> Declarations<'a> {
    fn new(gaps: &'a [DeclaredGap], gatherers: &'a [String]) -> Self {
        let mut by: HashMap<(&str, &str), Vec<&DeclaredGap>> = HashMap::new();
        for g in gaps {
            by.entry((g.stream.as_str(), g.gatherer.as_str()))
                .or_default()
                .push(g);
        }
        Declarations { gatherers, by }
    }

    /// Whether every gatherer declared `(stream, market)` at `ts`, exactly as declared.
    fn all_declared(&self, stream: &str, market: &str, ts: i64) -> bool {
        !self.gatherers.is_empty()
            && self.gatherers.iter().all(|g| {
                self.by.get(&(stream, g.as_str())).is_some_and(|ws| {
                    ws.iter().any(|w| {
                        (w.market.is_empty() || w.market == market)
                            && w.from_ms <= ts
                            && ts <= w.to_ms
                    })
                })
            })
    }
}

fn counts<K: Hash + Eq + Clone>(keys: &[K]) -> HashMap<K, u64> {
    let mut m: HashMap<K, u64> = HashMap::new();
    for k in keys {
        *m.entry(k.clone()).or_default() += 1;
    }
    m
}

/// Compares one stream. `captured`: per key, the most copies any gatherer holds.
#[allow(clippy::too_many_arguments)]
fn compare<K: Hash + Eq + Clone + std::fmt::Debug>(
    stream: &str,
    facts: &[Fact<K>],
    held: &[K],
    captured: Option<&HashMap<K, u64>>,
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
    let held_n = counts(held);
    let want = counts(&facts.iter().map(|f| f.key.clone()).collect::<Vec<_>>());
    for (k, n) in &held_n {
        match want.get(k) {
            None => {
                v.unexpected += n;
                if v.examples.len() < 5 {
                    v.examples.push(format!("never published: {k:?}"));
                }
            }
            Some(w) if n > w => {
                v.duplicated += n - w;
                if v.examples.len() < 5 {
                    v.examples
                        .push(format!("held {n} times, published {w}: {k:?}"));
                }
            }
            Some(_) => {}
        }
    }
    let mut left = held_n.clone();
    for f in facts {
        let declared = decl.all_declared(stream, &f.market, f.ts_ms);
        match left.get_mut(&f.key) {
            Some(n) if *n > 0 => {
                *n -= 1;
                v.present += 1;
                if declared {
                    v.present_in_declared += 1;
                }
                continue;
            }
            _ => {}
        }
        if held_n.get(&f.key).is_some_and(|n| *n > 0) {
            v.short_multiplicity += 1;
        }
        let early = subscription_needed
            && f.ts_ms < truth.appeared_ms(&f.market) + rules.subscription_latency_ms;
        if rules.cut_ms.is_some_and(|cut| f.ts_ms > cut) {
            v.in_flight += 1;
        } else if declared {
            let held_here = held_n.get(&f.key).copied().unwrap_or(0);
            if captured.is_some_and(|c| c.get(&f.key).copied().unwrap_or(0) > held_here) {
                v.silent += 1;
                v.silent_behind_gap += 1;
                if v.examples.len() < 5 {
                    v.examples.push(format!(
                        "lost behind a declared gap (a gatherer holds it): {:?}",
                        f.key
                    ));
                }
            } else {
                v.declared += 1;
            }
        } else if early {
            v.before_subscription += 1;
        } else {
            v.silent += 1;
            if v.examples.len() < 5 {
                v.examples
                    .push(format!("silently missing (pos {}): {:?}", f.pos, f.key));
            }
        }
    }
    v
}

fn max_counts<K: Hash + Eq + Clone>(
    gatherers: &[Held],
    pick: impl Fn(&Held) -> &[K],
) -> Option<HashMap<K, u64>> {
    if gatherers.is_empty() {
        return None;
    }
    let mut out: HashMap<K, u64> = HashMap::new();
    for g in gatherers {
        for (k, n) in counts(pick(g)) {
            let e = out.entry(k).or_default();
            *e = (*e).max(n);
        }
    }
    Some(out)
}

type Book = (Vec<(i64, i64)>, Vec<(i64, i64)>);

fn book_hash(yes: &BTreeMap<i64, i64>, no: &BTreeMap<i64, i64>) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for (p, q) in yes {
        (1u8, p, q).hash(&mut h);
    }
    for (p, q) in no {
        (2u8, p, q).hash(&mut h);
    }
    h.finish()
}

fn vec_hash(b: &Book) -> u64 {
    let yes: BTreeMap<i64, i64> = b.0.iter().copied().collect();
    let no: BTreeMap<i64, i64> = b.1.iter().copied().collect();
    book_hash(&yes, &no)
}

/// Every state a market's book went through up to `truth.markets_pos`, walked back from its
/// current book over its published deltas.
fn book_history(
    truth: &Truth,
    by_market: &HashMap<&str, Vec<usize>>,
    market: &str,
) -> HashSet<u64> {
    let mut states = HashSet::new();
    let Some(now) = truth.markets.get(market) else {
        return states;
    };
    let mut yes: BTreeMap<i64, i64> = now.yes.iter().copied().collect();
    let mut no: BTreeMap<i64, i64> = now.no.iter().copied().collect();
    states.insert(book_hash(&yes, &no));
    if let Some(idx) = by_market.get(market) {
        for &i in idx.iter().rev() {
            let d = &truth.deltas[i];
            if d.pos > truth.markets_pos {
                continue;
            }
            let (_, _, side, price, delta) = d.key;
            let levels = if side == 1 { &mut yes } else { &mut no };
            let q = levels.get(&price).copied().unwrap_or(0) - delta;
            if q == 0 {
                levels.remove(&price);
            } else {
                levels.insert(price, q);
            }
            states.insert(book_hash(&yes, &no));
        }
    }
    states
}

const REGISTRY_FIELDS: [&str; 5] = ["ticker", "event_ticker", "status", "result", "close_time"];

/// Judges `held` (production, or one gatherer) against `truth`. `gatherers` are what the
/// gatherers hold, when they can be read: a record missing from `held` inside a window every
/// gatherer declared is excused only if none of them holds it.
pub fn judge(truth: &Truth, held: &Held, gatherers: &[Held], rules: &Rules) -> Verdict {
    let decl = Declarations::new(&held.gaps, &rules.gatherers);
    let mut out = Verdict {
        audited_through_ms: rules.cut_ms,
        unkeyed_deltas: held.unkeyed_deltas,
        unreadable: held.unreadable.clone(),
        quarantined: held.quarantined.values().sum(),
        ..Verdict::default()
    };
    out.streams.push(compare(
        "trades",
        &truth.trades,
        &held.trades,
        max_counts(gatherers, |g| &g.trades).as_ref(),
        truth,
        rules,
        &decl,
        false,
    ));
    out.streams.push(compare(
        "orderbook_deltas",
        &truth.deltas,
        &held.deltas,
        max_counts(gatherers, |g| &g.deltas).as_ref(),
        truth,
        rules,
        &decl,
        true,
    ));
    out.streams.push(compare(
        "tickers",
        &truth.tickers,
        &held.tickers,
        max_counts(gatherers, |g| &g.tickers).as_ref(),
        truth,
        rules,
        &decl,
        true,
    ));
    out.streams.push(compare(
        "lifecycle",
        &truth.lifecycle,
        &held.lifecycle,
        max_counts(gatherers, |g| &g.lifecycle).as_ref(),
        truth,
        rules,
        &decl,
        false,
    ));

    // Snapshots: each equals the exchange's book at some point of its history.
    let mut by_market: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, d) in truth.deltas.iter().enumerate() {
        by_market.entry(d.market.as_str()).or_default().push(i);
    }
    let mut histories: HashMap<&str, HashSet<u64>> = HashMap::new();
    for s in &held.snapshots {
        out.snapshots_checked += 1;
        let states = histories
            .entry(s.market.as_str())
            .or_insert_with(|| book_history(truth, &by_market, &s.market));
        if !states.contains(&vec_hash(&(s.yes.clone(), s.no.clone()))) {
            out.snapshots_wrong += 1;
            if out.problems.len() < 20 {
                out.problems.push(format!(
                    "snapshot of {} ({} from {}, received {}) is no state the exchange's book was in",
                    s.market, s.source, s.gatherer, s.received_ms
                ));
            }
        }
    }

    // Subscription: latency of markets created while running, and markets never subscribed.
    let mut first_book: HashMap<&str, i64> = HashMap::new();
    for s in &held.snapshots {
        let e = first_book.entry(s.market.as_str()).or_insert(i64::MAX);
        *e = (*e).min(s.received_ms);
    }
    let mut lat: Vec<i64> = truth
        .created
        .iter()
        .filter_map(|(m, created)| Some(first_book.get(m.as_str())? - created))
        .collect();
    lat.sort_unstable();
    if !lat.is_empty() {
        let p99 = lat[((lat.len() * 99).div_ceil(100)).saturating_sub(1)];
        out.subscription_latency = Latency {
            markets: lat.len(),
            p99_ms: p99,
            max_ms: *lat.last().unwrap_or(&0),
        };
    }
    let horizon = rules.cut_ms.unwrap_or(i64::MAX);
    for (m, now) in &truth.markets {
        if now.is_mve || first_book.contains_key(m.as_str()) {
            continue;
        }
        let due = truth.appeared_ms(m) + rules.subscription_latency_ms;
        let closed_first = truth.closed.get(m).is_some_and(|c| *c <= due);
        let traded_after = by_market.get(m.as_str()).is_some_and(|idx| {
            idx.iter()
                .any(|&i| truth.deltas[i].ts_ms > due && truth.deltas[i].ts_ms <= horizon)
        });
        if !closed_first && traded_after {
            out.never_subscribed.push(m.clone());
        }
    }
    out.never_subscribed.sort();

    // Registry, on a settled system: the exchange's latest REST view.
    if rules.cut_ms.is_none() {
        let mut compared = 0;
        for (m, now) in &truth.markets {
            if now.is_mve {
                continue;
            }
            compared += 1;
            let Some(body) = held.markets.get(m) else {
                out.registry_wrong += 1;
                out.problems
                    .push(format!("market {m} is not in the registry"));
                continue;
            };
            for f in REGISTRY_FIELDS {
                if body[f] != now.rest[f] {
                    out.registry_wrong += 1;
                    out.problems.push(format!(
                        "market {m}.{f} is {} but the exchange says {}",
                        body[f], now.rest[f]
                    ));
                    break;
                }
            }
        }
        for m in held.markets.keys() {
            if truth.markets.get(m).is_none_or(|n| n.is_mve) {
                out.registry_wrong += 1;
                out.problems.push(format!(
                    "market {m} is in the registry but not the exchange's"
                ));
            }
        }
        out.registry_compared = Some(compared);
    }

    for m in &out.never_subscribed {
        if out.problems.len() < 40 {
            out.problems
                .push(format!("market {m} was never subscribed"));
        }
    }
    for u in &out.unreadable {
        if out.problems.len() < 40 {
            out.problems.push(format!("unreadable: {u}"));
        }
    }
    if out.quarantined > 0 {
        out.problems.push(format!(
            "{} rows quarantined: {:?}",
            out.quarantined, held.quarantined
        ));
    }
    out.ok = out.streams.iter().all(StreamVerdict::ok)
        && out.snapshots_wrong == 0
        && out.registry_wrong == 0
        && out.never_subscribed.is_empty()
        && out.quarantined == 0
        && out.unreadable.is_empty();
    out
}

#[cfg(test)]
mod tests;
