// gemv's entry point for any adapter: a team's lanes fold their sums together pairwise
// over workgroup memory, all values at once, log2(TEAM) barriers.

var<workgroup> partial: array<f32, VALUES * THREADS>;

@compute @workgroup_size(THREADS)
fn gemv(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) tid: u32) {
    let team = tid / TEAM;
    let lane = tid % TEAM;
    let first = first_output(wid, nwg, team);
    var sums = lane_sums(first, wid.z, lane);
    for (var v = 0u; v < VALUES; v++) {
        partial[v * THREADS + tid] = sums[v];
    }
    workgroupBarrier();
    for (var stride = TEAM / 2u; stride > 0u; stride /= 2u) {
        if (lane < stride) {
            for (var v = 0u; v < VALUES; v++) {
                partial[v * THREADS + tid] += partial[v * THREADS + tid + stride];
            }
        }
        workgroupBarrier();
    }
    if (lane == 0u) {
        for (var v = 0u; v < VALUES; v++) {
            sums[v] = partial[v * THREADS + tid];
        }
        store_outputs(first, wid.z, sums);
    }
}
