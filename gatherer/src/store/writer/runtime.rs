//! The writers' own runtime: one worker thread with its own I/O driver and timers.
//!
//! Under a flood the socket readers on the main runtime always have frames in hand, and a
//! task with work never yields its worker: the writers' database replies then waited behind
//! them (a flush took 270 ms instead of 17) and ingestion collapsed to a sixth of what the
//! database takes. On their own thread, with connections opened there (the store's writer
//! pool), the writers are scheduled by the OS beside the readers, whatever the readers do.
//! The readers hand rows over through the bounded channels as before.

use tokio::runtime::{Handle, Runtime};

/// Owns the runtime; dropping it stops the thread without blocking (allowed inside async
/// code), after the service has let the writers finish.
pub struct WriterRuntime {
    rt: Option<Runtime>,
    handle: Handle,
}

impl WriterRuntime {
    pub fn new() -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("gatherer-writers")
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

impl Drop for WriterRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
