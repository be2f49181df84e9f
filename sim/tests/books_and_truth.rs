//! Book consistency and ground truth: a subscriber's snapshots plus deltas reproduce the
//! simulator's books exactly; what subscribers see equals what the ground truth records;
//! several clients see the same events on their own sids; the same seed gives the same
//! exchange; lifecycle events change what REST reports.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use common::*;
use kalshi_shared::wire::Side;
use kalshi_shared::wire::ws::{FrameBody, OrderbookDeltaMsg, TradeMsg};
use kalshi_sim::SimConfig;
use serde_json::{Value, json};

/// Runs traffic at `rate` for `run` while reading, with get_snapshot requests half way.
async fn run_traffic(
    sim: &kalshi_sim::SimHandle,
    c: &mut Client,
    rate: u64,
    run: Duration,
    resnapshot: &[String],
) -> Vec<kalshi_shared::wire::ws::Frame> {
    control(sim, "/rate", json!({"rate": rate})).await;
    let start = tokio::time::Instant::now();
    let mut frames = Vec::new();
    let mut asked = false;
    while start.elapsed() < run {
        if !asked && start.elapsed() > run / 2 {
            asked = true;
            c.cmd(
                "update_subscription",
                json!({"sid": 1, "market_tickers": resnapshot, "action": "get_snapshot"}),
            )
            .await;
        }
        if let Some(f) = c.next_frame(Duration::from_millis(50)).await {
            frames.push(f);
        }
    }
    control(sim, "/rate", json!({"rate": 0})).await;
    frames.extend(c.drain(Duration::from_millis(500)).await);
    frames
}

