//! The checked-syntax tree of a `.cnn` file: one model, its input, its layers
//! with every Keras default filled in, and the optional training block.

use crate::diag::Span;

#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// From `model NAME`, else the file stem.
    pub name: String,
    pub input: Input,
    pub layers: Vec<Layer>,
    pub train: Option<Train>,
    /// Declared with `param`, in the file's order.
    pub params: Vec<Param>,
}

impl Model {
    /// The parameters' values, `act=tanh,bn=true` in the file's order: what
    /// names a variant of the model (its run folder, its checkpoint).
    /// Empty for a model without parameters.
    pub fn variant(&self) -> String {
        self.values().join(",")
    }

    /// Each parameter as `name=value`.
    pub fn values(&self) -> Vec<String> {
        self.params.iter().map(|p| format!("{}={}", p.name, p.value)).collect()
    }

    /// The name with the parameters' values, as a run names its model:
    /// `homework (act=tanh, bn=true)`.
    pub fn title(&self) -> String {
        match self.params.is_empty() {
            true => self.name.clone(),
            false => format!("{} ({})", self.name, self.values().join(", ")),
        }
    }
}

/// A parameter of the model (`param act = relu`), with the value the model
/// was built with.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: String,
    /// As the language writes it: `relu`, `0.25`, `[1, 2]`.
    pub value: String,
    pub default: String,
    /// The flag that set the value (`--set act=tanh`), if one did.
    pub set: Option<String>,
    /// The default's place in the file, and every `$name` that uses it.
    pub declared: Span,
    pub uses: Vec<Span>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    /// Without the batch axis: `[28, 28, 1]` or `[784]`.
    pub shape: Vec<usize>,
    pub span: Span,
    pub line: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    /// Keras's default name (`conv2d_1`) unless the file gives `name=`.
    pub name: String,
    pub kind: LayerKind,
    /// `trainable=false` freezes every weight of the layer.
    pub trainable: bool,
    /// The whole statement, and its keyword alone.
    pub span: Span,
    pub keyword: Span,
    /// 1-based line of the statement, for IR dumps and messages.
    pub line: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub enum LayerKind {
    Conv2D(Conv2D),
    DepthwiseConv2D(DepthwiseConv2D),
    Dense(Dense),
    MaxPool2D(Pool2D),
    AvgPool2D(Pool2D),
    /// The mean over height and width; `keepdims` keeps them, of size 1.
    GlobalAvgPool2D {
        keepdims: bool,
    },
    /// The maximum over height and width.
    GlobalMaxPool2D {
        keepdims: bool,
    },
    Flatten,
    Dropout {
        rate: f64,
    },
    BatchNorm(BatchNorm),
    Activation(Activation),
    /// Keras's LeakyReLU layer, whose default slope (0.3) is not the
    /// `leaky_relu` activation's (0.2).
    LeakyRelu {
        negative_slope: f64,
    },
    /// Keras's ELU layer.
    Elu {
        alpha: f64,
    },
}

