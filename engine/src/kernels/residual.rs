//! The residual connection: `x += y`, in place.

use super::{common_precision, ensure_len, groups_for, precision_tag, wgsl};
use crate::error::Result;
use crate::gpu::{assemble, grid, Binding, Dispatch, GpuContext, KernelSource, Precision, Tensor};

pub fn source(precision: Precision) -> KernelSource {
    KernelSource {
        label: format!("residual.{}", precision_tag(precision)),
        source: assemble(precision, &[], &[wgsl::RESIDUAL]),
        entry: "add",
        bindings: &[Binding::Uniform, Binding::Read, Binding::ReadWrite],
    }
}

/// `x[i] += y[i]` for the first `n` values.
pub fn add(ctx: &GpuContext, x: &Tensor, y: &Tensor, n: usize) -> Result<Dispatch> {
    let precision = common_precision("residual", &[x, y])?;
    ensure_len("residual", "x", x, n)?;
    ensure_len("residual", "y", y, n)?;
    let params = ctx.uniform(&[n as u32, 0, 0, 0]);
    ctx.dispatch(
        &source(precision),
        &[&params, &y.buffer, &x.buffer],
        grid(groups_for(n, 256)),
    )
}

/// CPU reference.
pub fn reference(x: &[f32], y: &[f32]) -> Vec<f32> {
    x.iter().zip(y).map(|(&a, &b)| a + b).collect()
}
