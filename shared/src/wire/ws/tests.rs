use super::*;
use crate::fixed::{Price, Quantity};
use crate::wire::Side;

#[test]
fn parses_documented_examples() {
    let f = parse_frame(
        r#"{"type":"orderbook_snapshot","sid":2,"seq":2,"msg":{
        "market_ticker":"FED-23DEC-T3.00","market_id":"9b0f6b43-5b68-4f9f-9f02-9a2d1b8ac1a1",
        "yes_dollars_fp":[["0.0800","300.00"],["0.2200","333.00"]],
        "no_dollars_fp":[["0.5400","20.00"],["0.5600","146.00"]]}}"#,
    )
    .unwrap();
    assert_eq!((f.sid, f.seq), (Some(2), Some(2)));
    let FrameBody::OrderbookSnapshot(s) = f.body else {
        panic!("not a snapshot")
    };
    assert_eq!(
        s.levels(Side::Yes).unwrap(),
        vec![
            (Price::from_raw(80_000), Quantity::from_raw(30_000)),
            (Price::from_raw(220_000), Quantity::from_raw(33_300))
        ]
    );

    let f = parse_frame(
        r#"{"type":"orderbook_delta","sid":2,"seq":3,"msg":{
        "market_ticker":"FED-23DEC-T3.00","market_id":"9b0f6b43-x",
        "price_dollars":"0.960","delta_fp":"-54.00","side":"yes",
        "ts":"2022-11-22T20:44:01Z","ts_ms":1669149841000}}"#,
    )
    .unwrap();
    let FrameBody::OrderbookDelta(d) = &f.body else {
        panic!("not a delta")
    };
    assert_eq!(d.price_value().unwrap().raw(), 960_000);
    assert_eq!(d.delta_value().unwrap().raw(), -5_400);
    assert_eq!(d.ts_ms_value(), Some(1_669_149_841_000));

    let f = parse_frame(
        r#"{"type":"trade","sid":11,"msg":{"trade_id":"d91bc706-ee49-470d-82d8-11418bda6fed",
        "market_ticker":"HIGHNY-22DEC23-B53.5","yes_price_dollars":"0.360","no_price_dollars":"0.640",
        "count_fp":"136.00","taker_side":"no","taker_outcome_side":"no","taker_book_side":"ask",
        "is_block_trade":false,"ts":1669149841,"ts_ms":1669149841000}}"#,
    )
    .unwrap();
    let FrameBody::Trade(t) = &f.body else {
        panic!("not a trade")
    };
    assert_eq!(t.count_value().unwrap().raw(), 13_600);
    assert_eq!(t.taker_outcome(), Some(Side::No));
    assert_eq!(f.seq, None);

    let f = parse_frame(
        r#"{"type":"ticker","sending_ts_ms":1669149841123,"sid":11,"msg":{
        "market_id":"9b0f6b43","market_ticker":"FED-23DEC-T3.00",
        "price_dollars":"0.4800","yes_bid_dollars":"0.4500","yes_ask_dollars":"0.5300",
        "volume_fp":"33896.00","open_interest_fp":"20422.00","dollar_volume":16948,"dollar_open_interest":10211,
        "yes_bid_size_fp":"300.00","yes_ask_size_fp":"150.00","last_trade_size_fp":"25.00",
        "ts":1669149841,"ts_ms":1669149841000,"time":"2022-11-22T20:44:01Z"}}"#,
    )
    .unwrap();
    assert_eq!(f.sending_ts_ms, Some(1_669_149_841_123));
    assert!(matches!(f.body, FrameBody::Ticker(_)));

    let f = parse_frame(
        r#"{"type":"market_lifecycle_v2","sid":13,"msg":{"market_ticker":"INXD-23SEP14-B4487","event_type":"created",
         "open_ts":1694635200,"close_ts":1694721600,
         "additional_metadata":{"name":"S&P","title":"t","yes_sub_title":"y","no_sub_title":"n",
          "rules_primary":"r","rules_secondary":"","can_close_early":true,"event_ticker":"INXD-23SEP14",
          "expected_expiration_ts":1694721600,"strike_type":"greater","floor_strike":4487}}}"#,
    )
    .unwrap();
    let FrameBody::MarketLifecycle(l) = &f.body else {
        panic!("not lifecycle")
    };
    assert_eq!(
        l.additional_metadata
            .as_ref()
            .unwrap()
            .floor_strike
            .as_ref()
            .unwrap()
            .as_str(),
        "4487"
    );

    let f = parse_frame(
        r#"{"type":"event_lifecycle","sid":5,"msg":{"event_ticker":"KXQ-26JAN25H2150",
         "title":"t","sub_title":"Jan 25","collateral_return_type":"MECNET","series_ticker":"KXQ"}}"#,
    )
    .unwrap();
    let FrameBody::EventLifecycle(e) = &f.body else {
        panic!("not event lifecycle")
    };
    assert_eq!(e.subtitle, "Jan 25");
}

