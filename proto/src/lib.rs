//! The gRPC contract between gatherers and the deduplicator
//! (`kalshi/gatherer/v1/gatherer.proto`), generated at build time without a system `protoc`.
//! Services depend on the re-exports here, not on generated module paths.
//!
//! The contract must never change incompatibly: fields are only added, under new numbers.

#![forbid(unsafe_code)]
#![allow(clippy::derive_partial_eq_without_eq)]

pub mod gatherer {
    pub mod v1 {
        tonic::include_proto!("kalshi.gatherer.v1");
    }
}

pub use gatherer::v1::gatherer_client::GathererClient;
pub use gatherer::v1::gatherer_server::{Gatherer, GathererServer};

/// Metadata of an `OUT_OF_RANGE` reply (a retention overrun): the exchange times, in Unix
/// milliseconds, that the dropped records lie in.
pub const DROPPED_FROM_MS: &str = "x-dropped-from-ms";
pub const DROPPED_TO_MS: &str = "x-dropped-to-ms";

/// The record streams, one table each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stream {
    Trades,
    OrderbookDeltas,
    OrderbookSnapshots,
    Tickers,
    Lifecycle,
    Markets,
    Events,
    Series,
    Gaps,
    /// WebSocket messages of types this build does not model, kept as sent.
    UnknownMessages,
    /// The exchange's status and schedule: versions of two objects (`status`, `schedule`).
    Exchange,
}

impl Stream {
    pub const ALL: [Stream; 11] = [
        Stream::Trades,
        Stream::OrderbookDeltas,
        Stream::OrderbookSnapshots,
        Stream::Tickers,
        Stream::Lifecycle,
        Stream::Markets,
        Stream::Events,
        Stream::Series,
        Stream::Gaps,
        Stream::UnknownMessages,
        Stream::Exchange,
    ];

    /// The table name, also the stream's label in metrics and gap records.
    pub fn table(self) -> &'static str {
        match self {
            Stream::Trades => "trades",
            Stream::OrderbookDeltas => "orderbook_deltas",
            Stream::OrderbookSnapshots => "orderbook_snapshots",
            Stream::Tickers => "tickers",
            Stream::Lifecycle => "lifecycle",
            Stream::Markets => "markets",
            Stream::Events => "events",
            Stream::Series => "series",
            Stream::Gaps => "gaps",
            Stream::UnknownMessages => "unknown_messages",
            Stream::Exchange => "exchange",
        }
    }

    pub fn from_table(name: &str) -> Option<Stream> {
        Stream::ALL.into_iter().find(|s| s.table() == name)
    }

    pub fn to_pb(self) -> gatherer::v1::Stream {
        match self {
            Stream::Trades => gatherer::v1::Stream::Trades,
            Stream::OrderbookDeltas => gatherer::v1::Stream::OrderbookDeltas,
            Stream::OrderbookSnapshots => gatherer::v1::Stream::OrderbookSnapshots,
            Stream::Tickers => gatherer::v1::Stream::Tickers,
            Stream::Lifecycle => gatherer::v1::Stream::Lifecycle,
            Stream::Markets => gatherer::v1::Stream::Markets,
            Stream::Events => gatherer::v1::Stream::Events,
            Stream::Series => gatherer::v1::Stream::Series,
            Stream::Gaps => gatherer::v1::Stream::Gaps,
            Stream::UnknownMessages => gatherer::v1::Stream::UnknownMessages,
            Stream::Exchange => gatherer::v1::Stream::Exchange,
        }
    }

    pub fn from_pb(v: i32) -> Option<Stream> {
        Stream::ALL.into_iter().find(|s| s.to_pb() as i32 == v)
    }

    /// Position in [`Stream::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Markets, events and series: versions of one object per ticker, the newest wins.
    pub fn is_registry(self) -> bool {
        matches!(self, Stream::Markets | Stream::Events | Stream::Series)
    }

    /// The `RegistryVersion.kind` of a stream of versions: the registry's
    /// (`registry_versions.kind`) and the exchange's.
    pub fn registry_kind(self) -> Option<&'static str> {
        match self {
            Stream::Markets => Some("market"),
            Stream::Events => Some("event"),
            Stream::Series => Some("series"),
            Stream::Exchange => Some("exchange"),
            _ => None,
        }
    }
}
