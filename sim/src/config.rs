//! The simulator's settings and their command line.
//!
//! It must never start a simulator on arguments that contradict each other (a clear error
//! names the argument instead).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// A faithful local Kalshi exchange (WebSocket v2 + REST v2) with ground truth and fault
/// injection, for tests, the local stack and benchmarks. Nothing it serves comes from Kalshi.
///
/// Authentication: with `--public-key`, every WebSocket upgrade and every REST call must carry
/// KALSHI-ACCESS-KEY, KALSHI-ACCESS-TIMESTAMP (Unix ms, within --auth-max-skew of this clock)
/// and a valid RSA-PSS/Ed25519 KALSHI-ACCESS-SIGNATURE by that key, else HTTP 401. With
/// `--require-auth` but no key, the three headers must be present and well formed but the
/// signature is not checked (there is no key to check it with). With neither, no
/// authentication is needed. Real Kalshi always requires it on the WebSocket, so run with a key
/// whenever the client under test should prove it signs correctly.
#[derive(Debug, Clone, Parser)]
#[command(name = "kalshi-sim", version, max_term_width = 100)]
pub struct Cli {
    /// Address for REST (/trade-api/v2) and WebSocket (/trade-api/ws/v2).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,

    /// Address of the control API (faults, ground truth, pause/resume). Keep it private.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub control_listen: SocketAddr,

    /// Seed of the exchange: the same seed gives the same catalogue and event sequence.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Number of series.
    #[arg(long, default_value_t = 10)]
    pub series: usize,

    /// Number of tradable markets kept open (lifecycle churn keeps the count near this).
    #[arg(long, default_value_t = 100)]
    pub markets: usize,

    /// Multivariate combo markets listed by /markets unless `mve_filter=exclude`
    /// (default: a fifth of --markets).
    #[arg(long)]
    pub mve_markets: Option<usize>,

    /// Exchange messages (deltas, trades, tickers, lifecycle) generated per second; 0 starts
    /// idle (use the control API's /advance).
    #[arg(long, default_value_t = 200)]
    pub rate: u64,

    /// Messages between lifecycle steps (create, close, determine, settle, pause, update);
    /// 0 turns lifecycle churn off.
    #[arg(long, default_value_t = 2000)]
    pub lifecycle_every: u64,

    /// Messages between two messages of a type no client models (`market_fee_update`, on the
    /// `market_lifecycle_v2` channel, as Kalshi adds types without notice; 0: never). Each is
    /// in the truth under its type: clients must keep it as sent.
    #[arg(long, default_value_t = 0)]
    pub unknown_every: u64,

    /// Also emit the legacy integer fields (cents, whole contracts) where exact.
    #[arg(long)]
    pub legacy_fields: bool,

    /// Ticker and lifecycle messages also carry a field no client models (`x_unmodelled`,
    /// placed first, with its own spacing and key order), as Kalshi adds fields without notice:
    /// a client that keeps messages as sent keeps it byte for byte.
    #[arg(long)]
    pub future_fields: bool,

    /// Hours of trades before the start, served by REST only: `GET /historical/trades` before
    /// the cutoff (half-way back, `GET /historical/cutoff`), `GET /markets/trades` from 10 min
    /// before it on (the tiers overlap). In the truth as `historical_trade` records.
    #[arg(long, default_value_t = 0)]
    pub history_hours: u32,

    /// Trades per second of that history.
    #[arg(long, default_value_t = 2)]
    pub history_rate: u64,

    /// Markets that opened and settled in the history before the cutoff: served only by
    /// `GET /historical/markets` (as Kalshi's settled markets are), with a third of the
    /// history's trades in their lifetimes; in the truth as `historical_market` records.
    #[arg(long, default_value_t = 0)]
    pub history_markets: usize,

    /// Seconds between trading halts (0: none). A halt sets `/exchange/status`'s
    /// `trading_active` to false for `--halt-secs`; `/exchange/schedule` lists the next one as
    /// a maintenance window. Both are in the truth (`exchange_status`, `exchange_schedule`).
    /// The order flow goes on: a halt is the exchange's announcement only.
    #[arg(long, default_value_t = 0)]
    pub halt_every_secs: u64,

    /// How long each halt lasts.
    #[arg(long, default_value_t = 5)]
    pub halt_secs: u64,

