//! The archive bucket through `aws-sdk-s3`: whole-object puts for small files, multipart for
//! large ones (aborted on failure, so no partial object is ever visible), SHA-256 checksums
//! that S3 verifies on receipt and that are kept as object metadata, downloads hashed on the
//! way to disk, and the SDK's standard retry (jittered backoff on 5xx, SlowDown and timeouts).
//!
//! Or a local directory in the same layout (`archive.directory`: one machine, no S3), where
//! an object is written to a temporary file, synced and renamed into place.
//!
//! It must never report an upload as done before S3 (or the file system) has acknowledged the
//! whole object.

use std::path::Path;

use aws_sdk_s3::config::{Region, retry::RetryConfig, timeout::TimeoutConfig};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use base64::Engine as _;
use kalshi_shared::identity::sha256_hex;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::config::ArchiveConfig;

/// Metadata key holding the hex SHA-256 of the whole object.
const SHA_META: &str = "sha256";

/// An S3 failure, with the class `archive_errors_total` counts it under.
#[derive(Debug, thiserror::Error)]
#[error("{op} {key}: {message}")]
pub struct S3Error {
    pub class: &'static str,
    pub op: &'static str,
    pub key: String,
    pub message: String,
}

/// What HEAD says of an object.
#[derive(Debug, Clone)]
pub struct ObjectInfo {
    pub size: u64,
    pub sha256: Option<String>,
}

pub struct S3Store {
    client: aws_sdk_s3::Client,
    pub bucket: String,
    pub prefix: String,
    threshold: u64,
    part_size: u64,
}

fn classify<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
    op: &'static str,
    key: &str,
    e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> S3Error {
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = e.code().map(str::to_owned);
    let class = match (&e, status, code.as_deref()) {
        (SdkError::TimeoutError(_), _, _) => "s3_timeout",
        (SdkError::DispatchFailure(d), _, _) if d.is_timeout() => "s3_timeout",
        (SdkError::DispatchFailure(_), _, _) => "s3_transport",
        (_, Some(503), _) | (_, _, Some("SlowDown")) => "s3_throttled",
        (_, Some(s), _) if s >= 500 => "s3_server",
        (SdkError::ServiceError(_), _, _) => "s3_client",
        _ => "s3_transport",
    };
    S3Error {
        class,
        op,
        key: key.to_owned(),
        message: format!(
            "{}{}",
            status.map_or(String::new(), |s| format!("HTTP {s}: ")),
            DisplayErrorContext(&e)
        ),
    }
}

fn io_err(op: &'static str, key: &str, e: impl std::fmt::Display) -> S3Error {
    S3Error {
        class: "io",
        op,
        key: key.to_owned(),
        message: e.to_string(),
    }
}

