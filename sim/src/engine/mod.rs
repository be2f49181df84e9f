//! The exchange: catalogue, books, order flow, lifecycle and trade history. This module holds
//! the state and the catalogue; [`flow`] generates order flow (deltas, trades, tickers),
//! [`lifecycle`] market and event lifecycle, and [`views`] renders the state for REST and
//! snapshots.
//!
//! The engine generates exchange events (deltas, trades, tickers, lifecycle) from the seed,
//! applies them to its state and returns them as one [`Batch`] per tick, each event already
//! serialized once for every subscriber. The content of the event sequence is a pure function
//! of the seed and the number of messages generated; only timestamps come from the wall clock.
//!
//! It must never publish an event that is inconsistent with the book (a delta that makes a
//! level negative, a trade the book cannot fill) and never publish without recording the event
//! in the ground truth first.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use kalshi_shared::wire::rest::{self as rest, Trade as RestTrade};
use kalshi_shared::wire::ws::{
    self, EventLifecycleMsg, LifecycleMetadata, MarketLifecycleMsg, OrderbookDeltaMsg,
    OrderbookSnapshotMsg, TickerMsg, TradeMsg,
};
use kalshi_shared::wire::{BookSide, Dollars, LegacyLevel, Level, Side};
use kalshi_shared::{Price, Quantity};

mod flow;
mod history;
mod lifecycle;
mod status;
mod views;

pub use history::{HISTORICAL_BASE, HISTORY_OVERLAP_MS, HistoricalMarket};
pub use views::{delta_json_yes_scale, to_json};

use crate::rng::Rng;
use crate::truth::TruthWriter;
use crate::universe::{EventInfo, MarketInfo, SeriesInfo, Status, UniverseGen};

/// What kind of exchange event a published message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    Delta,
    Trade,
    Ticker,
    MarketLifecycle,
    EventLifecycle,
    /// A message of a type no client models (`UNMODELLED_TYPE`, `--unknown-every`).
    Unmodelled,
}

/// The type of the messages no client models: Kalshi adds types without notice (fee updates,
/// multivariate lifecycle, ...), and a client must keep what it does not know.
pub const UNMODELLED_TYPE: &str = "market_fee_update";

impl EventKind {
    pub const ALL: [EventKind; 6] = [
        EventKind::Delta,
        EventKind::Trade,
        EventKind::Ticker,
        EventKind::MarketLifecycle,
        EventKind::EventLifecycle,
        EventKind::Unmodelled,
    ];

    pub fn frame_type(self) -> &'static str {
        use ws::frame_type as f;
        match self {
            EventKind::Delta => f::ORDERBOOK_DELTA,
            EventKind::Trade => f::TRADE,
            EventKind::Ticker => f::TICKER,
            EventKind::MarketLifecycle => f::MARKET_LIFECYCLE_V2,
            EventKind::EventLifecycle => f::EVENT_LIFECYCLE,
            EventKind::Unmodelled => UNMODELLED_TYPE,
        }
    }

    pub fn channel(self) -> ws::Channel {
        match self {
            EventKind::Delta => ws::Channel::OrderbookDelta,
            EventKind::Trade => ws::Channel::Trade,
            EventKind::Ticker => ws::Channel::Ticker,
            EventKind::MarketLifecycle | EventKind::EventLifecycle | EventKind::Unmodelled => {
                ws::Channel::MarketLifecycleV2
            }
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Whether clients keep this kind's `msg` as sent (tickers and lifecycle messages): the
    /// exchange sends it alike to every client, and `--future-fields` adds its unmodelled
    /// field there, for every client and the truth.
    pub fn kept_as_sent(self) -> bool {
        matches!(
            self,
            EventKind::Ticker
                | EventKind::MarketLifecycle
                | EventKind::EventLifecycle
                | EventKind::Unmodelled
        )
    }
}

/// The numbers a subscriber needs to re-express a delta (for `use_yes_price`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeltaData {
    pub side: Side,
    pub price: Price,
    pub delta: Quantity,
}

/// One published exchange event.
#[derive(Debug, Clone)]
pub struct Published {
    /// Global position, 1-based, dense: the ground-truth index.
    pub pos: u64,
    pub ts_ms: i64,
    pub kind: EventKind,
    /// Market index (`None` for event lifecycle).
    pub market: Option<u32>,
    /// The serialized `msg` object.
    pub msg: Box<str>,
    pub delta: Option<DeltaData>,
}

pub type Batch = Arc<Vec<Published>>;

/// Engine settings (from the CLI).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub seed: u64,
    pub series: usize,
    pub markets: usize,
    pub mve_markets: usize,
    pub legacy_fields: bool,
    /// Ticker and lifecycle messages carry an unmodelled field (`--future-fields`).
    pub future_fields: bool,
    /// Trades before the start, served by REST in two tiers (`history.rs`; 0: none).
    pub history_ms: i64,
    /// Trades per second of that history.
    pub history_rate: u64,
    /// Markets that settled in the history, served by `/historical/markets` only.
    pub history_markets: usize,
    /// Milliseconds between trading halts, and how long each lasts (`status.rs`; 0: none).
    pub halt_every_ms: i64,
    pub halt_ms: i64,
    /// Messages between lifecycle steps (0 disables lifecycle churn).
    pub lifecycle_every: u64,
    /// Messages between two of a type no client models (`UNMODELLED_TYPE`; 0: none).
    pub unknown_every: u64,
    /// REST trade history kept in memory.
    pub trade_history: usize,
}

