//! Trade backfill and the REST polling fallback.
//!
//! Holes in the trade stream (a disconnect or seq gap of the trade subscription, a restart)
//! are paged from `GET /markets/trades` (`min_ts`/`max_ts`, cursor, newest first) and every
//! trade the WebSocket did not deliver is stored; the trades table's `(trade_id, ts)` key is
//! the final word on duplicates. While the trade-carrying connection stays down longer than
//! `backfill.polling_after`, the same backfill runs every `polling_interval` and REST
//! order-book snapshots are taken for subscribed markets (`source = rest`); the fallback ends
//! when the WebSocket is back.
//!
//! It must never drop a hole: a window that cannot be fetched is retried, and a window older
//! than `max_lookback` is declared as a gap. Each window is recorded in the local database's
//! `pending_trade_holes` before it is fetched and removed only once everything it produced
//! (trades, gap records) is settled in the database, so a SIGKILL at any point leaves it for
//! the next start to fetch again.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use kalshi_shared::retry::{Backoff, BackoffConfig};
use kalshi_shared::wire::rest::{GetMarketOrderbookResponse, GetTradesResponse};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::connections::{Holes, RecentTrades, TradeHole};
use crate::health::{ConnState, Health};
use crate::metrics as m;
use crate::registry::{Desired, Scope};
use crate::rest::{RestClient, RestError, q};
use crate::store::Stream;
use crate::store::rows::{GapReason, GapRow, Origin, SnapshotRow, Source, TradeRow};
use crate::store::writer::Sink;

pub struct BackfillConfig {
    pub enabled: bool,
    pub margin_ms: i64,
    pub max_lookback: Duration,
    pub page_limit: u32,
    pub polling_after: Duration,
    pub polling_interval: Duration,
    pub rest_snapshots: bool,
    pub retry: BackoffConfig,
}

/// Trade windows waiting for backfill, kept in the local database (`pending_trade_holes`).
pub struct HoleLog {
    pool: sqlx::PgPool,
    op_timeout: Duration,
}

/// A stored reason (an unknown one reads as a restart's).
fn reason_label(s: &str) -> GapReason {
    GapReason::parse(s).unwrap_or(GapReason::Restart)
}

impl HoleLog {
    pub fn new(pool: sqlx::PgPool, op_timeout: Duration) -> Self {
        Self { pool, op_timeout }
    }

    /// The windows a previous run did not finish.
    pub async fn load(&self) -> Result<Vec<TradeHole>, sqlx::Error> {
        use sqlx::Row as _;
        let fut =
            sqlx::query("SELECT from_ms, to_ms, reason FROM pending_trade_holes ORDER BY from_ms")
                .fetch_all(&self.pool);
        let rows = kalshi_shared::pg::timed("pending_windows_load", self.op_timeout, fut)
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
        rows.iter()
            .map(|r| {
                Ok(TradeHole {
                    from_ms: r.try_get(0)?,
                    to_ms: r.try_get(1)?,
                    reason: reason_label(r.try_get::<&str, _>(2)?),
                })
            })
            .collect()
    }

