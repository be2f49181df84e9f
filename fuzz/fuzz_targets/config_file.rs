//! A configuration file, as `gatherer --config` and `deduplicator --config` load and validate
//! it (the first byte picks which). Loading and validation never panic; an error is one line
//! and never shows the password the seeds carry in their database URLs.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("kalshi-fuzz-config-{}.toml", std::process::id()))
    })
}

fn check(e: &kalshi_shared::config::ConfigError) {
    assert_eq!(
        e.0.lines().count(),
        1,
        "an error of more than one line: {}",
        e.0
    );
    assert!(
        !e.0.contains("hunter2secret"),
        "a password in an error: {}",
        e.0
    );
}

/// Loads a file of type `T` and validates it; every error must pass `check`.
fn load_and_validate<T>(
    path: &std::path::Path,
    validate: impl FnOnce(T) -> Result<(), kalshi_shared::config::ConfigError>,
) where
    T: serde::de::DeserializeOwned + serde::Serialize + Default,
{
    if let Err(e) =
        kalshi_shared::config::load::<T>(Some(path), "FUZZ", Vec::new()).and_then(validate)
    {
        check(&e);
    }
}

fn fuzz(path: &std::path::Path, gatherer: bool) {
    if gatherer {
        use gatherer::config::Validate as _;
        load_and_validate(path, |f: gatherer::config::FileConfig| {
            f.validate().map(drop)
        });
    } else {
        use deduplicator::config::Validate as _;
        load_and_validate(path, |f: deduplicator::config::FileConfig| {
            f.validate().map(drop)
        });
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, text)) = data.split_first() else {
        return;
    };
    let path = scratch();
    if std::fs::write(path, text).is_err() {
        return;
    }
    fuzz(path, which & 1 == 0);
});
