// The matmul kernels that stage inputs in workgroup memory: decode on CPU adapters
// (gemv_rows) and prefill (gemm_rows on CPU adapters, gemm on GPUs). Weights are read a
// segment at a time through the format's load_seg / seg_dot / seg_weight. The host defines
// THREADS (threads per workgroup of gemv_rows and gemm_rows), TOKENS (tokens per gemv_rows
// workgroup), ROWS_V (rows of W per gemv_rows thread: each input load serves all of them),
// ROWS_W and ROWS_M (rows of W per gemm_rows thread and tokens per gemm_rows workgroup).

@group(0) @binding(1) var<storage, read> x: array<in_t>;
@group(0) @binding(5) var<storage, read> norm: array<f32>;  // read only when NORM = 1

// Input k of row m as the matmul multiplies it (before the RMSNorm scale).
fn input_at(m: u32, k: u32) -> f32 {
    var v = f32(x[m * p.k_len + k]);
    if (NORM == 1u) {
        v *= norm[k];
    }
    return v;
}

// Decode on CPU adapters (lavapipe): up to TOKENS tokens per workgroup, as gemv. Each
// thread owns ROWS_V outputs and walks their rows alone, while the workgroup's threads step
// through K together. Their inputs are then the same at every step (read from workgroup
// memory at one address), so a SIMD lane per thread loads a segment of each of its rows
// per SEG multiply-adds for every token, instead of a code and an input per weight.
// The host sets XS_LEN (inputs per token per tile, a multiple of every SEG) and XS4_LEN
// (TOKENS * XS_LEN / 4); formats with a per-segment offset get the inputs' segment sums
// staged beside them (XS_SUM_LEN).
const XS_SEGS: u32 = XS_LEN / SEG;
var<workgroup> xs_tile: array<vec4<f32>, XS4_LEN>;
var<workgroup> xs_seg_sum: array<f32, XS_SUM_LEN>;

@compute @workgroup_size(THREADS)
fn gemv_rows(@builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) tid: u32) {
    let row0 = ((wid.x + wid.y * nwg.x) * THREADS + tid) * ROWS_V;
    let m0 = wid.z * TOKENS;
    // Loops over tokens run to the constant TOKENS (so they unroll and the per-token sums
    // stay in registers) and leave at the last live token.
    let tokens = min(TOKENS, p.m_len - m0);
    let live = row0 < p.n_len;
    var s: array<f32, TOKENS>;
    for (var t = 0u; t < TOKENS; t++) {
        if (t >= tokens) {
            break;
        }
        s[t] = 1.0;
        if (NORM == 1u) {
            var squares = 0.0;
            for (var k = tid; k < p.k_len; k += THREADS) {
                let v = f32(x[(m0 + t) * p.k_len + k]);
                squares += v * v;
            }
            s[t] = norm_scale(reduce(squares, tid, false));
        }
    }
    let segs = segs_per_row(p.k_len);
    var acc: array<array<f32, ROWS_V>, TOKENS>;
    for (var k0 = 0u; k0 < p.k_len; k0 += XS_LEN) {
        // Past K the tile holds zeros: the padding of a last segment then adds nothing.
        // A thread writes whole vec4s: threads writing lanes of one vec4 would race.
        for (var t = 0u; t < TOKENS; t++) {
            if (t >= tokens) {
                break;
            }
            for (var q = tid; q < XS_LEN / 4u; q += THREADS) {
                var v = vec4<f32>(0.0);
                for (var c = 0u; c < 4u; c++) {
                    if (k0 + q * 4u + c < p.k_len) {
                        v[c] = input_at(m0 + t, k0 + q * 4u + c);
                    }
                }
                xs_tile[t * (XS_LEN / 4u) + q] = v;
            }
        }
        workgroupBarrier();
        if (SEG_XSUM) {
            for (var i = tid; i < tokens * XS_SEGS; i += THREADS) {
                var sum = 0.0;
                for (var c = 0u; c < SEG4; c++) {
                    let v = xs_tile[i * SEG4 + c];  // token i / XS_SEGS, segment i % XS_SEGS
                    sum += (v.x + v.y) + (v.z + v.w);
                }
                xs_seg_sum[i] = sum;
            }
            workgroupBarrier();
        }
        if (live) {
            let s0 = k0 / SEG;
            let tile_segs = min(XS_SEGS, segs - s0);
            for (var g = 0u; g < tile_segs; g++) {
                var seg: array<Seg, ROWS_V>;
                for (var r = 0u; r < ROWS_V; r++) {
                    // Rows past the chunk read its last row and are never stored.
                    seg[r] = load_seg(min(row0 + r, p.n_len - 1u), s0 + g, p.k_len);
                }
                for (var t = 0u; t < TOKENS; t++) {
                    if (t >= tokens) {
                        break;
                    }
                    var xs: SegInputs;
                    for (var i = 0u; i < SEG4; i++) {
                        xs[i] = xs_tile[t * (XS_LEN / 4u) + g * SEG4 + i];
                    }
                    var xsum = 0.0;
                    if (SEG_XSUM) {
                        xsum = xs_seg_sum[t * XS_SEGS + g];
                    }
                    for (var r = 0u; r < ROWS_V; r++) {
                        acc[t][r] += seg_dot(seg[r], xs, xsum);
                    }
                }
            }
        }
        workgroupBarrier();
    }
    for (var t = 0u; t < TOKENS; t++) {
        if (t >= tokens) {
            break;
        }
        for (var r = 0u; r < ROWS_V; r += PAIR) {
            if (row0 + r < p.n_len) {
                finish(m0 + t, (row0 + r) / PAIR, vec2<f32>(acc[t][r], acc[t][r + PAIR - 1u]), s[t]);
            }
        }
    }
}

