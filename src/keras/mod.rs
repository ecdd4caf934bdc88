//! Keras 3 `.keras` archives, read as cnnc layers: the zip's `config.json`
//! gives the Sequential model's layer stack, its `model.weights.h5` the
//! weights (HDF5, read by the pure-Rust `hdf5-reader`).
//!
//! Keras and cnnc share layouts (NHWC images, HWIO kernels, dense (in, out))
//! and layer names, so the weights are copied as they are. The file
//! addresses a layer by its class, not its name (names vary between two
//! instances of one model): the variables of the second Conv2D of the
//! stack, whatever its name, are the datasets `layers/conv2d_1/vars/0`
//! (kernel) and `.../1` (bias); a batchnorm's are gamma, beta, moving mean
//! and moving variance in that order (gamma absent with `scale=False`, beta
//! with `center=False`); a DepthwiseConv2D's kernel is (KH, KW, C, M), as
//! cnnc's. A layer or setting cnnc cannot express is an error that names
//! the layer and its class.

use crate::convert::{Imported, Stack, Weights};
use crate::parse::ast::{
    Activation, BatchNorm, Conv2D, Dense, DepthwiseConv2D, Init, LayerKind, Padding, Pool2D, Regularizer,
};
use crate::shape::Role;
use hdf5_reader::Hdf5File;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::io::{Cursor, Read};

/// The Keras classes read, each with its reader.
const CLASSES: [(&str, Reader); 19] = [
    ("Conv2D", conv2d),
    ("DepthwiseConv2D", depthwise_conv2d),
    ("Dense", dense),
    ("MaxPooling2D", max_pooling2d),
    ("MaxPool2D", max_pooling2d),
    ("AveragePooling2D", average_pooling2d),
    ("AvgPool2D", average_pooling2d),
    ("GlobalAveragePooling2D", |w, l| global_pooling2d(w, l, true)),
    ("GlobalAvgPool2D", |w, l| global_pooling2d(w, l, true)),
    ("GlobalMaxPooling2D", |w, l| global_pooling2d(w, l, false)),
    ("GlobalMaxPool2D", |w, l| global_pooling2d(w, l, false)),
    ("Flatten", flatten),
    ("Dropout", dropout),
    ("BatchNormalization", batch_normalization),
    ("Activation", activation),
    ("ReLU", relu),
    ("LeakyReLU", leaky_relu),
    ("ELU", elu),
    ("Softmax", softmax),
];

/// Reads one layer's config and weights; the message says what cannot be
/// read.
type Reader = fn(&mut Walk, &Layer) -> Result<(), String>;

/// The largest member of the archive read: more than the weights of the
/// largest model cnnc accepts (2^30 f32 values).
const MAX_MEMBER: u64 = 5 << 30;

