//! Fetching the catalogue over REST: paged markets and events, single series, events and
//! markets on demand, and the periodic full sync that reconciles what the WebSocket said.
//!
//! It must never treat a failed page as an empty one (that would unsubscribe live markets).

use super::*;

impl Registry {
    pub(super) fn mve_param(&self) -> &'static str {
        match self.cfg.mve_filter {
            MveFilter::Exclude => "&mve_filter=exclude",
            MveFilter::Only => "&mve_filter=only",
            MveFilter::All => "",
        }
    }

    pub(super) async fn page_markets(
        &mut self,
        filter: &str,
        series_hint: Option<&str>,
        seen: &mut HashSet<String>,
    ) -> Result<(), RestError> {
        let mut cursor = String::new();
        let mut pages = 0;
        loop {
            let url = format!(
                "/markets?limit={}{filter}{}{}",
                self.cfg.page_limit,
                self.mve_param(),
                if cursor.is_empty() {
                    String::new()
                } else {
                    format!("&cursor={}", q(&cursor))
                }
            );
            let body: Box<RawValue> = self.rest.get("markets", &url).await?;
            let page: MarketsPage<'_> =
                serde_json::from_str(body.get()).map_err(|e| RestError::Decode {
                    endpoint: "markets",
                    message: e.to_string(),
                })?;
            for raw in page.markets {
                if let Some(t) = self.take_market(raw, series_hint) {
                    seen.insert(t);
                }
            }
            pages += 1;
            if page.cursor.is_empty() || page.cursor == cursor || pages > 100_000 {
                return Ok(());
            }
            cursor = page.cursor;
        }
    }

    pub(super) async fn page_events(&mut self, filter: &str) -> Result<(), RestError> {
        let mut cursor = String::new();
        loop {
            let url = format!(
                "/events?limit=200{filter}{}",
                if cursor.is_empty() {
                    String::new()
                } else {
                    format!("&cursor={}", q(&cursor))
                }
            );
            let body: Box<RawValue> = self.rest.get("events", &url).await?;
            let page: EventsPage<'_> =
                serde_json::from_str(body.get()).map_err(|e| RestError::Decode {
                    endpoint: "events",
                    message: e.to_string(),
                })?;
            for raw in page.events {
                self.take_event(raw);
            }
            if page.cursor.is_empty() || page.cursor == cursor {
                return Ok(());
            }
            cursor = page.cursor;
        }
    }

    pub(super) async fn fetch_event(&mut self, ticker: &str) -> Result<Option<String>, RestError> {
        let body: Box<RawValue> = match self
            .rest
            .get("event", &format!("/events/{}", q(ticker)))
            .await
        {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let one: OneEvent<'_> =
            serde_json::from_str(body.get()).map_err(|e| RestError::Decode {
                endpoint: "event",
                message: e.to_string(),
            })?;
        let series = self.take_event(one.event);
        if let Some(s) = &series
            && !self.series.contains_key(s)
        {
            self.fetch_series(s).await?;
        }
        Ok(series)
    }

    pub(super) async fn fetch_series(&mut self, ticker: &str) -> Result<(), RestError> {
        let body: Box<RawValue> = match self
            .rest
            .get("series_one", &format!("/series/{}", q(ticker)))
            .await
        {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        let one: OneSeries<'_> =
            serde_json::from_str(body.get()).map_err(|e| RestError::Decode {
                endpoint: "series_one",
                message: e.to_string(),
            })?;
        self.take_series(one.series);
        Ok(())
    }

    pub(super) async fn fetch_market(&mut self, ticker: &str) -> Result<(), RestError> {
        let body: Box<RawValue> = match self
            .rest
            .get("market", &format!("/markets/{}", q(ticker)))
            .await
        {
            Ok(b) => b,
            Err(e) if e.is_not_found() => {
                tracing::warn!(ticker, "market vanished from the exchange; dropping it");
                self.markets.remove(ticker);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let one: OneMarket<'_> =
            serde_json::from_str(body.get()).map_err(|e| RestError::Decode {
                endpoint: "market",
                message: e.to_string(),
            })?;
        let event = serde_json::from_str::<Market>(one.market.get())
            .map(|mk| mk.event_ticker)
            .unwrap_or_default();
        let series = match self.events.get(&event) {
            Some(s) => Some(s.clone()),
            None if !event.is_empty() => self.fetch_event(&event).await?,
            None => None,
        };
        self.take_market(one.market, series.as_deref());
        Ok(())
    }

    /// A full sync: series, open events, open (and unopened) markets; then every tracked
    /// market that no longer lists as open is fetched to learn its final state.
    pub(super) async fn sync(&mut self, cancel: &CancellationToken) -> Result<(), RestError> {
        let started = std::time::Instant::now();
        let body: Box<RawValue> = self.rest.get("series", "/series").await?;
        let list: SeriesList<'_> =
            serde_json::from_str(body.get()).map_err(|e| RestError::Decode {
                endpoint: "series",
                message: e.to_string(),
            })?;
        let filtered = !self.cfg.series.is_empty() || !self.cfg.categories.is_empty();
        self.allowed_series = filtered.then(HashSet::new);
        for raw in list.series {
            self.take_series(raw);
        }
        if let Some(set) = &self.allowed_series {
            let mut scope = self
                .scope
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            scope.series = Some(set.clone());
        }
        let statuses: &[&str] = if self.cfg.include_unopened {
            &["open", "unopened"]
        } else {
            &["open"]
        };
        let mut seen = HashSet::new();
        match self.allowed_series.clone() {
            Some(set) => {
                let mut series: Vec<String> = set.into_iter().collect();
                series.sort();
                for s in series {
                    if cancel.is_cancelled() {
                        return Err(RestError::Shutdown);
                    }
                    self.page_events(&format!("&status=open&series_ticker={}", q(&s)))
                        .await?;
                    for st in statuses {
                        self.page_markets(
                            &format!("&status={st}&series_ticker={}", q(&s)),
                            Some(&s),
                            &mut seen,
                        )
                        .await?;
                    }
                }
            }
            None => {
                self.page_events("&status=open").await?;
                for st in statuses {
                    self.page_markets(&format!("&status={st}"), None, &mut seen)
                        .await?;
                }
            }
        }
        // Tracked markets that stopped listing as open: fetch their final state. After a
        // lifecycle hole, every tracked market not yet finalized too.
        let unfinished = std::mem::take(&mut self.refresh_unfinished);
        let gone: Vec<String> = self
            .markets
            .iter()
            .filter(|(t, s)| {
                !seen.contains(*t)
                    && (self.wants(&s.status)
                        || (unfinished && s.status != market_status::FINALIZED))
            })
            .map(|(t, _)| t.clone())
            .collect();
        for t in gone {
            if cancel.is_cancelled() {
                self.refresh_unfinished |= unfinished;
                return Err(RestError::Shutdown);
            }
            if let Err(e) = self.fetch_market(&t).await {
                // Retried with the next sync, the refresh included.
                self.refresh_unfinished |= unfinished;
                return Err(e);
            }
        }
        self.publish();
        metrics::counter!(m::REGISTRY_SYNCS).increment(1);
        self.health.registry_synced();
        tracing::info!(
            markets = self.markets.len(),
            subscribed = self.desired.borrow().len(),
            took = ?started.elapsed(),
            "registry synced"
        );
        Ok(())
    }
}