// Prefill on CPU adapters: like gemv_rows, but each thread owns ROWS_W consecutive rows of
// W for ROWS_M tokens. The tokens' inputs sit in workgroup memory k-major, so the inputs of
// one k are two vec4 loads at one address for every thread, each load serving ROWS_W rows;
// each weight is decoded once for all ROWS_M tokens. ROWS_K is a multiple of every SEG,
// and the tile stays under WebGPU's 16 KiB of workgroup memory.
const ROWS_K: u32 = 480u;
var<workgroup> xm_tile: array<array<vec4<f32>, 2>, ROWS_K>;
var<workgroup> xm_scale: array<f32, ROWS_M>;

@compute @workgroup_size(THREADS)
fn gemm_rows(@builtin(workgroup_id) wid: vec3<u32>,
             @builtin(local_invocation_index) tid: u32) {
    let row0 = (wid.x * THREADS + tid) * ROWS_W;
    let m0 = wid.y * ROWS_M;
    let live = row0 < p.n_len;
    if (NORM == 1u) {
        for (var t = 0u; t < ROWS_M; t++) {
            var squares = 0.0;
            if (m0 + t < p.m_len) {
                for (var k = tid; k < p.k_len; k += THREADS) {
                    let v = f32(x[(m0 + t) * p.k_len + k]);
                    squares += v * v;
                }
            }
            let total = reduce(squares, tid, false);
            if (tid == 0u) {
                xm_scale[t] = norm_scale(total);
            }
        }
    }
    let segs = segs_per_row(p.k_len);
    // Sums of tokens 0-3 and 4-7 for each of the thread's rows.
    var acc: array<array<vec4<f32>, 2>, ROWS_W>;
    for (var k0 = 0u; k0 < p.k_len; k0 += ROWS_K) {
        // A thread writes whole vec4s: threads writing lanes of one vec4 would race.
        for (var i = tid; i < ROWS_K * 2u; i += THREADS) {
            let k = i / 2u;
            let half = i % 2u;
            var v = vec4<f32>(0.0);
            for (var c = 0u; c < 4u; c++) {
                let t = half * 4u + c;
                if (m0 + t < p.m_len && k0 + k < p.k_len) {
                    v[c] = input_at(m0 + t, k0 + k);
                }
            }
            xm_tile[k][half] = v;
        }
        workgroupBarrier();
        if (live) {
            let s0 = k0 / SEG;
            let tile_segs = min(ROWS_K / SEG, segs - s0);
            for (var g = 0u; g < tile_segs; g++) {
                var seg: array<Seg, ROWS_W>;
                for (var r = 0u; r < ROWS_W; r++) {
                    // Rows past the chunk read its last row and are never stored.
                    seg[r] = load_seg(min(row0 + r, p.n_len - 1u), s0 + g, p.k_len);
                }
                for (var j = 0u; j < SEG; j++) {
                    let inputs = xm_tile[g * SEG + j];
                    for (var r = 0u; r < ROWS_W; r++) {
                        let weight = seg_weight(seg[r], j);
                        acc[r][0] += weight * inputs[0];
                        acc[r][1] += weight * inputs[1];
                    }
                }
            }
        }
        workgroupBarrier();
    }
    for (var r = 0u; r < ROWS_W; r += PAIR) {
        if (row0 + r < p.n_len) {
            for (var t = 0u; t < ROWS_M; t++) {
                if (m0 + t < p.m_len) {
                    var s = 1.0;
                    if (NORM == 1u) {
                        s = xm_scale[t];
                    }
                    let sums = vec2<f32>(acc[r][t / 4u][t % 4u], acc[r + PAIR - 1u][t / 4u][t % 4u]);
                    finish(m0 + t, (row0 + r) / PAIR, sums, s);
                }
            }
        }
    }
}