fn b64(hex_sha: &str) -> String {
    let bytes: Vec<u8> = (0..hex_sha.len() / 2)
        .filter_map(|i| u8::from_str_radix(hex_sha.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl S3Store {
    pub async fn new(cfg: &ArchiveConfig) -> S3Store {
        let a = &cfg.section;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader =
            aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http);
        if !a.region.is_empty() {
            loader = loader.region(Region::new(a.region.clone()));
        } else if !a.endpoint_url.is_empty() {
            loader = loader.region(Region::new("us-east-1"));
        }
        let sdk = loader.load().await;
        let mut b = aws_sdk_s3::config::Builder::from(&sdk)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(a.max_attempts)
                    .with_initial_backoff(cfg.retry.initial)
                    .with_max_backoff(cfg.retry.max),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(a.attempt_timeout)
                    .connect_timeout(std::time::Duration::from_secs(10))
                    .build(),
            );
        if !a.endpoint_url.is_empty() {
            b = b
                .endpoint_url(a.endpoint_url.clone())
                .force_path_style(true);
        }
        S3Store {
            client: aws_sdk_s3::Client::from_conf(b.build()),
            bucket: a.bucket.clone(),
            prefix: a.prefix.clone(),
            threshold: a.multipart_threshold,
            part_size: a.part_size,
        }
    }

    /// The full key of a path relative to the archive's prefix.
    pub fn key(&self, rel: &str) -> String {
        format!("{}{rel}", self.prefix)
    }

    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, S3Error> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(o) => Ok(Some(ObjectInfo {
                size: o.content_length().unwrap_or(0).max(0) as u64,
                sha256: o.metadata().and_then(|m| m.get(SHA_META)).cloned(),
            })),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(None),
            Err(e) => Err(classify("HeadObject", key, e)),
        }
    }

    /// Uploads `path` (whose SHA-256 is `sha256`), in parts when it is large.
    pub async fn put_file(
        &self,
        key: &str,
        path: &Path,
        sha256: &str,
        size: u64,
    ) -> Result<(), S3Error> {
        if size > self.threshold {
            return self.put_multipart(key, path, sha256).await;
        }
        let body = tokio::fs::read(path)
            .await
            .map_err(|e| io_err("read spool file", key, e))?;
        self.put_bytes(key, body, "application/vnd.apache.parquet", Some(sha256))
            .await
    }

    pub async fn put_bytes(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        sha256: Option<&str>,
    ) -> Result<(), S3Error> {
        let sha = sha256.map_or_else(|| sha256_hex(&body), str::to_owned);
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .checksum_sha256(b64(&sha))
            .metadata(SHA_META, &sha)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| classify("PutObject", key, e))?;
        Ok(())
    }

    async fn put_multipart(&self, key: &str, path: &Path, sha256: &str) -> Result<(), S3Error> {
        let up = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/vnd.apache.parquet")
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .metadata(SHA_META, sha256)
            .send()
            .await
            .map_err(|e| classify("CreateMultipartUpload", key, e))?;
        let Some(id) = up.upload_id().map(str::to_owned) else {
            return Err(io_err("CreateMultipartUpload", key, "no upload id"));
        };
        let r = self.upload_parts(key, path, &id).await;
        if r.is_err() {
            // Never leave parts behind; a crash before this is cleaned at the next start.
            let _ = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&id)
                .send()
                .await;
        }
        r
    }

    async fn upload_parts(&self, key: &str, path: &Path, id: &str) -> Result<(), S3Error> {
        let mut f = tokio::fs::File::open(path)
            .await
            .map_err(|e| io_err("open spool file", key, e))?;
        let mut parts = Vec::new();
        let mut n = 1;
        loop {
            // One part in memory at a time: part_size bounds it.
            let mut buf = Vec::with_capacity(self.part_size as usize);
            (&mut f)
                .take(self.part_size)
                .read_to_end(&mut buf)
                .await
                .map_err(|e| io_err("read spool file", key, e))?;
            if buf.is_empty() {
                break;
            }
            let sha = b64(&sha256_hex(&buf));
            let out = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(id)
                .part_number(n)
                .checksum_sha256(&sha)
                .body(ByteStream::from(buf))
                .send()
                .await
                .map_err(|e| classify("UploadPart", key, e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(n)
                    .set_e_tag(out.e_tag().map(str::to_owned))
                    .checksum_sha256(sha)
                    .build(),
            );
            n += 1;
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| classify("CompleteMultipartUpload", key, e))?;
        Ok(())
    }

    /// Downloads `key` to `path` (replacing it); returns its size and SHA-256.
    pub async fn get_to_file(&self, key: &str, path: &Path) -> Result<(u64, String), S3Error> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| classify("GetObject", key, e))?;
        let mut body = out.body;
        let mut f = tokio::fs::File::create(path)
            .await
            .map_err(|e| io_err("create spool file", key, e))?;
        let mut h = ring::digest::Context::new(&ring::digest::SHA256);
        let mut size = 0u64;
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| io_err("GetObject body", key, e))?
        {
            h.update(&chunk);
            size += chunk.len() as u64;
            f.write_all(&chunk)
                .await
                .map_err(|e| io_err("write spool file", key, e))?;
        }
        f.flush()
            .await
            .map_err(|e| io_err("write spool file", key, e))?;
        Ok((size, super::format::hex(h.finish().as_ref())))
    }

    /// A small object (a manifest), or None when there is none; refuses more than `max` bytes.
    pub async fn get_small(&self, key: &str, max: usize) -> Result<Option<Vec<u8>>, S3Error> {
        let out = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(o) => o,
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
                return Ok(None);
            }
            Err(e) => return Err(classify("GetObject", key, e)),
        };
        if out.content_length().unwrap_or(0) as u64 > max as u64 {
            return Err(io_err("GetObject", key, format!("larger than {max} bytes")));
        }
        let mut body = out.body;
        let mut v = Vec::new();
        while let Some(chunk) = body
            .try_next()
            .await
            .map_err(|e| io_err("GetObject body", key, e))?
        {
            if v.len() + chunk.len() > max {
                return Err(io_err("GetObject", key, format!("larger than {max} bytes")));
            }
            v.extend_from_slice(&chunk);
        }
        Ok(Some(v))
    }

    /// Every key under `prefix` (a full key prefix).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, S3Error> {
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| classify("ListObjectsV2", prefix, e))?;
            keys.extend(
                out.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
            match out.next_continuation_token() {
                Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_owned()),
                _ => return Ok(keys),
            }
        }
    }

    /// Aborts multipart uploads left by a crash (there is one archiver, so any upload under
    /// the prefix that is not running now is stale). Returns how many.
    pub async fn abort_stale_uploads(&self) -> Result<usize, S3Error> {
        let out = self
            .client
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(&self.prefix)
            .send()
            .await
            .map_err(|e| classify("ListMultipartUploads", &self.prefix, e))?;
        let mut n = 0;
        for u in out.uploads() {
            let (Some(key), Some(id)) = (u.key(), u.upload_id()) else {
                continue;
            };
            self.client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(id)
                .send()
                .await
                .map_err(|e| classify("AbortMultipartUpload", key, e))?;
            n += 1;
        }
        Ok(n)
    }

    /// Creates the bucket if it does not exist (the local stack and tests; production's comes
    /// from Terraform).
    pub async fn ensure_bucket(&self) -> Result<(), S3Error> {
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(_) => self
                .client
                .create_bucket()
                .bucket(&self.bucket)
                .send()
                .await
                .map(|_| ())
                .map_err(|e| classify("CreateBucket", &self.bucket, e)),
        }
    }
}

