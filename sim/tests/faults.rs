//! Every fault switch of the control API, observed from a client over real sockets.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt as _, StreamExt as _};
use kalshi_shared::wire::ws::{FrameBody, error_code as code, parse_frame};
use kalshi_sim::SimConfig;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// Waits until the connection ends; returns the close code if a close frame came.
async fn closed(c: &mut Client, wait: Duration) -> Option<Option<u16>> {
    tokio::time::timeout(wait, async {
        loop {
            match c.ws.next().await {
                Some(Ok(Message::Close(f))) => return Some(f.map(|f| u16::from(f.code))),
                None | Some(Err(_)) => return None,
                _ => {}
            }
        }
    })
    .await
    .ok()
    .map(|code| code.flatten())
}

async fn conn_ids(sim: &kalshi_sim::SimHandle) -> Vec<u64> {
    let (_, v) = get_json(&format!("{}/connections", sim.control_url())).await;
    v["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect()
}

async fn subscribed(sim: &kalshi_sim::SimHandle) -> (Client, Vec<String>) {
    let markets = market_tickers(sim, "&mve_filter=exclude").await;
    let mut c = Client::connect(sim).await;
    c.cmd(
        "subscribe",
        json!({"channels": ["orderbook_delta"], "market_tickers": markets}),
    )
    .await;
    c.cmd("subscribe", json!({"channels": ["trade"]})).await;
    c.drain(QUIET).await;
    (c, markets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_cuts_the_chosen_connections_only() {
    let sim = start(SimConfig::for_tests(41, 5)).await;
    let mut a = Client::connect(&sim).await;
    let mut b = Client::connect(&sim).await;
    let ids = conn_ids(&sim).await;
    assert_eq!(ids.len(), 2);
    let v = fault(&sim, json!({"fault": "drop", "conn_ids": [ids[0]]})).await;
    assert_eq!(v["applied_to"], json!([ids[0]]));
    assert_eq!(
        closed(&mut a, WAIT).await,
        Some(None),
        "cut without a close frame"
    );
    b.cmd("list_subscriptions", serde_json::Value::Null).await;
    assert!(
        b.next_frame(WAIT).await.is_some(),
        "the other connection is untouched"
    );
    let v = fault(&sim, json!({"fault": "drop", "graceful": true})).await;
    assert_eq!(v["applied_to"].as_array().unwrap().len(), 1);
    assert_eq!(
        closed(&mut b, WAIT).await,
        Some(Some(1001)),
        "graceful drop sends close 1001"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_keeps_the_socket_open_but_silent() {
    let mut cfg = SimConfig::for_tests(42, 5);
    cfg.ping_interval = Duration::from_millis(100);
    let sim = start(cfg).await;
    let (mut c, _) = subscribed(&sim).await;
    let t0 = Instant::now();
    fault(&sim, json!({"fault": "stall", "duration_ms": 1500})).await;
    // Heartbeats sent before the stall took hold (more of them when the machine is busy and
    // the fault request slow) are still on their way: take them until 200 ms pass quietly.
    let mut before = 0;
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(200), c.ws.next()).await
    {
        assert!(
            matches!(&m, Message::Ping(p) if p.as_ref() == b"heartbeat"),
            "only heartbeats precede the stall: {m:?}"
        );
        before += 1;
        assert!(before < 5, "heartbeats keep coming during the stall");
    }
    control(&sim, "/rate", json!({"rate": 2000})).await;
    c.ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    // Nothing arrives (no data, no heartbeat, no pong), yet the socket stays open ...
    let mut got = Vec::new();
    while t0.elapsed() < Duration::from_millis(1200) {
        if let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_millis(100), c.ws.next()).await
        {
            got.push(m);
        }
    }
    // A heartbeat the writer had already handed to the socket before the stall took hold may
    // still arrive; data and the pong to our ping must not.
    assert!(
        got.iter()
            .all(|m| matches!(m, Message::Ping(p) if p.as_ref() == b"heartbeat")),
        "a stalled connection sends nothing: {got:?}"
    );
    assert!(got.len() <= 1, "at most one heartbeat in flight: {got:?}");
    // ... until the stall ends, when the server drops it.
    assert!(closed(&mut c, Duration::from_secs(5)).await.is_some());
    assert!(t0.elapsed() >= Duration::from_millis(1300));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skip_seq_loses_exactly_one_frame() {
    let sim = start(SimConfig::for_tests(43, 5)).await;
    let (mut c, markets) = subscribed(&sim).await;
    let v = fault(
        &sim,
        json!({"fault": "skip_seq", "channel": "orderbook_delta", "count": 1}),
    )
    .await;
    assert_eq!(v["applied_to"].as_array().unwrap().len(), 1);
    let before = sim.published_pos();
    sim.advance(500);
    let frames = c.drain(QUIET).await;
    // The subscription's snapshots took seq 1..=markets; the stream continues from there.
    let mut seqs = vec![markets.len() as u64];
    seqs.extend(
        frames
            .iter()
            .filter(|f| f.sid == Some(1))
            .filter_map(|f| f.seq),
    );
    let jumps: Vec<u64> = seqs.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(
        jumps.iter().filter(|j| **j == 2).count(),
        1,
        "one gap of one: {seqs:?}"
    );
    assert!(jumps.iter().all(|j| *j == 1 || *j == 2));
    // The lost frame is a real delta: the truth has one more than the client saw.
    let truth_deltas = truth(&sim, before, Some("orderbook_delta")).await.len();
    let seen = frames
        .iter()
        .filter(|f| matches!(f.body, FrameBody::OrderbookDelta(_)))
        .count();
    assert_eq!(truth_deltas, seen + 1);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_of_every_kind() {
    let sim = start(SimConfig::for_tests(44, 5)).await;
    let (mut c, _) = subscribed(&sim).await;
    for kind in ["not_json", "unknown_type", "bad_fields"] {
        fault(
            &sim,
            json!({"fault": "malformed", "kind": kind, "count": 2}),
        )
        .await;
        for _ in 0..2 {
            let text = c.next_text(WAIT).await.unwrap();
            match (kind, parse_frame(&text)) {
                ("not_json", Err(e)) => assert_eq!(e.label(), "malformed"),
                ("unknown_type", Ok(f)) => {
                    assert!(matches!(f.body, FrameBody::Unknown(ref t) if t == "mystery_update"))
                }
                ("bad_fields", Err(e)) => assert_eq!(e.label(), "trade"),
                other => panic!("{kind}: unexpected {other:?} for {text}"),
            }
        }
    }
    fault(&sim, json!({"fault": "malformed", "kind": "binary"})).await;
    let m = tokio::time::timeout(WAIT, c.ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(m, Message::Binary(_)));
    // Unknown fields on real frames: they still parse, with the same content.
    fault(
        &sim,
        json!({"fault": "malformed", "kind": "unknown_fields", "count": 3}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    sim.advance(50);
    let mut decorated = 0;
    for _ in 0..3 {
        let text = c.next_text(WAIT).await.unwrap();
        // Inside `msg` only where the message is not kept as sent (tickers and lifecycle
        // messages are alike for every client; `--future-fields` decorates those).
        let as_sent = text.starts_with("{\"type\":\"ticker\"") || text.contains("lifecycle");
        assert!(
            text.contains("x_envelope_extra") && (as_sent || text.contains("x_future_field")),
            "{text}"
        );
        let f = parse_frame(&text).unwrap();
        assert!(!matches!(f.body, FrameBody::Unknown(_)));
        decorated += 1;
    }
    assert_eq!(decorated, 3);
    let rest = c.drain(QUIET).await;
    assert!(!rest.is_empty());
    // An oversize frame: a client with a limit refuses it; the simulator is unharmed.
    fault(
        &sim,
        json!({"fault": "malformed", "kind": "oversize", "size": 2_000_000}),
    )
    .await;
    let text = c.next_text(WAIT).await.unwrap();
    assert!(text.len() >= 1_999_000, "{}", text.len());
    let (_, stats) = get_json(&format!("{}/stats", sim.control_url())).await;
    assert_eq!(stats["ws_connections"], 1);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_errors_kill_the_subscription() {
    let sim = start(SimConfig::for_tests(45, 5)).await;
    let (mut c, _) = subscribed(&sim).await;
    fault(
        &sim,
        json!({"fault": "ws_error", "code": 17, "channel": "orderbook_delta"}),
    )
    .await;
    let f = c.next_frame(WAIT).await.unwrap();
    assert_eq!(f.sid, Some(1), "the error names the dead sid");
    assert!(matches!(f.body, FrameBody::Error(ref e) if e.code == code::INTERNAL_ERROR));
    sim.advance(500);
    let frames = c.drain(QUIET).await;
    assert!(
        frames.iter().all(|f| f.sid == Some(2)),
        "only the trade sid still delivers"
    );
    fault(&sim, json!({"fault": "ws_error", "code": 25})).await;
    let f = c.next_frame(WAIT).await.unwrap();
    assert!(matches!(f.body, FrameBody::Error(ref e) if e.code == code::BUFFER_OVERFLOW));
    assert_eq!(f.sid, Some(2));
    c.cmd("list_subscriptions", serde_json::Value::Null).await;
    let f = c.next_frame(WAIT).await.unwrap();
    assert!(matches!(f.body, FrameBody::SubscriptionList(ref l) if l.is_empty()));
    // Resubscribing works on the same connection with new sids.
    c.cmd("subscribe", json!({"channels": ["trade"]})).await;
    let f = c.next_frame(WAIT).await.unwrap();
    assert!(matches!(f.body, FrameBody::Subscribed(ref s) if s.sid == 3));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_get_error_25_and_memory_stays_bounded() {
    let mut cfg = SimConfig::for_tests(46, 30);
    cfg.fanout_buffer = 8;
    cfg.slow_client_timeout = Duration::from_secs(60);
    let sim = start(cfg).await;
    let (mut c, _) = subscribed(&sim).await;
    // Publish far more than the socket buffers plus the fan-out ring hold, without reading.
    for _ in 0..200 {
        sim.advance(2000);
        tokio::task::yield_now().await;
    }
    let (_, stats) = get_json(&format!("{}/stats", sim.control_url())).await;
    assert!(stats["rss_bytes"].as_u64().unwrap() < 400 << 20, "{stats}");
    // Now read: somewhere in the stream, error 25 on both data sids, then nothing more.
    let mut errors = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while errors.len() < 2 && Instant::now() < deadline {
        let Some(f) = c.next_frame(Duration::from_secs(2)).await else {
            break;
        };
        if let FrameBody::Error(e) = &f.body {
            errors.push((f.sid, e.code));
        }
    }
    errors.sort();
    assert_eq!(errors, vec![(Some(1), 25), (Some(2), 25)]);
    c.drain(QUIET).await;
    sim.advance(1000);
    assert!(
        c.drain(QUIET).await.is_empty(),
        "the killed subscriptions deliver nothing"
    );
    let (_, stats) = get_json(&format!("{}/stats", sim.control_url())).await;
    assert_eq!(stats["ws_overflows"], 1);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_upgrades_and_rest_error_bursts() {
    let sim = start(SimConfig::for_tests(47, 5)).await;
    fault(&sim, json!({"fault": "reject_upgrades", "status": 503})).await;
    let e = Client::connect_url(&sim.ws_url(), None)
        .await
        .err()
        .unwrap();
    assert!(matches!(e, tokio_tungstenite::tungstenite::Error::Http(ref r) if r.status() == 503));
    fault(&sim, json!({"fault": "clear"})).await;
    Client::connect(&sim).await;

    let url = format!("{}/exchange/status", sim.rest_url());
    fault(
        &sim,
        json!({"fault": "rest_errors", "status": 429, "count": 3}),
    )
    .await;
    let mut codes = Vec::new();
    for _ in 0..4 {
        let r = http().get(&url).send().await.unwrap();
        codes.push(r.status().as_u16());
        if r.status() == 429 {
            assert_eq!(r.text().await.unwrap(), r#"{"error":"too many requests"}"#);
        }
    }
    assert_eq!(codes, vec![429, 429, 429, 200]);
    fault(
        &sim,
        json!({"fault": "rest_errors", "status": 500, "duration_ms": 300}),
    )
    .await;
    let (status, body) = get_json(&url).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (500, Some("internal_server_error"))
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        get_json(&url).await.0,
        200,
        "the burst ended with its duration"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_outage_then_recovery() {
    let sim = start(SimConfig::for_tests(48, 5)).await;
    let (mut c, _) = subscribed(&sim).await;
    let v = fault(&sim, json!({"fault": "outage", "duration_ms": 1000})).await;
    assert_eq!(v["dropped"].as_array().unwrap().len(), 1);
    let t0 = Instant::now();
    assert!(closed(&mut c, WAIT).await.is_some(), "connections are cut");
    let url = format!("{}/markets", sim.rest_url());
    assert_eq!(get_json(&url).await.0, 503);
    assert!(Client::connect_url(&sim.ws_url(), None).await.is_err());
    // The exchange keeps trading during the outage; clients must backfill afterwards.
    let before = sim.published_pos();
    sim.advance(500);
    while t0.elapsed() < Duration::from_millis(1100) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get_json(&url).await.0, 200);
    Client::connect(&sim).await;
    let (_, trades) = get_json(&format!("{}/markets/trades?limit=1000", sim.rest_url())).await;
    let missed = truth(&sim, before, Some("trade")).await.len();
    assert!(missed > 0);
    assert!(
        trades["trades"].as_array().unwrap().len() >= missed,
        "REST has what WS clients missed"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_truth_stops_publication_instead_of_losing_the_record() {
    let mut cfg = SimConfig::for_tests(49, 5);
    cfg.truth_limit_bytes = Some(100_000);
    let sim = start(cfg).await;
    let mut published = 0;
    for _ in 0..100 {
        published += sim.advance(200);
    }
    let head = sim.published_pos();
    assert!(
        head > 0 && head < 20_000,
        "publication stopped at the limit: {head}"
    );
    // The exchange's status and schedule are recorded too, served by REST, not published.
    let served = truth(&sim, 0, Some("exchange_status,exchange_schedule"))
        .await
        .len() as u64;
    assert_eq!(served, 2, "the status and schedule at the start");
    assert_eq!(published + served, head, "everything published is recorded");
    assert_eq!(truth(&sim, 0, None).await.len() as u64, head);
    let (_, stats) = get_json(&format!("{}/stats", sim.control_url())).await;
    assert!(
        stats["truth_error"]
            .as_str()
            .unwrap()
            .contains("--truth-limit-bytes")
    );
    sim.shutdown().await;
}
