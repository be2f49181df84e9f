//! `deduplicator.toml`'s format: every section and key with its default. The deduplicator
//! validates it (`deduplicator::config`); the stack and the tests write it from these types.
//!
//! It must never validate (that is the deduplicator's), nor hold a key the deduplicator does
//! not read.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{HttpSection, LogSection, Secret, duration};

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
    pub lease: LeaseSection,
    pub testing: TestingSection,
    pub archive: ArchiveSection,
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            gatherers: vec![GathererEndpoint {
                id: "g1".into(),
                endpoint: "https://127.0.0.1:50051".into(),
                server_name: None,
            }],
            production: ProductionSection::default(),
            rds: RdsSection::default(),
            sink: SinkSection::default(),
            sources: SourcesSection::default(),
            http: HttpSection::default(),
            log: LogSection::default(),
            lease: LeaseSection::default(),
            testing: TestingSection::default(),
            archive: ArchiveSection::default(),
        }
    }
}

/// The Parquet archive on S3 (off unless `enabled`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveSection {
    pub enabled: bool,
    /// The bucket (required when enabled, unless `directory` is set).
    pub bucket: String,
    /// A local directory instead of S3 (one machine): the same layout, an object's key being
    /// its path under the directory. Absolute; exclusive with `bucket`.
    pub directory: String,
    /// Prepended to every key ("" or ending in '/').
    pub prefix: String,
    /// AWS region (empty: from the environment / instance metadata; us-east-1 with
    /// endpoint_url).
    pub region: String,
    /// An S3-compatible endpoint (the local stack's, a VPC endpoint); path-style addressing.
    /// Empty: AWS's.
    pub endpoint_url: String,
    /// The archive period: one set of files per period. Divides a day (1s..24h).
    #[serde(with = "duration")]
    pub period: Duration,
    /// How long after a period ends before it is archived (the gatherers' delivery delay; above
    /// their ws.snapshot_hold, since a snapshot is stored up to that long after its time).
    #[serde(with = "duration")]
    pub settle: Duration,
    /// How often the archiver looks for closed, late or unverified periods.
    #[serde(with = "duration")]
    pub check_interval: Duration,
    /// At most this many periods are written per look (bounded catch-up).
    pub max_periods_per_check: usize,
    /// Where files are built before upload (and downloaded to for verify and restore).
    pub spool_dir: String,
    /// Rows per Parquet row group (the writer holds one group in memory).
    pub row_group_rows: usize,
    /// ... and bytes held for one at most (decoded rows): a group is written at whichever
    /// bound comes first.
    pub row_group_bytes: u64,
    pub zstd_level: i32,
    /// Files larger than this are uploaded in parts (multipart upload).
    pub multipart_threshold: u64,
    /// Part size of multipart uploads (5 MiB..5 GiB).
    pub part_size: u64,
    /// Attempts per S3 request (the SDK's standard retry, with jittered backoff).
    pub max_attempts: u32,
    #[serde(with = "duration")]
    pub retry_initial: Duration,
    #[serde(with = "duration")]
    pub retry_max: Duration,
    /// Deadline of one attempt of one S3 request.
    #[serde(with = "duration")]
    pub attempt_timeout: Duration,
    /// Production partitions (months) older than this are dropped once every period in them
    /// is verified in the archive. 0s: never drop. Must exceed every gatherer's retention (a
    /// gatherer could otherwise hand over rows of a dropped month); retention waits while it
    /// does not.
    #[serde(with = "duration")]
    pub retention: Duration,
    /// Deadline of one of the archive's long statements in production (a period's build or
    /// verify, which stream every row of the period; a partition's row count before retention),
    /// instead of `production.op_timeout`: an hour of a busy day is millions of rows.
    #[serde(with = "duration")]
    pub statement_timeout: Duration,
}

