//! A typed client for the simulator's control API, and its ground truth in the oracle's terms.
//!
//! It owns the parsing of truth records into facts (trades by every field, deltas as
//! `(market, ts_ms, side, price, delta)`, tickers and lifecycle by canonical content). It must
//! never read anything from the system under test.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context as _, bail};
use kalshi_shared::wire::ws::{EventLifecycleMsg, MarketLifecycleMsg, TickerMsg};
use kalshi_shared::{Price, Quantity};
use serde_json::{Value, json};

/// `side` as production stores it: 1 yes, 2 no.
pub fn side_code(side: &str) -> Option<i16> {
    match side {
        "yes" => Some(1),
        "no" => Some(2),
        _ => None,
    }
}

/// A book's sides, `(price micros, quantity centi)` ascending by price: yes, then no.
pub type Levels = (Vec<(i64, i64)>, Vec<(i64, i64)>);

/// A delta's identity across gatherers: `(market, ts_ms, side, price micros, delta centi)`.
pub type DeltaKey = (String, i64, i16, i64, i64);

/// A trade with every field the exchange published (fixed-point integers).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TradeFact {
    pub trade_id: String,
    pub market: String,
    pub yes_price: i64,
    pub no_price: i64,
    pub count: i64,
    /// 1 yes, 2 no, 0 not given.
    pub taker_side: i16,
    pub is_block_trade: bool,
    pub ts_ms: i64,
}

/// One published record, with where and when it was published.
#[derive(Debug, Clone)]
pub struct Fact<T> {
    pub pos: u64,
    pub ts_ms: i64,
    pub market: String,
    pub key: T,
}

/// One state of the exchange's status or schedule, from when the exchange served it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeState {
    pub pos: u64,
    pub since_ms: i64,
    /// `status` or `schedule`.
    pub object: String,
    /// The body REST serves.
    pub body: Value,
}

/// Lifecycle content: `(kind, ticker, event_type, body as sent)`.
pub type LifecycleKey = (String, String, String, String);
/// Ticker content: `(market, ts_ms, body as sent)`.
pub type TickerKey = (String, i64, Sent);

/// A message's exact text as sent, as a 128-bit digest (two passes of std's SipHash with fixed
/// keys, salted apart: deterministic, and equal texts only give equal digests): tickers are most of an
/// hour's content, and the oracle holds each one up to five times (the truth, production,
/// every gatherer). Two texts that differ by a byte differ here; the example lines name the
/// record by its truth position instead of its text.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sent(pub u128);

impl Sent {
    pub fn of(text: &str) -> Sent {
        use std::hash::{Hash as _, Hasher as _};
        let half = |salt: u8| {
            let mut h = std::hash::DefaultHasher::new();
            salt.hash(&mut h);
            text.hash(&mut h);
            h.finish()
        };
        Sent((u128::from(half(1)) << 64) | u128::from(half(2)))
    }
}

impl std::fmt::Debug for Sent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sent#{:032x}", self.0)
    }
}
/// A message of a type the system does not model: `(type, market, body as sent)`.
pub type UnknownKey = (String, String, String);

/// The type of the simulator's messages no client models (`kalshi-sim --unknown-every`,
/// published on `market_lifecycle_v2`): kept as sent in `unknown_messages`.
pub const UNMODELLED_TYPE: &str = "market_fee_update";

/// A market as the exchange has it now.
#[derive(Debug, Clone)]
pub struct MarketNow {
    pub is_mve: bool,
    /// Its REST view (`GET /markets/{ticker}`'s `market`).
    pub rest: Value,
    pub yes: Vec<(i64, i64)>,
    pub no: Vec<(i64, i64)>,
}

/// An event or series as the exchange serves it now.
#[derive(Debug, Clone)]
pub struct RegistryNow {
    pub is_mve: bool,
    /// Its REST view (an event without its nested markets).
    pub rest: Value,
}

