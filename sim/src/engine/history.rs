//! The exchange's past: trades from before the simulator started (`--history-hours`), served
//! by REST only, in Kalshi's two tiers. `GET /historical/cutoff` names the cutoff (half-way
//! through the history); `GET /historical/trades` serves trades before it, `GET /markets/trades`
//! those from `HISTORY_OVERLAP_MS` before it on (the tiers overlap, as Kalshi's do:
//! docs/kalshi-api.md §6). Each is in the ground truth as a `historical_trade` record, before
//! every published event, so an import can be judged against it.
//!
//! With `--history-markets N`, N markets opened and settled in the history before the cutoff:
//! they exist only under `GET /historical/markets` (as Kalshi's settled markets do), a third
//! of the history's trades in their lifetimes are theirs, and each is in the truth as a
//! `historical_market` record (the JSON served).
//!
//! It must never change the live exchange a seed gives: the past has its own random stream.

use kalshi_shared::Quantity;
use kalshi_shared::wire::{Dollars, Side};

use super::{Exchange, TradeRec, to_json};
use crate::rng::Rng;

/// Trade records of historical markets index them from here (`TradeRec::market`), apart from
/// the live catalogue's.
pub const HISTORICAL_BASE: u32 = 1 << 30;

/// A market that settled before the cutoff: served by `/historical/markets` only.
#[derive(Debug, Clone)]
pub struct HistoricalMarket {
    pub ticker: String,
    /// The live market whose catalogue entry and prices it was made from.
    template: u32,
    open_ms: i64,
    settled_ms: i64,
    volume: Quantity,
    result_yes: bool,
    /// The JSON served (and recorded in the truth), made once trades are generated.
    pub json: String,
}

/// How far before the cutoff the live tier (`/markets/trades`) still serves trades.
pub const HISTORY_OVERLAP_MS: i64 = 10 * 60 * 1000;

impl Exchange {
    /// Generates `history_ms` of trades before `start_ms` at `rate` per second, over the
    /// markets open at the start (MVE markets excluded), and sets the cutoff.
    pub(super) fn make_history(
        &mut self,
        rng: &mut Rng,
        start_ms: i64,
        history_ms: i64,
        rate: u64,
    ) {
        self.history_cutoff_ms = start_ms - history_ms / 2;
        let markets: Vec<u32> = self
            .active
            .iter()
            .copied()
            .filter(|i| !self.markets[*i as usize].is_mve)
            .collect();
        let n = (history_ms / 1000).max(0) as u64 * rate;
        if markets.is_empty() || n == 0 {
            return;
        }
        // Settled markets, back to back over the history before the cutoff.
        let first_ms = start_ms - history_ms;
        let span = (self.history_cutoff_ms - first_ms).max(1);
        let k = self.cfg.history_markets as i64;
        for j in 0..k {
            let template = markets[rng.below(markets.len() as u64) as usize];
            let event = &self.events[self.markets[template as usize].event];
            let hm = HistoricalMarket {
                ticker: format!("{}-H{j}", event.ticker),
                template,
                open_ms: first_ms + span * j / k,
                settled_ms: first_ms + span * (j + 1) / k - 1,
                volume: Quantity::ZERO,
                result_yes: rng.chance(500),
                json: String::new(),
            };
            self.historical_by_ticker
                .insert(hm.ticker.clone(), self.historical.len());
            self.historical.push(hm);
        }
        let step_us = history_ms * 1000 / n as i64;
        for i in 0..n as i64 {
            let idx = markets[rng.below(markets.len() as u64) as usize];
            let ts_us = (start_ms - history_ms) * 1000
                + i * step_us
                + rng.below(step_us.max(1) as u64) as i64;
            let ts_ms = ts_us.div_euclid(1000);
            // A third of the trades in a settled market's lifetime are its own.
            let hist = if k > 0 && rng.chance(333) {
                self.historical
                    .iter()
                    .position(|h| h.open_ms <= ts_ms && ts_ms <= h.settled_ms)
            } else {
                None
            };
            let idx = match hist {
                Some(j) => self.historical[j].template,
                None => idx,
            };
            let m = &self.markets[idx as usize];
            let Some(&yes_price) = m.ticks.get(rng.below(m.ticks.len().max(1) as u64) as usize)
            else {
                continue;
            };
            if yes_price.complement().is_none() {
                continue;
            }
            let count = Quantity::from_raw(100 * (1 + rng.below(50) as i64));
            let taker = if rng.chance(500) { Side::Yes } else { Side::No };
            let block = rng.chance(10);
            let trade_id = rng.uuid_u128();
            let rec = TradeRec {
                seq: 0,
                trade_id,
                market: hist.map_or(idx, |j| HISTORICAL_BASE + j as u32),
                ts_us,
                yes_price,
                count,
                taker,
                block,
            };
            let ticker = match hist {
                Some(j) => self.historical[j].ticker.clone(),
                None => m.ticker.clone(),
            };
            let msg = rec.ws_msg(ticker, false, 4);
            self.pos += 1;
            self.truth
                .append(self.pos, ts_ms, "historical_trade", &to_json(&msg));
            if let Some(j) = hist {
                let h = &mut self.historical[j];
                h.volume = h.volume.checked_add(count).unwrap_or(h.volume);
            }
            self.record_trade(rec);
        }
    }

