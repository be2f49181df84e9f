//! Market and event lifecycle: creation, close, determination, settlement, pause and
//! metadata changes, published on `market_lifecycle_v2` and recorded in the ground truth.
//!
//! It must never move a market backwards through its states (settled stays settled).

use super::*;

impl Exchange {
    pub(super) fn lifecycle(&mut self, ts_ms: i64, out: &mut Vec<Published>) {
        let step = self.lifecycle_step;
        self.lifecycle_step += 1;
        let live = self.active.len();
        match step % 6 {
            0 | 3 if live < self.cfg.markets.max(1) + 2 => self.lc_create(ts_ms, out),
            0 | 3 => self.lc_pause_toggle(ts_ms, out),
            1 if live > self.cfg.markets / 2 => self.lc_close(ts_ms, out),
            1 => self.lc_create(ts_ms, out),
            2 => self.lc_determine(ts_ms, out),
            4 => self.lc_settle(ts_ms, out),
            _ => self.lc_metadata(ts_ms, out),
        }
    }

    pub(super) fn lifecycle_msg(&self, idx: u32, event_type: &str) -> MarketLifecycleMsg {
        MarketLifecycleMsg {
            market_ticker: self.markets[idx as usize].ticker.clone(),
            event_type: event_type.to_owned(),
            exchange_index: None,
            open_ts: None,
            close_ts: None,
            result: None,
            determination_ts: None,
            settlement_value: None,
            settled_ts: None,
            is_deactivated: None,
            price_level_structure: None,
            price_ranges: None,
            strike_type: None,
            floor_strike: None,
            cap_strike: None,
            yes_sub_title: None,
            additional_metadata: None,
        }
    }

    pub(super) fn publish_lifecycle(
        &mut self,
        idx: u32,
        msg: MarketLifecycleMsg,
        ts_ms: i64,
        out: &mut Vec<Published>,
    ) {
        let json = self.as_sent(to_json(&msg));
        self.publish(
            out,
            EventKind::MarketLifecycle,
            ts_ms,
            Some(idx),
            json,
            None,
        );
    }

    pub(super) fn lc_create(&mut self, ts_ms: i64, out: &mut Vec<Published>) {
        let series_idx = self
            .flow
            .below(self.series.iter().filter(|s| !s.is_mve).count().max(1) as u64)
            as usize;
        let n = 1 + self.flow.below(3) as usize;
        let (event_idx, idxs) = self.add_event(series_idx, n, ts_ms);
        let e = &self.events[event_idx];
        let event_msg = EventLifecycleMsg {
            event_ticker: e.ticker.clone(),
            title: e.title.clone(),
            subtitle: e.sub_title.clone(),
            collateral_return_type: e.collateral_return_type.clone(),
            series_ticker: self.series[e.series].ticker.clone(),
            strike_date: e.strike_date_s,
            strike_period: e.strike_period.clone(),
        };
        let json = self.as_sent(to_json(&event_msg));
        self.publish(out, EventKind::EventLifecycle, ts_ms, None, json, None);
        for idx in idxs {
            for side in [Side::Yes, Side::No] {
                if let Some((price, qty)) = self.choose_placement(idx, side) {
                    let _ = self.markets[idx as usize].book.apply(side, price, qty);
                }
            }
            let m = &self.markets[idx as usize];
            let mut msg = self.lifecycle_msg(idx, ws::lifecycle_event::CREATED);
            msg.open_ts = Some(m.open_s);
            msg.close_ts = Some(m.close_s);
            msg.price_level_structure = Some(m.structure.to_owned());
            msg.price_ranges = Some(m.price_ranges());
            msg.additional_metadata = Some(LifecycleMetadata {
                name: Some(m.title.clone()),
                title: Some(m.title.clone()),
                yes_sub_title: Some(m.yes_sub_title.clone()),
                no_sub_title: Some(m.no_sub_title.clone()),
                rules_primary: Some(m.rules_primary.clone()),
                rules_secondary: Some(String::new()),
                can_close_early: Some(m.can_close_early),
                event_ticker: Some(self.events[m.event].ticker.clone()),
                expected_expiration_ts: Some(m.expected_expiration_s),
                strike_type: Some(m.strike_type.clone()),
                floor_strike: m.floor_strike.clone(),
                cap_strike: m.cap_strike.clone(),
            });
            self.publish_lifecycle(idx, msg, ts_ms, out);
            let msg = self.lifecycle_msg(idx, ws::lifecycle_event::ACTIVATED);
            self.publish_lifecycle(idx, msg, ts_ms, out);
        }
    }