/// A stored trade, compact.
#[derive(Debug, Clone)]
struct TradeRec {
    seq: u64,
    trade_id: u128,
    market: u32,
    ts_us: i64,
    yes_price: Price,
    count: Quantity,
    taker: Side,
    block: bool,
}

impl TradeRec {
    /// The trade as the WebSocket publishes it (and the truth records it), for `ticker`:
    /// legacy integer fields with `legacy`, dollar prices with `decimals` places.
    fn ws_msg(&self, ticker: String, legacy: bool, decimals: u8) -> TradeMsg {
        let no_price = self.yes_price.complement().unwrap_or(Price::ZERO);
        let ts_ms = self.ts_us.div_euclid(1000);
        TradeMsg {
            trade_id: crate::rng::format_uuid(self.trade_id),
            market_ticker: ticker,
            yes_price: legacy.then(|| self.yes_price.to_cents()).flatten(),
            yes_price_dollars: Some(Dollars::with_decimals(self.yes_price, decimals)),
            no_price: legacy.then(|| no_price.to_cents()).flatten(),
            no_price_dollars: Some(Dollars::with_decimals(no_price, decimals)),
            count: legacy.then(|| self.count.to_whole()).flatten(),
            count_fp: Some(self.count),
            taker_side: Some(self.taker),
            taker_outcome_side: Some(self.taker),
            taker_book_side: Some(match self.taker {
                Side::Yes => BookSide::Bid,
                Side::No => BookSide::Ask,
            }),
            is_block_trade: Some(self.block),
            ts: Some(ts_ms.div_euclid(1000)),
            ts_ms: Some(ts_ms),
        }
    }
}

/// Counters by event kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct KindCounts(pub [u64; 6]);

impl KindCounts {
    pub fn get(&self, kind: EventKind) -> u64 {
        self.0[kind.index()]
    }
}

pub struct Exchange {
    cfg: EngineConfig,
    flow: Rng,
    catalogue: UniverseGen,
    pub series: Vec<SeriesInfo>,
    pub events: Vec<EventInfo>,
    pub markets: Vec<MarketInfo>,
    by_ticker: HashMap<String, u32>,
    event_by_ticker: HashMap<String, usize>,
    series_by_ticker: HashMap<String, usize>,
    /// Markets of each event, by event index.
    event_markets: Vec<Vec<u32>>,
    /// Markets with order flow.
    active: Vec<u32>,
    pos: u64,
    generated: u64,
    next_lifecycle_at: u64,
    next_unknown_at: u64,
    /// Messages of the unmodelled type published so far (each one's `n`: no two alike).
    unknown_sent: u64,
    lifecycle_step: u64,
    trades: VecDeque<TradeRec>,
    trades_by_market: HashMap<u32, VecDeque<u64>>,
    next_trade_seq: u64,
    /// Trades before this (Unix ms) are served by `/historical/trades` (`history.rs`).
    history_cutoff_ms: i64,
    counts: KindCounts,
    last_ticker: HashMap<u32, (i64, Box<str>)>,
    truth: TruthWriter,
    truth_full_logged: bool,
    /// The exchange's status and schedule (`status.rs`).
    status: status::ExchangeState,
    /// Markets settled before the cutoff (`history.rs`).
    historical: Vec<HistoricalMarket>,
    historical_by_ticker: HashMap<String, usize>,
}

