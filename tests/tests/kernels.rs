//! Every kernel against its CPU reference on a real adapter (lavapipe on CI), in both the
//! f16-activation and f32-activation variants, at small, odd and real model shapes.

use glim::gpu::{DType, GpuContext, Precision, Tensor};
use glim::kernels::attention::{self, AttentionInputs, AttentionShape, Scores};
use glim::kernels::matmul::{self, Epilogue, Fusion, GemvLaunch, Shape};
use glim::kernels::rope::{self, QkvFusion, QkvOutputs, QkvShape, RopeMode};
use glim::kernels::sample::{self, SampleSettings, SettingsPerRow};
use glim::kernels::weight::GpuWeight;
use glim::kernels::{argmax, embedding, mask, norm, Place};
use glim::quant::{PackedWeight, WeightFormat};
use glim_tests::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// A `[n, k]` weight in `format`: `values` quantized for the formats glim packs, random
/// blocks from `seed` for GGUF's (whose K must be whole blocks: see [`fits`]).
fn weight_in(
    format: WeightFormat,
    values: &[f32],
    (n, k): (usize, usize),
    seed: u64,
) -> PackedWeight {
    match format.ggml_type() {
        Some(ty) if ty.block_size() > 1 => PackedWeight::synthetic(format, n, k, seed).unwrap(),
        _ => PackedWeight::quantize(format, values, n, k).unwrap(),
    }
}

/// Values made once per test binary, by key.
type Cache<K, V> = OnceLock<Mutex<HashMap<K, Arc<V>>>>;

/// The value `cache` holds for `key`, made by `make` the first time.
fn cached<K: std::hash::Hash + Eq, V>(
    cache: &Cache<K, V>,
    key: K,
    make: impl FnOnce() -> V,
) -> Arc<V> {
    let cache = cache.get_or_init(Default::default);
    if let Some(v) = cache.lock().unwrap().get(&key) {
        return v.clone();
    }
    let v = Arc::new(make());
    cache.lock().unwrap().insert(key, v.clone());
    v
}

/// Test weights, and the reference outputs of a matmul's inputs (format, shape, input and
/// output precision, norm, epilogue). The 7B-shaped checks would otherwise quantize 45M
/// weights (MLC's formats through glim's scale search, seconds each) and decode them for
/// the reference again for every precision, kernel and launch.
type MatmulInputs = (
    WeightFormat,
    (usize, usize, usize),
    Precision,
    Precision,
    bool,
    Epilogue,
);
static WEIGHTS: Cache<(WeightFormat, usize, usize, u64), PackedWeight> = OnceLock::new();
static REFERENCES: Cache<MatmulInputs, Vec<f32>> = OnceLock::new();

/// The `n x k` test weight of `format` drawn from `seed`.
fn test_weight(format: WeightFormat, (n, k): (usize, usize), seed: u64) -> Arc<PackedWeight> {
    cached(&WEIGHTS, (format, n, k, seed), || {
        let values = random_vec(&mut rng(seed), n * k, 0.5);
        weight_in(format, &values, (n, k), seed)
    })
}

/// Whether `format` can hold rows of `k` weights (GGUF blocks are never padded).
fn fits(format: WeightFormat, k: usize) -> bool {
    match format.ggml_type() {
        Some(ty) => k.is_multiple_of(ty.block_size()),
        None => true,
    }
}

fn upload(ctx: &GpuContext, values: &[f32], precision: Precision) -> Tensor {
    ctx.tensor_from_f32(values, &[values.len()], precision.into())
        .unwrap()
}

fn places_tensor(ctx: &GpuContext, places: &[Place]) -> Tensor {
    ctx.tensor_from_u32(bytemuck::cast_slice(places), &[places.len(), 2])
        .unwrap()
}

fn settings_tensor(ctx: &GpuContext, settings: &[SampleSettings]) -> Tensor {
    let words: &[u32] = bytemuck::cast_slice(settings);
    ctx.tensor_from_u32(words, &[words.len()]).unwrap()
}

fn run(ctx: &GpuContext, dispatches: &[&glim::gpu::Dispatch]) {
    let mut rec = ctx.recorder();
    for d in dispatches {
        rec.dispatch(d);
    }
    rec.submit_and_wait().unwrap();
}

/// What one matmul check runs: the fusion and the kernel.
#[derive(Clone, Copy)]
struct Variant {
    norm: bool,
    epilogue: Epilogue,
    shape: Shape,
}

impl Variant {
    const PLAIN: [Epilogue; 1] = [Epilogue::Store];
    const ALL: [Epilogue; 4] = Epilogue::ALL;

    /// Every kernel for `m` rows with each of `epilogues`, with and without the norm
    /// (the gated epilogues only where `n` is even; GeGLU only after the norm, as the graph
    /// runs it: the gate code is SwiGLU's). A few rows go through the decode kernels too (a
    /// batched decode step), and one row through the prefill kernels too (a prompt's
    /// last token left after a cached prefix).
    fn each(m: usize, n: usize, epilogues: &[Epilogue]) -> Vec<Variant> {
        let shapes: &[Shape] = match m {
            1..=16 => &[Shape::Gemm, Shape::GemmRows, Shape::Gemv, Shape::GemvRows],
            _ => &[Shape::Gemm, Shape::GemmRows],
        };
        let mut all = Vec::new();
        for &shape in shapes {
            for &epilogue in epilogues {
                let gated = matches!(epilogue, Epilogue::SwiGlu | Epilogue::GeGlu);
                if gated && !n.is_multiple_of(2) {
                    continue;
                }
                for norm in [false, true] {
                    if epilogue == Epilogue::GeGlu && !norm {
                        continue;
                    }
                    all.push(Variant {
                        norm,
                        epilogue,
                        shape,
                    });
                }
            }
        }
        all
    }
}

/// The fusions a format's matmuls are checked with: every one for the formats glim packs
/// (GeGLU on q4f16 alone); the others share the fusion code and differ only in how a
/// segment decodes, so they run a plain matmul and the fullest fusion (RMSNorm in, SwiGLU
/// out). Each variant is a pipeline lavapipe compiles (seconds each, and minutes for them
/// all on a fresh CI machine), so the segment decoders are checked where they differ, not
/// in every combination.
fn variants_for(format: WeightFormat, m: usize, n: usize, epilogues: &[Epilogue]) -> Vec<Variant> {
    // GeGLU differs from SwiGLU only in the gate's function: one format checks it.
    let all: Vec<Variant> = Variant::each(m, n, epilogues)
        .into_iter()
        .filter(|v| v.epilogue != Epilogue::GeGlu || format == WeightFormat::Q4F16)
        .collect();
    if WeightFormat::PACKABLE.contains(&format) {
        return all;
    }
    all.into_iter()
        .filter(|v| {
            (!v.norm && v.epilogue == Epilogue::Store)
                || (v.norm
                    && (v.epilogue == Epilogue::SwiGlu || !epilogues.contains(&Epilogue::SwiGlu)))
        })
        .collect()
}

