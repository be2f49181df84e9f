//! What kalshi-sim serves, validated against Kalshi's published schemas by an independent
//! validator (Python `jsonschema`, see `schema/validate.py`): REST responses against OpenAPI
//! 3.10.0 and WebSocket frames against the March 2026 AsyncAPI, adjusted where `kalshi-api.md`
//! is newer; with `--legacy-fields`, frames against the AsyncAPI as published.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use kalshi_sim::SimConfig;
use serde_json::{Value, json};

fn sample(schema: &str, mode: &str, body: Value) -> Value {
    json!({"schema": schema, "mode": mode, "body": body})
}

async fn rest_samples(sim: &kalshi_sim::SimHandle) -> Vec<Value> {
    let base = sim.rest_url();
    let t = market_tickers(sim, "&mve_filter=exclude").await[0].clone();
    let (_, events) = get_json(&format!("{base}/events")).await;
    let e = events["events"][0]["event_ticker"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, series) = get_json(&format!("{base}/series")).await;
    let s = series["series"][0]["ticker"].as_str().unwrap().to_owned();
    let mut out = Vec::new();
    for (path, schema, status) in [
        ("/markets?limit=1000".to_owned(), "GetMarketsResponse", 200),
        (
            "/markets?mve_filter=only".to_owned(),
            "GetMarketsResponse",
            200,
        ),
        (format!("/markets/{t}"), "GetMarketResponse", 200),
        (
            "/markets/trades?limit=1000".to_owned(),
            "GetTradesResponse",
            200,
        ),
        (
            format!("/markets/{t}/orderbook"),
            "GetMarketOrderbookResponse",
            200,
        ),
        ("/events".to_owned(), "GetEventsResponse", 200),
        (
            "/events?with_nested_markets=true".to_owned(),
            "GetEventsResponse",
            200,
        ),
        (format!("/events/{e}"), "GetEventResponse", 200),
        ("/series".to_owned(), "GetSeriesListResponse", 200),
        (format!("/series/{s}"), "GetSeriesResponse", 200),
        ("/exchange/status".to_owned(), "ExchangeStatus", 200),
        (
            "/exchange/schedule".to_owned(),
            "GetExchangeScheduleResponse",
            200,
        ),
        ("/markets/NOPE".to_owned(), "ErrorResponse", 404),
        ("/markets?status=active".to_owned(), "ErrorResponse", 400),
    ] {
        let (code, body) = get_json(&format!("{base}{path}")).await;
        assert_eq!(code, status, "{path}: {body}");
        out.push(sample(&format!("openapi:{schema}"), "newest", body));
    }
    out
}

/// `type:event_type` of a frame.
fn kind_of(text: &str) -> String {
    let v: Value = serde_json::from_str(text).unwrap();
    format!(
        "{}:{}",
        v["type"].as_str().unwrap_or(""),
        v["msg"]["event_type"].as_str().unwrap_or("")
    )
}

/// Frames after the commands, until every kind in `need` has arrived (a condition, not a quiet
/// period: on a loaded machine traffic can pause longer than any quiet time), then whatever
/// follows until the connection goes quiet.
async fn ws_samples(
    sim: &kalshi_sim::SimHandle,
    mode: &str,
    need: &[&str],
) -> (Vec<Value>, std::collections::BTreeSet<String>) {
    let markets = market_tickers(sim, "&mve_filter=exclude").await;
    let mut c = Client::connect(sim).await;
    c.cmd(
        "subscribe",
        json!({"channels": ["orderbook_delta"], "market_tickers": &markets[..markets.len() - 1]}),
    )
    .await;
    c.cmd(
        "subscribe",
        json!({"channels": ["trade", "ticker", "market_lifecycle_v2"]}),
    )
    .await;
    // Acknowledged before any traffic, so the traffic is delivered: one `subscribed` per
    // channel (orderbook_delta, trade, ticker, market_lifecycle_v2).
    let mut texts = Vec::new();
    let mut acks = 0;
    while acks < 4 {
        let text = c
            .next_text(std::time::Duration::from_secs(30))
            .await
            .expect("the four subscriptions are acknowledged");
        if kind_of(&text) == "subscribed:" {
            acks += 1;
        }
        texts.push(text);
    }
    sim.advance(4000);
    // The data frames first: the commands below unsubscribe one of the channels (sid 2, the
    // trades), and on a loaded machine the fan-out of the advanced traffic can still be
    // running when the command arrives.
    let mut seen: std::collections::BTreeSet<String> = texts.iter().map(|t| kind_of(t)).collect();
    let responses = ["unsubscribed:", "ok:", "error:"];
    while !need
        .iter()
        .filter(|k| !responses.contains(k))
        .all(|k| seen.contains(*k))
    {
        match c.next_text(std::time::Duration::from_secs(30)).await {
            Some(text) => {
                seen.insert(kind_of(&text));
                texts.push(text);
            }
            None => break,
        }
    }
    c.cmd(
        "update_subscription",
        json!({"sid": 1, "market_tickers": [&markets[markets.len() - 1]], "action": "add_markets"}),
    )
    .await;
    c.cmd("list_subscriptions", Value::Null).await;
    c.cmd("unsubscribe", json!({"sids": [2]})).await;
    c.cmd("subscribe", json!({"channels": ["nope"]})).await;
    let mut out = Vec::new();
    let mut kinds = std::collections::BTreeSet::new();
    while !need.iter().all(|k| seen.contains(*k)) {
        match c.next_text(std::time::Duration::from_secs(30)).await {
            Some(text) => {
                seen.insert(kind_of(&text));
                texts.push(text);
            }
            None => break,
        }
    }
    while let Some(text) = c.next_text(QUIET).await {
        texts.push(text);
    }
    for text in texts {
        let v: Value = serde_json::from_str(&text).unwrap();
        let kind = v["type"].as_str().unwrap().to_owned();
        let schema = match kind.as_str() {
            "subscribed" => "subscribedResponsePayload",
            "unsubscribed" => "unsubscribedResponsePayload",
            "ok" if v["msg"].is_array() => "listSubscriptionsResponsePayload",
            "ok" => "okResponsePayload",
            "error" => "errorResponsePayload",
            "orderbook_snapshot" => "orderbookSnapshotPayload",
            "orderbook_delta" => "orderbookDeltaPayload",
            "trade" => "tradePayload",
            "ticker" => "tickerPayload",
            "market_lifecycle_v2" => "marketLifecycleV2Payload",
            "event_lifecycle" => "eventLifecyclePayload",
            other => panic!("unexpected frame type {other}"),
        };
        kinds.insert(format!(
            "{kind}:{}",
            v["msg"]["event_type"].as_str().unwrap_or("")
        ));
        out.push(sample(&format!("asyncapi:{schema}"), mode, v));
    }
    (out, kinds)
}

