//! What the deduplicator knows about each gatherer and stream, shared by the sources, the sinks,
//! `/health` and the lag gauges.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use crate::metrics as m;
use crate::records::Stream;

/// A gatherer's state as `/health` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Every stream's Tail is open.
    Connected,
    /// Some streams are (re)connecting.
    Connecting,
    /// Unreachable.
    Down,
    /// Answers as another gatherer id than configured: not read.
    WrongIdentity,
}

impl Health {
    pub fn label(self) -> &'static str {
        match self {
            Health::Connected => "connected",
            Health::Connecting => "connecting",
            Health::Down => "down",
            Health::WrongIdentity => "wrong_identity",
        }
    }
}

#[derive(Default)]
pub struct StreamBoard {
    /// The gatherer's head as last reported.
    pub head: AtomicI64,
    /// The highest cursor handed to the sink.
    pub read: AtomicI64,
    /// The highest cursor committed to production (this instance).
    pub committed: AtomicI64,
    pub open: AtomicBool,
    behind_since: Mutex<Option<Instant>>,
}

pub struct GathererBoard {
    pub id: String,
    pub endpoint: String,
    pub streams: [StreamBoard; 9],
    state: Mutex<(Health, Option<String>)>,
}

impl GathererBoard {
    pub fn health(&self) -> Health {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
    }

    pub fn instance(&self) -> Option<String> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1
            .clone()
    }

    pub fn set_instance(&self, instance: &str) {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1 = Some(instance.to_owned());
    }

    /// Sets the health (a wrong identity sticks until the identity checks out again).
    pub fn set_health(&self, h: Health) {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.0 = h;
        metrics::gauge!(m::GATHERER_HEALTH, "gatherer" => self.id.clone())
            .set(if h == Health::Connected { 1.0 } else { 0.0 });
    }

    /// Recomputes connected/connecting from the streams' Tail state.
    pub fn refresh(&self, reachable: bool) {
        if self.health() == Health::WrongIdentity {
            return;
        }
        let open = self
            .streams
            .iter()
            .filter(|s| s.open.load(Ordering::Acquire))
            .count();
        self.set_health(if open == self.streams.len() {
            Health::Connected
        } else if reachable || open > 0 {
            Health::Connecting
        } else {
            Health::Down
        });
    }

    pub fn stream(&self, s: Stream) -> &StreamBoard {
        &self.streams[s.index()]
    }
}

pub struct Board {
    pub gatherers: Vec<GathererBoard>,
}

impl Board {
    pub fn new(gatherers: &[crate::config::GathererEndpoint]) -> Board {
        Board {
            gatherers: gatherers
                .iter()
                .map(|g| GathererBoard {
                    id: g.id.clone(),
                    endpoint: g.endpoint.clone(),
                    streams: Default::default(),
                    state: Mutex::new((Health::Down, None)),
                })
                .collect(),
        }
    }

    /// Updates `dedup_sync_lag_seconds`: how long the oldest record a gatherer holds and
    /// production does not has been waiting (0 when production has everything it reported).
    pub fn update_lag(&self) {
        for g in &self.gatherers {
            for s in Stream::ALL {
                let b = g.stream(s);
                let behind = b.committed.load(Ordering::Acquire) < b.head.load(Ordering::Acquire);
                let mut since = b
                    .behind_since
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let lag = if behind {
                    since.get_or_insert_with(Instant::now).elapsed()
                } else {
                    *since = None;
                    Duration::ZERO
                };
                metrics::gauge!(m::SYNC_LAG, "gatherer" => g.id.clone(), "stream" => s.table())
                    .set(lag.as_secs_f64());
            }
        }
    }

    /// The lag as `update_lag` last computed it.
    pub fn lag(&self, g: usize, s: Stream) -> Duration {
        let b = self.gatherers[g].stream(s);
        b.behind_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .map_or(Duration::ZERO, |t| t.elapsed())
    }
}
