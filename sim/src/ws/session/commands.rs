//! The commands a client sends on one connection (subscribe, unsubscribe,
//! update_subscription) and Kalshi's answers to them: sids, `ok`/`subscribed`/`error` frames,
//! the snapshots and tickers a new subscription is owed.
//!
//! It must never answer a command differently from what `kalshi-api.md` §4 documents.

use super::*;

impl Session {
    /// Resolves tickers (and, for the ticker channel, market ids) to market indexes.
    pub(super) fn resolve(
        ex: &Exchange,
        ticker: Option<&String>,
        tickers: Option<&Vec<String>>,
        id: Option<&String>,
        ids: Option<&Vec<String>>,
    ) -> Result<Markets, (u32, Option<String>)> {
        let names: Vec<&String> = ticker
            .into_iter()
            .chain(tickers.into_iter().flatten())
            .collect();
        let by_id: Vec<&String> = id.into_iter().chain(ids.into_iter().flatten()).collect();
        if names.is_empty() && by_id.is_empty() {
            return Ok(Markets::None);
        }
        let mut out = Vec::with_capacity(names.len() + by_id.len());
        for n in names {
            match ex.market_index(n) {
                Some(i) => out.push(i),
                None => return Err((code::MARKET_NOT_FOUND, Some(n.clone()))),
            }
        }
        for m in by_id {
            match ex.markets.iter().position(|x| &x.market_id == m) {
                Some(i) => out.push(i as u32),
                None => return Err((code::MARKET_NOT_FOUND, None)),
            }
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|i| seen.insert(*i));
        Ok(Markets::Some(out))
    }

