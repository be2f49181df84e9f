//! The production connection: a pool that can be rebuilt (on `25006`, so the endpoint's name is
//! resolved again after a failover), connections checked with `SHOW transaction_read_only`
//! when they have been idle, a deadline on every call, optional IAM authentication tokens,
//! and the reachability state `/health` and `dedup_rds_connected` report.
//!
//! It must never let a password or token through in an error text (they are redacted).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use kalshi_shared::pg::migrate::MigrationError;
use kalshi_shared::pg::{DbErrorClass, classify};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Executor as _, Row as _};
use tokio_util::sync::CancellationToken;

use crate::config::ProductionSection;
use crate::metrics as m;
use crate::records::Stream;

/// An error of a database call, classified for the retry rules.
#[derive(Debug)]
pub struct DbError {
    pub class: DbErrorClass,
    pub sqlstate: Option<String>,
    pub message: String,
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.sqlstate {
            Some(s) => write!(f, "{} [{s}] ({})", self.message, self.class.label()),
            None => write!(f, "{} ({})", self.message, self.class.label()),
        }
    }
}

impl std::error::Error for DbError {}

impl kalshi_shared::pg::op::Classified for DbError {
    fn class(&self) -> DbErrorClass {
        self.class
    }
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        DbError {
            class: classify(&e),
            sqlstate: kalshi_shared::pg::sqlstate(&e),
            message: redact(&e.to_string()),
        }
    }
}

impl DbError {
    pub fn timeout(what: &str, after: Duration) -> Self {
        DbError {
            class: DbErrorClass::Timeout,
            sqlstate: None,
            message: format!("{what} did not finish within {after:?}"),
        }
    }
}

/// Why migrations did not run.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// Production is unreachable or failing: retry.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The applied migrations do not match this binary: retrying cannot help.
    #[error(transparent)]
    Refused(MigrationError),
}

/// `production.database_url` does not parse (the reason, with any password redacted).
#[derive(Debug, thiserror::Error)]
#[error("production.database_url: {0}")]
pub struct BadUrl(String);

/// Error texts can quote a connection string; never let a password through.
fn redact(s: &str) -> String {
    match (s.find("://"), s.find('@')) {
        (Some(a), Some(b)) if b > a => format!("{}://***{}", &s[..a], &s[b..]),
        _ => s.to_owned(),
    }
}

/// Production, as the sinks and the operator surface see it.
pub struct Prod {
    cfg: ProductionSection,
    opts: Mutex<PgConnectOptions>,
    pool: RwLock<PgPool>,
    /// Bumped on every rebuild; the sinks clear their key caches when it moves (after a
    /// failover the new primary is the only truth about what is committed).
    generation: AtomicU64,
    connected: AtomicBool,
    failover: AtomicBool,
    failing_since: Mutex<Option<Instant>>,
    /// This process among the deduplicators sharing production (the lease's holder id; its
    /// sessions carry it in `application_name`, so a successor can end them).
    id: String,
    /// The lease epoch this process holds (0: none). Every write transaction is fenced by it.
    epoch: AtomicI64,
    /// Wakes the writers that wait for the lease when it is held again.
    leased_again: tokio::sync::Notify,
    /// A takeover waiting for its first commit: when the lease was taken, and how old the
    /// previous holder's heartbeat was then.
    takeover: Mutex<Option<(Instant, Duration)>>,
    /// Why the lease could not be taken again, while writes wait for it: the sinks report it as
    /// their own error (a refused password stalls them as `refused`, as it would without a lease).
    lease_error: Mutex<Option<(DbErrorClass, Option<String>, String)>>,
    /// Writes are fenced (set by the service).
    leased: AtomicBool,
    /// Cancelled when this process lost the lease to another for good: it stops.
    lost: CancellationToken,
    /// Production transactions in progress, by label, since when (the hung-active watchdog).
    in_flight: Mutex<HashMap<&'static str, Instant>>,
}

/// The SQLSTATE `dedup_fence` raises when the caller's epoch is no longer the lease's.
pub const FENCED: &str = "KD002";

/// A process id for the lease: the host, the pid and a random part (two processes of one
/// host, or one pid reused after a restart, are never the same holder).
fn process_id() -> String {
    format!("{:012x}", kalshi_shared::nonce() & 0xffff_ffff_ffff)
}

