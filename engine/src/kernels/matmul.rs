//! Fused dequant-matmul `y[m, n] = sum_k x[m, k] * W[n, k]`: GEMV for decode (one token, or
//! one token of each of a batch of sequences: each weight read serves them all), tiled GEMM
//! for prefill. Weights stay packed in memory; each kernel dequantizes as
//! it reads. Accumulation is f32 whatever the activation precision.

use super::weight::GpuWeight;
use super::{ensure_len, precision_tag, wgsl};
use crate::error::{ensure_shape, Result};
use crate::gpu::{
    assemble, grid, Binding, DType, Dispatch, GpuContext, KernelSource, Precision, Tensor,
};
use crate::quant::{PackedWeight, WeightFormat};
use std::sync::OnceLock;

const BINDINGS: &[Binding] = &[
    Binding::Uniform,
    Binding::Read,
    Binding::Read,
    Binding::Read,
    Binding::ReadWrite,
    Binding::Read,
];
const GEMM_TILE_M: usize = 32;
const GEMM_TILE_N: usize = 64;
/// Threads per workgroup of `gemv_rows` and `gemm_rows` (matmul.wgsl's THREADS).
const ROWS_PER_WORKGROUP: usize = 64;
/// Tokens per `gemm_rows` workgroup, and rows of W per thread.
const ROWS_M: usize = 8;
const ROWS_W: usize = 8;
/// Rows of W per `gemv_rows` thread.
const ROWS_V: usize = 4;
/// Largest number of tokens one decode workgroup takes; more go to further workgroups.
pub const MAX_DECODE_TOKENS: usize = 8;
/// Inputs per token that `gemv_rows` stages at a time: what fits WebGPU's 16 KiB of
/// workgroup memory for its token count (a multiple of every group size: 32 and 40).
const fn gemv_rows_tile(tokens: usize) -> usize {
    match tokens {
        1 => 1280,
        2..=4 => 640,
        _ => 320,
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m_len: u32,
    n_len: u32,
    k_len: u32,
    n_total: u32,
    n_offset: u32,
    eps: f32,
    _pad: [u32; 2],
}

/// How `gemv` is launched (see gemv.wgsl): `team` threads walk one row together, `teams`
/// teams share a workgroup, and each thread owns `outputs[i]` outputs for 1, up to 4 and up
/// to 8 tokens per workgroup (each input load serves all of them; fewer for more tokens,
/// whose sums must stay in registers too). With `subgroup`, a team is one subgroup and
/// reduces by shuffles (gemv_subgroup.wgsl), else over workgroup memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemvLaunch {
    pub team: usize,
    pub teams: usize,
    pub outputs: [usize; 3],
    pub subgroup: bool,
}

impl GemvLaunch {
    /// For GPUs: a 32-thread team reads 512 consecutive bytes per step, and 4 outputs per
    /// thread give each input load 4 rows' work.
    pub const GPU: GemvLaunch = GemvLaunch {
        team: 32,
        teams: 4,
        outputs: [4, 2, 1],
        subgroup: false,
    };

    /// For CPU adapters (lavapipe runs 8-lane subgroups): a team the width of the SIMD
    /// lanes leaves none idle on short rows (SmolLM2's K = 576 is 18 quads of f16), and 8
    /// outputs per thread make each input load serve 8 rows. lavapipe, f16 SmolLM2 decode:
    /// 4.5-5.0 tok/s against 3.1-3.3 with [`Self::GPU`] (benches/RESULTS.md).
    pub const CPU: GemvLaunch = GemvLaunch {
        team: 8,
        teams: 8,
        outputs: [8, 2, 1],
        subgroup: false,
    };

