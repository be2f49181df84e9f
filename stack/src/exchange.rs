//! Which exchange a stack captures: `prod`, `demo`, or any REST base that speaks Kalshi's API
//! (`https://host/trade-api/v2`), with the WebSocket URL derived as Kalshi's hosts do
//! (docs/kalshi-api.md §1): `https` → `wss`, `/trade-api/v2` → `/trade-api/ws/v2`, and a host
//! `external-api.<domain>` → `external-api-ws.<domain>`. `--ws-url` overrides the derivation.
//!
//! It must never start a stack on a URL it cannot name both halves of: a REST base it cannot
//! derive a WebSocket URL from is an error that asks for `--ws-url`.

use std::path::PathBuf;

use anyhow::{Context as _, bail};

/// Kalshi's production REST base (the "Production Trade API server").
pub const PROD_REST: &str = "https://external-api.kalshi.com/trade-api/v2";
/// Kalshi's demo REST base.
pub const DEMO_REST: &str = "https://external-api.demo.kalshi.co/trade-api/v2";

/// A real exchange (or a stand-in that speaks only its public API) and the API key to use.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub rest_url: String,
    pub ws_url: String,
    pub key_id: String,
    /// The RSA private key (PEM) of `key_id`.
    pub key_file: PathBuf,
}

impl Exchange {
    /// `name`: `prod`, `demo` or a REST base URL. The key file must be readable now (an error
    /// names it), not only when the gatherers first sign a request.
    pub fn resolve(
        name: &str,
        ws_url: Option<&str>,
        key_id: &str,
        key_file: PathBuf,
    ) -> anyhow::Result<Exchange> {
        let rest_url = match name {
            "prod" => PROD_REST.to_owned(),
            "demo" => DEMO_REST.to_owned(),
            url if url.starts_with("http://") || url.starts_with("https://") => {
                url.trim_end_matches('/').to_owned()
            }
            other => bail!(
                "--exchange {other:?}: prod, demo, or a REST base URL such as https://host/trade-api/v2"
            ),
        };
        let ws_url = match ws_url {
            Some(u) if u.starts_with("ws://") || u.starts_with("wss://") => u.to_owned(),
            Some(u) => bail!("--ws-url {u:?}: a ws:// or wss:// URL"),
            None => derive_ws_url(&rest_url)?,
        };
        if key_id.trim().is_empty() {
            bail!(
                "--key-id is required with --exchange (the API key's id, from Kalshi's account settings)"
            );
        }
        let key_file = std::path::absolute(&key_file)
            .with_context(|| format!("--key-file {}", key_file.display()))?;
        let pem = std::fs::read_to_string(&key_file)
            .with_context(|| format!("--key-file {}: cannot read it", key_file.display()))?;
        if !pem.contains("PRIVATE KEY-----") {
            bail!(
                "--key-file {}: not a PEM private key (Kalshi gives one when the API key is made)",
                key_file.display()
            );
        }
        Ok(Exchange {
            rest_url,
            ws_url,
            key_id: key_id.trim().to_owned(),
            key_file,
        })
    }
}

/// The WebSocket URL of a REST base, as Kalshi's hosts pair them.
pub fn derive_ws_url(rest: &str) -> anyhow::Result<String> {
    let (scheme, rest_part) = if let Some(r) = rest.strip_prefix("https://") {
        ("wss://", r)
    } else if let Some(r) = rest.strip_prefix("http://") {
        ("ws://", r)
    } else {
        bail!("{rest:?}: not an http(s) URL");
    };
    let (host, path) = rest_part.split_once('/').unwrap_or((rest_part, ""));
    let path = format!("/{}", path.trim_end_matches('/'));
    let Some(base) = path.strip_suffix("/trade-api/v2") else {
        bail!(
            "{rest:?}: the path does not end in /trade-api/v2, so the WebSocket URL cannot be derived; give --ws-url"
        );
    };
    let host = match host.strip_prefix("external-api.") {
        Some(domain) => format!("external-api-ws.{domain}"),
        None => host.to_owned(),
    };
    Ok(format!("{scheme}{host}{base}/trade-api/ws/v2"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn websocket_urls_pair_with_rest_bases_as_kalshis_hosts_do() {
        // docs/kalshi-api.md §1: every pair Kalshi documents.
        for (rest, ws) in [
            (
                PROD_REST,
                "wss://external-api-ws.kalshi.com/trade-api/ws/v2",
            ),
            (
                DEMO_REST,
                "wss://external-api-ws.demo.kalshi.co/trade-api/ws/v2",
            ),
            (
                "https://api.elections.kalshi.com/trade-api/v2",
                "wss://api.elections.kalshi.com/trade-api/ws/v2",
            ),
            (
                "https://demo-api.kalshi.co/trade-api/v2/",
                "wss://demo-api.kalshi.co/trade-api/ws/v2",
            ),
            (
                "http://127.0.0.1:8080/trade-api/v2",
                "ws://127.0.0.1:8080/trade-api/ws/v2",
            ),
            (
                "https://proxy.example/kalshi/trade-api/v2",
                "wss://proxy.example/kalshi/trade-api/ws/v2",
            ),
        ] {
            assert_eq!(derive_ws_url(rest).unwrap(), ws, "{rest}");
        }
        for bad in ["ftp://x/trade-api/v2", "https://host/v2", "https://host"] {
            let e = derive_ws_url(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn an_exchange_needs_a_name_or_url_a_key_id_and_a_readable_private_key() {
        let dir = std::env::temp_dir().join(format!("kalshi-exchange-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key.pem");
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let e = Exchange::resolve("prod", None, "k-1", key.clone()).unwrap();
        assert_eq!(e.rest_url, PROD_REST);
        assert_eq!(e.ws_url, "wss://external-api-ws.kalshi.com/trade-api/ws/v2");
        let e = Exchange::resolve(
            "http://127.0.0.1:1/trade-api/v2",
            Some("ws://127.0.0.1:2/x"),
            "k",
            key.clone(),
        )
        .unwrap();
        assert_eq!(e.ws_url, "ws://127.0.0.1:2/x");
        let not_key = dir.join("public.pem");
        std::fs::write(&not_key, "-----BEGIN PUBLIC KEY-----\n").unwrap();
        for (name, ws, id, file, says) in [
            (
                "production",
                None,
                "k",
                key.clone(),
                "prod, demo, or a REST base",
            ),
            ("prod", Some("https://x"), "k", key.clone(), "--ws-url"),
            ("prod", None, " ", key.clone(), "--key-id is required"),
            ("prod", None, "k", dir.join("missing.pem"), "cannot read it"),
            ("prod", None, "k", not_key.clone(), "not a PEM private key"),
        ] {
            let e = format!("{:#}", Exchange::resolve(name, ws, id, file).unwrap_err());
            assert!(e.contains(says), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
