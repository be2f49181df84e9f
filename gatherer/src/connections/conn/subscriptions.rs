//! The subscription protocol of one connection: subscribe per channel, add and remove
//! markets with `update_subscription`, handle acknowledgements and refusals (unknown market,
//! limits, rate), and keep the shard's markets in line with the registry.
//!
//! It must never drop a market silently: a refused market is counted and noted to the
//! registry, and a removed one keeps its book for deltas already in flight.

use super::*;

impl Connection {
    pub(super) fn on_subscribed(
        &mut self,
        s: &mut Session,
        id: Option<u64>,
        channel: &str,
        sid: u64,
        now: i64,
    ) {
        let Some(channel) = Channel::parse(channel) else {
            return;
        };
        if let Some(id) = id {
            s.pending.remove(&id);
        }
        s.sid_channel.insert(sid, channel);
        s.channel_sid.insert(channel, sid);
        s.seqs.remove(&sid);
        match channel {
            Channel::Trade => {
                if let Some((from, reason)) = self.trade_hole.take() {
                    let from = self.last_trade_ts.map_or(from, |t| t.min(from));
                    let margin = self.shared.cfg.gap_margin_ms;
                    self.shared.holes.push(TradeHole {
                        from_ms: from - margin,
                        to_ms: now + margin,
                        reason,
                    });
                }
            }
            Channel::MarketLifecycleV2 => {
                if let Some((from, reason)) = self.lifecycle_hole.take() {
                    self.gap(
                        Stream::Lifecycle,
                        None,
                        from,
                        now,
                        reason,
                        "lifecycle messages may be missing".into(),
                    );
                    // The registry catches up from REST.
                    self.note(Note::Resync);
                }
            }
            Channel::Ticker => {
                let subscribed: Vec<String> = s.markets.iter().cloned().collect();
                self.close_late_tickers(&subscribed, now);
                let left = std::mem::take(&mut self.ticker_hole_markets);
                if let Some((from, reason)) = self.ticker_hole.take() {
                    // The markets of the lost session too, if no longer collected: their
                    // tickers were not here either.
                    let covered: BTreeSet<&String> = s.markets.iter().chain(left.iter()).collect();
                    for mk in covered {
                        let from = self
                            .shared
                            .ticker_occ
                            .last_ts(mk)
                            .map_or(from, |t| t.min(from));
                        self.gap(
                            Stream::Tickers,
                            Some(mk),
                            from,
                            now,
                            reason,
                            "ticker messages may be missing".into(),
                        );
                    }
                }
            }
            _ => {}
        }
        if let Some(queued) = s.queued.remove(&channel) {
            let batch = self.shared.cfg.subscribe_batch;
            for chunk in queued.chunks(batch) {
                s.send(Pending::Update {
                    channel,
                    action: ws::action::ADD_MARKETS,
                    markets: chunk.to_vec(),
                });
            }
        }
        if channel == Channel::OrderbookDelta || self.global() && s.channel_sid.len() >= 2 {
            self.shared.health.set_conn(self.k, ConnState::Subscribed);
        }
        if s.markets.is_empty() && (!self.global() || s.channel_sid.contains_key(&Channel::Trade)) {
            self.shared.health.set_conn(self.k, ConnState::Subscribed);
        }
    }

    pub(super) fn on_error(
        &mut self,
        s: &mut Session,
        id: Option<u64>,
        sid: Option<u64>,
        e: ws::ErrorMsg,
    ) -> Result<(), Lost> {
        metrics::counter!(m::WS_ERRORS, "type" => "server_error").increment(1);
        if let Some(id) = id
            && let Some((pending, _)) = s.pending.remove(&id)
        {
            return self.on_command_error(s, pending, e);
        }
        let Some(sid) = sid else {
            return Err(Lost::Orphan {
                code: i64::from(e.code),
                msg: e.msg,
            });
        };
        let Some(channel) = s.sid_channel.remove(&sid) else {
            return Ok(());
        };
        tracing::warn!(sid, channel = %channel, code = e.code, msg = %e.msg, "subscription killed by the exchange, resubscribing");
        s.channel_sid.remove(&channel);
        s.seqs.remove(&sid);
        // Commands on the killed subscription (a `get_snapshot` after a seq gap, an
        // `add_markets`) may never be answered: the subscription they named is gone. The
        // resubscription below covers every market of the channel with fresh snapshots, so
        // they are dropped here rather than waited out until the command timeout tears the
        // whole connection down.
        let on_killed =
            |p: &Pending| matches!(p, Pending::Update { channel: c, .. } if *c == channel);
        let dropped = s.pending.len();
        s.pending.retain(|_, (p, _)| !on_killed(p));
        s.retry_later.retain(|(_, p)| !on_killed(p));
        if dropped > s.pending.len() {
            tracing::debug!(
                channel = %channel,
                commands = dropped - s.pending.len(),
                "commands on a killed subscription dropped; the resubscription covers them"
            );
        }
        let reason = match e.code {
            error_code::BUFFER_OVERFLOW => GapReason::WsError25,
            error_code::INTERNAL_ERROR => GapReason::WsError17,
            error_code::CHANNEL_ERROR => GapReason::WsError10,
            _ => GapReason::WsError,
        };
        let from = self.last_good_ms;
        match channel {
            Channel::OrderbookDelta => {
                for mk in &s.markets {
                    if let Some(b) = s.books.get_mut(mk) {
                        route::unstored("broken_chain", b.invalidate());
                    }
                    self.holes.entry(mk.clone()).or_insert((from, reason));
                }
                metrics::counter!(m::RESNAPSHOTS).increment(s.markets.len() as u64);
            }
            Channel::Ticker => {
                self.ticker_hole.get_or_insert((from, reason));
            }
            Channel::Trade => {
                self.trade_hole.get_or_insert((from, reason));
            }
            Channel::MarketLifecycleV2 => {
                self.lifecycle_hole.get_or_insert((from, reason));
            }
            _ => {}
        }
        self.subscribe_channel(s, channel);
        Ok(())
    }

