// Merges the per-split partial results of `attend_split` into the attention output:
// out = sum_s acc_s * exp(m_s - M) / sum_s l_s * exp(m_s - M), M the largest m_s.

struct Params {
    rows: u32,       // n_tokens * n_heads
    n_splits: u32,
    head_dim: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> partial: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<act>;

@compute @workgroup_size(64)
fn combine(@builtin(workgroup_id) wid: vec3<u32>,
           @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) tid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    let stride = p.head_dim + 2u;
    let base = row * p.n_splits * stride;
    var m = -3.0e38;
    for (var s = 0u; s < p.n_splits; s++) {
        m = max(m, partial[base + s * stride + p.head_dim]);
    }
    var l = 0.0;
    for (var s = 0u; s < p.n_splits; s++) {
        let off = base + s * stride;
        l += partial[off + p.head_dim + 1u] * exp(partial[off + p.head_dim] - m);
    }
    for (var d = tid; d < p.head_dim; d += 64u) {
        var acc = 0.0;
        for (var s = 0u; s < p.n_splits; s++) {
            let off = base + s * stride;
            acc += partial[off + d] * exp(partial[off + p.head_dim] - m);
        }
        out[row * p.head_dim + d] = act(acc / l);
    }
}
