//! The market registry: which series, events and markets exist, which markets to subscribe,
//! and a version log of every change so the catalogue flows by cursor like the data.
//!
//! Syncs from REST at start and every `registry.reconcile_interval`, and in between applies
//! `market_lifecycle_v2` / `event_lifecycle` notes from the connections by fetching the
//! changed object. Publishes the set of markets to subscribe on a `watch` channel. Stores a new
//! version of a market only when its non-trading content changes (prices and volumes move with
//! every trade and are the data streams' business).
//!
//! It must never: subscribe a market outside the allow-lists, or stop retrying a failed sync.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kalshi_shared::identity::{json_hash, market_hash};
use kalshi_shared::retry::{Backoff, BackoffConfig};
use kalshi_shared::wire::rest::{EventData, Market, Series, market_status};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::config::MveFilter;
use crate::health::Health;
use crate::metrics as m;
use crate::rest::{RestClient, RestError, q};
use crate::store::rows::{EventVersion, MarketVersion, RegistryRow, SeriesVersion};
use crate::store::writer::Sink;

mod fetch;
mod versions;

/// What the connections tell the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// A `market_lifecycle_v2` message for this market.
    Market { ticker: String, event_type: String },
    /// An `event_lifecycle` message.
    Event { ticker: String },
    /// Lifecycle messages may have been missed (reconnect): resync now.
    Resync,
}

/// The markets to subscribe.
/// The markets to collect, each with the exchange time it has been live since (its
/// `created_time`, or its `open_time` when that is later and past; `i64::MIN` when REST gave
/// neither): a connection that subscribes a market late declares the window from then
/// (`late_subscription`), so no gatherer's silence passes for coverage.
pub type Desired = Arc<BTreeMap<String, i64>>;

/// Which trades and markets belong to the configured collection (shared with connections).
#[derive(Debug, Default)]
pub struct Scope {
    /// `None`: every series.
    series: Option<HashSet<String>>,
    exclude_mve: bool,
    only_mve: bool,
}

impl Scope {
    /// Whether a market (by ticker) is collected. A ticker's series is its prefix before the
    /// first `-` (Kalshi's convention); multivariate markets start with `KXMVE`.
    pub fn covers(&self, ticker: &str) -> bool {
        let mve = ticker.starts_with("KXMVE");
        if (self.exclude_mve && mve) || (self.only_mve && !mve) {
            return false;
        }
        match &self.series {
            None => true,
            Some(set) => set.contains(ticker.split('-').next().unwrap_or(ticker)),
        }
    }
}

pub struct RegistryConfig {
    pub series: Vec<String>,
    pub categories: Vec<String>,
    pub mve_filter: MveFilter,
    pub include_unopened: bool,
    pub reconcile_interval: Duration,
    pub page_limit: u32,
    pub max_markets: usize,
    pub retry: BackoffConfig,
}

pub struct RegistrySinks {
    pub markets: Sink<MarketVersion>,
    pub events: Sink<EventVersion>,
    pub series: Sink<SeriesVersion>,
}

#[derive(Debug, Clone)]
struct MarketState {
    status: String,
    /// Exchange time it has been live since (see `Desired`).
    since_ms: i64,
}

pub struct Registry {
    rest: Arc<RestClient>,
    sinks: RegistrySinks,
    cfg: RegistryConfig,
    desired: watch::Sender<Desired>,
    scope: Arc<RwLock<Scope>>,
    notes: mpsc::Receiver<Note>,
    health: Arc<Health>,
    markets: HashMap<String, MarketState>,
    /// event ticker -> series ticker
    events: HashMap<String, String>,
    /// series ticker -> category
    series: HashMap<String, String>,
    /// Latest stored content hash per kind and ticker.
    hashes: [HashMap<String, String>; 3],
    allowed_series: Option<HashSet<String>>,
    /// Set when lifecycle messages may have been missed (a hole closed): the next sync also
    /// refreshes every tracked market not yet finalized, since a missed `determined` or
    /// `settled` would otherwise leave its status stale for good.
    refresh_unfinished: bool,
    /// Lifecycle changes whose fetch failed (REST down, rate-limited), retried with backoff
    /// until they apply: a market created or re-timed during a REST outage is otherwise stale
    /// until the next reconcile. Keyed by (kind, ticker) so repeats fold; bounded by
    /// `registry.max_markets`, past which the changes are left to an immediate full resync
    /// that refreshes every unfinished market.
    pending: BTreeMap<(u8, String), Note>,
    /// A full resync is owed (a lifecycle hole, or too many changes pending) and has not yet
    /// succeeded: the catalogue may be behind the exchange until it does.
    resync_owed: bool,
}