    /// The launch `gemv` uses on `ctx`: the one [`GpuContext::use_gemv`] gave, else
    /// `GLIM_GEMV=TEAM,TEAMS,OUT1,OUT4,OUT8` (for sweeps with `kernel-bench`; a value that
    /// does not parse or fit is reported once and ignored), else [`Self::CPU`] or
    /// [`Self::GPU`] by the kernel set. Teams reduce by subgroup shuffles where the
    /// adapter's one subgroup size is the team's.
    pub fn for_context(ctx: &GpuContext) -> GemvLaunch {
        static FROM_ENV: OnceLock<Option<GemvLaunch>> = OnceLock::new();
        let from_env = FROM_ENV.get_or_init(|| {
            let text = std::env::var("GLIM_GEMV").ok()?;
            Self::parse(&text)
                .map_err(|why| eprintln!("glim: ignoring GLIM_GEMV={text:?}: {why}"))
                .ok()
        });
        let chosen = match ctx.gemv.as_ref().or(from_env.as_ref()) {
            Some(launch) => *launch,
            None if ctx.is_cpu() => Self::CPU,
            None => Self::GPU,
        };
        GemvLaunch {
            subgroup: ctx.subgroup_size() == Some(chosen.team as u32),
            ..chosen
        }
    }

    /// `TEAM,TEAMS,OUT1,OUT4,OUT8`, checked against WebGPU's default limits.
    pub fn parse(text: &str) -> std::result::Result<GemvLaunch, String> {
        let values: Vec<usize> = text
            .split(',')
            .map(|v| v.trim().parse::<usize>().map_err(|e| format!("{v:?}: {e}")))
            .collect::<std::result::Result<_, _>>()?;
        let [team, teams, o1, o4, o8] = values[..] else {
            return Err("want five numbers: TEAM,TEAMS,OUT1,OUT4,OUT8".into());
        };
        let launch = GemvLaunch {
            team,
            teams,
            outputs: [o1, o4, o8],
            subgroup: false,
        };
        if !team.is_power_of_two() || teams == 0 || team * teams > 256 {
            return Err("TEAM must be a power of two and TEAM x TEAMS at most 256".into());
        }
        for tokens in [1, 4, MAX_DECODE_TOKENS] {
            let outputs = launch.outputs(tokens);
            // gemv.wgsl's `partial`: a sum per token and row (two rows per SwiGLU output)
            // and each token's squares, per thread.
            let bytes = (tokens * outputs * 2 + tokens) * team * teams * 4;
            if outputs == 0 || bytes > 16 << 10 {
                return Err(format!(
                    "{outputs} outputs per thread for {tokens} tokens need {bytes} bytes of \
                     workgroup memory (at most 16384, at least one output)"
                ));
            }
        }
        Ok(launch)
    }

    /// Outputs per thread for `tokens` tokens per workgroup.
    fn outputs(&self, tokens: usize) -> usize {
        match tokens {
            1 => self.outputs[0],
            2..=4 => self.outputs[1],
            _ => self.outputs[2],
        }
    }
}

/// What a matmul does with its sums.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Epilogue {
    /// `y = W x`.
    Store,
    /// `y += W x` (a residual connection).
    Add,
    /// SwiGLU on interleaved gate/up rows (see [`PackedWeight::interleave_halves`]):
    /// `y[i] = silu(W[2i] x) * W[2i + 1] x`, so `y` is half as wide as `W` is tall.
    SwiGlu,
    /// GeGLU, the same with the tanh approximation of GELU (Gemma's `gelu_pytorch_tanh`):
    /// `y[i] = gelu(W[2i] x) * W[2i + 1] x`.
    GeGlu,
}

impl Epilogue {
    /// Rows of W behind one output.
    fn rows_per_output(self) -> usize {
        match self {
            Self::SwiGlu | Self::GeGlu => 2,
            _ => 1,
        }
    }

    /// Every epilogue, for tests.
    pub const ALL: [Epilogue; 4] = [Self::Store, Self::Add, Self::SwiGlu, Self::GeGlu];

    /// matmul_common.wgsl's EPILOGUE code.
    fn code(self) -> u32 {
        match self {
            Self::Store => 0,
            Self::Add => 1,
            Self::SwiGlu => 2,
            Self::GeGlu => 3,
        }
    }
}

/// The tanh approximation of GELU, as the GeGLU epilogue computes it.
pub fn gelu_tanh(x: f64) -> f64 {
    0.5 * x * (1.0 + (0.797_884_560_802_865_4 * (x + 0.044715 * x * x * x)).tanh())
}

/// The element types a matmul reads and writes: the residual stream is f32 whatever the
/// activation precision, so a matmul reading it (through an RMSNorm) or adding to it has an
/// f32 side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Io {
    pub input: DType,
    pub output: DType,
}

impl Io {
    /// Both sides in `precision`'s activation type.
    pub fn uniform(precision: Precision) -> Self {
        let t = DType::from(precision);
        Io {
            input: t,
            output: t,
        }
    }

