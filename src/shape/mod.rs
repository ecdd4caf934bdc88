//! Shape checking at the level the user wrote: every layer's input and output
//! shape, its weights with Keras names, and its cost. Errors name the layer
//! and the shape it received. `cnnc check` prints what this computes.

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
        self.weights.iter().map(Weight::len).sum()
    }

    pub fn flops(&self) -> u64 {
        2 * self.macs
    }

    /// Bytes of one sample's output activation (f32).
    pub fn activation_bytes(&self) -> u64 {
        4 * numel(&self.output)
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
    pub fn len(&self) -> u64 {
        numel(&self.shape)
    }
}

pub fn numel(shape: &[usize]) -> u64 {
    shape.iter().map(|&d| d as u64).product()
}

impl Checked {
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
            Some(LayerKind::Dense(d)) => d.activation,
            Some(LayerKind::Activation(a)) => *a,
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
    let fail = |e: Diagnostic| Diagnostics {
        file: file.to_string(),
        source: source.to_string(),
        errors: vec![e],
    };
    let mut shape = model.input.shape.clone();
    let mut from = "the input".to_string();
    let mut layers = Vec::with_capacity(model.layers.len());
    let mut total = Budget::default();
    for layer in &model.layers {
        let info = check_layer(layer, &shape, &from).map_err(&fail)?;
        total.add(layer, &info).map_err(&fail)?;
        shape = info.output.clone();
        from = format!("`{}`", layer.name);
        layers.push(info);
    }
    let checked = Checked { model, layers };
    check_loss(&checked).map_err(fail)?;
    Ok(checked)
}

#[derive(Default)]
struct Budget {
    params: u64,
}

impl Budget {
    fn add(&mut self, layer: &Layer, info: &LayerInfo) -> Result<(), Diagnostic> {
        self.params += info.params();
        let too_big = |what: String, n: u64| {
            Diagnostic::error(layer.span, format!("`{}` {what}", layer.name))
                .label(format!("{} elements", group(n)))
                .note(format!(
                    "cnnc refuses tensors of more than {} elements ({})",
                    group(MAX_ELEMENTS),
                    bytes(4 * MAX_ELEMENTS)
                ))
                .help("use fewer units or filters, or add pooling or strides before this layer")
        };
        if self.params > MAX_ELEMENTS {
            return Err(too_big(
                format!(
                    "brings the model to {} parameters ({})",
                    group(self.params),
                    bytes(4 * self.params)
                ),
                self.params,
            ));
        }
        let out = numel(&info.output);
        if out > MAX_ELEMENTS {
            return Err(too_big(format!("would output {} values per sample", group(out)), out));
        }
        Ok(())
    }
}

fn dims(shape: &[usize]) -> String {
    shape.iter().map(usize::to_string).collect::<Vec<_>>().join("x")
}