    pub(super) fn subscribe(
        &mut self,
        id: Option<u64>,
        params: Option<&str>,
        ex: &Exchange,
        out: &mut Vec<String>,
    ) {
        let fail =
            |out: &mut Vec<String>, c: u32, m: Option<&str>| out.push(error_frame(id, None, c, m));
        let Some(raw) = params else {
            return fail(out, code::PARAMS_REQUIRED, None);
        };
        let Ok(p) = serde_json::from_str::<SubscribeParams>(raw) else {
            return fail(out, code::INVALID_PARAMETER, None);
        };
        let names = p.channels.clone().unwrap_or_default();
        if names.is_empty() {
            return fail(out, code::CHANNELS_REQUIRED, None);
        }
        let mut channels = Vec::with_capacity(names.len());
        for n in &names {
            match Channel::parse(n) {
                Some(c) if !channels.contains(&c) => channels.push(c),
                Some(_) => {}
                None => return fail(out, code::UNKNOWN_CHANNEL, None),
            }
        }
        if p.shard_key.is_some() && p.shard_factor.is_none() {
            return fail(out, code::SHARD_FACTOR_REQUIRED, None);
        }
        if let Some(f) = p.shard_factor {
            if f <= 0 {
                return fail(out, code::SHARD_FACTOR_POSITIVE, None);
            }
            if f > 100 {
                return fail(out, code::SHARD_FACTOR_MAX, None);
            }
            if let Some(k) = p.shard_key
                && (k < 0 || k >= f)
            {
                return fail(out, code::SHARD_KEY_RANGE, None);
            }
        }
        if !self.authenticated && channels.iter().any(|c| c.is_private()) {
            return fail(out, code::AUTH_REQUIRED, None);
        }
        if channels.iter().any(|c| {
            matches!(
                c,
                Channel::CfbenchmarksValue | Channel::CfbenchmarksValue5hz
            )
        }) && p.index_ids.as_ref().is_none_or(Vec::is_empty)
        {
            return fail(out, code::INDEX_IDS_REQUIRED, None);
        }
        if p.market_ticker.is_some() && p.market_tickers.is_some() {
            return fail(out, code::INVALID_PARAMETER, None);
        }
        let by_id = p.market_id.is_some() || p.market_ids.is_some();
        if by_id && channels.iter().any(|c| *c != Channel::Ticker) {
            return fail(out, code::INVALID_PARAMETER, None);
        }
        if p.market_tickers.as_ref().is_some_and(Vec::is_empty) {
            return fail(out, code::MARKET_TICKER_REQUIRED, None);
        }
        let markets = match Self::resolve(
            ex,
            p.market_ticker.as_ref(),
            p.market_tickers.as_ref(),
            p.market_id.as_ref(),
            p.market_ids.as_ref(),
        ) {
            Ok(m) => m,
            Err((c, m)) => return fail(out, c, m.as_deref()),
        };
        if matches!(markets, Markets::None) && channels.contains(&Channel::OrderbookDelta) {
            return fail(out, code::MARKET_TICKER_REQUIRED, None);
        }
        let requested = match &markets {
            Markets::Some(v) => v.len(),
            Markets::None => 0,
        };
        for c in &channels {
            let existing = self
                .subs
                .iter()
                .find(|s| s.channel == *c)
                .map_or(0, Sub::market_count);
            if existing + requested > self.limits.max_markets_per_subscription {
                return fail(out, code::MARKET_LIMIT, None);
            }
        }
        let snap_pos = ex.pos();
        for c in channels {
            let filtered = c != Channel::MarketLifecycleV2;
            let sid = match self.sub_mut(c) {
                Some(existing) => {
                    // Newest behaviour: a second subscribe merges into the existing sid.
                    match (&mut existing.markets, &markets) {
                        (_, Markets::None) if c != Channel::OrderbookDelta => {
                            existing.markets = None
                        }
                        _ => {}
                    }
                    existing.sid
                }
                None => {
                    let sid = self.next_sid;
                    self.next_sid += 1;
                    self.subs.push(Sub {
                        sid,
                        channel: c,
                        seq: 0,
                        markets: match (&markets, filtered) {
                            (Markets::Some(_), true) => Some(HashMap::new()),
                            _ => None,
                        },
                        tickers: Vec::new(),
                        use_yes_price: c == Channel::OrderbookDelta
                            && p.use_yes_price == Some(true),
                        skip_ticker_ack: p.skip_ticker_ack == Some(true),
                        pending: VecDeque::new(),
                        skip_next: 0,
                    });
                    sid
                }
            };
            out.push(encode_frame(
                frame_type::SUBSCRIBED,
                id,
                None,
                None,
                None,
                Some(&to_json(&ws::SubscribedMsg {
                    channel: c.as_str().to_owned(),
                    sid,
                })),
            ));
            if let (Markets::Some(list), true) = (&markets, filtered) {
                let added = self.add_markets(c, list, snap_pos, ex);
                match c {
                    Channel::OrderbookDelta => self.queue_snapshots(c, &added, ex, snap_pos, out),
                    Channel::Ticker if p.send_initial_snapshot == Some(true) => {
                        self.queue_tickers(c, &added, ex, snap_pos, out)
                    }
                    _ => {}
                }
            }
        }
    }

    /// Adds markets to a channel's subscription from `snap_pos`; returns those newly added.
    pub(super) fn add_markets(
        &mut self,
        c: Channel,
        list: &[u32],
        snap_pos: u64,
        ex: &Exchange,
    ) -> Vec<u32> {
        let Some(sub) = self.sub_mut(c) else {
            return Vec::new();
        };
        let Some(map) = sub.markets.as_mut() else {
            return Vec::new();
        };
        let mut added = Vec::new();
        for &m in list {
            if let std::collections::hash_map::Entry::Vacant(e) = map.entry(m) {
                e.insert(snap_pos);
                added.push(m);
                if let Some(t) = ex.markets.get(m as usize) {
                    sub.tickers.push(t.ticker.clone());
                }
            }
        }
        sub.tickers.sort();
        added
    }

