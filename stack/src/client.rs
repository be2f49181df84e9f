//! Small HTTP/gRPC clients the stack and the tests use against its services (heads, control
//! posts, metrics) and the progress line.
//!
//! It must never retry a control request on its own: a failed request is the caller's error.

use super::*;

/// `url` with the password of its user part removed (`postgres://u:pw@h/db` -> `postgres://u@h/db`).
pub fn without_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let user = &url[s + 3..at];
            let user = user.split(':').next().unwrap_or(user);
            format!("{}{user}{}", &url[..s + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// A gRPC client of a gatherer: over mTLS with `tls`, plaintext without.
pub async fn gatherer_client(
    endpoint: &str,
    tls: Option<&GrpcClientTls>,
) -> anyhow::Result<kalshi_proto::GathererClient<tonic::transport::Channel>> {
    let ep = tonic::transport::Endpoint::from_shared(endpoint.to_owned())?
        .connect_timeout(Duration::from_secs(3));
    let channel = match tls {
        Some(t) => {
            let client = kalshi_shared::tls::ClientTls::load(kalshi_shared::tls::TlsFiles {
                ca_file: t.ca_file.clone(),
                cert_file: t.cert_file.clone(),
                key_file: t.key_file.clone(),
            })?;
            let connector =
                kalshi_shared::tls::Connector::new(std::sync::Arc::new(client), &t.server_name)?;
            ep.connect_with_connector(connector).await?
        }
        None => ep.connect().await?,
    };
    Ok(kalshi_proto::GathererClient::new(channel).max_decoding_message_size(64 << 20))
}

/// `(stream table, head)` of a gatherer.
pub async fn gatherer_heads(
    endpoint: &str,
    tls: Option<&GrpcClientTls>,
) -> anyhow::Result<Vec<(String, i64)>> {
    use kalshi_proto::gatherer::v1 as pb;
    let mut c = tokio::time::timeout(Duration::from_secs(3), gatherer_client(endpoint, tls))
        .await
        .context("connect timed out")??;
    let st = tokio::time::timeout(Duration::from_secs(3), c.status(pb::StatusRequest {}))
        .await
        .context("status timed out")??
        .into_inner();
    Ok(st
        .streams
        .iter()
        .filter_map(|s| {
            let name = pb::Stream::try_from(s.stream)
                .ok()?
                .as_str_name()
                .trim_start_matches("STREAM_")
                .to_ascii_lowercase();
            Some((name, s.head))
        })
        .collect())
}

pub async fn post(url: &str, body: Value) -> anyhow::Result<Value> {
    let r = reqwest::Client::new()
        .post(url)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let code = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    if !code.is_success() {
        bail!("POST {url}: {code} {v}");
    }
    Ok(v)
}

pub async fn get_text(url: &str) -> anyhow::Result<String> {
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    Ok(c.get(url).send().await?.text().await?)
}

pub use kalshi_testkit::prom::metric_sum;

/// The value of `name{label="value"}` (summed over other labels).
pub fn metric_with(text: &str, name: &str, label: &str, value: &str) -> f64 {
    let needle = format!("{label}=\"{value}\"");
    text.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name) && l.contains(&needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Counters remembered between two progress lines.
#[derive(Default)]
pub struct Progress {
    at: Option<Instant>,
    inserts: Vec<f64>,
    written: f64,
}

pub(crate) async fn progress(s: &mut Stack, last: &mut Progress) -> String {
    let now = Instant::now();
    let dt = last.at.map_or(0.0, |t| now.duration_since(t).as_secs_f64());
    let mut out = String::new();
    let mut dm = get_text(&s.endpoints.deduplicator_metrics)
        .await
        .unwrap_or_default();
    // With --standby: what the active one (dedup_leader 1) reports.
    if let Some(url) = &s.endpoints.deduplicator_standby_metrics
        && metric_sum(&dm, "dedup_leader") != 1.0
    {
        let other = get_text(url).await.unwrap_or_default();
        if metric_sum(&other, "dedup_leader") == 1.0 {
            dm = other;
        }
    }
    last.inserts.resize(s.gatherers.len(), 0.0);
    for (i, g) in s.gatherers.iter_mut().enumerate() {
        let up = g.service.running();
        let m = if up {
            get_text(&format!("http://127.0.0.1:{}/metrics", g.metrics_port))
                .await
                .unwrap_or_default()
        } else {
            String::new()
        };
        let inserts = metric_sum(&m, "writer_inserts_total");
        let rate = if dt > 0.0 && inserts >= last.inserts[i] {
            (inserts - last.inserts[i]) / dt
        } else {
            0.0
        };
        last.inserts[i] = inserts;
        let lag = ["trades", "orderbook_deltas", "tickers"]
            .iter()
            .map(|st| {
                dm.lines()
                    .filter(|l| {
                        l.starts_with("dedup_sync_lag_seconds{")
                            && l.contains(&format!("gatherer=\"{}\"", g.id))
                            && l.contains(&format!("stream=\"{st}\""))
                    })
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .fold(0.0, f64::max)
            })
            .fold(0.0, f64::max);
        out.push_str(&format!(
            "  {:<4} {:<5} ingest {:>7.0} rec/s  ws {}/{}  gaps {:>4}  dedup lag {:>5.1} s\n",
            g.id,
            if up { "up" } else { "DOWN" },
            rate,
            metric_sum(&m, "ws_client_connected"),
            metric_sum(&m, "ws_client_connections_configured"),
            metric_sum(&m, "gaps_declared_total"),
            lag,
        ));
    }
    let written = metric_sum(&dm, "dedup_records_written_total");
    let wrate = if dt > 0.0 && written >= last.written {
        (written - last.written) / dt
    } else {
        0.0
    };
    last.written = written;
    let per = |t: &str| metric_with(&dm, "dedup_records_written_total", "stream", t);
    out.push_str(&format!(
        "  production {:>5}: {:>6.0} rows/s  trades {:.0}  deltas {:.0}  snapshots {:.0}  tickers {:.0}  lifecycle {:.0}  markets {:.0}  gaps {:.0}  quarantine {:.0}{}\n",
        if metric_sum(&dm, "dedup_rds_connected") == 1.0 { "ok" } else { "DOWN" },
        wrate,
        per("trades"),
        per("orderbook_deltas"),
        per("orderbook_snapshots"),
        per("tickers"),
        per("lifecycle"),
        per("markets"),
        per("gaps"),
        metric_sum(&dm, "dedup_quarantined_total"),
        match (s.deduplicator.running(), s.standby_deduplicator.as_mut().map(|d| d.running())) {
            (true, None | Some(true)) => "",
            (false, None | Some(false)) => "  (deduplicator DOWN)",
            _ => "  (one deduplicator DOWN)",
        },
    ));
    last.at = Some(now);
    out
}
