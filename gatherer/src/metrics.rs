//! Every metric the gatherer exports, named and described in one place. The names in
//! DESIGN.md are fixed: operators grep for them. Labels are low-cardinality (never a ticker).

use kalshi_shared::telemetry::MetricKind as Kind;

pub const WS_CONNECTED: &str = "ws_client_connected";
pub const WS_CONNECTIONS_CONFIGURED: &str = "ws_client_connections_configured";
pub const WS_MESSAGES: &str = "ws_client_messages_received_total";
pub const WS_RECONNECTS: &str = "ws_client_reconnects_total";
pub const WS_ERRORS: &str = "ws_client_errors_total";
pub const WS_BAD_FRAMES: &str = "ws_client_bad_frames_total";
pub const IMPORT_PAGES: &str = "import_pages_total";
pub const IMPORT_TRADES: &str = "import_trades_total";
pub const IMPORT_UNPARSEABLE: &str = "import_unparseable_trades_total";
pub const WS_UNKNOWN_MESSAGES: &str = "ws_client_unknown_messages_total";
pub const WS_UNKNOWN_COPIES: &str = "ws_client_unknown_message_copies_total";
pub const SEQ_GAPS: &str = "conn_manager_sequence_gaps_total";
pub const RESNAPSHOTS: &str = "conn_manager_resnapshots_total";
pub const DELTAS_DROPPED: &str = "conn_manager_deltas_dropped_total";
/// Snapshots stored at their splice point, by how the point was found (`delta`, `quiet`).
pub const SNAPSHOT_SPLICES: &str = "conn_manager_snapshot_splices_total";
/// Books set to be stored again by `ws.snapshot_every` (each then spliced like any snapshot).
pub const PERIODIC_SNAPSHOTS: &str = "conn_manager_periodic_snapshots_total";
/// Exchange snapshots never stored (their chain broke before the splice point was certain).
pub const SNAPSHOTS_UNSTORED: &str = "conn_manager_snapshots_unstored_total";
/// Deltas stamped at or before a quiet snapshot's splice point, arriving after its hold.
pub const SPLICE_VIOLATIONS: &str = "conn_manager_splice_violations_total";
pub const DELTAS_WITHOUT_TS: &str = "conn_manager_deltas_without_ts_total";
pub const SUBSCRIBED_MARKETS: &str = "conn_manager_subscribed_markets";
/// Holes open now, as last recorded in the local database (`connections/open_holes.rs`).
pub const OPEN_HOLES: &str = "conn_manager_open_holes";
pub const OPEN_HOLES_WRITE_ERRORS: &str = "conn_manager_open_holes_write_errors_total";
/// Markets subscribed after they were live (a `late_subscription` window declared).
pub const LATE_SUBSCRIPTIONS: &str = "conn_manager_late_subscriptions_total";
pub const ACTIVE_MARKETS: &str = "market_registry_active_markets";
pub const REST_ERRORS: &str = "market_registry_rest_errors_total";
pub const REST_REQUESTS: &str = "market_registry_rest_requests_total";
pub const REGISTRY_VERSIONS: &str = "market_registry_versions_total";
pub const EXCHANGE_POLLS: &str = "exchange_polls_total";
pub const EXCHANGE_ACTIVE: &str = "exchange_active";
pub const EXCHANGE_TRADING_ACTIVE: &str = "exchange_trading_active";
pub const REGISTRY_UNPARSEABLE: &str = "market_registry_unparseable_total";
pub const OCCURRENCE_BEYOND_HORIZON: &str =
    kalshi_shared::identity::occurrence::BEYOND_HORIZON_METRIC;
