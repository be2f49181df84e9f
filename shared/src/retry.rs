//! The one retry shape: capped exponential backoff with full jitter, whose sleep races the
//! shutdown token. Every retry loop in the services is `loop { try; on failure:
//! if !backoff.sleep(&cancel).await { stop } }` with a [`Backoff`], and resets it on success;
//! what a loop does between attempts (rebuild a pool, re-queue a window) stays in the loop.
//! No retry loop in this project may ignore shutdown, and no backoff may ever grow beyond its
//! configured maximum.
//!
//! It must never sleep past a shutdown request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Backoff settings, validated: `0 < initial <= max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    pub initial: Duration,
    pub max: Duration,
}

/// Why backoff settings are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackoffError {
    #[error("backoff initial delay must be positive")]
    ZeroInitial,
    #[error("backoff maximum {max:?} is below its initial delay {initial:?}")]
    MaxBelowInitial { initial: Duration, max: Duration },
}

impl BackoffConfig {
    pub fn new(initial: Duration, max: Duration) -> Result<Self, BackoffError> {
        if initial.is_zero() {
            return Err(BackoffError::ZeroInitial);
        }
        if max < initial {
            return Err(BackoffError::MaxBelowInitial { initial, max });
        }
        Ok(Self { initial, max })
    }
}

/// Attempt state. `next_delay` grows `initial * 2^attempt` up to `max`, and draws the actual
/// delay uniformly from `[0, cap]` (full jitter), so many clients retrying at once spread out.
#[derive(Debug, Clone)]
pub struct Backoff {
    cfg: BackoffConfig,
    attempt: u32,
    rng: u64,
}

static SEED: AtomicU64 = AtomicU64::new(0x853c_49e6_748f_ea9b);

impl Backoff {
    pub fn new(cfg: BackoffConfig) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let seed = SEED.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed) ^ nanos;
        Self {
            cfg,
            attempt: 0,
            rng: seed | 1,
        }
    }

    /// Attempts made since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The upper bound of the next delay, without jitter.
    pub fn cap(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.cfg
            .initial
            .checked_mul(factor)
            .map_or(self.cfg.max, |d| d.min(self.cfg.max))
    }

    /// The next delay (full jitter) and one more attempt counted.
    pub fn next_delay(&mut self) -> Duration {
        let cap = self.cap();
        self.attempt = self.attempt.saturating_add(1);
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let nanos = cap.as_nanos().min(u128::from(u64::MAX)) as u64;
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(((u128::from(r) * u128::from(nanos)) >> 64) as u64)
    }

    /// Sleeps for the next delay; returns false if shutdown came first.
    pub async fn sleep(&mut self, cancel: &CancellationToken) -> bool {
        let d = self.next_delay();
        tokio::select! {
            biased;
            _ = cancel.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(ms: u64, max_ms: u64) -> BackoffConfig {
        BackoffConfig::new(Duration::from_millis(ms), Duration::from_millis(max_ms)).unwrap()
    }

    #[test]
    fn validation() {
        assert_eq!(
            BackoffConfig::new(Duration::ZERO, Duration::from_secs(1)),
            Err(BackoffError::ZeroInitial)
        );
        assert!(matches!(
            BackoffConfig::new(Duration::from_secs(2), Duration::from_secs(1)),
            Err(BackoffError::MaxBelowInitial { .. })
        ));
    }

    #[test]
    fn caps_grow_then_stop_and_jitter_stays_below() {
        let mut b = Backoff::new(cfg(100, 1_000));
        let mut caps = Vec::new();
        for _ in 0..10 {
            let cap = b.cap();
            let d = b.next_delay();
            assert!(d <= cap);
            caps.push(cap.as_millis());
        }
        assert_eq!(
            caps,
            vec![100, 200, 400, 800, 1000, 1000, 1000, 1000, 1000, 1000]
        );
        // Many attempts never overflow.
        for _ in 0..100 {
            assert!(b.next_delay() <= Duration::from_secs(1));
        }
        b.reset();
        assert_eq!(b.cap(), Duration::from_millis(100));
    }

    #[test]
    fn jitter_spreads() {
        let mut b = Backoff::new(cfg(1_000, 1_000));
        let draws: Vec<Duration> = (0..200).map(|_| b.next_delay()).collect();
        let low = draws
            .iter()
            .filter(|d| **d < Duration::from_millis(500))
            .count();
        assert!((40..160).contains(&low), "roughly uniform: {low}");
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_races_shutdown() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let mut b = Backoff::new(cfg(60_000, 60_000));
        assert!(!b.sleep(&cancel).await, "an already cancelled token wins");
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        let mut b = Backoff::new(cfg(60_000, 60_000));
        // Draw until the jittered delay is long enough to race.
        while b.cap() > Duration::ZERO && b.clone().next_delay() < Duration::from_secs(1) {
            b.next_delay();
            b.reset();
        }
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            c.cancel();
        });
        let start = tokio::time::Instant::now();
        assert!(!b.sleep(&cancel).await);
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
