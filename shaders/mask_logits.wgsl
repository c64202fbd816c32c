// Constrained decoding: logits[r, k] becomes MASKED wherever bit k of row r's mask is clear,
// for the k < n a pick considers. A mask row is `words` u32s, bit k of word k / 32 standing
// for token k. MASKED is far below any logit a model gives and finite in f16 as in f32, so
// the argmax never takes a masked token while one is allowed and a draw gives it weight 0.

struct Params {
    rows: u32,
    n: u32,       // tokens a pick considers
    stride: u32,  // logits per row
    words: u32,   // mask words per row
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> logits: array<act>;
@group(0) @binding(2) var<storage, read> mask: array<u32>;

const THREADS: u32 = 64u;
const MASKED: f32 = -65504.0;

// One thread per mask word: 32 logits.
@compute @workgroup_size(THREADS)
fn mask_logits(@builtin(workgroup_id) wid: vec3<u32>,
               @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) tid: u32) {
    let blocks = (p.words + THREADS - 1u) / THREADS;
    let flat = wid.x + wid.y * nwg.x;
    let row = flat / blocks;
    let word = (flat % blocks) * THREADS + tid;
    if (row >= p.rows || word >= p.words) {
        return;
    }
    let bits = mask[row * p.words + word];
    if (bits == 0xffffffffu) {
        return;
    }
    let first = word * 32u;
    let last = min(first + 32u, p.n);
    for (var k = first; k < last; k++) {
        if ((bits & (1u << (k - first))) == 0u) {
            logits[row * p.stride + k] = act(MASKED);
        }
    }
}
