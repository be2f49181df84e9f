//! History import: trades of a past window from Kalshi's two REST tiers, `GET
//! /historical/trades` (before the cutoff) and `GET /markets/trades` (after it; the tiers
//! overlap), stored like backfilled trades (`source = rest`), so a trade seen live and imported
//! is one record: the trades table's `(trade_id, ts)` key here and production's identity
//! downstream decide it.
//!
//! A request is a row of `imports` (`gatherer import` inserts it, see main.rs); this worker,
//! inside the running gatherer, takes the oldest unfinished one and pages it through the
//! gatherer's own REST client (its rate limit, retries and response limits), a page at a time.
//! Each page's cursor is stored only once the page's trades are settled in the database, so a
//! crash at any point resumes at the page after the last settled one and loses nothing (a
//! page fetched twice stores nothing twice).
//!
//! Then the settled markets those trades are of: a market that settled before Kalshi's cutoff
//! exists only under `GET /historical/markets`, so the window's trades of markets this
//! gatherer has no version of are looked up there (by ticker, a hundred a request) and each
//! found is stored as a market version, as the registry stores live ones (observed now: the
//! import is when it was seen). This phase is idempotent: markets already held are skipped.
//!
//! It must never mark a request done before every page of both tiers and the markets phase is
//! settled, nor store a trade outside the window or outside the gatherer's scope.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use kalshi_shared::retry::{Backoff, BackoffConfig};
use kalshi_shared::wire::rest::GetTradesResponse;
use serde_json::value::RawValue;
use sqlx::Row as _;
use tokio_util::sync::CancellationToken;

use crate::registry::Scope;
use crate::rest::{RestClient, RestError, q};
use crate::store::rows::{MarketVersion, RegistryRow, TradeRow};
use crate::store::writer::Sink;

/// The tiers, oldest first.
pub const TIERS: [&str; 2] = ["historical", "live"];

/// The phase after the tiers: the settled markets of the window's trades.
pub const MARKETS_PHASE: &str = "markets";

/// Tickers per `/historical/markets?tickers=` request.
const TICKERS_PER_REQUEST: usize = 100;

#[derive(serde::Deserialize)]
struct MarketsPage<'a> {
    #[serde(borrow)]
    markets: Vec<&'a RawValue>,
}

#[derive(serde::Deserialize)]
struct MarketHead {
    ticker: String,
    #[serde(default)]
    updated_time: Option<String>,
}

fn tier_path(tier: &str) -> &'static str {
    if tier == "historical" {
        "/historical/trades"
    } else {
        "/markets/trades"
    }
}

pub struct ImportWorker {
    pub pool: sqlx::PgPool,
    pub rest: Arc<RestClient>,
    pub trades: Sink<TradeRow>,
    pub markets: Sink<MarketVersion>,
    pub scope: Arc<RwLock<Scope>>,
    pub page_limit: u32,
    pub retry: BackoffConfig,
    /// How often the table is looked at for a new request.
    pub poll: Duration,
}

/// An unfinished request, where it stands.
#[derive(Debug, Clone)]
struct Request {
    id: i64,
    from_ms: i64,
    to_ms: i64,
    tier: String,
    cursor: String,
}

