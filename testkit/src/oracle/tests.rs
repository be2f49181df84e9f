#![allow(clippy::unwrap_used)]
use super::*;
use crate::held::{DeclaredGap, HeldSnapshot};
use crate::sim::{DeltaKey, Fact, MarketNow, RegistryNow};

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
        exchange_poll_ms: 10_000,
        exchange_schedule_poll_ms: 10_000,
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

/// Both gatherers read, holding these deltas.
fn read(t: &Truth, g1: &[u64], g2: &[u64]) -> Vec<Reading> {
    vec![
        Reading::of(
            "g1",
            Held {
                deltas: keys(t, g1),
                ..Held::default()
            },
        ),
        Reading::of(
            "g2",
            Held {
                deltas: keys(t, g2),
                ..Held::default()
            },
        ),
    ]
}

fn deltas(v: &Verdict) -> &StreamVerdict {
    v.stream("orderbook_deltas").unwrap()
}

#[test]
fn every_class_of_missing_record_is_told_apart() {
    let t = world();
    // Missing: 2 (short multiplicity, silent), 4 (declared by both), 5 (before sub), 6
    // (after the cut); 3 present inside a window both declared.
    let held = Held {
        deltas: keys(&t, &[1, 3]),
        gaps: vec![
            gap("g1", "M", 19_000, 31_000),
            gap("g2", "", 15_000, 35_000),
        ],
        ..Held::default()
    };
    let v = judge(&t, &held, &read(&t, &[1, 3], &[1]), &rules(Some(45_000)));
    let d = deltas(&v);
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
    assert_eq!(d.before_subscription_by_market.get("N"), Some(&1));
    assert_eq!(v.outcome, Outcome::Failed);
}

#[test]
fn a_window_declared_by_one_gatherer_only_excuses_nothing() {
    let t = world();
    let held = Held {
        deltas: keys(&t, &[1, 2, 3, 5, 6]),
        gaps: vec![gap("g1", "M", 0, 100_000), gap("g2", "N", 0, 100_000)],
        ..Held::default()
    };
    let v = judge(&t, &held, &read(&t, &[], &[]), &rules(None));
    assert_eq!((deltas(&v).declared, deltas(&v).silent), (0, 1));
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
    let v = judge(&t, &held, &read(&t, &[], &[]), &rules(None));
    assert_eq!(deltas(&v).silent, 1);
}

#[test]
fn a_record_a_gatherer_holds_is_not_excused_by_a_gap() {
    let t = world();
    let held = Held {
        deltas: keys(&t, &[1, 2, 3, 5, 6]),
        gaps: vec![gap("g1", "M", 0, 100_000), gap("g2", "M", 0, 100_000)],
        ..Held::default()
    };
    let v = judge(&t, &held, &read(&t, &[4], &[]), &rules(None));
    let d = deltas(&v);
    assert_eq!((d.declared, d.silent, d.silent_behind_gap), (0, 1, 1));
    assert!(
        d.examples[0].contains("lost downstream"),
        "{:?}",
        d.examples
    );
    assert!(!v.ok);
}

#[test]
fn before_subscription_ends_at_the_first_record_a_gatherer_holds_and_excuses_none_it_holds() {
    let mut t = world();
    // Market P appeared at 60_000; its records at 60_100 .. 60_400 are inside the 5 s bound.
    t.created.insert("P".into(), 60_000);
    for (i, ts) in [60_100, 60_200, 60_300, 60_400].into_iter().enumerate() {
        t.deltas
            .push(delta(10 + i as u64, "P", ts, 100_000 + i as i64, 100));
    }
    let all: Vec<u64> = (1..=6).collect();
    let with = |extra: &[u64]| {
        let mut k = all.clone();
        k.extend_from_slice(extra);
        k
    };
    // Production holds only 12; g1 subscribed before 11 (holds 11, 12), g2 holds 12.
    let held = Held {
        deltas: keys(&t, &with(&[12])),
        ..Held::default()
    };
    let v = judge(
        &t,
        &held,
        &read(&t, &with(&[11, 12]), &with(&[12])),
        &rules(None),
    );
    let d = deltas(&v);
    // 10 (60_100) is before the first record any gatherer holds (11, at 60_200): excused;
    // 11 is held by g1: lost downstream; 13 (60_400) is missing from everyone, after that
    // first record: silent although inside the 5 s bound.
    assert_eq!((d.before_subscription, d.silent), (1, 2), "{d:?}");
    assert_eq!(d.before_subscription_by_market.get("P"), Some(&1));

    // The very first delta of a market deleted from production while a gatherer holds it.
    let held = Held {
        deltas: keys(&t, &with(&[11, 12, 13])),
        ..Held::default()
    };
    let v = judge(
        &t,
        &held,
        &read(&t, &with(&[10, 11, 12, 13]), &with(&[])),
        &rules(None),
    );
    assert_eq!((deltas(&v).before_subscription, deltas(&v).silent), (0, 1));
}

