//! cnnc: a compiler for convolutional networks written as declarative layer
//! stacks. The modules are the stages of the pipeline, in order:
//!
//! `parse` (.cnn text to AST) → `shape` (layer shapes, params, FLOPs) →
//! `lower` (AST to IR) → `autodiff` (backward graph) → `passes` (graph
//! rewrites) → `interp`, or `fuse` (kernels) → `codegen` (lowering, memory
//! plan, Cranelift) → `runtime` (training), with `cli` on top. Beside
//! them, models move in and out: `onnx` (export and import), `keras` (Keras 3
//! archives in), and `convert`, what the importers share.

pub mod autodiff;
pub mod cli;
pub mod codegen;
pub mod convert;
pub mod diag;
pub mod fuse;
pub mod interp;
pub mod ir;
pub mod keras;
pub mod lower;
pub mod onnx;
pub mod parse;
pub mod passes;
pub mod runtime;
pub mod shape;
pub mod summary;
