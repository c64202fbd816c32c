//! A weight matrix on the GPU: row ranges (chunks), each in one weight format and small
//! enough for one storage binding. A fused matrix whose parts a file stores in different
//! formats (Q and K in `q4_K`, V in `q6_K`) keeps each part's format in its own chunks.

use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::quant::{PackedWeight, WeightFormat};

/// Rows `[row_start, row_start + rows)` of a weight matrix, in one format.
#[derive(Debug)]
pub struct WeightChunk {
    pub row_start: usize,
    pub rows: usize,
    pub format: WeightFormat,
    pub codes: wgpu::Buffer,
    /// Scale units of these rows, two per word (a 4-byte placeholder for float formats).
    pub scales: wgpu::Buffer,
}

/// A `[rows, cols]` weight matrix, ready for the matmul and embedding kernels.
#[derive(Debug)]
pub struct GpuWeight {
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
            (format.code_words_per_row(cols) * 4).max(format.scale_halves_per_row(cols) * 2) as u64;
        let max_rows = (ctx.max_binding_size() / row_bytes.max(1)) as usize;
        if max_rows == 0 {
            return Err(Error::TooLarge(format!(
                "one {cols}-wide {format} weight row takes {row_bytes} bytes, more than the adapter's largest binding ({} bytes)",
                ctx.max_binding_size()
            )));
        }
        Ok(max_rows)
    }

    /// Uploads `weight`, splitting it so no binding exceeds the adapter's
    /// `max_storage_buffer_binding_size` (128 MiB on many phones and on lavapipe).
    pub fn upload(ctx: &GpuContext, weight: &PackedWeight) -> Result<Self> {
        Self::upload_parts(ctx, std::slice::from_ref(weight))
    }

    /// Uploads `parts` stacked by rows, each in its own format.
    pub fn upload_parts(ctx: &GpuContext, parts: &[PackedWeight]) -> Result<Self> {
        let cols = parts.first().map_or(0, |p| p.cols);
        if let Some(odd) = parts.iter().find(|p| p.cols != cols) {
            return Err(Error::Shape(format!(
                "cannot stack a {}-wide matrix under {cols}-wide ones",
                odd.cols
            )));
        }
        let mut chunks = Vec::new();
        let mut row_start = 0;
        for part in parts {
            let (words, halves) = (
                part.format.code_words_per_row(cols),
                part.format.scale_halves_per_row(cols),
            );
            let max_rows = Self::check_row_fits(ctx, part.format, cols)?;
            // An even number, so no chunk splits an interleaved gate/up pair.
            let max_rows = if max_rows > 1 { max_rows / 2 * 2 } else { 1 };
            let mut done = 0;
            while done < part.rows {
                let rows = max_rows.min(part.rows - done);
                // The chunk's rows, uploaded from the part's planes without copying them.
                let codes = &part.codes[done * words..(done + rows) * words];
                let codes = ctx.upload_bytes(bytemuck::cast_slice(codes), "weight codes")?;
                let scales = if halves == 0 {
                    ctx.upload_bytes(&[0; 4], "no scales")?
                } else {
                    let chunk = &part.scales[done * halves..(done + rows) * halves];
                    let words = crate::quant::halves_to_words(chunk);
                    ctx.upload_bytes(bytemuck::cast_slice(&words), "weight scales")?
                };
                chunks.push(WeightChunk {
                    row_start: row_start + done,
                    rows,
                    format: part.format,
                    codes,
                    scales,
                });
                done += rows;
            }
            row_start += part.rows;
        }
        Ok(Self {
            rows: row_start,
            cols,
            chunks,
        })
    }
}