#[test]
fn a_missing_copy_of_identical_deltas_that_a_gatherer_holds_is_silent() {
    let t = world();
    // Production holds one copy of the pair in 10_000, g2 both: one copy lost downstream,
    // even inside windows both declared.
    let held = Held {
        deltas: keys(&t, &[1, 3, 4, 5, 6]),
        gaps: vec![gap("g1", "M", 0, 15_000), gap("g2", "M", 0, 15_000)],
        ..Held::default()
    };
    let v = judge(&t, &held, &read(&t, &[1], &[1, 2]), &rules(None));
    let d = deltas(&v);
    assert_eq!((d.silent, d.short_multiplicity, d.declared), (1, 1, 0));
    // When no gatherer holds the second copy, the window excuses it.
    let v = judge(&t, &held, &read(&t, &[1], &[1]), &rules(None));
    assert_eq!((deltas(&v).silent, deltas(&v).declared), (0, 1));
    assert!(v.ok, "{}", v.table());
}

#[test]
fn an_unreadable_gatherer_or_a_retention_horizon_makes_excuses_undecidable() {
    let t = world();
    let held = Held {
        deltas: keys(&t, &[1, 2, 3, 5, 6]),
        gaps: vec![gap("g1", "M", 0, 100_000), gap("g2", "M", 0, 100_000)],
        ..Held::default()
    };
    // g2 cannot be read: the declared window cannot excuse 4.
    let mut r = read(&t, &[], &[]);
    r[1] = Reading::unreadable("g2", "connection refused");
    let v = judge(&t, &held, &r, &rules(None));
    assert_eq!((deltas(&v).inconclusive, deltas(&v).declared), (1, 0));
    assert_eq!(v.outcome, Outcome::Inconclusive);
    assert!(!v.ok);
    assert!(v.table().contains("AUDIT INCONCLUSIVE"), "{}", v.table());
    assert!(v.inconclusive[0].contains("g2 could not be read"));
    // A gatherer not read at all is the same.
    let v = judge(&t, &held, &r[..1], &rules(None));
    assert_eq!(v.outcome, Outcome::Inconclusive);
    // A silent loss fails whatever else is undecidable.
    let lossy = Held {
        deltas: keys(&t, &[1, 2, 5, 6]),
        ..held.clone()
    };
    let mut g = r.clone();
    g[0] = Reading::of(
        "g1",
        Held {
            deltas: keys(&t, &[3]),
            ..Held::default()
        },
    );
    assert_eq!(judge(&t, &lossy, &g, &rules(None)).outcome, Outcome::Failed);
    // g1 no longer holds deltas before 35_000: 4 (30_000) cannot be excused.
    let mut r = read(&t, &[], &[]);
    if let Ok(h) = &mut r[0].held {
        h.retained_from_ms.insert("orderbook_deltas".into(), 35_000);
    }
    let v = judge(&t, &held, &r, &rules(None));
    assert_eq!(v.outcome, Outcome::Inconclusive);
    assert!(
        v.inconclusive.iter().any(|i| i.contains("retention")),
        "{:?}",
        v.inconclusive
    );
    // Before 25_000 only: 4 is judged, and excused.
    if let Ok(h) = &mut r[0].held {
        h.retained_from_ms.insert("orderbook_deltas".into(), 25_000);
    }
    let v = judge(&t, &held, &r, &rules(None));
    assert_eq!(v.outcome, Outcome::Passed, "{}", v.table());
}