impl LayerKind {
    /// Keras's class name, as `model.summary()` prints it.
    pub fn keras_class(&self) -> &'static str {
        match self {
            LayerKind::Conv2D(_) => "Conv2D",
            LayerKind::DepthwiseConv2D(_) => "DepthwiseConv2D",
            LayerKind::Dense(_) => "Dense",
            LayerKind::MaxPool2D(_) => "MaxPooling2D",
            LayerKind::AvgPool2D(_) => "AveragePooling2D",
            LayerKind::GlobalAvgPool2D { .. } => "GlobalAveragePooling2D",
            LayerKind::GlobalMaxPool2D { .. } => "GlobalMaxPooling2D",
            LayerKind::Flatten => "Flatten",
            LayerKind::Dropout { .. } => "Dropout",
            LayerKind::BatchNorm(_) => "BatchNormalization",
            LayerKind::Activation(_) => "Activation",
            LayerKind::LeakyRelu { .. } => "LeakyReLU",
            LayerKind::Elu { .. } => "ELU",
        }
    }

    /// The penalty on the layer's kernel, if it has one.
    pub fn kernel_regularizer(&self) -> Option<Regularizer> {
        match self {
            LayerKind::Conv2D(c) => c.kernel_regularizer,
            LayerKind::Dense(d) => d.kernel_regularizer,
            LayerKind::DepthwiseConv2D(_)
            | LayerKind::MaxPool2D(_)
            | LayerKind::AvgPool2D(_)
            | LayerKind::GlobalAvgPool2D { .. }
            | LayerKind::GlobalMaxPool2D { .. }
            | LayerKind::Flatten
            | LayerKind::Dropout { .. }
            | LayerKind::BatchNorm(_)
            | LayerKind::Activation(_)
            | LayerKind::LeakyRelu { .. }
            | LayerKind::Elu { .. } => None,
        }
    }

    /// The prefix of Keras's automatic layer names: its `to_snake_case` of
    /// the class name.
    pub fn keras_name_prefix(&self) -> &'static str {
        match self {
            LayerKind::Conv2D(_) => "conv2d",
            LayerKind::DepthwiseConv2D(_) => "depthwise_conv2d",
            LayerKind::Dense(_) => "dense",
            LayerKind::MaxPool2D(_) => "max_pooling2d",
            LayerKind::AvgPool2D(_) => "average_pooling2d",
            LayerKind::GlobalAvgPool2D { .. } => "global_average_pooling2d",
            LayerKind::GlobalMaxPool2D { .. } => "global_max_pooling2d",
            LayerKind::Flatten => "flatten",
            LayerKind::Dropout { .. } => "dropout",
            LayerKind::BatchNorm(_) => "batch_normalization",
            LayerKind::Activation(_) => "activation",
            LayerKind::LeakyRelu { .. } => "leaky_re_lu",
            LayerKind::Elu { .. } => "elu",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Conv2D {
    pub filters: usize,
    pub kernel_size: [usize; 2],
    pub strides: [usize; 2],
    pub padding: Padding,
    pub activation: Activation,
    pub use_bias: bool,
    pub kernel_initializer: Init,
    pub bias_initializer: Init,
    pub kernel_regularizer: Option<Regularizer>,
}

/// Keras's DepthwiseConv2D: each input channel convolved with
/// `depth_multiplier` filters of its own.
#[derive(Clone, Debug, PartialEq)]
pub struct DepthwiseConv2D {
    pub kernel_size: [usize; 2],
    pub strides: [usize; 2],
    pub padding: Padding,
    pub depth_multiplier: usize,
    pub activation: Activation,
    pub use_bias: bool,
    pub depthwise_initializer: Init,
    pub bias_initializer: Init,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Dense {
    pub units: usize,
    pub activation: Activation,
    pub use_bias: bool,
    pub kernel_initializer: Init,
    pub bias_initializer: Init,
    pub kernel_regularizer: Option<Regularizer>,
}

/// A pooling window: max pooling's, or average pooling's.
#[derive(Clone, Debug, PartialEq)]
pub struct Pool2D {
    pub pool_size: [usize; 2],
    pub strides: [usize; 2],
    pub padding: Padding,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BatchNorm {
    pub momentum: f64,
    pub epsilon: f64,
    /// Learn a shift `beta`.
    pub center: bool,
    /// Learn a scale `gamma`.
    pub scale: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    Linear,
    Relu,
    Sigmoid,
    Tanh,
    Softmax,
    Elu,
    Selu,
    LeakyRelu,
    Gelu,
    Silu,
    Softplus,
}

impl Activation {
    /// Every name `activation=` takes, Keras's; `swish` is Keras's other
    /// name for `silu`.
    pub const ALL: [(&'static str, Activation); 12] = [
        ("linear", Activation::Linear),
        ("relu", Activation::Relu),
        ("sigmoid", Activation::Sigmoid),
        ("tanh", Activation::Tanh),
        ("softmax", Activation::Softmax),
        ("elu", Activation::Elu),
        ("selu", Activation::Selu),
        ("leaky_relu", Activation::LeakyRelu),
        ("gelu", Activation::Gelu),
        ("silu", Activation::Silu),
        ("swish", Activation::Silu),
        ("softplus", Activation::Softplus),
    ];

    /// Keras's `elu` activation's `alpha`.
    pub const ELU_ALPHA: f64 = 1.0;
    /// Keras's `leaky_relu` activation's `negative_slope` (the LeakyReLU
    /// layer's default is 0.3).
    pub const LEAKY_RELU_SLOPE: f64 = 0.2;

    /// The name Keras serializes it by.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Linear => "linear",
            Activation::Relu => "relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Softmax => "softmax",
            Activation::Elu => "elu",
            Activation::Selu => "selu",
            Activation::LeakyRelu => "leaky_relu",
            Activation::Gelu => "gelu",
            Activation::Silu => "silu",
            Activation::Softplus => "softplus",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Padding {
    Valid,
    Same,
}

impl Padding {
    pub fn name(self) -> &'static str {
        match self {
            Padding::Valid => "valid",
            Padding::Same => "same",
        }
    }
}

/// How a weight starts: a Keras initializer or literal values written in the
/// file (in Keras layout: HWIO for conv kernels, (in, out) for dense).
#[derive(Clone, Debug, PartialEq)]
pub enum Init {
    GlorotUniform,
    GlorotNormal,
    HeUniform,
    HeNormal,
    LecunUniform,
    LecunNormal,
    RandomUniform,
    RandomNormal,
    Zeros,
    Ones,
    Values { values: Vec<f64>, span: Span },
}

impl Init {
    pub const NAMED: [(&'static str, Init); 10] = [
        ("glorot_uniform", Init::GlorotUniform),
        ("glorot_normal", Init::GlorotNormal),
        ("he_uniform", Init::HeUniform),
        ("he_normal", Init::HeNormal),
        ("lecun_uniform", Init::LecunUniform),
        ("lecun_normal", Init::LecunNormal),
        ("random_uniform", Init::RandomUniform),
        ("random_normal", Init::RandomNormal),
        ("zeros", Init::Zeros),
        ("ones", Init::Ones),
    ];
}

/// A weight's penalty, added to the loss as Keras 3 adds it each step (and
/// to the loss it reports): `l1 * sum(|w|)` and `l2 * sum(w^2)`, not halved.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Regularizer {
    L1(f64),
    L2(f64),
    L1L2 { l1: f64, l2: f64 },
}

impl Regularizer {
    /// Keras's default factor of `l1` and `l2`.
    pub const FACTOR: f64 = 0.01;

    pub fn l1(self) -> f64 {
        match self {
            Regularizer::L1(l1) | Regularizer::L1L2 { l1, .. } => l1,
            Regularizer::L2(_) => 0.0,
        }
    }

    pub fn l2(self) -> f64 {
        match self {
            Regularizer::L2(l2) | Regularizer::L1L2 { l2, .. } => l2,
            Regularizer::L1(_) => 0.0,
        }
    }

    /// As the model file writes it: `l2(0.01)`, `l1_l2(l1=0.01, l2=0.001)`.
    pub fn text(self) -> String {
        match self {
            Regularizer::L1(l1) => format!("l1({l1})"),
            Regularizer::L2(l2) => format!("l2({l2})"),
            Regularizer::L1L2 { l1, l2 } => format!("l1_l2(l1={l1}, l2={l2})"),
        }
    }
}

/// The optional `train { ... }` block. Unset fields take the defaults the
/// runtime documents (and command-line flags override all of them).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Train {
    /// `mnist10k`, or a path to IDX files or an image folder.
    pub data: Option<String>,
    pub loss: Option<Loss>,
    pub optimizer: Option<Optimizer>,
    pub batch_size: Option<usize>,
    pub epochs: Option<usize>,
    pub seed: Option<u64>,
    pub validation_split: Option<f64>,
    /// Early stopping: epochs without a better validation loss.
    pub patience: Option<usize>,
    /// Random flips, rotations and shifts of the training images.
    pub augment: Option<Augment>,
    pub span: Span,
    /// Where `loss` was written, for errors about it.
    pub loss_span: Option<Span>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    CategoricalCrossentropy,
    BinaryCrossentropy,
    MeanSquaredError,
}

impl Loss {
    pub const ALL: [(&'static str, Loss); 3] = [
        ("categorical_crossentropy", Loss::CategoricalCrossentropy),
        ("binary_crossentropy", Loss::BinaryCrossentropy),
        ("mean_squared_error", Loss::MeanSquaredError),
    ];

    pub fn name(self) -> &'static str {
        match self {
            Loss::CategoricalCrossentropy => "categorical_crossentropy",
            Loss::BinaryCrossentropy => "binary_crossentropy",
            Loss::MeanSquaredError => "mean_squared_error",
        }
    }
}

/// Optimizers with Keras's defaults (design.md).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Optimizer {
    Sgd {
        learning_rate: f64,
        momentum: f64,
        nesterov: bool,
    },
    Adam {
        learning_rate: f64,
        beta_1: f64,
        beta_2: f64,
        epsilon: f64,
    },
    /// Keras's RMSprop: epsilon inside the square root; `momentum` and
    /// `centered` add the slots `momentum` and `average_gradient`.
    Rmsprop {
        learning_rate: f64,
        rho: f64,
        momentum: f64,
        epsilon: f64,
        centered: bool,
    },
}

impl Optimizer {
    pub const SGD: Optimizer = Optimizer::Sgd {
        learning_rate: 0.01,
        momentum: 0.0,
        nesterov: false,
    };
    pub const ADAM: Optimizer = Optimizer::Adam {
        learning_rate: 0.001,
        beta_1: 0.9,
        beta_2: 0.999,
        epsilon: 1e-7,
    };
    pub const RMSPROP: Optimizer = Optimizer::Rmsprop {
        learning_rate: 0.001,
        rho: 0.9,
        momentum: 0.0,
        epsilon: 1e-7,
        centered: false,
    };

    /// As the model file spells it, and as checkpoints record it.
    pub fn name(self) -> &'static str {
        match self {
            Optimizer::Sgd { .. } => "sgd",
            Optimizer::Adam { .. } => "adam",
            Optimizer::Rmsprop { .. } => "rmsprop",
        }
    }

    pub fn learning_rate(&self) -> f64 {
        match *self {
            Optimizer::Sgd { learning_rate, .. }
            | Optimizer::Adam { learning_rate, .. }
            | Optimizer::Rmsprop { learning_rate, .. } => learning_rate,
        }
    }

    pub fn with_learning_rate(mut self, lr: f64) -> Optimizer {
        match &mut self {
            Optimizer::Sgd { learning_rate, .. }
            | Optimizer::Adam { learning_rate, .. }
            | Optimizer::Rmsprop { learning_rate, .. } => *learning_rate = lr,
        }
        self
    }
}

/// Data augmentation: Keras 3's `RandomFlip(flip)`, then
/// `RandomRotation(rotation)`, then `RandomTranslation(translation)`, each
/// with its Keras meaning, drawn afresh for every training image of every
/// step; evaluation and prediction see the images unchanged.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Augment {
    pub flip: Option<Flip>,
    /// A fraction of a full turn: angles are drawn from
    /// `[-rotation, rotation]` of 360 degrees (positive counter-clockwise).
    pub rotation: Option<f64>,
    /// `height_factor` and `width_factor`: shifts are drawn from
    /// `[-f, f]` of the image's height and width.
    pub translation: Option<[f64; 2]>,
    /// How rotations and shifts fill pixels from outside the image.
    pub fill_mode: FillMode,
    pub interpolation: Interpolation,
    /// The value of pixels from outside the image with `fill_mode=constant`.
    pub fill_value: f64,
    /// The `augment` setting, for errors about it.
    pub span: Span,
}

