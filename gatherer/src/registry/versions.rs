//! Registry versions: each series, event and market parsed from REST or lifecycle becomes a
//! stored version when its content hash changed, and decides whether it is in scope.
//!
//! It must never store a version whose content did not change, nor drop one that did.

use super::*;

impl Registry {
    pub(super) fn version(
        &mut self,
        kind: usize,
        ticker: &str,
        raw: &str,
        hash: String,
        updated_ms: Option<i64>,
    ) {
        if self.hashes[kind].get(ticker) == Some(&hash) {
            return;
        }
        let row = RegistryRow {
            ticker: ticker.to_owned(),
            updated_ms,
            observed_ms: kalshi_shared::time::now_ms(),
            body: raw.to_owned(),
            content_hash: hash.clone(),
        };
        let label = ["market", "event", "series"][kind];
        let accepted = match kind {
            KIND_MARKET => self.sinks.markets.push(MarketVersion(row)),
            KIND_EVENT => self.sinks.events.push(EventVersion(row)),
            _ => self.sinks.series.push(SeriesVersion(row)),
        };
        if accepted {
            metrics::counter!(m::REGISTRY_VERSIONS, "kind" => label).increment(1);
            self.hashes[kind].insert(ticker.to_owned(), hash);
        }
    }

    pub(super) fn series_allowed(&self, series: Option<&str>) -> bool {
        match (&self.allowed_series, series) {
            (None, _) => true,
            (Some(set), Some(s)) => set.contains(s),
            (Some(_), None) => false,
        }
    }

    pub(super) fn take_series(&mut self, raw: &RawValue) {
        let Ok(s) = serde_json::from_str::<Series>(raw.get()) else {
            tracing::warn!("a series object does not parse; skipped");
            return;
        };
        let category = s.category.clone();
        // Combo series follow the multivariate filter like their markets.
        let mve = s.ticker.starts_with("KXMVE");
        let mve_ok = match self.cfg.mve_filter {
            MveFilter::Exclude => !mve,
            MveFilter::Only => mve,
            MveFilter::All => true,
        };
        let allowed = mve_ok
            && (self.cfg.series.is_empty() || self.cfg.series.contains(&s.ticker))
            && (self.cfg.categories.is_empty()
                || self.cfg.categories.contains(&s.category)
                || s.categories.iter().any(|c| self.cfg.categories.contains(c)));
        if let Some(set) = self.allowed_series.as_mut()
            && allowed
        {
            set.insert(s.ticker.clone());
        }
        self.series.insert(s.ticker.clone(), category);
        if allowed && let Some(h) = json_hash(raw.get()) {
            self.version(
                KIND_SERIES,
                &s.ticker,
                raw.get(),
                h,
                parse_ms(s.last_updated_ts.as_deref()),
            );
        }
    }

    pub(super) fn take_event(&mut self, raw: &RawValue) -> Option<String> {
        let e = match serde_json::from_str::<EventData>(raw.get()) {
            Ok(e) => e,
            Err(err) => {
                metrics::counter!(m::REGISTRY_UNPARSEABLE, "kind" => "event", "outcome" => "dropped").increment(1);
                tracing::warn!(error = %err, body = %raw.get().chars().take(300).collect::<String>(), "event does not parse; its markets are still taken by their own event_ticker");
                return None;
            }
        };
        self.events
            .insert(e.event_ticker.clone(), e.series_ticker.clone());
        if self.series_allowed(Some(&e.series_ticker))
            && let Some(h) = json_hash(raw.get())
        {
            self.version(
                KIND_EVENT,
                &e.event_ticker,
                raw.get(),
                h,
                parse_ms(e.last_updated_ts.as_deref()),
            );
        }
        Some(e.series_ticker)
    }

    /// Takes a market object; returns its ticker if it is in scope.
    pub(super) fn take_market(
        &mut self,
        raw: &RawValue,
        series_hint: Option<&str>,
    ) -> Option<String> {
        let mk = match serde_json::from_str::<Market>(raw.get()) {
            Ok(mk) => mk,
            Err(e) => salvage_market(raw.get(), &e)?,
        };
        let series = series_hint
            .map(str::to_owned)
            .or_else(|| self.events.get(&mk.event_ticker).cloned());
        let mve = mk.mve_collection_ticker.is_some() || mk.ticker.starts_with("KXMVE");
        let mve_ok = match self.cfg.mve_filter {
            MveFilter::Exclude => !mve,
            MveFilter::Only => mve,
            MveFilter::All => true,
        };
        if !mve_ok || !self.series_allowed(series.as_deref()) {
            return None;
        }
        if let Some(h) = market_hash(raw.get()) {
            self.version(
                KIND_MARKET,
                &mk.ticker,
                raw.get(),
                h,
                parse_ms(Some(&mk.updated_time)),
            );
        }
        let created = parse_ms(Some(&mk.created_time));
        let opened = parse_ms(Some(&mk.open_time)).filter(|o| *o <= kalshi_shared::time::now_ms());
        let since_ms = created.max(opened).unwrap_or(i64::MIN);
        self.markets.insert(
            mk.ticker.clone(),
            MarketState {
                status: mk.status.clone(),
                since_ms,
            },
        );
        Some(mk.ticker)
    }

    pub(super) fn wants(&self, status: &str) -> bool {
        status == market_status::ACTIVE
            || (self.cfg.include_unopened && status == market_status::INITIALIZED)
    }
}
