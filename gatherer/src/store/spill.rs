//! Rows a writer could not store before its shutdown deadline, kept on disk and replayed into
//! the same database at the next start.
//!
//! A writer that stops while the local database is unavailable writes what it still holds as
//! one binary `COPY` payload to `<spill_dir>/<instance_id>/<table>-<ms>-<first id>.copy`
//! (written to a temporary name, synced, then renamed, so a file is whole or absent). At the
//! next start, before any writer runs, each file of this database's instance is loaded with
//! fresh cursors after the table's highest, in one transaction that also records the file's
//! name in `spill_replayed`; the file is then removed. A crash between the commit and the
//! removal therefore never loads a file twice. A file that cannot be parsed is renamed to
//! `*.corrupt`, logged and counted, and never blocks the start.
//!
//! A file can hold rows the database did commit: the batch whose commit was in doubt when the
//! database went away (its outcome unknown) is spilled with its ids. Rows whose id the table
//! already holds are that batch, committed: they are left out, so nothing is stored twice (a
//! gap record would reach production twice, keyed by its id). Fresh ids start above the table's
//! highest id and above what retention has dropped, so a reader is never told a loaded row is
//! gone.
//!
//! It must never: replay a file into another database, load a file twice, store a row the
//! database already holds, or give a row an id at or below the retention mark.

use std::path::{Path, PathBuf};

use sqlx::postgres::PgPool;
use sqlx::{AssertSqlSafe, Row as _};

use crate::metrics as m;
use crate::store::Stream;

/// Where this database's spilled rows go.
#[derive(Debug, Clone)]
pub struct Spill {
    dir: PathBuf,
}

impl Spill {
    /// The directory for one database (`instance_id` from its `meta` table).
    pub fn new(root: &Path, instance_id: &str) -> Self {
        Self {
            dir: root.join(instance_id),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes one payload durably; returns its path.
    pub fn write(&self, stream: Stream, first_id: i64, payload: &[u8]) -> std::io::Result<PathBuf> {
        use std::io::Write as _;
        std::fs::create_dir_all(&self.dir)?;
        let name = format!(
            "{}-{}-{first_id}.copy",
            stream.table(),
            kalshi_shared::time::now_ms()
        );
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(payload)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(&self.dir)?.sync_all()?;
        Ok(path)
    }

    /// This database's spilled files of one stream, oldest first.
    fn files(&self, stream: Stream) -> std::io::Result<Vec<PathBuf>> {
        let prefix = format!("{}-", stream.table());
        let mut out: Vec<(i64, i64, PathBuf)> = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        for e in entries {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name
                .strip_prefix(&prefix)
                .and_then(|r| r.strip_suffix(".copy"))
            else {
                continue;
            };
            // `<ms>-<first id>`; a table name that is a prefix of another has no digit next.
            let mut parts = rest.splitn(2, '-');
            let (Some(Ok(ms)), Some(Ok(first))) = (
                parts.next().map(str::parse::<i64>),
                parts.next().map(str::parse::<i64>),
            ) else {
                continue;
            };
            out.push((ms, first, e.path()));
        }
        out.sort();
        Ok(out.into_iter().map(|(_, _, p)| p).collect())
    }

    /// Loads every spilled file of `stream` (see the module doc). Returns the rows loaded.
    pub async fn replay(&self, pool: &PgPool, stream: Stream) -> anyhow::Result<u64> {
        let mut loaded = 0;
        for path in self.files(stream)? {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let key = format!("{}/{name}", self.dir.display());
            let payload = std::fs::read(&path)?;
            let mut tx = pool.begin().await?;
            let fresh =
                sqlx::query("INSERT INTO spill_replayed (name) VALUES ($1) ON CONFLICT DO NOTHING")
                    .bind(&key)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
            if !fresh {
                tx.rollback().await?;
                tracing::info!(file = %path.display(), "spilled rows were loaded before; removing the file");
                std::fs::remove_file(&path)?;
                continue;
            }
            let next: i64 = sqlx::query(AssertSqlSafe(format!(
                "SELECT GREATEST(COALESCE((SELECT max(id) FROM {}), 0), \
                                 COALESCE((SELECT dropped_through FROM retention_marks WHERE stream = $1), 0)) + 1",
                stream.table()
            )))
            .bind(stream.table())
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
            // The rows of a batch whose commit was in doubt and did commit are there already.
            let ids = match cursors(&payload) {
                Ok(ids) => ids,
                Err(e) => {
                    tx.rollback().await?;
                    set_aside(&path, stream, &e)?;
                    continue;
                }
            };
            let present: Vec<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT id FROM {} WHERE id = ANY($1)",
                stream.table()
            )))
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?;
            let payload = if present.is_empty() {
                payload
            } else {
                let present: std::collections::HashSet<i64> = present.into_iter().collect();
                tracing::info!(file = %path.display(), rows = present.len(), "spilled rows of a batch whose commit was in doubt are stored already: leaving them out");
                match keep_rows(&payload, |id| !present.contains(&id)) {
                    Ok(p) => p,
                    Err(e) => {
                        tx.rollback().await?;
                        set_aside(&path, stream, &e)?;
                        continue;
                    }
                }
            };
            let (payload, rows) = match renumber(&payload, next) {
                Ok(r) => r,
                Err(e) => {
                    tx.rollback().await?;
                    set_aside(&path, stream, &e)?;
                    continue;
                }
            };
            if rows > 0 {
                crate::store::writer::load(&mut tx, stream, payload).await?;
            }
            tx.commit().await?;
            std::fs::remove_file(&path)?;
            metrics::counter!(m::SPILL_REPLAYED_ROWS, "table" => stream.table()).increment(rows);
            tracing::info!(file = %path.display(), rows, first_id = next, "loaded rows spilled at the last shutdown");
            loaded += rows;
        }
        Ok(loaded)
    }
}

