//! The exchange: catalogue, books, order flow, lifecycle and trade history.
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
}

impl EventKind {
    pub const ALL: [EventKind; 5] = [
        EventKind::Delta,
        EventKind::Trade,
        EventKind::Ticker,
        EventKind::MarketLifecycle,
        EventKind::EventLifecycle,
    ];

    pub fn frame_type(self) -> &'static str {
        use ws::frame_type as f;
        match self {
            EventKind::Delta => f::ORDERBOOK_DELTA,
            EventKind::Trade => f::TRADE,
            EventKind::Ticker => f::TICKER,
            EventKind::MarketLifecycle => f::MARKET_LIFECYCLE_V2,
            EventKind::EventLifecycle => f::EVENT_LIFECYCLE,
        }
    }

    pub fn channel(self) -> ws::Channel {
        match self {
            EventKind::Delta => ws::Channel::OrderbookDelta,
            EventKind::Trade => ws::Channel::Trade,
            EventKind::Ticker => ws::Channel::Ticker,
            EventKind::MarketLifecycle | EventKind::EventLifecycle => {
                ws::Channel::MarketLifecycleV2
            }
        }
    }

    fn index(self) -> usize {
        self as usize
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
    /// Messages between lifecycle steps (0 disables lifecycle churn).
    pub lifecycle_every: u64,
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

/// Counters by event kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct KindCounts(pub [u64; 5]);

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
    lifecycle_step: u64,
    trades: VecDeque<TradeRec>,
    trades_by_market: HashMap<u32, VecDeque<u64>>,
    next_trade_seq: u64,
    counts: KindCounts,
    last_ticker: HashMap<u32, (i64, Box<str>)>,
    truth: TruthWriter,
    truth_full_logged: bool,
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
            lifecycle_step: 0,
            trades: VecDeque::new(),
            trades_by_market: HashMap::new(),
            next_trade_seq: 1,
            counts: KindCounts::default(),
            last_ticker: HashMap::new(),
            truth,
            truth_full_logged: false,
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

    // -----------------------------------------------------------------------------------------
    // Generation
    // -----------------------------------------------------------------------------------------

    /// Generates at least `n` messages at `now_us`, applies them and records them in the
    /// ground truth. Returns the batch (possibly a few messages more than `n`, since one step
    /// such as a trade emits several).
    pub fn generate(&mut self, n: u64, now_us: i64) -> Vec<Published> {
        let ts_ms = now_us.div_euclid(1000);
        let mut out = Vec::with_capacity(n as usize + 4);
        if self.truth.failed().is_some() {
            return out;
        }
        if self.truth.is_full() {
            if !self.truth_full_logged {
                self.truth_full_logged = true;
                tracing::error!(
                    path = %self.truth.path().display(),
                    "the ground truth reached --truth-limit-bytes; the exchange stops publishing"
                );
            }
            return out;
        }
        // Steps that emit nothing (a paused market drawn, a placement that would cross) are
        // retried; the cap guarantees termination if nothing at all can trade.
        let mut budget = n.saturating_mul(50).saturating_add(1_000);
        let mut idle = 0u32;
        while (out.len() as u64) < n && budget > 0 {
            budget -= 1;
            if self.cfg.lifecycle_every > 0 && self.generated >= self.next_lifecycle_at {
                self.next_lifecycle_at = self.generated + self.cfg.lifecycle_every;
                let before = out.len();
                self.lifecycle(ts_ms, &mut out);
                self.generated += (out.len() - before) as u64;
                continue;
            }
            let before = out.len();
            self.flow_step(ts_ms, &mut out);
            let made = (out.len() - before) as u64;
            self.generated += made;
            if made > 0 {
                idle = 0;
            } else {
                idle += 1;
                if idle >= 500 && self.cfg.lifecycle_every > 0 {
                    // Nothing trades (everything closed or paused): run lifecycle now.
                    self.next_lifecycle_at = self.generated;
                    idle = 0;
                }
            }
        }
        if let Err(e) = self.truth.flush() {
            tracing::error!(error = %e, "cannot write the ground truth; the exchange stops publishing");
            out.clear();
        }
        out
    }

    fn publish(
        &mut self,
        out: &mut Vec<Published>,
        kind: EventKind,
        ts_ms: i64,
        market: Option<u32>,
        msg: String,
        delta: Option<DeltaData>,
    ) {
        self.pos += 1;
        self.counts.0[kind.index()] += 1;
        self.truth.append(self.pos, ts_ms, kind.frame_type(), &msg);
        out.push(Published {
            pos: self.pos,
            ts_ms,
            kind,
            market,
            msg: msg.into_boxed_str(),
            delta,
        });
    }

    /// Decimal places for a WS dollar string: varies as Kalshi's do.
    fn ws_decimals(&mut self) -> u8 {
        [2u8, 3, 4, 4][self.flow.below(4) as usize]
    }

    fn choose_placement(&mut self, idx: u32, side: Side) -> Option<(Price, Quantity)> {
        let m = &self.markets[idx as usize];
        let ticks = &m.ticks;
        if ticks.is_empty() {
            return None;
        }
        let f = m.fair_tick.min(ticks.len() - 1);
        let best_yes = m.book.best(Side::Yes).map(|l| l.0);
        let best_no = m.book.best(Side::No).map(|l| l.0);
        let spread = 1 + self.flow.below(12) as usize;
        let price = match side {
            // A YES bid below fair value.
            Side::Yes => ticks[f.saturating_sub(spread)],
            // A NO bid priced so that its YES-equivalent ask sits above fair value.
            Side::No => {
                let j = (f + spread).min(ticks.len() - 1);
                Price::ONE_DOLLAR.checked_sub(ticks[j])?
            }
        };
        // Never cross: YES bid + NO bid must stay below one dollar.
        let other = match side {
            Side::Yes => best_no,
            Side::No => best_yes,
        };
        if let Some(o) = other
            && price.raw() + o.raw() >= Price::ONE_DOLLAR.raw()
        {
            return None;
        }
        if price.raw() <= 0 || !ticks.contains(&price) {
            return None;
        }
        let whole = 1 + self.flow.below(250) as i64;
        let mut qty = whole * 100;
        // Fractional sizes did not exist when the legacy integer fields did.
        if !self.cfg.legacy_fields && self.flow.chance(60) {
            // Fractional sizes exist in production ("1596.82").
            qty += 1 + self.flow.below(99) as i64;
        }
        Some((price, Quantity::from_raw(qty)))
    }

    fn flow_step(&mut self, ts_ms: i64, out: &mut Vec<Published>) {
        if self.active.is_empty() {
            return;
        }
        let idx = self.active[self.flow.below(self.active.len() as u64) as usize];
        if self.markets[idx as usize].paused {
            return;
        }
        if self.flow.chance(20) {
            // Fair value drifts.
            let m = &mut self.markets[idx as usize];
            let len = m.ticks.len();
            if self.flow.chance(500) {
                m.fair_tick = (m.fair_tick + 1).min(len.saturating_sub(2));
            } else {
                m.fair_tick = m.fair_tick.saturating_sub(1).max(1);
            }
        }
        let depth = {
            let b = &self.markets[idx as usize].book;
            (b.yes.len(), b.no.len())
        };
        let roll = self.flow.below(100);
        let top_before = self.top_of_book(idx);
        if roll < 22 && (depth.0 > 0 || depth.1 > 0) {
            self.trade_step(idx, ts_ms, out);
            return;
        }
        let want_cancel = roll < 55 && depth.0 + depth.1 > 4 || depth.0 + depth.1 > 60;
        if want_cancel {
            self.cancel_step(idx, ts_ms, out);
        } else {
            self.place_step(idx, ts_ms, out);
        }
        if self.top_of_book(idx) != top_before {
            self.emit_ticker(idx, ts_ms, out);
        }
    }

    fn place_step(&mut self, idx: u32, ts_ms: i64, out: &mut Vec<Published>) {
        let side = if self.flow.chance(500) {
            Side::Yes
        } else {
            Side::No
        };
        let Some((price, qty)) = self.choose_placement(idx, side) else {
            return;
        };
        self.emit_delta(idx, side, price, qty, ts_ms, out);
        if self.flow.chance(30) {
            // Two identical orders in the same millisecond: identical deltas, both real.
            self.emit_delta(idx, side, price, qty, ts_ms, out);
        }
    }

    /// A part of `size` in whole contracts (all of it when it is a contract or less).
    fn partial(&mut self, size: Quantity) -> Quantity {
        let whole = size.raw() / 100;
        if whole <= 1 {
            return size;
        }
        Quantity::from_raw(100 * (1 + self.flow.below(whole as u64 - 1) as i64))
    }

    fn cancel_step(&mut self, idx: u32, ts_ms: i64, out: &mut Vec<Published>) {
        let side = if self.flow.chance(500) {
            Side::Yes
        } else {
            Side::No
        };
        let levels = self.markets[idx as usize].book.levels(side);
        let Some(&(price, size)) = self.flow.pick(&levels) else {
            return;
        };
        let amount = if self.flow.chance(500) {
            size
        } else {
            self.partial(size)
        };
        let Some(neg) = amount.checked_neg() else {
            return;
        };
        self.emit_delta(idx, side, price, neg, ts_ms, out);
        if self.flow.chance(40) {
            // A cancel/replace at the same level in the same millisecond (a -x/+x pair).
            self.emit_delta(idx, side, price, amount, ts_ms, out);
        }
    }

    fn trade_step(&mut self, idx: u32, ts_ms: i64, out: &mut Vec<Published>) {
        // A taker buying YES lifts the best NO bid; a taker buying NO hits the best YES bid.
        let taker = if self.flow.chance(500) {
            Side::Yes
        } else {
            Side::No
        };
        let maker_side = match taker {
            Side::Yes => Side::No,
            Side::No => Side::Yes,
        };
        let block = self.flow.chance(10);
        // Block trades print at the best price without touching the book.
        let Some((maker_price, level)) = self.markets[idx as usize].book.best(maker_side) else {
            return;
        };
        let count = if self.flow.chance(300) {
            level
        } else {
            self.partial(level)
        };
        let Some(complement) = maker_price.complement() else {
            return;
        };
        let (yes_price, no_price) = match taker {
            Side::Yes => (complement, maker_price),
            Side::No => (maker_price, complement),
        };
        let book_side = match taker {
            Side::Yes => BookSide::Bid,
            Side::No => BookSide::Ask,
        };
        let trade_id = self.flow.uuid_u128();
        // REST gives microseconds; the WS gives the same instant floored to the millisecond.
        let ts_us = ts_ms * 1000 + self.flow.below(1000) as i64;
        let legacy = self.cfg.legacy_fields;
        let dp = self.ws_decimals();
        let m = &self.markets[idx as usize];
        let msg = TradeMsg {
            trade_id: crate::rng::format_uuid(trade_id),
            market_ticker: m.ticker.clone(),
            yes_price: legacy.then(|| yes_price.to_cents()).flatten(),
            yes_price_dollars: Some(Dollars::with_decimals(yes_price, dp)),
            no_price: legacy.then(|| no_price.to_cents()).flatten(),
            no_price_dollars: Some(Dollars::with_decimals(no_price, dp)),
            count: legacy.then(|| count.to_whole()).flatten(),
            count_fp: Some(count),
            taker_side: Some(taker),
            taker_outcome_side: Some(taker),
            taker_book_side: Some(book_side),
            is_block_trade: Some(block),
            ts: Some(ts_ms.div_euclid(1000)),
            ts_ms: Some(ts_ms),
        };
        let json = to_json(&msg);
        self.publish(out, EventKind::Trade, ts_ms, Some(idx), json, None);
        self.record_trade(TradeRec {
            seq: 0,
            trade_id,
            market: idx,
            ts_us,
            yes_price,
            count,
            taker,
            block,
        });
        {
            let m = &mut self.markets[idx as usize];
            m.previous_price = m.last_price;
            m.last_price = Some(yes_price);
            m.last_trade_size = count;
            m.volume = m.volume.checked_add(count).unwrap_or(m.volume);
            m.open_interest = m
                .open_interest
                .checked_add(count)
                .unwrap_or(m.open_interest);
            m.notional_traded += i128::from(count.raw()) * i128::from(yes_price.raw());
        }
        if !block && let Some(neg) = count.checked_neg() {
            self.emit_delta(idx, maker_side, maker_price, neg, ts_ms, out);
        }
        self.emit_ticker(idx, ts_ms, out);
    }

    fn record_trade(&mut self, mut rec: TradeRec) {
        rec.seq = self.next_trade_seq;
        self.next_trade_seq += 1;
        self.trades_by_market
            .entry(rec.market)
            .or_default()
            .push_back(rec.seq);
        self.trades.push_back(rec);
        while self.trades.len() > self.cfg.trade_history {
            if let Some(old) = self.trades.pop_front()
                && let Some(list) = self.trades_by_market.get_mut(&old.market)
            {
                list.pop_front();
            }
        }
    }

    fn emit_delta(
        &mut self,
        idx: u32,
        side: Side,
        price: Price,
        delta: Quantity,
        ts_ms: i64,
        out: &mut Vec<Published>,
    ) {
        if self.markets[idx as usize]
            .book
            .apply(side, price, delta)
            .is_err()
        {
            return;
        }
        let dp = self.ws_decimals();
        let json = delta_json(
            &self.markets[idx as usize],
            side,
            price,
            delta,
            ts_ms,
            dp,
            self.cfg.legacy_fields,
        );
        self.publish(
            out,
            EventKind::Delta,
            ts_ms,
            Some(idx),
            json,
            Some(DeltaData { side, price, delta }),
        );
    }

    fn top_of_book(&self, idx: u32) -> (Option<Price>, Option<Price>) {
        let b = &self.markets[idx as usize].book;
        (
            b.best(Side::Yes).map(|l| l.0),
            b.best(Side::No).map(|l| l.0),
        )
    }

    fn emit_ticker(&mut self, idx: u32, ts_ms: i64, out: &mut Vec<Published>) {
        let dp = self.ws_decimals();
        let legacy = self.cfg.legacy_fields;
        let m = &self.markets[idx as usize];
        let (yes_bid, yes_bid_size) = m
            .book
            .best(Side::Yes)
            .unwrap_or((Price::ZERO, Quantity::ZERO));
        let (no_bid, no_bid_size) = m
            .book
            .best(Side::No)
            .unwrap_or((Price::ZERO, Quantity::ZERO));
        let yes_ask = no_bid.complement().unwrap_or(Price::ONE_DOLLAR);
        let last = m.last_price.unwrap_or(Price::ZERO);
        let dollar_volume = (m.notional_traded / 100_000_000) as i64;
        let dollar_oi =
            (i128::from(m.open_interest.raw()) * i128::from(last.raw()) / 100_000_000) as i64;
        let msg = TickerMsg {
            market_ticker: m.ticker.clone(),
            market_id: Some(m.market_id.clone()),
            price: legacy.then(|| last.to_cents()).flatten(),
            yes_bid: legacy.then(|| yes_bid.to_cents()).flatten(),
            yes_ask: legacy.then(|| yes_ask.to_cents()).flatten(),
            price_dollars: Some(Dollars::with_decimals(last, dp)),
            yes_bid_dollars: Some(Dollars::with_decimals(yes_bid, dp)),
            yes_ask_dollars: Some(Dollars::with_decimals(yes_ask, dp)),
            volume: legacy.then(|| m.volume.to_whole()).flatten(),
            volume_fp: Some(m.volume),
            open_interest: legacy.then(|| m.open_interest.to_whole()).flatten(),
            open_interest_fp: Some(m.open_interest),
            dollar_volume: Some(dollar_volume),
            dollar_open_interest: Some(dollar_oi),
            yes_bid_size_fp: Some(yes_bid_size),
            yes_ask_size_fp: Some(no_bid_size),
            last_trade_size_fp: Some(m.last_trade_size),
            ts: Some(ts_ms.div_euclid(1000)),
            ts_ms: Some(ts_ms),
            time: Some(kalshi_shared::time::format_rfc3339_s(
                ts_ms.div_euclid(1000),
            )),
        };
        let json = to_json(&msg);
        self.last_ticker
            .insert(idx, (ts_ms, json.clone().into_boxed_str()));
        self.publish(out, EventKind::Ticker, ts_ms, Some(idx), json, None);
    }

    // -----------------------------------------------------------------------------------------
    // Lifecycle
    // -----------------------------------------------------------------------------------------

    fn lifecycle(&mut self, ts_ms: i64, out: &mut Vec<Published>) {
        let step = self.lifecycle_step;
        self.lifecycle_step += 1;
        let live = self.active.len();
        match step % 6 {
            0 | 3 if live < self.cfg.markets.max(1) + 2 => self.lc_create(ts_ms, out),
            0 | 3 => self.lc_pause_toggle(ts_ms, out),
            1 if live > self.cfg.markets / 2 => self.lc_close(ts_ms, out),
            1 => self.lc_create(ts_ms, out),
            2 => self.lc_determine(ts_ms, out),
            4 => self.lc_settle(ts_ms, out),
            _ => self.lc_metadata(ts_ms, out),
        }
    }

    fn lifecycle_msg(&self, idx: u32, event_type: &str) -> MarketLifecycleMsg {
        MarketLifecycleMsg {
            market_ticker: self.markets[idx as usize].ticker.clone(),
            event_type: event_type.to_owned(),
            exchange_index: None,
            open_ts: None,
            close_ts: None,
            result: None,
            determination_ts: None,
            settlement_value: None,
            settled_ts: None,
            is_deactivated: None,
            price_level_structure: None,
            price_ranges: None,
            strike_type: None,
            floor_strike: None,
            cap_strike: None,
            yes_sub_title: None,
            additional_metadata: None,
        }
    }

    fn publish_lifecycle(
        &mut self,
        idx: u32,
        msg: MarketLifecycleMsg,
        ts_ms: i64,
        out: &mut Vec<Published>,
    ) {
        let json = to_json(&msg);
        self.publish(
            out,
            EventKind::MarketLifecycle,
            ts_ms,
            Some(idx),
            json,
            None,
        );
    }

    fn lc_create(&mut self, ts_ms: i64, out: &mut Vec<Published>) {
        let series_idx = self
            .flow
            .below(self.series.iter().filter(|s| !s.is_mve).count().max(1) as u64)
            as usize;
        let n = 1 + self.flow.below(3) as usize;
        let (event_idx, idxs) = self.add_event(series_idx, n, ts_ms);
        let e = &self.events[event_idx];
        let event_msg = EventLifecycleMsg {
            event_ticker: e.ticker.clone(),
            title: e.title.clone(),
            subtitle: e.sub_title.clone(),
            collateral_return_type: e.collateral_return_type.clone(),
            series_ticker: self.series[e.series].ticker.clone(),
            strike_date: e.strike_date_s,
            strike_period: e.strike_period.clone(),
        };
        let json = to_json(&event_msg);
        self.publish(out, EventKind::EventLifecycle, ts_ms, None, json, None);
        for idx in idxs {
            for side in [Side::Yes, Side::No] {
                if let Some((price, qty)) = self.choose_placement(idx, side) {
                    let _ = self.markets[idx as usize].book.apply(side, price, qty);
                }
            }
            let m = &self.markets[idx as usize];
            let mut msg = self.lifecycle_msg(idx, ws::lifecycle_event::CREATED);
            msg.open_ts = Some(m.open_s);
            msg.close_ts = Some(m.close_s);
            msg.price_level_structure = Some(m.structure.to_owned());
            msg.price_ranges = Some(m.price_ranges());
            msg.additional_metadata = Some(LifecycleMetadata {
                name: Some(m.title.clone()),
                title: Some(m.title.clone()),
                yes_sub_title: Some(m.yes_sub_title.clone()),
                no_sub_title: Some(m.no_sub_title.clone()),
                rules_primary: Some(m.rules_primary.clone()),
                rules_secondary: Some(String::new()),
                can_close_early: Some(m.can_close_early),
                event_ticker: Some(self.events[m.event].ticker.clone()),
                expected_expiration_ts: Some(m.expected_expiration_s),
                strike_type: Some(m.strike_type.clone()),
                floor_strike: m.floor_strike.clone(),
                cap_strike: m.cap_strike.clone(),
            });
            self.publish_lifecycle(idx, msg, ts_ms, out);
            let msg = self.lifecycle_msg(idx, ws::lifecycle_event::ACTIVATED);
            self.publish_lifecycle(idx, msg, ts_ms, out);
        }
    }

    fn lc_close(&mut self, ts_ms: i64, out: &mut Vec<Published>) {
        // Close the oldest trading market: early close, its resting orders cancelled.
        let Some(pos) = self
            .active
            .iter()
            .position(|i| !self.markets[*i as usize].paused)
        else {
            return;
        };
        let idx = self.active.remove(pos);
        for side in [Side::Yes, Side::No] {
            for (price, size) in self.markets[idx as usize].book.levels(side) {
                if let Some(neg) = size.checked_neg() {
                    self.emit_delta(idx, side, price, neg, ts_ms, out);
                }
            }
        }
        let m = &mut self.markets[idx as usize];
        m.status = Status::Closed;
        m.close_s = ts_ms.div_euclid(1000);
        m.updated_ms = ts_ms;
        let mut msg = self.lifecycle_msg(idx, ws::lifecycle_event::CLOSE_DATE_UPDATED);
        msg.close_ts = Some(ts_ms.div_euclid(1000));
        self.publish_lifecycle(idx, msg, ts_ms, out);
    }

    fn oldest_with(&self, status: Status) -> Option<u32> {
        self.markets
            .iter()
            .position(|m| !m.is_mve && m.status == status)
            .map(|i| i as u32)
    }

    fn lc_determine(&mut self, ts_ms: i64, out: &mut Vec<Published>) {
        let Some(idx) = self.oldest_with(Status::Closed) else {
            return self.lc_metadata(ts_ms, out);
        };
        let yes = self.flow.chance(500);
        let value = if yes { Price::ONE_DOLLAR } else { Price::ZERO };
        let m = &mut self.markets[idx as usize];
        m.status = Status::Determined;
        m.result = if yes { "yes" } else { "no" }.into();
        m.settlement_value = Some(value);
        m.updated_ms = ts_ms;
        let mut msg = self.lifecycle_msg(idx, ws::lifecycle_event::DETERMINED);
        msg.result = Some(if yes { "yes" } else { "no" }.into());
        msg.determination_ts = Some(ts_ms.div_euclid(1000));
        msg.settlement_value = Some(Dollars::new(value));
        self.publish_lifecycle(idx, msg, ts_ms, out);
    }

    fn lc_settle(&mut self, ts_ms: i64, out: &mut Vec<Published>) {
        let Some(idx) = self.oldest_with(Status::Determined) else {
            return self.lc_metadata(ts_ms, out);
        };
        let m = &mut self.markets[idx as usize];
        m.status = Status::Finalized;
        m.settled_ms = Some(ts_ms);
        m.updated_ms = ts_ms;
        let mut msg = self.lifecycle_msg(idx, ws::lifecycle_event::SETTLED);
        msg.settled_ts = Some(ts_ms.div_euclid(1000));
        self.publish_lifecycle(idx, msg, ts_ms, out);
    }

    fn lc_pause_toggle(&mut self, ts_ms: i64, out: &mut Vec<Published>) {
        let Some(&idx) = self.flow.pick(&self.active) else {
            return;
        };
        let m = &mut self.markets[idx as usize];
        m.paused = !m.paused;
        m.updated_ms = ts_ms;
        let paused = m.paused;
        let mut msg = self.lifecycle_msg(idx, ws::lifecycle_event::DEACTIVATED);
        msg.is_deactivated = Some(paused);
        self.publish_lifecycle(idx, msg, ts_ms, out);
    }

    fn lc_metadata(&mut self, ts_ms: i64, out: &mut Vec<Published>) {
        let Some(&idx) = self.flow.pick(&self.active) else {
            return;
        };
        let n = self.flow.below(1000);
        let m = &mut self.markets[idx as usize];
        m.yes_sub_title = format!(
            "{} (rev {n})",
            m.yes_sub_title.split(" (rev").next().unwrap_or("")
        );
        m.updated_ms = ts_ms;
        let sub = m.yes_sub_title.clone();
        let strike_type = m.strike_type.clone();
        let mut msg = self.lifecycle_msg(idx, ws::lifecycle_event::METADATA_UPDATED);
        msg.yes_sub_title = Some(sub);
        msg.strike_type = Some(strike_type);
        self.publish_lifecycle(idx, msg, ts_ms, out);
    }

    // -----------------------------------------------------------------------------------------
    // Views for WS snapshots and REST
    // -----------------------------------------------------------------------------------------

    /// The `orderbook_snapshot` msg of a market as of now.
    pub fn snapshot_json(&self, idx: u32, use_yes_price: bool) -> String {
        let m = &self.markets[idx as usize];
        let legacy = self.cfg.legacy_fields;
        let level = |p: Price, q: Quantity| Level {
            price: Dollars::new(p),
            count: q,
        };
        let yes: Vec<(Price, Quantity)> = m.book.levels(Side::Yes);
        let mut no: Vec<(Price, Quantity)> = m.book.levels(Side::No);
        if use_yes_price {
            no = no
                .into_iter()
                .filter_map(|(p, q)| Some((p.complement()?, q)))
                .collect();
            no.sort();
        }
        let fp = |v: &[(Price, Quantity)]| {
            (!v.is_empty()).then(|| v.iter().map(|(p, q)| level(*p, *q)).collect::<Vec<_>>())
        };
        let cents = |v: &[(Price, Quantity)]| {
            (legacy && !v.is_empty())
                .then(|| {
                    v.iter()
                        .map(|(p, q)| Some(LegacyLevel(p.to_cents()?, q.to_whole()?)))
                        .collect::<Option<Vec<_>>>()
                })
                .flatten()
        };
        let msg = OrderbookSnapshotMsg {
            market_ticker: m.ticker.clone(),
            market_id: Some(m.market_id.clone()),
            yes: cents(&yes),
            yes_dollars: if legacy { fp(&yes) } else { None },
            yes_dollars_fp: fp(&yes),
            no: cents(&no),
            no_dollars: if legacy { fp(&no) } else { None },
            no_dollars_fp: fp(&no),
        };
        to_json(&msg)
    }

    pub fn rest_market(&self, idx: u32) -> rest::Market {
        let m = &self.markets[idx as usize];
        let legacy = self.cfg.legacy_fields;
        let d = |p: Price| Some(Dollars::new(p));
        let (yes_bid, yes_bid_size) = m
            .book
            .best(Side::Yes)
            .unwrap_or((Price::ZERO, Quantity::ZERO));
        let (no_bid, no_bid_size) = m
            .book
            .best(Side::No)
            .unwrap_or((Price::ZERO, Quantity::ZERO));
        let yes_ask = no_bid.complement().unwrap_or(Price::ONE_DOLLAR);
        let no_ask = yes_bid.complement().unwrap_or(Price::ONE_DOLLAR);
        let last = m.last_price.unwrap_or(Price::ZERO);
        let fmt_s = kalshi_shared::time::format_rfc3339_s;
        let fmt_ms = kalshi_shared::time::format_rfc3339_ms;
        rest::Market {
            ticker: m.ticker.clone(),
            event_ticker: self.events[m.event].ticker.clone(),
            market_type: "binary".into(),
            title: Some(m.title.clone()),
            subtitle: Some(String::new()),
            yes_sub_title: m.yes_sub_title.clone(),
            no_sub_title: m.no_sub_title.clone(),
            created_time: fmt_ms(m.created_ms),
            updated_time: fmt_ms(m.updated_ms),
            open_time: fmt_s(m.open_s),
            close_time: fmt_s(m.close_s),
            expected_expiration_time: Some(fmt_s(m.expected_expiration_s)),
            expiration_time: Some(fmt_s(m.latest_expiration_s)),
            latest_expiration_time: fmt_s(m.latest_expiration_s),
            settlement_timer_seconds: 300,
            status: m.status.as_str().into(),
            notional_value_dollars: d(Price::ONE_DOLLAR),
            yes_bid_dollars: d(yes_bid),
            yes_bid_size_fp: Some(yes_bid_size),
            yes_ask_dollars: d(yes_ask),
            yes_ask_size_fp: Some(no_bid_size),
            no_bid_dollars: d(no_bid),
            no_ask_dollars: d(no_ask),
            last_price_dollars: d(last),
            previous_yes_bid_dollars: d(yes_bid),
            previous_yes_ask_dollars: d(yes_ask),
            previous_price_dollars: d(m.previous_price.unwrap_or(Price::ZERO)),
            volume_fp: Some(m.volume),
            volume_24h_fp: Some(m.volume),
            open_interest_fp: Some(m.open_interest),
            result: m.result.clone(),
            can_close_early: m.can_close_early,
            settlement_bounds_type: Some("default".into()),
            expiration_value: String::new(),
            rules_primary: m.rules_primary.clone(),
            rules_secondary: String::new(),
            price_level_structure: m.structure.to_owned(),
            price_ranges: m.price_ranges(),
            settlement_value_dollars: m.settlement_value.map(Dollars::new),
            settlement_ts: m.settled_ms.map(fmt_ms),
            strike_type: Some(m.strike_type.clone()),
            floor_strike: m.floor_strike.clone(),
            cap_strike: m.cap_strike.clone(),
            mve_collection_ticker: m.mve_collection.clone(),
            mve_selected_legs: m.is_mve.then(Vec::new),
            is_provisional: Some(false),
            yes_bid: legacy.then(|| yes_bid.to_cents()).flatten(),
            yes_ask: legacy.then(|| yes_ask.to_cents()).flatten(),
            no_bid: legacy.then(|| no_bid.to_cents()).flatten(),
            no_ask: legacy.then(|| no_ask.to_cents()).flatten(),
            last_price: legacy.then(|| last.to_cents()).flatten(),
            volume: legacy.then(|| m.volume.to_whole()).flatten(),
            volume_24h: legacy.then(|| m.volume.to_whole()).flatten(),
            open_interest: legacy.then(|| m.open_interest.to_whole()).flatten(),
            ..Default::default()
        }
    }

    pub fn rest_event(&self, idx: usize, with_markets: bool) -> rest::EventData {
        let e = &self.events[idx];
        let series = self.series.get(e.series);
        rest::EventData {
            event_ticker: e.ticker.clone(),
            series_ticker: series.map(|s| s.ticker.clone()).unwrap_or_default(),
            sub_title: e.sub_title.clone(),
            title: e.title.clone(),
            collateral_return_type: e.collateral_return_type.clone(),
            mutually_exclusive: e.mutually_exclusive,
            category: series.map(|s| s.category.clone()),
            strike_date: e.strike_date_s.map(kalshi_shared::time::format_rfc3339_s),
            strike_period: e.strike_period.clone(),
            markets: with_markets.then(|| {
                self.markets_of_event(idx)
                    .into_iter()
                    .map(|m| self.rest_market(m))
                    .collect()
            }),
            available_on_brokers: Some(false),
            product_metadata: None,
            settlement_sources: None,
            last_updated_ts: Some(kalshi_shared::time::format_rfc3339_ms(e.updated_ms)),
            ..Default::default()
        }
    }

    pub fn markets_of_event(&self, event: usize) -> Vec<u32> {
        self.event_markets.get(event).cloned().unwrap_or_default()
    }

    pub fn rest_series(&self, idx: usize) -> rest::Series {
        let s = &self.series[idx];
        rest::Series {
            ticker: s.ticker.clone(),
            frequency: s.frequency.clone(),
            title: s.title.clone(),
            category: s.category.clone(),
            categories: vec![s.category.clone()],
            tags: s.tags.clone(),
            settlement_sources: Some(vec![rest::SettlementSource {
                name: Some("Simulated source".into()),
                url: Some("https://example.invalid/source".into()),
            }]),
            contract_url: format!("https://example.invalid/contracts/{}.pdf", s.ticker),
            contract_terms_url: format!("https://example.invalid/terms/{}.pdf", s.ticker),
            product_metadata: None,
            fee_type: s.fee_type.clone(),
            fee_multiplier: Some(s.fee_multiplier.clone()),
            additional_prohibitions: Some(Vec::new()),
            volume_fp: None,
            last_updated_ts: Some(kalshi_shared::time::format_rfc3339_ms(s.updated_ms)),
            exchange_index: None,
        }
    }

    /// Trades newest first: those with `seq < before` (or all) that match the filters, at
    /// most `limit`. Returns them and, when more match, the `before` to continue with.
    pub fn trades_page(
        &self,
        market: Option<u32>,
        before: Option<u64>,
        min_ms: Option<i64>,
        max_ms: Option<i64>,
        block: Option<bool>,
        limit: usize,
    ) -> (Vec<RestTrade>, Option<u64>) {
        let legacy = self.cfg.legacy_fields;
        let base = self.trades.front().map_or(0, |t| t.seq);
        let matches = |t: &&TradeRec| {
            let ms = t.ts_us.div_euclid(1000);
            min_ms.is_none_or(|m| ms >= m)
                && max_ms.is_none_or(|m| ms <= m)
                && block.is_none_or(|b| t.block == b)
        };
        let candidates: Box<dyn Iterator<Item = &TradeRec>> =
            match market {
                Some(m) => match self.trades_by_market.get(&m) {
                    Some(list) => {
                        let end = before.map_or(list.len(), |b| list.partition_point(|s| *s < b));
                        Box::new(list.range(..end).rev().filter_map(move |seq| {
                            self.trades.get(seq.checked_sub(base)? as usize)
                        }))
                    }
                    None => Box::new(std::iter::empty()),
                },
                None => {
                    let end = before.map_or(self.trades.len(), |b| {
                        b.saturating_sub(base).min(self.trades.len() as u64) as usize
                    });
                    Box::new(self.trades.range(..end).rev())
                }
            };
        let mut page: Vec<&TradeRec> = candidates.filter(matches).take(limit + 1).collect();
        let next = if page.len() > limit {
            page.pop();
            page.last().map(|t| t.seq)
        } else {
            None
        };
        (
            page.into_iter()
                .map(|t| self.rest_trade(t, legacy))
                .collect(),
            next,
        )
    }

    fn rest_trade(&self, t: &TradeRec, legacy: bool) -> RestTrade {
        let no_price = t.yes_price.complement().unwrap_or(Price::ZERO);
        RestTrade {
            trade_id: crate::rng::format_uuid(t.trade_id),
            ticker: self.markets[t.market as usize].ticker.clone(),
            count_fp: Some(t.count),
            yes_price_dollars: Some(Dollars::new(t.yes_price)),
            no_price_dollars: Some(Dollars::new(no_price)),
            taker_side: Some(t.taker),
            taker_outcome_side: Some(t.taker),
            taker_book_side: Some(match t.taker {
                Side::Yes => BookSide::Bid,
                Side::No => BookSide::Ask,
            }),
            created_time: kalshi_shared::time::format_rfc3339_us(t.ts_us),
            is_block_trade: Some(t.block),
            count: legacy.then(|| t.count.to_whole()).flatten(),
            yes_price: legacy.then(|| t.yes_price.to_cents()).flatten(),
            no_price: legacy.then(|| no_price.to_cents()).flatten(),
        }
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

fn delta_json(
    m: &MarketInfo,
    side: Side,
    price: Price,
    delta: Quantity,
    ts_ms: i64,
    dp: u8,
    legacy: bool,
) -> String {
    let msg = OrderbookDeltaMsg {
        market_ticker: m.ticker.clone(),
        market_id: Some(m.market_id.clone()),
        price: legacy.then(|| price.to_cents()).flatten(),
        price_dollars: Some(Dollars::with_decimals(price, dp)),
        delta: legacy.then(|| delta.to_whole()).flatten(),
        delta_fp: Some(delta),
        side,
        client_order_id: None,
        subaccount: None,
        ts: Some(kalshi_shared::time::format_rfc3339_ms(ts_ms)),
        ts_ms: Some(ts_ms),
    };
    to_json(&msg)
}

/// Re-serializes a delta with its NO price on the YES scale (`use_yes_price: true`).
pub fn delta_json_yes_scale(
    ex: &Exchange,
    market: u32,
    d: DeltaData,
    ts_ms: i64,
) -> Option<String> {
    let price = match d.side {
        Side::Yes => d.price,
        Side::No => d.price.complement()?,
    };
    Some(delta_json(
        &ex.markets[market as usize],
        d.side,
        price,
        d.delta,
        ts_ms,
        4,
        ex.cfg.legacy_fields,
    ))
}

pub fn to_json<T: serde::Serialize>(v: &T) -> String {
    // The wire types serialize infallibly (no maps with non-string keys, no custom errors).
    serde_json::to_string(v).unwrap_or_else(|e| format!("{{\"serialize_error\":\"{e}\"}}"))
}
