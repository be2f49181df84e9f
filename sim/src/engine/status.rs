//! The exchange's status and schedule (`GET /exchange/status`, `GET /exchange/schedule`):
//! trading halts every `--halt-every-secs` for `--halt-secs`, announced as the next
//! maintenance window of the schedule. Every second halt is maintenance: the exchange itself
//! is down (`exchange_active` false) and `/exchange/status` answers 503 with the status body,
//! as Kalshi does. Each state is recorded in the truth before REST serves
//! it (`exchange_status`, `exchange_schedule`, with the body REST serves as `msg`).
//!
//! It must never serve a status or schedule the truth does not hold.

use super::*;

#[derive(Debug, Default)]
pub(super) struct ExchangeState {
    /// The bodies REST serves now.
    status: String,
    schedule: String,
    halted: bool,
    /// Halts so far; an even one is maintenance (the exchange down).
    halts: u64,
    /// When the next halt starts (or, while halted, when it ends); `i64::MAX`: never.
    next_change_ms: i64,
}

impl Exchange {
    /// The state at the start, recorded in the truth.
    pub(super) fn start_status(&mut self, start_ms: i64) {
        self.status.next_change_ms = if self.cfg.halt_every_ms > 0 {
            start_ms + self.cfg.halt_every_ms
        } else {
            i64::MAX
        };
        self.set_status(start_ms, false);
        self.set_schedule(start_ms);
    }

    /// Starts or ends a halt when its time has come.
    pub(super) fn status_tick(&mut self, now_ms: i64) {
        if now_ms < self.status.next_change_ms {
            return;
        }
        // Planned times, not the tick's: a halt ends when its announced window does.
        let planned = self.status.next_change_ms;
        if self.status.halted {
            // Resumed: the next halt is announced.
            self.status.next_change_ms =
                planned + (self.cfg.halt_every_ms - self.cfg.halt_ms).max(1);
            self.set_status(now_ms, false);
            self.set_schedule(now_ms);
        } else {
            self.status.next_change_ms = planned + self.cfg.halt_ms.max(1);
            self.set_status(now_ms, true);
        }
    }

    fn set_status(&mut self, now_ms: i64, halted: bool) {
        self.status.halted = halted;
        if halted {
            self.status.halts += 1;
        }
        let maintenance = halted && self.status.halts.is_multiple_of(2);
        let body = rest::ExchangeStatus {
            exchange_active: !maintenance,
            trading_active: !halted,
            intra_exchange_transfers_active: Some(true),
            exchange_estimated_resume_time: halted
                .then(|| kalshi_shared::time::format_rfc3339_ms(self.status.next_change_ms)),
        };
        self.status.status = to_json(&body);
        self.pos += 1;
        let pos = self.pos;
        self.truth
            .append(pos, now_ms, "exchange_status", &self.status.status);
    }

    /// Standard hours (always open, as Kalshi's are in practice) and the next halt as a
    /// maintenance window.
    fn set_schedule(&mut self, now_ms: i64) {
        let day = serde_json::json!([{"open_time": "00:00", "close_time": "23:59"}]);
        let windows: Vec<serde_json::Value> = if self.status.next_change_ms == i64::MAX {
            Vec::new()
        } else {
            vec![serde_json::json!({
                "start_datetime": kalshi_shared::time::format_rfc3339_ms(self.status.next_change_ms),
                "end_datetime": kalshi_shared::time::format_rfc3339_ms(self.status.next_change_ms + self.cfg.halt_ms),
            })]
        };
        let body = serde_json::json!({"schedule": {
            "standard_hours": [{
                "start_time": "2024-01-01T00:00:00Z",
                "end_time": "2100-01-01T00:00:00Z",
                "monday": day, "tuesday": day, "wednesday": day, "thursday": day,
                "friday": day, "saturday": day, "sunday": day,
            }],
            "maintenance_windows": windows,
        }});
        self.status.schedule = body.to_string();
        self.pos += 1;
        let pos = self.pos;
        self.truth
            .append(pos, now_ms, "exchange_schedule", &self.status.schedule);
    }

    /// `GET /exchange/status`'s reply now: 503 while the exchange is down for maintenance,
    /// with the status as its body all the same.
    pub fn status_reply(&self) -> (u16, &str) {
        let down = self.status.halted && self.status.halts.is_multiple_of(2);
        (if down { 503 } else { 200 }, &self.status.status)
    }

    /// `GET /exchange/schedule`'s body now.
    pub fn schedule_body(&self) -> &str {
        &self.status.schedule
    }
}
