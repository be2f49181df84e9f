//! A runtime of its own for work that must not delay a service's main tasks: one worker
//! thread (and its blocking pool) at a lower CPU priority, with its own I/O driver and timers.
//!
//! Used by the gatherer's store writers (a reader behind is data at risk, a writer behind only
//! buffers) and by the deduplicator's archiver (its minute-by-minute export and verify are
//! bursts of decoding, hashing and compression: on the main runtime they held a worker while
//! live records waited, and the soak's p99 end to end rose with every period exported). With
//! cores to spare the nice value changes nothing; when they are saturated, the main runtime's
//! threads come first (CFS weights: nice +5 is about a third of a normal thread's share, +10
//! about a tenth).

use tokio::runtime::{Handle, Runtime};

/// Owns the runtime; dropping it stops its threads without blocking (allowed inside async
/// code), after the service has let its tasks finish.
pub struct LowPriorityRuntime {
    rt: Option<Runtime>,
    handle: Handle,
}

impl LowPriorityRuntime {
    /// One worker named `name`, every thread of the runtime (the worker and its blocking pool)
    /// `nice` steps below the caller's priority.
    pub fn new(name: &str, nice: i32) -> std::io::Result<Self> {
        let label = name.to_owned();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(name)
            .on_thread_start(move || lower_priority(&label, nice))
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        Ok(Self {
            rt: Some(rt),
            handle,
        })
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for LowPriorityRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Lowers the calling thread's priority; a failure (a platform without per-thread nice
/// values) is logged and otherwise harmless.
fn lower_priority(name: &str, nice: i32) {
    let tid = rustix::thread::gettid();
    let base = rustix::process::getpriority_process(Some(tid)).unwrap_or(0);
    if let Err(e) = rustix::process::setpriority_process(Some(tid), base + nice) {
        tracing::warn!(thread = name, error = %e, "cannot lower the thread's priority");
    }
}

/// The calling thread's nice value (for tests).
pub fn current_nice() -> Option<i32> {
    rustix::process::getpriority_process(Some(rustix::thread::gettid())).ok()
}

#[cfg(test)]
mod tests {
    use super::{LowPriorityRuntime, current_nice};

    #[test]
    fn workers_and_blocking_threads_run_lower() {
        let base = current_nice().unwrap_or(0);
        let rt = LowPriorityRuntime::new("test-low", 7).unwrap_or_else(|e| panic!("{e}"));
        let (worker, blocking) = rt.handle().block_on(async {
            // block_on runs its future on the calling thread: spawned, it runs on a worker.
            let w = tokio::spawn(async { current_nice() }).await.ok().flatten();
            let b = tokio::task::spawn_blocking(current_nice)
                .await
                .ok()
                .flatten();
            (w, b)
        });
        // Nice values saturate at 19.
        let want = Some((base + 7).min(19));
        assert_eq!(worker, want, "the worker thread");
        assert_eq!(blocking, want, "a blocking-pool thread");
        assert_eq!(current_nice(), Some(base), "the caller is left as it was");
    }
}
