//! The gRPC contract between gatherers and the deduplicator
//! (`kalshi/gatherer/v1/gatherer.proto`), generated at build time without a system `protoc`.
//! Services depend on the re-exports here, not on generated module paths.

#![allow(clippy::derive_partial_eq_without_eq)]

pub mod gatherer {
    pub mod v1 {
        tonic::include_proto!("kalshi.gatherer.v1");
    }
}

pub use gatherer::v1::gatherer_client::GathererClient;
pub use gatherer::v1::gatherer_server::{Gatherer, GathererServer};
