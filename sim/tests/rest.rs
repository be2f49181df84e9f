//! REST conformance: paging returns every market, event and trade exactly once (also while the
//! exchange keeps trading), filters and limits behave as documented, errors use the documented
//! bodies, and the token bucket answers 429 then recovers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use kalshi_shared::wire::rest::{GetEventsResponse, GetMarketsResponse, GetTradesResponse};
use kalshi_sim::SimConfig;
use serde_json::Value;

async fn page_all<T: serde::de::DeserializeOwned>(
    first_url: &str,
    items: impl Fn(&T) -> Vec<String>,
    cursor_of: impl Fn(&T) -> String,
) -> Vec<String> {
    page_from(first_url, String::new(), items, cursor_of).await
}

async fn page_from<T: serde::de::DeserializeOwned>(
    first_url: &str,
    start_cursor: String,
    items: impl Fn(&T) -> Vec<String>,
    cursor_of: impl Fn(&T) -> String,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor = start_cursor;
    for _ in 0..10_000 {
        let sep = if first_url.contains('?') { '&' } else { '?' };
        let url = if cursor.is_empty() {
            first_url.to_owned()
        } else {
            format!("{first_url}{sep}cursor={cursor}")
        };
        let r = http().get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        let page: T = r.json().await.unwrap();
        out.extend(items(&page));
        cursor = cursor_of(&page);
        if cursor.is_empty() {
            return out;
        }
    }
    panic!("cursor never ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markets_page_exactly_once_with_filters() {
    let sim = start(SimConfig::for_tests(31, 37)).await;
    let base = sim.rest_url();
    let all = page_all::<GetMarketsResponse>(
        &format!("{base}/markets?limit=7"),
        |p| p.markets.iter().map(|m| m.ticker.clone()).collect(),
        |p| p.cursor.clone(),
    )
    .await;
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 37 + 7, "37 markets plus 7 multivariate combos");
    assert_eq!(unique.len(), all.len(), "each market exactly once");
    // Default page size 100 holds everything; the last cursor is "".
    let (_, v) = get_json(&format!("{base}/markets")).await;
    assert_eq!(v["markets"].as_array().unwrap().len(), 44);
    assert_eq!(v["cursor"], "");

    let excl = market_tickers(&sim, "&mve_filter=exclude").await;
    let only = market_tickers(&sim, "&mve_filter=only").await;
    assert_eq!((excl.len(), only.len()), (37, 7));
    assert!(only.iter().all(|t| t.starts_with("KXMVE")));
    let open = market_tickers(&sim, "&status=open&mve_filter=exclude").await;
    assert_eq!(open.len(), 37);
    assert!(market_tickers(&sim, "&status=settled").await.is_empty());

    // Filters by event, series and a ticker list.
    let (_, m) = get_json(&format!("{base}/markets/{}", excl[0])).await;
    let event = m["market"]["event_ticker"].as_str().unwrap().to_owned();
    let of_event = market_tickers(&sim, &format!("&event_ticker={event}")).await;
    assert!(of_event.contains(&excl[0]));
    let (_, e) = get_json(&format!("{base}/events/{event}")).await;
    let series = e["event"]["series_ticker"].as_str().unwrap().to_owned();
    let of_series = market_tickers(&sim, &format!("&series_ticker={series}")).await;
    assert!(of_event.iter().all(|t| of_series.contains(t)));
    let two = market_tickers(&sim, &format!("&tickers={},{}", excl[1], excl[2])).await;
    assert_eq!(two, vec![excl[1].clone(), excl[2].clone()]);

    // The status vocabulary trap and the other invalid queries: 400 with {code, message}.
    for bad in [
        "status=active",
        "limit=0",
        "limit=1001",
        "limit=ten",
        "cursor=%%%",
        "mve_filter=maybe",
        "event_ticker=A,B",
        "min_created_ts=1&min_close_ts=1",
        "status=closed&min_created_ts=1",
        "min_updated_ts=1",
        "min_updated_ts=1&mve_filter=exclude&status=open",
    ] {
        let (status, v) = get_json(&format!("{base}/markets?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {v}");
        assert_eq!(v["code"], "bad_request");
        assert!(v["message"].as_str().unwrap().len() > 5);
    }
    let (status, v) = get_json(&format!("{base}/markets?status=active")).await;
    assert_eq!(
        (status, v["message"].as_str().unwrap()),
        (400, "invalid status filter")
    );
    let (status, v) = get_json(&format!(
        "{base}/markets?min_updated_ts=1&mve_filter=exclude"
    ))
    .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = get_json(&format!("{base}/markets/NOPE-26JAN01")).await;
    assert_eq!(status, 404);
    assert_eq!(
        (v["code"].as_str(), v["message"].as_str()),
        (Some("not_found"), Some("market not found"))
    );
    let (status, _) = get_json(&format!("{base}/no/such/endpoint")).await;
    assert_eq!(status, 404);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_series() {
    let sim = start(SimConfig::for_tests(32, 30)).await;
    let base = sim.rest_url();
    let events = page_all::<GetEventsResponse>(
        &format!("{base}/events?limit=3"),
        |p| p.events.iter().map(|e| e.event_ticker.clone()).collect(),
        |p| p.cursor.clone(),
    )
    .await;
    let unique: HashSet<&String> = events.iter().collect();
    assert_eq!(unique.len(), events.len());
    assert!(
        events.iter().all(|e| !e.starts_with("KXMVE")),
        "multivariate events are not listed"
    );
    // Every non-combo market belongs to a listed event.
    let (_, v) = get_json(&format!("{base}/events?with_nested_markets=true")).await;
    let nested: usize = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["markets"].as_array().unwrap().len())
        .sum();
    assert_eq!(nested, 30);
    assert_eq!(v["events"].as_array().unwrap().len(), events.len());
    for bad in [
        "limit=201",
        "limit=0",
        "status=active",
        "with_nested_markets=yes",
    ] {
        let (status, _) = get_json(&format!("{base}/events?{bad}")).await;
        assert_eq!(status, 400, "{bad}");
    }
    // /events/{ticker}: nested markets move into the event; the top-level list is then empty.
    let (_, flat) = get_json(&format!("{base}/events/{}", events[0])).await;
    let (_, nest) = get_json(&format!(
        "{base}/events/{}?with_nested_markets=true",
        events[0]
    ))
    .await;
    assert!(!flat["markets"].as_array().unwrap().is_empty());
    assert!(flat["event"].get("markets").is_none());
    assert_eq!(nest["markets"].as_array().unwrap().len(), 0);
    assert_eq!(nest["event"]["markets"], flat["markets"]);
    // Series: all of them (plus the combo series), category filter, single series, 404.
    let (_, s) = get_json(&format!("{base}/series")).await;
    let series = s["series"].as_array().unwrap();
    assert_eq!(series.len(), 5 + 1);
    assert!(
        series.iter().any(|x| x["tags"].is_null()) || series.iter().all(|x| x["tags"].is_array())
    );
    let cat = series[0]["category"].as_str().unwrap();
    let (_, f) = get_json(&format!(
        "{base}/series?category={}",
        cat.replace(' ', "%20")
    ))
    .await;
    assert!(
        f["series"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["category"] == cat)
    );
    let t = series[0]["ticker"].as_str().unwrap();
    let (status, one) = get_json(&format!("{base}/series/{t}")).await;
    assert_eq!((status, one["series"]["ticker"].as_str()), (200, Some(t)));
    assert_eq!(get_json(&format!("{base}/series/KXNOPE")).await.0, 404);
    let (status, st) = get_json(&format!("{base}/exchange/status")).await;
    assert_eq!(
        (status, &st["exchange_active"], &st["trading_active"]),
        (200, &Value::Bool(true), &Value::Bool(true))
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trades_page_newest_first_exactly_once_while_trading_continues() {
    let sim = start(SimConfig::for_tests(33, 15)).await;
    let base = sim.rest_url();
    sim.advance(6000);
    let truth_ids: Vec<String> = truth(&sim, 0, Some("trade"))
        .await
        .iter()
        .map(|r| r["msg"]["trade_id"].as_str().unwrap().to_owned())
        .collect();
    assert!(truth_ids.len() > 300);
    // Page half of the history, trade more, finish paging: the original set exactly once.
    let mut seen = Vec::new();
    let mut times = Vec::new();
    let (_, first) = get_json(&format!("{base}/markets/trades?limit=100")).await;
    let page: GetTradesResponse = serde_json::from_value(first).unwrap();
    seen.extend(page.trades.iter().map(|t| t.trade_id.clone()));
    times.extend(page.trades.iter().map(|t| t.created_ms().unwrap()));
    sim.advance(3000);
    let rest = page_from::<GetTradesResponse>(
        &format!("{base}/markets/trades?limit=77"),
        page.cursor.clone(),
        |p| {
            p.trades
                .iter()
                .map(|t| format!("{}|{}", t.trade_id, t.created_time))
                .collect()
        },
        |p| p.cursor.clone(),
    )
    .await;
    for r in &rest {
        let (id, time) = r.split_once('|').unwrap();
        seen.push(id.to_owned());
        times.push(kalshi_shared::time::parse_rfc3339_ms(time).unwrap());
    }
    let mut newest_first = truth_ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first, "every trade once, newest first");
    assert!(times.windows(2).all(|w| w[0] >= w[1]));

    // REST created_time (microseconds) floors to the WS ts_ms of the same trade.
    let truth_all = truth(&sim, 0, Some("trade")).await;
    let (_, v) = get_json(&format!("{base}/markets/trades?limit=1000")).await;
    let page: GetTradesResponse = serde_json::from_value(v).unwrap();
    let by_id: std::collections::HashMap<&str, i64> = truth_all
        .iter()
        .map(|r| {
            (
                r["msg"]["trade_id"].as_str().unwrap(),
                r["msg"]["ts_ms"].as_i64().unwrap(),
            )
        })
        .collect();
    for t in &page.trades {
        assert_eq!(t.created_ms().unwrap(), by_id[t.trade_id.as_str()]);
        assert_eq!(
            t.created_time.len(),
            "2026-01-01T00:00:00.000000Z".len(),
            "microseconds"
        );
    }

    // Filters: ticker and a time window (seconds, inclusive).
    let ticker = page.trades[0].ticker.clone();
    let of_ticker = page_all::<GetTradesResponse>(
        &format!("{base}/markets/trades?ticker={ticker}&limit=1000"),
        |p| p.trades.iter().map(|t| t.ticker.clone()).collect(),
        |p| p.cursor.clone(),
    )
    .await;
    let expected = truth_all
        .iter()
        .filter(|r| r["msg"]["market_ticker"] == ticker.as_str())
        .count();
    assert_eq!(of_ticker.len(), expected);
    assert!(of_ticker.iter().all(|t| *t == ticker));
    let ts: Vec<i64> = truth_all
        .iter()
        .map(|r| r["msg"]["ts_ms"].as_i64().unwrap())
        .collect();
    let (lo, hi) = (ts[0] / 1000, ts[ts.len() - 1] / 1000);
    let window = page_all::<GetTradesResponse>(
        &format!("{base}/markets/trades?min_ts={lo}&max_ts={hi}&limit=1000"),
        |p| p.trades.iter().map(|t| t.trade_id.clone()).collect(),
        |p| p.cursor.clone(),
    )
    .await;
    let want = ts
        .iter()
        .filter(|t| **t >= lo * 1000 && **t <= hi * 1000)
        .count();
    assert_eq!(window.len(), want);
    let (_, none) = get_json(&format!("{base}/markets/trades?max_ts=1")).await;
    assert_eq!(none["trades"].as_array().unwrap().len(), 0);
    assert_eq!(none["cursor"], "");
    for bad in ["limit=0", "limit=1001", "min_ts=abc", "cursor=bS0x"] {
        assert_eq!(
            get_json(&format!("{base}/markets/trades?{bad}")).await.0,
            400,
            "{bad}"
        );
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orderbook_levels_ascend_and_depth_keeps_the_best() {
    let sim = start(SimConfig::for_tests(34, 5)).await;
    let base = sim.rest_url();
    sim.advance(2000);
    let t = market_tickers(&sim, "&mve_filter=exclude").await[0].clone();
    let (_, full) = get_json(&format!("{base}/markets/{t}/orderbook")).await;
    let (_, book) = sim_book(&sim, &t).await;
    let yes = full["orderbook_fp"]["yes_dollars"].as_array().unwrap();
    assert_eq!(yes.len(), book.yes.len());
    let prices: Vec<kalshi_shared::Price> = yes
        .iter()
        .map(|l| kalshi_shared::Price::parse(l[0].as_str().unwrap()).unwrap())
        .collect();
    assert!(
        prices.windows(2).all(|w| w[0] < w[1]),
        "ascending, best bid last"
    );
    let (_, top2) = get_json(&format!("{base}/markets/{t}/orderbook?depth=2")).await;
    let top = top2["orderbook_fp"]["yes_dollars"].as_array().unwrap();
    assert_eq!(top.as_slice(), &yes[yes.len().saturating_sub(2)..]);
    assert_eq!(
        get_json(&format!("{base}/markets/{t}/orderbook?depth=101"))
            .await
            .0,
        400
    );
    assert_eq!(
        get_json(&format!("{base}/markets/NOPE/orderbook")).await.0,
        404
    );
    // The batch endpoint needs authentication.
    let (status, _) = get_json(&format!("{base}/markets/orderbooks?tickers={t}")).await;
    assert_eq!(status, 401);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_bucket_answers_429_then_recovers() {
    let mut cfg = SimConfig::for_tests(35, 5);
    cfg.rest_rate = 10; // one request (10 tokens) per second
    cfg.rest_burst = 100; // ten requests at once
    let sim = start(cfg).await;
    let url = format!("{}/exchange/status", sim.rest_url());
    // Requests until the first 429: the burst, plus at most what refilled meanwhile.
    let t0 = std::time::Instant::now();
    let mut ok = 0;
    loop {
        let r = http().get(&url).send().await.unwrap();
        if r.status() == 429 {
            assert!(
                r.headers().get("retry-after").is_none(),
                "Kalshi sends no Retry-After"
            );
            assert_eq!(r.text().await.unwrap(), r#"{"error":"too many requests"}"#);
            break;
        }
        assert_eq!(r.status(), 200);
        ok += 1;
        assert!(ok < 1000, "never limited");
    }
    let refilled = t0.elapsed().as_secs() as usize + 1;
    assert!(
        (10..=10 + refilled).contains(&ok),
        "{ok} requests passed in {:?}",
        t0.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        http().get(&url).send().await.unwrap().status(),
        200,
        "refilled"
    );
    let (_, stats) = get_json(&format!("{}/stats", sim.control_url())).await;
    assert!(stats["rest_rate_limited"].as_u64().unwrap() >= 1);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_rest_calls_are_verified() {
    let mut cfg = SimConfig::for_tests(36, 5);
    cfg.public_key_pem = Some(KEY_PUBLIC.to_vec());
    let sim = start(cfg).await;
    let signer = kalshi_shared::auth::Signer::from_pem("key-rest", KEY_PKCS8).unwrap();
    let path = "/trade-api/v2/markets";
    let url = format!("http://{}{path}?limit=2&status=open", sim.addr);
    assert_eq!(http().get(&url).send().await.unwrap().status(), 401);
    // Signed over the path without the query string, as Kalshi's SDK does.
    let h = signer
        .sign("GET", &format!("{path}?limit=2&status=open"))
        .unwrap();
    let mut req = http().get(&url);
    for (k, v) in h.pairs() {
        req = req.header(k, v);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    // A signature for another path is refused.
    let h = signer.sign("GET", "/trade-api/v2/events").unwrap();
    let mut req = http().get(&url);
    for (k, v) in h.pairs() {
        req = req.header(k, v);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "authentication_error");
    sim.shutdown().await;
}

/// Halts: `/exchange/status` goes through every state the truth records, in order (every
/// second halt is maintenance, answered 503 with the status body), and `/exchange/schedule`
/// announces each halt as a maintenance window before it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halts_and_maintenance_are_served_as_the_truth_records_them() {
    let mut cfg = SimConfig::for_tests(41, 10);
    cfg.halt_every_secs = 2;
    cfg.halt_secs = 1;
    let sim = start(cfg).await;
    let base = sim.rest_url();
    let (mut statuses, mut schedules): (Vec<(u16, Value)>, Vec<Value>) = (Vec::new(), Vec::new());
    // Polled (every 50 ms, each state lasting a second) until three halts have ended:
    // two of them maintenance.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while statuses
        .iter()
        .filter(|(_, v)| v["trading_active"] == false)
        .count()
        < 3
        || statuses
            .last()
            .is_some_and(|(_, v)| v["trading_active"] == false)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "three halts in a minute: {statuses:?}"
        );
        sim.advance(5);
        let st = get_json(&format!("{base}/exchange/status")).await;
        if statuses.last() != Some(&st) {
            statuses.push(st);
        }
        let (code, sc) = get_json(&format!("{base}/exchange/schedule")).await;
        assert_eq!(code, 200, "{sc}");
        if schedules.last() != Some(&sc) {
            schedules.push(sc);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let msgs = |records: Vec<Value>| -> Vec<Value> {
        records.into_iter().map(|r| r["msg"].clone()).collect()
    };
    let truth_status = msgs(truth(&sim, 0, Some("exchange_status")).await);
    let truth_schedule = msgs(truth(&sim, 0, Some("exchange_schedule")).await);
    // Seen in order, each state of the truth (the last may have begun after the last poll).
    let seen: Vec<Value> = statuses.iter().map(|(_, v)| v.clone()).collect();
    assert!(truth_status.len() >= 6, "{truth_status:?}");
    assert_eq!(seen[..], truth_status[..seen.len()], "status");
    assert!(
        seen.len() + 1 >= truth_status.len(),
        "{seen:?} vs {truth_status:?}"
    );
    assert_eq!(schedules[..], truth_schedule[..schedules.len()], "schedule");
    for (code, v) in &statuses {
        let (active, trading) = (v["exchange_active"] == true, v["trading_active"] == true);
        assert_eq!(*code, if active { 200 } else { 503 }, "{v}");
        assert!(active || !trading, "{v}");
        assert_eq!(
            v["exchange_estimated_resume_time"].is_string(),
            !trading,
            "{v}"
        );
    }
    assert!(
        statuses.iter().any(|(c, _)| *c == 503),
        "a maintenance: {statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .any(|(c, v)| *c == 200 && v["trading_active"] == false),
        "a halt with the exchange up: {statuses:?}"
    );
    // Each halt's resume time is the end of the window the schedule announced before it.
    for (i, (_, v)) in statuses
        .iter()
        .enumerate()
        .filter(|(_, (_, v))| v["trading_active"] == false)
    {
        let resume = v["exchange_estimated_resume_time"].as_str().unwrap();
        assert!(
            schedules
                .iter()
                .any(|s| s["schedule"]["maintenance_windows"][0]["end_datetime"] == resume),
            "halt {i} resumes at {resume}, which no schedule announced: {schedules:?}"
        );
    }
    sim.shutdown().await;
}
