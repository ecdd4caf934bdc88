//! ONNX in and out: `cnnc export` writes a checked model with its weights
//! as a standard ONNX graph (`export.rs`), `cnnc import` reads the graphs
//! that `torch.onnx.export` makes of a sequential stack (`import.rs`).
//! `proto.rs` holds the messages; this file the tensor conversions both
//! directions share.

pub mod export;
pub mod import;
pub mod proto;

use proto::{TensorProto, data_type};

/// The opset cnnc writes, and the oldest it reads: Softmax, Flatten and
/// Gemm took their present meaning in opset 13, and 17 is what current
/// runtimes (onnxruntime and onnxruntime-web, TensorRT) all run.
pub const OPSET: i64 = 17;
pub const OLDEST_OPSET: i64 = 13;

/// The IR version of opset 17 (ONNX 1.12).
pub const IR_VERSION: i64 = 8;

/// An f32 tensor as an initializer.
pub fn tensor(name: &str, dims: &[usize], values: &[f32]) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: data_type::FLOAT,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..TensorProto::default()
    }
}

/// A tensor's dimensions, or why they are not a shape.
pub fn dims(t: &TensorProto) -> Result<Vec<usize>, String> {
    t.dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("has a dimension of {d}")))
        .collect()
}

/// The values of a float tensor (f32, or f64 rounded to f32), checked
/// against its dimensions.
pub fn floats(t: &TensorProto) -> Result<Vec<f32>, String> {
    let values = match t.data_type {
        data_type::FLOAT if !t.raw_data.is_empty() => le(&t.raw_data, f32::from_le_bytes)?,
        data_type::FLOAT => t.float_data.clone(),
        data_type::DOUBLE if !t.raw_data.is_empty() => le(&t.raw_data, |b: [u8; 8]| f64::from_le_bytes(b) as f32)?,
        data_type::DOUBLE => t.double_data.iter().map(|&x| x as f32).collect(),
        other => return Err(format!("holds {} values, not floats", type_name(other))),
    };
    fits(t, values)
}

/// The values of an integer tensor (int64 or int32).
pub fn ints(t: &TensorProto) -> Result<Vec<i64>, String> {
    let values = match t.data_type {
        data_type::INT64 if !t.raw_data.is_empty() => le(&t.raw_data, i64::from_le_bytes)?,
        data_type::INT64 => t.int64_data.clone(),
        data_type::INT32 if !t.raw_data.is_empty() => le(&t.raw_data, |b: [u8; 4]| i64::from(i32::from_le_bytes(b)))?,
        data_type::INT32 => t.int32_data.iter().map(|&x| i64::from(x)).collect(),
        other => return Err(format!("holds {} values, not integers", type_name(other))),
    };
    fits(t, values)
}

/// Little-endian values of `N` bytes each.
fn le<const N: usize, T>(bytes: &[u8], from: impl Fn([u8; N]) -> T) -> Result<Vec<T>, String> {
    let (whole, rest) = bytes.as_chunks::<N>();
    if !rest.is_empty() {
        return Err(format!(
            "holds {} bytes, not a whole number of {N}-byte values",
            bytes.len()
        ));
    }
    Ok(whole.iter().map(|b| from(*b)).collect())
}

/// The values, if there are as many as the dimensions say and they are
/// stored in the model itself.
fn fits<T>(t: &TensorProto, values: Vec<T>) -> Result<Vec<T>, String> {
    if t.data_location == 1 || !t.external_data.is_empty() {
        return Err("keeps its values in a file beside the model (external data)".into());
    }
    let want = dims(t)?.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
    if want != Some(values.len()) {
        return Err(format!("has dimensions {:?} but holds {} values", t.dims, values.len()));
    }
    Ok(values)
}

/// `TensorProto.DataType` by name, for messages.
pub fn type_name(data_type: i32) -> String {
    const NAMES: [&str; 17] = [
        "undefined",
        "float",
        "uint8",
        "int8",
        "uint16",
        "int16",
        "int32",
        "int64",
        "string",
        "bool",
        "float16",
        "double",
        "uint32",
        "uint64",
        "complex64",
        "complex128",
        "bfloat16",
    ];
    usize::try_from(data_type)
        .ok()
        .and_then(|i| NAMES.get(i))
        .map_or_else(|| format!("type-{data_type}"), |n| (*n).to_string())
}
