//! Ground truth: every exchange event the simulator published, in order, on disk.
//!
//! One JSON line per event: `{"pos":N,"ts_ms":T,"type":"orderbook_delta","msg":{...}}`, where
//! `msg` is exactly the `msg` object subscribers were sent. Positions are dense from 1. The log
//! lives in a file, not in memory, so a simulator can run for hours at full rate with bounded
//! memory; a sparse in-memory index (one offset per [`STRIDE`] events) makes paging by position
//! cheap. Readers only ever see whole, flushed lines: it must never show a partial one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead as _, BufReader, BufWriter, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// The ground truth could not be written: the exchange stops publishing (an event it cannot
/// record must never be sent).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TruthFailed(pub String);

/// Events between index entries.
pub const STRIDE: u64 = 1024;

#[derive(Debug, Default)]
struct Shared {
    /// `index[k]` is the file offset of event `k * STRIDE + 1`.
    index: RwLock<Vec<u64>>,
    /// Highest position whose line is flushed to the file.
    flushed: AtomicU64,
}

/// The single writer (owned by the exchange).
pub struct TruthWriter {
    path: PathBuf,
    out: BufWriter<File>,
    offset: u64,
    last_pos: u64,
    shared: Arc<Shared>,
    failed: Option<String>,
    remove_on_drop: bool,
    limit_bytes: Option<u64>,
}

impl TruthWriter {
    /// Creates (truncates) the log at `path`.
    pub fn create(path: &Path, remove_on_drop: bool) -> io::Result<Self> {
        Self::create_limited(path, remove_on_drop, None)
    }

