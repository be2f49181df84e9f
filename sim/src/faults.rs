//! Fault injection: what the control API can switch on at run time.
//!
//! Connection faults are delivered to the chosen connections' tasks; exchange-wide faults
//! (rejected upgrades, REST error bursts, full outage) live in [`GlobalFaults`], consulted by
//! the upgrade handler and the REST guard on every request.
//!
//! It must never inject a fault that was not asked for, and never outlive its count or its
//! deadline.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// A fault request as posted to `POST /faults`. Flat on purpose (see `kalshi_shared::wire`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRequest {
    /// `drop`, `stall`, `skip_seq`, `malformed`, `ws_error`, `reject_upgrades`, `rest_errors`,
    /// `outage`, `clock_freeze`, `corrupt_markets` or `clear`.
    pub fault: String,
    /// Target connections by id (default: every connection).
    #[serde(default)]
    pub conn_ids: Option<Vec<u64>>,
    /// Target connections by the API key id they authenticated with.
    #[serde(default)]
    pub key_id: Option<String>,
    /// How many frames, requests or connections.
    #[serde(default)]
    pub count: Option<u32>,
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// WS error code for `ws_error` (10, 17 or 25).
    #[serde(default)]
    pub code: Option<u32>,
    /// Channel for `skip_seq` / `ws_error` (default `orderbook_delta` / every channel).
    #[serde(default)]
    pub channel: Option<String>,
    /// For `ws_error`: kill the subscription when the client next sends it an
    /// `update_subscription`, leaving that command unanswered (as a subscription killed while
    /// a command is in flight does), instead of at once.
    #[serde(default)]
    pub on_next_update: bool,
    /// For `malformed`: `not_json`, `unknown_type`, `bad_fields`, `unknown_fields`, `binary`,
    /// `oversize`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Frame size for `malformed` `oversize`.
    #[serde(default)]
    pub size: Option<usize>,
    /// HTTP status for `reject_upgrades` / `rest_errors`.
    #[serde(default)]
    pub status: Option<u16>,
    /// `drop`: send a close frame first instead of cutting the TCP stream.
    #[serde(default)]
    pub graceful: Option<bool>,
    /// `clock_freeze`: every event for `duration_ms` is stamped `offset_ms` before the fault's
    /// start (the exchange clock steps back and stands still: many identical records in one
    /// millisecond, timestamps going backwards).
    #[serde(default)]
    pub offset_ms: Option<i64>,
}

/// What a connection task is told to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnFault {
    Drop {
        graceful: bool,
    },
    Stall {
        duration: Duration,
    },
    SkipSeq {
        channel: String,
        count: u32,
    },
    Malformed {
        kind: MalformedKind,
        count: u32,
        size: usize,
    },
    WsError {
        code: u32,
        channel: Option<String>,
        on_next_update: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MalformedKind {
    NotJson,
    UnknownType,
    BadFields,
    UnknownFields,
    Binary,
    Oversize,
}

impl MalformedKind {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "not_json" => Self::NotJson,
            "unknown_type" => Self::UnknownType,
            "bad_fields" => Self::BadFields,
            "unknown_fields" => Self::UnknownFields,
            "binary" => Self::Binary,
            "oversize" => Self::Oversize,
            _ => return None,
        })
    }
}

/// A burst of REST errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestErrors {
    pub status: u16,
    pub remaining: Option<u32>,
    pub until: Option<Instant>,
}

/// Exchange-wide faults.
#[derive(Debug, Clone, Default)]
pub struct GlobalFaults {
    pub reject_upgrades: Option<(u16, Option<Instant>)>,
    pub rest_errors: Option<RestErrors>,
    pub outage_until: Option<Instant>,
    /// `clock_freeze`: the exchange time every event gets, until when.
    pub clock_freeze: Option<(i64, Instant)>,
    /// `corrupt_markets`: markets from this index on are served by REST with a field of the
    /// wrong type (`settlement_timer_seconds` as text), as if Kalshi changed a type.
    pub corrupt_markets_from: Option<u32>,
}

impl GlobalFaults {
    /// The frozen exchange time in Unix microseconds, while a `clock_freeze` lasts.
    pub fn frozen_us(&mut self, now: Instant) -> Option<i64> {
        match self.clock_freeze {
            Some((ms, until)) if now < until => Some(ms * 1000),
            Some(_) => {
                self.clock_freeze = None;
                None
            }
            None => None,
        }
    }

    pub fn in_outage(&mut self, now: Instant) -> bool {
        match self.outage_until {
            Some(t) if now < t => true,
            Some(_) => {
                self.outage_until = None;
                false
            }
            None => false,
        }
    }

    /// The status to answer a WS upgrade with, if it must be refused.
    pub fn upgrade_rejection(&mut self, now: Instant) -> Option<u16> {
        if self.in_outage(now) {
            return Some(503);
        }
        match self.reject_upgrades {
            Some((_, Some(until))) if now >= until => {
                self.reject_upgrades = None;
                None
            }
            Some((status, _)) => Some(status),
            None => None,
        }
    }

    /// The status to answer a REST call with, if it must fail (consumes one of a counted burst).
    pub fn rest_failure(&mut self, now: Instant) -> Option<u16> {
        if self.in_outage(now) {
            return Some(503);
        }
        let burst = self.rest_errors.as_mut()?;
        if burst.until.is_some_and(|u| now >= u) {
            self.rest_errors = None;
            return None;
        }
        let status = burst.status;
        if let Some(n) = burst.remaining.as_mut() {
            if *n == 0 {
                self.rest_errors = None;
                return None;
            }
            *n -= 1;
        }
        Some(status)
    }
}

pub use kalshi_shared::rate::TokenBucket;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_rest_bursts_end() {
        let now = Instant::now();
        let mut g = GlobalFaults {
            rest_errors: Some(RestErrors {
                status: 429,
                remaining: Some(2),
                until: None,
            }),
            ..Default::default()
        };
        assert_eq!(g.rest_failure(now), Some(429));
        assert_eq!(g.rest_failure(now), Some(429));
        assert_eq!(g.rest_failure(now), None);
        assert!(g.rest_errors.is_none());
        g.outage_until = Some(now + Duration::from_secs(1));
        assert_eq!(g.rest_failure(now), Some(503));
        assert_eq!(g.upgrade_rejection(now), Some(503));
        assert_eq!(g.upgrade_rejection(now + Duration::from_secs(2)), None);
    }
}
