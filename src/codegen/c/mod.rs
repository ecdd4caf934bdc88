//! The C side of a routine compiled ahead of time: the header a program
//! includes, the wrapper that checks a call and fills the routine's pointer
//! table, and the support functions the routine calls (`support.c`).

use super::CodegenError;
use super::object::Object;
use super::plan::Storage;

/// The support functions' source, written beside every built model.
pub const SUPPORT: &str = include_str!("support.c");
pub const SUPPORT_FILE: &str = "cnnc_support.c";

/// What a program sees of a built model.
pub struct Interface<'a> {
    /// The C identifier every symbol starts with (the model's name).
    pub prefix: &'a str,
    /// The model file, for the files' first comment.
    pub source: &'a str,
    /// One sample's input and output shapes, without the batch axis.
    pub input: &'a [usize],
    pub output: &'a [usize],
}

/// The return codes of a predict function, with their meaning.
const CODES: [(&str, &str); 4] = [
    ("OK", "the outputs are written"),
    ("ERROR_NULL", "`input` or `output` is NULL"),
    ("ERROR_BATCH", "`batch` is 0, or so large that its size overflows"),
    ("ERROR_MEMORY", "the working memory could not be allocated"),
];

/// A C identifier for a model name: other characters become `_`, and a
/// leading digit gets one before it.
pub fn identifier(name: &str) -> String {
    let mut id: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if !id.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        id.insert(0, '_');
    }
    id
}

fn dims(shape: &[usize]) -> String {
    let d: Vec<String> = shape.iter().map(usize::to_string).collect();
    d.join(", ")
}

/// The header: shapes as constants, the return codes, the function.
pub fn header(i: &Interface) -> String {
    let upper = i.prefix.to_ascii_uppercase();
    let numel = |s: &[usize]| s.iter().product::<usize>();
    let codes: String = CODES
        .iter()
        .enumerate()
        .map(|(n, (name, what))| format!("    {upper}_{name} = {n}, /* {what} */\n"))
        .collect();
    format!(
        "/* {prefix}: the inference routine of {source}, compiled by cnnc build.
 * Link {prefix}.o, {prefix}.c and {SUPPORT_FILE} (and -lm) into the program. */
#ifndef {upper}_H
#define {upper}_H

#include <stddef.h>

#ifdef __cplusplus
extern \"C\" {{
#endif

/* One sample's input, [{in_dims}]{layout},
 * and its output, [{out_dims}], as float32 values in row-major order. */
#define {upper}_INPUT_RANK {in_rank}
#define {upper}_INPUT_SHAPE {{ {in_dims} }}
#define {upper}_INPUT_SIZE {in_size}
#define {upper}_OUTPUT_RANK {out_rank}
#define {upper}_OUTPUT_SHAPE {{ {out_dims} }}
#define {upper}_OUTPUT_SIZE {out_size}

/* What {prefix}_predict returns. */
enum {{
{codes}}};

/* Runs the model on `batch` samples: reads batch * {upper}_INPUT_SIZE floats
 * at `input`, writes batch * {upper}_OUTPUT_SIZE floats at `output`. Safe to
 * call from several threads at once. */
int {prefix}_predict(const float *input, size_t batch, float *output);

#ifdef __cplusplus
}}
#endif

#endif
",
        prefix = i.prefix,
        source = i.source,
        layout = if i.input.len() == 3 {
            " (height, width, channels: NHWC, as Keras)"
        } else {
            ""
        },
        in_rank = i.input.len(),
        in_dims = dims(i.input),
        in_size = numel(i.input),
        out_rank = i.output.len(),
        out_dims = dims(i.output),
        out_size = numel(i.output),
    )
}

/// The predict function: checks its arguments, allocates the working
/// memory, and runs the routine (compiled for one sample) on each sample
/// with its pointer table.
pub fn wrapper(i: &Interface, object: &Object) -> Result<String, CodegenError> {
    let upper = i.prefix.to_ascii_uppercase();
    let mut table = String::new();
    for (n, slot) in object.slots.iter().enumerate() {
        let pointer = match *slot {
            Storage::Arena { .. } => "arena".to_string(),
            Storage::Input => format!("(float *)(input + i * {upper}_INPUT_SIZE)"),
            // Read only by training and evaluation.
            Storage::Label => "NULL".to_string(),
            Storage::Mask(_) => {
                return Err(CodegenError::new("an inference routine with dropout masks"));
            }
            Storage::Var(v) => {
                let offset = object
                    .offsets
                    .get(v)
                    .ok_or_else(|| CodegenError::new(format!("no weights for variable {v}")))?;
                format!("(float *)({} + {offset})", object.weights)
            }
            Storage::Output(0) => format!("output + i * {upper}_OUTPUT_SIZE"),
            Storage::Output(o) => {
                return Err(CodegenError::new(format!(
                    "an inference routine with {} outputs",
                    o + 1
                )));
            }
        };
        table += &format!("        table[{n}] = {pointer};\n");
    }
    Ok(format!(
        "/* {prefix}: the predict function of {source}, written by cnnc build. */
#include \"{prefix}.h\"
#include <stdint.h>
#include <stdlib.h>

/* In {prefix}.o: the routine for one sample, and the weights it reads. */
void {routine}(float *const *table, const float *scalars);
extern const float {weights}[];

/* Floats of working memory one run of the routine needs. */
#define {upper}_ARENA_LEN {arena}

int {prefix}_predict(const float *input, size_t batch, float *output)
{{
    if (input == NULL || output == NULL)
        return {upper}_ERROR_NULL;
    if (batch == 0 || batch > SIZE_MAX / sizeof(float) / {upper}_INPUT_SIZE
        || batch > SIZE_MAX / sizeof(float) / {upper}_OUTPUT_SIZE)
        return {upper}_ERROR_BATCH;
    /* Per call, so that calls on several threads never share it. */
    float *arena = calloc({upper}_ARENA_LEN + 1, sizeof(float));
    if (arena == NULL)
        return {upper}_ERROR_MEMORY;
    /* The hyperparameters of training steps: not read at inference. */
    static const float scalars[{hypers}] = {{ 0 }};
    float *table[{slots}];
    for (size_t i = 0; i < batch; i++) {{
{table}        {routine}(table, scalars);
    }}
    free(arena);
    return {upper}_OK;
}}
",
        prefix = i.prefix,
        source = i.source,
        routine = object.routine,
        weights = object.weights,
        arena = object.arena_len,
        hypers = super::HYPERS.len(),
        slots = object.slots.len(),
    ))
}

#[cfg(test)]
mod tests {
    use super::identifier;

    #[test]
    fn a_model_name_becomes_a_c_identifier() {
        assert_eq!(identifier("mnist_cnn"), "mnist_cnn");
        assert_eq!(identifier("my-net.v2"), "my_net_v2");
        assert_eq!(identifier("3layers"), "_3layers");
    }
}
