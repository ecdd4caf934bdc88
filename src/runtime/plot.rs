//! The learning curves of a run as a PNG: loss and accuracy against epoch,
//! training and validation, in two panels side by side, the best epoch
//! marked. `comparison` draws several runs' validation curves together.

mod comparison;

pub use comparison::{Curves, colour, write_comparison};

use super::checkpoint::{FileError, write_atomic};
use super::metrics::EpochMetrics;
use image::codecs::png::PngEncoder;
use image::imageops::{self, FilterType};
use image::{ExtendedColorType, ImageEncoder, RgbImage};
use plotters::coord::Shift;
use plotters::coord::types::{RangedCoordf64, RangedCoordu64};
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub const WIDTH: u32 = 1200;
pub const HEIGHT: u32 = 480;

/// The plot is drawn this many times larger and scaled down: plotters draws
/// lines without anti-aliasing and places glyphs up to a pixel off (it
/// ignores their side bearings), and both show less at a fraction of a pixel.
const SUPERSAMPLE: u32 = 2;

/// A length in pixels of the finished image, in pixels of the drawing.
pub(super) fn px(length: u32) -> u32 {
    length * SUPERSAMPLE
}

// Bundled so that drawing needs no system fonts (see font/LICENSE-DejaVu.txt).
static FONT: &[u8] = include_bytes!("font/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

// Matplotlib's first two colours, which readers of learning curves know.
const TRAINING: RGBColor = RGBColor(31, 119, 180);
const VALIDATION: RGBColor = RGBColor(255, 127, 14);
/// Matplotlib's green, a colour neither curve has.
pub const BEST: RGBColor = RGBColor(44, 160, 44);
const GRID: RGBColor = RGBColor(232, 232, 232);
pub(super) const AXIS: RGBColor = RGBColor(90, 90, 90);

/// Up to this many epochs each one also gets a dot; beyond, dots would
/// only thicken the line.
pub(super) const MAX_DOTS: usize = 40;

#[derive(Debug)]
pub enum PlotError {
    File(FileError),
    Draw { path: PathBuf, reason: String },
}

/// Draws the curves of `epochs` of model `model` and writes them to `path`
/// as a `WIDTH` x `HEIGHT` PNG, atomically.
pub fn write_learning_curves(path: &Path, model: &str, epochs: &[EpochMetrics]) -> Result<(), PlotError> {
    let png = render(model, epochs).map_err(|reason| PlotError::Draw {
        path: path.to_path_buf(),
        reason,
    })?;
    write_atomic(path, &png).map_err(PlotError::File)
}

struct Series {
    label: &'static str,
    color: RGBColor,
    points: Vec<(u64, f64)>,
}

struct Panel {
    title: &'static str,
    series: Vec<Series>,
    y_range: Range<f64>,
}

/// Registers the bundled font with plotters, once; every picture cnnc
/// draws writes with it, as the family `FAMILY`.
pub(super) fn bundled_font() -> Result<&'static str, String> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    if !REGISTERED.get_or_init(|| register_font(FAMILY, FontStyle::Normal, FONT).is_ok()) {
        return Err("the bundled font is not a valid TrueType font".into());
    }
    Ok(FAMILY)
}

/// The epoch of the lowest validation loss, the first if several tie: the
/// one early stopping keeps. `None` without validation data.
pub fn best_epoch(epochs: &[EpochMetrics]) -> Option<u64> {
    epochs
        .iter()
        .filter_map(|m| m.val_loss.filter(|l| l.is_finite()).map(|l| (m.epoch, l)))
        .fold(None, |best: Option<(u64, f64)>, (e, l)| match best {
            Some((_, b)) if b <= l => best,
            _ => Some((e, l)),
        })
        .map(|(e, _)| e)
}

fn render(model: &str, epochs: &[EpochMetrics]) -> Result<Vec<u8>, String> {
    bundled_font()?;
    let best = best_epoch(epochs);
    let loss = series(epochs, |m| Some(m.loss), |m| m.val_loss);
    let accuracy = series(epochs, |m| Some(m.accuracy), |m| m.val_accuracy);
    let loss = Panel {
        title: "Loss",
        y_range: loss_range(&loss),
        series: loss,
    };
    let accuracy = Panel {
        title: "Accuracy",
        y_range: accuracy_range(&accuracy),
        series: accuracy,
    };
    let last = epochs.iter().map(|m| m.epoch).max().unwrap_or(1);

    let (width, height) = (px(WIDTH), px(HEIGHT));
    let mut pixels = vec![255; width as usize * height as usize * 3];
    {
        let backend = BitMapBackend::with_buffer_and_format(&mut pixels, (width, height)).map_err(|e| e.to_string())?;
        let root = backend.into_drawing_area().margin(px(8), 0, 0, 0);
        let title = format!("{model}: learning curves");
        let root = root.titled(&title, font(24, BLACK)).map_err(|e| e.to_string())?;
        let (left, right) = root.split_horizontally(width / 2);
        draw_panel(&left, &loss, last, best)?;
        draw_panel(&right, &accuracy, last, best)?;
        root.present().map_err(|e| e.to_string())?;
    }
    let drawn = RgbImage::from_raw(width, height, pixels).ok_or("the drawing has the wrong size")?;
    let image = imageops::resize(&drawn, WIDTH, HEIGHT, FilterType::Triangle);
    png(&image)
}

