//! Shape checking at the level the user wrote: every layer's input and output
//! shape, its weights with Keras names, and its cost. Errors name the layer
//! and the shape it received. `cnnc check` prints what this computes.

// Errors are values here, built only on the error path and once per mistake
// in a file; their size costs nothing worth boxing them for.
#![allow(clippy::result_large_err)]

pub mod window;

use crate::diag::{Diagnostic, Diagnostics, Span};
use crate::parse::ast::{Activation, Init, Layer, LayerKind, Loss, Model, Padding};

/// Refuse models whose weights or per-sample activations exceed this many
/// elements (4 GiB of f32): nothing of the course's size comes close, and a
/// typo such as `dense 1000000` must not become an absurd allocation.
pub const MAX_ELEMENTS: u64 = 1 << 30;

/// A model whose every layer has been shape-checked.
#[derive(Clone, Debug)]
pub struct Checked {
    pub model: Model,
    pub layers: Vec<LayerInfo>,
    /// The file name and text the spans point into, so that a later stage's
    /// error about a layer can show its line.
    pub file: String,
    pub source: String,
}

#[derive(Clone, Debug)]
pub struct LayerInfo {
    /// Shapes without the batch axis.
    pub input: Vec<usize>,
    pub output: Vec<usize>,
    pub weights: Vec<Weight>,
    /// Multiply-accumulates of one sample's forward pass.
    pub macs: u64,
}

impl LayerInfo {
    pub fn params(&self) -> u64 {
        self.weights.iter().map(Weight::numel).fold(0, u64::saturating_add)
    }

    pub fn flops(&self) -> u64 {
        self.macs.saturating_mul(2)
    }

    /// Bytes of one sample's output activation (f32).
    pub fn activation_bytes(&self) -> u64 {
        numel(&self.output).saturating_mul(4)
    }
}

/// What a weight is for; Keras's variable names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Kernel,
    Bias,
    Gamma,
    Beta,
    MovingMean,
    MovingVariance,
}

