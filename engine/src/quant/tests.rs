use half::f16;

use super::*;

const MLC: QuantOptions = QuantOptions {
    rule: ScaleRule::MaxAbs,
    scale_type: ScaleType::F16,
};

/// Every rule and scale type.
const ALL_OPTIONS: [QuantOptions; 4] = [
    MLC,
    QuantOptions {
        rule: ScaleRule::MinError,
        scale_type: ScaleType::F16,
    },
    QuantOptions {
        rule: ScaleRule::MaxAbs,
        scale_type: ScaleType::Bf16,
    },
    QuantOptions {
        rule: ScaleRule::MinError,
        scale_type: ScaleType::Bf16,
    },
];

/// The scale plane as f16 values.
fn scales(p: &PackedWeight) -> Vec<f16> {
    p.scales.iter().map(|&b| f16::from_bits(b)).collect()
}

fn mlc(format: WeightFormat, w: &[f32], rows: usize, cols: usize) -> PackedWeight {
    PackedWeight::quantize_with(format, w, rows, cols, MLC).unwrap()
}

fn group_with(values: &[f32], len: usize) -> Vec<f32> {
    let mut g = values.to_vec();
    g.resize(len, 0.0);
    g
}

/// Worked by hand: f16(0.7) / 7 rounds to the f16 0x2E67 (0.10004); 0.2 / scale = 1.999,
/// + 7 = 8.999, which f16 rounds to 9; 0.1 gives 7.9995 -> 8; zeros give the bias 7.
#[test]
fn q4f16_hand_vector() {
    let w = group_with(&[0.7, -0.7, 0.2, 0.1], 32);
    let p = mlc(WeightFormat::Q4F16, &w, 1, 32);
    assert_eq!(scales(&p), vec![f16::from_bits(0x2E67)]);
    assert_eq!(
        p.codes,
        vec![0x7777_890E, 0x7777_7777, 0x7777_7777, 0x7777_7777]
    );
    assert_eq!(p.scale_words(), vec![0x2E67]);
}

/// Same scale (f16(0.3) / 3 = 0x2E67); codes 6, 0, 4 then 3s, ten 3-bit codes per word.
#[test]
fn q3f16_hand_vector() {
    let w = group_with(&[0.3, -0.3, 0.1], 40);
    let p = mlc(WeightFormat::Q3F16, &w, 1, 40);
    assert_eq!(scales(&p), vec![f16::from_bits(0x2E67)]);
    assert_eq!(
        p.codes,
        vec![0x1B6D_B706, 0x1B6D_B6DB, 0x1B6D_B6DB, 0x1B6D_B6DB]
    );
}

#[test]
fn f16_hand_vector() {
    let p = PackedWeight::quantize(WeightFormat::F16, &[1.0, -2.0, 0.5], 1, 3).unwrap();
    // Rows are whole 16-byte segments: the fourth weight onwards is zero padding.
    assert_eq!(p.codes, vec![0xC000_3C00, 0x0000_3800, 0, 0]);
    assert!(p.scales.is_empty());
    assert_eq!(p.dequantize(), vec![1.0, -2.0, 0.5]);
}

fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

/// Each weight comes back within half a quantization step (plus f16 rounding of the
/// scale and the input), or, when MinError clips it, within its distance to the largest
/// code; for K both a multiple of the group and not.
#[test]
fn round_trip_error_is_half_a_step() {
    for format in [WeightFormat::Q4F16, WeightFormat::Q3F16] {
        let spec = format.group_spec().unwrap();
        let m = spec.max_int as f32;
        for options in ALL_OPTIONS {
            for cols in [spec.group_size * 3, 576, 100, 7] {
                let rows = 5;
                let w = pseudo_random(rows * cols, cols as u32);
                let p = PackedWeight::quantize_with(format, &w, rows, cols, options).unwrap();
                assert_eq!(p.codes.len(), rows * format.code_words_per_row(cols));
                assert_eq!(p.scales.len(), rows * cols.div_ceil(spec.group_size));
                let back = p.dequantize();
                for (i, (&a, &b)) in w.iter().zip(&back).enumerate() {
                    let scale = p
                        .scale_f16(
                            (i / cols) * format.scale_halves_per_row(cols)
                                + (i % cols) / spec.group_size,
                        )
                        .to_f32();
                    let bound = (scale * 0.5).max(a.abs() - m * scale);
                    assert!(
                        (a - b).abs() <= bound + 2e-3 * a.abs() + 1e-3,
                        "{format:?} {options:?} K={cols}: weight {i} {a} came back {b} (scale {scale})"
                    );
                }
            }
        }
    }
}