    /// PEM public key (SPKI or PKCS#1; a private key also works) that signs every request.
    #[arg(long, value_name = "PEM")]
    pub public_key: Option<PathBuf>,

    /// With --public-key: the only KALSHI-ACCESS-KEY accepted.
    #[arg(long)]
    pub key_id: Option<String>,

    /// Require the authentication headers even without --public-key.
    #[arg(long)]
    pub require_auth: bool,

    /// Largest accepted difference between KALSHI-ACCESS-TIMESTAMP and this clock.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub auth_max_skew: Duration,

    /// Interval of the `heartbeat` Ping frames.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub ping_interval: Duration,

    /// Close a WebSocket that sent nothing (not even a Pong) for this long; 0 never.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub client_timeout: Duration,

    /// Largest WebSocket message accepted from a client, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub ws_max_frame_bytes: usize,

    /// Largest number of markets in one subscription (error 26 beyond).
    #[arg(long, default_value_t = 25_000)]
    pub max_markets_per_subscription: usize,

    /// WebSocket commands allowed per second per connection (error 27 beyond).
    #[arg(long, default_value_t = 100)]
    pub ws_command_rate: u32,

    /// Most simultaneous WebSocket connections (HTTP 503 beyond).
    #[arg(long, default_value_t = 1000)]
    pub max_connections: usize,

    /// Batches of events buffered for subscribers; a subscriber further behind than this is
    /// sent error 25 and loses its subscriptions, as on Kalshi.
    #[arg(long, default_value_t = 2048)]
    pub fanout_buffer: usize,

    /// Drop a connection whose socket accepts nothing for this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub slow_client_timeout: Duration,

    /// REST token bucket refill, tokens per second (each request costs 10; 200 = Basic tier).
    #[arg(long, default_value_t = 200)]
    pub rest_rate: u32,

    /// REST token bucket capacity (default: one second of --rest-rate).
    #[arg(long)]
    pub rest_burst: Option<u32>,

    /// Trades kept for GET /markets/trades (oldest dropped beyond; about 70 bytes each).
    #[arg(long, default_value_t = 1_000_000)]
    pub trade_history: usize,

    /// Where to write the ground truth log (default: a temporary file removed at exit).
    /// It grows by about 300 bytes per message (6 MB/s at 20,000 msg/s).
    #[arg(long)]
    pub truth_file: Option<PathBuf>,

    /// Stop publishing (with an error in the log and /stats) once the ground truth reaches
    /// this size, rather than fill the disk; 0 means no limit.
    #[arg(long, default_value_t = 0)]
    pub truth_limit_bytes: u64,

    /// Write the bound addresses as JSON to this file once listening.
    #[arg(long)]
    pub addr_file: Option<PathBuf>,

    /// Log filter (RUST_LOG syntax).
    #[arg(long, default_value = "info", env = "RUST_LOG")]
    pub log: String,
}

/// Runtime settings (validated [`Cli`]).
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub listen: SocketAddr,
    pub control_listen: SocketAddr,
    pub seed: u64,
    pub series: usize,
    pub markets: usize,
    pub mve_markets: usize,
    pub rate: u64,
    pub lifecycle_every: u64,
    pub unknown_every: u64,
    pub legacy_fields: bool,
    pub future_fields: bool,
    pub history_hours: u32,
    pub history_rate: u64,
    pub history_markets: usize,
    pub halt_every_secs: u64,
    pub halt_secs: u64,
    pub public_key_pem: Option<Vec<u8>>,
    pub key_id: Option<String>,
    pub require_auth: bool,
    pub auth_max_skew: Duration,
    pub ping_interval: Duration,
    pub client_timeout: Option<Duration>,
    pub ws_max_frame_bytes: usize,
    pub max_markets_per_subscription: usize,
    pub ws_command_rate: u32,
    pub max_connections: usize,
    pub fanout_buffer: usize,
    pub slow_client_timeout: Duration,
    pub rest_rate: u32,
    pub rest_burst: u32,
    pub trade_history: usize,
    pub truth_file: Option<PathBuf>,
    pub truth_limit_bytes: Option<u64>,
    /// Engine tick; events generated in one tick share a timestamp.
    pub tick: Duration,
}