/// Reads a `.keras` archive's bytes.
pub fn import(bytes: &[u8]) -> Result<Imported, String> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| format!("is not a zip archive ({e})"))?;
    let config = member(&mut zip, "config.json")?;
    let config: Value =
        serde_json::from_slice(&config).map_err(|e| format!("has a config.json that is not JSON ({e})"))?;
    let version = member(&mut zip, "metadata.json")
        .ok()
        .and_then(|m| serde_json::from_slice::<Value>(&m).ok())
        .and_then(|m| m.get("keras_version").and_then(Value::as_str).map(String::from));
    let weights = member(&mut zip, "model.weights.h5")?;
    let h5 = Hdf5File::from_vec(weights).map_err(|e| format!("has a model.weights.h5 that cnnc cannot read ({e})"))?;

    let class = config.get("class_name").and_then(Value::as_str).unwrap_or("");
    if class != "Sequential" {
        return Err(format!(
            "holds a `{class}` model; cnnc reads Sequential models (keras.Sequential([...]))"
        ));
    }
    let model = config
        .get("config")
        .and_then(Value::as_object)
        .ok_or("has no model config")?;
    let layers = model
        .get("layers")
        .and_then(Value::as_array)
        .ok_or("has no list of layers")?;
    let mut walk = Walk {
        h5,
        stack: Stack::default(),
        rank: 0,
        notes: Vec::new(),
    };
    let mut stored = HashMap::new();
    let mut input = None;
    for (i, value) in layers.iter().enumerate() {
        let mut layer = Layer::new(value, i)?;
        if layer.class == "InputLayer" {
            if i > 0 {
                return Err(format!("{}: an input in the middle of the stack", layer.label()));
            }
            input = Some(batch_shape(layer.config, "batch_shape").map_err(|e| format!("{}: {e}", layer.label()))?);
            continue;
        }
        if input.is_none() {
            // A model built without keras.Input: its first layer, or the
            // model, recorded the shape it was built on.
            input = Some(
                batch_shape(layer.config, "batch_shape")
                    .or_else(|_| batch_shape(layer.config, "batch_input_shape"))
                    .or_else(|_| batch_shape(model, "build_input_shape"))
                    .map_err(|_| {
                        "does not record its input shape: build the model (call it once) before saving".to_string()
                    })?,
            );
        }
        layer.stored = unique(snake_case(layer.class), &mut stored);
        if walk.rank == 0 {
            walk.rank = input.as_ref().map_or(0, Vec::len);
        }
        let Some(&(_, read)) = CLASSES.iter().find(|(c, _)| *c == layer.class) else {
            let known: Vec<&str> = CLASSES.iter().map(|(c, _)| *c).collect();
            return Err(format!(
                "{}: cnnc has no such layer\n  = note: cnnc reads {}",
                layer.label(),
                known.join(", ")
            ));
        };
        read(&mut walk, &layer).map_err(|e| format!("{}: {e}", layer.label()))?;
    }
    Ok(Imported {
        stack: walk.stack,
        input: input.ok_or("has no layers")?,
        origin: version.map_or_else(|| "Keras".to_string(), |v| format!("Keras {v}")),
        notes: walk.notes,
    })
}

/// A member of the archive, whole.
fn member(zip: &mut zip::ZipArchive<Cursor<&[u8]>>, name: &str) -> Result<Vec<u8>, String> {
    let file = zip
        .by_name(name)
        .map_err(|_| format!("has no {name}: is it a Keras 3 .keras file?"))?;
    if file.size() > MAX_MEMBER {
        return Err(format!("has a {name} of {} bytes, more than cnnc reads", file.size()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_MEMBER)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("has a {name} that cannot be unpacked ({e})"))?;
    Ok(bytes)
}

/// `[null, 28, 28, 1]`: the shape without the batch axis.
fn batch_shape(config: &Map<String, Value>, key: &str) -> Result<Vec<usize>, String> {
    let shape = config
        .get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| format!("has no {key}"))?;
    shape
        .iter()
        .skip(1)
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()).filter(|&d| d > 0))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| {
            format!(
                "has {key} {}; cnnc needs every size but the batch's",
                Value::from(shape.clone())
            )
        })
}

struct Walk {
    h5: Hdf5File,
    stack: Stack,
    /// Of the value the next layer reads, without the batch axis.
    rank: usize,
    notes: Vec<String>,
}

/// One entry of the config's `layers`.
struct Layer<'a> {
    class: &'a str,
    name: String,
    config: &'a Map<String, Value>,
    /// Where model.weights.h5 keeps its variables: `layers/STORED/vars`.
    stored: String,
}

impl<'a> Layer<'a> {
    fn new(value: &'a Value, index: usize) -> Result<Layer<'a>, String> {
        let config = value
            .get("config")
            .and_then(Value::as_object)
            .ok_or_else(|| format!("layer {index} has no config"))?;
        let class = value.get("class_name").and_then(Value::as_str).unwrap_or("");
        let name = config
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("layer {index} ({class}) has no name"))?;
        Ok(Layer {
            class,
            name: name.to_string(),
            config,
            stored: String::new(),
        })
    }

    fn label(&self) -> String {
        format!("layer `{}` ({})", self.name, self.class)
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.config.get(key).filter(|v| !v.is_null())
    }

    fn string(&self, key: &str, default: &str) -> Result<String, String> {
        match self.get(key) {
            None => Ok(default.to_string()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(format!("has {key} {v}, not a string")),
        }
    }

    /// `use_bias`, and the weights it gives a layer with a kernel.
    fn kernel_and_bias(&self) -> Result<(bool, &'static [Role]), String> {
        let use_bias = self.boolean("use_bias", true)?;
        let roles: &'static [Role] = if use_bias {
            &[Role::Kernel, Role::Bias]
        } else {
            &[Role::Kernel]
        };
        Ok((use_bias, roles))
    }