#[derive(Deserialize)]
struct MarketsPage<'a> {
    #[serde(borrow)]
    markets: Vec<&'a RawValue>,
    #[serde(default)]
    cursor: String,
}

#[derive(Deserialize)]
struct EventsPage<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
    #[serde(default)]
    cursor: String,
}

#[derive(Deserialize)]
struct SeriesList<'a> {
    #[serde(borrow)]
    series: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct OneMarket<'a> {
    #[serde(borrow)]
    market: &'a RawValue,
}

#[derive(Deserialize)]
struct OneEvent<'a> {
    #[serde(borrow)]
    event: &'a RawValue,
}

#[derive(Deserialize)]
struct OneSeries<'a> {
    #[serde(borrow)]
    series: &'a RawValue,
}

fn parse_ms(text: Option<&str>) -> Option<i64> {
    text.filter(|t| !t.is_empty())
        .and_then(|t| kalshi_shared::time::parse_rfc3339_ms(t).ok())
}

const KIND_MARKET: usize = 0;
const KIND_EVENT: usize = 1;
const KIND_SERIES: usize = 2;

impl Registry {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        rest: Arc<RestClient>,
        sinks: RegistrySinks,
        cfg: RegistryConfig,
        desired: watch::Sender<Desired>,
        scope: Arc<RwLock<Scope>>,
        notes: mpsc::Receiver<Note>,
        health: Arc<Health>,
        hashes: [HashMap<String, String>; 3],
    ) -> Self {
        {
            let mut s = scope
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            s.exclude_mve = cfg.mve_filter == MveFilter::Exclude;
            s.only_mve = cfg.mve_filter == MveFilter::Only;
            if !cfg.series.is_empty() && cfg.categories.is_empty() {
                s.series = Some(cfg.series.iter().cloned().collect());
            }
        }
        Self {
            rest,
            sinks,
            cfg,
            desired,
            scope,
            notes,
            health,
            markets: HashMap::new(),
            refresh_unfinished: false,
            pending: BTreeMap::new(),
            resync_owed: false,
            events: HashMap::new(),
            series: HashMap::new(),
            hashes,
            allowed_series: None,
        }
    }

    #[tracing::instrument(name = "registry", skip_all)]
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut backoff = Backoff::new(self.cfg.retry);
        loop {
            match self.sync(&cancel).await {
                Ok(()) => break,
                Err(RestError::Shutdown) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "registry sync failed, retrying");
                    if !backoff.sleep(&cancel).await {
                        return;
                    }
                }
            }
        }
        let mut next_sync = tokio::time::Instant::now() + self.cfg.reconcile_interval;
        let mut retry = Backoff::new(self.cfg.retry);
        // Far in the future while nothing is pending.
        let idle = || tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
        let mut retry_at = idle();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                note = self.notes.recv() => match note {
                    Some(Note::Resync) => {
                        self.refresh_unfinished = true;
                        self.resync_owed = true;
                        self.report_behind(false);
                        next_sync = tokio::time::Instant::now();
                    }
                    Some(note) => {
                        // Behind while the fetch runs: it may wait out REST's backoff for a
                        // while (a 429 storm), and nobody must take the catalogue as current
                        // meanwhile.
                        self.report_behind(true);
                        let applied = self.apply(note.clone()).await;
                        self.report_behind(false);
                        if let Err(e) = applied {
                            if matches!(e, RestError::Shutdown) {
                                return;
                            }
                            tracing::warn!(error = %e, ?note, "cannot apply a lifecycle change now, retrying");
                            if self.defer(note) {
                                next_sync = tokio::time::Instant::now();
                            }
                            if self.pending.len() == 1 {
                                retry_at = tokio::time::Instant::now() + retry.next_delay();
                            }
                        }
                    }
                    None => return,
                },
                _ = tokio::time::sleep_until(retry_at) => {
                    match self.retry_pending().await {
                        Ok(()) => {
                            retry.reset();
                            retry_at = idle();
                        }
                        Err(RestError::Shutdown) => return,
                        Err(e) => {
                            tracing::warn!(error = %e, pending = self.pending.len(), "lifecycle changes still cannot apply, retrying");
                            retry_at = tokio::time::Instant::now() + retry.next_delay();
                        }
                    }
                }
                _ = tokio::time::sleep_until(next_sync) => {
                    match self.sync(&cancel).await {
                        Ok(()) => {
                            self.resync_owed = false;
                            self.report_behind(false);
                            // A later failure starts its backoff from the first step again.
                            backoff.reset();
                            next_sync = tokio::time::Instant::now() + self.cfg.reconcile_interval;
                        }
                        Err(RestError::Shutdown) => return,
                        Err(e) => {
                            tracing::warn!(error = %e, "registry reconcile failed, retrying");
                            next_sync = tokio::time::Instant::now() + backoff.next_delay();
                        }
                    }
                }
            }
        }
    }

    /// Keeps a change that could not apply for retry. Returns whether the bound was reached
    /// (every pending change then goes to a full resync instead, which refreshes unfinished
    /// markets too).
    fn defer(&mut self, note: Note) -> bool {
        let key = match &note {
            Note::Market { ticker, .. } => (0, ticker.clone()),
            Note::Event { ticker } => (1, ticker.clone()),
            Note::Resync => return false,
        };
        self.pending.insert(key, note);
        if self.pending.len() > self.cfg.max_markets.max(1) {
            tracing::warn!(
                pending = self.pending.len(),
                "too many lifecycle changes pending: resyncing the whole registry instead"
            );
            self.pending.clear();
            self.refresh_unfinished = true;
            self.resync_owed = true;
            self.report_behind(false);
            return true;
        }
        self.report_behind(false);
        false
    }

    /// `market_registry_pending_changes`: the lifecycle changes known and not yet applied
    /// (waiting for a retry, being fetched now, or owed to a full resync that has not
    /// succeeded yet). Zero means the catalogue holds everything the connections reported.
    fn report_behind(&self, applying: bool) {
        let n = self.pending.len() + usize::from(applying) + usize::from(self.resync_owed);
        metrics::gauge!(m::REGISTRY_PENDING).set(n as f64);
    }

    /// Applies every pending change in order; stops at the first failure, keeping the rest.
    async fn retry_pending(&mut self) -> Result<(), RestError> {
        while let Some((key, note)) = self.pending.pop_first() {
            self.report_behind(true);
            if let Err(e) = self.apply(note.clone()).await {
                self.pending.insert(key, note);
                self.report_behind(false);
                return Err(e);
            }
            self.report_behind(false);
        }
        Ok(())
    }

    fn publish(&self) {
        let mut set: BTreeMap<String, i64> = self
            .markets
            .iter()
            .filter(|(_, s)| self.wants(&s.status))
            .map(|(t, s)| (t.clone(), s.since_ms))
            .collect();
        if set.len() > self.cfg.max_markets {
            tracing::error!(
                markets = set.len(),
                limit = self.cfg.max_markets,
                "more markets than registry.max_markets: the rest are not collected"
            );
            set = set.into_iter().take(self.cfg.max_markets).collect();
        }
        metrics::gauge!(m::ACTIVE_MARKETS).set(set.len() as f64);
        self.health.set_markets(set.len());
        if **self.desired.borrow() != set {
            self.desired.send_replace(Arc::new(set));
        }
    }

    async fn apply(&mut self, note: Note) -> Result<(), RestError> {
        match note {
            Note::Market { ticker, event_type } => {
                tracing::debug!(ticker, event_type, "lifecycle change");
                if !self.scope_covers(&ticker) {
                    return Ok(());
                }
                self.fetch_market(&ticker).await?;
                self.publish();
            }
            Note::Event { ticker } => {
                self.fetch_event(&ticker).await?;
            }
            Note::Resync => {}
        }
        Ok(())
    }

    fn scope_covers(&self, ticker: &str) -> bool {
        self.scope.read().map(|s| s.covers(ticker)).unwrap_or(true)
    }
}

