//! Code shared by the kalshi-data crates: Kalshi's wire formats and request signing,
//! fixed-point money, timestamps, retries, telemetry, config loading and PostgreSQL helpers.
//!
//! What belongs here is what two or more crates use; it must never hold a helper that only one
//! crate uses (that stays where it is used).

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
pub mod service;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod wire;

pub use fixed::{FixedError, Price, Quantity};
