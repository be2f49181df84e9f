//! Test world: the simulator over real sockets, three (or more) real gatherers each with its own
//! database, a production PostgreSQL cluster, and the deduplicator in-process or as a binary.
//! Production is judged against the simulator's ground truth by the one oracle.
//!
//! It must never judge production by the system's own stores: only the simulator's truth.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a panic is a failed test

use deduplicator::config::Validate as _;
use gatherer::config::Validate as _;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deduplicator::config::{FileConfig, GathererEndpoint, Secret};
use kalshi_proto::GathererClient;
use kalshi_proto::gatherer::v1 as pb;
use kalshi_shared::tls::{ClientTls, Connector, TlsFiles};
use kalshi_sim::{SimConfig, SimHandle};
use kalshi_testkit::certs::{DEDUPLICATOR_NAME, MtlsFiles};
use kalshi_testkit::held::{Held, read_all};
use kalshi_testkit::oracle::{Reading, Rules, Verdict, judge};
use kalshi_testkit::pg::PgCluster;
use kalshi_testkit::sim::SimControl;
use serde_json::Value;
use sqlx::Row as _;
use sqlx::postgres::PgPool;

pub use kalshi_testkit::prom::metric_sum;

/// Installs the process's TLS provider (reqwest is built without a default one).
pub fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A simulator that requires signatures from the test key.
pub fn sim_config(seed: u64, markets: usize) -> SimConfig {
    let mut c = SimConfig::for_tests(seed, markets);
    c.public_key_pem = Some(kalshi_testkit::keys::KEY_PUBLIC.to_vec());
    c.key_id = Some(kalshi_testkit::keys::KEY_ID.into());
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

/// The deduplicator binary of this build.
pub fn dedup_bin() -> std::path::PathBuf {
    kalshi_stack::default_bin_dir().join("deduplicator")
}

/// A port free right now (for services that must come back on the same address).
pub fn free_port() -> u16 {
    kalshi_testkit::ports::free_port().unwrap()
}

/// A gatherer on its own runtime, so it can be killed abruptly (all tasks dropped, sockets
/// closed, nothing flushed), as SIGKILL would.
pub struct GProc {
    rt: Option<tokio::runtime::Runtime>,
    pub g: Option<gatherer::Gatherer>,
    pub file: gatherer::config::FileConfig,
    pub instance_id: String,
    /// With mTLS: the client certificate the test's own reads present (the deduplicator's).
    pub client_tls: Option<Arc<ClientTls>>,
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
            client_tls: None,
        }
    }

    /// Its gRPC address: `https://` when it serves mTLS.
    pub fn grpc(&self) -> String {
        let scheme = if self.file.api.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.file.api.listen)
    }

    pub async fn client(&self) -> GathererClient<tonic::transport::Channel> {
        let channel = match &self.client_tls {
            Some(tls) => tonic::transport::Endpoint::from_shared(self.grpc())
                .unwrap()
                .connect_with_connector(
                    Connector::new(tls.clone(), &self.file.gatherer_id).unwrap(),
                )
                .await
                .unwrap(),
            None => tonic::transport::Endpoint::from_shared(self.grpc())
                .unwrap()
                .connect()
                .await
                .unwrap(),
        };
        GathererClient::new(channel).max_decoding_message_size(64 << 20)
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
    /// The certificates, when the gatherers serve mTLS.
    pub mtls: Option<MtlsFiles>,
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
    let mut f = gatherer::config::FileConfig::fast_local(
        id,
        sim.rest_url(),
        sim.ws_url(),
        kalshi_testkit::keys::KEY_ID,
        kalshi_testkit::keys::key_file(),
        db_url,
    );
    f.api.listen = format!("127.0.0.1:{port}").parse().unwrap();
    f.ws.connections = 2;
    f
}

impl World {
    /// The simulator (idle), `n` gatherers subscribed to every market, production empty.
    pub async fn start(seed: u64, markets: usize, n: usize) -> World {
        Self::start_with(seed, markets, n, None).await
    }

    /// As `start`, with mTLS between the gatherers and their clients when `mtls` is given:
    /// each gatherer serves its own certificate and accepts only the deduplicator's name.
    pub async fn start_with(seed: u64, markets: usize, n: usize, mtls: Option<MtlsFiles>) -> World {
        Self::start_tuned(seed, markets, n, mtls, |_| {}).await
    }