/// The content hash of a lifecycle message: canonical JSON of its fields.
/// A market whose body has a field that does not parse (a type Kalshi changed, a value out of
/// range) is not dropped: its ticker, event, status and update time are taken from the raw
/// JSON so it is still subscribed, and the whole body is still stored as its version. Counted
/// and logged either way; only a market without a ticker is dropped (it cannot be subscribed).
fn salvage_market(raw: &str, e: &serde_json::Error) -> Option<Market> {
    let v: serde_json::Value = serde_json::from_str(raw).ok().unwrap_or_default();
    let text = |k: &str| v[k].as_str().map(str::to_owned);
    let Some(ticker) = text("ticker").filter(|t| !t.is_empty()) else {
        metrics::counter!(m::REGISTRY_UNPARSEABLE, "kind" => "market", "outcome" => "dropped")
            .increment(1);
        tracing::error!(error = %e, body = %raw.chars().take(300).collect::<String>(), "market without a usable ticker: it cannot be subscribed");
        return None;
    };
    metrics::counter!(m::REGISTRY_UNPARSEABLE, "kind" => "market", "outcome" => "salvaged")
        .increment(1);
    tracing::warn!(ticker = %ticker, error = %e, "market has a field that does not parse; kept and subscribed from its ticker and status");
    Some(Market {
        ticker,
        event_ticker: text("event_ticker").unwrap_or_default(),
        status: text("status").unwrap_or_default(),
        updated_time: text("updated_time").unwrap_or_default(),
        mve_collection_ticker: text("mve_collection_ticker"),
        ..Market::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_market_with_a_field_that_does_not_parse_is_kept() {
        // `settlement_timer_seconds` as text, not the integer the type expects.
        let raw = r#"{"ticker":"KXFED-26JAN09-T3.75","event_ticker":"KXFED-26JAN09","status":"active","updated_time":"2026-01-01T00:00:00Z","settlement_timer_seconds":"soon"}"#;
        let e = serde_json::from_str::<Market>(raw).unwrap_err();
        let m = salvage_market(raw, &e).unwrap();
        assert_eq!(
            (
                m.ticker.as_str(),
                m.event_ticker.as_str(),
                m.status.as_str()
            ),
            ("KXFED-26JAN09-T3.75", "KXFED-26JAN09", "active")
        );
        assert_eq!(m.updated_time, "2026-01-01T00:00:00Z");
        let raw = r#"{"ticker":42,"status":"active"}"#;
        let e = serde_json::from_str::<Market>(raw).unwrap_err();
        assert!(salvage_market(raw, &e).is_none(), "no usable ticker");
    }

    #[test]
    fn scope_by_series_prefix_and_mve() {
        let mut s = Scope {
            series: None,
            exclude_mve: true,
            only_mve: false,
        };
        assert!(s.covers("KXHIGHNY-26NOV22-B53.5"));
        assert!(!s.covers("KXMVECROSSCATEGORY-S2026ABC-1"));
        s.series = Some(["KXCPI".to_owned()].into_iter().collect());
        assert!(!s.covers("KXHIGHNY-26NOV22-B53.5"));
        assert!(s.covers("KXCPI-26NOV22-T2.3"));
    }
}
