//! glim: run large language models on any GPU through WebGPU.
//!
//! The crate is layered the way data flows: [`gpu`] owns the device, buffers and pipelines;
//! [`quant`] defines the packed weight formats and their CPU (de)quantizers; [`kernels`] holds
//! one module per WGSL kernel family, each with the host-side launch code and a plain-Rust CPU
//! reference that the tests hold the GPU to; [`formats`] turns model files into named tensors
//! and metadata; [`model`] maps them onto the Llama
//! graph; [`text`] turns text into tokens and back and renders chat templates; [`generate`]
//! samples, streams and stops; [`api`] answers OpenAI-shaped requests with all of it.

pub mod api;
pub mod error;
pub mod formats;
pub mod generate;
pub mod gpu;
pub mod grammar;
pub mod kernels;
pub mod model;
pub mod quant;
pub mod text;

pub use error::{Error, Result};

/// The default model, for unit tests that read a real file: `GLIM_TEST_GGUF`, else where
/// `scripts/fetch-model.sh` puts it. Missing, it fails `test` under CI (`CI` set) and is
/// `None`, with SKIPPED said out loud, elsewhere.
#[cfg(all(test, not(target_arch = "wasm32")))]
pub(crate) fn test_model_file(test: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("GLIM_TEST_GGUF")
        .map(std::path::PathBuf::from)
        .or_else(model::loader::default_model_path);
    if let Some(path) = path.as_ref().filter(|p| p.exists()) {
        return Some(path.clone());
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: CI needs the test model at {path:?} (run scripts/fetch-model.sh)"
    );
    eprintln!("SKIPPED {test}: no model at {path:?} (run scripts/fetch-model.sh)");
    None
}
