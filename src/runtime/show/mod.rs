//! Pictures of what a model computes, as `cnnc show` draws them: a sheet
//! of panels, each a heading over a grid of upscaled tiles (filters,
//! activation maps, an image) with its shared, labelled colour scale, or a
//! bar chart of the outputs. Tiles are painted pixel for pixel, so a
//! weight or an activation is exactly one block of one colour; text and
//! charts are drawn with plotters in the bundled font.

pub mod colour;
pub mod layout;
pub mod panels;

use super::checkpoint::write_atomic;
use super::plot::{PlotError, bundled_font, png};
use colour::Scale;
use image::RgbImage;
use image::imageops::{self, FilterType};
use layout::{GAP, Rect};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// One picture of `height` x `width` pixels, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Tile {
    pub height: usize,
    pub width: usize,
    pub pixels: Vec<[u8; 3]>,
}

impl Tile {
    /// The tile whose pixel at (row, column) is `pixel(row, column)`.
    pub fn from_fn(height: usize, width: usize, pixel: impl Fn(usize, usize) -> [u8; 3]) -> Tile {
        let pixels = (0..height * width).map(|i| pixel(i / width, i % width)).collect();
        Tile { height, width, pixels }
    }
}

pub enum Content {
    /// Tiles of one size, `columns` to a row, under one colour scale.
    Tiles {
        tiles: Vec<Tile>,
        columns: usize,
        /// About how many pixels a tile's longer side grows to.
        target: u32,
        scale: Scale,
    },
    /// One bar per output, labelled; `highlight` drawn in another colour.
    Bars {
        labels: Vec<String>,
        values: Vec<f32>,
        highlight: Option<usize>,
        axis: String,
    },
}

pub struct Panel {
    pub heading: String,
    pub content: Content,
}

pub struct Sheet {
    pub title: String,
    pub panels: Vec<Panel>,
}

/// Where a panel's parts went.
#[derive(Clone, Debug, PartialEq)]
pub struct Placed {
    pub heading: (u32, u32),
    /// The grid's tiles, in order (none for a chart).
    pub tiles: Vec<Rect>,
    /// The colour bar beside the grid, or the chart.
    pub scale: Option<Rect>,
    pub chart: Option<Rect>,
}

/// Text and charts are drawn this many times larger, then scaled down.
const SUPERSAMPLE: u32 = 2;
const MARGIN: u32 = 16;
const TITLE: u32 = 20;
const TITLE_HEIGHT: u32 = 34;
const HEADING: u32 = 15;
const HEADING_HEIGHT: u32 = 24;
const LABEL: u32 = 12;
const SPACING: u32 = 28;
const BAR_GAP: u32 = 10;
const BAR_WIDTH: u32 = 14;
const BAR_LABELS: u32 = 64;
const MIN_BAR_HEIGHT: u32 = 96;
const CHART_HEIGHT: u32 = 240;

const BACKGROUND: [u8; 3] = [255, 255, 255];
/// Between and around tiles, so that white tiles keep their edges.
const GRID: [u8; 3] = [200, 200, 200];
const TEXT: RGBColor = RGBColor(30, 30, 30);
const AXIS: RGBColor = RGBColor(90, 90, 90);
const BAR: RGBColor = RGBColor(31, 119, 180);
const CHOSEN: RGBColor = RGBColor(255, 127, 14);

/// Text width in pixels, estimated from DejaVu Sans's average advance.
fn text_width(text: &str, size: u32) -> u32 {
    (text.chars().count() as f32 * size as f32 * 0.58).ceil() as u32
}

/// A panel's size and, relative to its corner, its parts.
fn place(panel: &Panel, corner: (u32, u32)) -> ((u32, u32), Placed) {
    let (x, y) = corner;
    let top = y + HEADING_HEIGHT;
    let heading_width = text_width(&panel.heading, HEADING);
    match &panel.content {
        Content::Tiles {
            tiles, columns, target, ..
        } => {
            let size = tiles.first().map_or((1, 1), |t| (t.height, t.width));
            let zoom = layout::zoom(size, *columns, *target);
            let (grid_w, grid_h) = layout::grid_size(tiles.len(), *columns, size, zoom);
            let rects = layout::tiles(tiles.len(), *columns, size, zoom, (x, top));
            let bar = Rect {
                x: x + grid_w + BAR_GAP,
                y: top + GAP,
                width: BAR_WIDTH,
                height: grid_h.saturating_sub(2 * GAP).max(MIN_BAR_HEIGHT),
            };
            let width = (bar.right() + BAR_LABELS - x).max(heading_width);
            let height = HEADING_HEIGHT + grid_h.max(bar.height + 2 * GAP);
            let placed = Placed {
                heading: corner,
                tiles: rects,
                scale: Some(bar),
                chart: None,
            };
            ((width, height), placed)
        }
        Content::Bars { labels, .. } => {
            let longest = labels.iter().map(|l| text_width(l, LABEL)).max().unwrap_or(0);
            let per_bar = longest.max(24) + 12;
            let width = (per_bar * labels.len() as u32 + 80).max(360).max(heading_width);
            let chart = Rect {
                x,
                y: top,
                width,
                height: CHART_HEIGHT,
            };
            let placed = Placed {
                heading: corner,
                tiles: Vec::new(),
                scale: None,
                chart: Some(chart),
            };
            ((width, HEADING_HEIGHT + CHART_HEIGHT), placed)
        }
    }
}

