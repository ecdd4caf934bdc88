//! Code generation: a planned program becomes one native function with
//! Cranelift, compiled once per routine and batch size. The function takes
//! a table of buffer pointers (arena, batch, labels, dropout masks,
//! variables, outputs) and the step's hyperparameters.

pub mod emit;
pub mod gemm;
mod kernels;
mod math;
pub mod profile;

use crate::ir::{Graph, Hyper, Output};
use crate::passes::fuse::{Kernel, Program};
use crate::passes::plan::{self, Plan, Storage};
use cranelift_codegen::ir::{AbiParam, InstBuilder, MemFlagsData, UserFuncName, types};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module, default_libcall_names};
use emit::Emitter;
use gemm::ConvGemm;
use kernels::Context;
use std::collections::HashMap;
use std::fmt;

#[derive(Clone, Debug, PartialEq)]
pub struct CodegenError(pub String);

impl fmt::Display for CodegenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: code generation failed: {}", self.0)
    }
}

impl std::error::Error for CodegenError {}

/// The hyperparameters a routine reads, in the order of its scalar table.
pub const HYPERS: [Hyper; 2] = [Hyper::LearningRate, Hyper::AdamStepSize];

/// The order of the pointer table the generated function reads.
pub fn slots(graph: &Graph) -> Vec<Storage> {
    let mut s = vec![Storage::Arena { offset: 0 }, Storage::Input, Storage::Label];
    s.extend((0..graph.mask_count()).map(Storage::Mask));
    s.extend((0..graph.vars.len()).map(Storage::Var));
    s.extend((0..graph.outputs.len()).map(Storage::Output));
    s
}

/// Temporary space a kernel needs, in elements: a convolution's im2col
/// matrix and packed kernel.
pub fn scratch(kernel: &Kernel, graph: &Graph, batch: usize) -> usize {
    match kernel {
        Kernel::Conv { out, lhs, rhs, conv } => {
            let g = ConvGemm::new(conv, &graph[*lhs].shape, &graph[*rhs].shape, &graph[*out].shape, batch);
            let (a, b) = g.scratch();
            a + b
        }
        Kernel::MatMul { .. }
        | Kernel::Map { .. }
        | Kernel::Reduce { .. }
        | Kernel::MaxPool { .. }
        | Kernel::MaxPoolGrad { .. }
        | Kernel::Softmax { .. }
        | Kernel::SoftmaxCrossEntropy { .. }
        | Kernel::SigmoidCrossEntropy { .. } => 0,
    }
}

/// Floating-point operations of a kernel's contraction (2 per
/// multiply-add), the work a GEMM does; zero for the loops around it.
pub fn flops(kernel: &Kernel, graph: &Graph, batch: usize) -> u64 {
    match kernel {
        Kernel::Conv { out, lhs, rhs, conv } => {
            let g = ConvGemm::new(conv, &graph[*lhs].shape, &graph[*rhs].shape, &graph[*out].shape, batch);
            2 * (g.m() * g.k() * g.co) as u64
        }
        Kernel::MatMul {
            out, a, transpose_a, ..
        } => {
            let sa = graph[*a].shape.resolve(batch);
            let k = if *transpose_a { sa[0] } else { sa[1] };
            2 * (graph[*out].shape.numel(batch) * k) as u64
        }
        Kernel::Map { .. }
        | Kernel::Reduce { .. }
        | Kernel::MaxPool { .. }
        | Kernel::MaxPoolGrad { .. }
        | Kernel::Softmax { .. }
        | Kernel::SoftmaxCrossEntropy { .. }
        | Kernel::SigmoidCrossEntropy { .. } => 0,
    }
}

/// Plans memory for `batch`, and checks the plan.
pub fn plan_for(program: Program, batch: usize) -> Result<Plan, CodegenError> {
    let plan = plan::plan(program, batch, &scratch);
    if cfg!(debug_assertions) {
        plan::verify(&plan).map_err(|e| CodegenError(format!("memory plan: {e}")))?;
    }
    Ok(plan)
}

type Entry = unsafe extern "C" fn(*const *mut f32, *const f32);

/// A compiled routine: its native code and its memory plan.
pub struct Routine {
    // The module owns the code `entry` points into.
    _module: JITModule,
    entry: Entry,
    pub plan: Plan,
    /// Cranelift's IR of the function, when asked for.
    pub clif: Option<String>,
    /// Pointer-table order.
    pub slots: Vec<Storage>,
    /// Elements each slot's buffer must hold.
    needs: Vec<usize>,
    arena: Vec<f32>,
    table: Vec<*mut f32>,
}

// SAFETY: the routine's code is immutable once finalized and its arena is
// owned; a `Routine` moves between threads like any buffer.
unsafe impl Send for Routine {}