/// MLC zero-pads the last group: the padding takes no part in the scale and packs as code 0.
#[test]
fn padded_group_codes_are_zero() {
    // K = 576 = 14 groups of 40 + 16: the 15th q3 group has 24 padded slots.
    let cols = 576;
    let w: Vec<f32> = (0..cols)
        .map(|k| if k >= 560 { 0.25 } else { 1.0 })
        .collect();
    let p = mlc(WeightFormat::Q3F16, &w, 1, cols);
    assert_eq!(p.codes.len(), 60);
    assert_eq!(p.scale_f16(14).to_f32(), f16::from_f32(0.25 / 3.0).to_f32());
    // Word 57 holds k = 570..580: 570..576 are real (code 6), 576..580 padding (code 0).
    let word = p.codes[57];
    for j in 0..10 {
        let code = (word >> (3 * j)) & 7;
        assert_eq!(code, if 570 + j < cols as u32 { 6 } else { 0 }, "slot {j}");
    }
    assert_eq!(&p.codes[58..], &[0, 0]);
}

/// All zeros, or all too small for any nonzero f16 scale to reach: scale 0, code max_int.
#[test]
fn all_zero_group_dequantizes_to_zero() {
    for options in ALL_OPTIONS {
        for value in [0.0, -0.0, 1e-9, -2e-8, f32::from_bits(1)] {
            let p = PackedWeight::quantize_with(WeightFormat::Q4F16, &[value; 32], 1, 32, options)
                .unwrap();
            assert_eq!(scales(&p), [f16::ZERO], "{options:?} {value}");
            assert_eq!(p.codes, [0x7777_7777; 4], "{options:?} {value}");
            assert!(p.dequantize().iter().all(|&v| v == 0.0));
        }
    }
}

#[test]
fn wrong_length_is_an_error() {
    assert!(PackedWeight::quantize(WeightFormat::Q4F16, &[0.0; 31], 1, 32).is_err());
}

/// Roughly Gaussian (a sum of four uniforms), or heavy-tailed (a uniform cubed, times 4).
fn sample(n: usize, seed: u32, heavy: bool) -> Vec<f32> {
    let u = pseudo_random(4 * n, seed);
    u.chunks_exact(4)
        .map(|c| {
            if heavy {
                4.0 * c[0] * c[0] * c[0]
            } else {
                c.iter().sum::<f32>() * 0.5
            }
        })
        .collect()
}

/// Squared error of each group, in f64, against the f32 weights.
fn group_errors(p: &PackedWeight, w: &[f32]) -> Vec<f64> {
    let group = p.format.group_spec().unwrap().group_size;
    let back = p.dequantize();
    let mut out = Vec::new();
    for r in 0..p.rows {
        for g in (0..p.cols).step_by(group) {
            let end = (g + group).min(p.cols);
            let i = r * p.cols;
            out.push(
                w[i + g..i + end]
                    .iter()
                    .zip(&back[i + g..i + end])
                    .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
                    .sum(),
            );
        }
    }
    out
}

