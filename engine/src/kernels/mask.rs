//! Constrained decoding on the GPU: the tokens a grammar forbids get a logit far below any
//! real one before the argmax or the draw, so a constrained step still reads back 4 bytes.
//! A mask row is a bitmask over the vocabulary, one u32 per 32 tokens, bit set = allowed.

use super::{ensure_len, precision_tag, wgsl};
use crate::error::{ensure_shape, Result};
use crate::gpu::{
    assemble, grid, Binding, DType, Dispatch, GpuContext, KernelSource, Precision, Tensor,
};

/// The logit a masked token gets: finite in f16 and f32, and no model's logit comes near it.
pub const MASKED: f32 = -65504.0;

/// Words of a mask row covering `n` tokens.
pub fn words(n: usize) -> usize {
    n.div_ceil(32)
}

pub fn source(precision: Precision) -> KernelSource {
    KernelSource {
        label: format!("mask_logits.{}", precision_tag(precision)),
        source: assemble(precision, &[], &[wgsl::MASK_LOGITS]),
        entry: "mask_logits",
        bindings: &[Binding::Uniform, Binding::ReadWrite, Binding::Read],
    }
}

/// Sets `logits[r, k]` to [`MASKED`] for every `k < n` whose bit in row `r` of `mask` (a
/// u32 tensor of rows of [`words`]`(stride)` words) is clear, for `rows` rows of `stride`
/// values.
pub fn mask_logits(
    ctx: &GpuContext,
    logits: &Tensor,
    mask: &Tensor,
    rows: usize,
    n: usize,
    stride: usize,
) -> Result<Dispatch> {
    ensure_shape(mask.dtype == DType::U32, || {
        "mask_logits: mask must be u32".into()
    })?;
    ensure_shape(n > 0 && n <= stride, || {
        format!("mask_logits: {n} tokens in rows of {stride}")
    })?;
    let row_words = words(stride);
    ensure_len("mask_logits", "logits", logits, rows * stride)?;
    ensure_len("mask_logits", "mask", mask, rows * row_words)?;
    let params = ctx.uniform(&[rows as u32, n as u32, stride as u32, row_words as u32]);
    let blocks = row_words.div_ceil(64);
    ctx.dispatch(
        &source(logits.precision()?),
        &[&params, &logits.buffer, &mask.buffer],
        grid((rows * blocks) as u32),
    )
}

/// Whether token `k` is allowed by `row` (a mask row).
pub fn allowed(row: &[u32], k: usize) -> bool {
    row.get(k / 32).is_some_and(|w| w & (1 << (k % 32)) != 0)
}

/// CPU reference: [`MASKED`] where `row` forbids.
pub fn mask_row(logits: &mut [f32], row: &[u32]) {
    for (k, v) in logits.iter_mut().enumerate() {
        if !allowed(row, k) {
            *v = MASKED;
        }
    }
}