    fn boolean(&self, key: &str, default: bool) -> Result<bool, String> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| format!("has {key} {v}, not true or false")),
        }
    }

    fn number(&self, key: &str, default: f64) -> Result<f64, String> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| format!("has {key} {v}, not a number")),
        }
    }

    fn count(&self, key: &str) -> Result<usize, String> {
        let v = self.get(key).ok_or_else(|| format!("has no {key}"))?;
        v.as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("has {key} {v}, not a count"))
    }

    /// A size: `[3, 3]`, or `3` for both sides.
    fn pair(&self, key: &str) -> Result<Option<[usize; 2]>, String> {
        let Some(v) = self.get(key) else { return Ok(None) };
        let one = |v: &Value| v.as_u64().and_then(|n| usize::try_from(n).ok()).filter(|&n| n > 0);
        let pair = match v {
            Value::Array(a) => match &a[..] {
                [h, w] => one(h).zip(one(w)).map(|(h, w)| [h, w]),
                _ => None,
            },
            v => one(v).map(|n| [n, n]),
        };
        pair.map(Some)
            .ok_or_else(|| format!("has {key} {v}, not a height and width"))
    }

    fn padding(&self) -> Result<Padding, String> {
        match self.string("padding", "valid")?.as_str() {
            "valid" => Ok(Padding::Valid),
            "same" => Ok(Padding::Same),
            other => Err(format!("has padding `{other}`; cnnc pads `valid` or `same`")),
        }
    }

    fn channels_last(&self) -> Result<(), String> {
        match self.string("data_format", "channels_last")?.as_str() {
            "channels_last" => Ok(()),
            other => Err(format!("has data_format `{other}`; cnnc's images are channels_last")),
        }
    }

    fn activation(&self) -> Result<Activation, String> {
        let name = self.string("activation", "linear")?;
        activation_named(&name)
    }

    /// A kernel or bias initializer: only for training the imported model
    /// from scratch, so one cnnc lacks becomes its default, with a note.
    fn initializer(&self, key: &str, default: Init, notes: &mut Vec<String>) -> Init {
        let Some(v) = self.get(key) else { return default };
        let class = v.get("class_name").and_then(Value::as_str).unwrap_or("");
        let config = v.get("config");
        let param = |k: &str| config.and_then(|c| c.get(k)).and_then(Value::as_f64);
        // Keras's own defaults only: cnnc's random_uniform and
        // random_normal have no parameters.
        let defaults = match class {
            "RandomUniform" => param("minval") == Some(-0.05) && param("maxval") == Some(0.05),
            "RandomNormal" => param("mean") == Some(0.0) && param("stddev") == Some(0.05),
            _ => true,
        };
        let named = Init::NAMED
            .iter()
            .find(|(name, _)| camel(name) == class && defaults)
            .map(|(_, init)| init.clone());
        named.unwrap_or_else(|| {
            notes.push(format!(
                "{}: {key} {class} is not one of cnnc's; the .cnn file uses {} (it matters only when training from scratch)",
                self.label(),
                crate::parse::ast::Init::NAMED
                    .iter()
                    .find(|(_, i)| *i == default)
                    .map_or("", |(n, _)| n)
            ));
            default
        })
    }

    /// Keras's L1, L2 and L1L2 as cnnc's; another (orthogonal, custom) is
    /// dropped with a note.
    fn regularizer(&self, key: &str, notes: &mut Vec<String>) -> Option<Regularizer> {
        let v = self.get(key)?;
        let class = v.get("class_name").and_then(Value::as_str).unwrap_or("");
        // Keras keeps L1's factor as a float32 (0.0020000000949949026),
        // and applies every factor as one: its shortest float32 digits.
        let factor = |k: &str| {
            v.get("config")
                .and_then(|c| c.get(k))
                .and_then(Value::as_f64)
                .filter(|f| f.is_finite() && *f >= 0.0 && *f <= f64::from(f32::MAX))
                .and_then(|f| (f as f32).to_string().parse::<f64>().ok())
        };
        let read = match class {
            "L1" => factor("l1").map(Regularizer::L1),
            "L2" => factor("l2").map(Regularizer::L2),
            "L1L2" => factor("l1")
                .zip(factor("l2"))
                .map(|(l1, l2)| Regularizer::L1L2 { l1, l2 }),
            _ => None,
        };
        if read.is_none() {
            notes.push(format!(
                "{}: cnnc does not apply its {key} {class} when training (it has l1, l2 and l1_l2)",
                self.label()
            ));
        }
        read
    }

    /// A note for each setting that changes only how the layer trains.
    fn training_only(&self, keys: &[&str], notes: &mut Vec<String>) {
        for key in keys {
            if self.get(key).is_some() {
                notes.push(format!("{}: cnnc does not apply its {key} when training", self.label()));
            }
        }
    }
}

