//! Every metric the deduplicator exports, named and described in one place. The names in
//! DESIGN.md are fixed: operators grep for them. Labels are low-cardinality (gatherer ids and
//! stream names, never a ticker).

use crate::records::Stream;
use kalshi_shared::telemetry::MetricKind as Kind;

pub const SYNC_LAG: &str = "dedup_sync_lag_seconds";
pub const RECORDS_READ: &str = "dedup_records_read_total";
pub const RECORDS_WRITTEN: &str = "dedup_records_written_total";
pub const DUPLICATES_DROPPED: &str = "dedup_duplicates_dropped_total";
pub const GATHERER_HEALTH: &str = "dedup_gatherer_health";
pub const RDS_CONNECTED: &str = "dedup_rds_connected";
pub const RDS_ERRORS: &str = "dedup_rds_errors_total";
pub const COMMIT_DURATION: &str = "dedup_commit_duration_seconds";
pub const END_TO_END: &str = "dedup_end_to_end_seconds";
pub const QUARANTINED: &str = "dedup_quarantined_total";
pub const SINK_TRANSACTIONS: &str = "dedup_sink_transactions_total";
/// 1 while a stream's writer is stalled on an error that is not its rows' fault.
pub const SINK_STALLED: &str = "dedup_sink_stalled";
/// Stalls begun, by stream and error class (`refused`, `schema`, `server`, `other`).
pub const SINK_STALLS: &str = "dedup_sink_stalls_total";
/// How a transaction brought its rows in: straight COPY into the table, the staging table
/// and merge, or a straight COPY that met an already committed row (then merged).
pub const SINK_PATHS: &[&str] = &["direct", "merge", "conflict"];
pub const FAILOVER_IN_PROGRESS: &str = "dedup_rds_failover_in_progress";
pub const INSTANCE_RESETS: &str = "dedup_instance_resets_total";
/// A gatherer whose heads went below the stored cursors (same instance): read from the start.
pub const HEAD_REGRESSIONS: &str = "dedup_head_regressions_total";
pub const INVALID_RECORDS: &str = "dedup_invalid_records_total";
pub const SOURCE_ERRORS: &str = "dedup_source_errors_total";
pub const SOURCE_RECONNECTS: &str = "dedup_source_reconnects_total";
pub const QUEUE_PAGES: &str = "dedup_queue_pages";
pub const CACHE_KEYS: &str = "dedup_cache_keys";
pub const HEAP_IN_USE: &str = "dedup_heap_in_use_bytes";
pub const HEAP_FREE: &str = "dedup_heap_free_bytes";
pub const POOL_REBUILDS: &str = "dedup_pool_rebuilds_total";
pub const RETENTION_OVERRUNS: &str = "dedup_retention_overruns_total";
pub const IAM_TOKENS: &str = "dedup_iam_tokens_total";
pub const RDS_EVENT_CHECKS: &str = "dedup_rds_event_checks_total";
pub const UNCOVERED_WINDOWS: &str = "dedup_uncovered_gap_windows";
/// 1 while this deduplicator holds the lease (the active one), 0 as a standby.
pub const LEADER: &str = "dedup_leader";
pub const LEASE_EPOCH: &str = "dedup_lease_epoch";
/// Leases taken, by how: `free` (nobody held it), `stale` (the holder stopped renewing).
pub const TAKEOVERS: &str = "dedup_takeovers_total";
pub const TAKEOVER_KINDS: &[&str] = &["free", "stale"];
/// The last takeover: from the previous holder's last renewal to this one's first commit.
pub const TAKEOVER_SECONDS: &str = "dedup_takeover_seconds";
/// The active's heartbeat age as last read (by production's clock).
pub const LEASE_HEARTBEAT_AGE: &str = "dedup_lease_heartbeat_age_seconds";
pub const FENCED_COMMITS: &str = "dedup_fenced_commits_total";
pub const EXPORT_LAG: &str = "export_lag_seconds";
pub const ARCHIVE_OBJECTS: &str = "archive_objects_written_total";
pub const ARCHIVE_BYTES: &str = "archive_bytes_written_total";
pub const ARCHIVE_ROWS: &str = "archive_rows_written_total";
pub const ARCHIVE_ERRORS: &str = "archive_errors_total";
pub const ARCHIVE_PENDING: &str = "archive_periods_pending";
pub const ARCHIVE_LATE_VERSIONS: &str = "archive_late_versions_total";
pub const ARCHIVE_PARTITIONS_DROPPED: &str = "archive_partitions_dropped_total";

