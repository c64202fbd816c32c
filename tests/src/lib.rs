//! Helpers shared by glim's workspace-level tests.

use std::sync::OnceLock;

use glim::gpu::{GpuContext, Precision};
use rand::{rngs::StdRng, Rng, SeedableRng};

/// Opens the adapter the environment selects. Under CI (`CI` set) a missing adapter fails
/// the test; elsewhere the test prints why it is skipped and returns `None`.
pub fn open_gpu() -> Option<GpuContext> {
    match GpuContext::from_env_blocking() {
        Ok(ctx) => {
            eprintln!(
                "adapter: {} ({}, {}, driver {}), shader-f16: {}",
                ctx.summary.name,
                ctx.summary.backend,
                ctx.summary.device_type,
                ctx.summary.driver,
                ctx.summary.shader_f16
            );
            Some(ctx)
        }
        Err(e) if std::env::var_os("CI").is_some() => {
            panic!("CI needs a GPU adapter (lavapipe will do): {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED: no GPU adapter: {e}");
            None
        }
    }
}

/// One shared context per test binary.
pub fn gpu() -> Option<&'static GpuContext> {
    static CTX: OnceLock<Option<GpuContext>> = OnceLock::new();
    CTX.get_or_init(open_gpu).as_ref()
}

/// A second shared context that runs the kernels built for GPUs even on a CPU adapter
/// (see `GpuContext::use_kernels`): on lavapipe it launches `gemv` as GPUs do, with
/// 32-thread teams that reduce over workgroup memory, where [`gpu`]'s 8-thread teams
/// reduce by subgroup shuffles.
pub fn gpu_with_gpu_kernels() -> Option<&'static GpuContext> {
    static CTX: OnceLock<Option<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| {
        let mut ctx = open_gpu()?;
        ctx.use_kernels(glim::gpu::KernelSet::Gpu);
        Some(ctx)
    })
    .as_ref()
}

/// The activation precisions this adapter runs: f32 always, f16 where it has shader-f16.
pub fn precisions(ctx: &GpuContext) -> Vec<Precision> {
    let mut all = vec![Precision::F32];
    if ctx.supports_f16() {
        all.insert(0, Precision::F16);
    } else {
        eprintln!("adapter lacks shader-f16: testing the f32 variant only");
    }
    all
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// `n` values uniform in `[-scale, scale)`.
pub fn random_vec(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// Rounds values to what a tensor of `precision` stores, so CPU references see the GPU's
/// inputs exactly.
pub fn as_stored(values: &[f32], precision: Precision) -> Vec<f32> {
    match precision {
        Precision::F16 => values
            .iter()
            .map(|&v| half::f16::from_f32(v).to_f32())
            .collect(),
        Precision::F32 => values.to_vec(),
    }
}

/// Root mean square of `values`.
pub fn rms(values: &[f32]) -> f32 {
    (values.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / values.len().max(1) as f64).sqrt()
        as f32
}

/// Asserts `|got - want| <= abs + rel * |want|` element-wise, reporting the worst element.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], abs: f32, rel: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut worst = (0usize, f32::NEG_INFINITY);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(g.is_finite(), "{what}: element {i} is {g}");
        let excess = (g - w).abs() - (abs + rel * w.abs());
        if excess > worst.1 {
            worst = (i, excess);
        }
    }
    let (i, excess) = worst;
    assert!(
        excess <= 0.0,
        "{what}: element {i} is {} but should be {} (tolerance {abs} + {rel} * |want|)",
        got[i],
        want[i]
    );
    let max_err = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f32::max);
    eprintln!(
        "{what}: ok, max |error| {max_err:.3e} over {} values",
        got.len()
    );
}

/// Tolerance relative to an output element for a precision: half an f16 ulp and some
/// accumulated rounding for f16 stores, f32 rounding otherwise.
pub fn rel_tol(precision: Precision) -> f32 {
    match precision {
        Precision::F16 => 2e-3,
        Precision::F32 => 1e-5,
    }
}

/// The default model (SmolLM2-135M-Instruct Q4_1 GGUF) for whole-model tests:
/// `GLIM_TEST_GGUF`, else `scripts/fetch-model.sh`'s destination. Under CI a missing model
/// fails the test; elsewhere the test prints why it skips and gets `None`.
pub fn test_model() -> Option<std::path::PathBuf> {
    model_file(
        "GLIM_TEST_GGUF",
        glim::model::loader::default_model_path()?,
        "scripts/fetch-model.sh",
    )
}

/// Gemma 3 270M as a Q4_K_M GGUF, whose tensors test the k-quant formats on real weights:
/// `GLIM_TEST_GEMMA`, else `scripts/fetch-gemma.sh`'s destination; missing, as for
/// [`test_model`].
pub fn gemma_q4_k_m() -> Option<std::path::PathBuf> {
    let home = glim::model::loader::glim_home()?;
    model_file(
        "GLIM_TEST_GEMMA",
        home.join("models").join("gemma-3-270m-q4_k_m.gguf"),
        "scripts/fetch-gemma.sh",
    )
}

/// The model file `env` names, else `default`: `None` (and SKIPPED said out loud) when it
/// is missing, a failure under CI.
fn model_file(env: &str, default: std::path::PathBuf, fetch: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os(env).map_or(default, std::path::PathBuf::from);
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI needs the test model at {}: run {fetch}",
        path.display()
    );
    eprintln!("SKIPPED: no model at {} (run {fetch})", path.display());
    None
}

/// A model file removed when this is dropped.
pub struct TempModel(pub std::path::PathBuf);

impl Drop for TempModel {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The default model's weights rewritten in `family`'s layout (what `glim synth --from
/// MODEL --arch ARCH` writes, seed 1) in a temporary file; `None` as for [`test_model`].
pub fn derived_model(family: glim::model::arch::Family) -> Option<TempModel> {
    let src = test_model()?;
    let file = glim::formats::gguf::GgufFile::open(&src).unwrap();
    let path = std::env::temp_dir().join(format!(
        "glim-test-{}-{}.gguf",
        family.gguf_name(),
        std::process::id()
    ));
    let model = TempModel(path);
    let out = std::io::BufWriter::new(std::fs::File::create(&model.0).unwrap());
    glim::model::rearrange::write_as(&file, family, 1, out).unwrap();
    Some(model)
}

/// The sha256 of a file, in hex.
pub fn sha256_hex(path: &std::path::Path) -> String {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).unwrap();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
