//! The one oracle: what a store holds against what the simulator published.
//!
//! Rules (DESIGN.md, "The oracle"):
//! - expected values come only from the truth ([`Truth`]); the store ([`Held`]) is only what is
//!   judged, and the gatherers' readings only tell what some gatherer captured;
//! - content, not ids: trades by every field, deltas as a multiset of `(market, ts_ms, side,
//!   price, delta)`, tickers, lifecycle and messages of unmodelled types as multisets of their
//!   text as sent (the unmodelled ones come on the lifecycle channel: its windows are theirs);
//! - a missing record is excused only (a) after the cut (`in flight`), (b) inside a window that
//!   every gatherer declared for that stream and market (or for the whole stream), exactly as
//!   declared, or (c) before the first record of its market and stream that any gatherer holds,
//!   within the bounded subscription latency after the market appeared (`before
//!   subscription`); and in (b) and (c) only if no gatherer holds it ([`streams`]);
//! - the verdict does not depend on which gatherers answer or what they still retain: a
//!   configured gatherer that cannot be read, or no longer holds records of a time, makes an
//!   excuse of that time undecidable, and the verdict INCONCLUSIVE, never PASSED;
//! - books: every snapshot equals the exchange's book at its splice point, and the book a user
//!   rebuilds from the store (docs/archive.md) equals the exchange's ([`books`]);
//! - the registry, on a settled system: every market, event and series with every field the
//!   exchange serves ([`registry`]), settled markets an import brought in included;
//! - the exchange's status and schedule, on a settled system: every state long enough to poll,
//!   or held by a gatherer, in order, outside windows every gatherer declared ([`exchange`]);
//! - anything else missing, any duplicate, anything never published, any wrong book and any
//!   quarantined row fails.
//!
//! It must never widen a window, guess a subscription time from the store, or read an
//! expected value from the system under test.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::held::Held;
use crate::sim::Truth;

mod books;
mod exchange;
pub mod history;
mod registry;
mod streams;

pub use books::{BookVerdict, exchange_book};
pub use exchange::ExchangeVerdict;
pub use registry::{QUOTE_FIELDS, RegistryVerdict};
pub use streams::counts;
use streams::{
    Declarations, captured, compare, delta_keys, lifecycle_keys, ticker_keys, trade_keys,
    unknown_keys,
};

/// How strictly to judge.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The configured gatherers: a window excuses a record only when every one of them
    /// declared it, and every one must be read for an excuse to be decided.
    pub gatherers: Vec<String>,
    /// The bound on the time from a market's appearance in the truth to its subscription.
    pub subscription_latency_ms: i64,
    /// Exchange time up to which the store is known complete; records after it are in flight.
    /// `None`: the system is settled and everything is judged.
    pub cut_ms: Option<i64>,
    /// How often the gatherers poll the exchange's status (`registry.exchange_status_interval`):
    /// a status that lasted two of these and a second must be held.
    pub exchange_poll_ms: i64,
    /// The same for the schedule (`registry.exchange_schedule_interval`, 5 minutes by default:
    /// a schedule that lasted 22 s is not one a gatherer can be required to have seen).
    pub exchange_schedule_poll_ms: i64,
}

impl Rules {
    /// A settled system with these gatherers, a 5 s subscription bound and the exchange's
    /// status polled every 500 ms (`FileConfig::fast_local`'s gatherers).
    pub fn settled(gatherers: &[&str]) -> Rules {
        Rules {
            gatherers: gatherers.iter().map(|g| (*g).to_owned()).collect(),
            subscription_latency_ms: 5_000,
            cut_ms: None,
            exchange_poll_ms: 500,
            exchange_schedule_poll_ms: 500,
        }
    }

    /// The same rules for gatherers that poll the exchange's status this often.
    pub fn with_exchange_poll_ms(mut self, ms: i64) -> Rules {
        self.exchange_poll_ms = ms;
        self
    }

    /// The same rules with another subscription bound.
    pub fn with_subscription_latency_ms(mut self, ms: i64) -> Rules {
        self.subscription_latency_ms = ms;
        self
    }
}

/// One configured gatherer as it could be read: what it holds, or why it could not be read.
#[derive(Debug, Clone)]
pub struct Reading {
    pub id: String,
    pub held: Result<Held, String>,
}

impl Reading {
    pub fn of(id: impl Into<String>, held: Held) -> Reading {
        Reading {
            id: id.into(),
            held: Ok(held),
        }
    }