impl Default for ArchiveSection {
    fn default() -> Self {
        Self {
            enabled: false,
            bucket: String::new(),
            directory: String::new(),
            prefix: String::new(),
            region: String::new(),
            endpoint_url: String::new(),
            period: Duration::from_secs(3600),
            settle: Duration::from_secs(300),
            check_interval: Duration::from_secs(30),
            max_periods_per_check: 24,
            spool_dir: "/var/lib/kalshi-data/archive".into(),
            row_group_rows: 122_880,
            row_group_bytes: 16 << 20,
            zstd_level: 3,
            multipart_threshold: 64 << 20,
            part_size: 16 << 20,
            max_attempts: 8,
            retry_initial: Duration::from_millis(200),
            retry_max: Duration::from_secs(20),
            attempt_timeout: Duration::from_secs(120),
            retention: Duration::ZERO,
            statement_timeout: Duration::from_secs(1800),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GathererEndpoint {
    /// The gatherer's `gatherer_id`.
    pub id: String,
    /// Its gRPC address: `https://host:50051` (mTLS), or `http://host:50051` with
    /// `sources.insecure`.
    pub endpoint: String,
    /// The name its certificate must carry (default: the endpoint's host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
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
            database_url: Secret(
                "postgres://deduplicator@127.0.0.1:5432/kalshi?sslmode=verify-full".into(),
            ),
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
    /// How long a sink lingers for more pages after taking what is queued. 0: none, commit as
    /// soon as the previous commit finished (group commit), at the price of many more, smaller
    /// transactions.
    #[serde(with = "duration")]
    pub batch_interval: Duration,
    /// Recently committed record keys kept per stream to drop duplicates before the database.
    pub cache_keys: usize,
    /// ... and for at most this long: a peer gatherer's copy comes within seconds, a
    /// recovering one's within its outage; memory follows the stream's rate times this.
    #[serde(with = "duration")]
    pub cache_window: Duration,
    /// Pages waiting per stream between the sources and the writer.
    pub queue_pages: usize,
    /// Lifecycle messages carry no time or id: two gatherers' copies of one are one when they
    /// were received within this of each other (and identical). Two identical messages (a
    /// market paused twice) are two when farther apart, or both received by one gatherer.
    #[serde(with = "duration")]
    pub lifecycle_match_window: Duration,
}

impl Default for SinkSection {
    fn default() -> Self {
        Self {
            batch_rows: 10_000,
            batch_interval: Duration::from_millis(10),
            cache_keys: 500_000,
            cache_window: Duration::from_secs(300),
            queue_pages: 4,
            lifecycle_match_window: Duration::from_secs(10),
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
    /// Plaintext gRPC to the gatherers, said explicitly. Without it `[sources.tls]` is
    /// required.
    pub insecure: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<SourcesTlsSection>,
}

/// mTLS to the gatherers: this deduplicator's client certificate and the CA the gatherers'
/// certificates must chain to. Re-read when they change (rotation without a restart).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcesTlsSection {
    pub ca_file: std::path::PathBuf,
    pub cert_file: std::path::PathBuf,
    pub key_file: std::path::PathBuf,
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
            insecure: false,
            tls: None,
        }
    }
}

/// The lease that makes one deduplicator of several the active one (the others are warm
/// standbys). Always on: a lone deduplicator takes it at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaseSection {
    /// How often a standby tries to take the lease and reads the active's heartbeat.
    #[serde(with = "duration")]
    pub poll: Duration,
    /// How often the active renews its heartbeat in production.
    #[serde(with = "duration")]
    pub renew_every: Duration,
    /// A standby takes the lease from an active whose heartbeat is older than this, by
    /// production's clock (a hung or partitioned active), ending its sessions first.
    #[serde(with = "duration")]
    pub takeover_after: Duration,
    /// The active gives up the lease (and exits) when one production transaction has been in
    /// progress longer than this: alive but not committing. Above production.op_timeout.
    #[serde(with = "duration")]
    pub hung_after: Duration,
}

impl Default for LeaseSection {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(500),
            renew_every: Duration::from_secs(1),
            takeover_after: Duration::from_secs(6),
            hung_after: Duration::from_secs(60),
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
