//! The deduplicator: the only writer of the production database. It tails every gatherer,
//! merges, drops duplicates and commits every record exactly once, through failover.
//!
//! Tasks, all under one shutdown order:
//! - [`source`]: one per gatherer, a `Tail` per stream from production's stored cursor.
//! - [`sink`]: one writer per stream: key cache, one transaction per batch, cursors with the
//!   data, failover-aware retry, poison rows bisected into quarantine.
//! - [`rds`]: IAM auth tokens and RDS events (optional).
//! - [`lease`]: which of several deduplicators writes (the others are warm standbys); the
//!   sources and sinks start once this one holds it.
//! - `/health` on `http.listen`, `/metrics` on `http.metrics_listen`.
//!
//! [`start`] runs the service in-process and returns a handle; `main` is a thin wrapper.
//! Shutdown: stop the sources, let each writer commit what it already holds (bounded by
//! `DRAIN`), close the pool, return.
//!
//! It must never stay half alive: a source, sink, server or auxiliary task that ends before
//! shutdown (a panic included) stops the whole deduplicator with an error.

// deny, not forbid: `memory` calls glibc (malloc_trim, mallopt, mallinfo2), the only unsafe.
#![deny(unsafe_code)]

pub mod archive;
pub mod board;
pub mod config;
pub mod coverage;
pub mod db;
pub mod lease;
#[allow(unsafe_code)]
pub mod memory;
pub mod metrics;
pub mod quarantine;
pub mod rds;
pub mod records;
pub mod schema;
pub mod sink;
pub mod source;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use kalshi_shared::retry::Backoff;
use kalshi_shared::service::{Group, Service, Stop, Supervisor};
use serde_json::json;
use tokio_util::sync::CancellationToken;

pub use config::Config;

use board::{Board, Health};
use db::Prod;
use records::Stream;

/// How long writers may take to commit what they hold at shutdown.
const DRAIN: Duration = Duration::from_secs(10);

/// Slack on top of `DRAIN` for the whole ordered stop.
const STOP_SLACK: Duration = Duration::from_secs(10);

/// A running deduplicator.
pub struct Deduplicator {
    pub http_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub board: Arc<Board>,
    pub prod: Arc<Prod>,
    pub lease: Arc<lease::Lease>,
    service: Service,
}

impl Deduplicator {
    /// The token that stops the deduplicator when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.service.shutdown_token()
    }

    /// Stops (committing what the writers hold) and waits.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.service.stop().await
    }

    /// Waits until the deduplicator ends: after a shutdown, or because a task failed.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.service.wait().await
    }

    /// The supervised service, for `main` (see [`kalshi_shared::service::run_until_signal`]).
    pub fn into_service(self) -> Service {
        self.service
    }
}

/// Connects to production (retrying until it answers or shutdown), migrates, and returns the
/// stored cursors (`None`: shutdown first). Applied migrations that do not match this binary
/// are an error: retrying cannot help.
async fn prepare(
    prod: &Prod,
    cfg: &Config,
    cancel: &CancellationToken,
) -> anyhow::Result<Option<std::collections::HashMap<(String, Stream), (i64, String)>>> {
    let mut backoff = Backoff::new(cfg.production_retry);
    loop {
        let r = async {
            let applied = match prod.migrate().await {
                Ok(a) => a,
                Err(db::MigrateError::Db(e)) => return Ok(Err(e)),
                Err(db::MigrateError::Refused(m)) => return Err(m),
            };
            if !applied.is_empty() {
                tracing::info!(?applied, "production schema migrated");
            }
            let now = kalshi_shared::time::now_ms();
            let month = schema::month_of(now);
            for t in schema::PARTITIONED {
                for m in [month, schema::next_month(month)] {
                    let pool = prod.pool();
                    let sql = schema::create_partition_sql(t, m);
                    let call = sqlx::Executor::execute(&pool, sqlx::AssertSqlSafe(sql));
                    match kalshi_shared::pg::timed("create_partition", prod.op_timeout(), call).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            tracing::warn!(table = t, error = %db::DbError::from(e), "cannot create a monthly partition")
                        }
                        Err(_) => return Ok(Err(db::DbError::timeout("creating a partition", prod.op_timeout()))),
                    }
                }
            }
            Ok(prod.cursors().await)
        }
        .await;
        let r = match r {
            Ok(r) => r,
            Err(refused) => {
                tracing::error!(error = %refused, "production's schema does not match this binary");
                return Err(refused).context("production schema");
            }
        };
        match r {
            Ok(c) => {
                prod.observe(Ok(()));
                return Ok(Some(c));
            }
            Err(e) => {
                prod.observe(Err(&e));
                tracing::warn!(error = %e, attempt = backoff.attempt(), "production not ready: retrying");
                if e.class == kalshi_shared::pg::DbErrorClass::ReadOnly {
                    prod.rebuild();
                }
                if !backoff.sleep(cancel).await {
                    return Ok(None);
                }
            }
        }
    }
}

