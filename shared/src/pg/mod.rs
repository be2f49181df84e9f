//! PostgreSQL helpers shared by the services, the stack and the tests.

pub mod cluster;

pub use cluster::{ClusterOptions, PgBinaries, PgCluster, PgError};
