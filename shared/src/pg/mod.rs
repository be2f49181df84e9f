//! PostgreSQL helpers shared by the services: binary COPY encoding and error classification.
//! The ephemeral clusters the tests and the local stack start live in `kalshi-testkit`, which
//! the services never ship.

pub mod copy;
pub mod errors;

pub use copy::CopyEncoder;
pub use errors::{DbErrorClass, classify, classify_sqlstate, sqlstate};
