// out[t, :] = table[ids[t], :] * scale, dequantizing the row (Gemma scales its embeddings
// by sqrt(d_model); the residual stream `out` is f32 in the model). One dispatch per chunk of the table;
// it writes only the tokens whose id falls in [row_start, row_start + rows). The table is
// in any weight format (weights_common.wgsl declares its bindings, 2 and 3).

struct Params {
    n_tokens: u32,
    dim: u32,
    row_start: u32,
    rows: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(4) var<storage, read_write> out: array<act>;

@compute @workgroup_size(256)
fn embed(@builtin(workgroup_id) wid: vec3<u32>,
         @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) tid: u32) {
    let i = (wid.x + wid.y * nwg.x) * 256u + tid;
    if (i >= p.n_tokens * p.dim) {
        return;
    }
    let t = i / p.dim;
    let k = i % p.dim;
    let id = ids[t];
    if (id < p.row_start || id >= p.row_start + p.rows) {
        return;
    }
    out[i] = act(weight_at(id - p.row_start, k, p.dim) * p.scale);
}