pub const TICKERS_WITHOUT_BOOK: &str = "conn_manager_tickers_without_book_total";
pub const REGISTRY_SYNCS: &str = "market_registry_syncs_total";
pub const REGISTRY_PENDING: &str = "market_registry_pending_changes";
pub const BACKFILL_RECOVERED: &str = "backfill_trades_recovered_total";
pub const BACKFILL_RUNS: &str = "backfill_runs_total";
pub const POLLING_FALLBACK: &str = "backfill_polling_fallback";
pub const WRITER_INSERTS: &str = "writer_inserts_total";
pub const WRITER_ERRORS: &str = "writer_errors_total";
pub const WRITER_FLUSH_DURATION: &str = "writer_flush_duration_seconds";
pub const WRITER_BUFFER_ROWS: &str = "writer_buffer_rows";
pub const WRITER_DROPPED_ROWS: &str = "writer_dropped_rows_total";
pub const WRITER_REJECTED_ROWS: &str = "writer_rejected_rows_total";
pub const WRITER_DUPLICATES: &str = "writer_duplicates_skipped_total";
pub const GAPS_DECLARED: &str = "gaps_declared_total";
pub const RETENTION_DROPPED_PARTITIONS: &str = "retention_dropped_partitions_total";
pub const WRITER_LOCK_LOST: &str = "writer_lock_lost_total";
pub const WRITER_LOST_ROWS: &str = "writer_lost_rows_total";
pub const SPILL_WRITTEN_ROWS: &str = "spill_written_rows_total";
pub const SPILL_REPLAYED_ROWS: &str = "spill_replayed_rows_total";
pub const SPILL_CORRUPT_FILES: &str = "spill_corrupt_files_total";
pub const RETENTION_DEFERRED_PARTITIONS: &str = "retention_deferred_partitions_total";
pub const API_REQUESTS: &str = "api_requests_total";
pub const API_TAIL_STREAMS: &str = "api_tail_streams";
pub const API_READ_BUFFER_BYTES: &str = "api_read_buffer_bytes";
pub const API_RECORDS_SENT: &str = "api_records_sent_total";
pub const CREDENTIAL_RELOADS: &str = "gatherer_credential_reloads_total";

/// Label values known in advance, registered at zero so dashboards and alerts see every
/// series from the start (a counter that has never moved would otherwise be absent).
pub const TABLES: &[&str] = &[
    "trades",
    "orderbook_deltas",
    "orderbook_snapshots",
    "tickers",
    "lifecycle",
    "markets",
    "events",
    "series",
    "gaps",
    "unknown_messages",
];
pub const WS_ERROR_TYPES: &[&str] = &[
    "connect",
    "disconnect",
    "stall",
    "oversize",
    "protocol",
    "invalid_utf8",
    "parse",
    "server_error",
    "command_timeout",
];
pub const REST_ENDPOINTS: &[&str] = &[
    "series",
    "series_one",
    "events",
    "event",
    "markets",
    "market",
    "trades",
    "orderbook",
];

/// Frame types `ws_client_bad_frames_total` is pre-registered with (zero until one fails), so
/// the `GathererBadFrames` alert and the dashboards see the series before the first bad frame.
pub const BAD_FRAME_TYPES: &[&str] = &[
    "malformed",
    "missing_type",
    "binary",
    "unknown_type",
    "unknown_oversize",
    "trade",
    "orderbook_snapshot",
    "orderbook_delta",
    "ticker",
    "rest_trade",
];