/// Keras's `naming.to_snake_case` of a class name, as the weights file
/// names the layer's group: `Conv2D` is `conv2d`, `MaxPooling2D`
/// `max_pooling2d`, `ReLU` `re_lu`. Its three regular expressions, in
/// order: drop non-word characters; `(.)([A-Z][a-z]+)` to `\1_\2`;
/// `([a-z])([A-Z])` to `\1_\2`; then lowercase.
fn snake_case(class: &str) -> String {
    let c: Vec<char> = class
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let mut words = Vec::with_capacity(c.len() + 4);
    let mut i = 0;
    while i < c.len() {
        words.push(c[i]);
        let capitalized = |j: usize| {
            c.get(j).is_some_and(char::is_ascii_uppercase) && c.get(j + 1).is_some_and(char::is_ascii_lowercase)
        };
        if capitalized(i + 1) {
            words.push('_');
            words.push(c[i + 1]);
            i += 2;
            while c.get(i).is_some_and(char::is_ascii_lowercase) {
                words.push(c[i]);
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    let mut out = String::with_capacity(words.len() + 4);
    let mut i = 0;
    while i < words.len() {
        out.push(words[i].to_ascii_lowercase());
        if words[i].is_ascii_lowercase() && words.get(i + 1).is_some_and(char::is_ascii_uppercase) {
            out.push('_');
            out.push(words[i + 1].to_ascii_lowercase());
            i += 2;
        } else {
            i += 1;
        }
    }
    out
}

/// Keras's `_get_unique_name`: `conv2d`, then `conv2d_1`, ... per name.
fn unique(name: String, used: &mut HashMap<String, usize>) -> String {
    match used.get_mut(&name) {
        Some(n) => {
            *n += 1;
            format!("{name}_{n}")
        }
        None => {
            used.insert(name.clone(), 0);
            name
        }
    }
}

/// `glorot_uniform` as Keras's class name, `GlorotUniform`.
fn camel(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map_or_else(String::new, |f| f.to_ascii_uppercase().to_string() + c.as_str())
        })
        .collect()
}

fn activation_named(name: &str) -> Result<Activation, String> {
    Activation::ALL
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, a)| *a)
        .ok_or_else(|| {
            let known: Vec<&str> = Activation::ALL.iter().map(|(n, _)| *n).collect();
            format!("has activation `{name}`; cnnc's are {}", known.join(", "))
        })
}

impl Walk {
    /// The layer's variables, `layers/NAME/vars/0, 1, ...`, which must be
    /// `roles` in that order.
    fn vars(&self, layer: &Layer, roles: &[Role]) -> Result<Weights, String> {
        let group = format!("/layers/{}/vars", layer.stored);
        let count = self
            .h5
            .group(&group)
            .and_then(|g| g.member_names())
            .map_or(0, |(_, datasets)| datasets.len());
        if count != roles.len() {
            let names: Vec<&str> = roles.iter().map(|r| r.keras_name()).collect();
            return Err(format!(
                "has {count} weights in model.weights.h5 ({group}), where cnnc expects {} ({})",
                roles.len(),
                names.join(", ")
            ));
        }
        roles
            .iter()
            .enumerate()
            .map(|(i, &role)| {
                let path = format!("{group}/{i}");
                let values = self
                    .h5
                    .dataset(&path)
                    .and_then(|d| d.read_array::<f32>())
                    .map_err(|e| format!("its {} ({path}) cannot be read as float32: {e}", role.keras_name()))?;
                Ok((role, values))
            })
            .collect()
    }

