//! Rotary position embedding by absolute position, applied to fused QKV rows together with
//! what comes before it in the attention block (Q/K/V bias, per-head Q/K RMSNorm) and with
//! storing the new K and V rows into the KV cache.

use super::{common_precision, ensure_len, ensure_places, precision_tag, wgsl, Place};
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
    ring: u32,
    eps: f32,
}

/// Threads per workgroup (one workgroup per head of a token).
const THREADS: u32 = 64;

/// The kernel, adding a bias and normalizing Q/K heads where `bias` and `qk_norm` say.
pub fn source(precision: Precision, bias: bool, qk_norm: bool) -> KernelSource {
    KernelSource {
        label: format!(
            "rope.{}{}{}",
            precision_tag(precision),
            if bias { ".bias" } else { "" },
            if qk_norm { ".qk_norm" } else { "" }
        ),
        source: assemble(
            precision,
            &[
                ("THREADS", THREADS),
                ("BIAS", bias as u32),
                ("QK_NORM", qk_norm as u32),
            ],
            &[wgsl::REDUCE, wgsl::ROPE],
        ),
        entry: "rope_qkv",
        bindings: &[
            Binding::Uniform,
            Binding::Read,
            Binding::Read,
            Binding::Read,
            Binding::ReadWrite,
            Binding::ReadWrite,
            Binding::ReadWrite,
            Binding::Read,
            Binding::Read,
        ],
    }
}

/// Every variant, for the shader-translation test.
pub fn sources(precision: Precision) -> Vec<KernelSource> {
    [(false, false), (true, false), (false, true), (true, true)]
        .map(|(bias, qk_norm)| source(precision, bias, qk_norm))
        .to_vec()
}

/// Head counts of fused QKV rows: `[q (n_heads) | k (n_kv_heads) | v (n_kv_heads)]` heads of
/// `head_dim` values per token.
#[derive(Clone, Copy, Debug)]
pub struct QkvShape {
    pub n_tokens: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    /// Cache rows per sequence: position p is stored in row `p % ring` of its sequence's
    /// range (a sliding-window layer keeps only its last `ring` positions).
    pub ring: usize,
}

/// What [`rope_qkv`] does before rotating: add a bias to the fused rows (f32, one row long),
/// RMS-normalize each Q and K head with weights `[q weights | k weights]` (f32, `head_dim`
/// each) and epsilon.
#[derive(Clone, Copy, Debug, Default)]
pub struct QkvFusion<'a> {
    pub bias: Option<&'a Tensor>,
    pub qk_norm: Option<(&'a Tensor, f32)>,
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
/// [`Place`] per token) with the `head_dim / 2` frequencies `inv_freq` (f32), after
/// `fusion`'s bias and norm; writes Q to `out.q` and K, V to the caches at each token's
/// cache row. Rows past the caches are skipped, never written out of bounds.
#[allow(clippy::too_many_arguments)]
pub fn rope_qkv(
    ctx: &GpuContext,
    qkv: &Tensor,
    places: &Tensor,
    inv_freq: &Tensor,
    out: &QkvOutputs,
    shape: &QkvShape,
    mode: RopeMode,
    fusion: &QkvFusion,
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
    ensure_shape(shape.ring > 0, || "rope: a cache ring of no rows".into())?;
    if let Some(bias) = fusion.bias {
        ensure_shape(bias.dtype == DType::F32, || {
            "rope: the bias must be f32".into()
        })?;
        ensure_len("rope", "bias", bias, shape.row_len())?;
    }
    if let Some((weights, _)) = fusion.qk_norm {
        ensure_shape(weights.dtype == DType::F32, || {
            "rope: Q/K norm weights must be f32".into()
        })?;
        ensure_len("rope", "Q/K norm weights", weights, 2 * shape.head_dim)?;
    }
    let params = ctx.uniform(&Params {
        n_tokens: shape.n_tokens as u32,
        n_heads: shape.n_heads as u32,
        n_kv_heads: shape.n_kv_heads as u32,
        head_dim: shape.head_dim as u32,
        mode: (mode == RopeMode::Halves) as u32,
        cache_rows: (out.k_cache.len() / kv_row) as u32,
        ring: shape.ring.min(u32::MAX as usize) as u32,
        eps: fusion.qk_norm.map_or(0.0, |(_, eps)| eps),
    });
    // Bindings a variant never reads still need a buffer.
    let bias = fusion.bias.unwrap_or(inv_freq);
    let qk_norm = fusion.qk_norm.map_or(inv_freq, |(w, _)| w);
    let heads = shape.n_tokens * (shape.n_heads + shape.n_kv_heads);
    ctx.dispatch(
        &source(precision, fusion.bias.is_some(), fusion.qk_norm.is_some()),
        &[
            &params,
            &places.buffer,
            &inv_freq.buffer,
            &qkv.buffer,
            &out.q.buffer,
            &out.k_cache.buffer,
            &out.v_cache.buffer,
            &qk_norm.buffer,
            &bias.buffer,
        ],
        grid(heads.max(1) as u32),
    )
}

/// RMS-normalizes a head in place with `weights`.
fn rms_norm(head: &mut [f32], weights: &[f32], eps: f32) {
    let mean_square = head.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / head.len() as f64;
    let s = 1.0 / (mean_square + eps as f64).sqrt();
    for (v, &w) in head.iter_mut().zip(weights) {
        *v = (*v as f64 * s * w as f64) as f32;
    }
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

/// The CPU reference's [`QkvFusion`]: a bias row, and Q/K norm weights with epsilon.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReferenceFusion<'a> {
    pub bias: Option<&'a [f32]>,
    pub qk_norm: Option<(&'a [f32], f32)>,
}

/// CPU reference of [`rope_qkv`]: returns the rotated queries and writes K and V into the
/// caches (`[rows, n_kv_heads, head_dim]`) at each token's cache row.
#[allow(clippy::too_many_arguments)]
pub fn reference(
    qkv: &[f32],
    places: &[Place],
    inv_freq: &[f32],
    shape: &QkvShape,
    mode: RopeMode,
    fusion: ReferenceFusion,
    k_cache: &mut [f32],
    v_cache: &mut [f32],
) -> Vec<f32> {
    let hd = shape.head_dim;
    let (q_len, kv_len) = (shape.n_heads * hd, shape.n_kv_heads * hd);
    let mut q = Vec::with_capacity(places.len() * q_len);
    for (row, place) in qkv.chunks_exact(shape.row_len()).zip(places) {
        let mut row = row.to_vec();
        if let Some(bias) = fusion.bias {
            row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
        }
        if let Some((weights, eps)) = fusion.qk_norm {
            let (q_heads, k_heads) = row[..q_len + kv_len].split_at_mut(q_len);
            q_heads
                .chunks_exact_mut(hd)
                .for_each(|h| rms_norm(h, &weights[..hd], eps));
            k_heads
                .chunks_exact_mut(hd)
                .for_each(|h| rms_norm(h, &weights[hd..], eps));
        }
        let pos = place.position;
        let mut rq = row[..q_len].to_vec();
        rq.chunks_exact_mut(hd)
            .for_each(|h| rotate(h, pos, inv_freq, mode));
        q.extend(rq);
        let at = place.cache_row(shape.ring) * kv_len;
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
