// SwiGLU over n values: out = silu(a) * b, a the gate projection and b the up projection.

struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<act>;
@group(0) @binding(2) var<storage, read> b: array<act>;
@group(0) @binding(3) var<storage, read_write> out: array<act>;

@compute @workgroup_size(256)
fn swiglu(@builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) tid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + tid;
    if (i >= p.n) {
        return;
    }
    let g = f32(a[i]);
    out[i] = act(g / (1.0 + exp(-g)) * f32(b[i]));
}
