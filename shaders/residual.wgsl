// The residual connection, in place: x += y over n values.

struct Params {
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> y: array<act>;
@group(0) @binding(2) var<storage, read_write> x: array<act>;

@compute @workgroup_size(256)
fn add(@builtin(workgroup_id) wid: vec3<u32>,
       @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) tid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + tid;
    if (i >= p.n) {
        return;
    }
    x[i] = act(f32(x[i]) + f32(y[i]));
}
