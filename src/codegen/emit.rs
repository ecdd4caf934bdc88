//! The emitter: a cranelift-frontend builder with what every kernel needs —
//! counted loops, addresses of planned buffers, constants of either the
//! scalar or the f32x4 type, and the compare-and-select maximum.

use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{BlockArg, InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::FunctionBuilder;

pub const LANES: usize = 4;
pub const VECTOR: Type = types::F32X4;

pub struct Emitter<'a> {
    pub b: FunctionBuilder<'a>,
    /// The host has fused multiply-add.
    pub fma: bool,
}

/// Memory the plan sized: no access traps. Not `aligned`: an f32x4 run may
/// start at any element, and the flag would let SSE fold it into an
/// instruction that requires 16-byte alignment.
pub fn flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

impl<'a> Emitter<'a> {
    pub fn int(&mut self, v: i64) -> Value {
        self.b.ins().iconst(types::I64, v)
    }

    /// `base + index * 4` bytes.
    pub fn element(&mut self, base: Value, index: Value) -> Value {
        let bytes = self.b.ins().ishl_imm_s(index, 2);
        self.b.ins().iadd(base, bytes)
    }

    /// `base + offset` elements, for a constant offset.
    pub fn offset(&mut self, base: Value, offset: usize) -> Value {
        if offset == 0 {
            base
        } else {
            self.b.ins().iadd_imm_s(base, (offset * 4) as i64)
        }
    }

    /// `a + b * k`, with a constant `k`.
    pub fn mul_add_index(&mut self, a: Value, b: Value, k: usize) -> Value {
        match k {
            0 => a,
            1 => self.b.ins().iadd(a, b),
            _ => {
                let p = self.b.ins().imul_imm_s(b, k as i64);
                self.b.ins().iadd(a, p)
            }
        }
    }

    /// A float constant of type `ty` (f32 or f32x4).
    pub fn float(&mut self, ty: Type, v: f32) -> Value {
        let s = self.b.ins().f32const(v);
        if ty == types::F32 { s } else { self.b.ins().splat(ty, s) }
    }

    pub fn load(&mut self, ty: Type, addr: Value) -> Value {
        self.b.ins().load(ty, flags(), addr, 0)
    }

    pub fn store(&mut self, v: Value, addr: Value) {
        self.b.ins().store(flags(), v, addr, 0);
    }

    /// A scalar loaded once and spread over the lanes of `ty`.
    pub fn load_splat(&mut self, ty: Type, addr: Value) -> Value {
        let s = self.b.ins().load(types::F32, flags(), addr, 0);
        if ty == types::F32 { s } else { self.b.ins().splat(ty, s) }
    }

    /// `select(c, x, y)` for scalars, `bitselect` for vectors.
    pub fn select(&mut self, ty: Type, c: Value, x: Value, y: Value) -> Value {
        if ty.is_vector() {
            // Vector compares yield integer lane masks; bitselect wants the
            // operands' type.
            let c = if self.b.func.dfg.value_type(c) == ty {
                c
            } else {
                self.b.ins().bitcast(ty, MemFlagsData::new(), c)
            };
            self.b.ins().bitselect(c, x, y)
        } else {
            self.b.ins().select(c, x, y)
        }
    }

    /// The larger of `x` and `y`, `x` on ties: a compare and a select, which
    /// lowers to one max instruction (Cranelift's `fmax` carries NaN rules
    /// that cost several).
    pub fn max(&mut self, ty: Type, x: Value, y: Value) -> Value {
        let c = self.b.ins().fcmp(FloatCC::LessThan, x, y);
        self.select(ty, c, y, x)
    }

    pub fn min(&mut self, ty: Type, x: Value, y: Value) -> Value {
        let c = self.b.ins().fcmp(FloatCC::LessThan, y, x);
        self.select(ty, c, y, x)
    }

