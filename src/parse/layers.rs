//! Every layer of the language: its keyword, which arguments it takes (in
//! Keras's order for the positional ones) and Keras's default for each.

use super::args::{self, Args};
use super::ast::{
    Activation, BatchNorm, Conv2D, Dense, DepthwiseConv2D, Init, LayerKind, Padding, Pool2D, Regularizer,
};
use super::syntax::{Value, ValueKind};
use crate::diag::Diagnostic;

/// A layer of the language: its keyword and the other spellings accepted
/// for it, its arguments (positional ones in Keras's order), and how it is
/// built from a statement.
pub struct LayerSpec {
    pub keyword: &'static str,
    pub aliases: &'static [&'static str],
    pub positional: &'static [&'static str],
    /// Arguments taken only as `name=value`.
    pub named: &'static [&'static str],
    pub build: Builder,
}

/// Every layer of the language: the one list the parser, its
/// diagnostics and the argument spans all read.
pub const LAYERS: [LayerSpec; 13] = [
    LayerSpec {
        keyword: "conv2d",
        aliases: &[],
        positional: &["filters", "kernel_size", "strides", "padding"],
        named: &[
            "activation",
            "use_bias",
            "kernel_initializer",
            "bias_initializer",
            "kernel_regularizer",
        ],
        build: conv2d,
    },
    LayerSpec {
        keyword: "depthwiseconv2d",
        aliases: &["depthwise_conv2d"],
        positional: &["kernel_size", "strides", "padding", "depth_multiplier"],
        named: &["activation", "use_bias", "depthwise_initializer", "bias_initializer"],
        build: depthwiseconv2d,
    },
    LayerSpec {
        keyword: "dense",
        aliases: &[],
        positional: &["units", "activation"],
        named: &[
            "use_bias",
            "kernel_initializer",
            "bias_initializer",
            "kernel_regularizer",
        ],
        build: dense,
    },
    LayerSpec {
        keyword: "maxpool2d",
        aliases: &["max_pooling2d", "maxpooling2d"],
        positional: &["pool_size", "strides", "padding"],
        named: &[],
        build: maxpool2d,
    },
    LayerSpec {
        keyword: "avgpool2d",
        aliases: &["average_pooling2d", "averagepooling2d"],
        positional: &["pool_size", "strides", "padding"],
        named: &[],
        build: avgpool2d,
    },
    LayerSpec {
        keyword: "globalavgpool2d",
        aliases: &["global_average_pooling2d", "globalaveragepooling2d"],
        positional: &[],
        named: &["keepdims"],
        build: globalavgpool2d,
    },
    LayerSpec {
        keyword: "globalmaxpool2d",
        aliases: &["global_max_pooling2d", "globalmaxpooling2d"],
        positional: &[],
        named: &["keepdims"],
        build: globalmaxpool2d,
    },
    LayerSpec {
        keyword: "flatten",
        aliases: &[],
        positional: &[],
        named: &[],
        build: flatten,
    },
    LayerSpec {
        keyword: "dropout",
        aliases: &[],
        positional: &["rate"],
        named: &[],
        build: dropout,
    },
    LayerSpec {
        keyword: "batchnorm",
        aliases: &["batch_normalization"],
        positional: &[],
        named: &["momentum", "epsilon", "center", "scale"],
        build: batchnorm,
    },
    LayerSpec {
        keyword: "activation",
        aliases: &[],
        positional: &["activation"],
        named: &[],
        build: activation,
    },
    LayerSpec {
        keyword: "leakyrelu",
        aliases: &["leaky_re_lu"],
        positional: &["negative_slope"],
        named: &[],
        build: leakyrelu,
    },
    LayerSpec {
        keyword: "elu",
        aliases: &[],
        positional: &["alpha"],
        named: &[],
        build: elu,
    },
];

/// Keras's LeakyReLU layer's default `negative_slope`.
pub const LEAKY_RELU_LAYER_SLOPE: f64 = 0.3;

/// Builds a layer from its statement; `None` when errors were recorded.
pub type Builder = fn(&mut Args) -> Option<LayerKind>;

/// Arguments every layer takes; `if=false` leaves the layer out (with a
/// parameter, `batchnorm if=$bn`, it switches a layer per variant).
pub const COMMON: [&str; 3] = ["name", "trainable", "if"];

/// The layer a keyword (or one of its aliases) names.
pub fn spec(keyword: &str) -> Option<&'static LayerSpec> {
    LAYERS
        .iter()
        .find(|l| l.keyword == keyword || l.aliases.contains(&keyword))
}

/// Every spelling of every layer, for did-you-mean.
pub fn spellings() -> impl Iterator<Item = &'static str> {
    LAYERS
        .iter()
        .flat_map(|l| std::iter::once(l.keyword).chain(l.aliases.iter().copied()))
}