/// MinError is never worse than MaxAbs on any group (up to float rounding in the error
/// sums and near-ties in rounding, 1e-6 relative), and on average clearly better: at least
/// 10% less squared error for q4 and 20% for q3 on Gaussian rows, 5% and 12% heavy-tailed.
/// (Measured: 12.8% and 28% Gaussian, 7.5% and 20% Student-t with 3 degrees of freedom.)
#[test]
fn min_error_beats_max_abs() {
    for (format, gaussian_gain, heavy_gain) in [
        (WeightFormat::Q4F16, 0.10, 0.05),
        (WeightFormat::Q3F16, 0.20, 0.12),
    ] {
        let group = format.group_spec().unwrap().group_size;
        for heavy in [false, true] {
            for cols in [group * 4, 576, 100, 7] {
                let rows = 200;
                let w = sample(rows * cols, cols as u32 + heavy as u32, heavy);
                for scale_type in [ScaleType::F16, ScaleType::Bf16] {
                    let quantize = |rule| {
                        let options = QuantOptions { rule, scale_type };
                        PackedWeight::quantize_with(format, &w, rows, cols, options).unwrap()
                    };
                    let max_abs = group_errors(&quantize(ScaleRule::MaxAbs), &w);
                    let min_error = group_errors(&quantize(ScaleRule::MinError), &w);
                    for (g, (&a, &b)) in max_abs.iter().zip(&min_error).enumerate() {
                        assert!(
                            b <= a * (1.0 + 1e-6),
                            "{format:?} {scale_type:?} K={cols} heavy={heavy} group {g}: {b} > {a}"
                        );
                    }
                    let (a, b) = (max_abs.iter().sum::<f64>(), min_error.iter().sum::<f64>());
                    let gain = if heavy { heavy_gain } else { gaussian_gain };
                    // A K of 7 leaves 7-weight groups, where there is less to gain.
                    let gain = if cols < group { gain / 4.0 } else { gain };
                    assert!(
                        b <= a * (1.0 - gain),
                        "{format:?} {scale_type:?} K={cols} heavy={heavy}: {b} vs {a}"
                    );
                }
            }
        }
    }
}

/// One outlier 1.0 and 39 weights 0.25, q3: MaxAbs's 1/3 sends the 0.25s to 0.333 (error
/// 39 * 0.0833^2 = 0.27). The best is to clip the outlier: codes +3 and +1, least-squares
/// scale (3 * 1 + 39 * 0.25) / (9 + 39) = 0.265625, exact in f16 and bf16, error 0.0508.
#[test]
fn min_error_clips_an_outlier() {
    let mut w = vec![0.25f32; 40];
    w[0] = 1.0;
    for scale_type in [ScaleType::F16, ScaleType::Bf16] {
        let options = QuantOptions {
            rule: ScaleRule::MinError,
            scale_type,
        };
        let p = PackedWeight::quantize_with(WeightFormat::Q3F16, &w, 1, 40, options).unwrap();
        assert_eq!(scales(&p), [f16::from_f32(0.265625)]);
        // Code 6 (+3) then 4s (+1), ten 3-bit codes per word.
        assert_eq!(
            p.codes,
            [0x2492_4926, 0x2492_4924, 0x2492_4924, 0x2492_4924]
        );
        let err: f64 = group_errors(&p, &w).iter().sum();
        assert!((err - 0.05078125).abs() < 1e-9, "{err}");
    }
    let p = mlc(WeightFormat::Q3F16, &w, 1, 40);
    assert_eq!(scales(&p), [f16::from_f32(1.0 / 3.0)]);
}

/// The last group's padding is code 0 whatever the rule, and takes no part in the scale: the
/// real weights come out as if the group were filled with zeros.
#[test]
fn min_error_padding_is_code_zero() {
    for format in [WeightFormat::Q4F16, WeightFormat::Q3F16] {
        let spec = format.group_spec().unwrap();
        let (cols, full) = (100, 100usize.div_ceil(spec.group_size) * spec.group_size);
        let w = sample(cols, 9, false);
        let mut padded = w.clone();
        padded.resize(full, 0.0);
        for options in ALL_OPTIONS {
            let p = PackedWeight::quantize_with(format, &w, 1, cols, options).unwrap();
            let q = PackedWeight::quantize_with(format, &padded, 1, full, options).unwrap();
            assert_eq!(p.scales, q.scales, "{format:?} {options:?}");
            let code = |p: &PackedWeight, k: usize| {
                let word = p.codes[k / spec.codes_per_word];
                (word >> ((k % spec.codes_per_word) as u32 * spec.bits)) & ((1 << spec.bits) - 1)
            };
            for k in 0..full {
                let want = if k < cols { code(&q, k) } else { 0 };
                assert_eq!(code(&p, k), want, "{format:?} {options:?} k={k}");
            }
        }
    }
}

