//! The calibration plot: score distributions of duplicate vs distinct pairs per stage, and
//! precision/recall against the semantic threshold, with the chosen thresholds marked.

use std::path::Path;

use plotters::prelude::*;

use super::{Confusion, Scored};

/// Fonts looked for (plotters draws text with a TrueType font).
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Why the plot could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("plot file must end in .svg or .png: {0}")]
    Extension(String),
    #[error("no TrueType font found (looked in {0}); install fonts-dejavu-core")]
    NoFont(String),
    #[error("drawing failed: {0}")]
    Draw(String),
}

/// A drawing failure as a `PlotError`.
fn draw_error<E: std::error::Error + Send + Sync>(x: DrawingAreaErrorKind<E>) -> PlotError {
    PlotError::Draw(x.to_string())
}

fn register_font() -> Result<(), PlotError> {
    for p in FONT_PATHS {
        if let Ok(bytes) = std::fs::read(p) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            return plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| PlotError::NoFont(p.to_string()));
        }
    }
    Err(PlotError::NoFont(FONT_PATHS.join(", ")))
}

/// Writes the plot to `path` (.svg or .png); `chosen` = (fuzzy, semantic) thresholds.
pub fn write_plot(path: &Path, scored: &[Scored], chosen: (f64, f64)) -> Result<(), PlotError> {
    register_font()?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let size = (1200, 900);
    match ext.as_str() {
        "svg" => draw(
            SVGBackend::new(path, size).into_drawing_area(),
            scored,
            chosen,
        ),
        "png" => draw(
            BitMapBackend::new(path, size).into_drawing_area(),
            scored,
            chosen,
        ),
        _ => Err(PlotError::Extension(path.display().to_string())),
    }
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    scored: &[Scored],
    chosen: (f64, f64),
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    let e = draw_error::<DB::ErrorType>;
    root.fill(&WHITE).map_err(e)?;
    let areas = root.split_evenly((2, 2));
    histogram(
        &areas[0],
        "fuzzy similarity (eligible)",
        scored
            .iter()
            .filter_map(|s| s.fuzzy.map(|v| (s.duplicate, v))),
        chosen.0,
    )?;
    histogram(
        &areas[1],
        "semantic cosine (eligible)",
        scored
            .iter()
            .filter_map(|s| s.semantic.map(|v| (s.duplicate, v))),
        chosen.1,
    )?;
    histogram(
        &areas[2],
        "naive whole-call cosine",
        scored
            .iter()
            .filter_map(|s| s.naive_cosine.map(|v| (s.duplicate, v))),
        0.90,
    )?;
    curves(&areas[3], scored, chosen)?;
    root.present().map_err(e)
}

fn histogram<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    values: impl Iterator<Item = (bool, f64)>,
    mark: f64,
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    let e = draw_error::<DB::ErrorType>;
    const BINS: usize = 50;
    let mut dup = [0u32; BINS];
    let mut distinct = [0u32; BINS];
    for (d, v) in values {
        let b = ((v.clamp(0.0, 1.0) * BINS as f64) as usize).min(BINS - 1);
        if d { dup[b] += 1 } else { distinct[b] += 1 }
    }
    let ymax = dup
        .iter()
        .chain(distinct.iter())
        .copied()
        .max()
        .unwrap_or(1)
        .max(1);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(40)
        .build_cartesian_2d(0f64..1f64, 0u32..ymax + 1)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("score")
        .y_desc("pairs")
        .draw()
        .map_err(e)?;
    let w = 1.0 / BINS as f64;
    for (counts, color, name) in [
        (&dup, BLUE.mix(0.5), "duplicate"),
        (&distinct, RED.mix(0.5), "distinct"),
    ] {
        chart
            .draw_series(counts.iter().enumerate().map(|(i, c)| {
                Rectangle::new(
                    [(i as f64 * w, 0), ((i as f64 + 1.0) * w, *c)],
                    color.filled(),
                )
            }))
            .map_err(e)?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .draw_series(LineSeries::new(
            vec![(mark, 0), (mark, ymax)],
            BLACK.stroke_width(2),
        ))
        .map_err(e)?;
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    Ok(())
}

fn curves<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    scored: &[Scored],
    chosen: (f64, f64),
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    let e = draw_error::<DB::ErrorType>;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "precision / recall vs semantic threshold (fuzzy {:.2})",
                chosen.0
            ),
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(40)
        .build_cartesian_2d(0.7f64..1f64, 0f64..1.01f64)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc("semantic_duplicate")
        .draw()
        .map_err(e)?;
    let pts: Vec<(f64, Confusion)> = (0..=300)
        .map(|i| 0.7 + 0.001 * f64::from(i))
        .map(|t| {
            (
                t,
                Confusion::of(scored.iter().map(|s| (s, s.at(chosen.0, t)))),
            )
        })
        .collect();
    for (name, color, f) in [
        (
            "precision",
            BLUE,
            Confusion::precision as fn(&Confusion) -> f64,
        ),
        ("recall", GREEN, Confusion::recall),
        ("false-duplicate rate", RED, Confusion::false_duplicate_rate),
    ] {
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|(t, c)| (*t, f(c))),
                color.stroke_width(2),
            ))
            .map_err(e)?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], color));
    }
    chart
        .draw_series(LineSeries::new(
            vec![(chosen.1, 0.0), (chosen.1, 1.0)],
            BLACK.stroke_width(2),
        ))
        .map_err(e)?;
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerLeft)
        .draw()
        .map_err(e)?;
    Ok(())
}