fn apply_all(frames: &[kalshi_shared::wire::ws::Frame], yes_scale: bool) -> HashMap<String, Book> {
    let mut books: HashMap<String, Book> = HashMap::new();
    for f in frames {
        match &f.body {
            FrameBody::OrderbookSnapshot(s) => {
                let mut b = Book::default();
                for side in [Side::Yes, Side::No] {
                    for (p, q) in s.levels(side).unwrap() {
                        b.apply(side, p, q);
                    }
                }
                books.insert(s.market_ticker.clone(), b);
            }
            FrameBody::OrderbookDelta(d) => {
                let b = books
                    .get_mut(&d.market_ticker)
                    .unwrap_or_else(|| panic!("delta before snapshot for {}", d.market_ticker));
                b.apply(d.side, d.price_value().unwrap(), d.delta_value().unwrap());
            }
            _ => {}
        }
    }
    if yes_scale {
        // Bring NO levels back to NO prices for comparison.
        for b in books.values_mut() {
            b.no =
                b.no.iter()
                    .map(|(p, q)| (p.complement().unwrap(), *q))
                    .collect();
        }
    }
    books
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_plus_deltas_reproduce_the_books_and_the_truth() {
    let mut cfg = SimConfig::for_tests(21, 40);
    cfg.lifecycle_every = 400;
    let sim = start(cfg).await;
    let markets = market_tickers(&sim, "&mve_filter=exclude&status=open").await;
    let mut c = Client::connect(&sim).await;
    c.cmd(
        "subscribe",
        json!({"channels": ["orderbook_delta"], "market_tickers": markets}),
    )
    .await;
    c.cmd(
        "subscribe",
        json!({"channels": ["trade", "market_lifecycle_v2"]}),
    )
    .await;
    let mut frames = c.drain(QUIET).await;
    assert_eq!(
        frames
            .iter()
            .filter(|f| matches!(f.body, FrameBody::OrderbookSnapshot(_)))
            .count(),
        markets.len()
    );
    let resnap: Vec<String> = markets.iter().take(5).cloned().collect();
    frames.extend(run_traffic(&sim, &mut c, 4000, Duration::from_secs(2), &resnap).await);
    assert_dense_seq(&frames);
    let head = sim.published_pos();
    assert!(head > 1000, "traffic ran: {head}");

    // Books: the client's equal the simulator's, exactly.
    let books = apply_all(&frames, false);
    assert_eq!(books.len(), markets.len());
    let mut nonempty = 0;
    for t in &markets {
        let (pos, truth_book) = sim_book(&sim, t).await;
        assert_eq!(pos, head, "nothing published since");
        assert_eq!(books[t], truth_book, "book of {t}");
        nonempty += usize::from(!truth_book.yes.is_empty() || !truth_book.no.is_empty());
    }
    assert!(
        nonempty > markets.len() / 2,
        "books are not trivially empty"
    );

    // Deltas: exactly the truth's deltas for the subscribed markets, in order.
    let subscribed: HashSet<&String> = markets.iter().collect();
    let truth_deltas: Vec<OrderbookDeltaMsg> = truth(&sim, 0, Some("orderbook_delta"))
        .await
        .into_iter()
        .map(|r| serde_json::from_value::<OrderbookDeltaMsg>(r["msg"].clone()).unwrap())
        .filter(|d| subscribed.contains(&d.market_ticker))
        .collect();
    let seen_deltas: Vec<OrderbookDeltaMsg> = frames
        .iter()
        .filter_map(|f| match &f.body {
            FrameBody::OrderbookDelta(d) => Some(d.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(seen_deltas.len(), truth_deltas.len());
    assert!(seen_deltas == truth_deltas, "delta streams differ");
    // Identical deltas in one millisecond exist and were all delivered.
    let mut multiplicity: BTreeMap<String, u32> = BTreeMap::new();
    for d in &seen_deltas {
        *multiplicity
            .entry(serde_json::to_string(d).unwrap())
            .or_default() += 1;
    }
    assert!(
        multiplicity.values().any(|n| *n > 1),
        "the flow produces identical deltas"
    );

    // Trades: exactly the truth's, every market.
    let truth_trades: Vec<TradeMsg> = truth(&sim, 0, Some("trade"))
        .await
        .into_iter()
        .map(|r| serde_json::from_value(r["msg"].clone()).unwrap())
        .collect();
    let seen_trades: Vec<TradeMsg> = frames
        .iter()
        .filter_map(|f| match &f.body {
            FrameBody::Trade(t) => Some(t.clone()),
            _ => None,
        })
        .collect();
    assert!(!truth_trades.is_empty());
    assert!(seen_trades == truth_trades, "trade streams differ");
    // Trade prices are consistent: yes + no = 1.
    for t in &seen_trades {
        let sum = t
            .yes_price_value()
            .unwrap()
            .checked_add(t.no_price_value().unwrap())
            .unwrap();
        assert_eq!(sum, kalshi_shared::Price::ONE_DOLLAR);
    }

    // Lifecycle: exactly the truth's market and event lifecycle messages.
    let truth_lc: Vec<Value> = truth(&sim, 0, Some("market_lifecycle_v2,event_lifecycle"))
        .await
        .into_iter()
        .map(|r| r["msg"].clone())
        .collect();
    let seen_lc: Vec<Value> = frames
        .iter()
        .filter_map(|f| match &f.body {
            FrameBody::MarketLifecycle(m) => Some(serde_json::to_value(m).unwrap()),
            FrameBody::EventLifecycle(e) => Some(serde_json::to_value(e).unwrap()),
            _ => None,
        })
        .collect();
    assert!(truth_lc.len() >= 5, "lifecycle ran: {}", truth_lc.len());
    assert_eq!(seen_lc, truth_lc);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yes_scale_books_are_consistent_too() {
    let sim = start(SimConfig::for_tests(22, 10)).await;
    let markets = market_tickers(&sim, "&mve_filter=exclude").await;
    let mut c = Client::connect(&sim).await;
    c.cmd(
        "subscribe",
        json!({"channels": ["orderbook_delta"], "market_tickers": markets, "use_yes_price": true}),
    )
    .await;
    let mut frames = c.drain(QUIET).await;
    frames.extend(run_traffic(&sim, &mut c, 3000, Duration::from_secs(1), &markets[..2]).await);
    let books = apply_all(&frames, true);
    for t in &markets {
        assert_eq!(books[t], sim_book(&sim, t).await.1, "{t}");
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_clients_see_the_same_events_on_their_own_sids() {
    let sim = start(SimConfig::for_tests(23, 10)).await;
    let markets = market_tickers(&sim, "&mve_filter=exclude").await;
    let mut a = Client::connect(&sim).await;
    let mut b = Client::connect(&sim).await;
    a.cmd("subscribe", json!({"channels": ["trade"]})).await;
    a.cmd(
        "subscribe",
        json!({"channels": ["orderbook_delta"], "market_tickers": markets}),
    )
    .await;
    b.cmd(
        "subscribe",
        json!({"channels": ["orderbook_delta"], "market_tickers": markets}),
    )
    .await;
    b.cmd("subscribe", json!({"channels": ["trade"]})).await;
    let mut fa = a.drain(QUIET).await;
    let mut fb = b.drain(QUIET).await;
    sim.advance(5000);
    fa.extend(a.drain(QUIET).await);
    fb.extend(b.drain(QUIET).await);
    assert_dense_seq(&fa);
    assert_dense_seq(&fb);
    let trades = |frames: &[kalshi_shared::wire::ws::Frame], sid: u64| -> Vec<String> {
        frames
            .iter()
            .filter_map(|f| match &f.body {
                FrameBody::Trade(t) => {
                    assert_eq!(f.sid, Some(sid));
                    Some(t.trade_id.clone())
                }
                _ => None,
            })
            .collect()
    };
    let (ta, tb) = (trades(&fa, 1), trades(&fb, 2));
    assert!(!ta.is_empty());
    assert_eq!(ta, tb);
    let deltas = |frames: &[kalshi_shared::wire::ws::Frame]| {
        frames
            .iter()
            .filter(|f| matches!(f.body, FrameBody::OrderbookDelta(_)))
            .count()
    };
    assert_eq!(deltas(&fa), deltas(&fb));
    sim.shutdown().await;
}

/// Drops wall-clock fields, keeping everything the seed decides.
fn strip_times(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|k, _| {
                !(k == "ts"
                    || k == "ts_ms"
                    || k == "time"
                    || k.ends_with("_ts")
                    || k.ends_with("_time"))
            });
            map.values_mut().for_each(strip_times);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_times),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_seed_gives_the_same_exchange() {
    let run = |seed: u64| async move {
        let mut cfg = SimConfig::for_tests(seed, 25);
        cfg.lifecycle_every = 300;
        let sim = start(cfg).await;
        // Different batch sizes must not change the sequence.
        for n in [1, 7, 500, 2000, 3, 2489] {
            sim.advance(n);
        }
        let tickers = market_tickers(&sim, "").await;
        let mut records = truth(&sim, 0, None).await;
        records.iter_mut().for_each(strip_times);
        sim.shutdown().await;
        (tickers, records)
    };
    let (t1, r1) = run(42).await;
    let (t2, r2) = run(42).await;
    let (t3, r3) = run(43).await;
    assert!(r1.len() >= 5000);
    assert_eq!(t1, t2);
    assert_eq!(r1.len(), r2.len());
    assert!(r1 == r2, "same seed, same events");
    assert_ne!(t1, t3);
    assert!(r1 != r3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticker_initial_snapshot_repeats_the_last_ticker() {
    let sim = start(SimConfig::for_tests(24, 8)).await;
    let markets = market_tickers(&sim, "&mve_filter=exclude").await;
    sim.advance(3000);
    let last: HashMap<String, Value> = truth(&sim, 0, Some("ticker"))
        .await
        .into_iter()
        .map(|r| {
            (
                r["msg"]["market_ticker"].as_str().unwrap().to_owned(),
                r["msg"].clone(),
            )
        })
        .collect();
    let mut c = Client::connect(&sim).await;
    c.cmd(
        "subscribe",
        json!({"channels": ["ticker"], "market_tickers": markets, "send_initial_snapshot": true}),
    )
    .await;
    let frames = c.drain(QUIET).await;
    let got: HashMap<String, Value> = frames
        .iter()
        .filter_map(|f| match &f.body {
            FrameBody::Ticker(t) => {
                Some((t.market_ticker.clone(), serde_json::to_value(t).unwrap()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(got.len(), last.len());
    assert_eq!(got, last);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_changes_what_rest_reports() {
    let mut cfg = SimConfig::for_tests(25, 12);
    cfg.lifecycle_every = 200;
    let sim = start(cfg).await;
    let before: HashSet<String> = market_tickers(&sim, "&mve_filter=exclude")
        .await
        .into_iter()
        .collect();
    sim.advance(6000);
    let lc = truth(&sim, 0, Some("market_lifecycle_v2")).await;
    let mut last_event: HashMap<String, String> = HashMap::new();
    let mut created = HashSet::new();
    for r in &lc {
        let t = r["msg"]["market_ticker"].as_str().unwrap().to_owned();
        let e = r["msg"]["event_type"].as_str().unwrap().to_owned();
        if e == "created" {
            created.insert(t.clone());
        }
        if e != "deactivated" && e != "metadata_updated" {
            last_event.insert(t, e);
        }
    }
    for kind in [
        "created",
        "activated",
        "close_date_updated",
        "determined",
        "settled",
    ] {
        assert!(
            last_event.values().any(|e| e == kind)
                || lc.iter().any(|r| r["msg"]["event_type"] == kind),
            "{kind} happened"
        );
    }
    let after: HashSet<String> = market_tickers(&sim, "&mve_filter=exclude")
        .await
        .into_iter()
        .collect();
    assert!(
        created
            .iter()
            .all(|t| after.contains(t) && !before.contains(t)),
        "new markets are listed"
    );
    for (t, e) in &last_event {
        let (_, m) = get_json(&format!("{}/markets/{t}", sim.rest_url())).await;
        let want = match e.as_str() {
            "created" | "activated" => "active",
            "close_date_updated" => "closed",
            "determined" => "determined",
            "settled" => "finalized",
            _ => continue,
        };
        assert_eq!(m["market"]["status"], want, "{t} after {e}");
        if e == "determined" || e == "settled" {
            assert!(["yes", "no"].contains(&m["market"]["result"].as_str().unwrap()));
        }
    }
    // New events are announced before their markets and listed by /events.
    let ev = truth(&sim, 0, Some("event_lifecycle")).await;
    assert!(!ev.is_empty());
    for r in &ev {
        let t = r["msg"]["event_ticker"].as_str().unwrap();
        let (status, _) = get_json(&format!("{}/events/{t}", sim.rest_url())).await;
        assert_eq!(status, 200);
    }
    sim.shutdown().await;
}
