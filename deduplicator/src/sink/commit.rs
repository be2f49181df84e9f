//! Committing a batch: partitions first, then one transaction with the rows and the cursors,
//! retried through failover with backoff; data errors hand the batch to the quarantine.
//!
//! It must never move a cursor without the rows it covers in the same transaction.

use super::*;

impl Sink {
    /// Commits the batch, retrying until it is in or `cancel` fires. True when committed.
    pub(super) async fn commit(&mut self, batch: Batch, cancel: &CancellationToken) -> bool {
        let table = self.stream.table();
        let Batch {
            rows,
            cursors,
            dropped,
            twins,
            ..
        } = batch;
        let mut twins_left = twins.len() as u64;
        let (valid, mut poison): (Vec<&Row>, Vec<Poison<'_>>) = {
            let mut v = Vec::with_capacity(rows.len());
            let mut p = Vec::new();
            for r in &rows {
                match &r.invalid {
                    Some(why) => p.push((r, format!("invalid record: {why}"), None)),
                    None => v.push(r),
                }
            }
            (v, p)
        };
        if let Err(Cancelled) = self.ensure_partitions(&valid, cancel).await {
            return false;
        }
        let cursor_rows: Vec<(String, i64, String)> = cursors
            .iter()
            .map(|(g, (inst, c))| (self.cfg.gatherers[*g].clone(), *c, inst.to_string()))
            .collect();
        let started = Instant::now();
        // Twins committed in place of refused copies.
        let mut rescued: Vec<&Row> = Vec::new();
        // The normal case: everything in one transaction.
        let inserted = match self
            .attempt(&valid, &poison, Some(&cursor_rows), cancel)
            .await
        {
            Ok(n) => n,
            Err(Stop::Cancelled) => return false,
            Err(Stop::Data(e)) => {
                tracing::warn!(stream = table, rows = valid.len(), error = %e, "a batch was refused for its data: bisecting to find the poison rows");
                // Commit the good rows in halves (no cursors yet), find the bad ones, then
                // quarantine them and move the cursors in one last transaction.
                let mut n = 0;
                let mut candidates: Vec<&Row> = valid.clone();
                let mut spare: Vec<&Row> = twins.iter().collect();
                // A refused copy's twins (other gatherers' copies of the same record) are tried
                // in its place, until one commits or every copy is quarantined.
                while !candidates.is_empty() {
                    let mut bad = Vec::new();
                    match self.bisect(&candidates, cancel, &mut bad, &mut n).await {
                        Ok(()) => {}
                        Err(Cancelled) => return false,
                    }
                    let bad_keys: HashSet<u128> = bad.iter().filter_map(|(r, _)| r.key).collect();
                    for (r, e) in bad {
                        tracing::error!(stream = table, gatherer = %self.cfg.gatherers[r.gatherer], cursor = r.record.cursor, record = %records::summary(&r.record), error = %e, "poison row quarantined");
                        poison.push((r, e.message.clone(), e.sqlstate.clone()));
                    }
                    let mut next = Vec::new();
                    let mut taken: HashSet<u128> = HashSet::new();
                    spare.retain(|t| {
                        let k = t.key.unwrap_or_default();
                        if bad_keys.contains(&k) && taken.insert(k) {
                            next.push(*t);
                            false
                        } else {
                            true
                        }
                    });
                    if !next.is_empty() {
                        tracing::warn!(
                            stream = table,
                            rows = next.len(),
                            "trying other gatherers' copies of quarantined records"
                        );
                        twins_left = twins_left.saturating_sub(next.len() as u64);
                    }
                    rescued.extend(next.iter().copied());
                    candidates = next;
                }
                match self.attempt(&[], &poison, Some(&cursor_rows), cancel).await {
                    Ok(_) => n,
                    Err(Stop::Cancelled) => return false,
                    Err(Stop::Data(e)) => {
                        // The quarantine itself refused them: nothing sensible is left but to
                        // stop advancing and say so loudly.
                        tracing::error!(stream = table, error = %e, "quarantine refused rows; retrying later");
                        return false;
                    }
                }
            }
        };
        metrics::histogram!(m::COMMIT_DURATION).record(started.elapsed().as_secs_f64());
        // Committed: account, cache, publish cursors.
        let duplicates = dropped + twins_left + (valid.len() as u64).saturating_sub(inserted);
        metrics::counter!(m::RECORDS_WRITTEN, "stream" => table).increment(inserted);
        metrics::counter!(m::DUPLICATES_DROPPED, "stream" => table).increment(duplicates);
        if !poison.is_empty() {
            metrics::counter!(m::QUARANTINED, "stream" => table).increment(poison.len() as u64);
        }
        self.check_generation();
        // Only keys production now holds: a key whose every copy was refused stays out, so
        // a later valid copy of it is still written.
        let quarantined: HashSet<*const Row> =
            poison.iter().map(|(r, _, _)| *r as *const Row).collect();
        // End to end, to the commit itself: COMMIT has returned, so the rows are durable now.
        let now_ms = kalshi_shared::time::now_ms();
        let end_to_end = metrics::histogram!(m::END_TO_END, "stream" => table);
        let committed = Instant::now();
        for r in valid.iter().chain(rescued.iter()) {
            if quarantined.contains(&(*r as *const Row)) {
                continue;
            }
            if let Some(k) = r.key {
                self.cache.insert(k, committed);
            }
            if let Some(ts) = partition_ms(&r.record).filter(|ts| *ts > 0) {
                end_to_end.record((now_ms - ts).max(0) as f64 / 1000.0);
            }
        }
        metrics::gauge!(m::CACHE_KEYS, "stream" => table).set(self.cache.len() as f64);
        for (g, (_, c)) in &cursors {
            let b = self.board.gatherers[*g].stream(self.stream);
            b.committed
                .fetch_max(*c, std::sync::atomic::Ordering::AcqRel);
        }
        true
    }

