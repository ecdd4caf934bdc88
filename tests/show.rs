//! `cnnc show`: the pictures pixel by pixel (a designed vertical-edge
//! filter's map, a filter picture of literal weights), the geometry of
//! their grids, and the errors a user meets.

mod common;

use cnnc::parse::ast::Optimizer;
use cnnc::runtime::engine::{Engine, Graphs};
use cnnc::runtime::initial_weights;
use cnnc::runtime::jit::Compiled;
use cnnc::runtime::npy;
use cnnc::runtime::show::colour::{BLUE, RED, Scale, WHITE};
use cnnc::runtime::show::layout::{Rect, grid};
use cnnc::runtime::show::{Content, Panel, Sheet, panels};
use common::{Scratch, checked, cnnc, stderr, stdout};
use ndarray::{ArrayD, Axis, IxDyn};

/// A Sobel filter for vertical edges, dark to bright from left to right.
const VERTICAL: &str = "input 8x8x1\n\
    conv2d 1 3x3 padding=same use_bias=false activation=relu kernel_initializer=[-1, 0, 1, -2, 0, 2, -1, 0, 1]\n";

/// An 8x8 image, black in its left half and white in its right.
fn step() -> ArrayD<f32> {
    ArrayD::from_shape_fn(IxDyn(&[1, 8, 8, 1]), |d| f32::from(u8::from(d[2] >= 4)))
}

fn sheet(panels: Vec<Panel>) -> Sheet {
    Sheet {
        title: "test".into(),
        panels,
    }
}

fn pixel(image: &image::RgbImage, x: u32, y: u32) -> [u8; 3] {
    image.get_pixel(x, y).0
}

/// The block of tile pixel (row, column) in `r`, zoomed `zoom` times.
fn block(r: &Rect, zoom: u32, row: usize, column: usize) -> impl Iterator<Item = (u32, u32)> {
    let (x0, y0) = (r.x + column as u32 * zoom, r.y + row as u32 * zoom);
    (y0..y0 + zoom).flat_map(move |y| (x0..x0 + zoom).map(move |x| (x, y)))
}

#[test]
fn a_vertical_edge_filter_lights_up_along_a_vertical_edge_only() {
    let model = checked("vertical.cnn", VERTICAL);
    let graphs = Graphs::new(&model, &Optimizer::ADAM)
        .and_then(|g| g.probing(&model, &[0]))
        .unwrap();
    let mut weights = initial_weights::<f32>(&model, 0);
    let probed = Compiled::new(graphs).probe(&mut weights, step().view()).unwrap();
    let map = probed.layers[0].1.index_axis(Axis(0), 0).to_owned();
    let sheet = sheet(vec![panels::channels("conv2d".into(), map.view())]);
    let image = sheet.render().unwrap();
    let (_, placed) = sheet.layout();
    let tile = placed[0].tiles[0];
    let zoom = tile.width / 8;
    assert_eq!((tile.width, tile.height), (8 * zoom, 8 * zoom));
    for row in 0..8 {
        for column in 0..8 {
            let colours: Vec<[u8; 3]> = block(&tile, zoom, row, column)
                .map(|(x, y)| pixel(&image, x, y))
                .collect();
            assert!(
                colours.iter().all(|c| *c == colours[0]),
                "({row}, {column}) is not one colour"
            );
            let [level, _, _] = colours[0];
            if column == 3 || column == 4 {
                // Both columns beside the edge see all of it (4); the first
                // and last rows, padded, three quarters of it.
                let want = if row == 0 || row == 7 { 191 } else { 255 };
                assert_eq!(colours[0], [want; 3], "({row}, {column})");
            } else {
                assert_eq!(level, 0, "({row}, {column}) should be dark");
            }
        }
    }
}