fn check_layer(layer: &Layer, input: &[usize], from: &str) -> Result<LayerInfo, Diagnostic> {
    let err = |message: String| Diagnostic::error(layer.keyword, message);
    let image = |what: &str| -> Result<[usize; 3], Diagnostic> {
        match *input {
            [h, w, c] => Ok([h, w, c]),
            _ => {
                let e = err(format!(
                    "`{}` needs an image (height x width x channels), but {from} gives it {} values",
                    layer.name,
                    describe(input)
                ))
                .label(format!("{what} needs HxWxC"));
                Err(match input.len() {
                    2 => e.help(format!("give the input a channel axis: `input {}x1`", dims(input))),
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
                        want,
                        values.len()
                    ),
                )
                .label(format!("{} values", values.len()))
                .help(match role {
                    Role::Kernel => "list the values in Keras order: (height, width, in, out) for conv2d, (in, out) for dense; nesting is optional",
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
    match &layer.kind {
        LayerKind::Conv2D(c) => {
            let [h, w, cin] = image("conv2d")?;
            let (oh, ow) = slide(layer, [h, w], c.kernel_size, c.strides, c.padding, "kernel", from)?;
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
            info.macs = (oh * ow * c.filters) as u64 * (k[0] * k[1] * cin) as u64;
        }
        LayerKind::Dense(d) => {
            let [n] = *input else {
                return Err(err(format!(
                    "`{}` needs a flat vector, but {from} gives it {} values",
                    layer.name,
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
            info.macs = n as u64 * d.units as u64;
        }
        LayerKind::MaxPool2D(p) => {
            let [h, w, c] = image("maxpool2d")?;
            let (oh, ow) = slide(layer, [h, w], p.pool_size, p.strides, p.padding, "pool", from)?;
            info.output = vec![oh, ow, c];
        }
        LayerKind::Flatten => info.output = vec![input.iter().product()],
        LayerKind::Dropout { .. } | LayerKind::Activation(_) => {}
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

/// Output height and width of a kernel or pool, or an error saying it does
/// not fit.
fn slide(
    layer: &Layer,
    input: [usize; 2],
    window: [usize; 2],
    strides: [usize; 2],
    padding: Padding,
    what: &str,
    from: &str,
) -> Result<(usize, usize), Diagnostic> {
    let len = |axis: usize| {
        let (lo, hi) = window::padding(input[axis], window[axis], strides[axis], padding);
        window::output_len(input[axis], (lo as i64, hi as i64), 1, window[axis], 1, strides[axis])
    };
    match (len(0), len(1)) {
        (Some(h), Some(w)) => Ok((h, w)),
        _ => Err(Diagnostic::error(
            layer.keyword,
            format!(
                "the {what} of `{}` is {}, larger than the {}x{} image {from} gives it",
                layer.name,
                dims(&window),
                input[0],
                input[1]
            ),
        )
        .label(format!(
            "{what} {} does not fit {}x{}",
            dims(&window),
            input[0],
            input[1]
        ))
        .help(format!(
            "use a {what} of at most {}x{}, or `padding=same`, or remove a pooling layer above",
            input[0], input[1]
        ))),
    }
}

fn describe(shape: &[usize]) -> String {
    match shape.len() {
        1 => format!("a vector of {}", shape[0]),
        _ => format!("{} (rank {})", dims(shape), shape.len()),
    }
}

/// The loss of the training block must suit the model's output.
fn check_loss(checked: &Checked) -> Result<(), Diagnostic> {
    let Some(train) = &checked.model.train else {
        return Ok(());
    };
    let (Some(loss), Some(span)) = (train.loss, train.loss_span) else {
        return Ok(());
    };
    let last = checked.model.layers.last().map_or(Span::default(), |l| l.span);
    let act = checked.output_activation();
    let out = checked.output_shape();
    let need = match loss {
        Loss::CategoricalCrossentropy if act != Activation::Softmax => Some("a softmax output"),
        Loss::BinaryCrossentropy if act != Activation::Sigmoid => Some("a sigmoid output"),
        _ if out.len() != 1 => Some("a flat output vector"),
        _ => None,
    };
    match need {
        None => Ok(()),
        Some(need) => Err(Diagnostic::error(span, format!("`{}` needs {need}", loss.name()))
            .label("this loss")
            .related(
                last,
                format!("the model ends in {} with shape {}", act.name(), dims(out)),
            )
            .help(match loss {
                Loss::CategoricalCrossentropy => "end the model with `dense K activation=softmax` for K classes",
                Loss::BinaryCrossentropy => "end the model with `dense 1 activation=sigmoid`",
                Loss::MeanSquaredError => "add `flatten` and a `dense` layer at the end",
            })),
    }
}

/// `1234567` as `1,234,567`, as Keras prints counts.
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Keras's readable size: powers of 1024, two decimals (`2.29 MB`).
pub fn bytes(n: u64) -> String {
    let mut x = n as f64;
    for unit in ["B", "KB", "MB", "GB", "TB"] {
        if x / 1024.0 < 1.0 {
            return format!("{x:.2} {unit}");
        }
        x /= 1024.0;
    }
    format!("{x:.2} PB")
}