    async fn record(&self, h: &TradeHole) -> Result<(), sqlx::Error> {
        let fut = sqlx::query(
            "INSERT INTO pending_trade_holes (from_ms, to_ms, reason) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(h.from_ms)
        .bind(h.to_ms)
        .bind(h.reason.as_str())
        .execute(&self.pool);
        kalshi_shared::pg::timed("pending_window_record", self.op_timeout, fut)
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
        Ok(())
    }

    /// The recorded windows inside `h` now (merged into it): fetching `h` from now on covers
    /// them, since their trades were published before.
    async fn inside(&self, h: &TradeHole) -> Result<Vec<(i64, i64)>, sqlx::Error> {
        let fut = sqlx::query_as(
            "SELECT from_ms, to_ms FROM pending_trade_holes WHERE from_ms >= $1 AND to_ms <= $2",
        )
        .bind(h.from_ms)
        .bind(h.to_ms)
        .fetch_all(&self.pool);
        kalshi_shared::pg::timed("pending_windows_inside", self.op_timeout, fut)
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
    }

    /// Removes `windows` (the window fetched and those inside it when its fetch began; a
    /// window recorded during the fetch stays, for its own fetch).
    async fn clear(&self, windows: &[(i64, i64)]) -> Result<(), sqlx::Error> {
        let (from, to): (Vec<i64>, Vec<i64>) = windows.iter().copied().unzip();
        let fut = sqlx::query(
            "DELETE FROM pending_trade_holes p USING UNNEST($1::bigint[], $2::bigint[]) AS w(f, t) \
             WHERE p.from_ms = w.f AND p.to_ms = w.t",
        )
        .bind(&from)
        .bind(&to)
        .execute(&self.pool);
        kalshi_shared::pg::timed("pending_window_clear", self.op_timeout, fut)
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
        Ok(())
    }
}

pub struct Backfill {
    pub rest: Arc<RestClient>,
    pub log: HoleLog,
    pub holes: Arc<Holes>,
    pub trades: Sink<TradeRow>,
    pub snapshots: Sink<SnapshotRow>,
    pub gaps: Sink<GapRow>,
    pub recent: Arc<RecentTrades>,
    pub scope: Arc<RwLock<Scope>>,
    pub health: Arc<Health>,
    pub desired: watch::Receiver<Desired>,
    pub cfg: BackfillConfig,
}

fn now_ms() -> i64 {
    kalshi_shared::time::now_ms()
}

impl Backfill {
    /// `newest_stored_trade_ms`: where trades stopped before this start (None: never ran).
    /// Holes are recorded in the database as soon as they are found (`record_found`), while
    /// this loop may be busy fetching another.
    #[tracing::instrument(name = "backfill", skip_all)]
    pub async fn run(self, newest_stored_trade_ms: Option<i64>, cancel: CancellationToken) {
        if let Some(from) = newest_stored_trade_ms {
            self.holes.push(TradeHole {
                from_ms: from - self.cfg.margin_ms,
                to_ms: now_ms() + self.cfg.margin_ms,
                reason: GapReason::Restart,
            });
        }
        tokio::join!(self.fetch_loop(&cancel), self.record_found(&cancel));
        // Holes still pending at shutdown are declared: nothing is left silent.
        for hole in self.holes.take() {
            self.gap(
                hole.from_ms,
                hole.to_ms,
                GapReason::BackfillPendingAtShutdown,
            );
        }
        self.health.set_polling(false);
        metrics::gauge!(m::POLLING_FALLBACK).set(0.0);
    }

    /// Writes every hole to `pending_trade_holes` as soon as it is found, retrying with backoff
    /// while the database refuses; until shutdown.
    async fn record_found(&self, cancel: &CancellationToken) {
        let mut backoff = Backoff::new(self.cfg.retry);
        loop {
            let mut failed = Vec::new();
            for hole in self.holes.take_fresh() {
                if !failed.is_empty() {
                    failed.push(hole);
                    continue;
                }
                if let Err(e) = self.log.record(&hole).await {
                    tracing::warn!(error = %e, from_ms = hole.from_ms, to_ms = hole.to_ms, "cannot record a trade window yet; will retry");
                    failed.push(hole);
                }
            }
            if !failed.is_empty() {
                self.holes.unrecorded(failed);
                if !backoff.sleep(cancel).await {
                    return;
                }
                continue;
            }
            backoff.reset();
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.holes.fresh_notify.notified() => {}
            }
        }
    }

