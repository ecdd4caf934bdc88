//! Ahead-of-time compilation: the same routine the JIT builds, emitted
//! with cranelift-object into a relocatable object (ELF on Linux) that a
//! C program links, with the model's weights in its read-only data.

use super::plan::{Plan, Storage};
use super::{CodegenError, Options, check_arena, define_routine, has_fma, isa, need, slots};
use cranelift_codegen::ir::Endianness;
use cranelift_module::{DataDescription, Linkage, Module, default_libcall_names};
use cranelift_object::{ObjectBuilder, ObjectModule};

/// Variables start at multiples of this many bytes in the weights, as a
/// cache line, so vector loads of a weight matrix's rows stay aligned.
const WEIGHT_ALIGN: usize = 64;

/// An inference routine compiled into an object file.
pub struct Object {
    /// The object file's bytes.
    pub bytes: Vec<u8>,
    /// The exported routine, `void ROUTINE(float *const *table, const float *scalars)`.
    pub routine: String,
    /// The exported weights: every variable, in the graph's order.
    pub weights: String,
    /// Where each variable starts in the weights, in floats.
    pub offsets: Vec<usize>,
    /// The pointer table's order.
    pub slots: Vec<Storage>,
    /// Floats of working memory one call needs.
    pub arena_len: usize,
}

/// Compiles `plan` for `target` (the host, with its features, by default)
/// into an object whose symbols start with `prefix`, the variables'
/// values `vars` embedded.
pub fn object(plan: &Plan, vars: &[&[f32]], prefix: &str, target: Option<&str>) -> Result<Object, CodegenError> {
    check_arena(plan)?;
    let slots = slots(&plan.program.graph);
    if vars.len() != plan.program.graph.vars.len() {
        return Err(CodegenError::new(format!(
            "{} variables given, the routine reads {}",
            vars.len(),
            plan.program.graph.vars.len()
        )));
    }
    let mut offsets = Vec::with_capacity(vars.len());
    let mut blob = Vec::new();
    for (i, v) in vars.iter().enumerate() {
        let needed = need(plan, &Storage::Var(i));
        if v.len() < needed {
            return Err(CodegenError::new(format!(
                "variable {i} holds {} values, the routine reads {needed}",
                v.len()
            )));
        }
        blob.resize(blob.len().next_multiple_of(WEIGHT_ALIGN), 0);
        offsets.push(blob.len() / 4);
        blob.extend(v.iter().flat_map(|x| x.to_le_bytes()));
    }
    // A C program's position-independent executable places the code.
    let isa = isa(target, true)?;
    if isa.endianness() != Endianness::Little {
        return Err(CodegenError::new(format!(
            "`{}` is big-endian; cnnc embeds weights for little-endian targets only",
            isa.triple()
        )));
    }
    let fma = has_fma(isa.as_ref());
    let builder =
        ObjectBuilder::new(isa, prefix, default_libcall_names()).map_err(|e| CodegenError::new(e.to_string()))?;
    let mut module = ObjectModule::new(builder);
    let routine = format!("{prefix}_routine");
    define_routine(
        &mut module,
        plan,
        (fma, Options::default()),
        (&routine, Linkage::Export),
    )?;
    let weights = format!("{prefix}_weights");
    let id = module
        .declare_data(&weights, Linkage::Export, false, false)
        .map_err(|e| CodegenError::new(e.to_string()))?;
    let mut data = DataDescription::new();
    // An empty symbol would still need a byte to point at.
    blob.resize(blob.len().max(4), 0);
    data.define(blob.into_boxed_slice());
    data.set_align(WEIGHT_ALIGN as u64);
    module
        .define_data(id, &data)
        .map_err(|e| CodegenError::new(e.to_string()))?;
    let bytes = module
        .finish()
        .emit()
        .map_err(|e| CodegenError::new(format!("cannot write the object: {e}")))?;
    Ok(Object {
        bytes,
        routine,
        weights,
        offsets,
        slots,
        arena_len: plan.arena_len,
    })
}
