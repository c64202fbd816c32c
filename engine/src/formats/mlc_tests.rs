//! Tests of `formats::mlc`. Expected values are worked out by hand (bit patterns, shard
//! plans) or with Python's own `json` and `hashlib` (the index text, one md5), never by the
//! code under test.

use super::*;

const MIB: usize = 1 << 20;

/// `r` must fail with a one-line error mentioning every needle.
fn err_mentions<T: std::fmt::Debug>(r: Result<T>, needles: &[&str]) -> Error {
    let e = match r {
        Ok(v) => panic!("expected an error mentioning {needles:?}, got Ok({v:?})"),
        Err(e) => e,
    };
    let msg = e.to_string();
    assert!(!msg.contains('\n'), "not one line: {msg:?}");
    for n in needles {
        assert!(msg.contains(n), "{msg:?} does not mention {n:?}");
    }
    e
}

// ----- bf16 -------------------------------------------------------------------------------

#[test]
fn bf16_rounds_to_nearest_even_like_tvm() {
    let b = |bits: u32| f32_to_bf16_bits(f32::from_bits(bits));
    assert_eq!(b(0x3F80_0000), 0x3F80, "1.0 is exact");
    assert_eq!(b(0x3F80_7FFF), 0x3F80, "just under half: down");
    assert_eq!(b(0x3F80_8001), 0x3F81, "just over half: up");
    assert_eq!(b(0x3F80_8000), 0x3F80, "tie, 0x3F80 is even: down");
    assert_eq!(b(0x3F81_8000), 0x3F82, "tie, 0x3F81 is odd: up to even");
    assert_eq!(
        b(0xBF81_8000),
        0xBF82,
        "negative tie rounds the magnitude up to even"
    );
    assert_eq!(
        b(0x3FFF_FFFF),
        0x4000,
        "rounding carries into the exponent: 2.0"
    );
    assert_eq!(b(0x8000_0000), 0x8000, "-0.0 stays -0.0");
    assert_eq!(b(0x0001_8000), 0x0002, "subnormal tie to even");
    assert_eq!(b(0x7F7E_FFFF), 0x7F7F, "below the limit still rounds");
    // 3.14159274 = 0x40490FDB: low half 0x0FDB < 0x8000, so it truncates to 3.140625.
    assert_eq!(f32_to_bf16_bits(std::f32::consts::PI), 0x4049);
    assert_eq!(bf16_bits_to_f32(0x4049), 3.140625);
}

#[test]
fn bf16_inf_nan_and_overflow_truncate_like_tvm() {
    let b = |bits: u32| f32_to_bf16_bits(f32::from_bits(bits));
    assert_eq!(b(0x7F80_0000), 0x7F80, "+inf");
    assert_eq!(b(0xFF80_0000), 0xFF80, "-inf");
    assert_eq!(b(0x7FC0_0000), 0x7FC0, "quiet NaN keeps its top bits");
    assert_eq!(b(0xFFC1_2345), 0xFFC1, "negative NaN truncates");
    // TVM truncates NaN: one whose payload is only in the low half becomes infinity.
    assert_eq!(b(0x7F80_0001), 0x7F80);
    // At or above the largest bf16 (0x7F7F0000) TVM truncates instead of rounding to inf.
    assert_eq!(
        b(0x7F7F_FFFF),
        0x7F7F,
        "f32::MAX becomes the largest bf16, not inf"
    );
    assert_eq!(b(0x7F7F_8000), 0x7F7F, "a tie above the limit truncates");
    assert_eq!(b(0xFF7F_FFFF), 0xFF7F, "-f32::MAX");
    assert_eq!(b(0x7F7F_0000), 0x7F7F, "the limit itself");
}

// ----- shard planning (TVM's filling rule, cap 32 MiB) ------------------------------------

