//! The exchange's status and schedule on a settled system: what the store kept of every state
//! the exchange served (`/exchange/status`, `/exchange/schedule`).
//!
//! The gatherers poll, so a state can pass between two polls unseen: a state is required when
//! it lasted at least two poll intervals and a second, or when any gatherer holds it (then
//! production must too). A gatherer's declared windows (stream `exchange`: its polls failed,
//! or it was down) take their time out of a state's: a state is excused only when, for every
//! configured gatherer, what its windows leave of the state is too short to poll. A state
//! unseen between two of the same content (active, a brief halt,
//! active again) makes the two one version: the later is held by the earlier. Every version held must be a state the exchange served, in the
//! exchange's order, and each version must differ from the one before (a version is a change).
//!
//! It must never take an expected value from the store.

use serde::Serialize;
use serde_json::Value;

use crate::held::Held;
use crate::sim::{ExchangeState, Truth};

/// One object (`status`, `schedule`) judged.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ExchangeVerdict {
    pub object: String,
    /// States the exchange served.
    pub states: u64,
    /// Of those, the ones the store must hold (long enough, or held by a gatherer).
    pub required: u64,
    /// Required states the store holds.
    pub held: u64,
    /// States too brief to be polled that nobody holds (not a loss).
    pub brief_unseen: u64,
    /// States not held that every gatherer's declared windows cover (all but too brief a
    /// part to poll).
    pub declared: u64,
    /// Versions that are not the exchange's next state, or repeat the one before.
    pub wrong: u64,
}

impl ExchangeVerdict {
    pub fn ok(&self) -> bool {
        self.wrong == 0 && self.held == self.required
    }
}

/// Which of `states` the versions `seen` (in order) match, matching in order: the versions
/// must be a subsequence of the states. Returns the matches and the versions that match no
/// next state.
fn matched(states: &[&ExchangeState], seen: &[&Value]) -> (Vec<bool>, Vec<String>) {
    let mut hit = vec![false; states.len()];
    let mut wrong = Vec::new();
    let mut i = 0;
    for (k, v) in seen.iter().enumerate() {
        if k > 0 && seen[k - 1] == *v {
            wrong.push(format!("version {k} repeats the one before: {v}"));
            continue;
        }
        match states[i..].iter().position(|s| &s.body == *v) {
            Some(j) => {
                hit[i + j] = true;
                i += j + 1;
            }
            None => wrong.push(format!(
                "version {k} is not a state the exchange served after the one before: {v}"
            )),
        }
    }
    (hit, wrong)
}

fn versions<'a>(held: &'a Held, object: &str) -> Vec<&'a Value> {
    held.exchange
        .iter()
        .filter(|(o, _)| o == object)
        .map(|(_, v)| v)
        .collect()
}

/// How much of `[from, to)` the windows (closed, `[a, b]`) leave uncovered.
fn uncovered(from: i64, to: i64, windows: &[(i64, i64)]) -> i64 {
    let mut w: Vec<(i64, i64)> = windows
        .iter()
        .map(|&(a, b)| (a.max(from), b.saturating_add(1).min(to)))
        .filter(|(a, b)| a < b)
        .collect();
    w.sort_unstable();
    let (mut covered, mut reach) = (0, from);
    for (a, b) in w {
        let a = a.max(reach);
        if b > a {
            covered += b - a;
            reach = b;
        }
    }
    (to - from) - covered
}

/// `held` (production) against the truth; `gatherers` what each readable gatherer holds;
/// `configured` the gatherers whose declarations (in `held.gaps`) may excuse; `poll_ms` the
/// gatherers' status poll interval (the schedule's is judged by the same bound: its states
/// last as long as the halts' period).
pub(super) fn check(
    truth: &Truth,
    held: &Held,
    (gatherers, configured): (&[&Held], &[String]),
    poll_ms: i64,
    problems: &mut Vec<String>,
) -> Vec<ExchangeVerdict> {
    let long_enough = 2 * poll_ms + 1_000;
    let mut out = Vec::new();
    for object in ["status", "schedule"] {
        let states: Vec<&ExchangeState> = truth
            .exchange
            .iter()
            .filter(|s| s.object == object)
            .collect();
        let lasted: Vec<i64> = states
            .iter()
            .enumerate()
            .map(|(i, s)| states.get(i + 1).map_or(truth.last_ms, |n| n.since_ms) - s.since_ms)
            .collect();
        let mut by_gatherer = vec![false; states.len()];
        for g in gatherers {
            let (hit, _) = matched(&states, &versions(g, object));
            for (b, h) in by_gatherer.iter_mut().zip(hit) {
                *b |= h;
            }
        }
        let (hit, wrong) = matched(&states, &versions(held, object));
        let mut v = ExchangeVerdict {
            object: object.to_owned(),
            states: states.len() as u64,
            wrong: wrong.len() as u64,
            ..ExchangeVerdict::default()
        };
        for w in wrong.into_iter().take(10) {
            problems.push(format!("exchange {object}: {w}"));
        }
        // A state between two polls that saw the same content (trading active, a brief halt,
        // active again) leaves one version: the later state is held by the earlier version.
        let mut last_held: Option<&Value> = None;
        let mut hit = hit;
        let windows: Vec<Vec<(i64, i64)>> = configured
            .iter()
            .map(|g| {
                held.gaps
                    .iter()
                    .filter(|d| {
                        &d.gatherer == g
                            && d.stream == "exchange"
                            && (d.market == object || d.market.is_empty())
                    })
                    .map(|d| (d.from_ms, d.to_ms))
                    .collect()
            })
            .collect();
        // Long enough to poll, and by some gatherer's account pollable: or held by one.
        let pollable = |i: usize| {
            let (from, to) = (states[i].since_ms, states[i].since_ms + lasted[i]);
            lasted[i] >= long_enough
                && (windows.is_empty()
                    || windows
                        .iter()
                        .any(|w| uncovered(from, to, w) >= long_enough))
        };
        let declared_only = |i: usize| lasted[i] >= long_enough && !pollable(i);
        for (i, s) in states.iter().enumerate() {
            let required = pollable(i) || by_gatherer[i];
            if hit[i] {
                last_held = Some(&s.body);
            } else if last_held == Some(&s.body) {
                hit[i] = true;
            } else if required {
                last_held = None;
            }
        }
        for (i, s) in states.iter().enumerate() {
            let required = pollable(i) || by_gatherer[i];
            match (required, hit[i]) {
                (true, true) => {
                    v.required += 1;
                    v.held += 1;
                }
                (true, false) => {
                    v.required += 1;
                    if problems.len() < 60 {
                        problems.push(format!(
                            "exchange {object}: the state served from {} for {} ms{} is not held: {}",
                            s.since_ms,
                            lasted[i],
                            if by_gatherer[i] { ", which a gatherer holds," } else { "" },
                            s.body
                        ));
                    }
                }
                (false, false) if declared_only(i) => v.declared += 1,
                (false, false) => v.brief_unseen += 1,
                (false, true) => {}
            }
        }
        out.push(v);
    }
    out
}
