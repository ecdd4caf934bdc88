//! Code generation: a fused program, for a batch size, gets a lowering for
//! each kernel (`kernels/`) and a memory plan (`plan.rs`), then becomes one
//! native function with Cranelift, compiled once per routine and batch
//! size. The function takes a table of buffer pointers (arena, batch,
//! labels, dropout masks, variables, outputs) and the step's
//! hyperparameters.

pub mod c;
pub mod emit;
pub mod gemm;
mod kernels;
mod math;
pub mod object;
pub mod plan;
pub mod print;
pub mod profile;
pub mod simd;
mod threads;

use crate::diag::Diagnostic;
use crate::fuse::Program;
use crate::ir::{Graph, Hyper, Origin, Output};
use cranelift_codegen::ir::{AbiParam, FuncRef, InstBuilder, MemFlagsData, Signature, UserFuncName, Value, types};
use cranelift_codegen::isa::TargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module, default_libcall_names};
use emit::Emitter;
use kernels::Context;
use plan::{Plan, Storage};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use target_lexicon::{Aarch64Architecture, Architecture, PointerWidth, Triple};

#[derive(Clone, Debug, PartialEq)]
pub struct CodegenError {
    pub message: String,
    /// The layer whose node could not be compiled, if one is to blame.
    pub origin: Option<Origin>,
}

impl CodegenError {
    pub fn new(message: impl Into<String>) -> CodegenError {
        CodegenError {
            message: message.into(),
            origin: None,
        }
    }

    pub fn at(mut self, origin: &Origin) -> CodegenError {
        self.origin = Some(origin.clone());
        self
    }

    /// The error at the layer it comes from, if any, for rendering with its
    /// line.
    pub fn diagnostic(&self) -> Option<Diagnostic> {
        let origin = self.origin.as_ref()?;
        Some(
            Diagnostic::error(
                origin.span,
                format!("cannot compile `{}`: {}", origin.what, self.message),
            )
            .label(format!("in the code generated for `{}`", origin.what)),
        )
    }
}

impl fmt::Display for CodegenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Some(o) => write!(f, "{} (in `{}`, line {})", self.message, o.what, o.line),
            None => f.write_str(&self.message),
        }
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

pub use kernels::conv::{Policy as ConvPolicy, names as conv_algorithms};

/// Chooses each kernel's lowering for `batch` (its convolutions' algorithms
/// by `conv`), plans memory for them, and checks the plan.
pub fn plan_for(program: Program, batch: usize, conv: ConvPolicy) -> Result<Plan, CodegenError> {
    let lowerings = program
        .kernels
        .iter()
        .map(|k| kernels::lowering(k, &program.graph, batch, conv))
        .collect::<Result<_, _>>()?;
    let plan = plan::plan(program, batch, lowerings);
    if cfg!(debug_assertions) {
        plan::verify(&plan).map_err(|e| CodegenError::new(format!("memory plan: {e}")))?;
    }
    Ok(plan)
}

/// The functions generated code calls, in the order every function
/// declares them: Cranelift names them `fn0`, `fn1`, ... in that order.
pub fn imports() -> [Import; 4] {
    [
        Import {
            name: "cnnc_sgemm",
            params: 13,
            what: "the GEMM library (see --stage fused for which kernels call it)",
            address: gemm::cnnc_sgemm as *const u8,
        },
        Import {
            name: "cnnc_mark",
            params: 1,
            what: "the profiler's timer (called only with `cnnc bench --profile`)",
            address: profile::cnnc_mark as *const u8,
        },
        Import {
            name: "cnnc_parallel",
            params: 4,
            what: "which runs a large loop's functions below on every core",
            address: threads::cnnc_parallel as *const u8,
        },
        Import {
            name: "cnnc_winograd",
            params: 5,
            what: "Winograd's convolution (see --stage fused for which convolutions call it)",
            address: kernels::conv::cnnc_winograd as *const u8,
        },
    ]
}

/// A function the generated code imports.
pub struct Import {
    pub name: &'static str,
    /// Pointer-sized parameters.
    pub params: usize,
    /// What it is, for the clif dump's legend.
    pub what: &'static str,
    pub address: *const u8,
}

/// Indices of [`imports`].
const SGEMM: usize = 0;
const MARK: usize = 1;
const PARALLEL: usize = 2;
const WINOGRAD: usize = 3;

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

/// Cranelift's settings for cnnc's code: optimized for speed, verified in
/// debug builds; position-independent for an object a linker places (a
/// PIE executable or a shared library), absolute for the JIT.
fn flags(pic: bool) -> Result<settings::Flags, CodegenError> {
    let mut flags = settings::builder();
    let set = |f: &mut settings::Builder, k: &str, v: &str| f.set(k, v).map_err(|e| CodegenError::new(e.to_string()));
    set(&mut flags, "opt_level", "speed")?;
    set(&mut flags, "is_pic", if pic { "true" } else { "false" })?;
    set(&mut flags, "use_colocated_libcalls", "false")?;
    set(
        &mut flags,
        "enable_verifier",
        if cfg!(debug_assertions) { "true" } else { "false" },
    )?;
    Ok(settings::Flags::new(flags))
}

