//! The lease: which one of several deduplicators writes production (docs/DESIGN.md, "Active
//! and standby"). Every deduplicator runs this task; the one that holds the lease is active, the
//! others are warm standbys.
//!
//! - The lease is an advisory lock held by one dedicated session, plus a fencing epoch in
//!   `dedup_leader`. Taking the lease bumps the epoch; every write transaction starts with
//!   `dedup_fence(epoch)` (see `Prod::begin_fenced`), so a writer that lost the lease, with
//!   sessions still open, can never commit again. Who may write is decided by the epoch in
//!   production, never by a clock.
//! - A standby tries the lock every `lease.poll`. Held by an active whose heartbeat (production's
//!   clock) is older than `lease.takeover_after`, it ends that active's sessions first (a hung
//!   or cut-off active), which frees the lock.
//! - The active renews its heartbeat every `lease.renew_every`, and gives up (exits) when one of
//!   its transactions has been in progress longer than `lease.hung_after`.
//! - The active's lease session may die under it (a failover, a network fault): it takes the
//!   lease again only if the epoch is still its own, and steps down otherwise.
//!
//! It must never let this process write with an epoch it did not take, nor keep a session of
//! a previous holder able to delay the new epoch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, Ordering};
use std::time::Duration;

use kalshi_shared::config::deduplicator::LeaseSection;
use sqlx::{Connection as _, Executor as _, PgConnection, Row as _};
use tokio_util::sync::CancellationToken;

use crate::db::{DbError, Prod};
use crate::metrics as m;

/// `pg_try_advisory_lock(LOCK.0, LOCK.1)`: the lease's lock (two keys: visible in `pg_locks`
/// as classid/objid with objsubid 2). Distinct from the migrations' lock.
pub const LOCK: (i32, i32) = (0x6b64, 1);

/// This process's part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not yet connected to production's lease.
    Starting,
    /// Another deduplicator holds the lease; this one waits to take over.
    Standby,
    /// This one holds the lease and writes production.
    Active,
}

impl Role {
    pub fn label(self) -> &'static str {
        match self {
            Role::Starting => "starting",
            Role::Standby => "standby",
            Role::Active => "active",
        }
    }
}

/// The holder as production last said (for `/health` and the operator).
#[derive(Debug, Clone, Default)]
pub struct Holder {
    pub epoch: i64,
    pub holder_id: String,
    pub holder: String,
    /// The heartbeat's age at the last read, by production's clock.
    pub age: Duration,
}

/// Why the task ended this process's part.
#[derive(Debug, thiserror::Error)]
pub enum SteppedDown {
    #[error("stepped down: another deduplicator took the lease (epoch {0} is no longer ours)")]
    Lost(i64),
    #[error(
        "stepped down: a production transaction ({0}) has been in progress for {1:?}, over lease.hung_after; giving the lease to a standby"
    )]
    Hung(&'static str, Duration),
}

/// The lease of this process.
pub struct Lease {
    prod: Arc<Prod>,
    cfg: LeaseSection,
    /// `host pid` of this process, for the operator.
    label: String,
    role: AtomicU8,
    holder: std::sync::Mutex<Holder>,
    /// Fires the first time this process becomes active (the streams start then).
    active: CancellationToken,
    /// The epoch this process held when its lease session failed (0: none): it may take the
    /// lease again only at that epoch.
    was: AtomicI64,
    /// This process ended a silent holder's sessions: its next take is a `stale` takeover.
    ended_stale: AtomicBool,
}

/// What one pass of the loop on a lease session decided.
enum Next {
    /// Wait, then go on.
    Wait(Duration),
    /// The session is unusable: open another.
    Reconnect,
}