/// Runs one matmul shape through one kernel variant and checks it against the reference.
fn check_matmul_variant(
    ctx: &GpuContext,
    format: WeightFormat,
    precision: Precision,
    (m, n, k): (usize, usize, usize),
    v: Variant,
) {
    let seed = (m * 31 + n * 7 + k) as u64;
    let packed = test_weight(format, (n, k), seed);
    let packed = &*packed;
    let mut r = rng(seed ^ 0x5eed);
    let weight = GpuWeight::upload(ctx, packed).unwrap();
    // As the graph runs them: a normalized input is the f32 residual stream, and Add adds
    // to it; the other sides are activations.
    let x_precision = if v.norm { Precision::F32 } else { precision };
    let y_precision = if v.epilogue == Epilogue::Add {
        Precision::F32
    } else {
        precision
    };
    let x = as_stored(&random_vec(&mut r, m * k, 1.0), x_precision);
    let xt = upload(ctx, &x, x_precision);
    let norm_weights = random_vec(&mut r, k, 1.0);
    let nt = ctx
        .tensor_from_f32(&norm_weights, &[k], DType::F32)
        .unwrap();
    let outputs = n / epilogue_rows(v.epilogue);
    let before = as_stored(&random_vec(&mut r, m * outputs, 1.0), y_precision);
    let y = upload(ctx, &before, y_precision);
    let eps = 1e-5;
    let fusion = Fusion {
        norm: v.norm.then_some((&nt, eps)),
        epilogue: v.epilogue,
    };
    let ops = matmul::fused(ctx, &xt, &weight, &y, m, &fusion, v.shape).unwrap();
    run(ctx, &ops.iter().collect::<Vec<_>>());
    let got = ctx.read_f32_blocking(&y).unwrap();
    // Every kernel and launch of these inputs has the same reference.
    let inputs = (
        format,
        (m, n, k),
        x_precision,
        y_precision,
        v.norm,
        v.epilogue,
    );
    let want = cached(&REFERENCES, inputs, || {
        let mut want = before.clone();
        let norm = v.norm.then_some((norm_weights.as_slice(), eps));
        matmul::reference_fused(&x, m, packed, norm, v.epilogue, &mut want);
        want
    });
    // f32 accumulation over k terms in another order: a few ulps of the output's scale.
    let abs = rms(&want) * 1e-5 * (k as f32).sqrt();
    let what = format!(
        "{} {precision:?} {:?}{} norm={} {:?} m={m} n={n} k={k} ({} chunks)",
        format.name(),
        v.shape,
        launch_note(ctx, v.shape),
        v.norm,
        v.epilogue,
        weight.chunks.len()
    );
    assert_close(&what, &got, &want, abs, rel_tol(y_precision));
}

/// Every kernel and fusion for `m` rows of an `n x k` matmul with `epilogues`; `gemv`
/// with each launch [`contexts_for`] gives.
fn check_matmul(
    ctx: &GpuContext,
    format: WeightFormat,
    precision: Precision,
    (m, n, k): (usize, usize, usize),
    epilogues: &[Epilogue],
) {
    for v in variants_for(format, m, n, epilogues) {
        for ctx in contexts_for(ctx, v.shape) {
            check_matmul_variant(ctx, format, precision, (m, n, k), v);
        }
    }
}

/// The contexts a `shape` check runs on: `ctx`, and for `gemv` a context that launches it
/// otherwise where there is one: on lavapipe `ctx` reduces by subgroup shuffles in
/// 8-thread teams and the other over workgroup memory in 32-thread teams, as GPUs without
/// a 32-wide subgroup do.
fn contexts_for(ctx: &GpuContext, shape: Shape) -> Vec<&GpuContext> {
    let mut all = vec![ctx];
    if let (Shape::Gemv, Some(other)) = (shape, gpu_with_gpu_kernels()) {
        if GemvLaunch::for_context(other) != GemvLaunch::for_context(ctx) {
            all.push(other);
        }
    }
    all
}

/// On lavapipe (8-lane subgroups) the tests above run both of `gemv`'s reductions: the
/// shuffles with the CPU launch, workgroup memory with the GPU one.
#[test]
fn lavapipe_tests_both_gemv_reductions() {
    let Some(ctx) = gpu() else { return };
    if ctx.subgroup_size() != Some(GemvLaunch::CPU.team as u32) || !ctx.is_cpu() {
        eprintln!("not lavapipe's subgroups: gemv runs one reduction here");
        return;
    }
    let launches: Vec<GemvLaunch> = contexts_for(ctx, Shape::Gemv)
        .into_iter()
        .map(GemvLaunch::for_context)
        .collect();
    let subgroup: Vec<bool> = launches.iter().map(|l| l.subgroup).collect();
    assert_eq!(subgroup, [true, false], "{launches:?}");
}

/// How `gemv` is launched on `ctx`, for failure messages.
fn launch_note(ctx: &GpuContext, shape: Shape) -> String {
    match shape {
        Shape::Gemv => format!(" {:?}", GemvLaunch::for_context(ctx)),
        _ => String::new(),
    }
}

#[test]
fn matmul_small_and_odd_shapes() {
    let Some(ctx) = gpu() else { return };
    for precision in precisions(ctx) {
        for format in WeightFormat::PACKABLE {
            // K = 100 and 7 pad the last segment; K = 576 pads q3 (14.4 groups).
            for (n, k) in [(64, 64), (34, 100), (33, 100), (5, 7)] {
                for m in [1, 3, 37] {
                    check_matmul(ctx, format, precision, (m, n, k), &Variant::ALL);
                }
            }
            for (n, k) in [(576, 1536), (1536, 576)] {
                for m in [1, 37] {
                    check_matmul(ctx, format, precision, (m, n, k), &Variant::PLAIN);
                }
            }
        }
    }
}

