//! Reads by cursor (pages bounded by rows and bytes) and the start-up reads (registry hashes,
//! lifecycle occurrences, the newest trade).
//!
//! It must never return a page that skips a committed cursor, nor one above the head.

use super::*;

impl Store {
    /// Records after `after`, at most `limit` and about `max_bytes`.
    pub async fn read(
        &self,
        stream: Stream,
        after: i64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Page, ReadError> {
        // Shared with other reads, never with a retention drop: the rows this read is told
        // exist (below) still exist when it reads them.
        let _shared = self.retention.read().await;
        let head = self.head(stream);
        let dropped = self.dropped_through(stream).await?;
        kalshi_shared::failpoint::hit("gatherer::read::after_retention_check").await;
        if after < dropped {
            let oldest = self.oldest(stream).await?;
            let (from_ms, to_ms) = self.dropped_times(stream, after).await?;
            return Err(ReadError::RetentionOverrun {
                stream: stream.table(),
                after,
                dropped_through: dropped,
                oldest,
                from_ms,
                to_ms,
            });
        }
        if after >= head {
            return Ok(Page {
                records: Vec::new(),
                head,
                through: after,
            });
        }
        // Ids are dense (the writer numbers its rows), so a page of `limit` rows lies in the
        // window of the next `limit` ids. Asking for that window, not everything up to the
        // head, keeps the read at one page whatever plan the database picks: on a backlog not
        // yet analysed the planner guesses a few rows, picks a bitmap scan and a sort, and a
        // range up to the head read the whole backlog for every page (catch-up was quadratic).
        let upper = head.min(after.saturating_add(i64::from(limit.max(1))));
        let sql = format!(
            "SELECT {} FROM {} WHERE id > $1 AND id <= $2 ORDER BY id LIMIT $3",
            rows::select_list(stream),
            stream.table()
        );
        let fut = sqlx::query(AssertSqlSafe(sql))
            .bind(after)
            .bind(upper)
            .bind(i64::from(limit))
            .fetch_all(&self.pool);
        let rows = kalshi_shared::pg::timed("read_page", self.cfg.op_timeout, fut)
            .await
            .map_err(|_| ReadError::Database(sqlx::Error::PoolTimedOut))??;
        let mut records = Vec::with_capacity(rows.len());
        let mut bytes = 0usize;
        let mut cut = false;
        for r in &rows {
            let rec = rows::decode(stream, r)?;
            bytes += rec.encoded_len() + 4;
            records.push(rec);
            if bytes >= max_bytes {
                cut = records.len() < rows.len();
                break;
            }
        }
        // A page not cut short read every id of its window: ids never used there (rows the
        // database skipped, rows refused) lie behind it too, so readers are moved past them.
        let through = if cut {
            records.last().map_or(after, |r| r.cursor)
        } else {
            upper
        };
        Ok(Page {
            records,
            head,
            through,
        })
    }

    /// The highest cursor retention has dropped (0: none).
    pub async fn dropped_through(&self, stream: Stream) -> Result<i64, sqlx::Error> {
        let mark = self
            .dropped
            .get(&stream)
            .map_or(0, |a| a.load(Ordering::Acquire));
        if !self.timescale {
            return Ok(mark);
        }
        // TimescaleDB drops chunks on its own: below the lowest remaining cursor is gone.
        Ok(mark.max(self.oldest(stream).await? - 1))
    }

    /// The exchange times of the records retention dropped above cursor `after`: from the
    /// retention log (TimescaleDB keeps none: everything before its retention horizon).
    pub async fn dropped_times(
        &self,
        stream: Stream,
        after: i64,
    ) -> Result<(i64, i64), sqlx::Error> {
        let row = sqlx::query(
            "SELECT min(from_ms), max(to_ms) FROM retention_drops WHERE stream = $1 AND to_id > $2",
        )
        .bind(stream.table())
        .bind(after)
        .fetch_one(&self.pool)
        .await?;
        match (
            row.try_get::<Option<i64>, _>(0)?,
            row.try_get::<Option<i64>, _>(1)?,
        ) {
            (Some(a), Some(b)) => Ok((a, b)),
            _ => Ok((0, self.retained_from_ms(stream))),
        }
    }

    /// The configured retention of a stream in ms (0: kept for ever).
    pub fn retention_ms(&self, stream: Stream) -> i64 {
        self.cfg
            .retention
            .get(&stream)
            .map_or(0, |r| i64::try_from(r.as_millis()).unwrap_or(i64::MAX))
    }

    /// Records of exchange times before this are no longer held (0: nothing dropped).
    pub fn retained_from_ms(&self, stream: Stream) -> i64 {
        let logged = self
            .dropped_before
            .get(&stream)
            .map_or(0, |a| a.load(Ordering::Acquire));
        if logged > 0 || !self.timescale {
            return logged;
        }
        // TimescaleDB drops chunks by its own policy and logs nothing: once anything is gone,
        // everything before the retention horizon is.
        let marked = self
            .dropped
            .get(&stream)
            .is_some_and(|a| a.load(Ordering::Acquire) > 0);
        match self.cfg.retention.get(&stream) {
            Some(r) if marked => {
                kalshi_shared::time::now_ms() - i64::try_from(r.as_millis()).unwrap_or(i64::MAX)
            }
            _ => 0,
        }
    }

    /// The lowest stored cursor (head + 1 when the stream is empty).
    pub async fn oldest(&self, stream: Stream) -> Result<i64, sqlx::Error> {
        let sql = format!("SELECT min(id) FROM {}", stream.table());
        let fut = sqlx::query(AssertSqlSafe(sql)).fetch_one(&self.pool);
        let row = kalshi_shared::pg::timed("oldest_cursor", self.cfg.op_timeout, fut)
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
        Ok(row
            .try_get::<Option<i64>, _>(0)?
            .unwrap_or(self.head(stream) + 1))
    }

    /// The latest content hash per ticker of a registry stream (to store only changes).
    pub async fn latest_registry_hashes(
        &self,
        stream: Stream,
    ) -> Result<HashMap<String, String>, sqlx::Error> {
        let sql = format!(
            "SELECT DISTINCT ON (ticker) ticker, content_hash FROM {} ORDER BY ticker, id DESC",
            stream.table()
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// The next occurrence of every lifecycle content already stored: `(kind, hash, next)`.
    pub async fn lifecycle_occurrences(
        &self,
    ) -> Result<Vec<(&'static str, String, u32)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT kind, content_hash, max(occurrence) + 1 FROM lifecycle GROUP BY 1, 2",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let kind: &'static str = match r.try_get::<String, _>(0)?.as_str() {
                "event" => "event",
                _ => "market",
            };
            let next: i32 = r.try_get(2)?;
            out.push((kind, r.try_get(1)?, u32::try_from(next).unwrap_or(0)));
        }
        Ok(out)
    }

    /// The exchange time of the newest stored trade, if any.
    pub async fn newest_trade_ms(&self) -> Result<Option<i64>, sqlx::Error> {
        let row = sqlx::query("SELECT max(ts_ms) FROM trades")
            .fetch_one(&self.pool)
            .await?;
        row.try_get(0)
    }
}
