//! `cnnc show filters|maps|saliency`: pictures of a model's filters, of
//! what its layers compute from an image, and of which pixels move a
//! class's score, each written as a PNG. The weights come from `--weights`,
//! else the model's initial ones (its literal `kernel_initializer` values,
//! say).

use super::common::{
    ConvArgs, EngineKind, Failure, SetArgs, Trained, engine, fail, ignored_note, layer_index, load, trained_or_initial,
};
use super::predict::inputs;
use crate::parse::ast::{Activation, LayerKind};
use crate::runtime::show::{Panel, Sheet, panels};
use crate::shape::Checked;
use clap::Subcommand;
use ndarray::{ArrayD, Axis};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum ShowArgs {
    /// Every filter of a conv layer as a grid of pixel tiles.
    Filters {
        #[command(flatten)]
        model: ModelArgs,
        /// The conv layer [default: the first]
        #[arg(long)]
        layer: Option<String>,
        /// Where to write the PNG.
        #[arg(short, long, default_value = "filters.png")]
        output: PathBuf,
    },
    /// An image, every channel of chosen layers, and the output as a bar chart.
    Maps {
        #[command(flatten)]
        model: ModelArgs,
        /// An image (PNG, JPEG) or a `.npy` of one sample, as `cnnc predict` reads them.
        image: PathBuf,
        /// A layer with an image output (repeat for several) [default: every
        /// conv, pooling and activation layer of images]
        #[arg(long = "layer", value_name = "NAME")]
        layers: Vec<String>,
        /// Where to write the PNG.
        #[arg(short, long, default_value = "maps.png")]
        output: PathBuf,
    },
    /// The gradient of a class's score with respect to the image's pixels.
    Saliency {
        #[command(flatten)]
        model: ModelArgs,
        /// An image (PNG, JPEG) or a `.npy` of one sample, as `cnnc predict` reads them.
        image: PathBuf,
        /// The class, by number or by name [default: the most likely]
        #[arg(long)]
        class: Option<String>,
        /// Where to write the PNG.
        #[arg(short, long, default_value = "saliency.png")]
        output: PathBuf,
    },
}

#[derive(clap::Args)]
pub struct ModelArgs {
    /// The model file (.cnn).
    file: PathBuf,
    #[command(flatten)]
    set: SetArgs,
    /// Trained weights (safetensors with Keras names) [default: the model's
    /// initial weights, seed 0]
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Accept a weights file holding tensors the model lacks: they are
    /// ignored, and listed.
    #[arg(long)]
    allow_extra: bool,
    #[arg(long, value_enum, default_value_t = EngineKind::Jit)]
    engine: EngineKind,
    #[command(flatten)]
    conv: ConvArgs,
}

/// A loaded model with its weights, and the note its loading left.
struct Loaded {
    checked: Checked,
    trained: Trained,
    note: String,
    source: String,
}

fn open(args: &ModelArgs) -> Result<Loaded, Failure> {
    let checked = load(&args.file, &args.set)?;
    let trained = trained_or_initial(&checked, args.weights.as_deref(), args.allow_extra)?;
    let (note, source) = match &args.weights {
        Some(w) => (ignored_note(w, &trained.ignored), format!("weights {}", w.display())),
        None => (String::new(), "initial weights".to_string()),
    };
    Ok(Loaded {
        checked,
        trained,
        note,
        source,
    })
}

pub fn run(args: ShowArgs) -> Result<String, Failure> {
    match args {
        ShowArgs::Filters { model, layer, output } => filters(&model, layer.as_deref(), &output),
        ShowArgs::Maps {
            model,
            image,
            layers,
            output,
        } => maps(&model, &image, &layers, &output),
        ShowArgs::Saliency {
            model,
            image,
            class,
            output,
        } => saliency(&model, &image, class.as_deref(), &output),
    }
}

/// `name (Class)`, as Keras's summary names a layer.
fn titled(checked: &Checked, layer: usize) -> String {
    let l = &checked.model.layers[layer];
    format!("{} ({})", l.name, l.kind.keras_class())
}

fn dims(shape: &[usize]) -> String {
    shape.iter().map(usize::to_string).collect::<Vec<_>>().join("x")
}

