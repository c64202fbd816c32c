// The parts every matmul kernel shares: y[m, n] = sum_k x[m, k] * W[n, k], W packed in a
// weight format (dequantized on the fly: the f16 weights are never written back to memory).
// Accumulation is f32. One dispatch covers one chunk of W's rows (a chunk fits in one
// storage binding); its outputs land at column n_offset of y, whose rows are n_total wide.
// The kernel files (matmul.wgsl, gemv.wgsl) declare the input and norm bindings (1 and 5)
// with the element types they load; weights_common.wgsl declares codes and scales (2, 3).
// The host names the input's and the output's element types, `in_t` and `out_t`: the
// residual stream is f32 whatever the other activations are, so a matmul that reads it
// (through an RMSNorm) or adds to it differs from one between two f16 activations.
//
// The host fuses the layer's neighbours into the matmul with two constants:
// - NORM = 1: the input is RMSNorm(x) * norm: each x row's mean square is taken as the
//   matmul reads it, and the row's sums are scaled by 1 / sqrt(mean square + eps) at the
//   end (W (norm * x * s) = s * W (norm * x)), so no normalized copy is written.
// - EPILOGUE: 0 stores the sums, 1 adds them to y (the residual), 2 is SwiGLU: W's rows
//   are interleaved gate/up pairs (row 2i is gate i, row 2i + 1 up i) and output i is
//   silu(gate i) * up i; 3 is GeGLU, the same with gelu(gate i) (the tanh approximation,
//   as Gemma's `gelu_pytorch_tanh`).
// The host also defines the launch shape it dispatches for (see each kernel).

struct Params {
    m_len: u32,
    n_len: u32,     // rows of W in this chunk
    k_len: u32,
    n_total: u32,   // row stride of y
    n_offset: u32,  // first column of y this chunk writes
    eps: f32,       // RMSNorm's epsilon (NORM = 1)
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(4) var<storage, read_write> y: array<out_t>;

const STORE: u32 = 0u;
const ADD: u32 = 1u;
const SWIGLU: u32 = 2u;
const GEGLU: u32 = 3u;
// Rows of W behind one output.
const PAIR: u32 = select(1u, 2u, EPILOGUE >= SWIGLU);

// The RMSNorm scale of a row whose squares sum to `squares`.
fn norm_scale(squares: f32) -> f32 {
    if (NORM == 1u) {
        return inverseSqrt(squares / f32(p.k_len) + p.eps);
    }
    return 1.0;
}

// Writes output column `out` of row m from its sums: acc.x (acc.y is the up row's sum
// for SwiGLU and GeGLU), scaled by s.
fn finish(m: u32, out: u32, acc: vec2<f32>, s: f32) {
    let i = m * p.n_total + p.n_offset + out;
    let a = acc.x * s;
    if (EPILOGUE == STORE) {
        y[i] = out_t(a);
    } else if (EPILOGUE == ADD) {
        y[i] = out_t(f32(y[i]) + a);
    } else if (EPILOGUE == SWIGLU) {
        y[i] = out_t(a / (1.0 + exp(-a)) * acc.y * s);
    } else {
        // tanh saturates long before 10; the clamp keeps exp-based tanh finite.
        let inner = clamp(0.7978845608 * (a + 0.044715 * a * a * a), -10.0, 10.0);
        y[i] = out_t(0.5 * a * (1.0 + tanh(inner)) * acc.y * s);
    }
}
