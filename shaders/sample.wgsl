// out[r] = a token drawn from row r of the logits, as llama.cpp's sampler chain draws it:
// top-k, then top-p over what top-k kept, then min-p (all at temperature 1), then a draw at
// the temperature. One workgroup per row: the vocabulary never leaves the GPU.
//
// The cuts are logit thresholds found by bisection (each step one pass and one workgroup
// sum): no sort. The draw is the Gumbel-max trick, argmax(l / T + g) with g = -log(-log(u)),
// which is an exact draw from softmax(l / T); u comes from a counter-based hash of
// (seed, step, row, token), so a seed gives the same tokens on every adapter up to
// rounding of log and exp. With one settings entry per row (`per_row`, a batch of
// sequences) the row's own seed and step make its stream, and its place in the batch does
// not enter. An inverse temperature of 0 picks the most likely token, as `argmax` does.

struct Params {
    rows: u32,
    n: u32,       // candidates per row (may be fewer than the row holds)
    stride: u32,  // values per row
    per_row: u32, // 1: settings[row] for each row; 0: settings[0] for all
}

struct Settings {
    inv_temperature: f32,
    log_min_p: f32,  // ln(min_p); very negative when off
    top_p: f32,      // 1: off
    top_k: u32,      // 0: off
    seed_lo: u32,
    seed_hi: u32,
    step: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> settings: array<Settings>;
@group(0) @binding(2) var<storage, read> logits: array<act>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

const THREADS: u32 = 256u;
// Tokens more than e^64 times less likely than the top one never count in a cut.
const SPAN: f32 = 64.0;
const BISECTION_STEPS: u32 = 24u;
// The greedy pick's cut: every finite logit passes.
const NEG_INF_CUT: f32 = -3.4e38;

fn logit(row: u32, k: u32) -> f32 {
    return f32(logits[row * p.stride + k]);
}

// PCG's output permutation as a hash (Jarzynski and Olano, "Hash Functions for GPU
// Rendering", 2020).
fn pcg(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

// How many logits of the row are at least t (with weights exp(l - top) when `mass`).
fn above(tid: u32, row: u32, t: f32, top: f32, mass: bool) -> f32 {
    var acc = 0.0;
    for (var k = tid; k < p.n; k += THREADS) {
        let l = logit(row, k);
        if (l >= t) {
            acc += select(1.0, exp(l - top), mass);
        }
    }
    return reduce(acc, tid, false);
}

@compute @workgroup_size(THREADS)
fn sample(@builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) tid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    let s = settings[select(0u, row, p.per_row == 1u)];
    let greedy = s.inv_temperature == 0.0;
    var local_max = -3.0e38;
    for (var k = tid; k < p.n; k += THREADS) {
        let l = logit(row, k);
        if (l == l) {  // NaN never counts
            local_max = max(local_max, l);
        }
    }
    let top = reduce(local_max, tid, true);
    let floor = top - SPAN;

    // top-k: the highest threshold that still keeps k tokens.
    var cut = floor;
    if (greedy) {
        cut = NEG_INF_CUT;
    }
    if (!greedy && s.top_k > 0u && s.top_k < p.n) {
        var lo = floor;
        var hi = top;
        for (var i = 0u; i < BISECTION_STEPS; i++) {
            let mid = 0.5 * (lo + hi);
            if (above(tid, row, mid, top, false) >= f32(s.top_k)) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        cut = lo;
    }
    // top-p over the tokens top-k kept: the highest threshold keeping that share of mass.
    if (!greedy && s.top_p < 1.0) {
        let wanted = s.top_p * above(tid, row, cut, top, true);
        var lo = cut;
        var hi = top;
        for (var i = 0u; i < BISECTION_STEPS; i++) {
            let mid = 0.5 * (lo + hi);
            if (above(tid, row, mid, top, true) >= wanted) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        cut = lo;
    }
    // min-p: at least min_p times the top token's probability.
    if (!greedy) {
        cut = max(cut, top + s.log_min_p);
    }

    // The draw among the tokens left.
    let stream = select(row, 0u, p.per_row == 1u);
    let key = pcg(s.seed_lo ^ pcg(s.seed_hi ^ pcg(s.step ^ pcg(stream))));
    var best = -3.0e38;
    var best_k = NO_INDEX;
    for (var k = tid; k < p.n; k += THREADS) {
        let l = logit(row, k);
        if (l >= cut) {
            var score = l;
            if (!greedy) {
                let u = (f32(pcg(key ^ k) >> 8u) + 0.5) / 16777216.0;
                score = l * s.inv_temperature - log(-log(u));
            }
            if (best_k == NO_INDEX || score > best) {
                best = score;
                best_k = k;
            }
        }
    }
    let token = reduce_argmax(best, best_k, tid);
    if (tid == 0u) {
        out[row] = token;
    }
}