    /// Creates the monthly partitions the rows need (outside the transaction). A failure
    /// other than a lost connection leaves the rows to the default partition.
    pub(super) async fn ensure_partitions(
        &mut self,
        rows: &[&Row],
        cancel: &CancellationToken,
    ) -> Result<(), Cancelled> {
        if !crate::schema::PARTITIONED.contains(&self.stream.table()) {
            return Ok(());
        }
        let mut months: Vec<(i32, u8)> = rows
            .iter()
            .filter_map(|r| partition_ms(&r.record))
            .map(crate::schema::month_of)
            .filter(|m| !self.months.contains(m))
            .collect();
        months.sort_unstable();
        months.dedup();
        for month in months {
            let sql = crate::schema::create_partition_sql(self.stream.table(), month);
            let mut backoff = Backoff::new(self.cfg.retry);
            loop {
                let pool = self.prod.pool();
                let r = match kalshi_shared::pg::timed(
                    "create_partition",
                    self.prod.op_timeout(),
                    pool.execute(sqlx::AssertSqlSafe(sql.clone())),
                )
                .await
                {
                    Ok(r) => r.map(|_| ()).map_err(DbError::from),
                    Err(_) => Err(DbError::timeout(
                        "creating a partition",
                        self.prod.op_timeout(),
                    )),
                };
                match r {
                    Ok(()) => break,
                    Err(e) if !e.class.is_retryable() => {
                        tracing::warn!(table = self.stream.table(), ?month, error = %e, "cannot create a monthly partition; rows go to the default partition");
                        break;
                    }
                    Err(e) => {
                        self.on_error(&e);
                        if !backoff.sleep(cancel).await {
                            return Err(Cancelled);
                        }
                    }
                }
            }
            self.months.insert(month);
        }
        Ok(())
    }

    pub(super) fn on_error(&mut self, e: &DbError) {
        self.prod.observe(Err(e));
        match e.class {
            DbErrorClass::ReadOnly => {
                tracing::warn!(stream = self.stream.table(), error = %e, "production is read-only (demoted primary): rebuilding the pool");
                self.prod.rebuild();
            }
            DbErrorClass::Connection | DbErrorClass::Timeout => {
                tracing::warn!(stream = self.stream.table(), error = %e, "production connection lost: retrying");
                // What this connection committed last may not be on the server we reach next.
                self.cache.clear();
            }
            DbErrorClass::Transient => {
                tracing::info!(stream = self.stream.table(), error = %e, "transient production error: retrying");
            }
            DbErrorClass::Refused
            | DbErrorClass::Schema
            | DbErrorClass::Server
            | DbErrorClass::Other
            | DbErrorClass::Data => self.stall.refused(self.stream.table(), e),
        }
    }