    /// The precision a kernel with these sides is built in: f16 where either side is.
    fn precision(self) -> Precision {
        if self.input == DType::F16 || self.output == DType::F16 {
            Precision::F16
        } else {
            Precision::F32
        }
    }

    /// WGSL aliases `in_t` and `out_t`.
    fn wgsl(self) -> String {
        let name = |t: DType| if t == DType::F16 { "f16" } else { "f32" };
        format!(
            "alias in_t = {};\nalias out_t = {};\n",
            name(self.input),
            name(self.output)
        )
    }

    /// A label part where a side differs from the kernel's precision.
    fn tag(self) -> String {
        let act = DType::from(self.precision());
        let side = |t: DType, what: &str| {
            if t != act {
                format!(".{what}32")
            } else {
                String::new()
            }
        };
        format!("{}{}", side(self.input, "in"), side(self.output, "out"))
    }
}

/// The neighbours of a matmul done inside it.
#[derive(Clone, Copy, Debug)]
pub struct Fusion<'a> {
    /// RMSNorm of each input row with these weights and epsilon, taken as the matmul reads.
    pub norm: Option<(&'a Tensor, f32)>,
    pub epilogue: Epilogue,
}

impl Fusion<'_> {
    /// A plain matmul.
    pub const NONE: Fusion<'static> = Fusion {
        norm: None,
        epilogue: Epilogue::Store,
    };
}

/// Which kernel runs a matmul.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// A few tokens, wide loads and a team of threads per row: GPUs (see gemv.wgsl).
    Gemv,
    /// One token, a thread per output: CPU adapters (see `gemv_rows` in matmul.wgsl).
    GemvRows,
    /// Many tokens, tiled: GPUs.
    Gemm,
    /// Many tokens, a thread per output for several tokens: CPU adapters.
    GemmRows,
}

impl Shape {
    fn entry(self) -> &'static str {
        match self {
            Self::Gemv => "gemv",
            Self::GemvRows => "gemv_rows",
            Self::Gemm => "gemm",
            Self::GemmRows => "gemm_rows",
        }
    }

    /// Whether this is a decode kernel (a workgroup per output, or a thread per output,
    /// for a few tokens).
    fn is_gemv(self) -> bool {
        matches!(self, Self::Gemv | Self::GemvRows)
    }

    /// The prefill kernel on `ctx`'s adapter, whatever the number of tokens (even one): a
    /// prompt token comes out the same whichever pass of the prompt it falls in.
    pub fn prefill(ctx: &GpuContext) -> Self {
        if ctx.is_cpu() {
            Self::GemmRows
        } else {
            Self::Gemm
        }
    }

    /// The decode kernel for a `format` weight on `ctx`'s adapter, whatever the number of
    /// tokens: a batched decode step runs the kernel a lone sequence runs, so its tokens
    /// come out the same. CPU adapters decode quantized weights with `gemv_rows`, but float
    /// weights with `gemv`, whose 16-byte loads reach 2.5x `gemv_rows`'s bandwidth there
    /// for f16 (lavapipe, benches/RESULTS.md); the quantized ones' unpacking favours
    /// `gemv_rows`.
    pub fn decode(ctx: &GpuContext, format: WeightFormat) -> Self {
        let float = [WeightFormat::F16, WeightFormat::BF16, WeightFormat::F32].contains(&format);
        if ctx.is_cpu() && !float {
            Self::GemvRows
        } else {
            Self::Gemv
        }
    }

    /// Tokens per workgroup of this kernel for `m` tokens: the decode kernels are built for
    /// 1, 4 or 8 (a lone sequence pays for no others); the GEMMs tile their own.
    fn tokens_per_workgroup(self, m: usize) -> usize {
        match (self.is_gemv(), m) {
            (false, _) | (true, 1) => 1,
            (true, 2..=4) => 4,
            (true, _) => MAX_DECODE_TOKENS,
        }
    }
}

