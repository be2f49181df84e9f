//! Test world: the simulator over real sockets, three (or more) real gatherers each with its own
//! database, a production PostgreSQL cluster, and the deduplicator in-process or as a binary.
//! Production is compared with the simulator's ground truth and with the gatherers' stores.

#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)] // shared by several test binaries

#[path = "../../../gatherer/tests/common/mod.rs"]
pub mod g;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use deduplicator::config::{FileConfig, GathererEndpoint, Secret};
use kalshi_proto::GathererClient;
use kalshi_proto::gatherer::v1 as pb;
use kalshi_testkit::pg::PgCluster;
use kalshi_sim::SimHandle;
use serde_json::Value;
use sqlx::Row as _;
use sqlx::postgres::PgPool;

pub use g::{init, metric_sum, post, sim_config, truth, truth_delta_key};

/// A port free right now (for services that must come back on the same address).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A gatherer on its own runtime, so it can be killed abruptly (all tasks dropped, sockets
/// closed, nothing flushed), as SIGKILL would.
pub struct GProc {
    rt: Option<tokio::runtime::Runtime>,
    pub g: Option<gatherer::Gatherer>,
    pub file: gatherer::config::FileConfig,
    pub instance_id: String,
}

impl GProc {
    pub async fn start(file: gatherer::config::FileConfig) -> GProc {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let cfg = file.clone().validate().unwrap();
        let g = rt.spawn(gatherer::start(cfg)).await.unwrap().unwrap();
        let instance_id = g.instance_id.clone();
        GProc {
            rt: Some(rt),
            g: Some(g),
            file,
            instance_id,
        }
    }

    pub fn grpc(&self) -> String {
        format!("http://{}", self.file.api.listen)
    }

    pub async fn client(&self) -> GathererClient<tonic::transport::Channel> {
        GathererClient::connect(self.grpc())
            .await
            .unwrap()
            .max_decoding_message_size(64 << 20)
    }

    /// Gone at once, like SIGKILL.
    pub fn kill(&mut self) {
        self.g.take();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }

