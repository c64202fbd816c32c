// Causal grouped-query attention over a KV cache, shared by the one-pass kernel (prefill)
// and the split-sequence kernel (decode). Query token t sits at places[t] = (position in
// its sequence, the sequence's slot) and sees its sequence's keys
// first_key(position)..=position: all of them, or the last `window` in a sliding-window
// layer. Key j is in cache row slot * ring + j % ring (each sequence has `ring` rows; a
// sliding-window layer's keeps only its last `ring` positions). Layouts, all row-major:
//   q, out: [n_tokens, n_heads, head_dim]      k_cache, v_cache: [rows, n_kv_heads, head_dim]
// Query head h reads KV head h / (n_heads / n_kv_heads). Softmax is computed online (running
// max and sum, rescaled per tile of keys) so no score row is ever stored whole. Scores are
// q.k * scale, then softcap * tanh(score / softcap) where softcap > 0 (Gemma 2).

struct Params {
    n_tokens: u32,
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    n_splits: u32,
    split_len: u32,  // keys per split (split kernel only)
    scale: f32,      // usually 1 / sqrt(head_dim)
    window: u32,     // keys a query sees; 0: all before it
    ring: u32,       // cache rows per sequence
    softcap: f32,    // 0: none
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<act>;
@group(0) @binding(2) var<storage, read> k_cache: array<act>;
@group(0) @binding(3) var<storage, read> v_cache: array<act>;
@group(0) @binding(4) var<storage, read> places: array<vec2<u32>>;

const THREADS: u32 = 64u;
const MAX_HEAD_DIM: u32 = 256u;
const DIMS_PER_THREAD: u32 = MAX_HEAD_DIM / THREADS;
const NEG_BIG: f32 = -3.0e38;

var<workgroup> q_s: array<f32, MAX_HEAD_DIM>;
var<workgroup> probs: array<f32, THREADS>;
var<workgroup> key_rows: array<u32, THREADS>;

// The first key a query at `position` sees.
fn first_key(position: u32) -> u32 {
    if (p.window == 0u || position < p.window) {
        return 0u;
    }
    return position + 1u - p.window;
}

// Running softmax state of one thread: its output dims are tid + i * THREADS.
struct Partial {
    m: f32,
    l: f32,
    acc: array<f32, DIMS_PER_THREAD>,
}

// Attends query (t, h) to keys [begin, end) of its sequence. `begin` and `end` are
// workgroup-uniform.
fn attend_range(t: u32, h: u32, begin: u32, end: u32, tid: u32) -> Partial {
    let hd = p.head_dim;
    let kvh = h / (p.n_heads / p.n_kv_heads);
    let q_base = (t * p.n_heads + h) * hd;
    let start = places[t].y * p.ring;
    for (var d = tid; d < hd; d += THREADS) {
        q_s[d] = f32(q[q_base + d]) * p.scale;
    }
    workgroupBarrier();
    var st: Partial;
    st.m = NEG_BIG;
    st.l = 0.0;
    for (var tile = begin; tile < end; tile += THREADS) {
        let key = tile + tid;
        var s = NEG_BIG;
        if (key < end) {
            let key_row = start + key % p.ring;
            key_rows[tid] = key_row;
            let k_base = (key_row * p.n_kv_heads + kvh) * hd;
            s = 0.0;
            for (var d = 0u; d < hd; d++) {
                s += q_s[d] * f32(k_cache[k_base + d]);
            }
            if (p.softcap > 0.0) {
                s = p.softcap * tanh(clamp(s / p.softcap, -10.0, 10.0));
            }
        }
        let new_m = max(st.m, reduce(s, tid, true));
        var e = 0.0;
        if (key < end) {
            e = exp(s - new_m);
        }
        probs[tid] = e;
        let tile_sum = reduce(e, tid, false);  // its barriers also publish probs and key_rows
        let correction = exp(st.m - new_m);
        st.l = st.l * correction + tile_sum;
        st.m = new_m;
        let n_keys = min(THREADS, end - tile);
        for (var i = 0u; i < DIMS_PER_THREAD; i++) {
            let d = tid + i * THREADS;
            if (d < hd) {
                var a = st.acc[i] * correction;
                for (var j = 0u; j < n_keys; j++) {
                    a += probs[j] * f32(v_cache[(key_rows[j] * p.n_kv_heads + kvh) * hd + d]);
                }
                st.acc[i] = a;
            }
        }
        workgroupBarrier();
    }
    return st;
}
