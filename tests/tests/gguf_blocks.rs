//! GGUF's block formats on tensors glim did not write: its CPU decoders and GPU weight
//! formats against gguf-py's decoding (llama.cpp's Python package, a second implementation
//! of ggml's layouts: `tests/reference/make_block_tensors.py`), and the GPU's decoding of a
//! real `Q4_K_M` file's tensors (Gemma 3 270M) against the CPU reference. Bit for bit: the
//! GPU must give every weight exactly the f32 ggml gives.

use std::collections::BTreeSet;

use glim::formats::ggml::{self, GgmlType};
use glim::formats::gguf::{GgufFile, TensorInfo};
use glim::gpu::{GpuContext, Precision};
use glim::kernels::embedding;
use glim::kernels::weight::GpuWeight;
use glim::quant::{PackedWeight, WeightFormat};
use glim_tests::*;

fn reference_tensors() -> GgufFile {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("reference/block_tensors.gguf");
    GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The reference file's quantized matrices (not their `.f32` decodings).
fn matrices(file: &GgufFile) -> Vec<&TensorInfo> {
    file.tensors()
        .iter()
        .filter(|t| !t.name().ends_with(".f32"))
        .collect()
}

/// Asserts `got` is `want` bit for bit (but for the sign of zero).
fn assert_same(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g == w || (g.is_nan() && w.is_nan()),
            "{what}: element {i} is {g}, want {w}"
        );
    }
}

/// Every row of `packed` as the GPU's embedding kernel decodes it, with f32 activations (so
/// nothing is rounded after the format's own decoding).
fn gpu_rows(ctx: &GpuContext, packed: &PackedWeight) -> Vec<f32> {
    let table = GpuWeight::upload(ctx, packed).unwrap();
    let ids: Vec<u32> = (0..packed.rows as u32).collect();
    let ids_t = ctx.tensor_from_u32(&ids, &[ids.len()]).unwrap();
    let out = ctx
        .zeros(&[ids.len(), packed.cols], Precision::F32.into())
        .unwrap();
    let ops = embedding::embed(ctx, &ids_t, &table, &out, ids.len(), 1.0).unwrap();
    let mut rec = ctx.recorder();
    for op in &ops {
        rec.dispatch(op);
    }
    rec.submit_and_wait().unwrap();
    ctx.read_f32_blocking(&out).unwrap()
}

#[test]
fn cpu_decoders_match_gguf_py() {
    let file = reference_tensors();
    let mut covered = BTreeSet::new();
    for t in matrices(&file) {
        let ty = t.ggml_type();
        let want = file.tensor_f32(&format!("{}.f32", t.name())).unwrap();
        let got = ggml::dequantize(ty, file.tensor_bytes(t), want.len()).unwrap();
        assert_same(&format!("{ty} (formats::ggml)"), &got, &want);
        let (rows, cols) = (t.n_rows() as usize, t.row_len() as usize);
        let packed = PackedWeight::from_ggml(ty, file.tensor_bytes(t), rows, cols).unwrap();
        assert_same(
            &format!("{ty} repacked as {}", packed.format),
            &packed.dequantize(),
            &want,
        );
        covered.insert(ty.name());
    }
    // A GGUF format added to glim without reference data here fails this test.
    for format in WeightFormat::ALL {
        if let Some(ty) = format.ggml_type().filter(|&ty| ty != GgmlType::F32) {
            assert!(
                covered.contains(ty.name()),
                "block_tensors.gguf has no {ty} matrix: rerun tests/reference/make_block_tensors.py"
            );
        }
    }
}

#[test]
fn gpu_formats_match_gguf_py() {
    let Some(ctx) = gpu() else { return };
    let file = reference_tensors();
    for t in matrices(&file) {
        let ty = t.ggml_type();
        let want = file.tensor_f32(&format!("{}.f32", t.name())).unwrap();
        let (rows, cols) = (t.n_rows() as usize, t.row_len() as usize);
        let packed = PackedWeight::from_ggml(ty, file.tensor_bytes(t), rows, cols).unwrap();
        assert_same(
            &format!("{ty} on the GPU as {}", packed.format),
            &gpu_rows(ctx, &packed),
            &want,
        );
    }
}

/// At most this many rows of each of Gemma's matrices go to the GPU (spread over the
/// matrix, the last included): every block of a row, a sample of the rows.
const GEMMA_ROWS: usize = 96;

#[test]
fn gemma_q4_k_m_tensors_decode_on_the_gpu_as_on_the_cpu() {
    let Some(path) = gemma_q4_k_m() else { return };
    let Some(ctx) = gpu() else { return };
    let file = GgufFile::open(&path).unwrap();
    let mut seen = BTreeSet::new();
    for t in file.tensors() {
        let ty = t.ggml_type();
        if t.dims().len() != 2 || ty == GgmlType::F32 {
            continue;
        }
        let (rows, cols) = (t.n_rows() as usize, t.row_len() as usize);
        let row_bytes = ty.row_bytes(cols).unwrap();
        let picked: BTreeSet<usize> = (0..GEMMA_ROWS.min(rows))
            .map(|i| i * rows / GEMMA_ROWS.min(rows))
            .chain([rows - 1])
            .collect();
        let all = file.tensor_bytes(t);
        let bytes: Vec<u8> = picked
            .iter()
            .flat_map(|&r| &all[r * row_bytes..(r + 1) * row_bytes])
            .copied()
            .collect();
        let want = ggml::dequantize(ty, &bytes, picked.len() * cols).unwrap();
        let packed = PackedWeight::from_ggml(ty, &bytes, picked.len(), cols).unwrap();
        assert_same(
            &format!("{} ({ty}) on the GPU", t.name()),
            &gpu_rows(ctx, &packed),
            &want,
        );
        seen.insert(ty.name());
    }
    // What llama.cpp's Q4_K_M mix made of this model: a file without them is the wrong one.
    for ty in ["q4_K", "q6_K", "q5_0", "q8_0"] {
        assert!(seen.contains(ty), "no {ty} matrix in {}", path.display());
    }
    eprintln!("Gemma 3 270M Q4_K_M: {seen:?} matrices decode on the GPU as ggml decodes them");
}
