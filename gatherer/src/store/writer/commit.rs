//! Committing a batch: binary COPY into staging, merge, head advanced; refused batches are
//! bisected down to the rows the database refuses, which are declared, never retried for
//! ever. Also the one loader shared with the spill replay.
//!
//! It must never advance the head past a row that is not committed.

use super::*;

impl<R: Row> Writer<R> {
    /// Writes one batch (all or nothing), handling an earlier attempt whose outcome is unknown
    /// and isolating rows the database refuses.
    pub(super) async fn write(&mut self, batch: &[&R]) -> Result<(), sqlx::Error> {
        let n = batch.len() as i64;
        let first = self.next_id;
        let ingested_ms = *self
            .batch_ingested_ms
            .get_or_insert_with(kalshi_shared::time::now_ms);
        if self.in_doubt && R::STREAM != Stream::Trades {
            // Trades are idempotent (ON CONFLICT); the others are checked by their last id.
            if self.exists(first + n - 1, ingested_ms).await? {
                tracing::info!(
                    table = self.table(),
                    first,
                    rows = n,
                    "batch had been committed before the connection broke"
                );
                self.committed(first, n, n as u64, Duration::ZERO);
                return Ok(());
            }
        }
        self.in_doubt = false;
        let started = Instant::now();
        match self.commit(batch, first, ingested_ms).await {
            Ok(inserted) => {
                self.committed(first, n, inserted, started.elapsed());
                Ok(())
            }
            Err(e) if classify(&e) == DbErrorClass::Data => {
                let stored = self.bisect(batch, first, ingested_ms).await?;
                self.committed(first, n, stored, started.elapsed());
                Ok(())
            }
            Err(e) => {
                self.in_doubt = true;
                Err(e)
            }
        }
    }

    pub(super) fn committed(&mut self, first: i64, n: i64, inserted: u64, took: Duration) {
        self.next_id = first + n;
        self.batch_ingested_ms = None;
        self.in_doubt = false;
        let table = self.table();
        metrics::counter!(m::WRITER_INSERTS, "table" => table).increment(inserted);
        metrics::histogram!(m::WRITER_FLUSH_DURATION, "table" => table).record(took.as_secs_f64());
        let skipped = (n as u64).saturating_sub(inserted);
        if skipped > 0 && R::STREAM == Stream::Trades {
            metrics::counter!(m::WRITER_DUPLICATES, "table" => table).increment(skipped);
        }
        self.head.send_replace(self.next_id - 1);
    }

    /// Splits a batch the database refuses until the refused rows are isolated; stores the
    /// rest. Returns how many rows were stored.
    pub(super) async fn bisect(
        &mut self,
        batch: &[&R],
        first: i64,
        ingested_ms: i64,
    ) -> Result<u64, sqlx::Error> {
        let mut stored = 0;
        let mut work: Vec<(usize, usize)> = vec![(0, batch.len())];
        while let Some((lo, hi)) = work.pop() {
            let part = &batch[lo..hi];
            match self.commit(part, first + lo as i64, ingested_ms).await {
                Ok(n) => stored += n,
                Err(e) if classify(&e) == DbErrorClass::Data && part.len() > 1 => {
                    let mid = lo + part.len() / 2;
                    work.push((mid, hi));
                    work.push((lo, mid));
                }
                Err(e)
                    if classify(&e) == DbErrorClass::Data && already_stored(&e, self.table()) =>
                {
                    // Committed by an attempt whose outcome was unknown: it is there.
                    stored += 1;
                }
                Err(e) if classify(&e) == DbErrorClass::Data => {
                    let row = part[0];
                    metrics::counter!(m::WRITER_REJECTED_ROWS, "table" => self.table())
                        .increment(1);
                    tracing::error!(table = self.table(), id = first + lo as i64, error = %e, "the database refused a row; dropping it and declaring a gap");
                    if let Some(g) = &self.gaps {
                        metrics::counter!(m::GAPS_DECLARED, "reason" => GapReason::RejectedRow.as_str())
                            .increment(1);
                        g.push(GapRow {
                            stream: R::STREAM,
                            market_ticker: None,
                            from_ms: row.time_ms(),
                            to_ms: row.time_ms(),
                            reason: GapReason::RejectedRow,
                            detail: truncate(&format!("{e}"), 500),
                        });
                    }
                }
                Err(e) => {
                    self.in_doubt = true;
                    return Err(e);
                }
            }
        }
        Ok(stored)
    }

