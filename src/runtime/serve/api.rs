//! `POST /predict`: a PNG or JPEG body, or JSON `{"input": [...], "layers":
//! [...]}` with a flat array in the model's input shape, answered with the
//! outputs, the top classes and the asked layers' values. Every problem of
//! a request is a 4xx naming it.

use super::{Engines, Reply};
use crate::parse::ast::Loss;
use crate::runtime::Error;
use crate::runtime::data;
use crate::runtime::engine::{Engine, Graphs};
use crate::runtime::jit::Compiled;
use crate::runtime::show::colour::Scale;
use crate::shape::Checked;
use image::ImageFormat;
use ndarray::{ArrayD, Axis, IxDyn};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

/// Classes listed in `top`.
const TOP: usize = 5;

/// A model ready to serve: its graphs, trained weights and summary.
pub struct Service {
    pub checked: Checked,
    /// Graphs whose probe routine taps no layer: the one `cnnc predict`
    /// runs, so answers equal its outputs.
    pub graphs: Graphs,
    pub weights: Vec<ArrayD<f32>>,
    /// Class names by label (the weights file's), else their numbers.
    pub classes: Vec<String>,
    /// `GET /model`'s body: `cnnc check --format json`'s summary.
    pub summary: String,
    /// How the workers' engines are compiled.
    pub options: crate::codegen::Options,
}

/// The JSON form of a request.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Json {
    input: Vec<Value>,
    #[serde(default)]
    layers: Vec<String>,
}

/// `POST /predict`'s answer: a classifier's probabilities and top
/// classes, or a regression model's outputs; the asked layers' values.
#[derive(Serialize)]
struct Answer<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    probabilities: Option<Vec<f32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outputs: Option<Vec<f32>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top: Option<Vec<Top>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    layers: Vec<Layer<'a>>,
}

#[derive(Serialize)]
struct Top {
    class: usize,
    name: String,
    probability: f32,
}

/// A layer's output for the sample, row-major in its shape, and the range
/// of its colour scale.
#[derive(Serialize)]
struct Layer<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    shape: Vec<usize>,
    range: [f32; 2],
    values: Vec<f32>,
}

/// A classifier's classes, most likely first, `k` of them, as (label,
/// probability); a single sigmoid unit is class 1 with p, class 0 with 1 - p.
pub fn ranked(row: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut ranked: Vec<(usize, f32)> = row.iter().copied().enumerate().collect();
    if let [(_, p)] = ranked[..] {
        ranked = vec![(1, p), (0, 1.0 - p)];
    }
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked.truncate(k);
    ranked
}

impl Service {
    /// A worker's engines, compiled for one sample now rather than on the
    /// first request.
    pub fn engines(&self) -> Result<Engines, Error> {
        let all: Vec<usize> = (0..self.checked.model.layers.len()).collect();
        let tapped = self.graphs.clone().probing(&self.checked, &all)?;
        let mut engines = Engines {
            plain: Compiled::with_options(self.graphs.clone(), self.options),
            tapped: Compiled::with_options(tapped, self.options),
            weights: self.weights.clone(),
        };
        let mut shape = vec![1];
        shape.extend(&self.checked.model.input.shape);
        let zeros = ArrayD::zeros(IxDyn(&shape));
        engines.plain.probe(&mut engines.weights, zeros.view())?;
        engines.tapped.probe(&mut engines.weights, zeros.view())?;
        Ok(engines)
    }

    pub fn predict(&self, body: &[u8], query: &str, engines: &mut Engines) -> Reply {
        match self.answer(body, query, engines) {
            // Serialized from f32, so each value is float32's shortest text.
            Ok(answer) => match serde_json::to_vec(&answer) {
                Ok(body) => Reply {
                    status: 200,
                    content_type: "application/json",
                    body,
                },
                Err(e) => Reply::error(500, format!("cannot write the answer: {e}")),
            },
            Err((status, message)) => Reply::error(status, message),
        }
    }

