//! An archive manifest (`manifests/.../manifest-*.json`) as `archive verify`, `status` and
//! `restore` read it back: parsed, its totals and per-stream lookups, its keys, its period.
//! Nothing panics or overflows, whatever numbers it holds.
#![no_main]

use deduplicator::archive::{format, manifest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = serde_json::from_slice::<manifest::Manifest>(data) else {
        return;
    };
    let _ = m.total_rows();
    assert!(m.same_content(&m));
    for s in format::ARCHIVED {
        if let Some(e) = m.stream(s.table()) {
            let _ = manifest::data_key(s.table(), m.period.start_ms);
            let _ = (e.rows, e.bytes, e.min_time_ms, e.max_time_ms);
        }
    }
    let _ = manifest::manifest_key(m.period.start_ms);
    let _ = manifest::period(
        m.period.start_ms,
        m.period.end_ms.wrapping_sub(m.period.start_ms),
    );
    let _ = serde_json::to_vec(&m);
});
