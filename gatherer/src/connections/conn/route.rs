//! Frames to rows: decodes each checked frame and hands it on (books for snapshots and
//! deltas, trades, tickers, lifecycle), with the origin (connection epoch, sid, seq).
//!
//! It must never emit a row for a frame it could not decode (that is a counted bad frame), nor
//! apply a delta to a book that is not in sync.

use super::*;

impl Connection {
    pub(super) fn origin(&self, s: &Session, frame: &Frame, received_ms: i64) -> Origin {
        Origin {
            received_ms,
            conn_epoch: s.epoch,
            sid: frame.sid.unwrap_or(0),
            seq: frame.seq.unwrap_or(0),
        }
    }

    pub(super) fn on_text(&mut self, s: &mut Session, text: &str) -> Result<(), Lost> {
        let received = now_ms();
        // The envelope is read once: the frame, and the exchange's text of `msg` for what is
        // kept as sent.
        let (frame, raw_msg) = match parse_frame_raw(text) {
            Ok(f) => f,
            Err(e) => {
                self.bad_frame(e.label(), &e.to_string());
                return Ok(());
            }
        };
        let channel_label = frame_channel(&frame.body);
        metrics::counter!(m::WS_MESSAGES, "channel" => channel_label).increment(1);
        // seq before routing: any frame with a seq on a sid we track.
        if let (Some(sid), Some(seq)) = (frame.sid, frame.seq)
            && let Some(&channel) = s.sid_channel.get(&sid)
        {
            let expected = s.seqs.get(&sid).map_or(1, |l| l + 1);
            if seq != expected {
                self.seq_gap(s, sid, channel, expected, seq, received);
            }
            s.seqs.insert(sid, seq);
        }
        let origin = self.origin(s, &frame, received);
        let sid = frame.sid;
        match frame.body {
            FrameBody::Subscribed(sub) => {
                self.on_subscribed(s, frame.id, &sub.channel, sub.sid, received)
            }
            FrameBody::Ok(_) | FrameBody::Unsubscribed | FrameBody::SubscriptionList(_) => {
                if let Some(id) = frame.id
                    && let Some((pending, _)) = s.pending.remove(&id)
                    && let Pending::Update {
                        channel: Channel::Ticker,
                        action: ws::action::ADD_MARKETS,
                        markets,
                    } = pending
                {
                    // Tickers of these markets flow from here on.
                    self.close_late_tickers(&markets, received);
                }
            }
            FrameBody::Error(e) => return self.on_error(s, frame.id, sid, e),
            FrameBody::OrderbookSnapshot(snap) => self.on_snapshot(s, snap, origin, received),
            FrameBody::OrderbookDelta(d) => self.on_delta(s, d, origin, received),
            FrameBody::Trade(t) => self.on_trade(t, origin),
            FrameBody::Ticker(t) => {
                // Kept as sent: the body is the exchange's text of `msg`, every field.
                let body = raw_msg
                    .map(str::to_owned)
                    .unwrap_or_else(|| serde_json::to_string(&t).unwrap_or_default());
                self.on_ticker(s, t, body, origin)
            }
            FrameBody::MarketLifecycle(l) => {
                // Kept as sent: every field, known to the struct or not, in body and hash.
                let (body, hash) = raw_msg
                    .and_then(raw_content)
                    .unwrap_or_else(|| lifecycle_hash(&l));
                let occurrence = self.shared.lifecycle_seen.next("market", &hash);
                self.shared.sinks.lifecycle.push(LifecycleRow {
                    kind: "market",
                    ticker: l.market_ticker.clone(),
                    event_type: l.event_type.clone(),
                    body,
                    content_hash: hash,
                    occurrence,
                    origin,
                });
                self.note(Note::Market {
                    ticker: l.market_ticker,
                    event_type: l.event_type,
                });
            }
            FrameBody::EventLifecycle(e) => {
                let (body, hash) = raw_msg
                    .and_then(raw_content)
                    .unwrap_or_else(|| lifecycle_hash(&e));
                let occurrence = self.shared.lifecycle_seen.next("event", &hash);
                self.shared.sinks.lifecycle.push(LifecycleRow {
                    kind: "event",
                    ticker: e.event_ticker.clone(),
                    event_type: "event_lifecycle".into(),
                    body,
                    content_hash: hash,
                    occurrence,
                    origin,
                });
                self.note(Note::Event {
                    ticker: e.event_ticker,
                });
            }
            FrameBody::Unknown(kind) => {
                self.on_unknown(s, kind, sid, raw_msg.unwrap_or(text), origin)
            }
        }
        self.last_good_ms = received;
        Ok(())
    }

