//! A model back to `.cnn` text: what `cnnc import` writes. Parsing the text
//! gives the same input and layers again (the tests check it on every model),
//! so the importers build an AST and let this print it, rather than each
//! writing the language by hand.
//!
//! Arguments at Keras's defaults are left out, as a person would write the
//! file; a layer's name is written only where it differs from the automatic
//! one the parser would give it. The training block is not printed:
//! imported models have none.

use super::AutoNames;
use super::ast::{Activation, Init, Layer, LayerKind, Model, Padding, Pool2D, Regularizer};
use super::layers::LEAKY_RELU_LAYER_SLOPE;
use std::fmt::Write;

/// The model as `.cnn` text, or the name that the language cannot write
/// (one holding a double quote or a line break).
pub fn model(model: &Model) -> Result<String, String> {
    let mut out = String::new();
    let _ = writeln!(out, "model {}", value(&model.name)?);
    let _ = writeln!(out, "input {}", size(&model.input.shape));
    let mut names = AutoNames::default();
    for layer in &model.layers {
        let _ = writeln!(out, "{}", statement(layer, &mut names)?);
    }
    Ok(out)
}

/// One layer's statement. Each kind lists its arguments in the language's
/// order; the match has no wildcard, so a new layer kind must say here how
/// it is written.
fn statement(layer: &Layer, names: &mut AutoNames) -> Result<String, String> {
    let mut words = Vec::new();
    match &layer.kind {
        LayerKind::Conv2D(c) => {
            words.push(format!("conv2d {} {}", c.filters, size(&c.kernel_size)));
            if c.strides != [1, 1] {
                words.push(format!("strides={}", size(&c.strides)));
            }
            words.extend(padding(c.padding));
            words.extend(activation(c.activation));
            words.extend(bias_and_initializers(
                c.use_bias,
                &c.kernel_initializer,
                &c.bias_initializer,
            ));
            words.extend(regularizer(c.kernel_regularizer));
        }
        LayerKind::Dense(d) => {
            words.push(format!("dense {}", d.units));
            words.extend(activation(d.activation));
            words.extend(bias_and_initializers(
                d.use_bias,
                &d.kernel_initializer,
                &d.bias_initializer,
            ));
            words.extend(regularizer(d.kernel_regularizer));
        }
        LayerKind::DepthwiseConv2D(c) => {
            words.push(format!("depthwiseconv2d {}", size(&c.kernel_size)));
            if c.strides != [1, 1] {
                words.push(format!("strides={}", size(&c.strides)));
            }
            words.extend(padding(c.padding));
            if c.depth_multiplier != 1 {
                words.push(format!("depth_multiplier={}", c.depth_multiplier));
            }
            words.extend(activation(c.activation));
            if !c.use_bias {
                words.push("use_bias=false".into());
            }
            if c.depthwise_initializer != Init::GlorotUniform {
                words.push(format!(
                    "depthwise_initializer={}",
                    initializer(&c.depthwise_initializer)
                ));
            }
            if c.use_bias && c.bias_initializer != Init::Zeros {
                words.push(format!("bias_initializer={}", initializer(&c.bias_initializer)));
            }
        }
        LayerKind::MaxPool2D(p) => words.extend(pool("maxpool2d", p)),
        LayerKind::AvgPool2D(p) => words.extend(pool("avgpool2d", p)),
        LayerKind::GlobalAvgPool2D { keepdims } | LayerKind::GlobalMaxPool2D { keepdims } => {
            let keyword = match layer.kind {
                LayerKind::GlobalAvgPool2D { .. } => "globalavgpool2d",
                _ => "globalmaxpool2d",
            };
            words.push(keyword.into());
            if *keepdims {
                words.push("keepdims=true".into());
            }
        }
        LayerKind::Flatten => words.push("flatten".into()),
        LayerKind::Dropout { rate } => words.push(format!("dropout {rate}")),
        LayerKind::BatchNorm(b) => {
            words.push("batchnorm".into());
            if b.momentum != 0.99 {
                words.push(format!("momentum={}", b.momentum));
            }
            if b.epsilon != 1e-3 {
                words.push(format!("epsilon={}", b.epsilon));
            }
            if !b.center {
                words.push("center=false".into());
            }
            if !b.scale {
                words.push("scale=false".into());
            }
        }
        LayerKind::Activation(a) => words.push(format!("activation {}", a.name())),
        LayerKind::LeakyRelu { negative_slope } => {
            words.push("leakyrelu".into());
            if *negative_slope != LEAKY_RELU_LAYER_SLOPE {
                words.push(format!("negative_slope={negative_slope}"));
            }
        }
        LayerKind::Elu { alpha } => {
            words.push("elu".into());
            if *alpha != Activation::ELU_ALPHA {
                words.push(format!("alpha={alpha}"));
            }
        }
    }
    if names.peek(&layer.kind) == layer.name {
        names.take(&layer.kind);
    } else {
        words.push(format!("name={}", value(&layer.name)?));
    }
    if !layer.trainable {
        words.push("trainable=false".into());
    }
    Ok(words.join(" "))
}

/// `28x28x1`, `3x3`, or `784` for a vector.
fn size(dims: &[usize]) -> String {
    crate::shape::dims(dims)
}

/// A pooling layer's words: the pool size, strides unless they are the
/// pool size, padding unless `valid`.
fn pool(keyword: &str, p: &Pool2D) -> Vec<String> {
    let mut words = vec![format!("{keyword} {}", size(&p.pool_size))];
    if p.strides != p.pool_size {
        words.push(format!("strides={}", size(&p.strides)));
    }
    words.extend(padding(p.padding));
    words
}

