//! The runs of a comparison in one picture: each variant's validation
//! loss and accuracy against epoch, a colour per variant, the mean over
//! its seeds as a line and the range they span as a band, with the legend
//! in a column of its own so that a dozen variants hide no curve.

use super::{AXIS, HEIGHT, PlotError, WIDTH, chart, font, png, px};
use crate::runtime::checkpoint::write_atomic;
use crate::runtime::metrics::EpochMetrics;
use image::RgbImage;
use image::imageops::{self, FilterType};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use std::ops::Range;
use std::path::Path;

/// A variant's runs, one per seed.
pub struct Curves {
    pub label: String,
    pub runs: Vec<Vec<EpochMetrics>>,
}

/// Matplotlib's ten colours ("tab10"), which readers of plots know; more
/// variants than ten reuse them in order.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// The colour of the `i`th variant.
pub fn colour(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Whether the `i`th variant's line is dashed: those past the palette's
/// first round, which share a colour with an earlier one.
fn dashed(i: usize) -> bool {
    (i / PALETTE.len()) % 2 == 1
}

/// Draws `curves` under `title` and writes them to `path` as a `WIDTH` x
/// `HEIGHT` PNG, atomically. Runs without validation data are drawn from
/// their training metrics, and the panels say so.
pub fn write_comparison(path: &Path, title: &str, curves: &[Curves]) -> Result<(), PlotError> {
    let png = render(title, curves).map_err(|reason| PlotError::Draw {
        path: path.to_path_buf(),
        reason,
    })?;
    write_atomic(path, &png).map_err(PlotError::File)
}

/// A variant's value at each epoch over its seeds: mean, lowest, highest.
struct Band {
    points: Vec<(u64, f64, f64, f64)>,
}

impl Band {
    fn of(runs: &[Vec<EpochMetrics>], value: &dyn Fn(&EpochMetrics) -> Option<f64>) -> Band {
        let last = runs.iter().flatten().map(|m| m.epoch).max().unwrap_or(0);
        let points = (1..=last)
            .filter_map(|epoch| {
                let values: Vec<f64> = runs
                    .iter()
                    .filter_map(|r| r.iter().find(|m| m.epoch == epoch))
                    .filter_map(value)
                    .filter(|v| v.is_finite())
                    .collect();
                let n = values.len() as f64;
                (!values.is_empty()).then(|| {
                    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
                    let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    (epoch, values.iter().sum::<f64>() / n, low, high)
                })
            })
            .collect();
        Band { points }
    }

    fn values(&self) -> impl Iterator<Item = f64> + '_ {
        self.points.iter().flat_map(|&(_, _, low, high)| [low, high])
    }
}

struct Panel {
    title: String,
    y_desc: &'static str,
    bands: Vec<Band>,
    y_range: Range<f64>,
}

fn render(title: &str, curves: &[Curves]) -> Result<Vec<u8>, String> {
    super::bundled_font()?;
    let validated = curves
        .iter()
        .flat_map(|c| c.runs.iter().flatten())
        .any(|m| m.val_loss.is_some_and(f64::is_finite));
    type Metric = fn(&EpochMetrics) -> Option<f64>;
    let (which, loss, accuracy): (&str, Metric, Metric) = match validated {
        true => ("Validation", |m| m.val_loss, |m| m.val_accuracy),
        false => ("Training", |m| Some(m.loss), |m| Some(m.accuracy)),
    };
    let loss_bands: Vec<Band> = curves.iter().map(|c| Band::of(&c.runs, &loss)).collect();
    let accuracy_bands: Vec<Band> = curves.iter().map(|c| Band::of(&c.runs, &accuracy)).collect();
    let top = loss_bands.iter().flat_map(Band::values).fold(0.0, f64::max);
    let mut panels = vec![Panel {
        title: format!("{which} loss"),
        y_desc: "loss",
        bands: loss_bands,
        y_range: if top > 0.0 { 0.0..top * 1.08 } else { 0.0..1.0 },
    }];
    // A regression has no accuracy: its loss gets the whole width.
    if accuracy_bands.iter().any(|b| !b.points.is_empty()) {
        let low = accuracy_bands.iter().flat_map(Band::values).fold(1.0, f64::min);
        let bottom = ((low - 0.02) * 10.0).floor() / 10.0;
        panels.push(Panel {
            title: format!("{which} accuracy"),
            y_desc: "accuracy",
            bands: accuracy_bands,
            y_range: bottom.clamp(0.0, 0.9)..1.0,
        });
    }
    let last = curves
        .iter()
        .flat_map(|c| c.runs.iter().flatten())
        .map(|m| m.epoch)
        .max()
        .unwrap_or(1);
    let longest = curves.iter().map(|c| c.label.chars().count()).max().unwrap_or(0) as u32;
    // Room for the sample line and the longest label at 13 points.
    let legend_width = px((60 + 8 * longest).clamp(200, 420));

    let (width, height) = (px(WIDTH), px(HEIGHT));
    let mut pixels = vec![255; width as usize * height as usize * 3];
    {
        let backend = BitMapBackend::with_buffer_and_format(&mut pixels, (width, height)).map_err(|e| e.to_string())?;
        let root = backend.into_drawing_area().margin(px(8), 0, 0, 0);
        let root = root.titled(title, font(22, BLACK)).map_err(|e| e.to_string())?;
        let (plots, key) = root.split_horizontally(width - legend_width);
        let areas = plots.split_evenly((1, panels.len()));
        for (area, panel) in areas.iter().zip(&panels) {
            draw_panel(area, panel, last)?;
        }
        draw_legend(&key, curves)?;
        root.present().map_err(|e| e.to_string())?;
    }
    let drawn = RgbImage::from_raw(width, height, pixels).ok_or("the drawing has the wrong size")?;
    png(&imageops::resize(&drawn, WIDTH, HEIGHT, FilterType::Triangle))
}

