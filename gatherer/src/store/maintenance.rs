//! Maintenance: partitions ahead of time and retention behind, with the retention mark that
//! tells readers which cursors are gone.
//!
//! It must never mark a cursor as dropped while a row at or below it still exists, nor drop a
//! partition that holds cursors above rows that stay.

use super::*;

impl Store {
    /// Creates upcoming daily partitions and applies retention. Run at start and periodically.
    pub async fn maintain(&self, now_ms: i64) -> anyhow::Result<()> {
        if self.timescale {
            return Ok(());
        }
        let today = now_ms.div_euclid(86_400_000);
        for s in Stream::ALL {
            for day in today - 1..=today + 2 {
                if let Err(e) = self
                    .pool
                    .execute(AssertSqlSafe(schema::create_partition_sql(s, day)))
                    .await
                {
                    tracing::warn!(table = s.table(), day, error = %e, "cannot create a daily partition");
                }
            }
            if let Some(ret) = self.cfg.retention.get(&s) {
                let cutoff_ms = now_ms - i64::try_from(ret.as_millis()).unwrap_or(i64::MAX);
                self.apply_retention(s, cutoff_ms).await?;
            }
        }
        Ok(())
    }

    /// Drops whole expired partitions and expires the default partition's rows, keeping one
    /// rule: everything at or below the stream's retention mark is gone and everything above
    /// it is still there. A reader below the mark is then told exactly which cursors it lost.
    ///
    /// Cursors follow ingestion, but `trades` is partitioned by exchange time: a trade
    /// backfilled late into an expired day has a cursor above those of newer days. Dropping
    /// that day would put the mark above rows that still exist, and a lagging reader would be
    /// told "overrun" for ever. So an expired partition whose cursors reach above the lowest
    /// cursor kept waits until everything below it expires too.
    pub(super) async fn apply_retention(&self, s: Stream, cutoff_ms: i64) -> anyhow::Result<()> {
        let cutoff_day = cutoff_ms.div_euclid(86_400_000);
        let names: Vec<String> = sqlx::query(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = $1",
        )
        .bind(s.table())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
        let col = schema::partition_column(s);
        let default = format!("{}_default", s.table());
        let before_cutoff =
            format!("{col} < TIMESTAMPTZ 'epoch' + $1::bigint * INTERVAL '1 millisecond'");
        // The lowest cursor that stays: in partitions that do not expire, and in the default
        // partition's rows that do not expire.
        let mut floor: Option<i64> = sqlx::query(AssertSqlSafe(format!(
            "SELECT min(id) FROM {default} WHERE NOT ({before_cutoff})"
        )))
        .bind(cutoff_ms)
        .fetch_one(&self.pool)
        .await?
        .try_get(0)?;
        let mut expired: Vec<(String, Option<(i64, i64)>)> = Vec::new();
        for part in names {
            let Some(day) = schema::partition_day(s, &part) else {
                continue;
            };
            let row = sqlx::query(AssertSqlSafe(format!(
                "SELECT min(id), max(id) FROM {part}"
            )))
            .fetch_one(&self.pool)
            .await?;
            let range = match (
                row.try_get::<Option<i64>, _>(0)?,
                row.try_get::<Option<i64>, _>(1)?,
            ) {
                (Some(lo), Some(hi)) => Some((lo, hi)),
                _ => None,
            };
            // Only whole days before the cutoff.
            if day + 1 > cutoff_day {
                if let Some((lo, _)) = range {
                    floor = Some(floor.map_or(lo, |f| f.min(lo)));
                }
                continue;
            }
            expired.push((part, range));
        }
        // Expired partitions reaching above the floor wait, and lower the floor in turn.
        loop {
            let before = expired.len();
            let mut kept = Vec::new();
            expired.retain(|(part, range)| match (range, floor) {
                (Some((lo, hi)), Some(f)) if *hi >= f => {
                    kept.push((part.clone(), *lo));
                    false
                }
                _ => true,
            });
            for (part, lo) in kept {
                floor = Some(floor.map_or(lo, |f| f.min(lo)));
                metrics::counter!(m::RETENTION_DEFERRED_PARTITIONS, "table" => s.table())
                    .increment(1);
                tracing::info!(table = s.table(), partition = %part, "retention waits: this expired partition holds cursors above rows that stay (trades backfilled late)");
            }
            if expired.len() == before {
                break;
            }
        }
        for (part, range) in expired {
            // Alone: no read is between its retention check and its last row (see `read`).
            let _alone = self.retention.write().await;
            let mut tx = self.pool.begin().await?;
            if let Some((lo, hi)) = range {
                record_mark(&mut tx, s, hi).await?;
                let day = schema::partition_day(s, &part).unwrap_or(0);
                let (from_ms, to_ms) = day_times(s, day);
                record_drop(&mut tx, s, (lo, hi), (from_ms, to_ms)).await?;
            }
            tx.execute(AssertSqlSafe(format!("DROP TABLE {part}")))
                .await?;
            tx.commit().await?;
            if let Some((_, max)) = range {
                self.dropped[&s].fetch_max(max, Ordering::AcqRel);
                let (_, to_ms) = day_times(s, schema::partition_day(s, &part).unwrap_or(0));
                self.dropped_before[&s].fetch_max(to_ms + 1, Ordering::AcqRel);
            }
            metrics::counter!(m::RETENTION_DROPPED_PARTITIONS, "table" => s.table()).increment(1);
            tracing::info!(table = s.table(), partition = %part, dropped_through = ?range.map(|r| r.1), "retention dropped a partition");
        }
        // Rows that landed in the default partition are expired row by row, below the floor.
        let below_floor = format!("{before_cutoff} AND id < $2");
        let floor = floor.unwrap_or(i64::MAX);
        let _alone = self.retention.write().await;
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT max(id), min(id), (extract(epoch FROM min({col})) * 1000)::bigint FROM {default} WHERE {below_floor}"
        )))
        .bind(cutoff_ms)
        .bind(floor)
        .fetch_one(&mut *tx)
        .await?;
        let max: Option<i64> = row.try_get(0)?;
        if let Some(max) = max {
            let min: i64 = row.try_get::<Option<i64>, _>(1)?.unwrap_or(max);
            let oldest: i64 = row.try_get::<Option<i64>, _>(2)?.unwrap_or(0);
            record_mark(&mut tx, s, max).await?;
            record_drop(
                &mut tx,
                s,
                (min, max),
                (oldest - ingest_slack(s), cutoff_ms),
            )
            .await?;
            sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM {default} WHERE {below_floor}"
            )))
            .bind(cutoff_ms)
            .bind(floor)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        if let Some(max) = max {
            self.dropped[&s].fetch_max(max, Ordering::AcqRel);
            self.dropped_before[&s].fetch_max(cutoff_ms + 1, Ordering::AcqRel);
        }
        Ok(())
    }

    /// Runs [`maintain`](Self::maintain) now and every `maintenance_interval` until shutdown.
    #[tracing::instrument(name = "maintenance", skip_all, fields(instance = %self.instance_id))]
    pub async fn run_maintenance(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            if let Err(e) = self.maintain(kalshi_shared::time::now_ms()).await {
                let class = e
                    .downcast_ref::<sqlx::Error>()
                    .map_or("other", |e| classify(e).label());
                tracing::warn!(error = %format!("{e:#}"), class, "store maintenance failed; will retry");
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(self.cfg.maintenance_interval) => {}
            }
        }
    }
}

/// How far a record's exchange time can lie before its ingestion time (streams partitioned by
/// ingestion): the delivery latency, with a wide margin.
fn ingest_slack(s: Stream) -> i64 {
    if s == Stream::Trades { 0 } else { 60_000 }
}

/// The exchange times the rows of a daily partition can hold.
fn day_times(s: Stream, day: i64) -> (i64, i64) {
    (
        day * 86_400_000 - ingest_slack(s),
        (day + 1) * 86_400_000 - 1,
    )
}

/// Logs a dropped range of cursors with the exchange times its records lie in.
async fn record_drop(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    s: Stream,
    (from_id, to_id): (i64, i64),
    (from_ms, to_ms): (i64, i64),
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO retention_drops (stream, from_id, to_id, from_ms, to_ms) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(s.table())
    .bind(from_id)
    .bind(to_id)
    .bind(from_ms)
    .bind(to_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn record_mark(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    s: Stream,
    max: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO retention_marks (stream, dropped_through) VALUES ($1, $2) ON CONFLICT (stream) DO UPDATE SET dropped_through = GREATEST(retention_marks.dropped_through, EXCLUDED.dropped_through)",
    )
    .bind(s.table())
    .bind(max)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