#[test]
fn plan_packs_small_tensors_up_to_the_cap() {
    // 4 x (8 MiB - 4) = 32 MiB - 16 < cap, + 4 more bytes = 32 MiB - 12 < cap: one shard.
    let sizes = [8 * MIB - 4, 8 * MIB - 4, 8 * MIB - 4, 8 * MIB - 4, 4];
    let offsets = [0, 8 * MIB - 4, 16 * MIB - 8, 24 * MIB - 12, 32 * MIB - 16];
    let want: Vec<_> = offsets.iter().map(|&o| (0, o)).collect();
    assert_eq!(plan_shards(&sizes, SHARD_CAP), want);
    // 12 more bytes would make exactly 32 MiB: that closes the shard first.
    assert_eq!(
        plan_shards(
            &[8 * MIB - 4, 8 * MIB - 4, 8 * MIB - 4, 8 * MIB - 4, 16],
            SHARD_CAP
        )[4],
        (1, 0)
    );
}

#[test]
fn plan_never_fills_a_shard_exactly() {
    // 3 x 8 MiB pending; the 4th would make exactly 32 MiB (`>=` cap), and 8 MiB is under
    // half the cap, so shard 0 closes at 24 MiB and the 4th starts shard 1.
    assert_eq!(
        plan_shards(&[8 * MIB; 5], SHARD_CAP),
        vec![(0, 0), (0, 8 * MIB), (0, 16 * MIB), (1, 0), (1, 8 * MIB)]
    );
}

#[test]
fn plan_gives_big_tensors_their_own_shard_in_write_order() {
    let sizes = [
        MIB,          // pending 1 MiB
        20 * MIB,     // 21 < 32: appended, big or not
        2 * MIB,      // 23
        16 * MIB,     // 39 >= 32 and 16 MiB is half the cap: own shard, numbered 0
        40 * MIB,     // own shard 1, any size
        MIB,          // 24: still the same pending shard
        16 * MIB - 1, // 40 >= 32 but under half the cap: pending closes as shard 2
    ];
    assert_eq!(
        plan_shards(&sizes, SHARD_CAP),
        vec![
            (2, 0),
            (2, MIB),
            (2, 21 * MIB),
            (0, 0),
            (1, 0),
            (2, 23 * MIB),
            (3, 0)
        ]
    );
    // Nothing pending: a tensor under the cap is appended and may be followed until the cap
    // would be reached; one at the cap goes alone.
    assert_eq!(
        plan_shards(&[31 * MIB, 1], SHARD_CAP),
        vec![(0, 0), (0, 31 * MIB)]
    );
    assert_eq!(
        plan_shards(&[31 * MIB, MIB], SHARD_CAP),
        vec![(0, 0), (1, 0)]
    );
    assert_eq!(plan_shards(&[32 * MIB, 1], SHARD_CAP), vec![(0, 0), (1, 0)]);
    assert_eq!(plan_shards(&[40 * MIB], SHARD_CAP), vec![(0, 0)]);
    assert_eq!(plan_shards(&[], SHARD_CAP), vec![]);
}

// ----- builder in memory ------------------------------------------------------------------

