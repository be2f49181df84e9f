//! Kalshi REST client shared by the registry and backfill.
//!
//! Every request waits for a token from one shared bucket (`kalshi.rest_rate_per_s`), is signed
//! when a key is configured, has a deadline, and reads at most `rest_max_body_bytes`. 429, 5xx
//! and network errors are retried with capped, jittered backoff up to `rest_max_attempts`;
//! other 4xx are final. It never retries past shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kalshi_shared::auth::LiveSigner;
use kalshi_shared::retry::{Backoff, BackoffConfig};
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::metrics as m;
use kalshi_shared::rate::TokenBucket;

#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("HTTP {status} from {endpoint}: {body}")]
    Status {
        endpoint: &'static str,
        status: u16,
        body: String,
    },
    #[error("{endpoint}: {message}")]
    Transport {
        endpoint: &'static str,
        message: String,
    },
    #[error("{endpoint}: response is not the expected JSON: {message}")]
    Decode {
        endpoint: &'static str,
        message: String,
    },
    #[error("{endpoint}: response larger than {limit} bytes")]
    TooLarge {
        endpoint: &'static str,
        limit: usize,
    },
    #[error("{endpoint}: gave up after {attempts} attempts: {last}")]
    GaveUp {
        endpoint: &'static str,
        attempts: u32,
        last: String,
    },
    #[error("shutting down")]
    Shutdown,
}

impl RestError {
    /// Whether the request may succeed if retried later.
    fn retryable(&self) -> bool {
        match self {
            RestError::Status { status, .. } => *status == 429 || *status >= 500,
            RestError::Transport { .. } | RestError::TooLarge { .. } => true,
            _ => false,
        }
    }

    /// The `reason` label of `market_registry_rest_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            RestError::Status { .. } => "status",
            RestError::Transport { .. } | RestError::GaveUp { .. } => "transport",
            RestError::Decode { .. } => "decode",
            RestError::TooLarge { .. } => "too_large",
            RestError::Shutdown => "shutdown",
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, RestError::Status { status: 404, .. })
    }
}

pub struct RestConfig {
    pub base_url: String,
    pub rate_per_s: u32,
    pub burst: u32,
    pub timeout: Duration,
    pub max_body_bytes: usize,
    pub backoff: BackoffConfig,
    pub max_attempts: u32,
}

pub struct RestClient {
    http: reqwest::Client,
    /// `scheme://host[:port]`.
    origin: String,
    /// `/trade-api/v2`.
    prefix: String,
    signer: Option<Arc<LiveSigner>>,
    /// One bucket for every REST caller.
    bucket: Mutex<TokenBucket>,
    cfg: RestConfig,
    cancel: CancellationToken,
}