impl ImportWorker {
    pub async fn run(self, cancel: CancellationToken) {
        let mut backoff = Backoff::new(self.retry);
        loop {
            let next = match self.next().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the import requests; will retry");
                    None
                }
            };
            let Some(req) = next else {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(self.poll) => continue,
                }
            };
            match self.work(req.clone(), &cancel).await {
                Ok(()) => backoff.reset(),
                Err(RestError::Shutdown) => return,
                // The exchange refuses the request itself (a bad window, no permission):
                // retrying cannot help; the request fails and the next one goes on.
                Err(e @ RestError::Status { status, .. })
                    if (400..500).contains(&status) && status != 429 =>
                {
                    tracing::error!(id = req.id, error = %e, "history import: the exchange refuses it; failed");
                    let _ = sqlx::query(
                        "UPDATE imports SET state = 'failed', error = $2, updated_at = now() WHERE id = $1",
                    )
                    .bind(req.id)
                    .bind(e.to_string().chars().take(500).collect::<String>())
                    .execute(&self.pool)
                    .await;
                }
                Err(e) => {
                    tracing::warn!(id = req.id, error = %e, "history import: a page failed; will retry");
                    let _ = sqlx::query(
                        "UPDATE imports SET error = $2, updated_at = now() WHERE id = $1",
                    )
                    .bind(req.id)
                    .bind(e.to_string().chars().take(500).collect::<String>())
                    .execute(&self.pool)
                    .await;
                    if !backoff.sleep(&cancel).await {
                        return;
                    }
                }
            }
        }
    }

    async fn next(&self) -> Result<Option<Request>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT id, from_ms, to_ms, tier, cursor FROM imports WHERE state NOT IN ('done', 'failed') ORDER BY id LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Request {
                id: r.try_get(0)?,
                from_ms: r.try_get(1)?,
                to_ms: r.try_get(2)?,
                tier: r.try_get(3)?,
                cursor: r.try_get(4)?,
            })
        })
        .transpose()
    }

    /// Pages the request from where it stands to its end.
    async fn work(&self, mut req: Request, cancel: &CancellationToken) -> Result<(), RestError> {
        let db = |e: sqlx::Error| RestError::Transport {
            endpoint: "imports",
            message: format!("local database: {e}"),
        };
        sqlx::query("UPDATE imports SET state = 'running', updated_at = now() WHERE id = $1")
            .bind(req.id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        tracing::info!(id = req.id, from_ms = req.from_ms, to_ms = req.to_ms, tier = %req.tier, "history import: working");
        if req.tier == MARKETS_PHASE {
            return self.settled_markets(&req, cancel).await;
        }
        // Inclusive Unix seconds around [from, to); the trades are then cut exactly.
        let min_ts = req.from_ms.div_euclid(1000);
        let max_ts = (req.to_ms + 999).div_euclid(1000);
        loop {
            if cancel.is_cancelled() {
                return Err(RestError::Shutdown);
            }
            let url = format!(
                "{}?limit={}&min_ts={min_ts}&max_ts={max_ts}{}",
                tier_path(&req.tier),
                self.page_limit,
                if req.cursor.is_empty() {
                    String::new()
                } else {
                    format!("&cursor={}", q(&req.cursor))
                }
            );
            let page: GetTradesResponse = match self.rest.get("import", &url).await {
                Ok(p) => p,
                // An exchange without a historical tier (or none for this window).
                Err(RestError::Status { status: 404, .. }) if req.tier == "historical" => {
                    tracing::info!(
                        id = req.id,
                        "history import: no historical tier here; the live tier only"
                    );
                    GetTradesResponse::default()
                }
                Err(e) => return Err(e),
            };
            let received = kalshi_shared::time::now_ms();
            let (mut offered, mut refused) = (0i64, false);
            for t in &page.trades {
                let Some(row) = TradeRow::from_rest(t, received) else {
                    tracing::warn!(trade_id = %t.trade_id, market = %t.ticker, "history import: a REST trade does not parse; skipped");
                    metrics::counter!(crate::metrics::IMPORT_UNPARSEABLE).increment(1);
                    continue;
                };
                let covered = self
                    .scope
                    .read()
                    .map(|s| s.covers(&t.ticker))
                    .unwrap_or(true);
                if row.ts_ms < req.from_ms || row.ts_ms >= req.to_ms || !covered {
                    continue;
                }
                let accepted = self.trades.push(row);
                if accepted {
                    offered += 1;
                } else {
                    refused = true;
                }
            }
            // The page's trades settled before its cursor moves on; a full writer makes the
            // page be fetched again (nothing stored twice).
            settle(&self.trades, refused, "import", cancel).await?;
            metrics::counter!(crate::metrics::IMPORT_PAGES).increment(1);
            metrics::counter!(crate::metrics::IMPORT_TRADES).increment(offered as u64);
            let last = page.cursor.is_empty() || page.cursor == req.cursor;
            // The oldest trade of the page: how far back this tier has reached (a new tier
            // starts again from the window's end).
            let reached = page
                .trades
                .iter()
                .filter_map(|t| TradeRow::from_rest(t, received).map(|r| r.ts_ms))
                .min();
            let (tier, cursor, state) = match (last, req.tier.as_str()) {
                (false, t) => (t.to_owned(), page.cursor.clone(), "running"),
                (true, "historical") => ("live".to_owned(), String::new(), "running"),
                (true, _) => (MARKETS_PHASE.to_owned(), String::new(), "running"),
            };
            sqlx::query(
                "UPDATE imports SET tier = $2, cursor = $3, state = $4, pages = pages + 1, \
                 fetched = fetched + $5, stored = stored + $6, error = NULL, updated_at = now(), \
                 reached_ms = CASE WHEN $2 <> tier THEN NULL ELSE least(coalesce(reached_ms, $7), $7) END \
                 WHERE id = $1",
            )
            .bind(req.id)
            .bind(&tier)
            .bind(&cursor)
            .bind(state)
            .bind(page.trades.len() as i64)
            .bind(offered)
            .bind(reached)
            .execute(&self.pool)
            .await
            .map_err(db)?;
            if tier == MARKETS_PHASE {
                req.tier = tier;
                return self.settled_markets(&req, cancel).await;
            }
            req.tier = tier;
            req.cursor = cursor;
        }
    }
}

