//! Helpers shared by the integration tests.
#![allow(dead_code)]

use cnnc::ir::{Binary, Builder, Graph, NodeId, Op, Origin, Output, Shape, VarDecl};
use cnnc::runtime::checkpoint::Tensor;
use cnnc::runtime::data::DataError;
use cnnc::shape::{Checked, Role};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The `.cnn` files of `models/`, sorted.
pub fn models() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir("models")
        .expect("models/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "cnn"))
        .collect();
    files.sort();
    files
}

pub fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Parses and checks a model given as text.
pub fn checked(name: &str, source: &str) -> Checked {
    let model = cnnc::parse::parse(name, source).unwrap_or_else(|d| panic!("{d}"));
    cnnc::shape::check(model, name, source).unwrap_or_else(|d| panic!("{d}"))
}

pub fn checked_file(path: &Path) -> Checked {
    let source = std::fs::read_to_string(path).expect("readable model");
    checked(&path.display().to_string(), &source)
}

/// Runs the cnnc binary from the repository root.
pub fn cnnc(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cnnc"))
        .args(args)
        .output()
        .expect("cnnc runs")
}

pub fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A scratch folder, unique per process and call, removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    /// A fresh folder, unique per process and call, so parallel tests and
    /// concurrent runs never share one.
    pub fn new(name: &str) -> Scratch {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let unique = format!(
            "cnnc-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(unique);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `bytes` at `relative`, creating its folders.
    pub fn write(&self, relative: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, bytes).unwrap();
        path
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Writes `n` noisy 8x8 PNGs of a colour into `dir`.
pub fn squares(dir: &Path, n: usize, rgb: [u8; 3], seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = cnnc::runtime::rng::Rng::new(seed);
    for i in 0..n {
        let img = image::RgbImage::from_fn(8, 8, |_, _| {
            image::Rgb(rgb.map(|c| (f64::from(c) * 0.7 + rng.uniform() * 70.0) as u8))
        });
        img.save(dir.join(format!("{i}.png"))).unwrap();
    }
}

/// The rendered error names `file` (a path ending) and says `what`.
pub fn assert_error(error: &DataError, file: &str, what: &str) {
    let shown = error.to_string();
    let first = shown.lines().next().unwrap_or_default();
    // The message only: the command line adds `error: `.
    assert!(!first.starts_with("error"), "{shown}");
    let named = first.split(": ").next().unwrap_or_default();
    assert!(named.ends_with(file), "error does not name {file}:\n{shown}");
    assert!(shown.contains(what), "error does not say {what:?}:\n{shown}");
}

/// `loss = sum(op(vars) * probe)`: one op alone, fed by trainable
/// variables of `shapes` (`x0`, `x1`, ...), under a fixed variable `probe`
/// (the last) so that every output element weighs differently. The
/// prediction is the op's result.
pub fn probed(name: &str, shapes: &[&[usize]], op: impl Fn(&mut Builder, &[NodeId]) -> NodeId) -> Graph {
    let mut g = Graph::default();
    for (i, s) in shapes.iter().enumerate() {
        g.vars.push(VarDecl {
            name: format!("x{i}"),
            shape: s.to_vec(),
            trainable: true,
        });
    }
    let origin = Origin {
        what: name.into(),
        ..Origin::default()
    };
    let mut b = Builder::new(&mut g, origin);
    let xs: Vec<NodeId> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| b.shaped(Op::Var(i), &[], Shape::fixed(s)).unwrap())
        .collect();
    let y = op(&mut b, &xs);
    let out_shape = b.shape(y).sizes().expect("fixed shapes in op tests");
    let probe_id = b.graph.vars.len();
    b.graph.vars.push(VarDecl {
        name: "probe".into(),
        shape: out_shape.clone(),
        trainable: false,
    });
    let probe = b.shaped(Op::Var(probe_id), &[], Shape::fixed(&out_shape)).unwrap();
    let weighted = b.binary(Binary::Mul, y, probe).unwrap();
    let summed = b.sum(weighted, (0..out_shape.len()).collect()).unwrap();
    let loss = b.reshape(summed, Shape::scalar()).unwrap();
    g.outputs = vec![(Output::Loss, loss), (Output::Prediction, y)];
    g
}

/// SplitMix64 draws in [0, 1).
pub struct Rng(pub u64);

impl Rng {
    pub fn uniform(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    }

    pub fn between(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.uniform()
    }
}

/// Random weights in the model's order: kernels scaled by their fan-in so
/// that activations stay near 1, batchnorm statistics away from 0 and 1.
pub fn random_weights(model: &Path, rng: &mut Rng) -> Vec<Tensor> {
    checked_file(model)
        .weights()
        .map(|w| {
            let n = w.shape.iter().product::<usize>();
            let fan_in = w.shape[..w.shape.len().saturating_sub(1)]
                .iter()
                .product::<usize>()
                .max(1);
            let limit = (3.0 / fan_in as f32).sqrt();
            let data = (0..n)
                .map(|_| match w.role {
                    Role::Kernel => rng.between(-limit, limit),
                    Role::Bias | Role::Beta => rng.between(-0.2, 0.2),
                    Role::Gamma => rng.between(0.5, 1.5),
                    Role::MovingMean => rng.between(-0.5, 0.5),
                    Role::MovingVariance => rng.between(0.3, 2.0),
                })
                .collect();
            Tensor {
                name: w.name.clone(),
                shape: w.shape.clone(),
                data,
            }
        })
        .collect()
}
