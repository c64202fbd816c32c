// Prefill attention: one workgroup per (token, head) walks all of that token's keys.

@group(0) @binding(5) var<storage, read_write> out: array<act>;

@compute @workgroup_size(THREADS)
fn attend(@builtin(workgroup_id) wid: vec3<u32>,
          @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) tid: u32) {
    let row = wid.x + wid.y * nwg.x;  // t * n_heads + h
    if (row >= p.n_tokens * p.n_heads) {
        return;
    }
    let t = row / p.n_heads;
    let h = row % p.n_heads;
    let pos = places[t].x;
    let st = attend_range(t, h, first_key(pos), pos + 1u, tid);
    for (var i = 0u; i < DIMS_PER_THREAD; i++) {
        let d = tid + i * THREADS;
        if (d < p.head_dim) {
            out[row * p.head_dim + d] = act(st.acc[i] / st.l);
        }
    }
}
