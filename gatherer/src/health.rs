//! Health state shared by every task and reported by `GET /health`.
//!
//! Healthy: the local database answers and every WebSocket connection is subscribed.
//! Degraded (HTTP 200): some connections are down, or the REST polling fallback runs.
//! Unhealthy (HTTP 503): the database is unreachable, or no connection is up and no fallback
//! runs, or the registry has never synced.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, AtomicUsize, Ordering};

use serde_json::json;

/// One connection's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ConnState {
    Connecting = 0,
    Subscribed = 1,
    Down = 2,
}

#[derive(Debug, Default)]
pub struct ConnHealth {
    state: AtomicU8,
    markets: AtomicUsize,
    since_ms: AtomicI64,
    reconnects: AtomicU64,
    epoch: AtomicI64,
}

impl ConnHealth {
    pub fn set(&self, state: ConnState) {
        let old = self.state.swap(state as u8, Ordering::AcqRel);
        if old != state as u8 {
            self.since_ms
                .store(kalshi_shared::time::now_ms(), Ordering::Release);
        }
    }

    pub fn state(&self) -> ConnState {
        match self.state.load(Ordering::Acquire) {
            1 => ConnState::Subscribed,
            2 => ConnState::Down,
            _ => ConnState::Connecting,
        }
    }

    pub fn set_markets(&self, n: usize) {
        self.markets.store(n, Ordering::Release);
    }

    pub fn reconnected(&self, epoch: i64) {
        self.reconnects.fetch_add(1, Ordering::AcqRel);
        self.epoch.store(epoch, Ordering::Release);
    }

    /// Milliseconds since the state last changed.
    pub fn since_ms(&self) -> i64 {
        self.since_ms.load(Ordering::Acquire)
    }
}

#[derive(Debug)]
pub struct Health {
    pub gatherer_id: String,
    pub instance_id: String,
    pub started_ms: i64,
    pub conns: Vec<ConnHealth>,
    db_ok: AtomicBool,
    polling: AtomicBool,
    markets: AtomicUsize,
    registry_synced_ms: AtomicI64,
    gaps: AtomicU64,
}

impl Health {
    pub fn new(gatherer_id: String, instance_id: String, connections: usize) -> Self {
        Self {
            gatherer_id,
            instance_id,
            started_ms: kalshi_shared::time::now_ms(),
            conns: (0..connections)
                .map(|_| {
                    let c = ConnHealth::default();
                    c.since_ms
                        .store(kalshi_shared::time::now_ms(), Ordering::Release);
                    c
                })
                .collect(),
            db_ok: AtomicBool::new(true),
            polling: AtomicBool::new(false),
            markets: AtomicUsize::new(0),
            registry_synced_ms: AtomicI64::new(0),
            gaps: AtomicU64::new(0),
        }
    }

    pub fn set_db(&self, ok: bool) {
        self.db_ok.store(ok, Ordering::Release);
    }

    pub fn db_ok(&self) -> bool {
        self.db_ok.load(Ordering::Acquire)
    }

    pub fn set_polling(&self, on: bool) {
        self.polling.store(on, Ordering::Release);
    }

    pub fn polling(&self) -> bool {
        self.polling.load(Ordering::Acquire)
    }

    pub fn set_markets(&self, n: usize) {
        self.markets.store(n, Ordering::Release);
    }

    pub fn registry_synced(&self) {
        self.registry_synced_ms
            .store(kalshi_shared::time::now_ms(), Ordering::Release);
    }

    pub fn gap_declared(&self) {
        self.gaps.fetch_add(1, Ordering::AcqRel);
    }

    pub fn gaps_declared(&self) -> u64 {
        self.gaps.load(Ordering::Acquire)
    }

    /// Sets a connection's state and the `ws_client_connected` gauge.
    pub fn set_conn(&self, k: usize, state: ConnState) {
        if let Some(c) = self.conns.get(k) {
            c.set(state);
        }
        ::metrics::gauge!(crate::metrics::WS_CONNECTED).set(self.connected() as f64);
    }

    pub fn connected(&self) -> usize {
        self.conns
            .iter()
            .filter(|c| c.state() == ConnState::Subscribed)
            .count()
    }

    /// `(status word, HTTP status, body)`.
    pub fn report(&self) -> (&'static str, u16, serde_json::Value) {
        let connected = self.connected();
        let db = self.db_ok();
        let synced = self.registry_synced_ms.load(Ordering::Acquire);
        let polling = self.polling();
        let status = if !db || synced == 0 || (connected == 0 && !polling) {
            "unhealthy"
        } else if connected < self.conns.len() || polling {
            "degraded"
        } else {
            "healthy"
        };
        let code = if status == "unhealthy" { 503 } else { 200 };
        let conns: Vec<serde_json::Value> = self
            .conns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                json!({
                    "id": i,
                    "state": match c.state() {
                        ConnState::Connecting => "connecting",
                        ConnState::Subscribed => "subscribed",
                        ConnState::Down => "down",
                    },
                    "markets": c.markets.load(Ordering::Acquire),
                    "since_ms": c.since_ms(),
                    "connects": c.reconnects.load(Ordering::Acquire),
                    "conn_epoch": c.epoch.load(Ordering::Acquire),
                })
            })
            .collect();
        let body = json!({
            "status": status,
            "version": kalshi_shared::build::VERSION,
            "git_sha": kalshi_shared::build::GIT_SHA,
            "gatherer_id": self.gatherer_id,
            "instance_id": self.instance_id,
            "ws_connections": connected,
            "ws_connections_configured": self.conns.len(),
            "db": if db { "connected" } else { "unavailable" },
            "mode": if polling { "polling" } else { "websocket" },
            "markets": self.markets.load(Ordering::Acquire),
            "registry_synced_ms": if synced == 0 { serde_json::Value::Null } else { json!(synced) },
            "gaps_declared": self.gaps_declared(),
            "started_ms": self.started_ms,
            "connections": conns,
        });
        (status, code, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_rules() {
        let h = Health::new("g1".into(), "i".into(), 2);
        assert_eq!(h.report().0, "unhealthy", "never synced");
        h.registry_synced();
        assert_eq!(h.report().1, 503, "no connection");
        h.conns[0].set(ConnState::Subscribed);
        assert_eq!(h.report().0, "degraded");
        h.conns[1].set(ConnState::Subscribed);
        assert_eq!(h.report(), ("healthy", 200, h.report().2));
        h.set_db(false);
        assert_eq!(h.report().0, "unhealthy");
        h.set_db(true);
        h.conns[0].set(ConnState::Down);
        h.conns[1].set(ConnState::Down);
        h.set_polling(true);
        let (s, code, body) = h.report();
        assert_eq!((s, code), ("degraded", 200));
        assert_eq!(body["mode"], "polling");
        assert_eq!(body["ws_connections"], 0);
    }
}
