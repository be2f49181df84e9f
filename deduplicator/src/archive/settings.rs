//! `[archive]` settings: what the file format (`kalshi_shared::config::deduplicator`) means,
//! checked key by key before the service starts.

use std::time::Duration;

use kalshi_shared::config::deduplicator::ArchiveSection;
use kalshi_shared::config::{ConfigError, in_range, positive};
use kalshi_shared::retry::BackoffConfig;

/// Validated `[archive]` settings.
#[derive(Debug, Clone)]
pub struct ArchiveConfig {
    pub section: ArchiveSection,
    pub period_ms: i64,
    pub retry: BackoffConfig,
}

pub(crate) fn validate(a: ArchiveSection) -> Result<Option<ArchiveConfig>, ConfigError> {
    if !a.enabled {
        return Ok(None);
    }
    let b = &a.bucket;
    if !a.directory.is_empty() {
        if !b.is_empty() || !a.endpoint_url.is_empty() {
            return Err(ConfigError::key(
                "archive.directory",
                "a local directory or an S3 bucket, not both (unset archive.bucket and archive.endpoint_url)",
            ));
        }
        if !std::path::Path::new(&a.directory).is_absolute() {
            return Err(ConfigError::key(
                "archive.directory",
                "must be an absolute path",
            ));
        }
    } else if !(3..=63).contains(&b.len())
        || !b
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
    {
        return Err(ConfigError::key(
            "archive.bucket",
            "an S3 bucket name: 3-63 lowercase letters, digits, '.' or '-'",
        ));
    }
    if !(a.prefix.is_empty() || a.prefix.ends_with('/'))
        || a.prefix.starts_with('/')
        || a.prefix.split('/').any(|p| p == "." || p == "..")
    {
        return Err(ConfigError::key(
            "archive.prefix",
            "empty, or a key prefix ending in '/' (not starting with one)",
        ));
    }
    if !a.endpoint_url.is_empty() && !a.endpoint_url.starts_with("http") {
        return Err(ConfigError::key(
            "archive.endpoint_url",
            "must be an http(s) URL",
        ));
    }
    let secs = a.period.as_secs();
    if a.period.subsec_nanos() != 0 || !(1..=86_400).contains(&secs) || 86_400 % secs != 0 {
        return Err(ConfigError::key(
            "archive.period",
            "whole seconds between 1s and 24h that divide a day (1m, 5m, 1h, ...)",
        ));
    }
    if a.settle > Duration::from_secs(86_400) {
        return Err(ConfigError::key("archive.settle", "must be at most 24h"));
    }
    positive("archive.check_interval", a.check_interval)?;
    positive("archive.attempt_timeout", a.attempt_timeout)?;
    if !(Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&a.statement_timeout) {
        return Err(ConfigError::key(
            "archive.statement_timeout",
            "between 1s and 24h",
        ));
    }
    in_range(
        "archive.max_periods_per_check",
        a.max_periods_per_check,
        1,
        10_000,
    )?;
    in_range("archive.row_group_rows", a.row_group_rows, 1, 100_000_000)?;
    in_range(
        "archive.row_group_bytes",
        a.row_group_bytes,
        1 << 20,
        1 << 30,
    )?;
    in_range("archive.zstd_level", a.zstd_level, 1, 22)?;
    // S3's minimum part is 5 MiB; an S3-compatible endpoint may take smaller ones (the tests'
    // moto is told to), which lets multipart be exercised on small files.
    let min_part = if a.endpoint_url.is_empty() {
        5 << 20
    } else {
        4 << 10
    };
    in_range("archive.part_size", a.part_size, min_part, 5 << 30)?;
    in_range(
        "archive.multipart_threshold",
        a.multipart_threshold,
        a.part_size,
        5 << 30,
    )?;
    in_range("archive.max_attempts", a.max_attempts, 1, 100)?;
    if a.spool_dir.is_empty() {
        return Err(ConfigError::key("archive.spool_dir", "required"));
    }
    let retry = BackoffConfig::new(a.retry_initial, a.retry_max)
        .map_err(|e| ConfigError::key("archive.retry_initial", e))?;
    Ok(Some(ArchiveConfig {
        period_ms: secs as i64 * 1000,
        retry,
        section: a,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(mutate: impl FnOnce(&mut ArchiveSection)) -> Result<Option<ArchiveConfig>, String> {
        let mut a = ArchiveSection {
            enabled: true,
            bucket: "kalshi-archive".into(),
            ..ArchiveSection::default()
        };
        mutate(&mut a);
        validate(a).map_err(|e| e.0)
    }

    #[test]
    fn archive_settings_are_checked_naming_the_key() {
        assert!(
            with(|a| a.enabled = false).unwrap().is_none(),
            "off by default"
        );
        let on = with(|_| {}).unwrap().unwrap();
        assert_eq!(on.period_ms, 3_600_000);
        let local = with(|a| {
            a.bucket = String::new();
            a.directory = "/var/lib/kalshi-data/archive".into();
        });
        assert!(
            local.is_ok_and(|c| c.is_some()),
            "a local directory instead of a bucket"
        );
        type Mutate = fn(&mut ArchiveSection);
        let cases: Vec<(Mutate, &str)> = vec![
            (|a| a.bucket = "Not_A_Bucket".into(), "archive.bucket"),
            (|a| a.bucket = String::new(), "archive.bucket"),
            (|a| a.prefix = "no-slash".into(), "archive.prefix"),
            (|a| a.prefix = "/abs/".into(), "archive.prefix"),
            (|a| a.prefix = "v1/../".into(), "archive.prefix"),
            (
                |a| a.directory = "/var/lib/kalshi-data/archive".into(),
                "archive.directory",
            ),
            (
                |a| {
                    a.bucket = String::new();
                    a.directory = "relative/archive".into();
                },
                "archive.directory",
            ),
            (
                |a| a.endpoint_url = "localhost:9000".into(),
                "archive.endpoint_url",
            ),
            (|a| a.period = Duration::from_secs(7), "archive.period"),
            (|a| a.period = Duration::from_millis(1500), "archive.period"),
            (
                |a| a.period = Duration::from_secs(2 * 86_400),
                "archive.period",
            ),
            (|a| a.row_group_rows = 0, "archive.row_group_rows"),
            (|a| a.row_group_bytes = 1000, "archive.row_group_bytes"),
            (|a| a.zstd_level = 23, "archive.zstd_level"),
            // S3's 5 MiB minimum part, unless an S3-compatible endpoint is named.
            (|a| a.part_size = 1 << 20, "archive.part_size"),
            (
                |a| a.multipart_threshold = 1 << 20,
                "archive.multipart_threshold",
            ),
            (|a| a.max_attempts = 0, "archive.max_attempts"),
            (|a| a.spool_dir = String::new(), "archive.spool_dir"),
        ];
        for (mutate, key) in cases {
            let e = with(mutate).unwrap_err();
            assert!(e.starts_with(&format!("{key}:")), "{key}: {e}");
        }
        for ok in [60, 300, 86_400, 1] {
            with(|a| a.period = Duration::from_secs(ok)).unwrap();
        }
        with(|a| {
            a.endpoint_url = "http://127.0.0.1:9000".into();
            a.part_size = 4096;
            a.multipart_threshold = 4096;
        })
        .unwrap();
    }
}