/// A kernel's WGSL over `format`'s weights: the format's constants and `consts`, the weight
/// bindings and segment functions (`weights_common.wgsl` and the format's file), then
/// `parts`.
pub(crate) fn weight_access(
    precision: Precision,
    format: WeightFormat,
    consts: &[(&str, u32)],
    parts: &[&str],
) -> String {
    let own = format.wgsl();
    let all: Vec<(&str, u32)> = own
        .consts
        .iter()
        .copied()
        .chain(consts.iter().copied())
        .collect();
    assemble(
        precision,
        &all,
        &[&[wgsl::WEIGHTS_COMMON, own.file], parts].concat(),
    )
}

/// The K step of `gemm`'s tiles for `format`: whole segments (32, or q3f16's 40).
fn gemm_tile_k(format: WeightFormat) -> usize {
    if 32 % format.seg() == 0 {
        32
    } else {
        format.seg()
    }
}

/// The matmul kernel of `shape` for one precision, weight format and fusion, its decode
/// workgroups taking `tokens` tokens (1 for the GEMMs); `gemv` is built for `launch`.
pub fn source(
    io: Io,
    format: WeightFormat,
    (norm, epilogue): (bool, Epilogue),
    shape: Shape,
    tokens: usize,
    launch: &GemvLaunch,
) -> KernelSource {
    let precision = io.precision();
    let aliases = io.wgsl();
    let mut consts = vec![("NORM", norm as u32), ("EPILOGUE", epilogue.code())];
    let kernel_parts: &[&str] = match shape {
        Shape::Gemv => {
            consts.extend([
                ("TOKENS", tokens as u32),
                ("TEAM", launch.team as u32),
                ("TEAMS", launch.teams as u32),
                ("OUTPUTS", launch.outputs(tokens) as u32),
            ]);
            if launch.subgroup {
                &[
                    &aliases,
                    wgsl::MATMUL_COMMON,
                    wgsl::GEMV,
                    wgsl::GEMV_SUBGROUP,
                ]
            } else {
                &[
                    &aliases,
                    wgsl::MATMUL_COMMON,
                    wgsl::GEMV,
                    wgsl::GEMV_WORKGROUP,
                ]
            }
        }
        _ => {
            let tile = gemv_rows_tile(tokens);
            let tile_k = gemm_tile_k(format);
            let units = GEMM_TILE_N * tile_k / format.seg();
            consts.extend([
                ("TOKENS", tokens as u32),
                ("THREADS", ROWS_PER_WORKGROUP as u32),
                ("ROWS_V", ROWS_V as u32),
                ("ROWS_W", ROWS_W as u32),
                ("ROWS_M", ROWS_M as u32),
                ("XS_LEN", tile as u32),
                ("XS4_LEN", (tokens * tile / 4) as u32),
                ("XS_SUM_LEN", (tokens * tile / format.seg()) as u32),
                ("TILE_K", tile_k as u32),
                ("PARTS", (256 / units).max(1) as u32),
            ]);
            &[&aliases, wgsl::REDUCE, wgsl::MATMUL_COMMON, wgsl::MATMUL]
        }
    };
    KernelSource {
        label: format!(
            "matmul.{}.{}{}.{}{epilogue:?}{}{}",
            format.name(),
            precision_tag(precision),
            io.tag(),
            if norm { "norm." } else { "" },
            if tokens > 1 {
                format!(".x{tokens}")
            } else {
                String::new()
            },
            match shape {
                Shape::Gemv => format!(
                    ".team{}x{}{}",
                    launch.team,
                    launch.teams,
                    if launch.subgroup { ".subgroup" } else { "" }
                ),
                _ => String::new(),
            },
        ),
        source: weight_access(precision, format, &consts, kernel_parts),
        entry: shape.entry(),
        bindings: BINDINGS,
    }
}

/// Every matmul variant, for the shader-translation test: `gemv` with both launches and
/// both reductions, between activations of `precision` and, for f16, reading or adding to
/// the f32 residual stream.
pub fn sources(precision: Precision, format: WeightFormat) -> Vec<KernelSource> {
    let launches = [GemvLaunch::GPU, GemvLaunch::CPU].map(|launch| GemvLaunch {
        subgroup: launch == GemvLaunch::GPU,
        ..launch
    });
    let mut all = Vec::new();
    for norm in [false, true] {
        for epilogue in Epilogue::ALL {
            let mut io = Io::uniform(precision);
            // The graph's f32 sides: an RMSNorm reads the residual, Add writes it.
            if norm {
                io.input = DType::F32;
            }
            if epilogue == Epilogue::Add {
                io.output = DType::F32;
            }
            for shape in [Shape::Gemv, Shape::GemvRows, Shape::Gemm, Shape::GemmRows] {
                for m in [1, 4, MAX_DECODE_TOKENS] {
                    let tokens = shape.tokens_per_workgroup(m);
                    if m > 1 && tokens == 1 {
                        continue;
                    }
                    let each_launch = if shape == Shape::Gemv {
                        &launches[..]
                    } else {
                        &launches[..1]
                    };
                    for launch in each_launch {
                        all.push(source(io, format, (norm, epilogue), shape, tokens, launch));
                    }
                }
            }
        }
    }
    all
}

