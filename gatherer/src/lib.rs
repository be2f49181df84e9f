//! The gatherer: collects every subscribed Kalshi market into a local PostgreSQL and serves
//! it by cursor over gRPC.
//!
//! Tasks, all under one shutdown order:
//! - [`registry`]: series, events and markets from REST and lifecycle; decides what to
//!   subscribe; [`exchange`]: the exchange's status (halts) and schedule, polled.
//! - [`connections`]: the WebSocket connections, seq checking, books, gaps.
//! - [`backfill`]: REST trade backfill over holes; polling fallback.
//! - [`store`]: one writer per table, cursor reads, partitions and retention.
//! - [`api`]: gRPC Read / Tail / Status; [`http`]: `/health`; metrics on their own port.
//!
//! [`start`] runs the whole service in-process and returns a handle; `main` is a thin wrapper.
//! Shutdown: stop accepting (gRPC, HTTP), stop intake (WebSocket, registry, backfill), flush
//! every writer, close the database, return.
//!
//! It must never stay half alive: a task that ends before shutdown (a panic included) stops
//! the whole gatherer with an error, so systemd restarts it.

#![forbid(unsafe_code)]

pub mod api;
pub mod backfill;
pub mod config;
pub mod connections;
pub mod credentials;
pub mod exchange;
pub mod health;
pub mod http;
pub mod import;
pub mod metrics;
pub mod registry;
pub mod rest;
pub mod store;

use std::net::SocketAddr;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use kalshi_shared::auth::LiveSigner;
use kalshi_shared::retry::BackoffConfig;
use kalshi_shared::service::{Service, Stop, Supervisor};
use sqlx::Row as _;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// A running gatherer.
pub struct Gatherer {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub instance_id: String,
    service: Service,
}

impl Gatherer {
    /// The token that stops the gatherer when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.service.shutdown_token()
    }

    /// Stops the gatherer (flushing everything) and waits for it.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.service.stop().await
    }

    /// Waits until the gatherer ends: after a shutdown, or because a task failed.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.service.wait().await
    }

    /// The supervised service, for `main` (see [`kalshi_shared::service::run_until_signal`]).
    pub fn into_service(self) -> Service {
        self.service
    }
}

/// Slack on top of `store.flush_deadline` for the whole ordered stop: intake ending, the
/// writers' final flush (or spill), the servers' last responses.
const STOP_SLACK: Duration = Duration::from_secs(20);

fn tls_config() -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// When this gatherer was last receiving data (from its database), if ever.
async fn last_alive_ms(store: &store::Store) -> Option<i64> {
    let mut newest = None;
    for table in ["orderbook_deltas", "tickers", "lifecycle"] {
        let sql = format!("SELECT received_ms FROM {table} ORDER BY id DESC LIMIT 1");
        if let Ok(Some(row)) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_optional(store.pool())
            .await
            && let Ok(ms) = row.try_get::<i64, _>(0)
        {
            newest = newest.max(Some(ms));
        }
    }
    newest
}