    pub(super) fn on_command_error(
        &mut self,
        s: &mut Session,
        pending: Pending,
        e: ws::ErrorMsg,
    ) -> Result<(), Lost> {
        let (channel, markets, action) = match &pending {
            Pending::Subscribe { channel, markets } => (*channel, markets.clone(), None),
            Pending::Update {
                channel,
                action,
                markets,
            } => (*channel, markets.clone(), Some(*action)),
        };
        match e.code {
            error_code::MARKET_NOT_FOUND => {
                let bad = e.market_ticker.clone().unwrap_or_default();
                tracing::warn!(market = %bad, channel = %channel, "the exchange does not know this market; dropping it from the subscription");
                self.forget_market(s, &bad);
                let rest: Vec<String> = markets.into_iter().filter(|t| *t != bad).collect();
                if !rest.is_empty()
                    || matches!(pending, Pending::Subscribe { .. })
                        && s.markets.is_empty()
                        && channel != Channel::OrderbookDelta
                {
                    s.send(match action {
                        None => Pending::Subscribe {
                            channel,
                            markets: rest,
                        },
                        Some(action) => Pending::Update {
                            channel,
                            action,
                            markets: rest,
                        },
                    });
                }
            }
            error_code::MARKET_LIMIT => {
                tracing::error!(channel = %channel, markets = markets.len(), "subscription market limit reached: these markets are NOT collected; raise ws.connections");
                for t in &markets {
                    self.forget_market(s, t);
                }
            }
            error_code::TOO_MANY_REQUESTS
            | error_code::COMMAND_TIMEOUT
            | error_code::INTERNAL_ERROR => {
                s.retry_later
                    .push((Instant::now() + Duration::from_secs(1), pending));
            }
            error_code::ALREADY_SUBSCRIBED => {}
            code => {
                tracing::warn!(code, msg = %e.msg, command = ?pending, "command refused");
                s.retry_later
                    .push((Instant::now() + Duration::from_secs(5), pending));
            }
        }
        Ok(())
    }

    /// Stops tracking a market the exchange refused, closing its hole.
    pub(super) fn forget_market(&mut self, s: &mut Session, ticker: &str) {
        self.rejected.insert(ticker.to_owned());
        s.markets.remove(ticker);
        self.close_late_tickers(&[ticker.to_owned()], now_ms());
        route::unstored(
            "left",
            s.books.remove(ticker).and_then(|mut b| b.invalidate()),
        );
        self.close_hole(ticker, now_ms(), "market refused by the exchange");
        self.health().set_markets(s.markets.len());
    }

    /// Declares the late-subscription ticker windows of `markets` that are open, up to `now`
    /// (the ticker channel now carries them, or they were left).
    pub(super) fn close_late_tickers(&mut self, markets: &[String], now: i64) {
        for mk in markets {
            if let Some(from) = self.late_tickers.remove(mk) {
                self.gap(
                    Stream::Tickers,
                    Some(mk),
                    from,
                    now,
                    GapReason::LateSubscription,
                    "subscribed late: ticker messages before it are missing".into(),
                );
            }
        }
    }

    pub(super) fn subscribe_channel(&mut self, s: &mut Session, channel: Channel) {
        if s.has_pending_subscribe(channel) {
            return;
        }
        match channel {
            Channel::OrderbookDelta | Channel::Ticker => {
                if s.markets.is_empty() {
                    return;
                }
                let all: Vec<String> = s.markets.iter().cloned().collect();
                let batch = self.shared.cfg.subscribe_batch;
                let (first, rest) = all.split_at(all.len().min(batch));
                s.queued.insert(channel, rest.to_vec());
                s.send(Pending::Subscribe {
                    channel,
                    markets: first.to_vec(),
                });
            }
            _ => s.send(Pending::Subscribe {
                channel,
                markets: vec![],
            }),
        }
    }