/// `y[m, :] = W x[m, :]` for `m` rows of `x`, with the kernel the adapter runs best.
pub fn matmul(
    ctx: &GpuContext,
    x: &Tensor,
    w: &GpuWeight,
    y: &Tensor,
    m: usize,
) -> Result<Vec<Dispatch>> {
    let kernel = if m == 1 {
        Kernel::Decode
    } else {
        Kernel::Prefill
    };
    fused(ctx, x, w, y, m, &Fusion::NONE, kernel)
}

/// Which kernel a matmul runs: the decode or prefill kernel the adapter runs best for each
/// chunk's format, or one shape for every chunk (tests and benchmarks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    Decode,
    Prefill,
    Shape(Shape),
}

impl From<Shape> for Kernel {
    fn from(shape: Shape) -> Self {
        Kernel::Shape(shape)
    }
}

impl Kernel {
    fn shape(self, ctx: &GpuContext, format: WeightFormat) -> Shape {
        match self {
            Kernel::Decode => Shape::decode(ctx, format),
            Kernel::Prefill => Shape::prefill(ctx),
            Kernel::Shape(shape) => shape,
        }
    }
}

/// A matmul over `m` rows of `x` with `fusion`'s neighbours, run by the `kernel` chosen.
/// One dispatch per weight chunk, each with its chunk's format.
pub fn fused(
    ctx: &GpuContext,
    x: &Tensor,
    w: &GpuWeight,
    y: &Tensor,
    m: usize,
    fusion: &Fusion,
    kernel: impl Into<Kernel>,
) -> Result<Vec<Dispatch>> {
    let kernel = kernel.into();
    // Each side is f16 or f32 on its own (the residual stream is f32).
    x.precision()?;
    y.precision()?;
    let io = Io {
        input: x.dtype,
        output: y.dtype,
    };
    ensure_shape(m > 0, || "matmul: no input rows".into())?;
    let pair = fusion.epilogue.rows_per_output();
    ensure_shape(
        w.rows.is_multiple_of(pair) && w.chunks.iter().all(|c| c.row_start.is_multiple_of(pair)),
        || {
            format!(
                "matmul: a gated epilogue needs gate/up row pairs, got {} rows",
                w.rows
            )
        },
    )?;
    let outputs = w.rows / pair;
    ensure_len("matmul", "x", x, m * w.cols)?;
    ensure_len("matmul", "y", y, m * outputs)?;
    let (norm, eps) = match fusion.norm {
        Some((weights, eps)) => {
            ensure_shape(weights.dtype == DType::F32, || {
                "matmul: RMSNorm weights must be f32".into()
            })?;
            ensure_len("matmul", "norm weights", weights, w.cols)?;
            (weights, eps)
        }
        // Never read: any buffer fills the binding.
        None => (x, 0.0),
    };
    // The launch shape comes from here, so host and shader cannot disagree on it.
    let launch = GemvLaunch::for_context(ctx);
    w.chunks
        .iter()
        .map(|chunk| {
            let shape = match kernel.shape(ctx, chunk.format) {
                // gemv's vector loads need whole vec4s of inputs; a weight without them (no
                // real model's) takes the kernel that stages its inputs.
                Shape::Gemv if !w.cols.is_multiple_of(4) => Shape::GemvRows,
                shape => shape,
            };
            let tokens = shape.tokens_per_workgroup(m);
            let token_blocks = m.div_ceil(tokens) as u32;
            let source = source(
                io,
                chunk.format,
                (fusion.norm.is_some(), fusion.epilogue),
                shape,
                tokens,
                &launch,
            );
            let chunk_outputs = chunk.rows / pair;
            let params = ctx.uniform(&Params {
                m_len: m as u32,
                n_len: chunk.rows as u32,
                k_len: w.cols as u32,
                n_total: outputs as u32,
                n_offset: (chunk.row_start / pair) as u32,
                eps,
                _pad: [0; 2],
            });
            let decode_grid = |n: usize| {
                let [x, y, _] = grid(n as u32);
                [x, y, token_blocks]
            };
            let workgroups = match shape {
                Shape::Gemv => {
                    decode_grid(chunk_outputs.div_ceil(launch.teams * launch.outputs(tokens)))
                }
                Shape::GemvRows => decode_grid(chunk.rows.div_ceil(ROWS_PER_WORKGROUP * ROWS_V)),
                Shape::Gemm => [
                    chunk.rows.div_ceil(GEMM_TILE_N) as u32,
                    m.div_ceil(GEMM_TILE_M) as u32,
                    1,
                ],
                Shape::GemmRows => [
                    chunk.rows.div_ceil(ROWS_PER_WORKGROUP * ROWS_W) as u32,
                    m.div_ceil(ROWS_M) as u32,
                    1,
                ],
            };
            ctx.dispatch(
                &source,
                &[
                    &params,
                    &x.buffer,
                    &chunk.codes,
                    &chunk.scales,
                    &y.buffer,
                    &norm.buffer,
                ],
                workgroups,
            )
        })
        .collect()
}

