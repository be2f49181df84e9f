//! Holes still open, kept in the local database so a SIGKILL never forgets one.
//!
//! A hole (a connection lost, a seq gap, a market subscribed late) is declared as a `gaps`
//! record only when it closes: when the market's fresh snapshot or the channel's
//! acknowledgement arrives. Held only in memory, a hole open when the process is killed was
//! lost: the next start declared its downtime from the newest stored record on, not the
//! window before it that the hole covered (found by `kalshi-stack chaos --scenario mixed`: a
//! ws-stall, then the gatherer killed before the resnapshot). Each connection publishes its
//! open holes at every tick; `keep` writes the union to `open_holes` when it changed (about
//! every second); the next start takes them over (`load`), and its connections keep them open
//! until they close as usual, or declare them at once for markets no longer collected.
//!
//! It must never lose a hole it was told of for longer than one write period, and the start
//! window (`Connection::new`) reaches back over that period too.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::Row as _;
use tokio_util::sync::CancellationToken;

use crate::metrics as m;
use crate::store::Stream;
use crate::store::rows::GapReason;

/// One open hole: `market` empty for a stream-wide one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct OpenHole {
    pub stream: Stream,
    pub market: String,
    pub from_ms: i64,
    pub reason: GapReason,
}

/// The open holes of every connection, and those a previous run left.
#[derive(Default)]
pub struct OpenHoles {
    by_conn: Mutex<HashMap<usize, Vec<OpenHole>>>,
    generation: AtomicU64,
    inherited: Mutex<Vec<OpenHole>>,
    /// Connections that took the inherited stream-wide ticker hole.
    wide_taken: Mutex<usize>,
}

impl OpenHoles {
    /// With the holes a previous run left open (`load`), for the connections to take over.
    pub fn with_inherited(inherited: Vec<OpenHole>) -> Self {
        let s = Self::default();
        if let Ok(mut i) = s.inherited.lock() {
            *i = inherited;
        }
        // Written back as they are until the connections publish: never cleared before.
        s.generation.store(0, Ordering::Relaxed);
        s
    }

    /// Takes the inherited holes `pick` selects (each is taken by one caller only).
    pub fn take_inherited(&self, mut pick: impl FnMut(&OpenHole) -> bool) -> Vec<OpenHole> {
        let Ok(mut all) = self.inherited.lock() else {
            return Vec::new();
        };
        let (mine, rest): (Vec<_>, Vec<_>) = all.drain(..).partition(|h| pick(h));
        *all = rest;
        mine
    }

    /// The inherited holes of connection `k` of `n`: its shard's market holes; the
    /// stream-wide ticker hole for every connection (which markets each covered is not
    /// known: all of them take it); the trade and lifecycle holes for connection 0.
    pub fn take_for(&self, k: usize, n: usize) -> Vec<OpenHole> {
        let mut out = self.take_inherited(|h| {
            if h.stream == Stream::Exchange {
                // The exchange watcher's (`exchange.rs`), never a connection's.
                false
            } else if h.market.is_empty() {
                k == 0 && matches!(h.stream, Stream::Trades | Stream::Lifecycle)
            } else {
                super::shard_of(&h.market, n) == k
            }
        });
        let wide_tickers = |h: &OpenHole| h.market.is_empty() && h.stream == Stream::Tickers;
        if let Ok(all) = self.inherited.lock() {
            out.extend(all.iter().filter(|h| wide_tickers(h)).cloned());
        }
        let last = self
            .wide_taken
            .lock()
            .map(|mut t| {
                *t += 1;
                *t >= n
            })
            .unwrap_or(true);
        if last {
            self.take_inherited(wide_tickers);
        }
        out
    }