/// Every other format (GGUF's blocks, bf16, f32) through every matmul kernel: a lone
/// token (decode), three (a batched decode step) and 37 (prefill), plain and with the
/// RMSNorm and SwiGLU fused, in the adapter's precision; the decode kernel in the other
/// precision too. GGUF's weights are random blocks, so every code and scale bit pattern
/// is met.
#[test]
fn matmul_in_every_format() {
    let Some(ctx) = gpu() else { return };
    let all = precisions(ctx);
    for format in WeightFormat::ALL {
        if WeightFormat::PACKABLE.contains(&format) {
            continue;
        }
        for m in [1, 3, 37] {
            check_matmul(ctx, format, all[0], (m, 34, 512), &Variant::ALL);
        }
        check_matmul(ctx, format, all[0], (1, 1536, 768), &Variant::PLAIN);
        for &precision in &all[1..] {
            let v = Variant {
                norm: false,
                epilogue: Epilogue::Store,
                shape: Shape::Gemv,
            };
            check_matmul_variant(ctx, format, precision, (1, 34, 512), v);
        }
    }
}

/// The formats the checks over every pass and at 7B shapes run: glim's own, and a GGUF
/// format of each decoder (blocks of 32 with an offset, k-quants with one and with two
/// scales per segment).
const COVERING: [WeightFormat; 6] = [
    WeightFormat::Q4F16,
    WeightFormat::Q3F16,
    WeightFormat::F16,
    WeightFormat::Q4_1,
    WeightFormat::Q4_K,
    WeightFormat::Q6_K,
];

/// A token gets the very bits it gets alone whatever else is in its pass: decoded in a
/// batch (the server's batched answers then equal one-at-a-time answers), or anywhere in a
/// prefill pass (a prompt then gives the same KV cache however it is cut into passes).
#[test]
fn each_token_is_bitwise_the_same_in_any_pass() {
    let Some(ctx) = gpu() else { return };
    for precision in precisions(ctx) {
        for format in COVERING {
            for shape in [Shape::Gemv, Shape::GemvRows, Shape::Gemm, Shape::GemmRows] {
                for ctx in contexts_for(ctx, shape) {
                    check_any_pass(ctx, precision, format, shape);
                }
            }
        }
    }
}

/// Runs 9 (decode) or 40 (prefill) tokens alone and in passes of several sizes through
/// `shape` and checks each token's outputs are the same bits every time.
fn check_any_pass(ctx: &GpuContext, precision: Precision, format: WeightFormat, shape: Shape) {
    let (n, k) = (130, 512);
    let mut r = rng(77);
    let w = random_vec(&mut r, n * k, 0.5);
    let packed = weight_in(format, &w, (n, k), 77);
    let weight = GpuWeight::upload(ctx, &packed).unwrap();
    let nt = ctx
        .tensor_from_f32(&random_vec(&mut r, k, 1.0), &[k], DType::F32)
        .unwrap();
    let m = 40; // past the prefill kernel's 32-token tile
    let x = as_stored(&random_vec(&mut r, m * k, 1.0), precision);
    let before = as_stored(&random_vec(&mut r, m * n, 1.0), precision);
    let (tokens, batches): (usize, &[usize]) = match shape {
        Shape::Gemv | Shape::GemvRows => (9, &[2, 4, 5, 9]),
        _ => (40, &[2, 9, 33, 40]),
    };
    for (norm, epilogue) in [(true, Epilogue::SwiGlu), (false, Epilogue::Add)] {
        let fusion = Fusion {
            norm: norm.then_some((&nt, 1e-5)),
            epilogue,
        };
        // The normalized input is the f32 residual stream; Add adds to it.
        let (x_precision, y_precision) = if norm {
            (Precision::F32, precision)
        } else {
            (precision, Precision::F32)
        };
        let outputs = n / epilogue_rows(epilogue);
        let y_len = |rows: usize| rows * outputs;
        let run_rows = |rows: std::ops::Range<usize>| {
            let xt = upload(ctx, &x[rows.start * k..rows.end * k], x_precision);
            let y_before = &before[y_len(rows.start)..y_len(rows.end)];
            let yt = upload(ctx, y_before, y_precision);
            let ops = matmul::fused(ctx, &xt, &weight, &yt, rows.len(), &fusion, shape).unwrap();
            run(ctx, &ops.iter().collect::<Vec<_>>());
            ctx.read_f32_blocking(&yt).unwrap()
        };
        let alone: Vec<Vec<f32>> = (0..tokens).map(|t| run_rows(t..t + 1)).collect();
        for &batch in batches {
            let together = run_rows(0..batch);
            for (t, lone) in alone.iter().take(batch).enumerate() {
                let got = &together[t * outputs..(t + 1) * outputs];
                let what = format!(
                    "{} {precision:?} {shape:?}{} norm={norm} {epilogue:?}: token {t} of {batch}",
                    format.name(),
                    launch_note(ctx, shape),
                );
                let same = got
                    .iter()
                    .zip(lone)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{what} differs from the token alone");
            }
        }
    }
}

fn epilogue_rows(e: Epilogue) -> usize {
    if matches!(e, Epilogue::SwiGlu | Epilogue::GeGlu) {
        2
    } else {
        1
    }
}

#[test]
fn gemv_at_llama_7b_shapes() {
    let Some(ctx) = gpu() else { return };
    for precision in precisions(ctx) {
        for format in COVERING {
            for (n, k) in [(4096, 11008), (11008, 4096)] {
                check_matmul(ctx, format, precision, (1, n, k), &Variant::PLAIN);
            }
        }
    }
}

#[test]
fn gemm_at_llama_7b_shape() {
    let Some(ctx) = gpu() else { return };
    let precision = precisions(ctx)[0];
    for format in [
        WeightFormat::Q4F16,
        WeightFormat::Q3F16,
        WeightFormat::Q4_K,
        WeightFormat::Q6_K,
    ] {
        for shape in [Shape::Gemm, Shape::GemmRows] {
            let v = Variant {
                norm: true,
                epilogue: Epilogue::Store,
                shape,
            };
            check_matmul_variant(ctx, format, precision, (5, 4096, 11008), v);
        }
    }
}