// Prefill: many tokens. Tiles of TILE_M tokens x TILE_N rows, stepping TILE_K along K (the
// host's: whole segments, 32 or 40); each of the 16x16 threads computes a 2x4 block of sums
// (for SwiGLU: two gate/up pairs). The weight tile is decoded a segment per PARTS threads.
const TILE_M: u32 = 32u;
const TILE_N: u32 = 64u;
const TILE_SEGS: u32 = TILE_K / SEG;
const UNITS: u32 = TILE_N * TILE_SEGS;  // segments in a weight tile
const PART_LEN: u32 = SEG / PARTS;
// One more column than the tile: avoids shared-memory bank conflicts.
var<workgroup> x_tile: array<array<f32, TILE_K + 1u>, TILE_M>;
var<workgroup> w_tile: array<array<f32, TILE_K + 1u>, TILE_N>;
var<workgroup> row_scale: array<f32, TILE_M>;

@compute @workgroup_size(16, 16)
fn gemm(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let n0 = wid.x * TILE_N;
    let m0 = wid.y * TILE_M;
    if (NORM == 1u) {
        // Eight threads per token row sum its squares (w_tile holds the parts).
        let mm = tid / 8u;
        var squares = 0.0;
        if (m0 + mm < p.m_len) {
            for (var k = tid % 8u; k < p.k_len; k += 8u) {
                let v = f32(x[(m0 + mm) * p.k_len + k]);
                squares += v * v;
            }
        }
        w_tile[mm][tid % 8u] = squares;
        workgroupBarrier();
        if (tid < TILE_M) {
            var total = 0.0;
            for (var i = 0u; i < 8u; i++) {
                total += w_tile[tid][i];
            }
            row_scale[tid] = norm_scale(total);
        }
        workgroupBarrier();
    }
    var acc: array<array<f32, 4>, 2>;
    for (var k0 = 0u; k0 < p.k_len; k0 += TILE_K) {
        for (var i = 0u; i < TILE_M * TILE_K / 256u; i++) {
            let idx = tid + i * 256u;
            let mm = idx / TILE_K;
            let kk = idx % TILE_K;
            var v = 0.0;
            if (m0 + mm < p.m_len && k0 + kk < p.k_len) {
                v = input_at(m0 + mm, k0 + kk);
            }
            x_tile[mm][kk] = v;
        }
        for (var u = tid / PARTS; u < UNITS; u += 256u / PARTS) {
            let nn = u / TILE_SEGS;
            let sj = u % TILE_SEGS;
            let s = k0 / SEG + sj;
            let live = n0 + nn < p.n_len && s * SEG < p.k_len;
            var seg: Seg;
            if (live) {
                seg = load_seg(n0 + nn, s, p.k_len);
            }
            for (var i = 0u; i < PART_LEN; i++) {
                let j = (tid % PARTS) * PART_LEN + i;
                var v = 0.0;
                if (live && s * SEG + j < p.k_len) {
                    v = seg_weight(seg, j);
                }
                w_tile[nn][sj * SEG + j] = v;
            }
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
        let mm = lid.y * 2u + i;
        let m = m0 + mm;
        var s = 1.0;
        if (NORM == 1u) {
            s = row_scale[mm];
        }
        for (var j = 0u; j < 4u; j += PAIR) {
            let n = n0 + lid.x * 4u + j;
            if (m < p.m_len && n < p.n_len) {
                finish(m, n / PAIR, vec2<f32>(acc[i][j], acc[i][j + PAIR - 1u]), s);
            }
        }
    }
}
