//! Every metric the gatherer exports, named and described in one place. The names in
//! DESIGN.md are fixed: operators grep for them. Labels are low-cardinality (never a ticker).

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

    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        WS_CONNECTED,
        "WebSocket connections currently connected and subscribed"
    );
    describe_gauge!(
        WS_CONNECTIONS_CONFIGURED,
        "WebSocket connections configured (ws.connections)"
    );
    describe_counter!(WS_MESSAGES, "Frames received, by channel");
    describe_counter!(WS_RECONNECTS, "WebSocket reconnections");
    describe_counter!(
        kalshi_shared::tls::REJECTIONS,
        "gRPC TLS handshakes refused, by reason (unknown_ca, expired, no_client_certificate, name_not_allowed, handshake_timeout, ...)"
    );
    describe_counter!(
        kalshi_shared::tls::RELOADS,
        "TLS certificate files re-read after they changed, by side and result (error: the new files did not load; the running certificates stay)"
    );
    metrics::describe_gauge!(
        kalshi_shared::tls::EXPIRY,
        "When this side's TLS certificate (cert=own) and its CA (cert=ca, the latest-ending of the bundle) end, Unix seconds"
    );
    describe_counter!(
        CREDENTIAL_RELOADS,
        "Kalshi key reloads at SIGHUP, by result (error: the new key did not load; the old one stays)"
    );
    describe_counter!(
        WS_ERRORS,
        "WebSocket errors, by type (connect, disconnect, stall, oversize, protocol, invalid_utf8, parse, server_error, command_timeout)"
    );
    describe_counter!(WS_BAD_FRAMES, "Frames that failed to parse, by frame type");
    describe_counter!(
        WS_UNKNOWN_MESSAGES,
        "Messages of types this build does not model, stored as sent (unknown_messages), by the channel of their sid (none: a sid not subscribed)"
    );
    describe_counter!(
        IMPORT_PAGES,
        "History import pages settled (gatherer import)"
    );
    describe_counter!(
        IMPORT_TRADES,
        "History import trades in the window handed to the writer (duplicates are then skipped by the trades key)"
    );
    describe_counter!(
        IMPORT_UNPARSEABLE,
        "History import trades that do not parse (skipped and logged)"
    );
    describe_counter!(
        WS_UNKNOWN_COPIES,
        "Copies of an unknown message another connection of this gatherer already stored"
    );
    describe_counter!(
        SEQ_GAPS,
        "Sequence gaps (skip, repeat or decrease) per subscription"
    );
    describe_counter!(
        RESNAPSHOTS,
        "Markets resnapshotted after a gap, error or disconnect"
    );
    describe_counter!(
        SNAPSHOT_SPLICES,
        "Order-book snapshots stored at their exact splice point: at the first delta of a later millisecond or after a quiet hold (how=delta), or after a hold with no delta at all (how=quiet)"
    );
    describe_counter!(
        PERIODIC_SNAPSHOTS,
        "Books that changed since their last snapshot, set to be stored again every ws.snapshot_every (stored at their splice point, counted in conn_manager_snapshot_splices_total)"
    );
    describe_counter!(
        SNAPSHOTS_UNSTORED,
        "Exchange snapshots not stored because the chain broke (or a newer snapshot came, or the market left, or the connection ended) before their splice point was certain"
    );
    describe_counter!(
        SPLICE_VIOLATIONS,
        "Deltas stamped at or before a quiet snapshot's splice point that arrived after the hold (the clock or delivery bound proved wrong); a fresh snapshot is stored"
    );
    describe_counter!(
        DELTAS_DROPPED,
        "Deltas dropped because their market's book was invalid"
    );
    describe_counter!(
        DELTAS_WITHOUT_TS,
        "Deltas without ts_ms (kept, keyed by gatherer)"
    );
    describe_gauge!(
        OPEN_HOLES,
        "Holes open now (not yet declared), as last recorded in the local database for the next start"
    );
    describe_counter!(
        OPEN_HOLES_WRITE_ERRORS,
        "Failed writes of the open holes to the local database (retried each second)"
    );
    describe_counter!(
        LATE_SUBSCRIPTIONS,
        "Markets subscribed after they were live, with a late_subscription window declared"
    );
    describe_gauge!(
        SUBSCRIBED_MARKETS,
        "Markets subscribed on the order book channel"
    );
    describe_gauge!(
        ACTIVE_MARKETS,
        "Markets the registry tracks for subscription"
    );
    describe_counter!(
        REST_ERRORS,
        "REST errors by endpoint and reason (status, transport, decode, too_large)"
    );
    describe_counter!(REST_REQUESTS, "REST requests by endpoint and status class");
    describe_counter!(REGISTRY_VERSIONS, "Registry versions stored, by kind");
    describe_counter!(
        EXCHANGE_POLLS,
        "Polls of /exchange/status and /exchange/schedule, by object and outcome (changed: a new version stored)"
    );
    describe_gauge!(
        EXCHANGE_ACTIVE,
        "1 while the exchange's last polled status says the exchange is active, 0 when not"
    );
    describe_gauge!(
        EXCHANGE_TRADING_ACTIVE,
        "1 while the exchange's last polled status says trading is active, 0 during a halt"
    );
    describe_counter!(
        TICKERS_WITHOUT_BOOK,
        "Tickers dropped because their market is not subscribed on the connection that received them"
    );
    describe_counter!(
        OCCURRENCE_BEYOND_HORIZON,
        "Deltas or tickers whose timestamp lies further back than the occurrence horizon (10 s) behind the newest of their market"
    );
    describe_counter!(
        REGISTRY_UNPARSEABLE,
        "Registry objects with a field that does not parse, by kind and outcome (salvaged: kept and subscribed from ticker and status; dropped: no usable ticker)"
    );
    describe_counter!(REGISTRY_SYNCS, "Full registry syncs");
    describe_gauge!(
        REGISTRY_PENDING,
        "Lifecycle changes reported and not yet in the registry: being fetched, waiting for a retry after a failed fetch, or owed to a full resync (1) not yet succeeded"
    );
    describe_counter!(
        BACKFILL_RECOVERED,
        "Trades fetched by REST backfill that the WebSocket had not delivered"
    );
    describe_counter!(BACKFILL_RUNS, "Backfill runs, by reason");
    describe_gauge!(
        POLLING_FALLBACK,
        "1 while the REST polling fallback runs (WebSocket down)"
    );
    describe_counter!(WRITER_INSERTS, "Rows inserted, by table");
    describe_counter!(
        WRITER_ERRORS,
        "Failed write attempts, by table and error class"
    );
    describe_histogram!(
        WRITER_FLUSH_DURATION,
        Unit::Seconds,
        "Duration of a batch write, by table"
    );
    describe_gauge!(
        WRITER_BUFFER_ROWS,
        "Rows waiting in a writer's buffer, by table"
    );
    describe_counter!(
        WRITER_DROPPED_ROWS,
        "Rows dropped because a writer's buffer was full, by table"
    );
    describe_counter!(WRITER_REJECTED_ROWS, "Rows the database refused, by table");
    describe_counter!(
        WRITER_LOST_ROWS,
        "Rows lost at a shutdown past the flush deadline with the database unavailable and no usable spill directory, by table (alert on any)"
    );
    describe_counter!(
        WRITER_LOCK_LOST,
        "Times the session holding the database's writer lock was lost and the lock taken again"
    );
    describe_counter!(
        SPILL_WRITTEN_ROWS,
        "Rows written to the spill directory at a shutdown past the flush deadline, by table"
    );
    describe_counter!(
        SPILL_REPLAYED_ROWS,
        "Spilled rows loaded into the database at start, by table"
    );
    describe_counter!(
        SPILL_CORRUPT_FILES,
        "Spill files that could not be read at start (kept as *.corrupt), by table"
    );
    describe_counter!(
        WRITER_DUPLICATES,
        "Rows already stored (trades seen by WebSocket and REST), by table"
    );
    describe_counter!(GAPS_DECLARED, "Gap records declared, by reason");
    describe_counter!(
        RETENTION_DROPPED_PARTITIONS,
        "Partitions dropped by retention, by table"
    );
    describe_counter!(
        RETENTION_DEFERRED_PARTITIONS,
        "Expired partitions kept for now because they hold cursors above rows that stay (trades backfilled late), per maintenance run, by table"
    );
    describe_counter!(API_REQUESTS, "gRPC requests by method and status code");
    describe_gauge!(API_TAIL_STREAMS, "Open Tail streams");
    describe_gauge!(
        API_READ_BUFFER_BYTES,
        "Bytes of Read and Tail pages read and not yet taken by gRPC (at most api.read_buffer_bytes)"
    );
    describe_counter!(API_RECORDS_SENT, "Records sent over gRPC, by stream");
}