/// A weight bigger than the adapter's largest binding is split by rows; the result must
/// not change. The limit is lowered so the test runs on any device.
#[test]
fn weights_split_across_bindings() {
    let Some(mut ctx) = open_gpu() else { return };
    ctx.limit_binding_size(64 << 10);
    let precision = precisions(&ctx)[0];
    for format in COVERING {
        let k = if fits(format, 576) { 576 } else { 512 };
        for m in [1, 9] {
            check_matmul(&ctx, format, precision, (m, 1536, k), &Variant::ALL);
        }
        let mut r = rng(5);
        let (vocab, dim) = (1000, k);
        let table = weight_in(
            format,
            &random_vec(&mut r, vocab * dim, 1.0),
            (vocab, dim),
            5,
        );
        let gpu_table = GpuWeight::upload(&ctx, &table).unwrap();
        assert!(
            gpu_table.chunks.len() > 2,
            "{format:?} table should be split"
        );
        let ids = [0u32, 999, 500, 77, 998, 1];
        let ids_t = ctx.tensor_from_u32(&ids, &[ids.len()]).unwrap();
        let out = ctx.zeros(&[ids.len(), dim], precision.into()).unwrap();
        let ops = embedding::embed(&ctx, &ids_t, &gpu_table, &out, ids.len(), 1.0).unwrap();
        run(&ctx, &ops.iter().collect::<Vec<_>>());
        let want = as_stored(&embedding::reference(&ids, &table, 1.0), precision);
        assert_close(
            &format!("split embedding {format:?}"),
            &ctx.read_f32_blocking(&out).unwrap(),
            &want,
            0.0,
            0.0,
        );
    }
}

#[test]
fn embedding_lookup() {
    let Some(ctx) = gpu() else { return };
    for precision in precisions(ctx) {
        for format in WeightFormat::ALL {
            let mut r = rng(11);
            let (vocab, dim) = (300, if fits(format, 100) { 100 } else { 256 });
            let table = weight_in(
                format,
                &random_vec(&mut r, vocab * dim, 1.0),
                (vocab, dim),
                11,
            );
            let gpu_table = GpuWeight::upload(ctx, &table).unwrap();
            let ids: Vec<u32> = (0..17).map(|i| (i * 37 % vocab) as u32).collect();
            let ids_t = ctx.tensor_from_u32(&ids, &[ids.len()]).unwrap();
            let out = ctx.zeros(&[ids.len(), dim], precision.into()).unwrap();
            // Gemma's scale: sqrt(d_model).
            let scale = (dim as f32).sqrt();
            let ops = embedding::embed(ctx, &ids_t, &gpu_table, &out, ids.len(), scale).unwrap();
            run(ctx, &ops.iter().collect::<Vec<_>>());
            // The GPU decodes every weight to the CPU reference's f32 (for GGUF's formats,
            // ggml's; tested bit for bit against it in the engine) and scales it in f32:
            // only the store to f16 rounds.
            let want = as_stored(&embedding::reference(&ids, &table, scale), precision);
            assert_close(
                &format!("embedding {format:?} {precision:?}"),
                &ctx.read_f32_blocking(&out).unwrap(),
                &want,
                0.0,
                0.0,
            );
        }
    }
}

/// RoPE in both pairings, at Llama, Qwen and Gemma shapes, plain and after a Q/K/V bias
/// (Qwen2) and per-head Q/K norms (Qwen3, Gemma 3); the Gemma shape stores its keys in a
/// ring of 100 rows per sequence (a sliding-window layer), so positions wrap around it.
#[test]
fn rope_qkv_both_layouts() {
    let Some(ctx) = gpu() else { return };
    for precision in precisions(ctx) {
        for mode in [RopeMode::Interleaved, RopeMode::Halves] {
            for (n_tokens, n_heads, n_kv_heads, head_dim, base, ring) in [
                (5, 9, 3, 64, 100_000.0, 2048),
                (3, 3, 3, 128, 10_000.0, 2048),
                (1, 32, 8, 128, 500_000.0, 2048),
                (6, 4, 1, 256, 1_000_000.0, 100),
            ] {
                for (bias, qk_norm) in [(false, false), (true, true), (false, true)] {
                    let shape = QkvShape {
                        n_tokens,
                        n_heads,
                        n_kv_heads,
                        head_dim,
                        ring,
                    };
                    let what = format!(
                        "rope {precision:?} {mode:?} hd={head_dim} kv={n_kv_heads} ring={ring} bias={bias} qk_norm={qk_norm}"
                    );
                    check_rope(ctx, precision, mode, base, &shape, (bias, qk_norm), &what);
                }
            }
        }
    }
}

fn check_rope(
    ctx: &GpuContext,
    precision: Precision,
    mode: RopeMode,
    base: f32,
    shape: &QkvShape,
    (bias, qk_norm): (bool, bool),
    what: &str,
) {
    let (n_tokens, n_heads, head_dim) = (shape.n_tokens, shape.n_heads, shape.head_dim);
    let cache_rows = 4096;
    let kv_len = cache_rows * shape.n_kv_heads * head_dim;
    let mut r = rng(head_dim as u64);
    let qkv = as_stored(
        &random_vec(&mut r, n_tokens * shape.row_len(), 2.0),
        precision,
    );
    let mut k_want = as_stored(&random_vec(&mut r, kv_len, 1.0), precision);
    let mut v_want = as_stored(&random_vec(&mut r, kv_len, 1.0), precision);
    let bias_values = random_vec(&mut r, shape.row_len(), 0.5);
    let norm_values = random_vec(&mut r, 2 * head_dim, 1.0);
    // Two sequences sharing the cache, in slots 0 and 1.
    let places: Vec<Place> = (0..n_tokens as u32)
        .map(|t| Place {
            position: t * 997 % 2048,
            slot: t % 2,
        })
        .collect();
    let freqs = rope::inv_freq(head_dim, base, None);
    let qkv_t = upload(ctx, &qkv, precision);
    let (k_t, v_t) = (
        upload(ctx, &k_want, precision),
        upload(ctx, &v_want, precision),
    );
    let q_t = ctx
        .zeros(&[n_tokens * n_heads * head_dim], precision.into())
        .unwrap();
    let pt = places_tensor(ctx, &places);
    let f32s = |v: &[f32]| ctx.tensor_from_f32(v, &[v.len()], DType::F32).unwrap();
    let (ft, bias_t, norm_t) = (f32s(&freqs), f32s(&bias_values), f32s(&norm_values));
    let out = QkvOutputs {
        q: &q_t,
        k_cache: &k_t,
        v_cache: &v_t,
    };
    let eps = 1e-6;
    let fusion = QkvFusion {
        bias: bias.then_some(&bias_t),
        qk_norm: qk_norm.then_some((&norm_t, eps)),
    };
    let op = rope::rope_qkv(ctx, &qkv_t, &pt, &ft, &out, shape, mode, &fusion).unwrap();
    run(ctx, &[&op]);
    let reference_fusion = rope::ReferenceFusion {
        bias: bias.then_some(bias_values.as_slice()),
        qk_norm: qk_norm.then_some((norm_values.as_slice(), eps)),
    };
    let q_want = rope::reference(
        &qkv,
        &places,
        &freqs,
        shape,
        mode,
        reference_fusion,
        &mut k_want,
        &mut v_want,
    );
    // Angles reach thousands of radians: f32 angle rounding dominates (~2e-4).
    for (name, t, want) in [("q", &q_t, &q_want), ("k", &k_t, &k_want)] {
        assert_close(
            &format!("{what} {name}"),
            &ctx.read_f32_blocking(t).unwrap(),
            want,
            2e-3,
            rel_tol(precision),
        );
    }
    // V is copied (with its bias added in f32, then stored): the same bits.
    let v_want = as_stored(&v_want, precision);
    assert_eq!(ctx.read_f32_blocking(&v_t).unwrap(), v_want, "{what} v");
}

