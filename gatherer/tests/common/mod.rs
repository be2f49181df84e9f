//! Test rig: a real PostgreSQL cluster, the real simulator over sockets, the real gatherer
//! in-process on port 0, and a real gRPC client.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // shared by several test binaries

use gatherer::config::Validate as _;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use gatherer::config::FileConfig;
use kalshi_proto::GathererClient;
use kalshi_proto::gatherer::v1 as pb;
use kalshi_sim::{SimConfig, SimHandle};
use kalshi_testkit::pg::PgCluster;
use serde_json::{Value, json};
use tonic::transport::Channel;

pub use kalshi_testkit::keys::{KEY_ID, KEY_PKCS8, KEY_PUBLIC, key_file};

/// A simulator that requires signatures from the test key.
pub fn sim_config(seed: u64, markets: usize) -> SimConfig {
    let mut c = SimConfig::for_tests(seed, markets);
    c.public_key_pem = Some(KEY_PUBLIC.to_vec());
    c.key_id = Some(KEY_ID.into());
    c.rest_rate = 100_000;
    c.rest_burst = 100_000;
    // Tickers and lifecycle messages carry a field no one models: kept as sent, byte for byte.
    c.future_fields = true;
    // The exchange halts trading every 6 s for 3 s (every second halt is maintenance):
    // every state lasts long enough for the gatherers' 500 ms polls, and must be captured.
    c.halt_every_secs = 6;
    c.halt_secs = 3;
    // And sends a message of a type no client models about every thousand messages.
    c.unknown_every = 997;
    c
}

/// Gatherer settings for the rig: port 0 everywhere, fast timings.
pub fn gatherer_config(id: &str, sim: &SimHandle, db_url: &str) -> FileConfig {
    FileConfig::fast_local(id, sim.rest_url(), sim.ws_url(), KEY_ID, key_file(), db_url)
}

pub struct Rig {
    pub pg: PgCluster,
    pub sim: SimHandle,
    pub gatherer: Option<gatherer::Gatherer>,
    pub file: FileConfig,
    /// Markets subscribed (snapshot stored) when the rig was ready, before any traffic.
    pub initial: std::collections::HashSet<String>,
}