#[test]
fn builder_fills_shards_as_planned_and_hands_them_over_in_order() {
    // Cap 64 bytes: the same rule as 32 MiB, small enough to check every byte.
    let lens = [3usize, 5, 8, 1, 20, 2, 9, 4, 16, 1]; // u32 element counts
    let sizes: Vec<usize> = lens.iter().map(|n| n * 4).collect();
    let plan = plan_shards(&sizes, 64);
    // By hand, bytes 12 20 32 4 80 8 36 16 64 4: 12, 20 pending (32); 32 makes 64 >= cap
    // and is half of it: own shard 0; 4 (36); 80: own shard 1; 8 (44); 36: 80 >= cap and
    // 72 >= cap: own shard 2; 16 (60); 64: own shard 3; 4: 64 >= cap but 8 < cap, so the
    // pending 60 bytes close as shard 4 and 4 starts shard 5, closed by finish.
    assert_eq!(
        plan,
        vec![
            (4, 0),
            (4, 12),
            (0, 0),
            (4, 32),
            (1, 0),
            (4, 36),
            (2, 0),
            (4, 44),
            (3, 0),
            (5, 0)
        ]
    );
    let mut b = TensorCacheBuilder::with_shard_cap(Vec::new(), 64);
    let mut inputs = Vec::new();
    let mut next = 1u32;
    for (i, &n) in lens.iter().enumerate() {
        let data: Vec<u32> = (0..n as u32).map(|k| next + k).collect();
        next += n as u32;
        b.add_u32(&format!("t{i}"), &[n], &data).unwrap();
        inputs.push(data);
    }
    let done = b.finish(100).unwrap();
    let names: Vec<&str> = done.sink.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        names,
        [
            "params_shard_0.bin",
            "params_shard_1.bin",
            "params_shard_2.bin",
            "params_shard_3.bin",
            "params_shard_4.bin",
            "params_shard_5.bin"
        ]
    );
    for (i, data) in inputs.iter().enumerate() {
        let rec = done.index.get(&format!("t{i}")).unwrap();
        assert_eq!((rec.shard, rec.byte_offset), plan[i], "t{i}");
        let shard = &done.sink[rec.shard].1;
        assert_eq!(
            &rec.to_u32(rec.slice(shard).unwrap()).unwrap(),
            data,
            "t{i}"
        );
    }
    assert_eq!(done.index.shards.len(), 6);
    for (n, (rec, (_, bytes))) in done.index.shards.iter().zip(&done.sink).enumerate() {
        assert_eq!(rec.nbytes, bytes.len());
        assert_eq!(rec.md5.as_deref(), Some(md5_hex(bytes).as_str()));
        done.index.check_shard(n, bytes).unwrap();
    }
    assert_eq!(done.index.shards[4].nbytes, 60);
    // The returned index is what a reader makes of the written text.
    assert_eq!(
        TensorCache::parse(done.index_json.as_bytes(), "built").unwrap(),
        done.index
    );
}

#[test]
fn builder_refuses_duplicates_and_wrong_lengths() {
    let mut b = TensorCacheBuilder::new(Vec::new());
    b.add_u32("a", &[2], &[1, 2]).unwrap();
    err_mentions(b.add_u32("a", &[1], &[1]), &["\"a\"", "twice"]);
    err_mentions(
        b.add_f16("b", &[2, 2], &[half::f16::ONE; 3]),
        &["\"b\"", "[2, 2]"],
    );
    err_mentions(
        b.add_f32_as_bf16("c", &[1 << 40, 1 << 40], &[1.0]),
        &["\"c\""],
    );
    err_mentions(b.finish(0), &["0"]);
}

#[test]
fn index_json_is_what_python_json_dump_writes() {
    let mut b = TensorCacheBuilder::new(Vec::new());
    b.add_u32("w\u{e9}\"", &[2], &[1, 2]).unwrap();
    b.add_f32_as_bf16("s", &[], &[1.0]).unwrap();
    let done = b.finish(3).unwrap();
    // Printed by Python 3's json.dumps(..., indent=4) for the same dicts; the md5 of the
    // shard bytes 01 00 00 00 02 00 00 00 80 3f from Python's hashlib.
    let want = r#"{
    "metadata": {
        "ParamSize": 2,
        "ParamBytes": 12.0,
        "BitsPerParam": 32.0
    },
    "records": [
        {
            "dataPath": "params_shard_0.bin",
            "format": "raw-shard",
            "nbytes": 10,
            "records": [
                {
                    "name": "w\u00e9\"",
                    "shape": [
                        2
                    ],
                    "dtype": "uint32",
                    "format": "f32-to-bf16",
                    "nbytes": 8,
                    "byteOffset": 0
                },
                {
                    "name": "s",
                    "shape": [],
                    "dtype": "float32",
                    "format": "f32-to-bf16",
                    "nbytes": 2,
                    "byteOffset": 8
                }
            ],
            "md5sum": "fda70f4a32a2ae538fb05b60b1464e33"
        }
    ]
}"#;
    assert_eq!(done.index_json, want);
    assert_eq!(done.sink[0].1, [1, 0, 0, 0, 2, 0, 0, 0, 0x80, 0x3F]);
    assert_eq!(done.index.metadata["ParamBytes"], 12.0);
}