fn filters(args: &ModelArgs, layer: Option<&str>, output: &Path) -> Result<String, Failure> {
    let loaded = open(args)?;
    let checked = &loaded.checked;
    let convs: Vec<usize> = (0..checked.model.layers.len())
        .filter(|&i| {
            matches!(
                checked.model.layers[i].kind,
                LayerKind::Conv2D(_) | LayerKind::DepthwiseConv2D(_)
            )
        })
        .collect();
    let names = |list: &[usize]| {
        let names: Vec<&str> = list.iter().map(|&i| checked.model.layers[i].name.as_str()).collect();
        names.join(", ")
    };
    let index = match layer {
        Some(name) => layer_index(checked, name)?,
        None => *convs
            .first()
            .ok_or_else(|| Failure::new("the model has no conv2d or depthwiseconv2d layer, so no filters to draw"))?,
    };
    if !convs.contains(&index) {
        return Err(Failure::new(format!(
            "`{}` is a {} layer: filters are drawn for conv2d and depthwiseconv2d layers\n  = help: the model's are: {}",
            checked.model.layers[index].name,
            checked.model.layers[index].kind.keras_class(),
            if convs.is_empty() { "none".into() } else { names(&convs) }
        )));
    }
    let name = &checked.model.layers[index].name;
    let kernel = weight(&loaded.trained, &format!("{name}/kernel"))?;
    let reads_rgb = index == 0 && checked.model.input.shape.get(2) == Some(&3);
    let sheet = Sheet {
        title: format!(
            "{}: filters of {} ({})",
            checked.model.name,
            titled(checked, index),
            loaded.source
        ),
        panels: vec![panels::filters(kernel.view(), reads_rgb)],
    };
    let count = kernel.shape().get(3).copied().unwrap_or(0);
    sheet.write(output).map_err(fail)?;
    Ok(format!(
        "{}wrote the {count} filters of `{name}` to {}\n",
        loaded.note,
        output.display()
    ))
}

/// A weight of the model by its Keras name.
fn weight<'a>(trained: &'a Trained, name: &str) -> Result<&'a ArrayD<f32>, Failure> {
    trained.graphs.train.vars[..trained.state.weights]
        .iter()
        .position(|v| v.name == name)
        .map(|i| &trained.state.values[i])
        .ok_or_else(|| Failure::new(format!("the model has no weight `{name}`")))
}

/// The one sample of an image or a `.npy` file, as a batch of one.
fn one_image(checked: &Checked, path: &Path) -> Result<ArrayD<f32>, Failure> {
    let (batch, _) = inputs(std::slice::from_ref(&path.to_path_buf()), &checked.model.input.shape)?;
    match batch.len_of(Axis(0)) {
        1 => Ok(batch),
        n => Err(Failure::new(format!(
            "{}: holds {n} samples; `cnnc show` draws one\n  = help: save the one to draw as a .npy of the model's input shape",
            path.display()
        ))),
    }
}

/// The one image of `path` for a model that reads images, and its panel.
fn input(checked: &Checked, path: &Path) -> Result<(ArrayD<f32>, Panel), Failure> {
    let shape = &checked.model.input.shape;
    if shape.len() != 3 {
        return Err(Failure::new(format!(
            "the model reads vectors of {}, not images: there is no picture to draw",
            dims(shape)
        )));
    }
    let batch = one_image(checked, path)?;
    let panel = panels::image(format!("input: {}", dims(shape)), batch.index_axis(Axis(0), 0));
    Ok((batch, panel))
}

/// Layers that `maps` draws by default: conv, pooling and activation layers
/// whose outputs are images.
fn drawable(checked: &Checked, i: usize) -> bool {
    let kind = &checked.model.layers[i].kind;
    let image = checked.layers[i].output.len() == 3;
    image
        && matches!(
            kind,
            LayerKind::Conv2D(_)
                | LayerKind::DepthwiseConv2D(_)
                | LayerKind::MaxPool2D(_)
                | LayerKind::AvgPool2D(_)
                | LayerKind::Activation(_)
                | LayerKind::LeakyRelu { .. }
                | LayerKind::Elu { .. }
        )
}