/// Gemma's post-norms: `x += RMSNorm(y) * w` into the f32 residual stream, from either
/// activation precision, at an odd width and Gemma 3 270M's.
#[test]
fn norm_add_matches_reference() {
    let Some(ctx) = gpu() else { return };
    for precision in precisions(ctx) {
        for (n_tokens, dim) in [(1, 100), (7, 640)] {
            let mut r = rng(dim as u64);
            let y = as_stored(&random_vec(&mut r, n_tokens * dim, 30.0), precision);
            let weights = random_vec(&mut r, dim, 1.0);
            let mut want = random_vec(&mut r, n_tokens * dim, 100.0);
            let xt = upload(ctx, &want, Precision::F32);
            let yt = upload(ctx, &y, precision);
            let wt = ctx.tensor_from_f32(&weights, &[dim], DType::F32).unwrap();
            let op = norm::norm_add(ctx, &yt, &wt, 1e-6, &xt, n_tokens).unwrap();
            run(ctx, &[&op]);
            norm::reference(&y, &weights, 1e-6, &mut want);
            assert_close(
                &format!("norm_add {precision:?} {n_tokens}x{dim}"),
                &ctx.read_f32_blocking(&xt).unwrap(),
                &want,
                1e-4,
                1e-5,
            );
        }
    }
}

#[test]
fn llama3_rope_scaling_matches_formula() {
    let scaling = rope::Llama3Scaling {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_context: 8192.0,
    };
    let plain = rope::inv_freq(128, 500_000.0, None);
    let scaled = rope::inv_freq(128, 500_000.0, Some(scaling));
    // High frequencies (short wavelengths) are untouched, the lowest are divided by factor.
    assert_eq!(scaled[0], plain[0]);
    assert!((scaled[63] - plain[63] / 8.0).abs() <= plain[63] * 1e-6);
    assert!(scaled.iter().zip(&plain).all(|(s, p)| s <= p));
}

/// Masked logits become `MASKED` on the GPU exactly where the host's `mask_row` puts it, in
/// both precisions; the argmax after it picks the best allowed token; a row allowing all
/// is untouched; tokens past `n` (padding) are left alone.
#[test]
fn mask_logits_forbids_what_the_mask_clears() {
    let Some(ctx) = gpu() else { return };
    let (rows, n, stride) = (3, 1000, 1030);
    let words = mask::words(stride);
    let mut r = rng(21);
    let mut bits: Vec<u32> = (0..rows * words)
        .map(|_| rand::Rng::random(&mut r))
        .collect();
    bits[words..2 * words].fill(u32::MAX); // row 1 allows all
    for precision in precisions(ctx) {
        let logits = as_stored(&random_vec(&mut r, rows * stride, 10.0), precision);
        let lt = upload(ctx, &logits, precision);
        let mt = ctx.tensor_from_u32(&bits, &[bits.len()]).unwrap();
        let ids = ctx.zeros(&[rows], DType::U32).unwrap();
        let op = mask::mask_logits(ctx, &lt, &mt, rows, n, stride).unwrap();
        let pick = argmax::argmax(ctx, &lt, &ids, rows, n, stride).unwrap();
        run(ctx, &[&op, &pick]);
        let got = ctx.read_f32_blocking(&lt).unwrap();
        let mut want = logits.clone();
        for row in 0..rows {
            let span = row * stride..row * stride + n;
            mask::mask_row(&mut want[span], &bits[row * words..(row + 1) * words]);
        }
        assert_eq!(got, want, "{precision:?}");
        assert_eq!(&got[stride..2 * stride], &logits[stride..2 * stride]);
        let picked = ctx.read_u32_blocking(&ids).unwrap();
        for (row, &id) in picked.iter().enumerate() {
            let mask_row = &bits[row * words..(row + 1) * words];
            assert!(
                mask::allowed(mask_row, id as usize),
                "{precision:?} row {row}: {id}"
            );
            let best = (0..n)
                .filter(|&k| mask::allowed(mask_row, k))
                .max_by(|&a, &b| logits[row * stride + a].total_cmp(&logits[row * stride + b]));
            assert_eq!(
                logits[row * stride + id as usize],
                logits[row * stride + best.unwrap()]
            );
        }
    }
}

#[test]
fn argmax_rows_with_ties() {
    let Some(ctx) = gpu() else { return };
    for precision in precisions(ctx) {
        let (rows, n) = (4, 49_152);
        let mut r = rng(9);
        let mut logits = as_stored(&random_vec(&mut r, rows * n, 10.0), precision);
        logits[n + 40_000] = 50.0; // row 1: a clear winner late in the row
        logits[2 * n + 7] = 60.0; // row 2: a tie, the lower index wins
        logits[2 * n + 30_000] = 60.0;
        logits[3 * n + n - 1] = 70.0; // row 3: the last element
        let lt = upload(ctx, &logits, precision);
        let out = ctx.zeros(&[rows], DType::U32).unwrap();
        let op = argmax::argmax(ctx, &lt, &out, rows, n, n).unwrap();
        run(ctx, &[&op]);
        let got = ctx.read_u32_blocking(&out).unwrap();
        assert_eq!(got, argmax::reference(&logits, n), "{precision:?}");
        assert_eq!(&got[1..], &[40_000, 7, (n - 1) as u32]);
        // Only the first n - 1 candidates of each row: row 3's winner is out of reach.
        let op = argmax::argmax(ctx, &lt, &out, rows, n - 1, n).unwrap();
        run(ctx, &[&op]);
        let got = ctx.read_u32_blocking(&out).unwrap();
        assert_eq!(got[3], argmax::argmax_row(&logits[3 * n..4 * n - 1]));
        assert_ne!(got[3], (n - 1) as u32);
    }
}

