//! `seq` checking and open gaps: a skipped `seq` opens a gap for the markets of that
//! subscription, a snapshot or a reconnect closes it, and the closed window is declared as a
//! `gaps` row (with a margin) and, for trades, handed to the backfill.
//!
//! It must never close an open gap without declaring it, nor declare one twice.

use super::*;

impl Connection {
    pub(super) fn gap(
        &self,
        stream: Stream,
        market: Option<&str>,
        from_ms: i64,
        to_ms: i64,
        reason: GapReason,
        detail: String,
    ) {
        let margin = self.shared.cfg.gap_margin_ms;
        metrics::counter!(m::GAPS_DECLARED, "reason" => reason).increment(1);
        self.shared.health.gap_declared();
        self.shared.sinks.gaps.push(GapRow {
            stream,
            market_ticker: market.map(str::to_owned),
            from_ms: from_ms - margin,
            to_ms: to_ms + margin,
            reason,
            detail,
        });
    }

    pub(super) fn seq_gap(
        &mut self,
        s: &mut Session,
        sid: u64,
        channel: Channel,
        expected: u64,
        got: u64,
        now: i64,
    ) {
        metrics::counter!(m::SEQ_GAPS).increment(1);
        if let Some(suppressed) = self.limiter.check("seq_gap") {
            tracing::warn!(sid, channel = %channel, expected, got, suppressed, "sequence gap");
        }
        let from = self.last_good_ms;
        match channel {
            Channel::OrderbookDelta => {
                // Markets in their leaving grace share the sid: their books are broken too.
                // They get no fresh snapshot; their hole is declared when the grace ends.
                for (_, mk) in &s.leaving {
                    if let Some(b) = s.books.get_mut(mk) {
                        route::unstored("broken_chain", b.invalidate());
                    }
                    self.holes
                        .entry(mk.clone())
                        .or_insert((from, GapReason::SeqGap));
                }
                let markets: Vec<String> = s.markets.iter().cloned().collect();
                for mk in &markets {
                    if let Some(b) = s.books.get_mut(mk) {
                        route::unstored("broken_chain", b.invalidate());
                    }
                    self.holes
                        .entry(mk.clone())
                        .or_insert((from, GapReason::SeqGap));
                }
                metrics::counter!(m::RESNAPSHOTS).increment(markets.len() as u64);
                let batch = self.shared.cfg.subscribe_batch;
                for chunk in markets.chunks(batch) {
                    s.send(Pending::Update {
                        channel,
                        action: ws::action::GET_SNAPSHOT,
                        markets: chunk.to_vec(),
                    });
                }
            }
            Channel::Trade => self.shared.holes.push(TradeHole {
                from_ms: self.last_trade_ts.map_or(from, |t| t.min(from))
                    - self.shared.cfg.gap_margin_ms,
                to_ms: now + self.shared.cfg.gap_margin_ms,
                reason: GapReason::SeqGap,
            }),
            Channel::Ticker => {
                for mk in &s.markets {
                    self.gap(
                        Stream::Tickers,
                        Some(mk),
                        from,
                        now,
                        GapReason::SeqGap,
                        format!("sid {sid}: expected seq {expected}, got {got}"),
                    );
                }
            }
            _ => {
                self.gap(
                    Stream::Lifecycle,
                    None,
                    from,
                    now,
                    GapReason::SeqGap,
                    format!("sid {sid}: expected seq {expected}, got {got}"),
                );
                self.note(Note::Resync);
            }
        }
    }

    /// Publishes this connection's open holes (for `open_holes`) when they changed.
    pub(super) fn publish_open_holes(&mut self) {
        let wide = |stream, slot: &Option<(i64, GapReason)>| {
            slot.map(|(from_ms, reason)| OpenHole {
                stream,
                market: String::new(),
                from_ms,
                reason,
            })
        };
        let mut now: Vec<OpenHole> = self
            .holes
            .iter()
            .map(|(m, (from_ms, reason))| OpenHole {
                stream: Stream::OrderbookDeltas,
                market: m.clone(),
                from_ms: *from_ms,
                reason: *reason,
            })
            .chain(self.late_tickers.iter().map(|(m, from_ms)| OpenHole {
                stream: Stream::Tickers,
                market: m.clone(),
                from_ms: *from_ms,
                reason: GapReason::LateSubscription,
            }))
            .chain(wide(Stream::Tickers, &self.ticker_hole))
            .chain(wide(Stream::Lifecycle, &self.lifecycle_hole))
            .chain(wide(Stream::Trades, &self.trade_hole))
            .collect();
        now.sort();
        if now != self.published {
            self.shared.open_holes.publish(self.k, now.clone());
            self.published = now;
        }
    }

    /// Declares the delta hole of `market` up to `now`, if one is open (no snapshot will close
    /// it: the market left, was refused, or the process stops).
    pub(super) fn close_hole(&mut self, market: &str, now: i64, why: &str) {
        if let Some((from, reason)) = self.holes.remove(market) {
            self.gap(
                Stream::OrderbookDeltas,
                Some(market),
                from,
                now,
                reason,
                why.to_owned(),
            );
        }
    }

    /// At shutdown, holes that no snapshot will close are declared up to now.
    pub(super) fn close_holes_at_shutdown(&mut self) {
        let now = now_ms();
        let markets: Vec<String> = self.holes.keys().cloned().collect();
        for t in markets {
            self.close_hole(&t, now, "still open at shutdown");
        }
        if let Some((from, reason)) = self.lifecycle_hole.take() {
            self.gap(
                Stream::Lifecycle,
                None,
                from,
                now,
                reason,
                "still open at shutdown".into(),
            );
        }
        if let Some((from, reason)) = self.trade_hole.take() {
            self.gap(
                Stream::Trades,
                None,
                from,
                now,
                reason,
                "still open at shutdown; backfill did not run".into(),
            );
        }
        if let Some((from, reason)) = self.ticker_hole.take() {
            self.gap(
                Stream::Tickers,
                None,
                from,
                now,
                reason,
                "still open at shutdown".into(),
            );
        }
        let late: Vec<String> = self.late_tickers.keys().cloned().collect();
        self.close_late_tickers(&late, now);
    }

    /// Records what a lost session leaves open.
    pub fn mark_disconnect(&mut self, markets: &BTreeSet<String>) {
        let from = self.last_good_ms;
        for t in markets {
            self.holes
                .entry(t.clone())
                .or_insert((from, GapReason::Disconnect));
        }
        if !markets.is_empty() {
            self.ticker_hole
                .get_or_insert((from, GapReason::Disconnect));
            self.ticker_hole_markets.extend(markets.iter().cloned());
        }
        if self.global() {
            self.trade_hole.get_or_insert((from, GapReason::Disconnect));
            self.lifecycle_hole
                .get_or_insert((from, GapReason::Disconnect));
        }
    }
}