    async fn fetch_loop(&self, cancel: &CancellationToken) {
        let mut backoff = Backoff::new(self.cfg.retry);
        let mut poll = tokio::time::interval(self.cfg.polling_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut polled_through: Option<i64> = None;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = self.holes.notify.notified() => {}
                _ = poll.tick() => {
                    polled_through = self.polling_tick(polled_through, cancel).await;
                }
            }
            for hole in self.holes.take() {
                // Recorded already by `record_found` (normally); recorded here too before the
                // fetch, so a window is never fetched and forgotten unrecorded.
                let covered = match self.log.record(&hole).await {
                    Ok(()) => self.log.inside(&hole).await,
                    Err(e) => Err(e),
                };
                let covered = match covered {
                    Ok(c) => c,
                    Err(e) => {
                        // The database is down: nothing fetched could be stored now either.
                        tracing::warn!(error = %e, from_ms = hole.from_ms, to_ms = hole.to_ms, "cannot record a trade window; will retry");
                        self.holes.push(hole);
                        if !backoff.sleep(cancel).await {
                            return;
                        }
                        continue;
                    }
                };
                kalshi_shared::failpoint::hit("gatherer::backfill::fill").await;
                let result = self.fill(hole, cancel).await;
                let result = match result {
                    Ok(()) => self.settle(&hole, &covered, cancel).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) => backoff.reset(),
                    Err(RestError::Shutdown) => {
                        self.holes.push(hole);
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, from_ms = hole.from_ms, to_ms = hole.to_ms, "trade backfill failed; will retry");
                        self.holes.push(hole);
                        if !backoff.sleep(cancel).await {
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Waits until what a window produced is settled in the database, then forgets the window
    /// and the recorded windows it covered (`covered`: those inside it when its fetch began).
    async fn settle(
        &self,
        hole: &TradeHole,
        covered: &[(i64, i64)],
        cancel: &CancellationToken,
    ) -> Result<(), RestError> {
        let (trades, gaps) = (self.trades.mark(), self.gaps.mark());
        let settled = async { self.trades.settled(trades).await && self.gaps.settled(gaps).await };
        tokio::select! {
            _ = cancel.cancelled() => return Err(RestError::Shutdown),
            ok = settled => if !ok {
                return Err(RestError::Shutdown);
            },
        }
        if let Err(e) = self.log.clear(covered).await {
            // Kept: the next start fetches it again, which stores nothing twice.
            tracing::warn!(error = %e, from_ms = hole.from_ms, to_ms = hole.to_ms, "cannot clear a finished trade window");
        }
        Ok(())
    }

    fn gap(&self, from_ms: i64, to_ms: i64, reason: GapReason) {
        metrics::counter!(m::GAPS_DECLARED, "reason" => reason).increment(1);
        self.health.gap_declared();
        self.gaps.push(GapRow {
            stream: Stream::Trades,
            market_ticker: None,
            from_ms,
            to_ms,
            reason,
            detail: "trades in this window may be missing".into(),
        });
    }

    /// Polling fallback: while the trade connection is down long enough, poll trades and take
    /// REST snapshots. Returns the time trades are polled through.
    async fn polling_tick(
        &self,
        polled_through: Option<i64>,
        cancel: &CancellationToken,
    ) -> Option<i64> {
        let c0 = &self.health.conns[0];
        let down_for = Duration::from_millis((now_ms() - c0.since_ms()).max(0) as u64);
        let down = c0.state() != ConnState::Subscribed && down_for >= self.cfg.polling_after;
        if !down {
            if self.health.polling() {
                tracing::info!("websocket back: REST polling fallback ends");
                self.health.set_polling(false);
                metrics::gauge!(m::POLLING_FALLBACK).set(0.0);
            }
            return None;
        }
        if !self.health.polling() {
            tracing::warn!(down_for = ?down_for, "websocket down: REST polling fallback starts");
            self.health.set_polling(true);
            metrics::gauge!(m::POLLING_FALLBACK).set(1.0);
        }
        let now = now_ms();
        let from = polled_through.unwrap_or_else(|| c0.since_ms() - self.cfg.margin_ms);
        self.holes.push(TradeHole {
            from_ms: from,
            to_ms: now,
            reason: GapReason::Polling,
        });
        if self.cfg.rest_snapshots {
            let markets: Vec<String> = self.desired.borrow().keys().cloned().collect();
            for t in markets {
                if cancel.is_cancelled() || !self.health.polling() {
                    break;
                }
                if let Err(e) = self.rest_snapshot(&t).await {
                    if matches!(e, RestError::Shutdown) {
                        break;
                    }
                    tracing::debug!(market = %t, error = %e, "REST snapshot failed");
                }
            }
        }
        Some(now - self.cfg.margin_ms)
    }

    async fn rest_snapshot(&self, ticker: &str) -> Result<(), RestError> {
        let r: GetMarketOrderbookResponse = self
            .rest
            .get("orderbook", &format!("/markets/{}/orderbook", q(ticker)))
            .await?;
        let conv = |v: Option<Vec<kalshi_shared::wire::Level>>| -> Vec<(i64, i64)> {
            let mut l: Vec<(i64, i64)> = v
                .unwrap_or_default()
                .into_iter()
                .map(|l| (l.price.price().raw(), l.count.raw()))
                .collect();
            l.sort_unstable();
            l
        };
        self.snapshots.push(SnapshotRow {
            market_ticker: ticker.to_owned(),
            source: Source::Rest,
            yes: conv(r.orderbook_fp.yes_dollars),
            no: conv(r.orderbook_fp.no_dollars),
            last_delta_ts_ms: None,
            as_of_ms: None,
            origin: Origin {
                received_ms: now_ms(),
                ..Origin::default()
            },
        });
        Ok(())
    }

    /// Pages one window of trades and stores those the WebSocket did not deliver.
    async fn fill(&self, hole: TradeHole, cancel: &CancellationToken) -> Result<(), RestError> {
        metrics::counter!(m::BACKFILL_RUNS, "reason" => hole.reason).increment(1);
        let mut from = hole.from_ms;
        let to = hole.to_ms;
        if !self.cfg.enabled {
            self.gap(from, to, GapReason::BackfillDisabled);
            return Ok(());
        }
        let horizon =
            now_ms() - i64::try_from(self.cfg.max_lookback.as_millis()).unwrap_or(i64::MAX);
        if to < horizon {
            self.gap(from, to, GapReason::BeyondBackfillLookback);
            return Ok(());
        }
        if from < horizon {
            self.gap(from, horizon, GapReason::BeyondBackfillLookback);
            from = horizon;
        }
        let min_ts = from.div_euclid(1000);
        let max_ts = (to + 999).div_euclid(1000);
        let mut cursor = String::new();
        let (mut fetched, mut recovered) = (0u64, 0u64);
        loop {
            if cancel.is_cancelled() {
                return Err(RestError::Shutdown);
            }
            let url = format!(
                "/markets/trades?limit={}&min_ts={min_ts}&max_ts={max_ts}{}",
                self.cfg.page_limit,
                if cursor.is_empty() {
                    String::new()
                } else {
                    format!("&cursor={}", q(&cursor))
                }
            );
            let page: GetTradesResponse = self.rest.get("trades", &url).await?;
            let received = now_ms();
            for t in &page.trades {
                fetched += 1;
                let covered = self
                    .scope
                    .read()
                    .map(|s| s.covers(&t.ticker))
                    .unwrap_or(true);
                if !covered {
                    continue;
                }
                let Some(row) = TradeRow::from_rest(t, received) else {
                    // A trade REST returned that does not parse is a hole, never a silent
                    // skip: declared for its market at its time (or the whole window when even
                    // the time does not parse).
                    metrics::counter!(m::WS_BAD_FRAMES, "type" => "rest_trade").increment(1);
                    tracing::warn!(trade_id = %t.trade_id, market = %t.ticker, "REST trade does not parse; declaring a gap");
                    let (gf, gt) = t.created_ms().map_or((from, to), |ts| (ts, ts));
                    metrics::counter!(m::GAPS_DECLARED, "reason" => GapReason::UnparseableTrade.as_str())
                        .increment(1);
                    self.health.gap_declared();
                    self.gaps.push(GapRow {
                        stream: Stream::Trades,
                        market_ticker: Some(t.ticker.clone()).filter(|s| !s.is_empty()),
                        from_ms: gf,
                        to_ms: gt,
                        reason: GapReason::UnparseableTrade,
                        detail: format!("REST trade {} does not parse", t.trade_id),
                    });
                    continue;
                };
                if self.recent.contains(&t.trade_id) {
                    continue;
                }
                let accepted = self.trades.push(row);
                if accepted {
                    self.recent.insert(&t.trade_id);
                    recovered += 1;
                }
            }
            if page.cursor.is_empty() || page.cursor == cursor {
                break;
            }
            cursor = page.cursor;
        }
        metrics::counter!(m::BACKFILL_RECOVERED).increment(recovered);
        if recovered > 0 || hole.reason != GapReason::Polling {
            tracing::info!(
                reason = hole.reason.as_str(),
                from_ms = from,
                to_ms = to,
                fetched,
                recovered,
                "trade backfill done"
            );
        }
        Ok(())
    }
}