    pub(super) fn on_snapshot(
        &mut self,
        s: &mut Session,
        snap: OrderbookSnapshotMsg,
        origin: Origin,
        now: i64,
    ) {
        let Some(book) = s.books.get_mut(&snap.market_ticker) else {
            return;
        };
        let (yes, no) = match (levels(&snap, Side::Yes), levels(&snap, Side::No)) {
            (Ok(y), Ok(n)) => (y, n),
            (Err(e), _) | (_, Err(e)) => {
                self.bad_frame("orderbook_snapshot", &e.to_string());
                return;
            }
        };
        // Stored once its splice point is exact (`book.rs`), not now.
        unstored("superseded", book.load(&yes, &no, origin, Instant::now()));
        if let Some((from, reason)) = self.holes.remove(&snap.market_ticker) {
            // The boundary millisecond: the window reaches back to the exchange time of the
            // last delta seen before the hole, even when the exchange clock lags the wall
            // clock (docs/DESIGN.md, "Occurrence: the rule").
            let from = self
                .shared
                .delta_occ
                .last_ts(&snap.market_ticker)
                .map_or(from, |t| t.min(from));
            self.gap(
                Stream::OrderbookDeltas,
                Some(&snap.market_ticker),
                from,
                now,
                reason,
                format!("deltas between {from} and the snapshot may be missing"),
            );
        }
    }

    pub(super) fn on_delta(
        &mut self,
        s: &mut Session,
        d: OrderbookDeltaMsg,
        origin: Origin,
        now: i64,
    ) {
        let Some(book) = s.books.get_mut(&d.market_ticker) else {
            // Not subscribed on this connection (or long gone): nothing to route it to.
            metrics::counter!(m::DELTAS_DROPPED).increment(1);
            tracing::debug!(market = %d.market_ticker, "delta for a market without a book dropped");
            return;
        };
        if !book.valid {
            metrics::counter!(m::DELTAS_DROPPED).increment(1);
            return;
        }
        let (price, delta) = match (d.price_value(), d.delta_value()) {
            (Ok(p), Ok(q)) => (p.raw(), q.raw()),
            (Err(e), _) | (_, Err(e)) => {
                self.bad_frame("orderbook_delta", &e.to_string());
                // A delta we cannot read breaks the book as surely as a lost one.
                unstored("broken_chain", book.invalidate());
                self.holes
                    .entry(d.market_ticker.clone())
                    .or_insert((now, GapReason::BadDelta));
                s.send(Pending::Update {
                    channel: Channel::OrderbookDelta,
                    action: ws::action::GET_SNAPSHOT,
                    markets: vec![d.market_ticker],
                });
                return;
            }
        };
        let ts = d.ts_ms_value();
        // A delta of a later millisecond: the pending snapshot's boundary is certain.
        if let Some(splice) = book.before_delta(ts) {
            store_snapshot(&self.shared, &d.market_ticker, book, splice);
        }
        let (applied, violated) = book.apply(d.side, price, delta, ts, origin, Instant::now());
        if let Some(splice) = violated {
            metrics::counter!(m::SPLICE_VIOLATIONS).increment(1);
            if let Some(suppressed) = self.limiter.check("splice_violation") {
                tracing::warn!(market = %d.market_ticker, splice, ts = ?ts, suppressed, "a delta stamped at or before a quiet snapshot's splice point arrived later than the hold: storing a fresh snapshot at its next boundary");
            }
        }
        if !applied {
            // The book went negative: something was lost before this delta.
            metrics::counter!(m::RESNAPSHOTS).increment(1);
            if let Some(suppressed) = self.limiter.check("negative_book") {
                tracing::warn!(market = %d.market_ticker, suppressed, "delta drives a level negative; resnapshotting");
            }
            unstored("broken_chain", book.invalidate());
            self.holes
                .entry(d.market_ticker.clone())
                .or_insert((self.last_good_ms, GapReason::InconsistentBook));
            s.send(Pending::Update {
                channel: Channel::OrderbookDelta,
                action: ws::action::GET_SNAPSHOT,
                markets: vec![d.market_ticker],
            });
            return;
        }
        if ts.is_none() {
            metrics::counter!(m::DELTAS_WITHOUT_TS).increment(1);
        }
        let occurrence = self
            .shared
            .delta_occ
            .next(&d.market_ticker, ts, (d.side, price, delta));
        let stored = self.shared.sinks.deltas.push(DeltaRow {
            market_ticker: d.market_ticker,
            ts_ms: ts,
            side: d.side,
            price,
            delta,
            occurrence,
            origin,
        });
        // A dropped delta (declared by the writer) leaves a hole in the stored deltas: the
        // book, exact in memory, is stored again once rows are taken again.
        if stored {
            book.rearm(origin, Instant::now());
        } else {
            book.restore = true;
        }
    }

