//! A WebSocket text frame from the exchange, through what the gatherer does with it: the
//! envelope and typed body (`parse_frame_raw`), every fixed-point value it extracts (prices,
//! sizes, book levels, timestamps), the raw `msg` kept as sent, and the market an unknown
//! frame is filed under. Any panic is a crash; errors are fine but must have a bounded label.
#![no_main]

use kalshi_shared::wire::Side;
use kalshi_shared::wire::ws::{self, FrameBody};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The socket delivers text frames as UTF-8; a binary frame is rejected before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = ws::raw_msg(text);
    let _ = gatherer::connections::unknown::market_of(text);
    match ws::parse_frame_raw(text) {
        Err(e) => {
            let label = e.label();
            assert!(!label.is_empty() && label.len() < 32);
            let _ = e.to_string();
        }
        Ok((frame, raw)) => {
            if let Some(raw) = raw {
                // The kept `msg` is a slice of the frame, exactly as sent.
                assert!(text.contains(raw));
            }
            match &frame.body {
                FrameBody::OrderbookSnapshot(s) => {
                    let _ = s.levels(Side::Yes);
                    let _ = s.levels(Side::No);
                }
                FrameBody::OrderbookDelta(d) => {
                    let _ = d.price_value();
                    let _ = d.delta_value();
                    let _ = d.ts_ms_value();
                }
                FrameBody::Trade(t) => {
                    let _ = t.yes_price_value();
                    let _ = t.no_price_value();
                    let _ = t.count_value();
                    let _ = t.taker_outcome();
                    let _ = t.ts_ms_value();
                }
                FrameBody::Ticker(t) => {
                    let _ = t.values();
                    let _ = t.ts_ms_value();
                    if let Some(raw) = raw {
                        let _ = ws::TickerValues::of(raw);
                    }
                }
                FrameBody::Error(e) => {
                    let _ = ws::error_code::message(e.code);
                    let _ = ws::error_code::requires_resubscribe(e.code);
                }
                _ => {}
            }
            let _ = format!("{frame:?}");
        }
    }
});
