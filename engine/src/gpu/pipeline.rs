//! Shader assembly and the pipeline cache.
//!
//! A kernel's WGSL is assembled from a prelude (the activation type `act`, plus `enable f16;`
//! for the f16 variant), constant definitions (e.g. a weight format's bit width), and one or
//! more files from `shaders/`. Each assembled source and entry point compiles once per device.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::context::{GpuContext, Precision};
use crate::error::{Error, Result};

/// How a kernel binds one resource, by binding number in group 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    Uniform,
    Read,
    ReadWrite,
}

/// One compute entry point of an assembled shader, with its binding layout.
#[derive(Clone, Debug)]
pub struct KernelSource {
    /// Unique per distinct source text, e.g. `matmul.q4f16.f16`.
    pub label: String,
    pub source: String,
    pub entry: &'static str,
    pub bindings: &'static [Binding],
}

/// WGSL that starts every shader: the activation type for `precision`.
pub fn prelude(precision: Precision) -> &'static str {
    match precision {
        Precision::F16 => "enable f16;\nalias act = f16;\n",
        Precision::F32 => "alias act = f32;\n",
    }
}

/// Joins the prelude, `const` lines and shader files into one WGSL module.
pub fn assemble(precision: Precision, consts: &[(&str, u32)], parts: &[&str]) -> String {
    let mut out = String::from(prelude(precision));
    for (name, value) in consts {
        out.push_str(&format!("const {name}: u32 = {value}u;\n"));
    }
    for part in parts {
        out.push('\n');
        out.push_str(part);
    }
    out
}

#[derive(Default)]
pub(crate) struct PipelineCache {
    pipelines: Mutex<HashMap<(String, &'static str), Arc<wgpu::ComputePipeline>>>,
}

impl GpuContext {
    /// The compiled pipeline for `kernel`, building it on first use.
    pub fn pipeline(&self, kernel: &KernelSource) -> Result<Arc<wgpu::ComputePipeline>> {
        let key = (kernel.label.clone(), kernel.entry);
        let mut cache = self
            .pipelines
            .pipelines
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(found) = cache.get(&key) {
            return Ok(found.clone());
        }
        if kernel.source.contains("enable f16;") && !self.supports_f16() {
            return Err(Error::Unsupported(format!(
                "kernel {} needs shader-f16, which {} lacks",
                kernel.label, self.summary.name
            )));
        }
        let pipeline = Arc::new(self.build_pipeline(kernel)?);
        cache.insert(key, pipeline.clone());
        Ok(pipeline)
    }

    fn build_pipeline(&self, kernel: &KernelSource) -> Result<wgpu::ComputePipeline> {
        // Validate with naga first so a broken shader is an `Err` with a readable message
        // rather than a wgpu validation panic.
        let module = naga::front::wgsl::parse_str(&kernel.source).map_err(|e| Error::Shader {
            name: kernel.label.clone(),
            message: e.emit_to_string(&kernel.source),
        })?;
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .map_err(|e| Error::Shader {
            name: kernel.label.clone(),
            message: e.emit_to_string(&kernel.source),
        })?;
        // naga takes subgroup operations as they are but refuses `enable subgroups;` (not
        // implemented in naga 30), which browsers require: the directive is added only for
        // the browser, after naga has checked the rest.
        let source = if cfg!(target_arch = "wasm32") && uses_subgroups(&module) {
            format!("enable subgroups;\n{}", kernel.source).into()
        } else {
            std::borrow::Cow::Borrowed(kernel.source.as_str())
        };

        let entries: Vec<wgpu::BindGroupLayoutEntry> = kernel
            .bindings
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: match b {
                    Binding::Uniform => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    Binding::Read | Binding::ReadWrite => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage {
                            read_only: *b == Binding::Read,
                        },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                },
                count: None,
            })
            .collect();
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(&kernel.label),
                entries: &entries,
            });
        let pipeline_layout = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(&kernel.label),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(&kernel.label),
                source: wgpu::ShaderSource::Wgsl(source),
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(&kernel.label),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(kernel.entry),
                compilation_options: Default::default(),
                cache: None,
            });
        self.take_error().map_err(|e| match e {
            Error::Gpu(message) => Error::Shader {
                name: format!("{}::{}", kernel.label, kernel.entry),
                message,
            },
            other => other,
        })?;
        Ok(pipeline)
    }
}

/// Whether `module` uses subgroup built-ins or operations (each operation leaves a result
/// expression in its function's arena).
fn uses_subgroups(module: &naga::Module) -> bool {
    use naga::{BuiltIn, Expression};
    let subgroup_builtin = |binding: &Option<naga::Binding>| {
        matches!(
            binding,
            Some(naga::Binding::BuiltIn(
                BuiltIn::SubgroupId
                    | BuiltIn::SubgroupInvocationId
                    | BuiltIn::SubgroupSize
                    | BuiltIn::NumSubgroups
            ))
        )
    };
    let functions = module
        .functions
        .iter()
        .map(|(_, f)| f)
        .chain(module.entry_points.iter().map(|e| &e.function));
    functions.into_iter().any(|f| {
        f.arguments.iter().any(|a| subgroup_builtin(&a.binding))
            || f.expressions.iter().any(|(_, e)| {
                matches!(
                    e,
                    Expression::SubgroupBallotResult | Expression::SubgroupOperationResult { .. }
                )
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::matmul;
    use crate::quant::WeightFormat;

    /// The browser gets `enable subgroups;` on exactly the kernels that reduce by shuffles.
    #[test]
    fn subgroup_kernels_are_the_ones_found_using_subgroups() {
        let sources = matmul::sources(Precision::F32, WeightFormat::Q4F16);
        let mut found = 0;
        for kernel in &sources {
            let module = naga::front::wgsl::parse_str(&kernel.source).unwrap();
            let expected = kernel.label.contains(".subgroup");
            assert_eq!(uses_subgroups(&module), expected, "{}", kernel.label);
            found += usize::from(expected);
        }
        assert!(
            found > 0 && found < sources.len(),
            "{found} of {}",
            sources.len()
        );
    }
}
