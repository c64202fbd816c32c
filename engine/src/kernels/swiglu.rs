//! SwiGLU on fused gate/up rows: `out = silu(gate) * up`.

use super::{common_precision, ensure_len, groups_for, precision_tag, wgsl};
use crate::error::Result;
use crate::gpu::{assemble, grid, Binding, Dispatch, GpuContext, KernelSource, Precision, Tensor};

pub fn source(precision: Precision) -> KernelSource {
    KernelSource {
        label: format!("swiglu.{}", precision_tag(precision)),
        source: assemble(precision, &[], &[wgsl::SWIGLU]),
        entry: "swiglu",
        bindings: &[Binding::Uniform, Binding::Read, Binding::ReadWrite],
    }
}

/// `out[t, j] = silu(gate_up[t, j]) * gate_up[t, width + j]` for `n_tokens` rows of
/// `2 * width` values (the fused gate and up projections).
pub fn swiglu(
    ctx: &GpuContext,
    gate_up: &Tensor,
    out: &Tensor,
    n_tokens: usize,
    width: usize,
) -> Result<Dispatch> {
    let precision = common_precision("swiglu", &[gate_up, out])?;
    ensure_len("swiglu", "gate_up", gate_up, n_tokens * 2 * width)?;
    ensure_len("swiglu", "out", out, n_tokens * width)?;
    let params = ctx.uniform(&[n_tokens as u32, width as u32, 0, 0]);
    ctx.dispatch(
        &source(precision),
        &[&params, &gate_up.buffer, &out.buffer],
        grid(groups_for(n_tokens * width, 256)),
    )
}

/// CPU reference over fused rows of `2 * width` values.
pub fn reference(gate_up: &[f32], width: usize) -> Vec<f32> {
    gate_up
        .chunks_exact(2 * width)
        .flat_map(|row| {
            let (gate, up) = row.split_at(width);
            gate.iter()
                .zip(up)
                .map(|(&g, &u)| (g as f64 / (1.0 + (-g as f64).exp()) * u as f64) as f32)
        })
        .collect()
}
