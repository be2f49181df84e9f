use super::*;
use pb::record::Body;

fn trade(id: &str, ts: i64) -> pb::Record {
    pb::Record {
        cursor: 1,
        body: Some(Body::Trade(pb::Trade {
            trade_id: id.into(),
            market_ticker: "M".into(),
            ts_ms: ts,
            taker_outcome_side: pb::Side::Yes as i32,
            ..Default::default()
        })),
    }
}

fn delta(ts: i64, occ: u32, seq: u64) -> pb::Record {
    pb::Record {
        cursor: 1,
        body: Some(Body::Delta(pb::OrderbookDelta {
            market_ticker: "M".into(),
            ts_ms: ts,
            side: pb::Side::No as i32,
            price_micros: 560_000,
            delta_centi: -300,
            occurrence: occ,
            origin: Some(pb::Origin {
                received_ms: 5,
                conn_epoch: 1,
                sid: 1,
                seq,
            }),
        })),
    }
}

const G1: Source<'static> = Source {
    gatherer_id: "g1",
    instance_id: "a",
};
const G2: Source<'static> = Source {
    gatherer_id: "g2",
    instance_id: "b",
};

#[test]
fn keys_match_across_gatherers_only_where_the_design_says() {
    // The same trade from two gatherers is one row; another trade id is another.
    assert_eq!(
        key(Stream::Trades, &G1, &trade("t", 9)),
        key(Stream::Trades, &G2, &trade("t", 9))
    );
    assert_ne!(
        key(Stream::Trades, &G1, &trade("t", 9)),
        key(Stream::Trades, &G1, &trade("u", 9))
    );
    // Deltas: occurrence separates identical ones; origin does not matter when ts_ms is set.
    let d = |ts, occ, seq| key(Stream::OrderbookDeltas, &G1, &delta(ts, occ, seq));
    assert_eq!(
        d(7, 0, 1),
        key(Stream::OrderbookDeltas, &G2, &delta(7, 0, 99))
    );
    assert_ne!(d(7, 0, 1), d(7, 1, 2));
    // Without ts_ms the key belongs to the gatherer and its sequence.
    assert_ne!(
        d(0, 0, 1),
        key(Stream::OrderbookDeltas, &G2, &delta(0, 0, 1))
    );
    assert_ne!(d(0, 0, 1), d(0, 0, 2));
    // Streams never share keys.
    assert_ne!(
        key(Stream::Trades, &G1, &trade("t", 9)),
        key(Stream::Gaps, &G1, &trade("t", 9))
    );
}

#[test]
fn validation_refuses_malformed_records() {
    assert!(validate(Stream::Trades, &trade("t", 9)).is_ok());
    assert_eq!(
        validate(Stream::OrderbookDeltas, &trade("t", 9))
            .unwrap_err()
            .0,
        "a trade record in the orderbook_deltas stream"
    );
    assert!(validate(Stream::Trades, &trade("", 9)).is_err());
    assert!(validate(Stream::Trades, &trade("t", 0)).is_err());
    assert!(
        validate(
            Stream::Trades,
            &pb::Record {
                cursor: 1,
                body: None
            }
        )
        .is_err()
    );
    let mut bad_side = delta(1, 0, 1);
    if let Some(Body::Delta(d)) = bad_side.body.as_mut() {
        d.side = 7;
    }
    assert!(validate(Stream::OrderbookDeltas, &bad_side).is_err());
    let ticker = pb::Record {
        cursor: 1,
        body: Some(Body::Ticker(pb::Ticker {
            market_ticker: "M".into(),
            content_hash: "h".into(),
            body_json: "{not json".into(),
            ..Default::default()
        })),
    };
    assert!(
        validate(Stream::Tickers, &ticker)
            .unwrap_err()
            .0
            .starts_with("body_json is not JSON")
    );
}

#[test]
fn every_stream_encodes_its_column_count() {
    let mut e = Encoder::new(Stream::Trades);
    e.push(&G1, &trade("t", 9));
    e.push(&G1, &delta(1, 0, 1)); // wrong stream: skipped
    assert_eq!(e.rows(), 1);
    for s in Stream::ALL {
        assert_eq!(s.fields() as usize, s.columns().split(',').count());
        assert!(s.merge_sql().contains(s.stage().as_str()));
    }
    assert_eq!(
        levels_json(&[pb::Level {
            price_micros: 1,
            quantity_centi: 2
        }]),
        "[[1,2]]"
    );
}