#[test]
fn floats_are_spelled_as_python_repr() {
    // Each right-hand side is Python 3's repr of the same float.
    for (x, want) in [
        (75497472.0, "75497472.0"),
        (4.5, "4.5"),
        (1e16, "1e+16"),
        (1e22, "1e+22"),
        (1.5e-5, "1.5e-05"),
        (0.0001, "0.0001"),
        (0.1 + 0.2, "0.30000000000000004"),
        (123456789.0 * 8.0 / 1000.0, "987654.312"),
    ] {
        assert_eq!(python_float(x), want);
    }
}

#[test]
fn md5_matches_known_vectors() {
    assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
    assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
}

// ----- parsing ----------------------------------------------------------------------------

/// A valid index: shard 0 (16 bytes, no md5) holds `w` and `s`, shard 1 (4 bytes) holds `h`
/// with the md5 of `ab\x00\x3c`... tests replace one piece of it at a time.
const INDEX: &str = r#"{"metadata": {"ParamSize": 3},
 "records": [
  {"dataPath": "params_shard_0.bin", "format": "raw-shard", "nbytes": 16, "records": [
    {"name": "w", "shape": [2, 1], "dtype": "uint32", "format": "f32-to-bf16", "nbytes": 8, "byteOffset": 0},
    {"name": "s", "shape": [4], "dtype": "float32", "format": "f32-to-bf16", "nbytes": 8, "byteOffset": 8}]},
  {"dataPath": "params_shard_1.bin", "format": "raw-shard", "nbytes": 4, "records": [
    {"name": "h", "shape": [2], "dtype": "float16", "format": "f32-to-bf16", "nbytes": 4, "byteOffset": 0}],
   "md5sum": "MD5"}]}"#;

/// The bytes of shard 0 and shard 1 for [`INDEX`].
fn index_shards() -> [Vec<u8>; 2] {
    let mut s0 = Vec::new();
    s0.extend(7u32.to_le_bytes());
    s0.extend(0xDEAD_BEEFu32.to_le_bytes());
    for bits in [0x3F80u16, 0xC000, 0x4049, 0x7F80] {
        s0.extend(bits.to_le_bytes()); // 1.0, -2.0, 3.140625, inf
    }
    let s1 = [0x00u8, 0x3C, 0x00, 0xB8].to_vec(); // f16 1.0, -0.5
    [s0, s1]
}

fn index_text() -> String {
    INDEX.replace("MD5", &md5_hex(&index_shards()[1]))
}

/// [`INDEX`] with `from` replaced by `to`; `from` must be there.
fn index_with(from: &str, to: &str) -> String {
    let text = index_text();
    assert!(text.contains(from), "{from:?} not in the index");
    text.replacen(from, to, 1)
}

fn parse(text: &str) -> Result<TensorCache> {
    TensorCache::parse(text.as_bytes(), "idx.json")
}