impl Sheet {
    /// The image's size and where each panel's parts go.
    pub fn layout(&self) -> ((u32, u32), Vec<Placed>) {
        let sizes: Vec<(u32, u32)> = self.panels.iter().map(|p| place(p, (0, 0)).0).collect();
        let (corners, (width, height)) = layout::flow(&sizes, (MARGIN, MARGIN + TITLE_HEIGHT), SPACING);
        let placed = self
            .panels
            .iter()
            .zip(corners)
            .map(|(p, corner)| place(p, corner).1)
            .collect();
        let width = width.max(MARGIN + text_width(&self.title, TITLE)) + MARGIN;
        ((width, height + MARGIN), placed)
    }

    /// The sheet as an image: text and charts drawn at twice the size and
    /// scaled down (plotters places glyphs up to a pixel off, which shows
    /// less at half a pixel), then the tiles and colour bars painted over
    /// at their exact pixels.
    pub fn render(&self) -> Result<RgbImage, String> {
        let family = bundled_font()?;
        let ((width, height), placed) = self.layout();
        let (big_w, big_h) = (width * SUPERSAMPLE, height * SUPERSAMPLE);
        let mut pixels = vec![BACKGROUND[0]; big_w as usize * big_h as usize * 3];
        {
            let backend = BitMapBackend::with_buffer(&mut pixels, (big_w, big_h));
            let root = backend.into_drawing_area();
            let text = |size: u32| (family, size * SUPERSAMPLE).into_font().color(&TEXT);
            let at = |x: u32, y: u32| ((x * SUPERSAMPLE) as i32, (y * SUPERSAMPLE) as i32);
            let failed = |e: DrawingAreaErrorKind<_>| e.to_string();
            root.draw_text(&self.title, &text(TITLE), at(MARGIN, MARGIN))
                .map_err(failed)?;
            for (panel, placed) in self.panels.iter().zip(&placed) {
                let (x, y) = placed.heading;
                root.draw_text(&panel.heading, &text(HEADING), at(x, y + 2))
                    .map_err(failed)?;
                match &panel.content {
                    Content::Tiles { scale, .. } => {
                        if let Some(bar) = placed.scale {
                            label_bar(&root, family, *scale, bar)?;
                        }
                    }
                    Content::Bars {
                        labels,
                        values,
                        highlight,
                        axis,
                    } => {
                        if let Some(chart) = placed.chart {
                            draw_bars(&root, family, chart, labels, values, *highlight, axis)?;
                        }
                    }
                }
            }
            root.present().map_err(failed)?;
        }
        let big = RgbImage::from_raw(big_w, big_h, pixels).ok_or("the drawing has the wrong size")?;
        let mut image = imageops::resize(&big, width, height, FilterType::Triangle);
        for (panel, at) in self.panels.iter().zip(&placed) {
            if let Content::Tiles { tiles, scale, .. } = &panel.content {
                paint_tiles(&mut image, tiles, &at.tiles);
                if let Some(bar) = at.scale {
                    paint_bar(&mut image, *scale, bar);
                }
            }
        }
        Ok(image)
    }

