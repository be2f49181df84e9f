//! Overflow: when the buffer is full (the database is down), the oldest rows are dropped and
//! their window is declared, as a gap or, for trades, handed to the backfill.
//!
//! It must never drop a row without declaring the window that covers it.

use super::*;

impl<R: Row> Writer<R> {
    /// Declares the spans of rows dropped on overflow: trades go to the hook (backfill), the
    /// others become gap records, which the gaps writer puts straight into its own buffer.
    pub(super) fn declare_overflow(&mut self, buf: &mut VecDeque<R>) {
        for (stream, span) in self.overflow.take() {
            if let Some(hook) = &self.hook {
                tracing::warn!(
                    table = self.table(),
                    rows = span.rows,
                    from_ms = span.from_ms,
                    to_ms = span.to_ms,
                    "writer buffer overflowed: rows dropped, handing the window to backfill"
                );
                hook(span);
                continue;
            }
            let (reason, detail) = if R::STREAM == Stream::Gaps {
                (
                    GapReason::GapsOverflow,
                    format!(
                        "{} gap records of this stream were dropped while the local database was unavailable; this window covers all of them",
                        span.rows
                    ),
                )
            } else {
                (
                    GapReason::BufferOverflow,
                    format!(
                        "{} rows dropped while the local database was unavailable",
                        span.rows
                    ),
                )
            };
            tracing::error!(
                table = self.table(),
                stream = stream.table(),
                rows = span.rows,
                from_ms = span.from_ms,
                to_ms = span.to_ms,
                reason = reason.as_str(),
                "writer buffer overflowed: rows dropped, declaring a gap"
            );
            let gap = GapRow {
                stream,
                market_ticker: None,
                from_ms: span.from_ms,
                to_ms: span.to_ms,
                reason,
                detail,
            };
            metrics::counter!(m::GAPS_DECLARED, "reason" => reason).increment(1);
            if R::STREAM == Stream::Gaps {
                // Straight into this (the gaps) writer's buffer, at the front (its channel
                // may be full, and it is the oldest news).
                if let Some(row) = R::from_gap(gap) {
                    buf.push_front(row);
                    self.own_rows += 1;
                }
            } else if let Some(g) = &self.gaps {
                g.push(gap);
            }
        }
    }

    /// Hands dropped spans to `hook` instead of declaring them as gaps.
    pub fn with_overflow_hook(mut self, hook: OverflowHook) -> Self {
        self.hook = Some(hook);
        self
    }
}
