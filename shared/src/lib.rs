//! Code shared by the kalshi-data crates: Kalshi's wire formats and request signing,
//! fixed-point money, timestamps, retries, telemetry, config loading and PostgreSQL helpers.
//!
//! What belongs here is what two or more crates use; it must never hold a helper that only one
//! crate uses (that stays where it is used).

#![forbid(unsafe_code)]

pub mod auth;
pub mod build;
pub mod config;
pub mod failpoint;
pub mod fixed;
pub mod http_server;
pub mod identity;
pub mod pg;
pub mod rate;
pub mod retry;
pub mod runtime;
pub mod service;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod wire;
pub mod x509;

pub use fixed::{FixedError, Price, Quantity};

/// A value no other call of any process is likely to return (the standard library's random
/// hash keys, the time and the pid): names that must not repeat, never a secret's only source.
pub fn nonce() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}
