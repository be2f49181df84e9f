//! Building a period from production: one `REPEATABLE READ` snapshot for every stream, the
//! touches and the gaps, streamed into the spool's Parquet files while the content checksums
//! are taken: rows are decoded, hashed and compressed on the archiver's low-priority thread,
//! never on the workers the sources and sinks need.
//!
//! It must never hold more than one row group of a stream in memory.

use std::io::Write;
use std::path::PathBuf;

use sqlx::Executor as _;
use tokio_stream::StreamExt as _;

use super::format::{self, ARCHIVED, ContentHash, FileWriter};
use super::manifest::{self, Manifest, StreamEntry, UncoveredWindow};
use super::{ArchiveError, Archiver};
use crate::records::Stream;

/// What production holds for one period, read in one snapshot.
pub struct Built {
    pub manifest: Manifest,
    /// Spool files by stream (only when built for upload).
    pub files: Vec<(Stream, PathBuf)>,
    pub touches: i64,
}

/// Writes the file and hashes its bytes on the way.
struct HashingFile {
    out: std::io::BufWriter<std::fs::File>,
    hash: ring::digest::Context,
    bytes: u64,
}

impl Write for HashingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Rows handed to the archiver's thread at a time.
const CHUNK_ROWS: usize = 2_048;

/// One stream's file and checksums while its rows are read.
struct Encoding {
    stream: Stream,
    /// Columns the content checksum covers (the schema version's).
    width: usize,
    writer: Option<FileWriter<HashingFile>>,
    content: ContentHash,
    rows: u64,
    min_t: Option<i64>,
    max_t: Option<i64>,
}

impl Encoding {
    /// Decodes, checksums and buffers `rows`, writing a row group whenever one is full.
    fn take(&mut self, rows: Vec<sqlx::postgres::PgRow>) -> Result<(), ArchiveError> {
        for r in &rows {
            let row = format::from_pg(self.stream, r)?;
            let t = format::row_time(self.stream, &row);
            self.min_t = Some(self.min_t.map_or(t, |m| m.min(t)));
            self.max_t = Some(self.max_t.map_or(t, |m| m.max(t)));
            self.content.row(&row[..self.width.min(row.len())]);
            self.rows += 1;
            if let Some(w) = self.writer.as_mut() {
                w.push(row);
                if w.group_full() {
                    w.flush_group()
                        .map_err(|e| ArchiveError::new("encode", e))?;
                }
            }
        }
        Ok(())
    }
}

impl Archiver {
    /// [`Encoding::take`] on the archiver's low-priority thread (CPU work: decoding, hashing,
    /// compression), so that it never holds a worker the sources and sinks need.
    async fn encode(
        &self,
        mut enc: Encoding,
        rows: Vec<sqlx::postgres::PgRow>,
    ) -> Result<Encoding, ArchiveError> {
        self.cpu()
            .spawn_blocking(move || enc.take(rows).map(|()| enc))
            .await
            .map_err(|e| ArchiveError::new("encode", e))?
    }

    /// In the current transaction: statements may run up to `archive.statement_timeout`.
    pub(super) async fn long_statements(
        &self,
        conn: &mut sqlx::PgConnection,
    ) -> Result<(), ArchiveError> {
        let ms = self.cfg.section.statement_timeout.as_millis();
        conn.execute(sqlx::AssertSqlSafe(format!(
            "SET LOCAL statement_timeout = {ms}"
        )))
        .await?;
        Ok(())
    }

    fn spool_path(&self, table: &str, start_ms: i64) -> PathBuf {
        self.spool.join(format!("{table}-{start_ms}.parquet.part"))
    }

    /// Reads the period from production in one snapshot: per stream the row count, time
    /// range and content checksum, and (with `write`) the Parquet files in the spool.
    pub async fn build(&self, start_ms: i64, write: bool) -> Result<Built, ArchiveError> {
        self.build_as(start_ms, write, format::SCHEMA_VERSION).await
    }

    /// [`Self::build`] with the content checksums of schema `version`'s columns (to verify a
    /// period an older version archived; files are only ever written in the current one).
    pub async fn build_as(
        &self,
        start_ms: i64,
        write: bool,
        version: u32,
    ) -> Result<Built, ArchiveError> {
        let end_ms = start_ms + self.period_ms();
        let mut conn = self
            .prod
            .acquire()
            .await
            .map_err(|e| ArchiveError::new("database", e))?;
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        // Streaming a period's rows takes as long as the period is busy: its own deadline, not
        // production.op_timeout (an hour of a busy day is millions of deltas).
        let r = match self.long_statements(&mut conn).await {
            Ok(()) => {
                self.build_in(&mut conn, (start_ms, end_ms), write, version)
                    .await
            }
            Err(e) => Err(e),
        };
        let _ = conn.execute("ROLLBACK").await;
        if r.is_err() {
            for s in ARCHIVED {
                let _ = std::fs::remove_file(self.spool_path(s.table(), start_ms));
            }
        }
        r
    }

