//! The writer lock: one advisory lock per database, held on its own session for the
//! process's lifetime and taken again if that session is lost.
//!
//! It must never let the gatherer go on writing once another session holds the lock.

use super::*;

impl Store {
    /// Holds the writer lock for the process's lifetime. Its session is checked every
    /// `interval`; a lost session (the database restarted, the backend was killed) is opened
    /// again and the lock taken again. If another session holds the lock by then, this returns
    /// the error and the caller stops the gatherer: two writers would hand out the same
    /// cursors. Between the loss and the next check (at most `interval`) the writers go on.
    #[tracing::instrument(name = "writer_lock", skip_all, fields(instance = %self.instance_id))]
    pub async fn keep_writer_lock(
        self: Arc<Self>,
        interval: Duration,
        cancel: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut backoff = Backoff::new(BackoffConfig::new(
            Duration::from_millis(100),
            Duration::from_secs(2),
        )?);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(interval) => {}
            }
            let mut session = self.writer_lock.lock().await;
            let alive = kalshi_shared::pg::timed(
                "writer_lock_check",
                self.cfg.op_timeout,
                sqlx::query("SELECT 1").execute(&mut *session),
            )
            .await
            .is_ok_and(|r| r.is_ok());
            if alive {
                continue;
            }
            metrics::counter!(m::WRITER_LOCK_LOST).increment(1);
            tracing::warn!(
                "the writer-lock session was lost (database restart or killed backend); taking the lock again"
            );
            loop {
                let attempt = async {
                    let mut c = <sqlx::postgres::PgConnection as sqlx::Connection>::connect_with(
                        &self.lock_opts,
                    )
                    .await?;
                    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                        .bind(WRITER_LOCK_KEY)
                        .fetch_one(&mut c)
                        .await?;
                    Ok::<_, sqlx::Error>((c, locked))
                };
                match kalshi_shared::pg::timed("writer_lock_take", self.cfg.op_timeout, attempt)
                    .await
                {
                    Ok(Ok((c, true))) => {
                        *session = c;
                        backoff.reset();
                        tracing::info!("writer lock taken again");
                        break;
                    }
                    Ok(Ok((_, false))) => anyhow::bail!(
                        "another session took this database's writer lock (advisory lock {WRITER_LOCK_KEY}) while ours was lost: another gatherer is writing here; stopping"
                    ),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "cannot take the writer lock again yet; retrying")
                    }
                    Err(_) => tracing::warn!("taking the writer lock again timed out; retrying"),
                }
                if !backoff.sleep(&cancel).await {
                    return Ok(());
                }
            }
        }
    }
}
