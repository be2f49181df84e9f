//! The one shape of a database call: a deadline, the outcome classified by SQLSTATE, and
//! metrics labelled with what the call was for.
//!
//! `timed("read_page", deadline, fut)` has the result shape of `tokio::time::timeout`, and
//! records `db_operation_duration_seconds{operation}` and
//! `db_operations_total{operation, outcome}` (`ok`, `timeout`, or the error's class).
//!
//! It must never let a database call run without a deadline, or record a label that is not a
//! fixed operation name (no tickers, no SQL text).

use std::future::Future;
use std::time::{Duration, Instant};

use crate::pg::{DbErrorClass, classify};

pub const DB_OPERATION_DURATION: &str = "db_operation_duration_seconds";
pub const DB_OPERATIONS: &str = "db_operations_total";

/// An error that knows its DESIGN.md class.
pub trait Classified {
    fn class(&self) -> DbErrorClass;
}

impl Classified for sqlx::Error {
    fn class(&self) -> DbErrorClass {
        classify(self)
    }
}

/// Runs `fut` under `deadline`, recording its duration and outcome under `operation`.
pub async fn timed<T, E: Classified>(
    operation: &'static str,
    deadline: Duration,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<Result<T, E>, tokio::time::error::Elapsed> {
    let started = Instant::now();
    let r = tokio::time::timeout(deadline, fut).await;
    let outcome = match &r {
        Ok(Ok(_)) => "ok",
        Ok(Err(e)) => e.class().label(),
        Err(_) => "timeout",
    };
    metrics::histogram!(DB_OPERATION_DURATION, "operation" => operation)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!(DB_OPERATIONS, "operation" => operation, "outcome" => outcome).increment(1);
    r
}

/// Registers the descriptions (`# HELP`).
pub fn describe() {
    metrics::describe_histogram!(
        DB_OPERATION_DURATION,
        metrics::Unit::Seconds,
        "Database calls, by operation"
    );
    metrics::describe_counter!(
        DB_OPERATIONS,
        "Database calls by operation and outcome (ok, timeout, or the error class)"
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_call_past_its_deadline_is_cut_and_an_error_keeps_its_class() {
        let slow = timed("t", Duration::from_millis(10), async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, sqlx::Error>(())
        });
        assert!(slow.await.is_err());
        let failed = timed("t", Duration::from_secs(1), async {
            Err::<(), _>(sqlx::Error::PoolTimedOut)
        })
        .await
        .unwrap();
        assert_eq!(failed.unwrap_err().class(), DbErrorClass::Connection);
    }
}
