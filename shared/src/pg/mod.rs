//! PostgreSQL helpers shared by the services: binary COPY encoding, error classification and
//! migration checksums.
//! The ephemeral clusters the tests and the local stack start live in `kalshi-testkit`, which
//! the services never ship.

pub mod copy;
pub mod errors;
pub mod migrate;
pub mod op;

pub use copy::CopyEncoder;
pub use errors::{DbErrorClass, classify, classify_sqlstate, sqlstate, sqlstate_class};
pub use op::timed;