    pub(super) fn queue_snapshots(
        &mut self,
        c: Channel,
        markets: &[u32],
        ex: &Exchange,
        snap_pos: u64,
        out: &mut Vec<String>,
    ) {
        let delivered = self.delivered_pos;
        let Some(sub) = self.subs.iter_mut().find(|s| s.channel == c) else {
            return;
        };
        for &m in markets {
            let msg = ex.snapshot_json(m, sub.use_yes_price);
            if delivered >= snap_pos && sub.pending.is_empty() {
                let seq = sub.next_seq();
                out.push(encode_frame(
                    frame_type::ORDERBOOK_SNAPSHOT,
                    None,
                    Some(sub.sid),
                    Some(seq),
                    None,
                    Some(&msg),
                ));
            } else {
                sub.pending.push_back(Pending {
                    at_pos: snap_pos,
                    kind: PendingKind::Snapshot,
                    market: m,
                    msg,
                });
                self.pending_any = true;
            }
        }
    }

    pub(super) fn queue_tickers(
        &mut self,
        c: Channel,
        markets: &[u32],
        ex: &Exchange,
        snap_pos: u64,
        out: &mut Vec<String>,
    ) {
        let delivered = self.delivered_pos;
        let Some(sub) = self.subs.iter_mut().find(|s| s.channel == c) else {
            return;
        };
        for &m in markets {
            // The initial snapshot is the market's last ticker message, unchanged, so a
            // consumer that also saw the original can recognise the duplicate.
            let Some((_, msg)) = ex.last_ticker(m) else {
                continue;
            };
            if delivered >= snap_pos && sub.pending.is_empty() {
                out.push(encode_frame(
                    frame_type::TICKER,
                    None,
                    Some(sub.sid),
                    None,
                    Some(kalshi_shared::time::now_ms()),
                    Some(&msg),
                ));
            } else {
                sub.pending.push_back(Pending {
                    at_pos: snap_pos,
                    kind: PendingKind::Ticker,
                    market: m,
                    msg: msg.into(),
                });
                self.pending_any = true;
            }
        }
    }

    pub(super) fn unsubscribe(
        &mut self,
        id: Option<u64>,
        params: Option<&str>,
        out: &mut Vec<String>,
    ) {
        let Some(raw) = params else {
            return out.push(error_frame(id, None, code::PARAMS_REQUIRED, None));
        };
        let Ok(p) = serde_json::from_str::<UnsubscribeParams>(raw) else {
            return out.push(error_frame(id, None, code::INVALID_PARAMETER, None));
        };
        let sids = p.sids.unwrap_or_default();
        if sids.is_empty() {
            return out.push(error_frame(id, None, code::SIDS_REQUIRED, None));
        }
        for sid in sids {
            match self.subs.iter().position(|s| s.sid == sid) {
                Some(i) => {
                    let mut sub = self.subs.remove(i);
                    let seq = sub.next_seq();
                    out.push(encode_frame(
                        frame_type::UNSUBSCRIBED,
                        id,
                        Some(sid),
                        Some(seq),
                        None,
                        None,
                    ));
                }
                None => out.push(error_frame(id, None, code::UNKNOWN_SID, None)),
            }
        }
    }

