//! Delivery of published events to one connection: pending snapshots at their exact point in
//! the stream, dense `seq` per sid, and the faults the control API injects (kill a
//! subscription, skip `seq`).
//!
//! It must never deliver a delta before the snapshot it follows.

use super::*;

impl Session {
    /// Emits pending snapshots whose position is `< pos` (`inclusive`: `<= pos`).
    pub(super) fn flush_pending(
        &mut self,
        pos: u64,
        inclusive: bool,
        now_ms: i64,
        out: &mut Vec<String>,
    ) {
        let mut any = false;
        for sub in &mut self.subs {
            while let Some(front) = sub.pending.front() {
                let due = if inclusive {
                    front.at_pos <= pos
                } else {
                    front.at_pos < pos
                };
                if !due {
                    break;
                }
                let Some(p) = sub.pending.pop_front() else {
                    break;
                };
                match p.kind {
                    PendingKind::Snapshot => {
                        let seq = sub.next_seq();
                        out.push(encode_frame(
                            frame_type::ORDERBOOK_SNAPSHOT,
                            None,
                            Some(sub.sid),
                            Some(seq),
                            None,
                            Some(&p.msg),
                        ));
                    }
                    PendingKind::Ticker => {
                        out.push(encode_frame(
                            frame_type::TICKER,
                            None,
                            Some(sub.sid),
                            None,
                            Some(now_ms),
                            Some(&p.msg),
                        ));
                    }
                }
            }
            any |= !sub.pending.is_empty();
        }
        self.pending_any = any;
    }

    /// Routes one batch of published events to this connection's subscriptions.
    /// `yes_scale` re-expresses a NO delta on the YES scale for `use_yes_price` subscribers.
    pub fn deliver(
        &mut self,
        batch: &[Published],
        now_ms: i64,
        out: &mut Vec<String>,
        yes_scale: &mut dyn FnMut(&Published) -> Option<String>,
    ) {
        for e in batch {
            if e.pos <= self.delivered_pos {
                continue;
            }
            if self.pending_any {
                self.flush_pending(e.pos, false, now_ms, out);
            }
            self.delivered_pos = e.pos;
            let channel = e.kind.channel();
            let Some(sub) = self.subs.iter_mut().find(|s| s.channel == channel) else {
                continue;
            };
            if let Some(map) = &sub.markets {
                match e.market.and_then(|m| map.get(&m)) {
                    Some(from) if e.pos > *from => {}
                    _ => continue,
                }
            }
            let seq = if sub.data_has_seq() {
                let s = sub.next_seq();
                if sub.skip_next > 0 {
                    // Lost on the way: the number is consumed, the frame never arrives.
                    sub.skip_next -= 1;
                    continue;
                }
                Some(s)
            } else {
                None
            };
            let msg: Cow<'_, str> = match (e.kind, e.delta) {
                (EventKind::Delta, Some(d))
                    if sub.use_yes_price && d.side == kalshi_shared::wire::Side::No =>
                {
                    match yes_scale(e) {
                        Some(s) => Cow::Owned(s),
                        None => Cow::Borrowed(&e.msg),
                    }
                }
                _ => Cow::Borrowed(&e.msg),
            };
            let sending = (e.kind == EventKind::Ticker).then_some(now_ms);
            out.push(encode_frame(
                e.kind.frame_type(),
                None,
                Some(sub.sid),
                seq,
                sending,
                Some(&msg),
            ));
        }
        if self.pending_any {
            self.flush_pending(self.delivered_pos, true, now_ms, out);
        }
    }

    /// Kills subscriptions with an asynchronous error (`channel` `None`: all of them).
    pub fn kill(&mut self, c: u32, channel: Option<Channel>, out: &mut Vec<String>) -> usize {
        let before = self.subs.len();
        self.subs.retain(|s| {
            if channel.is_none_or(|ch| ch == s.channel) {
                out.push(error_frame(None, Some(s.sid), c, None));
                false
            } else {
                true
            }
        });
        self.pending_any = self.subs.iter().any(|s| !s.pending.is_empty());
        before - self.subs.len()
    }

    /// Drops the next `count` data frames of a channel's subscription.
    pub fn skip_seq(&mut self, channel: Channel, count: u32) -> bool {
        match self.sub_mut(channel) {
            Some(s) => {
                s.skip_next += count;
                true
            }
            None => false,
        }
    }
}