    fn push(&mut self, layer: &Layer, kind: LayerKind, weights: Weights) -> Result<(), String> {
        let trainable = layer.boolean("trainable", true)?;
        self.stack.push(Some(layer.name.clone()), kind, trainable, weights);
        Ok(())
    }
}

fn conv2d(w: &mut Walk, l: &Layer) -> Result<(), String> {
    l.channels_last()?;
    if l.pair("dilation_rate")?.is_some_and(|d| d != [1, 1]) {
        return Err("is dilated (dilation_rate); cnnc's convolutions are not".into());
    }
    if l.number("groups", 1.0)? != 1.0 {
        return Err("is a grouped convolution (groups); cnnc's conv2d convolves all channels together".into());
    }
    l.training_only(
        &[
            "bias_regularizer",
            "activity_regularizer",
            "kernel_constraint",
            "bias_constraint",
        ],
        &mut w.notes,
    );
    let (use_bias, roles) = l.kernel_and_bias()?;
    let kind = LayerKind::Conv2D(Conv2D {
        filters: l.count("filters")?,
        kernel_size: l.pair("kernel_size")?.ok_or("has no kernel_size")?,
        strides: l.pair("strides")?.unwrap_or([1, 1]),
        padding: l.padding()?,
        activation: l.activation()?,
        use_bias,
        kernel_initializer: l.initializer("kernel_initializer", Init::GlorotUniform, &mut w.notes),
        bias_initializer: l.initializer("bias_initializer", Init::Zeros, &mut w.notes),
        kernel_regularizer: l.regularizer("kernel_regularizer", &mut w.notes),
    });
    let weights = w.vars(l, roles)?;
    w.push(l, kind, weights)
}

fn dense(w: &mut Walk, l: &Layer) -> Result<(), String> {
    if l.get("quantization_config").is_some() || l.number("lora_rank", 0.0)? != 0.0 {
        return Err("is quantized or has LoRA weights; cnnc's dense layer has a plain kernel".into());
    }
    l.training_only(
        &[
            "bias_regularizer",
            "activity_regularizer",
            "kernel_constraint",
            "bias_constraint",
        ],
        &mut w.notes,
    );
    let (use_bias, roles) = l.kernel_and_bias()?;
    let kind = LayerKind::Dense(Dense {
        units: l.count("units")?,
        activation: l.activation()?,
        use_bias,
        kernel_initializer: l.initializer("kernel_initializer", Init::GlorotUniform, &mut w.notes),
        bias_initializer: l.initializer("bias_initializer", Init::Zeros, &mut w.notes),
        kernel_regularizer: l.regularizer("kernel_regularizer", &mut w.notes),
    });
    let weights = w.vars(l, roles)?;
    w.push(l, kind, weights)
}

fn depthwise_conv2d(w: &mut Walk, l: &Layer) -> Result<(), String> {
    l.channels_last()?;
    if l.pair("dilation_rate")?.is_some_and(|d| d != [1, 1]) {
        return Err("is dilated (dilation_rate); cnnc's convolutions are not".into());
    }
    l.training_only(
        &[
            "depthwise_regularizer",
            "bias_regularizer",
            "activity_regularizer",
            "depthwise_constraint",
            "bias_constraint",
        ],
        &mut w.notes,
    );
    let (use_bias, roles) = l.kernel_and_bias()?;
    let kind = LayerKind::DepthwiseConv2D(DepthwiseConv2D {
        kernel_size: l.pair("kernel_size")?.ok_or("has no kernel_size")?,
        strides: l.pair("strides")?.unwrap_or([1, 1]),
        padding: l.padding()?,
        depth_multiplier: l.count("depth_multiplier")?,
        activation: l.activation()?,
        use_bias,
        depthwise_initializer: l.initializer("depthwise_initializer", Init::GlorotUniform, &mut w.notes),
        bias_initializer: l.initializer("bias_initializer", Init::Zeros, &mut w.notes),
    });
    let weights = w.vars(l, roles)?;
    w.push(l, kind, weights)
}

