//! What the deduplicator accepts from a gatherer over gRPC: a `ReadResponse` page (every
//! record validated per stream, keyed, summarised and encoded for production's COPY as the
//! sink does) and a `StatusResponse`. A record that passes validation encodes to exactly one
//! row; nothing panics.
#![no_main]

use deduplicator::records::{self as rec, Stream};
use kalshi_proto::gatherer::v1 as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message as _;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    if which & 1 == 1 {
        if let Ok(s) = pb::StatusResponse::decode(bytes) {
            let _ = format!("{s:?}");
        }
        return;
    }
    let Ok(page) = pb::ReadResponse::decode(bytes) else {
        return;
    };
    let src = rec::Source {
        gatherer_id: "g1",
        instance_id: "i",
    };
    for r in &page.records {
        let _ = rec::summary(r);
        for s in Stream::ALL {
            if rec::validate(s, r).is_ok() {
                let _ = rec::key(s, &src, r);
                let _ = rec::event_ms(r);
                let mut e = rec::Encoder::new(s);
                e.push(&src, r);
                assert!(e.rows() <= 1);
                let _ = e.finish();
            }
        }
    }
});