#[test]
fn parses_responses() {
    let f =
        parse_frame(r#"{"id":1,"type":"subscribed","msg":{"channel":"orderbook_delta","sid":1}}"#)
            .unwrap();
    assert_eq!(f.id, Some(1));
    assert!(matches!(
        f.body,
        FrameBody::Subscribed(SubscribedMsg { sid: 1, .. })
    ));
    let f = parse_frame(r#"{"id":102,"sid":2,"seq":7,"type":"unsubscribed"}"#).unwrap();
    assert_eq!(
        (f.sid, f.seq, f.body),
        (Some(2), Some(7), FrameBody::Unsubscribed)
    );
    let f = parse_frame(
        r#"{"id":123,"sid":456,"seq":222,"type":"ok","msg":{"market_tickers":["M-1","M-2"]}}"#,
    )
    .unwrap();
    assert_eq!(f.seq, Some(222));
    assert!(
        matches!(f.body, FrameBody::Ok(OkMsg { market_tickers: Some(ref t), .. }) if t.len() == 2)
    );
    let f = parse_frame(
        r#"{"id":3,"type":"ok","msg":[{"channel":"orderbook_delta","sid":1},{"channel":"ticker","sid":2}]}"#,
    )
    .unwrap();
    assert!(matches!(f.body, FrameBody::SubscriptionList(ref l) if l.len() == 2));
    let f = parse_frame(
        r#"{"id":127,"type":"error","msg":{"code":16,"msg":"Market not found","market_ticker":"X"}}"#,
    )
    .unwrap();
    assert!(matches!(
        f.body,
        FrameBody::Error(ErrorMsg { code: 16, .. })
    ));
    let f = parse_frame(r#"{"id":0,"type":"error","msg":{"code":1,"msg":"x"}}"#).unwrap();
    assert_eq!(f.id, None, "id 0 means absent");
}

#[test]
fn legacy_fields_are_used_when_newer_ones_are_absent() {
    let f = parse_frame(
        r#"{"type":"orderbook_delta","sid":2,"seq":3,"msg":{"market_ticker":"M","market_id":"x",
        "price":96,"delta":-54,"side":"no","ts":"2022-11-22T20:44:01.5Z"}}"#,
    )
    .unwrap();
    let FrameBody::OrderbookDelta(d) = f.body else {
        panic!()
    };
    assert_eq!(d.price_value().unwrap().raw(), 960_000);
    assert_eq!(d.delta_value().unwrap().raw(), -5_400);
    assert_eq!(d.ts_ms_value(), Some(1_669_149_841_500));
    let f = parse_frame(
        r#"{"type":"orderbook_snapshot","sid":2,"seq":2,"msg":{"market_ticker":"M","market_id":"x",
        "yes":[[8,300]],"no":[[54,20]]}}"#,
    )
    .unwrap();
    let FrameBody::OrderbookSnapshot(s) = f.body else {
        panic!()
    };
    assert_eq!(
        s.levels(Side::No).unwrap(),
        vec![(Price::from_raw(540_000), Quantity::from_raw(2_000))]
    );
    let f = parse_frame(
        r#"{"type":"trade","sid":1,"msg":{"trade_id":"t","market_ticker":"M","yes_price":36,"no_price":64,"count":136,"taker_side":"no","ts":1669149841}}"#,
    )
    .unwrap();
    let FrameBody::Trade(t) = f.body else {
        panic!()
    };
    assert_eq!(t.yes_price_value().unwrap().raw(), 360_000);
    assert_eq!(t.ts_ms_value(), Some(1_669_149_841_000));
    // Missing both forms is a clear error, not a default.
    let f = parse_frame(
        r#"{"type":"orderbook_delta","sid":2,"seq":3,"msg":{"market_ticker":"M","side":"no"}}"#,
    )
    .unwrap();
    let FrameBody::OrderbookDelta(d) = f.body else {
        panic!()
    };
    assert_eq!(
        d.price_value(),
        Err(WireError::Missing {
            field: "price_dollars"
        })
    );
}

