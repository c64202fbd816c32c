//! `glim quantize`: writes a GGUF file or a Hugging Face folder as an MLC-layout model folder
//! (what the browser streams, and what `glim run` reads), with a progress bar.

use glim::model::loader;
use glim::model::mlc::MlcQuant;
use glim::model::mlc_writer::write_folder;

use crate::{bail, CliResult, QuantizeArgs, WriteQuant};

pub fn quantize(args: QuantizeArgs) -> CliResult<()> {
    if !args.input.exists() {
        bail!("no model at {}", args.input.display());
    }
    let opened = loader::open(&args.input)?;
    if let loader::ModelFile::Mlc(_) = opened.file {
        bail!(
            "{} is already an MLC model folder: quantize the original GGUF or Hugging Face model",
            args.input.display()
        );
    }
    let quant = match args.quant {
        WriteQuant::Q4f16 => MlcQuant::Q4F16,
        WriteQuant::Q3f16 => MlcQuant::Q3F16,
        WriteQuant::Q4f32 => MlcQuant::Q4F32,
        WriteQuant::Q0f16 => MlcQuant::Q0F16,
    };
    if let loader::ModelFile::Gguf(_) = opened.file {
        // MLC folders have no place for GGUF blocks: the weights are decoded and rounded
        // into MLC's format, a second rounding of an already quantized model.
        eprintln!(
            "warning: {} is quantized already; writing it as {} rounds every weight a second time (for SmolLM2's Q4_1: perplexity +31 % with q4f16, README: Accuracy). glim runs the GGUF as it is without converting it",
            args.input.display(),
            quant.name()
        );
    }
    let bar = crate::model::tensor_bar(format!("quantizing to {}", quant.name()));
    let report = write_folder(&opened, quant, &args.outdir, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    let report = report?;
    for warning in &report.warnings {
        eprintln!("warning: {}", crate::one_line(warning));
    }
    eprintln!(
        "{}: wrote {} ({:.1} MiB of tensors in {} shards) to {}",
        opened.name,
        quant.name(),
        report.tensor_bytes as f64 / (1024.0 * 1024.0),
        report.shards,
        args.outdir.display()
    );
    Ok(())
}