    /// Renders the sheet and writes it to `path` as a PNG, atomically.
    pub fn write(&self, path: &Path) -> Result<(), PlotError> {
        let draw = |reason: String| PlotError::Draw {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = png(&self.render().map_err(draw)?).map_err(draw)?;
        write_atomic(path, &bytes).map_err(PlotError::File)
    }
}

fn fill(image: &mut RgbImage, r: Rect, colour: [u8; 3]) {
    for y in r.y..r.bottom().min(image.height()) {
        for x in r.x..r.right().min(image.width()) {
            image.put_pixel(x, y, image::Rgb(colour));
        }
    }
}

/// Each tile's pixels as blocks of its rectangle, on the grid's colour.
fn paint_tiles(image: &mut RgbImage, tiles: &[Tile], rects: &[Rect]) {
    if let (Some(first), Some(last)) = (rects.first(), rects.iter().max_by_key(|r| (r.bottom(), r.right()))) {
        let right = rects.iter().map(Rect::right).max().unwrap_or(last.right());
        let grid = Rect {
            x: first.x - GAP,
            y: first.y - GAP,
            width: right + GAP - (first.x - GAP),
            height: last.bottom() + GAP - (first.y - GAP),
        };
        fill(image, grid, GRID);
    }
    for (tile, r) in tiles.iter().zip(rects) {
        let zoom = r.width / tile.width.max(1) as u32;
        for (i, &pixel) in tile.pixels.iter().enumerate() {
            let (row, column) = ((i / tile.width) as u32, (i % tile.width) as u32);
            let block = Rect {
                x: r.x + column * zoom,
                y: r.y + row * zoom,
                width: zoom,
                height: zoom,
            };
            fill(image, block, pixel);
        }
    }
}

/// The colour bar: the scale's highest value at the top, its lowest at the
/// bottom.
fn paint_bar(image: &mut RgbImage, scale: Scale, bar: Rect) {
    let (low, high) = scale.range();
    for row in 0..bar.height {
        let t = 1.0 - row as f32 / (bar.height - 1).max(1) as f32;
        let v = low + (high - low) * t;
        let c = match scale {
            Scale::Rgb { .. } => scale.colour_rgb([v; 3]),
            Scale::Diverging { .. } | Scale::Grey { .. } | Scale::Heat { .. } => scale.colour(v),
        };
        fill(
            image,
            Rect {
                y: bar.y + row,
                height: 1,
                ..bar
            },
            c,
        );
    }
    let frame = [120, 120, 120];
    for edge in [
        Rect { height: 1, ..bar },
        Rect {
            y: bar.bottom() - 1,
            height: 1,
            ..bar
        },
        Rect { width: 1, ..bar },
        Rect {
            x: bar.right() - 1,
            width: 1,
            ..bar
        },
    ] {
        fill(image, edge, frame);
    }
}

/// A value as a scale's label: three significant digits, no noise.
pub fn number(v: f32) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let magnitude = v.abs().log10().floor() as i32;
    if !(-3..4).contains(&magnitude) {
        return format!("{v:.2e}");
    }
    let decimals = (2 - magnitude).max(0) as usize;
    let text = format!("{v:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

fn label_bar(root: &DrawingArea<BitMapBackend, Shift>, family: &str, scale: Scale, bar: Rect) -> Result<(), String> {
    let (low, high) = scale.range();
    let style = (family, LABEL * SUPERSAMPLE).into_font().color(&AXIS);
    let x = (bar.right() + 5) * SUPERSAMPLE;
    let middle = (low + high) / 2.0;
    let marks = [
        (high, bar.y),
        (middle, bar.y + bar.height / 2 - LABEL / 2),
        (low, bar.bottom() - LABEL),
    ];
    for (v, y) in marks {
        let at = (x as i32, (y * SUPERSAMPLE) as i32);
        root.draw_text(&number(v), &style, at).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn draw_bars(
    root: &DrawingArea<BitMapBackend, Shift>,
    family: &str,
    at: Rect,
    labels: &[String],
    values: &[f32],
    highlight: Option<usize>,
    axis: &str,
) -> Result<(), String> {
    let s = SUPERSAMPLE;
    let area = root.clone().shrink((at.x * s, at.y * s), (at.width * s, at.height * s));
    let top = values.iter().copied().filter(|v| v.is_finite()).fold(0.0f32, f32::max);
    let bottom = values.iter().copied().filter(|v| v.is_finite()).fold(0.0f32, f32::min);
    let top = if top > bottom { top } else { bottom + 1.0 };
    let n = values.len() as u32;
    let mut chart = ChartBuilder::on(&area)
        .margin(6 * s)
        .x_label_area_size(28 * s)
        .y_label_area_size(56 * s)
        .build_cartesian_2d((0..n).into_segmented(), bottom..top * 1.05)
        .map_err(|e| e.to_string())?;
    let name = |v: &SegmentValue<u32>| match v {
        SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
        SegmentValue::Exact(_) | SegmentValue::Last => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(labels.len())
        .x_label_formatter(&name)
        .y_labels(6)
        .y_label_formatter(&|v| number(*v))
        .y_desc(axis)
        .label_style((family, LABEL * s).into_font().color(&AXIS))
        .axis_desc_style((family, LABEL * s).into_font().color(&AXIS))
        .axis_style(AXIS.stroke_width(s))
        .bold_line_style(RGBColor(232, 232, 232).stroke_width(s))
        .set_all_tick_mark_size(4 * s)
        .light_line_style(TRANSPARENT)
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(values.iter().enumerate().map(|(i, &v)| {
            let i = i as u32;
            let colour = if highlight == Some(i as usize) { CHOSEN } else { BAR };
            let mut bar = Rectangle::new(
                [(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), v)],
                colour.filled(),
            );
            bar.set_margin(0, 0, 4 * s, 4 * s);
            bar
        }))
        .map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_labels_have_three_significant_digits() {
        assert_eq!(number(0.0), "0");
        assert_eq!(number(1.0), "1");
        assert_eq!(number(-0.123456), "-0.123");
        assert_eq!(number(12.345), "12.3");
        assert_eq!(number(1234.5), "1234");
        assert_eq!(number(0.00012), "1.20e-4");
        assert_eq!(number(0.5), "0.5");
    }
}
