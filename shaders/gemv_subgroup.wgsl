// gemv's entry point where a team is exactly one subgroup (the host checks the adapter's
// subgroup size is TEAM): the lanes fold their sums together by shuffles, without
// workgroup memory or barriers. Lane 0 adds the very pairs gemv_workgroup.wgsl's tree
// adds, in the same order: at each stride s it adds lane s's value, which by then holds
// the sum of the lanes s + 2s j, as the tree's slot s does.

@compute @workgroup_size(THREADS)
fn gemv(@builtin(workgroup_id) wid: vec3<u32>,
        @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(subgroup_id) team: u32,
        @builtin(subgroup_invocation_id) lane: u32) {
    let first = first_output(wid, nwg, team);
    var sums = lane_sums(first, wid.z, lane);
    for (var stride = TEAM / 2u; stride > 0u; stride /= 2u) {
        for (var v = 0u; v < VALUES; v++) {
            sums[v] += subgroupShuffleXor(sums[v], stride);
        }
    }
    if (lane == 0u) {
        store_outputs(first, wid.z, sums);
    }
}