    pub(super) fn sync_markets(
        &mut self,
        s: &mut Session,
        desired: &std::collections::BTreeMap<String, i64>,
    ) {
        let n = self.shared.cfg.connections;
        self.rejected.retain(|t| desired.contains_key(t));
        let mine: BTreeSet<String> = desired
            .keys()
            .filter(|t| shard_of(t, n) == self.k && !self.rejected.contains(t.as_str()))
            .cloned()
            .collect();
        let added: Vec<String> = mine.difference(&s.markets).cloned().collect();
        let removed: Vec<String> = s.markets.difference(&mine).cloned().collect();
        let now = now_ms();
        for t in &removed {
            s.markets.remove(t);
            self.held.remove(t);
            self.left_at.insert(t.clone(), now);
            self.close_late_tickers(std::slice::from_ref(t), now);
            s.leaving.push((Instant::now() + LEAVE_GRACE, t.clone()));
            self.close_hole(t, now, "market unsubscribed before its snapshot");
        }
        let margin = self.shared.cfg.gap_margin_ms;
        for t in &added {
            s.markets.insert(t.clone());
            s.books.insert(t.clone(), MarketBook::default());
            // When the market was live, by the exchange's REST times (None: not said).
            let since = desired
                .get(t)
                .copied()
                .filter(|s| *s != i64::MIN)
                .map(|s| s.saturating_sub(margin));
            // Before this, this gatherer may hold the market: a previous run that fetched it,
            // or, on a first run, nothing before it started.
            let floor = match self.shared.startup_from {
                Some(alive) if self.shared.known_before.contains(t) => alive,
                Some(_) => i64::MIN,
                None => self.started_ms,
            };
            if let Some(from) = self.startup_hole {
                // A market no earlier run fetched was never held: from when it was live.
                let earlier = since.map_or(from, |s| s.max(floor).min(from));
                if earlier < from {
                    // Tickers too (the connection-wide startup window starts at `from`).
                    self.late_tickers.entry(t.clone()).or_insert(earlier);
                }
                // An inherited hole of this market keeps its start if that is earlier.
                self.holes
                    .entry(t.clone())
                    .and_modify(|h| {
                        if earlier < h.0 {
                            *h = (earlier, GapReason::GathererDown);
                        }
                    })
                    .or_insert((earlier, GapReason::GathererDown));
            } else if self.first_batch_done && !self.held.contains(t) {
                // Learned of late: whatever the exchange published since the market was live
                // (or since this connection left it) is not here. Declared when the snapshot
                // (deltas) and the ticker acknowledgement close it.
                let from = since
                    .unwrap_or(i64::MIN)
                    .max(floor)
                    .max(self.left_at.get(t).copied().unwrap_or(i64::MIN))
                    .min(now);
                self.holes
                    .entry(t.clone())
                    .or_insert((from, GapReason::LateSubscription));
                self.late_tickers.entry(t.clone()).or_insert(from);
                metrics::counter!(m::LATE_SUBSCRIPTIONS).increment(1);
            }
            self.held.insert(t.clone());
        }
        if !desired.is_empty() {
            // Holes of markets no longer collected (a market that closed while its connection
            // was down, or one the previous run left open) close now: no snapshot will.
            let gone: Vec<String> = self
                .holes
                .keys()
                .filter(|t| !s.markets.contains(*t) && !s.leaving.iter().any(|(_, l)| l == *t))
                .cloned()
                .collect();
            for t in gone {
                self.close_hole(&t, now, "the market is no longer collected");
            }
            let gone: Vec<String> = self
                .late_tickers
                .keys()
                .filter(|t| !s.markets.contains(*t))
                .cloned()
                .collect();
            self.close_late_tickers(&gone, now);
        }
        if !added.is_empty() {
            self.startup_hole = None;
            self.first_batch_done = true;
        }
        self.health().set_markets(s.markets.len());
        metrics::gauge!(m::SUBSCRIBED_MARKETS, "conn" => self.k.to_string())
            .set(s.markets.len() as f64);
        let batch = self.shared.cfg.subscribe_batch;
        for channel in [Channel::OrderbookDelta, Channel::Ticker] {
            if s.channel_sid.contains_key(&channel) {
                for chunk in removed.chunks(batch) {
                    s.send(Pending::Update {
                        channel,
                        action: ws::action::DELETE_MARKETS,
                        markets: chunk.to_vec(),
                    });
                }
                for chunk in added.chunks(batch) {
                    s.send(Pending::Update {
                        channel,
                        action: ws::action::ADD_MARKETS,
                        markets: chunk.to_vec(),
                    });
                }
            } else if s.has_pending_subscribe(channel) {
                let q = s.queued.entry(channel).or_default();
                q.retain(|t| !removed.contains(t));
                q.extend(added.iter().cloned());
            } else if !s.markets.is_empty() {
                self.subscribe_channel(s, channel);
            }
        }
        if !self.global() && s.markets.is_empty() {
            self.shared.health.set_conn(self.k, ConnState::Subscribed);
        }
    }
}
