//! `kalshi-sim`: a faithful local Kalshi exchange (WebSocket v2 + REST v2) with ground truth
//! and fault injection. Every test, the local stack and every benchmark run against it.
//!
//! Layout:
//! - [`universe`], [`engine`], [`book`]: the exchange (catalogue, order flow, lifecycle).
//! - [`truth`]: the ground-truth log of everything published.
//! - [`ws`]: the WebSocket endpoint (upgrade, sessions, fan-out).
//! - [`rest`]: the REST endpoints, behind [`guard`] (faults, auth, token bucket).
//! - [`control`]: the private control API (faults, truth, pause/advance, stats).
//!
//! [`start`] runs the whole simulator in-process and returns a [`SimHandle`]; the binary is a
//! thin wrapper around it.
//!
//! It must never publish an event it has not recorded in the ground truth.

#![forbid(unsafe_code)]

pub mod book;
pub mod config;
pub mod control;
pub mod engine;
pub mod faults;
pub mod guard;
pub mod rest;
pub mod rng;
pub mod truth;
pub mod universe;
pub mod ws;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use kalshi_shared::auth::Verifier;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{Cli, SimConfig};
use engine::{Batch, EngineConfig, Exchange};
use faults::{ConnFault, GlobalFaults, TokenBucket};
use truth::{TruthReader, TruthWriter};

/// Locks a mutex, recovering the data if a holder panicked (the simulator's state stays
/// usable; every mutation under these locks is complete or not started).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Counters reported by `GET /stats`.
#[derive(Debug, Default)]
pub struct Stats {
    pub ws_connections_total: AtomicU64,
    pub ws_frames_sent: AtomicU64,
    pub ws_commands: AtomicU64,
    pub ws_overflows: AtomicU64,
    pub ws_slow_dropped: AtomicU64,
    pub ws_upgrades_rejected: AtomicU64,
    pub rest_requests: AtomicU64,
    pub rest_rate_limited: AtomicU64,
    pub auth_failures: AtomicU64,
    pub engine_lag_resets: AtomicU64,
}

/// A connection's public description (for `GET /connections` and fault targeting).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnInfo {
    pub id: u64,
    pub peer: String,
    pub key_id: Option<String>,
    pub connected_ms: i64,
}

/// One subscription as listed by `GET /connections`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SubSummary {
    pub sid: u64,
    pub channel: String,
    /// `None` when the subscription covers every market.
    pub markets: Option<usize>,
    pub seq: u64,
}

pub struct ConnEntry {
    pub info: ConnInfo,
    pub ctl: mpsc::Sender<ConnFault>,
    pub subs: Arc<Mutex<Vec<SubSummary>>>,
}

/// Everything the servers share.
pub struct SimState {
    pub cfg: SimConfig,
    pub exchange: Mutex<Exchange>,
    pub fanout: broadcast::Sender<Batch>,
    pub published_pos: AtomicU64,
    pub truth: TruthReader,
    pub verifier: Option<Verifier>,
    pub faults: Mutex<GlobalFaults>,
    pub conns: Mutex<HashMap<u64, ConnEntry>>,
    pub next_conn_id: AtomicU64,
    pub rest_buckets: Mutex<HashMap<String, TokenBucket>>,
    pub paused: AtomicBool,
    pub rate: AtomicU64,
    pub shutdown: CancellationToken,
    pub stats: Stats,
    pub started: Instant,
    /// Wall-clock Unix milliseconds at start: every market that exists before any lifecycle
    /// event appeared at this time (the oracle's subscription-latency origin).
    pub started_ms: i64,
}

impl SimState {
    /// Generates and publishes at least `n` messages now; returns how many.
    pub fn publish_now(&self, n: u64) -> u64 {
        let now_us = lock(&self.faults)
            .frozen_us(Instant::now())
            .unwrap_or_else(kalshi_shared::time::now_us);
        let mut ex = lock(&self.exchange);
        let batch = ex.generate(n, now_us);
        let len = batch.len() as u64;
        if let Some(last) = batch.last() {
            self.published_pos.store(last.pos, Ordering::Release);
            // No receivers is fine: nobody is subscribed.
            let _ = self.fanout.send(Arc::new(batch));
        }
        len
    }