fn padding(p: Padding) -> Option<String> {
    (p != Padding::Valid).then(|| format!("padding={}", p.name()))
}

fn activation(a: Activation) -> Option<String> {
    (a != Activation::Linear).then(|| format!("activation={}", a.name()))
}

fn bias_and_initializers(use_bias: bool, kernel: &Init, bias: &Init) -> Vec<String> {
    let mut words = Vec::new();
    if !use_bias {
        words.push("use_bias=false".into());
    }
    if *kernel != Init::GlorotUniform {
        words.push(format!("kernel_initializer={}", initializer(kernel)));
    }
    if use_bias && *bias != Init::Zeros {
        words.push(format!("bias_initializer={}", initializer(bias)));
    }
    words
}

fn regularizer(r: Option<Regularizer>) -> Option<String> {
    r.map(|r| format!("kernel_regularizer={}", r.text()))
}

fn initializer(init: &Init) -> String {
    match init {
        Init::Values { values, .. } => {
            let values: Vec<String> = values.iter().map(f64::to_string).collect();
            format!("[{}]", values.join(", "))
        }
        named => Init::NAMED
            .iter()
            .find(|(_, i)| i == named)
            .map_or_else(String::new, |(name, _)| (*name).to_string()),
    }
}

/// A name as a value: bare where the grammar reads it as a name, else
/// quoted.
fn value(text: &str) -> Result<String, String> {
    let mut chars = text.chars();
    let bare = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    if bare && text != "true" && text != "false" {
        Ok(text.to_string())
    } else if text.contains(['"', '\n', '\r']) {
        Err(text.to_string())
    } else {
        Ok(format!("\"{text}\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;

    /// The input and layers of `text`, without the spans and lines that
    /// differ between two spellings of one model.
    fn meaning(text: &str) -> (String, Vec<usize>, Vec<(String, LayerKind, bool)>) {
        let m = parse("m.cnn", text).unwrap_or_else(|d| panic!("{}", d.render()));
        let layers = m
            .layers
            .into_iter()
            .map(|l| {
                let kind = match l.kind {
                    LayerKind::Conv2D(mut c) => {
                        strip(&mut c.kernel_initializer);
                        strip(&mut c.bias_initializer);
                        LayerKind::Conv2D(c)
                    }
                    LayerKind::Dense(mut d) => {
                        strip(&mut d.kernel_initializer);
                        strip(&mut d.bias_initializer);
                        LayerKind::Dense(d)
                    }
                    other => other,
                };
                (l.name, kind, l.trainable)
            })
            .collect();
        (m.name, m.input.shape, layers)
    }

    fn strip(init: &mut Init) {
        if let Init::Values { span, .. } = init {
            *span = crate::diag::Span::new(0, 0);
        }
    }

    fn round_trip(text: &str) {
        let m = parse("m.cnn", text).unwrap_or_else(|d| panic!("{}", d.render()));
        let printed = model(&m).unwrap();
        assert_eq!(meaning(&printed), meaning(text), "printed:\n{printed}");
    }

    #[test]
    fn every_bundled_model_prints_back_to_itself() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/models");
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "cnn") {
                round_trip(&std::fs::read_to_string(&path).unwrap());
            }
        }
    }

    #[test]
    fn every_argument_prints_back_to_itself() {
        round_trip(
            "model \"my model\"\ninput 9x7x2\n\
             conv2d 3 2x1 strides=2x1 padding=same activation=tanh use_bias=false kernel_initializer=he_normal name=first trainable=false\n\
             conv2d 2 1x1 kernel_initializer=[1, -0.5, 0.25, 1e-7] bias_initializer=ones kernel_regularizer=l1(0.5) name=\"2nd\"\n\
             maxpool2d 3x2 strides=1x2 padding=same\n\
             batchnorm momentum=0.9 epsilon=0.00001 center=false scale=false\n\
             activation sigmoid name=conv2d\n\
             flatten\ndropout 0.125\ndense 4 activation=softmax bias_initializer=random_normal kernel_regularizer=l1_l2(l1=0.001, l2=0.02) name=dense_1\ndense 2 kernel_regularizer=l2(0.01)\n",
        );
        round_trip(
            "input 12x12x3\n\
             depthwiseconv2d 3x2 strides=2 padding=same depth_multiplier=3 activation=gelu use_bias=false depthwise_initializer=he_uniform\n\
             depthwiseconv2d 1 bias_initializer=ones\n\
             avgpool2d 2x3 strides=1x2 padding=same\nleakyrelu\nleakyrelu 0.1\nelu\nelu alpha=0.5\n\
             activation selu\nactivation swish\nglobalmaxpool2d keepdims=true\nglobalavgpool2d\n\
             dense 3 activation=leaky_relu\ndense 2 activation=softplus\nactivation elu\n",
        );
    }

    #[test]
    fn names_the_parser_would_give_are_left_out() {
        let m = parse(
            "m.cnn",
            "input 4\ndense 3 name=dense_1\ndense 2\nactivation relu name=dense_7\n",
        )
        .unwrap();
        assert_eq!(
            model(&m).unwrap(),
            "model m\ninput 4\ndense 3 name=dense_1\ndense 2\nactivation relu name=dense_7\n"
        );
    }

    #[test]
    fn a_name_with_a_quote_cannot_be_written() {
        assert_eq!(value("a\"b"), Err("a\"b".to_string()));
        assert_eq!(value("true").unwrap(), "\"true\"");
        assert_eq!(value("conv2d_1").unwrap(), "conv2d_1");
    }
}
