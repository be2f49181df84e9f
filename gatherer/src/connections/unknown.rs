//! Messages of types this build does not model, kept as sent (the `unknown_messages` stream):
//! a new channel's, or a new type on a subscribed channel. Never dropped: stored verbatim,
//! counted by type, archived downstream.
//!
//! A message the exchange sends on every subscription of a channel reaches each of this
//! gatherer's connections that subscribed it: those copies are one message. A copy of the
//! same type and content that another connection received within `COPY_WINDOW` is skipped
//! (counted as a copy); the same connection receiving it twice is two messages. Across
//! gatherers, production decides (the lifecycle identity rule, deduplicator sink/lifecycle.rs).
//!
//! It must never skip a message only one connection received, nor hold more than `CAPACITY`
//! recent messages.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Mutex;

/// How far apart two connections' copies of one message may arrive.
pub const COPY_WINDOW_MS: i64 = 5_000;
/// Recent messages remembered for copy detection (oldest forgotten first).
pub const CAPACITY: usize = 4_096;

struct Seen {
    key: (String, String),
    at_ms: i64,
    /// Connections that received a copy.
    conns: BTreeSet<usize>,
}

/// Recent unknown messages, shared by every connection of this gatherer.
#[derive(Default)]
pub struct RecentUnknown {
    seen: Mutex<VecDeque<Seen>>,
}

impl RecentUnknown {
    /// Whether the message `(kind, hash)` connection `conn` received at `at_ms` is a copy of
    /// one another connection received within the window (then it is not stored again).
    pub fn is_copy(&self, kind: &str, hash: &str, conn: usize, at_ms: i64) -> bool {
        let Ok(mut seen) = self.seen.lock() else {
            return false;
        };
        while seen
            .front()
            .is_some_and(|s| s.at_ms < at_ms - COPY_WINDOW_MS || seen.len() >= CAPACITY)
        {
            seen.pop_front();
        }
        let copy_of = seen.iter_mut().rev().find(|s| {
            s.key.0 == kind
                && s.key.1 == hash
                && (s.at_ms - at_ms).abs() <= COPY_WINDOW_MS
                && !s.conns.contains(&conn)
        });
        if let Some(s) = copy_of {
            s.conns.insert(conn);
            return true;
        }
        seen.push_back(Seen {
            key: (kind.to_owned(), hash.to_owned()),
            at_ms,
            conns: BTreeSet::from([conn]),
        });
        false
    }
}

/// `msg.market_ticker` of a message, when it is an object that has one.
pub fn market_of(msg: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(default)]
        market_ticker: Option<String>,
    }
    serde_json::from_str::<Probe>(msg)
        .ok()
        .and_then(|p| p.market_ticker)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_on_other_connections_are_one_message_and_repeats_on_one_are_two() {
        let r = RecentUnknown::default();
        assert!(!r.is_copy("x", "h", 0, 1_000));
        assert!(r.is_copy("x", "h", 1, 1_100), "connection 1's copy");
        assert!(r.is_copy("x", "h", 2, 1_200), "connection 2's copy");
        // Connection 0 again: a second message, whose copies follow.
        assert!(!r.is_copy("x", "h", 0, 2_000));
        assert!(r.is_copy("x", "h", 1, 2_050));
        // Another content or type is another message.
        assert!(!r.is_copy("x", "other", 1, 2_060));
        assert!(!r.is_copy("y", "h", 1, 2_070));
        // Beyond the window: a new message.
        assert!(!r.is_copy("x", "h", 2, 2_000 + COPY_WINDOW_MS + 500));
    }

    #[test]
    fn memory_is_bounded() {
        let r = RecentUnknown::default();
        for i in 0..(CAPACITY * 3) {
            assert!(!r.is_copy("x", &i.to_string(), 0, 1_000));
        }
        assert!(r.seen.lock().unwrap().len() <= CAPACITY);
    }

    #[test]
    fn the_market_is_read_when_there_is_one() {
        assert_eq!(market_of(r#"{"market_ticker":"M-1","n":1}"#), "M-1");
        assert_eq!(market_of(r#"{"n":1}"#), "");
        assert_eq!(market_of(r#"[1,2]"#), "");
        assert_eq!(market_of(r#""text""#), "");
    }
}
