//! Greedy sampling: the index of the largest logit of each row, computed on the GPU so only
//! a 4-byte token id crosses back to the host.

use super::{ensure_len, precision_tag, wgsl};
use crate::error::{ensure_shape, Result};
use crate::gpu::{
    assemble, grid, Binding, DType, Dispatch, GpuContext, KernelSource, Precision, Tensor,
};

pub fn source(precision: Precision) -> KernelSource {
    KernelSource {
        label: format!("argmax.{}", precision_tag(precision)),
        source: assemble(precision, &[], &[wgsl::ARGMAX]),
        entry: "argmax",
        bindings: &[Binding::Uniform, Binding::Read, Binding::ReadWrite],
    }
}

/// `out[r] = argmax(logits[r, 0..n])` for `rows` rows; `out` is a u32 tensor.
pub fn argmax(
    ctx: &GpuContext,
    logits: &Tensor,
    out: &Tensor,
    rows: usize,
    n: usize,
) -> Result<Dispatch> {
    ensure_shape(out.dtype == DType::U32, || "argmax: out must be u32".into())?;
    ensure_shape(n > 0, || "argmax: empty rows".into())?;
    ensure_len("argmax", "logits", logits, rows * n)?;
    ensure_len("argmax", "out", out, rows)?;
    let params = ctx.uniform(&[rows as u32, n as u32, 0, 0]);
    ctx.dispatch(
        &source(logits.precision()?),
        &[&params, &logits.buffer, &out.buffer],
        grid(rows as u32),
    )
}

/// CPU reference: lowest index of the maximum of each row.
pub fn reference(logits: &[f32], n: usize) -> Vec<u32> {
    logits
        .chunks(n)
        .map(|row| {
            let mut best = 0;
            for (i, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = i;
                }
            }
            best as u32
        })
        .collect()
}
