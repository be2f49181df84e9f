//! The deduplicator's heap under glibc's malloc: what it holds, and handing freed memory back.
//!
//! The deduplicator allocates in bursts: a catch-up after a gatherer or production comes back
//! moves hundreds of thousands of rows through the sinks in seconds, and the archive encodes a
//! period's Parquet file in memory every minute. glibc raises its mmap threshold after the
//! first large free (up to 32 MiB), so later large buffers come from the arenas, and a freed
//! arena's pages stay resident: the hour-long soak saw RSS step up at every catch-up (240 to
//! 580 MiB over one life) while nothing it kept grew. So: a fixed mmap threshold (large
//! buffers are mapped and unmapped, never parked in an arena), at most [`ARENA_MAX`] arenas,
//! and every `TRIM_EVERY` the free pages of every arena are given back (`malloc_trim`), with
//! the heap's figures as gauges (`process_heap_in_use_bytes`, `process_heap_free_bytes`) so
//! that growth can be told from retention. mimalloc was measured instead and held more (peak
//! RSS 218 to 346 MiB in the catch-up bench; Cargo.toml).
//!
//! It must never run on anything but glibc: elsewhere both functions do nothing.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// How often freed memory is handed back and the gauges are set. A trim walks the arenas'
/// free lists: about a millisecond per 100 MiB held.
pub const TRIM_EVERY: Duration = Duration::from_secs(10);

/// Allocations at or above this are mapped on their own and unmapped when freed.
pub const MMAP_THRESHOLD: i32 = 1 << 20;

/// Arenas at most. glibc's default is 8 per core, and a thread keeps the arena it first
/// allocated in: the runtime's workers and the blocking pool's threads (which come and go)
/// each fill and fragment their own, and a page partly used in any of them stays resident.
/// Two arenas on two workers keep contention negligible (a blocking thread shares one).
pub const ARENA_MAX: i32 = 2;

/// Fixes glibc's mmap threshold (which also stops it from moving) and caps its arenas. Call
/// before the runtime starts its threads.
pub fn configure() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before other threads.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        libc::mallopt(libc::M_ARENA_MAX, ARENA_MAX);
    }
}

/// The heap as glibc's malloc sees it, summed over its arenas: `(in use, free but held)`.
pub fn heap() -> Option<(u64, u64)> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 reads the allocator's statistics and has no preconditions.
        let m = unsafe { libc::mallinfo2() };
        Some(((m.uordblks + m.hblkhd) as u64, m.fordblks as u64))
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// Hands the free pages of every arena back to the kernel.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory the allocator holds.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Trims and sets the gauges every [`TRIM_EVERY`] until `stop`.
pub async fn run(stop: CancellationToken) -> anyhow::Result<()> {
    loop {
        tokio::task::spawn_blocking(trim).await?;
        if let Some((used, free)) = heap() {
            ::metrics::gauge!(crate::metrics::HEAP_IN_USE).set(used as f64);
            ::metrics::gauge!(crate::metrics::HEAP_FREE).set(free as f64);
        }
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(TRIM_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trim_gives_freed_memory_back() {
        configure();
        let Some((before, _)) = heap() else { return };
        // Many small blocks (below the mmap threshold) freed: held free until trimmed.
        let blocks: Vec<Vec<u8>> = (0..20_000).map(|i| vec![i as u8; 2_000]).collect();
        let (during, _) = heap().unwrap_or_default();
        assert!(during >= before + 20_000 * 2_000, "{before} -> {during}");
        drop(blocks);
        trim();
        let (after, free) = heap().unwrap_or_default();
        assert!(
            after < during,
            "in use {after} after freeing, {during} before"
        );
        // Whatever stays free after a trim is below a page per arena's top, not the 40 MB.
        assert!(
            free < 20_000 * 2_000 / 2,
            "{free} bytes still held free after a trim"
        );
    }
}
