//! The exchange's own state: `/exchange/status` (is the exchange up, is trading on: halts)
//! and `/exchange/schedule` (trading hours, maintenance windows), polled and stored as
//! versions in the `exchange` stream (tickers `status` and `schedule`), like the registry's:
//! a new row only when the content changed. A content that comes back (trading active again
//! after a halt) is a new row too (production numbers the returns: deduplicator
//! sink/lifecycle.rs).
//!
//! Kalshi answers `/exchange/status` with the status body on 500, 503 and 504 too (during
//! maintenance): such a reply that parses as a status is a status, not an error.
//!
//! Polling sees a state only if it lasts; a halt shorter than the interval can pass unseen
//! (`registry.exchange_status_interval`, 10 s by default). When polls fail (REST down or
//! refusing), or the gatherer was down, the window from the last good poll to the next is
//! declared (`rest_unavailable`, `gatherer_down`; stream `exchange`, market `status` or
//! `schedule`), kept in `open_holes` until then so a SIGKILL never forgets it.
//!
//! It must never store a version whose content did not change, nor a body that is not the
//! object the endpoint documents.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kalshi_shared::identity::json_hash;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::connections::{OpenHole, OpenHoles};
use crate::metrics as m;
use crate::rest::{RestClient, RestError};
use crate::store::Stream;
use crate::store::rows::{ExchangeVersion, GapReason, GapRow, RegistryRow};
use crate::store::writer::Sink;

/// The watcher's key among the open holes' publishers (the connections use their index).
const HOLES_KEY: usize = usize::MAX;

/// The largest status or schedule body read (they are a few hundred bytes): a hostile or
/// broken endpoint never makes the poller hold more.
const MAX_BODY: usize = 1 << 20;

/// The two objects, by their ticker in the stream.
pub const STATUS: &str = "status";
pub const SCHEDULE: &str = "schedule";

/// What of `/exchange/status` is required (the rest is kept in the body as sent).
#[derive(Deserialize)]
struct Status {
    exchange_active: bool,
    trading_active: bool,
}

/// `/exchange/schedule` must be `{"schedule": {...}}`: the object is checked, not read.
#[derive(Deserialize)]
struct Schedule {
    #[allow(dead_code)]
    schedule: serde_json::Map<String, serde_json::Value>,
}

pub struct ExchangeWatcher {
    rest: Arc<RestClient>,
    sink: Sink<ExchangeVersion>,
    status_every: Duration,
    schedule_every: Duration,
    /// The content hash last stored per ticker (from the store at start).
    hashes: HashMap<String, String>,
    gaps: Sink<GapRow>,
    holes: Arc<OpenHoles>,
    /// Per object: the open window (since, why) in which it could not be read.
    open: BTreeMap<&'static str, (i64, GapReason)>,
    /// Per object: the last good poll (Unix ms).
    last_ok: HashMap<&'static str, i64>,
    started_ms: i64,
}

/// What the watcher is given by the service (`ExchangeWatcher::new`).
pub struct WatcherConfig {
    pub status_every: Duration,
    pub schedule_every: Duration,
    /// The newest stored record of the previous run (`None`: a first start).
    pub down_since_ms: Option<i64>,
}

/// What one poll saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Polled {
    Changed,
    Same,
    Refused,
}

impl Polled {
    fn label(self) -> &'static str {
        match self {
            Polled::Changed => "changed",
            Polled::Same => "same",
            Polled::Refused => "error",
        }
    }
}

impl ExchangeWatcher {
    /// Takes over the exchange's holes a previous run left open; else opens the downtime
    /// before this start (`gatherer_down`) for each polled object. Must be built before the
    /// connections, which would otherwise see the inherited holes.
    pub fn new(
        rest: Arc<RestClient>,
        (sink, gaps, holes): (Sink<ExchangeVersion>, Sink<GapRow>, Arc<OpenHoles>),
        cfg: WatcherConfig,
        hashes: HashMap<String, String>,
    ) -> Self {
        for object in [STATUS, SCHEDULE] {
            for outcome in [Polled::Changed, Polled::Same, Polled::Refused] {
                metrics::counter!(m::EXCHANGE_POLLS, "object" => object, "outcome" => outcome.label())
                    .increment(0);
            }
        }
        let mut open = BTreeMap::new();
        for h in holes.take_inherited(|h| h.stream == Stream::Exchange) {
            if let Some(object) = [STATUS, SCHEDULE].into_iter().find(|o| *o == h.market) {
                open.insert(object, (h.from_ms, h.reason));
            }
        }
        for (object, every) in [(STATUS, cfg.status_every), (SCHEDULE, cfg.schedule_every)] {
            if let (false, Some(from)) = (every.is_zero(), cfg.down_since_ms) {
                open.entry(object)
                    .or_insert((from, GapReason::GathererDown));
            }
        }
        let w = Self {
            rest,
            sink,
            status_every: cfg.status_every,
            schedule_every: cfg.schedule_every,
            hashes,
            gaps,
            holes,
            open,
            last_ok: HashMap::new(),
            started_ms: kalshi_shared::time::now_ms(),
        };
        w.publish_holes();
        w
    }

    fn publish_holes(&self) {
        let holes = self
            .open
            .iter()
            .map(|(object, (from_ms, reason))| OpenHole {
                stream: Stream::Exchange,
                market: (*object).to_owned(),
                from_ms: *from_ms,
                reason: *reason,
            })
            .collect();
        self.holes.publish(HOLES_KEY, holes);
    }

