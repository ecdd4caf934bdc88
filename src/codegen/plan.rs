//! Memory planning: where every value of a fused program lives for a given
//! batch size, with the lowering chosen for each kernel at that size. The model's variables, the batch, the labels, the dropout
//! masks and the requested outputs live in buffers the caller passes; every
//! other value gets a place in one arena, reused once the value is dead
//! (liveness over the kernel order), in place where an elementwise loop
//! overwrites an input it is the last to read. Assigned variables are
//! updated in place when no later kernel reads their old value.

use super::kernels::Lowering;
use crate::fuse::{Kernel, Program};
use crate::ir::{Graph, NodeId, Op, Output, VarId};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Where a value lives. Offsets and lengths count f32 elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Storage {
    Arena {
        offset: usize,
    },
    Var(VarId),
    Input,
    Label,
    Mask(usize),
    /// The caller's buffer for `graph.outputs[i]`.
    Output(usize),
}

/// Alignment of arena buffers: one cache line.
const ALIGN: usize = 16;

/// A value's home and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffer {
    pub storage: Storage,
    pub len: usize,
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub program: Program,
    pub batch: usize,
    /// How each kernel is computed at this batch size.
    pub lowerings: Vec<Arc<dyn Lowering>>,
    pub buffers: HashMap<NodeId, Buffer>,
    /// Temporary space of each kernel (an im2col matrix), as (offset, len).
    pub scratch: Vec<Option<(usize, usize)>>,
    /// Values copied into outputs or variables after the last kernel,
    /// where they could not be written there directly.
    pub copies: Vec<(NodeId, Storage)>,
    pub arena_len: usize,
}

impl Plan {
    pub fn arena_bytes(&self) -> usize {
        4 * self.arena_len
    }
}

/// Plans `program` for `batch`, each kernel computed by its lowering (one
/// per kernel), which sizes its temporary space (an im2col matrix, say).
pub fn plan(program: Program, batch: usize, lowerings: Vec<Arc<dyn Lowering>>) -> Plan {
    let g = &program.graph;
    let kernels = &program.kernels;
    let len = |n: NodeId| g[n].shape.numel(batch);
    let io: Vec<(Vec<NodeId>, Vec<NodeId>)> = kernels.iter().map(|k| (k.inputs(g), k.outputs())).collect();
    let root = |n: NodeId| root(g, n);

    let mut buffers: HashMap<NodeId, Buffer> = HashMap::new();
    for n in g.nodes.node_indices() {
        let storage = match g[n].op {
            Op::Input => Storage::Input,
            Op::Label => Storage::Label,
            Op::Var(v) => Storage::Var(v),
            Op::DropoutMask { index, .. } => Storage::Mask(index),
            _ => continue,
        };
        buffers.insert(n, Buffer { storage, len: len(n) });
    }

    // Which kernel writes each value, and the last kernel reading it.
    let mut writer: HashMap<NodeId, usize> = HashMap::new();
    let mut last_read: HashMap<NodeId, usize> = HashMap::new();
    let mut var_read: HashMap<VarId, usize> = HashMap::new();
    for (i, (inputs, outputs)) in io.iter().enumerate() {
        for &o in outputs {
            writer.insert(o, i);
        }
        for &v in inputs {
            let r = root(v);
            last_read.insert(r, i);
            if let Op::Var(var) = g[r].op {
                var_read.insert(var, i);
            }
        }
    }

    // Outputs go straight to the caller's buffers; assigned variables are
    // updated in place when that is safe.
    // A reshape's data is its operand's, so the kernel writing the operand
    // writes the output.
    let mut copies = Vec::new();
    for (i, &(o, n)) in g.outputs.iter().enumerate() {
        let target = match o {
            Output::Assign(v) => Storage::Var(v),
            Output::Prediction | Output::Loss | Output::Grad(_) | Output::Layer(_) | Output::InputGrad => {
                Storage::Output(i)
            }
        };
        let r = root(n);
        let direct = match (writer.get(&r), target) {
            (None, _) => false,
            (Some(_), _) if buffers.contains_key(&r) => false,
            (Some(&w), Storage::Var(v)) => in_place_safe(g, &kernels[w], &io[w].0, &var_read, w, v),
            (Some(_), _) => true,
        };
        if direct {
            buffers.insert(
                r,
                Buffer {
                    storage: target,
                    len: len(r),
                },
            );
        } else {
            copies.push((r, target));
        }
    }
    let copied: HashSet<NodeId> = copies.iter().map(|&(c, _)| c).collect();

    // The arena: first fit over free intervals, freed after the last read.
    // An interval dies at the kernel recorded for its offset; an in-place
    // output moves that kernel later.
    let mut arena = Arena::default();
    let mut scratch_at = Vec::with_capacity(kernels.len());
    let end = kernels.len();
    let mut dying: HashMap<usize, Vec<(usize, usize)>> = HashMap::new();
    let mut death: HashMap<usize, usize> = HashMap::new();
    for (i, (k, (inputs, outputs))) in kernels.iter().zip(&io).enumerate() {
        for &o in outputs {
            if buffers.contains_key(&o) {
                continue;
            }
            let n_len = len(o);
            let last = if copied.contains(&o) {
                end
            } else {
                last_read.get(&o).copied().unwrap_or(i)
            };
            // In place: a loop may overwrite an input of its own shape that
            // it reads last.
            let reuse = match k {
                Kernel::Map { shape, .. } => inputs.iter().map(|&v| root(v)).find(|&v| {
                    let home = buffers.get(&v).map(|b| b.storage);
                    g[v].shape == *shape
                        && last_read.get(&v) == Some(&i)
                        && !copied.contains(&v)
                        && matches!(home, Some(Storage::Arena { .. }))
                        && !outputs
                            .iter()
                            .any(|&w| w != o && buffers.get(&w).map(|b| b.storage) == home)
                }),
                _ => None,
            };
            let offset = match reuse.and_then(|v| buffers.get(&v).map(|b| b.storage)) {
                Some(Storage::Arena { offset }) => offset,
                _ => arena.take(n_len),
            };
            death.insert(offset, last);
            dying
                .entry(last)
                .or_default()
                .push((offset, n_len.div_ceil(ALIGN) * ALIGN));
            buffers.insert(
                o,
                Buffer {
                    storage: Storage::Arena { offset },
                    len: n_len,
                },
            );
        }
        let s = lowerings.get(i).map_or(0, |l| l.scratch());
        scratch_at.push((s > 0).then(|| {
            let offset = arena.take(s);
            (offset, s)
        }));
        if let Some((offset, s)) = scratch_at[i] {
            arena.give(offset, s.div_ceil(ALIGN) * ALIGN);
        }
        for (offset, size) in dying.remove(&i).unwrap_or_default() {
            if death.get(&offset) == Some(&i) {
                death.remove(&offset);
                arena.give(offset, size);
            }
        }
    }
    // Reshapes share their operand's buffer.
    for n in g.nodes.node_indices() {
        if g[n].op == Op::Reshape
            && let Some(b) = buffers.get(&root(n)).copied()
        {
            buffers.insert(n, b);
        }
    }
    let arena_len = arena.high;
    Plan {
        program,
        batch,
        lowerings,
        buffers,
        scratch: scratch_at,
        copies,
        arena_len,
    }
}