/// A pooling layer's window; Keras's strides default to the pool size.
fn pool(l: &Layer) -> Result<Pool2D, String> {
    l.channels_last()?;
    let pool_size = l.pair("pool_size")?.unwrap_or([2, 2]);
    Ok(Pool2D {
        pool_size,
        strides: l.pair("strides")?.unwrap_or(pool_size),
        padding: l.padding()?,
    })
}

fn max_pooling2d(w: &mut Walk, l: &Layer) -> Result<(), String> {
    let kind = LayerKind::MaxPool2D(pool(l)?);
    w.push(l, kind, Vec::new())
}

fn average_pooling2d(w: &mut Walk, l: &Layer) -> Result<(), String> {
    let kind = LayerKind::AvgPool2D(pool(l)?);
    w.push(l, kind, Vec::new())
}

fn global_pooling2d(w: &mut Walk, l: &Layer, average: bool) -> Result<(), String> {
    l.channels_last()?;
    let keepdims = l.boolean("keepdims", false)?;
    if !keepdims {
        w.rank = 1;
    }
    let kind = if average {
        LayerKind::GlobalAvgPool2D { keepdims }
    } else {
        LayerKind::GlobalMaxPool2D { keepdims }
    };
    w.push(l, kind, Vec::new())
}

fn flatten(w: &mut Walk, l: &Layer) -> Result<(), String> {
    l.channels_last()?;
    w.rank = 1;
    w.push(l, LayerKind::Flatten, Vec::new())
}

fn dropout(w: &mut Walk, l: &Layer) -> Result<(), String> {
    let rate = l.number("rate", 0.5)?;
    if !(0.0..1.0).contains(&rate) {
        return Err(format!("has rate {rate}; cnnc's dropout rate is in [0, 1)"));
    }
    l.training_only(&["noise_shape"], &mut w.notes);
    w.push(l, LayerKind::Dropout { rate }, Vec::new())
}

fn batch_normalization(w: &mut Walk, l: &Layer) -> Result<(), String> {
    let axis = match l.get("axis") {
        None => -1,
        Some(Value::Array(a)) if a.len() == 1 => a[0].as_i64().unwrap_or(0),
        Some(v) => v.as_i64().unwrap_or(0),
    };
    if axis != -1 && axis != w.rank as i64 {
        return Err(format!(
            "normalizes over axis {axis}; cnnc's batchnorm normalizes over the last axis (-1)"
        ));
    }
    if l.boolean("renorm", false)? {
        return Err("uses batch renormalization (renorm=True)".into());
    }
    l.training_only(
        &[
            "beta_regularizer",
            "gamma_regularizer",
            "beta_constraint",
            "gamma_constraint",
        ],
        &mut w.notes,
    );
    let b = BatchNorm {
        momentum: l.number("momentum", 0.99)?,
        epsilon: l.number("epsilon", 1e-3)?,
        center: l.boolean("center", true)?,
        scale: l.boolean("scale", true)?,
    };
    let roles: Vec<Role> = [(b.scale, Role::Gamma), (b.center, Role::Beta)]
        .into_iter()
        .filter_map(|(on, role)| on.then_some(role))
        .chain([Role::MovingMean, Role::MovingVariance])
        .collect();
    let weights = w.vars(l, &roles)?;
    w.push(l, LayerKind::BatchNorm(b), weights)
}

fn activation(w: &mut Walk, l: &Layer) -> Result<(), String> {
    let a = l.activation()?;
    w.push(l, LayerKind::Activation(a), Vec::new())
}

/// ReLU: max(x, 0), or with a negative slope a LeakyReLU.
fn relu(w: &mut Walk, l: &Layer) -> Result<(), String> {
    if l.get("max_value").is_some() || l.number("threshold", 0.0)? != 0.0 {
        return Err("has max_value or threshold; cnnc's relu is max(x, 0)".into());
    }
    let negative_slope = l.number("negative_slope", 0.0)?;
    if negative_slope == 0.0 {
        w.push(l, LayerKind::Activation(Activation::Relu), Vec::new())
    } else if negative_slope > 0.0 {
        w.push(l, LayerKind::LeakyRelu { negative_slope }, Vec::new())
    } else {
        Err(format!(
            "has negative_slope {negative_slope}; cnnc's slope is 0 or more"
        ))
    }
}