impl Prod {
    pub fn new(cfg: ProductionSection) -> Result<Arc<Prod>, BadUrl> {
        let opts: PgConnectOptions = cfg
            .database_url
            .expose()
            .parse()
            .map_err(|e: sqlx::Error| BadUrl(redact(&e.to_string())))?;
        // Notices ("relation ... already exists, skipping" from every idempotent DDL) are not
        // news: at the default level they were most of the log.
        let id = process_id();
        let opts = opts
            .application_name(&format!("kalshi-deduplicator {id}"))
            .options([
                (
                    "statement_timeout",
                    format!("{}", cfg.op_timeout.as_millis()),
                ),
                ("client_min_messages", "warning".to_owned()),
            ]);
        let pool = build_pool(&cfg, opts.clone());
        Ok(Arc::new(Prod {
            cfg,
            opts: Mutex::new(opts),
            pool: RwLock::new(pool),
            generation: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            failover: AtomicBool::new(false),
            failing_since: Mutex::new(Some(Instant::now())),
            id,
            epoch: AtomicI64::new(0),
            leased_again: tokio::sync::Notify::new(),
            leased: AtomicBool::new(false),
            lease_error: Mutex::new(None),
            takeover: Mutex::new(None),
            lost: CancellationToken::new(),
            in_flight: Mutex::new(HashMap::new()),
        }))
    }

    /// This process's holder id (its sessions' `application_name` is
    /// `kalshi-deduplicator <id>`).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The lease epoch held (0: none).
    pub fn epoch(&self) -> i64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub(crate) fn set_epoch(&self, epoch: i64) {
        self.epoch.store(epoch, Ordering::Release);
        metrics::gauge!(m::LEASE_EPOCH).set(epoch as f64);
        if epoch != 0 {
            self.leased_again.notify_waiters();
        }
    }

    /// Whether writes wait for the lease (fenced, and no epoch held now).
    fn awaits_lease(&self) -> bool {
        self.leased.load(Ordering::Acquire) && self.epoch() == 0
    }

    /// Sleeps `max`, or less while writes wait for the lease: then it ends the moment the
    /// lease is held again (a writer held by a lease session's failure resumes at once, not
    /// after a backoff grown while it waited).
    pub async fn retry_pause(&self, max: Duration) {
        let woken = self.leased_again.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        if self.awaits_lease() {
            let _ = tokio::time::timeout(max, woken).await;
        } else {
            tokio::time::sleep(max).await;
        }
    }

    /// The statement that opens every write transaction: `BEGIN` and the fence at the epoch
    /// held, in one round trip. Without the lease there is nothing to write with (retry).
    /// Operator commands (no lease) open a plain transaction.
    pub fn begin_fenced(&self) -> Result<(i64, String), DbError> {
        if !self.leased.load(Ordering::Acquire) {
            return Ok((0, "BEGIN".into()));
        }
        match self.epoch() {
            0 => Err(
                match &*self
                    .lease_error
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                {
                    Some((class, sqlstate, message)) => DbError {
                        class: *class,
                        sqlstate: sqlstate.clone(),
                        message: format!("the lease cannot be taken again: {message}"),
                    },
                    None => DbError {
                        class: DbErrorClass::Transient,
                        sqlstate: None,
                        message: "this deduplicator does not hold the lease (now)".into(),
                    },
                },
            ),
            e => Ok((e, format!("BEGIN; SELECT dedup_fence({e})"))),
        }
    }

    /// A transaction opened at `used` was refused by the fence. When `used` is still the
    /// epoch held, another deduplicator took the lease: this one has lost it for good (true,
    /// and `lost` fires). Otherwise this process took the lease again since (false: retry).
    pub fn fenced(&self, used: i64) -> bool {
        if self
            .epoch
            .compare_exchange(used, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            metrics::counter!(m::FENCED_COMMITS).increment(1);
            tracing::error!(
                epoch = used,
                "a commit was refused by the fencing epoch: another deduplicator holds the lease; stepping down"
            );
            self.lost.cancel();
            return true;
        }
        self.lost.is_cancelled()
    }

    /// The lease was just taken from a holder whose last heartbeat was `age` old.
    pub fn note_takeover(&self, age: Duration) {
        *self
            .takeover
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((Instant::now(), age));
    }

    /// A transaction committed: the first one after a takeover records how long it took.
    pub fn committed(&self) {
        let t = self
            .takeover
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some((taken, age)) = t {
            let secs = (age + taken.elapsed()).as_secs_f64();
            metrics::gauge!(m::TAKEOVER_SECONDS).set(secs);
            tracing::info!(
                takeover_s = format!("{secs:.3}"),
                since_lock_s = format!("{:.3}", taken.elapsed().as_secs_f64()),
                "first commit after taking the lease (takeover_s counts from the previous holder's last heartbeat)"
            );
        }
    }

    /// The lease's last failure (None: it succeeded).
    pub(crate) fn set_lease_error(&self, e: Option<&DbError>) {
        *self
            .lease_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            e.map(|e| (e.class, e.sqlstate.clone(), e.message.clone()));
    }

    /// This process lost the lease to another for good.
    pub fn lose(&self) {
        self.epoch.store(0, Ordering::Release);
        metrics::gauge!(m::LEASE_EPOCH).set(0.0);
        self.lost.cancel();
    }

