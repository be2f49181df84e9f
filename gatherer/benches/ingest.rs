//! Ingest benchmark: messages per second a gatherer stores in its local PostgreSQL with the
//! simulator pushing as fast as asked, against a baseline measured in the same run (raw binary
//! COPY of the same rows into the same table, nothing else in the way); and the gatherer's
//! memory while it follows 1,000 markets.
//!
//! Run: `cargo bench -p gatherer --bench ingest` (release build; about three minutes), or
//! `./dev bench` with the others.
//! The gatherer runs as its own process (the release binary) so its RSS is its own; the
//! simulator and PostgreSQL share the same two cores.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a benchmark binary

use gatherer::config::Validate as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gatherer::config::{FileConfig, Secret};
use gatherer::store::rows::{DeltaRow, Origin, Row};
use kalshi_shared::pg::CopyEncoder;
use kalshi_shared::wire::Side;
use kalshi_testkit::bench::{self, report};
use kalshi_testkit::pg::PgCluster;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_gatherer");
const KEY_PUBLIC: &[u8] = include_bytes!("../../shared/testdata/rsa-public.pem");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Raw COPY of delta rows through the project's encoder: the ceiling for the writers.
async fn copy_baseline(url: &str) -> f64 {
    let cfg = {
        let mut f = FileConfig::default();
        f.store.database_url = Secret(url.into());
        f.store.timescaledb = gatherer::store::TimescaleMode::Off;
        f.api.insecure = true;
        f.validate().unwrap().store
    };
    let store = gatherer::store::Store::open(cfg, &tokio_util::sync::CancellationToken::new())
        .await
        .unwrap();
    store.maintain(kalshi_shared::time::now_ms()).await.unwrap();
    let row = DeltaRow {
        market_ticker: "KXHIGHNY-26NOV22-B53.5".into(),
        ts_ms: Some(kalshi_shared::time::now_ms()),
        side: Side::Yes,
        price: 560_000,
        delta: -5_400,
        occurrence: 0,
        origin: Origin {
            received_ms: kalshi_shared::time::now_ms(),
            conn_epoch: 1,
            sid: 2,
            seq: 3,
        },
    };
    let total = 400_000;
    let batch = 5_000;
    let t0 = Instant::now();
    let mut id = 1_000_000_000i64;
    for _ in 0..total / batch {
        let mut enc = CopyEncoder::new(DeltaRow::FIELDS);
        for _ in 0..batch {
            row.encode(&mut enc, id, kalshi_shared::time::now_ms());
            id += 1;
        }
        let mut tx = store.pool().begin().await.unwrap();
        let mut copy = tx
            .copy_in_raw(&format!(
                "COPY orderbook_deltas ({}) FROM STDIN (FORMAT binary)",
                DeltaRow::COLUMNS
            ))
            .await
            .unwrap();
        copy.send(enc.finish()).await.unwrap();
        copy.finish().await.unwrap();
        tx.commit().await.unwrap();
    }
    let rate = total as f64 / t0.elapsed().as_secs_f64();
    sqlx::query("TRUNCATE orderbook_deltas")
        .execute(store.pool())
        .await
        .unwrap();
    store.pool().close().await;
    rate
}

struct G {
    child: Child,
    metrics: String,
    health: String,
}

impl Drop for G {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl G {
    fn start(sim: &kalshi_sim::SimHandle, db: &str, dir: &std::path::Path, connections: u32) -> G {
        let key = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/testdata/rsa-pkcs8.pem");
        let (hp, mp) = (free_port(), free_port());
        let mut c = FileConfig::default();
        c.kalshi.rest_url = sim.rest_url();
        c.kalshi.ws_url = sim.ws_url();
        c.kalshi.key_id = Some("bench".into());
        c.kalshi.private_key_file = Some(key);
        c.kalshi.rest_rate_per_s = 1000;
        c.kalshi.rest_burst = 1000;
        c.ws.connections = connections;
        c.store.database_url = Secret(db.into());
        c.store.timescaledb = gatherer::store::TimescaleMode::Off;
        c.api.listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        c.api.insecure = true;
        c.http.listen = format!("127.0.0.1:{hp}").parse().unwrap();
        c.http.metrics_listen = format!("127.0.0.1:{mp}").parse().unwrap();
        c.log.level = "warn".into();
        let path = dir.join("gatherer.toml");
        std::fs::write(&path, toml::to_string(&c).unwrap()).unwrap();
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        G {
            child,
            metrics: format!("http://127.0.0.1:{mp}/metrics"),
            health: format!("http://127.0.0.1:{hp}/health"),
        }
    }

