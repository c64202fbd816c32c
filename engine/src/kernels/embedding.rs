//! Embedding lookup `out[t, :] = table[ids[t], :] * scale` from a table in any weight format.

use super::matmul::weight_access;
use super::weight::GpuWeight;
use super::{ensure_len, groups_for, precision_tag, wgsl};
use crate::error::{ensure_shape, Result};
use crate::gpu::{grid, Binding, DType, Dispatch, GpuContext, KernelSource, Precision, Tensor};
use crate::quant::{PackedWeight, WeightFormat};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_tokens: u32,
    dim: u32,
    row_start: u32,
    rows: u32,
    scale: f32,
    _pad: [u32; 3],
}

pub fn source(precision: Precision, format: WeightFormat) -> KernelSource {
    KernelSource {
        label: format!("embedding.{}.{}", format.name(), precision_tag(precision)),
        source: weight_access(precision, format, &[], &[wgsl::EMBEDDING]),
        entry: "embed",
        bindings: &[
            Binding::Uniform,
            Binding::Read,
            Binding::Read,
            Binding::Read,
            Binding::ReadWrite,
        ],
    }
}

/// Looks up `n_tokens` ids (a `U32` tensor) into `out` (`[n_tokens, table.cols]`), each
/// row times `scale`. Ids are checked on the host by the caller; an id past the table leaves
/// its output row untouched.
pub fn embed(
    ctx: &GpuContext,
    ids: &Tensor,
    table: &GpuWeight,
    out: &Tensor,
    n_tokens: usize,
    scale: f32,
) -> Result<Vec<Dispatch>> {
    ensure_shape(ids.dtype == DType::U32, || {
        "embedding: ids must be u32".into()
    })?;
    ensure_len("embedding", "ids", ids, n_tokens)?;
    ensure_len("embedding", "out", out, n_tokens * table.cols)?;
    let precision = out.precision()?;
    let workgroups = grid(groups_for(n_tokens * table.cols, 256));
    table
        .chunks
        .iter()
        .map(|chunk| {
            let params = ctx.uniform(&Params {
                n_tokens: n_tokens as u32,
                dim: table.cols as u32,
                row_start: chunk.row_start as u32,
                rows: chunk.rows as u32,
                scale,
                _pad: [0; 3],
            });
            ctx.dispatch(
                &source(precision, chunk.format),
                &[
                    &params,
                    &ids.buffer,
                    &chunk.codes,
                    &chunk.scales,
                    &out.buffer,
                ],
                workgroups,
            )
        })
        .collect()
}

/// CPU reference.
pub fn reference(ids: &[u32], table: &PackedWeight, scale: f32) -> Vec<f32> {
    ids.iter()
        .flat_map(|&id| (0..table.cols).map(move |k| table.weight_at(id as usize, k) * scale))
        .collect()
}