    /// One transaction, retried on everything but data errors until it commits or `cancel`.
    /// Only a data error (`22xxx`, `23xxx`) ends it early, for the caller to bisect: anything
    /// else (a revoked privilege, a bad password, a missing table, a broken server) is not the
    /// rows' fault, so the stream stalls with its cursors unmoved, counted and alerted on, and
    /// resumes by itself once the cause is fixed.
    pub(super) async fn attempt(
        &mut self,
        rows: &[&Row],
        poison: &[Poison<'_>],
        cursors: Option<&[(String, i64, String)]>,
        cancel: &CancellationToken,
    ) -> Result<u64, Stop> {
        let mut backoff = Backoff::new(self.cfg.retry);
        let table = self.stream.table();
        loop {
            if self.prod.lost().is_cancelled() {
                // Stepping down: what this process holds is the new holder's to write.
                return Err(Stop::Cancelled);
            }
            let direct = !rows.is_empty() && self.stream.copies_direct() && self.direct.try_now();
            match self.transaction(rows, poison, cursors, direct).await {
                Ok(n) => {
                    self.prod.observe(Ok(()));
                    self.prod.committed();
                    self.stall.resumed(table);
                    if direct {
                        self.direct.succeeded();
                    }
                    if !rows.is_empty() {
                        let path = if direct { "direct" } else { "merge" };
                        metrics::counter!(m::SINK_TRANSACTIONS, "stream" => table, "path" => path)
                            .increment(1);
                    }
                    return Ok(n);
                }
                Err(e) if direct && e.sqlstate.as_deref() == Some(UNIQUE_VIOLATION) => {
                    // A row is committed already (the key cache did not know it): the
                    // transaction is rolled back whole; the merge skips that row.
                    tracing::debug!(stream = table, rows = rows.len(), error = %e, "a direct COPY met a committed row: merging instead");
                    metrics::counter!(m::SINK_TRANSACTIONS, "stream" => table, "path" => "conflict")
                        .increment(1);
                    self.direct.conflicted();
                }
                Err(e) if e.sqlstate.as_deref() == Some(crate::db::FENCED) => {
                    if self.prod.lost().is_cancelled() {
                        return Err(Stop::Cancelled);
                    }
                    // This process took the lease again at a new epoch: retry at once.
                    tracing::info!(
                        stream = table,
                        "a transaction of the previous epoch was refused: retrying at the new one"
                    );
                }
                Err(e) if e.class.is_data() => {
                    metrics::counter!(m::RDS_ERRORS, "class" => "data").increment(1);
                    return Err(Stop::Data(e));
                }
                Err(e) => {
                    self.on_error(&e);
                    // Held for the lease (its session failed): resume the moment it is taken
                    // again, not after a backoff grown while waiting for it.
                    let d = backoff.next_delay();
                    tokio::select! {
                        biased;
                        _ = cancel.cancelled() => return Err(Stop::Cancelled),
                        _ = self.prod.retry_pause(d) => {}
                    }
                }
            }
        }
    }

    pub(super) async fn transaction(
        &self,
        rows: &[&Row],
        poison: &[Poison<'_>],
        cursors: Option<&[(String, i64, String)]>,
        direct: bool,
    ) -> Result<u64, DbError> {
        // Streams without ids take their identity against production (`lifecycle.rs`): their
        // rows are merged from the records, never COPYed.
        let identity = lifecycle::table_of(self.stream);
        let payload = if identity.is_some() {
            None
        } else {
            let mut enc = Encoder::new(self.stream);
            for r in rows {
                let src = Source {
                    gatherer_id: &self.cfg.gatherers[r.gatherer],
                    instance_id: &r.instance,
                };
                enc.push(&src, &r.record);
            }
            (enc.rows() > 0).then(|| enc.finish())
        };
        let touched = self.touched_periods(rows);
        // Only the lease's holder writes, at the epoch it holds (`lease.rs`).
        let (epoch, begin) = self.prod.begin_fenced()?;
        let _busy = self.prod.in_flight(self.stream.table());
        // A transaction that never returns (outside its own deadline): the hung-active test.
        kalshi_shared::failpoint::hit("deduplicator::sink::transaction").await;
        let mut conn = self.prod.acquire().await?;
        let op_timeout = self.prod.op_timeout();
        let stream = self.stream;
        let pause = self.cfg.pause_before_commit;
        let period = self.cfg.archive_period_ms.filter(|p| *p > 0);
        let fut = async {
            conn.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(begin)))
                .await?;
            let mut inserted = 0;
            if let Some(table) = identity {
                // Identity against production, not by a gatherer's count (`lifecycle.rs`).
                inserted = lifecycle::merge(
                    &mut conn,
                    table,
                    rows,
                    &self.cfg.gatherers,
                    self.cfg.lifecycle_window_ms,
                )
                .await?;
            } else if let Some(payload) = payload {
                if direct {
                    // Straight into the table: every row must be new, or the whole transaction
                    // fails with a unique violation (and the batch is merged instead).
                    inserted = copy_binary(&mut conn, stream.table(), stream, payload).await?;
                } else {
                    // The staging table lives with the connection and empties itself at commit.
                    conn.execute(sqlx::AssertSqlSafe(stream.create_stage_sql()))
                        .await?;
                    copy_binary(&mut conn, &stream.stage(), stream, payload).await?;
                    if let Some(period) = period.filter(|_| stream.is_registry()) {
                        touch_moved_versions(&mut conn, stream, period).await?;
                    }
                    inserted = conn
                        .execute(sqlx::AssertSqlSafe(stream.merge_sql()))
                        .await?
                        .rows_affected();
                }
            }
            if !poison.is_empty() {
                let mut q = QuarantineCols::default();
                for (r, err, state) in poison {
                    q.gatherer.push(self.cfg.gatherers[r.gatherer].clone());
                    q.cursor.push(r.record.cursor);
                    q.instance.push(r.instance.to_string());
                    q.record.push(r.record.encode_to_vec());
                    q.summary.push(records::summary(&r.record));
                    q.error.push(err.chars().take(2000).collect());
                    q.sqlstate.push(state.clone());
                }
                sqlx::query(
                    "INSERT INTO quarantine (gatherer_id, stream, cursor, instance_id, record, summary, error, sqlstate) \
                     SELECT g, $2, c, i, r, s, e, st FROM UNNEST($1::text[], $3::bigint[], $4::text[], $5::bytea[], $6::text[], $7::text[], $8::text[]) AS u(g, c, i, r, s, e, st) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(&q.gatherer)
                .bind(stream.table())
                .bind(&q.cursor)
                .bind(&q.instance)
                .bind(&q.record)
                .bind(&q.summary)
                .bind(&q.error)
                .bind(&q.sqlstate)
                .execute(&mut *conn)
                .await?;
            }
            if let Some(cursors) = cursors
                && !cursors.is_empty()
            {
                let g: Vec<&str> = cursors.iter().map(|c| c.0.as_str()).collect();
                let c: Vec<i64> = cursors.iter().map(|c| c.1).collect();
                let i: Vec<&str> = cursors.iter().map(|c| c.2.as_str()).collect();
                sqlx::query(
                    "INSERT INTO sync_cursors (gatherer_id, stream, cursor, instance_id) \
                     SELECT g, $2, c, i FROM UNNEST($1::text[], $3::bigint[], $4::text[]) AS u(g, c, i) \
                     ON CONFLICT (gatherer_id, stream) DO UPDATE SET \
                       cursor = CASE WHEN sync_cursors.instance_id = EXCLUDED.instance_id \
                                     THEN GREATEST(sync_cursors.cursor, EXCLUDED.cursor) \
                                     ELSE EXCLUDED.cursor END, \
                       instance_id = EXCLUDED.instance_id, updated_at = now()",
                )
                .bind(&g)
                .bind(stream.table())
                .bind(&c)
                .bind(&i)
                .execute(&mut *conn)
                .await?;
            }
            if !touched.is_empty() {
                // Late data is known exactly: the archiver reads these in its snapshot.
                sqlx::query(
                    "INSERT INTO archive_touch (period_start_ms, stream, touches) \
                     SELECT p, $2, 1 FROM UNNEST($1::bigint[]) AS u(p) \
                     ON CONFLICT (period_start_ms, stream) DO UPDATE SET touches = archive_touch.touches + 1",
                )
                .bind(&touched)
                .bind(stream.table())
                .execute(&mut *conn)
                .await?;
            }
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            conn.execute("COMMIT").await?;
            Ok::<u64, sqlx::Error>(inserted)
        };
        let r = match kalshi_shared::pg::timed("commit_batch", op_timeout + pause, fut).await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(DbError::from(e)),
            Err(_) => Err(DbError::timeout("a production transaction", op_timeout)),
        };
        match &r {
            Ok(_) => {}
            Err(e) if e.sqlstate.as_deref() == Some(crate::db::FENCED) => {
                // Another deduplicator took the lease (or this one took it again since).
                self.prod.fenced(epoch);
                let rollback =
                    kalshi_shared::pg::timed("rollback", op_timeout, conn.execute("ROLLBACK"))
                        .await;
                if !matches!(rollback, Ok(Ok(_))) {
                    conn.close_on_drop();
                }
            }
            Err(e) if e.class == DbErrorClass::Data || e.class == DbErrorClass::Transient => {
                // The connection is fine; end the failed transaction before it goes back.
                let rollback =
                    kalshi_shared::pg::timed("rollback", op_timeout, conn.execute("ROLLBACK"))
                        .await;
                if !matches!(rollback, Ok(Ok(_))) {
                    conn.close_on_drop();
                }
            }
            Err(_) => conn.close_on_drop(),
        }
        r
    }
}