    pub fn unreadable(id: impl Into<String>, why: impl Into<String>) -> Reading {
        Reading {
            id: id.into(),
            held: Err(why.into()),
        }
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
    /// Missing, before any gatherer's first record of its market, within the subscription
    /// bound, and held by no gatherer.
    pub before_subscription: u64,
    /// The same, by market.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub before_subscription_by_market: BTreeMap<String, u64>,
    /// Missing, inside a window every gatherer declared, and held by no gatherer.
    pub declared: u64,
    /// Missing and excusable, but a configured gatherer could not be read or no longer holds
    /// records of that time: undecidable.
    pub inconclusive: u64,
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
        self.in_flight + self.before_subscription + self.declared + self.inconclusive + self.silent
    }
}

/// Observed subscription latencies of markets created while running.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Latency {
    pub markets: usize,
    pub p99_ms: i64,
    pub max_ms: i64,
}

/// What the audit concluded.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Passed,
    #[default]
    Failed,
    /// Nothing wrong found, but something could not be decided (a gatherer unreadable, or
    /// records older than what a gatherer still holds).
    Inconclusive,
}

/// The whole judgement.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verdict {
    pub streams: Vec<StreamVerdict>,
    /// Exchange time judged up to (`None`: everything, the system was settled).
    pub audited_through_ms: Option<i64>,
    pub books: BookVerdict,
    /// Registry comparison (only on a settled system): markets, events, series.
    pub registry: Vec<RegistryVerdict>,
    /// The exchange's status and schedule (only on a settled system).
    pub exchange: Vec<ExchangeVerdict>,
    /// Markets that should have been subscribed (past the latency bound, still trading) and
    /// of which the store holds no book.
    pub never_subscribed: Vec<String>,
    pub subscription_latency: Latency,
    pub quarantined: u64,
    /// Deltas kept under their gatherer's own key (unmatchable across gatherers).
    pub unkeyed_deltas: u64,
    pub unreadable: Vec<String>,
    /// Why the verdict is inconclusive (configured gatherers not read, times no longer held).
    pub inconclusive: Vec<String>,
    pub problems: Vec<String>,
    pub outcome: Outcome,
    /// `outcome == Passed`.
    pub ok: bool,
}

impl Verdict {
    pub fn stream(&self, name: &str) -> Option<&StreamVerdict> {
        self.streams.iter().find(|s| s.stream == name)
    }

    /// Registry entries compared and wrong, of every kind.
    pub fn registry_totals(&self) -> Option<(u64, u64)> {
        (!self.registry.is_empty()).then(|| {
            self.registry
                .iter()
                .fold((0, 0), |(c, w), r| (c + r.compared, w + r.wrong))
        })
    }