/// Installs the process's TLS provider (reqwest is built without a default one).
pub fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Rig {
    /// Starts PostgreSQL, the simulator (idle) and a gatherer; waits until it is subscribed.
    pub async fn start(sim: SimConfig, tweak: impl FnOnce(&mut FileConfig)) -> Rig {
        init();
        let pg = PgCluster::start_default().unwrap();
        let sim = kalshi_sim::start(sim).await.unwrap();
        let mut file = gatherer_config("g1", &sim, &pg.url());
        tweak(&mut file);
        let g = gatherer::start(file.clone().validate().unwrap())
            .await
            .unwrap();
        let mut rig = Rig {
            pg,
            sim,
            gatherer: Some(g),
            file,
            initial: Default::default(),
        };
        rig.wait_healthy(Duration::from_secs(30)).await;
        // Snapshots are stored once their splice point is certain: at the first later delta,
        // or after `ws.snapshot_hold` of quiet (no traffic yet here) proved by a frame received
        // after it (a pong, within a ping interval), seen at the connection's next tick.
        let tick = rig.file.ws.ping_interval.min(Duration::from_secs(1));
        rig.settle(
            rig.file.ws.snapshot_hold
                + rig.file.ws.ping_interval
                + tick * 2
                + Duration::from_millis(300),
        )
        .await;
        rig.initial = rig.snapshotted().await;
        rig
    }

    /// Markets with at least one stored snapshot.
    pub async fn snapshotted(&self) -> std::collections::HashSet<String> {
        self.read_all(pb::Stream::OrderbookSnapshots)
            .await
            .iter()
            .filter_map(|r| match r.body.as_ref()? {
                pb::record::Body::Snapshot(s) => Some(s.market_ticker.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn g(&self) -> &gatherer::Gatherer {
        self.gatherer.as_ref().unwrap()
    }

    pub async fn health(&self) -> (u16, Value) {
        self.health_at("/health").await
    }

    /// `/health`, `/health/ready` or `/health/live`.
    pub async fn health_at(&self, path: &str) -> (u16, Value) {
        let r = reqwest::get(format!("http://{}{path}", self.g().http_addr))
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
    init();
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
    init();
    let r = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{url}: {}", r.status());
    r.json().await.unwrap()
}

pub use kalshi_testkit::prom::metric_sum;

pub async fn read_all(c: &mut GathererClient<Channel>, stream: pb::Stream) -> Vec<pb::Record> {
    kalshi_testkit::held::read_all(c, stream).await.unwrap()
}

/// Every ground-truth record of the simulator (optionally of some types).
pub async fn truth(sim: &SimHandle, types: &str) -> Vec<Value> {
    kalshi_testkit::sim::SimControl::new(sim.control_url())
        .truth_records(types)
        .await
        .unwrap()
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

/// What the oracle found in the gatherer's store.
#[derive(Debug)]
pub struct Coverage {
    pub truth_deltas: u64,
    pub stored_deltas: u64,
    /// Truth deltas not stored, inside windows the gatherer declared.
    pub missing_covered: u64,
    pub gaps: Vec<pb::Gap>,
    pub verdict: kalshi_testkit::oracle::Verdict,
}

/// Judges the gatherer's whole store against the ground truth through the one oracle (the
/// gatherer's own gaps are the declarations): every trade exactly, deltas, tickers and
/// lifecycle as content multisets, snapshots equal to the book's history, the registry equal
/// to the exchange's; nothing missing outside a declared window or the subscription bound,
/// nothing duplicated or invented.
pub async fn assert_complete_or_covered(rig: &Rig) -> Coverage {
    // The rig is subscribed before any traffic: a tight bound.
    assert_complete_within(rig, 1_000).await
}

/// [`assert_complete_or_covered`] with another bound on the subscription latency of markets
/// created while running.
pub async fn assert_complete_within(rig: &Rig, subscription_latency_ms: i64) -> Coverage {
    use kalshi_testkit::oracle::{Reading, Rules, judge};
    let truth = kalshi_testkit::sim::SimControl::new(rig.sim.control_url())
        .truth()
        .await
        .unwrap();
    let mut c = rig.client().await;
    let held = kalshi_testkit::held::Held::from_gatherer(&mut c, &rig.file.gatherer_id)
        .await
        .unwrap();
    // The gatherer judged is the only one: what it holds is what was captured.
    let v = judge(
        &truth,
        &held,
        &[Reading::of(rig.file.gatherer_id.clone(), held.clone())],
        &Rules::settled(&[rig.file.gatherer_id.as_str()])
            .with_subscription_latency_ms(subscription_latency_ms),
    );
    assert!(
        v.ok,
        "the gatherer's store against the truth:\n{}",
        v.table()
    );
    let t = v.stream("trades").unwrap();
    assert_eq!(t.present, t.expected, "every trade, backfill included");
    let d = v.stream("orderbook_deltas").unwrap().clone();
    let gap_records = rig.read_all(pb::Stream::Gaps).await;
    Coverage {
        truth_deltas: d.expected,
        stored_deltas: d.present,
        missing_covered: d.declared,
        gaps: gaps(&gap_records).into_iter().cloned().collect(),
        verdict: v,
    }
}

/// Waits (up to `within`) until every trade of the truth is stored: backfill may still be
/// retrying through a REST error burst when the data streams have settled.
pub async fn wait_trades_complete(rig: &Rig, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let want = truth(&rig.sim, "trade").await.len();
        let have = rig.read_all(pb::Stream::Trades).await.len();
        if have >= want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {have} of {want} trades after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs traffic at `rate` for `secs`, then stops it and waits for the gatherer to settle.
pub async fn traffic(rig: &Rig, rate: u64, secs: f64) {
    rig.rate(rate).await;
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    rig.rate(0).await;
}

/// The final books of every market the gatherer holds a snapshot of equal the exchange's,
/// rebuilt as docs/archive.md tells users to: the last snapshot, plus the stored deltas
/// stamped after its splice point (`last_delta_ts_ms`).
pub async fn assert_books_match(rig: &Rig) {
    let snaps = rig.read_all(pb::Stream::OrderbookSnapshots).await;
    let mut last: HashMap<String, (i64, &pb::OrderbookSnapshot)> = HashMap::new();
    for r in &snaps {
        if let Some(pb::record::Body::Snapshot(s)) = r.body.as_ref()
            && s.source == "ws"
        {
            last.insert(s.market_ticker.clone(), (r.cursor, s));
        }
    }
    let stored = rig.read_all(pb::Stream::OrderbookDeltas).await;
    for (market, (_, snap)) in &last {
        assert!(snap.last_delta_ts_ms > 0, "a splice point: {snap:?}");
        let mut yes: std::collections::BTreeMap<i64, i64> = snap
            .yes
            .iter()
            .map(|l| (l.price_micros, l.quantity_centi))
            .collect();
        let mut no: std::collections::BTreeMap<i64, i64> = snap
            .no
            .iter()
            .map(|l| (l.price_micros, l.quantity_centi))
            .collect();
        for r in &stored {
            let Some(pb::record::Body::Delta(d)) = r.body.as_ref() else {
                continue;
            };
            if d.market_ticker != *market || d.ts_ms <= snap.last_delta_ts_ms {
                continue;
            }
            let levels = if d.side == pb::Side::Yes as i32 {
                &mut yes
            } else {
                &mut no
            };
            let v = levels.entry(d.price_micros).or_insert(0);
            *v += d.delta_centi;
            if *v == 0 {
                levels.remove(&d.price_micros);
            }
        }
        let v: Value = reqwest::get(format!("{}/truth/books/{market}", rig.sim.control_url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let side = |k: &str| -> std::collections::BTreeMap<i64, i64> {
            v[k].as_array()
                .unwrap()
                .iter()
                .map(|l| {
                    (
                        kalshi_shared::Price::parse(l[0].as_str().unwrap())
                            .unwrap()
                            .raw(),
                        kalshi_shared::Quantity::parse(l[1].as_str().unwrap())
                            .unwrap()
                            .raw(),
                    )
                })
                .collect()
        };
        assert_eq!(
            (side("yes"), side("no")),
            (yes, no),
            "book of {market} after its last snapshot"
        );
    }
}

/// Publishes at `rate` msg/s for `secs`, then stops: the trade ids the simulator published
/// meanwhile, from its ground truth.
pub async fn publish_trades(
    sim: &SimHandle,
    rate: u64,
    secs: f64,
) -> std::collections::HashSet<String> {
    let from_pos = sim.published_pos();
    let url = format!("{}/rate", sim.control_url());
    post(&url, json!({ "rate": rate })).await;
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    post(&url, json!({ "rate": 0 })).await;
    truth(sim, "trade")
        .await
        .iter()
        .filter(|r| r["pos"].as_u64().unwrap() > from_pos)
        .map(|r| r["msg"]["trade_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until the gatherer's database `pg` holds every one of `expected`, then checks that
/// no trade is stored twice.
pub async fn wait_trades_stored(pg: &PgCluster, expected: &std::collections::HashSet<String>) {
    let q = |sql: &str| pg.psql("postgres", sql).unwrap();
    kalshi_testkit::wait::wait_for("every trade stored", Duration::from_secs(30), async || {
        let stored: std::collections::HashSet<String> = q("SELECT trade_id FROM trades")
            .lines()
            .map(str::to_owned)
            .collect();
        expected.is_subset(&stored)
    })
    .await;
    assert_eq!(
        q("SELECT count(*) - count(DISTINCT trade_id) FROM trades").trim(),
        "0",
        "a trade stored twice"
    );
}

/// A port free on loopback now.
pub fn free_port() -> u16 {
    kalshi_testkit::ports::free_port().unwrap()
}
