//! Model files: reading weights, hyperparameters and tokenizer data from the formats
//! models ship in.

pub mod arch;
pub mod config;
pub mod graph;
#[cfg(not(target_arch = "wasm32"))]
pub mod hf;
#[cfg(not(target_arch = "wasm32"))]
pub mod loader;
pub mod mlc;
#[cfg(not(target_arch = "wasm32"))]
pub mod mlc_writer;
pub mod rearrange;
pub mod source;
pub mod streamed;
pub mod synthetic;
pub mod weights;