    /// Renders each settled market's JSON and records it in the truth.
    pub(super) fn settle_history(&mut self, ts_ms: i64) {
        for j in 0..self.historical.len() {
            let h = self.historical[j].clone();
            let mut m = self.rest_market(h.template);
            let fmt_ms = kalshi_shared::time::format_rfc3339_ms;
            let fmt_s = |ms: i64| kalshi_shared::time::format_rfc3339_s(ms.div_euclid(1000));
            m.ticker = h.ticker.clone();
            m.title = m.title.map(|t| format!("{t} (settled)"));
            m.created_time = fmt_ms(h.open_ms - 3_600_000);
            m.updated_time = fmt_ms(h.settled_ms);
            m.open_time = fmt_s(h.open_ms);
            m.close_time = fmt_s(h.settled_ms);
            m.expected_expiration_time = Some(fmt_s(h.settled_ms));
            m.expiration_time = Some(fmt_s(h.settled_ms));
            m.latest_expiration_time = fmt_s(h.settled_ms);
            m.status = "finalized".into();
            m.result = if h.result_yes { "yes" } else { "no" }.into();
            let value = if h.result_yes {
                kalshi_shared::Price::ONE_DOLLAR
            } else {
                kalshi_shared::Price::ZERO
            };
            m.settlement_value_dollars = Some(Dollars::new(value));
            m.settlement_ts = Some(fmt_ms(h.settled_ms));
            m.volume_fp = Some(h.volume);
            m.volume_24h_fp = Some(Quantity::ZERO);
            m.open_interest_fp = Some(Quantity::ZERO);
            m.can_close_early = false;
            let json = to_json(&m);
            self.pos += 1;
            self.truth
                .append(self.pos, ts_ms, "historical_market", &json);
            self.historical[j].json = json;
        }
    }

    /// A settled market's index among the historical ones.
    pub fn historical_index(&self, ticker: &str) -> Option<usize> {
        self.historical_by_ticker.get(ticker).copied()
    }

    /// The settled markets (`/historical/markets`), in order.
    pub fn historical_markets(&self) -> &[HistoricalMarket] {
        &self.historical
    }

    /// The market a trade record is of.
    pub(super) fn trade_ticker(&self, market: u32) -> &str {
        if market >= HISTORICAL_BASE {
            self.historical
                .get((market - HISTORICAL_BASE) as usize)
                .map_or("", |h| h.ticker.as_str())
        } else {
            self.markets
                .get(market as usize)
                .map_or("", |m| m.ticker.as_str())
        }
    }

    /// The index trades of `ticker` are recorded under: a live market's or a settled one's.
    pub fn trade_market_index(&self, ticker: &str) -> Option<u32> {
        self.market_index(ticker).or_else(|| {
            self.historical_index(ticker)
                .map(|j| HISTORICAL_BASE + j as u32)
        })
    }

    /// The cutoff between the tiers (Unix ms): the start when there is no history.
    pub fn history_cutoff_ms(&self) -> i64 {
        self.history_cutoff_ms
    }
}