fn draw_panel(area: &DrawingArea<BitMapBackend, Shift>, panel: &Panel, last: u64) -> Result<(), String> {
    let mut chart = chart(area, &panel.title, panel.y_desc, last, panel.y_range.clone())?;
    let clamp = |v: f64| v.clamp(panel.y_range.start, panel.y_range.end);
    // Every band first, so that no band covers another variant's line.
    for (i, band) in panel.bands.iter().enumerate() {
        let upper = band.points.iter().map(|&(e, _, _, high)| (e, clamp(high)));
        let lower = band.points.iter().rev().map(|&(e, _, low, _)| (e, clamp(low)));
        let outline: Vec<(u64, f64)> = upper.chain(lower).collect();
        chart
            .draw_series(std::iter::once(Polygon::new(outline, colour(i).mix(0.18).filled())))
            .map_err(|e| e.to_string())?;
    }
    for (i, band) in panel.bands.iter().enumerate() {
        let style = colour(i).stroke_width(px(2));
        let mean: Vec<(u64, f64)> = band.points.iter().map(|&(e, mean, _, _)| (e, clamp(mean))).collect();
        if dashed(i) {
            chart.draw_series(DashedLineSeries::new(mean.iter().copied(), px(8), px(5), style))
        } else {
            chart.draw_series(LineSeries::new(mean.iter().copied(), style))
        }
        .map_err(|e| e.to_string())?;
        if mean.len() <= super::MAX_DOTS {
            chart
                .draw_series(mean.iter().map(|&p| Circle::new(p, px(3), colour(i).filled())))
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// One row per variant, its colour beside its label, then what the line
/// and the band mean.
fn draw_legend(area: &DrawingArea<BitMapBackend, Shift>, curves: &[Curves]) -> Result<(), String> {
    let row = px(24) as i32;
    let top = px(56) as i32;
    let left = px(8) as i32;
    let sample = px(22) as i32;
    for (i, c) in curves.iter().enumerate() {
        let y = top + row * i as i32;
        let style = colour(i).stroke_width(px(2));
        area.draw(&Rectangle::new(
            [(left, y - px(7) as i32), (left + sample, y + px(7) as i32)],
            colour(i).mix(0.18).filled(),
        ))
        .map_err(|e| e.to_string())?;
        let line = vec![(left, y), (left + sample, y)];
        if dashed(i) {
            area.draw(&DashedPathElement::new(line, px(8), px(5), style))
        } else {
            area.draw(&PathElement::new(line, style))
        }
        .map_err(|e| e.to_string())?;
        area.draw(&Text::new(
            c.label.clone(),
            (left + sample + px(8) as i32, y - px(8) as i32),
            font(13, BLACK),
        ))
        .map_err(|e| e.to_string())?;
    }
    let seeds = curves.iter().map(|c| c.runs.len()).max().unwrap_or(0);
    let y = top + row * curves.len() as i32 + px(6) as i32;
    let notes = match seeds {
        0 | 1 => vec!["one run each".to_string()],
        n => vec![
            format!("line: mean of {n} seeds"),
            "band: lowest to highest".to_string(),
        ],
    };
    for (i, note) in notes.into_iter().enumerate() {
        let at = (left, y + i as i32 * px(18) as i32);
        area.draw(&Text::new(note, at, font(12, AXIS)))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
