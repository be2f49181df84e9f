//! Binary COPY encoding of valid records into a stream's staging table.
//!
//! It must never encode a price or a quantity other than as the fixed-point integer it
//! received.

use super::*;

/// Encodes valid records of one stream for `COPY stage FROM STDIN (FORMAT binary)`.
pub struct Encoder {
    stream: Stream,
    copy: CopyEncoder,
}

impl Encoder {
    pub fn new(stream: Stream) -> Self {
        Encoder {
            stream,
            copy: CopyEncoder::new(stream.fields()),
        }
    }

    pub fn rows(&self) -> usize {
        self.copy.rows()
    }

    pub fn finish(self) -> bytes::Bytes {
        self.copy.finish()
    }

    /// Appends one record (already validated for this stream; anything else is skipped).
    pub fn push(&mut self, src: &Source<'_>, r: &pb::Record) {
        use pb::record::Body;
        let c = &mut self.copy;
        match (self.stream, r.body.as_ref()) {
            (Stream::Trades, Some(Body::Trade(t))) => {
                c.row()
                    .text(&t.trade_id)
                    .timestamptz_ms(t.ts_ms)
                    .text(&t.market_ticker);
                c.i64(t.yes_price_micros)
                    .i64(t.no_price_micros)
                    .i64(t.count_centi);
                c.i16(side(t.taker_outcome_side).unwrap_or(0))
                    .text(&t.taker_book_side);
                c.bool(t.is_block_trade)
                    .i64(t.ts_ms)
                    .text(&t.source)
                    .text(src.gatherer_id);
                c.i64(received(t.origin.as_ref()));
            }
            (Stream::OrderbookDeltas, Some(Body::Delta(d))) => {
                let (ts, gk) = if d.ts_ms == 0 {
                    (
                        received(d.origin.as_ref()),
                        gatherer_key(src, d.origin.as_ref()),
                    )
                } else {
                    (d.ts_ms, String::new())
                };
                c.row()
                    .text(&d.market_ticker)
                    .timestamptz_ms(ts)
                    .i64(d.ts_ms);
                c.i16(side(d.side).unwrap_or(0))
                    .i64(d.price_micros)
                    .i64(d.delta_centi);
                c.i64(i64::from(d.occurrence))
                    .text(&gk)
                    .text(src.gatherer_id);
                c.i64(received(d.origin.as_ref()));
            }
            (Stream::OrderbookSnapshots, Some(Body::Snapshot(s))) => {
                let o = s.origin.unwrap_or_default();
                // Readers take the latest snapshot at or before a time by `ts`: the time from
                // which the stored book is the exchange's (its splice point, or its receipt).
                let ts = if s.as_of_ms != 0 {
                    s.as_of_ms
                } else {
                    o.received_ms
                };
                c.row()
                    .text(&s.market_ticker)
                    .timestamptz_ms(ts)
                    .text(src.gatherer_id);
                c.text(&s.source)
                    .i64(o.conn_epoch)
                    .i64(o.sid as i64)
                    .i64(o.seq as i64);
                c.i64(o.received_ms)
                    .jsonb(&levels_json(&s.yes))
                    .jsonb(&levels_json(&s.no));
                c.opt_i64((s.last_delta_ts_ms != 0).then_some(s.last_delta_ts_ms));
            }
            (Stream::Tickers, Some(Body::Ticker(t))) => {
                let (ts, gk) = if t.ts_ms == 0 {
                    (
                        received(t.origin.as_ref()),
                        gatherer_key(src, t.origin.as_ref()),
                    )
                } else {
                    (t.ts_ms, String::new())
                };
                c.row()
                    .text(&t.market_ticker)
                    .timestamptz_ms(ts)
                    .i64(t.ts_ms);
                c.text(&t.content_hash)
                    .i64(i64::from(t.occurrence))
                    .text(&gk);
                c.json(&t.body_json).text(src.gatherer_id);
                c.i64(received(t.origin.as_ref()));
                let v = kalshi_shared::wire::ws::TickerValues::of(&t.body_json);
                for x in [
                    v.price,
                    v.yes_bid,
                    v.yes_ask,
                    v.yes_bid_size,
                    v.yes_ask_size,
                    v.volume,
                    v.open_interest,
                ] {
                    c.opt_i64(x);
                }
            }
            (Stream::Lifecycle, Some(Body::Lifecycle(l))) => {
                c.row()
                    .text(&l.ticker)
                    .text(&l.event_type)
                    .text(&l.content_hash)
                    .i64(i64::from(l.occurrence))
                    .text(&l.kind);
                c.json(&l.body_json)
                    .i64(received(l.origin.as_ref()))
                    .text(src.gatherer_id);
            }
            (Stream::Exchange, Some(Body::Registry(v))) => {
                // As a lifecycle message: production assigns the occurrence
                // (`sink::lifecycle`, which commits these), so none is known here.
                c.row()
                    .text(&v.ticker)
                    .text(super::exchange_endpoint(&v.ticker))
                    .text(&kalshi_shared::identity::json_hash(&v.body_json).unwrap_or_default())
                    .i64(0)
                    .text(super::EXCHANGE_SOURCE);
                c.json(&v.body_json)
                    .i64(v.observed_ms)
                    .text(src.gatherer_id);
            }
            (Stream::Markets | Stream::Events | Stream::Series, Some(Body::Registry(v))) => {
                c.row().text(&v.ticker).i64(v.updated_ms).i64(v.observed_ms);
                c.jsonb(&v.body_json).text(src.gatherer_id);
                // The gatherers' version identity: a market without its trading fields (which
                // change with every trade), an event or series whole.
                let hash = if self.stream == Stream::Markets {
                    kalshi_shared::identity::market_hash(&v.body_json)
                } else {
                    kalshi_shared::identity::json_hash(&v.body_json)
                };
                c.text(&hash.unwrap_or_default());
            }
            (Stream::Gaps, Some(Body::Gap(g))) => {
                let stream = Stream::from_pb(g.stream).map_or("unknown", Stream::table);
                c.row()
                    .text(src.gatherer_id)
                    .text(src.instance_id)
                    .i64(g.id)
                    .text(stream);
                c.text(&g.market_ticker)
                    .i64(g.from_ms)
                    .i64(g.to_ms)
                    .text(&g.reason)
                    .text(&g.detail);
            }
            _ => {}
        }
    }
}

/// `[["0.5600","12.00"],...]`-free exact form: `[[price_micros, quantity_centi], ...]`.
pub(super) fn levels_json(levels: &[pb::Level]) -> String {
    let mut s = String::with_capacity(2 + levels.len() * 24);
    s.push('[');
    for (i, l) in levels.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!("[{},{}]", l.price_micros, l.quantity_centi));
    }
    s.push(']');
    s
}