impl LayerSpec {
    /// Every argument the layer accepts: positional, named and common.
    pub fn arguments(&self) -> Vec<&'static str> {
        self.positional
            .iter()
            .chain(self.named)
            .chain(&COMMON)
            .copied()
            .collect()
    }
}

fn activation_arg(a: &mut Args) -> Option<Activation> {
    a.or("activation", Activation::Linear, |v| {
        args::choice(v, "activation", &Activation::ALL)
    })
}

fn padding_arg(a: &mut Args) -> Option<Padding> {
    a.or("padding", Padding::Valid, |v| {
        args::choice(v, "padding", &[("valid", Padding::Valid), ("same", Padding::Same)])
    })
}

fn initializer_arg(a: &mut Args, name: &str, default: Init) -> Option<Init> {
    a.or(name, default, |v| match &v.kind {
        ValueKind::List(_) | ValueKind::Number(..) => Ok(Init::Values {
            values: args::numbers(v, name)?,
            span: v.span,
        }),
        _ => args::choice(v, name, &Init::NAMED),
    })
}

fn regularizer_arg(a: &mut Args) -> Option<Option<Regularizer>> {
    a.or("kernel_regularizer", None, |v| {
        super::regularizer::regularizer(v, "kernel_regularizer").map(Some)
    })
}

/// A count, with `help` when the value is zero or negative.
fn count(v: &Value, what: &str, help: &str) -> Result<usize, Diagnostic> {
    args::count(v, what).map_err(|e| match v.kind {
        ValueKind::Number(x, _) if x < 1.0 => e.help(help),
        _ => e,
    })
}

fn conv2d(a: &mut Args) -> Option<LayerKind> {
    // `conv2d 3x3 32` is a common slip: say which comes first.
    let swapped = matches!(
        (a.positional(0).map(|v| &v.kind), a.positional(1).map(|v| &v.kind)),
        (Some(ValueKind::Dims(_)), Some(ValueKind::Number(..)))
    );
    if swapped && let Some(first) = a.positional(0) {
        a.errors.push(
            Diagnostic::error(
                first.span,
                "conv2d takes the number of filters first, then the kernel size",
            )
            .label("this is a kernel size")
            .help("write e.g. `conv2d 32 3x3`"),
        );
        return None;
    }
    let filters = a.require("filters", "write e.g. `conv2d 32 3x3` for 32 filters of 3x3", |v| {
        count(
            v,
            "the number of filters",
            "a convolution needs at least one filter, e.g. `conv2d 32 3x3`",
        )
    });
    let kernel_size = a.require("kernel_size", "write e.g. `conv2d 32 3x3` for a 3x3 kernel", |v| {
        args::window(v, "kernel_size")
    });
    let strides = a.or("strides", [1, 1], |v| args::window(v, "strides"));
    let padding = padding_arg(a);
    let activation = activation_arg(a);
    let use_bias = a.or("use_bias", true, |v| args::boolean(v, "use_bias"));
    let kernel_initializer = initializer_arg(a, "kernel_initializer", Init::GlorotUniform);
    let bias_initializer = initializer_arg(a, "bias_initializer", Init::Zeros);
    let kernel_regularizer = regularizer_arg(a);
    Some(LayerKind::Conv2D(Conv2D {
        filters: filters?,
        kernel_size: kernel_size?,
        strides: strides?,
        padding: padding?,
        activation: activation?,
        use_bias: use_bias?,
        kernel_initializer: kernel_initializer?,
        bias_initializer: bias_initializer?,
        kernel_regularizer: kernel_regularizer?,
    }))
}

fn dense(a: &mut Args) -> Option<LayerKind> {
    let units = a.require("units", "write e.g. `dense 128` for 128 units", |v| {
        count(
            v,
            "the number of units",
            "a dense layer needs at least one unit, e.g. `dense 128`",
        )
    });
    let activation = activation_arg(a);
    let use_bias = a.or("use_bias", true, |v| args::boolean(v, "use_bias"));
    let kernel_initializer = initializer_arg(a, "kernel_initializer", Init::GlorotUniform);
    let bias_initializer = initializer_arg(a, "bias_initializer", Init::Zeros);
    let kernel_regularizer = regularizer_arg(a);
    Some(LayerKind::Dense(Dense {
        units: units?,
        activation: activation?,
        use_bias: use_bias?,
        kernel_initializer: kernel_initializer?,
        bias_initializer: bias_initializer?,
        kernel_regularizer: kernel_regularizer?,
    }))
}