/// RandomFlip's `mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flip {
    Horizontal,
    Vertical,
    /// Keras 3 draws one coin per image for both axes: a flipped image is
    /// turned half a turn.
    HorizontalAndVertical,
}

impl Flip {
    pub const ALL: [(&'static str, Flip); 3] = [
        ("horizontal", Flip::Horizontal),
        ("vertical", Flip::Vertical),
        ("horizontal_and_vertical", Flip::HorizontalAndVertical),
    ];
}

/// RandomRotation's and RandomTranslation's `fill_mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FillMode {
    /// `dcba|abcd|dcba`: mirrored about the edge (Keras's default).
    Reflect,
    /// `abcd|abcd|abcd`.
    Wrap,
    /// `kkkk|abcd|kkkk` with `k` the fill value.
    Constant,
    /// `aaaa|abcd|dddd`.
    Nearest,
}

impl FillMode {
    pub const ALL: [(&'static str, FillMode); 4] = [
        ("reflect", FillMode::Reflect),
        ("wrap", FillMode::Wrap),
        ("constant", FillMode::Constant),
        ("nearest", FillMode::Nearest),
    ];
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interpolation {
    Bilinear,
    Nearest,
}

impl Interpolation {
    pub const ALL: [(&'static str, Interpolation); 2] = [
        ("bilinear", Interpolation::Bilinear),
        ("nearest", Interpolation::Nearest),
    ];
}

impl Augment {
    /// As the training block writes it, every setting spelled out:
    /// `flip=horizontal rotation=0.05 translation=[0.1, 0.1] fill_mode=reflect interpolation=bilinear`.
    pub fn text(&self) -> String {
        let mut words = Vec::new();
        if let Some(flip) = self.flip {
            words.push(format!("flip={}", name_of(&Flip::ALL, &flip)));
        }
        if let Some(rotation) = self.rotation {
            words.push(format!("rotation={rotation}"));
        }
        if let Some([height, width]) = self.translation {
            words.push(format!("translation=[{height}, {width}]"));
        }
        if self.rotation.is_some() || self.translation.is_some() {
            words.push(format!("fill_mode={}", name_of(&FillMode::ALL, &self.fill_mode)));
            if self.fill_mode == FillMode::Constant {
                words.push(format!("fill_value={}", self.fill_value));
            }
            words.push(format!(
                "interpolation={}",
                name_of(&Interpolation::ALL, &self.interpolation)
            ));
        }
        words.join(" ")
    }
}

/// The name an `ALL` table gives a value.
fn name_of<T: PartialEq>(all: &[(&'static str, T)], value: &T) -> &'static str {
    all.iter().find(|(_, v)| v == value).map_or("", |(n, _)| n)
}