fn maps(args: &ModelArgs, image: &Path, names: &[String], output: &Path) -> Result<String, Failure> {
    let loaded = open(args)?;
    let checked = &loaded.checked;
    let mut layers = Vec::with_capacity(names.len());
    for name in names {
        let i = layer_index(checked, name)?;
        let shape = &checked.layers[i].output;
        if shape.len() != 3 {
            return Err(Failure::new(format!(
                "`{name}` outputs a vector of {}, not an image: maps are drawn for layers whose outputs are images\n  = help: write its values with `cnnc predict {} --weights W IMAGE --layer {name}`; the output layer is drawn as a bar chart anyway",
                dims(shape),
                args.file.display()
            )));
        }
        layers.push(i);
    }
    if names.is_empty() {
        layers = (0..checked.model.layers.len())
            .filter(|&i| drawable(checked, i))
            .collect();
    }
    layers.sort_unstable();
    layers.dedup();
    let (batch, input) = input(checked, image)?;
    let Trained {
        graphs,
        mut state,
        classes,
        ..
    } = loaded.trained;
    let graphs = graphs.probing(checked, &layers).map_err(fail)?;
    let mut engine = engine(args.engine, &args.conv, &graphs);
    let probed = engine
        .probe(&mut state.values[..state.weights], batch.view())
        .map_err(fail)?;
    let mut panels = vec![input];
    for (i, value) in &probed.layers {
        let map = value.index_axis(Axis(0), 0);
        let channels = map.shape().get(2).copied().unwrap_or(0);
        let size = dims(map.shape().get(..2).unwrap_or_default());
        let heading = format!("{}: {size}, {channels} channels", titled(checked, *i));
        panels.push(panels::channels(heading, map));
    }
    let last = checked.model.layers.len() - 1;
    if checked.layers[last].output.len() == 1 {
        panels.push(output_panel(checked, &probed.prediction, &classes, None));
    }
    let sheet = Sheet {
        title: format!(
            "{}: activation maps of {} ({})",
            checked.model.name,
            image.display(),
            loaded.source
        ),
        panels,
    };
    sheet.write(output).map_err(fail)?;
    let drawn: Vec<&str> = layers.iter().map(|&i| checked.model.layers[i].name.as_str()).collect();
    Ok(format!(
        "{}wrote the maps of {} to {}\n",
        loaded.note,
        if drawn.is_empty() {
            "no layer".into()
        } else {
            drawn.join(", ")
        },
        output.display()
    ))
}

/// Class names by label: the weights file's, else the labels' numbers.
fn class_names(classes: &[String], count: usize) -> Vec<String> {
    (0..count)
        .map(|i| classes.get(i).cloned().unwrap_or_else(|| i.to_string()))
        .collect()
}

fn output_panel(checked: &Checked, prediction: &ArrayD<f32>, classes: &[String], chosen: Option<usize>) -> Panel {
    let values: Vec<f32> = prediction.iter().copied().collect();
    let probabilities = matches!(checked.output_activation(), Activation::Softmax | Activation::Sigmoid);
    let last = checked.model.layers.len() - 1;
    let what = if probabilities {
        "class probabilities"
    } else {
        "outputs"
    };
    let labels = class_names(classes, values.len());
    panels::bars(
        format!("{}: {what}", titled(checked, last)),
        values,
        labels,
        chosen,
        probabilities,
    )
}

fn saliency(args: &ModelArgs, image: &Path, class: Option<&str>, output: &Path) -> Result<String, Failure> {
    let loaded = open(args)?;
    let checked = &loaded.checked;
    let (batch, input) = input(checked, image)?;
    let Trained {
        graphs,
        mut state,
        classes,
        ..
    } = loaded.trained;
    let mut engine = engine(args.engine, &args.conv, &graphs);
    let weights = &mut state.values[..state.weights];
    let prediction = engine.predict(weights, batch.view()).map_err(fail)?;
    let scores: Vec<f32> = prediction.iter().copied().collect();
    let count = scores.len();
    let names = class_names(&classes, count);
    let chosen = match class {
        Some(c) => names
            .iter()
            .position(|n| n == c)
            .or_else(|| c.parse().ok().filter(|&k: &usize| k < count))
            .ok_or_else(|| {
                Failure::new(format!(
                    "the model has no class `{c}`\n  = help: give one of {}",
                    names.join(", ")
                ))
            })?,
        None => (0..count).max_by(|&a, &b| scores[a].total_cmp(&scores[b])).unwrap_or(0),
    };
    let selected: Vec<f32> = (0..count).map(|k| f32::from(u8::from(k == chosen))).collect();
    let selector = ArrayD::from_shape_vec(prediction.raw_dim(), selected).map_err(|e| Failure::new(e.to_string()))?;
    let gradient = engine.saliency(weights, batch.view(), selector.view()).map_err(fail)?;
    let [map, overlay] = panels::saliency(batch.index_axis(Axis(0), 0), gradient.index_axis(Axis(0), 0));
    let p = scores.get(chosen).copied().unwrap_or(f32::NAN);
    let sheet = Sheet {
        title: format!(
            "{}: saliency of class {} (output {p:.3}) for {} ({})",
            checked.model.name,
            names[chosen],
            image.display(),
            loaded.source
        ),
        panels: vec![
            input,
            map,
            overlay,
            output_panel(checked, &prediction, &classes, Some(chosen)),
        ],
    };
    sheet.write(output).map_err(fail)?;
    Ok(format!(
        "{}wrote the saliency of class {} to {}\n",
        loaded.note,
        names[chosen],
        output.display()
    ))
}
