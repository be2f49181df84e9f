//! Batching: pages from the sources become rows of one batch, each checked against the key
//! cache (recently committed keys, first in first out) so a record another gatherer already
//! delivered is dropped before it reaches the database.
//!
//! It must never drop a record whose key it has not seen committed: the cache only skips
//! work, the database's unique keys decide.

use super::*;

/// Hashes a record key for a set: keys are 128-bit digests already (SHA-256 of the record's
/// identity), so folding their halves is as good a hash as any and far cheaper than SipHash
/// over them (the key sets showed in the deduplicator's profile during a catch-up).
#[derive(Default, Clone, Copy)]
pub(super) struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not used for u128 keys; any other input still hashes correctly, if slowly.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = (v as u64) ^ ((v >> 64) as u64);
    }
}

/// A set of record keys.
pub(super) type KeySet = HashSet<u128, std::hash::BuildHasherDefault<DigestHasher>>;

/// Keys of recently committed records, first in first out: at most `cap` keys, none older
/// than `window`. Both grow on demand: memory follows the stream's rate times the window (a
/// cache sized up front, ring included, became resident a page at a time as it wrapped, and
/// read as a slow leak over the first 20 minutes of a trades stream).
pub(super) struct KeyCache {
    set: KeySet,
    order: VecDeque<(u128, Instant)>,
    cap: usize,
    window: Duration,
}

impl KeyCache {
    pub(super) fn new(cap: usize, window: Duration) -> Self {
        KeyCache {
            set: KeySet::default(),
            order: VecDeque::new(),
            cap,
            window,
        }
    }
    pub(super) fn contains(&self, k: u128) -> bool {
        self.set.contains(&k)
    }
    pub(super) fn insert(&mut self, k: u128, now: Instant) {
        if self.cap == 0 || !self.set.insert(k) {
            return;
        }
        self.order.push_back((k, now));
        while let Some(&(old, at)) = self.order.front() {
            if self.order.len() <= self.cap && now.saturating_duration_since(at) <= self.window {
                break;
            }
            self.order.pop_front();
            self.set.remove(&old);
        }
    }
    pub(super) fn clear(&mut self) {
        self.set.clear();
        self.order.clear();
    }
    pub(super) fn len(&self) -> usize {
        self.order.len()
    }
}

impl Sink {
    pub(super) fn add(&mut self, batch: &mut Batch, page: Page) {
        self.check_generation();
        batch.pages += 1;
        // Room for this page and those queued behind it, so rows move once.
        batch.rows.reserve(
            (page.records.len() * (1 + self.rx.len()))
                .min(self.cfg.batch_rows.saturating_sub(batch.rows.len())),
        );
        let gid = &self.cfg.gatherers[page.gatherer];
        for item in page.records {
            let src = Source {
                gatherer_id: gid,
                instance_id: &page.instance_id,
            };
            let key = if item.invalid.is_none() {
                records::key(self.stream, &src, &item.record)
            } else {
                None
            };
            if let Some(k) = key {
                if self.cache.contains(k) {
                    batch.dropped += 1;
                    continue;
                }
                if !batch.seen.insert(k) {
                    batch.twins.push(Row {
                        gatherer: page.gatherer,
                        instance: page.instance_id.clone(),
                        record: item.record,
                        key,
                        invalid: None,
                    });
                    continue;
                }
            }
            batch.rows.push(Row {
                gatherer: page.gatherer,
                instance: page.instance_id.clone(),
                record: item.record,
                key,
                invalid: item.invalid,
            });
        }
        if let Some(c) = page.last_cursor {
            match batch.cursors.get_mut(&page.gatherer) {
                Some((inst, cur)) if **inst == *page.instance_id => *cur = (*cur).max(c),
                _ => {
                    batch
                        .cursors
                        .insert(page.gatherer, (page.instance_id.clone(), c));
                }
            }
        }
    }

    /// After the pool was rebuilt (failover, demoted primary) the cache may name rows the new
    /// primary does not have: forget it.
    pub(super) fn check_generation(&mut self) {
        let g = self.prod.generation();
        if g != self.generation {
            self.generation = g;
            self.cache.clear();
        }
    }
}
