//! The one vocabulary of missing windows: why a gap is declared or a trade window is handed
//! to the backfill.
//!
//! It must never have two labels for one cause, nor change a stored label (they are in every
//! database and dashboard).

/// Why a window is missing: the `reason` of a `gaps` row, of a trade hole handed to the
/// backfill, and the label of `gaps_declared_total` and `backfill_runs_total`. One word for
/// one cause, stored as its snake_case label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GapReason {
    /// The WebSocket connection was lost.
    Disconnect,
    /// A `seq` was skipped on a subscription.
    SeqGap,
    /// Kalshi error 10 (channel error) on a subscription.
    WsError10,
    /// Kalshi error 17 (internal error).
    WsError17,
    /// Kalshi error 25 (the server's buffer overflowed).
    WsError25,
    /// Another Kalshi error on a subscription.
    WsError,
    /// A delta would have made a level negative.
    InconsistentBook,
    /// A delta that could not be decoded.
    BadDelta,
    /// A writer's buffer overflowed while the local database was unavailable.
    BufferOverflow,
    /// The gaps writer's own buffer overflowed.
    GapsOverflow,
    /// The local database refused a row.
    RejectedRow,
    /// The gatherer was not running.
    GathererDown,
    /// A market live before this gatherer subscribed it (learned of it late: a REST outage,
    /// a lifecycle message missed, a status change): from when it was live, or when this
    /// connection last held it, to its snapshot.
    LateSubscription,
    /// Older than `backfill.max_lookback`.
    BeyondBackfillLookback,
    /// Backfill is off.
    BackfillDisabled,
    /// A trade window still unfetched at shutdown.
    BackfillPendingAtShutdown,
    /// A REST trade that could not be decoded.
    UnparseableTrade,
    /// A trade window left by the previous run (backfill only).
    Restart,
    /// REST polling while the WebSocket is down (backfill only).
    Polling,
    /// A state polled over REST (the exchange's status or schedule) could not be read: the
    /// window from the last good poll to the next.
    RestUnavailable,
}

impl GapReason {
    pub const ALL: [GapReason; 20] = [
        Self::Disconnect,
        Self::SeqGap,
        Self::WsError10,
        Self::WsError17,
        Self::WsError25,
        Self::WsError,
        Self::InconsistentBook,
        Self::BadDelta,
        Self::BufferOverflow,
        Self::GapsOverflow,
        Self::RejectedRow,
        Self::GathererDown,
        Self::LateSubscription,
        Self::BeyondBackfillLookback,
        Self::BackfillDisabled,
        Self::BackfillPendingAtShutdown,
        Self::UnparseableTrade,
        Self::Restart,
        Self::Polling,
        Self::RestUnavailable,
    ];

    /// The stored label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Disconnect => "disconnect",
            Self::SeqGap => "seq_gap",
            Self::WsError10 => "ws_error_10",
            Self::WsError17 => "ws_error_17",
            Self::WsError25 => "ws_error_25",
            Self::WsError => "ws_error",
            Self::InconsistentBook => "inconsistent_book",
            Self::BadDelta => "bad_delta",
            Self::BufferOverflow => "buffer_overflow",
            Self::GapsOverflow => "gaps_overflow",
            Self::RejectedRow => "rejected_row",
            Self::GathererDown => "gatherer_down",
            Self::LateSubscription => "late_subscription",
            Self::BeyondBackfillLookback => "beyond_backfill_lookback",
            Self::BackfillDisabled => "backfill_disabled",
            Self::BackfillPendingAtShutdown => "backfill_pending_at_shutdown",
            Self::UnparseableTrade => "unparseable_trade",
            Self::Restart => "restart",
            Self::Polling => "polling",
            Self::RestUnavailable => "rest_unavailable",
        }
    }

    /// The reason a stored label names, if it is one.
    pub fn parse(label: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == label)
    }
}

impl From<GapReason> for metrics::SharedString {
    fn from(r: GapReason) -> Self {
        metrics::SharedString::const_str(r.as_str())
    }
}

impl std::fmt::Display for GapReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
