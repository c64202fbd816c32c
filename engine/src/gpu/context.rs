//! Adapter choice and device setup.
//!
//! `GLIM_BACKEND` (vulkan|metal|dx12|gl|browser) narrows the backends searched and
//! `GLIM_ADAPTER` picks one adapter by index (as `glim devices` lists them) or by a
//! case-insensitive substring of its name. Without them the best adapter wins: discrete,
//! then integrated, then virtual, then software; a native API before OpenGL.

use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// Precision of activations (and of the arithmetic kernels store them in). Accumulation is
/// always f32; weights are always read as packed u32 words, so they need neither.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    /// f16 activations: needs the adapter's `shader-f16` feature.
    F16,
    /// f32 activations: runs everywhere (e.g. browsers on devices without shader-f16).
    F32,
}

/// How to choose an adapter; [`AdapterChoice::from_env`] reads the `GLIM_*` variables.
#[derive(Clone, Debug, Default)]
pub struct AdapterChoice {
    /// Restrict the search to one backend.
    pub backend: Option<wgpu::Backends>,
    /// An index into the sorted adapter list, or a name substring.
    pub adapter: Option<String>,
}

impl AdapterChoice {
    /// Reads `GLIM_BACKEND` and `GLIM_ADAPTER`.
    pub fn from_env() -> Result<Self> {
        let backend = match std::env::var("GLIM_BACKEND") {
            Ok(name) if !name.is_empty() => Some(parse_backend(&name)?),
            _ => None,
        };
        let adapter = std::env::var("GLIM_ADAPTER").ok().filter(|s| !s.is_empty());
        Ok(Self { backend, adapter })
    }
}

fn parse_backend(name: &str) -> Result<wgpu::Backends> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "vulkan" | "vk" => wgpu::Backends::VULKAN,
        "metal" => wgpu::Backends::METAL,
        "dx12" | "d3d12" => wgpu::Backends::DX12,
        "gl" | "gles" | "opengl" => wgpu::Backends::GL,
        "browser" | "webgpu" => wgpu::Backends::BROWSER_WEBGPU,
        other => {
            return Err(Error::Invalid(format!(
                "GLIM_BACKEND={other}: expected one of vulkan, metal, dx12, gl, browser"
            )))
        }
    })
}

/// What a user needs to know about one adapter (`glim devices` prints these).
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub index: usize,
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub shader_f16: bool,
    pub subgroups: bool,
    /// The smallest and largest subgroup the adapter runs (meaningful with `subgroups`).
    pub subgroup_sizes: [u32; 2],
    pub timestamps: bool,
    pub max_storage_binding: u64,
    pub max_buffer: u64,
}

fn summarize(index: usize, adapter: &wgpu::Adapter) -> AdapterSummary {
    let info = adapter.get_info();
    let features = adapter.features();
    let limits = adapter.limits();
    AdapterSummary {
        index,
        name: info.name,
        backend: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: format!("{} {}", info.driver, info.driver_info)
            .trim()
            .to_string(),
        shader_f16: features.contains(wgpu::Features::SHADER_F16),
        subgroups: features.contains(wgpu::Features::SUBGROUP),
        subgroup_sizes: [info.subgroup_min_size, info.subgroup_max_size],
        timestamps: features.contains(wgpu::Features::TIMESTAMP_QUERY),
        max_storage_binding: limits.max_storage_buffer_binding_size,
        max_buffer: limits.max_buffer_size,
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn preference(adapter: &wgpu::Adapter) -> (u8, u8) {
    let info = adapter.get_info();
    let kind = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    };
    let api = if info.backend == wgpu::Backend::Gl {
        1
    } else {
        0
    };
    (kind, api)
}

fn new_instance(choice: &AdapterChoice) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    if let Some(backends) = choice.backend {
        desc.backends = backends;
    }
    wgpu::Instance::new(desc)
}

/// All adapters the choice allows, best first.
#[cfg(not(target_arch = "wasm32"))]
pub async fn list_adapters(choice: &AdapterChoice) -> Vec<AdapterSummary> {
    let instance = new_instance(choice);
    sorted_adapters(&instance, choice)
        .await
        .iter()
        .enumerate()
        .map(|(i, a)| summarize(i, a))
        .collect()
}

#[cfg(not(target_arch = "wasm32"))]
async fn sorted_adapters(instance: &wgpu::Instance, choice: &AdapterChoice) -> Vec<wgpu::Adapter> {
    let backends = choice.backend.unwrap_or(wgpu::Backends::all());
    let mut adapters = instance.enumerate_adapters(backends).await;
    adapters.sort_by_key(preference);
    adapters
}