    pub(super) fn lc_close(&mut self, ts_ms: i64, out: &mut Vec<Published>) {
        // Close the oldest trading market: early close, its resting orders cancelled.
        let Some(pos) = self
            .active
            .iter()
            .position(|i| !self.markets[*i as usize].paused)
        else {
            return;
        };
        let idx = self.active.remove(pos);
        for side in [Side::Yes, Side::No] {
            for (price, size) in self.markets[idx as usize].book.levels(side) {
                if let Some(neg) = size.checked_neg() {
                    self.emit_delta(idx, side, price, neg, ts_ms, out);
                }
            }
        }
        let m = &mut self.markets[idx as usize];
        m.status = Status::Closed;
        m.close_s = ts_ms.div_euclid(1000);
        m.updated_ms = ts_ms;
        let mut msg = self.lifecycle_msg(idx, ws::lifecycle_event::CLOSE_DATE_UPDATED);
        msg.close_ts = Some(ts_ms.div_euclid(1000));
        self.publish_lifecycle(idx, msg, ts_ms, out);
    }

    pub(super) fn oldest_with(&self, status: Status) -> Option<u32> {
        self.markets
            .iter()
            .position(|m| !m.is_mve && m.status == status)
            .map(|i| i as u32)
    }

    pub(super) fn lc_determine(&mut self, ts_ms: i64, out: &mut Vec<Published>) {
        let Some(idx) = self.oldest_with(Status::Closed) else {
            return self.lc_metadata(ts_ms, out);
        };
        let yes = self.flow.chance(500);
        let value = if yes { Price::ONE_DOLLAR } else { Price::ZERO };
        let m = &mut self.markets[idx as usize];
        m.status = Status::Determined;
        m.result = if yes { "yes" } else { "no" }.into();
        m.settlement_value = Some(value);
        m.updated_ms = ts_ms;
        let mut msg = self.lifecycle_msg(idx, ws::lifecycle_event::DETERMINED);
        msg.result = Some(if yes { "yes" } else { "no" }.into());
        msg.determination_ts = Some(ts_ms.div_euclid(1000));
        msg.settlement_value = Some(Dollars::new(value));
        self.publish_lifecycle(idx, msg, ts_ms, out);
    }

    pub(super) fn lc_settle(&mut self, ts_ms: i64, out: &mut Vec<Published>) {
        let Some(idx) = self.oldest_with(Status::Determined) else {
            return self.lc_metadata(ts_ms, out);
        };
        let m = &mut self.markets[idx as usize];
        m.status = Status::Finalized;
        m.settled_ms = Some(ts_ms);
        m.updated_ms = ts_ms;
        let mut msg = self.lifecycle_msg(idx, ws::lifecycle_event::SETTLED);
        msg.settled_ts = Some(ts_ms.div_euclid(1000));
        self.publish_lifecycle(idx, msg, ts_ms, out);
    }

    pub(super) fn lc_pause_toggle(&mut self, ts_ms: i64, out: &mut Vec<Published>) {
        let Some(&idx) = self.flow.pick(&self.active) else {
            return;
        };
        let m = &mut self.markets[idx as usize];
        m.paused = !m.paused;
        m.updated_ms = ts_ms;
        let paused = m.paused;
        let mut msg = self.lifecycle_msg(idx, ws::lifecycle_event::DEACTIVATED);
        msg.is_deactivated = Some(paused);
        self.publish_lifecycle(idx, msg, ts_ms, out);
    }

    /// Pauses (or resumes) one market now, as the exchange does on an operator's decision:
    /// a `deactivated` message (a market paused twice publishes two identical ones).
    pub fn set_paused(&mut self, idx: u32, paused: bool, ts_ms: i64) -> Vec<Published> {
        let mut out = Vec::new();
        let m = &mut self.markets[idx as usize];
        m.paused = paused;
        m.updated_ms = ts_ms;
        let mut msg = self.lifecycle_msg(idx, ws::lifecycle_event::DEACTIVATED);
        msg.is_deactivated = Some(paused);
        self.publish_lifecycle(idx, msg, ts_ms, &mut out);
        // In the ground truth before anyone can receive it, as a generated batch is.
        if let Err(e) = self.truth.flush() {
            tracing::error!(error = %e, "cannot write the ground truth; the exchange stops publishing");
            out.clear();
        }
        out
    }

    pub(super) fn lc_metadata(&mut self, ts_ms: i64, out: &mut Vec<Published>) {
        let Some(&idx) = self.flow.pick(&self.active) else {
            return;
        };
        let n = self.flow.below(1000);
        let m = &mut self.markets[idx as usize];
        m.yes_sub_title = format!(
            "{} (rev {n})",
            m.yes_sub_title.split(" (rev").next().unwrap_or("")
        );
        m.updated_ms = ts_ms;
        let sub = m.yes_sub_title.clone();
        let strike_type = m.strike_type.clone();
        let mut msg = self.lifecycle_msg(idx, ws::lifecycle_event::METADATA_UPDATED);
        msg.yes_sub_title = Some(sub);
        msg.strike_type = Some(strike_type);
        self.publish_lifecycle(idx, msg, ts_ms, out);
    }

    // Views for WS snapshots and REST
}