    /// Connection `k`'s open holes now (sorted); a change is written at the next `keep` round.
    pub fn publish(&self, k: usize, holes: Vec<OpenHole>) {
        let Ok(mut by) = self.by_conn.lock() else {
            return;
        };
        if by.get(&k) != Some(&holes) {
            by.insert(k, holes);
            self.generation.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every open hole, one per `(stream, market)` with the earliest start; the inherited
    /// ones not yet taken over included.
    fn union(&self) -> Vec<OpenHole> {
        let mut out: BTreeMap<(Stream, String), OpenHole> = BTreeMap::new();
        let inherited = self.inherited.lock().map(|i| i.clone()).unwrap_or_default();
        let by = self.by_conn.lock().map(|b| b.clone()).unwrap_or_default();
        for h in by.into_values().flatten().chain(inherited) {
            out.entry((h.stream, h.market.clone()))
                .and_modify(|o| {
                    if h.from_ms < o.from_ms {
                        *o = h.clone();
                    }
                })
                .or_insert(h);
        }
        out.into_values().collect()
    }

    /// The holes a previous run left open.
    pub async fn load(pool: &sqlx::PgPool, op_timeout: Duration) -> anyhow::Result<Vec<OpenHole>> {
        let fut =
            sqlx::query("SELECT stream, market, from_ms, reason FROM open_holes").fetch_all(pool);
        let rows = kalshi_shared::pg::timed("open_holes_load", op_timeout, fut).await??;
        let mut out = Vec::new();
        for r in rows {
            let stream: String = r.try_get(0)?;
            let Some(stream) = Stream::from_table(&stream) else {
                tracing::warn!(stream, "an open hole of an unknown stream: skipped");
                continue;
            };
            out.push(OpenHole {
                stream,
                market: r.try_get(1)?,
                from_ms: r.try_get(2)?,
                // A label this build does not know still declares the window.
                reason: GapReason::parse(r.try_get::<&str, _>(3)?)
                    .unwrap_or(GapReason::GathererDown),
            });
        }
        Ok(out)
    }

    /// Writes the open holes whenever they changed, every `period`, until cancelled (then
    /// once more). A failed write is retried at the next round.
    pub async fn keep(
        &self,
        pool: sqlx::PgPool,
        op_timeout: Duration,
        period: Duration,
        cancel: CancellationToken,
    ) {
        let mut written = u64::MAX;
        loop {
            let stop = tokio::select! {
                _ = cancel.cancelled() => true,
                _ = tokio::time::sleep(period) => false,
            };
            let generation = self.generation.load(Ordering::Relaxed);
            if generation != written {
                let holes = self.union();
                match write(&pool, op_timeout, &holes).await {
                    Ok(()) => {
                        written = generation;
                        metrics::gauge!(m::OPEN_HOLES).set(holes.len() as f64);
                    }
                    Err(e) => {
                        metrics::counter!(m::OPEN_HOLES_WRITE_ERRORS).increment(1);
                        tracing::warn!(error = %format!("{e:#}"), holes = holes.len(), "cannot record the open holes; retrying");
                    }
                }
            }
            if stop {
                return;
            }
        }
    }
}

async fn write(
    pool: &sqlx::PgPool,
    op_timeout: Duration,
    holes: &[OpenHole],
) -> anyhow::Result<()> {
    let fut = async {
        let mut tx = pool.begin().await?;
        sqlx::query("DELETE FROM open_holes")
            .execute(&mut *tx)
            .await?;
        if !holes.is_empty() {
            sqlx::query(
                "INSERT INTO open_holes (stream, market, from_ms, reason) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[])",
            )
            .bind(holes.iter().map(|h| h.stream.table()).collect::<Vec<_>>())
            .bind(holes.iter().map(|h| h.market.as_str()).collect::<Vec<_>>())
            .bind(holes.iter().map(|h| h.from_ms).collect::<Vec<_>>())
            .bind(holes.iter().map(|h| h.reason.as_str()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok::<(), sqlx::Error>(())
    };
    kalshi_shared::pg::timed("open_holes_write", op_timeout, fut).await??;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hole(stream: Stream, market: &str, from_ms: i64) -> OpenHole {
        OpenHole {
            stream,
            market: market.into(),
            from_ms,
            reason: GapReason::Disconnect,
        }
    }

    #[test]
    fn the_union_keeps_the_earliest_start_per_stream_and_market_inherited_included() {
        let h = OpenHoles::with_inherited(vec![hole(Stream::OrderbookDeltas, "A", 5)]);
        h.publish(
            0,
            vec![
                hole(Stream::Tickers, "", 20),
                hole(Stream::OrderbookDeltas, "A", 9),
            ],
        );
        h.publish(1, vec![hole(Stream::Tickers, "", 10)]);
        assert_eq!(
            h.union(),
            vec![
                hole(Stream::OrderbookDeltas, "A", 5),
                hole(Stream::Tickers, "", 10)
            ]
        );
        let taken = h.take_inherited(|x| x.market == "A");
        assert_eq!(taken.len(), 1);
        assert!(h.take_inherited(|_| true).is_empty(), "taken once");
        assert_eq!(h.union()[0].from_ms, 9);
    }

    #[test]
    fn each_connection_takes_its_shard_and_every_one_the_stream_wide_ticker_hole() {
        let (a, b) = ("KXA-1", "KXB-2");
        let h = OpenHoles::with_inherited(vec![
            hole(Stream::OrderbookDeltas, a, 1),
            hole(Stream::OrderbookDeltas, b, 2),
            hole(Stream::Tickers, "", 3),
            hole(Stream::Lifecycle, "", 4),
        ]);
        let n = 2;
        let mut got: Vec<Vec<OpenHole>> = (0..n).map(|k| h.take_for(k, n)).collect();
        for g in &mut got {
            g.sort();
        }
        let all: Vec<&OpenHole> = got.iter().flatten().collect();
        assert_eq!(all.iter().filter(|x| x.market == a).count(), 1);
        assert_eq!(all.iter().filter(|x| x.market == b).count(), 1);
        assert_eq!(
            all.iter().filter(|x| x.stream == Stream::Tickers).count(),
            n
        );
        assert!(got[0].iter().any(|x| x.stream == Stream::Lifecycle));
        assert!(h.take_inherited(|_| true).is_empty(), "nothing left behind");
    }
}
