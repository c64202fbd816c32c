//! One error type for the whole engine: every failure a user can cause (bad shapes, missing
//! features, a GPU that runs out of memory) comes back as a value, never a panic.

/// What went wrong, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No GPU adapter matched, or none exists at all.
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),
    /// The adapter refused to open a device with what glim asked for.
    #[error("could not open the GPU device: {0}")]
    Device(String),
    /// Tensor shapes or sizes that do not fit the operation.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// Something glim or the adapter cannot do: a missing feature or limit, an unknown
    /// architecture, tensor type or format.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The model does not fit this adapter: a limit (binding or buffer size) it needs is
    /// larger than the adapter's.
    #[error("the model is too large for this GPU: {0}")]
    TooLarge(String),
    /// The GPU device was lost (driver reset, removed, or destroyed); a new one must be
    /// opened.
    #[error("the GPU device was lost: {0}")]
    DeviceLost(String),
    /// The GPU could not allocate a buffer.
    #[error("GPU out of memory: {0}")]
    OutOfMemory(String),
    /// A shader failed to compile or a pipeline failed validation (a bug in glim).
    #[error("shader `{name}` failed to build: {message}")]
    Shader { name: String, message: String },
    /// Any other error reported by the GPU driver or wgpu, including a lost device.
    #[error("GPU error: {0}")]
    Gpu(String),
    /// Bad input data: a malformed file or value.
    #[error("invalid input: {0}")]
    Invalid(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `Err(Error::Shape(..))` unless `cond` holds; keeps shape checks to one line each.
pub(crate) fn ensure_shape(cond: bool, what: impl FnOnce() -> String) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(Error::Shape(what()))
    }
}
