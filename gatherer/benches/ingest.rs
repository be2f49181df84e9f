//! Ingest benchmark: messages per second a gatherer stores in its local PostgreSQL with the
//! simulator pushing as fast as asked, against a baseline measured in the same run (raw binary
//! COPY of the very rows it stored into the same schema, nothing else in the way); and the
//! gatherer's memory while it follows 1,000 markets.
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
use gatherer::store::rows::{DeltaRow, Row};
use kalshi_testkit::bench::{self, report};
use kalshi_testkit::pg::PgCluster;
use serde_json::{Value, json};

/// The simulator runs in this process: the allocator its binary uses (sim/src/main.rs).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BIN: &str = env!("CARGO_BIN_EXE_gatherer");
const KEY_PUBLIC: &[u8] = include_bytes!("../../shared/testdata/rsa-public.pem");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The append-only tables a gatherer fills, with their COPY columns.
fn tables() -> [(&'static str, &'static str); 5] {
    use gatherer::store::rows::{LifecycleRow, SnapshotRow, TickerRow, TradeRow};
    [
        ("orderbook_deltas", DeltaRow::COLUMNS),
        ("tickers", TickerRow::COLUMNS),
        ("trades", TradeRow::COLUMNS),
        ("orderbook_snapshots", SnapshotRow::COLUMNS),
        ("lifecycle", LifecycleRow::COLUMNS),
    ]
}

/// The baseline: raw binary COPY of the very rows the gatherer stored (every append-only
/// table, its own mix of deltas, tickers, trades, snapshots and lifecycle), into a fresh
/// database with the gatherer's schema, in transactions of `batch` rows (the gatherer's
/// `store.batch_rows`), nothing else in the way. Trades go straight in (no staging, no merge):
/// the ceiling for the writers. Returns (rows, rows/s).
async fn same_rows_baseline(pg: &PgCluster, gatherer_url: &str, batch: i64) -> (u64, f64) {
    use futures_util::TryStreamExt as _;
    use sqlx::Connection as _;
    let mut src = sqlx::PgConnection::connect(gatherer_url).await.unwrap();
    let mut chunks: Vec<(&str, &str, Vec<u8>)> = Vec::new();
    let mut rows = 0u64;
    for (table, cols) in tables() {
        let (lo, hi): (Option<i64>, Option<i64>) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT min(id), max(id) FROM {table}"
        )))
        .fetch_one(&mut src)
        .await
        .unwrap();
        let (Some(lo), Some(hi)) = (lo, hi) else {
            continue;
        };
        let mut from = lo;
        while from <= hi {
            let sql = format!(
                "COPY (SELECT {cols} FROM {table} WHERE id >= {from} AND id < {} ORDER BY id) TO STDOUT (FORMAT binary)",
                from + batch
            );
            let mut out = Vec::new();
            let mut stream = src.copy_out_raw(&sql).await.unwrap();
            while let Some(b) = stream.try_next().await.unwrap() {
                out.extend_from_slice(&b);
            }
            drop(stream);
            chunks.push((table, cols, out));
            from += batch;
        }
        let n: i64 =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
                .fetch_one(&mut src)
                .await
                .unwrap();
        rows += n as u64;
    }
    src.close().await.unwrap();
    let url = pg.create_database("baseline").unwrap();
    let cfg = {
        let mut f = FileConfig::default();
        f.store.database_url = Secret(url);
        f.store.timescaledb = gatherer::store::TimescaleMode::Off;
        f.api.insecure = true;
        f.validate().unwrap().store
    };
    let store = gatherer::store::Store::open(cfg, &tokio_util::sync::CancellationToken::new())
        .await
        .unwrap();
    store.maintain(kalshi_shared::time::now_ms()).await.unwrap();
    let t0 = Instant::now();
    for (table, cols, payload) in chunks {
        let mut tx = store.pool().begin().await.unwrap();
        let mut copy = tx
            .copy_in_raw(&format!("COPY {table} ({cols}) FROM STDIN (FORMAT binary)"))
            .await
            .unwrap();
        copy.send(payload).await.unwrap();
        copy.finish().await.unwrap();
        tx.commit().await.unwrap();
    }
    let rate = rows as f64 / t0.elapsed().as_secs_f64();
    store.pool().close().await;
    (rows, rate)
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

struct Run {
    published: f64,
    stored: f64,
    hwm: f64,
    baseline_rows: u64,
    baseline: f64,
}

/// Stored records per second with the simulator at `rate`, and the same-rows baseline.
async fn ingest(rate: u64, secs: u64) -> Run {
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
    let batch = FileConfig::default().store.batch_rows as i64;
    let (baseline_rows, baseline) = same_rows_baseline(&pg, &pg.url(), batch).await;
    Run {
        published: (p1 - p0) as f64 / el,
        stored: (i1 - i0) / el,
        hwm,
        baseline_rows,
        baseline,
    }
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
    println!(
        "baseline: raw binary COPY of the very rows the gatherer stored in that run (every append-only table,"
    );
    println!(
        "trades straight in), into a fresh database of the gatherer's schema, store.batch_rows rows per transaction\n"
    );
    println!(
        "| simulator msg/s asked | published msg/s | stored records/s | stored/published | baseline rows/s (rows) | stored/raw COPY |"
    );
    println!("|---|---|---|---|---|---|");
    let mut best: Option<(u64, Run)> = None;
    // INGEST_RATES=160000 (comma-separated) measures only those.
    let rates: Vec<u64> = std::env::var("INGEST_RATES")
        .ok()
        .map(|v| v.split(',').filter_map(|r| r.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![20_000, 40_000, 80_000, 120_000, 160_000]);
    for rate in rates {
        let r = ingest(rate, 15).await;
        println!(
            "| {rate} | {:.0} | {:.0} | {:.3} | {:.0} ({}) | {:.3} |",
            r.published,
            r.stored,
            r.stored / r.published.max(1.0),
            r.baseline,
            r.baseline_rows,
            r.stored / r.baseline
        );
        if best.as_ref().is_none_or(|(_, b)| r.stored > b.stored) {
            best = Some((rate, r));
        }
    }
    let (rate, best) = best.expect("at least one rate");
    let (markets, rss, hwm) = memory_at_1000_markets().await;
    println!(
        "\nmemory following {markets:.0} markets on 8 connections at 5,000 msg/s for 30 s: RSS {rss:.1} MiB, peak {hwm:.1} MiB"
    );
    report(bench::Row {
        figure: &format!(
            "gatherer ingest, stored records/s at the simulator's most ({rate} asked, {:.0}% of it published and stored)",
            best.stored / best.published.max(1.0) * 100.0
        ),
        value: format!("{:.0}", best.stored),
        baseline: format!("raw COPY of the same rows {:.0}", best.baseline),
        ratio: format!("{:.2}", best.stored / best.baseline),
        rss: format!("gatherer {:.0} MiB", best.hwm),
    });
    report(bench::Row {
        figure: &format!("gatherer memory, {markets:.0} markets at 5,000 msg/s"),
        value: String::new(),
        baseline: String::new(),
        ratio: String::new(),
        rss: format!("gatherer {hwm:.0} MiB"),
    });
}