#[test]
fn a_filter_picture_of_literal_weights_pixel_by_pixel() {
    let dir = Scratch::new("show-filters");
    // Two filters of 2x2: [[2, -1], [0, 1]] and [[-2, 0], [1, 2]], HWIO.
    let source = "input 5x5x1\nconv2d 2 2x2 kernel_initializer=[2, -2, -1, 0, 0, 1, 1, 2]\n";
    let model = dir.write("two.cnn", source.as_bytes());
    let out = dir.join("filters.png");
    let o = cnnc(&[
        "show",
        "filters",
        &model.display().to_string(),
        "-o",
        &out.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!("wrote the 2 filters of `conv2d` to {}\n", out.display())
    );
    let image = image::open(&out).unwrap().to_rgb8();

    let kernel = ArrayD::from_shape_vec(IxDyn(&[2, 2, 1, 2]), vec![2.0, -2.0, -1.0, 0.0, 0.0, 1.0, 1.0, 2.0]).unwrap();
    let panel = panels::filters(kernel.view(), false);
    let Content::Tiles { scale, .. } = panel.content else {
        panic!("filters are tiles");
    };
    assert_eq!(scale, Scale::Diverging { limit: 2.0 });
    let (_, placed) = sheet(vec![panels::filters(kernel.view(), false)]).layout();
    let tiles = &placed[0].tiles;
    assert_eq!(tiles.len(), 2);
    let half = |c: [u8; 3]| [0, 1, 2].map(|i| ((f32::from(c[i]) + 255.0) / 2.0).round() as u8);
    let want = [
        [[RED, half(BLUE)], [WHITE, half(RED)]],
        [[BLUE, WHITE], [half(RED), RED]],
    ];
    for (f, (tile, filter)) in tiles.iter().zip(want).enumerate() {
        let zoom = tile.width / 2;
        for (row, colours) in filter.iter().enumerate() {
            for (column, &colour) in colours.iter().enumerate() {
                for (x, y) in block(tile, zoom, row, column) {
                    assert_eq!(pixel(&image, x, y), colour, "filter {f} ({row}, {column}) at {x},{y}");
                }
            }
        }
    }
}

/// Tiles of one panel: as many as asked, in row-major order, `columns` to
/// a row, none overlapping, all inside the image.
fn assert_grid(panel: Panel, count: usize, columns: usize) {
    let sheet = sheet(vec![panel]);
    let ((width, height), placed) = sheet.layout();
    let tiles = &placed[0].tiles;
    assert_eq!(tiles.len(), count);
    let rows = count.div_ceil(columns);
    for (i, t) in tiles.iter().enumerate() {
        assert!(
            t.right() <= width && t.bottom() <= height,
            "tile {i} of {count} is outside"
        );
        assert_eq!(
            t.x,
            tiles[i % columns].x,
            "tile {i} of {count} is not in column {}",
            i % columns
        );
        assert_eq!(
            t.y,
            tiles[(i / columns) * columns].y,
            "tile {i} of {count} is not in row {}",
            i / columns
        );
        if let Some(next) = tiles.get(i + 1) {
            assert!(!t.overlaps(next));
            assert!(next.x > t.x || next.y > t.y, "tiles {i} and {} out of order", i + 1);
        }
    }
    let distinct_rows: std::collections::BTreeSet<u32> = tiles.iter().map(|t| t.y).collect();
    assert_eq!(distinct_rows.len(), rows);
    let image = sheet.render().unwrap();
    assert_eq!((image.width(), image.height()), (width, height));
}

#[test]
fn grids_of_1_3_and_64_channels_and_odd_counts() {
    for channels in [1, 3, 5, 7, 64] {
        let map = ArrayD::from_shape_fn(IxDyn(&[6, 6, channels]), |d| (d[0] + d[1] + d[2]) as f32);
        let (columns, rows) = grid(channels);
        assert!(columns * rows >= channels && columns * (rows - 1) < channels);
        assert_grid(panels::channels("maps".into(), map.view()), channels, columns);
    }
    // Filters: one tile per filter for one input channel, one colour tile
    // per filter of an RGB input, a row of 64 per filter deeper.
    for (cin, cout, rgb, count, columns) in [
        (1, 7, false, 7, grid(7).0),
        (3, 5, true, 5, grid(5).0),
        (3, 5, false, 15, 3),
        (64, 3, false, 192, 64),
    ] {
        let kernel = ArrayD::from_shape_fn(IxDyn(&[3, 3, cin, cout]), |d| d[2] as f32 - d[3] as f32);
        assert_grid(panels::filters(kernel.view(), rgb), count, columns);
    }
}

#[test]
fn an_rgb_first_layer_shows_each_filter_in_colour() {
    // One 1x1 filter that is all red: +1 red, -1 green, 0 blue.
    let kernel = ArrayD::from_shape_vec(IxDyn(&[1, 1, 3, 1]), vec![1.0, -1.0, 0.0]).unwrap();
    let sheet = sheet(vec![panels::filters(kernel.view(), true)]);
    let image = sheet.render().unwrap();
    let tile = sheet.layout().1[0].tiles[0];
    assert_eq!(
        pixel(&image, tile.x + tile.width / 2, tile.y + tile.height / 2),
        [255, 0, 128]
    );
}

fn refused(args: &[&str]) -> String {
    let o = cnnc(args);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    stderr(&o)
}

#[test]
fn bad_requests_are_named_errors() {
    let dir = Scratch::new("show-errors");
    let out = dir.join("x.png").display().to_string();
    let text = dir.write("notes.txt", b"not an image").display().to_string();
    let image = "models/data/examples/digit_3.png";
    let wrong = dir.join("wrong.npy");
    npy::write_f32(&wrong, &[3, 3], &[0.0; 9]).unwrap();
    let wrong = wrong.display().to_string();
    let cases: Vec<(&str, Vec<&str>)> = vec![
        (
            "unknown_layer",
            vec![
                "show",
                "maps",
                "models/mnist_cnn.cnn",
                image,
                "--layer",
                "conv2",
                "-o",
                &out,
            ],
        ),
        (
            "maps_of_a_dense_layer",
            vec![
                "show",
                "maps",
                "models/mnist_cnn.cnn",
                image,
                "--layer",
                "dense",
                "-o",
                &out,
            ],
        ),
        (
            "filters_of_a_pooling_layer",
            vec![
                "show",
                "filters",
                "models/mnist_cnn.cnn",
                "--layer",
                "max_pooling2d",
                "-o",
                &out,
            ],
        ),
        (
            "not_an_image",
            vec!["show", "saliency", "models/mnist_cnn.cnn", &text, "-o", &out],
        ),
        (
            "an_npy_of_another_shape",
            vec!["show", "maps", "models/mnist_cnn.cnn", &wrong, "-o", &out],
        ),
        (
            "unknown_class",
            vec![
                "show",
                "saliency",
                "models/mnist_cnn.cnn",
                image,
                "--class",
                "12",
                "-o",
                &out,
            ],
        ),
        (
            "a_model_of_vectors",
            vec!["show", "maps", "models/logistic.cnn", image, "-o", &out],
        ),
    ];
    for (name, args) in cases {
        let shown = refused(&args).replace(dir.path().to_str().unwrap(), "DIR");
        insta::assert_snapshot!(name, shown);
    }
    assert!(!dir.join("x.png").exists());
}

#[test]
fn maps_and_saliency_write_pictures_and_say_where() {
    let dir = Scratch::new("show-maps");
    let maps = dir.join("maps.png").display().to_string();
    let o = cnnc(&[
        "show",
        "maps",
        "models/edges.cnn",
        "models/data/examples/shapes.png",
        "-o",
        &maps,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!("wrote the maps of conv2d, max_pooling2d to {maps}\n")
    );
    let image = image::open(&maps).unwrap().to_rgb8();
    assert!(image.width() > 400 && image.height() > 200);

    let saliency = dir.join("saliency.png").display().to_string();
    let o = cnnc(&[
        "show",
        "saliency",
        "models/do_the_math.cnn",
        "--weights",
        "tests/fixtures/keras/do_the_math_keras.safetensors",
        "models/data/examples/digit_3.png",
        "--class",
        "7",
        "-o",
        &saliency,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("wrote the saliency of class 7 to {saliency}\n"));
    assert!(image::open(&saliency).is_ok());
}

/// The README's pictures of the course's exercise are what the commands it
/// shows make today.
#[test]
fn the_readme_pictures_of_edges_are_current() {
    let dir = Scratch::new("show-readme");
    let cases = [
        (vec!["show", "filters", "models/edges.cnn"], "edges_filters.png"),
        (
            vec!["show", "maps", "models/edges.cnn", "models/data/examples/shapes.png"],
            "edges_maps.png",
        ),
    ];
    for (mut args, picture) in cases {
        let out = dir.join(picture).display().to_string();
        args.extend(["-o", &out]);
        let o = cnnc(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        let made = image::open(&out).unwrap().to_rgb8();
        let committed = image::open(format!("models/data/examples/pictures/{picture}"))
            .unwrap()
            .to_rgb8();
        assert!(
            made == committed,
            "{picture} differs from what `cnnc {}` makes",
            args.join(" ")
        );
    }
}
