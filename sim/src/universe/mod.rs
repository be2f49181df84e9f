//! The simulated exchange's catalogue: series, events and markets, generated from the seed.
//!
//! Tickers, titles, price grids (`price_level_structure` + `price_ranges`) and strikes look
//! like Kalshi's. Everything here is a pure function of the seed and a creation counter, so two
//! simulators with the same seed list the same markets in the same order. It must never draw
//! an identity (a ticker, an id) from anything but the seed and the counter.

use kalshi_shared::Price;
use kalshi_shared::wire::{Dollars, JsonDecimal, PriceRange};

use crate::book::Book;
use crate::rng::Rng;

mod templates;

use templates::*;

/// A market's lifecycle state, spelled as the REST `status` field spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Initialized,
    Active,
    Closed,
    Determined,
    Finalized,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        use kalshi_shared::wire::rest::market_status as s;
        match self {
            Status::Initialized => s::INITIALIZED,
            Status::Active => s::ACTIVE,
            Status::Closed => s::CLOSED,
            Status::Determined => s::DETERMINED,
            Status::Finalized => s::FINALIZED,
        }
    }

    /// Whether order flow runs on the market.
    pub fn trading(self) -> bool {
        self == Status::Active
    }
}

#[derive(Debug, Clone)]
pub struct SeriesInfo {
    pub ticker: String,
    pub title: String,
    pub category: String,
    pub tags: Option<Vec<String>>,
    pub frequency: String,
    pub fee_type: String,
    pub fee_multiplier: JsonDecimal,
    pub updated_ms: i64,
    pub is_mve: bool,
}

#[derive(Debug, Clone)]
pub struct EventInfo {
    pub ticker: String,
    pub series: usize,
    pub title: String,
    pub sub_title: String,
    pub collateral_return_type: String,
    pub mutually_exclusive: bool,
    pub strike_date_s: Option<i64>,
    pub strike_period: Option<String>,
    pub updated_ms: i64,
    pub is_mve: bool,
    /// Index of creation, for stable pagination.
    pub order: usize,
}

#[derive(Debug, Clone)]
pub struct MarketInfo {
    pub ticker: String,
    pub market_id: String,
    pub event: usize,
    pub title: String,
    pub yes_sub_title: String,
    pub no_sub_title: String,
    pub rules_primary: String,
    pub strike_type: String,
    pub floor_strike: Option<JsonDecimal>,
    pub cap_strike: Option<JsonDecimal>,
    pub structure: &'static str,
    pub ranges: Vec<PriceRange>,
    /// Every valid price, ascending.
    pub ticks: Vec<Price>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub open_s: i64,
    pub close_s: i64,
    pub expected_expiration_s: i64,
    pub latest_expiration_s: i64,
    pub status: Status,
    pub paused: bool,
    pub result: String,
    pub settlement_value: Option<Price>,
    pub settled_ms: Option<i64>,
    pub can_close_early: bool,
    pub is_mve: bool,
    pub mve_collection: Option<String>,
    pub book: Book,
    /// Index into `ticks` the order flow centres on.
    pub fair_tick: usize,
    pub last_price: Option<Price>,
    pub last_trade_size: kalshi_shared::Quantity,
    pub volume: kalshi_shared::Quantity,
    pub open_interest: kalshi_shared::Quantity,
    /// Sum of count * yes price, in micro-dollar-centi-contracts (for `dollar_volume`).
    pub notional_traded: i128,
    pub previous_price: Option<Price>,
}

impl MarketInfo {
    pub fn price_ranges(&self) -> Vec<PriceRange> {
        self.ranges.clone()
    }
}

fn price(raw: i64) -> Price {
    Price::from_raw(raw)
}

