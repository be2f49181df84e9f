//! What `aws-sdk-rds` gives the deduplicator: IAM database authentication tokens (generated
//! before the first connection and refreshed well before their 15-minute expiry), and, while
//! writes to production are failing, a look at the instance's recent RDS events so logs and
//! `dedup_rds_failover_in_progress` say "failover in progress" instead of a bare error.
//!
//! Credentials and region come from the standard AWS chain (environment, profile, instance
//! role); `rds.endpoint_url` points the API at a stand-in (tests) or a VPC endpoint.
//!
//! It must never put a token in a log line, a metric or an error text.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_rds::auth_token::{AuthTokenGenerator, Config as TokenConfig};
use aws_sdk_rds::config::Region;
use tokio_util::sync::CancellationToken;

use crate::config::RdsSection;
use crate::db::Prod;
use crate::metrics as m;

/// The AWS configuration the deduplicator uses (HTTPS through rustls with ring).
pub async fn sdk_config(rds: &RdsSection) -> aws_config::SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).http_client(http);
    if !rds.region.is_empty() {
        loader = loader.region(Region::new(rds.region.clone()));
    }
    if !rds.endpoint_url.is_empty() {
        loader = loader.endpoint_url(rds.endpoint_url.clone());
    }
    loader.load().await
}

/// Why an IAM token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("IAM token settings: {0}")]
    Settings(String),
    #[error("cannot generate an IAM auth token: {0}")]
    Generate(String),
}

/// Generates one IAM token for the production endpoint and installs it as the password.
pub async fn refresh_token(
    prod: &Prod,
    sdk: &aws_config::SdkConfig,
    region: &str,
) -> Result<(), TokenError> {
    let (host, port, user) = prod.endpoint();
    let cfg = TokenConfig::builder()
        .hostname(host)
        .port(u64::from(port))
        .username(user)
        .region(Region::new(region.to_owned()))
        .build()
        .map_err(|e| TokenError::Settings(e.to_string()))?;
    let token = AuthTokenGenerator::new(cfg)
        .auth_token(sdk)
        .await
        .map_err(|e| TokenError::Generate(e.to_string()))?;
    prod.set_password(token.as_str());
    metrics::counter!(m::IAM_TOKENS).increment(1);
    Ok(())
}

/// Keeps the token fresh until shutdown.
#[tracing::instrument(name = "rds_token", skip_all)]
pub async fn token_task(
    prod: Arc<Prod>,
    sdk: aws_config::SdkConfig,
    rds: RdsSection,
    cancel: CancellationToken,
) {
    loop {
        let wait = match refresh_token(&prod, &sdk, &rds.region).await {
            Ok(()) => {
                tracing::debug!("IAM auth token refreshed");
                rds.iam_token_refresh
            }
            Err(e) => {
                tracing::error!(error = %e, "IAM auth token refresh failed; retrying in 10 s");
                Duration::from_secs(10).min(rds.iam_token_refresh)
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Words in an RDS event message that mean the instance is failing over or restarting.
fn means_failover(message: &str, categories: &[String]) -> bool {
    let m = message.to_ascii_lowercase();
    categories.iter().any(|c| c == "failover")
        || m.contains("failover")
        || m.contains("failing over")
        || m.contains("reboot")
        || m.contains("restart")
}

/// While production writes fail for longer than `rds.events_after`, reads the instance's
/// events of the last 15 minutes (at most every 10 s) and reports a failover in progress.
#[tracing::instrument(name = "rds_events", skip_all)]
pub async fn events_task(
    prod: Arc<Prod>,
    sdk: aws_config::SdkConfig,
    rds: RdsSection,
    cancel: CancellationToken,
) {
    let client = aws_sdk_rds::Client::new(&sdk);
    let mut in_progress = false;
    loop {
        let failing =
            prod.failing_for().is_some_and(|d| d >= rds.events_after) && !prod.connected();
        if failing {
            let r = client
                .describe_events()
                .source_identifier(&rds.instance_id)
                .source_type(aws_sdk_rds::types::SourceType::DbInstance)
                .duration(15)
                .send()
                .await;
            match r {
                Ok(out) => {
                    metrics::counter!(m::RDS_EVENT_CHECKS, "outcome" => "ok").increment(1);
                    let latest = out
                        .events()
                        .iter()
                        .filter(|e| means_failover(e.message().unwrap_or(""), e.event_categories()))
                        .max_by_key(|e| e.date().map(|d| d.as_secs_f64() as i64));
                    let now = latest.is_some_and(|e| {
                        let m = e.message().unwrap_or("").to_ascii_lowercase();
                        !(m.contains("completed") || m.contains("complete."))
                    });
                    if let Some(e) = latest {
                        if now {
                            tracing::error!(instance = %rds.instance_id, event = %e.message().unwrap_or(""), "RDS failover in progress: production writes are paused and will resume by themselves");
                        } else {
                            tracing::warn!(instance = %rds.instance_id, event = %e.message().unwrap_or(""), "RDS reports a failover that has completed; still waiting for writes to succeed");
                        }
                    }
                    in_progress = now;
                }
                Err(e) => {
                    metrics::counter!(m::RDS_EVENT_CHECKS, "outcome" => "error").increment(1);
                    tracing::warn!(instance = %rds.instance_id, error = %aws_sdk_rds::error::DisplayErrorContext(&e), "cannot read RDS events");
                }
            }
        } else {
            in_progress = false;
        }
        metrics::gauge!(m::FAILOVER_IN_PROGRESS).set(if in_progress { 1.0 } else { 0.0 });
        prod.set_failover(in_progress);
        let wait = if failing {
            Duration::from_secs(10)
        } else {
            Duration::from_secs(1)
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn failover_words() {
        assert!(super::means_failover(
            "Multi-AZ instance failover started.",
            &[]
        ));
        assert!(super::means_failover("DB instance restarted", &[]));
        assert!(super::means_failover("x", &["failover".into()]));
        assert!(!super::means_failover(
            "Finished DB Instance backup",
            &["backup".into()]
        ));
    }
}
