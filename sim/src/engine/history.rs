//! The exchange's past: trades from before the simulator started (`--history-hours`), served
//! by REST only, in Kalshi's two tiers. `GET /historical/cutoff` names the cutoff (half-way
//! through the history); `GET /historical/trades` serves trades before it, `GET /markets/trades`
//! those from `HISTORY_OVERLAP_MS` before it on (the tiers overlap, as Kalshi's do:
//! docs/kalshi-api.md §6). Each is in the ground truth as a `historical_trade` record, before
//! every published event, so an import can be judged against it.
//!
//! It must never change the live exchange a seed gives: the past has its own random stream.

use kalshi_shared::Quantity;
use kalshi_shared::wire::ws::TradeMsg;
use kalshi_shared::wire::{BookSide, Dollars, Side};

use super::{Exchange, TradeRec, to_json};
use crate::rng::Rng;

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
        let step_us = history_ms * 1000 / n as i64;
        for i in 0..n as i64 {
            let idx = markets[rng.below(markets.len() as u64) as usize];
            let ts_us = (start_ms - history_ms) * 1000
                + i * step_us
                + rng.below(step_us.max(1) as u64) as i64;
            let ts_ms = ts_us.div_euclid(1000);
            let m = &self.markets[idx as usize];
            let Some(&yes_price) = m.ticks.get(rng.below(m.ticks.len().max(1) as u64) as usize)
            else {
                continue;
            };
            let Some(no_price) = yes_price.complement() else {
                continue;
            };
            let count = Quantity::from_raw(100 * (1 + rng.below(50) as i64));
            let taker = if rng.chance(500) { Side::Yes } else { Side::No };
            let block = rng.chance(10);
            let trade_id = rng.uuid_u128();
            let msg = TradeMsg {
                trade_id: crate::rng::format_uuid(trade_id),
                market_ticker: m.ticker.clone(),
                yes_price: None,
                yes_price_dollars: Some(Dollars::with_decimals(yes_price, 4)),
                no_price: None,
                no_price_dollars: Some(Dollars::with_decimals(no_price, 4)),
                count: None,
                count_fp: Some(count),
                taker_side: Some(taker),
                taker_outcome_side: Some(taker),
                taker_book_side: Some(match taker {
                    Side::Yes => BookSide::Bid,
                    Side::No => BookSide::Ask,
                }),
                is_block_trade: Some(block),
                ts: Some(ts_ms.div_euclid(1000)),
                ts_ms: Some(ts_ms),
            };
            self.pos += 1;
            self.truth
                .append(self.pos, ts_ms, "historical_trade", &to_json(&msg));
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
        }
    }

    /// The cutoff between the tiers (Unix ms): the start when there is no history.
    pub fn history_cutoff_ms(&self) -> i64 {
        self.history_cutoff_ms
    }
}
