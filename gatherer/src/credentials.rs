//! Key rotation without a restart: on SIGHUP (`systemctl reload kalshi-gatherer`) the gatherer
//! re-reads its Kalshi key id and private key from the files the configuration names
//! (`kalshi.key_id_file`, `kalshi.private_key_file`) and signs every later request and
//! WebSocket connect with them. Open connections stay open (Kalshi checks the key at connect).
//! A key that does not load is refused with a logged error and counted; the running key stays.

use std::sync::Arc;

use kalshi_shared::auth::LiveSigner;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

use kalshi_shared::config::ConfigError;

use crate::config::{KalshiSection, load_credentials};
use crate::metrics as m;

/// The SIGHUP stream, made before the first task is spawned (making it can fail).
pub fn hangups() -> anyhow::Result<Signal> {
    Ok(signal(SignalKind::hangup())?)
}

/// Reloads the credentials at every SIGHUP until `stop`.
pub async fn reload_on_hangup(
    mut hangups: Signal,
    kalshi: KalshiSection,
    live: Option<Arc<LiveSigner>>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            got = hangups.recv() => {
                if got.is_none() {
                    return Ok(());
                }
            }
        }
        reload(&kalshi, live.as_deref());
    }
}

/// One reload; what it did is logged and counted.
pub fn reload(kalshi: &KalshiSection, live: Option<&LiveSigner>) {
    let Some(live) = live else {
        tracing::warn!(
            "SIGHUP: no Kalshi key is configured, so there is nothing to reload (adding one needs a restart)"
        );
        metrics::counter!(m::CREDENTIAL_RELOADS, "result" => "error").increment(1);
        return;
    };
    let outcome = load_credentials(kalshi).and_then(|c| match c {
        Some(c) => c
            .signer()
            .map_err(|e| ConfigError::key("kalshi.private_key_file", e)),
        None => Err(ConfigError::key(
            "kalshi.key_id",
            "the configuration no longer names a key",
        )),
    });
    match outcome {
        Ok(signer) => {
            let (old, new) = (
                live.current().key_id().to_owned(),
                signer.key_id().to_owned(),
            );
            live.replace(signer);
            metrics::counter!(m::CREDENTIAL_RELOADS, "result" => "ok").increment(1);
            tracing::info!(old_key_id = %old, key_id = %new, "SIGHUP: Kalshi key reloaded; new requests and connections sign with it");
        }
        Err(e) => {
            metrics::counter!(m::CREDENTIAL_RELOADS, "result" => "error").increment(1);
            tracing::error!(error = %e, key_id = %live.current().key_id(), "SIGHUP: the new Kalshi key does not load; still signing with the running one");
        }
    }
}