/// Builds a grid and its ranges. Returns (structure, ranges, ticks). `cents_only` (the legacy
/// API could only express whole cents) always picks `linear_cent`.
fn price_grid(rng: &mut Rng, cents_only: bool) -> (&'static str, Vec<PriceRange>, Vec<Price>) {
    let range = |start: i64, end: i64, step: i64| PriceRange {
        start: Dollars::new(price(start)),
        end: Dollars::new(price(end)),
        step: Dollars::new(price(step)),
    };
    let roll = if cents_only { 0 } else { rng.below(100) };
    let (structure, ranges) = if roll < 60 {
        ("linear_cent", vec![range(10_000, 990_000, 10_000)])
    } else if roll < 85 {
        (
            "tapered_deci_cent",
            vec![
                range(1_000, 100_000, 1_000),
                range(100_000, 900_000, 10_000),
                range(900_000, 999_000, 1_000),
            ],
        )
    } else {
        ("deci_cent", vec![range(1_000, 999_000, 1_000)])
    };
    let mut ticks: Vec<Price> = Vec::new();
    for r in &ranges {
        let (start, end, step) = (
            r.start.price().raw(),
            r.end.price().raw(),
            r.step.price().raw(),
        );
        let mut p = start;
        while p <= end {
            ticks.push(price(p));
            p += step;
        }
    }
    ticks.sort();
    ticks.dedup();
    (structure, ranges, ticks)
}

/// The catalogue generator. `start_ms` anchors the (wall-clock) metadata times; everything
/// that forms an identity comes from the seed.
pub struct UniverseGen {
    rng: Rng,
    /// Day number (since 2000-01-01) of the first event date; from the seed.
    base_day: i64,
    start_ms: i64,
    series_count: usize,
    events_made: usize,
    markets_made: usize,
    cents_only: bool,
    /// Every event ticker made so far: an exchange never gives two events one ticker.
    event_tickers: std::collections::HashSet<String>,
}

impl UniverseGen {
    pub fn new(rng: Rng, seed: u64, start_ms: i64, series_count: usize, cents_only: bool) -> Self {
        // 2026-01-01 is day 9497 since 2000-01-01.
        let base_day = 9497 + (seed % 365) as i64;
        Self {
            rng,
            base_day,
            start_ms,
            series_count: series_count.max(1),
            events_made: 0,
            markets_made: 0,
            cents_only,
            event_tickers: std::collections::HashSet::new(),
        }
    }

    pub fn make_series(&mut self) -> Vec<SeriesInfo> {
        let mut out = Vec::with_capacity(self.series_count);
        for i in 0..self.series_count {
            let t = &TEMPLATES[i % TEMPLATES.len()];
            let round = i / TEMPLATES.len();
            let ticker = if round == 0 {
                format!("KX{}", t.code)
            } else {
                format!("KX{}{}", t.code, round + 1)
            };
            // About one series in five has `tags: null`, as observed in production.
            let tags = if self.rng.chance(200) {
                None
            } else {
                Some(t.tags.iter().map(|s| (*s).to_owned()).collect())
            };
            let fee_multiplier = match self.rng.below(3) {
                0 => JsonDecimal::from_scaled(0, 0),
                1 => JsonDecimal::from_scaled(5, 1),
                _ => JsonDecimal::from_scaled(1, 0),
            };
            out.push(SeriesInfo {
                ticker,
                title: t.title.to_owned(),
                category: t.category.to_owned(),
                tags,
                frequency: t.frequency.to_owned(),
                fee_type: if self.rng.chance(300) {
                    "quadratic_with_maker_fees".into()
                } else {
                    "quadratic".into()
                },
                fee_multiplier,
                updated_ms: self.start_ms - 86_400_000 * (30 + i as i64),
                is_mve: false,
            });
        }
        out
    }

    /// The series holding the multivariate (combo) markets.
    pub fn mve_series(&self) -> SeriesInfo {
        SeriesInfo {
            ticker: "KXMVECROSSCATEGORY".into(),
            title: "Cross-category combos".into(),
            category: "Exotics".into(),
            tags: None,
            frequency: "custom".into(),
            fee_type: "quadratic_with_combo_maker_fees".into(),
            fee_multiplier: JsonDecimal::from_scaled(1, 0),
            updated_ms: self.start_ms - 86_400_000,
            is_mve: true,
        }
    }