    async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = reqwest::get(&self.health).await {
                let v: Value = r.json().await.unwrap_or(Value::Null);
                if v["status"] == "healthy" {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "gatherer not healthy");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn inserted(&self) -> f64 {
        let text = reqwest::get(&self.metrics)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        kalshi_testkit::prom::metric_sum(&text, "writer_inserts_total")
    }

    fn mem_mib(&self, field: &str) -> f64 {
        bench::mem_mib(self.child.id(), field)
    }
}

async fn post(url: String, body: Value) {
    reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
}

fn sim_config(markets: usize) -> kalshi_sim::SimConfig {
    let mut c = kalshi_sim::SimConfig::for_tests(11, markets);
    c.public_key_pem = Some(KEY_PUBLIC.to_vec());
    c.rest_rate = 100_000;
    c.rest_burst = 100_000;
    c.fanout_buffer = 8192;
    c
}

/// Stored records per second with the simulator at `rate`.
async fn ingest(rate: u64, secs: u64) -> (f64, f64, f64, f64) {
    let pg = PgCluster::start_default().unwrap();
    let sim = kalshi_sim::start(sim_config(200)).await.unwrap();
    let dir = std::env::temp_dir().join(format!("gatherer-bench-{}-{rate}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let g = G::start(&sim, &pg.url(), &dir, 4);
    g.wait_healthy().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    post(format!("{}/rate", sim.control_url()), json!({"rate": rate})).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (p0, i0, t0) = (sim.published_pos(), g.inserted().await, Instant::now());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (p1, i1, el) = (
        sim.published_pos(),
        g.inserted().await,
        t0.elapsed().as_secs_f64(),
    );
    post(format!("{}/rate", sim.control_url()), json!({"rate": 0})).await;
    let hwm = g.mem_mib("VmHWM:");
    drop(g);
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
    let published = (p1 - p0) as f64 / el;
    let stored = (i1 - i0) / el;
    (published, stored, stored / published.max(1.0), hwm)
}

async fn memory_at_1000_markets() -> (f64, f64, f64) {
    let pg = PgCluster::start_default().unwrap();
    let sim = kalshi_sim::start(sim_config(1000)).await.unwrap();
    let dir = std::env::temp_dir().join(format!("gatherer-bench-mem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let g = G::start(&sim, &pg.url(), &dir, 8);
    g.wait_healthy().await;
    post(format!("{}/rate", sim.control_url()), json!({"rate": 5000})).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let rss = g.mem_mib("VmRSS:");
    let hwm = g.mem_mib("VmHWM:");
    let markets: Value = reqwest::get(&g.health).await.unwrap().json().await.unwrap();
    post(format!("{}/rate", sim.control_url()), json!({"rate": 0})).await;
    drop(g);
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
    (markets["markets"].as_f64().unwrap_or(0.0), rss, hwm)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    println!("gatherer ingest benchmark (2 cores shared by simulator, gatherer and PostgreSQL)\n");
    let pg = PgCluster::start_default().unwrap();
    let baseline = copy_baseline(&pg.url()).await;
    drop(pg);
    println!(
        "baseline: raw binary COPY of delta rows, 5,000 per transaction: {baseline:.0} rows/s\n"
    );
    println!(
        "| simulator msg/s asked | published msg/s | stored records/s | stored/published | stored/raw COPY |"
    );
    println!("|---|---|---|---|---|");
    let mut best = (0u64, 0.0f64, 0.0f64, 0.0f64);
    // INGEST_RATES=160000 (comma-separated) measures only those.
    let rates: Vec<u64> = std::env::var("INGEST_RATES")
        .ok()
        .map(|v| v.split(',').filter_map(|r| r.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 20_000, 40_000, 80_000, 160_000]);
    for rate in rates {
        let (published, stored, ratio, hwm) = ingest(rate, 15).await;
        println!(
            "| {rate} | {published:.0} | {stored:.0} | {ratio:.3} | {:.3} |",
            stored / baseline
        );
        if stored > best.1 {
            best = (rate, stored, ratio, hwm);
        }
    }
    let (markets, rss, hwm) = memory_at_1000_markets().await;
    println!(
        "\nmemory following {markets:.0} markets on 8 connections at 5,000 msg/s for 30 s: RSS {rss:.1} MiB, peak {hwm:.1} MiB"
    );
    report(bench::Row {
        figure: &format!(
            "gatherer ingest, stored records/s at the simulator's most ({} asked, {:.0}% of it published and stored)",
            best.0,
            best.2 * 100.0
        ),
        value: format!("{:.0}", best.1),
        baseline: format!("raw COPY {baseline:.0}"),
        ratio: format!("{:.2}", best.1 / baseline),
        rss: format!("gatherer {:.0} MiB", best.3),
    });
    report(bench::Row {
        figure: &format!("gatherer memory, {markets:.0} markets at 5,000 msg/s"),
        value: String::new(),
        baseline: String::new(),
        ratio: String::new(),
        rss: format!("gatherer {hwm:.0} MiB"),
    });
}