impl ImportWorker {
    /// The markets phase: every market the window's trades are of that this gatherer holds no
    /// version of, from `/historical/markets`; then the request is done.
    async fn settled_markets(
        &self,
        req: &Request,
        cancel: &CancellationToken,
    ) -> Result<(), RestError> {
        let db = |e: sqlx::Error| RestError::Transport {
            endpoint: "imports",
            message: format!("local database: {e}"),
        };
        let unknown: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT t.market_ticker FROM trades t \
             WHERE t.ts >= to_timestamp($1 / 1000.0) AND t.ts < to_timestamp($2 / 1000.0) \
               AND NOT EXISTS (SELECT 1 FROM markets m WHERE m.ticker = t.market_ticker) \
             ORDER BY 1",
        )
        .bind(req.from_ms)
        .bind(req.to_ms)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut stored = 0i64;
        for batch in unknown.chunks(TICKERS_PER_REQUEST) {
            if cancel.is_cancelled() {
                return Err(RestError::Shutdown);
            }
            let list: Vec<String> = batch.iter().map(|t| q(t)).collect();
            let url = format!(
                "/historical/markets?limit={}&tickers={}",
                TICKERS_PER_REQUEST,
                list.join(",")
            );
            let body: Box<RawValue> = match self.rest.get("import_markets", &url).await {
                Ok(b) => b,
                // An exchange without a historical tier: nothing settled to bring in.
                Err(RestError::Status { status: 404, .. }) => {
                    tracing::info!(
                        id = req.id,
                        "history import: no /historical/markets here; no settled markets"
                    );
                    break;
                }
                Err(e) => return Err(e),
            };
            let page: MarketsPage<'_> =
                serde_json::from_str(body.get()).map_err(|e| RestError::Decode {
                    endpoint: "import_markets",
                    message: e.to_string(),
                })?;
            let mut refused = false;
            for raw in page.markets {
                let (Ok(head), Some(hash)) = (
                    serde_json::from_str::<MarketHead>(raw.get()),
                    kalshi_shared::identity::market_hash(raw.get()),
                ) else {
                    tracing::warn!("history import: a settled market does not parse; skipped");
                    metrics::counter!(crate::metrics::REGISTRY_UNPARSEABLE, "kind" => "market", "outcome" => "dropped")
                        .increment(1);
                    continue;
                };
                if !batch.contains(&head.ticker) {
                    continue;
                }
                let row = RegistryRow {
                    ticker: head.ticker,
                    updated_ms: head
                        .updated_time
                        .as_deref()
                        .and_then(|t| kalshi_shared::time::parse_rfc3339_ms(t).ok()),
                    observed_ms: kalshi_shared::time::now_ms(),
                    body: raw.get().to_owned(),
                    content_hash: hash,
                };
                if self.markets.push(MarketVersion(row)) {
                    stored += 1;
                    metrics::counter!(crate::metrics::REGISTRY_VERSIONS, "kind" => "market")
                        .increment(1);
                } else {
                    refused = true;
                }
            }
            settle(&self.markets, refused, "import_markets", cancel).await?;
        }
        sqlx::query(
            "UPDATE imports SET state = 'done', markets = markets + $2, error = NULL, updated_at = now() WHERE id = $1",
        )
        .bind(req.id)
        .bind(stored)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        tracing::info!(
            id = req.id,
            settled_markets = stored,
            "history import: done"
        );
        Ok(())
    }
}

/// Waits until everything pushed to `sink` so far is in the database; then a push it refused
/// (its writer full) is an error, so the step is done again.
async fn settle<R>(
    sink: &Sink<R>,
    refused: bool,
    endpoint: &'static str,
    cancel: &CancellationToken,
) -> Result<(), RestError> {
    let mark = sink.mark();
    tokio::select! {
        _ = cancel.cancelled() => return Err(RestError::Shutdown),
        ok = sink.settled(mark) => if !ok {
            return Err(RestError::Shutdown);
        },
    }
    if refused {
        return Err(RestError::Transport {
            endpoint,
            message: "the writer is full; the step runs again".into(),
        });
    }
    Ok(())
}