    fn answer(&self, body: &[u8], query: &str, engines: &mut Engines) -> Result<Answer<'_>, (u16, String)> {
        let bad = |m: String| (400, m);
        let mut names: Vec<String> = query
            .split('&')
            .filter_map(|kv| kv.strip_prefix("layers="))
            .flat_map(|v| v.split(','))
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect();
        let start = body.iter().position(|b| !b.is_ascii_whitespace());
        let input = match start.map(|i| body[i]) {
            None => {
                return Err(bad(
                    "the body is empty: send a PNG or JPEG image, or JSON {\"input\": [...]}".into(),
                ));
            }
            Some(b'{') => {
                let json: Json = serde_json::from_slice(body).map_err(|e| bad(json_problem(body, &e)))?;
                names.extend(json.layers);
                self.array(&json.input).map_err(bad)?
            }
            Some(_) => self.image(body)?,
        };
        let mut layers = names
            .iter()
            .map(|n| self.layer(n))
            .collect::<Result<Vec<_>, _>>()
            .map_err(bad)?;
        layers.sort_unstable();
        layers.dedup();
        let fail = |e: Error| (500, e.to_string());
        let weights = &mut engines.weights;
        let (prediction, values) = if layers.is_empty() {
            (
                engines.plain.probe(weights, input.view()).map_err(fail)?.prediction,
                Vec::new(),
            )
        } else {
            let probed = engines.tapped.probe(weights, input.view()).map_err(fail)?;
            let values = probed.layers.into_iter().filter(|(i, _)| layers.contains(i)).collect();
            (probed.prediction, values)
        };
        let outputs: Vec<f32> = prediction.iter().copied().collect();
        let classifier = self.checked.loss() != Loss::MeanSquaredError;
        let top = classifier.then(|| {
            ranked(&outputs, TOP)
                .into_iter()
                .map(|(class, probability)| Top {
                    class,
                    name: self.class_name(class),
                    probability,
                })
                .collect()
        });
        let layers = values
            .iter()
            .map(|(i, value)| {
                let layer = &self.checked.model.layers[*i];
                let sample = value.index_axis(Axis(0), 0);
                // The range `cnnc show maps` draws a layer's channels in.
                let (low, high) = Scale::grey(sample.iter().copied()).range();
                Layer {
                    name: &layer.name,
                    kind: layer.kind.keras_class(),
                    shape: sample.shape().to_vec(),
                    range: [low, high],
                    values: sample.iter().copied().collect(),
                }
            })
            .collect();
        let (probabilities, outputs) = if classifier {
            (Some(outputs), None)
        } else {
            (None, Some(outputs))
        };
        Ok(Answer {
            probabilities,
            outputs,
            top,
            layers,
        })
    }

    fn class_name(&self, k: usize) -> String {
        self.classes.get(k).cloned().unwrap_or_else(|| k.to_string())
    }

    fn input_text(&self) -> String {
        let shape = &self.checked.model.input.shape;
        let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
        format!("{} = {} values", dims.join("x"), shape.iter().product::<usize>())
    }

    /// A flat JSON array as a batch of one, each value a finite float32.
    fn array(&self, values: &[Value]) -> Result<ArrayD<f32>, String> {
        let shape = &self.checked.model.input.shape;
        let want: usize = shape.iter().product();
        if values.len() != want {
            return Err(format!(
                "`input` has {} values, the model reads {}",
                values.len(),
                self.input_text()
            ));
        }
        let mut flat = Vec::with_capacity(want);
        for (i, v) in values.iter().enumerate() {
            let x = match v {
                Value::Number(n) => n.as_f64().map(|x| x as f32),
                // JSON has no NaN: JavaScript's JSON.stringify writes it as null.
                Value::Null => return Err(format!("`input[{i}]` is null: NaN in input (JSON writes NaN as null)")),
                Value::Bool(_) | Value::String(_) | Value::Array(_) | Value::Object(_) => None,
            };
            match x {
                Some(x) if x.is_finite() => flat.push(x),
                Some(_) => return Err(format!("`input[{i}]` = {v} is beyond float32's range")),
                None => return Err(format!("`input[{i}]` = {v} is not a number")),
            }
        }
        let mut batch = vec![1];
        batch.extend(shape);
        ArrayD::from_shape_vec(IxDyn(&batch), flat).map_err(|e| e.to_string())
    }

    /// An image body, decoded, converted and resized as `cnnc predict`
    /// reads image files, by the same decoder.
    fn image(&self, body: &[u8]) -> Result<ArrayD<f32>, (u16, String)> {
        if !matches!(image::guess_format(body), Ok(ImageFormat::Png | ImageFormat::Jpeg)) {
            return Err((
                415,
                "not an image: the body is neither PNG nor JPEG, nor JSON {\"input\": [...]}".into(),
            ));
        }
        data::image(body, Path::new("the request body"), &self.checked.model.input.shape).map_err(|e| {
            let help = e.help.map(|h| format!("\n  = help: {h}")).unwrap_or_default();
            (400, format!("the image: {}{help}", e.message))
        })
    }

    /// The index of the layer called `name`, or a message naming them all.
    fn layer(&self, name: &str) -> Result<usize, String> {
        let names = || self.checked.model.layers.iter().map(|l| l.name.as_str());
        names().position(|n| n == name).ok_or_else(|| {
            let near = crate::diag::closest(name, names())
                .map(|n| format!(" (did you mean `{n}`?)"))
                .unwrap_or_default();
            let all: Vec<&str> = names().collect();
            format!("the model has no layer `{name}`{near}; its layers: {}", all.join(", "))
        })
    }
}

/// Why a JSON body was refused, in the user's terms.
fn json_problem(body: &[u8], e: &serde_json::Error) -> String {
    let text = String::from_utf8_lossy(body);
    if ["NaN", "Infinity"].iter().any(|w| text.contains(w)) {
        return format!("NaN in input: JSON has no NaN or Infinity, send finite numbers ({e})");
    }
    format!("the body is not the JSON {{\"input\": [...], \"layers\": [...]}}: {e}")
}
