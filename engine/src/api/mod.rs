//! OpenAI's chat and text completion protocol over a loaded model, with no transport: the
//! browser package calls it through wasm-bindgen, `glim serve` through HTTP.

pub mod engine;
pub mod request;
pub mod tools;

pub use engine::{ChatEngine, Defaults, Prepared, Protocol, Reply};
pub use request::{Input, Request, Sampling, UnknownFields};
pub use tools::{CallFormat, ToolChoice, Tools};
