//! `gatherer.toml`'s format: every section and key with its default. The gatherer validates
//! it (`gatherer::config`); the stack and the tests write it from these types, so a renamed
//! key fails to compile instead of failing at run time.
//!
//! It must never validate or read files (that is the gatherer's), nor hold a key the gatherer
//! does not read.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{HttpSection, LogSection, Secret, duration};

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
    /// A file holding the key id (instead of key_id): with private_key_file, what a key
    /// rotation rewrites before `systemctl reload` (SIGHUP) makes the gatherer re-read both.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id_file: Option<PathBuf>,
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
            key_id_file: None,
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
    /// How often `/exchange/status` is polled (trading halts, the exchange down); each change
    /// is stored in the `exchange` stream. 0s: never.
    #[serde(with = "duration")]
    pub exchange_status_interval: Duration,
    /// How often `/exchange/schedule` is polled (trading hours, maintenance windows). 0s: never.
    #[serde(with = "duration")]
    pub exchange_schedule_interval: Duration,
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
            exchange_status_interval: Duration::from_secs(10),
            exchange_schedule_interval: Duration::from_secs(300),
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
    /// How long an order-book snapshot waits for a delta after it before it is stored (its
    /// splice point is then the last delta's millisecond, or, with none, its receipt plus half
    /// of this: clocks and delivery must be within half of it). See docs/gatherer.md.
    #[serde(with = "duration")]
    pub snapshot_hold: Duration,
    /// Every this long, each subscribed market whose book changed since its last stored
    /// snapshot is stored again (the book the gatherer maintains: the exchange's snapshot plus
    /// every delta since, at an exact splice point), so a rebuild of the book at any time
    /// starts at most this far back. "0s": only at (re)subscription.
    #[serde(with = "duration")]
    pub snapshot_every: Duration,
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
            snapshot_hold: Duration::from_secs(2),
            snapshot_every: Duration::from_secs(300),
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
    #[serde(with = "duration")]
    pub unknown_messages: Duration,
    #[serde(with = "duration")]
    pub exchange: Duration,
}

pub const DAY: Duration = Duration::from_secs(86_400);

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
            unknown_messages: DAY * 90,
            exchange: Duration::ZERO,
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
    /// How long a writer lingers for more rows after taking what is queued. 0: none, commit
    /// as soon as the previous commit finished (group commit), at the price of many more,
    /// smaller transactions.
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
            batch_interval: Duration::from_millis(10),
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
    /// Bytes of Read and Tail pages read and not yet taken by gRPC, across all calls: readers
    /// that do not read cannot make the gatherer hold more.
    pub read_buffer_bytes: usize,
    /// Plaintext gRPC, said explicitly (tests, one trusted host). Without it `[api.tls]` is
    /// required: the deduplicator and the gatherer authenticate each other (mTLS).
    pub insecure: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ApiTlsSection>,
}

/// mTLS of the gRPC API: this gatherer's certificate, the CA its clients' certificates must
/// chain to, and the client names (DNS subject alternative names) it accepts. The files are
/// re-read when they change (rotation without a restart).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTlsSection {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: PathBuf,
    pub allowed_clients: Vec<String>,
    /// A client that has not finished its TLS handshake by then is dropped.
    #[serde(with = "duration", default = "default_handshake_timeout")]
    pub handshake_timeout: Duration,
    /// TLS handshakes in progress at once.
    #[serde(default = "default_max_handshakes")]
    pub max_handshakes: usize,
}

fn default_handshake_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_handshakes() -> usize {
    64
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
            read_buffer_bytes: 64 << 20,
            insecure: false,
            tls: None,
        }
    }
}

/// Whether to use TimescaleDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimescaleMode {
    /// Use it when the extension is installed, else native partitioning.
    Auto,
    /// Never use it.
    Off,
    /// Refuse to start without it.
    Require,
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
        // Plaintext gRPC on loopback, said explicitly (the stack sets up mTLS itself).
        c.api.insecure = true;
        c.ws.connections = 3;
        c.ws.ping_interval = Duration::from_millis(500);
        c.ws.silence_timeout = Duration::from_secs(3);
        c.ws.reconnect_initial = Duration::from_millis(50);
        c.ws.reconnect_max = Duration::from_millis(500);
        c.ws.command_timeout = Duration::from_secs(5);
        c.ws.gap_margin = Duration::from_millis(100);
        c.ws.snapshot_hold = Duration::from_secs(1);
        // Off: the gatherer's own tests count the snapshots of (re)subscriptions exactly.
        c.ws.snapshot_every = Duration::ZERO;
        c.registry.reconcile_interval = Duration::from_secs(30);
        c.registry.exchange_status_interval = Duration::from_millis(500);
        c.registry.exchange_schedule_interval = Duration::from_millis(500);
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
}