pub const ARCHIVE_ERROR_CLASSES: &[&str] = &[
    "s3_throttled",
    "s3_server",
    "s3_client",
    "s3_timeout",
    "s3_transport",
    "database",
    "io",
    "encode",
    "decode",
    "integrity",
    "config",
];

pub const SOURCE_ERROR_KINDS: &[&str] = &[
    "connect",
    "tls",
    "status",
    "identity",
    "tail",
    "oversize",
    "silence",
    "out_of_range",
    "cursor",
];

/// Every metric this service describes: its kind, name, unit and help text.
const HELP: &[kalshi_shared::telemetry::Help] = &[
    (
        Kind::Gauge,
        SYNC_LAG,
        None,
        "Seconds the oldest record a gatherer holds and production does not has been waiting (0 when caught up)",
    ),
    (
        Kind::Counter,
        RECORDS_READ,
        None,
        "Records read from a gatherer",
    ),
    (
        Kind::Gauge,
        EXPORT_LAG,
        None,
        "Seconds since the end of the newest archived period (the archive runs settle behind, so this rests between settle and settle + period)",
    ),
    (
        Kind::Counter,
        ARCHIVE_OBJECTS,
        None,
        "Objects written to the S3 archive, by stream (manifest: period manifests); an identical object already there is not written again",
    ),
    (
        Kind::Counter,
        ARCHIVE_BYTES,
        None,
        "Bytes of Parquet written to the S3 archive, by stream",
    ),
    (
        Kind::Counter,
        ARCHIVE_ROWS,
        None,
        "Rows written to the S3 archive, by stream",
    ),
    (
        Kind::Counter,
        ARCHIVE_ERRORS,
        None,
        "Archive failures by class (s3_throttled, s3_server, s3_client, s3_timeout, s3_transport, database, io, encode, decode, integrity, config); the period is retried",
    ),
    (
        Kind::Gauge,
        ARCHIVE_PENDING,
        None,
        "Closed periods waiting to be archived at the last look",
    ),
    (
        Kind::Counter,
        ARCHIVE_LATE_VERSIONS,
        None,
        "Archived periods rewritten as a new version because late data reached production",
    ),
    (
        Kind::Counter,
        ARCHIVE_PARTITIONS_DROPPED,
        None,
        "Production partitions dropped by retention after every row in them was verified in the archive",
    ),
    (
        Kind::Counter,
        RECORDS_WRITTEN,
        None,
        "Rows newly committed to production",
    ),
    (
        Kind::Counter,
        DUPLICATES_DROPPED,
        None,
        "Records already in production (from another gatherer or a replay), dropped",
    ),
    (
        Kind::Gauge,
        GATHERER_HEALTH,
        None,
        "1 while the gatherer's streams are connected and its identity checks out",
    ),
    (
        Kind::Gauge,
        RDS_CONNECTED,
        None,
        "1 while production accepts writes",
    ),
    (
        Kind::Counter,
        RDS_ERRORS,
        None,
        "Production errors by class (connection, read_only, transient, timeout, data, refused, schema, server, other)",
    ),
    (
        Kind::Gauge,
        SINK_STALLED,
        None,
        "1 while a stream's writer is stalled: production refuses its transactions for a reason that is not the rows' (a privilege, a password, the schema, the server); nothing is quarantined and its cursors stay where they are",
    ),
    (
        Kind::Counter,
        SINK_STALLS,
        None,
        "Stalls of a stream's writer begun, by the error's class: refused (28xxx, 42501), schema (42xxx, 3D, 3F, 0A), server (XX, 58, 55, 54, 57, F0, HV, P0), other",
    ),
    (
        Kind::Histogram,
        COMMIT_DURATION,
        None,
        "Duration of one production transaction, seconds",
    ),
    (
        Kind::Histogram,
        END_TO_END,
        None,
        "From a record's exchange time (its ts; receipt time when it has none) to the production COMMIT that carried it having returned, seconds, by stream",
    ),
    (
        Kind::Counter,
        SINK_TRANSACTIONS,
        None,
        "Production transactions carrying rows, by stream and path: direct (binary COPY straight into the table), merge (COPY into a staging table, then INSERT ... ON CONFLICT), conflict (a direct COPY met a row already committed, was rolled back and merged instead)",
    ),
    (
        Kind::Counter,
        QUARANTINED,
        None,
        "Rows written to quarantine instead of their table",
    ),
    (
        Kind::Gauge,
        FAILOVER_IN_PROGRESS,
        None,
        "1 while RDS events say the instance is failing over or rebooting",
    ),
    (
        Kind::Counter,
        INSTANCE_RESETS,
        None,
        "Gatherer instance_id changes (or heads gone back) that reset its cursors",
    ),
    (
        Kind::Counter,
        HEAD_REGRESSIONS,
        None,
        "Gatherers whose heads went below the stored cursors under the same instance_id (a database restored from an older copy): read again from the start",
    ),
    (
        Kind::Counter,
        INVALID_RECORDS,
        None,
        "Malformed records from a gatherer (quarantined)",
    ),
    (
        Kind::Counter,
        SOURCE_ERRORS,
        None,
        "Errors reading a gatherer, by kind",
    ),
    (
        Kind::Counter,
        SOURCE_RECONNECTS,
        None,
        "Tail streams reopened",
    ),
    (
        Kind::Gauge,
        QUEUE_PAGES,
        None,
        "Pages waiting for a stream's writer",
    ),
    (
        Kind::Gauge,
        CACHE_KEYS,
        None,
        "Committed keys held in a stream's cache",
    ),
    (
        Kind::Gauge,
        HEAP_IN_USE,
        Some(metrics::Unit::Bytes),
        "Heap in use (glibc malloc, every arena), set every 10 s after handing free pages back",
    ),
    (
        Kind::Gauge,
        HEAP_FREE,
        Some(metrics::Unit::Bytes),
        "Heap freed but still held by glibc malloc after the last trim",
    ),
    (
        Kind::Counter,
        POOL_REBUILDS,
        None,
        "Production pools closed and rebuilt",
    ),
    (
        Kind::Counter,
        RETENTION_OVERRUNS,
        None,
        "Cursors that fell below a gatherer's retention horizon (declared as gaps)",
    ),
    (
        Kind::Counter,
        IAM_TOKENS,
        None,
        "IAM authentication tokens generated",
    ),
    (
        Kind::Counter,
        RDS_EVENT_CHECKS,
        None,
        "DescribeEvents calls made during write outages, by outcome",
    ),
    (
        Kind::Gauge,
        LEADER,
        None,
        "1 while this deduplicator holds the lease and writes production (the active one); 0 as a standby",
    ),
    (
        Kind::Gauge,
        LEASE_EPOCH,
        None,
        "The fencing epoch this deduplicator holds (0: none); every production write checks it",
    ),
    (
        Kind::Counter,
        TAKEOVERS,
        None,
        "Leases this deduplicator took, by how: free (no holder), stale (the holder stopped renewing; its sessions were ended)",
    ),
    (
        Kind::Gauge,
        TAKEOVER_SECONDS,
        None,
        "The last takeover: from the previous holder's last heartbeat (production's clock) to this deduplicator's first commit, seconds",
    ),
    (
        Kind::Gauge,
        LEASE_HEARTBEAT_AGE,
        None,
        "Age of the active deduplicator's heartbeat as this one last read it (production's clock), seconds",
    ),
    (
        Kind::Counter,
        FENCED_COMMITS,
        None,
        "Transactions refused because another deduplicator took the lease (this one then steps down)",
    ),
];

