//! WebSocket conformance with a real client over a socket: sids, dense seq including `ok` and
//! `unsubscribed` frames, snapshot-then-deltas, mid-stream `get_snapshot` numbering, merging
//! into an existing sid, reconnect restarting sids, every command error code, heartbeat pings,
//! the frame-size limit and signed upgrades.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt as _;
use kalshi_shared::auth::Signer;
use kalshi_shared::wire::ws::{FrameBody, error_code as code};
use kalshi_sim::SimConfig;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sids_seq_snapshots_and_ok_frames_follow_kalshi() {
    let sim = start(SimConfig::for_tests(11, 20)).await;
    let markets = market_tickers(&sim, "&mve_filter=exclude").await;
    let (m1, m2, m3, m4) = (&markets[0], &markets[1], &markets[2], &markets[3]);
    let mut c = Client::connect(&sim).await;

    // One `subscribed` per channel, sids from 1, no seq on the ack.
    let id = c
        .cmd(
            "subscribe",
            json!({"channels": ["orderbook_delta"], "market_tickers": [m1, m2, m3], "use_yes_price": false}),
        )
        .await;
    let f = c.next_frame(WAIT).await.unwrap();
    assert_eq!(f.id, Some(id));
    assert_eq!(f.seq, None);
    assert!(
        matches!(f.body, FrameBody::Subscribed(ref s) if s.sid == 1 && s.channel == "orderbook_delta")
    );
    // Then one snapshot per market, seq 1..3 on sid 1.
    let mut snapshots = Vec::new();
    let mut first = Vec::new();
    for expected_seq in 1..=3 {
        let f = c.next_frame(WAIT).await.unwrap();
        assert_eq!((f.sid, f.seq), (Some(1), Some(expected_seq)));
        let FrameBody::OrderbookSnapshot(s) = &f.body else {
            panic!("expected a snapshot")
        };
        snapshots.push(s.market_ticker.clone());
        first.push(f);
    }
    snapshots.sort();
    let mut want = vec![m1.clone(), m2.clone(), m3.clone()];
    want.sort();
    assert_eq!(snapshots, want);

    let id2 = c
        .cmd("subscribe", json!({"channels": ["trade", "ticker"]}))
        .await;
    for sid in [2, 3] {
        let f = c.next_frame(WAIT).await.unwrap();
        assert_eq!(f.id, Some(id2));
        assert!(matches!(f.body, FrameBody::Subscribed(ref s) if s.sid == sid));
    }

    // Traffic: deltas continue the seq of sid 1; trades have their own seq; tickers none.
    sim.advance(3000);
    let mut frames = c.drain(QUIET).await;
    frames.splice(0..0, first);
    assert!(
        frames
            .iter()
            .any(|f| matches!(f.body, FrameBody::OrderbookDelta(_)))
    );
    assert!(frames.iter().any(|f| matches!(f.body, FrameBody::Trade(_))));
    for f in &frames[3..] {
        match &f.body {
            FrameBody::Ticker(t) => {
                assert_eq!(f.seq, None, "ticker frames carry no seq");
                assert!(
                    f.sending_ts_ms.is_some(),
                    "ticker frames carry sending_ts_ms"
                );
                assert!(t.ts_ms.is_some());
            }
            FrameBody::OrderbookDelta(d) => {
                assert_eq!(f.sid, Some(1));
                assert!(
                    [m1, m2, m3].contains(&&d.market_ticker),
                    "only subscribed markets"
                );
                assert!(d.ts_ms.is_some());
            }
            FrameBody::Trade(_) => assert_eq!(f.sid, Some(2)),
            other => panic!("unexpected {other:?}"),
        }
    }

    // add_markets: an `ok` with the full list takes the next seq, then the snapshot.
    let id = c
        .cmd(
            "update_subscription",
            json!({"sids": [1], "market_tickers": [m4], "action": "add_markets"}),
        )
        .await;
    let more = c
        .until(WAIT, |f| matches!(f.body, FrameBody::OrderbookSnapshot(_)))
        .await;
    let ok = more.iter().find(|f| f.id == Some(id)).expect("ok reply");
    assert_eq!(ok.sid, Some(1));
    let FrameBody::Ok(msg) = &ok.body else {
        panic!()
    };
    let mut listed = msg.market_tickers.clone().unwrap();
    listed.sort();
    let mut want4 = vec![m1.clone(), m2.clone(), m3.clone(), m4.clone()];
    want4.sort();
    assert_eq!(listed, want4, "ok carries the full market list");
    frames.extend(more);

    // get_snapshot mid-stream: takes the next number, does not reset it.
    sim.advance(500);
    c.cmd(
        "update_subscription",
        json!({"sid": 1, "market_tickers": [m2], "action": "get_snapshot"}),
    )
    .await;
    sim.advance(500);
    let more = c.drain(QUIET).await;
    let snap = more
        .iter()
        .find(|f| matches!(&f.body, FrameBody::OrderbookSnapshot(s) if s.market_ticker == *m2))
        .expect("requested snapshot");
    assert!(snap.seq.unwrap() > 4, "numbered mid-stream, not reset");
    frames.extend(more);

    // delete_markets: ok with the remaining list; no more deltas for the market.
    let id = c
        .cmd(
            "update_subscription",
            json!({"sid": 1, "market_tickers": [m1], "action": "delete_markets"}),
        )
        .await;
    let more = c.until(WAIT, |f| f.id == Some(id)).await;
    let FrameBody::Ok(msg) = &more.last().unwrap().body else {
        panic!()
    };
    assert_eq!(msg.market_tickers.as_ref().unwrap().len(), 3);
    frames.extend(more);
    sim.advance(2000);
    let more = c.drain(QUIET).await;
    assert!(
        !more
            .iter()
            .any(|f| matches!(&f.body, FrameBody::OrderbookDelta(d) if d.market_ticker == *m1))
    );
    frames.extend(more);

    // list_subscriptions: an `ok` whose msg is an array, no seq.
    let id = c.cmd("list_subscriptions", serde_json::Value::Null).await;
    let more = c.until(WAIT, |f| f.id == Some(id)).await;
    let list = more.last().unwrap();
    assert_eq!(list.seq, None);
    let FrameBody::SubscriptionList(l) = &list.body else {
        panic!("{list:?}")
    };
    assert_eq!(l.iter().map(|s| s.sid).collect::<Vec<_>>(), vec![1, 2, 3]);
    frames.extend(more[..more.len() - 1].iter().cloned());

    // unsubscribe: `unsubscribed` takes the sid's next seq.
    let id = c.cmd("unsubscribe", json!({"sids": [2]})).await;
    let more = c.until(WAIT, |f| f.id == Some(id)).await;
    let un = more.last().unwrap();
    assert_eq!(un.body, FrameBody::Unsubscribed);
    assert_eq!(un.sid, Some(2));
    frames.extend(more);
    let last = assert_dense_seq(&frames);
    assert!(last[&1] > 10 && last[&2] >= 2, "{last:?}");

    // A new connection starts again at sid 1, seq 1.
    drop(c);
    let mut c2 = Client::connect(&sim).await;
    c2.cmd(
        "subscribe",
        json!({"channels": ["orderbook_delta"], "market_ticker": m3}),
    )
    .await;
    let f = c2.next_frame(WAIT).await.unwrap();
    assert!(matches!(f.body, FrameBody::Subscribed(ref s) if s.sid == 1));
    let f = c2.next_frame(WAIT).await.unwrap();
    assert_eq!((f.sid, f.seq), (Some(1), Some(1)));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_again_merges_into_the_existing_sid() {
    let sim = start(SimConfig::for_tests(12, 10)).await;
    let markets = market_tickers(&sim, "&mve_filter=exclude").await;
    let mut c = Client::connect(&sim).await;
    c.cmd(
        "subscribe",
        json!({"channels": ["orderbook_delta"], "market_tickers": [&markets[0]]}),
    )
    .await;
    let first = c
        .until(WAIT, |f| matches!(f.body, FrameBody::OrderbookSnapshot(_)))
        .await;
    c.cmd(
        "subscribe",
        json!({"channels": ["orderbook_delta"], "market_tickers": [&markets[0], &markets[1]]}),
    )
    .await;
    let second = c
        .until(WAIT, |f| matches!(f.body, FrameBody::OrderbookSnapshot(_)))
        .await;
    let FrameBody::Subscribed(s) = &second[0].body else {
        panic!("{second:?}")
    };
    assert_eq!(s.sid, 1, "merged into the existing sid (code 6 is retired)");
    let FrameBody::OrderbookSnapshot(snap) = &second[1].body else {
        panic!()
    };
    assert_eq!(
        snap.market_ticker, markets[1],
        "a snapshot only for the new market"
    );
    assert_eq!(second[1].seq, Some(2));
    assert!(c.drain(QUIET).await.is_empty());
    let mut all = first;
    all.extend(second);
    assert_dense_seq(&all);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_error_code_has_its_condition() {
    let mut cfg = SimConfig::for_tests(13, 10);
    cfg.max_markets_per_subscription = 3;
    let sim = start(cfg).await;
    let markets = market_tickers(&sim, "&mve_filter=exclude").await;
    let mut c = Client::connect(&sim).await;
    let t = |i: usize| markets[i].clone();
    let cases: Vec<(String, u32)> = vec![
        ("not json".into(), code::UNABLE_TO_PROCESS),
        ("[1,2]".into(), code::UNABLE_TO_PROCESS),
        (json!({"id": 1, "cmd": "fly"}).to_string(), code::UNKNOWN_COMMAND),
        (json!({"id": 1}).to_string(), code::UNKNOWN_COMMAND),
        (json!({"id": 1, "cmd": "subscribe"}).to_string(), code::PARAMS_REQUIRED),
        (json!({"id": 1, "cmd": "subscribe", "params": "x"}).to_string(), code::INVALID_PARAMETER),
        (json!({"id": 1, "cmd": "subscribe", "params": {}}).to_string(), code::CHANNELS_REQUIRED),
        (json!({"id": 1, "cmd": "subscribe", "params": {"channels": []}}).to_string(), code::CHANNELS_REQUIRED),
        (json!({"id": 1, "cmd": "subscribe", "params": {"channels": ["nope"]}}).to_string(), code::UNKNOWN_CHANNEL),
        (json!({"id": 1, "cmd": "subscribe", "params": {"channels": ["fill"]}}).to_string(), code::AUTH_REQUIRED),
        (json!({"id": 1, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"]}}).to_string(), code::MARKET_TICKER_REQUIRED),
        (json!({"id": 1, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"], "market_tickers": []}}).to_string(), code::MARKET_TICKER_REQUIRED),
        (json!({"id": 1, "cmd": "subscribe", "params": {"channels": ["trade"], "market_ticker": t(0), "market_tickers": [t(1)]}}).to_string(), code::INVALID_PARAMETER),
        (json!({"id": 1, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"], "market_id": "9b0f6b43-5b68-4f9f-9f02-9a2d1b8ac1a1"}}).to_string(), code::INVALID_PARAMETER),
        (json!({"id": 1, "cmd": "subscribe", "params": {"channels": ["trade"], "market_ticker": "NOPE-1"}}).to_string(), code::MARKET_NOT_FOUND),
        (json!({"id": 1, "cmd": "subscribe", "params": {"channels": ["ticker"], "shard_factor": 0}}).to_string(), code::SHARD_FACTOR_POSITIVE),
        (json!({"id": 1, "cmd": "subscribe", "params": {"channels": ["ticker"], "shard_key": 1}}).to_string(), code::SHARD_FACTOR_REQUIRED),
        (json!({"id": 1, "cmd": "subscribe", "params": {"channels": ["ticker"], "shard_factor": 4, "shard_key": 4}}).to_string(), code::SHARD_KEY_RANGE),
        (json!({"id": 1, "cmd": "subscribe", "params": {"channels": ["ticker"], "shard_factor": 101}}).to_string(), code::SHARD_FACTOR_MAX),
        (json!({"id": 1, "cmd": "subscribe", "params": {"channels": ["cfbenchmarks_value"]}}).to_string(), code::INDEX_IDS_REQUIRED),
        (json!({"id": 1, "cmd": "subscribe", "params": {"channels": ["trade"], "market_tickers": [t(0), t(1), t(2), t(3)]}}).to_string(), code::MARKET_LIMIT),
        (json!({"id": 1, "cmd": "unsubscribe"}).to_string(), code::PARAMS_REQUIRED),
        (json!({"id": 1, "cmd": "unsubscribe", "params": {}}).to_string(), code::SIDS_REQUIRED),
        (json!({"id": 1, "cmd": "unsubscribe", "params": {"sids": []}}).to_string(), code::SIDS_REQUIRED),
        (json!({"id": 1, "cmd": "unsubscribe", "params": {"sids": [99]}}).to_string(), code::UNKNOWN_SID),
        (json!({"id": 1, "cmd": "update_subscription"}).to_string(), code::PARAMS_REQUIRED),
        (json!({"id": 1, "cmd": "update_subscription", "params": {"sid": 1}}).to_string(), code::ACTION_REQUIRED),
        (json!({"id": 1, "cmd": "update_subscription", "params": {"sid": 1, "action": "explode"}}).to_string(), code::UNSUPPORTED_ACTION),
        (json!({"id": 1, "cmd": "update_subscription", "params": {"action": "add_markets", "market_tickers": [t(0)]}}).to_string(), code::SIDS_REQUIRED),
        (json!({"id": 1, "cmd": "update_subscription", "params": {"sids": [1, 2], "action": "add_markets", "market_tickers": [t(0)]}}).to_string(), code::EXACTLY_ONE_SID),
        (json!({"id": 1, "cmd": "update_subscription", "params": {"sid": 99, "action": "add_markets", "market_tickers": [t(0)]}}).to_string(), code::UNKNOWN_SID),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        c.send_text(text).await;
        let (_, got, _) = c.expect_error(WAIT).await;
        assert_eq!(got, *want, "case {i}: {text}");
    }
    // Unknown market names the ticker.
    c.send_text(&json!({"id": 5, "cmd": "subscribe", "params": {"channels": ["trade"], "market_ticker": "NOPE-1"}}).to_string())
        .await;
    assert_eq!(
        c.expect_error(WAIT).await,
        (Some(5), code::MARKET_NOT_FOUND, Some("NOPE-1".into()))
    );
    // A binary frame is not a command.
    c.ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(c.expect_error(WAIT).await.1, code::UNABLE_TO_PROCESS);

    // Errors that need an existing subscription.
    c.cmd(
        "subscribe",
        json!({"channels": ["ticker"], "market_tickers": [t(0)]}),
    )
    .await;
    c.next_frame(WAIT).await.unwrap();
    c.send_text(&json!({"id": 9, "cmd": "update_subscription", "params": {"sid": 1, "action": "get_snapshot", "market_tickers": [t(0)]}}).to_string())
        .await;
    assert_eq!(
        c.expect_error(WAIT).await,
        (Some(9), code::UNSUPPORTED_ACTION, None)
    );
    c.send_text(&json!({"id": 10, "cmd": "update_subscription", "params": {"sid": 1, "action": "add_markets"}}).to_string())
        .await;
    assert_eq!(c.expect_error(WAIT).await.1, code::MARKET_TICKER_REQUIRED);
    c.send_text(&json!({"id": 11, "cmd": "update_subscription", "params": {"sid": 1, "action": "add_markets", "market_tickers": [t(1), t(2), t(3)]}}).to_string())
        .await;
    assert_eq!(c.expect_error(WAIT).await.1, code::MARKET_LIMIT);
    c.send_text(&json!({"id": 12, "cmd": "update_subscription", "params": {"sid": 1, "action": "add_markets", "market_tickers": ["NOPE-2"]}}).to_string())
        .await;
    assert_eq!(
        c.expect_error(WAIT).await,
        (Some(12), code::MARKET_NOT_FOUND, Some("NOPE-2".into()))
    );
    // id 0 means "no id".
    c.send_text(&json!({"id": 0, "cmd": "fly"}).to_string())
        .await;
    assert_eq!(c.expect_error(WAIT).await.0, None);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_rate_limit_answers_27() {
    let mut cfg = SimConfig::for_tests(14, 5);
    cfg.ws_command_rate = 5;
    let sim = start(cfg).await;
    let mut c = Client::connect(&sim).await;
    let t0 = std::time::Instant::now();
    for _ in 0..20 {
        c.cmd("list_subscriptions", serde_json::Value::Null).await;
    }
    // The bucket refills 5 commands a second while we send.
    let refill = (t0.elapsed().as_secs_f64() * 5.0).ceil() as usize;
    let frames = c.drain(QUIET).await;
    let limited = frames
        .iter()
        .filter(|f| matches!(&f.body, FrameBody::Error(e) if e.code == code::TOO_MANY_REQUESTS))
        .count();
    let answered = frames
        .iter()
        .filter(|f| matches!(f.body, FrameBody::SubscriptionList(_)))
        .count();
    assert_eq!(limited + answered, 20);
    assert!(limited > 0);
    assert!(
        (5..=5 + refill).contains(&answered),
        "the bucket holds 5 commands: {answered}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_pings_arrive_on_schedule() {
    let mut cfg = SimConfig::for_tests(15, 5);
    cfg.ping_interval = Duration::from_millis(200);
    let sim = start(cfg).await;
    let mut c = Client::connect(&sim).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut payloads = Vec::new();
    while tokio::time::Instant::now() < deadline {
        use futures_util::StreamExt as _;
        if let Ok(Some(Ok(Message::Ping(p)))) = tokio::time::timeout_at(deadline, c.ws.next()).await
        {
            payloads.push(p.to_vec());
        }
    }
    assert!(
        payloads.len() >= 5,
        "about one ping per 200 ms over 3 s: {}",
        payloads.len()
    );
    assert!(payloads.iter().all(|p| p == b"heartbeat"));
    // The server answers our pings.
    c.ws.send(Message::Ping(b"hi".to_vec().into()))
        .await
        .unwrap();
    let mut got_pong = false;
    for _ in 0..10 {
        use futures_util::StreamExt as _;
        if let Ok(Some(Ok(Message::Pong(p)))) =
            tokio::time::timeout(Duration::from_secs(2), c.ws.next()).await
        {
            got_pong = p.as_ref() == b"hi";
            break;
        }
    }
    assert!(got_pong);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_client_frames_close_the_connection() {
    let mut cfg = SimConfig::for_tests(16, 5);
    cfg.ws_max_frame_bytes = 64 * 1024;
    let sim = start(cfg).await;
    let mut c = Client::connect(&sim).await;
    let big = format!(
        r#"{{"id":1,"cmd":"list_subscriptions","pad":"{}"}}"#,
        "x".repeat(100_000)
    );
    let _ = c.ws.send(Message::text(big)).await;
    use futures_util::StreamExt as _;
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match c.ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                None | Some(Err(_)) => return None,
                _ => {}
            }
        }
    })
    .await
    .expect("connection ends");
    assert_eq!(end, Some(1009), "closed with 1009 (message too big)");
    // The simulator is fine: a new client still works.
    let mut c2 = Client::connect(&sim).await;
    c2.cmd("list_subscriptions", serde_json::Value::Null).await;
    assert!(c2.next_frame(WAIT).await.is_some());
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_upgrades_are_verified() {
    let mut cfg = SimConfig::for_tests(17, 5);
    cfg.public_key_pem = Some(KEY_PUBLIC.to_vec());
    cfg.auth_max_skew = Duration::from_secs(5);
    let sim = start(cfg).await;
    let signer = Signer::from_pem("key-a", KEY_PKCS8).unwrap();
    // A valid signature connects, and the connection counts as authenticated.
    let mut c = Client::connect_signed(&sim, &signer).await;
    c.cmd("subscribe", json!({"channels": ["fill"]})).await;
    assert!(matches!(
        c.next_frame(WAIT).await.unwrap().body,
        FrameBody::Subscribed(_)
    ));
    let status_of = |e: tokio_tungstenite::tungstenite::Error| match e {
        tokio_tungstenite::tungstenite::Error::Http(r) => r.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    };
    // No headers.
    let e = Client::connect_url(&sim.ws_url(), None)
        .await
        .err()
        .unwrap();
    assert_eq!(status_of(e), 401);
    // Another key's signature.
    let other = Signer::from_pem(
        "key-a",
        include_bytes!("../../shared/testdata/ed25519-pkcs8.pem"),
    )
    .unwrap();
    let e = Client::connect_url(&sim.ws_url(), Some(&other))
        .await
        .err()
        .unwrap();
    assert_eq!(status_of(e), 401);
    // A stale timestamp.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut req = sim.ws_url().into_client_request().unwrap();
    let h = signer
        .sign_at(
            "GET",
            "/trade-api/ws/v2",
            kalshi_shared::time::now_ms() - 60_000,
        )
        .unwrap();
    for (k, v) in h.pairs() {
        req.headers_mut().insert(k, v.parse().unwrap());
    }
    let e = tokio_tungstenite::connect_async(req).await.err().unwrap();
    assert_eq!(status_of(e), 401);
    // The same key signing the REST path instead of the WS path.
    let mut req = sim.ws_url().into_client_request().unwrap();
    let h = signer.sign("GET", "/trade-api/v2/markets").unwrap();
    for (k, v) in h.pairs() {
        req.headers_mut().insert(k, v.parse().unwrap());
    }
    let e = tokio_tungstenite::connect_async(req).await.err().unwrap();
    assert_eq!(status_of(e), 401);
    let (_, stats) = get_json(&format!("{}/stats", sim.control_url())).await;
    assert_eq!(stats["auth_failures"], 4);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_auth_without_a_key_checks_presence() {
    let mut cfg = SimConfig::for_tests(18, 5);
    cfg.require_auth = true;
    let sim = start(cfg).await;
    let e = Client::connect_url(&sim.ws_url(), None)
        .await
        .err()
        .unwrap();
    assert!(matches!(e, tokio_tungstenite::tungstenite::Error::Http(ref r) if r.status() == 401));
    // Any well-formed signed headers pass (there is no key to check them with).
    let any_key = Signer::from_pem(
        "whoever",
        include_bytes!("../../shared/testdata/ed25519-pkcs8.pem"),
    )
    .unwrap();
    Client::connect_signed(&sim, &any_key).await;
    let (status, body) = get_json(&format!("{}/markets", sim.rest_url())).await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "authentication_error");
    sim.shutdown().await;
}
