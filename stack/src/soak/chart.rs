//! The soak report's charts: one PNG per series over time (plotters' bitmap backend), fault
//! windows shaded, a legend per line. Text is drawn with ab_glyph from a TrueType font read at
//! run time (DejaVu Sans from Debian's fonts-dejavu-core, or `$KALSHI_CHART_FONT`).

use std::path::Path;
use std::sync::OnceLock;

use anyhow::anyhow;
use plotters::prelude::*;

use super::report::Fault;

/// Where the font is looked for, first match wins.
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Why the charts have no font (the first answer stands for the life of the process).
#[derive(Debug, Clone)]
struct NoFont(String);

impl std::fmt::Display for NoFont {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NoFont {}

/// Registers the font once (plotters keeps it for the process).
fn font() -> anyhow::Result<()> {
    static DONE: OnceLock<Result<(), NoFont>> = OnceLock::new();
    DONE.get_or_init(|| {
        let candidates: Vec<String> = std::env::var("KALSHI_CHART_FONT")
            .ok()
            .into_iter()
            .chain(FONTS.iter().map(|s| (*s).to_owned()))
            .collect();
        let Some((path, bytes)) = candidates
            .iter()
            .find_map(|p| std::fs::read(p).ok().map(|b| (p.clone(), b)))
        else {
            return Err(NoFont(format!(
                "no font for the charts: install fonts-dejavu-core or set KALSHI_CHART_FONT to a .ttf (looked in {})",
                candidates.join(", ")
            )));
        };
        // plotters keeps fonts for the life of the process: leaked once, on purpose.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| NoFont(format!("{path}: not a TrueType font")))
    })
    .clone()
    .map_err(anyhow::Error::new)
}

/// One line: its name and its `(seconds since start, value)` points.
pub type Series = (String, Vec<(f64, f64)>);

/// Draws `series` over `[0, x_max]` seconds (shown in minutes) into a PNG at `path`.
pub fn line_chart(
    path: &Path,
    title: &str,
    y_label: &str,
    series: &[Series],
    faults: &[Fault],
    x_max: f64,
) -> anyhow::Result<()> {
    font()?;
    let err = |e: &dyn std::fmt::Display| anyhow!("chart {}: {e}", path.display());
    let root = BitMapBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let top = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let y_max = if top > 0.0 { top * 1.12 } else { 1.0 };
    let x_max = (x_max / 60.0).max(1.0 / 60.0);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(42)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("minutes")
        .y_desc(y_label)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| err(&e))?;
    let shade = RGBColor(250, 200, 200).mix(0.45).filled();
    chart
        .draw_series(
            faults
                .iter()
                .map(|f| Rectangle::new([(f.start / 60.0, 0.0), (f.end / 60.0, y_max)], shade)),
        )
        .map_err(|e| err(&e))?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                points
                    .iter()
                    .filter(|p| p.1.is_finite())
                    .map(|p| (p.0 / 60.0, p.1)),
                color.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
    }
    if !series.is_empty() {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_is_a_png_with_its_lines() {
        let dir = std::env::temp_dir().join(format!("kalshi-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_default();
        let path = dir.join("rss.png");
        let series = vec![
            (
                "gatherer-1".to_owned(),
                (0..100)
                    .map(|i| (f64::from(i) * 6.0, 80.0 + f64::from(i % 7)))
                    .collect(),
            ),
            (
                "deduplicator".to_owned(),
                (0..100).map(|i| (f64::from(i) * 6.0, 120.0)).collect(),
            ),
        ];
        let faults = [Fault {
            name: "ws-stall".into(),
            start: 120.0,
            end: 140.0,
        }];
        // The font is a prerequisite (prerequisites.txt: fonts-dejavu-core).
        line_chart(&path, "RSS", "MiB", &series, &faults, 600.0)
            .unwrap_or_else(|e| panic!("{e:#}"));
        let png = std::fs::read(&path).unwrap_or_default();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        // 1200 x 520, and far more than a blank image's bytes.
        assert_eq!(
            u32::from_be_bytes([png[16], png[17], png[18], png[19]]),
            1200
        );
        assert_eq!(
            u32::from_be_bytes([png[20], png[21], png[22], png[23]]),
            520
        );
        assert!(png.len() > 10_000, "{} bytes", png.len());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