/// `gatherer import`: records a request in the gatherer's database and, unless `detach`,
/// follows it to its end with a progress line on stderr. Returns the exit code: 0 done, 1 a
/// database error or the exchange refused the request (4xx), 2 the database has no `imports`
/// table (an older gatherer).
pub async fn request(database_url: &str, from_ms: i64, to_ms: i64, detach: bool) -> u8 {
    use std::io::{IsTerminal as _, Write as _};
    let pool = match sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect(database_url)
        .await
    {
        Ok(p) => p,
        Err(e) => {
            eprintln!("gatherer import: cannot connect to store.database_url: {e}");
            return 1;
        }
    };
    let id: i64 = match sqlx::query_scalar(
        "INSERT INTO imports (from_ms, to_ms) VALUES ($1, $2) RETURNING id",
    )
    .bind(from_ms)
    .bind(to_ms)
    .fetch_one(&pool)
    .await
    {
        Ok(id) => id,
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => {
            eprintln!(
                "gatherer import: this database has no imports table: start the upgraded gatherer on it first (it applies the migration)"
            );
            return 2;
        }
        Err(e) => {
            eprintln!("gatherer import: cannot record the request: {e}");
            return 1;
        }
    };
    let (from, to) = (
        kalshi_shared::time::format_rfc3339_ms(from_ms),
        kalshi_shared::time::format_rfc3339_ms(to_ms),
    );
    println!("import {id}: trades of [{from}, {to}) requested");
    if detach {
        return 0;
    }
    let tty = std::io::stderr().is_terminal();
    let started = std::time::Instant::now();
    let mut last_line = String::new();
    let mut last_print = std::time::Instant::now();
    let mut idle_since = std::time::Instant::now();
    let mut last_pages = -1i64;
    let mut tier_seen = String::new();
    let mut tier_started = std::time::Instant::now();
    loop {
        let row = sqlx::query(
            "SELECT state, tier, pages, fetched, stored, coalesce(error, ''), markets, reached_ms, from_ms, to_ms FROM imports WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&pool)
        .await;
        let r = match row {
            Ok(r) => r,
            Err(e) => {
                eprintln!("gatherer import: cannot read the progress: {e}");
                return 1;
            }
        };
        let state: String = r.try_get(0).unwrap_or_default();
        let tier: String = r.try_get(1).unwrap_or_default();
        let pages: i64 = r.try_get(2).unwrap_or_default();
        let fetched: i64 = r.try_get(3).unwrap_or_default();
        let stored: i64 = r.try_get(4).unwrap_or_default();
        let error: String = r.try_get(5).unwrap_or_default();
        let markets: i64 = r.try_get(6).unwrap_or_default();
        let reached: Option<i64> = r.try_get(7).unwrap_or_default();
        let (from_ms, to_ms): (i64, i64) = (r.try_get(8).unwrap_or(0), r.try_get(9).unwrap_or(1));
        let secs = started.elapsed().as_secs_f64().max(0.001);
        // How much of the window the current tier has walked back through, and when it will be
        // through at this pace (a tier starts at the window's end; pages come newest first).
        let done = reached.map_or(0.0, |r| {
            ((to_ms - r.max(from_ms)) as f64 / (to_ms - from_ms).max(1) as f64).clamp(0.0, 1.0)
        });
        if tier != tier_seen {
            tier_seen = tier.clone();
            tier_started = std::time::Instant::now();
        }
        let eta = match tier_started.elapsed().as_secs_f64() {
            t if done > 0.0 && done < 1.0 && t > 1.0 => {
                format!(", ETA {:.0}s", t / done * (1.0 - done))
            }
            _ => String::new(),
        };
        let line = format!(
            "import {id}: {state:<8} {tier:<10} {:>5.1}% of the window{eta}  pages {pages:>6}  trades fetched {fetched:>9}  in the window {stored:>9}  settled markets {markets:>5}  ({:.1} pages/s){}",
            done * 100.0,
            pages as f64 / secs,
            if error.is_empty() {
                String::new()
            } else {
                format!("  retrying: {error}")
            }
        );
        if pages != last_pages {
            last_pages = pages;
            idle_since = std::time::Instant::now();
        }
        if tty {
            eprint!("\r{line:<150}");
            let _ = std::io::stderr().flush();
        } else if line != last_line && last_print.elapsed() >= Duration::from_secs(5) {
            eprintln!("{line}");
            last_print = std::time::Instant::now();
        }
        last_line = line;
        if state == "failed" {
            if tty {
                eprintln!();
            }
            eprintln!("gatherer import: import {id} failed: {error}");
            return 1;
        }
        if state == "done" {
            if tty {
                eprintln!();
            }
            println!(
                "import {id}: done: {pages} pages, {fetched} trades fetched, {stored} in the window offered to the store (each trade kept once: the trades key skips what is already held), {markets} settled markets"
            );
            return 0;
        }
        if idle_since.elapsed() >= Duration::from_secs(60) && state == "pending" {
            eprintln!(
                "\ngatherer import: nothing has taken import {id} for a minute: is the gatherer running on this database? (it stays queued; ^C leaves it queued)"
            );
            idle_since = std::time::Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