/// Starts every task; returns once the listeners are bound (production may still be down:
/// the service waits for it and says so on `/health`).
pub async fn start(cfg: Config) -> anyhow::Result<Deduplicator> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics_router = kalshi_shared::telemetry::metrics_router();
    let ids: Vec<String> = cfg.gatherers.iter().map(|g| g.id.clone()).collect();
    metrics::describe(&ids);
    if let Some(tls) = &cfg.sources_tls {
        tls.report_expiry();
    }
    // Stop order: start-up (migrations, cursors), sources, then the writers commit what they
    // hold, then auxiliary tasks; the servers stop accepting first and finish last.
    let mut sup = Supervisor::new("deduplicator");
    let startup = sup.group("startup", Stop::InTurn);
    let sources = sup.group("sources", Stop::InTurn);
    let sinks = sup.group("sinks", Stop::InTurn);
    let aux = sup.group("aux", Stop::InTurn);
    let servers = sup.group("servers", Stop::Early);

    let http_limits = kalshi_shared::http_server::HttpLimits::from(&cfg.http);
    let http_listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .with_context(|| format!("bind http.listen {}", cfg.http.listen))?;
    let metrics_listener = tokio::net::TcpListener::bind(cfg.http.metrics_listen)
        .await
        .with_context(|| format!("bind http.metrics_listen {}", cfg.http.metrics_listen))?;
    let http_addr = http_listener.local_addr()?;
    let metrics_addr = metrics_listener.local_addr()?;

    let prod = Prod::new(cfg.production.clone())?;
    prod.require_lease();
    let lease = lease::Lease::new(prod.clone(), cfg.lease.clone());
    let board = Arc::new(Board::new(&cfg.gatherers));

    if cfg.rds.iam_auth || !cfg.rds.instance_id.is_empty() {
        let sdk = rds::sdk_config(&cfg.rds).await;
        if cfg.rds.iam_auth {
            // The first token before the first connection.
            rds::refresh_token(&prod, &sdk, &cfg.rds.region).await?;
            let task = rds::token_task(prod.clone(), sdk.clone(), cfg.rds.clone(), aux.token());
            aux.spawn("rds_token", async move {
                task.await;
                Ok(())
            });
        }
        if !cfg.rds.instance_id.is_empty() {
            let task = rds::events_task(prod.clone(), sdk, cfg.rds.clone(), aux.token());
            aux.spawn("rds_events", async move {
                task.await;
                Ok(())
            });
        }
    }
    // Coverage of the last 24 h, once a minute: windows no gatherer captured.
    let (p, stop, ids2) = (prod.clone(), aux.token(), ids.clone());
    aux.spawn("coverage", async move {
        loop {
            let now = kalshi_shared::time::now_ms();
            match coverage::load(&p, now - 86_400_000, now).await {
                Ok(rows) => {
                    // Off the runtime: a day of gaps is tens of thousands of rows.
                    let ids = ids2.clone();
                    let totals = tokio::task::spawn_blocking(move || {
                        coverage::totals(&coverage::uncovered(&rows, &ids, now - 86_400_000, now))
                    })
                    .await?;
                    for s in Stream::ALL {
                        let n = totals.get(s.table()).map_or(0, |t| t.0);
                        ::metrics::gauge!(metrics::UNCOVERED_WINDOWS, "stream" => s.table())
                            .set(n as f64);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "coverage check skipped"),
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            }
        }
    });
    aux.spawn("memory", memory::run(aux.token()));
    let b = board.clone();
    let stop = aux.token();
    aux.spawn("lag", async move {
        loop {
            b.update_lag();
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    });

    let live = sup.liveness();
    let app = axum::Router::new()
        .route("/health", axum::routing::get(health))
        .route("/health/ready", axum::routing::get(health))
        .route("/health/active", axum::routing::get(health_active))
        .with_state((board.clone(), prod.clone(), lease.clone()))
        .merge(kalshi_shared::service::live_router(live));
    kalshi_shared::http_server::spawn_both(
        &servers,
        (http_listener, app),
        (metrics_listener, metrics_router),
        http_limits,
    );

    let groups = Groups {
        startup: startup.clone(),
        sources,
        sinks,
        aux: aux.clone(),
    };
    let (p, b, l) = (prod.clone(), board.clone(), lease.clone());
    startup.spawn_once("prepare", start_streams(cfg, p, b, l, groups));
    let closed = prod.clone();
    let service = sup.start(DRAIN + STOP_SLACK, move || async move {
        closed.pool().close().await;
    });
    Ok(Deduplicator {
        http_addr,
        metrics_addr,
        board,
        prod,
        lease,
        service,
    })
}

/// The groups that `start_streams` fills once production is ready.
struct Groups {
    startup: Group,
    sources: Group,
    sinks: Group,
    aux: Group,
}

/// Waits for production (migrations, stored cursors), then starts one sink per stream and
/// one source per gatherer. Returns once they run (or at shutdown before production was
/// ready); the sources and sinks live in their own groups.
async fn start_streams(
    cfg: Config,
    prod: Arc<Prod>,
    board: Arc<Board>,
    lease: Arc<lease::Lease>,
    groups: Groups,
) -> anyhow::Result<()> {
    // The schema first, by every deduplicator (the lease lives in its tables; concurrent
    // migrations are serialized by their own lock), then the lease.
    let startup = groups.startup.token();
    if prepare(&prod, &cfg, &startup).await?.is_none() {
        return Ok(());
    }
    let (l, token) = (lease.clone(), groups.aux.token());
    groups.aux.spawn("lease", l.run(token));
    let source_cfg = source::SourceConfig::of(&cfg);
    let mut channels = Vec::new();
    for g in &cfg.gatherers {
        channels.push(source::channel(g, cfg.sources_tls.clone(), &source_cfg)?);
    }
    // Until this one is active: a look at every gatherer every few seconds, so `/health` says
    // whether the standby could read them, and their connections are open at the takeover.
    let active = lease.became_active();
    loop {
        let looks = cfg
            .gatherers
            .iter()
            .zip(&channels)
            .zip(&board.gatherers)
            .map(|((g, ch), b)| source::probe(g, ch, &source_cfg, b));
        let round = async {
            futures_util::future::join_all(looks).await;
            tokio::time::sleep(Duration::from_secs(5)).await;
        };
        tokio::select! {
            _ = startup.cancelled() => return Ok(()),
            _ = active.cancelled() => break,
            _ = round => {}
        }
    }
    // Active: production's cursors as they are after the new epoch (everything the previous
    // holder committed is in them).
    let Some(stored) = prepare(&prod, &cfg, &startup).await? else {
        return Ok(());
    };
    let ids: Vec<String> = cfg.gatherers.iter().map(|g| g.id.clone()).collect();
    let (senders, receivers) = sink::channels(cfg.sink.queue_pages);
    let sink_cfg = sink::SinkConfig {
        batch_rows: cfg.sink.batch_rows,
        batch_interval: cfg.sink.batch_interval,
        cache_keys: cfg.sink.cache_keys,
        cache_window: cfg.sink.cache_window,
        retry: cfg.production_retry,
        pause_before_commit: cfg.testing.pause_before_commit,
        gatherers: ids.clone(),
        panic_sink: cfg.testing.panic_sink.clone(),
        archive_period_ms: cfg.archive.as_ref().map(|a| a.period_ms),
        lifecycle_window_ms: cfg.sink.lifecycle_match_window.as_millis() as i64,
    };
    for (s, rx) in Stream::ALL.into_iter().zip(receivers) {
        let sink = sink::Sink::new(s, sink_cfg.clone(), prod.clone(), board.clone(), rx);
        let token = groups.sinks.token();
        groups.sinks.spawn(s.table(), async move {
            sink.run(token, DRAIN).await;
            Ok(())
        });
    }
    if let Some(a) = cfg.archive.clone() {
        let local = !a.section.endpoint_url.is_empty() || !a.section.directory.is_empty();
        let archiver = archive::Archiver::new(a, prod.clone(), ids.clone())
            .await
            .context("archive")?;
        if local {
            // A local S3 stand-in (the stack, tests) or a local directory starts empty;
            // production's bucket is Terraform's.
            archiver
                .store
                .ensure_bucket()
                .await
                .context("archive bucket")?;
        }
        let (b, token) = (board.clone(), groups.aux.token());
        groups.aux.spawn("archiver", async move {
            archiver.run(b, token).await;
            Ok(())
        });
    }
    for (i, g) in cfg.gatherers.iter().enumerate() {
        let start = stored_start(&stored, &g.id, &board.gatherers[i]);
        tracing::info!(gatherer = %g.id, endpoint = %g.endpoint, cursors = ?start, "starting source");
        let src = source::Source::new(
            i,
            g,
            channels[i].clone(),
            source_cfg.clone(),
            board.clone(),
            senders.clone(),
            start,
        );
        let token = groups.sources.token();
        groups.sources.spawn(
            format!("source_{}", g.id),
            async move { src.run(token).await },
        );
    }
    Ok(())
}

/// The cursors production holds for one gatherer, if they agree on one instance; marks them
/// committed on the board.
fn stored_start(
    stored: &std::collections::HashMap<(String, Stream), (i64, String)>,
    id: &str,
    board: &board::GathererBoard,
) -> Option<(String, [i64; Stream::ALL.len()])> {
    let mine: Vec<(Stream, i64, String)> = stored
        .iter()
        .filter(|((gid, _), _)| gid == id)
        .map(|((_, s), (c, inst))| (*s, *c, inst.clone()))
        .collect();
    let (_, _, inst) = mine.first()?;
    let mut after = [0i64; Stream::ALL.len()];
    for (s, c, x) in &mine {
        if x == inst {
            after[s.index()] = *c;
            board
                .stream(*s)
                .committed
                .store(*c, std::sync::atomic::Ordering::Release);
        }
    }
    if mine.iter().any(|(_, _, x)| x != inst) {
        tracing::warn!(gatherer = %id, "stored cursors name more than one instance: the next identity check decides");
    }
    Some((inst.clone(), after))
}

/// `/health` and `/health/ready`: 200 while production is reachable and at least one gatherer
/// is connected (the active one), or while production is reachable (a standby, ready to take
/// over: `"status": "standby"`); 503 otherwise. The body names the role, the lease, every
/// gatherer's state and production's.
async fn health(
    State((board, prod, lease)): State<(Arc<Board>, Arc<Prod>, Arc<lease::Lease>)>,
) -> impl IntoResponse {
    let role = lease.role();
    let mut gatherers = serde_json::Map::new();
    let mut connected = 0;
    for g in &board.gatherers {
        let h = g.health();
        if h == Health::Connected {
            connected += 1;
        }
        gatherers.insert(g.id.clone(), json!(h.label()));
    }
    let rds = if prod.connected() {
        "connected"
    } else if prod.failover() {
        "failover_in_progress"
    } else if prod.reachable() {
        "connecting"
    } else {
        "unreachable"
    };
    let (code, status) = match role {
        _ if !prod.reachable() => (StatusCode::SERVICE_UNAVAILABLE, "unhealthy"),
        lease::Role::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting"),
        lease::Role::Standby => (StatusCode::OK, "standby"),
        lease::Role::Active if connected == 0 => (StatusCode::SERVICE_UNAVAILABLE, "unhealthy"),
        // Its lease session failed: writes wait until it takes the lease again.
        lease::Role::Active if prod.epoch() == 0 => (StatusCode::OK, "degraded"),
        lease::Role::Active if connected < board.gatherers.len() || !prod.connected() => {
            (StatusCode::OK, "degraded")
        }
        lease::Role::Active => (StatusCode::OK, "healthy"),
    };
    let h = lease.holder();
    (
        code,
        axum::Json(json!({
            "status": status,
            "role": role.label(),
            "version": kalshi_shared::build::VERSION,
            "git_sha": kalshi_shared::build::GIT_SHA,
            "lease": {
                "epoch": prod.epoch(),
                "holder": h.holder,
                "holder_epoch": h.epoch,
                "heartbeat_age_ms": h.age.as_millis() as u64,
                "me": lease.label(),
            },
            "gatherers": gatherers,
            "rds": rds,
        })),
    )
}

/// `/health/active`: 200 only on the deduplicator that holds the lease (for tools that must
/// find the active one), 503 elsewhere.
async fn health_active(
    State((_, prod, lease)): State<(Arc<Board>, Arc<Prod>, Arc<lease::Lease>)>,
) -> impl IntoResponse {
    if lease.role() == lease::Role::Active && prod.epoch() != 0 {
        (StatusCode::OK, "active\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not active\n")
    }
}