/// Everything the simulator published up to `head`, and its markets at `markets_pos`
/// (the same position when read by [`SimControl::truth`]).
#[derive(Debug, Clone, Default)]
pub struct Truth {
    pub head: u64,
    /// Wall-clock start of the simulator: markets without a `created` event appeared then.
    pub started_ms: i64,
    pub trades: Vec<Fact<TradeFact>>,
    pub deltas: Vec<Fact<DeltaKey>>,
    pub tickers: Vec<Fact<TickerKey>>,
    /// Trades from before the simulator started (`--history-hours`), never published on the
    /// WebSocket.
    pub history: Vec<Fact<TradeFact>>,
    pub lifecycle: Vec<Fact<LifecycleKey>>,
    /// Messages of a type no client models (`UNMODELLED_TYPE`).
    pub unknown: Vec<Fact<UnknownKey>>,
    /// The exchange's status and schedule, every state in order (`exchange_status`,
    /// `exchange_schedule`).
    pub exchange: Vec<ExchangeState>,
    /// Markets that settled before the history's cutoff (`historical_market`): served by
    /// `/historical/markets` only, by ticker, as served.
    pub historical_markets: HashMap<String, Value>,
    /// The exchange time of the newest record read (a state lasts until the next or this).
    pub last_ms: i64,
    /// Markets created while running: their `created` lifecycle time.
    pub created: HashMap<String, i64>,
    /// Markets closed or settled while running: the first such time.
    pub closed: HashMap<String, i64>,
    /// Every market (from `/truth/markets`) at position `markets_pos` (<= `head`).
    pub markets: HashMap<String, MarketNow>,
    /// Every event and series, at the same position.
    pub events: HashMap<String, RegistryNow>,
    pub series: HashMap<String, RegistryNow>,
    pub markets_pos: u64,
}

impl Truth {
    /// When a market appeared: its `created` time, else the simulator's start.
    pub fn appeared_ms(&self, market: &str) -> i64 {
        self.created.get(market).copied().unwrap_or(self.started_ms)
    }
}

/// The content of a ticker: the message's text exactly as the exchange sent it (kept as sent:
/// a field dropped, a key reordered or a number respelled on the way is a difference). It
/// must parse as a ticker too.
pub fn ticker_as_sent(text: &str) -> anyhow::Result<Sent> {
    serde_json::from_str::<TickerMsg>(text).context("parse ticker")?;
    Ok(Sent::of(text))
}

/// The content of a market (`kind = "market"`) or event lifecycle message: its text exactly
/// as the exchange sent it, as for tickers. It must parse as its typed message too.
pub fn lifecycle_as_sent(kind: &str, text: &str) -> anyhow::Result<String> {
    if kind == "event" {
        serde_json::from_str::<EventLifecycleMsg>(text).context("parse event")?;
    } else {
        serde_json::from_str::<MarketLifecycleMsg>(text).context("parse market")?;
    }
    Ok(text.to_owned())
}

/// The exact text of a truth record's `msg` (`msg_text`, see `truth_page`).
fn msg_text(r: &Value) -> anyhow::Result<&str> {
    r["msg_text"]
        .as_str()
        .with_context(|| format!("truth record without its msg text: {r}"))
}

fn text(v: &Value, k: &str) -> anyhow::Result<String> {
    v[k].as_str()
        .map(str::to_owned)
        .with_context(|| format!("truth record without {k}: {v}"))
}

fn price(v: &Value, k: &str) -> anyhow::Result<i64> {
    Ok(Price::parse(&text(v, k)?)
        .with_context(|| format!("{k} of {v}"))?
        .raw())
}

fn quantity(v: &Value, k: &str) -> anyhow::Result<i64> {
    Ok(Quantity::parse(&text(v, k)?)
        .with_context(|| format!("{k} of {v}"))?
        .raw())
}

/// Parses a `[["0.45","10.00"], ...]` book side.
pub fn levels(v: &Value) -> anyhow::Result<Vec<(i64, i64)>> {
    let mut out = Vec::new();
    for l in v.as_array().context("levels are not an array")? {
        let p = l[0].as_str().context("level price")?;
        let q = l[1].as_str().context("level quantity")?;
        out.push((Price::parse(p)?.raw(), Quantity::parse(q)?.raw()));
    }
    out.sort_unstable();
    Ok(out)
}