/// An RGB image as PNG bytes.
pub(super) fn png(image: &RgbImage) -> Result<Vec<u8>, String> {
    let mut png = Vec::new();
    PngEncoder::new(&mut png)
        .write_image(image.as_raw(), image.width(), image.height(), ExtendedColorType::Rgb8)
        .map_err(|e| e.to_string())?;
    Ok(png)
}

pub(super) fn font(size: u32, color: RGBColor) -> TextStyle<'static> {
    (FAMILY, px(size)).into_font().color(&color)
}

/// Training always; validation only when the run had validation data.
/// Points that are not finite (a diverged loss) are left out.
fn series(
    epochs: &[EpochMetrics],
    training: impl Fn(&EpochMetrics) -> Option<f64>,
    validation: impl Fn(&EpochMetrics) -> Option<f64>,
) -> Vec<Series> {
    let points = |value: &dyn Fn(&EpochMetrics) -> Option<f64>| -> Vec<(u64, f64)> {
        epochs
            .iter()
            .filter_map(|m| value(m).filter(|v| v.is_finite()).map(|v| (m.epoch, v)))
            .collect()
    };
    let mut all = vec![Series {
        label: "training",
        color: TRAINING,
        points: points(&training),
    }];
    let validation = points(&validation);
    if !validation.is_empty() {
        all.push(Series {
            label: "validation",
            color: VALIDATION,
            points: validation,
        });
    }
    all
}

fn values(series: &[Series]) -> impl Iterator<Item = f64> + '_ {
    series.iter().flat_map(|s| s.points.iter().map(|&(_, v)| v))
}

/// From zero, so that how far the loss fell reads at a glance.
fn loss_range(series: &[Series]) -> Range<f64> {
    let top = values(series).fold(0.0, f64::max);
    if top > 0.0 { 0.0..top * 1.08 } else { 0.0..1.0 }
}

/// Up to 1, from a tenth below the lowest value, so late gains of a
/// fraction of a percent stay visible.
fn accuracy_range(series: &[Series]) -> Range<f64> {
    let low = values(series).fold(1.0, f64::min);
    let bottom = ((low - 0.02) * 10.0).floor() / 10.0;
    bottom.clamp(0.0, 0.9)..1.0
}

/// A panel's chart of epochs 1 to `last` against `y_range`, its grid,
/// ticks and axis names drawn.
pub(super) type Chart<'a, 'b> = ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordu64, RangedCoordf64>>;

