//! The catalogue's templates: the kinds of question a series asks (strikes, ranges, yes/no),
//! their price grids and naming.
//!
//! It must never hold state: the same seed must give the same catalogue.

/// A series template: what kind of question its markets ask.
pub(super) struct Template {
    pub(super) code: &'static str,
    pub(super) title: &'static str,
    pub(super) category: &'static str,
    pub(super) tags: &'static [&'static str],
    pub(super) frequency: &'static str,
    pub(super) strike: StrikeStyle,
}

#[derive(Clone, Copy)]
pub(super) enum StrikeStyle {
    /// `-B53.5`: a bucket between two values.
    Between { base: i64, width: i64 },
    /// `-T3.00`: above a threshold.
    Greater { base: i64, step: i64, decimals: u32 },
    /// `-KC`: one outcome among named ones.
    Named(&'static [&'static str]),
}

pub(super) const TEMPLATES: &[Template] = &[
    Template {
        code: "HIGHNY",
        title: "Highest temperature in NYC",
        category: "Climate and Weather",
        tags: &["Weather", "Temperature"],
        frequency: "daily",
        strike: StrikeStyle::Between { base: 40, width: 2 },
    },
    Template {
        code: "CPI",
        title: "CPI year-over-year",
        category: "Economics",
        tags: &["Inflation"],
        frequency: "monthly",
        strike: StrikeStyle::Greater {
            base: 20,
            step: 1,
            decimals: 1,
        },
    },
    Template {
        code: "FED",
        title: "Fed funds target upper bound",
        category: "Economics",
        tags: &["Fed", "Interest rates"],
        frequency: "custom",
        strike: StrikeStyle::Greater {
            base: 300,
            step: 25,
            decimals: 2,
        },
    },
    Template {
        code: "BTCD",
        title: "Bitcoin price at 5pm ET",
        category: "Crypto",
        tags: &["BTC"],
        frequency: "daily",
        strike: StrikeStyle::Greater {
            base: 9_000_000,
            step: 50_000,
            decimals: 2,
        },
    },
    Template {
        code: "INXD",
        title: "S&P 500 close",
        category: "Financials",
        tags: &["S&P"],
        frequency: "daily",
        strike: StrikeStyle::Between {
            base: 6000,
            width: 25,
        },
    },
    Template {
        code: "NFLGAME",
        title: "Pro football game winner",
        category: "Sports",
        tags: &["Football"],
        frequency: "weekly",
        strike: StrikeStyle::Named(&["KC", "BUF", "PHI", "SF", "DAL", "DET", "BAL", "MIA"]),
    },
    Template {
        code: "RAINNYC",
        title: "Rain in NYC this month",
        category: "Climate and Weather",
        tags: &[],
        frequency: "monthly",
        strike: StrikeStyle::Greater {
            base: 10,
            step: 5,
            decimals: 1,
        },
    },
    Template {
        code: "GDP",
        title: "US GDP growth",
        category: "Economics",
        tags: &["GDP"],
        frequency: "quarterly",
        strike: StrikeStyle::Greater {
            base: 5,
            step: 5,
            decimals: 1,
        },
    },
    Template {
        code: "ETHD",
        title: "Ethereum price at 5pm ET",
        category: "Crypto",
        tags: &["ETH"],
        frequency: "daily",
        strike: StrikeStyle::Greater {
            base: 300_000,
            step: 2_500,
            decimals: 2,
        },
    },
    Template {
        code: "TSAW",
        title: "TSA check-ins this week",
        category: "Transportation",
        tags: &["Travel"],
        frequency: "weekly",
        strike: StrikeStyle::Between {
            base: 150,
            width: 5,
        },
    },
];

pub(super) const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
