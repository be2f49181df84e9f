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
//! The checks are made twice: once to decide (counting the partition is the costliest part),
//! and again inside the drop's own transaction, after taking the partition's ACCESS EXCLUSIVE
//! lock (which waits for any transaction writing to it): late data committed between the two is
//! seen, and nothing can commit after the second. Retention also waits while a gatherer keeps a
//! stream longer than `archive.retention` (it could hand over rows of a dropped month).
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

/// Why a partition is kept, or None when it may be dropped (with S3 checked).
pub async fn blocker(a: &Archiver, p: &Partition) -> Result<Option<String>, ArchiveError> {
    let manifests = match db_check(&a.prod, &a.cfg, p).await? {
        Checked::Keep(why) => return Ok(Some(why)),
        Checked::Archived(m) => m,
    };
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

/// What production says of a partition past retention.
#[derive(Debug)]
pub enum Checked {
    /// Keep it, for this reason.
    Keep(String),
    /// Every period of it archived and verified, its rows all counted: their manifests.
    Archived(Vec<Manifest>),
}

/// The database's checks of [`blocker`] in a read-only transaction of their own, under
/// `archive.statement_timeout` (the count reads the whole partition): the reason to keep the
/// partition, or the manifests of its periods.
pub async fn db_check(
    prod: &crate::db::Prod,
    cfg: &crate::config::ArchiveConfig,
    p: &Partition,
) -> Result<Checked, ArchiveError> {
    let mut conn = prod
        .acquire()
        .await
        .map_err(|e| ArchiveError::new("database", e))?;
    sqlx::Executor::execute(&mut *conn, "BEGIN READ ONLY").await?;
    let r = async {
        sqlx::Executor::execute(
            &mut *conn,
            sqlx::AssertSqlSafe(format!(
                "SET LOCAL statement_timeout = {}",
                cfg.section.statement_timeout.as_millis()
            )),
        )
        .await?;
        db_blocker(&mut conn, p).await
    }
    .await;
    let _ = sqlx::Executor::execute(&mut *conn, "ROLLBACK").await;
    r
}

/// The database's side of [`blocker`], on `conn` (in a transaction): the reason to keep the
/// partition, or the manifests of its periods.
async fn db_blocker(conn: &mut sqlx::PgConnection, p: &Partition) -> Result<Checked, ArchiveError> {
    let periods = sqlx::query(
        "SELECT p.period_start_ms, p.manifest, p.verified_at IS NOT NULL, \
           coalesce((SELECT sum(touches) FROM archive_touch t WHERE t.period_start_ms = p.period_start_ms), 0) > p.touches \
         FROM archive_periods p WHERE p.period_start_ms >= $1 AND p.period_start_ms < $2 ORDER BY 1",
    )
    .bind(p.from_ms)
    .bind(p.to_ms)
    .fetch_all(&mut *conn)
    .await?;
    let mut archived: i64 = 0;
    let mut manifests = Vec::with_capacity(periods.len());
    for r in &periods {
        let start: i64 = r.try_get(0)?;
        let man: sqlx::types::Json<Manifest> = r.try_get(1)?;
        let (verified, late): (bool, bool) = (r.try_get(2)?, r.try_get(3)?);
        let when = kalshi_shared::time::format_rfc3339_ms(start);
        if late {
            return Ok(Checked::Keep(format!(
                "period {when} has late data not yet archived"
            )));
        }
        if !verified {
            return Ok(Checked::Keep(format!("period {when} is not verified")));
        }
        archived += man.0.stream(&p.table).map_or(0, |s| s.rows) as i64;
        manifests.push(man.0);
    }
    // Last, as the costliest: it reads the whole partition (archive.statement_timeout).
    let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {}",
        p.name
    )))
    .fetch_one(&mut *conn)
    .await?;
    if rows != archived {
        return Ok(Checked::Keep(format!(
            "it holds {rows} rows, the archive's periods of its month {archived}"
        )));
    }
    Ok(Checked::Archived(manifests))
}

/// Why retention must wait for `table` as a whole: a gatherer keeps that stream longer than
/// `archive.retention` (it could hand over rows of a month already dropped).
pub fn gatherer_blocker(
    board: &crate::board::Board,
    table: &str,
    retention_ms: i64,
) -> Option<String> {
    use std::sync::atomic::Ordering;
    let stream = crate::records::Stream::from_table(table)?;
    board.gatherers.iter().find_map(|g| {
        let b = g.stream(stream);
        let kept = b.retention_ms.load(Ordering::Acquire);
        let longer = kept == 0 || kept >= retention_ms;
        (b.retention_known.load(Ordering::Acquire) && longer).then(|| {
            format!(
                "gatherer {} keeps {table} {}, not less than archive.retention ({} days): it could hand over rows of a dropped month",
                g.id,
                if kept == 0 {
                    "for ever".to_owned()
                } else {
                    format!("{} days", kept / 86_400_000)
                },
                retention_ms / 86_400_000
            )
        })
    })
}

