//! Every metric the deduplicator exports, named and described in one place. The names in
//! DESIGN.md are fixed: operators grep for them. Labels are low-cardinality (gatherer ids and
//! stream names, never a ticker).

use crate::records::Stream;

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

pub fn describe(gatherers: &[String]) {
    kalshi_shared::http_server::describe();
    kalshi_shared::pg::op::describe();
    kalshi_shared::build::record_build_info("deduplicator");
    for r in ["ok", "error"] {
        metrics::counter!(kalshi_shared::tls::RELOADS, "side" => "client", "result" => r)
            .increment(0);
    }
    metrics::describe_counter!(
        kalshi_shared::tls::RELOADS,
        "TLS certificate files re-read after they changed, by side and result (error: the new files did not load; the running certificates stay)"
    );
    metrics::describe_gauge!(
        kalshi_shared::tls::EXPIRY,
        "When this side's TLS certificate (cert=own) and its CA (cert=ca, the latest-ending of the bundle) end, Unix seconds"
    );
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        SYNC_LAG,
        "Seconds the oldest record a gatherer holds and production does not has been waiting (0 when caught up)"
    );
    describe_counter!(RECORDS_READ, "Records read from a gatherer");
    describe_gauge!(
        EXPORT_LAG,
        "Seconds since the end of the newest archived period (the archive runs settle behind, so this rests between settle and settle + period)"
    );
    describe_counter!(
        ARCHIVE_OBJECTS,
        "Objects written to the S3 archive, by stream (manifest: period manifests); an identical object already there is not written again"
    );
    describe_counter!(
        ARCHIVE_BYTES,
        "Bytes of Parquet written to the S3 archive, by stream"
    );
    describe_counter!(ARCHIVE_ROWS, "Rows written to the S3 archive, by stream");
    describe_counter!(
        ARCHIVE_ERRORS,
        "Archive failures by class (s3_throttled, s3_server, s3_client, s3_timeout, s3_transport, database, io, encode, decode, integrity, config); the period is retried"
    );
    describe_gauge!(
        ARCHIVE_PENDING,
        "Closed periods waiting to be archived at the last look"
    );
    describe_counter!(
        ARCHIVE_LATE_VERSIONS,
        "Archived periods rewritten as a new version because late data reached production"
    );
    describe_counter!(
        ARCHIVE_PARTITIONS_DROPPED,
        "Production partitions dropped by retention after every row in them was verified in the archive"
    );
    describe_counter!(RECORDS_WRITTEN, "Rows newly committed to production");
    describe_counter!(
        DUPLICATES_DROPPED,
        "Records already in production (from another gatherer or a replay), dropped"
    );
    describe_gauge!(
        GATHERER_HEALTH,
        "1 while the gatherer's streams are connected and its identity checks out"
    );
    describe_gauge!(RDS_CONNECTED, "1 while production accepts writes");
    describe_counter!(
        RDS_ERRORS,
        "Production errors by class (connection, read_only, transient, timeout, data, refused, schema, server, other)"
    );
    describe_gauge!(
        SINK_STALLED,
        "1 while a stream's writer is stalled: production refuses its transactions for a reason that is not the rows' (a privilege, a password, the schema, the server); nothing is quarantined and its cursors stay where they are"
    );
    describe_counter!(
        SINK_STALLS,
        "Stalls of a stream's writer begun, by the error's class: refused (28xxx, 42501), schema (42xxx, 3D, 3F, 0A), server (XX, 58, 55, 54, 57, F0, HV, P0), other"
    );
    describe_histogram!(
        COMMIT_DURATION,
        "Duration of one production transaction, seconds"
    );
    describe_histogram!(
        END_TO_END,
        "From a record's exchange time (its ts; receipt time when it has none) to the production COMMIT that carried it having returned, seconds, by stream"
    );
    describe_counter!(
        SINK_TRANSACTIONS,
        "Production transactions carrying rows, by stream and path: direct (binary COPY straight into the table), merge (COPY into a staging table, then INSERT ... ON CONFLICT), conflict (a direct COPY met a row already committed, was rolled back and merged instead)"
    );
    describe_counter!(
        QUARANTINED,
        "Rows written to quarantine instead of their table"
    );
    describe_gauge!(
        FAILOVER_IN_PROGRESS,
        "1 while RDS events say the instance is failing over or rebooting"
    );
    describe_counter!(
        INSTANCE_RESETS,
        "Gatherer instance_id changes (or heads gone back) that reset its cursors"
    );
    describe_counter!(
        HEAD_REGRESSIONS,
        "Gatherers whose heads went below the stored cursors under the same instance_id (a database restored from an older copy): read again from the start"
    );
    describe_counter!(
        INVALID_RECORDS,
        "Malformed records from a gatherer (quarantined)"
    );
    describe_counter!(SOURCE_ERRORS, "Errors reading a gatherer, by kind");
    describe_counter!(SOURCE_RECONNECTS, "Tail streams reopened");
    describe_gauge!(QUEUE_PAGES, "Pages waiting for a stream's writer");
    describe_gauge!(CACHE_KEYS, "Committed keys held in a stream's cache");
    describe_gauge!(
        HEAP_IN_USE,
        Unit::Bytes,
        "Heap in use (glibc malloc, every arena), set every 10 s after handing free pages back"
    );
    describe_gauge!(
        HEAP_FREE,
        Unit::Bytes,
        "Heap freed but still held by glibc malloc after the last trim"
    );
    describe_counter!(POOL_REBUILDS, "Production pools closed and rebuilt");
    describe_counter!(
        RETENTION_OVERRUNS,
        "Cursors that fell below a gatherer's retention horizon (declared as gaps)"
    );
    describe_counter!(IAM_TOKENS, "IAM authentication tokens generated");
    describe_counter!(
        RDS_EVENT_CHECKS,
        "DescribeEvents calls made during write outages, by outcome"
    );

    describe_gauge!(
        LEADER,
        "1 while this deduplicator holds the lease and writes production (the active one); 0 as a standby"
    );
    describe_gauge!(
        LEASE_EPOCH,
        "The fencing epoch this deduplicator holds (0: none); every production write checks it"
    );
    describe_counter!(
        TAKEOVERS,
        "Leases this deduplicator took, by how: free (no holder), stale (the holder stopped renewing; its sessions were ended)"
    );
    describe_gauge!(
        TAKEOVER_SECONDS,
        "The last takeover: from the previous holder's last heartbeat (production's clock) to this deduplicator's first commit, seconds"
    );
    describe_gauge!(
        LEASE_HEARTBEAT_AGE,
        "Age of the active deduplicator's heartbeat as this one last read it (production's clock), seconds"
    );
    describe_counter!(
        FENCED_COMMITS,
        "Transactions refused because another deduplicator took the lease (this one then steps down)"
    );

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
}