    pub(super) async fn exists(&self, id: i64, ingested_ms: i64) -> Result<bool, sqlx::Error> {
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE id = $1 AND ingested_at = TIMESTAMPTZ 'epoch' + $2::bigint * INTERVAL '1 millisecond')",
            self.table()
        );
        let fut = sqlx::query(AssertSqlSafe(sql))
            .bind(id)
            .bind(ingested_ms)
            .fetch_one(&self.pool);
        let row = kalshi_shared::pg::timed("writer_check_committed", self.cfg.op_timeout, fut)
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
        row.try_get(0)
    }

    pub(super) async fn ensure_partitions(
        &mut self,
        batch: &[&R],
        ingested_ms: i64,
    ) -> Result<(), sqlx::Error> {
        let mut days: Vec<i64> = batch
            .iter()
            .map(|r| r.partition_ms(ingested_ms).div_euclid(86_400_000))
            .filter(|d| !self.partitions.contains(d))
            .collect();
        days.sort_unstable();
        days.dedup();
        for day in days {
            let sql = schema::create_partition_sql(R::STREAM, day);
            match kalshi_shared::pg::timed(
                "create_partition",
                self.cfg.op_timeout,
                sqlx::query(AssertSqlSafe(sql)).execute(&self.pool),
            )
            .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(e)) if classify(&e).is_retryable() => return Err(e),
                Ok(Err(e)) => {
                    // E.g. the default partition already holds rows of that day: they and
                    // the new ones stay in the default partition.
                    tracing::warn!(table = self.table(), day, error = %e, "cannot create a daily partition; rows go to the default partition");
                }
                Err(_) => return Err(sqlx::Error::PoolTimedOut),
            }
            self.partitions.insert(day);
        }
        Ok(())
    }

    /// One transaction: COPY (through a staging table for trades) and commit.
    pub(super) async fn commit(
        &mut self,
        batch: &[&R],
        first: i64,
        ingested_ms: i64,
    ) -> Result<u64, sqlx::Error> {
        self.ensure_partitions(batch, ingested_ms).await?;
        let mut enc = CopyEncoder::new(R::FIELDS);
        for (i, r) in batch.iter().enumerate() {
            r.encode(&mut enc, first + i as i64, ingested_ms);
        }
        let payload = enc.finish();
        let fut = async {
            let mut tx = self.pool.begin().await?;
            let inserted = load(&mut tx, R::STREAM, payload).await?;
            tx.commit().await?;
            Ok::<u64, sqlx::Error>(inserted)
        };
        match kalshi_shared::pg::timed("writer_commit", self.cfg.op_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(sqlx::Error::PoolTimedOut),
        }
    }
}

/// Loads one binary COPY payload of `stream`'s rows in `tx` (trades through the staging table
/// and [`TRADES_MERGE_SQL`]); returns the rows stored. Used by the writers and by the spill
/// replay, so both store rows the same way.
pub(crate) async fn load(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    stream: Stream,
    payload: impl std::ops::Deref<Target = [u8]> + Send,
) -> Result<u64, sqlx::Error> {
    let columns = crate::store::columns(stream);
    if stream == Stream::Trades {
        sqlx::query(
            "CREATE TEMP TABLE IF NOT EXISTS trades_staging (LIKE trades INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
        )
        .execute(&mut **tx)
        .await?;
        let mut copy = tx
            .copy_in_raw(&format!(
                "COPY trades_staging ({columns}) FROM STDIN (FORMAT binary)"
            ))
            .await?;
        copy.send(payload).await?;
        copy.finish().await?;
        Ok(sqlx::query(TRADES_MERGE_SQL)
            .execute(&mut **tx)
            .await?
            .rows_affected())
    } else {
        let mut copy = tx
            .copy_in_raw(&format!(
                "COPY {} ({columns}) FROM STDIN (FORMAT binary)",
                stream.table()
            ))
            .await?;
        copy.send(payload).await?;
        copy.finish().await
    }
}

/// A primary-key conflict on the table's own key: the row is already there.
pub(super) fn already_stored(e: &sqlx::Error, table: &str) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.code().as_deref() == Some("23505")
                && db
                    .constraint()
                    .is_some_and(|c| c.starts_with(table) && c.ends_with("_pkey"))
        }
        _ => false,
    }
}

pub(super) fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}
