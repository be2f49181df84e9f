//! Test rig: a real PostgreSQL cluster, the real simulator over sockets, the real gatherer
//! in-process on port 0, and a real gRPC client.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // shared by several test binaries

use std::collections::HashMap;
use std::time::{Duration, Instant};

use gatherer::config::{FileConfig, Secret};
use kalshi_proto::GathererClient;
use kalshi_proto::gatherer::v1 as pb;
use kalshi_shared::pg::PgCluster;
use kalshi_sim::{SimConfig, SimHandle};
use serde_json::{Value, json};
use tonic::transport::Channel;

pub const KEY_PKCS8: &[u8] = include_bytes!("../../../shared/testdata/rsa-pkcs8.pem");
pub const KEY_PUBLIC: &[u8] = include_bytes!("../../../shared/testdata/rsa-public.pem");

pub fn key_file() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/rsa-pkcs8.pem")
}

/// A simulator that requires signatures from the test key.
pub fn sim_config(seed: u64, markets: usize) -> SimConfig {
    let mut c = SimConfig::for_tests(seed, markets);
    c.public_key_pem = Some(KEY_PUBLIC.to_vec());
    c.key_id = Some("test-key".into());
    c.rest_rate = 100_000;
    c.rest_burst = 100_000;
    c
}

/// Gatherer settings for the rig: port 0 everywhere, fast timings.
pub fn gatherer_config(id: &str, sim: &SimHandle, db_url: &str) -> FileConfig {
    let mut c = FileConfig::default();
    c.gatherer_id = id.into();
    c.kalshi.rest_url = sim.rest_url();
    c.kalshi.ws_url = sim.ws_url();
    c.kalshi.key_id = Some("test-key".into());
    c.kalshi.private_key_file = Some(key_file());
    c.kalshi.rest_rate_per_s = 1000;
    c.kalshi.rest_burst = 1000;
    c.kalshi.rest_retry_initial = Duration::from_millis(50);
    c.kalshi.rest_retry_max = Duration::from_millis(500);
    c.ws.connections = 3;
    c.ws.ping_interval = Duration::from_millis(500);
    c.ws.silence_timeout = Duration::from_secs(3);
    c.ws.reconnect_initial = Duration::from_millis(50);
    c.ws.reconnect_max = Duration::from_millis(500);
    c.ws.command_timeout = Duration::from_secs(5);
    c.ws.gap_margin = Duration::from_millis(100);
    c.registry.reconcile_interval = Duration::from_secs(30);
    c.backfill.margin = Duration::from_millis(500);
    c.backfill.polling_after = Duration::from_secs(2);
    c.backfill.polling_interval = Duration::from_millis(500);
    c.store.database_url = Secret(db_url.into());
    c.store.batch_interval = Duration::from_millis(20);
    c.store.retry_initial = Duration::from_millis(50);
    c.store.retry_max = Duration::from_millis(500);
    c.store.op_timeout = Duration::from_secs(10);
    c.store.connect_timeout = Duration::from_secs(2);
    c.store.startup_timeout = Duration::from_secs(20);
    c.store.timescaledb = gatherer::store::TimescaleMode::Off;
    c.api.listen = "127.0.0.1:0".parse().unwrap();
    c.api.tail_heartbeat = Duration::from_millis(500);
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    c.http.metrics_listen = "127.0.0.1:0".parse().unwrap();
    c
}

pub struct Rig {
    pub pg: PgCluster,
    pub sim: SimHandle,
    pub gatherer: Option<gatherer::Gatherer>,
    pub file: FileConfig,
}

impl Rig {
    /// Starts PostgreSQL, the simulator (idle) and a gatherer; waits until it is subscribed.
    pub async fn start(sim: SimConfig, tweak: impl FnOnce(&mut FileConfig)) -> Rig {
        let pg = PgCluster::start_default().unwrap();
        let sim = kalshi_sim::start(sim).await.unwrap();
        let mut file = gatherer_config("g1", &sim, &pg.url());
        tweak(&mut file);
        let g = gatherer::start(file.clone().validate().unwrap())
            .await
            .unwrap();
        let rig = Rig {
            pg,
            sim,
            gatherer: Some(g),
            file,
        };
        rig.wait_healthy(Duration::from_secs(30)).await;
        rig.settle(Duration::from_millis(300)).await;
        rig
    }

    pub fn g(&self) -> &gatherer::Gatherer {
        self.gatherer.as_ref().unwrap()
    }