    /// `a * b + c`, fused where the host can.
    pub fn mul_add(&mut self, a: Value, b: Value, c: Value) -> Value {
        if self.fma {
            self.b.ins().fma(a, b, c)
        } else {
            let p = self.b.ins().fmul(a, b);
            self.b.ins().fadd(p, c)
        }
    }

    /// `for i in (start..end).step_by(step)`, with `body` emitting the loop
    /// body; bounds are SSA values.
    pub fn for_range(&mut self, start: Value, end: Value, step: i64, mut body: impl FnMut(&mut Self, Value)) {
        let header = self.b.create_block();
        let inner = self.b.create_block();
        let exit = self.b.create_block();
        self.b.append_block_param(header, types::I64);
        self.b.ins().jump(header, &[start.into()]);
        self.b.switch_to_block(header);
        let i = self.b.block_params(header)[0];
        let more = self.b.ins().icmp(IntCC::SignedLessThan, i, end);
        self.b.ins().brif(more, inner, &[], exit, &[]);
        self.b.switch_to_block(inner);
        self.b.seal_block(inner);
        body(self, i);
        let next = self.b.ins().iadd_imm_s(i, step);
        self.b.ins().jump(header, &[next.into()]);
        self.b.seal_block(header);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
    }

    /// `for i in 0..n` with a constant bound.
    pub fn for_n(&mut self, n: usize, body: impl FnMut(&mut Self, Value)) {
        let zero = self.int(0);
        let end = self.int(n as i64);
        self.for_range(zero, end, 1, body);
    }

    /// Runs `then` when `cond` (an i8 truth value) holds.
    pub fn when(&mut self, cond: Value, then: impl FnOnce(&mut Self)) {
        let yes = self.b.create_block();
        let done = self.b.create_block();
        self.b.ins().brif(cond, yes, &[], done, &[]);
        self.b.switch_to_block(yes);
        self.b.seal_block(yes);
        then(self);
        self.b.ins().jump(done, &[]);
        self.b.switch_to_block(done);
        self.b.seal_block(done);
    }

    /// Runs `then` when `cond` holds, else `otherwise`.
    pub fn if_else(&mut self, cond: Value, then: impl FnOnce(&mut Self), otherwise: impl FnOnce(&mut Self)) {
        let yes = self.b.create_block();
        let no = self.b.create_block();
        let done = self.b.create_block();
        self.b.ins().brif(cond, yes, &[], no, &[]);
        self.b.switch_to_block(yes);
        self.b.seal_block(yes);
        then(self);
        self.b.ins().jump(done, &[]);
        self.b.switch_to_block(no);
        self.b.seal_block(no);
        otherwise(self);
        self.b.ins().jump(done, &[]);
        self.b.switch_to_block(done);
        self.b.seal_block(done);
    }

    /// `for i in (start..end).step_by(step)` carrying byte addresses that
    /// advance by their own steps each iteration, so the loop body never
    /// recomputes an address from `i` (Cranelift would otherwise sink the
    /// outer loops' address arithmetic into the inner loop). Returns the
    /// addresses after the last iteration.
    pub fn carry(
        &mut self,
        (start, end, step): (Value, Value, i64),
        carried: &[(Value, i64)],
        mut body: impl FnMut(&mut Self, Value, &[Value]),
    ) -> Vec<Value> {
        let header = self.b.create_block();
        let inner = self.b.create_block();
        let exit = self.b.create_block();
        self.b.append_block_param(header, types::I64);
        for _ in carried {
            self.b.append_block_param(header, types::I64);
        }
        let args: Vec<BlockArg> = std::iter::once(start)
            .chain(carried.iter().map(|c| c.0))
            .map(Into::into)
            .collect();
        self.b.ins().jump(header, &args);
        self.b.switch_to_block(header);
        let params = self.b.block_params(header).to_vec();
        let more = self.b.ins().icmp(IntCC::SignedLessThan, params[0], end);
        self.b.ins().brif(more, inner, &[], exit, &[]);
        self.b.switch_to_block(inner);
        self.b.seal_block(inner);
        body(self, params[0], &params[1..]);
        let mut next = vec![self.b.ins().iadd_imm_s(params[0], step)];
        for (p, (_, inc)) in params[1..].iter().zip(carried) {
            next.push(if *inc == 0 {
                *p
            } else {
                self.b.ins().iadd_imm_s(*p, *inc)
            });
        }
        let args: Vec<BlockArg> = next.into_iter().map(Into::into).collect();
        self.b.ins().jump(header, &args);
        self.b.seal_block(header);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
        params
    }