    /// Pauses or resumes a market now (a `deactivated` lifecycle message); its position, or
    /// None for an unknown market.
    pub fn set_paused(&self, ticker: &str, paused: bool) -> Option<u64> {
        let now_us = lock(&self.faults)
            .frozen_us(Instant::now())
            .unwrap_or_else(kalshi_shared::time::now_us);
        let mut ex = lock(&self.exchange);
        let idx = ex.market_index(ticker)?;
        let batch = ex.set_paused(idx, paused, now_us.div_euclid(1000));
        let last = batch.last()?.pos;
        self.published_pos.store(last, Ordering::Release);
        let _ = self.fanout.send(Arc::new(batch));
        Some(last)
    }

    /// Sends a fault to the selected connections; returns their ids.
    pub fn fault_connections(
        &self,
        ids: Option<&[u64]>,
        key_id: Option<&str>,
        limit: Option<u32>,
        fault: &ConnFault,
    ) -> Vec<u64> {
        let conns = lock(&self.conns);
        let mut chosen: Vec<u64> = conns
            .values()
            .filter(|c| ids.is_none_or(|ids| ids.contains(&c.info.id)))
            .filter(|c| key_id.is_none_or(|k| c.info.key_id.as_deref() == Some(k)))
            .map(|c| c.info.id)
            .collect();
        chosen.sort_unstable();
        if let Some(n) = limit {
            chosen.truncate(n as usize);
        }
        chosen.retain(|id| {
            conns
                .get(id)
                .is_some_and(|c| c.ctl.try_send(fault.clone()).is_ok())
        });
        chosen
    }
}

/// A running simulator.
pub struct SimHandle {
    pub state: Arc<SimState>,
    pub addr: SocketAddr,
    pub control_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl SimHandle {
    pub fn rest_url(&self) -> String {
        format!(
            "http://{}{}",
            self.addr,
            kalshi_shared::wire::rest::REST_PREFIX
        )
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}{}", self.addr, kalshi_shared::wire::ws::WS_PATH)
    }

    pub fn control_url(&self) -> String {
        format!("http://{}", self.control_addr)
    }

    pub fn truth(&self) -> &TruthReader {
        &self.state.truth
    }

    /// Stops generation (timers keep running; `advance` still works).
    pub fn pause(&self) {
        self.state.paused.store(true, Ordering::Release);
    }

    pub fn resume(&self) {
        self.state.paused.store(false, Ordering::Release);
    }

    /// Publishes at least `n` messages now, whatever the rate; returns how many.
    pub fn advance(&self, n: u64) -> u64 {
        self.state.publish_now(n)
    }

    /// The position of the last published event.
    pub fn published_pos(&self) -> u64 {
        self.state.published_pos.load(Ordering::Acquire)
    }

