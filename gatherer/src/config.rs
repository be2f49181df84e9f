//! `gatherer.toml`: the file format with its defaults, and the validated runtime settings.
//!
//! Every key can be overridden from the environment as `GATHERER__SECTION__KEY` (see
//! `kalshi_shared::config`). Secrets (the Kalshi private key, the database URL's password)
//! never appear in logs or `Debug` output.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use kalshi_shared::config::{ConfigError, duration, in_range, positive};
use kalshi_shared::retry::BackoffConfig;
use kalshi_shared::telemetry::LogFormat;
use serde::{Deserialize, Serialize};

use crate::store::writer::WriterConfig;
use crate::store::{StoreConfig, Stream, TimescaleMode};

/// The documented reference configuration: every key with its default. `--help` prints it
/// and a test checks that it parses to exactly the defaults below.
pub const REFERENCE: &str = include_str!("../../deploy/gatherer.reference.toml");

pub use kalshi_shared::config::Secret;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    /// This gatherer's name (g1, g2, ...): in Status, logs and gap records.
    pub gatherer_id: String,
    pub kalshi: KalshiSection,
    pub registry: RegistrySection,
    pub ws: WsSection,
    pub backfill: BackfillSection,
    pub store: StoreSection,
    pub api: ApiSection,
    pub http: HttpSection,
    pub log: LogSection,
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            gatherer_id: "g1".into(),
            kalshi: KalshiSection::default(),
            registry: RegistrySection::default(),
            ws: WsSection::default(),
            backfill: BackfillSection::default(),
            store: StoreSection::default(),
            api: ApiSection::default(),
            http: HttpSection::default(),
            log: LogSection::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KalshiSection {
    pub rest_url: String,
    pub ws_url: String,
    /// API key id (KALSHI-ACCESS-KEY). Without it requests are not signed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// PEM private key file (PKCS#1 or PKCS#8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key_file: Option<PathBuf>,
    /// The PEM itself (meant for GATHERER__KALSHI__PRIVATE_KEY_PEM); wins over the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key_pem: Option<Secret>,
    /// REST requests per second across registry and backfill (Basic tier: 20).
    pub rest_rate_per_s: u32,
    pub rest_burst: u32,
    #[serde(with = "duration")]
    pub rest_timeout: Duration,
    pub rest_max_body_bytes: usize,
    #[serde(with = "duration")]
    pub rest_retry_initial: Duration,
    #[serde(with = "duration")]
    pub rest_retry_max: Duration,
    pub rest_max_attempts: u32,
}