/// The value whose data `n` is: reshapes are views of their operand.
fn root(g: &Graph, mut n: NodeId) -> NodeId {
    while g[n].op == Op::Reshape {
        n = g.operands(n)[0];
    }
    n
}

/// Whether kernel `w` may write variable `v` in place: no later kernel reads
/// the variable's old value, and `w` reads it, if at all, only at the index
/// it writes. `var_read` is the last kernel reading each variable.
fn in_place_safe(
    g: &Graph,
    kernel: &Kernel,
    inputs: &[NodeId],
    var_read: &HashMap<VarId, usize>,
    w: usize,
    v: VarId,
) -> bool {
    match var_read.get(&v) {
        None => true,
        Some(&r) if r != w => r < w,
        Some(_) => match kernel {
            Kernel::Map { shape, .. } => inputs
                .iter()
                .all(|&n| g[root(g, n)].op != Op::Var(v) || (g[n].op == Op::Var(v) && g[n].shape == *shape)),
            _ => false,
        },
    }
}

/// Free intervals of the arena, first fit.
#[derive(Default)]
struct Arena {
    free: Vec<(usize, usize)>,
    high: usize,
}

impl Arena {
    fn take(&mut self, len: usize) -> usize {
        let size = len.max(1).div_ceil(ALIGN) * ALIGN;
        if let Some(i) = self.free.iter().position(|&(_, s)| s >= size) {
            let (offset, s) = self.free[i];
            if s == size {
                self.free.remove(i);
            } else {
                self.free[i] = (offset + size, s - size);
            }
            return offset;
        }
        // Grow, absorbing a free interval at the top.
        let offset = match self.free.last() {
            Some(&(o, s)) if o + s == self.high => {
                self.free.pop();
                o
            }
            _ => self.high,
        };
        self.high = offset + size;
        offset
    }

    fn give(&mut self, offset: usize, size: usize) {
        // The free list stays sorted by offset, neighbours coalesced.
        let i = self.free.partition_point(|&(o, _)| o < offset);
        self.free.insert(i, (offset, size));
        if let Some(&(o, s)) = self.free.get(i + 1)
            && offset + size == o
        {
            self.free[i].1 += s;
            self.free.remove(i + 1);
        }
        if i > 0 && self.free[i - 1].0 + self.free[i - 1].1 == offset {
            self.free[i - 1].1 += self.free[i].1;
            self.free.remove(i);
        }
    }
}

