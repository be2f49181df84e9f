//! Reading Prometheus text exposition in tests.
//!
//! Absent series read as 0, so it must never be used where absence itself is the assertion
//! (check the series line first there).

/// The sum of every series of metric `name` (all label sets), 0 when absent.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The value of one exact series line (`name{labels}`), 0 when absent.
pub fn metric_line(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}