    /// From now on every write of this process is fenced (the service; operator commands,
    /// which hold no lease, write unfenced).
    pub fn require_lease(&self) {
        self.leased.store(true, Ordering::Release);
    }

    /// The fence for a write transaction opened on `conn` (no-op for operator commands): it
    /// fails with `KD002` unless this process holds the lease's current epoch.
    pub async fn fence(&self, conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
        if !self.leased.load(Ordering::Acquire) {
            return Ok(());
        }
        // Epoch 0 (none held) must fail too, even before anyone took the lease.
        let e = match self.epoch() {
            0 => -1,
            e => e,
        };
        sqlx::query("SELECT dedup_fence($1)")
            .bind(e)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Fires when this process lost the lease to another.
    pub fn lost(&self) -> &CancellationToken {
        &self.lost
    }

    /// Marks a production transaction in progress until the guard drops.
    pub fn in_flight(&self, label: &'static str) -> InFlight<'_> {
        self.in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(label, Instant::now());
        InFlight { prod: self, label }
    }

    /// The oldest transaction in progress and its age.
    pub fn oldest_in_flight(&self) -> Option<(&'static str, Duration)> {
        self.in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(l, t)| (*l, t.elapsed()))
            .max_by_key(|(_, d)| *d)
    }

    /// One connection outside the pool (the lease's), with this process's options.
    pub async fn connect_one(&self) -> Result<sqlx::PgConnection, DbError> {
        let opts = self
            .opts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        match kalshi_shared::pg::timed(
            "connect_lease",
            self.cfg.connect_timeout,
            sqlx::ConnectOptions::connect(&opts),
        )
        .await
        {
            Ok(r) => Ok(r?),
            Err(_) => Err(DbError::timeout(
                "connecting to production",
                self.cfg.connect_timeout,
            )),
        }
    }

    pub fn op_timeout(&self) -> Duration {
        self.cfg.op_timeout
    }

    pub fn pool(&self) -> PgPool {
        self.pool
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Host and port of the configured endpoint (for IAM tokens).
    pub fn endpoint(&self) -> (String, u16, String) {
        let o = self
            .opts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (
            o.get_host().to_owned(),
            o.get_port(),
            o.get_username().to_owned(),
        )
    }

    /// New connections authenticate with `password` (an IAM token) from now on.
    pub fn set_password(&self, password: &str) {
        let mut o = self
            .opts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *o = o.clone().password(password);
        self.pool().set_connect_options(o.clone());
    }

    /// Closes every connection and builds a new pool (the endpoint's name is resolved again).
    pub fn rebuild(&self) {
        let opts = self
            .opts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let new = build_pool(&self.cfg, opts);
        let old = std::mem::replace(
            &mut *self
                .pool
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            new,
        );
        self.generation.fetch_add(1, Ordering::AcqRel);
        metrics::counter!(m::POOL_REBUILDS).increment(1);
        tokio::spawn(async move { old.close().await });
    }

    /// Records the outcome of a call for `/health` and `dedup_rds_connected`.
    pub fn observe(&self, result: Result<(), &DbError>) {
        match result {
            Ok(()) => {
                self.connected.store(true, Ordering::Release);
                *self
                    .failing_since
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                metrics::gauge!(m::RDS_CONNECTED).set(1.0);
            }
            Err(e) => {
                metrics::counter!(m::RDS_ERRORS, "class" => e.class.label()).increment(1);
                if matches!(
                    e.class,
                    DbErrorClass::Connection | DbErrorClass::Timeout | DbErrorClass::ReadOnly
                ) {
                    self.connected.store(false, Ordering::Release);
                    metrics::gauge!(m::RDS_CONNECTED).set(0.0);
                    let mut f = self
                        .failing_since
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    f.get_or_insert_with(Instant::now);
                }
            }
        }
    }

    /// How long writes have been failing (None while they succeed).
    pub fn failing_for(&self) -> Option<Duration> {
        self.failing_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .map(|t| t.elapsed())
    }

    /// Whether production counts as reachable for `/health`.
    pub fn reachable(&self) -> bool {
        self.connected.load(Ordering::Acquire)
            || self
                .failing_for()
                .is_none_or(|d| d < self.cfg.unhealthy_after)
    }

    /// Set while RDS events say the instance is failing over.
    pub fn set_failover(&self, v: bool) {
        self.failover.store(v, Ordering::Release);
    }

    pub fn failover(&self) -> bool {
        self.failover.load(Ordering::Acquire)
    }

    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    /// Acquires a connection within the connect timeout.
    pub async fn acquire(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>, DbError> {
        let pool = self.pool();
        match kalshi_shared::pg::timed(
            "acquire",
            self.cfg.connect_timeout + Duration::from_secs(1),
            pool.acquire(),
        )
        .await
        {
            Ok(r) => Ok(r?),
            Err(_) => Err(DbError::timeout(
                "acquiring a production connection",
                self.cfg.connect_timeout,
            )),
        }
    }

    /// Runs the embedded migrations (idempotent; serialized by an advisory lock), after
    /// checking the applied ones against this binary.
    pub async fn migrate(&self) -> Result<Vec<i32>, MigrateError> {
        let mut conn = self.acquire().await.map_err(MigrateError::Db)?;
        let fut = async {
            conn.execute("SELECT pg_advisory_lock(727274)").await?;
            let r = async {
                let done = kalshi_shared::pg::migrate::verify(&mut conn, crate::schema::MIGRATIONS)
                    .await?;
                let mut applied = Vec::new();
                for (v, sql) in crate::schema::MIGRATIONS {
                    if done.contains(v) {
                        continue;
                    }
                    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                    tx.execute(*sql).await?;
                    kalshi_shared::pg::migrate::record(&mut tx, *v, sql).await?;
                    tx.commit().await?;
                    applied.push(*v);
                }
                Ok::<_, MigrationError>(applied)
            }
            .await;
            let unlock = conn.execute("SELECT pg_advisory_unlock(727274)").await;
            let applied = r?;
            unlock?;
            Ok::<_, MigrationError>(applied)
        };
        let r = match kalshi_shared::pg::timed("migrate", self.cfg.op_timeout * 4, fut).await {
            Ok(Ok(applied)) => Ok(applied),
            Ok(Err(MigrationError::Database(e))) => Err(MigrateError::Db(e.into())),
            Ok(Err(refused)) => Err(MigrateError::Refused(refused)),
            Err(_) => Err(MigrateError::Db(DbError::timeout(
                "migrations",
                self.cfg.op_timeout * 4,
            ))),
        };
        if r.is_err() {
            conn.close_on_drop();
        }
        r
    }

    /// Every stored cursor: `(gatherer, stream) -> (cursor, instance_id)`.
    pub async fn cursors(
        &self,
    ) -> Result<std::collections::HashMap<(String, Stream), (i64, String)>, DbError> {
        let pool = self.pool();
        let fut = sqlx::query("SELECT gatherer_id, stream, cursor, instance_id FROM sync_cursors")
            .fetch_all(&pool);
        let rows = match kalshi_shared::pg::timed("read_cursors", self.cfg.op_timeout, fut).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(DbError::timeout(
                    "reading sync_cursors",
                    self.cfg.op_timeout,
                ));
            }
        };
        let mut out = std::collections::HashMap::new();
        for r in rows {
            let stream: String = r.try_get(1)?;
            let Some(s) = Stream::from_table(&stream) else {
                continue;
            };
            out.insert((r.try_get(0)?, s), (r.try_get(2)?, r.try_get(3)?));
        }
        Ok(out)
    }
}

/// A production transaction in progress (see [`Prod::in_flight`]).
pub struct InFlight<'a> {
    prod: &'a Prod,
    label: &'static str,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.prod
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(self.label);
    }
}

