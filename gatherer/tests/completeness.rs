//! Completeness: a gatherer on the simulator for minutes of traffic over more than 100
//! markets, with markets created, closed, determined and settled while it runs, holds exactly
//! the simulator's ground truth for its subscription window.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use common::*;
use kalshi_proto::gatherer::v1 as pb;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gatherer_holds_exactly_the_ground_truth() {
    let mut sim = sim_config(101, 120);
    sim.lifecycle_every = 1500;
    let rig = Rig::start(sim, |c| c.ws.connections = 4).await;
    let initial: HashSet<String> = rig
        .read_all(pb::Stream::OrderbookSnapshots)
        .await
        .iter()
        .map(|r| match r.body.as_ref().unwrap() {
            pb::record::Body::Snapshot(s) => s.market_ticker.clone(),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(initial.len(), 120, "a snapshot for every market");

    // 45 s of traffic (over 60,000 messages), with lifecycle churn. Longer runs are the
    // endurance suite's: this one is about exactness, and CI time is shared.
    rig.rate(1500).await;
    tokio::time::sleep(Duration::from_secs(45)).await;
    rig.rate(0).await;
    rig.settle(Duration::from_millis(1500)).await;
    let head = rig.sim.published_pos();
    assert!(head > 50_000, "traffic ran: {head} messages");

    // No hole anywhere but the moments before the subscription of each market created while
    // running, declared (`late_subscription`) from its creation in the truth.
    let gap_records = rig.read_all(pb::Stream::Gaps).await;
    let created = kalshi_testkit::sim::SimControl::new(rig.sim.control_url())
        .truth()
        .await
        .unwrap()
        .created;
    for g in gaps(&gap_records) {
        let c = created.get(&g.market_ticker).copied();
        assert!(
            g.reason == "late_subscription" && c.is_some_and(|c| g.from_ms <= c && c <= g.to_ms),
            "only late subscriptions of new markets: {g:?} (created {c:?})"
        );
    }

    // The one oracle: nothing missing but what markets created while running published
    // before their subscription; nothing duplicated or invented; every stored book a state of
    // the exchange's; the registry the exchange's.
    let cov = assert_complete_within(&rig, 5_000).await;
    for s in &cov.verdict.streams {
        assert_eq!(
            s.missing(),
            s.before_subscription + s.declared,
            "{}: {s:?}",
            s.stream
        );
    }
    assert!(cov.verdict.never_subscribed.is_empty());

    // Trades: exactly the truth's, same content.
    let truth_trades = truth(&rig.sim, "trade").await;
    let stored = rig.read_all(pb::Stream::Trades).await;
    let stored: HashMap<String, &pb::Trade> = trades(&stored)
        .into_iter()
        .map(|t| (t.trade_id.clone(), t))
        .collect();
    assert_eq!(stored.len(), truth_trades.len());
    for r in &truth_trades {
        let m = &r["msg"];
        let t = stored[m["trade_id"].as_str().unwrap()];
        assert_eq!(t.market_ticker, m["market_ticker"].as_str().unwrap());
        assert_eq!(t.ts_ms, m["ts_ms"].as_i64().unwrap());
        assert_eq!(
            t.yes_price_micros,
            kalshi_shared::Price::parse(m["yes_price_dollars"].as_str().unwrap())
                .unwrap()
                .raw()
        );
        assert_eq!(
            t.count_centi,
            kalshi_shared::Quantity::parse(m["count_fp"].as_str().unwrap())
                .unwrap()
                .raw()
        );
        assert_eq!(t.is_block_trade, m["is_block_trade"].as_bool().unwrap());
        assert_eq!(t.source, "ws");
    }

    // Deltas: per market, a contiguous run of the truth's sequence; the whole sequence for
    // markets subscribed from the start and still open at the end.
    let truth_deltas = by_market(
        truth(&rig.sim, "orderbook_delta")
            .await
            .iter()
            .map(truth_delta_key),
    );
    let stored_records = rig.read_all(pb::Stream::OrderbookDeltas).await;
    let stored_deltas = deltas(&stored_records);
    let ours = by_market(stored_deltas.iter().map(|d| delta_key(d)));
    let (_, markets_now) = common_markets(&rig).await;
    let mut full = 0;
    for (market, seq) in &ours {
        let want = &truth_deltas[market];
        assert!(
            is_contiguous_part(seq, want),
            "{market}: stored deltas are not a run of the truth's"
        );
        if initial.contains(market) && markets_now.get(market).map(String::as_str) == Some("active")
        {
            assert_eq!(seq, want, "{market}: every delta");
            full += 1;
        }
    }
    assert!(full > 60, "most markets compared in full: {full}");
    // Identical deltas in one millisecond are all there, numbered 0, 1, ...
    let mut groups: BTreeMap<DeltaKey, Vec<u32>> = BTreeMap::new();
    for d in &stored_deltas {
        groups.entry(delta_key(d)).or_default().push(d.occurrence);
    }
    let repeated = groups.values().filter(|o| o.len() > 1).count();
    assert!(
        repeated > 10,
        "identical same-millisecond deltas occurred: {repeated}"
    );
    for (k, occ) in &groups {
        assert_eq!(*occ, (0..occ.len() as u32).collect::<Vec<_>>(), "{k:?}");
    }

    // Books: each market's first snapshot plus its stored deltas after its splice point is the
    // exchange's book now.
    let snaps = rig.read_all(pb::Stream::OrderbookSnapshots).await;
    type Sides = (BTreeMap<i64, i64>, BTreeMap<i64, i64>);
    let mut books: HashMap<String, Sides> = HashMap::new();
    let mut splice: HashMap<String, i64> = HashMap::new();
    for r in &snaps {
        let pb::record::Body::Snapshot(s) = r.body.as_ref().unwrap() else {
            unreachable!()
        };
        if books.contains_key(&s.market_ticker) {
            continue;
        }
        let side = |l: &[pb::Level]| {
            l.iter()
                .map(|l| (l.price_micros, l.quantity_centi))
                .collect()
        };
        books.insert(s.market_ticker.clone(), (side(&s.yes), side(&s.no)));
        splice.insert(s.market_ticker.clone(), s.last_delta_ts_ms);
    }
    for d in &stored_deltas {
        if splice.get(&d.market_ticker).is_some_and(|x| d.ts_ms <= *x) {
            continue;
        }
        let (yes, no) = books
            .get_mut(&d.market_ticker)
            .expect("a snapshot before deltas");
        let levels = if d.side == pb::Side::Yes as i32 {
            yes
        } else {
            no
        };
        let v = levels.entry(d.price_micros).or_insert(0);
        *v += d.delta_centi;
        assert!(*v >= 0);
        if *v == 0 {
            levels.remove(&d.price_micros);
        }
    }
    let created_later: Vec<&String> = books.keys().filter(|t| !initial.contains(*t)).collect();
    assert!(
        !created_later.is_empty(),
        "markets created while running were subscribed"
    );
    for (market, (yes, no)) in &books {
        let v: Value = reqwest::get(format!("{}/truth/books/{market}", rig.sim.control_url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let side = |k: &str| -> BTreeMap<i64, i64> {
            v[k].as_array()
                .unwrap()
                .iter()
                .map(|l| {
                    (
                        kalshi_shared::Price::parse(l[0].as_str().unwrap())
                            .unwrap()
                            .raw(),
                        kalshi_shared::Quantity::parse(l[1].as_str().unwrap())
                            .unwrap()
                            .raw(),
                    )
                })
                .collect()
        };
        if v["status"] == "active" {
            assert_eq!((&side("yes"), &side("no")), (yes, no), "book of {market}");
        }
    }

    // Lifecycle: every market and event lifecycle message, once.
    let truth_lc = truth(&rig.sim, "market_lifecycle_v2,event_lifecycle").await;
    let stored_lc = rig.read_all(pb::Stream::Lifecycle).await;
    assert!(truth_lc.len() > 50, "lifecycle ran: {}", truth_lc.len());
    assert_eq!(stored_lc.len(), truth_lc.len());
    let mut kinds: HashMap<String, usize> = HashMap::new();
    for r in &stored_lc {
        let pb::record::Body::Lifecycle(l) = r.body.as_ref().unwrap() else {
            unreachable!()
        };
        *kinds.entry(l.event_type.clone()).or_default() += 1;
    }
    for k in [
        "created",
        "activated",
        "close_date_updated",
        "determined",
        "settled",
        "event_lifecycle",
    ] {
        assert!(kinds.get(k).copied().unwrap_or(0) > 0, "no {k}: {kinds:?}");
    }

    // Tickers: per market a contiguous run of the truth's, each kept as sent: the stored body
    // is the exchange's text byte for byte (the simulator adds a field no one models).
    let tkey = |ticker: &str, ts: i64, text: &str| (ticker.to_owned(), ts, text.to_owned());
    let mut truth_t: HashMap<String, Vec<(String, i64, String)>> = HashMap::new();
    for r in truth(&rig.sim, "ticker").await {
        let m = &r["msg"];
        let p = r["msg_text"].as_str().unwrap();
        assert!(p.contains("\"x_unmodelled\": {\"z\": 1"), "{p}");
        truth_t
            .entry(m["market_ticker"].as_str().unwrap().into())
            .or_default()
            .push(tkey(
                m["market_ticker"].as_str().unwrap(),
                m["ts_ms"].as_i64().unwrap(),
                p,
            ));
    }
    let mut ours_t: HashMap<String, Vec<(String, i64, String)>> = HashMap::new();
    for r in rig.read_all(pb::Stream::Tickers).await {
        let pb::record::Body::Ticker(t) = r.body.unwrap() else {
            unreachable!()
        };
        ours_t
            .entry(t.market_ticker.clone())
            .or_default()
            .push(tkey(&t.market_ticker, t.ts_ms, &t.body_json));
    }
    for (market, seq) in &ours_t {
        assert!(
            is_contiguous_part(seq, &truth_t[market]),
            "{market}: tickers"
        );
    }

    // Registry: the latest version of every market equals the exchange's (metadata).
    let versions = rig.read_all(pb::Stream::Markets).await;
    let mut latest: HashMap<String, Value> = HashMap::new();
    for r in &versions {
        let pb::record::Body::Registry(v) = r.body.as_ref().unwrap() else {
            unreachable!()
        };
        latest.insert(
            v.ticker.clone(),
            serde_json::from_str(&v.body_json).unwrap(),
        );
    }
    let (sim_markets, _) = common_markets(&rig).await;
    assert_eq!(
        latest.len(),
        sim_markets.len(),
        "every non-combo market has a version"
    );
    for (t, m) in &sim_markets {
        let ours = &latest[t];
        for k in [
            "status",
            "result",
            "close_time",
            "yes_sub_title",
            "event_ticker",
            "price_ranges",
        ] {
            assert_eq!(ours[k], m[k], "{t}.{k}");
        }
    }
    let events = rig.read_all(pb::Stream::Events).await;
    let series = rig.read_all(pb::Stream::Series).await;
    let event_tickers: HashSet<String> = sim_markets
        .values()
        .map(|m| m["event_ticker"].as_str().unwrap().to_owned())
        .collect();
    let stored_events: HashSet<String> = events
        .iter()
        .map(|r| match r.body.as_ref().unwrap() {
            pb::record::Body::Registry(v) => v.ticker.clone(),
            _ => unreachable!(),
        })
        .collect();
    assert!(event_tickers.is_subset(&stored_events));
    assert_eq!(series.len(), 5, "the five series (combos excluded)");

    // Status agrees with what Read returned.
    let st = rig
        .client()
        .await
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    let deltas_head = st
        .streams
        .iter()
        .find(|s| s.stream == pb::Stream::OrderbookDeltas as i32)
        .unwrap();
    assert_eq!(deltas_head.head, stored_records.last().unwrap().cursor);
    assert_eq!(deltas_head.oldest, 1);
    assert_eq!(st.gatherer_id, "g1");
    assert_eq!(st.instance_id, rig.g().instance_id);
}

/// The simulator's non-combo markets by ticker, and their statuses.
async fn common_markets(rig: &Rig) -> (HashMap<String, Value>, HashMap<String, String>) {
    let mut out = HashMap::new();
    let mut cursor = String::new();
    loop {
        let v = sim_get(
            &rig.sim,
            &format!("/markets?limit=1000&mve_filter=exclude&cursor={cursor}"),
        )
        .await;
        for m in v["markets"].as_array().unwrap() {
            out.insert(m["ticker"].as_str().unwrap().to_owned(), m.clone());
        }
        cursor = v["cursor"].as_str().unwrap().to_owned();
        if cursor.is_empty() {
            break;
        }
    }
    let statuses = out
        .iter()
        .map(|(t, m)| (t.clone(), m["status"].as_str().unwrap().to_owned()))
        .collect();
    (out, statuses)
}
