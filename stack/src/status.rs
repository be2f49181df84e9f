//! `kalshi-stack status`: one look at a running stack from another terminal, through the
//! endpoints in its `stack.json`: each gatherer's health and counters, the deduplicator's health
//! and what it wrote, the lag of each gatherer's merge.
//!
//! It must never change the stack: it only reads health pages and metrics.

use serde_json::{Value, json};

use crate::{Endpoints, get_text, metric_sum, metric_with};

async fn health(url: &str) -> Option<Value> {
    let r = reqwest::get(url).await.ok()?;
    r.json().await.ok()
}

/// The stack's state as one JSON document (docs/stack.md has its schema).
pub async fn status(e: &Endpoints) -> Value {
    let mut dedup_health = health(&e.deduplicator_health).await;
    let mut standby_health = match &e.deduplicator_standby_health {
        Some(u) => Some(health(u).await),
        None => None,
    };
    let mut metrics_url = &e.deduplicator_metrics;
    // With --standby, "the deduplicator" is whichever is active: its health and what it wrote
    // first, the other as the standby.
    if let (Some(sb), Some(url)) = (standby_health.as_mut(), &e.deduplicator_standby_metrics)
        && sb.as_ref().is_some_and(|v| v["role"] == "active")
    {
        std::mem::swap(&mut dedup_health, sb);
        metrics_url = url;
    }
    let dm = get_text(metrics_url).await.unwrap_or_default();
    let mut gatherers = Vec::new();
    for g in &e.gatherers {
        let h = health(&g.health).await;
        let m = get_text(&g.metrics).await.unwrap_or_default();
        let lag = dm
            .lines()
            .filter(|l| {
                l.starts_with("dedup_sync_lag_seconds{")
                    && l.contains(&format!("gatherer=\"{}\"", g.id))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .fold(0.0, f64::max);
        gatherers.push(json!({
            "id": g.id,
            "up": h.is_some(),
            "status": h.as_ref().and_then(|h| h["status"].as_str()).unwrap_or("unreachable"),
            "inserts": metric_sum(&m, "writer_inserts_total"),
            "ws_connected": metric_sum(&m, "ws_client_connected"),
            "ws_configured": metric_sum(&m, "ws_client_connections_configured"),
            "gaps_declared": metric_sum(&m, "gaps_declared_total"),
            "dedup_lag_seconds": lag,
        }));
    }
    let written: serde_json::Map<String, Value> = [
        "trades",
        "orderbook_deltas",
        "orderbook_snapshots",
        "tickers",
        "lifecycle",
        "unknown_messages",
        "markets",
        "events",
        "series",
        "exchange",
        "gaps",
    ]
    .iter()
    .map(|s| {
        (
            (*s).to_owned(),
            json!(metric_with(&dm, "dedup_records_written_total", "stream", s)),
        )
    })
    .collect();
    json!({
        "exchange": e.exchange.clone().unwrap_or_else(|| e.sim_rest.clone()),
        "simulated": e.exchange.is_none(),
        "production": crate::without_password(&e.production_url),
        "archive": e.archive_dir.as_ref().map(|d| d.display().to_string()).or_else(|| e.s3.clone()),
        "gatherers": gatherers,
        "deduplicator": {
            "up": dedup_health.is_some(),
            "status": dedup_health.as_ref().and_then(|h| h["status"].as_str()).unwrap_or("unreachable"),
            "role": dedup_health.as_ref().and_then(|h| h["role"].as_str()).unwrap_or("unreachable"),
            "epoch": dedup_health.as_ref().and_then(|h| h["lease"]["holder_epoch"].as_i64()),
            "standby": standby_health.map(|h| json!({
                "up": h.is_some(),
                "status": h.as_ref().and_then(|h| h["status"].as_str()).unwrap_or("unreachable"),
                "role": h.as_ref().and_then(|h| h["role"].as_str()).unwrap_or("unreachable"),
            })),
            "production_connected": metric_sum(&dm, "dedup_rds_connected") == 1.0,
            "written": written,
            "quarantined": metric_sum(&dm, "dedup_quarantined_total"),
        },
    })
}

/// The same document as text.
pub fn text(v: &Value) -> String {
    let mut out = format!(
        "exchange {}{}\nproduction {}\narchive {}\n",
        v["exchange"].as_str().unwrap_or_default(),
        if v["simulated"] == true {
            " (simulator)"
        } else {
            ""
        },
        v["production"].as_str().unwrap_or_default(),
        v["archive"].as_str().unwrap_or("off"),
    );
    for g in v["gatherers"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {:<4} {:<12} inserts {:>10}  ws {}/{}  gaps {:>4}  dedup lag {:>5.1} s\n",
            g["id"].as_str().unwrap_or_default(),
            g["status"].as_str().unwrap_or_default(),
            g["inserts"].as_f64().unwrap_or(0.0),
            g["ws_connected"].as_f64().unwrap_or(0.0),
            g["ws_configured"].as_f64().unwrap_or(0.0),
            g["gaps_declared"].as_f64().unwrap_or(0.0),
            g["dedup_lag_seconds"].as_f64().unwrap_or(0.0),
        ));
    }
    let d = &v["deduplicator"];
    let w = &d["written"];
    out.push_str(&format!(
        "  deduplicator {} {} (production {}): trades {}  deltas {}  snapshots {}  tickers {}  lifecycle {}  quarantined {}\n",
        d["status"].as_str().unwrap_or_default(),
        d["role"].as_str().unwrap_or_default(),
        if d["production_connected"] == true { "ok" } else { "DOWN" },
        w["trades"], w["orderbook_deltas"], w["orderbook_snapshots"], w["tickers"], w["lifecycle"],
        d["quarantined"],
    ));
    if let Some(sb) = d.get("standby").filter(|s| !s.is_null()) {
        out.push_str(&format!(
            "  deduplicator-standby {} {}\n",
            sb["status"].as_str().unwrap_or_default(),
            sb["role"].as_str().unwrap_or_default(),
        ));
    }
    out
}