/// Starts every task; returns once the listeners are bound and the database is ready.
pub async fn start(cfg: Config) -> anyhow::Result<Gatherer> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The recorder first: anything registered before it would go nowhere.
    let metrics_router = kalshi_shared::telemetry::metrics_router();
    metrics::describe();
    if let Some(tls) = &cfg.api_tls {
        tls.report_expiry();
    }
    // Stop order: intake, then the record writers, then the gaps writer; the servers stop
    // accepting first and finish last (a Tail ends when its writer is gone).
    let mut sup = Supervisor::new("gatherer");
    let intake = sup.group("intake", Stop::InTurn);
    let writers = sup.group("writers", Stop::InTurn);
    let gaps_writer = sup.group("gaps_writer", Stop::InTurn);
    let servers = sup.group("servers", Stop::Early);
    let shutdown = sup.shutdown_token();

    let grpc_listener = tokio::net::TcpListener::bind(cfg.api.listen)
        .await
        .with_context(|| format!("bind api.listen {}", cfg.api.listen))?;
    let http_limits = kalshi_shared::http_server::HttpLimits::from(&cfg.http);
    let http_listener = tokio::net::TcpListener::bind(cfg.http.listen)
        .await
        .with_context(|| format!("bind http.listen {}", cfg.http.listen))?;
    let metrics_listener = tokio::net::TcpListener::bind(cfg.http.metrics_listen)
        .await
        .with_context(|| format!("bind http.metrics_listen {}", cfg.http.metrics_listen))?;
    let grpc_addr = grpc_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    let metrics_addr = metrics_listener.local_addr()?;

    let store = store::Store::open(cfg.store.clone(), &shutdown).await?;
    let instance_id = store.instance_id().to_owned();
    let health = Arc::new(health::Health::new(
        cfg.gatherer_id.clone(),
        instance_id.clone(),
        cfg.ws.connections as usize,
    ));
    ::metrics::gauge!(metrics::WS_CONNECTIONS_CONFIGURED).set(f64::from(cfg.ws.connections));
    let alive_until = last_alive_ms(&store).await;
    let newest_trade = store
        .newest_trade_ms()
        .await
        .context("read the newest stored trade")?;
    let lifecycle_seen = connections::LifecycleSeen::new(
        store
            .lifecycle_occurrences()
            .await
            .context("read the stored lifecycle occurrences")?,
    );
    let registry_hashes = [
        store.latest_registry_hashes(store::Stream::Markets).await?,
        store.latest_registry_hashes(store::Stream::Events).await?,
        store.latest_registry_hashes(store::Stream::Series).await?,
    ];
    let exchange_hashes = store
        .latest_registry_hashes(store::Stream::Exchange)
        .await?;
    let known_before: std::collections::HashSet<String> =
        registry_hashes[0].keys().cloned().collect();
    let open_holes = Arc::new(connections::OpenHoles::with_inherited(
        connections::OpenHoles::load(store.pool(), cfg.store.op_timeout)
            .await
            .context("read the holes the previous run left open")?,
    ));
    store
        .maintain(kalshi_shared::time::now_ms())
        .await
        .context("create partitions")?;

    let holes = Arc::new(connections::Holes::default());
    // Trade windows a previous run had not finished backfilling (a SIGKILL included).
    let pending = backfill::HoleLog::new(store.pool().clone(), cfg.store.op_timeout)
        .load()
        .await
        .context("read the pending trade windows")?;
    if !pending.is_empty() {
        tracing::info!(
            windows = pending.len(),
            "trade windows left by the previous run: fetching them again"
        );
    }
    for h in pending {
        holes.push(h);
    }
    let overflow_holes = holes.clone();
    let trades_overflow: store::writer::OverflowHook = Arc::new(move |span| {
        overflow_holes.push(connections::TradeHole {
            from_ms: span.from_ms,
            to_ms: span.to_ms,
            reason: store::rows::GapReason::BufferOverflow,
        });
    });
    // Everything that can fail comes before the first task is spawned, so a failed start
    // leaves nothing running.
    let signer = match &cfg.credentials {
        Some(c) => Some(Arc::new(LiveSigner::new(
            c.signer().context("load the Kalshi private key")?,
        ))),
        None => None,
    };
    let hangups = credentials::hangups().context("listen for SIGHUP (key reloads)")?;
    let reload_signer = signer.clone();
    let rest = Arc::new(rest::RestClient::new(
        rest::RestConfig {
            base_url: cfg.kalshi.rest_url.clone(),
            rate_per_s: cfg.kalshi.rest_rate_per_s,
            burst: cfg.kalshi.rest_burst,
            timeout: cfg.kalshi.rest_timeout,
            max_body_bytes: cfg.kalshi.rest_max_body_bytes,
            backoff: cfg.rest_backoff,
            max_attempts: cfg.kalshi.rest_max_attempts,
        },
        signer.clone(),
        intake.token(),
    )?);
    let retry = BackoffConfig::new(Duration::from_millis(500), Duration::from_secs(30))?;
    let tls = tls_config()?;
    let writer_rt = store::writer::WriterRuntime::new().context("start the writers' thread")?;
    let sinks = store.start_writers(&writers, &gaps_writer, trades_overflow, writer_rt.handle());

    // Servers.
    let api = api::Api::new(
        store.clone(),
        health.clone(),
        api::ApiConfig {
            max_page: cfg.api.max_page,
            default_page: cfg.api.default_page,
            max_message_bytes: cfg.api.max_message_bytes,
            tail_heartbeat: cfg.api.tail_heartbeat,
            max_tail_streams: cfg.api.max_tail_streams,
            read_buffer_bytes: cfg.api.read_buffer_bytes,
        },
        servers.token(),
    );
    let grpc = kalshi_proto::GathererServer::new(api)
        .max_decoding_message_size(64 * 1024)
        .max_encoding_message_size(cfg.api.max_message_bytes);
    let token = servers.token();
    let grpc_server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .add_service(grpc);
    match (cfg.api_tls.clone(), cfg.api.tls.as_ref()) {
        (Some(tls), Some(section)) => {
            // mTLS: handshakes (bounded in number and time) and the client allow-list in the
            // accept loop; only authenticated, allowed connections reach the server.
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            let limits = kalshi_shared::tls::AcceptLimits {
                handshake_timeout: section.handshake_timeout,
                max_handshakes: section.max_handshakes,
            };
            let accept_token = servers.token();
            servers.spawn("grpc_tls_accept", async move {
                let handshakes = tokio_util::task::TaskTracker::new();
                kalshi_shared::tls::accept_loop(
                    grpc_listener,
                    tls,
                    limits,
                    tx,
                    handshakes.clone(),
                    accept_token,
                )
                .await;
                handshakes.close();
                handshakes.wait().await;
                Ok(())
            });
            servers.spawn("grpc", async move {
                grpc_server
                    .serve_with_incoming_shutdown(
                        tokio_stream::wrappers::ReceiverStream::new(rx),
                        token.cancelled_owned(),
                    )
                    .await
                    .context("gRPC server")
            });
        }
        _ => {
            servers.spawn("grpc", async move {
                grpc_server
                    .serve_with_incoming_shutdown(
                        tokio_stream::wrappers::TcpListenerStream::new(grpc_listener),
                        token.cancelled_owned(),
                    )
                    .await
                    .context("gRPC server")
            });
        }
    }
    let http_app = http::router(health.clone(), sup.liveness());
    kalshi_shared::http_server::spawn_both(
        &servers,
        (http_listener, http_app),
        (metrics_listener, metrics_router),
        http_limits,
    );

    // Intake.
    let (desired_tx, desired_rx) = watch::channel(registry::Desired::default());
    let scope = Arc::new(RwLock::new(registry::Scope::default()));
    let (notes_tx, notes_rx) = mpsc::channel(4096);
    let registry = registry::Registry::new(
        rest.clone(),
        registry::RegistrySinks {
            markets: sinks.markets.clone(),
            events: sinks.events.clone(),
            series: sinks.series.clone(),
        },
        registry::RegistryConfig {
            series: cfg.registry.series.clone(),
            categories: cfg.registry.categories.clone(),
            mve_filter: cfg.mve_filter,
            include_unopened: cfg.registry.include_unopened,
            reconcile_interval: cfg.registry.reconcile_interval,
            page_limit: cfg.registry.page_limit,
            max_markets: cfg.registry.max_markets,
            retry,
        },
        desired_tx,
        scope.clone(),
        notes_rx,
        health.clone(),
        registry_hashes,
    );
    let token = intake.token();
    intake.spawn("registry", async move {
        registry.run(token).await;
        Ok(())
    });
    let watcher = exchange::ExchangeWatcher::new(
        rest.clone(),
        (
            sinks.exchange.clone(),
            sinks.gaps.clone(),
            open_holes.clone(),
        ),
        exchange::WatcherConfig {
            status_every: cfg.registry.exchange_status_interval,
            schedule_every: cfg.registry.exchange_schedule_interval,
            down_since_ms: alive_until,
        },
        exchange_hashes,
    );
    let token = intake.token();
    intake.spawn("exchange", async move {
        watcher.run(token).await;
        Ok(())
    });

    let recent = Arc::new(connections::RecentTrades::new(200_000));
    let shared = Arc::new(connections::Shared {
        cfg: connections::ConnConfig {
            ws_url: cfg.kalshi.ws_url.clone(),
            connections: cfg.ws.connections as usize,
            ping_interval: cfg.ws.ping_interval,
            silence_timeout: cfg.ws.silence_timeout,
            connect_timeout: cfg.ws.connect_timeout,
            command_timeout: cfg.ws.command_timeout,
            max_frame_bytes: cfg.ws.max_frame_bytes,
            backoff: cfg.ws_backoff,
            subscribe_batch: cfg.ws.subscribe_batch,
            gap_margin_ms: i64::try_from(cfg.ws.gap_margin.as_millis()).unwrap_or(0),
            snapshot_hold: cfg.ws.snapshot_hold,
            snapshot_every: cfg.ws.snapshot_every,
            signer,
            tls,
        },
        sinks: sinks.clone(),
        notes: notes_tx,
        holes: holes.clone(),
        scope: scope.clone(),
        desired: desired_rx.clone(),
        health: health.clone(),
        recent_trades: recent.clone(),
        lifecycle_seen,
        unknown_seen: connections::unknown::RecentUnknown::default(),
        delta_occ: connections::Occurrences::default(),
        ticker_occ: connections::Occurrences::default(),
        epochs: AtomicI64::new(kalshi_shared::time::now_ms() * 1000),
        startup_from: alive_until,
        known_before,
        open_holes: open_holes.clone(),
    });
    connections::spawn_all(shared, &intake);
    // In the writers' group: it stops after the connections, so its last write holds what
    // they left open (nothing, after a clean stop: they declare every hole).
    {
        let (holes, pool, token) = (open_holes.clone(), store.pool().clone(), writers.token());
        let op_timeout = cfg.store.op_timeout;
        writers.spawn("open_holes", async move {
            holes
                .keep(pool, op_timeout, Duration::from_secs(1), token)
                .await;
            Ok(())
        });
    }
    let importer = import::ImportWorker {
        pool: store.pool().clone(),
        rest: rest.clone(),
        trades: sinks.trades.clone(),
        markets: sinks.markets.clone(),
        scope: scope.clone(),
        page_limit: cfg.backfill.page_limit,
        retry,
        poll: Duration::from_secs(1),
    };
    let token = intake.token();
    intake.spawn("import", async move {
        importer.run(token).await;
        Ok(())
    });
    let backfill = backfill::Backfill {
        rest,
        log: backfill::HoleLog::new(store.pool().clone(), cfg.store.op_timeout),
        holes,
        trades: sinks.trades.clone(),
        snapshots: sinks.snapshots.clone(),
        gaps: sinks.gaps.clone(),
        recent,
        scope,
        health: health.clone(),
        desired: desired_rx,
        cfg: backfill::BackfillConfig {
            enabled: cfg.backfill.enabled,
            margin_ms: i64::try_from(cfg.backfill.margin.as_millis()).unwrap_or(0),
            max_lookback: cfg.backfill.max_lookback,
            page_limit: cfg.backfill.page_limit,
            polling_after: cfg.backfill.polling_after,
            polling_interval: cfg.backfill.polling_interval,
            rest_snapshots: cfg.backfill.rest_snapshots,
            retry,
        },
    };
    let token = intake.token();
    intake.spawn("backfill", async move {
        backfill.run(newest_trade, token).await;
        Ok(())
    });
    let (maintained, token) = (store.clone(), intake.token());
    intake.spawn("maintenance", async move {
        maintained.run_maintenance(token).await;
        Ok(())
    });
    // Another session holding the lock ends this task with the error: the gatherer stops.
    let (lock_store, lock_token) = (store.clone(), intake.token());
    intake.spawn(
        "writer_lock",
        lock_store.keep_writer_lock(Duration::from_secs(1), lock_token),
    );
    let (kalshi, token) = (cfg.kalshi.clone(), intake.token());
    intake.spawn(
        "credentials_reload",
        credentials::reload_on_hangup(hangups, kalshi, reload_signer, token),
    );
    let pinger_store = store.clone();
    let pinger_health = health.clone();
    let pinger_token = intake.token();
    intake.spawn("db_ping", async move {
        loop {
            pinger_health.set_db(pinger_store.ping().await);
            tokio::select! {
                _ = pinger_token.cancelled() => return Ok(()),
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
    });
    drop(sinks);

    tracing::info!(
        gatherer_id = %cfg.gatherer_id,
        instance_id = %instance_id,
        grpc = %grpc_addr,
        http = %http_addr,
        metrics = %metrics_addr,
        connections = cfg.ws.connections,
        "gatherer started"
    );

    let service = sup.start(cfg.store.flush_deadline + STOP_SLACK, move || async move {
        store.close().await;
        // Every writer has ended (or was abandoned at the stop deadline) by now.
        drop(writer_rt);
    });
    Ok(Gatherer {
        grpc_addr,
        http_addr,
        metrics_addr,
        instance_id,
        service,
    })
}
