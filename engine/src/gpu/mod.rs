//! The GPU runtime: adapter and device setup ([`context`]), tensors ([`tensor`]), shader
//! assembly and the pipeline cache ([`pipeline`]), and command recording ([`recorder`]).

pub mod context;
mod oneshot;
pub mod pipeline;
pub mod recorder;
pub mod tensor;

#[cfg(not(target_arch = "wasm32"))]
pub use context::list_adapters;
pub use context::{match_adapter, AdapterChoice, AdapterSummary, GpuContext, KernelSet, Precision};
pub use pipeline::{assemble, Binding, KernelSource};
pub use recorder::{grid, Dispatch, KernelTimer, Recorder};
pub use tensor::{DType, Tensor};
