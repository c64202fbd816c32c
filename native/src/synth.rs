//! `glim synth`: a Llama-shaped GGUF with random weights (Llama 2 7B's shapes by default),
//! so 7B-class speed can be measured, by glim and by llama.cpp on the identical file,
//! without 7B weights; or (`--from`, `--arch`) a real Llama GGUF's weights in another
//! architecture's layout, to test that architecture against llama.cpp. And `glim split`: a
//! GGUF file written again as the parts of a split model.

use std::fs::File;
use std::io::BufWriter;

use glim::formats::ggml::GgmlType;
use glim::formats::gguf::GgufFile;
use glim::model::arch::Family;
use glim::model::rearrange::write_as;
use glim::model::synthetic::{write_random_llama, LlamaShape, Mix};

use crate::{bail, model, CliError, CliResult, SplitArgs, SynthArgs, SynthType};

pub fn synth(args: SynthArgs) -> CliResult<()> {
    if let (Some(from), Some(arch)) = (&args.from, &args.arch) {
        return rewrite(from, arch, &args);
    }
    let Some(shape) = LlamaShape::named(&args.shape) else {
        bail!(
            "unknown shape {:?}: use llama2-7b, small or tiny",
            args.shape
        );
    };
    let mix = match args.r#type {
        SynthType::Q4_0 => Mix::All(GgmlType::Q4_0),
        SynthType::Q4_1 => Mix::All(GgmlType::Q4_1),
        SynthType::Q4_K_M => Mix::Q4KM,
    };
    // Never overwrite: the path may be a real model.
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(&args.output)
        .map_err(|e| CliError(format!("cannot create {}: {e}", args.output.display())))?;
    let bar = model::tensor_bar(format!("writing {} random {}", args.shape, mix.name()));
    let written = write_random_llama(
        BufWriter::new(file),
        &shape,
        mix,
        args.seed,
        &mut |done, total| {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        },
    );
    bar.finish_and_clear();
    if let Err(e) = written {
        // A half-written file is no model: remove it.
        let _ = std::fs::remove_file(&args.output);
        return Err(e.into());
    }
    let bytes = std::fs::metadata(&args.output)
        .map(|m| m.len())
        .unwrap_or(0);
    eprintln!(
        "wrote {}: {} layers, d {}, FFN {}, {} heads ({} KV), vocabulary {}, {:.2}B parameters, {:.2} GiB",
        args.output.display(),
        shape.layers,
        shape.dim,
        shape.ffn_dim,
        shape.heads,
        shape.kv_heads,
        shape.vocab,
        shape.parameters() as f64 / 1e9,
        bytes as f64 / (1u64 << 30) as f64
    );
    Ok(())
}

/// `--from MODEL --arch ARCH`: the model's weights in another architecture's layout.
fn rewrite(from: &std::path::Path, arch: &str, args: &SynthArgs) -> CliResult<()> {
    let Some(family) = Family::ALL.into_iter().find(|f| f.gguf_name() == arch) else {
        bail!("unknown architecture {arch:?}: use qwen2, qwen3 or phi3");
    };
    let src = GgufFile::open(from).map_err(|e| CliError(format!("{}: {e}", from.display())))?;
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(&args.output)
        .map_err(|e| CliError(format!("cannot create {}: {e}", args.output.display())))?;
    if let Err(e) = write_as(&src, family, args.seed, BufWriter::new(file)) {
        let _ = std::fs::remove_file(&args.output);
        return Err(e.into());
    }
    eprintln!(
        "wrote {}: {}'s weights as {arch}",
        args.output.display(),
        from.display()
    );
    Ok(())
}

/// `glim split MODEL OUT --parts N`: OUT-00001-of-0000N.gguf and its siblings.
pub fn split(args: SplitArgs) -> CliResult<()> {
    let src = GgufFile::open(&args.input)
        .map_err(|e| CliError(format!("{}: {e}", args.input.display())))?;
    let n = args.parts;
    let name = |i: usize| {
        let mut path = args.output.clone().into_os_string();
        path.push(format!("-{:05}-of-{n:05}.gguf", i + 1));
        std::path::PathBuf::from(path)
    };
    let mut created = Vec::new();
    let written = glim::formats::gguf_writer::write_split(&src, n, |i| {
        // Never overwrite: the path may be a real model.
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(name(i))
            .map_err(|e| {
                glim::Error::Invalid(format!("cannot create {}: {e}", name(i).display()))
            })?;
        created.push(name(i));
        Ok(BufWriter::new(file))
    });
    if let Err(e) = written {
        // Half a split model is no model: remove what was written.
        for path in created {
            let _ = std::fs::remove_file(path);
        }
        return Err(e.into());
    }
    eprintln!(
        "wrote {} in {n} parts: {} ... {}",
        args.input.display(),
        name(0).display(),
        name(n - 1).display()
    );
    Ok(())
}
