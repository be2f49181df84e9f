//! What the system holds, read in the oracle's terms: production (straight from its tables)
//! or one gatherer (over its public gRPC `Read`).
//!
//! It owns the translation of stored rows into facts comparable with the truth. It must never
//! decide what is expected; that is the oracle's job, from the truth alone.

use std::collections::HashMap;

use anyhow::Context as _;
use futures_util::TryStreamExt as _;
use kalshi_proto::GathererClient;
use kalshi_proto::gatherer::v1 as pb;
use serde_json::Value;
use sqlx::Row as _;
use tonic::transport::Channel;

use crate::sim::{
    DeltaKey, LifecycleKey, TickerKey, TradeFact, UnknownKey, lifecycle_as_sent, ticker_as_sent,
};

/// A stored book.
#[derive(Debug, Clone)]
pub struct HeldSnapshot {
    pub market: String,
    pub gatherer: String,
    pub source: String,
    pub received_ms: i64,
    /// From when the book is the exchange's (production's `ts`).
    pub as_of_ms: i64,
    /// The splice point: the book reflects every delta with `ts_ms` at or before it (None:
    /// it has none, as REST books).
    pub splice_ms: Option<i64>,
    pub yes: Vec<(i64, i64)>,
    pub no: Vec<(i64, i64)>,
}

/// A declared hole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredGap {
    pub gatherer: String,
    /// The production table name (`trades`, `orderbook_deltas`, ...).
    pub stream: String,
    /// Empty: every market of the stream.
    pub market: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub reason: String,
}

/// Everything one store holds, as multisets of content.
#[derive(Debug, Clone, Default)]
pub struct Held {
    pub trades: Vec<TradeFact>,
    pub deltas: Vec<DeltaKey>,
    /// Deltas stored without a cross-gatherer key (no `ts_ms`, or past the occurrence
    /// horizon): kept with their gatherer, counted by the oracle.
    pub unkeyed_deltas: u64,
    pub tickers: Vec<TickerKey>,
    pub lifecycle: Vec<LifecycleKey>,
    /// Messages of types the system does not model: `(type, market, body as sent)`.
    pub unknown: Vec<UnknownKey>,
    pub snapshots: Vec<HeldSnapshot>,
    /// Registry: the latest body per market, event and series ticker.
    pub markets: HashMap<String, Value>,
    pub events: HashMap<String, Value>,
    pub series: HashMap<String, Value>,
    /// Registry history (production's `registry_versions`): per `(kind, ticker)` every version
    /// body, oldest observation first. Empty for a gatherer's reading.
    pub versions: HashMap<(String, String), Vec<Value>>,
    /// The exchange's status and schedule: every version `(object, body)`, in the order seen
    /// (production: by first observation; a gatherer: by cursor).
    pub exchange: Vec<(String, Value)>,
    /// Per stream (table name): exchange times before this are no longer held here (its
    /// retention dropped them, or its database was created after them). 0: held since the
    /// start. Only a gatherer's reading has these.
    pub retained_from_ms: HashMap<String, i64>,
    pub gaps: Vec<DeclaredGap>,
    /// Rows production refused (data errors), by stream.
    pub quarantined: HashMap<String, u64>,
    /// Records that could not be read back into facts (a stored body that does not parse).
    pub unreadable: Vec<String>,
}

fn jsonb_levels(v: &Value) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = v
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|l| Some((l[0].as_i64()?, l[1].as_i64()?)))
                .collect()
        })
        .unwrap_or_default();
    out.sort_unstable();
    out
}

fn pb_levels(levels: &[pb::Level]) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = levels
        .iter()
        .map(|l| (l.price_micros, l.quantity_centi))
        .collect();
    out.sort_unstable();
    out
}