impl RestClient {
    pub fn new(
        cfg: RestConfig,
        signer: Option<Arc<LiveSigner>>,
        cancel: CancellationToken,
    ) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(&cfg.base_url)?;
        let origin = url.origin().ascii_serialization();
        let prefix = url.path().trim_end_matches('/').to_owned();
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("kalshi-data-gatherer/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            origin,
            prefix,
            signer,
            bucket: Mutex::new(TokenBucket::new(cfg.rate_per_s, cfg.burst, Instant::now())),
            cfg,
            cancel,
        })
    }

    async fn acquire(&self) -> Result<(), RestError> {
        loop {
            let wait = {
                let mut b = self.bucket.lock().await;
                match b.take(1, Instant::now()) {
                    Ok(()) => return Ok(()),
                    Err(wait) => wait,
                }
            };
            tokio::select! {
                _ = self.cancel.cancelled() => return Err(RestError::Shutdown),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// GETs `path_and_query` (relative to the REST prefix, e.g. `/markets?limit=5`) and parses
    /// the JSON body, retrying what can be retried.
    pub async fn get<T: DeserializeOwned>(
        &self,
        endpoint: &'static str,
        path_and_query: &str,
    ) -> Result<T, RestError> {
        let mut backoff = Backoff::new(self.cfg.backoff);
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.get_once(endpoint, path_and_query).await {
                Ok(body) => {
                    return serde_json::from_slice(&body).map_err(|e| {
                        let e = RestError::Decode {
                            endpoint,
                            message: e.to_string().chars().take(300).collect(),
                        };
                        metrics::counter!(m::REST_ERRORS, "endpoint" => endpoint, "reason" => e.reason())
                            .increment(1);
                        tracing::warn!(endpoint, error = %e, "REST response refused");
                        e
                    });
                }
                Err(RestError::Shutdown) => return Err(RestError::Shutdown),
                Err(e) if e.retryable() && attempts < self.cfg.max_attempts => {
                    metrics::counter!(m::REST_ERRORS, "endpoint" => endpoint, "reason" => e.reason())
                        .increment(1);
                    if matches!(e, RestError::TooLarge { .. }) {
                        // Hostile or broken: worth a line at the default level.
                        tracing::warn!(endpoint, attempt = attempts, error = %e, "REST response refused, backing off");
                    } else {
                        tracing::debug!(endpoint, attempt = attempts, error = %e, "REST request failed, backing off");
                    }
                    if !backoff.sleep(&self.cancel).await {
                        return Err(RestError::Shutdown);
                    }
                }
                Err(e) => {
                    metrics::counter!(m::REST_ERRORS, "endpoint" => endpoint, "reason" => e.reason())
                        .increment(1);
                    return Err(if e.retryable() {
                        RestError::GaveUp {
                            endpoint,
                            attempts,
                            last: e.to_string(),
                        }
                    } else {
                        e
                    });
                }
            }
        }
    }

    async fn get_once(
        &self,
        endpoint: &'static str,
        path_and_query: &str,
    ) -> Result<Vec<u8>, RestError> {
        let (status, body) = self
            .get_any_status(endpoint, path_and_query, self.cfg.max_body_bytes)
            .await?;
        if (200..300).contains(&status) {
            Ok(body)
        } else {
            Err(RestError::Status {
                endpoint,
                status,
                body: String::from_utf8_lossy(&body).chars().take(300).collect(),
            })
        }
    }

    /// One GET, rate-limited and signed, with its status and whole body whatever the status
    /// (bounded by `max_body`, and by `kalshi.rest_max_body_bytes`): for endpoints whose
    /// error replies carry a meaningful body (`/exchange/status` answers 503 with the status
    /// during maintenance). Not retried.
    pub async fn get_any_status(
        &self,
        endpoint: &'static str,
        path_and_query: &str,
        max_body: usize,
    ) -> Result<(u16, Vec<u8>), RestError> {
        let max_body = max_body.min(self.cfg.max_body_bytes);
        self.acquire().await?;
        let path = format!("{}{}", self.prefix, path_and_query);
        let mut req = self.http.get(format!("{}{}", self.origin, path));
        if let Some(signer) = &self.signer {
            let h = signer
                .current()
                .sign("GET", &path)
                .map_err(|e| RestError::Transport {
                    endpoint,
                    message: format!("sign request: {e}"),
                })?;
            for (k, v) in h.pairs() {
                req = req.header(k, v);
            }
        }
        let send = req.send();
        let mut resp = tokio::select! {
            _ = self.cancel.cancelled() => return Err(RestError::Shutdown),
            r = send => r.map_err(|e| RestError::Transport { endpoint, message: transport_message(&e) })?,
        };
        let status = resp.status().as_u16();
        let class = match status {
            200..=299 => "2xx",
            429 => "429",
            400..=499 => "4xx",
            _ => "5xx",
        };
        metrics::counter!(m::REST_REQUESTS, "endpoint" => endpoint, "status" => class).increment(1);
        // A declared length over the limit is refused before reading any of it.
        if resp.content_length().is_some_and(|n| n > max_body as u64) {
            return Err(RestError::TooLarge {
                endpoint,
                limit: max_body,
            });
        }
        let mut body = Vec::new();
        loop {
            let chunk = tokio::select! {
                _ = self.cancel.cancelled() => return Err(RestError::Shutdown),
                c = resp.chunk() => c.map_err(|e| RestError::Transport { endpoint, message: transport_message(&e) })?,
            };
            let Some(chunk) = chunk else { break };
            if body.len() + chunk.len() > max_body {
                return Err(RestError::TooLarge {
                    endpoint,
                    limit: max_body,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }
}

fn transport_message(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s.chars().take(300).collect()
}

/// Percent-encodes a query value.
pub fn q(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