#[test]
fn bad_frames_are_classified() {
    assert_eq!(parse_frame("not json").unwrap_err().label(), "malformed");
    assert_eq!(parse_frame("[1,2]").unwrap_err().label(), "malformed");
    assert_eq!(
        parse_frame(r#"{"sid":1}"#).unwrap_err(),
        FrameError::MissingType
    );
    let e = parse_frame(r#"{"type":"orderbook_delta","sid":1,"seq":1,"msg":{"side":"up"}}"#)
        .unwrap_err();
    assert_eq!(e.label(), "orderbook_delta");
    let e = parse_frame(r#"{"type":"trade","sid":1}"#).unwrap_err();
    assert!(matches!(e, FrameError::MissingMsg { .. }));
    // An unknown type parses (with its envelope, so seq can still be checked).
    let f = parse_frame(r#"{"type":"cfbenchmarks_value","sid":4,"seq":9,"msg":{}}"#).unwrap();
    assert_eq!(f.seq, Some(9));
    assert_eq!(f.body, FrameBody::Unknown("cfbenchmarks_value".into()));
    // Unknown fields are ignored.
    let f = parse_frame(
        r#"{"type":"trade","sid":1,"new_field":[1],"msg":{"trade_id":"t","market_ticker":"M","yes_price_dollars":"0.5","no_price_dollars":"0.5","count_fp":"1.00","ts_ms":1,"surprise":{"a":1}}}"#,
    )
    .unwrap();
    assert!(matches!(f.body, FrameBody::Trade(_)));
}

#[test]
fn encodes_frames_in_kalshi_key_order() {
    assert_eq!(
        encode_frame("orderbook_delta", None, Some(2), Some(3), None, Some("{}")),
        r#"{"type":"orderbook_delta","sid":2,"seq":3,"msg":{}}"#
    );
    assert_eq!(
        encode_frame("unsubscribed", Some(102), Some(2), Some(7), None, None),
        r#"{"id":102,"type":"unsubscribed","sid":2,"seq":7}"#
    );
    assert_eq!(
        encode_frame("ticker", None, Some(11), None, Some(5), Some("{}")),
        r#"{"type":"ticker","sid":11,"sending_ts_ms":5,"msg":{}}"#
    );
}

#[test]
fn commands_serialize_as_documented() {
    let s = command::subscribe(
        2,
        SubscribeParams {
            channels: Some(vec!["orderbook_delta".into(), "ticker".into()]),
            market_tickers: Some(vec!["FED-23DEC-T3.00".into()]),
            use_yes_price: Some(false),
            ..Default::default()
        },
    );
    assert_eq!(
        s,
        r#"{"id":2,"cmd":"subscribe","params":{"channels":["orderbook_delta","ticker"],"market_tickers":["FED-23DEC-T3.00"],"use_yes_price":false}}"#
    );
    assert_eq!(
        command::update_subscription(127, 456, action::GET_SNAPSHOT, vec!["M-1".into()]),
        r#"{"id":127,"cmd":"update_subscription","params":{"sid":456,"market_tickers":["M-1"],"action":"get_snapshot"}}"#
    );
    assert_eq!(
        command::list_subscriptions(3),
        r#"{"id":3,"cmd":"list_subscriptions"}"#
    );
    assert_eq!(
        command::unsubscribe(124, vec![1, 2]),
        r#"{"id":124,"cmd":"unsubscribe","params":{"sids":[1,2]}}"#
    );
}

/// An error message longer than the 200 bytes kept, cut inside a multi-byte character: the
/// cut must fall on a character boundary (String::truncate panics otherwise).
#[test]
fn long_errors_are_cut_on_a_character_boundary() {
    for pad in 0..4 {
        let junk = format!("{}{}", "a".repeat(pad), "é".repeat(300));
        let frame = format!(
            "{{\"type\":\"trade\",\"sid\":1,\"seq\":1,\"msg\":{{\"trade_id\":7,\"market_ticker\":\"{junk}\"}}}}"
        );
        let e = parse_frame(&frame).unwrap_err();
        assert!(e.to_string().len() < 400, "{e}");
        let malformed = format!("{{\"type\": \"{junk}");
        let e = parse_frame(&malformed).unwrap_err();
        assert!(e.to_string().len() < 400, "{e}");
        let e = parse_frame(&format!("{{\"type\":{junk}")).unwrap_err();
        assert_eq!(e.label(), "malformed");
        // An enum's unknown variant is quoted whole in serde's message.
        let side = format!(
            "{{\"type\":\"orderbook_delta\",\"sid\":1,\"seq\":1,\"msg\":{{\"market_ticker\":\"M\",\"price_dollars\":\"0.5\",\"delta_fp\":\"1.00\",\"side\":\"{junk}\"}}}}"
        );
        let e = parse_frame(&side).unwrap_err();
        assert!(e.to_string().len() < 400, "{e}");
    }
}