impl Sink {
    /// The archive periods the rows fall in (sorted, distinct; none without an archive).
    fn touched_periods(&self, rows: &[&Row]) -> Vec<i64> {
        use pb::record::Body;
        let Some(period) = self.cfg.archive_period_ms.filter(|p| *p > 0) else {
            return Vec::new();
        };
        let floor = |ms: i64| ms.div_euclid(period) * period;
        let mut v: Vec<i64> = Vec::new();
        for r in rows {
            match r.record.body.as_ref() {
                Some(Body::Lifecycle(l)) => {
                    v.push(floor(l.origin.as_ref().map_or(0, |o| o.received_ms)));
                }
                Some(Body::Unknown(u)) => {
                    v.push(floor(u.origin.as_ref().map_or(0, |o| o.received_ms)));
                }
                // A version is filed by when it was first observed.
                Some(Body::Registry(r)) => v.push(floor(r.observed_ms)),
                Some(Body::Gap(g)) => {
                    // Every period the gap overlaps (its manifest lists it), bounded.
                    let b = floor(g.to_ms.max(g.from_ms));
                    let a = floor(g.from_ms).max(b - MAX_GAP_PERIODS * period);
                    v.extend((0..=(b - a) / period).map(|i| a + i * period));
                }
                _ => {
                    if let Some(ms) = partition_ms(&r.record) {
                        v.push(floor(ms));
                    }
                }
            }
        }
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// Binary COPY of `payload` (the stream's columns) into `target`; the rows it stored.
async fn copy_binary(
    conn: &mut sqlx::pool::PoolConnection<sqlx::Postgres>,
    target: &str,
    stream: Stream,
    payload: bytes::Bytes,
) -> Result<u64, sqlx::Error> {
    let mut copy = conn
        .copy_in_raw(&format!(
            "COPY {target} ({}) FROM STDIN (FORMAT binary)",
            stream.columns()
        ))
        .await?;
    copy.send(payload).await?;
    copy.finish().await
}

/// SQLSTATE of a unique violation.
const UNIQUE_VIOLATION: &str = "23505";

/// Whether the next batch is COPYed straight into its table (streams whose merge is a plain
/// `ON CONFLICT DO NOTHING`, see `ProdTable::copies_direct`).
///
/// The key cache drops what this process committed, so during catch-up and in steady state a
/// batch holds only new rows, and a direct COPY stores exactly what the staging merge would for
/// the price of a plain COPY. When the cache does not know a committed row (after a restart or
/// a failover, or a gatherer lagging further behind than the cache reaches) the direct COPY
/// fails with a unique violation; the transaction is rolled back whole, the batch is merged,
/// and so are the next few batches: 4 after a first conflict, twice as many after each
/// further one (at most 1,024), back to 4 once a direct COPY succeeds. At worst one batch in
/// five does its COPY twice; a lagging gatherer soon costs one batch in a thousand.
#[derive(Debug)]
pub(super) struct DirectCopy {
    merge_left: u32,
    after_conflict: u32,
}

const MERGES_AFTER_CONFLICT: (u32, u32) = (4, 1024);

impl Default for DirectCopy {
    fn default() -> Self {
        DirectCopy {
            merge_left: 0,
            after_conflict: MERGES_AFTER_CONFLICT.0,
        }
    }
}

impl DirectCopy {
    /// True when this transaction should try the direct COPY.
    pub(super) fn try_now(&mut self) -> bool {
        if self.merge_left == 0 {
            return true;
        }
        self.merge_left -= 1;
        false
    }
    pub(super) fn conflicted(&mut self) {
        self.merge_left = self.after_conflict;
        self.after_conflict = (self.after_conflict * 2).min(MERGES_AFTER_CONFLICT.1);
    }
    pub(super) fn succeeded(&mut self) {
        self.after_conflict = MERGES_AFTER_CONFLICT.0;
    }
}

/// A version seen earlier than production's record of it moves to the earlier period (the
/// merge keeps the first observation): the period it leaves is touched too, in the same
/// transaction, so the archive rebuilds both. Runs after the batch is staged, before the merge.
async fn touch_moved_versions(
    conn: &mut sqlx::PgConnection,
    stream: Stream,
    period: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO archive_touch (period_start_ms, stream, touches) \
         SELECT DISTINCT (v.observed_ms / $1) * $1, $2, 1 FROM registry_versions v \
         JOIN {} s ON v.kind = $3 AND v.ticker = s.ticker AND v.content_hash = s.content_hash \
         WHERE s.observed_ms < v.observed_ms AND v.observed_ms >= 0 \
         ON CONFLICT (period_start_ms, stream) DO UPDATE SET touches = archive_touch.touches + 1",
        stream.stage()
    )))
    .bind(period)
    .bind(stream.table())
    .bind(stream.registry_kind().unwrap_or_default())
    .execute(conn)
    .await?;
    Ok(())
}