/// The interpreter of the pinned PyPI oracles (`prerequisites.txt`): `$KALSHI_PYTHON`, which
/// `./dev test` sets, else the workspace's `target/venv`.
fn oracle_python() -> PathBuf {
    if let Some(p) = std::env::var_os("KALSHI_PYTHON") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/venv/bin/python3");
    assert!(
        p.is_file(),
        "{} not found: run `./dev check --for test`, which installs the pinned oracles",
        p.display()
    );
    p
}

fn validate(samples: &[Value]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schema");
    let input = std::env::temp_dir().join(format!(
        "kalshi-sim-schema-samples-{}-{}.json",
        std::process::id(),
        samples.len()
    ));
    std::fs::write(&input, serde_json::to_string(samples).unwrap()).unwrap();
    let out = Command::new(oracle_python())
        .arg(dir.join("validate.py"))
        .arg(dir.join("spec/openapi-3.10.0.yaml"))
        .arg(dir.join("spec/asyncapi-2026-03.yaml"))
        .arg(&input)
        .output()
        .expect("run the oracle python (`./dev check --for test` installs it)");
    let _ = std::fs::remove_file(&input);
    assert!(
        out.status.success(),
        "validate.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["checked"].as_u64().unwrap() as usize, samples.len());
    assert_eq!(
        report["failure_count"],
        0,
        "schema violations:\n{}",
        serde_json::to_string_pretty(&report["failures"]).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_and_frames_match_the_published_schemas() {
    let mut cfg = SimConfig::for_tests(51, 20);
    cfg.lifecycle_every = 150;
    let sim = start(cfg).await;
    let need = [
        "subscribed:",
        "unsubscribed:",
        "ok:",
        "error:",
        "orderbook_snapshot:",
        "orderbook_delta:",
        "trade:",
        "ticker:",
        "event_lifecycle:",
        "market_lifecycle_v2:created",
        "market_lifecycle_v2:activated",
        "market_lifecycle_v2:close_date_updated",
        "market_lifecycle_v2:determined",
        "market_lifecycle_v2:settled",
        "market_lifecycle_v2:deactivated",
        "market_lifecycle_v2:metadata_updated",
    ];
    let (mut samples, kinds) = ws_samples(&sim, "newest", &need).await;
    samples.extend(rest_samples(&sim).await);
    for want in need {
        assert!(
            kinds.contains(want),
            "no {want} frame was validated: {kinds:?}"
        );
    }
    assert!(samples.len() > 500, "{}", samples.len());
    validate(&samples);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_frames_match_the_march_2026_asyncapi_as_published() {
    let mut cfg = SimConfig::for_tests(52, 20);
    cfg.lifecycle_every = 150;
    cfg.legacy_fields = true;
    let sim = start(cfg).await;
    let need = ["orderbook_delta:", "trade:", "ticker:", "error:"];
    let (mut samples, _) = ws_samples(&sim, "legacy", &need).await;
    // Every legacy integer is present and agrees with its fixed-point twin.
    for s in &samples {
        let b = &s["body"];
        if b["type"] == "orderbook_delta" {
            let cents = b["msg"]["price"].as_i64().expect("legacy price");
            let dollars =
                kalshi_shared::Price::parse(b["msg"]["price_dollars"].as_str().unwrap()).unwrap();
            assert_eq!(dollars.to_cents(), Some(cents));
            assert!(b["msg"]["delta"].is_i64());
        }
    }
    samples.extend(rest_samples(&sim).await);
    validate(&samples);
    sim.shutdown().await;
}
