//! The reference interpreter: runs any graph with ndarray, in f32 or f64.
//! Simple and obviously correct rather than fast; it is the oracle every
//! other engine is tested against.

mod kernels;

use crate::ir::{Graph, Hyper, NodeId, Op, Output};
use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn, NdFloat, Zip};
use num_traits::FromPrimitive;
use std::fmt;

/// A float the interpreter computes in.
pub trait Float: NdFloat + FromPrimitive {}
impl<T: NdFloat + FromPrimitive> Float for T {}

/// What a graph reads: the batch, the labels, the variables (in
/// `Graph::vars` order), the dropout masks (by index) and the per-step
/// scalars.
pub struct Feeds<'a, T> {
    pub input: ArrayViewD<'a, T>,
    pub label: Option<ArrayViewD<'a, T>>,
    pub vars: &'a [ArrayD<T>],
    pub masks: &'a [ArrayD<T>],
    pub hyper: &'a dyn Fn(Hyper) -> f64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// Runs the graph; returns its outputs in `Graph::outputs` order.
pub fn run<T: Float>(graph: &Graph, feeds: &Feeds<T>) -> Result<Vec<(Output, ArrayD<T>)>, Error> {
    let batch = feeds.input.shape().first().copied().unwrap_or(1);
    let mut values: Vec<Option<ArrayD<T>>> =
        vec![None; graph.nodes.node_indices().map(|n| n.index() + 1).max().unwrap_or(0)];
    for n in graph.schedule() {
        let v = eval(graph, n, batch, feeds, &values)?;
        let want = graph[n].shape.resolve(batch);
        if v.shape() != want.as_slice() {
            return Err(Error(format!(
                "{} produced shape {:?}, expected {:?}",
                graph[n].op.name(),
                v.shape(),
                want
            )));
        }
        // Callers index outputs as flat row-major slices.
        values[n.index()] = Some(if v.is_standard_layout() {
            v
        } else {
            v.as_standard_layout().into_owned()
        });
    }
    graph
        .outputs
        .iter()
        .map(|&(o, n)| {
            values[n.index()]
                .clone()
                .map(|v| (o, v))
                .ok_or_else(|| Error(format!("output {o:?} was not computed")))
        })
        .collect()
}

fn cast<T: Float>(x: f64) -> T {
    T::from_f64(x).unwrap_or_else(T::nan)
}

fn feed<T: Float>(what: &str, v: Option<&ArrayViewD<T>>, want: &[usize]) -> Result<ArrayD<T>, Error> {
    match v {
        Some(v) if v.shape() == want => Ok(v.to_owned()),
        Some(v) => Err(Error(format!(
            "{what} has shape {:?}, the model expects {want:?}",
            v.shape()
        ))),
        None => Err(Error(format!("the graph reads {what}, but none was given"))),
    }
}

fn eval<T: Float>(
    g: &Graph,
    n: NodeId,
    batch: usize,
    feeds: &Feeds<T>,
    values: &[Option<ArrayD<T>>],
) -> Result<ArrayD<T>, Error> {
    let node = &g[n];
    let shape = node.shape.resolve(batch);
    let operands: Vec<&ArrayD<T>> = g
        .operands(n)
        .iter()
        .map(|a| {
            values[a.index()]
                .as_ref()
                .ok_or_else(|| Error("operand not computed".into()))
        })
        .collect::<Result<_, _>>()?;
    let x = || operands[0];
    Ok(match &node.op {
        Op::Input => feed("the input batch", Some(&feeds.input), &shape)?,
        Op::Label => feed("the labels", feeds.label.as_ref(), &shape)?,
        Op::Var(v) => {
            let name = &g.vars[*v].name;
            feed(
                &format!("variable {name}"),
                feeds.vars.get(*v).map(|a| a.view()).as_ref(),
                &shape,
            )?
        }
        Op::Const { value, per_batch } => {
            let v = if *per_batch { value / batch as f64 } else { *value };
            ArrayD::from_elem(IxDyn(&[]), cast(v))
        }
        Op::DropoutMask { index, .. } => feed(
            &format!("dropout mask #{index}"),
            feeds.masks.get(*index).map(|a| a.view()).as_ref(),
            &shape,
        )?,
        Op::Hyper(h) => ArrayD::from_elem(IxDyn(&[]), cast((feeds.hyper)(*h))),
        Op::Unary(u) => x().mapv(|v| u.apply(v)),
        Op::Binary(b) => {
            let (l, r) = (operands[0], operands[1]);
            let (Some(l), Some(r)) = (l.broadcast(IxDyn(&shape)), r.broadcast(IxDyn(&shape))) else {
                return Err(Error(format!("cannot broadcast {:?} with {:?}", l.shape(), r.shape())));
            };
            Zip::from(&l).and(&r).map_collect(|&x, &y| b.apply(x, y))
        }
        Op::Sum { axes } => {
            let mut v = x().clone();
            for &a in axes {
                v = v.sum_axis(Axis(a)).insert_axis(Axis(a));
            }
            v
        }
        Op::Broadcast => x()
            .broadcast(IxDyn(&shape))
            .ok_or_else(|| Error(format!("cannot broadcast {:?} to {shape:?}", x().shape())))?
            .to_owned(),
        Op::Reshape => x()
            .as_standard_layout()
            .into_owned()
            .into_shape_with_order(IxDyn(&shape))
            .map_err(|e| Error(format!("reshape: {e}")))?,
        Op::Transpose { perm } => x().view().permuted_axes(IxDyn(perm)).as_standard_layout().into_owned(),
        Op::MatMul {
            transpose_a,
            transpose_b,
        } => kernels::matmul(operands[0], operands[1], *transpose_a, *transpose_b)?,
        Op::Conv2d(c) => kernels::conv2d(operands[0], operands[1], c, &shape)?,
        Op::MaxPool2d(p) => kernels::maxpool(x(), p, &shape),
        Op::MaxPool2dGrad(p) => kernels::maxpool_grad(operands[0], operands[1], p),
        Op::AvgPool2d(p) => kernels::avgpool(x(), p, &shape),
        Op::AvgPool2dGrad(p) => kernels::avgpool_grad(x(), p, &shape),
        Op::Softmax => kernels::softmax(x()),
        Op::SoftmaxCrossEntropy => {
            let (z, y) = (operands[0], operands[1]);
            let lse = kernels::logsumexp(z);
            let rows = lse.len().max(1);
            let dot = (z * y).sum_axis(Axis(z.ndim() - 1));
            let total = (&lse - &dot).sum();
            ArrayD::from_elem(IxDyn(&[]), total / cast(rows as f64))
        }
        Op::SigmoidCrossEntropy => {
            // max(z, 0) - z*y + log(1 + exp(-|z|)): stable for any z.
            let (z, y) = (operands[0], operands[1]);
            let total = Zip::from(z).and(y).fold(T::zero(), |acc, &z, &y| {
                acc + z.max(T::zero()) - z * y + (-z.abs()).exp().ln_1p()
            });
            ArrayD::from_elem(IxDyn(&[]), total / cast(z.len().max(1) as f64))
        }
    })
}