/// Every metric this service describes: its kind, name, unit and help text.
const HELP: &[kalshi_shared::telemetry::Help] = &[
    (
        Kind::Gauge,
        WS_CONNECTED,
        None,
        "WebSocket connections currently connected and subscribed",
    ),
    (
        Kind::Gauge,
        WS_CONNECTIONS_CONFIGURED,
        None,
        "WebSocket connections configured (ws.connections)",
    ),
    (
        Kind::Counter,
        WS_MESSAGES,
        None,
        "Frames received, by channel",
    ),
    (
        Kind::Counter,
        WS_RECONNECTS,
        None,
        "WebSocket reconnections",
    ),
    (
        Kind::Counter,
        kalshi_shared::tls::REJECTIONS,
        None,
        "gRPC TLS handshakes refused, by reason (unknown_ca, expired, no_client_certificate, name_not_allowed, handshake_timeout, ...)",
    ),
    (
        Kind::Counter,
        CREDENTIAL_RELOADS,
        None,
        "Kalshi key reloads at SIGHUP, by result (error: the new key did not load; the old one stays)",
    ),
    (
        Kind::Counter,
        WS_ERRORS,
        None,
        "WebSocket errors, by type (connect, disconnect, stall, oversize, protocol, invalid_utf8, parse, server_error, command_timeout)",
    ),
    (
        Kind::Counter,
        WS_BAD_FRAMES,
        None,
        "Frames that failed to parse, by frame type",
    ),
    (
        Kind::Counter,
        WS_UNKNOWN_MESSAGES,
        None,
        "Messages of types this build does not model, stored as sent (unknown_messages), by the channel of their sid (none: a sid not subscribed)",
    ),
    (
        Kind::Counter,
        IMPORT_PAGES,
        None,
        "History import pages settled (gatherer import)",
    ),
    (
        Kind::Counter,
        IMPORT_TRADES,
        None,
        "History import trades in the window handed to the writer (duplicates are then skipped by the trades key)",
    ),
    (
        Kind::Counter,
        IMPORT_UNPARSEABLE,
        None,
        "History import trades that do not parse (skipped and logged)",
    ),
    (
        Kind::Counter,
        WS_UNKNOWN_COPIES,
        None,
        "Copies of an unknown message another connection of this gatherer already stored",
    ),
    (
        Kind::Counter,
        SEQ_GAPS,
        None,
        "Sequence gaps (skip, repeat or decrease) per subscription",
    ),
    (
        Kind::Counter,
        RESNAPSHOTS,
        None,
        "Markets resnapshotted after a gap, error or disconnect",
    ),
    (
        Kind::Counter,
        SNAPSHOT_SPLICES,
        None,
        "Order-book snapshots stored at their exact splice point: at the first delta of a later millisecond or after a quiet hold (how=delta), or after a hold with no delta at all (how=quiet)",
    ),
    (
        Kind::Counter,
        PERIODIC_SNAPSHOTS,
        None,
        "Books that changed since their last snapshot, set to be stored again every ws.snapshot_every (stored at their splice point, counted in conn_manager_snapshot_splices_total)",
    ),
    (
        Kind::Counter,
        SNAPSHOTS_UNSTORED,
        None,
        "Exchange snapshots not stored because the chain broke (or a newer snapshot came, or the market left, or the connection ended) before their splice point was certain",
    ),
    (
        Kind::Counter,
        SPLICE_VIOLATIONS,
        None,
        "Deltas stamped at or before a quiet snapshot's splice point that arrived after the hold (the clock or delivery bound proved wrong); a fresh snapshot is stored",
    ),
    (
        Kind::Counter,
        DELTAS_DROPPED,
        None,
        "Deltas dropped because their market's book was invalid",
    ),
    (
        Kind::Counter,
        DELTAS_WITHOUT_TS,
        None,
        "Deltas without ts_ms (kept, keyed by gatherer)",
    ),
    (
        Kind::Gauge,
        OPEN_HOLES,
        None,
        "Holes open now (not yet declared), as last recorded in the local database for the next start",
    ),
    (
        Kind::Counter,
        OPEN_HOLES_WRITE_ERRORS,
        None,
        "Failed writes of the open holes to the local database (retried each second)",
    ),
    (
        Kind::Counter,
        LATE_SUBSCRIPTIONS,
        None,
        "Markets subscribed after they were live, with a late_subscription window declared",
    ),
    (
        Kind::Gauge,
        SUBSCRIBED_MARKETS,
        None,
        "Markets subscribed on the order book channel",
    ),
    (
        Kind::Gauge,
        ACTIVE_MARKETS,
        None,
        "Markets the registry tracks for subscription",
    ),
    (
        Kind::Counter,
        REST_ERRORS,
        None,
        "REST errors by endpoint and reason (status, transport, decode, too_large)",
    ),
    (
        Kind::Counter,
        REST_REQUESTS,
        None,
        "REST requests by endpoint and status class",
    ),
    (
        Kind::Counter,
        REGISTRY_VERSIONS,
        None,
        "Registry versions stored, by kind",
    ),
    (
        Kind::Counter,
        EXCHANGE_POLLS,
        None,
        "Polls of /exchange/status and /exchange/schedule, by object and outcome (changed: a new version stored)",
    ),
    (
        Kind::Gauge,
        EXCHANGE_ACTIVE,
        None,
        "1 while the exchange's last polled status says the exchange is active, 0 when not",
    ),
    (
        Kind::Gauge,
        EXCHANGE_TRADING_ACTIVE,
        None,
        "1 while the exchange's last polled status says trading is active, 0 during a halt",
    ),
    (
        Kind::Counter,
        TICKERS_WITHOUT_BOOK,
        None,
        "Tickers dropped because their market is not subscribed on the connection that received them",
    ),
    (
        Kind::Counter,
        OCCURRENCE_BEYOND_HORIZON,
        None,
        "Deltas or tickers whose timestamp lies further back than the occurrence horizon (10 s) behind the newest of their market",
    ),
    (
        Kind::Counter,
        REGISTRY_UNPARSEABLE,
        None,
        "Registry objects with a field that does not parse, by kind and outcome (salvaged: kept and subscribed from ticker and status; dropped: no usable ticker)",
    ),
    (Kind::Counter, REGISTRY_SYNCS, None, "Full registry syncs"),
    (
        Kind::Gauge,
        REGISTRY_PENDING,
        None,
        "Lifecycle changes reported and not yet in the registry: being fetched, waiting for a retry after a failed fetch, or owed to a full resync (1) not yet succeeded",
    ),
    (
        Kind::Counter,
        BACKFILL_RECOVERED,
        None,
        "Trades fetched by REST backfill that the WebSocket had not delivered",
    ),
    (
        Kind::Counter,
        BACKFILL_RUNS,
        None,
        "Backfill runs, by reason",
    ),
    (
        Kind::Gauge,
        POLLING_FALLBACK,
        None,
        "1 while the REST polling fallback runs (WebSocket down)",
    ),
    (
        Kind::Counter,
        WRITER_INSERTS,
        None,
        "Rows inserted, by table",
    ),
    (
        Kind::Counter,
        WRITER_ERRORS,
        None,
        "Failed write attempts, by table and error class",
    ),
    (
        Kind::Histogram,
        WRITER_FLUSH_DURATION,
        Some(metrics::Unit::Seconds),
        "Duration of a batch write, by table",
    ),
    (
        Kind::Gauge,
        WRITER_BUFFER_ROWS,
        None,
        "Rows waiting in a writer's buffer, by table",
    ),
    (
        Kind::Counter,
        WRITER_DROPPED_ROWS,
        None,
        "Rows dropped because a writer's buffer was full, by table",
    ),
    (
        Kind::Counter,
        WRITER_REJECTED_ROWS,
        None,
        "Rows the database refused, by table",
    ),
    (
        Kind::Counter,
        WRITER_LOST_ROWS,
        None,
        "Rows lost at a shutdown past the flush deadline with the database unavailable and no usable spill directory, by table (alert on any)",
    ),
    (
        Kind::Counter,
        WRITER_LOCK_LOST,
        None,
        "Times the session holding the database's writer lock was lost and the lock taken again",
    ),
    (
        Kind::Counter,
        SPILL_WRITTEN_ROWS,
        None,
        "Rows written to the spill directory at a shutdown past the flush deadline, by table",
    ),
    (
        Kind::Counter,
        SPILL_REPLAYED_ROWS,
        None,
        "Spilled rows loaded into the database at start, by table",
    ),
    (
        Kind::Counter,
        SPILL_CORRUPT_FILES,
        None,
        "Spill files that could not be read at start (kept as *.corrupt), by table",
    ),
    (
        Kind::Counter,
        WRITER_DUPLICATES,
        None,
        "Rows already stored (trades seen by WebSocket and REST), by table",
    ),
    (
        Kind::Counter,
        GAPS_DECLARED,
        None,
        "Gap records declared, by reason",
    ),
    (
        Kind::Counter,
        RETENTION_DROPPED_PARTITIONS,
        None,
        "Partitions dropped by retention, by table",
    ),
    (
        Kind::Counter,
        RETENTION_DEFERRED_PARTITIONS,
        None,
        "Expired partitions kept for now because they hold cursors above rows that stay (trades backfilled late), per maintenance run, by table",
    ),
    (
        Kind::Counter,
        API_REQUESTS,
        None,
        "gRPC requests by method and status code",
    ),
    (Kind::Gauge, API_TAIL_STREAMS, None, "Open Tail streams"),
    (
        Kind::Gauge,
        API_READ_BUFFER_BYTES,
        None,
        "Bytes of Read and Tail pages read and not yet taken by gRPC (at most api.read_buffer_bytes)",
    ),
    (
        Kind::Counter,
        API_RECORDS_SENT,
        None,
        "Records sent over gRPC, by stream",
    ),
];

