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
        source: assemble(precision, &[], &[wgsl::REDUCE, wgsl::ARGMAX]),
        entry: "argmax",
        bindings: &[Binding::Uniform, Binding::Read, Binding::ReadWrite],
    }
}

/// `out[r] = argmax(logits[r, 0..n])` for `rows` rows of `stride` values; `out` is a u32
/// tensor. (`n` < `stride` leaves the tail of each row out, e.g. padding in a model's
/// vocabulary that its tokenizer has no tokens for.)
pub fn argmax(
    ctx: &GpuContext,
    logits: &Tensor,
    out: &Tensor,
    rows: usize,
    n: usize,
    stride: usize,
) -> Result<Dispatch> {
    ensure_shape(out.dtype == DType::U32, || "argmax: out must be u32".into())?;
    ensure_shape(n > 0 && n <= stride, || {
        format!("argmax: {n} candidates in rows of {stride}")
    })?;
    ensure_len("argmax", "logits", logits, rows * stride)?;
    ensure_len("argmax", "out", out, rows)?;
    let params = ctx.uniform(&[rows as u32, n as u32, stride as u32, 0]);
    ctx.dispatch(
        &source(logits.precision()?),
        &[&params, &logits.buffer, &out.buffer],
        grid(rows as u32),
    )
}

/// Index of the largest value of `row`, the lowest on ties; NaNs never win.
pub fn argmax_row(row: &[f32]) -> u32 {
    let mut best: Option<usize> = None;
    for (i, &v) in row.iter().enumerate() {
        if !v.is_nan() && best.is_none_or(|b| v > row[b]) {
            best = Some(i);
        }
    }
    best.unwrap_or(0) as u32
}

/// CPU reference: [`argmax_row`] of each row.
pub fn reference(logits: &[f32], n: usize) -> Vec<u32> {
    logits.chunks(n).map(argmax_row).collect()
}
