// Decode on GPUs (and of float weights on CPU adapters): y = W x for up to TOKENS tokens
// per workgroup (one sequence's token, or one token each of a batch of sequences;
// workgroups along z take further blocks of TOKENS), with matmul_common.wgsl's fusions.
// Built for memory bandwidth:
// - W is read a segment per load (load_seg: 16 bytes of codes for most formats, plus the
//   segment's scales). A team of TEAM threads walks a row's segments together, so a team's
//   loads cover consecutive bytes.
// - Each thread owns OUTPUTS outputs (ROWS rows of W: gate and up for SwiGLU) and reads
//   each segment's inputs once for all of them, as vec4 loads; the team's TEAMS neighbours
//   in the workgroup take the next outputs.
// - The format decodes codes without integer-to-float conversions (centered) and applies
//   a segment's scales once to its sum (seg_dot).
// - A team's sums meet in a pairwise tree: by subgroup shuffles where a team is one
//   subgroup (gemv_subgroup.wgsl), else over workgroup memory with log2(TEAM) barriers
//   (gemv_workgroup.wgsl); the host appends one of the two, each with the entry point.
//   Both add the same pairs in the same order, so they give the same bits.
// A token's sums are taken in the same order whatever TOKENS is and whatever else is in
// the batch, so a sequence decodes to the same bits alone or batched.
// The host only picks this kernel where K is a multiple of 4 (whole vec4s of inputs).

@group(0) @binding(1) var<storage, read> x4: array<vec4<in_t>>;
@group(0) @binding(5) var<storage, read> norm4: array<vec4<f32>>;  // read only when NORM = 1

const THREADS: u32 = TEAM * TEAMS;
const ROWS: u32 = OUTPUTS * PAIR;
// Per thread: a sum per token and row, then each token's sum of squared inputs.
const SUMS: u32 = TOKENS * ROWS;
const VALUES: u32 = SUMS + TOKENS;

// The first output of team `team` of workgroup `wid`.
fn first_output(wid: vec3<u32>, nwg: vec3<u32>, team: u32) -> u32 {
    return ((wid.x + wid.y * nwg.x) * TEAMS + team) * OUTPUTS;
}

// Lane `lane`'s share of its team's sums: the segments lane, lane + TEAM, ... of each row,
// for the tokens of workgroup row `wz`.
fn lane_sums(first: u32, wz: u32, lane: u32) -> array<f32, VALUES> {
    let m0 = wz * TOKENS;
    let segs = segs_per_row(p.k_len);
    // Loops over tokens run to the constant TOKENS (so they unroll and the sums stay in
    // registers) and leave at the last live token.
    let tokens = min(TOKENS, p.m_len - m0);
    var sums: array<f32, VALUES>;
    // Teams past the chunk's last row still take part in the reduction.
    let live = first * PAIR < p.n_len;
    for (var s = select(segs, lane, live); s < segs; s += TEAM) {
        var seg: array<Seg, ROWS>;
        for (var r = 0u; r < ROWS; r++) {
            // Rows past the chunk read its last row; their sums are never stored.
            seg[r] = load_seg(min(first * PAIR + r, p.n_len - 1u), s, p.k_len);
        }
        let k0 = s * SEG;
        for (var t = 0u; t < TOKENS; t++) {
            if (t >= tokens) {
                break;
            }
            // Past K the inputs are zeros: the padding of a last segment adds nothing.
            var xs: SegInputs;
            var xsum = 0.0;
            for (var i = 0u; i < SEG4; i++) {
                let k = k0 + 4u * i;
                if (k < p.k_len) {
                    var v = vec4<f32>(x4[((m0 + t) * p.k_len + k) / 4u]);
                    if (NORM == 1u) {
                        sums[SUMS + t] += dot(v, v);
                        v *= norm4[k / 4u];
                    }
                    xs[i] = v;
                    if (SEG_XSUM) {
                        xsum += (v.x + v.y) + (v.z + v.w);
                    }
                }
            }
            for (var r = 0u; r < ROWS; r++) {
                sums[t * ROWS + r] += seg_dot(seg[r], xs, xsum);
            }
        }
    }
    return sums;
}

// Lane 0's work once its team's sums are whole: the outputs of the tokens of workgroup
// row `wz`, with the epilogue.
fn store_outputs(first: u32, wz: u32, sums: array<f32, VALUES>) {
    let m0 = wz * TOKENS;
    let tokens = min(TOKENS, p.m_len - m0);
    for (var t = 0u; t < TOKENS; t++) {
        if (t >= tokens) {
            break;
        }
        let s = norm_scale(sums[SUMS + t]);
        for (var o = 0u; o < OUTPUTS; o++) {
            let out = first + o;
            if (out * PAIR >= p.n_len) {
                break;
            }
            let r = t * ROWS + o * PAIR;
            var acc = vec2<f32>(sums[r], 0.0);
            if (PAIR == 2u) {
                acc.y = sums[r + 1u];
            }
            finish(m0 + t, out, acc, s);
        }
    }
}