/// Draws `rows` tokens from `logits` on the GPU with `settings`.
fn gpu_sample(
    ctx: &GpuContext,
    logits: &[f32],
    precision: Precision,
    rows: usize,
    settings: &SampleSettings,
) -> Vec<u32> {
    let n = logits.len() / rows;
    let lt = upload(ctx, logits, precision);
    let out = ctx.zeros(&[rows], DType::U32).unwrap();
    let st = settings_tensor(ctx, &[*settings]);
    let shared = SettingsPerRow::Shared;
    let op = sample::sample(ctx, &lt, &st, shared, &out, rows, n, n).unwrap();
    run(ctx, &[&op]);
    ctx.read_u32_blocking(&out).unwrap()
}

/// The GPU draws the tokens its CPU reference draws, for every mix of cuts.
#[test]
fn sampling_matches_its_reference() {
    let Some(ctx) = gpu() else { return };
    for precision in precisions(ctx) {
        let (rows, n) = (8, 3000);
        let mut r = rng(11);
        let logits = as_stored(&random_vec(&mut r, rows * n, 4.0), precision);
        let mut same = 0;
        let mut total = 0;
        for (i, (t, k, p, m)) in [
            (0.7, 0, 1.0, 0.0),
            (1.0, 40, 0.95, 0.05),
            (1.5, 5, 1.0, 0.0),
            (1.0, 0, 0.5, 0.0),
            (0.3, 0, 1.0, 0.2),
        ]
        .into_iter()
        .enumerate()
        {
            for step in 0..6 {
                let settings = SampleSettings::new(t, k, p, m, 1234 + i as u64, step);
                let got = gpu_sample(ctx, &logits, precision, rows, &settings);
                for (row, &token) in got.iter().enumerate() {
                    let want = sample::reference_row(
                        &logits[row * n..(row + 1) * n],
                        row as u32,
                        &settings,
                    );
                    total += 1;
                    same += usize::from(token == want);
                }
            }
        }
        // log and exp round differently on each adapter: a near-tie may rarely go the other
        // way, nothing more.
        eprintln!("sample {precision:?}: {same} of {total} draws equal the reference");
        assert!(same * 100 >= total * 97, "{precision:?}: {same} of {total}");
    }
}

/// With settings per row (a batch of sequences), each row draws what it would draw alone,
/// and greedy rows take the argmax.
#[test]
fn sampling_per_row_settings() {
    let Some(ctx) = gpu() else { return };
    for precision in precisions(ctx) {
        let (rows, n) = (5, 2000);
        let mut r = rng(19);
        let logits = as_stored(&random_vec(&mut r, rows * n, 4.0), precision);
        let settings: Vec<SampleSettings> = (0..rows)
            .map(|i| match i {
                2 => SampleSettings::greedy(),
                _ => SampleSettings::new(0.8, 40, 0.95, 0.05, 100 + i as u64, i as u32 * 3),
            })
            .collect();
        let lt = upload(ctx, &logits, precision);
        let out = ctx.zeros(&[rows], DType::U32).unwrap();
        let st = settings_tensor(ctx, &settings);
        let op = sample::sample(ctx, &lt, &st, SettingsPerRow::Own, &out, rows, n, n).unwrap();
        run(ctx, &[&op]);
        let got = ctx.read_u32_blocking(&out).unwrap();
        let mut same = 0;
        for (row, s) in settings.iter().enumerate() {
            let values = &logits[row * n..(row + 1) * n];
            if s.is_greedy() {
                assert_eq!(
                    got[row],
                    argmax::argmax_row(values),
                    "{precision:?} greedy row"
                );
            }
            let alone = gpu_sample(ctx, values, precision, 1, s)[0];
            assert_eq!(
                got[row], alone,
                "{precision:?} row {row} differs from its draw alone"
            );
            same += usize::from(got[row] == sample::reference_row(values, 0, s));
        }
        assert!(
            same >= rows - 1,
            "{precision:?}: {same} of {rows} equal the reference"
        );
    }
}

/// Draws follow softmax(logits / T) within the cuts: many rows of the same logits are many
/// independent draws.
#[test]
fn sampling_follows_the_distribution() {
    let Some(ctx) = gpu() else { return };
    let rows = 4000;
    let one = [0.0f32, 2f32.ln(), 7f32.ln(), -40.0]; // 0.1, 0.2, 0.7 and next to nothing
    let logits: Vec<f32> = one.iter().copied().cycle().take(rows * one.len()).collect();
    let shares = |settings: SampleSettings| {
        let got = gpu_sample(ctx, &logits, Precision::F32, rows, &settings);
        let mut counts = [0usize; 4];
        got.iter().for_each(|&t| counts[t as usize] += 1);
        counts.map(|c| c as f64 / rows as f64)
    };
    let close = |got: [f64; 4], want: [f64; 4]| {
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 0.03, "{got:?} vs {want:?}");
        }
    };
    close(
        shares(SampleSettings::new(1.0, 0, 1.0, 0.0, 1, 0)),
        [0.1, 0.2, 0.7, 0.0],
    );
    // Temperature 0.5 squares the probabilities: 0.01 : 0.04 : 0.49.
    let sq = [0.01 / 0.54, 0.04 / 0.54, 0.49 / 0.54, 0.0];
    close(shares(SampleSettings::new(0.5, 0, 1.0, 0.0, 2, 0)), sq);
    // Each cut drops token 0: top-k 2; top-p 0.75 (0.7 alone falls short); min-p 0.2.
    let without_0 = [0.0, 0.2 / 0.9, 0.7 / 0.9, 0.0];
    close(
        shares(SampleSettings::new(1.0, 2, 1.0, 0.0, 3, 0)),
        without_0,
    );
    close(
        shares(SampleSettings::new(1.0, 0, 0.75, 0.0, 4, 0)),
        without_0,
    );
    close(
        shares(SampleSettings::new(1.0, 0, 1.0, 0.2, 5, 0)),
        without_0,
    );
    // top-p 0.5: only the top token.
    close(
        shares(SampleSettings::new(1.0, 0, 0.5, 0.0, 6, 0)),
        [0.0, 0.0, 1.0, 0.0],
    );
    // Same seed and step, same tokens; another step, other tokens.
    let draw = |step| {
        gpu_sample(
            ctx,
            &logits,
            Precision::F32,
            rows,
            &SampleSettings::new(1.0, 0, 1.0, 0.0, 9, step),
        )
    };
    assert_eq!(draw(0), draw(0));
    assert_ne!(draw(0), draw(1));
}

struct AttentionCase {
    shape: AttentionShape,
    places: Vec<Place>,
    softcap: Option<f32>,
}

/// Places of one sequence at cache row 0.
fn alone(positions: impl IntoIterator<Item = u32>) -> Vec<Place> {
    positions.into_iter().map(Place::alone).collect()
}

