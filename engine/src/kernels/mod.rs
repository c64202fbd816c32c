//! WGSL kernels: one module per family, each with the host-side launch code and a plain-Rust
//! CPU reference the tests hold the GPU to. Every kernel comes in an f16-activation variant
//! and an f32 one (for adapters without shader-f16), chosen by the activation tensors' dtype.

pub mod argmax;
pub mod attention;
pub mod embedding;
pub mod mask;
pub mod matmul;
pub mod norm;
pub mod rope;
pub mod sample;
pub mod weight;

use crate::error::{ensure_shape, Result};
use crate::gpu::{KernelSource, Precision, Tensor};
use crate::quant::WeightFormat;

/// The WGSL files, compiled into the crate.
pub(crate) mod wgsl {
    pub const WEIGHTS_COMMON: &str = include_str!("../../../shaders/weights_common.wgsl");
    pub const WEIGHTS_GROUPED: &str = include_str!("../../../shaders/weights_grouped.wgsl");
    pub const WEIGHTS_FLOAT: &str = include_str!("../../../shaders/weights_float.wgsl");
    pub const WEIGHTS_GGML32: &str = include_str!("../../../shaders/weights_ggml32.wgsl");
    pub const WEIGHTS_Q4_K: &str = include_str!("../../../shaders/weights_q4_k.wgsl");
    pub const WEIGHTS_Q6_K: &str = include_str!("../../../shaders/weights_q6_k.wgsl");
    pub const WEIGHTS_Q2_K: &str = include_str!("../../../shaders/weights_q2_k.wgsl");
    pub const WEIGHTS_IQ4_XS: &str = include_str!("../../../shaders/weights_iq4_xs.wgsl");
    pub const MATMUL_COMMON: &str = include_str!("../../../shaders/matmul_common.wgsl");
    pub const MATMUL: &str = include_str!("../../../shaders/matmul.wgsl");
    pub const GEMV: &str = include_str!("../../../shaders/gemv.wgsl");
    pub const GEMV_WORKGROUP: &str = include_str!("../../../shaders/gemv_workgroup.wgsl");
    pub const GEMV_SUBGROUP: &str = include_str!("../../../shaders/gemv_subgroup.wgsl");
    pub const EMBEDDING: &str = include_str!("../../../shaders/embedding.wgsl");
    pub const ROPE: &str = include_str!("../../../shaders/rope.wgsl");
    pub const NORM: &str = include_str!("../../../shaders/norm.wgsl");
    pub const ATTENTION_COMMON: &str = include_str!("../../../shaders/attention_common.wgsl");
    pub const ATTENTION: &str = include_str!("../../../shaders/attention.wgsl");
    pub const ATTENTION_SPLIT: &str = include_str!("../../../shaders/attention_split.wgsl");
    pub const ATTENTION_COMBINE: &str = include_str!("../../../shaders/attention_combine.wgsl");
    pub const REDUCE: &str = include_str!("../../../shaders/reduce.wgsl");
    pub const ARGMAX: &str = include_str!("../../../shaders/argmax.wgsl");
    pub const MASK_LOGITS: &str = include_str!("../../../shaders/mask_logits.wgsl");
    pub const SAMPLE: &str = include_str!("../../../shaders/sample.wgsl");
}

/// Where a token of a pass sits. Sequences share one KV cache, each in its own range of
/// rows: the token has `position` in its sequence (its RoPE angle; it attends to the
/// sequence's keys up to `position`) and its sequence lives in `slot`: a layer whose cache
/// keeps `ring` rows per sequence stores it in rows `slot * ring ..`, position p in row
/// `p % ring` of them. The kernels read a tensor of these as `array<vec2<u32>>`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Place {
    pub position: u32,
    pub slot: u32,
}

impl Place {
    /// Token `position` of the one sequence in slot 0.
    pub fn alone(position: u32) -> Self {
        Self { position, slot: 0 }
    }

    /// The first cache row of this token's sequence in a cache of `ring` rows per sequence.
    pub fn slot_start(&self, ring: usize) -> usize {
        self.slot as usize * ring
    }

    /// The cache row holding this token's keys and values in a cache of `ring` rows per
    /// sequence (positions wrap around it).
    pub fn cache_row(&self, ring: usize) -> usize {
        self.slot_start(ring) + self.position as usize % ring.max(1)
    }
}

/// Checks a tensor of [`Place`]s (u32 pairs) covers `n_tokens` tokens.
pub(crate) fn ensure_places(kernel: &str, places: &Tensor, n_tokens: usize) -> Result<()> {
    ensure_shape(places.dtype == crate::gpu::DType::U32, || {
        format!("{kernel}: places must be u32 pairs")
    })?;
    ensure_len(kernel, "places", places, 2 * n_tokens)
}

pub const PRECISIONS: [Precision; 2] = [Precision::F16, Precision::F32];

/// Every kernel variant glim can build: the shader-translation test walks this list.
pub fn all_sources() -> Vec<KernelSource> {
    let mut all = Vec::new();
    for precision in PRECISIONS {
        for format in WeightFormat::ALL {
            all.extend(matmul::sources(precision, format));
            all.push(embedding::source(precision, format));
        }
        all.extend(rope::sources(precision));
        all.push(norm::source(precision));
        all.extend(attention::sources(precision));
        all.push(argmax::source(precision));
        all.push(sample::source(precision));
        all.push(mask::source(precision));
    }
    all
}

/// Short name of a precision for kernel labels.
pub(crate) fn precision_tag(precision: Precision) -> &'static str {
    match precision {
        Precision::F16 => "f16",
        Precision::F32 => "f32",
    }
}

/// The precision shared by a kernel's activation tensors, or a shape error naming them.
pub(crate) fn common_precision(kernel: &str, tensors: &[&Tensor]) -> Result<Precision> {
    let first = tensors[0].precision()?;
    for t in &tensors[1..] {
        ensure_shape(t.precision()? == first, || {
            format!("{kernel}: activation tensors mix f16 and f32")
        })?;
    }
    Ok(first)
}

/// Checks a tensor holds at least `len` elements.
pub(crate) fn ensure_len(kernel: &str, what: &str, t: &Tensor, len: usize) -> Result<()> {
    ensure_shape(t.len() >= len, || {
        format!("{kernel}: {what} holds {} elements, needs {len}", t.len())
    })
}

/// Workgroups of `size` threads needed to cover `n` items.
pub(crate) fn groups_for(n: usize, size: usize) -> u32 {
    n.div_ceil(size).max(1) as u32
}
