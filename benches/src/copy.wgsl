// Benchmark baseline, not an engine kernel: copies `src` into `dst`, one 16-byte vec4 per
// thread, so the GEMV kernels can be compared with the bandwidth a plain copy reaches on
// the same device through the same dispatch path. The grid may be two-dimensional (at most
// 65535 workgroups per dimension); the linear workgroup index is x + y * num_workgroups.x.

const COPY_THREADS: u32 = 256u;

@group(0) @binding(0) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<u32>>;

@compute @workgroup_size(COPY_THREADS)
fn copy_vec4(@builtin(workgroup_id) wid: vec3<u32>,
             @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) tid: u32) {
    let i = (wid.x + wid.y * nwg.x) * COPY_THREADS + tid;
    if (i < arrayLength(&dst)) {
        dst[i] = src[i];
    }
}