impl Default for KalshiSection {
    fn default() -> Self {
        Self {
            rest_url: "https://external-api.kalshi.com/trade-api/v2".into(),
            ws_url: "wss://external-api-ws.kalshi.com/trade-api/ws/v2".into(),
            key_id: None,
            private_key_file: None,
            private_key_pem: None,
            rest_rate_per_s: 10,
            rest_burst: 10,
            rest_timeout: Duration::from_secs(15),
            rest_max_body_bytes: 32 << 20,
            rest_retry_initial: Duration::from_millis(250),
            rest_retry_max: Duration::from_secs(30),
            rest_max_attempts: 12,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySection {
    /// Series to collect (empty: all).
    pub series: Vec<String>,
    /// Categories to collect (empty: all).
    pub categories: Vec<String>,
    /// `exclude` (default), `only`, or `all`: multivariate combo markets.
    pub mve_filter: String,
    /// Also subscribe markets that have not opened yet.
    pub include_unopened: bool,
    #[serde(with = "duration")]
    pub reconcile_interval: Duration,
    pub page_limit: u32,
    /// Most markets tracked; beyond it new markets are refused with an error log.
    pub max_markets: usize,
}

impl Default for RegistrySection {
    fn default() -> Self {
        Self {
            series: Vec::new(),
            categories: Vec::new(),
            mve_filter: "exclude".into(),
            include_unopened: true,
            reconcile_interval: Duration::from_secs(300),
            page_limit: 1000,
            max_markets: 20_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WsSection {
    /// WebSocket connections; markets are sharded over them.
    pub connections: u32,
    #[serde(with = "duration")]
    pub ping_interval: Duration,
    /// A connection that receives nothing (not even a pong) for this long is torn down.
    #[serde(with = "duration")]
    pub silence_timeout: Duration,
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// How long a command may wait for its reply.
    #[serde(with = "duration")]
    pub command_timeout: Duration,
    pub max_frame_bytes: usize,
    #[serde(with = "duration")]
    pub reconnect_initial: Duration,
    #[serde(with = "duration")]
    pub reconnect_max: Duration,
    /// Markets per subscribe / update_subscription command.
    pub subscribe_batch: usize,
    /// Widening of every declared gap on both sides, for clock differences.
    #[serde(with = "duration")]
    pub gap_margin: Duration,
}

impl Default for WsSection {
    fn default() -> Self {
        Self {
            connections: 4,
            ping_interval: Duration::from_secs(10),
            silence_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(10),
            max_frame_bytes: 16 << 20,
            reconnect_initial: Duration::from_millis(250),
            reconnect_max: Duration::from_secs(30),
            subscribe_batch: 500,
            gap_margin: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackfillSection {
    pub enabled: bool,
    /// Widening of every backfill window on both sides.
    #[serde(with = "duration")]
    pub margin: Duration,
    /// Farthest back a backfill reaches; older holes are declared as gaps.
    #[serde(with = "duration")]
    pub max_lookback: Duration,
    pub page_limit: u32,
    /// WebSocket down this long (REST answering): switch to REST polling.
    #[serde(with = "duration")]
    pub polling_after: Duration,
    #[serde(with = "duration")]
    pub polling_interval: Duration,
    /// Take REST order-book snapshots while polling.
    pub rest_snapshots: bool,
}

impl Default for BackfillSection {
    fn default() -> Self {
        Self {
            enabled: true,
            margin: Duration::from_secs(5),
            max_lookback: Duration::from_secs(6 * 3600),
            page_limit: 1000,
            polling_after: Duration::from_secs(30),
            polling_interval: Duration::from_secs(5),
            rest_snapshots: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSection {
    /// How long each table keeps rows ("0s": forever).
    #[serde(with = "duration")]
    pub trades: Duration,
    #[serde(with = "duration")]
    pub orderbook_deltas: Duration,
    #[serde(with = "duration")]
    pub orderbook_snapshots: Duration,
    #[serde(with = "duration")]
    pub tickers: Duration,
    #[serde(with = "duration")]
    pub lifecycle: Duration,
    #[serde(with = "duration")]
    pub markets: Duration,
    #[serde(with = "duration")]
    pub events: Duration,
    #[serde(with = "duration")]
    pub series: Duration,
    #[serde(with = "duration")]
    pub gaps: Duration,
}

const DAY: Duration = Duration::from_secs(86_400);

impl Default for RetentionSection {
    fn default() -> Self {
        Self {
            trades: DAY * 30,
            orderbook_deltas: DAY * 7,
            orderbook_snapshots: DAY * 30,
            tickers: DAY * 7,
            lifecycle: DAY * 90,
            markets: Duration::ZERO,
            events: Duration::ZERO,
            series: Duration::ZERO,
            gaps: Duration::ZERO,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    pub database_url: Secret,
    pub pool_max: u32,
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// Deadline of every database call.
    #[serde(with = "duration")]
    pub op_timeout: Duration,
    /// How long start-up waits for the database.
    #[serde(with = "duration")]
    pub startup_timeout: Duration,
    pub batch_rows: usize,
    #[serde(with = "duration")]
    pub batch_interval: Duration,
    /// Rows a writer holds while the database is unavailable, per table.
    pub buffer_rows: usize,
    pub channel_rows: usize,
    /// How long shutdown waits for writers to flush.
    #[serde(with = "duration")]
    pub flush_deadline: Duration,
    /// Where rows the database never took before the flush deadline are kept, per database,
    /// and loaded at the next start ("": nowhere, they are lost and counted).
    pub spill_dir: PathBuf,
    #[serde(with = "duration")]
    pub retry_initial: Duration,
    #[serde(with = "duration")]
    pub retry_max: Duration,
    #[serde(with = "duration")]
    pub maintenance_interval: Duration,
    pub timescaledb: TimescaleMode,
    pub retention: RetentionSection,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            database_url: Secret("postgres://gatherer@127.0.0.1:5432/kalshi".into()),
            pool_max: 24,
            connect_timeout: Duration::from_secs(5),
            op_timeout: Duration::from_secs(30),
            startup_timeout: Duration::from_secs(120),
            batch_rows: 5000,
            batch_interval: Duration::from_millis(50),
            buffer_rows: 500_000,
            channel_rows: 20_000,
            flush_deadline: Duration::from_secs(20),
            spill_dir: PathBuf::from("/var/lib/kalshi-gatherer/spill"),
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            maintenance_interval: Duration::from_secs(3600),
            timescaledb: TimescaleMode::Auto,
            retention: RetentionSection::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSection {
    pub listen: SocketAddr,
    /// Largest page a Read or Tail message carries (larger requests are clamped).
    pub max_page: u32,
    /// Page size when a request says 0.
    pub default_page: u32,
    pub max_message_bytes: usize,
    /// An idle Tail sends an empty message with the head this often.
    #[serde(with = "duration")]
    pub tail_heartbeat: Duration,
    /// Most concurrent Tail streams.
    pub max_tail_streams: usize,
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 50051)),
            max_page: 5000,
            default_page: 1000,
            max_message_bytes: 16 << 20,
            tail_heartbeat: Duration::from_secs(5),
            max_tail_streams: 64,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    /// `GET /health`.
    pub listen: SocketAddr,
    /// `GET /metrics`.
    pub metrics_listen: SocketAddr,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            metrics_listen: SocketAddr::from(([0, 0, 0, 0], 9090)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// RUST_LOG syntax.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Multivariate-market filter for `GET /markets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MveFilter {
    Exclude,
    Only,
    All,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub gatherer_id: String,
    pub kalshi: KalshiSection,
    pub private_key_pem: Option<Secret>,
    pub registry: RegistrySection,
    pub mve_filter: MveFilter,
    pub ws: WsSection,
    pub ws_backoff: BackoffConfig,
    pub rest_backoff: BackoffConfig,
    pub backfill: BackfillSection,
    pub store: StoreConfig,
    pub api: ApiSection,
    pub http: HttpSection,
    pub log: LogSection,
}

fn backoff(key: &str, initial: Duration, max: Duration) -> Result<BackoffConfig, ConfigError> {
    BackoffConfig::new(initial, max).map_err(|e| ConfigError::key(key, e))
}

impl FileConfig {
    /// A gatherer on loopback for tests and local stacks: ports 0, fast timings (sub-second
    /// reconnects, 3 s silence timeout, 20 ms batches). Not a production profile.
    pub fn fast_local(
        gatherer_id: &str,
        rest_url: String,
        ws_url: String,
        key_id: &str,
        private_key_file: PathBuf,
        database_url: &str,
    ) -> FileConfig {
        let mut c = FileConfig {
            gatherer_id: gatherer_id.into(),
            ..Default::default()
        };
        c.kalshi.rest_url = rest_url;
        c.kalshi.ws_url = ws_url;
        c.kalshi.key_id = Some(key_id.into());
        c.kalshi.private_key_file = Some(private_key_file);
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
        c.store.database_url = Secret(database_url.into());
        c.store.batch_interval = Duration::from_millis(20);
        c.store.retry_initial = Duration::from_millis(50);
        c.store.retry_max = Duration::from_millis(500);
        c.store.op_timeout = Duration::from_secs(10);
        c.store.connect_timeout = Duration::from_secs(2);
        c.store.startup_timeout = Duration::from_secs(20);
        c.store.timescaledb = TimescaleMode::Off;
        // Shared by every local database: each gets its own subdirectory (its instance id).
        c.store.spill_dir = std::env::temp_dir().join("kalshi-gatherer-spill");
        c.api.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        c.api.tail_heartbeat = Duration::from_millis(500);
        c.http.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        c.http.metrics_listen = SocketAddr::from(([127, 0, 0, 1], 0));
        c
    }

    /// Validates every value and reads the private key file.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let FileConfig {
            gatherer_id,
            kalshi,
            registry,
            ws,
            backfill,
            store,
            api,
            http,
            log,
        } = self;
        if gatherer_id.is_empty()
            || !gatherer_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            || gatherer_id.len() > 64
        {
            return Err(ConfigError::key(
                "gatherer_id",
                "must be 1-64 letters, digits, '-' or '_'",
            ));
        }
        for (key, url, schemes) in [
            ("kalshi.rest_url", &kalshi.rest_url, ["http://", "https://"]),
            ("kalshi.ws_url", &kalshi.ws_url, ["ws://", "wss://"]),
        ] {
            if !schemes.iter().any(|s| url.starts_with(s)) {
                return Err(ConfigError::key(
                    key,
                    format!("must start with {} or {}", schemes[0], schemes[1]),
                ));
            }
        }
        if !kalshi.ws_url.ends_with(kalshi_shared::wire::ws::WS_PATH) {
            return Err(ConfigError::key(
                "kalshi.ws_url",
                format!("must end with {}", kalshi_shared::wire::ws::WS_PATH),
            ));
        }
        if !kalshi
            .rest_url
            .trim_end_matches('/')
            .ends_with(kalshi_shared::wire::rest::REST_PREFIX)
        {
            return Err(ConfigError::key(
                "kalshi.rest_url",
                format!("must end with {}", kalshi_shared::wire::rest::REST_PREFIX),
            ));
        }
        in_range("kalshi.rest_rate_per_s", kalshi.rest_rate_per_s, 1, 10_000)?;
        in_range("kalshi.rest_burst", kalshi.rest_burst, 1, 100_000)?;
        positive("kalshi.rest_timeout", kalshi.rest_timeout)?;
        in_range(
            "kalshi.rest_max_body_bytes",
            kalshi.rest_max_body_bytes,
            1024,
            1 << 30,
        )?;
        in_range(
            "kalshi.rest_max_attempts",
            kalshi.rest_max_attempts,
            1,
            1000,
        )?;
        let rest_backoff = backoff(
            "kalshi.rest_retry_initial",
            kalshi.rest_retry_initial,
            kalshi.rest_retry_max,
        )?;
        let private_key_pem = match (&kalshi.private_key_pem, &kalshi.private_key_file) {
            (Some(pem), _) => Some(pem.clone()),
            (None, Some(path)) => Some(Secret(std::fs::read_to_string(path).map_err(|e| {
                ConfigError::key(
                    "kalshi.private_key_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?)),
            (None, None) => None,
        };
        match (&kalshi.key_id, &private_key_pem) {
            (Some(_), None) => {
                return Err(ConfigError::key(
                    "kalshi.private_key_file",
                    "kalshi.key_id is set but no private key (private_key_file or private_key_pem)",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::key(
                    "kalshi.key_id",
                    "a private key is configured but no key id",
                ));
            }
            (Some(id), Some(pem)) => {
                kalshi_shared::auth::Signer::from_pem(id.clone(), pem.0.as_bytes())
                    .map_err(|e| ConfigError::key("kalshi.private_key_file", e))?;
            }
            (None, None) => {}
        }
        let mve_filter = match registry.mve_filter.as_str() {
            "exclude" => MveFilter::Exclude,
            "only" => MveFilter::Only,
            "all" => MveFilter::All,
            other => {
                return Err(ConfigError::key(
                    "registry.mve_filter",
                    format!("{other:?}: use exclude, only or all"),
                ));
            }
        };
        positive("registry.reconcile_interval", registry.reconcile_interval)?;
        in_range("registry.page_limit", registry.page_limit, 1, 1000)?;
        in_range("registry.max_markets", registry.max_markets, 1, 1_000_000)?;
        in_range("ws.connections", ws.connections, 1, 256)?;
        positive("ws.ping_interval", ws.ping_interval)?;
        positive("ws.silence_timeout", ws.silence_timeout)?;
        if ws.silence_timeout <= ws.ping_interval {
            return Err(ConfigError::key(
                "ws.silence_timeout",
                "must be longer than ws.ping_interval (a pong answers each ping)",
            ));
        }
        positive("ws.connect_timeout", ws.connect_timeout)?;
        positive("ws.command_timeout", ws.command_timeout)?;
        in_range("ws.max_frame_bytes", ws.max_frame_bytes, 64 * 1024, 1 << 30)?;
        in_range("ws.subscribe_batch", ws.subscribe_batch, 1, 10_000)?;
        let ws_backoff = backoff(
            "ws.reconnect_initial",
            ws.reconnect_initial,
            ws.reconnect_max,
        )?;
        in_range("backfill.page_limit", backfill.page_limit, 1, 1000)?;
        positive("backfill.max_lookback", backfill.max_lookback)?;
        positive("backfill.polling_after", backfill.polling_after)?;
        positive("backfill.polling_interval", backfill.polling_interval)?;
        if !(store.database_url.0.starts_with("postgres://")
            || store.database_url.0.starts_with("postgresql://"))
        {
            return Err(ConfigError::key(
                "store.database_url",
                "must be a postgres:// or postgresql:// URL",
            ));
        }
        store
            .database_url
            .0
            .parse::<sqlx::postgres::PgConnectOptions>()
            .map_err(|e| {
                ConfigError::key("store.database_url", format!("not a PostgreSQL URL: {e}"))
            })?;
        in_range("store.pool_max", store.pool_max, 12, 1000)?;
        positive("store.connect_timeout", store.connect_timeout)?;
        positive("store.op_timeout", store.op_timeout)?;
        in_range("store.batch_rows", store.batch_rows, 1, 1_000_000)?;
        positive("store.batch_interval", store.batch_interval)?;
        in_range(
            "store.buffer_rows",
            store.buffer_rows,
            store.batch_rows,
            100_000_000,
        )?;
        in_range("store.channel_rows", store.channel_rows, 1, 10_000_000)?;
        positive("store.maintenance_interval", store.maintenance_interval)?;
        let writer_backoff = backoff("store.retry_initial", store.retry_initial, store.retry_max)?;
        let r = &store.retention;
        let mut retention = HashMap::new();
        for (stream, d) in [
            (Stream::Trades, r.trades),
            (Stream::OrderbookDeltas, r.orderbook_deltas),
            (Stream::OrderbookSnapshots, r.orderbook_snapshots),
            (Stream::Tickers, r.tickers),
            (Stream::Lifecycle, r.lifecycle),
            (Stream::Markets, r.markets),
            (Stream::Events, r.events),
            (Stream::Series, r.series),
            (Stream::Gaps, r.gaps),
        ] {
            if d.is_zero() {
                continue;
            }
            if d < DAY {
                return Err(ConfigError::key(
                    &format!("store.retention.{}", stream.table()),
                    "must be at least 1d (partitions are daily) or 0s to keep forever",
                ));
            }
            retention.insert(stream, d);
        }
        in_range("api.max_page", api.max_page, 1, 100_000)?;
        in_range("api.default_page", api.default_page, 1, api.max_page)?;
        in_range(
            "api.max_message_bytes",
            api.max_message_bytes,
            64 * 1024,
            1 << 30,
        )?;
        positive("api.tail_heartbeat", api.tail_heartbeat)?;
        in_range("api.max_tail_streams", api.max_tail_streams, 1, 10_000)?;
        if tracing_subscriber_filter_invalid(&log.level) {
            return Err(ConfigError::key(
                "log.level",
                format!("{:?} is not a valid log filter", log.level),
            ));
        }
        let store_cfg = StoreConfig {
            database_url: store.database_url.clone(),
            pool_max: store.pool_max,
            connect_timeout: store.connect_timeout,
            op_timeout: store.op_timeout,
            startup_timeout: store.startup_timeout,
            writer: WriterConfig {
                batch_rows: store.batch_rows,
                batch_interval: store.batch_interval,
                buffer_rows: store.buffer_rows,
                op_timeout: store.op_timeout,
                backoff: writer_backoff,
            },
            channel_rows: store.channel_rows,
            retention,
            timescaledb: store.timescaledb,
            maintenance_interval: store.maintenance_interval,
            flush_deadline: store.flush_deadline,
            spill_dir: (!store.spill_dir.as_os_str().is_empty()).then(|| store.spill_dir.clone()),
        };
        Ok(Config {
            gatherer_id,
            private_key_pem,
            kalshi,
            registry,
            mve_filter,
            ws,
            ws_backoff,
            rest_backoff,
            backfill,
            store: store_cfg,
            api,
            http,
            log,
        })
    }
}

fn tracing_subscriber_filter_invalid(level: &str) -> bool {
    level
        .split(',')
        .any(|d| d.trim().is_empty() || d.contains(char::is_whitespace))
}

/// Loads `path` (if any) plus `GATHERER__*` variables, then validates.
pub fn load(path: Option<&std::path::Path>) -> Result<Config, ConfigError> {
    let file: FileConfig = kalshi_shared::config::load(path, "GATHERER", std::env::vars())?;
    file.validate()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_file_is_exactly_the_defaults() {
        let parsed: FileConfig = toml::from_str(REFERENCE).expect("reference parses");
        assert_eq!(parsed, FileConfig::default());
    }

    #[test]
    fn defaults_validate() {
        FileConfig::default().validate().unwrap();
    }

    #[test]
    fn bad_values_name_their_key() {
        type Mutate = fn(&mut FileConfig);
        let cases: Vec<(Mutate, &str)> = vec![
            (|c| c.gatherer_id = "bad id".into(), "gatherer_id"),
            (
                |c| c.kalshi.ws_url = "http://x/trade-api/ws/v2".into(),
                "kalshi.ws_url",
            ),
            (
                |c| c.kalshi.rest_url = "https://x/v2".into(),
                "kalshi.rest_url",
            ),
            (
                |c| c.kalshi.key_id = Some("k".into()),
                "kalshi.private_key_file",
            ),
            (
                |c| c.kalshi.private_key_file = Some("/nonexistent.pem".into()),
                "kalshi.private_key_file",
            ),
            (
                |c| c.registry.mve_filter = "some".into(),
                "registry.mve_filter",
            ),
            (|c| c.ws.connections = 0, "ws.connections"),
            (
                |c| c.ws.silence_timeout = Duration::from_secs(5),
                "ws.silence_timeout",
            ),
            (
                |c| c.store.database_url = Secret("mysql://x".into()),
                "store.database_url",
            ),
            (|c| c.store.buffer_rows = 10, "store.buffer_rows"),
            (
                |c| c.store.retention.tickers = Duration::from_secs(60),
                "store.retention.tickers",
            ),
            (|c| c.api.default_page = 10_000, "api.default_page"),
            (
                |c| c.ws.reconnect_max = Duration::from_millis(1),
                "ws.reconnect_initial",
            ),
        ];
        for (mutate, key) in cases {
            let mut c = FileConfig::default();
            mutate(&mut c);
            let e = c.validate().unwrap_err();
            assert!(e.0.starts_with(&format!("{key}:")), "{key}: {e}");
            assert!(!e.0.contains('\n'));
        }
    }

    #[test]
    fn secrets_never_show() {
        let mut c = FileConfig::default();
        c.store.database_url = Secret("postgres://u:hunter2@h/db".into());
        c.kalshi.private_key_pem = Some(Secret("-----BEGIN PRIVATE KEY-----".into()));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2") && !dbg.contains("BEGIN"), "{dbg}");
        let runtime = format!("{:?}", c.validate().unwrap_err());
        assert!(!runtime.contains("hunter2"));
        let mut c = FileConfig::default();
        c.store.database_url = Secret("postgres://u:hunter2@h/db".into());
        let dbg = format!("{:?}", c.validate().unwrap());
        assert!(!dbg.contains("hunter2"), "{dbg}");
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    fn load_example(name: &str) -> FileConfig {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy")
            .join(name);
        kalshi_shared::config::load(Some(&path), "GATHERER_EXAMPLE_TEST", Vec::new())
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn the_example_configs_are_valid() {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut sim = load_example("gatherer.sim.toml");
        sim.kalshi.private_key_file = sim.kalshi.private_key_file.map(|p| repo.join(p));
        sim.validate().unwrap();
        let mut prod = load_example("gatherer.production.toml");
        assert!(
            prod.kalshi
                .ws_url
                .starts_with("wss://external-api-ws.kalshi.com")
        );
        // The key file lives on the production host; use the test key to validate the rest.
        prod.kalshi.key_id = Some("k".into());
        prod.kalshi.private_key_file = Some(repo.join("shared/testdata/rsa-pkcs8.pem"));
        prod.validate().unwrap();
    }
}