/// Checks the plan's invariants: no two values live at once overlap in the
/// arena, and every buffer holds its value. Run under debug assertions and
/// by the tests; a failure is a compiler bug.
pub fn verify(plan: &Plan) -> Result<(), String> {
    let g = &plan.program.graph;
    let kernels = &plan.program.kernels;
    let mut def: HashMap<NodeId, usize> = HashMap::new();
    let mut last_read: HashMap<NodeId, usize> = HashMap::new();
    for (i, k) in kernels.iter().enumerate() {
        for o in k.outputs() {
            def.entry(o).or_insert(i);
        }
        for v in k.inputs(g) {
            last_read.insert(root(g, v), i);
        }
    }
    let copied: HashSet<NodeId> = plan.copies.iter().map(|&(c, _)| c).collect();
    // (value, offset, len, first kernel, last kernel)
    let mut live: Vec<(NodeId, usize, usize, usize, usize)> = Vec::new();
    for (&n, b) in &plan.buffers {
        if g[n].op == Op::Reshape {
            continue;
        }
        if b.len < g[n].shape.numel(plan.batch) {
            return Err(format!("buffer of {n:?} is too small"));
        }
        if let Storage::Arena { offset } = b.storage {
            if offset + b.len > plan.arena_len {
                return Err(format!("buffer of {n:?} runs past the arena"));
            }
            let first = def.get(&n).copied().unwrap_or(0);
            let mut last = last_read.get(&n).copied().unwrap_or(first).max(first);
            if copied.contains(&n) {
                last = kernels.len();
            }
            live.push((n, offset, b.len, first, last));
        }
    }
    // Sweep the kernels in order, holding the values live at each.
    live.sort_unstable_by_key(|v| (v.3, v.0));
    let overlap =
        |a: &(NodeId, usize, usize, usize, usize), offset: usize, len: usize| a.1 < offset + len && offset < a.1 + a.2;
    let mut next = live.iter().peekable();
    let mut active: Vec<&(NodeId, usize, usize, usize, usize)> = Vec::new();
    for k in 0..=kernels.len() {
        active.retain(|a| a.4 >= k);
        while let Some(b) = next.next_if(|b| b.3 == k) {
            // Two lifetimes may touch at one kernel only when one value is
            // written in place over the other.
            if let Some(a) = active.iter().find(|a| a.3 < b.4 && b.3 < a.4 && overlap(a, b.1, b.2)) {
                return Err(format!("{:?} and {:?} share arena memory while both live", a.0, b.0));
            }
            active.push(b);
        }
        // A kernel's scratch is free of every value live across the kernel.
        let Some(&Some((offset, len))) = plan.scratch.get(k) else {
            continue;
        };
        if offset + len > plan.arena_len {
            return Err(format!("the scratch of kernel {k} runs past the arena"));
        }
        if let Some(v) = active.iter().find(|v| overlap(v, offset, len)) {
            return Err(format!("the scratch of kernel {k} overlaps {:?}, live there", v.0));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuse::fuse;

    fn mnist_plan() -> Plan {
        let source = include_str!("../../models/mnist_cnn.cnn");
        let model = crate::parse::parse("mnist_cnn.cnn", source).unwrap();
        let checked = crate::shape::check(model, "mnist_cnn.cnn", source).unwrap();
        let mut graph = crate::lower::lower(&checked, crate::lower::Mode::Training).unwrap();
        crate::autodiff::differentiate(&mut graph).unwrap();
        crate::passes::optimize(&mut graph).unwrap();
        crate::codegen::plan_for(fuse(graph), 4, Default::default()).unwrap()
    }

    #[test]
    fn plans_hold_their_invariants_and_reuse_memory() {
        let p = mnist_plan();
        verify(&p).unwrap();
        // Liveness pays: the arena is smaller than every value and every
        // scratch side by side.
        let values: usize = p
            .buffers
            .values()
            .filter(|b| matches!(b.storage, Storage::Arena { .. }))
            .map(|b| b.len)
            .sum();
        let scratch: usize = p.scratch.iter().flatten().map(|s| s.1).sum();
        assert!(
            p.arena_len < values + scratch,
            "arena {} of {}",
            p.arena_len,
            values + scratch
        );
    }

    #[test]
    fn verify_catches_overlapping_values_and_scratch() {
        let mut p = mnist_plan();
        // Put two values live at the same time at the same place.
        let arena: Vec<NodeId> = p
            .buffers
            .iter()
            .filter(|(_, b)| matches!(b.storage, Storage::Arena { .. }))
            .map(|(&n, _)| n)
            .collect();
        let place = p.buffers[&arena[0]];
        let mut broken = p.clone();
        broken.scratch.iter_mut().for_each(|s| *s = None);
        for n in &arena {
            broken.buffers.insert(
                *n,
                Buffer {
                    storage: place.storage,
                    len: p.buffers[n].len,
                },
            );
        }
        let e = verify(&broken).unwrap_err();
        assert!(e.contains("share arena memory"), "{e}");
        // A scratch over a live value.
        let k = p.scratch.iter().position(Option::is_some).unwrap();
        let live = p.program.kernels[k].inputs(&p.program.graph)[0];
        if let Storage::Arena { offset } = p.buffers[&live].storage {
            p.scratch[k] = Some((offset, 16));
            assert!(verify(&p).unwrap_err().contains("scratch"));
        }
    }
}
