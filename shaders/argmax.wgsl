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

@compute @workgroup_size(THREADS)
fn argmax(@builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) tid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    var v = 0.0;
    var i = NO_INDEX;
    for (var k = tid; k < p.n; k += THREADS) {
        let x = f32(logits[row * p.stride + k]);
        if (i == NO_INDEX || x > v) {
            v = x;
            i = k;
        }
    }
    let best = reduce_argmax(v, i, tid);
    if (tid == 0u) {
        out[row] = best;
    }
}