    pub(super) fn on_trade(&mut self, t: TradeMsg, origin: Origin) {
        let covered = self
            .shared
            .scope
            .read()
            .map(|sc| sc.covers(&t.market_ticker))
            .unwrap_or(true);
        if !covered {
            return;
        }
        let (yes, no, count) = match (t.yes_price_value(), t.no_price_value(), t.count_value()) {
            (Ok(y), Ok(n), Ok(c)) => (y.raw(), n.raw(), c.raw()),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                self.bad_frame("trade", &e.to_string());
                return;
            }
        };
        let Some(ts) = t.ts_ms_value() else {
            self.bad_frame("trade", "trade without a timestamp");
            return;
        };
        self.last_trade_ts = Some(ts);
        let id = t.trade_id.clone();
        let stored = self.shared.sinks.trades.push(TradeRow {
            trade_id: t.trade_id,
            market_ticker: t.market_ticker,
            yes_price: yes,
            no_price: no,
            count,
            taker_outcome_side: t.taker_outcome_side.or(t.taker_side),
            taker_book_side: t.taker_book_side,
            is_block_trade: t.is_block_trade.unwrap_or(false),
            ts_ms: ts,
            source: Source::Ws,
            origin,
        });
        // Only trades the writer accepted count as delivered: a dropped one must stay
        // eligible for the backfill of the overflow window.
        if stored {
            self.shared.recent_trades.insert(&id);
        }
    }

    pub(super) fn on_ticker(
        &mut self,
        s: &mut Session,
        t: TickerMsg,
        body: String,
        origin: Origin,
    ) {
        let ts = t.ts_ms_value();
        let hash = ticker_hash(&t);
        if !s.books.contains_key(&t.market_ticker) {
            metrics::counter!(m::TICKERS_WITHOUT_BOOK).increment(1);
            return;
        }
        let occurrence = self
            .shared
            .ticker_occ
            .next(&t.market_ticker, ts, hash.clone());
        self.shared.sinks.tickers.push(TickerRow {
            market_ticker: t.market_ticker.clone(),
            ts_ms: ts,
            body,
            content_hash: hash,
            occurrence,
            origin,
        });
    }

    /// A message of a type this build does not model: kept as sent in its own stream (`body`:
    /// the exchange's text of `msg`, or the whole frame without one), once per message however
    /// many of this gatherer's connections received it (`unknown.rs`).
    fn on_unknown(
        &mut self,
        s: &Session,
        kind: String,
        sid: Option<u64>,
        body: &str,
        origin: Origin,
    ) {
        if body.len() > kalshi_shared::identity::MAX_RECORD_JSON {
            // No record may carry more (production refuses it): counted and logged instead.
            self.bad_frame(
                "unknown_oversize",
                &format!(
                    "a {kind} message of {} bytes, over the record limit",
                    body.len()
                ),
            );
            return;
        }
        let Some((body, hash)) = raw_content(body) else {
            self.bad_frame("unknown_type", &kind);
            return;
        };
        let channel = sid
            .and_then(|sid| s.sid_channel.get(&sid))
            .map_or("", |c| c.as_str());
        if self
            .shared
            .unknown_seen
            .is_copy(&kind, &hash, self.k, origin.received_ms)
        {
            metrics::counter!(m::WS_UNKNOWN_COPIES).increment(1);
            return;
        }
        metrics::counter!(m::WS_UNKNOWN_MESSAGES, "channel" => if channel.is_empty() { "none" } else { channel }).increment(1);
        if let Some(suppressed) = self.limiter.check("unknown_message") {
            tracing::info!(r#type = %kind, channel, suppressed, "a message of a type this build does not model: kept as sent (unknown_messages)");
        }
        self.shared.sinks.unknown.push(UnknownRow {
            market_ticker: crate::connections::unknown::market_of(&body),
            kind,
            channel: channel.to_owned(),
            body,
            content_hash: hash,
            origin,
        });
    }

    pub(super) fn bad_frame(&self, label: &'static str, detail: &str) {
        metrics::counter!(m::WS_BAD_FRAMES, "type" => label).increment(1);
        metrics::counter!(m::WS_ERRORS, "type" => "parse").increment(1);
        if let Some(suppressed) = self.limiter.check(label) {
            tracing::warn!(kind = label, detail = %detail.chars().take(200).collect::<String>(), suppressed, "frame does not parse; counted and skipped");
        }
    }

    pub(super) fn note(&self, note: Note) {
        if self.shared.notes.try_send(note).is_err() {
            // The registry is behind; a resync makes up for whatever it did not hear.
            let _ = self.shared.notes.try_send(Note::Resync);
        }
    }
}