/// The target to compile for: the host with every feature it has, or a
/// triple (`cnnc build --target`) with its baseline features.
pub fn isa(target: Option<&str>, pic: bool) -> Result<Arc<dyn TargetIsa>, CodegenError> {
    let builder = match target {
        None => cranelift_native::builder().map_err(|e| CodegenError::new(format!("unsupported host: {e}")))?,
        Some(name) => {
            let triple = Triple::from_str(name).map_err(|e| {
                CodegenError::new(format!("`{name}` is not a target triple ({e})\n  = help: {TARGETS}"))
            })?;
            if triple.pointer_width() != Ok(PointerWidth::U64) {
                return Err(CodegenError::new(format!(
                    "cnnc compiles for 64-bit targets only, and `{name}` is not one\n  = help: {TARGETS}"
                )));
            }
            cranelift_codegen::isa::lookup(triple)
                .map_err(|e| CodegenError::new(format!("cannot compile for `{name}`: {e}\n  = help: {TARGETS}")))?
        }
    };
    builder
        .finish(flags(pic)?)
        .map_err(|e| CodegenError::new(e.to_string()))
}

/// The targets cnnc's Cranelift is built with, for error messages.
const TARGETS: &str = "give an x86-64 or aarch64 triple, such as x86_64-unknown-linux-gnu or aarch64-unknown-linux-gnu";

/// Whether `isa` has fused multiply-add (the emitter then uses it).
fn has_fma(isa: &dyn TargetIsa) -> bool {
    // aarch64 always has it (and no flag for it).
    isa.triple().architecture == Architecture::Aarch64(Aarch64Architecture::Aarch64)
        || isa
            .isa_flags()
            .iter()
            .any(|f| f.name == "has_fma" && f.as_bool() == Some(true))
}

/// What to compile besides the code itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Keep Cranelift's IR text (`cnnc ir --stage clif`).
    pub keep_clif: bool,
    /// Time every kernel (`cnnc bench --profile`).
    pub profile: bool,
    /// Which algorithms compute the convolutions.
    pub conv: ConvPolicy,
}

/// The most working memory a routine may plan: more is refused before
/// anything is allocated (a huge image at a large batch size), rather than
/// aborting the process.
pub const MAX_ARENA_BYTES: usize = 16 << 30;

/// The signature of a function taking `params` pointer-sized arguments.
fn pointers(module: &impl Module, params: usize) -> Signature {
    let ptr = module.target_config().pointer_type();
    let mut sig = module.make_signature();
    sig.params.extend((0..params).map(|_| AbiParam::new(ptr)));
    sig
}

/// Declares a function taking `params` pointer-sized arguments: an
/// imported helper, or one the module defines.
fn declare(module: &mut impl Module, name: &str, params: usize, linkage: Linkage) -> Result<FuncId, CodegenError> {
    let sig = pointers(module, params);
    module
        .declare_function(name, linkage, &sig)
        .map_err(|e| CodegenError::new(e.to_string()))
}

/// The start of every generated function: the buffer bases and the
/// hyperparameters, loaded once from the tables the caller passes; the
/// addresses of the functions running ranges of split kernels (`ranges`,
/// by kernel index).
fn prologue<'p>(
    e: &mut Emitter,
    module: &mut impl Module,
    plan: &'p Plan,
    slots: &[Storage],
    (imports, ranges): (&[FuncId], &HashMap<usize, FuncId>),
) -> (Context<'p>, Vec<Value>, Vec<FuncRef>) {
    let ptr = module.target_config().pointer_type();
    let entry = e.b.create_block();
    e.b.append_block_params_for_function_params(entry);
    e.b.switch_to_block(entry);
    e.b.seal_block(entry);
    let params = e.b.block_params(entry).to_vec();
    let (table, scalars) = (params[0], params[1]);
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
    // Declared in one order in every function, so that their names in the
    // clif dump follow `imports()`.
    let refs: Vec<FuncRef> = imports
        .iter()
        .map(|&id| module.declare_func_in_func(id, e.b.func))
        .collect();
    let arena = bases[&Storage::Arena { offset: 0 }];
    let ranges = ranges
        .iter()
        .map(|(&i, &id)| {
            let f = module.declare_func_in_func(id, e.b.func);
            (i, e.b.ins().func_addr(ptr, f))
        })
        .collect();
    let context = Context {
        plan,
        bases,
        hypers,
        sgemm: refs[SGEMM],
        winograd: refs[WINOGRAD],
        arena,
        tables: (table, scalars),
        spread: refs[PARALLEL],
        ranges,
    };
    (context, params, refs)
}

