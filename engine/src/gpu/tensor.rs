//! GPU buffers that know their shape and element type.

use half::f16;

use super::context::{GpuContext, Precision};
use crate::error::{Error, Result};

/// Element type of a tensor's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    /// Raw 32-bit words: packed quantized codes, packed f16 pairs, token ids.
    U32,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::F16 => 2,
        }
    }
}

impl From<Precision> for DType {
    fn from(p: Precision) -> Self {
        match p {
            Precision::F16 => DType::F16,
            Precision::F32 => DType::F32,
        }
    }
}

/// A storage buffer with a row-major shape.
#[derive(Debug)]
pub struct Tensor {
    pub buffer: wgpu::Buffer,
    pub shape: Vec<usize>,
    pub dtype: DType,
}

impl Tensor {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes the elements occupy (the buffer itself is rounded up to 4 bytes).
    pub fn byte_len(&self) -> usize {
        self.len() * self.dtype.size()
    }

    /// The activation precision this tensor implies, if it holds floats.
    pub fn precision(&self) -> Result<Precision> {
        match self.dtype {
            DType::F16 => Ok(Precision::F16),
            DType::F32 => Ok(Precision::F32),
            DType::U32 => Err(Error::Shape("expected a float tensor, got u32".into())),
        }
    }
}

/// Storage buffers are bound in 4-byte words and copied in 4-byte units.
pub(crate) fn padded_size(bytes: usize) -> u64 {
    (bytes.max(4) as u64).div_ceil(4) * 4
}

const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

impl GpuContext {
    fn check_alloc(&self, bytes: u64, what: &str) -> Result<()> {
        if bytes > self.limits.max_buffer_size {
            return Err(Error::OutOfMemory(format!(
                "{what} needs a {bytes}-byte buffer; {} allows at most {}",
                self.summary.name, self.limits.max_buffer_size
            )));
        }
        Ok(())
    }