/// Registers descriptions (shown as `# HELP` lines) and zero-valued series.
pub fn describe() {
    kalshi_shared::http_server::describe();
    kalshi_shared::pg::op::describe();
    kalshi_shared::build::record_build_info("gatherer");
    for r in kalshi_shared::tls::REJECTION_REASONS {
        metrics::counter!(kalshi_shared::tls::REJECTIONS, "reason" => *r).increment(0);
    }
    for r in ["ok", "error"] {
        metrics::counter!(kalshi_shared::tls::RELOADS, "side" => "server", "result" => r)
            .increment(0);
    }
    for t in BAD_FRAME_TYPES {
        metrics::counter!(WS_BAD_FRAMES, "type" => *t).increment(0);
    }
    metrics::counter!(WS_UNKNOWN_MESSAGES, "channel" => "none").increment(0);
    metrics::counter!(WS_UNKNOWN_COPIES).increment(0);
    for r in ["ok", "error"] {
        metrics::counter!(CREDENTIAL_RELOADS, "result" => r).increment(0);
    }
    for t in TABLES {
        metrics::counter!(WRITER_INSERTS, "table" => *t).increment(0);
        metrics::counter!(WRITER_DROPPED_ROWS, "table" => *t).increment(0);
        metrics::counter!(WRITER_REJECTED_ROWS, "table" => *t).increment(0);
        metrics::counter!(WRITER_LOST_ROWS, "table" => *t).increment(0);
        metrics::counter!(SPILL_WRITTEN_ROWS, "table" => *t).increment(0);
        metrics::counter!(SPILL_REPLAYED_ROWS, "table" => *t).increment(0);
        metrics::counter!(SPILL_CORRUPT_FILES, "table" => *t).increment(0);
        metrics::gauge!(WRITER_BUFFER_ROWS, "table" => *t).set(0.0);
        for class in kalshi_shared::pg::DbErrorClass::ALL {
            metrics::counter!(WRITER_ERRORS, "table" => *t, "class" => class.label()).increment(0);
        }
    }
    for t in WS_ERROR_TYPES {
        metrics::counter!(WS_ERRORS, "type" => *t).increment(0);
    }
    for r in crate::store::rows::GapReason::ALL {
        metrics::counter!(GAPS_DECLARED, "reason" => r.as_str()).increment(0);
    }
    for e in REST_ENDPOINTS {
        for r in ["status", "transport", "decode", "too_large"] {
            metrics::counter!(REST_ERRORS, "endpoint" => *e, "reason" => r).increment(0);
        }
    }
    for c in ["orderbook_delta", "trade", "ticker", "market_lifecycle_v2"] {
        metrics::counter!(WS_MESSAGES, "channel" => c).increment(0);
    }
    metrics::counter!(WS_RECONNECTS).increment(0);
    metrics::counter!(WRITER_LOCK_LOST).increment(0);
    metrics::counter!(SEQ_GAPS).increment(0);
    metrics::counter!(RESNAPSHOTS).increment(0);
    metrics::counter!(LATE_SUBSCRIPTIONS).increment(0);
    metrics::counter!(OPEN_HOLES_WRITE_ERRORS).increment(0);
    metrics::gauge!(OPEN_HOLES).set(0.0);
    metrics::counter!(DELTAS_DROPPED).increment(0);
    for how in ["delta", "quiet"] {
        metrics::counter!(SNAPSHOT_SPLICES, "how" => how).increment(0);
    }
    metrics::counter!(PERIODIC_SNAPSHOTS).increment(0);
    for reason in ["superseded", "broken_chain", "left", "connection_ended"] {
        metrics::counter!(SNAPSHOTS_UNSTORED, "reason" => reason).increment(0);
    }
    metrics::counter!(SPLICE_VIOLATIONS).increment(0);
    metrics::counter!(BACKFILL_RECOVERED).increment(0);
    metrics::gauge!(POLLING_FALLBACK).set(0.0);
    metrics::gauge!(REGISTRY_PENDING).set(0.0);
    metrics::gauge!(WS_CONNECTED).set(0.0);
    metrics::gauge!(ACTIVE_MARKETS).set(0.0);
    metrics::gauge!(API_TAIL_STREAMS).set(0.0);
    metrics::gauge!(API_READ_BUFFER_BYTES).set(0.0);
    kalshi_shared::telemetry::describe_all(HELP);
    kalshi_shared::telemetry::describe_all(kalshi_shared::tls::HELP);
}