impl SimConfig {
    /// Defaults for tests: loopback, port 0, a small idle exchange.
    pub fn for_tests(seed: u64, markets: usize) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            control_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            seed,
            series: 5,
            markets,
            mve_markets: markets / 5,
            rate: 0,
            lifecycle_every: 0,
            unknown_every: 0,
            legacy_fields: false,
            future_fields: false,
            history_hours: 0,
            history_rate: 2,
            history_markets: 0,
            halt_every_secs: 0,
            halt_secs: 5,
            public_key_pem: None,
            key_id: None,
            require_auth: false,
            auth_max_skew: Duration::from_secs(30),
            ping_interval: Duration::from_secs(10),
            client_timeout: None,
            ws_max_frame_bytes: 1 << 20,
            max_markets_per_subscription: 25_000,
            ws_command_rate: 100,
            max_connections: 1000,
            fanout_buffer: 2048,
            slow_client_timeout: Duration::from_secs(10),
            rest_rate: 100_000,
            rest_burst: 100_000,
            trade_history: 2_000_000,
            truth_file: None,
            truth_limit_bytes: None,
            tick: Duration::from_millis(5),
        }
    }
}

/// Command-line values that are each valid but do not make a simulator together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidArgs(pub String);

impl From<&str> for InvalidArgs {
    fn from(s: &str) -> Self {
        InvalidArgs(s.to_owned())
    }
}

impl From<String> for InvalidArgs {
    fn from(s: String) -> Self {
        InvalidArgs(s)
    }
}

impl TryFrom<&Cli> for SimConfig {
    type Error = InvalidArgs;

    fn try_from(cli: &Cli) -> Result<Self, InvalidArgs> {
        let public_key_pem = match &cli.public_key {
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|e| format!("--public-key: cannot read {}: {e}", path.display()))?,
            ),
            None => None,
        };
        if cli.key_id.is_some() && cli.public_key.is_none() {
            return Err("--key-id needs --public-key".into());
        }
        if cli.series == 0 {
            return Err("--series must be at least 1".into());
        }
        if cli.markets == 0 {
            return Err("--markets must be at least 1".into());
        }
        if cli.fanout_buffer == 0 {
            return Err("--fanout-buffer must be at least 1".into());
        }
        if cli.ping_interval.is_zero() {
            return Err("--ping-interval must be positive".into());
        }
        if cli.rest_rate == 0 {
            return Err("--rest-rate must be positive".into());
        }
        if cli.trade_history == 0 {
            return Err("--trade-history must be at least 1".into());
        }
        if cli.rate > 1_000_000 {
            return Err("--rate above 1,000,000 messages per second is not supported".into());
        }
        Ok(Self {
            listen: cli.listen,
            control_listen: cli.control_listen,
            seed: cli.seed,
            series: cli.series,
            markets: cli.markets,
            mve_markets: cli.mve_markets.unwrap_or(cli.markets / 5),
            rate: cli.rate,
            lifecycle_every: cli.lifecycle_every,
            unknown_every: cli.unknown_every,
            legacy_fields: cli.legacy_fields,
            future_fields: cli.future_fields,
            history_hours: cli.history_hours,
            history_rate: cli.history_rate,
            history_markets: cli.history_markets,
            halt_every_secs: cli.halt_every_secs,
            halt_secs: cli.halt_secs,
            public_key_pem,
            key_id: cli.key_id.clone(),
            require_auth: cli.require_auth,
            auth_max_skew: cli.auth_max_skew,
            ping_interval: cli.ping_interval,
            client_timeout: (!cli.client_timeout.is_zero()).then_some(cli.client_timeout),
            ws_max_frame_bytes: cli.ws_max_frame_bytes.max(1024),
            max_markets_per_subscription: cli.max_markets_per_subscription.max(1),
            ws_command_rate: cli.ws_command_rate.max(1),
            max_connections: cli.max_connections.max(1),
            fanout_buffer: cli.fanout_buffer,
            slow_client_timeout: cli.slow_client_timeout,
            rest_rate: cli.rest_rate,
            rest_burst: cli.rest_burst.unwrap_or(cli.rest_rate).max(10),
            trade_history: cli.trade_history,
            truth_file: cli.truth_file.clone(),
            truth_limit_bytes: (cli.truth_limit_bytes > 0).then_some(cli.truth_limit_bytes),
            tick: Duration::from_millis(5),
        })
    }
}
