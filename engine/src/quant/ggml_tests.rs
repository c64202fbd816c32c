//! The GGUF formats against ggml's decoders ([`crate::formats::ggml`]): every repacked
//! weight is the f32 llama.cpp decodes, bit for bit, and the planes hold the file's bits.

use super::*;
use crate::formats::ggml::{self, synthetic_blocks};

/// The GGUF block types glim runs as stored, and the widths tested (whole blocks).
const BLOCK_TYPES: [(GgmlType, usize); 12] = [
    (GgmlType::Q4_0, 96),
    (GgmlType::Q4_1, 96),
    (GgmlType::Q5_0, 160),
    (GgmlType::Q5_1, 96),
    (GgmlType::Q8_0, 64),
    (GgmlType::Q4_K, 512),
    (GgmlType::Q5_K, 768),
    (GgmlType::Q6_K, 768),
    (GgmlType::Q2_K, 512),
    (GgmlType::Q3_K, 768),
    (GgmlType::IQ4_NL, 96),
    (GgmlType::IQ4_XS, 512),
];

fn synthetic(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> Vec<u8> {
    let blocks = rows * cols / ty.block_size();
    synthetic_blocks(ty, blocks, seed).unwrap()
}

#[test]
fn every_block_type_decodes_to_ggml_bit_for_bit() {
    for (ty, cols) in BLOCK_TYPES {
        let rows = 7;
        for seed in 0..4 {
            let bytes = synthetic(ty, rows, cols, seed);
            let want = ggml::dequantize(ty, &bytes, rows * cols).unwrap();
            let packed = PackedWeight::from_ggml(ty, &bytes, rows, cols).unwrap();
            assert_eq!(packed.format.ggml_type(), Some(ty));
            let got = packed.dequantize();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    g.to_bits(),
                    w.to_bits(),
                    "{ty} seed {seed}: weight ({}, {}) is {g}, ggml gives {w}",
                    i / cols,
                    i % cols
                );
            }
        }
    }
}

/// The GPU holds the file's own bits: the block bytes plus at most a quad of code words
/// and a word of scales of padding per row.
#[test]
fn planes_hold_the_files_bits() {
    for (ty, cols) in BLOCK_TYPES {
        let rows = 5;
        let file = ty.row_bytes(cols).unwrap();
        let packed =
            PackedWeight::from_ggml(ty, &synthetic(ty, rows, cols, 1), rows, cols).unwrap();
        let row = packed.byte_size() / rows;
        assert!(
            row >= file && row <= file + 16 + 4,
            "{ty}: {row} bytes a row on the GPU for {file} in the file"
        );
    }
    // Q4_K at 4096: exactly the file's 4.5 bits per weight; Q6_K its 6.5625 plus nothing.
    for (ty, bpw) in [
        (GgmlType::Q4_K, 4.5),
        (GgmlType::Q6_K, 6.5625),
        (GgmlType::Q4_1, 5.0),
        (GgmlType::Q2_K, 2.625),
        (GgmlType::Q3_K, 3.4375),
        (GgmlType::IQ4_NL, 4.5),
        (GgmlType::IQ4_XS, 4.25),
    ] {
        let p = PackedWeight::from_ggml(ty, &synthetic(ty, 2, 4096, 3), 2, 4096).unwrap();
        assert_eq!(p.bits_per_weight(), bpw, "{ty}");
    }
}

#[test]
fn float_types_keep_every_value() {
    let (rows, cols) = (3, 13);
    for ty in [GgmlType::F32, GgmlType::F16, GgmlType::BF16] {
        let bytes = synthetic(ty, rows, cols, 9);
        let want = ggml::dequantize(ty, &bytes, rows * cols).unwrap();
        let packed = PackedWeight::from_ggml(ty, &bytes, rows, cols).unwrap();
        let got = packed.dequantize();
        assert!(
            got.iter()
                .zip(&want)
                .all(|(g, w)| g.to_bits() == w.to_bits()),
            "{ty}"
        );
    }
    // Values f16 cannot hold: they decide whether an F32 matrix may run as f16.
    assert!(float::exact_in_f16(&[0.5, -3.0, 65504.0, 0.0]));
    assert!(!float::exact_in_f16(&[0.1]));
    assert!(!float::exact_in_f16(&[1e6]));
}

#[test]
fn rows_move_with_their_scales() {
    for (ty, cols) in BLOCK_TYPES {
        let rows = 6;
        let packed =
            PackedWeight::from_ggml(ty, &synthetic(ty, rows, cols, 4), rows, cols).unwrap();
        let dense = packed.dequantize();
        let row = |d: &[f32], r: usize| d[r * cols..(r + 1) * cols].to_vec();
        let mixed = packed.interleave_halves().unwrap().dequantize();
        for i in 0..rows / 2 {
            assert_eq!(row(&mixed, 2 * i), row(&dense, i), "{ty}");
            assert_eq!(row(&mixed, 2 * i + 1), row(&dense, rows / 2 + i), "{ty}");
        }
        let order = [5, 0, 3];
        let picked = packed.select_rows(&order).dequantize();
        for (i, &r) in order.iter().enumerate() {
            assert_eq!(row(&picked, i), row(&dense, r), "{ty}");
        }
        let stacked = PackedWeight::stack(&[
            packed.select_rows(&[0, 1]),
            packed.select_rows(&[2, 3, 4, 5]),
        ])
        .unwrap();
        assert_eq!(stacked, packed);
    }
    let a = PackedWeight::synthetic(WeightFormat::Q4_0, 2, 64, 1).unwrap();
    let b = PackedWeight::synthetic(WeightFormat::Q8_0, 2, 64, 1).unwrap();
    assert!(
        PackedWeight::stack(&[a, b]).is_err(),
        "one format per stack"
    );
}

#[test]
fn bad_block_data_is_an_error() {
    let bytes = synthetic(GgmlType::Q4_K, 2, 256, 1);
    assert!(PackedWeight::from_ggml(GgmlType::Q4_K, &bytes[1..], 2, 256).is_err());
    assert!(PackedWeight::from_ggml(GgmlType::Q4_K, &bytes, 2, 300).is_err());
    match PackedWeight::from_ggml(GgmlType::IQ2_XXS, &[0; 66], 1, 256) {
        Err(Error::Unsupported(msg)) => assert!(msg.contains("iq2_xxs"), "{msg}"),
        other => panic!("{other:?}"),
    }
    // glim writes none of GGUF's block types itself.
    assert!(PackedWeight::quantize(WeightFormat::Q4_K, &[0.0; 256], 1, 256).is_err());
}
