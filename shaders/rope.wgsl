// Rotary position embedding, in place on x[t, head, :] at absolute position positions[t].
// Pair i (0 <= i < head_dim / 2) rotates by angle positions[t] * inv_freq[i]; the host
// computes inv_freq, so any rope base and Llama 3 frequency scaling cost nothing here.
// Pairing: mode 0 rotates adjacent elements (2i, 2i+1), as llama.cpp does for GGUF Llama
// weights; mode 1 rotates (i, i + head_dim / 2), as Hugging Face checkpoints expect.

struct Params {
    n_tokens: u32,
    n_heads: u32,
    head_dim: u32,
    mode: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> positions: array<u32>;
@group(0) @binding(2) var<storage, read> inv_freq: array<f32>;
@group(0) @binding(3) var<storage, read_write> x: array<act>;

@compute @workgroup_size(256)
fn rope(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let half_dim = p.head_dim / 2u;
    let idx = (wid.x + wid.y * nwg.x) * 256u + tid;
    if (idx >= p.n_tokens * p.n_heads * half_dim) {
        return;
    }
    let i = idx % half_dim;
    let row = idx / half_dim;  // t * n_heads + head
    let t = row / p.n_heads;
    let base = row * p.head_dim;
    var a = base + 2u * i;
    var b = a + 1u;
    if (p.mode == 1u) {
        a = base + i;
        b = a + half_dim;
    }
    let angle = f32(positions[t]) * inv_freq[i];
    let c = cos(angle);
    let s = sin(angle);
    let x0 = f32(x[a]);
    let x1 = f32(x[b]);
    x[a] = act(x0 * c - x1 * s);
    x[b] = act(x0 * s + x1 * c);
}