    /// As `start_with`, each gatherer's configuration adjusted by `tune` before it starts.
    pub async fn start_tuned(
        seed: u64,
        markets: usize,
        n: usize,
        mtls: Option<MtlsFiles>,
        tune: impl Fn(&mut gatherer::config::FileConfig),
    ) -> World {
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
            let mut file = gatherer_file(&id, &sim, &url, free_port());
            tune(&mut file);
            let mut client_tls = None;
            if let Some(m) = &mtls {
                let (cert, key) = m.gatherer(&id).unwrap();
                file.api.insecure = false;
                file.api.tls = Some(gatherer::config::ApiTlsSection {
                    cert_file: cert.to_path_buf(),
                    key_file: key.to_path_buf(),
                    client_ca_file: m.ca.clone(),
                    allowed_clients: vec![DEDUPLICATOR_NAME.into()],
                    handshake_timeout: Duration::from_secs(5),
                    max_handshakes: 64,
                });
                client_tls = Some(Arc::new(ClientTls::load(dedup_tls_files(m)).unwrap()));
            }
            let mut g = GProc::start(file).await;
            g.client_tls = client_tls;
            gatherers.push(g);
        }
        for g in &gatherers {
            g.wait_healthy(Duration::from_secs(60)).await;
        }
        let mut w = World {
            mtls,
            sim,
            gpg,
            gatherers,
            prod,
            initial: HashSet::new(),
            disturbed: HashSet::new(),
        };
        // Snapshots are stored once their splice point is certain: after `ws.snapshot_hold`
        // of quiet here (no traffic yet) proved by a frame received after it (a pong, within a
        // ping interval), seen at the connections' next tick.
        let f = &w.gatherers[0].file.ws;
        w.settle(
            f.snapshot_hold
                + f.ping_interval
                + f.ping_interval.min(Duration::from_secs(1)) * 2
                + Duration::from_millis(300),
        )
        .await;
        w.initial = w.snapshotted_by_all().await;
        w
    }

    async fn snapshotted_by_all(&self) -> HashSet<String> {
        let mut all: Option<HashSet<String>> = None;
        for g in &self.gatherers {
            let recs = read_all(&mut g.client().await, pb::Stream::OrderbookSnapshots)
                .await
                .unwrap();
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
                    server_name: None,
                })
                .collect(),
            ..Default::default()
        };
        match &self.mtls {
            Some(m) => {
                c.sources.tls = Some(deduplicator::config::SourcesTlsSection {
                    ca_file: m.ca.clone(),
                    cert_file: m.deduplicator.0.clone(),
                    key_file: m.deduplicator.1.clone(),
                });
                for g in &mut c.gatherers {
                    g.server_name = Some(g.id.clone());
                }
            }
            None => c.sources.insecure = true,
        }
        // The local clusters serve plaintext: said explicitly, as the deduplicator requires.
        let prod_url = if prod_url.contains("sslmode=") {
            prod_url.to_owned()
        } else if prod_url.contains('?') {
            format!("{prod_url}&sslmode=disable")
        } else {
            format!("{prod_url}?sslmode=disable")
        };
        c.production.database_url = Secret(prod_url);
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

    /// The configured gatherers' ids.
    pub fn ids(&self) -> Vec<&str> {
        self.gatherers
            .iter()
            .map(|g| g.file.gatherer_id.as_str())
            .collect()
    }

    pub fn control(&self) -> SimControl {
        SimControl::new(self.sim.control_url())
    }

    pub async fn rate(&self, rate: u64) {
        self.control().rate(rate).await.unwrap();
    }

    /// One Status call to each running gatherer, each on a new connection (with mTLS, a new
    /// handshake with the certificate files as they are now).
    pub async fn ping_all(&self) {
        for g in self.gatherers.iter().filter(|g| g.g.is_some()) {
            g.status().await;
        }
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
            let behind = self.behind(pool).await;
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

    /// The streams of running gatherers whose heads production's cursors have not reached.
    pub async fn behind(&self, pool: &PgPool) -> Vec<String> {
        {
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
                        // A cursor of an earlier incarnation: synced when the new one holds
                        // nothing of this stream yet.
                        Some((c, inst)) => {
                            if deduplicator::source::same_incarnation(inst, &st.instance_id) {
                                *c >= s.head
                            } else {
                                s.head == 0
                            }
                        }
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
            behind
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

/// The deduplicator's side of an mTLS set.
pub fn dedup_tls_files(m: &MtlsFiles) -> TlsFiles {
    TlsFiles {
        ca_file: m.ca.clone(),
        cert_file: m.deduplicator.0.clone(),
        key_file: m.deduplicator.1.clone(),
    }
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
    dedup_health_at(addr, "/health").await
}

/// `/health`, `/health/ready` or `/health/live`.
pub async fn dedup_health_at(addr: std::net::SocketAddr, path: &str) -> (u16, Value) {
    let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// What production holds, as the oracle counted it.
#[derive(Debug)]
pub struct Exact {
    pub trades: u64,
    pub deltas: u64,
    pub tickers: u64,
    pub lifecycle: u64,
    pub markets: u64,
    pub snapshots: u64,
    pub gaps: u64,
    pub verdict: Verdict,
}

/// Production judged by the oracle against the ground truth (the running gatherers' stores
/// tell a gap every gatherer declared from a loss downstream of them): no silent loss, no
/// duplicate, nothing invented, every snapshot a state of the book, the registry the
/// exchange's, nothing quarantined. When no gatherer was disturbed, nothing may be missing at
/// all beyond the subscription bound of markets created while running.
pub async fn assert_exact(w: &World, pool: &PgPool) -> Exact {
    let held = Held::from_production(pool).await.unwrap();
    let truth = w.control().truth().await.unwrap();
    let v = judge(&truth, &held, &readings(w).await, &Rules::settled(&w.ids()));
    eprintln!("{}", v.table());
    let stopped: Vec<&str> = w
        .gatherers
        .iter()
        .filter(|g| g.g.is_none())
        .map(|g| g.file.gatherer_id.as_str())
        .collect();
    if stopped.is_empty() {
        assert!(v.ok, "production against the truth:\n{}", v.table());
    } else {
        // A stopped gatherer cannot say what it holds: an excuse it could contradict is
        // undecidable, never passed. Nothing may be wrong all the same.
        assert_ne!(
            v.outcome,
            kalshi_testkit::oracle::Outcome::Failed,
            "production against the truth:\n{}",
            v.table()
        );
        assert!(
            v.inconclusive.iter().all(|r| stopped
                .iter()
                .any(|g| r.contains(&format!("gatherer {g} ")))),
            "undecidable for another reason than the stopped gatherers {stopped:?}:\n{}",
            v.table()
        );
    }
    let trades = v.stream("trades").unwrap();
    assert_eq!(trades.present, trades.expected, "every trade");
    if w.disturbed.is_empty() {
        // Undisturbed, the only windows are those of markets created while running: each
        // gatherer declares the moments before its subscription (`late_subscription`).
        let reasons: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT reason FROM gaps ORDER BY 1")
                .fetch_all(pool)
                .await
                .unwrap();
        // (`gatherer_down` after a gatherer restarted gracefully, which excuses nothing here.)
        assert!(
            reasons
                .iter()
                .all(|r| r == "late_subscription" || r == "gatherer_down"),
            "no other window in an undisturbed world: {reasons:?}"
        );
        for s in &v.streams {
            assert_eq!(
                s.missing(),
                s.before_subscription + s.declared,
                "{}: nothing missing in an undisturbed world but before subscriptions",
                s.stream
            );
        }
    }
    let n_gaps: i64 = sqlx::query_scalar("SELECT count(*) FROM gaps")
        .fetch_one(pool)
        .await
        .unwrap();
    Exact {
        trades: trades.present,
        deltas: v.stream("orderbook_deltas").unwrap().present,
        tickers: v.stream("tickers").unwrap().present,
        lifecycle: v.stream("lifecycle").unwrap().present,
        markets: v.registry.first().map_or(0, |r| r.compared),
        snapshots: v.books.snapshots + v.books.rest,
        gaps: n_gaps as u64,
        verdict: v,
    }
}

/// Every configured gatherer as the oracle reads it: what a running one holds; a stopped one
/// is unreadable (an excuse it could contradict is then undecidable).
pub async fn readings(w: &World) -> Vec<Reading> {
    let mut out = Vec::new();
    for g in &w.gatherers {
        let id = g.file.gatherer_id.clone();
        out.push(if g.g.is_some() {
            Reading::of(
                id.clone(),
                Held::from_gatherer(&mut g.client().await, &id)
                    .await
                    .unwrap(),
            )
        } else {
            Reading::unreadable(id, "stopped by the test")
        });
    }
    out
}

/// Runs traffic at `rate` msgs/s for `secs`, calling `during` once after `at` seconds.
pub async fn traffic(w: &World, rate: u64, secs: f64) {
    w.rate(rate).await;
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    w.rate(0).await;
}

pub use kalshi_testkit::prom::metric_line;

/// A deduplicator binary with its own ports, config and log: one of a pair (active and warm
/// standby) that the standby tests kill, stop and cut off.
pub struct DedupProc {
    pub name: String,
    child: Option<std::process::Child>,
    pub http: std::net::SocketAddr,
    pub config: std::path::PathBuf,
    pub log: std::path::PathBuf,
}

impl DedupProc {
    /// Writes `file` (with its own ports) to `dir/<name>.toml` and starts the binary.
    pub fn spawn(dir: &std::path::Path, name: &str, mut file: FileConfig) -> DedupProc {
        std::fs::create_dir_all(dir).unwrap();
        let http: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        file.http.listen = http;
        file.http.metrics_listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, toml::to_string(&file).unwrap()).unwrap();
        let mut p = DedupProc {
            name: name.into(),
            child: None,
            http,
            config,
            log: dir.join(format!("{name}.log")),
        };
        p.respawn();
        p
    }

    /// Starts the binary again (after it was killed or stepped down), appending to its log.
    pub fn respawn(&mut self) {
        self.respawn_with(&[]);
    }

    /// [`respawn`](Self::respawn) with extra environment (e.g. `KALSHI_FAILPOINTS`).
    pub fn respawn_with(&mut self, env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let config = self.config.clone();
        self.child = Some(
            kalshi_testkit::process::spawn_tied(&dedup_bin(), |c| {
                c.arg("--config")
                    .arg(&config)
                    .envs(env.iter().copied())
                    .stdout(std::process::Stdio::null())
                    .stderr(log);
            })
            .unwrap(),
        );
    }

    fn pid(&self) -> rustix::process::Pid {
        rustix::process::Pid::from_child(self.child.as_ref().expect("running"))
    }

    /// SIGKILL, and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: alive, holding its sessions and lock, doing nothing.
    pub fn stop(&self) {
        rustix::process::kill_process(self.pid(), rustix::process::Signal::STOP).unwrap();
    }

    /// SIGCONT.
    pub fn cont(&self) {
        rustix::process::kill_process(self.pid(), rustix::process::Signal::CONT).unwrap();
    }

    /// Whether it has exited (and how), reaping it.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let s = self.child.as_mut()?.try_wait().unwrap()?;
        self.child = None;
        Some(s)
    }

    /// Waits for it to exit on its own.
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(c) = self.child.as_mut()
                && let Some(s) = c.try_wait().unwrap()
            {
                self.child = None;
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {within:?}:\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its `/health` role ("active", "standby", "starting"), None while it does not answer.
    pub async fn role(&self) -> Option<String> {
        let c = reqwest::Client::builder()
            .timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        let r = c
            .get(format!("http://{}/health", self.http))
            .send()
            .await
            .ok()?;
        let v: Value = r.json().await.ok()?;
        v["role"].as_str().map(str::to_owned)
    }

    /// Waits until its role is `role`.
    pub async fn wait_role(&self, role: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while self.role().await.as_deref() != Some(role) {
            assert!(
                Instant::now() < deadline,
                "{} is not {role} within {within:?}:\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let t = self.log_text();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for DedupProc {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_child(c),
                rustix::process::Signal::CONT,
            );
        }
        self.kill();
    }
}

/// The lease as production holds it: `(epoch, holder)`; `(0, "")` before the migrations.
pub async fn lease_of(pool: &PgPool) -> (i64, String) {
    sqlx::query_as("SELECT epoch, holder FROM dedup_leader WHERE id = 1")
        .fetch_one(pool)
        .await
        .unwrap_or_default()
}

/// Waits until a lease newer than `after` has committed a transaction carrying cursors (its
/// first commit), and returns that epoch.
pub async fn first_commit_after(pool: &PgPool, after: i64, within: Duration) -> i64 {
    let deadline = Instant::now() + within;
    loop {
        let r: Option<(i64, bool)> = sqlx::query_as(
            "SELECT l.epoch, coalesce(max(c.updated_at) > l.taken_at, false) \
             FROM dedup_leader l LEFT JOIN sync_cursors c ON true WHERE l.id = 1 GROUP BY l.epoch, l.taken_at",
        )
        .fetch_optional(pool)
        .await
        .ok()
        .flatten();
        if let Some((e, true)) = r
            && e > after
        {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "no commit under a lease after epoch {after} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A synchronous streaming standby of the world's production, as RDS Multi-AZ: a commit the
/// deduplicator saw is on it.
pub fn sync_standby(w: &World) -> PgCluster {
    let standby =
        PgCluster::start_standby(&w.prod, kalshi_testkit::pg::ClusterOptions::default()).unwrap();
    w.prod
        .psql(
            "postgres",
            "ALTER SYSTEM SET synchronous_standby_names = '*'",
        )
        .unwrap();
    w.prod.psql("postgres", "SELECT pg_reload_conf()").unwrap();
    standby
}

/// Waits until production holds `more` trades beyond what it holds now (traffic is flowing
/// through whoever writes).
pub async fn more_trades(pool: &PgPool, more: i64, within: Duration) {
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM trades")
            .fetch_one(pool)
            .await
            .unwrap_or(0)
    };
    let want = count().await + more;
    let deadline = Instant::now() + within;
    while count().await < want {
        assert!(
            Instant::now() < deadline,
            "fewer than {more} new trades within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