    pub(super) fn update(
        &mut self,
        id: Option<u64>,
        params: Option<&str>,
        ex: &Exchange,
        out: &mut Vec<String>,
    ) {
        let fail =
            |out: &mut Vec<String>, c: u32, m: Option<&str>| out.push(error_frame(id, None, c, m));
        let Some(raw) = params else {
            return fail(out, code::PARAMS_REQUIRED, None);
        };
        let Ok(p) = serde_json::from_str::<UpdateSubscriptionParams>(raw) else {
            return fail(out, code::INVALID_PARAMETER, None);
        };
        let Some(action) = p.action.as_deref() else {
            return fail(out, code::ACTION_REQUIRED, None);
        };
        if ![
            ws::action::ADD_MARKETS,
            ws::action::DELETE_MARKETS,
            ws::action::GET_SNAPSHOT,
        ]
        .contains(&action)
        {
            return fail(out, code::UNSUPPORTED_ACTION, None);
        }
        let sid = match (p.sid, p.sids.as_deref()) {
            (Some(s), None) => s,
            (None, Some([s])) => *s,
            (None, None) | (None, Some([])) => return fail(out, code::SIDS_REQUIRED, None),
            _ => return fail(out, code::EXACTLY_ONE_SID, None),
        };
        let Some(channel) = self.subs.iter().find(|s| s.sid == sid).map(|s| s.channel) else {
            return fail(out, code::UNKNOWN_SID, None);
        };
        if let Some((c, ch)) = self.kill_on_next_update
            && ch.is_none_or(|ch| ch == channel)
        {
            self.kill_on_next_update = None;
            self.kill(c, Some(channel), out);
            return;
        }
        if p.market_tickers.as_ref().is_some_and(Vec::is_empty) {
            return fail(out, code::MARKET_TICKER_REQUIRED, None);
        }
        if (p.market_id.is_some() || p.market_ids.is_some()) && channel != Channel::Ticker {
            return fail(out, code::INVALID_PARAMETER, None);
        }
        let list = match Self::resolve(
            ex,
            p.market_ticker.as_ref(),
            p.market_tickers.as_ref(),
            p.market_id.as_ref(),
            p.market_ids.as_ref(),
        ) {
            Ok(Markets::Some(l)) => l,
            Ok(Markets::None) => return fail(out, code::MARKET_TICKER_REQUIRED, None),
            Err((c, m)) => return fail(out, c, m.as_deref()),
        };
        let snap_pos = ex.pos();
        match action {
            ws::action::GET_SNAPSHOT => {
                if channel != Channel::OrderbookDelta {
                    return fail(out, code::UNSUPPORTED_ACTION, None);
                }
                // Snapshots only: the subscription is not modified.
                self.queue_snapshots(channel, &list, ex, snap_pos, out);
            }
            ws::action::ADD_MARKETS => {
                let Some(sub) = self.sub_mut(channel) else {
                    return;
                };
                if sub.markets.is_none() {
                    // Subscribed to every market already (or a channel without filters).
                    return fail(out, code::INVALID_PARAMETER, None);
                }
                if sub.market_count() + list.len() > self.limits.max_markets_per_subscription {
                    return fail(out, code::MARKET_LIMIT, None);
                }
                let added = self.add_markets(channel, &list, snap_pos, ex);
                let Some(sub) = self.sub_mut(channel) else {
                    return;
                };
                let seq = sub.next_seq();
                let ok = OkMsg {
                    market_tickers: (!sub.skip_ticker_ack).then(|| sub.tickers.clone()),
                    market_ids: None,
                };
                out.push(encode_frame(
                    frame_type::OK,
                    id,
                    Some(sid),
                    Some(seq),
                    None,
                    Some(&to_json(&ok)),
                ));
                if channel == Channel::OrderbookDelta {
                    self.queue_snapshots(channel, &added, ex, snap_pos, out);
                }
            }
            _ => {
                let Some(sub) = self.sub_mut(channel) else {
                    return;
                };
                if let Some(map) = sub.markets.as_mut() {
                    for m in &list {
                        map.remove(m);
                    }
                    let removed: std::collections::HashSet<&str> = list
                        .iter()
                        .filter_map(|m| ex.markets.get(*m as usize).map(|x| x.ticker.as_str()))
                        .collect();
                    sub.tickers.retain(|t| !removed.contains(t.as_str()));
                    // Snapshots not yet sent for removed markets are dropped with them.
                    sub.pending.retain(|pend| !list.contains(&pend.market));
                }
                let seq = sub.next_seq();
                let ok = OkMsg {
                    market_tickers: (!sub.skip_ticker_ack).then(|| sub.tickers.clone()),
                    market_ids: None,
                };
                out.push(encode_frame(
                    frame_type::OK,
                    id,
                    Some(sid),
                    Some(seq),
                    None,
                    Some(&to_json(&ok)),
                ));
            }
        }
    }
}
