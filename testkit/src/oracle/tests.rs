#![allow(clippy::unwrap_used)]
use super::*;
use crate::sim::DeltaKey;

fn delta(pos: u64, market: &str, ts: i64, price: i64, delta: i64) -> Fact<DeltaKey> {
    Fact {
        pos,
        ts_ms: ts,
        market: market.into(),
        key: (market.into(), ts, 1, price, delta),
    }
}

fn gap(g: &str, market: &str, from: i64, to: i64) -> DeclaredGap {
    DeclaredGap {
        gatherer: g.into(),
        stream: "orderbook_deltas".into(),
        market: market.into(),
        from_ms: from,
        to_ms: to,
        reason: "seq_gap".into(),
    }
}

fn world() -> Truth {
    let mut t = Truth {
        started_ms: 0,
        ..Truth::default()
    };
    // Two identical deltas in one millisecond, and others.
    t.deltas = vec![
        delta(1, "M", 10_000, 500_000, 100),
        delta(2, "M", 10_000, 500_000, 100),
        delta(3, "M", 20_000, 400_000, 100),
        delta(4, "M", 30_000, 400_000, -100),
        delta(5, "N", 40_000, 300_000, 100),
        delta(6, "N", 50_000, 300_000, 100),
    ];
    t.created.insert("N".into(), 38_000);
    t
}

fn rules(cut: Option<i64>) -> Rules {
    Rules {
        gatherers: vec!["g1".into(), "g2".into()],
        subscription_latency_ms: 5_000,
        cut_ms: cut,
    }
}

fn keys(t: &Truth, keep: &[u64]) -> Vec<DeltaKey> {
    t.deltas
        .iter()
        .filter(|d| keep.contains(&d.pos))
        .map(|d| d.key.clone())
        .collect()
}

#[test]
fn every_class_of_missing_record_is_told_apart() {
    let t = world();
    // Missing: 2 (short multiplicity, silent), 4 (declared by both), 5 (before sub), 6
    // (after the cut); 3 present inside a window both declared. A record both early and
    // declared counts as declared.
    let held = Held {
        deltas: keys(&t, &[1, 3]),
        gaps: vec![
            gap("g1", "M", 19_000, 31_000),
            gap("g2", "", 15_000, 35_000),
        ],
        ..Held::default()
    };
    let v = judge(&t, &held, &[], &rules(Some(45_000)));
    let d = v.stream("orderbook_deltas").unwrap();
    assert_eq!(
        (
            d.expected,
            d.present,
            d.in_flight,
            d.before_subscription,
            d.declared,
            d.silent
        ),
        (6, 2, 1, 1, 1, 1)
    );
    assert_eq!((d.short_multiplicity, d.present_in_declared), (1, 1));
    assert!(!v.ok);
}

#[test]
fn a_window_declared_by_one_gatherer_only_excuses_nothing() {
    let t = world();
    let held = Held {
        deltas: keys(&t, &[1, 2, 3, 5, 6]),
        gaps: vec![gap("g1", "M", 0, 100_000), gap("g2", "N", 0, 100_000)],
        ..Held::default()
    };
    let v = judge(&t, &held, &[], &rules(None));
    let d = v.stream("orderbook_deltas").unwrap();
    assert_eq!((d.declared, d.silent), (0, 1));
}

#[test]
fn windows_are_taken_exactly_as_declared() {
    let t = world();
    let held = Held {
        deltas: keys(&t, &[1, 2, 3, 5, 6]),
        // Ends one millisecond before the missing delta at 30_000.
        gaps: vec![
            gap("g1", "M", 20_000, 29_999),
            gap("g2", "M", 20_000, 29_999),
        ],
        ..Held::default()
    };
    let v = judge(&t, &held, &[], &rules(None));
    assert_eq!(v.stream("orderbook_deltas").unwrap().silent, 1);
}

#[test]
fn a_record_a_gatherer_holds_is_not_excused_by_a_gap() {
    let t = world();
    let gaps = vec![gap("g1", "M", 0, 100_000), gap("g2", "M", 0, 100_000)];
    let held = Held {
        deltas: keys(&t, &[1, 2, 3, 5, 6]),
        gaps: gaps.clone(),
        ..Held::default()
    };
    let g1 = Held {
        deltas: keys(&t, &[4]),
        ..Held::default()
    };
    let v = judge(&t, &held, &[g1, Held::default()], &rules(None));
    let d = v.stream("orderbook_deltas").unwrap();
    assert_eq!((d.declared, d.silent, d.silent_behind_gap), (0, 1, 1));
    assert!(!v.ok);
}

#[test]
fn duplicates_and_inventions_fail() {
    let t = world();
    let mut deltas = keys(&t, &[1, 2, 3, 4, 5, 6]);
    deltas.push(t.deltas[2].key.clone());
    deltas.push(("M".into(), 1, 2, 3, 4));
    let held = Held {
        deltas,
        ..Held::default()
    };
    let v = judge(&t, &held, &[], &rules(None));
    let d = v.stream("orderbook_deltas").unwrap();
    assert_eq!(
        (d.present, d.duplicated, d.unexpected, d.silent),
        (6, 1, 1, 0)
    );
    assert!(!v.ok);
}

#[test]
fn snapshots_must_be_a_state_of_the_book() {
    let mut t = world();
    t.markets_pos = 6;
    t.markets.insert(
        "M".into(),
        crate::sim::MarketNow {
            is_mve: true,
            rest: serde_json::Value::Null,
            // After deltas 1-4: 500_000 -> 200, 400_000 -> 0.
            yes: vec![(500_000, 200)],
            no: vec![],
        },
    );
    let snap = |yes: Vec<(i64, i64)>| crate::held::HeldSnapshot {
        market: "M".into(),
        gatherer: "g1".into(),
        source: "ws".into(),
        received_ms: 1,
        yes,
        no: vec![],
    };
    let held = Held {
        deltas: keys(&t, &[1, 2, 3, 4, 5, 6]),
        snapshots: vec![
            snap(vec![]),
            snap(vec![(500_000, 100)]),
            snap(vec![(400_000, 100), (500_000, 200)]),
            snap(vec![(500_000, 300)]),
        ],
        ..Held::default()
    };
    let v = judge(&t, &held, &[], &rules(None));
    assert_eq!((v.snapshots_checked, v.snapshots_wrong), (4, 1));
}