/// Moves a file that cannot be read aside (`*.corrupt`), logged and counted.
fn set_aside(path: &Path, stream: Stream, e: &Damaged) -> std::io::Result<()> {
    metrics::counter!(m::SPILL_CORRUPT_FILES, "table" => stream.table()).increment(1);
    let bad = path.with_extension("corrupt");
    tracing::error!(file = %path.display(), error = %e, moved_to = %bad.display(), "a spilled file cannot be read: its rows are not loaded; kept for inspection");
    std::fs::rename(path, &bad)
}

/// A spilled payload that is not a whole binary COPY payload of rows with a bigint cursor.
#[derive(Debug, thiserror::Error)]
#[error("damaged spill payload: {0}")]
pub struct Damaged(String);

/// The byte ranges of a binary COPY payload: the header, each row (with the offset of its
/// `bigint` cursor, its first field), and the trailer.
struct Layout {
    header: usize,
    rows: Vec<(usize, usize, usize)>,
}

fn layout(payload: &[u8]) -> Result<Layout, Damaged> {
    const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
    if !payload.starts_with(SIGNATURE) || payload.len() < 19 {
        return Err(Damaged("not a binary COPY payload".into()));
    }
    let be_i16 = |at: usize| -> Result<i16, Damaged> {
        payload
            .get(at..at + 2)
            .and_then(|b| b.try_into().ok())
            .map(i16::from_be_bytes)
            .ok_or_else(|| Damaged(format!("truncated at byte {at}")))
    };
    let be_i32 = |at: usize| -> Result<i32, Damaged> {
        payload
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(i32::from_be_bytes)
            .ok_or_else(|| Damaged(format!("truncated at byte {at}")))
    };
    let ext =
        usize::try_from(be_i32(15)?).map_err(|_| Damaged("negative header extension".into()))?;
    let header = 19 + ext;
    let mut at = header;
    let mut rows = Vec::new();
    loop {
        let start = at;
        let fields = be_i16(at)?;
        at += 2;
        if fields == -1 {
            break;
        }
        if fields < 1 {
            return Err(Damaged(format!("row {} has {fields} fields", rows.len())));
        }
        let mut cursor_at = 0;
        for f in 0..fields {
            let len = be_i32(at)?;
            at += 4;
            if f == 0 {
                if len != 8 {
                    return Err(Damaged(format!(
                        "row {}: the cursor field has length {len}",
                        rows.len()
                    )));
                }
                cursor_at = at;
            }
            if len > 0 {
                at += len as usize;
                if at > payload.len() {
                    return Err(Damaged(format!(
                        "row {}: field {f} runs past the end",
                        rows.len()
                    )));
                }
            }
        }
        rows.push((start, at, cursor_at));
    }
    if at != payload.len() {
        return Err(Damaged(format!(
            "{} bytes after the trailer",
            payload.len() - at
        )));
    }
    Ok(Layout { header, rows })
}

