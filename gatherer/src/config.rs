//! `gatherer.toml`: the file format with its defaults, and the validated runtime settings.
//!
//! Every key can be overridden from the environment as `GATHERER__SECTION__KEY` (see
//! `kalshi_shared::config`). Secrets (the Kalshi private key, the database URL's password)
//! never appear in logs or `Debug` output.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kalshi_shared::config::{ConfigError, check_pg_url, in_range, positive};
use kalshi_shared::retry::BackoffConfig;
use kalshi_shared::tls::{ServerTls, TlsFiles};

use crate::store::writer::WriterConfig;
use crate::store::{StoreConfig, Stream};

/// The documented reference configuration: every key with its default. `--help` prints it
/// and a test checks that it parses to exactly the defaults below.
pub const REFERENCE: &str = include_str!("../../deploy/gatherer.reference.toml");

pub use kalshi_shared::config::Secret;
pub use kalshi_shared::config::gatherer::*;
pub use kalshi_shared::config::{HttpSection, LogSection};

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
    /// The key id and private key, read and checked (None: requests are not signed).
    pub credentials: Option<Credentials>,
    pub registry: RegistrySection,
    pub mve_filter: MveFilter,
    pub ws: WsSection,
    pub ws_backoff: BackoffConfig,
    pub rest_backoff: BackoffConfig,
    pub backfill: BackfillSection,
    pub store: StoreConfig,
    pub api: ApiSection,
    /// The gRPC API's mTLS (None: plaintext, `api.insecure`).
    pub api_tls: Option<Arc<ServerTls>>,
    pub http: HttpSection,
    pub log: LogSection,
}

fn backoff(key: &str, initial: Duration, max: Duration) -> Result<BackoffConfig, ConfigError> {
    BackoffConfig::new(initial, max).map_err(|e| ConfigError::key(key, e))
}

/// Validation: the file format lives in `kalshi_shared::config::gatherer`; what it means
/// (and whether the files it names exist) is decided here.
/// A Kalshi API key: its id and its PEM private key, parsed once to prove they load.
#[derive(Clone)]
pub struct Credentials {
    pub key_id: String,
    pub private_key_pem: Secret,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("key_id", &self.key_id)
            .field("private_key_pem", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    pub fn signer(&self) -> Result<kalshi_shared::auth::Signer, kalshi_shared::auth::KeyError> {
        kalshi_shared::auth::Signer::from_pem(
            self.key_id.clone(),
            self.private_key_pem.0.as_bytes(),
        )
    }
}

/// Reads the key id (`key_id` or `key_id_file`) and the private key (`private_key_pem` or
/// `private_key_file`) and checks that they make a signer. At start-up and at every reload
/// (SIGHUP), so a rotation that wrote a bad file is refused and the running key kept.
pub fn load_credentials(kalshi: &KalshiSection) -> Result<Option<Credentials>, ConfigError> {
    let key_id = match (&kalshi.key_id, &kalshi.key_id_file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::key(
                "kalshi.key_id_file",
                "set kalshi.key_id or kalshi.key_id_file, not both",
            ));
        }
        (Some(id), None) => Some(id.clone()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::key(
                    "kalshi.key_id_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let id = text.trim();
            if id.is_empty() || id.len() > 200 || id.chars().any(|c| c.is_control()) {
                return Err(ConfigError::key(
                    "kalshi.key_id_file",
                    format!("{} does not hold one key id", path.display()),
                ));
            }
            Some(id.to_owned())
        }
        (None, None) => None,
    };
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
    match (key_id, private_key_pem) {
        (Some(_), None) => Err(ConfigError::key(
            "kalshi.private_key_file",
            "kalshi.key_id is set but no private key (private_key_file or private_key_pem)",
        )),
        (None, Some(_)) => Err(ConfigError::key(
            "kalshi.key_id",
            "a private key is configured but no key id",
        )),
        (Some(key_id), Some(private_key_pem)) => {
            let c = Credentials {
                key_id,
                private_key_pem,
            };
            c.signer()
                .map_err(|e| ConfigError::key("kalshi.private_key_file", e))?;
            Ok(Some(c))
        }
        (None, None) => Ok(None),
    }
}

pub trait Validate {
    fn validate(self) -> Result<Config, ConfigError>;
}

