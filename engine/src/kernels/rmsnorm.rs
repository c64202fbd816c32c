//! RMSNorm: `y[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight`.

use super::{common_precision, ensure_len, precision_tag, wgsl};
use crate::error::{ensure_shape, Result};
use crate::gpu::{
    assemble, grid, Binding, DType, Dispatch, GpuContext, KernelSource, Precision, Tensor,
};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    dim: u32,
    eps: f32,
    _pad: u32,
}

pub fn source(precision: Precision) -> KernelSource {
    KernelSource {
        label: format!("rmsnorm.{}", precision_tag(precision)),
        source: assemble(precision, &[], &[wgsl::RMSNORM]),
        entry: "rmsnorm",
        bindings: &[
            Binding::Uniform,
            Binding::Read,
            Binding::Read,
            Binding::ReadWrite,
        ],
    }
}

/// Normalizes `rows` rows of `x` into `y`; `weight` is an f32 tensor of `dim` values.
pub fn rmsnorm(
    ctx: &GpuContext,
    x: &Tensor,
    weight: &Tensor,
    y: &Tensor,
    rows: usize,
    eps: f32,
) -> Result<Dispatch> {
    let precision = common_precision("rmsnorm", &[x, y])?;
    let dim = weight.len();
    ensure_shape(weight.dtype == DType::F32, || {
        "rmsnorm: weight must be f32".into()
    })?;
    ensure_len("rmsnorm", "x", x, rows * dim)?;
    ensure_len("rmsnorm", "y", y, rows * dim)?;
    let params = ctx.uniform(&Params {
        rows: rows as u32,
        dim: dim as u32,
        eps,
        _pad: 0,
    });
    ctx.dispatch(
        &source(precision),
        &[&params, &x.buffer, &weight.buffer, &y.buffer],
        grid(rows as u32),
    )
}

/// CPU reference.
pub fn reference(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
    x.chunks(weight.len())
        .flat_map(|row| {
            let mean = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / row.len() as f64;
            let inv = 1.0 / (mean + eps as f64).sqrt();
            row.iter()
                .zip(weight)
                .map(move |(&v, &w)| (v as f64 * inv * w as f64) as f32)
        })
        .collect()
}