fn depthwiseconv2d(a: &mut Args) -> Option<LayerKind> {
    let kernel_size = a.require(
        "kernel_size",
        "write e.g. `depthwiseconv2d 3x3` for a 3x3 kernel per channel",
        |v| args::window(v, "kernel_size"),
    );
    let strides = a.or("strides", [1, 1], |v| args::window(v, "strides"));
    let padding = padding_arg(a);
    let depth_multiplier = a.or("depth_multiplier", 1, |v| {
        count(
            v,
            "the depth multiplier",
            "each channel needs at least one filter: `depth_multiplier=1` (the default) keeps the channel count",
        )
    });
    let activation = activation_arg(a);
    let use_bias = a.or("use_bias", true, |v| args::boolean(v, "use_bias"));
    let depthwise_initializer = initializer_arg(a, "depthwise_initializer", Init::GlorotUniform);
    let bias_initializer = initializer_arg(a, "bias_initializer", Init::Zeros);
    Some(LayerKind::DepthwiseConv2D(DepthwiseConv2D {
        kernel_size: kernel_size?,
        strides: strides?,
        padding: padding?,
        depth_multiplier: depth_multiplier?,
        activation: activation?,
        use_bias: use_bias?,
        depthwise_initializer: depthwise_initializer?,
        bias_initializer: bias_initializer?,
    }))
}

/// A pooling window; `pool_size` defaults to 2x2 where Keras has a default
/// (max pooling) and is required where it has none (average pooling).
fn pool(a: &mut Args, default_size: Option<[usize; 2]>) -> Option<Pool2D> {
    let pool_size = match default_size {
        Some(size) => a.or("pool_size", size, |v| args::window(v, "pool_size")),
        None => a.require("pool_size", "write e.g. `avgpool2d 2x2` to average 2x2 windows", |v| {
            args::window(v, "pool_size")
        }),
    };
    // Keras: strides default to the pool size.
    let strides = match pool_size {
        Some(pool) => a.or("strides", pool, |v| args::window(v, "strides")),
        None => None,
    };
    let padding = padding_arg(a);
    Some(Pool2D {
        pool_size: pool_size?,
        strides: strides?,
        padding: padding?,
    })
}

fn maxpool2d(a: &mut Args) -> Option<LayerKind> {
    pool(a, Some([2, 2])).map(LayerKind::MaxPool2D)
}

fn avgpool2d(a: &mut Args) -> Option<LayerKind> {
    pool(a, None).map(LayerKind::AvgPool2D)
}

fn keepdims(a: &mut Args) -> Option<bool> {
    a.or("keepdims", false, |v| args::boolean(v, "keepdims"))
}

fn globalavgpool2d(a: &mut Args) -> Option<LayerKind> {
    Some(LayerKind::GlobalAvgPool2D { keepdims: keepdims(a)? })
}

fn globalmaxpool2d(a: &mut Args) -> Option<LayerKind> {
    Some(LayerKind::GlobalMaxPool2D { keepdims: keepdims(a)? })
}

fn flatten(_: &mut Args) -> Option<LayerKind> {
    Some(LayerKind::Flatten)
}

fn dropout(a: &mut Args) -> Option<LayerKind> {
    let rate = a.require(
        "rate",
        "write e.g. `dropout 0.5` to drop half of the values while training",
        |v| {
            args::number_in(v, "the dropout rate", 0.0, 1.0, false).map_err(|e| {
                e.help("the rate is the fraction of values dropped while training: 0 keeps all, 1 would drop all; e.g. `dropout 0.5`")
            })
        },
    )?;
    Some(LayerKind::Dropout { rate })
}

fn batchnorm(a: &mut Args) -> Option<LayerKind> {
    let momentum = a.or("momentum", 0.99, |v| args::number_in(v, "momentum", 0.0, 1.0, true));
    let epsilon = a.or("epsilon", 1e-3, |v| args::positive(v, "epsilon"));
    let center = a.or("center", true, |v| args::boolean(v, "center"));
    let scale = a.or("scale", true, |v| args::boolean(v, "scale"));
    Some(LayerKind::BatchNorm(BatchNorm {
        momentum: momentum?,
        epsilon: epsilon?,
        center: center?,
        scale: scale?,
    }))
}

fn activation(a: &mut Args) -> Option<LayerKind> {
    let f = a.require("activation", "write e.g. `activation relu`", |v| {
        args::choice(v, "activation", &Activation::ALL)
    })?;
    Some(LayerKind::Activation(f))
}

fn leakyrelu(a: &mut Args) -> Option<LayerKind> {
    let negative_slope = a.or("negative_slope", LEAKY_RELU_LAYER_SLOPE, |v| {
        args::number_in(v, "negative_slope", 0.0, f64::INFINITY, false)
    })?;
    Some(LayerKind::LeakyRelu { negative_slope })
}

fn elu(a: &mut Args) -> Option<LayerKind> {
    let alpha = a.or("alpha", Activation::ELU_ALPHA, |v| args::positive(v, "alpha"))?;
    Some(LayerKind::Elu { alpha })
}
