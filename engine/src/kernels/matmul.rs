//! Fused dequant-matmul `y[m, n] = sum_k x[m, k] * W[n, k]`: GEMV for one token (decode),
//! tiled GEMM for many (prefill). Weights stay packed in memory; each kernel dequantizes as
//! it reads. Accumulation is f32 whatever the activation precision.

use super::weight::GpuWeight;
use super::{common_precision, ensure_len, precision_tag, wgsl};
use crate::error::{ensure_shape, Result};
use crate::gpu::{assemble, grid, Binding, Dispatch, GpuContext, KernelSource, Precision, Tensor};
use crate::quant::{PackedWeight, WeightFormat};

const BINDINGS: &[Binding] = &[
    Binding::Uniform,
    Binding::Read,
    Binding::Read,
    Binding::Read,
    Binding::ReadWrite,
];
const GEMM_TILE_M: usize = 32;
const GEMM_TILE_N: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m_len: u32,
    n_len: u32,
    k_len: u32,
    n_total: u32,
    n_offset: u32,
    _pad: [u32; 3],
}

/// WGSL defining `words_per_row`, `word_scale`, `word_weight` and `weight_at` for `format`.
pub(crate) fn weight_access(precision: Precision, format: WeightFormat, body: &str) -> String {
    match format.group_spec() {
        Some(g) => assemble(
            precision,
            &[
                ("BITS", g.bits),
                ("CODES_PER_WORD", g.codes_per_word as u32),
                ("GROUP_SIZE", g.group_size as u32),
                ("MAX_INT", g.max_int),
                ("WORDS_PER_GROUP", g.words_per_group() as u32),
            ],
            &[wgsl::WEIGHTS_GROUPED, wgsl::WEIGHTS_COMMON, body],
        ),
        None => assemble(
            precision,
            &[("CODES_PER_WORD", 2)],
            &[wgsl::WEIGHTS_F16, wgsl::WEIGHTS_COMMON, body],
        ),
    }
}

/// The GEMV and GEMM entry points for one precision and weight format.
pub fn sources(precision: Precision, format: WeightFormat) -> [KernelSource; 2] {
    let label = format!("matmul.{}.{}", format.name(), precision_tag(precision));
    let source = weight_access(precision, format, wgsl::MATMUL);
    ["gemv", "gemm"].map(|entry| KernelSource {
        label: label.clone(),
        source: source.clone(),
        entry,
        bindings: BINDINGS,
    })
}

fn check(x: &Tensor, w: &GpuWeight, y: &Tensor, m: usize) -> Result<Precision> {
    let precision = common_precision("matmul", &[x, y])?;
    ensure_shape(m > 0, || "matmul: no input rows".into())?;
    ensure_len("matmul", "x", x, m * w.cols)?;
    ensure_len("matmul", "y", y, m * w.rows)?;
    Ok(precision)
}

/// `y[m, :] = W x[m, :]` for `m` rows of `x`. Picks GEMV for one row, GEMM otherwise.
pub fn matmul(
    ctx: &GpuContext,
    x: &Tensor,
    w: &GpuWeight,
    y: &Tensor,
    m: usize,
) -> Result<Vec<Dispatch>> {
    if m == 1 {
        gemv(ctx, x, w, y)
    } else {
        gemm(ctx, x, w, y, m)
    }
}

/// Decode path: `x` is one row of `w.cols` values, `y` gets `w.rows`. One dispatch per
/// weight chunk.
pub fn gemv(ctx: &GpuContext, x: &Tensor, w: &GpuWeight, y: &Tensor) -> Result<Vec<Dispatch>> {
    let precision = check(x, w, y, 1)?;
    let [kernel, _] = sources(precision, w.format);
    launch(ctx, &kernel, x, w, y, 1, |rows| grid(rows as u32))
}

/// Prefill path: `m` rows of `x` at once, tiled.
pub fn gemm(
    ctx: &GpuContext,
    x: &Tensor,
    w: &GpuWeight,
    y: &Tensor,
    m: usize,
) -> Result<Vec<Dispatch>> {
    let precision = check(x, w, y, m)?;
    let [_, kernel] = sources(precision, w.format);
    let tiles_m = m.div_ceil(GEMM_TILE_M) as u32;
    launch(ctx, &kernel, x, w, y, m, |rows| {
        [rows.div_ceil(GEMM_TILE_N) as u32, tiles_m, 1]
    })
}

fn launch(
    ctx: &GpuContext,
    kernel: &KernelSource,
    x: &Tensor,
    w: &GpuWeight,
    y: &Tensor,
    m: usize,
    workgroups: impl Fn(usize) -> [u32; 3],
) -> Result<Vec<Dispatch>> {
    w.chunks
        .iter()
        .map(|chunk| {
            let params = ctx.uniform(&Params {
                m_len: m as u32,
                n_len: chunk.rows as u32,
                k_len: w.cols as u32,
                n_total: w.rows as u32,
                n_offset: chunk.row_start as u32,
                _pad: [0; 3],
            });
            ctx.dispatch(
                kernel,
                &[&params, &x.buffer, &chunk.codes, &chunk.scales, &y.buffer],
                workgroups(chunk.rows),
            )
        })
        .collect()
}

/// CPU reference: `y[m, n] = sum_k x[m, k] * W[n, k]` with W dequantized, f64 accumulation.
pub fn reference(x: &[f32], m: usize, w: &PackedWeight) -> Vec<f32> {
    let dense = w.dequantize();
    let mut y = vec![0.0; m * w.rows];
    for i in 0..m {
        let xi = &x[i * w.cols..(i + 1) * w.cols];
        for n in 0..w.rows {
            let row = &dense[n * w.cols..(n + 1) * w.cols];
            y[i * w.rows + n] = xi
                .iter()
                .zip(row)
                .map(|(&a, &b)| a as f64 * b as f64)
                .sum::<f64>() as f32;
        }
    }
    y
}