#[test]
fn duplicates_and_inventions_fail() {
    let t = world();
    let mut d = keys(&t, &[1, 2, 3, 4, 5, 6]);
    d.push(t.deltas[2].key.clone());
    d.push(("M".into(), 1, 2, 3, 4));
    let held = Held {
        deltas: d,
        ..Held::default()
    };
    let v = judge(&t, &held, &read(&t, &[], &[]), &rules(None));
    let d = deltas(&v);
    assert_eq!(
        (d.present, d.duplicated, d.unexpected, d.silent),
        (6, 1, 1, 0)
    );
    assert!(!v.ok);
}

/// Market M after deltas 1-4: 500_000 -> 200 (400_000 came and went).
fn with_book(mut t: Truth) -> Truth {
    t.markets_pos = 6;
    t.markets.insert(
        "M".into(),
        MarketNow {
            is_mve: false,
            rest: serde_json::json!({"ticker": "M"}),
            yes: vec![(500_000, 200)],
            no: vec![],
        },
    );
    t
}

fn snap(source: &str, splice: Option<i64>, as_of: i64, yes: Vec<(i64, i64)>) -> HeldSnapshot {
    HeldSnapshot {
        market: "M".into(),
        gatherer: "g1".into(),
        source: source.into(),
        received_ms: as_of,
        as_of_ms: as_of,
        splice_ms: splice,
        yes,
        no: vec![],
    }
}

#[test]
fn a_snapshot_must_be_the_exchanges_book_at_its_splice_point() {
    let t = with_book(world());
    let judge_books = |snaps: Vec<HeldSnapshot>| {
        let held = Held {
            deltas: keys(&t, &[1, 2, 3, 4, 5, 6]),
            snapshots: snaps,
            ..Held::default()
        };
        judge(&t, &held, &read(&t, &[], &[]), &rules(Some(60_000))).books
    };
    // Exact: before any delta, after the pair, after 3.
    let b = judge_books(vec![
        snap("ws", Some(5_000), 5_000, vec![]),
        snap("ws", Some(10_000), 10_000, vec![(500_000, 200)]),
        snap(
            "ws",
            Some(25_000),
            25_000,
            vec![(400_000, 100), (500_000, 200)],
        ),
    ]);
    assert_eq!(
        (b.snapshots, b.snapshots_wrong, b.rebuilds_wrong),
        (3, 0, 0),
        "{b:?}"
    );
    assert_eq!(b.rebuilds, 3);
    // The same book with its splice point shifted back 2 s: a state the book was in, but
    // not at that point.
    let b = judge_books(vec![snap(
        "ws",
        Some(18_000),
        18_000,
        vec![(400_000, 100), (500_000, 200)],
    )]);
    assert_eq!(b.snapshots_wrong, 1);
    // Off by one delta of a millisecond with two: wrong too.
    let b = judge_books(vec![snap("ws", Some(10_000), 10_000, vec![(500_000, 100)])]);
    assert_eq!(b.snapshots_wrong, 1);
    // No splice point on a WebSocket snapshot: wrong.
    let b = judge_books(vec![snap("ws", None, 10_000, vec![(500_000, 200)])]);
    assert_eq!(b.snapshots_wrong, 1);
}

#[test]
fn a_rest_snapshot_must_be_a_book_of_the_seconds_before_it() {
    let t = with_book(world());
    let held = |s: Vec<HeldSnapshot>| Held {
        deltas: keys(&t, &[1, 2, 3, 4, 5, 6]),
        snapshots: s,
        ..Held::default()
    };
    let ok = judge(
        &t,
        &held(vec![snap(
            "rest",
            None,
            22_000,
            vec![(400_000, 100), (500_000, 200)],
        )]),
        &read(&t, &[], &[]),
        &rules(Some(60_000)),
    );
    assert_eq!((ok.books.rest, ok.books.rest_wrong), (1, 0));
    // Empty, of a book that is not.
    let bad = judge(
        &t,
        &held(vec![snap("rest", None, 22_000, vec![])]),
        &read(&t, &[], &[]),
        &rules(Some(60_000)),
    );
    assert_eq!(bad.books.rest_wrong, 1);
    assert!(!bad.ok);
}

