//! The panels `cnnc show` puts on its sheets, from arrays: a conv layer's
//! filters, an image, a layer's channels, outputs as bars, and a saliency
//! map with its overlay.

use super::colour::{Scale, mix};
use super::layout::grid;
use super::{Content, Panel, Tile};
use ndarray::{ArrayViewD, Axis, IxDyn};

/// Tiles' size in pixels: grids of few columns get larger tiles, so that
/// every grid is about as wide, between `least` and `most`.
fn target(columns: usize, least: u32, most: u32) -> u32 {
    (400 / columns.max(1) as u32).clamp(least, most)
}

/// The filters of an HWIO kernel under one diverging scale: one tile per
/// filter for one input channel; one colour tile per filter where the layer
/// reads an RGB image (`reads_rgb`); else a tile per (filter, input
/// channel), a row per filter.
pub fn filters(kernel: ArrayViewD<f32>, reads_rgb: bool) -> Panel {
    let [kh, kw, cin, cout] = [0, 1, 2, 3].map(|a| kernel.shape().get(a).copied().unwrap_or(1));
    let at = |h: usize, w: usize, c: usize, f: usize| kernel.get(IxDyn(&[h, w, c, f])).copied().unwrap_or(0.0);
    let (tiles, columns, scale, what): (Vec<Tile>, usize, Scale, &str) = if cin == 3 && reads_rgb {
        let scale = Scale::rgb(kernel.iter().copied());
        let tiles = (0..cout)
            .map(|f| Tile::from_fn(kh, kw, |h, w| scale.colour_rgb([0, 1, 2].map(|c| at(h, w, c, f)))))
            .collect();
        (tiles, grid(cout).0, scale, ", each as a colour image")
    } else if cin == 1 {
        let scale = Scale::diverging(kernel.iter().copied());
        let tiles = (0..cout)
            .map(|f| Tile::from_fn(kh, kw, |h, w| scale.colour(at(h, w, 0, f))))
            .collect();
        (tiles, grid(cout).0, scale, "")
    } else {
        let scale = Scale::diverging(kernel.iter().copied());
        let tiles = (0..cout * cin)
            .map(|i| Tile::from_fn(kh, kw, |h, w| scale.colour(at(h, w, i % cin, i / cin))))
            .collect();
        (tiles, cin, scale, ": a row per filter, a column per input channel")
    };
    Panel {
        heading: format!("{cout} filters of {kh}x{kw}x{cin}{what}"),
        content: Content::Tiles {
            tiles,
            columns,
            target: target(columns, 48, 128),
            scale,
        },
    }
}

/// One image [H, W, C] as a tile: colour for three channels, grey
/// otherwise (the channels' mean).
fn image_tile(image: ArrayViewD<f32>, scale: Scale) -> Tile {
    let [h, w, c] = [0, 1, 2].map(|a| image.shape().get(a).copied().unwrap_or(1));
    let at = |y: usize, x: usize, k: usize| image.get(IxDyn(&[y, x, k])).copied().unwrap_or(0.0);
    Tile::from_fn(h, w, |y, x| {
        if c == 3 {
            [0, 1, 2].map(|k| scale.colour(at(y, x, k))[0])
        } else {
            scale.colour((0..c).map(|k| at(y, x, k)).sum::<f32>() / c.max(1) as f32)
        }
    })
}

fn single(tile: Tile, scale: Scale) -> Content {
    Content::Tiles {
        tiles: vec![tile],
        columns: 1,
        target: 168,
        scale,
    }
}

/// An input image [H, W, C], on its own pixel scale.
pub fn image(heading: String, sample: ArrayViewD<f32>) -> Panel {
    let scale = Scale::pixels(sample.iter().copied());
    Panel {
        heading,
        content: single(image_tile(sample, scale), scale),
    }
}

/// Every channel of a layer's output [H, W, C], under one grey scale.
pub fn channels(heading: String, map: ArrayViewD<f32>) -> Panel {
    let [h, w, c] = [0, 1, 2].map(|a| map.shape().get(a).copied().unwrap_or(1));
    let scale = Scale::grey(map.iter().copied());
    let tiles = (0..c)
        .map(|k| {
            let channel = map.index_axis(Axis(2), k);
            Tile::from_fn(h, w, |y, x| scale.colour(channel[[y, x]]))
        })
        .collect();
    let columns = grid(c).0;
    Panel {
        heading,
        content: Content::Tiles {
            tiles,
            columns,
            target: target(columns, 84, 168),
            scale,
        },
    }
}

/// Outputs as bars labelled `labels`, `chosen` (else the largest) in
/// another colour; `probabilities` says what the axis measures.
pub fn bars(
    heading: String,
    values: Vec<f32>,
    labels: Vec<String>,
    chosen: Option<usize>,
    probabilities: bool,
) -> Panel {
    let top = (0..values.len()).max_by(|&a, &b| values[a].total_cmp(&values[b]));
    Panel {
        heading,
        content: Content::Bars {
            labels,
            values,
            highlight: chosen.or(top),
            axis: if probabilities { "probability" } else { "value" }.into(),
        },
    }
}

/// The saliency of an image [H, W, C] from its gradient [H, W, C]: the
/// largest magnitude over the channels, as Simonyan et al. draw it, alone
/// and over the image.
pub fn saliency(sample: ArrayViewD<f32>, gradient: ArrayViewD<f32>) -> [Panel; 2] {
    let [h, w] = [0, 1].map(|a| gradient.shape().get(a).copied().unwrap_or(1));
    let strength: Vec<f32> = (0..h * w)
        .map(|i| {
            let pixel = gradient.index_axis(Axis(0), i / w);
            pixel
                .index_axis(Axis(0), i % w)
                .iter()
                .fold(0.0f32, |m, v| m.max(v.abs()))
        })
        .collect();
    let heat = Scale::heat(strength.iter().copied());
    let (_, high) = heat.range();
    let map = Tile::from_fn(h, w, |y, x| heat.colour(strength[y * w + x]));
    let scale = Scale::pixels(sample.iter().copied());
    let grey = image_tile(sample, scale);
    // The image in dimmed grey, the heat laid over it as strongly as it is.
    let overlay = Tile::from_fn(h, w, |y, x| {
        let [r, g, b] = grey.pixels[y * w + x].map(u32::from);
        let base = mix([((r + g + b) / 3) as u8; 3], [0, 0, 0], 0.5);
        let s = strength[y * w + x];
        mix(base, heat.colour(s), s / high)
    });
    [
        Panel {
            heading: "|d score / d pixel|, largest over channels".into(),
            content: single(map, heat),
        },
        Panel {
            heading: "over the image".into(),
            content: single(overlay, heat),
        },
    ]
}
