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
    Dense(Dense),
    MaxPool2D(MaxPool2D),
    Flatten,
    Dropout { rate: f64 },
    BatchNorm(BatchNorm),
    Activation(Activation),
}

impl LayerKind {
    /// Keras's class name, as `model.summary()` prints it.
    pub fn keras_class(&self) -> &'static str {
        match self {
            LayerKind::Conv2D(_) => "Conv2D",
            LayerKind::Dense(_) => "Dense",
            LayerKind::MaxPool2D(_) => "MaxPooling2D",
            LayerKind::Flatten => "Flatten",
            LayerKind::Dropout { .. } => "Dropout",
            LayerKind::BatchNorm(_) => "BatchNormalization",
            LayerKind::Activation(_) => "Activation",
        }
    }

    /// The prefix of Keras's automatic layer names.
    pub fn keras_name_prefix(&self) -> &'static str {
        match self {
            LayerKind::Conv2D(_) => "conv2d",
            LayerKind::Dense(_) => "dense",
            LayerKind::MaxPool2D(_) => "max_pooling2d",
            LayerKind::Flatten => "flatten",
            LayerKind::Dropout { .. } => "dropout",
            LayerKind::BatchNorm(_) => "batch_normalization",
            LayerKind::Activation(_) => "activation",
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
}

#[derive(Clone, Debug, PartialEq)]
pub struct Dense {
    pub units: usize,
    pub activation: Activation,
    pub use_bias: bool,
    pub kernel_initializer: Init,
    pub bias_initializer: Init,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MaxPool2D {
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
}

impl Activation {
    pub const ALL: [(&'static str, Activation); 5] = [
        ("linear", Activation::Linear),
        ("relu", Activation::Relu),
        ("sigmoid", Activation::Sigmoid),
        ("tanh", Activation::Tanh),
        ("softmax", Activation::Softmax),
    ];

    pub fn name(self) -> &'static str {
        match self {
            Activation::Linear => "linear",
            Activation::Relu => "relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Softmax => "softmax",
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

    /// As the model file spells it, and as checkpoints record it.
    pub fn name(self) -> &'static str {
        match self {
            Optimizer::Sgd { .. } => "sgd",
            Optimizer::Adam { .. } => "adam",
        }
    }

    pub fn learning_rate(&self) -> f64 {
        match *self {
            Optimizer::Sgd { learning_rate, .. } | Optimizer::Adam { learning_rate, .. } => learning_rate,
        }
    }

    pub fn with_learning_rate(self, lr: f64) -> Optimizer {
        match self {
            Optimizer::Sgd { momentum, nesterov, .. } => Optimizer::Sgd {
                learning_rate: lr,
                momentum,
                nesterov,
            },
            Optimizer::Adam {
                beta_1,
                beta_2,
                epsilon,
                ..
            } => Optimizer::Adam {
                learning_rate: lr,
                beta_1,
                beta_2,
                epsilon,
            },
        }
    }
}
