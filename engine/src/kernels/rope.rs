//! Rotary position embedding, Llama style, applied in place by absolute position.

use super::{ensure_len, groups_for, precision_tag, wgsl};
use crate::error::{ensure_shape, Result};
use crate::gpu::{
    assemble, grid, Binding, DType, Dispatch, GpuContext, KernelSource, Precision, Tensor,
};

/// Which elements of a head form a rotated pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeMode {
    /// (2i, 2i+1): llama.cpp's layout for GGUF Llama weights (their Q/K rows are permuted).
    Interleaved,
    /// (i, i + head_dim/2): the layout of Hugging Face checkpoints ("NeoX" style).
    Halves,
}

/// Llama 3 style frequency scaling (`rope_scaling.rope_type = "llama3"`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Llama3Scaling {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_context: f32,
}

/// The per-pair inverse frequencies `base^(-2i / head_dim)`, with optional Llama 3 scaling.
pub fn inv_freq(head_dim: usize, base: f32, scaling: Option<Llama3Scaling>) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| {
            let f = (base as f64).powf(-2.0 * i as f64 / head_dim as f64);
            let Some(s) = scaling else { return f as f32 };
            let wavelen = 2.0 * std::f64::consts::PI / f;
            let low = s.original_context as f64 / s.low_freq_factor as f64;
            let high = s.original_context as f64 / s.high_freq_factor as f64;
            let scaled = if wavelen < high {
                f
            } else if wavelen > low {
                f / s.factor as f64
            } else {
                let smooth = (s.original_context as f64 / wavelen - s.low_freq_factor as f64)
                    / (s.high_freq_factor as f64 - s.low_freq_factor as f64);
                (1.0 - smooth) * f / s.factor as f64 + smooth * f
            };
            scaled as f32
        })
        .collect()
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_tokens: u32,
    n_heads: u32,
    head_dim: u32,
    mode: u32,
}

pub fn source(precision: Precision) -> KernelSource {
    KernelSource {
        label: format!("rope.{}", precision_tag(precision)),
        source: assemble(precision, &[], &[wgsl::ROPE]),
        entry: "rope",
        bindings: &[
            Binding::Uniform,
            Binding::Read,
            Binding::Read,
            Binding::ReadWrite,
        ],
    }
}

/// Rotates `x` (`[n_tokens, n_heads, head_dim]`) in place; `positions` (u32) holds each
/// token's absolute position and `inv_freq` (f32) the `head_dim / 2` frequencies.
pub fn rope(
    ctx: &GpuContext,
    x: &Tensor,
    positions: &Tensor,
    inv_freq: &Tensor,
    n_tokens: usize,
    n_heads: usize,
    mode: RopeMode,
) -> Result<Dispatch> {
    let head_dim = inv_freq.len() * 2;
    ensure_shape(positions.dtype == DType::U32, || {
        "rope: positions must be u32".into()
    })?;
    ensure_shape(inv_freq.dtype == DType::F32, || {
        "rope: inv_freq must be f32".into()
    })?;
    ensure_len("rope", "positions", positions, n_tokens)?;
    ensure_len("rope", "x", x, n_tokens * n_heads * head_dim)?;
    let params = ctx.uniform(&Params {
        n_tokens: n_tokens as u32,
        n_heads: n_heads as u32,
        head_dim: head_dim as u32,
        mode: (mode == RopeMode::Halves) as u32,
    });
    let pairs = n_tokens * n_heads * head_dim / 2;
    ctx.dispatch(
        &source(x.precision()?),
        &[&params, &positions.buffer, &inv_freq.buffer, &x.buffer],
        grid(groups_for(pairs, 256)),
    )
}

/// CPU reference, in place on `x`.
pub fn reference(
    x: &mut [f32],
    positions: &[u32],
    inv_freq: &[f32],
    n_heads: usize,
    mode: RopeMode,
) {
    let head_dim = inv_freq.len() * 2;
    for (t, &pos) in positions.iter().enumerate() {
        for h in 0..n_heads {
            let base = (t * n_heads + h) * head_dim;
            for (i, &f) in inv_freq.iter().enumerate() {
                let (a, b) = match mode {
                    RopeMode::Interleaved => (base + 2 * i, base + 2 * i + 1),
                    RopeMode::Halves => (base + i, base + i + head_dim / 2),
                };
                let angle = pos as f64 * f as f64;
                let (s, c) = angle.sin_cos();
                let (x0, x1) = (x[a] as f64, x[b] as f64);
                x[a] = (x0 * c - x1 * s) as f32;
                x[b] = (x0 * s + x1 * c) as f32;
            }
        }
    }
}