/// Bf16 scales survive f16 -> f32 -> bf16 unchanged, at any magnitude.
#[test]
fn bf16_scales_are_exact_in_bf16() {
    for format in [WeightFormat::Q4F16, WeightFormat::Q3F16] {
        for magnitude in [1e-5f32, 1e-3, 1.0, 1e3, 3e4] {
            let w: Vec<f32> = sample(64 * 96, 3, true)
                .iter()
                .map(|x| x * magnitude)
                .collect();
            for rule in [ScaleRule::MaxAbs, ScaleRule::MinError] {
                let options = QuantOptions {
                    rule,
                    scale_type: ScaleType::Bf16,
                };
                let p = PackedWeight::quantize_with(format, &w, 64, 96, options).unwrap();
                for s in scales(&p) {
                    let f = s.to_f32();
                    assert!(f.is_finite() && f >= 0.0);
                    assert_eq!(half::bf16::from_f32(f).to_f32(), f, "{format:?} {rule:?}");
                }
            }
        }
    }
}

/// Large and tiny magnitudes (down into f16's subnormal scales) stay finite and close.
#[test]
fn min_error_handles_extreme_magnitudes() {
    for format in [WeightFormat::Q4F16, WeightFormat::Q3F16] {
        for magnitude in [1e-6f32, 1e-4, 1e4, 5e4] {
            let w: Vec<f32> = sample(8 * 80, 5, false)
                .iter()
                .map(|x| x * magnitude)
                .collect();
            let p = PackedWeight::quantize(format, &w, 8, 80).unwrap();
            assert!(scales(&p).iter().all(|s| s.is_finite()));
            let err: f64 = group_errors(&p, &w).iter().sum();
            let energy: f64 = w.iter().map(|&x| (x as f64).powi(2)).sum();
            // Subnormal f16 scales (below 6.1e-5) are coarse, hence the looser bound there.
            let bound = if magnitude < 1e-5 { 0.5 } else { 0.1 };
            assert!(
                err <= energy * bound,
                "{format:?} {magnitude}: {err} vs {energy}"
            );
        }
    }
}

/// The same input gives the same bytes, however the rows are split over threads.
#[test]
fn quantize_is_deterministic() {
    let (rows, cols) = (300, 576);
    let w = sample(rows * cols, 11, true);
    for format in [WeightFormat::Q4F16, WeightFormat::Q3F16] {
        for options in ALL_OPTIONS {
            let whole = PackedWeight::quantize_with(format, &w, rows, cols, options).unwrap();
            assert_eq!(
                whole,
                PackedWeight::quantize_with(format, &w, rows, cols, options).unwrap()
            );
            // Row by row, on this thread.
            let (mut codes, mut scales) = (Vec::new(), Vec::new());
            for row in w.chunks(cols) {
                let p = PackedWeight::quantize_with(format, row, 1, cols, options).unwrap();
                codes.extend(p.codes);
                scales.extend(p.scales);
            }
            assert_eq!((whole.codes, whole.scales), (codes, scales), "{options:?}");
        }
    }
}