/// Parses one truth line (`{"pos","ts_ms","type","msg"}`) into `truth`.
pub fn add_record(truth: &mut Truth, r: &Value) -> anyhow::Result<()> {
    let pos = r["pos"].as_u64().context("truth record without pos")?;
    let ts_ms = r["ts_ms"].as_i64().context("truth record without ts_ms")?;
    let m = &r["msg"];
    let kind = r["type"].as_str().unwrap_or_default();
    truth.last_ms = truth.last_ms.max(ts_ms);
    match kind {
        UNMODELLED_TYPE => {
            let market = text(m, "market_ticker")?;
            truth.unknown.push(Fact {
                pos,
                ts_ms,
                market: market.clone(),
                key: (kind.to_owned(), market, msg_text(r)?.to_owned()),
            });
        }
        "historical_market" => {
            truth
                .historical_markets
                .insert(text(m, "ticker")?, m.clone());
        }
        "exchange_status" | "exchange_schedule" => truth.exchange.push(ExchangeState {
            pos,
            since_ms: ts_ms,
            object: kind.trim_start_matches("exchange_").to_owned(),
            body: m.clone(),
        }),
        "trade" | "historical_trade" => {
            let market = text(m, "market_ticker")?;
            let t = TradeFact {
                trade_id: text(m, "trade_id")?,
                market: market.clone(),
                yes_price: price(m, "yes_price_dollars")?,
                no_price: price(m, "no_price_dollars")?,
                count: quantity(m, "count_fp")?,
                taker_side: m["taker_outcome_side"]
                    .as_str()
                    .and_then(side_code)
                    .unwrap_or(0),
                is_block_trade: m["is_block_trade"].as_bool().unwrap_or(false),
                ts_ms: m["ts_ms"].as_i64().unwrap_or(ts_ms),
            };
            // The exchange's past (`--history-hours`): served by REST only, judged by imports.
            let into = if kind == "trade" {
                &mut truth.trades
            } else {
                &mut truth.history
            };
            into.push(Fact {
                pos,
                ts_ms: t.ts_ms,
                market,
                key: t,
            });
        }
        "orderbook_delta" => {
            let market = text(m, "market_ticker")?;
            let ts = m["ts_ms"].as_i64().unwrap_or(ts_ms);
            let side = side_code(&text(m, "side")?).context("delta side")?;
            let key = (
                market.clone(),
                ts,
                side,
                price(m, "price_dollars")?,
                quantity(m, "delta_fp")?,
            );
            truth.deltas.push(Fact {
                pos,
                ts_ms: ts,
                market,
                key,
            });
        }
        "ticker" => {
            let market = text(m, "market_ticker")?;
            let ts = m["ts_ms"].as_i64().unwrap_or(ts_ms);
            truth.tickers.push(Fact {
                pos,
                ts_ms: ts,
                market: market.clone(),
                key: (market, ts, ticker_as_sent(msg_text(r)?)?),
            });
        }
        "market_lifecycle_v2" => {
            let market = text(m, "market_ticker")?;
            let event_type = text(m, "event_type")?;
            match event_type.as_str() {
                "created" => {
                    truth.created.entry(market.clone()).or_insert(ts_ms);
                }
                "determined" | "settled" => {
                    truth.closed.entry(market.clone()).or_insert(ts_ms);
                }
                _ => {}
            }
            truth.lifecycle.push(Fact {
                pos,
                ts_ms,
                market: market.clone(),
                key: (
                    "market".into(),
                    market,
                    event_type,
                    lifecycle_as_sent("market", msg_text(r)?)?,
                ),
            });
        }
        "event_lifecycle" => {
            let event = text(m, "event_ticker")?;
            truth.lifecycle.push(Fact {
                pos,
                ts_ms,
                market: event.clone(),
                key: (
                    "event".into(),
                    event,
                    "event_lifecycle".into(),
                    lifecycle_as_sent("event", msg_text(r)?)?,
                ),
            });
        }
        other => bail!("unknown truth record type {other:?}"),
    }
    Ok(())
}

/// The simulator's control API.
#[derive(Debug, Clone)]
pub struct SimControl {
    base: String,
    http: reqwest::Client,
}