fn check_attention(
    ctx: &GpuContext,
    precision: Precision,
    case: &AttentionCase,
    n_splits: Option<usize>,
) {
    let s = &case.shape;
    let mut r = rng((s.context * 3 + s.n_tokens) as u64);
    let q = as_stored(
        &random_vec(&mut r, s.n_tokens * s.n_heads * s.head_dim, 1.0),
        precision,
    );
    let rows = case
        .places
        .iter()
        .map(|p| p.slot_start(s.ring) + s.ring)
        .max()
        .unwrap_or(0);
    let cache_len = rows * s.n_kv_heads * s.head_dim;
    let k = as_stored(&random_vec(&mut r, cache_len, 1.0), precision);
    let v = as_stored(&random_vec(&mut r, cache_len, 1.0), precision);
    let (qt, kt, vt) = (
        upload(ctx, &q, precision),
        upload(ctx, &k, precision),
        upload(ctx, &v, precision),
    );
    let pt = places_tensor(ctx, &case.places);
    let out = ctx
        .zeros(&[s.n_tokens * s.n_heads * s.head_dim], precision.into())
        .unwrap();
    let inputs = AttentionInputs {
        q: &qt,
        k_cache: &kt,
        v_cache: &vt,
        places: &pt,
        out: &out,
    };
    let scores = Scores {
        scale: 1.0 / (s.head_dim as f32).sqrt(),
        softcap: case.softcap,
    };
    match n_splits {
        None => run(
            ctx,
            &[&attention::prefill(ctx, &inputs, s, scores).unwrap()],
        ),
        Some(splits) => {
            let partial = ctx.zeros(&[s.partial_len(splits)], DType::F32).unwrap();
            let [a, b] = attention::decode(ctx, &inputs, &partial, s, scores, splits).unwrap();
            run(ctx, &[&a, &b]);
        }
    }
    let want = attention::reference(&q, &k, &v, &case.places, s, scores);
    let what = format!("attention {precision:?} {s:?} {scores:?} splits {n_splits:?}");
    assert_close(
        &what,
        &ctx.read_f32_blocking(&out).unwrap(),
        &want,
        1e-4,
        rel_tol(precision) * 2.0,
    );
}

#[test]
fn attention_prefill() {
    let Some(ctx) = gpu() else { return };
    let shape = |n_tokens, head_dim, context| AttentionShape {
        n_tokens,
        n_heads: 9,
        n_kv_heads: 3,
        head_dim,
        context,
        window: None,
        ring: context,
    };
    for precision in precisions(ctx) {
        let cases = [
            // A fresh prompt: token t at position t.
            AttentionCase {
                shape: shape(1, 64, 1),
                places: alone([0]),
                softcap: None,
            },
            AttentionCase {
                shape: shape(70, 64, 70),
                places: alone(0..70),
                softcap: None,
            },
            // A prompt continuing a cache of 100 tokens.
            AttentionCase {
                shape: shape(37, 64, 137),
                places: alone(100..137),
                softcap: None,
            },
            AttentionCase {
                shape: shape(3, 256, 10),
                places: alone([7, 8, 9]),
                softcap: None,
            },
            AttentionCase {
                shape: shape(5, 80, 2048),
                places: alone([0, 511, 1024, 2000, 2047]),
                softcap: None,
            },
        ];
        for case in &cases {
            check_attention(ctx, precision, case, None);
        }
    }
}

#[test]
fn attention_decode_split() {
    let Some(ctx) = gpu() else { return };
    for precision in precisions(ctx) {
        for (pos, context, splits) in [
            (0, 1, 1),
            (1, 2, 4),
            (300, 512, 4),
            (2047, 2048, 8),
            (1000, 2048, 16),
        ] {
            for head_dim in [64, 128] {
                let shape = AttentionShape {
                    n_tokens: 1,
                    n_heads: 9,
                    n_kv_heads: 3,
                    head_dim,
                    context,
                    window: None,
                    ring: context,
                };
                check_attention(
                    ctx,
                    precision,
                    &AttentionCase {
                        shape,
                        places: alone([pos]),
                        softcap: None,
                    },
                    Some(splits),
                );
            }
        }
        // Many queries through the split kernel too (it is not decode-only).
        let shape = AttentionShape {
            n_tokens: 4,
            n_heads: 8,
            n_kv_heads: 8,
            head_dim: 64,
            context: 300,
            window: None,
            ring: 300,
        };
        check_attention(
            ctx,
            precision,
            &AttentionCase {
                shape,
                places: alone([3, 100, 250, 299]),
                softcap: None,
            },
            Some(3),
        );
        // A batched decode step: one query from each of four sequences sharing the cache,
        // 300 rows each.
        let places = [(3, 0), (100, 1), (250, 3), (299, 2)]
            .map(|(position, slot)| Place { position, slot })
            .to_vec();
        let case = AttentionCase {
            shape,
            places,
            softcap: None,
        };
        check_attention(ctx, precision, &case, Some(3));
    }
}

/// Sliding-window layers (Gemma 3): a query sees its last `window` keys, kept in a ring of
/// `window` + a prefill pass rows per sequence, through both kernels; and scores capped
/// by tanh (Gemma 2).
#[test]
fn attention_sliding_window_and_softcap() {
    let Some(ctx) = gpu() else { return };
    for precision in precisions(ctx) {
        let shape = |n_tokens, window, ring| AttentionShape {
            n_tokens,
            n_heads: 4,
            n_kv_heads: 1,
            head_dim: 256,
            context: 2048,
            window,
            ring,
        };
        // A prompt pass of 24 tokens past the window (16 keys; ring 16 + 24), and the start
        // of a sequence shorter than its window.
        let prefill = [
            (shape(24, Some(16), 40), alone(70..94)),
            (shape(5, Some(16), 40), alone(0..5)),
        ];
        for (shape, places) in prefill {
            let case = AttentionCase {
                shape,
                places,
                softcap: None,
            };
            check_attention(ctx, precision, &case, None);
        }
        // Decode steps of two sequences (slots 1 and 0) at Gemma 3's window and ring.
        let places = [(1500, 1), (600, 0)]
            .map(|(position, slot)| Place { position, slot })
            .to_vec();
        let case = AttentionCase {
            shape: shape(2, Some(512), 640),
            places,
            softcap: None,
        };
        check_attention(ctx, precision, &case, Some(8));
        // Gemma 2's attention soft-cap, global attention, both kernels.
        for splits in [None, Some(4)] {
            let case = AttentionCase {
                shape: shape(3, None, 2048),
                places: alone([5, 300, 1999]),
                softcap: Some(2.0),
            };
            check_attention(ctx, precision, &case, splits);
        }
    }
}