/// The archive's objects: an S3 bucket, or a local directory in the same layout.
pub enum Store {
    S3(S3Store),
    Dir(super::dir::DirStore),
}

impl Store {
    pub async fn new(cfg: &ArchiveConfig) -> Store {
        let a = &cfg.section;
        if a.directory.is_empty() {
            Store::S3(S3Store::new(cfg).await)
        } else {
            Store::Dir(super::dir::DirStore::new(&a.directory, &a.prefix))
        }
    }

    /// Where the archive is, for people: `s3://bucket/prefix` or `file:///dir/prefix`.
    pub fn location(&self) -> String {
        match self {
            Store::S3(s) => format!("s3://{}/{}", s.bucket, s.prefix),
            Store::Dir(d) => d.location(),
        }
    }

    /// The full key of a path relative to the archive's prefix.
    pub fn key(&self, rel: &str) -> String {
        match self {
            Store::S3(s) => s.key(rel),
            Store::Dir(d) => d.key(rel),
        }
    }

    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, S3Error> {
        match self {
            Store::S3(s) => s.head(key).await,
            Store::Dir(d) => d.head(key).await,
        }
    }

    pub async fn put_file(
        &self,
        key: &str,
        path: &Path,
        sha256: &str,
        size: u64,
    ) -> Result<(), S3Error> {
        match self {
            Store::S3(s) => s.put_file(key, path, sha256, size).await,
            Store::Dir(d) => d.put_file(key, path, sha256).await,
        }
    }

    pub async fn put_bytes(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &str,
        sha256: Option<&str>,
    ) -> Result<(), S3Error> {
        match self {
            Store::S3(s) => s.put_bytes(key, body, content_type, sha256).await,
            Store::Dir(d) => d.put_bytes(key, &body).await,
        }
    }

    pub async fn get_to_file(&self, key: &str, path: &Path) -> Result<(u64, String), S3Error> {
        match self {
            Store::S3(s) => s.get_to_file(key, path).await,
            Store::Dir(d) => d.get_to_file(key, path).await,
        }
    }

    pub async fn get_small(&self, key: &str, max: usize) -> Result<Option<Vec<u8>>, S3Error> {
        match self {
            Store::S3(s) => s.get_small(key, max).await,
            Store::Dir(d) => d.get_small(key, max).await,
        }
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, S3Error> {
        match self {
            Store::S3(s) => s.list(prefix).await,
            Store::Dir(d) => d.list(prefix).await,
        }
    }

    /// Removes what a crash left half written: multipart uploads, or temporary files.
    pub async fn abort_stale_uploads(&self) -> Result<usize, S3Error> {
        match self {
            Store::S3(s) => s.abort_stale_uploads().await,
            Store::Dir(d) => d.remove_stale_temporaries().await,
        }
    }

    /// The bucket (a local S3 stand-in) or the directory, created when missing.
    pub async fn ensure_bucket(&self) -> Result<(), S3Error> {
        match self {
            Store::S3(s) => s.ensure_bucket().await,
            Store::Dir(d) => d.ensure_root().await,
        }
    }
}
