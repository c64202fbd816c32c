//! Recording many kernel launches into one command encoder and submitting once.

use std::sync::Arc;

use super::context::GpuContext;
use super::pipeline::KernelSource;
use crate::error::{Error, Result};

/// Most workgroups one grid dimension may hold (WebGPU's guaranteed minimum).
pub const MAX_GRID_DIM: u32 = 65535;

/// A kernel launch with its resources bound: built once, recorded any number of times.
pub struct Dispatch {
    /// The kernel's label and entry point (`matmul.q4f16.f16::gemv`), for profiles.
    pub name: String,
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
            name: format!("{}::{}", kernel.label, kernel.entry),
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

    /// Records one kernel launch in a pass of its own, with GPU timestamps written before
    /// and after it into `timer` (profiling; needs the adapter's timestamp queries).
    pub fn dispatch_timed(&mut self, d: &Dispatch, timer: &mut KernelTimer) -> Result<()> {
        let index = timer.names.len() as u32 * 2;
        if index + 2 > timer.capacity {
            return Err(Error::Invalid(format!(
                "more than {} timed dispatches in one profile",
                timer.capacity / 2
            )));
        }
        self.pass = None;
        let mut pass = self
            .encoder()
            .begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some(&d.name),
                timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                    query_set: &timer.queries,
                    beginning_of_pass_write_index: Some(index),
                    end_of_pass_write_index: Some(index + 1),
                }),
            });
        pass.set_pipeline(&d.pipeline);
        pass.set_bind_group(0, &d.bind_group, &[]);
        let [x, y, z] = d.workgroups;
        pass.dispatch_workgroups(x, y, z);
        drop(pass);
        timer.names.push(d.name.clone());
        Ok(())
    }

    /// Copies the timestamps `timer` holds to where [`KernelTimer::read`] finds them; the
    /// last thing recorded before submitting a profiled pass.
    pub fn resolve(&mut self, timer: &KernelTimer) {
        self.pass = None;
        let n = timer.names.len() as u32 * 2;
        let encoder = self.encoder();
        encoder.resolve_query_set(&timer.queries, 0..n, &timer.resolved, 0);
        encoder.copy_buffer_to_buffer(&timer.resolved, 0, &timer.staging, 0, n as u64 * 8);
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

/// GPU time of individual dispatches, from timestamp queries around each.
pub struct KernelTimer {
    queries: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    staging: wgpu::Buffer,
    capacity: u32,
    names: Vec<String>,
}

impl KernelTimer {
    /// Room for `dispatches` timed dispatches; an error where the adapter has no timestamp
    /// queries.
    pub fn new(ctx: &GpuContext, dispatches: usize) -> Result<Self> {
        if !ctx.supports_timestamps() {
            return Err(Error::Unsupported(format!(
                "{} has no timestamp queries, so kernels cannot be timed on it",
                ctx.summary.name
            )));
        }
        // wgpu's limit on queries in one set.
        let capacity = (dispatches * 2).min(wgpu::QUERY_SET_MAX_QUERIES as usize) as u32;
        let bytes = capacity as u64 * 8;
        let buffer = |usage| {
            ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kernel timestamps"),
                size: bytes,
                usage,
                mapped_at_creation: false,
            })
        };
        Ok(Self {
            queries: ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("kernel timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: capacity,
            }),
            resolved: buffer(wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC),
            staging: buffer(wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST),
            capacity,
            names: Vec::new(),
        })
    }

    /// Each timed dispatch's name and GPU seconds, in recording order, once the submit
    /// holding them has run; the timer is then empty again.
    pub async fn read(&mut self, ctx: &GpuContext) -> Result<Vec<(String, f64)>> {
        let bytes = ctx.map_and_copy(&self.staging).await?;
        let ticks: &[u64] = bytemuck::cast_slice(&bytes);
        let seconds_per_tick = ctx.queue.get_timestamp_period() as f64 * 1e-9;
        let times = self
            .names
            .drain(..)
            .enumerate()
            .map(|(i, name)| {
                let span = ticks[2 * i + 1].saturating_sub(ticks[2 * i]);
                (name, span as f64 * seconds_per_tick)
            })
            .collect();
        Ok(times)
    }
}