/// Builds and defines one function of the module with `body`; returns its
/// Cranelift IR text when asked for.
fn define<M: Module>(
    module: &mut M,
    (id, signature): (FuncId, Signature),
    fma: bool,
    keep_clif: bool,
    body: impl FnOnce(&mut Emitter, &mut M),
) -> Result<Option<String>, CodegenError> {
    let mut ctx = module.make_context();
    ctx.func.signature = signature;
    ctx.func.name = UserFuncName::user(0, id.as_u32());
    let mut fctx = FunctionBuilderContext::new();
    {
        let b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let mut e = Emitter { b, fma };
        body(&mut e, module);
        e.b.ins().return_(&[]);
        e.b.finalize(module.target_config());
    }
    let clif = keep_clif.then(|| ctx.func.display().to_string());
    module
        .define_function(id, &mut ctx)
        .map_err(|e| CodegenError::new(format!("{e:?}")))?;
    module.clear_context(&mut ctx);
    Ok(clif)
}

/// Refuses a plan whose working memory is beyond cnnc's limit.
fn check_arena(plan: &Plan) -> Result<(), CodegenError> {
    if plan.arena_bytes() > MAX_ARENA_BYTES {
        return Err(CodegenError::new(format!(
            "a step at batch {} needs {} of working memory, more than cnnc's limit of {}\n  = help: lower the batch size",
            plan.batch,
            crate::shape::bytes(plan.arena_bytes() as u64),
            crate::shape::bytes(MAX_ARENA_BYTES as u64)
        )));
    }
    Ok(())
}

/// Compiles a planned program into native code in the process (the JIT).
pub fn compile(plan: Plan, options: Options) -> Result<Routine, CodegenError> {
    check_arena(&plan)?;
    let mut arena = Vec::new();
    arena
        .try_reserve_exact(plan.arena_len)
        .map_err(|_| CodegenError::new(format!("cannot allocate {} of working memory", plan.arena_bytes())))?;
    arena.resize(plan.arena_len, 0.0f32);
    let isa = isa(None, false)?;
    let fma = has_fma(isa.as_ref());
    let mut jit = JITBuilder::with_isa(isa, default_libcall_names());
    for i in &imports() {
        jit.symbol(i.name, i.address);
    }
    let mut module = JITModule::new(jit);
    let (id, clif) = define_routine(&mut module, &plan, (fma, options), ("routine", Linkage::Local))?;
    module
        .finalize_definitions()
        .map_err(|e| CodegenError::new(e.to_string()))?;
    let code = module.get_finalized_function(id);
    // SAFETY: `code` is the function just defined with signature
    // (pointer, pointer) -> (), in the host's calling convention.
    let entry = unsafe { std::mem::transmute::<*const u8, Entry>(code) };
    let slots = slots(&plan.program.graph);
    let needs = slots.iter().map(|s| need(&plan, s)).collect();
    Ok(Routine {
        _module: module,
        entry,
        plan,
        clif: options.keep_clif.then_some(clif),
        table: Vec::with_capacity(slots.len()),
        slots,
        needs,
        arena,
    })
}

/// Defines a routine in `module`: the function `name(table, scalars)`
/// with `linkage` (local to the JIT's module, exported from an object), and
/// one local function for each loop it splits across cores. Returns its id,
/// and its Cranelift IR when asked for (else empty).
fn define_routine<M: Module>(
    module: &mut M,
    plan: &Plan,
    (fma, options): (bool, Options),
    (name, linkage): (&str, Linkage),
) -> Result<(FuncId, String), CodegenError> {
    let import_ids = imports()
        .iter()
        .map(|i| declare(module, i.name, i.params, Linkage::Import))
        .collect::<Result<Vec<_>, _>>()?;
    let slots = slots(&plan.program.graph);

    // Kernels split across the cores get a function running a range of
    // their loop.
    let mut ranges: HashMap<usize, FuncId> = HashMap::new();
    let mut clif = String::new();
    for (i, lowering) in plan.lowerings.iter().enumerate() {
        if lowering.split().is_none() {
            continue;
        }
        let id = declare(module, &format!("{name}_kernel{i}"), 4, Linkage::Local)?;
        let signature = pointers(module, 4);
        let text = define(module, (id, signature), fma, options.keep_clif, |e, module| {
            let (context, params, _) = prologue(e, module, plan, &slots, (&import_ids, &HashMap::new()));
            lowering.emit_range(e, &context, i, (params[2], params[3]));
        })?;
        clif += &text.unwrap_or_default();
        ranges.insert(i, id);
    }

    let id = declare(module, name, 2, linkage)?;
    let signature = pointers(module, 2);
    let text = define(module, (id, signature), fma, options.keep_clif, |e, module| {
        let (context, _, refs) = prologue(e, module, plan, &slots, (&import_ids, &ranges));
        let mark = refs[MARK];
        let tick = |e: &mut Emitter, i: usize| {
            if options.profile {
                let i = e.int(i as i64);
                e.b.ins().call(mark, &[i]);
            }
        };
        for (i, lowering) in plan.lowerings.iter().enumerate() {
            tick(e, i);
            lowering.emit(e, &context, i);
        }
        tick(e, plan.program.kernels.len());
        for &(n, to) in &plan.copies {
            let from = context.address(e, n);
            let to = context.bases[&to];
            let len = plan.program.graph[n].shape.numel(plan.batch);
            kernels::copy(e, from, to, len);
        }
        tick(e, plan.program.kernels.len() + 1);
    })?;
    Ok((id, text.unwrap_or_default() + &clif))
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
                return Err(CodegenError::new(format!(
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
