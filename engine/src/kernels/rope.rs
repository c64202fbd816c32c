//! Rotary position embedding, Llama style, by absolute position: applied to fused QKV rows,
//! together with storing the new K and V rows into the KV cache.

use super::{common_precision, ensure_len, ensure_places, groups_for, precision_tag, wgsl, Place};
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
    n_kv_heads: u32,
    head_dim: u32,
    mode: u32,
    cache_rows: u32,
    _pad: [u32; 2],
}

pub fn source(precision: Precision) -> KernelSource {
    KernelSource {
        label: format!("rope.{}", precision_tag(precision)),
        source: assemble(precision, &[], &[wgsl::ROPE]),
        entry: "rope_qkv",
        bindings: &[
            Binding::Uniform,
            Binding::Read,
            Binding::Read,
            Binding::Read,
            Binding::ReadWrite,
            Binding::ReadWrite,
            Binding::ReadWrite,
        ],
    }
}

/// Head counts of fused QKV rows: `[q (n_heads) | k (n_kv_heads) | v (n_kv_heads)]` heads of
/// `head_dim` values per token.
#[derive(Clone, Copy, Debug)]
pub struct QkvShape {
    pub n_tokens: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

impl QkvShape {
    /// Values in one fused row.
    pub fn row_len(&self) -> usize {
        (self.n_heads + 2 * self.n_kv_heads) * self.head_dim
    }
}

/// Where [`rope_qkv`] writes: rotated queries `[n_tokens, n_heads, head_dim]`, and the KV
/// caches `[rows, n_kv_heads, head_dim]`, at each token's [`Place::cache_row`].
pub struct QkvOutputs<'a> {
    pub q: &'a Tensor,
    pub k_cache: &'a Tensor,
    pub v_cache: &'a Tensor,
}

/// Rotates the Q and K heads of fused `qkv` rows by each token's position (`places`, a
/// [`Place`] per token) with the `head_dim / 2` frequencies `inv_freq` (f32); writes Q to
/// `out.q` and K, V to the caches at each token's cache row. Rows past the caches are
/// skipped, never written out of bounds.
pub fn rope_qkv(
    ctx: &GpuContext,
    qkv: &Tensor,
    places: &Tensor,
    inv_freq: &Tensor,
    out: &QkvOutputs,
    shape: &QkvShape,
    mode: RopeMode,
) -> Result<Dispatch> {
    let precision = common_precision("rope", &[qkv, out.q, out.k_cache, out.v_cache])?;
    ensure_shape(shape.head_dim == inv_freq.len() * 2, || {
        format!(
            "rope: {} frequencies for head dimension {}",
            inv_freq.len(),
            shape.head_dim
        )
    })?;
    ensure_shape(inv_freq.dtype == DType::F32, || {
        "rope: inv_freq must be f32".into()
    })?;
    let kv_row = shape.n_kv_heads * shape.head_dim;
    ensure_shape(kv_row > 0 && out.k_cache.len() == out.v_cache.len(), || {
        "rope: K and V caches differ in size".into()
    })?;
    ensure_places("rope", places, shape.n_tokens)?;
    ensure_len("rope", "qkv", qkv, shape.n_tokens * shape.row_len())?;
    ensure_len(
        "rope",
        "q",
        out.q,
        shape.n_tokens * shape.n_heads * shape.head_dim,
    )?;
    let params = ctx.uniform(&Params {
        n_tokens: shape.n_tokens as u32,
        n_heads: shape.n_heads as u32,
        n_kv_heads: shape.n_kv_heads as u32,
        head_dim: shape.head_dim as u32,
        mode: (mode == RopeMode::Halves) as u32,
        cache_rows: (out.k_cache.len() / kv_row) as u32,
        _pad: [0; 2],
    });
    let pairs = shape.n_tokens * (shape.n_heads + shape.n_kv_heads) * shape.head_dim / 2;
    ctx.dispatch(
        &source(precision),
        &[
            &params,
            &places.buffer,
            &inv_freq.buffer,
            &qkv.buffer,
            &out.q.buffer,
            &out.k_cache.buffer,
            &out.v_cache.buffer,
        ],
        grid(groups_for(pairs, 256)),
    )
}

/// Rotates the pairs of one head in place.
fn rotate(head: &mut [f32], pos: u32, inv_freq: &[f32], mode: RopeMode) {
    let half = inv_freq.len();
    for (i, &f) in inv_freq.iter().enumerate() {
        let (a, b) = match mode {
            RopeMode::Interleaved => (2 * i, 2 * i + 1),
            RopeMode::Halves => (i, i + half),
        };
        let angle = pos as f64 * f as f64;
        let (s, c) = angle.sin_cos();
        let (x0, x1) = (head[a] as f64, head[b] as f64);
        head[a] = (x0 * c - x1 * s) as f32;
        head[b] = (x0 * s + x1 * c) as f32;
    }
}

/// CPU reference of [`rope_qkv`]: returns the rotated queries and writes K and V into the
/// caches (`[rows, n_kv_heads, head_dim]`) at each token's cache row.
pub fn reference(
    qkv: &[f32],
    places: &[Place],
    inv_freq: &[f32],
    shape: &QkvShape,
    mode: RopeMode,
    k_cache: &mut [f32],
    v_cache: &mut [f32],
) -> Vec<f32> {
    let hd = shape.head_dim;
    let (q_len, kv_len) = (shape.n_heads * hd, shape.n_kv_heads * hd);
    let mut q = Vec::with_capacity(places.len() * q_len);
    for (row, place) in qkv.chunks_exact(shape.row_len()).zip(places) {
        let pos = place.position;
        let mut rq = row[..q_len].to_vec();
        rq.chunks_exact_mut(hd)
            .for_each(|h| rotate(h, pos, inv_freq, mode));
        q.extend(rq);
        let at = place.cache_row() * kv_len;
        if at + kv_len > k_cache.len() {
            continue;
        }
        let k = &mut k_cache[at..at + kv_len];
        k.copy_from_slice(&row[q_len..q_len + kv_len]);
        k.chunks_exact_mut(hd)
            .for_each(|h| rotate(h, pos, inv_freq, mode));
        v_cache[at..at + kv_len].copy_from_slice(&row[q_len + kv_len..]);
    }
    q
}
