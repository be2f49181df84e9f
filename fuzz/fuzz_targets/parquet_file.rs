//! An archive Parquet file as `archive verify` and `archive restore` read it back
//! (`file::read_groups` of a stream at a schema version, the first byte picking both), and
//! every row it yields encoded for production's COPY as the restore does. A damaged file is
//! an error naming it, never a panic or an unbounded allocation.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use deduplicator::archive::{file, format};
use deduplicator::records::ProdTable as _;
use libfuzzer_sys::fuzz_target;

fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!(
            "kalshi-fuzz-parquet-{}.parquet",
            std::process::id()
        ))
    })
}

/// `read_groups` turns the parquet crate's panics on damaged metadata into errors
/// (`catch_unwind`); libFuzzer's hook would abort on them even so: a quiet hook instead. A
/// panic that escapes still aborts (libfuzzer-sys's own `catch_unwind`).
fn quiet_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::panic::set_hook(Box::new(|_| {})));
}

fuzz_target!(|data: &[u8]| {
    quiet_panics();
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let stream = format::ARCHIVED[usize::from(which & 0x0f) % format::ARCHIVED.len()];
    let version = u32::from(which >> 4) % format::SCHEMA_VERSION + 1;
    let path = scratch();
    if std::fs::write(path, bytes).is_err() {
        return;
    }
    let _ = file::read_groups(stream, version, path, |rows| {
        let mut enc = kalshi_shared::pg::CopyEncoder::new(stream.fields());
        for row in &rows {
            format::encode_copy(stream, row, &mut enc);
            let _ = format::row_time(stream, row);
        }
        let _ = enc.finish();
        Ok(())
    });
});