/// Registers descriptions (shown as `# HELP` lines) and zero-valued series.
pub fn describe(gatherers: &[String]) {
    kalshi_shared::http_server::describe();
    kalshi_shared::pg::op::describe();
    kalshi_shared::build::record_build_info("deduplicator");
    for r in ["ok", "error"] {
        metrics::counter!(kalshi_shared::tls::RELOADS, "side" => "client", "result" => r)
            .increment(0);
    }

    metrics::gauge!(LEADER).set(0.0);
    metrics::gauge!(LEASE_EPOCH).set(0.0);
    metrics::gauge!(LEASE_HEARTBEAT_AGE).set(0.0);
    metrics::gauge!(TAKEOVER_SECONDS).set(0.0);
    metrics::counter!(FENCED_COMMITS).increment(0);
    for k in TAKEOVER_KINDS {
        metrics::counter!(TAKEOVERS, "kind" => *k).increment(0);
    }
    metrics::gauge!(RDS_CONNECTED).set(0.0);
    metrics::gauge!(FAILOVER_IN_PROGRESS).set(0.0);
    metrics::counter!(POOL_REBUILDS).increment(0);
    for c in kalshi_shared::pg::DbErrorClass::ALL {
        metrics::counter!(RDS_ERRORS, "class" => c.label()).increment(0);
    }
    for s in Stream::ALL {
        let t = s.table();
        metrics::counter!(RECORDS_WRITTEN, "stream" => t).increment(0);
        metrics::counter!(DUPLICATES_DROPPED, "stream" => t).increment(0);
        metrics::counter!(QUARANTINED, "stream" => t).increment(0);
        metrics::gauge!(SINK_STALLED, "stream" => t).set(0.0);
        for c in kalshi_shared::pg::DbErrorClass::ALL {
            if c.needs_operator() {
                metrics::counter!(SINK_STALLS, "stream" => t, "class" => c.label()).increment(0);
            }
        }
        for p in SINK_PATHS {
            metrics::counter!(SINK_TRANSACTIONS, "stream" => t, "path" => *p).increment(0);
        }
        metrics::gauge!(QUEUE_PAGES, "stream" => t).set(0.0);
        metrics::gauge!(CACHE_KEYS, "stream" => t).set(0.0);
        metrics::gauge!(UNCOVERED_WINDOWS, "stream" => t).set(0.0);
    }
    for g in gatherers {
        metrics::gauge!(GATHERER_HEALTH, "gatherer" => g.clone()).set(0.0);
        metrics::counter!(INSTANCE_RESETS, "gatherer" => g.clone()).increment(0);
        metrics::counter!(HEAD_REGRESSIONS, "gatherer" => g.clone()).increment(0);
        metrics::counter!(INVALID_RECORDS, "gatherer" => g.clone()).increment(0);
        metrics::counter!(RETENTION_OVERRUNS, "gatherer" => g.clone()).increment(0);
        for k in SOURCE_ERROR_KINDS {
            metrics::counter!(SOURCE_ERRORS, "gatherer" => g.clone(), "kind" => *k).increment(0);
        }
        for s in Stream::ALL {
            metrics::counter!(RECORDS_READ, "gatherer" => g.clone(), "stream" => s.table())
                .increment(0);
            metrics::gauge!(SYNC_LAG, "gatherer" => g.clone(), "stream" => s.table()).set(0.0);
        }
    }
    kalshi_shared::telemetry::describe_all(HELP);
    kalshi_shared::telemetry::describe_all(kalshi_shared::tls::HELP);
}
