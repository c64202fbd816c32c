// SwiGLU on fused gate/up rows: row t of gate_up is [gate (width) | up (width)], and
// out[t, j] = silu(gate[t, j]) * up[t, j].

struct Params {
    n_tokens: u32,
    width: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> gate_up: array<act>;
@group(0) @binding(2) var<storage, read_write> out: array<act>;

@compute @workgroup_size(256)
fn swiglu(@builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) tid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + tid;
    if (i >= p.n_tokens * p.width) {
        return;
    }
    let t = i / p.width;
    let j = i % p.width;
    let g = f32(gate_up[t * 2u * p.width + j]);
    let u = f32(gate_up[t * 2u * p.width + p.width + j]);
    out[i] = act(g / (1.0 + exp(-g)) * u);
}
