//! Quarantine: a batch that the database refuses for its data is committed in halves until
//! each poison row stands alone; those rows go to `quarantine` with their error, in the same
//! transaction that moves the cursors past them.
//!
//! It must never drop a refused row without writing it to `quarantine`, nor quarantine a row
//! that committed.

use super::*;

#[derive(Default)]
pub(super) struct QuarantineCols {
    pub(super) gatherer: Vec<String>,
    pub(super) cursor: Vec<i64>,
    pub(super) instance: Vec<String>,
    pub(super) record: Vec<Vec<u8>>,
    pub(super) summary: Vec<String>,
    pub(super) error: Vec<String>,
    pub(super) sqlstate: Vec<Option<String>>,
}

impl Sink {
    /// Commits the rows in halves until every poison row is isolated; `bad` collects them
    /// with their errors, `n` counts rows inserted.
    pub(super) fn bisect<'a, 'b, 'c>(
        &'a mut self,
        rows: &'c [&'b Row],
        cancel: &'a CancellationToken,
        bad: &'a mut Vec<(&'b Row, DbError)>,
        n: &'a mut u64,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Cancelled>> + Send + 'a>>
    where
        'b: 'a,
        'c: 'a,
    {
        Box::pin(async move {
            if rows.is_empty() {
                return Ok(());
            }
            match self.attempt(rows, &[], None, cancel).await {
                Ok(k) => {
                    *n += k;
                    Ok(())
                }
                Err(Stop::Cancelled) => Err(Cancelled),
                Err(Stop::Data(e)) if rows.len() == 1 => {
                    bad.push((rows[0], e));
                    Ok(())
                }
                Err(Stop::Data(_)) => {
                    let (a, b) = rows.split_at(rows.len() / 2);
                    self.bisect(a, cancel, bad, n).await?;
                    self.bisect(b, cancel, bad, n).await
                }
            }
        })
    }
}

/// What became of one quarantined record on replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replayed {
    /// Written to its table now.
    Inserted,
    /// Its table already held it (another gatherer's copy, or an earlier replay).
    AlreadyPresent,
    /// Refused again for its data: it stays in quarantine with the new error.
    StillRefused {
        error: String,
        sqlstate: Option<String>,
    },
    /// The stored record is not one the writers can take (a malformed record).
    Invalid(String),
}

/// Where a replay writes: production, the archive's period (its touches), the retry settings.
#[derive(Clone)]
pub struct ReplayTo {
    pub prod: Arc<Prod>,
    pub archive_period_ms: Option<i64>,
    pub retry: BackoffConfig,
    pub lifecycle_window_ms: i64,
}

/// One quarantined record and where it came from.
pub struct Quarantined<'a> {
    pub stream: Stream,
    pub gatherer_id: &'a str,
    pub instance_id: &'a str,
    pub record: pb::Record,
}

/// Writes one quarantined record through its stream's own writer transaction (the staging
/// table and the merge, with the archive's touch counted), as the writer would have; no cursor
/// moves. An error that is not the record's fault is returned: the caller stops there.
pub async fn replay_record(
    to: &ReplayTo,
    q: Quarantined<'_>,
    cancel: &CancellationToken,
) -> Result<Replayed, DbError> {
    let Quarantined {
        stream,
        gatherer_id,
        instance_id,
        record,
    } = q;
    let (prod, archive_period_ms, retry) = (to.prod.clone(), to.archive_period_ms, to.retry);
    if let Err(e) = records::validate(stream, &record) {
        return Ok(Replayed::Invalid(e.0));
    }
    let cfg = SinkConfig {
        batch_rows: 1,
        batch_interval: Duration::ZERO,
        cache_keys: 0,
        cache_window: Duration::ZERO,
        retry,
        pause_before_commit: Duration::ZERO,
        gatherers: vec![gatherer_id.to_owned()],
        panic_sink: String::new(),
        archive_period_ms,
        lifecycle_window_ms: to.lifecycle_window_ms,
    };
    let (_tx, rx) = mpsc::channel(1);
    let board = Arc::new(Board::new(&[]));
    let mut sink = Sink::new(stream, cfg, prod, board, rx);
    let row = Row {
        gatherer: 0,
        instance: Arc::from(instance_id),
        key: None,
        record,
        invalid: None,
    };
    if sink.ensure_partitions(&[&row], cancel).await.is_err() {
        return Err(DbError::timeout(
            "creating a partition (stopped)",
            Duration::ZERO,
        ));
    }
    match sink.transaction(&[&row], &[], None, false).await {
        Ok(0) => Ok(Replayed::AlreadyPresent),
        Ok(_) => Ok(Replayed::Inserted),
        Err(e) if e.class.is_data() => Ok(Replayed::StillRefused {
            error: e.message,
            sqlstate: e.sqlstate,
        }),
        Err(e) => Err(e),
    }
}
