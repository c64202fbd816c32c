// Decode attention, split over the sequence (flash-decoding): workgroup (token, head, split)
// attends to keys [first + split * split_len, first + (split + 1) * split_len) of those
// the query sees (first_key(position)..=position) and stores its unnormalized
// output with its running max and sum; `attention_combine` merges the splits. Long contexts
// then spread over many workgroups instead of one.
// partial: [n_tokens, n_heads, n_splits, head_dim + 2] f32 (acc..., max, sum).

@group(0) @binding(5) var<storage, read_write> partial: array<f32>;

@compute @workgroup_size(THREADS)
fn attend_split(@builtin(workgroup_id) wid: vec3<u32>,
                @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) tid: u32) {
    let idx = wid.x + wid.y * nwg.x;  // (t * n_heads + h) * n_splits + split
    if (idx >= p.n_tokens * p.n_heads * p.n_splits) {
        return;
    }
    let row = idx / p.n_splits;
    let split = idx % p.n_splits;
    let t = row / p.n_heads;
    let h = row % p.n_heads;
    let kv_len = places[t].x + 1u;
    let begin = min(first_key(places[t].x) + split * p.split_len, kv_len);
    let end = min(begin + p.split_len, kv_len);
    let st = attend_range(t, h, begin, end, tid);
    let base = idx * (p.head_dim + 2u);
    for (var i = 0u; i < DIMS_PER_THREAD; i++) {
        let d = tid + i * THREADS;
        if (d < p.head_dim) {
            partial[base + d] = st.acc[i];
        }
    }
    if (tid == 0u) {
        partial[base + p.head_dim] = st.m;
        partial[base + p.head_dim + 1u] = st.l;
    }
}