impl Role {
    pub fn keras_name(self) -> &'static str {
        match self {
            Role::Kernel => "kernel",
            Role::Bias => "bias",
            Role::Gamma => "gamma",
            Role::Beta => "beta",
            Role::MovingMean => "moving_mean",
            Role::MovingVariance => "moving_variance",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Weight {
    /// `conv2d/kernel`, as Keras and our safetensors files name it.
    pub name: String,
    pub role: Role,
    pub shape: Vec<usize>,
    pub trainable: bool,
    pub init: Init,
}

impl Weight {
    /// Elements of the weight.
    pub fn numel(&self) -> u64 {
        numel(&self.shape)
    }
}

/// Elements of a shape. Saturates rather than overflows: a typo's absurd
/// shape must become an error about its size, not a crash.
pub fn numel(shape: &[usize]) -> u64 {
    shape.iter().fold(1, |n, &d| n.saturating_mul(d as u64))
}

impl Checked {
    /// An error at a span of this model, ready to render with its line.
    pub fn diagnostics(&self, error: Diagnostic) -> Diagnostics {
        let mut errors = vec![error];
        crate::parse::params::explain(&self.model.params, &mut errors);
        Diagnostics {
            file: self.file.clone(),
            source: self.source.clone(),
            errors,
        }
    }

    pub fn weights(&self) -> impl Iterator<Item = &Weight> {
        self.layers.iter().flat_map(|l| &l.weights)
    }

    pub fn output_shape(&self) -> &[usize] {
        self.layers.last().map_or(&self.model.input.shape, |l| &l.output)
    }

    /// The activation applied last, which decides the default loss.
    pub fn output_activation(&self) -> Activation {
        match self.model.layers.last().map(|l| &l.kind) {
            Some(LayerKind::Conv2D(c)) => c.activation,
            Some(LayerKind::DepthwiseConv2D(c)) => c.activation,
            Some(LayerKind::Dense(d)) => d.activation,
            Some(LayerKind::Activation(a)) => *a,
            Some(LayerKind::LeakyRelu { .. }) => Activation::LeakyRelu,
            Some(LayerKind::Elu { .. }) => Activation::Elu,
            _ => Activation::Linear,
        }
    }

    /// The loss of the training block, else the one a Keras user pairs with
    /// the output activation.
    pub fn loss(&self) -> Loss {
        match self.model.train.as_ref().and_then(|t| t.loss) {
            Some(loss) => loss,
            None => match self.output_activation() {
                Activation::Softmax => Loss::CategoricalCrossentropy,
                Activation::Sigmoid => Loss::BinaryCrossentropy,
                _ => Loss::MeanSquaredError,
            },
        }
    }
}

/// Checks every layer's shapes in order. Stops at the first shape error:
/// the layers after it would only report its consequences.
pub fn check(model: Model, file: &str, source: &str) -> Result<Checked, Diagnostics> {
    let params = model.params.clone();
    let fail = |e: Diagnostic| {
        let mut errors = vec![e];
        crate::parse::params::explain(&params, &mut errors);
        Diagnostics {
            file: file.to_string(),
            source: source.to_string(),
            errors,
        }
    };
    let inputs = exact(&model.input.shape);
    if inputs > u128::from(MAX_ELEMENTS) {
        return Err(fail(
            Diagnostic::error(
                model.input.span,
                format!("the input has {} values per sample", group_wide(inputs)),
            )
            .label(format!("{} values", group_wide(inputs)))
            .note(format!(
                "cnnc refuses tensors of more than {} values per sample ({} as f32)",
                group(MAX_ELEMENTS),
                bytes(4 * MAX_ELEMENTS)
            ))
            .help("downscale the images, e.g. `input 224x224x3`"),
        ));
    }
    let mut from = Source {
        is_input: true,
        name: "the input".to_string(),
        span: model.input.span,
        shape: model.input.shape.clone(),
    };
    let mut layers = Vec::with_capacity(model.layers.len());
    let mut total = Budget::default();
    for layer in &model.layers {
        let info = check_layer(layer, &from, &model.input.shape, source).map_err(&fail)?;
        total.add(layer, &info).map_err(&fail)?;
        from = Source {
            is_input: false,
            name: format!("`{}`", layer.name),
            span: layer.span,
            shape: info.output.clone(),
        };
        layers.push(info);
    }
    let checked = Checked {
        model,
        layers,
        file: file.to_string(),
        source: source.to_string(),
    };
    check_loss(&checked).map_err(fail)?;
    check_augment(&checked).map_err(fail)?;
    Ok(checked)
}

/// Augmentation flips, turns and shifts images: the input must be one.
fn check_augment(checked: &Checked) -> Result<(), Diagnostic> {
    let input = &checked.model.input;
    match (
        checked.model.train.as_ref().and_then(|t| t.augment.as_ref()),
        &input.shape[..],
    ) {
        (Some(augment), [_]) => Err(Diagnostic::error(augment.span, "`augment` needs image input")
            .label("flips, turns and shifts images")
            .related(input.span, format!("the input is {}", describe(&input.shape)))
            .help("augment models whose input is an image (`input 28x28x1`), or remove `augment`")),
        _ => Ok(()),
    }
}

/// What feeds a layer: the input or the layer above, for errors that say
/// where a shape came from.
struct Source {
    is_input: bool,
    name: String,
    span: Span,
    shape: Vec<usize>,
}

impl Source {
    fn label(&self) -> String {
        format!("{} gives {}", self.name, describe(&self.shape))
    }
}

/// Parameters so far, counted exactly: a typo's absurd layer must be
/// reported with its true size, not a saturated one.
#[derive(Default)]
struct Budget {
    params: u128,
}

impl Budget {
    fn add(&mut self, layer: &Layer, info: &LayerInfo) -> Result<(), Diagnostic> {
        let layer_params = info
            .weights
            .iter()
            .map(|w| exact(&w.shape))
            .fold(0, u128::saturating_add);
        self.params = self.params.saturating_add(layer_params);
        let help = match &layer.kind {
            LayerKind::Dense(_) => {
                "use fewer units, or make its input smaller with pooling or strides before `flatten`"
            }
            LayerKind::Conv2D(_) => "use fewer filters, or add pooling or strides before this layer",
            LayerKind::DepthwiseConv2D(_) => {
                "use a smaller depth_multiplier, or add pooling or strides before this layer"
            }
            _ => "add pooling or strides before this layer",
        };
        if self.params > u128::from(MAX_ELEMENTS) {
            return Err(Diagnostic::error(
                layer.span,
                format!(
                    "`{}` brings the model to {} parameters ({})",
                    layer.name,
                    group_wide(self.params),
                    bytes_wide(self.params.saturating_mul(4))
                ),
            )
            .label(format!("{} parameters in this layer", group_wide(layer_params)))
            .note(format!(
                "cnnc refuses models of more than {} parameters ({} as f32)",
                group(MAX_ELEMENTS),
                bytes(4 * MAX_ELEMENTS)
            ))
            .help(help));
        }
        let out = exact(&info.output);
        if out > u128::from(MAX_ELEMENTS) {
            return Err(Diagnostic::error(
                layer.span,
                format!("`{}` would output {} values per sample", layer.name, group_wide(out)),
            )
            .label(format!("outputs {}", dims(&info.output)))
            .note(format!(
                "cnnc refuses layers that output more than {} values per sample ({} as f32)",
                group(MAX_ELEMENTS),
                bytes(4 * MAX_ELEMENTS)
            ))
            .help(help));
        }
        Ok(())
    }
}

/// A shape as the `.cnn` language writes it: `28x28x1`.
pub fn dims(shape: &[usize]) -> String {
    shape.iter().map(usize::to_string).collect::<Vec<_>>().join("x")
}

fn check_layer(layer: &Layer, from: &Source, model_input: &[usize], source: &str) -> Result<LayerInfo, Diagnostic> {
    let input = from.shape.as_slice();
    let err = |message: String| Diagnostic::error(layer.keyword, message).related(from.span, from.label());
    let image = |what: &str| -> Result<[usize; 3], Diagnostic> {
        match *input {
            [h, w, c] => Ok([h, w, c]),
            _ => {
                let e = err(format!(
                    "`{}` needs an image (height x width x channels), but {} gives it {}",
                    layer.name,
                    from.name,
                    describe(input)
                ))
                .label(format!("{what} needs height x width x channels"));
                Err(match input.len() {
                    2 if from.is_input => e.help(format!("give the input a channel axis: `input {}x1`", dims(input))),
                    _ if from.is_input => e.help("declare the input as an image, e.g. `input 28x28x1`"),
                    _ => e.help(format!(
                        "a {what} cannot follow `flatten` or `dense`: move it above them"
                    )),
                })
            }
        }
    };
    let mut info = LayerInfo {
        input: input.to_vec(),
        output: input.to_vec(),
        weights: Vec::new(),
        macs: 0,
    };
    let weight = |role: Role, shape: Vec<usize>, init: &Init, trainable: bool| -> Result<Weight, Diagnostic> {
        if let Init::Values { values, span } = init {
            let want = numel(&shape);
            if values.len() as u64 != want {
                return Err(Diagnostic::error(
                    *span,
                    format!(
                        "`{}/{}` has shape {} ({} values), but {} are given",
                        layer.name,
                        role.keras_name(),
                        dims(&shape),
                        group(want),
                        group(values.len() as u64)
                    ),
                )
                .label(format!("{} values", group(values.len() as u64)))
                .help(match role {
                    Role::Kernel => "list the values in Keras order: (height, width, in, out) for conv2d, (height, width, in, multiplier) for depthwiseconv2d, (in, out) for dense; nesting is optional",
                    _ => "give one value per output channel or unit",
                }));
            }
        }
        Ok(Weight {
            name: format!("{}/{}", layer.name, role.keras_name()),
            role,
            shape,
            trainable,
            init: init.clone(),
        })
    };
    let window = |what: &'static str, size: [usize; 2], strides: [usize; 2], padding: Padding, hw: [usize; 2]| {
        let fit = Window {
            what,
            size,
            strides,
            padding,
            shrunk: !from.is_input && hw[..] != model_input[..model_input.len().min(2)],
        };
        fit.slide(layer, from, hw, source)
    };
    match &layer.kind {
        LayerKind::Conv2D(c) => {
            let [h, w, cin] = image("conv2d")?;
            let (oh, ow) = window("kernel", c.kernel_size, c.strides, c.padding, [h, w])?;
            info.output = vec![oh, ow, c.filters];
            let k = c.kernel_size;
            info.weights.push(weight(
                Role::Kernel,
                vec![k[0], k[1], cin, c.filters],
                &c.kernel_initializer,
                layer.trainable,
            )?);
            if c.use_bias {
                info.weights.push(weight(
                    Role::Bias,
                    vec![c.filters],
                    &c.bias_initializer,
                    layer.trainable,
                )?);
            }
            info.macs = numel(&info.output).saturating_mul(numel(&[k[0], k[1], cin]));
        }
        LayerKind::Dense(d) => {
            let [n] = *input else {
                return Err(err(format!(
                    "`{}` needs a flat vector, but {} gives it {}",
                    layer.name,
                    from.name,
                    describe(input)
                ))
                .label("dense needs a vector")
                .help("add `flatten` before this layer"));
            };
            info.output = vec![d.units];
            info.weights.push(weight(
                Role::Kernel,
                vec![n, d.units],
                &d.kernel_initializer,
                layer.trainable,
            )?);
            if d.use_bias {
                info.weights
                    .push(weight(Role::Bias, vec![d.units], &d.bias_initializer, layer.trainable)?);
            }
            info.macs = (n as u64).saturating_mul(d.units as u64);
        }
        LayerKind::DepthwiseConv2D(c) => {
            let [h, w, cin] = image("depthwiseconv2d")?;
            let (oh, ow) = window("kernel", c.kernel_size, c.strides, c.padding, [h, w])?;
            let cout = cin.saturating_mul(c.depth_multiplier);
            info.output = vec![oh, ow, cout];
            let k = c.kernel_size;
            // Keras's layout: (height, width, in, multiplier).
            info.weights.push(weight(
                Role::Kernel,
                vec![k[0], k[1], cin, c.depth_multiplier],
                &c.depthwise_initializer,
                layer.trainable,
            )?);
            if c.use_bias {
                info.weights
                    .push(weight(Role::Bias, vec![cout], &c.bias_initializer, layer.trainable)?);
            }
            info.macs = numel(&info.output).saturating_mul(numel(&k));
        }
        LayerKind::MaxPool2D(p) | LayerKind::AvgPool2D(p) => {
            let what = if matches!(layer.kind, LayerKind::MaxPool2D(_)) {
                "maxpool2d"
            } else {
                "avgpool2d"
            };
            let [h, w, c] = image(what)?;
            let (oh, ow) = window("pool", p.pool_size, p.strides, p.padding, [h, w])?;
            info.output = vec![oh, ow, c];
        }
        LayerKind::GlobalAvgPool2D { keepdims } | LayerKind::GlobalMaxPool2D { keepdims } => {
            let what = if matches!(layer.kind, LayerKind::GlobalAvgPool2D { .. }) {
                "globalavgpool2d"
            } else {
                "globalmaxpool2d"
            };
            let [_, _, c] = image(what)?;
            info.output = if *keepdims { vec![1, 1, c] } else { vec![c] };
        }
        LayerKind::Flatten => {
            // Bounded by the per-layer budget, so it fits a usize.
            info.output = vec![usize::try_from(numel(input)).unwrap_or(usize::MAX)];
        }
        LayerKind::Dropout { .. } | LayerKind::Activation(_) | LayerKind::LeakyRelu { .. } | LayerKind::Elu { .. } => {}
        LayerKind::BatchNorm(b) => {
            let c = input.last().copied().unwrap_or(1);
            if b.scale {
                info.weights
                    .push(weight(Role::Gamma, vec![c], &Init::Ones, layer.trainable)?);
            }
            if b.center {
                info.weights
                    .push(weight(Role::Beta, vec![c], &Init::Zeros, layer.trainable)?);
            }
            info.weights
                .push(weight(Role::MovingMean, vec![c], &Init::Zeros, false)?);
            info.weights
                .push(weight(Role::MovingVariance, vec![c], &Init::Ones, false)?);
        }
    }
    Ok(info)
}

/// A kernel or pool sliding over an image.
struct Window {
    what: &'static str,
    size: [usize; 2],
    strides: [usize; 2],
    padding: Padding,
    /// Whether the layers above made the image smaller than the input.
    shrunk: bool,
}

impl Window {
    /// Output height and width, or an error saying the window does not fit.
    fn slide(&self, layer: &Layer, from: &Source, hw: [usize; 2], source: &str) -> Result<(usize, usize), Diagnostic> {
        let len = |axis: usize| {
            let (lo, hi) = window::padding(hw[axis], self.size[axis], self.strides[axis], self.padding);
            window::output_len(
                hw[axis],
                (lo as i64, hi as i64),
                1,
                self.size[axis],
                1,
                self.strides[axis],
            )
        };
        if let (Some(h), Some(w)) = (len(0), len(1)) {
            return Ok((h, w));
        }
        let what = self.what;
        let size = dims(&self.size);
        let image = dims(&hw);
        let argument = if what == "kernel" { "kernel_size" } else { "pool_size" };
        let at = argument_span(layer, argument, source).unwrap_or(layer.keyword);
        let mut help = format!("use a {what} of at most {image}, or `padding=same` to pad the image");
        if self.shrunk {
            help.push_str(", or shrink the image less in the layers above");
        }
        Err(Diagnostic::error(
            at,
            format!(
                "the {what} of `{}` is {size}, larger than the {image} image {} gives it",
                layer.name, from.name
            ),
        )
        .label(format!("{size} does not fit in {image}"))
        .related(from.span, from.label())
        .help(help))
    }
}

/// Where the layer's statement gives `argument`, found by reading the
/// statement again: the AST keeps values, not where they were written.
fn argument_span(layer: &Layer, argument: &str, source: &str) -> Option<Span> {
    let text = source.get(layer.span.start..layer.span.end)?;
    let statement = crate::parse::syntax::parse(text).ok()?.into_iter().next()?;
    let spec = crate::parse::layers::spec(&statement.keyword.text)?;
    let args = crate::parse::args::Args::bind(&statement, spec.positional, &spec.arguments());
    let span = args.span_of(argument)?;
    Some(Span::new(span.start + layer.span.start, span.end + layer.span.start))
}

/// Elements of a shape without saturating: dimensions are below 2^31 and
/// shapes have at most four, so the product fits.
fn exact(shape: &[usize]) -> u128 {
    shape.iter().fold(1, |n: u128, &d| n.saturating_mul(d as u128))
}

/// A shape in the words of an error message.
fn describe(shape: &[usize]) -> String {
    match shape {
        [n] => format!("a vector of {} values", group(*n as u64)),
        [_, _] => format!("a {} matrix", dims(shape)),
        [_, _, _] => format!("a {} image", dims(shape)),
        _ => format!("a tensor of shape {}", dims(shape)),
    }
}

/// The loss of the training block must suit the model's output.
fn check_loss(checked: &Checked) -> Result<(), Diagnostic> {
    // Dropout after the output would drop predictions, and hide the output
    // activation the loss is chosen by.
    if let Some(last) = checked.model.layers.last()
        && let LayerKind::Dropout { .. } = last.kind
    {
        return Err(Diagnostic::error(last.keyword, "dropout is the model's last layer")
            .label("drops the model's outputs while training")
            .help("dropout regularizes hidden layers: move it before the last `dense` layer"));
    }
    let Some(train) = &checked.model.train else {
        return Ok(());
    };
    let (Some(loss), Some(span)) = (train.loss, train.loss_span) else {
        return Ok(());
    };
    let last = checked.model.layers.last().map_or(checked.model.input.span, |l| l.span);
    let act = checked.output_activation();
    let (need, ends) = match loss {
        Loss::CategoricalCrossentropy if act != Activation::Softmax => (
            "a softmax output",
            format!("the model ends in {}, not softmax", act.name()),
        ),
        Loss::BinaryCrossentropy if act != Activation::Sigmoid => (
            "a sigmoid output",
            format!("the model ends in {}, not sigmoid", act.name()),
        ),
        _ => return Ok(()),
    };
    let help = match act {
        Activation::Sigmoid => {
            "end the model with `activation=softmax` for one class per sample, or use `loss binary_crossentropy` for independent yes/no outputs"
        }
        Activation::Softmax => {
            "end the model with `dense 1 activation=sigmoid`, or use `loss categorical_crossentropy` for one class out of several"
        }
        Activation::Linear
        | Activation::Relu
        | Activation::Tanh
        | Activation::Elu
        | Activation::Selu
        | Activation::LeakyRelu
        | Activation::Gelu
        | Activation::Silu
        | Activation::Softplus => match loss {
            Loss::CategoricalCrossentropy => "end the model with `dense K activation=softmax` for K classes",
            Loss::BinaryCrossentropy | Loss::MeanSquaredError => "end the model with `dense 1 activation=sigmoid`",
        },
    };
    Err(Diagnostic::error(span, format!("`{}` needs {need}", loss.name()))
        .label("this loss")
        .related(last, ends)
        .help(help))
}

/// `1234567` as `1,234,567`, as Keras prints counts.
pub fn group(n: u64) -> String {
    group_wide(u128::from(n))
}

fn group_wide(n: u128) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Keras's readable size: powers of 1024, two decimals (`2.29 MB`).
pub fn bytes(n: u64) -> String {
    bytes_wide(u128::from(n))
}

fn bytes_wide(n: u128) -> String {
    let mut x = n as f64;
    for unit in ["B", "KB", "MB", "GB", "TB", "PB", "EB", "ZB"] {
        if x / 1024.0 < 1.0 {
            return format!("{x:.2} {unit}");
        }
        x /= 1024.0;
    }
    format!("{x:.2} YB")
}