fn isa() -> Result<(std::sync::Arc<dyn cranelift_codegen::isa::TargetIsa>, bool), CodegenError> {
    let mut flags = settings::builder();
    let set = |f: &mut settings::Builder, k: &str, v: &str| f.set(k, v).map_err(|e| CodegenError(e.to_string()));
    set(&mut flags, "opt_level", "speed")?;
    set(&mut flags, "is_pic", "false")?;
    set(&mut flags, "use_colocated_libcalls", "false")?;
    set(
        &mut flags,
        "enable_verifier",
        if cfg!(debug_assertions) { "true" } else { "false" },
    )?;
    let builder = cranelift_native::builder().map_err(|e| CodegenError(format!("unsupported host: {e}")))?;
    let isa = builder
        .finish(settings::Flags::new(flags))
        .map_err(|e| CodegenError(e.to_string()))?;
    let fma = isa
        .isa_flags()
        .iter()
        .any(|f| f.name == "has_fma" && f.as_bool() == Some(true));
    Ok((isa, fma))
}

/// What to compile besides the code itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Keep Cranelift's IR text (`cnnc ir --stage clif`).
    pub keep_clif: bool,
    /// Time every kernel (`cnnc bench --profile`).
    pub profile: bool,
}

/// Compiles a planned program into a native function.
pub fn compile(plan: Plan, options: Options) -> Result<Routine, CodegenError> {
    let (isa, fma) = isa()?;
    let mut jit = JITBuilder::with_isa(isa, default_libcall_names());
    jit.symbol("cnnc_sgemm", gemm::cnnc_sgemm as *const u8);
    jit.symbol("cnnc_mark", profile::cnnc_mark as *const u8);
    let mut module = JITModule::new(jit);
    let ptr = module.target_config().pointer_type();

    let mut gemm_sig = module.make_signature();
    for t in [ptr; 13] {
        gemm_sig.params.push(AbiParam::new(t));
    }
    let gemm_id = module
        .declare_function("cnnc_sgemm", Linkage::Import, &gemm_sig)
        .map_err(|e| CodegenError(e.to_string()))?;
    let mut mark_sig = module.make_signature();
    mark_sig.params.push(AbiParam::new(ptr));
    let mark_id = module
        .declare_function("cnnc_mark", Linkage::Import, &mark_sig)
        .map_err(|e| CodegenError(e.to_string()))?;

    let mut sig = module.make_signature();
    sig.params.push(AbiParam::new(ptr));
    sig.params.push(AbiParam::new(ptr));
    let id = module
        .declare_function("routine", Linkage::Export, &sig)
        .map_err(|e| CodegenError(e.to_string()))?;
    let mut ctx = module.make_context();
    ctx.func.signature = sig;
    ctx.func.name = UserFuncName::user(0, id.as_u32());
    let slots = slots(&plan.program.graph);
    let mut fctx = FunctionBuilderContext::new();
    {
        let b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let mut e = Emitter { b, fma };
        let entry = e.b.create_block();
        e.b.append_block_params_for_function_params(entry);
        e.b.switch_to_block(entry);
        e.b.seal_block(entry);
        let table = e.b.block_params(entry)[0];
        let scalars = e.b.block_params(entry)[1];
        let mut bases = HashMap::new();
        for (i, s) in slots.iter().enumerate() {
            let p = e.b.ins().load(ptr, MemFlagsData::trusted(), table, (i * 8) as i32);
            bases.insert(*s, p);
        }
        let mut hypers = HashMap::new();
        for (i, h) in HYPERS.iter().enumerate() {
            let v =
                e.b.ins()
                    .load(types::F32, MemFlagsData::trusted(), scalars, (i * 4) as i32);
            hypers.insert(*h, v);
        }
        let sgemm = module.declare_func_in_func(gemm_id, e.b.func);
        let arena = bases[&Storage::Arena { offset: 0 }];
        let context = Context {
            plan: &plan,
            bases,
            hypers,
            sgemm,
            arena,
        };
        let mark = module.declare_func_in_func(mark_id, e.b.func);
        let tick = |e: &mut Emitter, i: usize| {
            if options.profile {
                let i = e.int(i as i64);
                e.b.ins().call(mark, &[i]);
            }
        };
        for (i, k) in plan.program.kernels.iter().enumerate() {
            tick(&mut e, i);
            emit_kernel(&mut e, &context, i, k);
        }
        tick(&mut e, plan.program.kernels.len());
        for &(n, to) in &plan.copies {
            let from = context.address(&mut e, n);
            let to = context.bases[&to];
            let len = plan.program.graph[n].shape.numel(plan.batch);
            kernels::copy(&mut e, from, to, len);
        }
        tick(&mut e, plan.program.kernels.len() + 1);
        e.b.ins().return_(&[]);
        e.b.finalize(module.target_config());
    }
    let clif = options.keep_clif.then(|| ctx.func.display().to_string());
    module
        .define_function(id, &mut ctx)
        .map_err(|e| CodegenError(format!("{e:?}")))?;
    module.clear_context(&mut ctx);
    module.finalize_definitions().map_err(|e| CodegenError(e.to_string()))?;
    let code = module.get_finalized_function(id);
    // SAFETY: `code` is the function just defined with signature
    // (pointer, pointer) -> (), in the host's calling convention.
    let entry = unsafe { std::mem::transmute::<*const u8, Entry>(code) };
    let needs = slots.iter().map(|s| need(&plan, s)).collect();
    let arena = vec![0.0f32; plan.arena_len];
    Ok(Routine {
        _module: module,
        entry,
        plan,
        clif,
        table: Vec::with_capacity(slots.len()),
        slots,
        needs,
        arena,
    })
}