    /// A good poll of `object`: the window it could not be read in is declared.
    fn read_ok(&mut self, object: &'static str) {
        let now = kalshi_shared::time::now_ms();
        self.last_ok.insert(object, now);
        if let Some((from_ms, reason)) = self.open.remove(object) {
            self.gaps.push(GapRow {
                stream: Stream::Exchange,
                market_ticker: Some(object.to_owned()),
                from_ms,
                to_ms: now,
                reason,
                detail: String::new(),
            });
            metrics::counter!(m::GAPS_DECLARED, "reason" => reason).increment(1);
            self.publish_holes();
        }
    }

    /// A failed poll of `object`: a window opens at the last good poll.
    fn read_failed(&mut self, object: &'static str) {
        if self.open.contains_key(object) {
            return;
        }
        let from = self.last_ok.get(object).copied().unwrap_or(self.started_ms);
        self.open.insert(object, (from, GapReason::RestUnavailable));
        self.publish_holes();
    }

    #[tracing::instrument(name = "exchange", skip_all)]
    pub async fn run(mut self, cancel: CancellationToken) {
        if self.status_every.is_zero() && self.schedule_every.is_zero() {
            return;
        }
        let now = tokio::time::Instant::now();
        // Far in the future for an object that is never polled.
        let never = now + Duration::from_secs(86_400 * 365 * 10);
        let mut next_status = if self.status_every.is_zero() {
            never
        } else {
            now
        };
        let mut next_schedule = if self.schedule_every.is_zero() {
            never
        } else {
            now
        };
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep_until(next_status) => {
                    if self.poll(STATUS).await.is_err() {
                        return;
                    }
                    next_status = tokio::time::Instant::now() + self.status_every;
                }
                _ = tokio::time::sleep_until(next_schedule) => {
                    if self.poll(SCHEDULE).await.is_err() {
                        return;
                    }
                    next_schedule = tokio::time::Instant::now() + self.schedule_every;
                }
            }
        }
    }

    /// One poll of `object`; `Err` only when shutting down.
    async fn poll(&mut self, object: &'static str) -> Result<Polled, ()> {
        let (endpoint, path) = match object {
            STATUS => ("exchange_status", "/exchange/status"),
            _ => ("exchange_schedule", "/exchange/schedule"),
        };
        let outcome = match self.rest.get_any_status(endpoint, path, MAX_BODY).await {
            Err(RestError::Shutdown) => return Err(()),
            Err(e) => {
                metrics::counter!(m::REST_ERRORS, "endpoint" => endpoint, "reason" => e.reason())
                    .increment(1);
                tracing::warn!(object, error = %e, "cannot read the exchange's {object}; polling again later");
                Polled::Refused
            }
            Ok((status, body)) => {
                let text = String::from_utf8_lossy(&body);
                let maintenance = object == STATUS && matches!(status, 500 | 503 | 504);
                if (200..300).contains(&status) || maintenance {
                    self.take(object, &text, status)
                } else {
                    tracing::warn!(object, status, body = %text.chars().take(300).collect::<String>(), "the exchange refused a {object} request; polling again later");
                    Polled::Refused
                }
            }
        };
        metrics::counter!(m::EXCHANGE_POLLS, "object" => object, "outcome" => outcome.label())
            .increment(1);
        match outcome {
            Polled::Changed | Polled::Same => self.read_ok(object),
            Polled::Refused => self.read_failed(object),
        }
        Ok(outcome)
    }

    /// Stores `text` as a new version of `object` when it is a valid object whose content
    /// differs from the last stored.
    pub fn take(&mut self, object: &str, text: &str, http_status: u16) -> Polled {
        let valid = match object {
            STATUS => match serde_json::from_str::<Status>(text) {
                Ok(s) => {
                    metrics::gauge!(m::EXCHANGE_ACTIVE).set(f64::from(u8::from(s.exchange_active)));
                    metrics::gauge!(m::EXCHANGE_TRADING_ACTIVE)
                        .set(f64::from(u8::from(s.trading_active)));
                    true
                }
                Err(_) => false,
            },
            _ => serde_json::from_str::<Schedule>(text).is_ok(),
        };
        let hash = json_hash(text).filter(|_| valid);
        let Some(hash) = hash else {
            // A 5xx without a status body is the exchange failing, not a status.
            if http_status < 300 {
                tracing::warn!(object, body = %text.chars().take(300).collect::<String>(), "the exchange's {object} is not the documented object; not stored");
            } else {
                tracing::warn!(
                    object,
                    http_status,
                    "the exchange failed a {object} request; polling again later"
                );
            }
            return Polled::Refused;
        };
        if self.hashes.get(object) == Some(&hash) {
            return Polled::Same;
        }
        let row = RegistryRow {
            ticker: object.to_owned(),
            updated_ms: None,
            observed_ms: kalshi_shared::time::now_ms(),
            body: text.to_owned(),
            content_hash: hash.clone(),
        };
        if !self.sink.push(ExchangeVersion(row)) {
            // The store is closing: the next poll (or the next start) stores it.
            return Polled::Refused;
        }
        tracing::info!(object, http_status, body = %text.chars().take(300).collect::<String>(), "the exchange's {object} changed");
        metrics::counter!(m::REGISTRY_VERSIONS, "kind" => "exchange").increment(1);
        self.hashes.insert(object.to_owned(), hash);
        Polled::Changed
    }
}
