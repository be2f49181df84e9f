//! Retention: production's monthly partitions older than `archive.retention` are dropped, but
//! only when every row in them is in the archive, verified.
//!
//! A partition may go when (1) every archive period of its month up to the newest row is
//! archived, not touched since (no late data waiting) and verified; (2) its row count equals
//! the sum of its stream's rows in those periods' manifests (so no row is outside the
//! archive, whatever wrote it); and (3) a HEAD of each of those files, just before the drop,
//! finds it in S3 with its size and checksum. Periods of a dropped month are marked retired:
//! late data for one is first restored from S3 into production and then re-archived, so a new
//! version never loses the rows production no longer holds. Rows in the `DEFAULT` partition
//! are never dropped.
//!
//! It must never drop a partition holding a row that is not in a verified archive file.

use sqlx::Row as _;

use super::manifest::Manifest;
use super::{ArchiveError, Archiver};
use crate::metrics as m;

/// A monthly partition of a stream table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub table: String,
    pub name: String,
    pub month: (i32, u8),
    pub from_ms: i64,
    pub to_ms: i64,
}

/// Unix ms of the first instant of a month (UTC).
pub fn partitions_month_start(month: (i32, u8)) -> i64 {
    month_start_ms(month)
}

fn month_start_ms((y, m): (i32, u8)) -> i64 {
    let d = time::Date::from_calendar_date(
        y,
        time::Month::try_from(m).unwrap_or(time::Month::January),
        1,
    )
    .unwrap_or(time::Date::MIN);
    d.midnight().assume_utc().unix_timestamp() * 1000
}

/// Every `<table>_pYYYYMM` partition of the partitioned stream tables.
pub async fn partitions(a: &Archiver) -> Result<Vec<Partition>, ArchiveError> {
    let rows = sqlx::query(
        "SELECT p.relname::text, c.relname::text FROM pg_inherits i \
         JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent \
         WHERE p.relname = ANY($1) ORDER BY 2",
    )
    .bind(crate::schema::PARTITIONED)
    .fetch_all(&a.prod.pool())
    .await?;
    let mut out = Vec::new();
    for r in rows {
        let (table, name): (String, String) = (r.try_get(0)?, r.try_get(1)?);
        let Some(stamp) = name.strip_prefix(&format!("{table}_p")) else {
            continue;
        };
        let (Ok(y), Ok(mo)) = (
            stamp.get(0..4).unwrap_or("").parse::<i32>(),
            stamp.get(4..6).unwrap_or("").parse::<u8>(),
        ) else {
            continue;
        };
        if stamp.len() != 6 || !(1..=12).contains(&mo) {
            continue;
        }
        out.push(Partition {
            table,
            name,
            month: (y, mo),
            from_ms: month_start_ms((y, mo)),
            to_ms: month_start_ms(crate::schema::next_month((y, mo))),
        });
    }
    Ok(out)
}

/// Why a partition is kept, or None when it may be dropped.
pub async fn blocker(a: &Archiver, p: &Partition) -> Result<Option<String>, ArchiveError> {
    let pool = a.prod.pool();
    let periods = sqlx::query(
        "SELECT p.period_start_ms, p.manifest, p.verified_at IS NOT NULL, \
           coalesce((SELECT sum(touches) FROM archive_touch t WHERE t.period_start_ms = p.period_start_ms), 0) > p.touches \
         FROM archive_periods p WHERE p.period_start_ms >= $1 AND p.period_start_ms < $2 ORDER BY 1",
    )
    .bind(p.from_ms)
    .bind(p.to_ms)
    .fetch_all(&pool)
    .await?;
    let mut archived: i64 = 0;
    let mut manifests = Vec::with_capacity(periods.len());
    for r in &periods {
        let start: i64 = r.try_get(0)?;
        let man: sqlx::types::Json<Manifest> = r.try_get(1)?;
        let (verified, late): (bool, bool) = (r.try_get(2)?, r.try_get(3)?);
        let when = kalshi_shared::time::format_rfc3339_ms(start);
        if late {
            return Ok(Some(format!(
                "period {when} has late data not yet archived"
            )));
        }
        if !verified {
            return Ok(Some(format!("period {when} is not verified")));
        }
        archived += man.0.stream(&p.table).map_or(0, |s| s.rows) as i64;
        manifests.push(man.0);
    }
    // Last, as the costliest: it reads the whole partition.
    let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {}",
        p.name
    )))
    .fetch_one(&pool)
    .await?;
    if rows != archived {
        return Ok(Some(format!(
            "it holds {rows} rows, the archive's periods of its month {archived}"
        )));
    }
    // Still in S3, as recorded, right now.
    for man in &manifests {
        if !a.quick_verify(man).await? {
            return Ok(Some(format!(
                "a file of period {} is not in S3 as recorded",
                man.period.start
            )));
        }
    }
    Ok(None)
}

/// Drops the partitions older than the retention that the archive fully holds. Returns the
/// dropped partitions' names.
pub async fn run(a: &Archiver, now_ms: i64) -> Result<Vec<String>, ArchiveError> {
    let keep = a.cfg.section.retention;
    if keep.is_zero() {
        return Ok(Vec::new());
    }
    let cutoff = now_ms - keep.as_millis() as i64;
    let mut dropped = Vec::new();
    for p in partitions(a).await? {
        if p.to_ms > cutoff {
            continue;
        }
        match blocker(a, &p).await? {
            Some(why) => {
                tracing::warn!(partition = %p.name, reason = %why, "retention keeps a partition older than archive.retention");
            }
            None => {
                let mut tx = a.prod.pool().begin().await?;
                sqlx::query(
                    "UPDATE archive_periods SET retired_at = now() WHERE period_start_ms >= $1 AND period_start_ms < $2",
                )
                .bind(p.from_ms)
                .bind(p.to_ms)
                .execute(&mut *tx)
                .await?;
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP TABLE {}", p.name)))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                metrics::counter!(m::ARCHIVE_PARTITIONS_DROPPED, "table" => p.table.clone())
                    .increment(1);
                tracing::info!(partition = %p.name, "retention dropped a partition: every row is in the verified archive");
                dropped.push(p.name);
            }
        }
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    #[test]
    fn month_bounds() {
        assert_eq!(super::month_start_ms((2026, 11)), 1_793_491_200_000);
    }
}