    fn date_code(day: i64) -> (String, i64) {
        // Civil date from days since 2000-01-01 (Howard Hinnant's algorithm, epoch-shifted).
        let z = day + 10_957 + 719_468; // days since 0000-03-01
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let y = yoe + era * 400;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = if m <= 2 { y + 1 } else { y };
        let unix_s = (day + 10_957) * 86_400;
        (
            format!("{:02}{}{:02}", y % 100, MONTHS[(m - 1) as usize], d),
            unix_s,
        )
    }

    /// Creates one event of `series` with its markets. `n_markets` >= 1.
    pub fn make_event(
        &mut self,
        series_idx: usize,
        series: &SeriesInfo,
        n_markets: usize,
        now_ms: i64,
        event_index: usize,
    ) -> (EventInfo, Vec<MarketInfo>) {
        let t = &TEMPLATES[series_idx % TEMPLATES.len()];
        let day = self.base_day + (self.events_made / self.series_count) as i64;
        self.events_made += 1;
        let (date, date_s) = Self::date_code(day);
        let mut ticker = format!("{}-{date}", series.ticker);
        if self.events_made > 1 && self.rng.chance(100) {
            // Some series run several events a day (e.g. hourly crypto).
            ticker.push_str(&format!("H{:02}", self.rng.below(24)));
        }
        if self.event_tickers.contains(&ticker) {
            // The same series drawn twice for one date: a second event that day, as Kalshi
            // names intraday events.
            let base = ticker.clone();
            let mut n = 2;
            while self.event_tickers.contains(&ticker) {
                ticker = format!("{base}E{n}");
                n += 1;
            }
        }
        self.event_tickers.insert(ticker.clone());
        let mutually_exclusive = matches!(
            t.strike,
            StrikeStyle::Between { .. } | StrikeStyle::Named(_)
        );
        let event = EventInfo {
            ticker: ticker.clone(),
            series: series_idx,
            title: format!("{} on {date}", t.title),
            sub_title: format!("On {date}"),
            collateral_return_type: if mutually_exclusive { "MECNET" } else { "" }.into(),
            mutually_exclusive,
            strike_date_s: Some(date_s + 17 * 3600),
            strike_period: None,
            updated_ms: now_ms,
            is_mve: false,
            order: event_index,
        };
        let mut markets = Vec::with_capacity(n_markets);
        let base_offset = self.rng.below(5) as i64;
        for k in 0..n_markets {
            let k = k as i64 + base_offset;
            let (suffix, strike_type, floor, cap, yes_sub) = match t.strike {
                StrikeStyle::Between { base, width } => {
                    let lo = base + k * width;
                    (
                        format!("B{}.5", lo + width / 2),
                        "between",
                        Some(lo.to_string()),
                        Some((lo + width - 1).to_string()),
                        format!("{lo} to {}", lo + width - 1),
                    )
                }
                StrikeStyle::Greater {
                    base,
                    step,
                    decimals,
                } => {
                    let v = base + k * step;
                    let div = 10i64.pow(decimals);
                    let text = if decimals == 0 {
                        v.to_string()
                    } else {
                        format!("{}.{:0w$}", v / div, v % div, w = decimals as usize)
                    };
                    (
                        format!("T{text}"),
                        "greater",
                        Some(text.clone()),
                        None,
                        format!("Above {text}"),
                    )
                }
                StrikeStyle::Named(names) => {
                    let name = names[(k as usize) % names.len()];
                    (name.to_owned(), "custom", None, None, name.to_owned())
                }
            };
            let (structure, ranges, ticks) = price_grid(&mut self.rng, self.cents_only);
            let fair_tick =
                ticks.len() / 4 + self.rng.below((ticks.len() / 2).max(1) as u64) as usize;
            let market_ticker = format!("{ticker}-{suffix}");
            let created_ms = now_ms;
            let open_s = now_ms / 1000;
            let close_s = date_s + 86_400 + self.rng.range(0, 7) * 86_400;
            markets.push(MarketInfo {
                ticker: market_ticker,
                market_id: self.rng.uuid(),
                event: 0,
                title: format!("{}: {yes_sub}?", t.title),
                yes_sub_title: yes_sub.clone(),
                no_sub_title: format!("Not {yes_sub}"),
                rules_primary: format!(
                    "If the {} is {yes_sub} on {date}, then the market resolves to Yes.",
                    t.title.to_lowercase()
                ),
                strike_type: strike_type.into(),
                floor_strike: floor.and_then(|f| JsonDecimal::parse(&f).ok()),
                cap_strike: cap.and_then(|c| JsonDecimal::parse(&c).ok()),
                structure,
                ranges,
                ticks,
                created_ms,
                updated_ms: created_ms,
                open_s,
                close_s,
                expected_expiration_s: close_s + 3_600,
                latest_expiration_s: close_s + 7 * 86_400,
                status: Status::Active,
                paused: false,
                result: String::new(),
                settlement_value: None,
                settled_ms: None,
                can_close_early: self.rng.chance(500),
                is_mve: false,
                mve_collection: None,
                book: Book::default(),
                fair_tick,
                last_price: None,
                last_trade_size: kalshi_shared::Quantity::ZERO,
                volume: kalshi_shared::Quantity::ZERO,
                open_interest: kalshi_shared::Quantity::ZERO,
                notional_traded: 0,
                previous_price: None,
            });
            self.markets_made += 1;
        }
        (event, markets)
    }

