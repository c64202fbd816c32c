// out[r] = index of the largest of logits[r, 0..n) (the lowest such index on ties). One workgroup per row: the vocabulary never leaves the GPU, only the id does.

struct Params {
    rows: u32,
    n: u32,       // candidates per row (may be fewer than the row holds)
    stride: u32,  // values per row
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<act>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

const THREADS: u32 = 256u;
const NONE: u32 = 0xffffffffu;
var<workgroup> best_v: array<f32, THREADS>;
var<workgroup> best_i: array<u32, THREADS>;

@compute @workgroup_size(THREADS)
fn argmax(@builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) tid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    var v = 0.0;
    var i = NONE;
    for (var k = tid; k < p.n; k += THREADS) {
        let x = f32(logits[row * p.stride + k]);
        if (i == NONE || x > v) {
            v = x;
            i = k;
        }
    }
    best_v[tid] = v;
    best_i[tid] = i;
    workgroupBarrier();
    for (var stride = THREADS / 2u; stride > 0u; stride /= 2u) {
        if (tid < stride) {
            let ov = best_v[tid + stride];
            let oi = best_i[tid + stride];
            let mi = best_i[tid];
            let better = oi != NONE && (mi == NONE || ov > best_v[tid] || (ov == best_v[tid] && oi < mi));
            if (better) {
                best_v[tid] = ov;
                best_i[tid] = oi;
            }
        }
        workgroupBarrier();
    }
    if (tid == 0u) {
        out[row] = select(best_i[0], 0u, best_i[0] == NONE);
    }
}
