//! Test support for kalshi-data, shared by every test suite, the benchmarks and `kalshi-stack`:
//!
//! - [`oracle`]: the one ground-truth comparison ("nothing lost, nothing duplicated, nothing
//!   hidden"); every completeness claim in the project goes through it;
//! - [`held`]: what the system holds (production, or a gatherer over gRPC), read in the
//!   oracle's terms;
//! - [`sim`]: a typed client for the simulator's control API, and its ground truth;
//! - [`pg`]: ephemeral PostgreSQL clusters; [`proxy`]: the TCP fault proxy;
//!   [`process`]: child processes tied to their parent;
//! - [`s3`]: a local S3 (moto) for the archive;
//! - [`keys`], [`certs`] (throwaway CAs), [`ports`], [`prom`] (reading metrics) and [`wait`].
//!
//! It must never take an expected value from the system under test: expected values come from
//! the simulator's truth only. The services never depend on this crate.

#![forbid(unsafe_code)]

pub mod bench;
pub mod certs;
pub mod held;
pub mod keys;
pub mod oracle;
pub mod pg;
pub mod ports;
pub mod process;
pub mod prom;
pub mod proxy;
pub mod s3;
pub mod sim;
pub mod wait;
