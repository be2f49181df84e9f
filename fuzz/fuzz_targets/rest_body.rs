//! A REST response body, as every type the gatherer reads one into (markets, trades, events,
//! series, order books, errors, exchange status), then what it does with a trade (the fixed-
//! point values and the row `TradeRow::from_rest` makes) and an order book's levels.
#![no_main]

use gatherer::store::rows::TradeRow;
use kalshi_shared::wire::rest as r;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = serde_json::from_slice::<r::GetTradesResponse>(data) {
        for trade in &t.trades {
            let _ = trade.created_ms();
            let _ = trade.taker_outcome();
            let row = TradeRow::from_rest(trade, 0);
            if let (Ok(y), Ok(n), Ok(c), Some(row)) = (
                trade.yes_price_value(),
                trade.no_price_value(),
                trade.count_value(),
                row,
            ) {
                assert_eq!(
                    (row.yes_price, row.no_price, row.count),
                    (y.raw(), n.raw(), c.raw())
                );
            }
        }
    }
    if let Ok(b) = serde_json::from_slice::<r::GetMarketOrderbookResponse>(data) {
        for side in [b.orderbook_fp.yes_dollars, b.orderbook_fp.no_dollars]
            .into_iter()
            .flatten()
        {
            for l in side {
                let _ = (l.price.price().raw(), l.count.raw());
            }
        }
    }
    let _ = serde_json::from_slice::<r::GetMarketsResponse>(data);
    let _ = serde_json::from_slice::<r::GetMarketResponse>(data);
    let _ = serde_json::from_slice::<r::GetEventsResponse>(data);
    let _ = serde_json::from_slice::<r::GetEventResponse>(data);
    let _ = serde_json::from_slice::<r::GetSeriesListResponse>(data);
    let _ = serde_json::from_slice::<r::GetSeriesResponse>(data);
    let _ = serde_json::from_slice::<r::GetMarketOrderbooksResponse>(data);
    let _ = serde_json::from_slice::<r::ErrorResponse>(data);
    let _ = serde_json::from_slice::<r::ExchangeStatus>(data);
});