/// Bad shapes and impossible requests come back as errors, before anything reaches wgpu.
#[test]
fn bad_shapes_are_errors_not_panics() {
    use glim::Error;
    let Some(ctx) = gpu() else { return };
    let f32s = |n: usize| ctx.zeros(&[n], DType::F32).unwrap();
    let packed = PackedWeight::quantize(WeightFormat::Q4F16, &vec![0.5; 64 * 64], 64, 64).unwrap();
    let weight = GpuWeight::upload(ctx, &packed).unwrap();

    let plain = Fusion::NONE;
    let short_x = matmul::fused(ctx, &f32s(63), &weight, &f32s(64), 1, &plain, Shape::Gemv);
    assert!(
        matches!(short_x, Err(Error::Shape(_))),
        "{:?}",
        short_x.err()
    );
    let short_y = matmul::fused(ctx, &f32s(256), &weight, &f32s(192), 4, &plain, Shape::Gemm);
    assert!(matches!(short_y, Err(Error::Shape(_))));
    let ids = f32s(4); // ids must be u32
    assert!(embedding::embed(ctx, &ids, &weight, &f32s(4 * 64), 4, 1.0).is_err());
    assert!(argmax::argmax(ctx, &f32s(10), &f32s(1), 1, 10, 10).is_err());
    let ids = ctx.zeros(&[1], DType::U32).unwrap();
    assert!(argmax::argmax(ctx, &f32s(10), &ids, 1, 11, 10).is_err());
    let u32_norm = ctx.zeros(&[64], DType::U32).unwrap();
    let bad_norm = Fusion {
        norm: Some((&u32_norm, 1e-5)),
        epilogue: Epilogue::Store,
    };
    let bad_norm = matmul::fused(
        ctx,
        &f32s(64),
        &weight,
        &f32s(64),
        1,
        &bad_norm,
        Shape::Gemv,
    );
    assert!(matches!(bad_norm, Err(Error::Shape(_))));
    let odd = PackedWeight::quantize(WeightFormat::Q4F16, &vec![0.5; 3 * 64], 3, 64).unwrap();
    let odd = GpuWeight::upload(ctx, &odd).unwrap();
    let swiglu = Fusion {
        norm: None,
        epilogue: Epilogue::SwiGlu,
    };
    let odd_pairs = matmul::fused(ctx, &f32s(64), &odd, &f32s(2), 1, &swiglu, Shape::Gemv);
    assert!(matches!(odd_pairs, Err(Error::Shape(_))));
    let u32_y = ctx.zeros(&[64], DType::U32).unwrap();
    let not_float = matmul::fused(ctx, &f32s(64), &weight, &u32_y, 1, &plain, Shape::Gemv);
    assert!(not_float.is_err(), "a u32 output");
    // The post-norm add writes the f32 residual stream only.
    assert!(norm::norm_add(ctx, &f32s(64), &f32s(64), 1e-6, &u32_y, 1).is_err());
    assert!(norm::norm_add(ctx, &f32s(64), &f32s(64), 1e-6, &f32s(32), 1).is_err());

    let places = ctx.tensor_from_u32(&[0, 0], &[1, 2]).unwrap();
    let t = f32s(1 << 16);
    let inputs = AttentionInputs {
        q: &t,
        k_cache: &t,
        v_cache: &t,
        places: &places,
        out: &t,
    };
    let uneven = AttentionShape {
        n_tokens: 1,
        n_heads: 10,
        n_kv_heads: 3,
        head_dim: 64,
        context: 4,
        window: None,
        ring: 4,
    };
    assert!(matches!(
        attention::prefill(ctx, &inputs, &uneven, 1.0),
        Err(Error::Shape(_))
    ));
    for (window, ring) in [(Some(0), 4), (None, 0), (None, 5)] {
        let bad_ring = AttentionShape {
            n_heads: 9,
            window,
            ring,
            ..uneven
        };
        assert!(
            matches!(
                attention::prefill(ctx, &inputs, &bad_ring, 1.0),
                Err(Error::Shape(_))
            ),
            "window {window:?} ring {ring}"
        );
    }
    let too_wide = AttentionShape {
        n_tokens: 1,
        n_heads: 4,
        n_kv_heads: 4,
        head_dim: 512,
        context: 4,
        window: None,
        ring: 4,
    };
    assert!(attention::prefill(ctx, &inputs, &too_wide, 1.0).is_err());
    let long_context = AttentionShape {
        n_tokens: 1,
        n_heads: 4,
        n_kv_heads: 4,
        head_dim: 64,
        context: 1 << 20,
        window: None,
        ring: 1 << 20,
    };
    assert!(attention::decode(ctx, &inputs, &t, &long_context, 1.0, 4).is_err());

    let huge = ctx.zeros(&[1 << 40], DType::F32);
    assert!(
        matches!(huge, Err(Error::OutOfMemory(_))),
        "{:?}",
        huge.err()
    );
    let kernel = glim::kernels::argmax::source(glim::gpu::Precision::F32);
    assert!(ctx.dispatch(&kernel, &[&t.buffer], [1, 1, 1]).is_err());
}

#[test]
fn a_row_wider_than_any_binding_is_an_error() {
    let Some(mut ctx) = open_gpu() else { return };
    ctx.limit_binding_size(64);
    let packed = PackedWeight::quantize(WeightFormat::F16, &[0.0; 64], 1, 64).unwrap();
    assert!(matches!(
        GpuWeight::upload(&ctx, &packed),
        Err(glim::Error::TooLarge(_))
    ));
}

/// Adapters without shader-f16 get a clear error for f16 activations, not a crash.
#[test]
fn f16_without_shader_f16_is_an_error() {
    let Some(ctx) = gpu() else { return };
    if ctx.supports_f16() {
        assert!(ctx.check_precision(Precision::F16).is_ok());
        return;
    }
    let (x, y) = (
        ctx.zeros(&[64], DType::F16).unwrap(),
        ctx.zeros(&[64], DType::F16).unwrap(),
    );
    let packed = PackedWeight::quantize(WeightFormat::Q4F16, &[0.5; 64 * 64], 64, 64).unwrap();
    let weight = GpuWeight::upload(ctx, &packed).unwrap();
    assert!(matches!(
        matmul::matmul(ctx, &x, &weight, &y, 1),
        Err(glim::Error::Unsupported(_))
    ));
}
