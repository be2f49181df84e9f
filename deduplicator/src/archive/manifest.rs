//! A period's manifest and the archive's keys.
//!
//! Keys are Hive-style, one directory per stream, date and hour, and fixed for a period, so a
//! retry or a second run writes the same key (and, by determinism, the same bytes):
//! - data: `stream=trades/date=2026-11-27/hour=09/trades-20261127T090000Z.parquet`
//! - manifest: `manifests/date=2026-11-27/hour=09/manifest-20261127T090000Z.json`
//!
//! The manifest is written last: a period is archived when its manifest is. It holds no wall
//! clock time, so it too is the same bytes for the same content.

use serde::{Deserialize, Serialize};

use super::format::SCHEMA_VERSION;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema_version: u32,
    /// Bumped each time late data changed the period (1: first archived).
    pub version: u32,
    pub period: Period,
    /// One entry per archived stream, in `format::ARCHIVED` order.
    pub streams: Vec<StreamEntry>,
    /// Windows of this period that no gatherer captured (declared gaps, merged).
    pub uncovered: Vec<UncoveredWindow>,
    /// How many gaps the gatherers declared over this period.
    pub declared_gaps: u64,
    /// Earlier versions, oldest first: what each held.
    pub history: Vec<Previous>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    pub start: String,
    pub end: String,
    pub start_ms: i64,
    pub end_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamEntry {
    pub stream: String,
    /// None when the period has no rows of this stream (no file).
    pub key: Option<String>,
    pub rows: u64,
    pub bytes: u64,
    pub min_time_ms: Option<i64>,
    pub max_time_ms: Option<i64>,
    /// SHA-256 of the file's bytes.
    pub file_sha256: Option<String>,
    /// SHA-256 of the rows (`format::ContentHash`): comparable with production directly.
    pub content_sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UncoveredWindow {
    pub stream: String,
    pub market: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Previous {
    pub version: u32,
    /// (stream, rows, content_sha256)
    pub streams: Vec<(String, u64, String)>,
}

impl Manifest {
    /// True when both describe the same rows and windows (whatever the version).
    pub fn same_content(&self, other: &Manifest) -> bool {
        self.schema_version == other.schema_version
            && self.streams == other.streams
            && self.uncovered == other.uncovered
            && self.declared_gaps == other.declared_gaps
    }

    /// Saturating: a manifest read back from S3 may say anything.
    pub fn total_rows(&self) -> u64 {
        self.streams
            .iter()
            .fold(0u64, |n, s| n.saturating_add(s.rows))
    }

    pub fn stream(&self, table: &str) -> Option<&StreamEntry> {
        self.streams.iter().find(|s| s.stream == table)
    }
}

fn parts(ms: i64) -> (String, String, String) {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let (y, mo, d) = (t.year(), u8::from(t.month()), t.day());
    let (h, mi, s) = (t.hour(), t.minute(), t.second());
    (
        format!("{y:04}-{mo:02}-{d:02}"),
        format!("{h:02}"),
        format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}Z"),
    )
}

/// The data key of a stream's file for the period starting at `start_ms` (before the prefix).
pub fn data_key(table: &str, start_ms: i64) -> String {
    let (date, hour, stamp) = parts(start_ms);
    format!("stream={table}/date={date}/hour={hour}/{table}-{stamp}.parquet")
}

pub fn manifest_key(start_ms: i64) -> String {
    let (date, hour, stamp) = parts(start_ms);
    format!("manifests/date={date}/hour={hour}/manifest-{stamp}.json")
}

pub fn period(start_ms: i64, period_ms: i64) -> Period {
    let f = kalshi_shared::time::format_rfc3339_ms;
    Period {
        start: f(start_ms),
        end: f(start_ms + period_ms),
        start_ms,
        end_ms: start_ms + period_ms,
    }
}

pub fn new_manifest(start_ms: i64, period_ms: i64) -> Manifest {
    Manifest {
        schema_version: SCHEMA_VERSION,
        version: 1,
        period: period(start_ms, period_ms),
        streams: Vec::new(),
        uncovered: Vec::new(),
        declared_gaps: 0,
        history: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hive_style_and_fixed_per_period() {
        // 2026-11-27T09:05:00Z
        let ms = 1_795_770_300_000;
        assert_eq!(
            data_key("trades", ms),
            "stream=trades/date=2026-11-27/hour=09/trades-20261127T090500Z.parquet"
        );
        assert_eq!(
            manifest_key(ms),
            "manifests/date=2026-11-27/hour=09/manifest-20261127T090500Z.json"
        );
    }
}
