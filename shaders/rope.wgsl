// The attention block between the QKV matmul and attention, in one pass: Q/K/V bias,
// per-head RMSNorm of Q and K, rotary position embedding, and the KV-cache store.
// qkv[t] is one row [q heads | k heads | v heads] of (n_heads + 2 n_kv_heads) * head_dim
// values, for the token at places[t] = (position in its sequence, its sequence's slot:
// sequences share the cache, each in its own `ring` rows). Q heads are rotated into
// q[t, head, :]; K heads are rotated and V heads copied into row slot * ring +
// position % ring of k_cache / v_cache ([cache_rows, n_kv_heads, head_dim]): a layer that
// attends to a window of keys keeps only each sequence's last `ring` positions.
// - BIAS = 1: bias (one fused row, f32) is added to qkv first (Qwen2).
// - QK_NORM = 1: each Q and K head is RMS-normalized and scaled by qk_norm's weights
//   ([q weights | k weights], head_dim each, f32) before it rotates (Qwen3, Gemma 3).
// Pair i (0 <= i < head_dim / 2) rotates by angle position * inv_freq[i]; the host
// computes inv_freq, so any rope base and frequency scaling cost nothing here.
// Pairing: mode 0 rotates adjacent elements (2i, 2i+1) (llama.cpp's permuted GGUF rows);
// mode 1 rotates (i, i + head_dim / 2), as Hugging Face and MLC checkpoints expect.

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

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> places: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(3) var<storage, read> qkv: array<act>;
@group(0) @binding(4) var<storage, read_write> q: array<act>;
@group(0) @binding(5) var<storage, read_write> k_cache: array<act>;
@group(0) @binding(6) var<storage, read_write> v_cache: array<act>;
@group(0) @binding(7) var<storage, read> qk_norm: array<f32>;  // read only when QK_NORM = 1
@group(0) @binding(8) var<storage, read> bias: array<f32>;     // read only when BIAS = 1

// Element `i` of token t's fused row (row_start its first), with the bias.
fn qkv_at(row_start: u32, i: u32) -> f32 {
    var v = f32(qkv[row_start + i]);
    if (BIAS == 1u) {
        v += bias[i];
    }
    return v;
}

// One workgroup per Q or K head of one token, its threads taking the head's pairs; a K
// head's workgroup also copies the matching V head.
@compute @workgroup_size(THREADS)
fn rope_qkv(@builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) tid: u32) {
    let heads = p.n_heads + p.n_kv_heads;
    let idx = wid.x + wid.y * nwg.x;  // t * heads + h: the same for the whole workgroup
    if (idx >= p.n_tokens * heads) {
        return;
    }
    let t = idx / heads;
    let h = idx % heads;
    let hd = p.head_dim;
    let half_dim = hd / 2u;
    let row = t * (heads + p.n_kv_heads) * hd;
    let src = h * hd;
    let is_k = h >= p.n_heads;
    var s = 1.0;
    if (QK_NORM == 1u) {
        var squares = 0.0;
        for (var d = tid; d < hd; d += THREADS) {
            let v = qkv_at(row, src + d);
            squares += v * v;
        }
        s = inverseSqrt(reduce(squares, tid, false) / f32(hd) + p.eps);
    }
    let pos = places[t].x;
    let cache_row = places[t].y * p.ring + pos % p.ring;
    let kh = h - p.n_heads;
    let k_dst = (cache_row * p.n_kv_heads + kh) * hd;
    if (is_k && cache_row >= p.cache_rows) {
        return;
    }
    let w = select(0u, hd, is_k);  // this head's norm weights
    for (var i = tid; i < half_dim; i += THREADS) {
        var a = 2u * i;
        var b = a + 1u;
        if (p.mode == 1u) {
            a = i;
            b = i + half_dim;
        }
        var x0 = qkv_at(row, src + a);
        var x1 = qkv_at(row, src + b);
        if (QK_NORM == 1u) {
            x0 *= s * qk_norm[w + a];
            x1 *= s * qk_norm[w + b];
        }
        let angle = f32(pos) * inv_freq[i];
        let c = cos(angle);
        let sn = sin(angle);
        let r0 = act(x0 * c - x1 * sn);
        let r1 = act(x0 * sn + x1 * c);
        if (is_k) {
            k_cache[k_dst + a] = r0;
            k_cache[k_dst + b] = r1;
        } else {
            let dst = (t * p.n_heads + h) * hd;
            q[dst + a] = r0;
            q[dst + b] = r1;
        }
    }
    if (is_k) {
        let v_src = (heads + kh) * hd;
        for (var d = tid; d < hd; d += THREADS) {
            v_cache[k_dst + d] = act(qkv_at(row, v_src + d));
        }
    }
}
