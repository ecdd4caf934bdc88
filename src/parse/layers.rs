//! Every layer of the language: its keyword, which arguments it takes (in
//! Keras's order for the positional ones) and Keras's default for each.

use super::args::{self, Args};
use super::ast::{Activation, BatchNorm, Conv2D, Dense, Init, LayerKind, MaxPool2D, Padding};
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
pub const LAYERS: [LayerSpec; 7] = [
    LayerSpec {
        keyword: "conv2d",
        aliases: &[],
        positional: &["filters", "kernel_size", "strides", "padding"],
        named: &["activation", "use_bias", "kernel_initializer", "bias_initializer"],
        build: conv2d,
    },
    LayerSpec {
        keyword: "dense",
        aliases: &[],
        positional: &["units", "activation"],
        named: &["use_bias", "kernel_initializer", "bias_initializer"],
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
];

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
    Some(LayerKind::Conv2D(Conv2D {
        filters: filters?,
        kernel_size: kernel_size?,
        strides: strides?,
        padding: padding?,
        activation: activation?,
        use_bias: use_bias?,
        kernel_initializer: kernel_initializer?,
        bias_initializer: bias_initializer?,
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
    Some(LayerKind::Dense(Dense {
        units: units?,
        activation: activation?,
        use_bias: use_bias?,
        kernel_initializer: kernel_initializer?,
        bias_initializer: bias_initializer?,
    }))
}

fn maxpool2d(a: &mut Args) -> Option<LayerKind> {
    let pool_size = a.or("pool_size", [2, 2], |v| args::window(v, "pool_size"));
    // Keras: strides default to the pool size.
    let strides = match pool_size {
        Some(pool) => a.or("strides", pool, |v| args::window(v, "strides")),
        None => None,
    };
    let padding = padding_arg(a);
    Some(LayerKind::MaxPool2D(MaxPool2D {
        pool_size: pool_size?,
        strides: strides?,
        padding: padding?,
    }))
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