/// Non-finite weights are an error for the group formats (F16 stores them as they are);
/// so is a scale past f16's range. MaxAbs with F16 rounds weights to f16 first, as MLC
/// does, so it refuses weights beyond 65504; MinError only needs the scale to fit.
#[test]
fn non_finite_and_overflow_are_errors() {
    for format in [WeightFormat::Q4F16, WeightFormat::Q3F16] {
        for options in ALL_OPTIONS {
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut w = vec![0.5f32; 3 * 50];
                w[50 + 42] = bad;
                match PackedWeight::quantize_with(format, &w, 3, 50, options) {
                    Err(Error::Invalid(msg)) => {
                        assert_eq!(msg, "weight (1, 42) is not finite")
                    }
                    other => panic!("{format:?} {options:?} {bad}: {other:?}"),
                }
            }
            let huge = vec![1e7f32; 50];
            assert!(matches!(
                PackedWeight::quantize_with(format, &huge, 1, 50, options),
                Err(Error::Invalid(_))
            ));
        }
        let big = vec![7e4f32; 40];
        assert!(PackedWeight::quantize_with(format, &big, 1, 40, MLC).is_err());
        let p = PackedWeight::quantize(format, &big, 1, 40).unwrap();
        assert!(p.dequantize().iter().all(|&v| (v - 7e4).abs() < 100.0));
    }
    let p = PackedWeight::quantize(WeightFormat::F16, &[f32::NAN, f32::INFINITY], 1, 2).unwrap();
    assert!(p.dequantize()[0].is_nan() && p.dequantize()[1] == f32::INFINITY);
}

/// Halfway cases round to even, as MLC's TVM `round` (nearbyint) does: with scale exactly
/// 1.0 (max 7.0 / 7), 0.5 + 7 = 7.5 -> 8, 1.5 + 7 = 8.5 -> 8, -0.5 + 7 = 6.5 -> 6,
/// 2.5 + 7 = 9.5 -> 10; packed lowest nibble first.
#[test]
fn halfway_codes_round_to_even() {
    let w = group_with(&[7.0, 0.5, 1.5, -0.5, 2.5], 32);
    let p = mlc(WeightFormat::Q4F16, &w, 1, 32);
    assert_eq!(scales(&p), vec![f16::ONE]);
    assert_eq!(p.codes[0], 0x777A_688E);
}

/// Ten 3-bit codes fill 30 bits: the top two bits of every q3 word stay zero, whatever the
/// rule and however extreme the codes.
#[test]
fn q3_words_leave_the_top_two_bits_zero() {
    let w = pseudo_random(40 * 3 * 64, 11);
    for p in [
        mlc(WeightFormat::Q3F16, &w, 64, 120),
        PackedWeight::quantize(WeightFormat::Q3F16, &w, 64, 120).unwrap(),
    ] {
        assert!(
            p.codes.iter().any(|&c| c & 0x3800_0000 != 0),
            "codes reach bit 27"
        );
        assert!(p.codes.iter().all(|&c| c & 0xC000_0000 == 0));
    }
}

/// Interleaving a fused [gate; up] matrix puts gate row i at 2i and up row i at 2i + 1,
/// codes and scales alike, in every format.
#[test]
fn interleaved_halves_alternate_rows() {
    let (rows, cols) = (6, 100);
    let w = pseudo_random(rows * cols, 5);
    for format in WeightFormat::PACKABLE {
        let p = PackedWeight::quantize(format, &w, rows, cols).unwrap();
        let mixed = p.interleave_halves().unwrap();
        let (dense, mixed_dense) = (p.dequantize(), mixed.dequantize());
        for i in 0..rows / 2 {
            let row = |d: &[f32], r: usize| d[r * cols..(r + 1) * cols].to_vec();
            assert_eq!(row(&mixed_dense, 2 * i), row(&dense, i), "{format:?}");
            assert_eq!(row(&mixed_dense, 2 * i + 1), row(&dense, rows / 2 + i));
        }
        assert_eq!(mixed.byte_size(), p.byte_size());
    }
    let odd = PackedWeight::quantize(WeightFormat::Q4F16, &w[..3 * cols], 3, cols).unwrap();
    assert!(odd.interleave_halves().is_err());
}