/// Elements the buffer of `slot` must hold for every value the plan keeps
/// or copies there.
fn need(plan: &Plan, slot: &Storage) -> usize {
    if let Storage::Arena { .. } = slot {
        return plan.arena_len;
    }
    let len = |n: crate::ir::NodeId| plan.program.graph[n].shape.numel(plan.batch);
    plan.buffers
        .iter()
        .filter(|(_, b)| b.storage == *slot)
        .map(|(&n, _)| len(n))
        .chain(plan.copies.iter().filter(|(_, t)| t == slot).map(|&(n, _)| len(n)))
        .max()
        .unwrap_or(0)
}

fn emit_kernel(e: &mut Emitter, ctx: &Context, index: usize, k: &Kernel) {
    match k {
        Kernel::Map { shape, outputs, .. } => kernels::map(e, ctx, shape, outputs),
        Kernel::Reduce { shape, axes, out, expr } => kernels::reduce(e, ctx, shape, axes, *out, expr),
        Kernel::MatMul {
            out,
            a,
            b,
            transpose_a,
            transpose_b,
        } => kernels::matmul(e, ctx, *out, *a, *b, *transpose_a, *transpose_b),
        Kernel::Conv { out, lhs, rhs, conv } => kernels::conv(e, ctx, index, *out, *lhs, *rhs, conv),
        Kernel::MaxPool { out, x, pool } => kernels::maxpool(e, ctx, *out, *x, pool),
        Kernel::MaxPoolGrad { out, x, dy, pool } => kernels::maxpool_grad(e, ctx, *out, *x, *dy, pool),
        Kernel::Softmax { out, z } => kernels::softmax(e, ctx, *out, *z),
        Kernel::SoftmaxCrossEntropy {
            loss,
            z,
            labels,
            probs,
            grad,
        } => kernels::softmax_cross_entropy(e, ctx, *loss, *z, *labels, *probs, grad.as_ref()),
        Kernel::SigmoidCrossEntropy { loss, z, labels } => kernels::sigmoid_cross_entropy(e, ctx, *loss, *z, *labels),
    }
}

/// The buffers of one call, by slot.
pub struct Buffers<'a> {
    pub input: &'a [f32],
    pub label: Option<&'a [f32]>,
    pub masks: &'a [&'a [f32]],
    pub vars: &'a mut [&'a mut [f32]],
    pub outputs: &'a mut [&'a mut [f32]],
    pub hypers: [f32; 2],
}

impl Routine {
    /// Runs the routine. Every buffer's length is checked against the plan
    /// first: the generated code trusts the plan, so a call with the wrong
    /// buffers is refused rather than run.
    pub fn run(&mut self, io: Buffers) -> Result<(), CodegenError> {
        self.table.clear();
        for (s, &need) in self.slots.iter().zip(&self.needs) {
            let (p, len): (*mut f32, usize) = match *s {
                Storage::Arena { .. } => (self.arena.as_mut_ptr(), self.arena.len()),
                Storage::Input => (io.input.as_ptr().cast_mut(), io.input.len()),
                Storage::Label => io
                    .label
                    .map_or((std::ptr::null_mut(), 0), |l| (l.as_ptr().cast_mut(), l.len())),
                Storage::Mask(i) => io
                    .masks
                    .get(i)
                    .map_or((std::ptr::null_mut(), 0), |m| (m.as_ptr().cast_mut(), m.len())),
                Storage::Var(v) => io
                    .vars
                    .get_mut(v)
                    .map_or((std::ptr::null_mut(), 0), |m| (m.as_mut_ptr(), m.len())),
                Storage::Output(o) => io
                    .outputs
                    .get_mut(o)
                    .map_or((std::ptr::null_mut(), 0), |m| (m.as_mut_ptr(), m.len())),
            };
            if len < need || (need > 0 && p.is_null()) {
                return Err(CodegenError(format!(
                    "buffer {s:?} holds {len} values, the routine needs {need}"
                )));
            }
            self.table.push(p);
        }
        // SAFETY: every pointer covers what the plan reads and writes
        // through it (checked above), and the plan keeps live values apart.
        unsafe { (self.entry)(self.table.as_ptr(), io.hypers.as_ptr()) };
        Ok(())
    }

    /// Which outputs the routine writes, in table order.
    pub fn outputs(&self) -> &[(Output, crate::ir::NodeId)] {
        &self.plan.program.graph.outputs
    }
}