    /// Graceful stop.
    pub async fn stop(&mut self) {
        if let (Some(g), Some(rt)) = (self.g.take(), self.rt.as_ref()) {
            rt.spawn(g.stop()).await.unwrap().unwrap();
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }

    pub async fn wait_healthy(&self, within: Duration) {
        let addr = self.g.as_ref().unwrap().http_addr;
        let deadline = Instant::now() + within;
        loop {
            if let Ok(r) = reqwest::get(format!("http://{addr}/health")).await
                && r.status().is_success()
                && r.json::<Value>()
                    .await
                    .is_ok_and(|h| h["status"] == "healthy")
            {
                return;
            }
            assert!(Instant::now() < deadline, "gatherer not healthy");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn status(&self) -> pb::StatusResponse {
        self.client()
            .await
            .status(pb::StatusRequest {})
            .await
            .unwrap()
            .into_inner()
    }
}

impl Drop for GProc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub struct World {
    pub sim: SimHandle,
    pub gpg: PgCluster,
    pub gatherers: Vec<GProc>,
    pub prod: PgCluster,
    /// Markets every gatherer had a snapshot of before any traffic.
    pub initial: HashSet<String>,
    /// Gatherers that were ever stopped or killed (their stores are no longer the reference).
    pub disturbed: HashSet<String>,
}

pub fn gatherer_file(
    id: &str,
    sim: &SimHandle,
    db_url: &str,
    port: u16,
) -> gatherer::config::FileConfig {
    let mut f = g::gatherer_config(id, sim, db_url);
    f.api.listen = format!("127.0.0.1:{port}").parse().unwrap();
    f.ws.connections = 2;
    f
}

impl World {
    /// The simulator (idle), `n` gatherers subscribed to every market, production empty.
    pub async fn start(seed: u64, markets: usize, n: usize) -> World {
        init();
        let mut simc = sim_config(seed, markets);
        simc.lifecycle_every = 2000;
        let sim = kalshi_sim::start(simc).await.unwrap();
        let gpg = PgCluster::start_default().unwrap();
        let prod = PgCluster::start_default().unwrap();
        let mut gatherers = Vec::new();
        for i in 1..=n {
            let id = format!("g{i}");
            let url = gpg.create_database(&id).unwrap();
            gatherers.push(GProc::start(gatherer_file(&id, &sim, &url, free_port())).await);
        }
        for g in &gatherers {
            g.wait_healthy(Duration::from_secs(60)).await;
        }
        let mut w = World {
            sim,
            gpg,
            gatherers,
            prod,
            initial: HashSet::new(),
            disturbed: HashSet::new(),
        };
        w.initial = w.snapshotted_by_all().await;
        w
    }

    async fn snapshotted_by_all(&self) -> HashSet<String> {
        let mut all: Option<HashSet<String>> = None;
        for g in &self.gatherers {
            let recs = g::read_all(&mut g.client().await, pb::Stream::OrderbookSnapshots).await;
            let s: HashSet<String> = recs
                .iter()
                .filter_map(|r| match r.body.as_ref()? {
                    pb::record::Body::Snapshot(s) => Some(s.market_ticker.clone()),
                    _ => None,
                })
                .collect();
            all = Some(match all {
                None => s,
                Some(a) => a.intersection(&s).cloned().collect(),
            });
        }
        all.unwrap_or_default()
    }

    /// Deduplicator settings for this world: fast timings, ports 0.
    pub fn dedup_file(&self, prod_url: &str) -> FileConfig {
        let mut c = FileConfig {
            gatherers: self
                .gatherers
                .iter()
                .map(|g| GathererEndpoint {
                    id: g.file.gatherer_id.clone(),
                    endpoint: g.grpc(),
                })
                .collect(),
            ..Default::default()
        };
        c.production.database_url = Secret(prod_url.into());
        c.production.connect_timeout = Duration::from_secs(2);
        c.production.op_timeout = Duration::from_secs(4);
        c.production.idle_check_after = Duration::from_millis(500);
        c.production.retry_initial = Duration::from_millis(50);
        c.production.retry_max = Duration::from_millis(1000);
        c.production.unhealthy_after = Duration::from_secs(3);
        c.sink.batch_interval = Duration::from_millis(50);
        c.sink.batch_rows = 2000;
        c.sources.connect_timeout = Duration::from_secs(2);
        c.sources.reconnect_initial = Duration::from_millis(50);
        c.sources.reconnect_max = Duration::from_millis(1000);
        c.sources.silence_timeout = Duration::from_secs(5);
        c.http.listen = "127.0.0.1:0".parse().unwrap();
        c.http.metrics_listen = "127.0.0.1:0".parse().unwrap();
        c
    }

    pub async fn rate(&self, rate: u64) {
        post(
            &format!("{}/rate", self.sim.control_url()),
            serde_json::json!({"rate": rate}),
        )
        .await;
    }

    /// Waits until every running gatherer's heads stop moving for `quiet`.
    pub async fn settle(&self, quiet: Duration) {
        let mut last = Vec::new();
        let mut since = Instant::now();
        loop {
            let mut heads = Vec::new();
            for g in self.gatherers.iter().filter(|g| g.g.is_some()) {
                heads.extend(g.status().await.streams.iter().map(|s| s.head));
            }
            if heads != last {
                last = heads;
                since = Instant::now();
            } else if since.elapsed() >= quiet {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until production's cursors reach every running gatherer's heads.
    pub async fn wait_synced(&self, pool: &PgPool, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let mut behind = Vec::new();
            let cursors = prod_cursors(pool).await;
            for g in self.gatherers.iter().filter(|g| g.g.is_some()) {
                let st = g.status().await;
                for s in &st.streams {
                    let name = deduplicator::records::Stream::from_pb(s.stream)
                        .unwrap()
                        .table();
                    let have = cursors.get(&(g.file.gatherer_id.clone(), name.to_owned()));
                    let ok = match have {
                        Some((c, inst)) => *inst == st.instance_id && *c >= s.head,
                        None => s.head == 0,
                    };
                    if !ok {
                        behind.push(format!(
                            "{}:{name} {:?} < {}",
                            g.file.gatherer_id,
                            have.map(|h| h.0),
                            s.head
                        ));
                    }
                }
            }
            if behind.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "production not synced: {behind:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

pub async fn prod_cursors(pool: &PgPool) -> HashMap<(String, String), (i64, String)> {
    let rows =
        match sqlx::query("SELECT gatherer_id, stream, cursor, instance_id FROM sync_cursors")
            .fetch_all(pool)
            .await
        {
            Ok(r) => r,
            Err(_) => return HashMap::new(), // not migrated yet
        };
    rows.iter()
        .map(|r| {
            (
                (r.get::<String, _>(0), r.get::<String, _>(1)),
                (r.get::<i64, _>(2), r.get::<String, _>(3)),
            )
        })
        .collect()
}

pub async fn pool(url: &str) -> PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(url)
        .await
        .unwrap()
}

/// Starts the deduplicator in-process.
pub async fn start_dedup(file: FileConfig) -> deduplicator::Deduplicator {
    kalshi_shared::telemetry::init_logging(
        &std::env::var("TEST_LOG").unwrap_or_else(|_| "deduplicator=info,warn".into()),
        kalshi_shared::telemetry::LogFormat::Text,
    );
    deduplicator::start(file.validate().unwrap()).await.unwrap()
}

pub async fn dedup_metrics(d: &deduplicator::Deduplicator) -> String {
    reqwest::get(format!("http://{}/metrics", d.metrics_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

pub async fn dedup_health(addr: std::net::SocketAddr) -> (u16, Value) {
    let r = reqwest::get(format!("http://{addr}/health")).await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// What production holds compared with the truth; panics on any difference.
#[derive(Debug, Default)]
pub struct Exact {
    pub trades: usize,
    pub deltas: usize,
    pub tickers: usize,
    pub lifecycle: usize,
    pub markets: usize,
    pub snapshots: usize,
    pub gaps: usize,
}

/// Production equals the ground truth: every trade exactly once with the exchange's values;
/// for markets every gatherer saw from the start, the delta multiset exactly (elsewhere a
/// sub-multiset); tickers and lifecycle exactly the union of what the gatherers hold (and
/// nothing the exchange did not publish); the latest version of every market as the
/// exchange's REST has it; every gatherer's gaps and snapshots; no duplicate anywhere.
pub async fn assert_exact(w: &World, pool: &PgPool) -> Exact {
    let mut out = Exact::default();
    // Trades.
    let truth_trades: HashMap<String, Value> = truth(&w.sim, "trade")
        .await
        .into_iter()
        .map(|r| {
            (
                r["msg"]["trade_id"].as_str().unwrap().to_owned(),
                r["msg"].clone(),
            )
        })
        .collect();
    let rows = sqlx::query("SELECT trade_id, market_ticker, yes_price, no_price, count, ts_ms, is_block_trade FROM trades")
        .fetch_all(pool)
        .await
        .unwrap();
    let mut seen = HashSet::new();
    for r in &rows {
        let id: String = r.get(0);
        assert!(seen.insert(id.clone()), "trade {id} twice in production");
        let m = truth_trades
            .get(&id)
            .unwrap_or_else(|| panic!("trade {id} is not in the truth"));
        assert_eq!(
            r.get::<String, _>(1),
            m["market_ticker"].as_str().unwrap(),
            "{id}"
        );
        assert_eq!(
            r.get::<i64, _>(2),
            kalshi_shared::Price::parse(m["yes_price_dollars"].as_str().unwrap())
                .unwrap()
                .raw(),
            "{id} yes price"
        );
        assert_eq!(
            r.get::<i64, _>(4),
            kalshi_shared::Quantity::parse(m["count_fp"].as_str().unwrap())
                .unwrap()
                .raw(),
            "{id} count"
        );
        assert_eq!(r.get::<i64, _>(5), m["ts_ms"].as_i64().unwrap(), "{id} ts");
        assert_eq!(
            r.get::<bool, _>(6),
            m["is_block_trade"].as_bool().unwrap(),
            "{id}"
        );
    }
    let missing: Vec<&String> = truth_trades.keys().filter(|k| !seen.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "{} trades missing from production, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(3)]
    );
    out.trades = rows.len();

    // Deltas: multiset per key.
    let mut truth_d: HashMap<g::DeltaKey, i64> = HashMap::new();
    for r in truth(&w.sim, "orderbook_delta").await {
        *truth_d.entry(truth_delta_key(&r)).or_default() += 1;
    }
    let rows = sqlx::query("SELECT market_ticker, ts_ms, side, price, delta, occurrence, gatherer_key FROM orderbook_deltas")
        .fetch_all(pool)
        .await
        .unwrap();
    let mut prod_d: HashMap<g::DeltaKey, i64> = HashMap::new();
    let mut occ: HashMap<g::DeltaKey, Vec<i64>> = HashMap::new();
    for r in &rows {
        assert_eq!(r.get::<String, _>(6), "", "every simulator delta has ts_ms");
        let k: g::DeltaKey = (
            r.get(0),
            r.get(1),
            i32::from(r.get::<i16, _>(2)),
            r.get(3),
            r.get(4),
        );
        *prod_d.entry(k.clone()).or_default() += 1;
        occ.entry(k).or_default().push(r.get(5));
    }
    for (k, mut o) in occ {
        o.sort_unstable();
        assert!(
            o.iter().enumerate().all(|(i, x)| *x == i as i64),
            "{k:?}: occurrences {o:?} are not 0..n"
        );
    }
    for (k, n) in &prod_d {
        let t = truth_d.get(k).copied().unwrap_or(0);
        assert!(*n <= t, "delta {k:?} stored {n} times, published {t}");
    }
    for (k, n) in &truth_d {
        if w.initial.contains(&k.0) {
            assert_eq!(
                prod_d.get(k).copied().unwrap_or(0),
                *n,
                "delta {k:?} of a market subscribed throughout"
            );
        }
    }
    out.deltas = rows.len();

    // Tickers and lifecycle: the union of what the running gatherers hold.
    let mut union_t = HashSet::new();
    let mut union_l = HashSet::new();
    let mut snapshots = 0;
    let mut gap_keys = HashSet::new();
    let mut latest: HashMap<String, (i64, i64)> = HashMap::new();
    for gp in w.gatherers.iter().filter(|g| g.g.is_some()) {
        let mut c = gp.client().await;
        for r in g::read_all(&mut c, pb::Stream::Tickers).await {
            if let Some(pb::record::Body::Ticker(t)) = r.body {
                union_t.insert((
                    t.market_ticker,
                    t.ts_ms,
                    t.content_hash,
                    i64::from(t.occurrence),
                ));
            }
        }
        for r in g::read_all(&mut c, pb::Stream::Lifecycle).await {
            if let Some(pb::record::Body::Lifecycle(l)) = r.body {
                union_l.insert((l.ticker, l.event_type, l.content_hash));
            }
        }
        snapshots += g::read_all(&mut c, pb::Stream::OrderbookSnapshots)
            .await
            .len();
        for r in g::read_all(&mut c, pb::Stream::Gaps).await {
            if let Some(pb::record::Body::Gap(x)) = r.body {
                gap_keys.insert((gp.file.gatherer_id.clone(), gp.instance_id.clone(), x.id));
            }
        }
        for r in g::read_all(&mut c, pb::Stream::Markets).await {
            if let Some(pb::record::Body::Registry(v)) = r.body {
                let e = latest
                    .entry(v.ticker)
                    .or_insert((v.updated_ms, v.observed_ms));
                *e = (*e).max((v.updated_ms, v.observed_ms));
            }
        }
    }
    let prod_t: HashSet<(String, i64, String, i64)> =
        sqlx::query("SELECT market_ticker, ts_ms, content_hash, occurrence FROM tickers")
            .fetch_all(pool)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
    let n_t: i64 = sqlx::query_scalar("SELECT count(*) FROM tickers")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(n_t as usize, prod_t.len(), "no ticker twice");
    let missing_t = union_t.difference(&prod_t).count();
    assert_eq!(
        missing_t, 0,
        "tickers a gatherer holds are missing from production"
    );
    if w.disturbed.is_empty() {
        assert_eq!(
            prod_t.len(),
            union_t.len(),
            "tickers: exactly the gatherers' union"
        );
    }
    let truth_tk: HashSet<(String, i64)> = truth(&w.sim, "ticker")
        .await
        .iter()
        .map(|r| {
            (
                r["msg"]["market_ticker"].as_str().unwrap().to_owned(),
                r["msg"]["ts_ms"].as_i64().unwrap(),
            )
        })
        .collect();
    assert!(
        prod_t
            .iter()
            .all(|(m, ts, _, _)| truth_tk.contains(&(m.clone(), *ts))),
        "a ticker the exchange did not publish"
    );
    out.tickers = prod_t.len();

    let prod_l: HashSet<(String, String, String)> =
        sqlx::query("SELECT ticker, event_type, content_hash FROM lifecycle")
            .fetch_all(pool)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
    assert_eq!(
        union_l.difference(&prod_l).count(),
        0,
        "lifecycle events missing from production"
    );
    if w.disturbed.is_empty() {
        assert_eq!(prod_l, union_l, "lifecycle: exactly the gatherers' union");
    }
    out.lifecycle = prod_l.len();

    // Registry: one row per market, the newest version any running gatherer holds, and its
    // status is the exchange's.
    let rows = sqlx::query("SELECT ticker, updated_ms, observed_ms, body FROM markets")
        .fetch_all(pool)
        .await
        .unwrap();
    let exchange = exchange_markets(&w.sim).await;
    for r in &rows {
        let t: String = r.get(0);
        let body: Value = r.get(3);
        if let Some(m) = exchange.get(&t) {
            for k in ["status", "result", "close_time", "event_ticker"] {
                assert_eq!(
                    body[k], m[k],
                    "production market {t}.{k} is not the exchange's"
                );
            }
        }
        if let Some(l) = latest.get(&t) {
            assert!(
                r.get::<i64, _>(1) >= l.0,
                "{t}: production holds an older version"
            );
        }
    }
    assert_eq!(rows.len(), exchange.len(), "one row per (non-combo) market");
    out.markets = rows.len();
    let n_series: i64 = sqlx::query_scalar("SELECT count(*) FROM series")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(n_series, 5, "the five series");

    // Snapshots are never merged: every gatherer's are there.
    let n_s: i64 = sqlx::query_scalar("SELECT count(*) FROM orderbook_snapshots")
        .fetch_one(pool)
        .await
        .unwrap();
    if w.disturbed.is_empty() {
        assert_eq!(n_s as usize, snapshots, "every gatherer's snapshots");
    } else {
        assert!(n_s as usize >= snapshots);
    }
    out.snapshots = n_s as usize;
    let prod_g: HashSet<(String, String, i64)> =
        sqlx::query("SELECT gatherer_id, instance_id, gap_id FROM gaps")
            .fetch_all(pool)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
    assert!(gap_keys.is_subset(&prod_g), "every gatherer's gaps");
    out.gaps = prod_g.len();
    let q: i64 = sqlx::query_scalar("SELECT count(*) FROM quarantine")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(q, 0, "nothing quarantined");
    out
}

/// The simulator's non-combo markets by ticker (REST, the exchange's current state).
pub async fn exchange_markets(sim: &SimHandle) -> HashMap<String, Value> {
    let mut out = HashMap::new();
    let mut cursor = String::new();
    loop {
        let v = g::sim_get(
            sim,
            &format!("/markets?limit=1000&mve_filter=exclude&cursor={cursor}"),
        )
        .await;
        for m in v["markets"].as_array().unwrap() {
            out.insert(m["ticker"].as_str().unwrap().to_owned(), m.clone());
        }
        cursor = v["cursor"].as_str().unwrap().to_owned();
        if cursor.is_empty() {
            return out;
        }
    }
}

/// Runs traffic at `rate` msgs/s for `secs`, calling `during` once after `at` seconds.
pub async fn traffic(w: &World, rate: u64, secs: f64) {
    w.rate(rate).await;
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    w.rate(0).await;
}

/// The value of one exact series line (`name{labels}`), 0 when absent.
pub fn metric_line(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}