#[test]
fn the_rebuilt_book_fails_on_a_lost_delta_and_on_a_missing_snapshot_after_a_window() {
    let t = with_book(world());
    let snaps = vec![snap("ws", Some(5_000), 5_000, vec![])];
    // A delta production lost: the rebuild at the end is wrong (the stream fails too).
    let mut held = Held {
        deltas: keys(&t, &[1, 2, 4, 5, 6]),
        snapshots: snaps.clone(),
        gaps: vec![
            gap("g1", "M", 19_000, 21_000),
            gap("g2", "M", 19_000, 21_000),
        ],
        ..Held::default()
    };
    held.markets
        .insert("M".into(), serde_json::json!({"ticker": "M"}));
    // Delta 3 is inside a window both declared and no gatherer holds it: excused, but the
    // book after it is unknown unless a snapshot follows; delta 4 came after the window.
    let v = judge(&t, &held, &read(&t, &[], &[]), &rules(None));
    assert_eq!(deltas(&v).declared, 1);
    assert_eq!(v.books.rebuilds_wrong, 1, "{:?}", v.books);
    assert!(
        v.problems
            .iter()
            .any(|p| p.contains("no snapshot after a window"))
    );
    // A fresh snapshot after the window makes the book known again.
    let mut held2 = held.clone();
    held2.snapshots.push(snap(
        "ws",
        Some(21_500),
        21_500,
        vec![(400_000, 100), (500_000, 200)],
    ));
    let v = judge(&t, &held2, &read(&t, &[], &[]), &rules(None));
    assert_eq!(
        (v.books.rebuilds_wrong, v.books.rebuilds_unknown),
        (0, 1),
        "{:?}",
        v.books
    );
    assert!(v.ok, "{}", v.table());
}

#[test]
fn the_registry_compares_every_field_but_quotes_for_markets_events_and_series() {
    let mut t = with_book(world());
    t.markets.get_mut("M").unwrap().rest =
        serde_json::json!({"ticker": "M", "rules_primary": "r", "volume_fp": "10.00"});
    t.events.insert(
        "E".into(),
        RegistryNow {
            is_mve: false,
            rest: serde_json::json!({"event_ticker": "E", "title": "t"}),
        },
    );
    t.series.insert(
        "S".into(),
        RegistryNow {
            is_mve: false,
            rest: serde_json::json!({"ticker": "S", "fee_multiplier": 1}),
        },
    );
    let mut held = Held {
        deltas: keys(&t, &[1, 2, 3, 4, 5, 6]),
        ..Held::default()
    };
    held.markets.insert(
        "M".into(),
        serde_json::json!({"ticker": "M", "rules_primary": "r", "volume_fp": "3.00"}),
    );
    held.events.insert(
        "E".into(),
        serde_json::json!({"event_ticker": "E", "title": "t", "markets": []}),
    );
    held.series.insert(
        "S".into(),
        serde_json::json!({"ticker": "S", "fee_multiplier": 1}),
    );
    let v = judge(&t, &held, &read(&t, &[], &[]), &rules(None));
    assert_eq!(v.registry_totals(), Some((3, 0)), "{}", v.table());
    held.markets.insert(
        "M".into(),
        serde_json::json!({"ticker": "M", "rules_primary": "other", "volume_fp": "10.00"}),
    );
    held.series.insert(
        "S".into(),
        serde_json::json!({"ticker": "S", "fee_multiplier": 2}),
    );
    let v = judge(&t, &held, &read(&t, &[], &[]), &rules(None));
    assert_eq!(v.registry_totals(), Some((3, 2)));
    assert!(
        v.problems
            .iter()
            .any(|p| p.contains("market M: rules_primary")),
        "{:?}",
        v.problems
    );
    assert!(!v.ok);
}