    /// A multivariate combo market: listed by `/markets` unless `mve_filter=exclude`, never on
    /// the lifecycle channel, no order flow.
    pub fn make_mve(
        &mut self,
        index: usize,
        now_ms: i64,
        event_index: usize,
    ) -> (EventInfo, MarketInfo) {
        let hex = format!("{:08X}", self.rng.next_u64() as u32);
        let event_ticker = format!("KXMVECROSSCATEGORY-S2026{hex}");
        let event = EventInfo {
            ticker: event_ticker.clone(),
            series: usize::MAX,
            title: format!("Combo {index}"),
            sub_title: String::new(),
            collateral_return_type: String::new(),
            mutually_exclusive: false,
            strike_date_s: None,
            strike_period: None,
            updated_ms: now_ms,
            is_mve: true,
            order: event_index,
        };
        let (structure, ranges, ticks) = price_grid(&mut self.rng, self.cents_only);
        let fair_tick = ticks.len() / 2;
        let market = MarketInfo {
            ticker: format!("{event_ticker}-{:05X}", self.rng.below(0xfffff)),
            market_id: self.rng.uuid(),
            event: 0,
            title: format!("Combo {index}"),
            yes_sub_title: "yes".into(),
            no_sub_title: "no".into(),
            rules_primary: "Resolves Yes if every selected leg resolves Yes.".into(),
            strike_type: "custom".into(),
            floor_strike: None,
            cap_strike: None,
            structure,
            ranges,
            ticks,
            created_ms: now_ms,
            updated_ms: now_ms,
            open_s: now_ms / 1000,
            close_s: now_ms / 1000 + 30 * 86_400,
            expected_expiration_s: now_ms / 1000 + 30 * 86_400,
            latest_expiration_s: now_ms / 1000 + 60 * 86_400,
            status: Status::Active,
            paused: false,
            result: String::new(),
            settlement_value: None,
            settled_ms: None,
            can_close_early: true,
            is_mve: true,
            mve_collection: Some("KXMVECROSSCATEGORY-R".into()),
            book: Book::default(),
            fair_tick,
            last_price: None,
            last_trade_size: kalshi_shared::Quantity::ZERO,
            volume: kalshi_shared::Quantity::ZERO,
            open_interest: kalshi_shared::Quantity::ZERO,
            notional_traded: 0,
            previous_price: None,
        };
        (event, market)
    }
}

#[cfg(test)]
mod tests;