impl Lease {
    pub fn new(prod: Arc<Prod>, cfg: LeaseSection) -> Arc<Lease> {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "unknown-host".into());
        Arc::new(Lease {
            label: format!("{host} pid {}", std::process::id()),
            prod,
            cfg,
            role: AtomicU8::new(0),
            holder: std::sync::Mutex::new(Holder::default()),
            active: CancellationToken::new(),
            was: AtomicI64::new(0),
            ended_stale: AtomicBool::new(false),
        })
    }

    pub fn role(&self) -> Role {
        match self.role.load(Ordering::Acquire) {
            1 => Role::Standby,
            2 => Role::Active,
            _ => Role::Starting,
        }
    }

    fn set_role(&self, r: Role) {
        let v = match r {
            Role::Starting => 0,
            Role::Standby => 1,
            Role::Active => 2,
        };
        if self.role.swap(v, Ordering::AcqRel) != v {
            tracing::info!(role = r.label(), epoch = self.prod.epoch(), "lease role");
        }
        metrics::gauge!(m::LEADER).set(if r == Role::Active { 1.0 } else { 0.0 });
    }

    pub fn holder(&self) -> Holder {
        self.holder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// This process's label (`host pid N`).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Fires when this process first holds the lease.
    pub fn became_active(&self) -> CancellationToken {
        self.active.clone()
    }

    /// Runs until shutdown (the lease is released with its session) or until this process
    /// steps down (an error: the service stops, and a supervisor starts it again, as a standby).
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) -> anyhow::Result<()> {
        let mut backoff = kalshi_shared::retry::Backoff::new(
            kalshi_shared::retry::BackoffConfig::new(self.cfg.poll, self.cfg.takeover_after)
                .map_err(anyhow::Error::msg)?,
        );
        loop {
            if cancel.is_cancelled() {
                return Ok(());
            }
            let mut conn = match self.prod.connect_one().await {
                Ok(c) => c,
                Err(e) => {
                    self.prod.set_lease_error(Some(&e));
                    self.prod.observe(Err(&e));
                    tracing::warn!(error = %e, role = self.role().label(), "cannot open the lease session: retrying");
                    if !backoff.sleep(&cancel).await {
                        return Ok(());
                    }
                    continue;
                }
            };
            let mut worked = false;
            loop {
                let next = tokio::select! {
                    _ = cancel.cancelled() => {
                        let _ = tokio::time::timeout(Duration::from_secs(2), conn.close()).await;
                        return Ok(());
                    }
                    r = self.step(&mut conn) => r?,
                };
                match next {
                    Next::Wait(d) => {
                        backoff.reset();
                        worked = true;
                        tokio::select! {
                            _ = cancel.cancelled() => {
                                let _ = tokio::time::timeout(Duration::from_secs(2), conn.close()).await;
                                return Ok(());
                            }
                            _ = self.prod.lost().cancelled() => {
                                return Err(SteppedDown::Lost(self.holder().epoch).into());
                            }
                            _ = tokio::time::sleep(d) => {}
                        }
                    }
                    Next::Reconnect => break,
                }
            }
            // The session failed. One that worked is opened again at once: the writes wait
            // for it (a killed session, a failover's end). One that failed from its start backs
            // off (a read-only or refusing production answers at once; this must not spin).
            if worked {
                continue;
            }
            if !backoff.sleep(&cancel).await {
                return Ok(());
            }
        }
    }

    /// A deadline for one lease statement: well inside the takeover time.
    fn deadline(&self) -> Duration {
        self.cfg.takeover_after / 2
    }

    /// One pass: renew (active) or try to take the lease (otherwise).
    async fn step(&self, conn: &mut PgConnection) -> Result<Next, SteppedDown> {
        if self.prod.lost().is_cancelled() {
            return Err(SteppedDown::Lost(self.holder().epoch));
        }
        let epoch = self.prod.epoch();
        if self.role() == Role::Active && epoch != 0 {
            if let Some((label, age)) = self.prod.oldest_in_flight()
                && age > self.cfg.hung_after
            {
                tracing::error!(transaction = label, age = ?age, "not committing: giving up the lease");
                self.prod.lose();
                return Err(SteppedDown::Hung(label, age));
            }
            return Ok(match self.renew(conn, epoch).await {
                Ok(true) => Next::Wait(self.cfg.renew_every),
                Ok(false) => {
                    // Someone bumped the epoch: this process lost the lease for good.
                    self.prod.fenced(epoch);
                    return Err(SteppedDown::Lost(epoch));
                }
                Err(e) => {
                    // The session (and with it the lock) may be gone: no writes until the
                    // lease is ours again at the same epoch.
                    tracing::warn!(error = %e, epoch, "the lease session failed: holding writes until it is taken again");
                    self.prod.set_epoch(0);
                    self.was.store(epoch, Ordering::Release);
                    Next::Reconnect
                }
            });
        }
        match self.try_take(conn).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, role = self.role().label(), "lease check failed: reconnecting");
                Ok(Next::Reconnect)
            }
        }
    }

    /// Runs one lease statement under the lease's deadline. Its failure counts against
    /// production's reachability; its success only when it wrote, or on a standby (which writes
    /// nothing: that it can read is what it can tell). An active one's successful reads must not
    /// make a production that refuses writes look healthy.
    async fn call<T>(
        &self,
        op: &'static str,
        writes: bool,
        fut: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, DbError> {
        let r = match kalshi_shared::pg::timed(op, self.deadline(), fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(DbError::from(e)),
            Err(_) => Err(DbError::timeout(op, self.deadline())),
        };
        self.prod.set_lease_error(r.as_ref().err());
        match &r {
            Err(e) => {
                self.prod.observe(Err(e));
                if e.class == kalshi_shared::pg::DbErrorClass::ReadOnly {
                    // A demoted primary: the endpoint's name is resolved again, for the pool
                    // too (the sinks hold their writes meanwhile and would not see it).
                    self.prod.rebuild();
                }
            }
            Ok(_) if writes || self.role() != Role::Active => self.prod.observe(Ok(())),
            Ok(_) => {}
        }
        r
    }

    /// Renews the heartbeat at `epoch`; false when the epoch is no longer ours.
    async fn renew(&self, conn: &mut PgConnection, epoch: i64) -> Result<bool, DbError> {
        let n = self
            .call(
                "lease_renew",
                true,
                sqlx::query(
                    "UPDATE lease_heartbeat SET renewed_at = now() WHERE id = 1 AND epoch = $1",
                )
                .bind(epoch)
                .execute(&mut *conn),
            )
            .await?
            .rows_affected();
        Ok(n == 1)
    }

    /// The holder as production says, with its heartbeat's age by production's clock.
    async fn read_holder(&self, conn: &mut PgConnection) -> Result<Holder, DbError> {
        let row = self
            .call(
                "lease_read",
                false,
                sqlx::query(
                    "SELECT l.epoch, l.holder_id, l.holder, \
                            GREATEST(0, extract(epoch FROM now() - h.renewed_at) * 1000)::bigint \
                     FROM dedup_leader l JOIN lease_heartbeat h ON h.id = l.id WHERE l.id = 1",
                )
                .fetch_one(&mut *conn),
            )
            .await?;
        let h = Holder {
            epoch: row.try_get(0).map_err(DbError::from)?,
            holder_id: row.try_get(1).map_err(DbError::from)?,
            holder: row.try_get(2).map_err(DbError::from)?,
            age: Duration::from_millis(
                row.try_get::<i64, _>(3).map_err(DbError::from)?.max(0) as u64
            ),
        };
        metrics::gauge!(m::LEASE_HEARTBEAT_AGE).set(h.age.as_secs_f64());
        *self
            .holder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = h.clone();
        Ok(h)
    }

    /// Ends every session of deduplicator `holder_id` (its lease session and its pool's), so
    /// none of them holds a lock the new epoch must wait for. Returns how many.
    async fn end_sessions(&self, conn: &mut PgConnection, holder_id: &str) -> Result<i64, DbError> {
        self.call(
            "lease_end_sessions",
            false,
            sqlx::query_scalar(
                "SELECT count(pg_terminate_backend(pid, 1000)) FROM pg_stat_activity \
                 WHERE application_name = $1 AND pid <> pg_backend_pid()",
            )
            .bind(format!("kalshi-deduplicator {holder_id}"))
            .fetch_one(&mut *conn),
        )
        .await
    }

    /// Ends the session that holds the lease's lock (one of this process's own, which the
    /// server has not yet seen die).
    async fn end_lock_holder(&self, conn: &mut PgConnection) -> Result<i64, DbError> {
        self.call(
            "lease_end_sessions",
            false,
            sqlx::query_scalar(
                "SELECT count(pg_terminate_backend(pid, 1000)) FROM pg_locks \
                 WHERE locktype = 'advisory' AND classid = $1::integer::oid \
                   AND objid = $2::integer::oid AND objsubid = 2 AND granted \
                   AND pid <> pg_backend_pid()",
            )
            .bind(LOCK.0)
            .bind(LOCK.1)
            .fetch_one(&mut *conn),
        )
        .await
    }

    /// Moves the epoch to this process (only from `was` when it is not 0). None: the epoch
    /// is no longer `was`. Transactions still holding the old epoch's share lock are waited
    /// for up to `lock_timeout`; then their sessions are ended and the caller tries again.
    async fn bump(&self, conn: &mut PgConnection, was: i64) -> Result<Option<i64>, DbError> {
        let id = self.prod.id().to_owned();
        let label = self.label.clone();
        let wait_ms = self.deadline().as_millis().clamp(100, 10_000) / 2;
        self.call("lease_take", true, async move {
            let mut tx = conn.begin().await?;
            tx.execute(sqlx::AssertSqlSafe(format!(
                "SET LOCAL lock_timeout = {wait_ms}"
            )))
            .await?;
            let epoch: Option<i64> = sqlx::query_scalar(
                "UPDATE dedup_leader SET epoch = epoch + 1, holder_id = $1, holder = $2, taken_at = now() \
                 WHERE id = 1 AND ($3 = 0 OR epoch = $3) RETURNING epoch",
            )
            .bind(&id)
            .bind(&label)
            .bind(was)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(e) = epoch {
                sqlx::query("UPDATE lease_heartbeat SET epoch = $1, renewed_at = now() WHERE id = 1")
                    .bind(e)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(epoch)
        })
        .await
    }

    /// A standby's pass (or an active's whose session failed): take the lease if it is free,
    /// end a silent holder's sessions, or wait.
    async fn try_take(
        &self,
        conn: &mut PgConnection,
    ) -> Result<Result<Next, SteppedDown>, DbError> {
        let got: bool = self
            .call(
                "lease_try",
                false,
                sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
                    .bind(LOCK.0)
                    .bind(LOCK.1)
                    .fetch_one(&mut *conn),
            )
            .await?;
        let h = self.read_holder(conn).await?;
        let was = self.was.load(Ordering::Acquire);
        if was != 0 && h.epoch != was {
            self.prod.lose();
            return Ok(Err(SteppedDown::Lost(was)));
        }
        if !got {
            if was == 0 {
                self.set_role(Role::Standby);
            }
            if h.holder_id == self.prod.id() {
                // One of this process's earlier sessions still holds the lock: the server has
                // not yet noticed it is gone.
                let n = self.end_lock_holder(conn).await?;
                tracing::warn!(
                    sessions = n,
                    "this deduplicator's previous lease session still holds the lock: ended it"
                );
                return Ok(Ok(Next::Wait(Duration::from_millis(50))));
            }
            if h.age > self.cfg.takeover_after && !h.holder_id.is_empty() {
                let n = self.end_sessions(conn, &h.holder_id).await?;
                tracing::warn!(holder = %h.holder, epoch = h.epoch, heartbeat_age = ?h.age, sessions = n, "the active deduplicator stopped renewing its lease: ended its sessions to take over");
                self.ended_stale.store(true, Ordering::Release);
                return Ok(Ok(Next::Wait(Duration::from_millis(50))));
            }
            return Ok(Ok(Next::Wait(self.cfg.poll)));
        }
        if !h.holder_id.is_empty() && h.holder_id != self.prod.id() {
            // The previous holder's sessions may still hold the old epoch's share lock (a
            // transaction open in a hung or cut-off process): end them first.
            self.end_sessions(conn, &h.holder_id).await?;
        }
        let epoch = match self.bump(conn, was).await {
            Ok(Some(e)) => e,
            Ok(None) => {
                self.prod.lose();
                return Ok(Err(SteppedDown::Lost(was)));
            }
            Err(e) if e.sqlstate.as_deref() == Some("55P03") => {
                tracing::warn!(holder = %h.holder, "transactions of the previous epoch still hold its lock: ending their sessions");
                if !h.holder_id.is_empty() && h.holder_id != self.prod.id() {
                    self.end_sessions(conn, &h.holder_id).await?;
                }
                return Ok(Ok(Next::Wait(Duration::from_millis(50))));
            }
            Err(e) => return Err(e),
        };
        self.prod.set_epoch(epoch);
        self.was.store(0, Ordering::Release);
        if was == 0 {
            let kind = if self.ended_stale.swap(false, Ordering::AcqRel) {
                "stale"
            } else {
                "free"
            };
            metrics::counter!(m::TAKEOVERS, "kind" => kind).increment(1);
            self.prod.note_takeover(h.age);
            tracing::info!(epoch, kind, previous = %h.holder, previous_heartbeat_age = ?h.age, "took the lease: this deduplicator is active");
        } else {
            tracing::info!(
                epoch,
                previous = was,
                "took the lease again after its session failed"
            );
        }
        self.set_role(Role::Active);
        self.active.cancel();
        Ok(Ok(Next::Wait(self.cfg.renew_every)))
    }
}
