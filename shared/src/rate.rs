//! The token bucket both the gatherer (its REST client's pace) and the simulator (Kalshi's
//! per-key REST limit) use: integer milli-tokens, refilled continuously from the caller's
//! clock.
//!
//! It must never use floating point (a bucket that drifts is a limit that lies), never hold
//! more than its capacity however long it idles, and never read the clock itself (callers
//! pass `now`, so tests are exact).

use std::time::{Duration, Instant};

/// A token bucket with integer milli-tokens.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    milli: i64,
    capacity_milli: i64,
    rate_per_s: i64,
    last: Instant,
}

impl TokenBucket {
    /// Full at `now`: `capacity` tokens, refilled at `rate_per_s`.
    pub fn new(rate_per_s: u32, capacity: u32, now: Instant) -> Self {
        let capacity_milli = i64::from(capacity) * 1000;
        Self {
            milli: capacity_milli,
            capacity_milli,
            rate_per_s: i64::from(rate_per_s),
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed_us = now
            .saturating_duration_since(self.last)
            .as_micros()
            .min(3_600_000_000) as i64;
        self.last = now;
        // rate tokens/s = rate milli-tokens/ms = rate/1000 milli-tokens/us
        self.milli = (self.milli + elapsed_us * self.rate_per_s / 1000).min(self.capacity_milli);
    }

    /// Takes `cost` tokens if available.
    pub fn try_take(&mut self, cost: u32, now: Instant) -> bool {
        self.take(cost, now).is_ok()
    }

    /// Takes `cost` tokens, or says how long until they are available.
    pub fn take(&mut self, cost: u32, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        let cost = i64::from(cost) * 1000;
        if self.milli >= cost {
            self.milli -= cost;
            Ok(())
        } else {
            let missing = cost - self.milli;
            Err(Duration::from_micros(
                (missing * 1000 / self.rate_per_s.max(1)) as u64 + 1,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_refills_at_its_rate_and_never_beyond_its_capacity() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(100, 20, t0);
        assert!(b.try_take(10, t0));
        assert!(b.try_take(10, t0));
        assert!(!b.try_take(10, t0));
        assert!(!b.try_take(10, t0 + Duration::from_millis(99)));
        assert!(b.try_take(10, t0 + Duration::from_millis(100)));
        let later = t0 + Duration::from_secs(3600);
        assert!(b.try_take(10, later));
        assert!(b.try_take(10, later));
        assert!(!b.try_take(10, later));
    }

    #[test]
    fn a_refused_take_says_how_long_to_wait() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 2, t0);
        assert_eq!(b.take(1, t0), Ok(()));
        assert_eq!(b.take(1, t0), Ok(()));
        let wait = b.take(1, t0).err().unwrap_or_default();
        assert!(
            wait >= Duration::from_millis(99) && wait <= Duration::from_millis(101),
            "{wait:?}"
        );
        assert_eq!(b.take(1, t0 + Duration::from_millis(100)), Ok(()));
    }
}
