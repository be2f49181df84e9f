//! Fan-out benchmark: how many exchange messages per second the simulator delivers to three
//! subscribers at once, and what a subscriber that never reads costs in memory.
//!
//! Run: `cargo bench -p kalshi-sim --bench fanout` (release build; takes about a minute).
//!
//! Each figure is compared with a baseline measured in the same run, as a ratio:
//! - delivery: messages each of three real WebSocket subscribers (parsing every frame) receives
//!   per second, against the rate the exchange engine alone generates with nobody subscribed;
//! - memory: the simulator's peak RSS with an extra subscriber that never reads, against its
//!   peak RSS serving only readers.
//!
//! The simulator runs as its own process (the release `kalshi-sim` binary); the subscribers run
//! here, on the same two cores, as they would in the local stack.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a benchmark binary

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use kalshi_shared::wire::ws::{FrameBody, parse_frame};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_kalshi-sim");

struct Sim {
    child: Child,
    rest: String,
    ws: String,
    control: String,
    dir: std::path::PathBuf,
}

impl Sim {
    fn start(rate: u64, markets: u32, extra: &[&str]) -> Sim {
        let dir =
            std::env::temp_dir().join(format!("kalshi-sim-bench-{}-{rate}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let addr = dir.join("addr.json");
        let _ = std::fs::remove_file(&addr);
        let child = Command::new(BIN)
            .args([
                "--seed",
                "7",
                "--markets",
                &markets.to_string(),
                "--rate",
                &rate.to_string(),
            ])
            .args(["--lifecycle-every", "0", "--log", "warn"])
            .args(extra)
            .arg("--addr-file")
            .arg(&addr)
            .arg("--truth-file")
            .arg(dir.join("truth.jsonl"))
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !addr.exists() {
            assert!(Instant::now() < deadline, "simulator did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let v: Value = serde_json::from_slice(&std::fs::read(&addr).unwrap()).unwrap();
        Sim {
            child,
            rest: v["rest"].as_str().unwrap().to_owned(),
            ws: v["ws"].as_str().unwrap().to_owned(),
            control: v["control"].as_str().unwrap().to_owned(),
            dir,
        }
    }

    fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    async fn stats(&self) -> Value {
        reqwest::get(format!("{}/stats", self.control))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        reqwest::Client::new()
            .post(format!("{}{path}", self.control))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn tickers(&self) -> Vec<String> {
        let v: Value = reqwest::get(format!(
            "{}/markets?limit=1000&mve_filter=exclude",
            self.rest
        ))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
        v["markets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["ticker"].as_str().unwrap().to_owned())
            .collect()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Default)]
struct Counters {
    data: AtomicU64,
    bytes: AtomicU64,
    seq_gaps: AtomicU64,
    errors: AtomicU64,
}

/// A subscriber to everything that parses every frame and checks seq; or, with `read: false`,
/// one that subscribes and then never reads again.
async fn subscriber(
    ws_url: String,
    tickers: Vec<String>,
    counters: Arc<Counters>,
    read: bool,
    stop: Arc<AtomicU64>,
) {
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    let sub = json!({"id": 1, "cmd": "subscribe", "params": {"channels": ["orderbook_delta"], "market_tickers": tickers}});
    ws.send(Message::text(sub.to_string())).await.unwrap();
    let sub = json!({"id": 2, "cmd": "subscribe", "params": {"channels": ["trade", "ticker", "market_lifecycle_v2"]}});
    ws.send(Message::text(sub.to_string())).await.unwrap();
    if !read {
        while stop.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        return;
    }
    let mut last: HashMap<u64, u64> = HashMap::new();
    while stop.load(Ordering::Relaxed) == 0 {
        let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_millis(200), ws.next()).await
        else {
            continue;
        };
        let Message::Text(text) = msg else { continue };
        counters
            .bytes
            .fetch_add(text.len() as u64, Ordering::Relaxed);
        let frame = parse_frame(text.as_str()).unwrap();
        if let (Some(sid), Some(seq)) = (frame.sid, frame.seq)
            && let Some(prev) = last.insert(sid, seq)
            && seq != prev + 1
        {
            counters.seq_gaps.fetch_add(1, Ordering::Relaxed);
        }
        match frame.body {
            FrameBody::OrderbookDelta(_)
            | FrameBody::Trade(_)
            | FrameBody::Ticker(_)
            | FrameBody::MarketLifecycle(_)
            | FrameBody::EventLifecycle(_) => {
                counters.data.fetch_add(1, Ordering::Relaxed);
            }
            FrameBody::Error(_) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

struct Run {
    published_per_s: f64,
    delivered_per_s: Vec<f64>,
    mib_per_s: f64,
    seq_gaps: u64,
    errors: u64,
    peak_rss_mib: f64,
}

async fn run(rate: u64, readers: usize, stalled: usize, secs: u64) -> Run {
    let sim = Sim::start(rate, 200, &["--fanout-buffer", "1024"]);
    let tickers = sim.tickers().await;
    sim.post("/pause", json!({})).await;
    let stop = Arc::new(AtomicU64::new(0));
    let mut counters = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..readers + stalled {
        let c = Arc::new(Counters::default());
        counters.push(c.clone());
        tasks.push(tokio::spawn(subscriber(
            sim.ws.clone(),
            tickers.clone(),
            c,
            i < readers,
            stop.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let p0 = sim.stats().await["published_pos"].as_u64().unwrap();
    let d0: Vec<u64> = counters
        .iter()
        .map(|c| c.data.load(Ordering::Relaxed))
        .collect();
    let b0: u64 = counters
        .iter()
        .map(|c| c.bytes.load(Ordering::Relaxed))
        .sum();
    let t0 = Instant::now();
    sim.post("/resume", json!({})).await;
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let elapsed = t0.elapsed().as_secs_f64();
    let p1 = sim.stats().await["published_pos"].as_u64().unwrap();
    let d1: Vec<u64> = counters
        .iter()
        .map(|c| c.data.load(Ordering::Relaxed))
        .collect();
    let b1: u64 = counters
        .iter()
        .map(|c| c.bytes.load(Ordering::Relaxed))
        .sum();
    let peak = sim.peak_rss_kib();
    stop.store(1, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    Run {
        published_per_s: (p1 - p0) as f64 / elapsed,
        delivered_per_s: (0..readers)
            .map(|i| (d1[i] - d0[i]) as f64 / elapsed)
            .collect(),
        mib_per_s: (b1 - b0) as f64 / elapsed / (1 << 20) as f64,
        seq_gaps: counters
            .iter()
            .map(|c| c.seq_gaps.load(Ordering::Relaxed))
            .sum(),
        errors: counters[..readers]
            .iter()
            .map(|c| c.errors.load(Ordering::Relaxed))
            .sum(),
        peak_rss_mib: peak as f64 / 1024.0,
    }
}

/// The engine alone: messages generated per second by /advance with nobody subscribed.
async fn engine_baseline() -> f64 {
    let sim = Sim::start(0, 200, &[]);
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < Duration::from_secs(5) {
        n += sim.post("/advance", json!({"messages": 20_000})).await["published"]
            .as_u64()
            .unwrap();
    }
    n as f64 / t0.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let secs = 10;
    println!("kalshi-sim fan-out benchmark (2 cores, 200 markets, 3 subscribers to everything)\n");
    let baseline = engine_baseline().await;
    println!("baseline: engine alone generates {baseline:>10.0} msg/s (no subscribers)\n");
    println!(
        "| target msg/s | published msg/s | min delivered per subscriber | delivered/baseline | MiB/s to clients | seq gaps | errors | sim peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut readers_rss = 0.0;
    for rate in [20_000u64, 40_000, 80_000, 160_000] {
        let r = run(rate, 3, 0, secs).await;
        let min = r
            .delivered_per_s
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min);
        println!(
            "| {rate} | {:.0} | {min:.0} | {:.3} | {:.1} | {} | {} | {:.1} |",
            r.published_per_s,
            min / baseline,
            r.mib_per_s,
            r.seq_gaps,
            r.errors,
            r.peak_rss_mib
        );
        if rate == 20_000 {
            readers_rss = r.peak_rss_mib;
            assert!(
                min >= 19_000.0,
                "each subscriber must receive about 20,000 msg/s, got {min:.0}"
            );
            assert_eq!(r.seq_gaps + r.errors, 0, "no loss at the target rate");
        }
    }
    let r = run(20_000, 3, 1, secs).await;
    let min = r
        .delivered_per_s
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min);
    println!(
        "\nwith a 4th subscriber that never reads: readers still get {min:.0} msg/s; sim peak RSS {:.1} MiB = {:.2} x the readers-only run ({readers_rss:.1} MiB)",
        r.peak_rss_mib,
        r.peak_rss_mib / readers_rss
    );
}