/// Stores a snapshot at its splice point: the book as it stands (see `book.rs`). A snapshot the
/// writer drops is stored again later.
pub(super) fn store_snapshot(shared: &Shared, market: &str, book: &mut MarketBook, splice: Splice) {
    let (yes, no) = book.levels();
    metrics::counter!(m::SNAPSHOT_SPLICES, "how" => splice.how).increment(1);
    let stored = shared.sinks.snapshots.push(SnapshotRow {
        market_ticker: market.to_owned(),
        source: Source::Ws,
        yes,
        no,
        last_delta_ts_ms: Some(splice.splice_ms),
        as_of_ms: Some(splice.as_of_ms),
        origin: splice.origin,
    });
    if !stored {
        book.restore = true;
    }
}

/// Counts a snapshot that was never stored (its chain broke before its boundary was certain).
pub(super) fn unstored(reason: &'static str, p: Option<super::super::book::Pending>) {
    if p.is_some() {
        metrics::counter!(m::SNAPSHOTS_UNSTORED, "reason" => reason).increment(1);
    }
}

pub(super) fn levels(
    msg: &OrderbookSnapshotMsg,
    side: Side,
) -> Result<Vec<(i64, i64)>, ws::WireError> {
    Ok(msg
        .levels(side)?
        .into_iter()
        .map(|(p, q)| (p.raw(), q.raw()))
        .collect())
}

pub(super) fn frame_channel(body: &FrameBody) -> &'static str {
    match body {
        FrameBody::OrderbookSnapshot(_) | FrameBody::OrderbookDelta(_) => "orderbook_delta",
        FrameBody::Trade(_) => "trade",
        FrameBody::Ticker(_) => "ticker",
        FrameBody::MarketLifecycle(_) | FrameBody::EventLifecycle(_) => "market_lifecycle_v2",
        FrameBody::Unknown(_) => "unknown",
        _ => "control",
    }
}
