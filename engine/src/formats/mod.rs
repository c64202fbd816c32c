//! File formats: bytes in, named tensors and metadata out. No GPU code and no model
//! knowledge here; `model` maps these tensors onto the graph and `text` reads the
//! tokenizer data.
//!
//! - [`gguf`]: llama.cpp's single-file format, with [`ggml`] decoding its tensor types;
//!   [`gguf_writer`] writes it, and [`gguf_chunks`] reads it in pieces over a network.
//! - [`safetensors`]: Hugging Face checkpoints (native only: memory-mapped files).
//! - [`mlc`]: MLC-LLM's packed model folders, glim's own packed format (read and write).

pub mod ggml;
pub mod gguf;
pub mod gguf_chunks;
pub mod gguf_writer;
pub mod mlc;
#[cfg(not(target_arch = "wasm32"))]
pub mod safetensors;