#[test]
fn parses_records_shards_and_metadata() {
    let c = parse(&index_text()).unwrap();
    assert_eq!(c.shards.len(), 2);
    assert_eq!(c.shards[0].md5, None);
    assert_eq!(
        c.shards[1].md5.as_deref(),
        Some(md5_hex(&index_shards()[1]).as_str())
    );
    assert_eq!(c.metadata["ParamSize"], 3);
    let s = c.get("s").unwrap();
    assert_eq!(
        (s.shard, s.byte_offset, s.nbytes, s.dtype, s.bf16_on_disk),
        (0, 8, 8, DType::F32, true)
    );
    let h = c.get("h").unwrap();
    assert_eq!((h.shard, h.dtype, h.bf16_on_disk), (1, DType::F16, false));
    assert!(c.get("x").is_none());
    // A "raw" float32 is four bytes a value.
    let raw = index_with(
        r#""dtype": "float32", "format": "f32-to-bf16", "nbytes": 8"#,
        r#""dtype": "float32", "format": "raw", "nbytes": 8"#,
    )
    .replace(r#""shape": [4]"#, r#""shape": [2]"#);
    let r = parse(&raw).unwrap();
    assert!(!r.get("s").unwrap().bf16_on_disk);
}

#[test]
fn decodes_each_dtype() {
    let c = parse(&index_text()).unwrap();
    let [s0, s1] = index_shards();
    let w = c.get("w").unwrap();
    assert_eq!(w.to_u32(w.slice(&s0).unwrap()).unwrap(), [7, 0xDEAD_BEEF]);
    let s = c.get("s").unwrap();
    assert_eq!(
        s.to_f32(s.slice(&s0).unwrap()).unwrap(),
        [1.0, -2.0, 3.140625, f32::INFINITY]
    );
    let h = c.get("h").unwrap();
    assert_eq!(h.to_f32(h.slice(&s1).unwrap()).unwrap(), [1.0, -0.5]);
    // bfloat16 and raw float32 through a hand-made record.
    let bf = TensorRecord {
        name: "b".into(),
        shape: vec![1],
        dtype: DType::BF16,
        bf16_on_disk: false,
        shard: 0,
        byte_offset: 0,
        nbytes: 2,
    };
    assert_eq!(bf.to_f32(&[0x49, 0x40]).unwrap(), [3.140625]);
    let f = TensorRecord {
        dtype: DType::F32,
        nbytes: 4,
        ..bf.clone()
    };
    assert_eq!(f.to_f32(&0.1f32.to_le_bytes()).unwrap(), [0.1]);
    err_mentions(w.to_f32(&s0[..8]), &["\"w\"", "uint32"]);
    err_mentions(s.to_u32(&s0[8..]), &["\"s\"", "float32"]);
    err_mentions(w.to_u32(&s0[..7]), &["\"w\"", "7"]);
    err_mentions(h.slice(&s1[..3]), &["\"h\"", "3 bytes"]);
}

#[test]
fn check_shard_checks_size_and_md5() {
    let c = parse(&index_text()).unwrap();
    let [s0, s1] = index_shards();
    c.check_shard(0, &s0).unwrap(); // no md5: size only
    c.check_shard(1, &s1).unwrap();
    err_mentions(
        c.check_shard(0, &s0[..15]),
        &["params_shard_0.bin", "15", "16"],
    );
    err_mentions(
        c.check_shard(1, &[0, 0x3C, 0, 0xB9]),
        &["params_shard_1.bin", "md5"],
    );
    err_mentions(c.check_shard(2, &[]), &["shard 2"]);
}

#[test]
fn rejects_invalid_json() {
    err_mentions(parse(&index_text()[..50]), &["idx.json", "JSON"]);
    err_mentions(parse("[]"), &["idx.json", "object"]);
    err_mentions(parse("{}"), &["idx.json", "records"]);
}

#[test]
fn rejects_byte_offset_past_the_end() {
    err_mentions(
        parse(&index_with(r#""byteOffset": 8"#, r#""byteOffset": 9"#)),
        &["idx.json", "\"s\"", "past the end", "16 bytes"],
    );
    err_mentions(
        parse(&index_with(
            r#""byteOffset": 8"#,
            r#""byteOffset": 18446744073709551615"#,
        )),
        &["idx.json", "\"s\""],
    );
}

#[test]
fn rejects_nbytes_disagreeing_with_shape() {
    err_mentions(
        parse(&index_with(r#""shape": [2, 1]"#, r#""shape": [3, 1]"#)),
        &["idx.json", "\"w\"", "nbytes 8", "[3, 1]"],
    );
    // float32 as f32-to-bf16 is 2 bytes a value: 16 bytes for 4 values is wrong, even in a
    // shard big enough to hold them.
    let four_bytes_each = index_with(
        r#""nbytes": 8, "byteOffset": 8"#,
        r#""nbytes": 16, "byteOffset": 8"#,
    )
    .replacen(r#""nbytes": 16"#, r#""nbytes": 24"#, 1);
    err_mentions(
        parse(&four_bytes_each),
        &["\"s\"", "nbytes 16", "(8 bytes)"],
    );
}

#[test]
fn rejects_absurd_counts_and_shapes() {
    err_mentions(
        parse(&index_with(
            r#""shape": [2, 1]"#,
            r#""shape": [1099511627776, 1099511627776]"#,
        )),
        &["idx.json", "\"w\"", "too large"],
    );
    err_mentions(
        parse(&index_with(
            r#""shape": [2, 1]"#,
            r#""shape": [1, 1, 1, 1, 1, 1, 1, 1, 2]"#,
        )),
        &["\"w\"", "9 dimensions"],
    );
    err_mentions(
        parse(&index_with(r#""shape": [2, 1]"#, r#""shape": [2, -1]"#)),
        &["\"w\"", "shape"],
    );
    err_mentions(
        parse(&index_with(r#""nbytes": 16"#, r#""nbytes": 1e30"#)),
        &["idx.json", "params_shard_0.bin", "nbytes"],
    );
    let many_shards = format!(r#"{{"records": [{}0]}}"#, "0,".repeat(MAX_SHARDS));
    err_mentions(parse(&many_shards), &["idx.json", "65537 shards"]);
    let many_tensors = format!(
        r#"{{"records": [{{"dataPath": "a", "nbytes": 0, "records": [{}0]}}]}}"#,
        "0,".repeat(MAX_TENSORS)
    );
    err_mentions(
        parse(&many_tensors),
        &["idx.json", "more than 1048576 tensors"],
    );
}

#[test]
fn rejects_path_traversal_in_data_path() {
    for bad in [
        "../params_shard_0.bin",
        "/etc/passwd",
        "sub/params_shard_0.bin",
        "..\\\\x.bin",
        "C:x.bin",
        "..",
        "",
    ] {
        err_mentions(
            parse(&index_with("params_shard_0.bin", bad)),
            &["idx.json", "not a plain file name"],
        );
    }
}

#[test]
fn rejects_duplicate_tensor_names_and_shards() {
    err_mentions(
        parse(&index_with(r#""name": "h""#, r#""name": "w""#)),
        &["idx.json", "\"w\"", "twice"],
    );
    err_mentions(
        parse(&index_with("params_shard_1.bin", "params_shard_0.bin")),
        &["idx.json", "params_shard_0.bin", "twice"],
    );
}

#[test]
fn rejects_unknown_dtype_and_format() {
    let e = err_mentions(
        parse(&index_with(r#""dtype": "float16""#, r#""dtype": "int8""#)),
        &["idx.json", "\"h\"", "\"int8\""],
    );
    assert!(matches!(e, Error::Unsupported(_)));
    err_mentions(
        parse(&index_with(
            r#""format": "f32-to-bf16", "nbytes": 4"#,
            r#""format": "q4", "nbytes": 4"#,
        )),
        &["\"h\"", "\"q4\""],
    );
    err_mentions(
        parse(&index_with(
            r#""format": "raw-shard""#,
            r#""format": "zip""#,
        )),
        &["params_shard_0.bin", "zip"],
    );
    err_mentions(
        parse(&index_with(&md5_hex(&index_shards()[1]), "1234")),
        &["params_shard_1.bin", "md5sum"],
    );
}

// ----- folders on disk --------------------------------------------------------------------

/// A fresh folder under the system temp dir, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("glim-mlc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, bytes: impl AsRef<[u8]>) {
        std::fs::write(self.0.join(name), bytes).unwrap();
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A folder holding [`INDEX`] (as `tensor-cache.json`, with `index` replacing it when given)
/// and its shards.
fn index_folder(name: &str, index: Option<&str>) -> TempDir {
    let dir = TempDir::new(name);
    dir.write(INDEX_FILE, index.map_or_else(index_text, str::to_string));
    let [s0, s1] = index_shards();
    dir.write("params_shard_0.bin", s0);
    dir.write("params_shard_1.bin", s1);
    dir
}

#[test]
fn folder_round_trip_u32_f16_bf16_f32() {
    let dir = TempDir::new("roundtrip");
    let out = dir.0.join("model");
    let mut w = TensorCacheWriter::create(&out).unwrap();
    // 20 MiB is appended (nothing pending); the 16 MiB one then overflows and goes alone to
    // shard 0; the pending shard becomes shard 1 at finish.
    let big: Vec<u32> = (0..(5 * MIB) as u32)
        .map(|i| i.wrapping_mul(2_654_435_761))
        .collect();
    w.add_u32("big", &[5, MIB], &big).unwrap();
    let halves = [1.0f32, -0.5, 65504.0, 0.0].map(half::f16::from_f32);
    w.add_f16("h", &[2, 2], &halves).unwrap();
    let alone: Vec<u32> = (0..(4 * MIB) as u32).rev().collect();
    w.add_u32("alone", &[4 * MIB], &alone).unwrap();
    let bf = [half::bf16::from_bits(0x4049), half::bf16::from_bits(0xC000)];
    w.add_bf16("b", &[2], &bf).unwrap();
    // 1.0 exact; 0x3F808000 is a tie that rounds down to 1.0; 0x3F818000 up to 0x3F82;
    // f32::MAX truncates to 0x7F7F.
    let floats = [
        1.0,
        f32::from_bits(0x3F80_8000),
        f32::from_bits(0x3F81_8000),
        f32::MAX,
    ];
    w.add_f32_as_bf16("f", &[4], &floats).unwrap();
    let written = w.finish(1_000_000).unwrap();

    let folder = MlcFolder::open(&out).unwrap();
    assert_eq!(folder.index, written);
    assert_eq!(folder.index_path, out.join(INDEX_FILE));
    let shard_of = |n: &str| folder.index.get(n).unwrap().shard;
    assert_eq!(
        [
            shard_of("big"),
            shard_of("h"),
            shard_of("alone"),
            shard_of("b"),
            shard_of("f")
        ],
        [1, 1, 0, 1, 1]
    );
    assert_eq!(folder.index.shards[0].nbytes, 16 * MIB);
    assert_eq!(folder.index.shards[1].nbytes, 20 * MIB + 8 + 4 + 8);
    assert_eq!(
        std::fs::metadata(out.join("params_shard_0.bin"))
            .unwrap()
            .len(),
        16 * MIB as u64
    );
    let le32 = |v: &[u32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    assert_eq!(folder.tensor_bytes("big").unwrap(), le32(&big));
    assert_eq!(folder.tensor_bytes("alone").unwrap(), le32(&alone));
    assert_eq!(
        folder.tensor_bytes("h").unwrap(),
        [0x00, 0x3C, 0x00, 0xB8, 0xFF, 0x7B, 0x00, 0x00]
    );
    assert_eq!(folder.tensor_bytes("b").unwrap(), [0x49, 0x40, 0x00, 0xC0]);
    assert_eq!(
        folder.tensor_bytes("f").unwrap(),
        [0x80, 0x3F, 0x80, 0x3F, 0x82, 0x3F, 0x7F, 0x7F]
    );
    let f = folder.record("f").unwrap();
    assert!(f.bf16_on_disk && f.dtype == DType::F32);
    assert_eq!(
        f.to_f32(folder.tensor_bytes("f").unwrap()).unwrap(),
        [
            1.0,
            1.0,
            f32::from_bits(0x3F82_0000),
            f32::from_bits(0x7F7F_0000)
        ]
    );
    // MLC's metadata: ParamSize tensors, ParamBytes in memory (f32 counts 4 bytes a value).
    let bytes = 36 * MIB + 8 + 4 + 16;
    assert_eq!(folder.index.metadata["ParamSize"], 5);
    assert_eq!(folder.index.metadata["ParamBytes"], bytes as f64);
    assert_eq!(
        folder.index.metadata["BitsPerParam"],
        bytes as f64 * 8.0 / 1e6
    );
}

#[test]
fn writer_writes_both_index_files_and_reader_prefers_the_new_name() {
    let dir = TempDir::new("names");
    let mut w = TensorCacheWriter::create(&dir.0).unwrap();
    w.add_u32("x", &[3], &[1, 2, 3]).unwrap();
    w.finish(3).unwrap();
    let new = std::fs::read(dir.0.join(INDEX_FILE)).unwrap();
    let old = std::fs::read(dir.0.join(LEGACY_INDEX_FILE)).unwrap();
    assert!(new.starts_with(b"{\n    \"metadata\""));
    assert_eq!(new, old);

    // A broken legacy file is never read while tensor-cache.json exists...
    dir.write(LEGACY_INDEX_FILE, "not json");
    let f = MlcFolder::open(&dir.0).unwrap();
    assert_eq!(f.index_path, dir.0.join(INDEX_FILE));
    assert_eq!(
        f.tensor_bytes("x").unwrap(),
        [1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0]
    );
    // ...and is what open reads (and reports) once tensor-cache.json is gone.
    std::fs::remove_file(dir.0.join(INDEX_FILE)).unwrap();
    err_mentions(MlcFolder::open(&dir.0), &[LEGACY_INDEX_FILE, "JSON"]);
    dir.write(LEGACY_INDEX_FILE, &old);
    let f = MlcFolder::open(&dir.0).unwrap();
    assert_eq!(f.index_path, dir.0.join(LEGACY_INDEX_FILE));
    assert_eq!(
        f.tensor_bytes("x").unwrap(),
        [1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0]
    );
}

#[test]
fn index_without_md5_is_accepted() {
    // 2023 folders: no md5sum on any shard, and the old index name.
    let no_md5 = index_with(r#""md5sum""#, r#""comment""#);
    assert!(!no_md5.contains("md5sum"));
    let dir = index_folder("nomd5", None);
    std::fs::remove_file(dir.0.join(INDEX_FILE)).unwrap();
    dir.write(LEGACY_INDEX_FILE, &no_md5);
    let f = MlcFolder::open(&dir.0).unwrap();
    assert!(f.index.shards.iter().all(|s| s.md5.is_none()));
    assert_eq!(f.tensor_bytes("h").unwrap(), [0x00, 0x3C, 0x00, 0xB8]);
}

#[test]
fn open_without_index_names_both_files() {
    let dir = TempDir::new("empty");
    err_mentions(
        MlcFolder::open(&dir.0),
        &[INDEX_FILE, LEGACY_INDEX_FILE, "glim-mlc-empty"],
    );
}

#[test]
fn open_reports_invalid_json_with_the_file() {
    let dir = index_folder("badjson", Some("{\"records\": ["));
    err_mentions(MlcFolder::open(&dir.0), &[INDEX_FILE, "JSON"]);
}

#[test]
fn missing_tensor_and_missing_shard_are_named() {
    let dir = index_folder("missing", None);
    let f = MlcFolder::open(&dir.0).unwrap();
    assert_eq!(f.tensor_bytes("w").unwrap(), &index_shards()[0][..8]);
    err_mentions(f.tensor_bytes("nope"), &["\"nope\"", INDEX_FILE]);
    std::fs::remove_file(dir.0.join("params_shard_1.bin")).unwrap();
    err_mentions(f.tensor_bytes("h"), &["params_shard_1.bin"]);
    // Shard 0 was mapped and checked before; it still serves.
    assert_eq!(f.tensor_bytes("s").unwrap(), &index_shards()[0][8..]);
}

#[test]
fn short_shard_is_named() {
    let dir = index_folder("short", None);
    dir.write("params_shard_0.bin", &index_shards()[0][..12]);
    let f = MlcFolder::open(&dir.0).unwrap();
    err_mentions(
        f.tensor_bytes("w"),
        &["params_shard_0.bin", "12 bytes", "16"],
    );
}

#[test]
fn bad_md5_is_named() {
    let dir = index_folder("md5", None);
    dir.write("params_shard_1.bin", [0x00u8, 0x3C, 0x00, 0xB9]);
    let f = MlcFolder::open(&dir.0).unwrap();
    err_mentions(f.tensor_bytes("h"), &["params_shard_1.bin", "md5"]);
    // The other shard has no md5 and is fine.
    assert_eq!(f.tensor_bytes("w").unwrap(), &index_shards()[0][..8]);
}

#[test]
fn read_json_reads_plain_names_only() {
    let dir = index_folder("json", None);
    dir.write("mlc-chat-config.json", r#"{"model_type": "llama"}"#);
    let f = MlcFolder::open(&dir.0).unwrap();
    assert_eq!(
        f.read_json("mlc-chat-config.json").unwrap()["model_type"],
        "llama"
    );
    err_mentions(
        f.read_json("../x.json"),
        &["\"../x.json\"", "plain file name"],
    );
    err_mentions(
        f.read_json("tokenizer.json"),
        &["tokenizer.json", "does not exist"],
    );
    dir.write("bad.json", "{");
    err_mentions(f.read_json("bad.json"), &["bad.json", "JSON"]);
}
