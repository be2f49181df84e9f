//! Read-only views of the exchange for REST and WebSocket snapshots: markets, events, series,
//! trade pages and order-book snapshots, in Kalshi's wire shapes.
//!
//! It must never change the exchange's state or the ground truth.

use super::flow::delta_json;
use super::*;

impl Exchange {
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

    pub(super) fn rest_trade(&self, t: &TradeRec, legacy: bool) -> RestTrade {
        let no_price = t.yes_price.complement().unwrap_or(Price::ZERO);
        RestTrade {
            trade_id: crate::rng::format_uuid(t.trade_id),
            ticker: self.trade_ticker(t.market).to_owned(),
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