    /// Like [`create`](Self::create), with a size past which [`is_full`](Self::is_full) says
    /// to stop: the exchange then publishes nothing more rather than publish unrecorded events.
    pub fn create_limited(
        path: &Path,
        remove_on_drop: bool,
        limit_bytes: Option<u64>,
    ) -> io::Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)?;
        Ok(Self {
            path: path.to_owned(),
            out: BufWriter::with_capacity(1 << 20, file),
            offset: 0,
            last_pos: 0,
            shared: Arc::new(Shared::default()),
            failed: None,
            remove_on_drop,
            limit_bytes,
        })
    }

    pub fn reader(&self) -> TruthReader {
        TruthReader {
            path: self.path.clone(),
            shared: self.shared.clone(),
        }
    }

    /// Appends one event; `pos` must be the previous one plus one.
    pub fn append(&mut self, pos: u64, ts_ms: i64, kind: &str, msg: &str) {
        if self.failed.is_some() {
            return;
        }
        if (pos - 1).is_multiple_of(STRIDE)
            && let Ok(mut index) = self.shared.index.write()
        {
            index.push(self.offset);
        }
        let head = format!("{{\"pos\":{pos},\"ts_ms\":{ts_ms},\"type\":\"{kind}\",\"msg\":");

        let result = self
            .out
            .write_all(head.as_bytes())
            .and_then(|()| self.out.write_all(msg.as_bytes()))
            .and_then(|()| self.out.write_all(b"}\n"));
        match result {
            Ok(()) => {
                self.offset += (head.len() + msg.len() + 2) as u64;
                self.last_pos = pos;
            }
            Err(e) => self.failed = Some(e.to_string()),
        }
    }

    /// Makes every appended line visible to readers.
    pub fn flush(&mut self) -> Result<(), TruthFailed> {
        if let Some(e) = &self.failed {
            return Err(TruthFailed(e.clone()));
        }
        match self.out.flush() {
            Ok(()) => {
                self.shared.flushed.store(self.last_pos, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                let e = format!("flush {}: {e}", self.path.display());
                self.failed = Some(e.clone());
                Err(TruthFailed(e))
            }
        }
    }

    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Whether the size limit has been reached.
    pub fn is_full(&self) -> bool {
        self.limit_bytes.is_some_and(|l| self.offset >= l)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TruthWriter {
    fn drop(&mut self) {
        let _ = self.out.flush();
        if self.remove_on_drop {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// One page of the truth.
#[derive(Debug, Clone, Default)]
pub struct TruthPage {
    /// Whole JSON lines (without the newline), in position order.
    pub records: Vec<String>,
    /// The position to pass as `after` for the next page.
    pub next: u64,
    /// The highest readable position.
    pub head: u64,
}

/// A reader; cheap to clone, safe to use from any thread.
#[derive(Debug, Clone)]
pub struct TruthReader {
    path: PathBuf,
    shared: Arc<Shared>,
}

impl TruthReader {
    pub fn head(&self) -> u64 {
        self.shared.flushed.load(Ordering::Acquire)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Events with position > `after`, at most `limit`, optionally only of the given `types`.
    /// At most `max_scan` lines are examined, so a filtered read over a long log returns a
    /// partial (possibly empty) page whose `next` moves forward.
    pub fn read(
        &self,
        after: u64,
        limit: usize,
        types: Option<&[&str]>,
        max_scan: usize,
    ) -> io::Result<TruthPage> {
        let head = self.head();
        let mut page = TruthPage {
            records: Vec::new(),
            next: after,
            head,
        };
        if after >= head || limit == 0 {
            return Ok(page);
        }
        let stride_index = (after / STRIDE) as usize;
        let start = {
            let index = self
                .shared
                .index
                .read()
                .map_err(|_| io::Error::other("truth index lock poisoned"))?;
            index.get(stride_index).copied().unwrap_or(0)
        };
        let mut file = File::open(&self.path)?;
        file.seek(SeekFrom::Start(start))?;
        let mut reader = BufReader::with_capacity(1 << 16, file);
        let mut line = String::new();
        let mut scanned = 0usize;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 || !line.ends_with('\n') {
                break;
            }
            let Some((pos, kind)) = parse_head(&line) else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("corrupt truth line after position {}", page.next),
                ));
            };
            if pos <= after {
                continue;
            }
            if pos > head {
                break;
            }
            scanned += 1;
            page.next = pos;
            if types.is_none_or(|t| t.contains(&kind)) {
                page.records.push(line.trim_end().to_owned());
                if page.records.len() >= limit {
                    break;
                }
            }
            if scanned >= max_scan {
                break;
            }
        }
        Ok(page)
    }
}

/// Reads `pos` and `type` from the fixed line prefix.
fn parse_head(line: &str) -> Option<(u64, &str)> {
    let rest = line.strip_prefix("{\"pos\":")?;
    let (pos, rest) = rest.split_once(',')?;
    let rest = rest.split_once("\"type\":\"")?.1;
    let kind = rest.split_once('"')?.0;
    Some((pos.parse().ok()?, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_by_position_and_type() {
        let dir = std::env::temp_dir().join(format!("sim-truth-test-{}", std::process::id()));
        let path = dir.join("t.jsonl");
        let mut w = TruthWriter::create(&path, true).unwrap();
        let r = w.reader();
        for pos in 1..=5000u64 {
            let kind = if pos % 3 == 0 {
                "trade"
            } else {
                "orderbook_delta"
            };
            w.append(pos, 1000 + pos as i64, kind, &format!("{{\"n\":{pos}}}"));
        }
        assert_eq!(r.head(), 0, "nothing is visible before a flush");
        w.flush().unwrap();
        assert_eq!(r.head(), 5000);
        let page = r.read(0, 10, None, usize::MAX).unwrap();
        assert_eq!(page.records.len(), 10);
        assert_eq!(page.next, 10);
        assert!(page.records[0].starts_with(
            "{\"pos\":1,\"ts_ms\":1001,\"type\":\"orderbook_delta\",\"msg\":{\"n\":1}}"
        ));
        // Across an index stride.
        let page = r.read(1020, 10, None, usize::MAX).unwrap();
        assert!(page.records[0].starts_with("{\"pos\":1021,"));
        assert!(page.records[9].starts_with("{\"pos\":1030,"));
        // Everything exactly once, in order.
        let mut after = 0;
        let mut seen = 0;
        loop {
            let page = r.read(after, 777, None, usize::MAX).unwrap();
            if page.records.is_empty() {
                break;
            }
            for rec in &page.records {
                seen += 1;
                assert!(rec.starts_with(&format!("{{\"pos\":{seen},")));
            }
            after = page.next;
        }
        assert_eq!(seen, 5000);
        // Filtered, with a scan cap.
        let page = r.read(0, 100, Some(&["trade"]), usize::MAX).unwrap();
        assert_eq!(page.records.len(), 100);
        assert_eq!(page.next, 300);
        let page = r.read(0, 100, Some(&["trade"]), 10).unwrap();
        assert_eq!(page.records.len(), 3);
        assert_eq!(page.next, 10);
        drop(w);
        assert!(!path.exists(), "removed on drop");
        let _ = fs::remove_dir_all(dir);
    }
}
