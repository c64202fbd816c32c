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
