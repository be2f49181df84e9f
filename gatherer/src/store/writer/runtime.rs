//! The writers' own runtime: one worker thread with its own I/O driver and timers.
//!
//! Under a flood the socket readers on the main runtime always have frames in hand, and a
//! task with work never yields its worker: the writers' database replies then waited behind
//! them (a flush took 270 ms instead of 17) and ingestion collapsed to a sixth of what the
//! database takes. On their own thread, with connections opened there (the store's writer
//! pool), the writers are scheduled by the OS beside the readers, whatever the readers do.
//! The readers hand rows over through the bounded channels as before.
//!
//! The thread runs at a lower CPU priority (nice +[`WRITER_NICE`]): when the cores are
//! saturated the readers come first, because a reader behind is data at risk (Kalshi drops a
//! slow subscriber, and a lifecycle message read late subscribes a new market late), while a
//! writer behind only buffers (bounded; an overflow is declared). With cores to spare the nice
//! value changes nothing.

use kalshi_shared::runtime::LowPriorityRuntime;

/// How much lower than the rest of the gatherer the writers' thread is scheduled (a Linux
/// nice increment: CFS weight 1024 against 335, about a third of a reader's share under
/// contention).
pub const WRITER_NICE: i32 = 5;

/// The writers' runtime (dropping it stops the thread without blocking).
pub struct WriterRuntime(LowPriorityRuntime);

impl WriterRuntime {
    pub fn new() -> std::io::Result<Self> {
        LowPriorityRuntime::new("gatherer-writers", WRITER_NICE).map(Self)
    }

    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.0.handle()
    }
}
