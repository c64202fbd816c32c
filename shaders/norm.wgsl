// A normalized residual add: x[t, :] += RMSNorm(y[t, :]) * w, for the norms some models
// put after a block's output projection (Gemma's post-attention and post-feed-forward
// norms). One workgroup per token; x is the residual stream (f32), y an activation.

struct Params {
    n_tokens: u32,
    dim: u32,
    eps: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> y: array<act>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(THREADS)
fn norm_add(@builtin(workgroup_id) wid: vec3<u32>,
            @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) tid: u32) {
    let t = wid.x + wid.y * nwg.x;
    if (t >= p.n_tokens) {
        return;
    }
    let row = t * p.dim;
    var squares = 0.0;
    for (var k = tid; k < p.dim; k += THREADS) {
        let v = f32(y[row + k]);
        squares += v * v;
    }
    let s = inverseSqrt(reduce(squares, tid, false) / f32(p.dim) + p.eps);
    for (var k = tid; k < p.dim; k += THREADS) {
        x[row + k] += f32(y[row + k]) * s * w[k];
    }
}
