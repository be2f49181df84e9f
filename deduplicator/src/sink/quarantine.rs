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