fn build_pool(cfg: &ProductionSection, opts: PgConnectOptions) -> PgPool {
    let idle_check_after = cfg.idle_check_after;
    let op_timeout = cfg.op_timeout;
    PgPoolOptions::new()
        .max_connections(cfg.pool_max)
        .min_connections(0)
        .acquire_timeout(cfg.connect_timeout)
        .idle_timeout(Some(Duration::from_secs(300)))
        .test_before_acquire(false)
        .before_acquire(move |conn, meta| {
            Box::pin(async move {
                if meta.idle_for < idle_check_after {
                    return Ok(true);
                }
                // A connection that sat idle may now point at a demoted primary (read-only)
                // or a dead socket: check it, with a deadline, before handing it out.
                let check = sqlx::query("SHOW transaction_read_only").fetch_one(&mut *conn);
                match kalshi_shared::pg::timed(
                    "check_read_only",
                    op_timeout.min(Duration::from_secs(5)),
                    check,
                )
                .await
                {
                    Ok(Ok(row)) => {
                        let ro: String = row.try_get(0)?;
                        if ro == "on" {
                            metrics::counter!(m::RDS_ERRORS, "class" => "read_only").increment(1);
                            tracing::warn!("an idle production connection is read-only (demoted primary?): discarding it");
                            return Ok(false);
                        }
                        Ok(true)
                    }
                    Ok(Err(_)) | Err(_) => Ok(false),
                }
            })
        })
        .connect_lazy_with(opts)
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted_from_errors() {
        assert_eq!(
            super::redact("error connecting to postgres://u:hunter2@db:5432/x"),
            "error connecting to postgres://***@db:5432/x"
        );
        assert_eq!(super::redact("plain"), "plain");
    }
}