impl Validate for FileConfig {
    /// Validates every value and reads the private key file.
    fn validate(self) -> Result<Config, ConfigError> {
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
        http.validate()?;
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
        let credentials = load_credentials(&kalshi)?;
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
        for (key, d) in [
            (
                "registry.exchange_status_interval",
                registry.exchange_status_interval,
            ),
            (
                "registry.exchange_schedule_interval",
                registry.exchange_schedule_interval,
            ),
        ] {
            if !d.is_zero() && !(Duration::from_millis(100)..=DAY).contains(&d) {
                return Err(ConfigError::key(
                    key,
                    "must be between 100ms and 1d, or 0s to never poll",
                ));
            }
        }
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
        if !(Duration::from_millis(100)..=Duration::from_secs(60)).contains(&ws.snapshot_hold) {
            return Err(ConfigError::key(
                "ws.snapshot_hold",
                format!("{:?} is outside 100ms..=60s", ws.snapshot_hold),
            ));
        }
        if !ws.snapshot_every.is_zero()
            && !(Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&ws.snapshot_every)
        {
            return Err(ConfigError::key(
                "ws.snapshot_every",
                format!(
                    "{:?} is outside 1s..=24h (0s turns periodic snapshots off)",
                    ws.snapshot_every
                ),
            ));
        }
        let ws_backoff = backoff(
            "ws.reconnect_initial",
            ws.reconnect_initial,
            ws.reconnect_max,
        )?;
        in_range("backfill.page_limit", backfill.page_limit, 1, 1000)?;
        positive("backfill.max_lookback", backfill.max_lookback)?;
        positive("backfill.polling_after", backfill.polling_after)?;
        positive("backfill.polling_interval", backfill.polling_interval)?;
        check_pg_url("store.database_url", store.database_url.expose())?;
        in_range("store.pool_max", store.pool_max, 12, 1000)?;
        positive("store.connect_timeout", store.connect_timeout)?;
        positive("store.op_timeout", store.op_timeout)?;
        in_range("store.batch_rows", store.batch_rows, 1, 1_000_000)?;
        (store.batch_interval <= Duration::from_secs(60))
            .then_some(())
            .ok_or_else(|| ConfigError::key("store.batch_interval", "must be at most 1m"))?;
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
            (Stream::UnknownMessages, r.unknown_messages),
            (Stream::Exchange, r.exchange),
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
        in_range(
            "api.read_buffer_bytes",
            api.read_buffer_bytes,
            64 << 10,
            1 << 30,
        )?;
        let api_tls = api_tls(&api)?;
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
            credentials,
            kalshi,
            registry,
            mve_filter,
            ws,
            ws_backoff,
            rest_backoff,
            backfill,
            store: store_cfg,
            api,
            api_tls,
            http,
            log,
        })
    }
}

/// The gRPC API's mTLS, loaded (files that do not load are a configuration error), or None
/// for plaintext, which must be asked for.
fn api_tls(api: &ApiSection) -> Result<Option<Arc<ServerTls>>, ConfigError> {
    match (api.insecure, &api.tls) {
        (true, Some(_)) => Err(ConfigError::key(
            "api.insecure",
            "api.insecure = true and [api.tls] are both set: choose one",
        )),
        (false, None) => Err(ConfigError::key(
            "api.tls",
            "the gRPC API needs [api.tls] (mTLS with the deduplicator), or api.insecure = true for plaintext",
        )),
        (true, None) => Ok(None),
        (false, Some(t)) => {
            if t.allowed_clients.is_empty() {
                return Err(ConfigError::key(
                    "api.tls.allowed_clients",
                    "name at least one client (the deduplicator's certificate name)",
                ));
            }
            if !(Duration::from_millis(100)..=Duration::from_secs(300))
                .contains(&t.handshake_timeout)
            {
                return Err(ConfigError::key(
                    "api.tls.handshake_timeout",
                    "must be between 100ms and 5m",
                ));
            }
            in_range("api.tls.max_handshakes", t.max_handshakes, 1, 10_000)?;
            let files = TlsFiles {
                ca_file: t.client_ca_file.clone(),
                cert_file: t.cert_file.clone(),
                key_file: t.key_file.clone(),
            };
            ServerTls::load(files, t.allowed_clients.clone())
                .map(|t| Some(Arc::new(t)))
                .map_err(|e| ConfigError::key("api.tls", e))
        }
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

    /// Defaults with plaintext gRPC asked for: what most tests here start from.
    fn insecure() -> FileConfig {
        let mut c = FileConfig::default();
        c.api.insecure = true;
        c
    }

    #[test]
    fn defaults_require_mtls_unless_plaintext_is_asked_for() {
        let e = FileConfig::default().validate().unwrap_err();
        assert!(
            e.0.starts_with("api.tls: the gRPC API needs [api.tls]"),
            "{e}"
        );
        insecure().validate().unwrap();
    }

    #[test]
    fn tls_settings_are_checked_naming_the_key_and_file() {
        let tls = ApiTlsSection {
            cert_file: "/nonexistent/g1.crt".into(),
            key_file: "/nonexistent/g1.key".into(),
            client_ca_file: "/nonexistent/ca.crt".into(),
            allowed_clients: vec!["deduplicator".into()],
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 64,
        };
        let check = |mutate: &dyn Fn(&mut FileConfig), want: &str| {
            let mut c = FileConfig::default();
            c.api.tls = Some(tls.clone());
            mutate(&mut c);
            let e = c.validate().unwrap_err();
            assert!(e.0.starts_with(want), "{want}: {e}");
        };
        check(&|c| c.api.insecure = true, "api.insecure: ");
        check(
            &|c| c.api.tls.as_mut().unwrap().allowed_clients.clear(),
            "api.tls.allowed_clients: ",
        );
        check(
            &|c| c.api.tls.as_mut().unwrap().handshake_timeout = Duration::from_secs(3600),
            "api.tls.handshake_timeout: ",
        );
        check(
            &|c| c.api.tls.as_mut().unwrap().max_handshakes = 0,
            "api.tls.max_handshakes: ",
        );
        check(&|_| {}, "api.tls: cannot read /nonexistent/ca.crt");
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
            let mut c = insecure();
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
        let mut c = insecure();
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
        // The TLS files live on the host (tests/tests/deploy.rs validates the installed config
        // with real ones); here the rest is validated.
        assert!(
            prod.api.tls.is_some() && !prod.api.insecure,
            "production runs mTLS"
        );
        prod.api.tls = None;
        prod.api.insecure = true;
        // The key file lives on the production host; use the test key to validate the rest.
        prod.kalshi.key_id_file = None;
        prod.kalshi.key_id = Some("k".into());
        prod.kalshi.private_key_file = Some(repo.join("shared/testdata/rsa-pkcs8.pem"));
        prod.validate().unwrap();
    }
}