fn leaky_relu(w: &mut Walk, l: &Layer) -> Result<(), String> {
    let negative_slope = l.number("negative_slope", crate::parse::layers::LEAKY_RELU_LAYER_SLOPE)?;
    if negative_slope < 0.0 {
        return Err(format!(
            "has negative_slope {negative_slope}; cnnc's slope is 0 or more"
        ));
    }
    w.push(l, LayerKind::LeakyRelu { negative_slope }, Vec::new())
}

fn elu(w: &mut Walk, l: &Layer) -> Result<(), String> {
    let alpha = l.number("alpha", Activation::ELU_ALPHA)?;
    if alpha <= 0.0 {
        return Err(format!("has alpha {alpha}; cnnc's ELU takes an alpha above 0"));
    }
    w.push(l, LayerKind::Elu { alpha }, Vec::new())
}

fn softmax(w: &mut Walk, l: &Layer) -> Result<(), String> {
    let axis = l.number("axis", -1.0)?;
    if axis != -1.0 && axis != w.rank as f64 {
        return Err(format!(
            "normalizes over axis {axis}; cnnc's softmax is over the last axis"
        ));
    }
    w.push(l, LayerKind::Activation(Activation::Softmax), Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_regularizers_are_read_as_keras_3_writes_them() {
        let config = |regularizer: &str| -> Value {
            serde_json::from_str(&format!(
                r#"{{"class_name": "Dense", "config": {{"name": "dense", "kernel_regularizer": {regularizer}}}}}"#
            ))
            .unwrap()
        };
        let keras = |class: &str, config: &str| {
            format!(
                r#"{{"module": "keras.regularizers", "class_name": "{class}", "config": {config}, "registered_name": null}}"#
            )
        };
        for (json, read) in [
            (keras("L2", r#"{"l2": 0.01}"#), Some(Regularizer::L2(0.01))),
            (
                keras("L1", r#"{"l1": 0.0020000000949949026}"#),
                Some(Regularizer::L1(0.002)),
            ),
            (
                keras("L1L2", r#"{"l1": 0.001, "l2": 0.02}"#),
                Some(Regularizer::L1L2 { l1: 0.001, l2: 0.02 }),
            ),
            (
                keras("OrthogonalRegularizer", r#"{"factor": 0.01, "mode": "rows"}"#),
                None,
            ),
            (keras("L2", r#"{"l2": -1}"#), None),
            ("null".to_string(), None),
        ] {
            let value = config(&json);
            let layer = Layer::new(&value, 0).unwrap();
            let mut notes = Vec::new();
            assert_eq!(layer.regularizer("kernel_regularizer", &mut notes), read, "{json}");
            let dropped = read.is_none() && json != "null";
            assert_eq!(notes.len(), usize::from(dropped), "{json}: {notes:?}");
        }
    }

    #[test]
    fn layers_are_stored_under_keras_snake_case() {
        for (class, stored) in [
            ("Conv2D", "conv2d"),
            ("MaxPooling2D", "max_pooling2d"),
            ("BatchNormalization", "batch_normalization"),
            ("ReLU", "re_lu"),
            ("Dense", "dense"),
            ("AveragePooling2D", "average_pooling2d"),
            ("ABcDe", "a_bc_de"),
            ("HTTPServer2", "http_server2"),
        ] {
            assert_eq!(snake_case(class), stored, "{class}");
        }
        let mut used = HashMap::new();
        let names: Vec<String> = ["dense", "conv2d", "dense", "dense"]
            .into_iter()
            .map(|n| unique(n.to_string(), &mut used))
            .collect();
        assert_eq!(names, ["dense", "conv2d", "dense_1", "dense_2"]);
    }

    #[test]
    fn initializer_names_are_keras_classes() {
        assert_eq!(camel("glorot_uniform"), "GlorotUniform");
        assert_eq!(camel("he_normal"), "HeNormal");
        assert_eq!(camel("zeros"), "Zeros");
    }
}