/// CPU reference of a fused matmul: `y` holds the output before it (read by
/// [`Epilogue::Add`]) and gets the result; f64 accumulation.
pub fn reference_fused(
    x: &[f32],
    m: usize,
    w: &PackedWeight,
    norm: Option<(&[f32], f32)>,
    epilogue: Epilogue,
    y: &mut [f32],
) {
    let k = w.cols;
    let mut input = x[..m * k].to_vec();
    if let Some((weights, eps)) = norm {
        for row in input.chunks_mut(k) {
            let mean_square = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / k as f64;
            let s = 1.0 / (mean_square + eps as f64).sqrt();
            for (v, &g) in row.iter_mut().zip(weights) {
                *v = (*v as f64 * s * g as f64) as f32;
            }
        }
    }
    let sums = reference(&input, m, w);
    let outputs = w.rows / epilogue.rows_per_output();
    for i in 0..m {
        let row = &sums[i * w.rows..(i + 1) * w.rows];
        for o in 0..outputs {
            let out = &mut y[i * outputs + o];
            *out = match epilogue {
                Epilogue::Store => row[o],
                Epilogue::Add => *out + row[o],
                Epilogue::SwiGlu => {
                    let (g, u) = (row[2 * o] as f64, row[2 * o + 1] as f64);
                    (g / (1.0 + (-g).exp()) * u) as f32
                }
                Epilogue::GeGlu => {
                    let (g, u) = (row[2 * o] as f64, row[2 * o + 1] as f64);
                    (gelu_tanh(g) * u) as f32
                }
            };
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gemv_launch_parses_and_is_checked_against_the_limits() {
        let launch = GemvLaunch::parse("64, 2, 2,1,1").unwrap();
        assert_eq!(
            launch,
            GemvLaunch {
                team: 64,
                teams: 2,
                outputs: [2, 1, 1],
                subgroup: false,
            }
        );
        assert!(GemvLaunch::parse("32,4,4,2").is_err(), "four numbers");
        assert!(GemvLaunch::parse("48,4,4,2,1").is_err(), "a team of 48");
        assert!(GemvLaunch::parse("64,8,4,2,1").is_err(), "512 threads");
        assert!(GemvLaunch::parse("32,4,0,2,1").is_err(), "no outputs");
        let too_big = GemvLaunch::parse("32,8,4,2,2").unwrap_err();
        assert!(too_big.contains("workgroup memory"), "{too_big}");
        assert!(GemvLaunch::parse("32,4,x,2,1").is_err());
        for default in [GemvLaunch::GPU, GemvLaunch::CPU] {
            let [o1, o4, o8] = default.outputs;
            let text = format!("{},{},{o1},{o4},{o8}", default.team, default.teams);
            assert_eq!(GemvLaunch::parse(&text), Ok(default), "the defaults fit");
        }
    }
}
