//! The operator's side of the quarantine (`deduplicator quarantine list|replay`): what
//! production refused for its data, and putting it back once the cause is fixed.
//!
//! A replay writes each record through its stream's own writer transaction (the merge, so a
//! row production already holds is left alone, and the archive's touch counted), then marks the
//! quarantine row with what happened: `inserted`, `already_present`, or `refused` again (with
//! the new error) or `invalid`. Marked rows stay, as the record of what was done; a second
//! replay skips rows already resolved, so running it twice changes nothing.
//!
//! It must never delete a quarantine row, nor mark one resolved that is not in its table, nor
//! go on past an error that is not the rows' fault (it stops and says so).

use anyhow::Context as _;
use kalshi_proto::gatherer::v1 as pb;
use prost::Message as _;
use sqlx::Row as _;
use tokio_util::sync::CancellationToken;

use crate::db::Prod;
use crate::records::Stream;
pub use crate::sink::ReplayTo;
use crate::sink::{Quarantined, Replayed, replay_record};

/// Resolved replays (`replay` values): the record is in its table.
pub const RESOLVED: &[&str] = &["inserted", "already_present"];

/// One quarantined row, as listed.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: i64,
    pub created_at: String,
    pub gatherer_id: String,
    pub stream: String,
    pub cursor: i64,
    pub summary: String,
    pub error: String,
    pub sqlstate: Option<String>,
    /// `None` until replayed; then `inserted`, `already_present`, `refused` or `invalid`.
    pub replay: Option<String>,
}

/// Which rows a command acts on.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only these ids (empty: all).
    pub ids: Vec<i64>,
    /// Only this stream (a table name).
    pub stream: Option<String>,
    /// Include rows whose replay put them in their table already.
    pub resolved: bool,
}

const SELECT: &str = "SELECT id, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
     gatherer_id, stream, cursor, summary, error, sqlstate, replay, instance_id, record \
     FROM quarantine \
     WHERE (cardinality($1::bigint[]) = 0 OR id = ANY($1)) \
       AND ($2::text IS NULL OR stream = $2) \
       AND ($3 OR replay IS NULL OR NOT (replay = ANY($4))) \
     ORDER BY id";

fn entry(r: &sqlx::postgres::PgRow) -> Result<Entry, sqlx::Error> {
    Ok(Entry {
        id: r.try_get(0)?,
        created_at: r.try_get(1)?,
        gatherer_id: r.try_get(2)?,
        stream: r.try_get(3)?,
        cursor: r.try_get(4)?,
        summary: r.try_get(5)?,
        error: r.try_get(6)?,
        sqlstate: r.try_get(7)?,
        replay: r.try_get(8)?,
    })
}

/// The quarantined rows the filter names, oldest first (at most `limit`).
pub async fn list(prod: &Prod, f: &Filter, limit: usize) -> anyhow::Result<Vec<Entry>> {
    let pool = prod.pool();
    let rows = sqlx::query(SELECT)
        .bind(&f.ids)
        .bind(f.stream.as_deref())
        .bind(f.resolved)
        .bind(RESOLVED)
        .fetch_all(&pool)
        .await
        .context("read the quarantine")?;
    rows.iter()
        .take(limit)
        .map(|r| entry(r).context("read a quarantine row"))
        .collect()
}

/// Counts by outcome of one replay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    pub inserted: u64,
    pub already_present: u64,
    pub refused: u64,
    pub invalid: u64,
    /// The outcome of each row, by id.
    pub rows: Vec<(i64, String)>,
}

/// Replays the unresolved quarantined rows the filter names. Stops with an error at the
/// first failure that is not a row's fault (production unreachable, a privilege still
/// missing): rows replayed before it are marked, the rest are left for the next run.
pub async fn replay(
    to: ReplayTo,
    f: &Filter,
    cancel: &CancellationToken,
) -> anyhow::Result<ReplaySummary> {
    let pool = to.prod.pool();
    let only_unresolved = Filter {
        resolved: false,
        ..f.clone()
    };
    let rows = sqlx::query(SELECT)
        .bind(&only_unresolved.ids)
        .bind(only_unresolved.stream.as_deref())
        .bind(false)
        .bind(RESOLVED)
        .fetch_all(&pool)
        .await
        .context("read the quarantine")?;
    let mut out = ReplaySummary::default();
    for r in &rows {
        let e = entry(r).context("read a quarantine row")?;
        let instance: String = r.try_get(9).context("read a quarantine row")?;
        let bytes: Vec<u8> = r.try_get(10).context("read a quarantine row")?;
        let outcome = match (
            Stream::from_table(&e.stream),
            pb::Record::decode(&bytes[..]),
        ) {
            (None, _) => Replayed::Invalid(format!("unknown stream {:?}", e.stream)),
            (_, Err(err)) => Replayed::Invalid(format!("the stored record does not decode: {err}")),
            (Some(stream), Ok(record)) => replay_record(
                &to,
                Quarantined {
                    stream,
                    gatherer_id: &e.gatherer_id,
                    instance_id: &instance,
                    record,
                },
                cancel,
            )
            .await
            .map_err(|err| anyhow::anyhow!("replay of quarantine row {} stopped: {err}", e.id))?,
        };
        let (label, error, sqlstate) = match &outcome {
            Replayed::Inserted => {
                out.inserted += 1;
                ("inserted", None, None)
            }
            Replayed::AlreadyPresent => {
                out.already_present += 1;
                ("already_present", None, None)
            }
            Replayed::StillRefused { error, sqlstate } => {
                out.refused += 1;
                ("refused", Some(error.clone()), sqlstate.clone())
            }
            Replayed::Invalid(why) => {
                out.invalid += 1;
                ("invalid", Some(format!("invalid record: {why}")), None)
            }
        };
        sqlx::query(
            "UPDATE quarantine SET replayed_at = now(), replay = $2, \
             error = coalesce($3, error), sqlstate = CASE WHEN $3 IS NULL THEN sqlstate ELSE $4 END \
             WHERE id = $1",
        )
        .bind(e.id)
        .bind(label)
        .bind(error.map(|x| x.chars().take(2000).collect::<String>()))
        .bind(sqlstate)
        .execute(&pool)
        .await
        .with_context(|| format!("mark quarantine row {} as {label}", e.id))?;
        out.rows.push((e.id, label.to_owned()));
    }
    Ok(out)
}
