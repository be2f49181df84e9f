//! Order flow: each tick places, cancels and trades against the books, emitting deltas,
//! trades and tickers, each recorded in the ground truth before it is published.
//!
//! It must never emit a delta that makes a level negative, or a trade the book cannot fill.

use super::*;

impl Exchange {
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
        self.status_tick(ts_ms);
        // Steps that emit nothing (a paused market drawn, a placement that would cross) are
        // retried; the cap guarantees termination if nothing at all can trade.
        let mut budget = n.saturating_mul(50).saturating_add(1_000);
        let mut idle = 0u32;
        while (out.len() as u64) < n && budget > 0 {
            budget -= 1;
            if self.cfg.unknown_every > 0 && self.generated >= self.next_unknown_at {
                self.next_unknown_at = self.generated + self.cfg.unknown_every;
                let before = out.len();
                self.unmodelled(ts_ms, &mut out);
                self.generated += (out.len() - before) as u64;
                continue;
            }
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

    pub(super) fn publish(
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

    /// A message of a type no client models, about a live market (none without one).
    fn unmodelled(&mut self, ts_ms: i64, out: &mut Vec<Published>) {
        if self.active.is_empty() {
            return;
        }
        let idx = self.active[self.flow.below(self.active.len() as u64) as usize];
        self.unknown_sent += 1;
        let msg = serde_json::json!({
            "market_ticker": self.markets[idx as usize].ticker,
            "fee_type": "quadratic",
            "fee_multiplier": "0.0700",
            "effective_ts": ts_ms.div_euclid(1000),
            "n": self.unknown_sent,
        });
        self.publish(
            out,
            EventKind::Unmodelled,
            ts_ms,
            Some(idx),
            msg.to_string(),
            None,
        );
    }

    /// A ticker's or lifecycle message's JSON as the exchange sends it: with the unmodelled
    /// field under `--future-fields`.
    pub(super) fn as_sent(&self, json: String) -> String {
        if self.cfg.future_fields {
            with_future_field(&json)
        } else {
            json
        }
    }

    /// Decimal places for a WS dollar string: varies as Kalshi's do.
    pub(super) fn ws_decimals(&mut self) -> u8 {
        [2u8, 3, 4, 4][self.flow.below(4) as usize]
    }

    pub(super) fn choose_placement(&mut self, idx: u32, side: Side) -> Option<(Price, Quantity)> {
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

    pub(super) fn flow_step(&mut self, ts_ms: i64, out: &mut Vec<Published>) {
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

    pub(super) fn place_step(&mut self, idx: u32, ts_ms: i64, out: &mut Vec<Published>) {
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
    pub(super) fn partial(&mut self, size: Quantity) -> Quantity {
        let whole = size.raw() / 100;
        if whole <= 1 {
            return size;
        }
        Quantity::from_raw(100 * (1 + self.flow.below(whole as u64 - 1) as i64))
    }

    pub(super) fn cancel_step(&mut self, idx: u32, ts_ms: i64, out: &mut Vec<Published>) {
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

    pub(super) fn trade_step(&mut self, idx: u32, ts_ms: i64, out: &mut Vec<Published>) {
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
        // The NO price is the YES price's complement (`TradeRec::ws_msg`).
        let yes_price = match taker {
            Side::Yes => complement,
            Side::No => maker_price,
        };
        let trade_id = self.flow.uuid_u128();
        // REST gives microseconds; the WS gives the same instant floored to the millisecond.
        let ts_us = ts_ms * 1000 + self.flow.below(1000) as i64;
        let rec = TradeRec {
            seq: 0,
            trade_id,
            market: idx,
            ts_us,
            yes_price,
            count,
            taker,
            block,
        };
        let ticker = self.markets[idx as usize].ticker.clone();
        let json = to_json(&rec.ws_msg(ticker, self.cfg.legacy_fields, self.ws_decimals()));
        self.publish(out, EventKind::Trade, ts_ms, Some(idx), json, None);
        self.record_trade(rec);
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

    pub(super) fn record_trade(&mut self, mut rec: TradeRec) {
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

    pub(super) fn emit_delta(
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

    pub(super) fn top_of_book(&self, idx: u32) -> (Option<Price>, Option<Price>) {
        let b = &self.markets[idx as usize].book;
        (
            b.best(Side::Yes).map(|l| l.0),
            b.best(Side::No).map(|l| l.0),
        )
    }

    pub(super) fn emit_ticker(&mut self, idx: u32, ts_ms: i64, out: &mut Vec<Published>) {
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
        let json = self.as_sent(to_json(&msg));
        self.last_ticker
            .insert(idx, (ts_ms, json.clone().into_boxed_str()));
        self.publish(out, EventKind::Ticker, ts_ms, Some(idx), json, None);
    }
}

/// `msg` with a field no client models placed first, spelled so that any re-serialization
/// shows: keys out of order, spaces, a decimal with a trailing zero and an escaped character.
pub(super) fn with_future_field(msg: &str) -> String {
    match msg.strip_prefix('{') {
        Some(rest) => {
            let sep = if rest.trim_start().starts_with('}') {
                ""
            } else {
                ","
            };
            format!(r#"{{"x_unmodelled": {{"z": 1, "a": [1, "two", 3.50, "\u00e9"]}}{sep}{rest}"#)
        }
        None => msg.to_owned(),
    }
}

pub(super) fn delta_json(
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
