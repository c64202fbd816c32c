//! Model files: reading weights, hyperparameters and tokenizer data from the formats
//! models ship in.

pub mod arch;
pub mod config;
pub mod graph;
#[cfg(not(target_arch = "wasm32"))]
pub mod hf;
#[cfg(not(target_arch = "wasm32"))]
pub mod loader;
mod measure;
pub mod mlc;
#[cfg(not(target_arch = "wasm32"))]
pub mod mlc_writer;
pub mod rearrange;
pub mod source;
mod steps;
pub mod streamed;
pub mod synthetic;
mod upload;
pub mod weights;
