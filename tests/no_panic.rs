//! No input makes cnnc panic. A few thousand deterministic inputs
//! (byte-level and token-level mutations of the bundled and broken models,
//! token soup, and hand-picked extremes) go through `parse`, `shape::check`
//! and the rendering of their diagnostics or summary; mutated weights
//! (safetensors), `.npy`, IDX and PNG files go through their readers. Each
//! run generates the same inputs, so a failure names an input that
//! reproduces it. This is the stable-toolchain counterpart of the
//! cargo-fuzz target in tests/fuzz, small enough for every CI run.

use cnnc::diag::Diagnostics;
use cnnc::runtime::checkpoint::{self, Tensor};
use cnnc::runtime::{data, npy};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const SEED: u64 = 0x00c0_ffee_cafe_f00d;
const MUTANTS_PER_SOURCE: usize = 40;
const SOUPS: usize = 600;

/// SplitMix64: small, fast and good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// Words of the language: layers, arguments, values and settings.
const NAMES: &[&str] = &[
    "model",
    "input",
    "train",
    "conv2d",
    "dense",
    "maxpool2d",
    "max_pooling2d",
    "flatten",
    "dropout",
    "batchnorm",
    "batch_normalization",
    "activation",
    "filters",
    "kernel_size",
    "kernel",
    "strides",
    "padding",
    "units",
    "rate",
    "pool_size",
    "use_bias",
    "kernel_initializer",
    "bias_initializer",
    "name",
    "trainable",
    "momentum",
    "epsilon",
    "center",
    "scale",
    "relu",
    "softmax",
    "sigmoid",
    "tanh",
    "linear",
    "same",
    "valid",
    "true",
    "false",
    "zeros",
    "ones",
    "glorot_uniform",
    "he_normal",
    "data",
    "loss",
    "optimizer",
    "batch_size",
    "batch",
    "epochs",
    "seed",
    "validation_split",
    "patience",
    "sgd",
    "adam",
    "learning_rate",
    "lr",
    "beta_1",
    "beta_2",
    "nesterov",
    "categorical_crossentropy",
    "binary_crossentropy",
    "mean_squared_error",
    "mnist10k",
    "conv2",
    "lstm",
];

/// Numbers at the edges: zero, negatives, huge, not finite, malformed.
const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "1e12",
    "1e400",
    "-1e400",
    "99999999999999999999999",
    "18446744073709551616",
    "2147483647",
    "2147483648",
    "4294967296",
    "0.5",
    "1.0",
    "1.5",
    "-0",
    "-0.0",
    ".5",
    "5.",
    "1e-400",
    "3x3",
    "0x0",
    "1x0",
    "2147483647x2147483647",
    "99999999999999999999x1",
    "1x1x1x1x1",
    "28x28x1",
    "3y3",
];

const PUNCTUATION: &[&str] = &[
    "=", "[", "]", "{", "}", ",", "\"", "#", "\n", "\r\n", "\r", " ", "\t", "x", "-", ".", "\u{a0}", "\u{feff}", "×",
    "é", "$", "'", ":",
];

/// Bytes worth inserting: structure, line ends, and pieces of multi-byte
/// characters (the input is read lossily, so these become U+FFFD or real
/// non-ASCII text).
const BYTES: &[u8] = b"[]{}=,\"#\n\r\t x0123456789-.e_\xc2\xa0\xe2\x80\xef\xbb\xbf\xff";

fn sources() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for dir in ["models", "tests/bad"] {
        let mut paths: Vec<_> = std::fs::read_dir(Path::new(ROOT).join(dir))
            .expect("source directory exists")
            .map(|e| e.expect("readable directory").path())
            .filter(|p| p.extension().is_some_and(|e| e == "cnn"))
            .collect();
        paths.sort();
        for path in paths {
            let name = format!("{dir}/{}", path.file_name().unwrap_or_default().to_string_lossy());
            out.push((name, std::fs::read(&path).expect("readable model")));
        }
    }
    out
}

fn mutate_bytes(rng: &mut Rng, src: &[u8]) -> Vec<u8> {
    let mut b = src.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(b.len() + 1);
        match rng.below(5) {
            0 if at < b.len() => b[at] ^= 1 << rng.below(8),
            1 if at < b.len() => {
                let end = (at + 1 + rng.below(16)).min(b.len());
                b.drain(at..end);
            }
            2 => {
                for _ in 0..1 + rng.below(4) {
                    b.insert(at, rng.pick(BYTES));
                }
            }
            3 if at < b.len() => {
                let end = (at + 1 + rng.below(32)).min(b.len());
                let piece = b[at..end].to_vec();
                let to = rng.below(b.len() + 1);
                b.splice(to..to, piece);
            }
            _ => {
                let to = rng.below(b.len() + 1);
                b.splice(to..to, rng.pick(NUMBERS).bytes());
            }
        }
    }
    b
}