    /// Stops every server and connection and waits for them.
    pub async fn shutdown(self) {
        self.state.shutdown.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

/// Starts the simulator: binds both listeners, starts the engine, returns at once.
pub async fn start(cfg: SimConfig) -> anyhow::Result<SimHandle> {
    let verifier = match &cfg.public_key_pem {
        Some(pem) => {
            let v = Verifier::from_pem(pem).context("load --public-key")?;
            Some(match &cfg.key_id {
                Some(k) => v.with_key_id(k.clone()),
                None => v,
            })
        }
        None => None,
    };
    let (truth_path, remove_truth) = match &cfg.truth_file {
        Some(p) => (p.clone(), false),
        None => (
            std::env::temp_dir().join(format!(
                "kalshi-sim-{}-{}.truth.jsonl",
                std::process::id(),
                NEXT_SIM.fetch_add(1, Ordering::Relaxed)
            )),
            true,
        ),
    };
    let truth = TruthWriter::create_limited(&truth_path, remove_truth, cfg.truth_limit_bytes)
        .with_context(|| format!("create the ground truth file {}", truth_path.display()))?;
    let reader = truth.reader();
    let exchange = Exchange::new(
        EngineConfig {
            seed: cfg.seed,
            series: cfg.series,
            markets: cfg.markets,
            mve_markets: cfg.mve_markets,
            legacy_fields: cfg.legacy_fields,
            future_fields: cfg.future_fields,
            history_ms: i64::from(cfg.history_hours) * 3_600_000,
            history_rate: cfg.history_rate,
            history_markets: cfg.history_markets,
            halt_every_ms: (cfg.halt_every_secs as i64).saturating_mul(1000),
            halt_ms: (cfg.halt_secs as i64).saturating_mul(1000),
            lifecycle_every: cfg.lifecycle_every,
            unknown_every: cfg.unknown_every,
            trade_history: cfg.trade_history,
        },
        truth,
        kalshi_shared::time::now_ms(),
    );
    let (fanout, _) = broadcast::channel(cfg.fanout_buffer);
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("bind {}", cfg.listen))?;
    let control_listener = tokio::net::TcpListener::bind(cfg.control_listen)
        .await
        .with_context(|| format!("bind {}", cfg.control_listen))?;
    let addr = listener.local_addr().context("read the bound address")?;
    let control_addr = control_listener
        .local_addr()
        .context("read the bound control address")?;
    let state = Arc::new(SimState {
        rate: AtomicU64::new(cfg.rate),
        cfg,
        exchange: Mutex::new(exchange),
        fanout,
        published_pos: AtomicU64::new(0),
        truth: reader,
        verifier,
        faults: Mutex::new(GlobalFaults::default()),
        conns: Mutex::new(HashMap::new()),
        next_conn_id: AtomicU64::new(1),
        rest_buckets: Mutex::new(HashMap::new()),
        paused: AtomicBool::new(false),
        shutdown: CancellationToken::new(),
        stats: Stats::default(),
        started: Instant::now(),
        started_ms: kalshi_shared::time::now_ms(),
    });

    let mut tasks = Vec::new();
    let app = rest::router(state.clone()).merge(ws::router(state.clone()));
    let token = state.shutdown.clone();
    tasks.push(tokio::spawn(async move {
        let served = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(token.cancelled_owned())
        .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "exchange listener failed");
        }
    }));
    let control_app = control::router(state.clone());
    let token = state.shutdown.clone();
    tasks.push(tokio::spawn(async move {
        let served = axum::serve(control_listener, control_app)
            .with_graceful_shutdown(token.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "control listener failed");
        }
    }));
    tasks.push(tokio::spawn(run_engine(state.clone())));
    Ok(SimHandle {
        state,
        addr,
        control_addr,
        tasks,
    })
}

static NEXT_SIM: AtomicU64 = AtomicU64::new(0);

/// Generates messages at the configured rate, one batch per tick.
#[tracing::instrument(name = "engine", skip_all)]
async fn run_engine(state: Arc<SimState>) {
    let mut interval = tokio::time::interval(state.cfg.tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut base = Instant::now();
    let mut generated: u64 = 0;
    let mut last_rate = state.rate.load(Ordering::Acquire);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => break,
            _ = interval.tick() => {}
        }
        let rate = state.rate.load(Ordering::Acquire);
        if state.paused.load(Ordering::Acquire) || rate == 0 || rate != last_rate {
            base = Instant::now();
            generated = 0;
            last_rate = rate;
            continue;
        }
        let expected = (u128::from(rate) * base.elapsed().as_micros() / 1_000_000) as u64;
        // At most 100 ms of messages per tick; if the machine cannot keep up, drop the backlog
        // rather than bursting (the achieved rate is what /stats reports).
        let max_batch = (rate / 10).clamp(1, 100_000);
        if expected > generated + 4 * max_batch {
            generated = expected - max_batch;
            state
                .stats
                .engine_lag_resets
                .fetch_add(1, Ordering::Relaxed);
        }
        let due = expected.saturating_sub(generated).min(max_batch);
        if due == 0 {
            continue;
        }
        // Generation holds the exchange lock for well under a millisecond per tick.
        let made = state.publish_now(due);
        generated += made.max(due);
    }
}