/// Which of `names` (best first) `wanted` picks: an index, or else the first name that
/// contains it, case-insensitively; no `wanted` picks the first. `glim devices` uses the
/// same rule to mark the adapter glim will open.
pub fn match_adapter(names: &[String], wanted: Option<&str>) -> Option<usize> {
    let Some(wanted) = wanted else {
        return (!names.is_empty()).then_some(0);
    };
    match wanted.parse::<usize>() {
        Ok(index) => (index < names.len()).then_some(index),
        Err(_) => {
            let needle = wanted.to_lowercase();
            names
                .iter()
                .position(|n| n.to_lowercase().contains(&needle))
        }
    }
}

/// The chosen adapter and its index in the sorted list.
#[cfg(not(target_arch = "wasm32"))]
async fn pick_adapter(
    instance: &wgpu::Instance,
    choice: &AdapterChoice,
) -> Result<(usize, wgpu::Adapter)> {
    let adapters = sorted_adapters(instance, choice).await;
    if adapters.is_empty() {
        return Err(Error::NoAdapter(
            "no Vulkan, Metal, DX12 or GL adapter found; on a machine without a GPU install \
             Mesa's software Vulkan driver (Debian: mesa-vulkan-drivers)"
                .into(),
        ));
    }
    let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
    match match_adapter(&names, choice.adapter.as_deref()) {
        Some(index) => Ok((
            index,
            adapters.into_iter().nth(index).expect("index in range"),
        )),
        None => Err(Error::NoAdapter(format!(
            "GLIM_ADAPTER={} matches none of: {}",
            choice.adapter.as_deref().unwrap_or_default(),
            names
                .iter()
                .enumerate()
                .map(|(i, n)| format!("[{i}] {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

#[cfg(target_arch = "wasm32")]
async fn pick_adapter(
    instance: &wgpu::Instance,
    _choice: &AdapterChoice,
) -> Result<(usize, wgpu::Adapter)> {
    instance
        .request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            force_fallback_adapter: false,
            compatible_surface: None,
            ..Default::default()
        })
        .await
        .map(|adapter| (0, adapter))
        .map_err(|e| Error::NoAdapter(format!("the browser offers no WebGPU adapter: {e}")))
}

/// Marks a device-loss message in the pending-error slot.
const DEVICE_LOST: &str = "device lost ";
/// Marks an allocation the GPU refused.
const OUT_OF_MEMORY: &str = "out of memory: ";

/// An open device with everything glim needs to run kernels on it.
pub struct GpuContext {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub summary: AdapterSummary,
    pub(crate) features: wgpu::Features,
    pub(crate) limits: wgpu::Limits,
    pub(crate) pipelines: super::pipeline::PipelineCache,
    /// Errors wgpu reports outside an error scope (and device loss) land here instead of
    /// panicking; the next submit or readback turns them into an [`Error`].
    pub(crate) pending_error: Arc<Mutex<Option<String>>>,
    /// The kernels asked for, whatever the adapter (see [`Self::use_kernels`]).
    kernels: Option<KernelSet>,
    /// How `gemv` is launched, where asked for (see [`Self::use_gemv`]).
    pub(crate) gemv: Option<crate::kernels::matmul::GemvLaunch>,
}

/// Which of glim's two kernel sets runs the matrix products: those built for GPU warps, or
/// those built for a CPU adapter's SIMD lanes (see `kernels::matmul`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelSet {
    Gpu,
    Cpu,
}

impl GpuContext {
    /// Opens the adapter `choice` selects, asking for shader-f16, subgroups and timestamp
    /// queries where the adapter has them and for the adapter's own buffer-size limits.
    pub async fn new(choice: &AdapterChoice) -> Result<Self> {
        let instance = new_instance(choice);
        let (index, adapter) = pick_adapter(&instance, choice).await?;
        let wanted =
            wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP | wgpu::Features::TIMESTAMP_QUERY;
        let features = adapter.features() & wanted;
        // The adapter's own limits are the most it can give: large models need its full
        // storage-binding and buffer sizes, not WebGPU's conservative defaults.
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("glim"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::Device(e.to_string()))?;
        let pending_error = Arc::new(Mutex::new(None));
        let sink = pending_error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
            slot.get_or_insert_with(|| match e {
                wgpu::Error::OutOfMemory { .. } => format!("{OUT_OF_MEMORY}{e}"),
                other => other.to_string(),
            });
        }));
        let sink = pending_error.clone();
        device.set_device_lost_callback(move |reason, message| {
            let mut slot = sink.lock().unwrap_or_else(|p| p.into_inner());
            // A loss outranks whatever error it caused.
            *slot = Some(format!("{DEVICE_LOST}({reason:?}): {message}"));
        });
        // wgpu's WebGPU backend has no name for `subgroups`: the package asks the browser
        // for it (web/js/index.js) and the device says whether it got it.
        #[cfg(target_arch = "wasm32")]
        let features = match device.as_webgpu() {
            Some(web) if web.features().has("subgroups") => features | wgpu::Features::SUBGROUP,
            _ => features,
        };
        let mut summary = summarize(index, &adapter);
        summary.subgroups = features.contains(wgpu::Features::SUBGROUP);
        log::info!("glim adapter: {} ({})", summary.name, summary.backend);
        Ok(Self {
            device,
            queue,
            summary,
            features,
            limits,
            pipelines: Default::default(),
            pending_error,
            kernels: None,
            gemv: None,
        })
    }

    /// [`GpuContext::new`] with the choice read from the environment, blocking (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_env_blocking() -> Result<Self> {
        let choice = AdapterChoice::from_env()?;
        pollster::block_on(Self::new(&choice))
    }

    pub fn supports_f16(&self) -> bool {
        self.features.contains(wgpu::Features::SHADER_F16)
    }

    pub fn supports_timestamps(&self) -> bool {
        self.features.contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// f16 where the adapter has it, unless `GLIM_PRECISION=f32` asks otherwise.
    pub fn default_precision(&self) -> Precision {
        let forced_f32 = std::env::var("GLIM_PRECISION").is_ok_and(|v| v == "f32");
        if self.supports_f16() && !forced_f32 {
            Precision::F16
        } else {
            Precision::F32
        }
    }

    /// Whether to run the kernels built for CPU adapters: asked for with
    /// [`Self::use_kernels`], else on an adapter that runs on the CPU (lavapipe). The
    /// browser does not say what its adapter is through wgpu: the package asks for the CPU
    /// kernels where `adapter.info` names a software adapter.
    pub fn is_cpu(&self) -> bool {
        match self.kernels {
            Some(set) => set == KernelSet::Cpu,
            None => {
                self.summary.device_type == "Cpu"
                    || self.summary.name.to_lowercase().contains("llvmpipe")
            }
        }
    }

    /// The kernel set [`Self::is_cpu`] picks.
    pub fn kernel_set(&self) -> KernelSet {
        if self.is_cpu() {
            KernelSet::Cpu
        } else {
            KernelSet::Gpu
        }
    }

    /// The one size every subgroup has on this device, where kernels may use subgroup
    /// operations: the device has them and the adapter runs a single size.
    pub fn subgroup_size(&self) -> Option<u32> {
        let [min, max] = self.summary.subgroup_sizes;
        let usable = self.features.contains(wgpu::Features::SUBGROUP) && min == max;
        usable.then_some(min)
    }

    /// Run `set` whatever the adapter: lets tests run a whole model through the GPU kernels
    /// on lavapipe, and the browser pick the CPU ones on a software adapter.
    pub fn use_kernels(&mut self, set: KernelSet) {
        self.kernels = Some(set);
    }

    /// Launch `gemv` as `launch` says (team, teams, outputs; subgroups where the team is
    /// the adapter's subgroup size) instead of the kernel set's own launch: for sweeps, as
    /// `GLIM_GEMV` natively and the package's `gemv` option in the browser.
    pub fn use_gemv(&mut self, launch: crate::kernels::matmul::GemvLaunch) {
        self.gemv = Some(launch);
    }

    /// Largest buffer one shader binding may cover; weights larger than this are split.
    pub fn max_binding_size(&self) -> u64 {
        self.limits
            .max_storage_buffer_binding_size
            .min(self.limits.max_buffer_size)
    }

    /// Pretend the adapter allows smaller bindings than it does: lets tests exercise the
    /// weight-splitting path on any device. Never raises the limit.
    pub fn limit_binding_size(&mut self, bytes: u64) {
        let limit = &mut self.limits.max_storage_buffer_binding_size;
        *limit = (*limit).min(bytes);
    }

    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    pub fn check_precision(&self, precision: Precision) -> Result<()> {
        if precision == Precision::F16 && !self.supports_f16() {
            return Err(Error::Unsupported(format!(
                "f16 activations need shader-f16, which {} lacks; use f32",
                self.summary.name
            )));
        }
        Ok(())
    }

    /// Returns (and clears) an error wgpu reported asynchronously.
    pub(crate) fn take_error(&self) -> Result<()> {
        let has_error = self
            .pending_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        if has_error {
            // wgpu reports a device loss from a poll, often after the errors it caused: hear
            // it now, so the loss (not its symptom) is what the caller gets.
            #[cfg(not(target_arch = "wasm32"))]
            let _ = self.device.poll(wgpu::PollType::Poll);
        }
        let mut slot = self.pending_error.lock().unwrap_or_else(|p| p.into_inner());
        match slot.take() {
            Some(message) => match message.strip_prefix(DEVICE_LOST) {
                Some(rest) => {
                    // Stays lost: every later call says so too.
                    *slot = Some(message.clone());
                    Err(Error::DeviceLost(rest.to_string()))
                }
                None => match message.strip_prefix(OUT_OF_MEMORY) {
                    Some(rest) => Err(Error::OutOfMemory(rest.to_string())),
                    None => Err(Error::Gpu(message)),
                },
            },
            None => Ok(()),
        }
    }
}
