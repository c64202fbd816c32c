use half::f16;

use super::*;

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
    let p = PackedWeight::quantize(WeightFormat::Q4F16, &w, 1, 32).unwrap();
    assert_eq!(p.scales, vec![f16::from_bits(0x2E67)]);
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
    let p = PackedWeight::quantize(WeightFormat::Q3F16, &w, 1, 40).unwrap();
    assert_eq!(p.scales, vec![f16::from_bits(0x2E67)]);
    assert_eq!(
        p.codes,
        vec![0x1B6D_B706, 0x1B6D_B6DB, 0x1B6D_B6DB, 0x1B6D_B6DB]
    );
}

#[test]
fn f16_hand_vector() {
    let p = PackedWeight::quantize(WeightFormat::F16, &[1.0, -2.0, 0.5], 1, 3).unwrap();
    assert_eq!(p.codes, vec![0xC000_3C00, 0x0000_3800]);
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
/// scale and the input), for K both a multiple of the group and not.
#[test]
fn round_trip_error_is_half_a_step() {
    for format in [WeightFormat::Q4F16, WeightFormat::Q3F16] {
        let spec = format.group_spec().unwrap();
        for cols in [spec.group_size * 3, 576, 100, 7] {
            let rows = 5;
            let w = pseudo_random(rows * cols, cols as u32);
            let p = PackedWeight::quantize(format, &w, rows, cols).unwrap();
            assert_eq!(p.codes.len(), rows * format.words_per_row(cols));
            assert_eq!(p.scales.len(), rows * cols.div_ceil(spec.group_size));
            let back = p.dequantize();
            for (i, (&a, &b)) in w.iter().zip(&back).enumerate() {
                let scale = p.scales
                    [(i / cols) * format.scales_per_row(cols) + (i % cols) / spec.group_size]
                    .to_f32();
                assert!(
                    (a - b).abs() <= scale * 0.5 + 2e-3 * a.abs() + 1e-3,
                    "{format:?} K={cols}: weight {i} {a} came back {b} (scale {scale})"
                );
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
    let p = PackedWeight::quantize(WeightFormat::Q3F16, &w, 1, cols).unwrap();
    assert_eq!(p.codes.len(), 60);
    assert_eq!(p.scales[14].to_f32(), f16::from_f32(0.25 / 3.0).to_f32());
    // Word 57 holds k = 570..580: 570..576 are real (code 6), 576..580 padding (code 0).
    let word = p.codes[57];
    for j in 0..10 {
        let code = (word >> (3 * j)) & 7;
        assert_eq!(code, if 570 + j < cols as u32 { 6 } else { 0 }, "slot {j}");
    }
    assert_eq!(&p.codes[58..], &[0, 0]);
}

#[test]
fn all_zero_group_dequantizes_to_zero() {
    let p = PackedWeight::quantize(WeightFormat::Q4F16, &[0.0; 32], 1, 32).unwrap();
    assert!(p.dequantize().iter().all(|&v| v == 0.0));
}

#[test]
fn wrong_length_is_an_error() {
    assert!(PackedWeight::quantize(WeightFormat::Q4F16, &[0.0; 31], 1, 32).is_err());
}
