//! What the deduplicator knows about each gatherer and stream, shared by the sources, the sinks,
//! `/health` and the lag gauges.
//!
//! It must never be the source of truth for cursors (production is): it only mirrors what was
//! committed, for health and lag.

use std::collections::VecDeque;
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
    /// The gatherer's configured retention of this stream in ms as last reported (0: kept for
    /// ever), once `retention_known`.
    pub retention_ms: AtomicI64,
    pub retention_known: AtomicBool,
    /// Heads in the order they were first reported, with when: the oldest one above the
    /// committed cursor tells how long production has been missing a record.
    heads: Mutex<VecDeque<(i64, Instant)>>,
}

/// Head observations kept per stream (coarsened when full, so memory stays bounded).
const HEADS_KEPT: usize = 1024;

impl StreamBoard {
    /// Records a head reported by the gatherer.
    pub fn note_head(&self, head: i64) {
        let prev = self.head.fetch_max(head, Ordering::AcqRel);
        if head <= prev {
            return;
        }
        let mut q = self
            .heads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if q.len() >= HEADS_KEPT {
            // Merge neighbours: each pair keeps the later head with the earlier time, so the
            // lag can only be over-, never under-estimated.
            let v: Vec<(i64, Instant)> = q.drain(..).collect();
            q.extend(v.chunks(2).map(|c| (c[c.len() - 1].0, c[0].1)));
        }
        q.push_back((head, Instant::now()));
    }

    /// Seconds since the oldest record production lacks was first reported (0 if none).
    pub fn lag(&self) -> Duration {
        let committed = self.committed.load(Ordering::Acquire);
        let mut q = self
            .heads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Records up to each head were first known at its time; the first head above the
        // committed cursor dates the oldest record production lacks.
        while q.front().is_some_and(|&(h, _)| h <= committed) {
            q.pop_front();
        }
        q.front().map_or(Duration::ZERO, |(_, t)| t.elapsed())
    }

    /// Forgets heads (the gatherer instance changed: cursors start again from 0).
    pub fn reset(&self) {
        self.committed.store(0, Ordering::Release);
        self.read.store(0, Ordering::Release);
        self.head.store(0, Ordering::Release);
        self.heads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }
}

pub struct GathererBoard {
    pub id: String,
    pub endpoint: String,
    pub streams: [StreamBoard; Stream::ALL.len()],
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

    /// Updates `dedup_sync_lag_seconds`: how long the oldest record a gatherer reported and
    /// production does not have has been waiting (0 when production has everything reported).
    pub fn update_lag(&self) {
        for g in &self.gatherers {
            for s in Stream::ALL {
                metrics::gauge!(m::SYNC_LAG, "gatherer" => g.id.clone(), "stream" => s.table())
                    .set(g.stream(s).lag().as_secs_f64());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_dates_the_oldest_unmerged_record_and_resets_when_caught_up() {
        let b = StreamBoard::default();
        assert_eq!(b.lag(), Duration::ZERO);
        b.note_head(10);
        std::thread::sleep(Duration::from_millis(30));
        b.note_head(20);
        assert!(
            b.lag() >= Duration::from_millis(30),
            "records 1..=10 wait since the first report"
        );
        b.committed.store(10, Ordering::Release);
        assert!(
            b.lag() < Duration::from_millis(30),
            "only 11..=20 wait now, reported later"
        );
        b.committed.store(20, Ordering::Release);
        assert_eq!(b.lag(), Duration::ZERO);
        // Bounded: many reports keep at most HEADS_KEPT observations, the oldest time kept.
        b.committed.store(0, Ordering::Release);
        let before = b.lag();
        for h in 21..5000 {
            b.note_head(h);
        }
        assert!(b.heads.lock().unwrap().len() <= HEADS_KEPT);
        assert!(b.lag() >= before);
    }
}