    /// A run of `n` elements, f32x4 at a time then one at a time, walking
    /// each of `ptrs` (byte addresses) by its element stride (0 or 1):
    /// `body(type, addresses)` handles `type`'s lanes.
    pub fn run(&mut self, n: Value, ptrs: &[(Value, usize)], mut body: impl FnMut(&mut Self, Type, &[Value])) {
        let lanes = LANES as i64;
        let step = |k: i64| -> Vec<(Value, i64)> { ptrs.iter().map(|&(p, s)| (p, 4 * k * s as i64)).collect() };
        // Unrolled twice: two f32x4 per trip halves the loop's overhead.
        let zero = self.int(0);
        let pair_end = self.b.ins().band_imm_s(n, !(2 * lanes - 1));
        let done = self.carry((zero, pair_end, 2 * lanes), &step(2 * lanes), |e, _, at| {
            body(e, VECTOR, at);
            let next: Vec<Value> = at
                .iter()
                .zip(ptrs)
                .map(|(&p, &(_, s))| {
                    if s == 0 {
                        p
                    } else {
                        e.b.ins().iadd_imm_s(p, 4 * lanes * s as i64)
                    }
                })
                .collect();
            body(e, VECTOR, &next);
        });
        let resume = |done: &[Value], k: i64| -> Vec<(Value, i64)> {
            done[1..]
                .iter()
                .zip(ptrs)
                .map(|(&p, &(_, s))| (p, 4 * k * s as i64))
                .collect()
        };
        let vector_end = self.b.ins().band_imm_s(n, !(lanes - 1));
        let done = self.carry((done[0], vector_end, lanes), &resume(&done, lanes), |e, _, at| {
            body(e, VECTOR, at)
        });
        self.carry((done[0], n, 1), &resume(&done, 1), |e, _, at| body(e, types::F32, at));
    }

    /// `n` elements walked by `ptrs` with any element strides: f32x4 when
    /// every stride is 0 or 1, else one at a time.
    pub fn walk(&mut self, n: usize, ptrs: &[(Value, usize)], mut body: impl FnMut(&mut Self, Type, &[Value])) {
        let count = self.int(n as i64);
        if ptrs.iter().all(|&(_, s)| s <= 1) {
            self.run(count, ptrs, body);
        } else {
            let zero = self.int(0);
            let carried: Vec<(Value, i64)> = ptrs.iter().map(|&(p, s)| (p, 4 * s as i64)).collect();
            self.carry((zero, count, 1), &carried, |e, _, at| body(e, types::F32, at));
        }
    }

    /// A run over element indices, for bodies that address by index.
    pub fn run_indexed(&mut self, n: Value, mut body: impl FnMut(&mut Self, Type, Value)) {
        let zero = self.int(0);
        let vector_end = self.b.ins().band_imm_s(n, !(LANES as i64 - 1));
        self.for_range(zero, vector_end, LANES as i64, |e, i| body(e, VECTOR, i));
        self.for_range(vector_end, n, 1, |e, i| body(e, types::F32, i));
    }

    /// Horizontal sum of an f32x4.
    pub fn sum_lanes(&mut self, v: Value) -> Value {
        let mut s = self.b.ins().extractlane(v, 0);
        for l in 1..LANES as u8 {
            let x = self.b.ins().extractlane(v, l);
            s = self.b.ins().fadd(s, x);
        }
        s
    }
}
