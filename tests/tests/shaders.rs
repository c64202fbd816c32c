//! Every kernel variant must translate with naga to SPIR-V (Vulkan), MSL (Metal) and HLSL
//! (DX12): a shader that would only break on a platform CI cannot run fails here.

use glim::gpu::KernelSource;
use naga::back::{hlsl, msl, spv};
use naga::valid::{Capabilities, ValidationFlags, Validator};

fn translate(kernel: &KernelSource) -> Result<(), String> {
    let module = naga::front::wgsl::parse_str(&kernel.source)
        .map_err(|e| e.emit_to_string(&kernel.source))?;
    let info = Validator::new(ValidationFlags::all(), Capabilities::all())
        .validate(&module)
        .map_err(|e| e.emit_to_string(&kernel.source))?;
    let stage = naga::ShaderStage::Compute;
    let entry = kernel.entry.to_string();

    let spv_pipeline = spv::PipelineOptions {
        shader_stage: stage,
        entry_point: entry.clone(),
    };
    spv::write_vec(
        &module,
        &info,
        &spv::Options::default(),
        Some(&spv_pipeline),
    )
    .map_err(|e| format!("SPIR-V: {e}"))?;

    let msl_options = msl::Options {
        lang_version: (2, 4),
        ..Default::default()
    };
    let msl_pipeline = msl::PipelineOptions {
        entry_point: Some((stage, entry.clone())),
        ..Default::default()
    };
    msl::write_string(&module, &info, &msl_options, &msl_pipeline)
        .map_err(|e| format!("MSL: {e}"))?;

    // Shader model 6.2 is the first with native 16-bit types (DX12 exposes shader-f16 there).
    let hlsl_options = hlsl::Options {
        shader_model: hlsl::ShaderModel::V6_2,
        ..Default::default()
    };
    let hlsl_pipeline = hlsl::PipelineOptions {
        entry_point: Some((stage, entry)),
    };
    let mut out = String::new();
    hlsl::Writer::new(&mut out, &hlsl_options, &hlsl_pipeline)
        .write(&module, &info, None)
        .map_err(|e| format!("HLSL: {e}"))?;
    Ok(())
}

#[test]
fn every_kernel_translates_to_spirv_msl_and_hlsl() {
    let kernels = glim::kernels::all_sources();
    assert!(
        kernels.len() >= 30,
        "expected every kernel variant, got {}",
        kernels.len()
    );
    let failures: Vec<String> = kernels
        .iter()
        .filter_map(|k| {
            translate(k)
                .err()
                .map(|e| format!("{}::{}: {e}", k.label, k.entry))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} kernels failed:\n{}",
        failures.len(),
        kernels.len(),
        failures.join("\n")
    );
    eprintln!(
        "{} kernel entry points translate to SPIR-V, MSL and HLSL",
        kernels.len()
    );
}

/// The f32 variants must not need shader-f16 at all: browsers without it run them.
#[test]
fn f32_variants_do_not_use_f16() {
    for k in glim::kernels::all_sources() {
        if k.label.ends_with(".f32") {
            assert!(!k.source.contains("f16;"), "{} enables f16", k.label);
            let module = naga::front::wgsl::parse_str(&k.source).unwrap();
            let caps = Capabilities::all() - Capabilities::SHADER_FLOAT16;
            Validator::new(ValidationFlags::all(), caps)
                .validate(&module)
                .unwrap_or_else(|e| {
                    panic!("{} needs a capability beyond core WGSL: {e:?}", k.label)
                });
        }
    }
}

/// The check above must be able to fail: a shader using an undeclared binding does.
#[test]
fn a_broken_shader_fails_translation() {
    let mut kernel = glim::kernels::argmax::source(glim::gpu::Precision::F32);
    assert!(translate(&kernel).is_ok());
    kernel.source = kernel.source.replace("logits[", "missing[");
    assert!(translate(&kernel).is_err());
}
