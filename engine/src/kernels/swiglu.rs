//! SwiGLU: `out = silu(gate) * up`.

use super::{common_precision, ensure_len, groups_for, precision_tag, wgsl};
use crate::error::Result;
use crate::gpu::{assemble, grid, Binding, Dispatch, GpuContext, KernelSource, Precision, Tensor};

pub fn source(precision: Precision) -> KernelSource {
    KernelSource {
        label: format!("swiglu.{}", precision_tag(precision)),
        source: assemble(precision, &[], &[wgsl::SWIGLU]),
        entry: "swiglu",
        bindings: &[
            Binding::Uniform,
            Binding::Read,
            Binding::Read,
            Binding::ReadWrite,
        ],
    }
}

/// `out[i] = silu(gate[i]) * up[i]` for the first `n` values.
pub fn swiglu(
    ctx: &GpuContext,
    gate: &Tensor,
    up: &Tensor,
    out: &Tensor,
    n: usize,
) -> Result<Dispatch> {
    let precision = common_precision("swiglu", &[gate, up, out])?;
    for (what, t) in [("gate", gate), ("up", up), ("out", out)] {
        ensure_len("swiglu", what, t, n)?;
    }
    let params = ctx.uniform(&[n as u32, 0, 0, 0]);
    ctx.dispatch(
        &source(precision),
        &[&params, &gate.buffer, &up.buffer, &out.buffer],
        grid(groups_for(n, 256)),
    )
}

/// CPU reference.
pub fn reference(gate: &[f32], up: &[f32]) -> Vec<f32> {
    gate.iter()
        .zip(up)
        .map(|(&g, &u)| (g as f64 / (1.0 + (-g as f64).exp()) * u as f64) as f32)
        .collect()
}
