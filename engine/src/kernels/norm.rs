//! The normalized residual add `x += RMSNorm(y) * w`: the norm some models (Gemma 2 and 3)
//! apply to a block's output before it joins the residual stream. The norms before a block
//! run inside the matmul that reads the block's input (see [`super::matmul::Fusion`]).

use super::{ensure_len, precision_tag, wgsl};
use crate::error::{ensure_shape, Result};
use crate::gpu::{
    assemble, grid, Binding, DType, Dispatch, GpuContext, KernelSource, Precision, Tensor,
};

const THREADS: u32 = 64;

pub fn source(precision: Precision) -> KernelSource {
    KernelSource {
        label: format!("norm_add.{}", precision_tag(precision)),
        source: assemble(
            precision,
            &[("THREADS", THREADS)],
            &[wgsl::REDUCE, wgsl::NORM],
        ),
        entry: "norm_add",
        bindings: &[
            Binding::Uniform,
            Binding::Read,
            Binding::Read,
            Binding::ReadWrite,
        ],
    }
}

/// `x[t] += RMSNorm(y[t]) * weights` for `n_tokens` rows of `weights.len()` values; `x` (the
/// residual stream) and `weights` are f32, `y` an activation of either precision.
pub fn norm_add(
    ctx: &GpuContext,
    y: &Tensor,
    weights: &Tensor,
    eps: f32,
    x: &Tensor,
    n_tokens: usize,
) -> Result<Dispatch> {
    ensure_shape(x.dtype == DType::F32 && weights.dtype == DType::F32, || {
        "norm_add: the residual and the weights must be f32".into()
    })?;
    let dim = weights.len();
    ensure_len("norm_add", "y", y, n_tokens * dim)?;
    ensure_len("norm_add", "x", x, n_tokens * dim)?;
    let params = ctx.uniform(&[n_tokens as u32, dim as u32, eps.to_bits(), 0]);
    ctx.dispatch(
        &source(y.precision()?),
        &[&params, &y.buffer, &weights.buffer, &x.buffer],
        grid(n_tokens.max(1) as u32),
    )
}

/// CPU reference, f64 sums.
pub fn reference(y: &[f32], weights: &[f32], eps: f32, x: &mut [f32]) {
    let dim = weights.len();
    for (xr, yr) in x.chunks_exact_mut(dim).zip(y.chunks_exact(dim)) {
        let mean_square = yr.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / dim as f64;
        let s = 1.0 / (mean_square + eps as f64).sqrt();
        for ((xv, &yv), &w) in xr.iter_mut().zip(yr).zip(weights) {
            *xv = (*xv as f64 + yv as f64 * s * w as f64) as f32;
        }
    }
}