impl Exchange {
    pub fn new(cfg: EngineConfig, truth: TruthWriter, start_ms: i64) -> Self {
        let mut root = Rng::new(cfg.seed);
        let catalogue = root.fork(1);
        let flow = root.fork(2);
        let mut catalogue =
            UniverseGen::new(catalogue, cfg.seed, start_ms, cfg.series, cfg.legacy_fields);
        let mut ex = Self {
            flow,
            series: catalogue.make_series(),
            catalogue,
            events: Vec::new(),
            markets: Vec::new(),
            by_ticker: HashMap::new(),
            event_by_ticker: HashMap::new(),
            series_by_ticker: HashMap::new(),
            event_markets: Vec::new(),
            active: Vec::new(),
            pos: 0,
            generated: 0,
            next_lifecycle_at: cfg.lifecycle_every,
            next_unknown_at: cfg.unknown_every,
            unknown_sent: 0,
            lifecycle_step: 0,
            trades: VecDeque::new(),
            trades_by_market: HashMap::new(),
            next_trade_seq: 1,
            history_cutoff_ms: start_ms,
            counts: KindCounts::default(),
            last_ticker: HashMap::new(),
            truth,
            truth_full_logged: false,
            status: status::ExchangeState::default(),
            historical: Vec::new(),
            historical_by_ticker: HashMap::new(),
            cfg,
        };
        for (i, s) in ex.series.iter().enumerate() {
            ex.series_by_ticker.insert(s.ticker.clone(), i);
        }
        // Initial catalogue: events of 1-5 markets, round-robin over series.
        let mut made = 0;
        let mut series_idx = 0;
        while made < ex.cfg.markets {
            let n = (1 + ex.flow_catalogue_count()).min(ex.cfg.markets - made);
            ex.add_event(series_idx, n, start_ms);
            made += n;
            series_idx = (series_idx + 1) % ex.series.len();
        }
        if ex.cfg.mve_markets > 0 {
            let mve = ex.catalogue.mve_series();
            ex.series_by_ticker
                .insert(mve.ticker.clone(), ex.series.len());
            ex.series.push(mve);
            for i in 0..ex.cfg.mve_markets {
                let order = ex.events.len();
                let (event, mut market) = ex.catalogue.make_mve(i, start_ms, order);
                market.event = ex.events.len();
                ex.event_by_ticker
                    .insert(event.ticker.clone(), ex.events.len());
                ex.events.push(event);
                ex.insert_market(market);
            }
        }
        // Seed every book with a few levels so the first snapshots are not empty. These are
        // the state before publication starts, not events.
        for idx in ex.active.clone() {
            for _ in 0..6 {
                let side = if ex.flow.chance(500) {
                    Side::Yes
                } else {
                    Side::No
                };
                if let Some((price, qty)) = ex.choose_placement(idx, side) {
                    let _ = ex.markets[idx as usize].book.apply(side, price, qty);
                }
            }
        }
        for i in 0..ex.markets.len() {
            if ex.markets[i].is_mve {
                for side in [Side::Yes, Side::No] {
                    if let Some((price, qty)) = ex.choose_placement(i as u32, side) {
                        let _ = ex.markets[i].book.apply(side, price, qty);
                    }
                }
            }
        }
        if ex.cfg.history_ms > 0 {
            // Its own random stream: the live exchange of a seed is the same with or without.
            let mut past = root.fork(3);
            let (ms, rate) = (ex.cfg.history_ms, ex.cfg.history_rate);
            ex.make_history(&mut past, start_ms, ms, rate);
            ex.settle_history(start_ms);
        }
        ex.start_status(start_ms);
        ex
    }

    fn flow_catalogue_count(&mut self) -> usize {
        self.flow.below(5) as usize
    }

    fn add_event(&mut self, series_idx: usize, n: usize, now_ms: i64) -> (usize, Vec<u32>) {
        let order = self.events.len();
        let series = self.series[series_idx].clone();
        let (event, markets) = self
            .catalogue
            .make_event(series_idx, &series, n, now_ms, order);
        let event_idx = self.events.len();
        self.event_by_ticker.insert(event.ticker.clone(), event_idx);
        self.events.push(event);
        let mut idxs = Vec::with_capacity(markets.len());
        for mut m in markets {
            m.event = event_idx;
            if self.by_ticker.contains_key(&m.ticker) {
                // A strike collision with an earlier event on the same date: make it unique.
                m.ticker = format!("{}-{}", m.ticker, self.markets.len());
            }
            idxs.push(self.insert_market(m));
        }
        (event_idx, idxs)
    }

    fn insert_market(&mut self, m: MarketInfo) -> u32 {
        let idx = self.markets.len() as u32;
        self.by_ticker.insert(m.ticker.clone(), idx);
        if self.event_markets.len() <= m.event {
            self.event_markets.resize_with(m.event + 1, Vec::new);
        }
        self.event_markets[m.event].push(idx);
        if !m.is_mve && m.status.trading() {
            self.active.push(idx);
        }
        self.markets.push(m);
        idx
    }

    pub fn market_index(&self, ticker: &str) -> Option<u32> {
        self.by_ticker.get(ticker).copied()
    }

    pub fn event_index(&self, ticker: &str) -> Option<usize> {
        self.event_by_ticker.get(ticker).copied()
    }

    pub fn series_index(&self, ticker: &str) -> Option<usize> {
        self.series_by_ticker.get(ticker).copied()
    }

    /// Position of the last published event.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    pub fn counts(&self) -> KindCounts {
        self.counts
    }

    pub fn active_markets(&self) -> usize {
        self.active.len()
    }

    pub fn legacy(&self) -> bool {
        self.cfg.legacy_fields
    }

    /// The last ticker message of a market (for `send_initial_snapshot`).
    pub fn last_ticker(&self, market: u32) -> Option<(i64, Box<str>)> {
        self.last_ticker.get(&market).cloned()
    }

    /// Why the exchange stopped publishing, if it did.
    pub fn truth_error(&self) -> Option<String> {
        if let Some(e) = self.truth.failed() {
            return Some(e.to_owned());
        }
        self.truth
            .is_full()
            .then(|| "the ground truth reached --truth-limit-bytes".to_owned())
    }

    /// Number of trades held for REST.
    pub fn trade_count(&self) -> usize {
        self.trades.len()
    }
}
