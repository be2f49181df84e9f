//! Coverage in production: loads the merged gaps and hands them to the interval arithmetic
//! in `kalshi_shared::identity::coverage` (windows that no configured gatherer captured).
//! These are reported, never hidden.
//!
//! It must never decide coverage itself (one rule, in `kalshi_shared`).

use sqlx::Row as _;

pub use kalshi_shared::identity::coverage::{GapRow, Uncovered, totals, uncovered};

use crate::db::{DbError, Prod};

/// The gaps overlapping `[from_ms, to_ms]` from production.
pub async fn load(prod: &Prod, from_ms: i64, to_ms: i64) -> Result<Vec<GapRow>, DbError> {
    let pool = prod.pool();
    let q = sqlx::query(GAPS_SQL)
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(&pool);
    let rows = match kalshi_shared::pg::timed("read_gaps", prod.op_timeout(), q).await {
        Ok(r) => r?,
        Err(_) => return Err(DbError::timeout("reading gaps", prod.op_timeout())),
    };
    decode(&rows).map_err(DbError::from)
}

/// The query `load` runs (and the archiver, in its snapshot): gaps overlapping `[$1, $2]`.
pub const GAPS_SQL: &str = "SELECT gatherer_id, stream, market_ticker, from_ms, to_ms, reason FROM gaps WHERE from_ms <= $2 AND to_ms >= $1";

/// Rows of `GAPS_SQL` as gaps.
pub fn decode(rows: &[sqlx::postgres::PgRow]) -> Result<Vec<GapRow>, sqlx::Error> {
    rows.iter()
        .map(|r| {
            Ok(GapRow {
                gatherer_id: r.try_get(0)?,
                stream: r.try_get(1)?,
                market: r.try_get(2)?,
                from_ms: r.try_get(3)?,
                to_ms: r.try_get(4)?,
                reason: r.try_get(5)?,
            })
        })
        .collect()
}
