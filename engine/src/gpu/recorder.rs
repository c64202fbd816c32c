//! Recording many kernel launches into one command encoder and submitting once.

use std::sync::Arc;

use super::context::GpuContext;
use super::pipeline::KernelSource;
use crate::error::{Error, Result};

/// Most workgroups one grid dimension may hold (WebGPU's guaranteed minimum).
pub const MAX_GRID_DIM: u32 = 65535;

/// A kernel launch with its resources bound: built once, recorded any number of times.
pub struct Dispatch {
    pub(crate) pipeline: Arc<wgpu::ComputePipeline>,
    pub(crate) bind_group: wgpu::BindGroup,
    pub workgroups: [u32; 3],
}

/// Lays `count` workgroups out on a grid no wider than [`MAX_GRID_DIM`]; shaders recover the
/// linear index as `id.x + id.y * num_workgroups.x`.
pub fn grid(count: u32) -> [u32; 3] {
    if count <= MAX_GRID_DIM {
        [count.max(1), 1, 1]
    } else {
        [MAX_GRID_DIM, count.div_ceil(MAX_GRID_DIM), 1]
    }
}

impl GpuContext {
    /// Binds `buffers` (in binding order) to `kernel` and fixes the grid size.
    pub fn dispatch(
        &self,
        kernel: &KernelSource,
        buffers: &[&wgpu::Buffer],
        workgroups: [u32; 3],
    ) -> Result<Dispatch> {
        if buffers.len() != kernel.bindings.len() {
            return Err(Error::Shape(format!(
                "kernel {} takes {} buffers, got {}",
                kernel.label,
                kernel.bindings.len(),
                buffers.len()
            )));
        }
        let max = self.limits.max_compute_workgroups_per_dimension;
        if workgroups.iter().any(|&w| w > max) {
            return Err(Error::Unsupported(format!(
                "kernel {} needs a grid of {workgroups:?} workgroups; the adapter allows {max} per dimension",
                kernel.label
            )));
        }
        let pipeline = self.pipeline(kernel)?;
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&kernel.label),
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        });
        Ok(Dispatch {
            pipeline,
            bind_group,
            workgroups,
        })
    }

    /// A fresh recorder on this device.
    pub fn recorder(&self) -> Recorder<'_> {
        Recorder {
            ctx: self,
            encoder: None,
            pass: None,
        }
    }
}

/// Collects dispatches and copies for one submit. Dispatches share one compute pass, so the
/// driver sees a single stream of work; a copy closes the pass (copies live outside passes).
pub struct Recorder<'a> {
    ctx: &'a GpuContext,
    encoder: Option<wgpu::CommandEncoder>,
    pass: Option<wgpu::ComputePass<'static>>,
}

impl Recorder<'_> {
    fn encoder(&mut self) -> &mut wgpu::CommandEncoder {
        self.encoder
            .get_or_insert_with(|| self.ctx.device.create_command_encoder(&Default::default()))
    }

    /// Records one kernel launch.
    pub fn dispatch(&mut self, d: &Dispatch) {
        if self.pass.is_none() {
            let pass = self.encoder().begin_compute_pass(&Default::default());
            self.pass = Some(pass.forget_lifetime());
        }
        let pass = self.pass.as_mut().expect("pass just opened");
        pass.set_pipeline(&d.pipeline);
        pass.set_bind_group(0, &d.bind_group, &[]);
        let [x, y, z] = d.workgroups;
        pass.dispatch_workgroups(x, y, z);
    }

    /// Records a buffer-to-buffer copy (offsets and size in bytes, multiples of 4).
    pub fn copy(
        &mut self,
        src: &wgpu::Buffer,
        src_offset: u64,
        dst: &wgpu::Buffer,
        dst_offset: u64,
        size: u64,
    ) {
        self.pass = None;
        self.encoder()
            .copy_buffer_to_buffer(src, src_offset, dst, dst_offset, size);
    }

    /// Ends recording and hands the work to the GPU.
    pub fn submit(mut self) -> Result<()> {
        self.pass = None;
        if let Some(encoder) = self.encoder.take() {
            self.ctx.queue.submit([encoder.finish()]);
        }
        self.ctx.take_error()
    }

    /// Submits and blocks until the GPU has finished (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn submit_and_wait(self) -> Result<()> {
        let ctx = self.ctx;
        self.submit()?;
        ctx.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Gpu(e.to_string()))?;
        ctx.take_error()
    }
}
