// Workgroup reductions over THREADS threads (the kernel including this file defines
// THREADS). Every thread of the workgroup must call them, in uniform control flow (they
// hold barriers), and every thread gets the result.

var<workgroup> red: array<f32, THREADS>;
var<workgroup> red_index: array<u32, THREADS>;
const NO_INDEX: u32 = 0xffffffffu;

// The workgroup's sum of v, or its max with take_max.
fn reduce(v: f32, tid: u32, take_max: bool) -> f32 {
    red[tid] = v;
    workgroupBarrier();
    for (var stride = THREADS / 2u; stride > 0u; stride /= 2u) {
        if (tid < stride) {
            let o = red[tid + stride];
            red[tid] = select(red[tid] + o, max(red[tid], o), take_max);
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

// The index i of the largest v over the workgroup's (v, i) pairs, the lowest index on
// ties; i = NO_INDEX is no candidate. 0 when no thread has one.
fn reduce_argmax(v: f32, i: u32, tid: u32) -> u32 {
    red[tid] = v;
    red_index[tid] = i;
    workgroupBarrier();
    for (var stride = THREADS / 2u; stride > 0u; stride /= 2u) {
        if (tid < stride) {
            let ov = red[tid + stride];
            let oi = red_index[tid + stride];
            let mi = red_index[tid];
            if (oi != NO_INDEX && (mi == NO_INDEX || ov > red[tid] || (ov == red[tid] && oi < mi))) {
                red[tid] = ov;
                red_index[tid] = oi;
            }
        }
        workgroupBarrier();
    }
    let r = red_index[0];
    workgroupBarrier();
    return select(r, 0u, r == NO_INDEX);
}
