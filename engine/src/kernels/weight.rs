//! A weight matrix on the GPU, split by rows into chunks that each fit one storage binding.

use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::quant::{PackedWeight, WeightFormat};

/// Rows `[row_start, row_start + rows)` of a weight matrix.
#[derive(Debug)]
pub struct WeightChunk {
    pub row_start: usize,
    pub rows: usize,
    pub codes: wgpu::Buffer,
    /// Scales of these rows, two f16 per word (a 4-byte placeholder for F16 weights).
    pub scales: wgpu::Buffer,
}

/// A `[rows, cols]` weight matrix in a [`WeightFormat`], ready for the matmul and embedding
/// kernels.
#[derive(Debug)]
pub struct GpuWeight {
    pub format: WeightFormat,
    pub rows: usize,
    pub cols: usize,
    pub chunks: Vec<WeightChunk>,
}

impl GpuWeight {
    /// Bytes of GPU memory the matrix takes (codes and scales of every chunk).
    pub fn buffer_bytes(&self) -> u64 {
        self.chunks
            .iter()
            .map(|c| c.codes.size() + c.scales.size())
            .sum()
    }

    /// How many `cols`-wide rows in `format` fit one binding; an error when not even one
    /// does.
    pub fn check_row_fits(ctx: &GpuContext, format: WeightFormat, cols: usize) -> Result<usize> {
        let row_bytes =
            (format.words_per_row(cols) * 4).max(format.scales_per_row(cols) * 2) as u64;
        let max_rows = (ctx.max_binding_size() / row_bytes.max(1)) as usize;
        if max_rows == 0 {
            return Err(Error::TooLarge(format!(
                "one {cols}-wide weight row takes {row_bytes} bytes, more than the adapter's largest binding ({} bytes)",
                ctx.max_binding_size()
            )));
        }
        Ok(max_rows)
    }

    /// Uploads `weight`, splitting it so no binding exceeds the adapter's
    /// `max_storage_buffer_binding_size` (128 MiB on many phones and on lavapipe).
    pub fn upload(ctx: &GpuContext, weight: &PackedWeight) -> Result<Self> {
        let format = weight.format;
        let words_per_row = format.words_per_row(weight.cols);
        let scales_per_row = format.scales_per_row(weight.cols);
        let max_rows = Self::check_row_fits(ctx, format, weight.cols)?;
        // An even number, so no chunk splits an interleaved gate/up pair.
        let max_rows = if max_rows > 1 { max_rows / 2 * 2 } else { 1 };
        let mut chunks = Vec::new();
        let mut row_start = 0;
        while row_start < weight.rows {
            let rows = max_rows.min(weight.rows - row_start);
            let codes =
                &weight.codes[row_start * words_per_row..(row_start + rows) * words_per_row];
            let codes = ctx.upload_bytes(bytemuck::cast_slice(codes), "weight codes")?;
            let scales = if scales_per_row == 0 {
                ctx.upload_bytes(&[0; 4], "no scales")?
            } else {
                let part = PackedWeight {
                    scales: weight.scales
                        [row_start * scales_per_row..(row_start + rows) * scales_per_row]
                        .to_vec(),
                    codes: Vec::new(),
                    ..*weight
                };
                ctx.upload_bytes(bytemuck::cast_slice(&part.scale_words()), "weight scales")?
            };
            chunks.push(WeightChunk {
                row_start,
                rows,
                codes,
                scales,
            });
            row_start += rows;
        }
        Ok(Self {
            format,
            rows: weight.rows,
            cols: weight.cols,
            chunks,
        })
    }
}