/// A gap touches at most this many archive periods, the last ones it covers (an open-ended or
/// very long gap does not make the archiver revisit the distant past).
const MAX_GAP_PERIODS: i64 = 10_000;

/// The partition time of a record as the encoder stores it.
pub(super) fn partition_ms(r: &pb::Record) -> Option<i64> {
    use pb::record::Body;
    let recv = |o: &Option<pb::Origin>| o.as_ref().map_or(0, |o| o.received_ms);
    Some(match r.body.as_ref()? {
        Body::Trade(t) => t.ts_ms,
        Body::Delta(d) if d.ts_ms != 0 => d.ts_ms,
        Body::Delta(d) => recv(&d.origin),
        // The stored `ts` (encode.rs): the time from which the book is the exchange's, which
        // for a snapshot spliced at a delta lies before its receipt, possibly in an earlier
        // archive period (touched by this row, so its late data is seen).
        Body::Snapshot(s) if s.as_of_ms != 0 => s.as_of_ms,
        Body::Snapshot(s) => recv(&s.origin),
        Body::Ticker(t) if t.ts_ms != 0 => t.ts_ms,
        Body::Ticker(t) => recv(&t.origin),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A snapshot spliced at a delta is stored at that delta's time, which can lie in an
    /// earlier archive period than its receipt: its touch must go there.
    #[test]
    fn a_snapshot_is_filed_by_the_time_it_is_stored_at() {
        let origin = pb::Origin {
            received_ms: 1_795_770_003_100,
            ..pb::Origin::default()
        };
        let snap = |as_of_ms| pb::Record {
            body: Some(pb::record::Body::Snapshot(pb::OrderbookSnapshot {
                origin: Some(origin),
                as_of_ms,
                ..pb::OrderbookSnapshot::default()
            })),
            ..pb::Record::default()
        };
        assert_eq!(
            partition_ms(&snap(1_795_770_001_900)),
            Some(1_795_770_001_900)
        );
        assert_eq!(
            partition_ms(&snap(0)),
            Some(1_795_770_003_100),
            "a REST snapshot: its receipt"
        );
    }
}