/// The cursors of a binary COPY payload's rows, in order.
pub fn cursors(payload: &[u8]) -> Result<Vec<i64>, Damaged> {
    let l = layout(payload)?;
    Ok(l.rows
        .iter()
        .map(|(_, _, c)| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&payload[*c..*c + 8]);
            i64::from_be_bytes(b)
        })
        .collect())
}

/// The payload with only the rows whose cursor `keep` accepts.
pub fn keep_rows(payload: &[u8], keep: impl Fn(i64) -> bool) -> Result<Vec<u8>, Damaged> {
    let l = layout(payload)?;
    let ids = cursors(payload)?;
    let mut out = payload[..l.header].to_vec();
    for ((start, end, _), id) in l.rows.iter().zip(ids) {
        if keep(id) {
            out.extend_from_slice(&payload[*start..*end]);
        }
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    Ok(out)
}

/// Rewrites the first field (the `bigint` cursor) of every row of a binary COPY payload to
/// `first, first + 1, ...`. Returns the payload and its row count.
pub fn renumber(payload: &[u8], first: i64) -> Result<(Vec<u8>, u64), Damaged> {
    let l = layout(payload)?;
    let mut out = payload.to_vec();
    for (i, (_, _, c)) in l.rows.iter().enumerate() {
        let id = first + i as i64;
        out[*c..*c + 8].copy_from_slice(&id.to_be_bytes());
    }
    Ok((out, l.rows.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kalshi_shared::pg::CopyEncoder;

    #[test]
    fn renumber_rewrites_every_cursor_and_nothing_else() {
        let mut e = CopyEncoder::new(3);
        for i in 0..3 {
            e.row().i64(100 + i).text("x").null();
        }
        let payload = e.finish();
        let (out, rows) = renumber(&payload, 7).unwrap();
        assert_eq!(rows, 3);
        let mut want = CopyEncoder::new(3);
        for i in 0..3 {
            want.row().i64(7 + i).text("x").null();
        }
        assert_eq!(out, want.finish().to_vec());
    }

    #[test]
    fn rows_are_kept_by_cursor_and_the_rest_renumbered() {
        let mut e = CopyEncoder::new(2);
        for i in 0..4 {
            e.row().i64(10 + i).text(&format!("r{i}"));
        }
        let payload = e.finish();
        assert_eq!(cursors(&payload).unwrap(), vec![10, 11, 12, 13]);
        let kept = keep_rows(&payload, |id| id >= 12).unwrap();
        let (out, rows) = renumber(&kept, 100).unwrap();
        assert_eq!(rows, 2);
        let mut want = CopyEncoder::new(2);
        want.row().i64(100).text("r2");
        want.row().i64(101).text("r3");
        assert_eq!(out, want.finish().to_vec());
        let none = keep_rows(&payload, |_| false).unwrap();
        assert_eq!(renumber(&none, 1).unwrap().1, 0);
    }

    #[test]
    fn a_damaged_payload_is_refused() {
        let mut e = CopyEncoder::new(2);
        e.row().i64(1).text("abc");
        let payload = e.finish().to_vec();
        assert!(renumber(&payload[..payload.len() - 3], 1).is_err());
        assert!(renumber(b"not copy", 1).is_err());
        let mut e = CopyEncoder::new(1);
        e.row().i32(5);
        assert!(
            renumber(&e.finish(), 1).is_err(),
            "a cursor must be a bigint"
        );
    }
}