pub(super) fn chart<'a, 'b>(
    area: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    title: &str,
    y_desc: &str,
    last: u64,
    y_range: Range<f64>,
) -> Result<Chart<'a, 'b>, String> {
    // Integer epochs, with one spare on each side so the first and last
    // points are not drawn on the frame.
    let mut chart = ChartBuilder::on(area)
        .caption(title, font(18, BLACK))
        .margin(px(16))
        .x_label_area_size(px(44))
        .y_label_area_size(px(64))
        .build_cartesian_2d(0..last + 1, y_range.clone())
        .map_err(|e| e.to_string())?;
    let x_labels = usize::try_from(last + 2).unwrap_or(usize::MAX).min(11);
    // Enough decimals to tell neighbouring ticks apart.
    let step = (y_range.end - y_range.start) / 8.0;
    let decimals = (-step.log10().floor()).clamp(1.0, 6.0) as usize;
    let epoch_label = |&epoch: &u64| {
        if (1..=last).contains(&epoch) {
            epoch.to_string()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(y_desc)
        .x_labels(x_labels)
        .y_labels(8)
        .x_label_formatter(&epoch_label)
        .y_label_formatter(&|v| format!("{v:.decimals$}"))
        .label_style(font(13, AXIS))
        .axis_desc_style(font(14, AXIS))
        .axis_style(AXIS.stroke_width(px(1)))
        .bold_line_style(GRID.stroke_width(px(1)))
        .light_line_style(TRANSPARENT)
        .set_all_tick_mark_size(px(4))
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(chart)
}

/// The legend of a chart, where `position` says.
pub(super) fn legend<'a, 'b: 'a>(chart: &mut Chart<'a, 'b>, position: SeriesLabelPosition) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(position)
        .label_font(font(13, AXIS))
        .background_style(WHITE.mix(0.9))
        .border_style(GRID.stroke_width(px(1)))
        .margin(px(12))
        .legend_area_size(px(26))
        .draw()
        .map_err(|e| e.to_string())
}

fn draw_panel(
    area: &DrawingArea<BitMapBackend, Shift>,
    panel: &Panel,
    last: u64,
    best: Option<u64>,
) -> Result<(), String> {
    let y_desc = panel.title.to_lowercase();
    let mut chart = chart(area, panel.title, &y_desc, last, panel.y_range.clone())?;
    if let Some(best) = best {
        // Under the curves, dashed, from the bottom of the panel to its top.
        let style = BEST.stroke_width(px(2));
        let (bottom, top) = (panel.y_range.start, panel.y_range.end);
        chart
            .draw_series(DashedLineSeries::new(
                [(best, bottom), (best, top)],
                px(6),
                px(5),
                style,
            ))
            .map_err(|e| e.to_string())?
            .label(format!("best epoch: {best} (lowest val_loss)"))
            .legend(move |(x, y)| DashedPathElement::new(vec![(x, y), (x + px(20) as i32, y)], px(6), px(5), style));
    }
    for s in &panel.series {
        let style = s.color.stroke_width(px(2));
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), style))
            .map_err(|e| e.to_string())?
            .label(s.label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + px(20) as i32, y)], style));
        if s.points.len() <= MAX_DOTS {
            chart
                .draw_series(s.points.iter().map(|&p| Circle::new(p, px(3), s.color.filled())))
                .map_err(|e| e.to_string())?;
        }
    }
    legend(&mut chart, legend_place(panel, last))
}

/// The place (a corner, or the middle of a side) where the legend hides
/// the fewest curve points (counting the
/// midpoints between epochs too, so that a line crossing it counts): a
/// loss that flattens out at the top of its panel, as a fine-tuning run's
/// does, leaves the upper right to the legend no more than a falling one.
fn legend_place(panel: &Panel, last: u64) -> SeriesLabelPosition {
    // The legend's box, as fractions of the plot: its rows and margins,
    // and its widest label.
    const WIDE: f64 = 0.55;
    const HIGH: f64 = 0.35;
    let span = (panel.y_range.end - panel.y_range.start).max(f64::MIN_POSITIVE);
    let at = |(epoch, y): (f64, f64)| (epoch / (last + 1) as f64, (y - panel.y_range.start) / span);
    let points: Vec<(f64, f64)> = panel
        .series
        .iter()
        .flat_map(|s| {
            let p: Vec<(f64, f64)> = s.points.iter().map(|&(e, y)| (e as f64, y)).collect();
            let mids: Vec<(f64, f64)> = p
                .windows(2)
                .map(|w| ((w[0].0 + w[1].0) / 2.0, (w[0].1 + w[1].1) / 2.0))
                .collect();
            p.into_iter().chain(mids)
        })
        .map(at)
        .collect();
    // Each place: its side, and the middle of its box's height.
    let hidden = |right: bool, middle: f64| {
        points
            .iter()
            .filter(|&&(x, y)| (if right { x > 1.0 - WIDE } else { x < WIDE }) && (y - middle).abs() < HIGH / 2.0)
            .count()
    };
    let (top, centre, bottom) = (1.0 - HIGH / 2.0, 0.5, HIGH / 2.0);
    [
        (SeriesLabelPosition::UpperRight, true, top),
        (SeriesLabelPosition::LowerRight, true, bottom),
        (SeriesLabelPosition::MiddleRight, true, centre),
        (SeriesLabelPosition::UpperLeft, false, top),
        (SeriesLabelPosition::LowerLeft, false, bottom),
        (SeriesLabelPosition::MiddleLeft, false, centre),
    ]
    .into_iter()
    .min_by_key(|&(_, right, middle)| hidden(right, middle))
    .map_or(SeriesLabelPosition::UpperRight, |(corner, ..)| corner)
}

impl fmt::Display for PlotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlotError::File(e) => e.fmt(f),
            PlotError::Draw { path, reason } => write!(f, "cannot draw `{}`: {reason}", path.display()),
        }
    }
}

impl std::error::Error for PlotError {}