impl SimControl {
    /// `base` is the control URL, e.g. `http://127.0.0.1:4000`.
    pub fn new(base: impl Into<String>) -> SimControl {
        SimControl {
            base: base.into().trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap_or_default(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let body = self.get_text(path).await?;
        serde_json::from_str(&body).with_context(|| format!("GET {path}"))
    }

    /// The body of a successful GET, as text.
    async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .with_context(|| format!("GET {path} from the simulator"))?;
        let status = r.status();
        let body = r.text().await.with_context(|| format!("GET {path}"))?;
        if !status.is_success() {
            bail!("GET {path}: {status} {body}");
        }
        Ok(body)
    }

    /// A truth page with each record's `msg` also as the exact text the simulator wrote and
    /// sent (`msg_text`): tickers and lifecycle messages are judged byte for byte.
    async fn truth_page(&self, path: &str) -> anyhow::Result<Value> {
        #[derive(serde::Deserialize)]
        struct Page {
            head: u64,
            next: u64,
            records: Vec<Box<serde_json::value::RawValue>>,
        }
        #[derive(serde::Deserialize)]
        struct Record<'a> {
            #[serde(borrow)]
            msg: &'a serde_json::value::RawValue,
        }
        let body = self.get_text(path).await?;
        let page: Page = serde_json::from_str(&body).with_context(|| format!("GET {path}"))?;
        let mut records = Vec::with_capacity(page.records.len());
        for raw in &page.records {
            let text = serde_json::from_str::<Record<'_>>(raw.get())
                .with_context(|| format!("truth record {}", raw.get()))?
                .msg
                .get()
                .to_owned();
            let mut v: Value = serde_json::from_str(raw.get())?;
            v["msg_text"] = Value::String(text);
            records.push(v);
        }
        Ok(json!({"head": page.head, "next": page.next, "records": records}))
    }

    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {path} to the simulator"))?;
        let status = r.status();
        let v: Value = r.json().await.with_context(|| format!("POST {path}"))?;
        if !status.is_success() {
            bail!("POST {path}: {status} {v}");
        }
        Ok(v)
    }

    /// Messages per second (0 stops generation).
    pub async fn rate(&self, rate: u64) -> anyhow::Result<()> {
        self.post("/rate", json!({ "rate": rate })).await.map(drop)
    }

    /// Switches a fault on (see the simulator's `FaultRequest`).
    pub async fn fault(&self, body: Value) -> anyhow::Result<Value> {
        self.post("/faults", body).await
    }

    pub async fn stats(&self) -> anyhow::Result<Value> {
        self.get("/stats").await
    }

    pub async fn summary(&self) -> anyhow::Result<Value> {
        self.get("/truth/summary").await
    }

    /// Raw truth records of the given types (all types when empty), up to the head at the
    /// time of the last page and at least up to position `at_least`.
    pub async fn truth_records_to(&self, types: &str, at_least: u64) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        self.visit_truth(types, at_least, |r| {
            out.push(r.clone());
            Ok(true)
        })
        .await?;
        Ok(out)
    }

    /// Visits the truth's records of the given types (all when empty) in order, a page at a
    /// time, until position `at_least` (the head when 0) is covered or `visit` says stop: an
    /// hour at production rates is tens of millions of records, never all held as JSON at once.
    pub async fn visit_truth(
        &self,
        types: &str,
        at_least: u64,
        mut visit: impl FnMut(&Value) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let filter = if types.is_empty() {
            String::new()
        } else {
            format!("&types={types}")
        };
        let mut after = 0u64;
        let mut waits = 0;
        loop {
            let page = self
                .truth_page(&format!("/truth?after={after}&limit=100000{filter}"))
                .await?;
            let next = page["next"].as_u64().context("truth page without next")?;
            let head = page["head"].as_u64().unwrap_or(0);
            for r in page["records"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                if !visit(r)? {
                    return Ok(());
                }
            }
            let done = if at_least > 0 {
                next >= at_least
            } else {
                next >= head
            };
            if done {
                return Ok(());
            }
            if next == after {
                // Nothing new yet: the file is flushed after each generated batch.
                waits += 1;
                if waits > 200 {
                    bail!("the truth stopped at {head}, short of position {at_least}");
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            after = next;
        }
    }

    /// Raw truth records of the given types (all types when empty).
    pub async fn truth_records(&self, types: &str) -> anyhow::Result<Vec<Value>> {
        self.truth_records_to(types, 0).await
    }

    /// The whole truth: markets and books first, then every record up to a head at or past
    /// their position, so that the books can be walked back over the records.
    pub async fn truth(&self) -> anyhow::Result<Truth> {
        let summary = self.summary().await?;
        let markets = self.get("/truth/markets").await?;
        let mut t = Truth {
            started_ms: summary["started_ms"]
                .as_i64()
                .context("truth summary without started_ms")?,
            markets_pos: markets["pos"].as_u64().context("markets without pos")?,
            ..Truth::default()
        };
        for m in markets["markets"].as_array().context("markets")? {
            t.markets.insert(
                text(m, "market_ticker")?,
                MarketNow {
                    is_mve: m["is_mve"].as_bool().unwrap_or(false),
                    rest: m["rest"].clone(),
                    yes: levels(&m["yes"])?,
                    no: levels(&m["no"])?,
                },
            );
        }
        for (key, field, into) in [
            ("events", "event_ticker", &mut t.events),
            ("series", "ticker", &mut t.series),
        ] {
            for e in markets[key]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                into.insert(
                    text(e, field)?,
                    RegistryNow {
                        is_mve: e["is_mve"].as_bool().unwrap_or(false),
                        rest: e["rest"].clone(),
                    },
                );
            }
        }
        // The truth file is flushed after each batch: read until it covers the books.
        // Records past the books' position are left out: the truth then ends exactly where
        // the books stand, after everything the caller read from the system before.
        let until = t.markets_pos;
        self.visit_truth("", until, |r| {
            if r["pos"].as_u64().is_some_and(|p| p > until) {
                return Ok(false);
            }
            add_record(&mut t, r)?;
            Ok(true)
        })
        .await?;
        t.head = t.markets_pos;
        Ok(t)
    }
}