/// Drops the partitions older than the retention that the archive fully holds. Returns the
/// dropped partitions' names. `board`: what the gatherers report (their retention).
pub async fn run(
    a: &Archiver,
    board: Option<&crate::board::Board>,
    now_ms: i64,
) -> Result<Vec<String>, ArchiveError> {
    let keep = a.cfg.section.retention;
    if keep.is_zero() {
        return Ok(Vec::new());
    }
    let keep_ms = keep.as_millis() as i64;
    let cutoff = now_ms - keep_ms;
    let mut dropped = Vec::new();
    for p in partitions(a).await? {
        if p.to_ms > cutoff {
            continue;
        }
        if let Some(why) = board.and_then(|b| gatherer_blocker(b, &p.table, keep_ms)) {
            metrics::counter!(m::ARCHIVE_ERRORS, "class" => "config").increment(1);
            tracing::error!(partition = %p.name, reason = %why, "retention waits: archive.retention must exceed every gatherer's retention");
            continue;
        }
        if let Some(why) = blocker(a, &p).await? {
            tracing::warn!(partition = %p.name, reason = %why, "retention keeps a partition older than archive.retention");
            continue;
        }
        kalshi_shared::failpoint::hit("deduplicator::retention::before_drop").await;
        // Again, inside the drop's transaction, under the partition's exclusive lock.
        let mut tx = a.prod.pool().begin().await?;
        a.prod.fence(&mut tx).await?;
        a.long_statements(&mut tx).await?;
        // A reader holding the old month (a user's long query) is not waited out, and not made
        // to wait behind us: the next pass tries again.
        sqlx::query("SET LOCAL lock_timeout = 10000")
            .execute(&mut *tx)
            .await?;
        let locked = sqlx::query(sqlx::AssertSqlSafe(format!(
            "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
            p.name
        )))
        .execute(&mut *tx)
        .await;
        if let Err(e) = locked {
            if kalshi_shared::pg::sqlstate(&e).as_deref() == Some("55P03") {
                tracing::warn!(partition = %p.name, "retention waits: the partition is in use (lock not granted within 10 s)");
                continue;
            }
            return Err(e.into());
        }
        if let Checked::Keep(why) = db_blocker(&mut tx, &p).await? {
            tx.rollback().await?;
            tracing::warn!(partition = %p.name, reason = %why, "retention keeps a partition: rows were written to it while it was checked");
            continue;
        }
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
        metrics::counter!(m::ARCHIVE_PARTITIONS_DROPPED, "table" => p.table.clone()).increment(1);
        tracing::info!(partition = %p.name, "retention dropped a partition: every row is in the verified archive");
        dropped.push(p.name);
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    #[test]
    fn month_bounds() {
        assert_eq!(super::month_start_ms((2026, 11)), 1_793_491_200_000);
    }

    #[test]
    fn retention_waits_while_a_gatherer_keeps_a_stream_as_long() {
        let eps: Vec<crate::config::GathererEndpoint> = ["g1", "g2"]
            .iter()
            .map(|id| crate::config::GathererEndpoint {
                id: (*id).into(),
                endpoint: "https://127.0.0.1:1".into(),
                server_name: None,
            })
            .collect();
        let board = crate::board::Board::new(&eps);
        let day = 86_400_000i64;
        let set = |g: usize, table: &str, ms: i64| {
            let s = crate::records::Stream::from_table(table).unwrap();
            let b = board.gatherers[g].stream(s);
            b.retention_ms.store(ms, Ordering::Release);
            b.retention_known.store(true, Ordering::Release);
        };
        // Not known yet: nothing to hold against.
        assert_eq!(super::gatherer_blocker(&board, "trades", 35 * day), None);
        set(0, "trades", 30 * day);
        set(1, "trades", 30 * day);
        assert_eq!(super::gatherer_blocker(&board, "trades", 35 * day), None);
        set(1, "trades", 40 * day);
        let why = super::gatherer_blocker(&board, "trades", 35 * day).unwrap();
        assert!(why.contains("gatherer g2 keeps trades 40 days"), "{why}");
        set(1, "trades", 0);
        let why = super::gatherer_blocker(&board, "trades", 35 * day).unwrap();
        assert!(why.contains("for ever"), "{why}");
        assert_eq!(super::gatherer_blocker(&board, "tickers", 35 * day), None);
    }
}