impl Held {
    /// Reads production's tables.
    pub async fn from_production(pool: &sqlx::PgPool) -> anyhow::Result<Held> {
        let mut h = Held::default();
        let mut rows = sqlx::query("SELECT trade_id, market_ticker, yes_price, no_price, count, taker_outcome_side, is_block_trade, ts_ms FROM trades").fetch(pool);
        while let Some(r) = rows.try_next().await.context("read production trades")? {
            h.trades.push(TradeFact {
                trade_id: r.try_get(0)?,
                market: r.try_get(1)?,
                yes_price: r.try_get(2)?,
                no_price: r.try_get(3)?,
                count: r.try_get(4)?,
                taker_side: r.try_get(5)?,
                is_block_trade: r.try_get(6)?,
                ts_ms: r.try_get(7)?,
            });
        }
        drop(rows);
        let mut rows = sqlx::query(
            "SELECT market_ticker, ts_ms, side, price, delta, gatherer_key FROM orderbook_deltas",
        )
        .fetch(pool);
        while let Some(r) = rows.try_next().await.context("read production deltas")? {
            let key: String = r.try_get(5)?;
            if !key.is_empty() {
                h.unkeyed_deltas += 1;
            }
            h.deltas.push((
                r.try_get(0)?,
                r.try_get(1)?,
                r.try_get(2)?,
                r.try_get(3)?,
                r.try_get(4)?,
            ));
        }
        drop(rows);
        let mut rows =
            sqlx::query("SELECT market_ticker, ts_ms, body::text FROM tickers").fetch(pool);
        while let Some(r) = rows.try_next().await.context("read production tickers")? {
            let body: String = r.try_get(2)?;
            match ticker_as_sent(&body) {
                Ok(c) => h.tickers.push((r.try_get(0)?, r.try_get(1)?, c)),
                Err(e) => h.unreadable.push(format!("ticker {body}: {e:#}")),
            }
        }
        drop(rows);
        let mut rows =
            sqlx::query("SELECT kind, ticker, event_type, body::text FROM lifecycle").fetch(pool);
        while let Some(r) = rows.try_next().await.context("read production lifecycle")? {
            let kind: String = r.try_get(0)?;
            let body: String = r.try_get(3)?;
            match lifecycle_as_sent(&kind, &body) {
                Ok(c) => h.lifecycle.push((kind, r.try_get(1)?, r.try_get(2)?, c)),
                Err(e) => h.unreadable.push(format!("lifecycle {body}: {e:#}")),
            }
        }
        drop(rows);
        h.unknown = sqlx::query_as("SELECT type, market_ticker, body::text FROM unknown_messages")
            .fetch_all(pool)
            .await
            .context("read production unknown messages")?;
        let mut rows = sqlx::query(
            "SELECT market_ticker, gatherer_id, source, received_ms, yes, no, \
             (extract(epoch FROM ts) * 1000)::bigint, last_delta_ts_ms FROM orderbook_snapshots",
        )
        .fetch(pool);
        while let Some(r) = rows.try_next().await.context("read production snapshots")? {
            h.snapshots.push(HeldSnapshot {
                market: r.try_get(0)?,
                gatherer: r.try_get(1)?,
                source: r.try_get(2)?,
                received_ms: r.try_get(3)?,
                yes: jsonb_levels(&r.try_get::<Value, _>(4)?),
                no: jsonb_levels(&r.try_get::<Value, _>(5)?),
                as_of_ms: r.try_get(6)?,
                splice_ms: r.try_get(7)?,
            });
        }
        drop(rows);
        for (table, into) in [
            ("markets", &mut h.markets),
            ("events", &mut h.events),
            ("series", &mut h.series),
        ] {
            for r in sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT ticker, body FROM {table}"
            )))
            .fetch_all(pool)
            .await
            .with_context(|| format!("read production {table}"))?
            {
                into.insert(r.try_get(0)?, r.try_get(1)?);
            }
        }
        for r in sqlx::query(
            "SELECT kind, ticker, body FROM registry_versions ORDER BY kind, ticker, observed_ms, content_hash",
        )
        .fetch_all(pool)
        .await
        .context("read production registry_versions")?
        {
            h.versions
                .entry((r.try_get(0)?, r.try_get(1)?))
                .or_default()
                .push(r.try_get(2)?);
        }
        for r in sqlx::query(
            "SELECT ticker, body::jsonb FROM exchange ORDER BY received_ms, ticker, content_hash, occurrence",
        )
        .fetch_all(pool)
        .await
        .context("read production exchange")?
        {
            h.exchange.push((r.try_get(0)?, r.try_get(1)?));
        }
        for r in sqlx::query(
            "SELECT gatherer_id, stream, market_ticker, from_ms, to_ms, reason FROM gaps",
        )
        .fetch_all(pool)
        .await
        .context("read production gaps")?
        {
            h.gaps.push(DeclaredGap {
                gatherer: r.try_get(0)?,
                stream: r.try_get(1)?,
                market: r.try_get(2)?,
                from_ms: r.try_get(3)?,
                to_ms: r.try_get(4)?,
                reason: r.try_get(5)?,
            });
        }
        // Rows a replay put back in their table are resolved (`deduplicator quarantine replay`).
        for r in sqlx::query(
            "SELECT stream, count(*) FROM quarantine \
             WHERE replay IS NULL OR replay NOT IN ('inserted', 'already_present') GROUP BY 1",
        )
        .fetch_all(pool)
        .await
        .context("read production quarantine")?
        {
            h.quarantined
                .insert(r.try_get(0)?, r.try_get::<i64, _>(1)? as u64);
        }
        Ok(h)
    }

    /// Reads everything one gatherer holds through its gRPC API, and from its `Status` what it
    /// no longer holds (its retention horizon per stream).
    pub async fn from_gatherer(
        client: &mut GathererClient<Channel>,
        gatherer_id: &str,
    ) -> anyhow::Result<Held> {
        Self::from_gatherer_upto(client, gatherer_id, &HashMap::new()).await
    }

    /// As [`Held::from_gatherer`], but only records at or below `upto`'s cursor for their
    /// stream (keyed `trades`, `orderbook_deltas`, ...; a stream not in it: everything): what
    /// the gatherer held when its heads were read.
    pub async fn from_gatherer_upto(
        client: &mut GathererClient<Channel>,
        gatherer_id: &str,
        upto: &HashMap<String, i64>,
    ) -> anyhow::Result<Held> {
        let mut h = Held::default();
        let status = client
            .status(pb::StatusRequest {})
            .await
            .context("gatherer status")?
            .into_inner();
        anyhow::ensure!(
            status.gatherer_id == gatherer_id,
            "the endpoint answers as gatherer {:?}, not {gatherer_id:?}",
            status.gatherer_id
        );
        for st in &status.streams {
            if let Some(s) = kalshi_proto::Stream::from_pb(st.stream) {
                h.retained_from_ms
                    .insert(s.table().to_owned(), st.retained_from_ms);
            }
        }
        for stream in [
            pb::Stream::Trades,
            pb::Stream::OrderbookDeltas,
            pb::Stream::OrderbookSnapshots,
            pb::Stream::Tickers,
            pb::Stream::Lifecycle,
            pb::Stream::Markets,
            pb::Stream::Events,
            pb::Stream::Series,
            pb::Stream::Gaps,
            pb::Stream::UnknownMessages,
            pb::Stream::Exchange,
        ] {
            let name = stream
                .as_str_name()
                .trim_start_matches("STREAM_")
                .to_ascii_lowercase();
            let bound = upto.get(&name).copied().unwrap_or(i64::MAX);
            visit_upto(client, stream, bound, |r| {
                h.add_record(gatherer_id, stream, r)
            })
            .await?;
        }
        Ok(h)
    }

    fn add_record(&mut self, gatherer_id: &str, stream: pb::Stream, r: pb::Record) {
        use pb::record::Body;
        let Some(body) = r.body else {
            self.unreadable
                .push(format!("record {} without a body", r.cursor));
            return;
        };
        match body {
            Body::Trade(t) => self.trades.push(TradeFact {
                trade_id: t.trade_id,
                market: t.market_ticker,
                yes_price: t.yes_price_micros,
                no_price: t.no_price_micros,
                count: t.count_centi,
                taker_side: i16::try_from(t.taker_outcome_side).unwrap_or(-1),
                is_block_trade: t.is_block_trade,
                ts_ms: t.ts_ms,
            }),
            Body::Delta(d) => self.deltas.push((
                d.market_ticker,
                d.ts_ms,
                i16::try_from(d.side).unwrap_or(-1),
                d.price_micros,
                d.delta_centi,
            )),
            Body::Ticker(t) => {
                let parsed = ticker_as_sent(&t.body_json);
                match parsed {
                    Ok(c) => self.tickers.push((t.market_ticker, t.ts_ms, c)),
                    Err(e) => self.unreadable.push(format!("ticker {}: {e:#}", r.cursor)),
                }
            }
            Body::Lifecycle(l) => {
                let parsed = lifecycle_as_sent(&l.kind, &l.body_json);
                match parsed {
                    Ok(c) => self.lifecycle.push((l.kind, l.ticker, l.event_type, c)),
                    Err(e) => self
                        .unreadable
                        .push(format!("lifecycle {}: {e:#}", r.cursor)),
                }
            }
            Body::Snapshot(s) => {
                let received_ms = s.origin.map(|o| o.received_ms).unwrap_or_default();
                self.snapshots.push(HeldSnapshot {
                    market: s.market_ticker,
                    gatherer: gatherer_id.to_owned(),
                    source: s.source,
                    received_ms,
                    as_of_ms: if s.as_of_ms != 0 {
                        s.as_of_ms
                    } else {
                        received_ms
                    },
                    splice_ms: (s.last_delta_ts_ms != 0).then_some(s.last_delta_ts_ms),
                    yes: pb_levels(&s.yes),
                    no: pb_levels(&s.no),
                })
            }
            Body::Registry(v) if stream == pb::Stream::Exchange => {
                match serde_json::from_str::<Value>(&v.body_json) {
                    Ok(body) => self.exchange.push((v.ticker, body)),
                    Err(e) => self.unreadable.push(format!("exchange {}: {e}", r.cursor)),
                }
            }
            Body::Registry(v) => {
                let into = match stream {
                    pb::Stream::Events => &mut self.events,
                    pb::Stream::Series => &mut self.series,
                    _ => &mut self.markets,
                };
                // In cursor order: the last version read is the latest.
                match serde_json::from_str::<Value>(&v.body_json) {
                    Ok(body) => {
                        into.insert(v.ticker, body);
                    }
                    Err(e) => self.unreadable.push(format!("registry {}: {e}", r.cursor)),
                }
            }
            Body::Unknown(u) => self.unknown.push((u.r#type, u.market_ticker, u.body_json)),
            Body::Gap(g) => self.gaps.push(DeclaredGap {
                gatherer: gatherer_id.to_owned(),
                stream: kalshi_proto::Stream::from_pb(g.stream)
                    .map(|s| s.table().to_owned())
                    .unwrap_or_default(),
                market: g.market_ticker,
                from_ms: g.from_ms,
                to_ms: g.to_ms,
                reason: g.reason,
            }),
        }
    }
}

/// Every record of one stream, in cursor order; cursors must ascend.
pub async fn read_all(
    c: &mut GathererClient<Channel>,
    stream: pb::Stream,
) -> anyhow::Result<Vec<pb::Record>> {
    read_upto(c, stream, i64::MAX).await
}

/// The records of one stream at or below cursor `upto`, in cursor order (no page past it is
/// read); cursors must ascend.
pub async fn read_upto(
    c: &mut GathererClient<Channel>,
    stream: pb::Stream,
    upto: i64,
) -> anyhow::Result<Vec<pb::Record>> {
    let mut out = Vec::new();
    visit_upto(c, stream, upto, |r| out.push(r)).await?;
    Ok(out)
}

/// As [`read_upto`], handing each record to `visit` a page at a time: a gatherer's hour at
/// production rates is never held as protobuf records all at once.
pub async fn visit_upto(
    c: &mut GathererClient<Channel>,
    stream: pb::Stream,
    upto: i64,
    mut visit: impl FnMut(pb::Record),
) -> anyhow::Result<()> {
    let mut after = 0;
    loop {
        let page = c
            .read(pb::ReadRequest {
                stream: stream as i32,
                after,
                limit: 5000,
            })
            .await
            .with_context(|| format!("read {stream:?} after {after}"))?
            .into_inner();
        for r in &page.records {
            anyhow::ensure!(
                r.cursor > after,
                "cursors do not ascend: {} after {after}",
                r.cursor
            );
            after = r.cursor;
        }
        page.records
            .into_iter()
            .filter(|r| r.cursor <= upto)
            .for_each(&mut visit);
        // A page covers a window of ids; one of unused ids is empty but moves `through`.
        after = after.max(page.through);
        if after >= page.head.min(upto) {
            return Ok(());
        }
    }
}