    /// A human-readable table.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<17} {:>8} {:>8} {:>9} {:>10} {:>8} {:>6} {:>6} {:>9} {:>6} {:>5} {:>5}\n",
            "stream",
            "expected",
            "present",
            "in-flight",
            "before-sub",
            "declared",
            "undec",
            "silent",
            "in-gap-ok",
            "short",
            "dups",
            "extra"
        );
        for a in &self.streams {
            s.push_str(&format!(
                "{:<17} {:>8} {:>8} {:>9} {:>10} {:>8} {:>6} {:>6} {:>9} {:>6} {:>5} {:>5}\n",
                a.stream,
                a.expected,
                a.present,
                a.in_flight,
                a.before_subscription,
                a.declared,
                a.inconclusive,
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
        for a in &self.streams {
            if a.before_subscription_by_market.is_empty() {
                continue;
            }
            let mut by: Vec<(&String, &u64)> = a.before_subscription_by_market.iter().collect();
            by.sort_by(|x, y| y.1.cmp(x.1).then(x.0.cmp(y.0)));
            let top: Vec<String> = by.iter().take(8).map(|(m, n)| format!("{m} {n}")).collect();
            s.push_str(&format!(
                "{} before subscription, by market ({} markets): {}{}\n",
                a.stream,
                by.len(),
                top.join(", "),
                if by.len() > 8 { ", ..." } else { "" }
            ));
        }
        let b = &self.books;
        s.push_str(&format!(
            "books of {} markets: snapshots equal to the exchange's book at their splice point {}/{}; REST snapshots {}/{}; rebuilds equal to the exchange's book {}/{} ({} across declared windows not judged{})\n",
            b.markets,
            b.snapshots - b.snapshots_wrong,
            b.snapshots,
            b.rest - b.rest_wrong,
            b.rest,
            b.rebuilds - b.rebuilds_wrong,
            b.rebuilds,
            b.rebuilds_unknown,
            if b.unordered_markets > 0 {
                format!("; {} markets with timestamps going backwards not judged", b.unordered_markets)
            } else {
                String::new()
            }
        ));
        if self.registry.is_empty() {
            s.push_str("registry: not compared (live)\n");
        } else {
            let parts: Vec<String> = self
                .registry
                .iter()
                .map(|r| {
                    let history = if r.versions > 0 {
                        format!(" ({} versions)", r.versions)
                    } else {
                        String::new()
                    };
                    format!(
                        "{} {}/{}{history}",
                        r.kind,
                        r.compared - r.wrong.min(r.compared),
                        r.compared
                    )
                })
                .collect();
            s.push_str(&format!(
                "registry equal to the exchange's: {}\n",
                parts.join(", ")
            ));
        }
        if !self.exchange.is_empty() {
            let parts: Vec<String> = self.exchange.iter().map(ExchangeVerdict::line).collect();
            s.push_str(&format!("exchange: {}\n", parts.join("; ")));
        }
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
        for p in self.problems.iter().take(30) {
            s.push_str(&format!("problem: {p}\n"));
        }
        for a in &self.streams {
            for e in a.examples.iter().take(8) {
                s.push_str(&format!("{}: {e}\n", a.stream));
            }
        }
        for i in &self.inconclusive {
            s.push_str(&format!("undecidable: {i}\n"));
        }
        s.push_str(match self.outcome {
            Outcome::Passed => "AUDIT PASSED: no silent loss, no duplicate\n",
            Outcome::Failed => "AUDIT FAILED\n",
            Outcome::Inconclusive => {
                "AUDIT INCONCLUSIVE: nothing wrong found, but not everything could be decided\n"
            }
        });
        s
    }
}

/// Judges `held` (production, or one gatherer) against `truth`. `gatherers`: the configured
/// gatherers as they could be read (a missing record is excused only if none of them holds
/// it, and only when every configured one was read).
pub fn judge(truth: &Truth, held: &Held, gatherers: &[Reading], rules: &Rules) -> Verdict {
    let decl = Declarations::new(&held.gaps, &rules.gatherers);
    let mut out = Verdict {
        audited_through_ms: rules.cut_ms,
        unkeyed_deltas: held.unkeyed_deltas,
        unreadable: held.unreadable.clone(),
        quarantined: held.quarantined.values().sum(),
        ..Verdict::default()
    };
    let readable: Vec<&Held> = gatherers
        .iter()
        .filter_map(|r| r.held.as_ref().ok())
        .collect();
    for id in &rules.gatherers {
        match gatherers.iter().find(|r| &r.id == id) {
            None => out.inconclusive.push(format!("gatherer {id} was not read")),
            Some(Reading { held: Err(e), .. }) => out
                .inconclusive
                .push(format!("gatherer {id} could not be read: {e}")),
            Some(_) => {}
        }
    }
    let all_readable = out.inconclusive.is_empty();
    for (table, retained) in readable
        .iter()
        .zip(gatherers.iter().filter(|r| r.held.is_ok()))
        .flat_map(|(h, r)| h.retained_from_ms.iter().map(move |(t, ms)| (t, (r, *ms))))
    {
        let (r, ms) = retained;
        if ms > 0 {
            out.inconclusive.push(format!(
                "gatherer {} no longer holds {table} before {ms} (its retention): excuses before then cannot be decided",
                r.id
            ));
        }
    }
    // Trades of the exchange's past (`--history-hours`) are in production only when imported:
    // one copy of each is set aside here (`history::judge` judges imports); a second copy is
    // still a duplicate, and anything else still has to be the exchange's.
    let live_trades = without_one_of_each(&held.trades, truth.history.iter().map(|f| &f.key));
    out.streams.push(compare(
        ("trades", "trades"),
        &truth.trades,
        &live_trades,
        &captured(&readable, all_readable, "trades", trade_keys),
        truth,
        rules,
        &decl,
        false,
    ));
    out.streams.push(compare(
        ("orderbook_deltas", "orderbook_deltas"),
        &truth.deltas,
        &held.deltas,
        &captured(&readable, all_readable, "orderbook_deltas", delta_keys),
        truth,
        rules,
        &decl,
        true,
    ));
    out.streams.push(compare(
        ("tickers", "tickers"),
        &truth.tickers,
        &held.tickers,
        &captured(&readable, all_readable, "tickers", ticker_keys),
        truth,
        rules,
        &decl,
        true,
    ));
    out.streams.push(compare(
        ("lifecycle", "lifecycle"),
        &truth.lifecycle,
        &held.lifecycle,
        &captured(&readable, all_readable, "lifecycle", lifecycle_keys),
        truth,
        rules,
        &decl,
        false,
    ));
    // Messages of types no one models, kept as sent: they come on the lifecycle channel, so
    // its declared windows are theirs. Judged: the exchange's (`UNMODELLED_TYPE`); frames a
    // fault test injects into one connection are not the exchange's and that test counts them.
    let unknown_held: Vec<crate::sim::UnknownKey> = held
        .unknown
        .iter()
        .filter(|u| u.0 == crate::sim::UNMODELLED_TYPE)
        .cloned()
        .collect();
    out.streams.push(compare(
        ("unknown_messages", "lifecycle"),
        &truth.unknown,
        &unknown_held,
        &captured(&readable, all_readable, "unknown_messages", unknown_keys),
        truth,
        rules,
        &decl,
        false,
    ));

    let mut problems = Vec::new();
    out.books = books::check(
        truth,
        held,
        &decl,
        rules.cut_ms.unwrap_or(i64::MAX),
        &mut problems,
    );

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
    let mut traded: HashMap<&str, Vec<i64>> = HashMap::new();
    for d in &truth.deltas {
        traded.entry(d.market.as_str()).or_default().push(d.ts_ms);
    }
    for (m, now) in &truth.markets {
        if now.is_mve || first_book.contains_key(m.as_str()) {
            continue;
        }
        let due = truth.appeared_ms(m) + rules.subscription_latency_ms;
        let closed_first = truth.closed.get(m).is_some_and(|c| *c <= due);
        let traded_after = traded
            .get(m.as_str())
            .is_some_and(|ts| ts.iter().any(|t| *t > due && *t <= horizon));
        if !closed_first && traded_after {
            out.never_subscribed.push(m.clone());
        }
    }
    out.never_subscribed.sort();

    // Registry, on a settled system.
    if rules.cut_ms.is_none() {
        out.registry = registry::check(truth, held, &mut problems);
        out.exchange = exchange::check(
            truth,
            held,
            (&readable, &rules.gatherers),
            (rules.exchange_poll_ms, rules.exchange_schedule_poll_ms),
            &mut problems,
        );
    }
    out.problems = problems;
    for m in &out.never_subscribed {
        if out.problems.len() < 80 {
            out.problems
                .push(format!("market {m} was never subscribed"));
        }
    }
    for u in &out.unreadable {
        if out.problems.len() < 80 {
            out.problems.push(format!("unreadable: {u}"));
        }
    }
    if out.quarantined > 0 {
        out.problems.push(format!(
            "{} rows quarantined: {:?}",
            out.quarantined, held.quarantined
        ));
    }
    let failed = !out.streams.iter().all(StreamVerdict::ok)
        || !out.books.ok()
        || out.registry.iter().any(|r| r.wrong > 0)
        || !out.exchange.iter().all(ExchangeVerdict::ok)
        || !out.never_subscribed.is_empty()
        || out.quarantined > 0
        || !out.unreadable.is_empty();
    let undecided = out.streams.iter().any(|s| s.inconclusive > 0) || !all_readable;
    out.outcome = if failed {
        Outcome::Failed
    } else if undecided {
        Outcome::Inconclusive
    } else {
        Outcome::Passed
    };
    // Retention horizons matter only when an excuse fell before them.
    if out.outcome == Outcome::Passed {
        out.inconclusive.clear();
    }
    out.ok = out.outcome == Outcome::Passed;
    out
}

/// `held` without one copy of each of `past`.
fn without_one_of_each<'a>(
    held: &[crate::sim::TradeFact],
    past: impl Iterator<Item = &'a crate::sim::TradeFact>,
) -> Vec<crate::sim::TradeFact> {
    let mut once: HashMap<&crate::sim::TradeFact, u32> = HashMap::new();
    for t in past {
        *once.entry(t).or_default() += 1;
    }
    held.iter()
        .filter(|t| match once.get_mut(*t) {
            Some(n) if *n > 0 => {
                *n -= 1;
                false
            }
            _ => true,
        })
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests;