    async fn build_in(
        &self,
        conn: &mut sqlx::PgConnection,
        (start_ms, end_ms): (i64, i64),
        write: bool,
        version: u32,
    ) -> Result<Built, ArchiveError> {
        if write && version != format::SCHEMA_VERSION {
            return Err(ArchiveError::new(
                "encode",
                format!(
                    "files are written in schema version {} only",
                    format::SCHEMA_VERSION
                ),
            ));
        }
        let touches: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(touches), 0)::bigint FROM archive_touch WHERE period_start_ms = $1",
        )
        .bind(start_ms)
        .fetch_one(&mut *conn)
        .await?;
        let mut man = manifest::new_manifest(start_ms, self.period_ms());
        man.schema_version = version;
        let mut files = Vec::new();
        if format::columns_at(ARCHIVED[0], version).is_none() {
            return Err(ArchiveError::new(
                "decode",
                format!("schema version {version} is newer than this build knows"),
            ));
        }
        for stream in ARCHIVED {
            // A stream the version did not archive yet has no entry in its manifests.
            let Some(width) = format::columns_at(stream, version).map(<[_]>::len) else {
                continue;
            };
            let table = stream.table();
            let path = self.spool_path(table, start_ms);
            let writer = if write {
                let f = std::fs::File::create(&path)
                    .map_err(|e| ArchiveError::new("io", format!("{}: {e}", path.display())))?;
                let out = HashingFile {
                    out: std::io::BufWriter::with_capacity(1 << 20, f),
                    hash: ring::digest::Context::new(&ring::digest::SHA256),
                    bytes: 0,
                };
                Some(FileWriter::with_settings(stream, out, &self.cfg.section)?)
            } else {
                None
            };
            let mut enc = Encoding {
                stream,
                width,
                writer,
                content: ContentHash::default(),
                rows: 0,
                min_t: None,
                max_t: None,
            };
            let sql = format::select_sql(stream);
            let mut it = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(start_ms)
                .bind(end_ms)
                .fetch(&mut *conn);
            // Rows are taken off the socket here and decoded, hashed and encoded on the
            // archiver's low-priority thread, a chunk at a time, in order.
            let mut chunk = Vec::with_capacity(CHUNK_ROWS);
            while let Some(r) = it.next().await {
                chunk.push(r?);
                if chunk.len() >= CHUNK_ROWS {
                    enc = self.encode(enc, std::mem::take(&mut chunk)).await?;
                }
            }
            drop(it);
            if !chunk.is_empty() {
                enc = self.encode(enc, chunk).await?;
            }
            let Encoding {
                writer,
                content,
                rows,
                min_t,
                max_t,
                ..
            } = enc;
            let mut entry = StreamEntry {
                stream: table.to_owned(),
                key: None,
                rows,
                bytes: 0,
                min_time_ms: min_t,
                max_time_ms: max_t,
                file_sha256: None,
                content_sha256: content.finish(),
            };
            if let Some(w) = writer {
                let mut out = self
                    .cpu()
                    .spawn_blocking(move || w.finish())
                    .await
                    .map_err(|e| ArchiveError::new("encode", e))?
                    .map_err(|e| ArchiveError::new("encode", e))?;
                out.flush()
                    .map_err(|e| ArchiveError::new("io", format!("{}: {e}", path.display())))?;
                if rows > 0 {
                    entry.key = Some(self.store.key(&manifest::data_key(table, start_ms)));
                    entry.bytes = out.bytes;
                    entry.file_sha256 = Some(format::hex(out.hash.finish().as_ref()));
                    files.push((stream, path));
                } else {
                    drop(out);
                    let _ = std::fs::remove_file(&path);
                }
            } else if rows > 0 {
                entry.key = Some(self.store.key(&manifest::data_key(table, start_ms)));
            }
            man.streams.push(entry);
        }
        // Closed interval [a, b - 1]: the period, as coverage counts it.
        let gaps = sqlx::query(crate::coverage::GAPS_SQL)
            .bind(start_ms)
            .bind(end_ms - 1)
            .fetch_all(&mut *conn)
            .await?;
        let rows = crate::coverage::decode(&gaps)?;
        man.declared_gaps = rows.len() as u64;
        man.uncovered = crate::coverage::uncovered(&rows, &self.gatherers, start_ms, end_ms - 1)
            .into_iter()
            .map(|u| UncoveredWindow {
                stream: u.stream,
                market: u.market,
                from_ms: u.from_ms,
                to_ms: u.to_ms,
                reasons: u.reasons,
            })
            .collect();
        Ok(Built {
            manifest: man,
            files,
            touches,
        })
    }
}
