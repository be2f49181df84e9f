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

    /// The object's part of the verdict's table.
    pub fn line(&self) -> String {
        format!(
            "{} {}/{} states held ({} served, {} too brief to poll and held by none, {} in declared windows){}",
            self.object,
            self.held,
            self.required,
            self.states,
            self.brief_unseen,
            self.declared,
            if self.wrong > 0 {
                format!(", {} wrong versions", self.wrong)
            } else {
                String::new()
            }
        )
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
    (status_poll_ms, schedule_poll_ms): (i64, i64),
    problems: &mut Vec<String>,
) -> Vec<ExchangeVerdict> {
    let mut out = Vec::new();
    for (object, poll_ms) in [("status", status_poll_ms), ("schedule", schedule_poll_ms)] {
        let long_enough = 2 * poll_ms + 1_000;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::{Reading, Rules, Verdict, judge};
    use crate::held::{DeclaredGap, Held};
    use crate::sim::Truth;

    fn rules() -> Rules {
        Rules {
            exchange_poll_ms: 10_000,
            exchange_schedule_poll_ms: 10_000,
            ..Rules::settled(&["g1", "g2"])
        }
    }

    fn state(
        pos: u64,
        object: &str,
        since_ms: i64,
        body: serde_json::Value,
    ) -> crate::sim::ExchangeState {
        crate::sim::ExchangeState {
            pos,
            since_ms,
            object: object.into(),
            body,
        }
    }

    /// active (60 s), halt 1 (5 s: too brief for a 10 s poll), active (60 s), halt 2 (40 s), active
    /// (to the end at 250 s); one schedule throughout.
    fn halts() -> Truth {
        let active = serde_json::json!({"exchange_active": true, "trading_active": true});
        let halt =
            |n: i64| serde_json::json!({"exchange_active": true, "trading_active": false, "n": n});
        Truth {
            exchange: vec![
                state(1, "status", 0, active.clone()),
                state(2, "schedule", 0, serde_json::json!({"schedule": {}})),
                state(3, "status", 60_000, halt(1)),
                state(4, "status", 65_000, active.clone()),
                state(5, "status", 125_000, halt(2)),
                state(6, "status", 165_000, active),
            ],
            last_ms: 250_000,
            ..Truth::default()
        }
    }

    fn exchange_held(versions: &[(&str, serde_json::Value)]) -> Held {
        Held {
            exchange: versions
                .iter()
                .map(|(o, v)| ((*o).to_owned(), v.clone()))
                .collect(),
            ..Held::default()
        }
    }

    #[test]
    fn the_exchange_status_must_hold_every_state_long_enough_to_poll_and_whatever_a_gatherer_holds()
    {
        let t = halts();
        let s = |p: u64| t.exchange.iter().find(|e| e.pos == p).unwrap().body.clone();
        let judge_with = |prod: &[(&str, serde_json::Value)], g: &[(&str, serde_json::Value)]| {
            let readings = vec![
                Reading::of("g1", exchange_held(g)),
                Reading::of("g2", Held::default()),
            ];
            judge(&t, &exchange_held(prod), &readings, &rules())
        };
        let status = |v: &Verdict| {
            v.exchange
                .iter()
                .find(|e| e.object == "status")
                .unwrap()
                .clone()
        };
        // (The active states around the brief halt merge into one version: a version is a change.)
        let merged = [
            ("status", s(1)),
            ("schedule", s(2)),
            ("status", s(5)),
            ("status", s(6)),
        ];
        let v = judge_with(&merged, &[]);
        assert!(v.ok, "{}", v.table());
        assert_eq!(
            (
                status(&v).states,
                status(&v).required,
                status(&v).held,
                status(&v).brief_unseen
            ),
            (5, 4, 4, 1),
            "{}",
            v.table()
        );
        // Every state seen, the brief halt too.
        let all = [
            ("status", s(1)),
            ("schedule", s(2)),
            ("status", s(3)),
            ("status", s(4)),
            ("status", s(5)),
            ("status", s(6)),
        ];
        let v = judge_with(&all, &[]);
        assert!(
            v.ok && status(&v).held == 4 && status(&v).brief_unseen == 0,
            "{}",
            v.table()
        );
        // Injected: the 40 s halt lost.
        let lost = [("status", s(1)), ("schedule", s(2))];
        let v = judge_with(&lost, &[]);
        assert!(!v.ok && status(&v).held == 2, "{}", v.table());
        // Injected: the brief halt a gatherer holds but production lacks: not excused.
        let g = [("status", s(1)), ("status", s(3)), ("status", s(4))];
        let v = judge_with(&merged, &g);
        assert!(!v.ok, "{}", v.table());
        assert_eq!(status(&v).required, 5, "{}", v.table());
        // Injected: a state the exchange never served, and a version repeated.
        let mut invented = merged.to_vec();
        invented.push(("status", serde_json::json!({"exchange_active": false})));
        let v = judge_with(&invented, &[]);
        assert!(!v.ok && status(&v).wrong == 1, "{}", v.table());
        let mut repeated = merged.to_vec();
        repeated.push(("status", s(6)));
        let v = judge_with(&repeated, &[]);
        assert!(!v.ok && status(&v).wrong == 1, "{}", v.table());
        // Injected: out of the exchange's order.
        let reordered = [
            ("status", s(1)),
            ("schedule", s(2)),
            ("status", s(5)),
            ("status", s(4)),
            ("status", s(6)),
        ];
        let v = judge_with(&reordered, &[]);
        assert!(!v.ok, "{}", v.table());
        // The 40 s halt (125 s to 165 s) lost, but every gatherer declared its polls failed from
        // 120 s to 170 s: excused. Declared by one only, or leaving 25 s of it pollable: not.
        let window = |g: &str, from: i64, to: i64| DeclaredGap {
            gatherer: g.into(),
            stream: "exchange".into(),
            market: "status".into(),
            from_ms: from,
            to_ms: to,
            reason: "rest_unavailable".into(),
        };
        let lost_in = |gaps: Vec<DeclaredGap>| {
            let mut prod = exchange_held(&lost);
            prod.gaps = gaps;
            let readings = vec![
                Reading::of("g1", Held::default()),
                Reading::of("g2", Held::default()),
            ];
            judge(&t, &prod, &readings, &rules())
        };
        let v = lost_in(vec![
            window("g1", 120_000, 170_000),
            window("g2", 120_000, 170_000),
        ]);
        assert!(v.ok && status(&v).declared == 1, "{}", v.table());
        let v = lost_in(vec![window("g1", 120_000, 170_000)]);
        assert!(!v.ok, "{}", v.table());
        let v = lost_in(vec![
            window("g1", 120_000, 170_000),
            window("g2", 150_000, 170_000),
        ]);
        assert!(!v.ok, "{}", v.table());
        // Injected: the schedule lost.
        let v = judge_with(&[("status", s(1)), ("status", s(5)), ("status", s(6))], &[]);
        assert!(!v.ok, "{}", v.table());
    }

    /// The schedule is polled on its own interval (5 minutes by default): a schedule that
    /// lasted 22.6 s is not required of gatherers that poll it every 5 minutes, unless one of
    /// them holds it; polled every 10 s, it is (a stack run past one maintenance announcement
    /// found the status's interval applied to the schedule).
    #[test]
    fn the_schedule_is_judged_by_its_own_poll_interval() {
        let active = serde_json::json!({"exchange_active": true, "trading_active": true});
        let sched = |n: i64| serde_json::json!({"schedule": {"maintenance_windows": [n]}});
        let t = Truth {
            exchange: vec![
                state(1, "status", 0, active.clone()),
                state(2, "schedule", 0, sched(1)),
                state(3, "schedule", 100_000, sched(2)),
                state(4, "schedule", 122_600, sched(3)),
            ],
            last_ms: 400_000,
            ..Truth::default()
        };
        let prod = exchange_held(&[
            ("status", active.clone()),
            ("schedule", sched(1)),
            ("schedule", sched(3)),
        ]);
        let slow = Rules {
            exchange_schedule_poll_ms: 300_000,
            ..rules()
        };
        let none = vec![
            Reading::of("g1", Held::default()),
            Reading::of("g2", Held::default()),
        ];
        let v = judge(&t, &prod, &none, &slow);
        assert!(v.ok, "{}", v.table());
        // A gatherer holds it: required whatever the interval.
        let holder = vec![
            Reading::of("g1", exchange_held(&[("schedule", sched(2))])),
            Reading::of("g2", Held::default()),
        ];
        let v = judge(&t, &prod, &holder, &slow);
        assert!(!v.ok, "{}", v.table());
        // Polled every 10 s, 22.6 s is long enough to be seen.
        let v = judge(&t, &prod, &none, &rules());
        assert!(!v.ok, "{}", v.table());
        assert!(
            v.problems
                .iter()
                .any(|p| p.contains("exchange schedule") && p.contains("22600 ms")),
            "{:?}",
            v.problems
        );
    }
}
