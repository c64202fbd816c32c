// y[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight. One workgroup per row.

struct Params {
    rows: u32,
    dim: u32,
    eps: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<act>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<act>;

const THREADS: u32 = 128u;
var<workgroup> partial: array<f32, THREADS>;

@compute @workgroup_size(THREADS)
fn rmsnorm(@builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) tid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.dim;
    var sum = 0.0;
    for (var i = tid; i < p.dim; i += THREADS) {
        let v = f32(x[base + i]);
        sum += v * v;
    }
    partial[tid] = sum;
    workgroupBarrier();
    for (var stride = THREADS / 2u; stride > 0u; stride /= 2u) {
        if (tid < stride) {
            partial[tid] += partial[tid + stride];
        }
        workgroupBarrier();
    }
    let inv = inverseSqrt(partial[0] / f32(p.dim) + p.eps);
    for (var i = tid; i < p.dim; i += THREADS) {
        y[base + i] = act(f32(x[base + i]) * inv * weight[i]);
    }
}