/// Splits text into words and the separators between them, so that words
/// can be replaced while the rest of the file stays as it was.
fn tokens(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        if c.is_alphanumeric() || "_-.".contains(c) {
            word.push(c);
        } else {
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            out.push(c.to_string());
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

fn mutate_tokens(rng: &mut Rng, src: &str) -> String {
    let mut t = tokens(src);
    if t.is_empty() {
        return rng.pick(NAMES).to_string();
    }
    for _ in 0..1 + rng.below(3) {
        let i = rng.below(t.len());
        let starts_with_digit = t[i].starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.');
        match rng.below(6) {
            0 | 1 if starts_with_digit => t[i] = rng.pick(NUMBERS).to_string(),
            0 | 1 => t[i] = rng.pick(NAMES).to_string(),
            2 => {
                let j = rng.below(t.len());
                t.swap(i, j);
            }
            3 => t[i] = rng.pick(PUNCTUATION).to_string(),
            4 => {
                // Duplicate or delete a whole line.
                let text = t.concat();
                let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
                let l = rng.below(lines.len());
                if rng.below(2) == 0 {
                    lines.insert(l, lines[l]);
                } else {
                    lines.remove(l);
                }
                t = tokens(&lines.concat());
                if t.is_empty() {
                    return String::new();
                }
            }
            _ => t.insert(i, format!(" {}={}", rng.pick(NAMES), rng.pick(NUMBERS))),
        }
    }
    t.concat()
}

fn soup(rng: &mut Rng) -> String {
    let mut s = String::new();
    for _ in 0..rng.below(60) {
        match rng.below(4) {
            0 => s.push_str(rng.pick(NAMES)),
            1 => s.push_str(rng.pick(NUMBERS)),
            2 => s.push_str(rng.pick(PUNCTUATION)),
            _ => s.push(' '),
        }
        if rng.below(6) == 0 {
            s.push('\n');
        }
    }
    s
}

/// Inputs no random walk is likely to reach.
fn extremes() -> Vec<String> {
    let mut out: Vec<String> = [
        "",
        "\n",
        "\r",
        "#",
        "\u{feff}",
        "input",
        "input 784",
        "train {",
        "}",
        "{",
        "input 784\ndense 10 activation=",
        "input 2147483647x2147483647x2147483647\nflatten\ndense 1",
        "input 2147483647\ndense 2147483647",
        "input 65536x65536x1\nconv2d 2147483647 2147483647x2147483647 padding=same",
        "input 4x4x3\nconv2d 2147483647 2147483647x2147483647 padding=same strides=2147483647",
        "input 4x4x3\nmaxpool2d 2147483647x2147483647 strides=2147483647 padding=same\nflatten\ndense 1",
        "input 1x1x1\nconv2d 1 1 strides=2147483647\nflatten\ndense 1 kernel_initializer=[]",
        "input 2\ndense 1 kernel_initializer=[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]",
        "input 2\ndense 1 kernel_initializer=1e308 bias_initializer=[-1e308]",
        "input 28x28x1\nbatchnorm momentum=1 epsilon=1e-320\nflatten\ndense 1",
        "model\nmodel a\nmodel b\ninput 1\ndense 1\ntrain {\n}\ntrain {\n}",
        "input 784\ndense 10\ntrain {\n  optimizer adam momentum=1 beta_1=2 nesterov=yes lr=-1\n}",
        "input 784\ndense 10\ntrain { optimizer }",
        "input 784\ndense 10 \"unclosed",
        "input 784\ndense 10 name=\"\" name=\"\"",
        "input 784\ndense \"a\u{3000}\"=\n",
        "input 784\ndense 10 name=\u{3000}=\n",
        "input 784\r\ndense 10 activation=\r\n",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    out.push(format!("input 2\ndense 1 kernel_initializer={}", "[".repeat(10_000)));
    out.push(format!(
        "input 2\ndense 1 kernel_initializer={}1{}",
        "[".repeat(17),
        "]".repeat(17)
    ));
    out.push(format!("input 2\n{}", "{".repeat(10_000)));
    out.push(format!("input 2\ntrain {{\n{}}}", "epochs 1\n".repeat(2_000)));
    out.push(format!("input 2\n{}", "dense 1\n".repeat(3_000)));
    out.push("x".repeat(100_000));
    // Longer than `format!`'s widest width (65,535): the summary once
    // panicked aligning its columns to it.
    out.push(format!(
        "input 2\ndense 1 activation=sigmoid name={}",
        "a".repeat(70_000)
    ));
    for name in ["\"\"", "\"..\"", "\"../../x\"", "\"/tmp/x\"", "\"a\\\\b\"", "\"c:x\""] {
        out.push(format!("model {name}\ninput 2\ndense 1"));
    }
    out
}

/// Runs the front end on one input and checks what it reports: rendering
/// never panics, every error renders, and every span lies inside the text on
/// character boundaries.
fn front_end(name: &str, src: &str) -> Result<(), String> {
    let result = cnnc::parse::parse(name, src).and_then(|model| cnnc::shape::check(model, name, src));
    match result {
        Ok(checked) => {
            // Lowering, differentiation, fusion and memory planning too: a
            // model `check` accepts must compile.
            let arena = cnnc::runtime::jit::arenas(&checked, Default::default())
                .map_err(|e| format!("accepted, but the pipeline fails: {e}"))?;
            let text = cnnc::summary::text(&checked, Some(&arena));
            if !text.starts_with("Model: ") {
                return Err(format!("accepted, but the summary reads {text:?}"));
            }
            Ok(())
        }
        Err(diagnostics) => reported(&diagnostics, src),
    }
}

fn reported(d: &Diagnostics, src: &str) -> Result<(), String> {
    if d.errors.is_empty() {
        return Err("refused without an error".to_string());
    }
    for e in &d.errors {
        for span in std::iter::once(e.span).chain(e.related.iter().map(|(s, _)| *s)) {
            let inside = span.start <= span.end && span.end <= src.len();
            if !inside || !src.is_char_boundary(span.start) || !src.is_char_boundary(span.end) {
                return Err(format!("`{}` has a span {span:?} outside the text", e.message));
            }
        }
    }
    let text = d.render();
    if !text.starts_with("error") {
        return Err(format!("renders as {text:?}"));
    }
    Ok(())
}

#[test]
fn the_front_end_never_panics() {
    let mut rng = Rng(SEED);
    let mut inputs: Vec<(String, String)> = Vec::new();
    for (name, bytes) in sources() {
        for i in 0..MUTANTS_PER_SOURCE {
            let mutant = if i % 2 == 0 {
                String::from_utf8_lossy(&mutate_bytes(&mut rng, &bytes)).into_owned()
            } else {
                mutate_tokens(&mut rng, &String::from_utf8_lossy(&bytes))
            };
            inputs.push((format!("{name} mutant {i}"), mutant));
        }
    }
    for i in 0..SOUPS {
        inputs.push((format!("soup {i}"), soup(&mut rng)));
    }
    for (i, text) in extremes().into_iter().enumerate() {
        inputs.push((format!("extreme {i}"), text));
    }
    assert!(inputs.len() >= 2_000, "only {} inputs", inputs.len());

    let mut failures = Vec::new();
    for (what, src) in &inputs {
        let outcome = catch_unwind(AssertUnwindSafe(|| front_end("fuzz.cnn", src)));
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(problem)) => failures.push(format!("{what}: {problem}\ninput: {src:?}")),
            Err(_) => failures.push(format!("{what}: panicked\ninput: {src:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} inputs failed; the first ones:\n\n{}",
        failures.len(),
        inputs.len(),
        failures.iter().take(5).cloned().collect::<Vec<_>>().join("\n\n")
    );
}

/// Overwrites a header-sized field with a value a reader must not trust:
/// a length, count or dimension of zero, one, or far past the file.
fn mutate_field(rng: &mut Rng, src: &[u8]) -> Vec<u8> {
    const VALUES: [u64; 6] = [0, 1, 0x7fff_ffff, 0xffff_ffff, 1 << 40, u64::MAX];
    let mut b = src.to_vec();
    let value = rng.pick(&VALUES);
    let (bytes, width) = if rng.below(2) == 0 {
        (value.to_le_bytes(), 8)
    } else {
        (value.to_be_bytes(), 8)
    };
    let width = if rng.below(2) == 0 { 4 } else { width };
    let at = rng.below(src.len().min(40).saturating_sub(width).max(1));
    let end = (at + width).min(b.len());
    b[at..end].copy_from_slice(&bytes[8 - (end - at)..]);
    b
}

/// One file format: seed files, and how its reader takes a file.
struct Reader {
    name: &'static str,
    file: &'static str,
    seeds: Vec<Vec<u8>>,
    read: fn(&Path) -> Result<(), String>,
}

fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = magic.to_be_bytes().to_vec();
    for d in dims {
        b.extend(d.to_be_bytes());
    }
    b.extend(data);
    b
}

const IMAGES: usize = 6;

fn readers(scratch: &Path) -> Vec<Reader> {
    let weights = scratch.join("seed.safetensors");
    let tensors = [
        Tensor {
            name: "dense/kernel".into(),
            shape: vec![4, 2],
            data: (0..8).map(|i| i as f32 / 8.0).collect(),
        },
        Tensor {
            name: "dense/bias".into(),
            shape: vec![2],
            data: vec![0.5, -0.5],
        },
    ];
    let metadata = [("format".to_string(), "pt".to_string())].into_iter().collect();
    checkpoint::save(&weights, &tensors, &metadata).expect("the seed weights are written");
    let array = scratch.join("seed.npy");
    npy::write_f32(&array, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).expect("the seed array is written");
    let mut png = Vec::new();
    image::GrayImage::from_fn(4, 4, |x, y| image::Luma([(16 * (x + 4 * y)) as u8]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("the seed image is encoded");
    let pixels: Vec<u8> = (0..IMAGES * 16).map(|i| (i * 7) as u8).collect();
    vec![
        Reader {
            name: "safetensors",
            file: "w.safetensors",
            seeds: vec![std::fs::read(&weights).expect("the seed weights are read")],
            read: |path| {
                let expected: [(&str, &[usize]); 2] = [("dense/kernel", &[4, 2]), ("dense/bias", &[2])];
                checkpoint::inspect(path, &expected)
                    .map(drop)
                    .map_err(|e| e.to_string())
            },
        },
        Reader {
            name: "npy",
            file: "x.npy",
            seeds: vec![std::fs::read(&array).expect("the seed array is read")],
            read: |path| npy::read_f32(path).map(drop).map_err(|e| e.to_string()),
        },
        Reader {
            name: "idx",
            file: "train-images-idx3-ubyte",
            seeds: vec![idx(0x0803, &[IMAGES as u32, 4, 4], &pixels)],
            read: |path| {
                let dir = path.parent().expect("in the scratch folder");
                let labels: Vec<u8> = (0..IMAGES as u8).collect();
                std::fs::write(
                    dir.join("train-labels-idx1-ubyte"),
                    idx(0x0801, &[IMAGES as u32], &labels),
                )
                .map_err(|e| e.to_string())?;
                data::load(
                    dir.to_str().expect("a UTF-8 path"),
                    Path::new("."),
                    &[4, 4, 1],
                    10,
                    None,
                    &data::Selection::default(),
                )
                .map(drop)
                .map_err(|e| e.to_string())
            },
        },
        Reader {
            name: "png",
            file: "digit.png",
            seeds: vec![png],
            read: |path| {
                let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
                data::image(&bytes, path, &[4, 4, 1])
                    .map(drop)
                    .map_err(|e| e.to_string())
            },
        },
    ]
}

const MUTANTS_PER_READER: usize = 300;

#[test]
fn the_file_readers_never_panic() {
    let scratch = std::env::temp_dir().join(format!("cnnc-readers-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).expect("a scratch folder");
    let mut rng = Rng(SEED);
    let mut failures = Vec::new();
    let mut refused = 0;
    let mut total = 0;
    for reader in readers(&scratch) {
        let dir = scratch.join(reader.name);
        std::fs::create_dir_all(&dir).expect("a folder per reader");
        let path = dir.join(reader.file);
        for seed in &reader.seeds {
            std::fs::write(&path, seed).expect("the seed is written");
            assert_eq!((reader.read)(&path), Ok(()), "the {} seed itself is read", reader.name);
            for i in 0..MUTANTS_PER_READER {
                let mutant = match i % 3 {
                    0 => mutate_field(&mut rng, seed),
                    1 => mutate_bytes(&mut rng, seed),
                    _ => seed[..rng.below(seed.len())].to_vec(),
                };
                std::fs::write(&path, &mutant).expect("the mutant is written");
                total += 1;
                match catch_unwind(AssertUnwindSafe(|| (reader.read)(&path))) {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => refused += 1,
                    Err(_) => failures.push(format!("{} mutant {i} panicked\ninput: {mutant:?}", reader.name)),
                }
            }
        }
    }
    std::fs::remove_dir_all(&scratch).ok();
    assert!(
        failures.is_empty(),
        "{} of {total} files made a reader panic; the first ones:\n\n{}",
        failures.len(),
        failures.iter().take(3).cloned().collect::<Vec<_>>().join("\n\n")
    );
    // Most mutants are damaged beyond reading: the readers did look.
    assert!(refused > total / 2, "only {refused} of {total} mutants were refused");
}
