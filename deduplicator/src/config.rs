//! `deduplicator.toml`: the file format with its defaults, and the validated runtime settings.
//! Every key can be overridden from the environment as `DEDUPLICATOR__SECTION__KEY`. The
//! production database URL (its password) never appears in logs or `Debug` output.

use std::net::SocketAddr;
use std::time::Duration;

pub use kalshi_shared::config::Secret;
use kalshi_shared::config::{ConfigError, duration, in_range, positive};
use kalshi_shared::retry::BackoffConfig;
use kalshi_shared::telemetry::LogFormat;
use serde::{Deserialize, Serialize};

/// The documented reference configuration: every key with its default (checked by a test).
pub const REFERENCE: &str = include_str!("../../deploy/deduplicator.reference.toml");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    pub gatherers: Vec<GathererEndpoint>,
    pub production: ProductionSection,
    pub rds: RdsSection,
    pub sink: SinkSection,
    pub sources: SourcesSection,
    pub http: HttpSection,
    pub log: LogSection,
    pub testing: TestingSection,
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            gatherers: vec![GathererEndpoint {
                id: "g1".into(),
                endpoint: "http://127.0.0.1:50051".into(),
            }],
            production: ProductionSection::default(),
            rds: RdsSection::default(),
            sink: SinkSection::default(),
            sources: SourcesSection::default(),
            http: HttpSection::default(),
            log: LogSection::default(),
            testing: TestingSection::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GathererEndpoint {
    /// The gatherer's `gatherer_id`.
    pub id: String,
    /// Its gRPC address, `http://host:50051`.
    pub endpoint: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProductionSection {
    pub database_url: Secret,
    pub pool_max: u32,
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// Deadline of every database call (a commit on a stalled socket fails after this).
    #[serde(with = "duration")]
    pub op_timeout: Duration,
    /// A pooled connection idle this long is checked with `SHOW transaction_read_only`.
    #[serde(with = "duration")]
    pub idle_check_after: Duration,
    #[serde(with = "duration")]
    pub retry_initial: Duration,
    #[serde(with = "duration")]
    pub retry_max: Duration,
    /// Production is reported unreachable after failing this long.
    #[serde(with = "duration")]
    pub unhealthy_after: Duration,
}

impl Default for ProductionSection {
    fn default() -> Self {
        Self {
            database_url: Secret("postgres://deduplicator@127.0.0.1:5432/kalshi".into()),
            pool_max: 16,
            connect_timeout: Duration::from_secs(5),
            op_timeout: Duration::from_secs(30),
            idle_check_after: Duration::from_secs(30),
            retry_initial: Duration::from_millis(200),
            retry_max: Duration::from_secs(10),
            unhealthy_after: Duration::from_secs(15),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RdsSection {
    /// The RDS instance identifier: enables the look at recent RDS events during a write
    /// outage ("failover in progress"). Empty: off.
    pub instance_id: String,
    /// AWS region (empty: from the environment / instance metadata).
    pub region: String,
    /// Generate an IAM authentication token as the database password (refreshed before it
    /// expires). The URL's user is the database user; its password is ignored.
    pub iam_auth: bool,
    #[serde(with = "duration")]
    pub iam_token_refresh: Duration,
    /// A different RDS API endpoint (tests, VPC endpoints). Empty: AWS's.
    pub endpoint_url: String,
    /// How long writes must fail before RDS events are looked at.
    #[serde(with = "duration")]
    pub events_after: Duration,
}

impl Default for RdsSection {
    fn default() -> Self {
        Self {
            instance_id: String::new(),
            region: String::new(),
            iam_auth: false,
            iam_token_refresh: Duration::from_secs(600),
            endpoint_url: String::new(),
            events_after: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkSection {
    pub batch_rows: usize,
    #[serde(with = "duration")]
    pub batch_interval: Duration,
    /// Recently committed record keys kept per stream to drop duplicates before the database.
    pub cache_keys: usize,
    /// Pages waiting per stream between the sources and the writer.
    pub queue_pages: usize,
}

impl Default for SinkSection {
    fn default() -> Self {
        Self {
            batch_rows: 10_000,
            batch_interval: Duration::from_millis(100),
            cache_keys: 500_000,
            queue_pages: 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesSection {
    /// Records per Tail message.
    pub page_limit: u32,
    pub max_message_bytes: usize,
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    #[serde(with = "duration")]
    pub reconnect_initial: Duration,
    #[serde(with = "duration")]
    pub reconnect_max: Duration,
    /// A Tail with no message (not even a heartbeat) for this long is reconnected.
    #[serde(with = "duration")]
    pub silence_timeout: Duration,
}

impl Default for SourcesSection {
    fn default() -> Self {
        Self {
            page_limit: 2000,
            max_message_bytes: 32 << 20,
            connect_timeout: Duration::from_secs(5),
            reconnect_initial: Duration::from_millis(250),
            reconnect_max: Duration::from_secs(15),
            silence_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    pub listen: SocketAddr,
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

/// Fault-injection knobs for the test suite. Leave them at zero in production.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestingSection {
    /// Sleep this long inside each transaction, after its writes and before COMMIT.
    #[serde(with = "duration")]
    pub pause_before_commit: Duration,
    /// Make the sink of this stream (a table name) panic after its first committed batch, to
    /// prove supervision. Empty: never.
    pub panic_sink: String,
}

impl Default for TestingSection {
    fn default() -> Self {
        Self {
            pause_before_commit: Duration::ZERO,
            panic_sink: String::new(),
        }
    }
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub gatherers: Vec<GathererEndpoint>,
    pub production: ProductionSection,
    pub production_retry: BackoffConfig,
    pub rds: RdsSection,
    pub sink: SinkSection,
    pub sources: SourcesSection,
    pub source_backoff: BackoffConfig,
    pub http: HttpSection,
    pub log: LogSection,
    pub testing: TestingSection,
}

impl FileConfig {
    pub fn validate(self) -> Result<Config, ConfigError> {
        let FileConfig {
            gatherers,
            production,
            rds,
            sink,
            sources,
            http,
            log,
            testing,
        } = self;
        if gatherers.is_empty() {
            return Err(ConfigError::key(
                "gatherers",
                "at least one gatherer is required",
            ));
        }
        let mut ids = std::collections::HashSet::new();
        for (i, g) in gatherers.iter().enumerate() {
            if g.id.is_empty()
                || g.id.len() > 64
                || !g
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(ConfigError::key(
                    &format!("gatherers[{i}].id"),
                    "must be 1-64 letters, digits, '-' or '_'",
                ));
            }
            if !ids.insert(g.id.clone()) {
                return Err(ConfigError::key(
                    &format!("gatherers[{i}].id"),
                    format!("{:?} is listed twice", g.id),
                ));
            }
            if !(g.endpoint.starts_with("http://") || g.endpoint.starts_with("https://"))
                || g.endpoint.parse::<tonic::transport::Uri>().is_err()
            {
                return Err(ConfigError::key(
                    &format!("gatherers[{i}].endpoint"),
                    format!("{:?} is not an http:// or https:// address", g.endpoint),
                ));
            }
        }
        let url = production.database_url.expose();
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(ConfigError::key(
                "production.database_url",
                "must be a postgres:// or postgresql:// URL",
            ));
        }
        url.parse::<sqlx::postgres::PgConnectOptions>()
            .map_err(|e| {
                ConfigError::key(
                    "production.database_url",
                    format!("not a PostgreSQL URL: {e}"),
                )
            })?;
        in_range("production.pool_max", production.pool_max, 4, 1000)?;
        positive("production.connect_timeout", production.connect_timeout)?;
        positive("production.op_timeout", production.op_timeout)?;
        positive("production.unhealthy_after", production.unhealthy_after)?;
        let production_retry = BackoffConfig::new(production.retry_initial, production.retry_max)
            .map_err(|e| ConfigError::key("production.retry_initial", e))?;
        if rds.iam_auth && rds.region.is_empty() {
            return Err(ConfigError::key("rds.region", "required with rds.iam_auth"));
        }
        if rds.iam_auth
            && !(Duration::from_secs(1)..=Duration::from_secs(840)).contains(&rds.iam_token_refresh)
        {
            return Err(ConfigError::key(
                "rds.iam_token_refresh",
                "must be between 1s and 14m (tokens expire after 15 minutes)",
            ));
        }
        if !rds.endpoint_url.is_empty() && !rds.endpoint_url.starts_with("http") {
            return Err(ConfigError::key(
                "rds.endpoint_url",
                "must be an http(s) URL",
            ));
        }
        in_range("sink.batch_rows", sink.batch_rows, 1, 1_000_000)?;
        positive("sink.batch_interval", sink.batch_interval)?;
        in_range("sink.cache_keys", sink.cache_keys, 0, 100_000_000)?;
        in_range("sink.queue_pages", sink.queue_pages, 1, 10_000)?;
        in_range("sources.page_limit", sources.page_limit, 1, 100_000)?;
        in_range(
            "sources.max_message_bytes",
            sources.max_message_bytes,
            64 * 1024,
            1 << 30,
        )?;
        positive("sources.connect_timeout", sources.connect_timeout)?;
        positive("sources.silence_timeout", sources.silence_timeout)?;
        let source_backoff = BackoffConfig::new(sources.reconnect_initial, sources.reconnect_max)
            .map_err(|e| ConfigError::key("sources.reconnect_initial", e))?;
        Ok(Config {
            gatherers,
            production,
            production_retry,
            rds,
            sink,
            sources,
            source_backoff,
            http,
            log,
            testing,
        })
    }
}

/// Loads `path` (if any) plus `DEDUPLICATOR__*` variables, then validates.
pub fn load(path: Option<&std::path::Path>) -> Result<Config, ConfigError> {
    let file: FileConfig = kalshi_shared::config::load(path, "DEDUPLICATOR", std::env::vars())?;
    file.validate()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_file_is_exactly_the_defaults() {
        let parsed: FileConfig = toml::from_str(REFERENCE).expect("reference parses");
        assert_eq!(parsed, FileConfig::default());
        FileConfig::default().validate().unwrap();
    }

    #[test]
    fn bad_values_name_their_key() {
        type Mutate = fn(&mut FileConfig);
        let cases: Vec<(Mutate, &str)> = vec![
            (|c| c.gatherers.clear(), "gatherers"),
            (|c| c.gatherers[0].id = "a b".into(), "gatherers[0].id"),
            (
                |c| c.gatherers.push(c.gatherers[0].clone()),
                "gatherers[1].id",
            ),
            (
                |c| c.gatherers[0].endpoint = "127.0.0.1:1".into(),
                "gatherers[0].endpoint",
            ),
            (
                |c| c.production.database_url = Secret("mysql://x".into()),
                "production.database_url",
            ),
            (|c| c.rds.iam_auth = true, "rds.region"),
            (|c| c.sink.batch_rows = 0, "sink.batch_rows"),
            (
                |c| c.sources.reconnect_max = Duration::from_millis(1),
                "sources.reconnect_initial",
            ),
        ];
        for (mutate, key) in cases {
            let mut c = FileConfig::default();
            mutate(&mut c);
            let e = c.validate().unwrap_err();
            assert!(e.0.starts_with(&format!("{key}:")), "{key}: {e}");
        }
        let mut c = FileConfig::default();
        c.production.database_url = Secret("postgres://u:hunter2@h/db".into());
        assert!(!format!("{:?}", c.validate().unwrap()).contains("hunter2"));
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    fn load_example(name: &str) -> Config {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy")
            .join(name);
        let file: FileConfig = kalshi_shared::config::load(
            Some(&path),
            "DEDUPLICATOR",
            Vec::<(String, String)>::new(),
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        file.validate().unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    #[test]
    fn the_example_configs_are_valid() {
        let sim = load_example("deduplicator.sim.toml");
        assert_eq!(sim.gatherers.len(), 3);
        let prod = load_example("deduplicator.production.toml");
        assert!(prod.rds.iam_auth);
        assert_eq!(prod.gatherers.len(), 3);
    }
}
