//! File formats: bytes in, named tensors and metadata out. No GPU code and no model
//! knowledge here; `model` maps these tensors onto the graph and `text` reads the
//! tokenizer data.
//!
//! - [`gguf`]: llama.cpp's single-file format, with [`ggml`] decoding its tensor types;
//!   [`gguf_writer`] writes it, and [`gguf_chunks`] reads it in pieces over a network.
//! - [`safetensors`]: Hugging Face checkpoints (native only: memory-mapped files).
//! - [`files`]: opening model files on disk (regular files only, whole reads capped).
//! - [`mlc`]: MLC-LLM's packed model folders, glim's own packed format (read and write).

/// The most a JSON file of a model (config, index, tokenizer, chat config) may hold. The
/// largest real `tokenizer.json` files (262 144-token vocabularies) are about 35 MB.
pub const MAX_JSON_BYTES: u64 = 256 << 20;

#[cfg(not(target_arch = "wasm32"))]
pub mod files;
pub mod ggml;
pub mod gguf;
pub mod gguf_chunks;
pub mod gguf_writer;
pub mod mlc;
#[cfg(not(target_arch = "wasm32"))]
pub mod safetensors;
