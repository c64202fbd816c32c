// y[m, n] = sum_k x[m, k] * W[n, k], W packed in a weight format (dequantized on the fly:
// the f16 weights are never written back to memory). Accumulation is f32.
// One dispatch covers one chunk of W's rows (a chunk fits in one storage binding); its
// outputs land at column n_offset of y, whose rows are n_total wide.

struct Params {
    m_len: u32,
    n_len: u32,     // rows of W in this chunk
    k_len: u32,
    n_total: u32,   // row stride of y
    n_offset: u32,  // first column of y this chunk writes
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<act>;
@group(0) @binding(2) var<storage, read> codes: array<u32>;
@group(0) @binding(3) var<storage, read> scales: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<act>;

const GEMV_THREADS: u32 = 64u;
var<workgroup> partial: array<f32, GEMV_THREADS>;

// Decode: one token. A workgroup owns one output row and walks its words together.
@compute @workgroup_size(GEMV_THREADS)
fn gemv(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.n_len) {
        return;
    }
    let words = words_per_row(p.k_len);
    let base = row * words;
    var acc = 0.0;
    for (var w = tid; w < words; w += GEMV_THREADS) {
        let word = codes[base + w];
        let scale = word_scale(row, w, p.k_len);
        let k0 = w * CODES_PER_WORD;
        for (var j = 0u; j < CODES_PER_WORD; j++) {
            if (k0 + j < p.k_len) {
                acc += word_weight(word, j, scale) * f32(x[k0 + j]);
            }
        }
    }
    partial[tid] = acc;
    workgroupBarrier();
    for (var stride = GEMV_THREADS / 2u; stride > 0u; stride /= 2u) {
        if (tid < stride) {
            partial[tid] += partial[tid + stride];
        }
        workgroupBarrier();
    }
    if (tid == 0u) {
        y[p.n_offset + row] = act(partial[0]);
    }
}

// Prefill: many tokens. Tiles of TILE_M tokens x TILE_N rows, stepping TILE_K along K;
// each of the 16x16 threads computes a 2x4 block of outputs.
const TILE_M: u32 = 32u;
const TILE_N: u32 = 64u;
const TILE_K: u32 = 32u;
var<workgroup> x_tile: array<array<f32, 33>, TILE_M>;  // 33: avoids shared-memory bank conflicts
var<workgroup> w_tile: array<array<f32, 33>, TILE_N>;

@compute @workgroup_size(16, 16)
fn gemm(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let n0 = wid.x * TILE_N;
    let m0 = wid.y * TILE_M;
    var acc: array<array<f32, 4>, 2>;
    for (var k0 = 0u; k0 < p.k_len; k0 += TILE_K) {
        for (var i = 0u; i < TILE_M * TILE_K / 256u; i++) {
            let idx = tid + i * 256u;
            let mm = idx / TILE_K;
            let kk = idx % TILE_K;
            var v = 0.0;
            if (m0 + mm < p.m_len && k0 + kk < p.k_len) {
                v = f32(x[(m0 + mm) * p.k_len + k0 + kk]);
            }
            x_tile[mm][kk] = v;
        }
        for (var i = 0u; i < TILE_N * TILE_K / 256u; i++) {
            let idx = tid + i * 256u;
            let nn = idx / TILE_K;
            let kk = idx % TILE_K;
            var v = 0.0;
            if (n0 + nn < p.n_len && k0 + kk < p.k_len) {
                v = weight_at(n0 + nn, k0 + kk, p.k_len);
            }
            w_tile[nn][kk] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk++) {
            let a0 = x_tile[lid.y * 2u][kk];
            let a1 = x_tile[lid.y * 2u + 1u][kk];
            for (var j = 0u; j < 4u; j++) {
                let b = w_tile[lid.x * 4u + j][kk];
                acc[0][j] += a0 * b;
                acc[1][j] += a1 * b;
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 2u; i++) {
        let m = m0 + lid.y * 2u + i;
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + lid.x * 4u + j;
            if (m < p.m_len && n < p.n_len) {
                y[m * p.n_total + p.n_offset + n] = act(acc[i][j]);
            }
        }
    }
}