    pub async fn health(&self) -> (u16, Value) {
        let r = reqwest::get(format!("http://{}/health", self.g().http_addr))
            .await
            .unwrap();
        let code = r.status().as_u16();
        (code, r.json().await.unwrap())
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.g().metrics_addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The sum of a counter over all label sets (0 if absent).
    pub async fn metric(&self, name: &str) -> f64 {
        metric_sum(&self.metrics().await, name)
    }

    /// Waits until every connection is subscribed and every snapshot is stored.
    pub async fn wait_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let (code, h) = self.health().await;
            if code == 200 && h["status"] == "healthy" {
                return;
            }
            assert!(Instant::now() < deadline, "gatherer not healthy: {h}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn client(&self) -> GathererClient<Channel> {
        GathererClient::connect(format!("http://{}", self.g().grpc_addr))
            .await
            .unwrap()
            .max_decoding_message_size(64 << 20)
    }

    /// Every record of a stream, by paging Read from 0.
    pub async fn read_all(&self, stream: pb::Stream) -> Vec<pb::Record> {
        read_all(&mut self.client().await, stream).await
    }

    /// Waits until the gatherer's head of `stream` stops moving for `quiet`.
    pub async fn settle(&self, quiet: Duration) {
        let mut c = self.client().await;
        let mut last = Vec::new();
        let mut stable_since = Instant::now();
        loop {
            let s = c.status(pb::StatusRequest {}).await.unwrap().into_inner();
            let heads: Vec<i64> = s.streams.iter().map(|x| x.head).collect();
            if heads != last {
                last = heads;
                stable_since = Instant::now();
            } else if stable_since.elapsed() >= quiet {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop_gatherer(&mut self) {
        if let Some(g) = self.gatherer.take() {
            g.stop().await.unwrap();
        }
    }

    pub async fn restart_gatherer(&mut self) {
        self.stop_gatherer().await;
        let g = gatherer::start(self.file.clone().validate().unwrap())
            .await
            .unwrap();
        self.gatherer = Some(g);
        self.wait_healthy(Duration::from_secs(30)).await;
    }

    pub async fn fault(&self, body: Value) -> Value {
        post(&format!("{}/faults", self.sim.control_url()), body).await
    }

    pub async fn rate(&self, rate: u64) {
        post(
            &format!("{}/rate", self.sim.control_url()),
            json!({"rate": rate}),
        )
        .await;
    }
}

/// A signed GET against the simulator's REST API (`path` after `/trade-api/v2`).
pub async fn sim_get(sim: &SimHandle, path: &str) -> Value {
    let signer = kalshi_shared::auth::Signer::from_pem("test-key", KEY_PKCS8).unwrap();
    let full = format!("/trade-api/v2{path}");
    let h = signer.sign("GET", &full).unwrap();
    let mut req = reqwest::Client::new().get(format!("http://{}{full}", sim.addr));
    for (k, v) in h.pairs() {
        req = req.header(k, v);
    }
    let r = req.send().await.unwrap();
    assert!(r.status().is_success(), "{path}: {}", r.status());
    r.json().await.unwrap()
}

pub async fn post(url: &str, body: Value) -> Value {
    let r = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r.json().await.unwrap()
}

pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(|c| c == '{' || c == ' ').next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub async fn read_all(c: &mut GathererClient<Channel>, stream: pb::Stream) -> Vec<pb::Record> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = c
            .read(pb::ReadRequest {
                stream: stream as i32,
                after,
                limit: 5000,
            })
            .await
            .unwrap()
            .into_inner();
        if page.records.is_empty() {
            return out;
        }
        for r in &page.records {
            assert!(r.cursor > after, "cursors ascend");
            after = r.cursor;
        }
        out.extend(page.records);
    }
}

/// Every ground-truth record of the simulator (optionally of some types).
pub async fn truth(sim: &SimHandle, types: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = 0u64;
    loop {
        let url = format!(
            "{}/truth?after={after}&limit=100000&types={types}",
            sim.control_url()
        );
        let page: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        let next = page["next"].as_u64().unwrap();
        out.extend(page["records"].as_array().unwrap().iter().cloned());
        if next >= page["head"].as_u64().unwrap() || next == after {
            return out;
        }
        after = next;
    }
}

pub fn body<T>(r: &pb::Record, f: impl Fn(&pb::record::Body) -> Option<&T>) -> &T {
    f(r.body.as_ref().unwrap()).unwrap()
}

pub fn trades(records: &[pb::Record]) -> Vec<&pb::Trade> {
    records
        .iter()
        .filter_map(|r| match r.body.as_ref()? {
            pb::record::Body::Trade(t) => Some(t),
            _ => None,
        })
        .collect()
}

pub fn deltas(records: &[pb::Record]) -> Vec<&pb::OrderbookDelta> {
    records
        .iter()
        .filter_map(|r| match r.body.as_ref()? {
            pb::record::Body::Delta(d) => Some(d),
            _ => None,
        })
        .collect()
}

pub fn gaps(records: &[pb::Record]) -> Vec<&pb::Gap> {
    records
        .iter()
        .filter_map(|r| match r.body.as_ref()? {
            pb::record::Body::Gap(g) => Some(g),
            _ => None,
        })
        .collect()
}

/// A delta's identity, comparable with the truth's.
pub type DeltaKey = (String, i64, i32, i64, i64);

pub fn delta_key(d: &pb::OrderbookDelta) -> DeltaKey {
    (
        d.market_ticker.clone(),
        d.ts_ms,
        d.side,
        d.price_micros,
        d.delta_centi,
    )
}

pub fn truth_delta_key(r: &Value) -> DeltaKey {
    let m = &r["msg"];
    let side = match m["side"].as_str().unwrap() {
        "yes" => pb::Side::Yes as i32,
        _ => pb::Side::No as i32,
    };
    (
        m["market_ticker"].as_str().unwrap().to_owned(),
        m["ts_ms"].as_i64().unwrap(),
        side,
        kalshi_shared::Price::parse(m["price_dollars"].as_str().unwrap())
            .unwrap()
            .raw(),
        kalshi_shared::Quantity::parse(m["delta_fp"].as_str().unwrap())
            .unwrap()
            .raw(),
    )
}

/// Per market, the sequence of delta keys.
pub fn by_market(keys: impl IntoIterator<Item = DeltaKey>) -> HashMap<String, Vec<DeltaKey>> {
    let mut out: HashMap<String, Vec<DeltaKey>> = HashMap::new();
    for k in keys {
        out.entry(k.0.clone()).or_default().push(k);
    }
    out
}

/// Whether `part` appears in `whole` as a contiguous run.
pub fn is_contiguous_part<T: PartialEq>(part: &[T], whole: &[T]) -> bool {
    part.is_empty() || whole.windows(part.len()).any(|w| w == part)
}
