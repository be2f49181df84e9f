//! `kalshi-stack up --exchange <url>` as a new user runs it on one machine: against a simulator
//! started on its own and used as a remote exchange (the stack gets only its REST base and an
//! API key, so it uses nothing of it but its public REST and WebSocket API). Stopped and
//! started again in the middle on the same data directory, then judged from outside through
//! the one oracle against that exchange's ground truth, and by the cross-check a real exchange
//! gets (the gatherers against production).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::time::{Duration, Instant};

use kalshi_stack::audit::{self, AuditOptions};
use kalshi_stack::exchange::Exchange;
use kalshi_stack::{Options, RemoteSim, Stack, default_bin_dir};
use serde_json::json;

const PRIVATE: &[u8] = include_bytes!("../../shared/testdata/rsa-pkcs8.pem");
const PUBLIC: &[u8] = include_bytes!("../../shared/testdata/rsa-public.pem");

async fn rate(sim: &RemoteSim, rate: u64) {
    kalshi_stack::post(&format!("{}/rate", sim.control), json!({ "rate": rate }))
        .await
        .unwrap();
}

async fn down(s: Stack) {
    let codes = tokio::task::spawn_blocking(move || s.down()).await.unwrap();
    for (name, code) in codes {
        assert_eq!(code, Some(0), "{name} stops cleanly");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_on_a_remote_exchange_resumes_after_a_restart_and_production_is_exact() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let root = std::env::temp_dir().join(format!("kalshi-e2e-exchange-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let keys = root.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(keys.join("private.pem"), PRIVATE).unwrap();
    std::fs::write(keys.join("public.pem"), PUBLIC).unwrap();
    let mut sim = RemoteSim::start(
        &default_bin_dir(),
        &root.join("exchange"),
        (731, 16, 1500),
        "remote-key",
        &keys.join("public.pem"),
    )
    .await
    .unwrap();
    // As a user gives it: the REST base and the key; the WebSocket URL is derived.
    let exchange =
        Exchange::resolve(&sim.rest, None, "remote-key", keys.join("private.pem")).unwrap();
    assert_eq!(exchange.ws_url, sim.ws, "paired as Kalshi's hosts are");

    let data = root.join("stack");
    let mut o = Options::new(data.clone(), default_bin_dir());
    o.exchange = Some(exchange);
    o.archive_period = Duration::from_secs(5);
    let s = Stack::up(o.clone()).await.unwrap();
    assert!(s.sim.is_none(), "no simulator of its own");
    assert!(s.endpoints.sim_control.is_empty());
    assert_eq!(s.endpoints.exchange.as_deref(), Some(sim.rest.as_str()));
    let e = s.set_rate(10).await.unwrap_err().to_string();
    assert!(e.contains("no simulator"), "{e}");
    rate(&sim, 200).await;
    tokio::time::sleep(Duration::from_secs(6)).await;

    // Stopped in the middle; the exchange goes on. The data directory stays.
    down(s).await;
    assert!(data.join("stack.json").is_file() && data.join("pg/production").is_dir());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut s = Stack::up(o).await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    rate(&sim, 0).await;
    s.wait_settled(Duration::from_secs(240)).await.unwrap();

    // Judged from outside, against the exchange's own truth.
    let opts = AuditOptions {
        settled: true,
        ..AuditOptions::default()
    };
    let prod = s.production_direct_url();
    let v = audit::run(&sim.control, &prod, &s.endpoints.gatherers, &opts)
        .await
        .unwrap();
    eprint!("{}", v.table());
    assert!(v.ok, "{}", v.table());
    let stream = |n: &str| v.stream(n).unwrap().clone();
    let (t, d, k, l) = (
        stream("trades"),
        stream("orderbook_deltas"),
        stream("tickers"),
        stream("lifecycle"),
    );
    assert!(
        t.expected > 300 && d.expected > 1000 && l.expected > 0,
        "{}",
        v.table()
    );
    assert_eq!(
        t.missing(),
        0,
        "trades of the stop are backfilled from REST"
    );
    // Deltas and tickers of the stop are lost for good (the exchange does not replay them):
    // every gatherer declared the window, and nothing outside it is missing.
    assert!(
        d.declared > 0,
        "the stop's window is declared: {}",
        v.table()
    );
    assert_eq!(
        d.missing(),
        d.declared + d.before_subscription,
        "{}",
        v.table()
    );
    assert_eq!(
        k.missing(),
        k.declared + k.before_subscription,
        "{}",
        v.table()
    );

    // What a real exchange gets instead: the gatherers against production.
    let x = kalshi_stack::crosscheck::run(&prod, &s.endpoints.gatherers, &opts)
        .await
        .unwrap();
    eprint!("{}", x.table());
    assert!(x.ok() && !x.inconclusive(), "{}", x.table());
    let held = |n: &str| x.streams.iter().find(|s| s.stream == n).unwrap().held;
    assert_eq!(held("trades"), t.present, "{}", x.table());

    // The archive lands in the data directory, in the S3 layout.
    let trades = data.join("archive/stream=trades");
    let deadline = Instant::now() + Duration::from_secs(90);
    while !has_parquet(&trades) {
        assert!(
            Instant::now() < deadline,
            "no Parquet under {}",
            trades.display()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    down(s).await;
    sim.service.terminate(Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(&root);
}

fn has_parquet(dir: &std::path::Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.filter_map(Result::ok).any(|e| {
        let p = e.path();
        if p.is_dir() {
            has_parquet(&p)
        } else {
            p.extension().is_some_and(|x| x == "parquet")
        }
    })
}
