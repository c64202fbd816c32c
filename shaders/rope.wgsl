// Rotary position embedding on fused QKV rows, and the KV-cache store, in one pass.
// qkv[t] is one row [q heads | k heads | v heads] of (n_heads + 2 n_kv_heads) * head_dim
// values, for the token at places[t] = (position in its sequence, cache row where its
// sequence starts: sequences share the cache, each in its own range of rows). Q heads are
// rotated into q[t, head, :]; K heads are rotated and V heads copied into row
// start + position of k_cache / v_cache ([cache_rows, n_kv_heads, head_dim]).
// Pair i (0 <= i < head_dim / 2) rotates by angle position * inv_freq[i]; the host
// computes inv_freq, so any rope base and Llama 3 frequency scaling cost nothing here.
// Pairing: mode 0 rotates adjacent elements (2i, 2i+1) (llama.cpp's permuted GGUF rows);
// mode 1 rotates (i, i + head_dim / 2), as Hugging Face and MLC checkpoints expect.

struct Params {
    n_tokens: u32,
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    mode: u32,
    cache_rows: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> places: array<vec2<u32>>;
@group(0) @binding(2) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(3) var<storage, read> qkv: array<act>;
@group(0) @binding(4) var<storage, read_write> q: array<act>;
@group(0) @binding(5) var<storage, read_write> k_cache: array<act>;
@group(0) @binding(6) var<storage, read_write> v_cache: array<act>;

// One thread per rotated pair of one Q or K head of one token; K threads also copy the
// same two elements of the matching V head.
@compute @workgroup_size(256)
fn rope_qkv(@builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) tid: u32) {
    let half_dim = p.head_dim / 2u;
    let heads = p.n_heads + p.n_kv_heads;
    let idx = (wid.x + wid.y * nwg.x) * 256u + tid;
    if (idx >= p.n_tokens * heads * half_dim) {
        return;
    }
    let i = idx % half_dim;
    let t = idx / half_dim / heads;
    let h = idx / half_dim % heads;
    var a = 2u * i;
    var b = a + 1u;
    if (p.mode == 1u) {
        a = i;
        b = i + half_dim;
    }
    let pos = places[t].x;
    let angle = f32(pos) * inv_freq[i];
    let c = cos(angle);
    let s = sin(angle);
    let row = t * (heads + p.n_kv_heads) * p.head_dim;
    let src = row + h * p.head_dim;
    let x0 = f32(qkv[src + a]);
    let x1 = f32(qkv[src + b]);
    let r0 = act(x0 * c - x1 * s);
    let r1 = act(x0 * s + x1 * c);
    if (h < p.n_heads) {
        let dst = (t * p.n_heads + h) * p.head_dim;
        q[dst + a] = r0;
        q[dst + b] = r1;
        return;
    }
    let cache_row = places[t].y + pos;
    if (cache_row >= p.cache_rows) {
        return;
    }
    let kh = h - p.n_heads;
    let dst = (cache_row * p.n_kv_heads + kh) * p.head_dim;
    k_cache[dst + a] = r0;
    k_cache[dst + b] = r1;
    let v_src = row + (heads + kh) * p.head_dim;
    v_cache[dst + a] = qkv[v_src + a];
    v_cache[dst + b] = qkv[v_src + b];
}
