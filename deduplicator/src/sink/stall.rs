//! A writer stalled on an error that is not its rows' fault: production refuses the
//! transaction (a revoked privilege, a wrong password, a missing table, a broken server). The
//! batch is kept and retried with backoff, its cursors stay where they are, nothing goes to
//! quarantine; the stall is counted, shown on `dedup_sink_stalled` (alert
//! `DedupWritesRefused`, runbooks/production-refuses.md) and logged at ERROR when it begins
//! and every minute while it lasts, and at INFO when it ends.
//!
//! It must never decide anything about the rows: it only tells the operator.

use std::time::{Duration, Instant};

use crate::db::DbError;
use crate::metrics as m;

/// How often a continuing stall is logged again.
const REPEAT: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub(super) struct Stall {
    /// Since when, and when it was last logged.
    since: Option<(Instant, Instant)>,
    /// Errors while stalled.
    errors: u64,
}

impl Stall {
    /// A transaction failed for a reason that needs an operator.
    pub(super) fn refused(&mut self, stream: &'static str, e: &DbError) {
        let class = e.class.label();
        let now = Instant::now();
        self.errors += 1;
        match &mut self.since {
            None => {
                self.since = Some((now, now));
                self.errors = 1;
                metrics::gauge!(m::SINK_STALLED, "stream" => stream).set(1.0);
                metrics::counter!(m::SINK_STALLS, "stream" => stream, "class" => class)
                    .increment(1);
                tracing::error!(
                    stream,
                    error = %e,
                    sqlstate_class = kalshi_shared::pg::sqlstate_class(e.sqlstate.as_deref()),
                    "PRODUCTION REFUSES THIS STREAM'S WRITES (not the rows' fault): the writer stalls with its cursors unmoved and nothing quarantined, retrying until the cause is fixed (runbooks/production-refuses.md)"
                );
            }
            Some((since, logged)) if now.duration_since(*logged) >= REPEAT => {
                *logged = now;
                tracing::error!(
                    stream,
                    error = %e,
                    stalled_for = ?now.duration_since(*since),
                    attempts = self.errors,
                    "production still refuses this stream's writes: stalled, retrying"
                );
            }
            Some(_) => {}
        }
    }

    /// A transaction committed: the stall (if any) is over.
    pub(super) fn resumed(&mut self, stream: &'static str) {
        if let Some((since, _)) = self.since.take() {
            metrics::gauge!(m::SINK_STALLED, "stream" => stream).set(0.0);
            tracing::info!(
                stream,
                stalled_for = ?since.elapsed(),
                attempts = self.errors,
                "production accepts this stream's writes again: the stall is over"
            );
        }
    }

    #[cfg(test)]
    pub(super) fn stalled(&self) -> bool {
        self.since.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kalshi_shared::pg::DbErrorClass;

    #[test]
    fn a_stall_begins_once_and_ends_on_the_next_commit() {
        let mut s = Stall::default();
        assert!(!s.stalled());
        s.resumed("trades");
        assert!(!s.stalled(), "a commit without a stall changes nothing");
        let e = DbError {
            class: DbErrorClass::Refused,
            sqlstate: Some("42501".into()),
            message: "permission denied for table trades".into(),
        };
        s.refused("trades", &e);
        s.refused("trades", &e);
        assert!(s.stalled());
        assert_eq!(s.errors, 2);
        s.resumed("trades");
        assert!(!s.stalled());
    }
}