    /// A zero-filled tensor.
    pub fn zeros(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let bytes = padded_size(shape.iter().product::<usize>() * dtype.size());
        self.check_alloc(bytes, "tensor")?;
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: bytes,
            usage: STORAGE,
            mapped_at_creation: false,
        });
        Ok(Tensor {
            buffer,
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// A storage buffer holding `bytes` (padded to 4 bytes).
    pub fn upload_bytes(&self, bytes: &[u8], label: &str) -> Result<wgpu::Buffer> {
        let size = padded_size(bytes.len());
        self.check_alloc(size, label)?;
        // A plain buffer plus a queued write rather than a buffer mapped at creation: on a
        // lost device wgpu's mapped-at-creation path panics, this one reports an error.
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: STORAGE,
            mapped_at_creation: false,
        });
        let whole = bytes.len() / 4 * 4;
        if whole > 0 {
            self.queue.write_buffer(&buffer, 0, &bytes[..whole]);
        }
        if whole < bytes.len() {
            let mut tail = [0u8; 4];
            tail[..bytes.len() - whole].copy_from_slice(&bytes[whole..]);
            self.queue.write_buffer(&buffer, whole as u64, &tail);
        }
        Ok(buffer)
    }

    /// A tensor holding `data`, converted to `dtype` (`U32` takes the values as integers).
    pub fn tensor_from_f32(&self, data: &[f32], shape: &[usize], dtype: DType) -> Result<Tensor> {
        if data.len() != shape.iter().product::<usize>() {
            return Err(Error::Shape(format!(
                "{} values do not fill shape {shape:?}",
                data.len()
            )));
        }
        let bytes: Vec<u8> = match dtype {
            DType::F32 => bytemuck::cast_slice(data).to_vec(),
            DType::F16 => {
                let halves: Vec<f16> = data.iter().map(|&x| f16::from_f32(x)).collect();
                bytemuck::cast_slice(&halves).to_vec()
            }
            DType::U32 => {
                let words: Vec<u32> = data.iter().map(|&x| x as u32).collect();
                bytemuck::cast_slice(&words).to_vec()
            }
        };
        let buffer = self.upload_bytes(&bytes, "tensor")?;
        Ok(Tensor {
            buffer,
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// A `U32` tensor holding `data`.
    pub fn tensor_from_u32(&self, data: &[u32], shape: &[usize]) -> Result<Tensor> {
        if data.len() != shape.iter().product::<usize>() {
            return Err(Error::Shape(format!(
                "{} values do not fill shape {shape:?}",
                data.len()
            )));
        }
        let buffer = self.upload_bytes(bytemuck::cast_slice(data), "tensor")?;
        Ok(Tensor {
            buffer,
            shape: shape.to_vec(),
            dtype: DType::U32,
        })
    }

    /// A small uniform buffer holding one parameter block.
    pub fn uniform<T: bytemuck::Pod>(&self, value: &T) -> wgpu::Buffer {
        let bytes = bytemuck::bytes_of(value);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size: padded_size(bytes.len()),
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.queue.write_buffer(&buffer, 0, bytes);
        buffer
    }

    /// Copies `size` bytes at `offset` of `buffer` back to the host.
    pub async fn read_bytes(
        &self,
        buffer: &wgpu::Buffer,
        offset: u64,
        size: u64,
    ) -> Result<Vec<u8>> {
        let size = size.div_ceil(4) * 4;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(buffer, offset, &staging, 0, size);
        self.queue.submit([encoder.finish()]);
        self.map_and_copy(&staging).await
    }

    /// Maps a MAP_READ buffer, copies it out and unmaps it.
    pub(crate) async fn map_and_copy(&self, staging: &wgpu::Buffer) -> Result<Vec<u8>> {
        let (sender, receiver) = super::oneshot::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |result| sender.send(result));
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(e.to_string()))?;
        let mapped = receiver.await;
        self.take_error()?;
        mapped
            .ok_or_else(|| Error::Gpu("buffer mapping was dropped".into()))?
            .map_err(|e| Error::Gpu(format!("could not read back a buffer: {e}")))?;
        let bytes = staging
            .get_mapped_range(..)
            .map_err(|e| Error::Gpu(e.to_string()))?
            .to_vec();
        staging.unmap();
        Ok(bytes)
    }

    /// Reads a float tensor back as f32 values.
    pub async fn read_f32(&self, tensor: &Tensor) -> Result<Vec<f32>> {
        let bytes = self
            .read_bytes(&tensor.buffer, 0, tensor.byte_len() as u64)
            .await?;
        Ok(floats_from_bytes(&bytes, tensor.dtype, tensor.len()))
    }

    /// Reads a u32 tensor back.
    pub async fn read_u32(&self, tensor: &Tensor) -> Result<Vec<u32>> {
        let bytes = self
            .read_bytes(&tensor.buffer, 0, (tensor.len() * 4) as u64)
            .await?;
        Ok(bytemuck::cast_slice::<u8, u32>(&bytes)[..tensor.len()].to_vec())
    }

    /// Blocking [`GpuContext::read_f32`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_f32_blocking(&self, tensor: &Tensor) -> Result<Vec<f32>> {
        pollster::block_on(self.read_f32(tensor))
    }

    /// Blocking [`GpuContext::read_u32`] (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_u32_blocking(&self, tensor: &Tensor) -> Result<Vec<u32>> {
        pollster::block_on(self.read_u32(tensor))
    }
}

/// The first `n` elements of `bytes`, stored as `dtype`, as f32 values.
pub(crate) fn floats_from_bytes(bytes: &[u8], dtype: DType, n: usize) -> Vec<f32> {
    match dtype {
        DType::F32 => bytemuck::cast_slice::<u8, f32>(bytes)[..n].to_vec(),
        DType::F16 => bytemuck::cast_slice::<u8, f16>(bytes)[..n]
            .iter()
            .map(|h| h.to_f32())
            .collect(),
        DType::U32 => bytemuck::cast_slice::<u8, u32>(bytes)[..n]
            .iter()
            .map(|&w| w as f32)
            .collect(),
    }
}
