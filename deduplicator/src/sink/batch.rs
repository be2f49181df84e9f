//! Batching: pages from the sources become rows of one batch, each checked against the key
//! cache (recently committed keys, first in first out) so a record another gatherer already
//! delivered is dropped before it reaches the database.
//!
//! It must never drop a record whose key it has not seen committed: the cache only skips
//! work, the database's unique keys decide.

use super::*;

/// Keys of recently committed records, first in first out.
pub(super) struct KeyCache {
    set: HashSet<u128>,
    order: VecDeque<u128>,
    cap: usize,
}

impl KeyCache {
    pub(super) fn new(cap: usize) -> Self {
        KeyCache {
            set: HashSet::with_capacity(cap.min(1 << 20)),
            order: VecDeque::with_capacity(cap.min(1 << 20)),
            cap,
        }
    }
    pub(super) fn contains(&self, k: u128) -> bool {
        self.set.contains(&k)
    }
    pub(super) fn insert(&mut self, k: u128) {
        if self.cap == 0 || !self.set.insert(k) {
            return;
        }
        self.order.push_back(k);
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
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
