//! PostgreSQL helpers shared by the services, the stack and the tests: ephemeral clusters,
//! binary COPY encoding and error classification.

pub mod cluster;
pub mod copy;
pub mod errors;

pub use cluster::{ClusterOptions, PgBinaries, PgCluster, PgError};
pub use copy::CopyEncoder;
pub use errors::{DbErrorClass, classify, classify_sqlstate, sqlstate};
