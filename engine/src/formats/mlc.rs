//! MLC-LLM's weight folders: the shard index (`tensor-cache.json`), its shards
//! (`params_shard_N.bin`), a reader and a writer. Pure format code: tensor names mean nothing
//! here.
//!
//! # Layout
//!
//! Checked against apache/tvm `python/tvm/contrib/tvmjs.py` (`dump_tensor_cache`,
//! `TensorCacheShardingManager`, `load_tensor_cache`), `src/runtime/vm/tensor_cache_support.cc`
//! and mlc-ai/mlc-llm `python/mlc_llm/interface/convert_weight.py`, which calls
//! `dump_tensor_cache(..., encode_format="f32-to-bf16")`:
//!
//! - The index is a JSON object `{"metadata": {...}, "records": [shard, ...]}`. A shard is
//!   `{"dataPath", "format": "raw-shard", "nbytes", "records": [tensor, ...], "md5sum"}`
//!   (`md5sum` is absent from 2023 folders); a tensor is `{"name", "shape", "dtype",
//!   "format", "nbytes", "byteOffset"}`. MLC's metadata is `ParamSize` (tensor count),
//!   `ParamBytes` (a float: elements x in-memory item size, 4 for float32 even when stored as
//!   bf16) and `BitsPerParam` (`ParamBytes * 8.0 / source parameter count`).
//! - `format` on a tensor is the writer's setting repeated on every record. It changes the
//!   bytes only for `dtype: "float32"` with `format: "f32-to-bf16"`: each value is then stored
//!   as the high half of its bits ([`f32_to_bf16_bits`]). Everything else is raw
//!   little-endian, row-major, packed back to back with no padding.
//! - Shards are filled in order. When the pending shard plus the next tensor would reach the
//!   cap (32 MiB: `pending + len >= cap`), a tensor of at least half the cap goes alone into a
//!   shard of its own, numbered next, while the pending shard stays open; a smaller tensor
//!   closes the pending shard first. So shard numbers follow write order, no shard but a
//!   single-tensor one ever reaches the cap, and readers look tensors up by name.
//! - TVM writes the index as `tensor-cache.json` (since Sept 2025; `ndarray-cache.json`
//!   before). glim's writer writes both names with identical content, like Python's
//!   `json.dump(..., indent=4)` would; the reader tries the new name first.
//!
//! # Where glim differs from TVM
//!
//! - The writer does not write TVM's third file, `tensor-cache-b16.json` (the same index with
//!   every float32 record relabelled `bfloat16`/`raw`); no loader reads it.
//! - TVM drops the records of zero-byte tensors left in a zero-byte pending shard at the
//!   end (it only commits a shard with bytes); glim writes that shard, empty, and keeps them.
//! - The reader refuses tensor formats other than `raw`/`f32-to-bf16` (TVM reads unknown
//!   ones as raw) and accepts a shard without `format` (TVM requires `raw-shard`).
//!
//! # Hostile files
//!
//! Every count, dimension and size in an index is bounded before anything is allocated for
//! it, arithmetic is checked, data paths must be plain file names, and every problem comes
//! back as one line naming the file (and tensor) at fault: `Error::Invalid`, or
//! `Error::Unsupported` for a dtype or format glim does not know.

use std::collections::{HashMap, HashSet};

use md5::{Digest, Md5};
use serde_json::Value;

use crate::error::{Error, Result};

/// The shard index, as TVM names it today.
pub const INDEX_FILE: &str = "tensor-cache.json";
/// The shard index's name before Sept 2025; same content.
pub const LEGACY_INDEX_FILE: &str = "ndarray-cache.json";
/// TVM's shard size cap (`shard_cap_mb=32`).
pub const SHARD_CAP: usize = 32 << 20;
/// The `format` MLC-LLM's converter writes on every tensor record.
pub const F32_TO_BF16: &str = "f32-to-bf16";
/// The other tensor `format` TVM knows: bytes as they are.
pub const RAW: &str = "raw";
/// The only shard `format` TVM reads.
pub const RAW_SHARD: &str = "raw-shard";
/// Most shards an index may list.
pub const MAX_SHARDS: usize = 1 << 16;
/// Most tensors an index may list.
pub const MAX_TENSORS: usize = 1 << 20;
/// Most dimensions a tensor may have.
pub const MAX_DIMS: usize = 8;
pub use super::MAX_JSON_BYTES;

/// The file name of shard `n`.
pub fn shard_file_name(n: usize) -> String {
    format!("params_shard_{n}.bin")
}

/// Element types glim reads from MLC folders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    U32,
    F16,
    BF16,
    F32,
}

impl DType {
    /// The type TVM calls `name` (`"uint32"`, `"float16"`, `"bfloat16"`, `"float32"`).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "uint32" => DType::U32,
            "float16" => DType::F16,
            "bfloat16" => DType::BF16,
            "float32" => DType::F32,
            _ => return None,
        })
    }

    /// TVM's name for the type.
    pub fn name(self) -> &'static str {
        match self {
            DType::U32 => "uint32",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::F32 => "float32",
        }
    }

    /// Bytes per element in memory.
    pub fn size(self) -> usize {
        match self {
            DType::U32 | DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }
}

/// One tensor of the index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorRecord {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: DType,
    /// `dtype` is float32 with format `f32-to-bf16`: 2 bytes per value on disk.
    pub bf16_on_disk: bool,
    /// Index into [`TensorCache::shards`].
    pub shard: usize,
    pub byte_offset: usize,
    /// Bytes on disk.
    pub nbytes: usize,
}

/// One shard file of the index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardRecord {
    /// A plain file name in the folder.
    pub data_path: String,
    /// The file's size.
    pub nbytes: usize,
    /// Lowercase hex md5 of the whole file, when the index has one.
    pub md5: Option<String>,
}

/// A parsed shard index.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorCache {
    /// By shard number.
    pub shards: Vec<ShardRecord>,
    /// In index order: by shard, then as listed within the shard.
    pub tensors: Vec<TensorRecord>,
    /// The index's `metadata` (`Value::Null` when absent).
    pub metadata: Value,
    by_name: HashMap<String, usize>,
}

/// `Error::Invalid("{file}: {msg}")`.
fn invalid(file: &str, msg: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{file}: {msg}"))
}

/// A non-negative JSON integer that fits `usize`.
fn get_usize(
    obj: &serde_json::Map<String, Value>,
    key: &str,
) -> std::result::Result<usize, String> {
    match obj.get(key) {
        None => Err(format!("has no {key:?}")),
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| format!("{key:?} is not a size: {}", short(v))),
    }
}

fn get_str<'a>(
    obj: &'a serde_json::Map<String, Value>,
    key: &str,
) -> std::result::Result<&'a str, String> {
    match obj.get(key) {
        None => Err(format!("has no {key:?}")),
        Some(v) => v
            .as_str()
            .ok_or_else(|| format!("{key:?} is not a string: {}", short(v))),
    }
}

/// A JSON value for an error message: one line, at most about 60 characters.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() <= 60 {
        return s;
    }
    let mut end = 60;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// Whether `path` names a file directly inside the folder: no separators, no `..`, no drive.
fn is_plain_file_name(path: &str) -> bool {
    !path.is_empty() && path != "." && path != ".." && !path.contains(['/', '\\', ':', '\0'])
}

fn is_md5_hex(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Lowercase hex md5 of `bytes`.
pub fn md5_hex(bytes: &[u8]) -> String {
    let digest = Md5::digest(bytes);
    let mut out = String::with_capacity(32);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

impl TensorCache {
    /// Parses and checks an index; `file_name` is what errors call it.
    pub fn parse(json: &[u8], file_name: &str) -> Result<Self> {
        if json.len() as u64 > MAX_JSON_BYTES {
            return Err(invalid(
                file_name,
                format!("{} bytes is too large for an index", json.len()),
            ));
        }
        let mut root: Value = serde_json::from_slice(json)
            .map_err(|e| invalid(file_name, format!("not valid JSON: {e}")))?;
        let root = root
            .as_object_mut()
            .ok_or_else(|| invalid(file_name, "is not a JSON object"))?;
        let metadata = root.remove("metadata").unwrap_or(Value::Null);
        let shard_list = match root.get("records") {
            Some(Value::Array(a)) => a,
            Some(v) => {
                return Err(invalid(
                    file_name,
                    format!("\"records\" is not a list: {}", short(v)),
                ))
            }
            None => return Err(invalid(file_name, "has no \"records\" list")),
        };
        if shard_list.len() > MAX_SHARDS {
            return Err(invalid(
                file_name,
                format!("{} shards is more than {MAX_SHARDS}", shard_list.len()),
            ));
        }
        let mut shards = Vec::with_capacity(shard_list.len());
        let mut tensors = Vec::new();
        let mut by_name = HashMap::new();
        let mut paths = HashSet::new();
        for (n, shard) in shard_list.iter().enumerate() {
            let shard_err = |msg: String| invalid(file_name, format!("shard {n}: {msg}"));
            let obj = shard
                .as_object()
                .ok_or_else(|| shard_err(format!("is not an object: {}", short(shard))))?;
            let data_path = get_str(obj, "dataPath").map_err(shard_err)?;
            if !is_plain_file_name(data_path) {
                return Err(shard_err(format!(
                    "dataPath {data_path:?} is not a plain file name in the folder"
                )));
            }
            if !paths.insert(data_path) {
                return Err(shard_err(format!("dataPath {data_path:?} is listed twice")));
            }
            let shard_err = |msg: String| invalid(file_name, format!("shard {data_path:?}: {msg}"));
            if let Some(format) = obj.get("format") {
                if format.as_str() != Some(RAW_SHARD) {
                    return Err(Error::Unsupported(format!(
                        "{file_name}: shard {data_path:?} has format {}, not \"raw-shard\"",
                        short(format)
                    )));
                }
            }
            let shard_nbytes = get_usize(obj, "nbytes").map_err(shard_err)?;
            let md5 = match obj.get("md5sum") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if is_md5_hex(s) => Some(s.to_ascii_lowercase()),
                Some(v) => {
                    return Err(shard_err(format!(
                        "md5sum is not 32 hex digits: {}",
                        short(v)
                    )))
                }
            };
            let records = match obj.get("records") {
                Some(Value::Array(a)) => a,
                _ => return Err(shard_err("has no \"records\" list".into())),
            };
            if records.len() > MAX_TENSORS - tensors.len() {
                return Err(invalid(
                    file_name,
                    format!("more than {MAX_TENSORS} tensors"),
                ));
            }
            for (k, rec) in records.iter().enumerate() {
                let t = parse_tensor(rec, n, shard_nbytes).map_err(|msg| match msg {
                    TensorError::Invalid(m) => {
                        invalid(file_name, format!("shard {data_path:?} tensor {k}{m}"))
                    }
                    TensorError::Unsupported(m) => Error::Unsupported(format!(
                        "{file_name}: shard {data_path:?} tensor {k}{m}"
                    )),
                })?;
                if by_name.insert(t.name.clone(), tensors.len()).is_some() {
                    return Err(invalid(
                        file_name,
                        format!("tensor {:?} is listed twice", t.name),
                    ));
                }
                tensors.push(t);
            }
            shards.push(ShardRecord {
                data_path: data_path.to_string(),
                nbytes: shard_nbytes,
                md5,
            });
        }
        Ok(Self {
            shards,
            tensors,
            metadata,
            by_name,
        })
    }

    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&TensorRecord> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// Checks shard `shard`'s bytes against the index: size, then md5 when the index has one.
    pub fn check_shard(&self, shard: usize, bytes: &[u8]) -> Result<()> {
        let rec = self.shards.get(shard).ok_or_else(|| {
            Error::Invalid(format!(
                "shard {shard} does not exist (the index lists {})",
                self.shards.len()
            ))
        })?;
        check_shard_bytes(rec, &rec.data_path, bytes)
    }
}

/// Where the shards of a tensor cache come from: a folder's files mapped on demand
/// ([`MlcFolder`], native) or shards a browser fetched and hands over one at a time
/// ([`ResidentShards`]). Either way the bytes were checked against the index.
pub trait ShardStore {
    fn index(&self) -> &TensorCache;

    /// Shard `n`'s bytes.
    fn shard(&self, n: usize) -> Result<&[u8]>;

    /// How errors name shard `n`: its file's path or its URL.
    fn shard_location(&self, n: usize) -> String;

    /// The index record of tensor `name`, or an error naming it.
    fn record(&self, name: &str) -> Result<&TensorRecord> {
        self.index()
            .get(name)
            .ok_or_else(|| Error::Invalid(format!("the shard index has no tensor {name:?}")))
    }

    /// The stored bytes of tensor `name` (decode with [`TensorRecord::to_f32`] etc.).
    fn tensor_bytes(&self, name: &str) -> Result<&[u8]> {
        let rec = self.record(name)?;
        rec.slice(self.shard(rec.shard)?)
    }
}

/// The shards of an index that are in memory now. A streamed load inserts each shard as it
/// arrives (checked against the index) and removes it once every tensor in it is on the
/// GPU, so the whole model is never held at once.
#[derive(Debug)]
pub struct ResidentShards {
    pub index: TensorCache,
    /// Prefix of shard locations in errors: the folder's URL.
    pub base: String,
    shards: HashMap<usize, Vec<u8>>,
}

impl ResidentShards {
    pub fn new(index: TensorCache, base: impl Into<String>) -> Self {
        Self {
            index,
            base: base.into(),
            shards: HashMap::new(),
        }
    }

    /// Adds shard `n` after checking its size and md5; a shard that fails is not kept.
    pub fn insert(&mut self, n: usize, bytes: Vec<u8>) -> Result<()> {
        let rec = self.index.shards.get(n).ok_or_else(|| {
            Error::Invalid(format!(
                "shard {n} does not exist (the index lists {})",
                self.index.shards.len()
            ))
        })?;
        check_shard_bytes(rec, &self.shard_location(n), &bytes)?;
        self.shards.insert(n, bytes);
        Ok(())
    }

    pub fn remove(&mut self, n: usize) {
        self.shards.remove(&n);
    }

    pub fn contains(&self, n: usize) -> bool {
        self.shards.contains_key(&n)
    }

    /// Bytes held now.
    pub fn resident_bytes(&self) -> usize {
        self.shards.values().map(Vec::len).sum()
    }
}

impl ShardStore for ResidentShards {
    fn index(&self) -> &TensorCache {
        &self.index
    }

    fn shard(&self, n: usize) -> Result<&[u8]> {
        self.shards.get(&n).map(Vec::as_slice).ok_or_else(|| {
            Error::Invalid(format!(
                "{} is not in memory (a streamed load asked for it out of turn)",
                self.shard_location(n)
            ))
        })
    }

    fn shard_location(&self, n: usize) -> String {
        match self.index.shards.get(n) {
            Some(rec) => format!("{}{}", self.base, rec.data_path),
            None => format!("{}<shard {n}>", self.base),
        }
    }
}

/// Size and md5 checks of one shard; `what` names it in errors.
fn check_shard_bytes(rec: &ShardRecord, what: &str, bytes: &[u8]) -> Result<()> {
    if bytes.len() != rec.nbytes {
        return Err(Error::Invalid(format!(
            "{what}: shard is {} bytes but the index says {} (incomplete download?)",
            bytes.len(),
            rec.nbytes
        )));
    }
    if let Some(expected) = &rec.md5 {
        let actual = md5_hex(bytes);
        if &actual != expected {
            return Err(Error::Invalid(format!(
                "{what}: md5 {actual} does not match the index's {expected} (corrupt download?)"
            )));
        }
    }
    Ok(())
}

enum TensorError {
    /// Message continuing "tensor {k}".
    Invalid(String),
    Unsupported(String),
}

fn parse_tensor(
    rec: &Value,
    shard: usize,
    shard_nbytes: usize,
) -> std::result::Result<TensorRecord, TensorError> {
    let bad = |m: String| TensorError::Invalid(format!(": {m}"));
    let obj = rec
        .as_object()
        .ok_or_else(|| bad(format!("is not an object: {}", short(rec))))?;
    let name = get_str(obj, "name").map_err(bad)?;
    let bad = |m: String| TensorError::Invalid(format!(" ({name:?}): {m}"));
    let dims = match obj.get("shape") {
        Some(Value::Array(a)) => a,
        _ => return Err(bad("has no \"shape\" list".into())),
    };
    if dims.len() > MAX_DIMS {
        return Err(bad(format!(
            "{} dimensions is more than {MAX_DIMS}",
            dims.len()
        )));
    }
    let mut shape = Vec::with_capacity(dims.len());
    for d in dims {
        let d = d
            .as_u64()
            .and_then(|d| usize::try_from(d).ok())
            .ok_or_else(|| {
                bad(format!(
                    "shape {} is not a list of sizes",
                    short(&obj["shape"])
                ))
            })?;
        shape.push(d);
    }
    let dtype_name = get_str(obj, "dtype").map_err(bad)?;
    let dtype = DType::from_name(dtype_name).ok_or_else(|| {
        TensorError::Unsupported(format!(" ({name:?}): unknown dtype {dtype_name:?}"))
    })?;
    let format = get_str(obj, "format").map_err(bad)?;
    if format != RAW && format != F32_TO_BF16 {
        return Err(TensorError::Unsupported(format!(
            " ({name:?}): unknown format {format:?}"
        )));
    }
    let bf16_on_disk = dtype == DType::F32 && format == F32_TO_BF16;
    let item = if bf16_on_disk { 2 } else { dtype.size() };
    let expected = shape
        .iter()
        .try_fold(item, |acc: usize, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(format!("shape {shape:?} is too large")))?;
    let nbytes = get_usize(obj, "nbytes").map_err(bad)?;
    if nbytes != expected {
        return Err(bad(format!(
            "nbytes {nbytes} disagrees with shape {shape:?} of {dtype_name} in format {format} ({expected} bytes)"
        )));
    }
    let byte_offset = get_usize(obj, "byteOffset").map_err(bad)?;
    match byte_offset.checked_add(nbytes) {
        Some(end) if end <= shard_nbytes => {}
        _ => {
            return Err(bad(format!(
                "bytes {byte_offset}+{nbytes} lie past the end of the shard ({shard_nbytes} bytes)"
            )))
        }
    }
    Ok(TensorRecord {
        name: name.to_string(),
        shape,
        dtype,
        bf16_on_disk,
        shard,
        byte_offset,
        nbytes,
    })
}

impl TensorRecord {
    /// Number of elements.
    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// This tensor's bytes within its shard's bytes.
    pub fn slice<'a>(&self, shard_bytes: &'a [u8]) -> Result<&'a [u8]> {
        self.byte_offset
            .checked_add(self.nbytes)
            .and_then(|end| shard_bytes.get(self.byte_offset..end))
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "tensor {:?}: bytes {}+{} lie past the end of its shard ({} bytes)",
                    self.name,
                    self.byte_offset,
                    self.nbytes,
                    shard_bytes.len()
                ))
            })
    }

    fn check_len(&self, bytes: &[u8]) -> Result<()> {
        if bytes.len() == self.nbytes {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "tensor {:?}: given {} bytes, the index says {}",
                self.name,
                bytes.len(),
                self.nbytes
            )))
        }
    }

    /// The values of a uint32 tensor, from its bytes (see [`TensorRecord::slice`]).
    pub fn to_u32(&self, bytes: &[u8]) -> Result<Vec<u32>> {
        if self.dtype != DType::U32 {
            return Err(Error::Invalid(format!(
                "tensor {:?} is {}, not uint32",
                self.name,
                self.dtype.name()
            )));
        }
        self.check_len(bytes)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// The values of a float tensor as f32, from its bytes; bf16-on-disk float32 decoded.
    pub fn to_f32(&self, bytes: &[u8]) -> Result<Vec<f32>> {
        self.check_len(bytes)?;
        let halves = || {
            bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
        };
        Ok(match self.dtype {
            DType::F16 => halves().map(|h| half::f16::from_bits(h).to_f32()).collect(),
            DType::BF16 => halves().map(bf16_bits_to_f32).collect(),
            DType::F32 if self.bf16_on_disk => halves().map(bf16_bits_to_f32).collect(),
            DType::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::U32 => {
                return Err(Error::Invalid(format!(
                    "tensor {:?} is uint32, not a float type",
                    self.name
                )))
            }
        })
    }
}

/// f32 to bf16 bits exactly as TVM's `_convert_f32_to_bf16` does it: round to nearest even
/// when `|x|` is below the largest bf16 (`0x7F7F0000`), truncate otherwise, so values near
/// `f32::MAX` become the largest bf16 rather than infinity, infinities stay, and a NaN keeps
/// its top bits (one with only low payload bits becomes infinity, as in TVM).
pub fn f32_to_bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    // `-limit < x < limit` in TVM; false for NaN, as the comparison is there.
    if bits & 0x7FFF_FFFF < 0x7F7F_0000 {
        ((bits + ((bits >> 16) & 1) + 0x7FFF) >> 16) as u16
    } else {
        (bits >> 16) as u16
    }
}

/// bf16 bits to f32: the bits become the high half.
pub fn bf16_bits_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

// ---------------------------------------------------------------------------------------
// Writing

/// What TVM does with the next tensor of `len` bytes when `pending` bytes wait for a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Append to the pending shard.
    Append,
    /// Close the pending shard, then start the next one with this tensor.
    CloseThenAppend,
    /// A shard of its own, numbered now; the pending shard stays open.
    OwnShard,
}

fn step(pending: usize, len: usize, cap: usize) -> Step {
    if pending.saturating_add(len) >= cap {
        if len.saturating_mul(2) >= cap {
            Step::OwnShard
        } else {
            Step::CloseThenAppend
        }
    } else {
        Step::Append
    }
}

/// Where TVM's shard filling puts tensors of `sizes` bytes written in that order with shard
/// cap `cap`: `(shard number, byte offset)` for each. Pure arithmetic, for planning and tests.
pub fn plan_shards(sizes: &[usize], cap: usize) -> Vec<(usize, usize)> {
    /// Numbers the pending shard, if it holds any tensor.
    fn close(out: &mut [(usize, usize)], pending: &mut Vec<usize>, next: &mut usize) {
        if !pending.is_empty() {
            for &i in pending.iter() {
                out[i].0 = *next;
            }
            *next += 1;
            pending.clear();
        }
    }
    let mut out = vec![(0, 0); sizes.len()];
    let mut pending: Vec<usize> = Vec::new();
    let mut pending_len = 0usize;
    let mut next = 0usize;
    for (i, &len) in sizes.iter().enumerate() {
        match step(pending_len, len, cap) {
            Step::OwnShard => {
                out[i] = (next, 0);
                next += 1;
                continue;
            }
            Step::CloseThenAppend => {
                close(&mut out, &mut pending, &mut next);
                pending_len = 0;
            }
            Step::Append => {}
        }
        out[i].1 = pending_len;
        pending_len += len;
        pending.push(i);
    }
    close(&mut out, &mut pending, &mut next);
    out
}

/// Where finished shards go.
pub trait ShardSink {
    /// Stores one finished shard; called once per shard, in shard-number order.
    fn write_shard(&mut self, data_path: &str, bytes: &[u8]) -> Result<()>;
}

/// Shards kept in memory as `(data_path, bytes)`: for tests and for building in a browser.
impl ShardSink for Vec<(String, Vec<u8>)> {
    fn write_shard(&mut self, data_path: &str, bytes: &[u8]) -> Result<()> {
        self.push((data_path.to_string(), bytes.to_vec()));
        Ok(())
    }
}

/// What [`TensorCacheBuilder::finish`] returns.
#[derive(Debug)]
pub struct Finished<S> {
    /// The index, as [`TensorCache::parse`] reads `index_json` back.
    pub index: TensorCache,
    /// The index file's text, as TVM's `json.dump(..., indent=4)` writes it.
    pub index_json: String,
    pub sink: S,
}

/// Packs tensors into shards exactly as TVM's `dump_tensor_cache` does with MLC's
/// `encode_format="f32-to-bf16"`, handing each shard to a [`ShardSink`] as soon as it is
/// closed: at most one pending shard is held in memory.
pub struct TensorCacheBuilder<S: ShardSink> {
    sink: S,
    cap: usize,
    pending: Vec<u8>,
    pending_records: Vec<TensorRecord>,
    shards: Vec<ShardRecord>,
    tensors: Vec<TensorRecord>,
    names: HashSet<String>,
    /// Elements x in-memory item size, MLC's `ParamBytes`.
    param_bytes: u128,
}

impl<S: ShardSink> TensorCacheBuilder<S> {
    /// A builder with TVM's 32 MiB shard cap.
    pub fn new(sink: S) -> Self {
        Self::with_shard_cap(sink, SHARD_CAP)
    }

    /// A builder with another cap (TVM's `shard_cap_mb`, in bytes here).
    pub fn with_shard_cap(sink: S, cap: usize) -> Self {
        Self {
            sink,
            cap,
            pending: Vec::new(),
            pending_records: Vec::new(),
            shards: Vec::new(),
            tensors: Vec::new(),
            names: HashSet::new(),
            param_bytes: 0,
        }
    }

    /// Adds a uint32 tensor.
    pub fn add_u32(&mut self, name: &str, shape: &[usize], data: &[u32]) -> Result<()> {
        self.check(name, shape, data.len())?;
        let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.add(name, shape, DType::U32, false, bytes)
    }

    /// Adds a float16 tensor.
    pub fn add_f16(&mut self, name: &str, shape: &[usize], data: &[half::f16]) -> Result<()> {
        self.check(name, shape, data.len())?;
        let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.add(name, shape, DType::F16, false, bytes)
    }

    /// Adds a bfloat16 tensor (stored raw).
    pub fn add_bf16(&mut self, name: &str, shape: &[usize], data: &[half::bf16]) -> Result<()> {
        self.check(name, shape, data.len())?;
        let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.add(name, shape, DType::BF16, false, bytes)
    }

    /// Adds a float32 tensor, stored as bf16 the way TVM rounds ([`f32_to_bf16_bits`]).
    pub fn add_f32_as_bf16(&mut self, name: &str, shape: &[usize], data: &[f32]) -> Result<()> {
        self.check(name, shape, data.len())?;
        let bytes = data
            .iter()
            .flat_map(|&v| f32_to_bf16_bits(v).to_le_bytes())
            .collect();
        self.add(name, shape, DType::F32, true, bytes)
    }

    fn check(&self, name: &str, shape: &[usize], len: usize) -> Result<()> {
        if self.names.contains(name) {
            return Err(Error::Invalid(format!("tensor {name:?} is added twice")));
        }
        if self.names.len() >= MAX_TENSORS {
            return Err(Error::Invalid(format!(
                "tensor {name:?}: more than {MAX_TENSORS} tensors"
            )));
        }
        if shape.len() > MAX_DIMS {
            return Err(Error::Invalid(format!(
                "tensor {name:?}: {} dimensions is more than {MAX_DIMS}",
                shape.len()
            )));
        }
        let elements = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if elements != Some(len) {
            return Err(Error::Shape(format!(
                "tensor {name:?}: shape {shape:?} does not hold {len} values"
            )));
        }
        Ok(())
    }

    fn add(
        &mut self,
        name: &str,
        shape: &[usize],
        dtype: DType,
        bf16_on_disk: bool,
        bytes: Vec<u8>,
    ) -> Result<()> {
        let mut rec = TensorRecord {
            name: name.to_string(),
            shape: shape.to_vec(),
            dtype,
            bf16_on_disk,
            shard: 0,
            byte_offset: 0,
            nbytes: bytes.len(),
        };
        match step(self.pending.len(), bytes.len(), self.cap) {
            Step::OwnShard => {
                self.commit(&bytes, vec![rec])?;
            }
            step => {
                if step == Step::CloseThenAppend {
                    self.close_pending()?;
                }
                rec.byte_offset = self.pending.len();
                self.pending.extend_from_slice(&bytes);
                self.pending_records.push(rec);
            }
        }
        self.names.insert(name.to_string());
        // In-memory size, as MLC counts it: a float32 stored as bf16 still counts 4 bytes.
        let in_memory = if bf16_on_disk {
            2 * bytes.len()
        } else {
            bytes.len()
        };
        self.param_bytes += in_memory as u128;
        Ok(())
    }

    /// Writes the pending shard, if it holds any tensor.
    fn close_pending(&mut self) -> Result<()> {
        if self.pending_records.is_empty() {
            return Ok(());
        }
        let data = std::mem::take(&mut self.pending);
        let records = std::mem::take(&mut self.pending_records);
        let result = self.commit(&data, records);
        self.pending = data;
        self.pending.clear();
        result
    }

    /// Hands `data` to the sink as the next shard, holding `records`.
    fn commit(&mut self, data: &[u8], records: Vec<TensorRecord>) -> Result<()> {
        if self.shards.len() >= MAX_SHARDS {
            return Err(Error::Invalid(format!("more than {MAX_SHARDS} shards")));
        }
        let n = self.shards.len();
        let data_path = shard_file_name(n);
        self.sink.write_shard(&data_path, data)?;
        self.shards.push(ShardRecord {
            data_path,
            nbytes: data.len(),
            md5: Some(md5_hex(data)),
        });
        self.tensors
            .extend(records.into_iter().map(|r| TensorRecord { shard: n, ..r }));
        Ok(())
    }

    /// Writes the last shard and builds the index. `source_params` is the parameter count of
    /// the unquantized source model (MLC's `loader.stats.total_param_num`), used only for the
    /// metadata's `BitsPerParam`; it must not be 0.
    pub fn finish(mut self, source_params: u64) -> Result<Finished<S>> {
        if source_params == 0 {
            return Err(Error::Invalid(
                "the source parameter count is 0; BitsPerParam would divide by zero".into(),
            ));
        }
        self.close_pending()?;
        let param_bytes = self.param_bytes as f64;
        let bits_per_param = param_bytes * 8.0 / source_params as f64;
        let metadata = serde_json::json!({
            "ParamSize": self.tensors.len(),
            "ParamBytes": param_bytes,
            "BitsPerParam": bits_per_param,
        });
        let index_json = self.index_json(param_bytes, bits_per_param);
        let by_name = self
            .tensors
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        Ok(Finished {
            index: TensorCache {
                shards: self.shards,
                tensors: self.tensors,
                metadata,
                by_name,
            },
            index_json,
            sink: self.sink,
        })
    }

    /// The index as Python's `json.dump({"metadata": ..., "records": ...}, f, indent=4)`
    /// writes TVM's dicts: same key order, same floats, non-ASCII escaped.
    fn index_json(&self, param_bytes: f64, bits_per_param: f64) -> String {
        let mut by_shard: Vec<Vec<&TensorRecord>> = vec![Vec::new(); self.shards.len()];
        for t in &self.tensors {
            by_shard[t.shard].push(t);
        }
        let shards = self
            .shards
            .iter()
            .zip(by_shard)
            .map(|(s, tensors)| {
                let records = tensors
                    .into_iter()
                    .map(|t| {
                        Json::Obj(vec![
                            ("name", Json::Str(t.name.clone())),
                            (
                                "shape",
                                Json::Arr(t.shape.iter().map(|&d| Json::Int(d as u64)).collect()),
                            ),
                            ("dtype", Json::Str(t.dtype.name().into())),
                            ("format", Json::Str(F32_TO_BF16.into())),
                            ("nbytes", Json::Int(t.nbytes as u64)),
                            ("byteOffset", Json::Int(t.byte_offset as u64)),
                        ])
                    })
                    .collect();
                let mut fields = vec![
                    ("dataPath", Json::Str(s.data_path.clone())),
                    ("format", Json::Str(RAW_SHARD.into())),
                    ("nbytes", Json::Int(s.nbytes as u64)),
                    ("records", Json::Arr(records)),
                ];
                if let Some(md5) = &s.md5 {
                    fields.push(("md5sum", Json::Str(md5.clone())));
                }
                Json::Obj(fields)
            })
            .collect();
        let root = Json::Obj(vec![
            (
                "metadata",
                Json::Obj(vec![
                    ("ParamSize", Json::Int(self.tensors.len() as u64)),
                    ("ParamBytes", Json::Float(param_bytes)),
                    ("BitsPerParam", Json::Float(bits_per_param)),
                ]),
            ),
            ("records", Json::Arr(shards)),
        ]);
        let mut out = String::new();
        root.write(0, &mut out);
        out
    }
}

/// Just enough JSON to write an index the way Python's `json.dump(indent=4)` does.
enum Json {
    Int(u64),
    Float(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(&'static str, Json)>),
}

impl Json {
    fn write(&self, level: usize, out: &mut String) {
        let newline = |out: &mut String, level: usize| {
            out.push('\n');
            out.extend(std::iter::repeat_n("    ", level));
        };
        match self {
            Json::Int(n) => out.push_str(&n.to_string()),
            Json::Float(x) => out.push_str(&python_float(*x)),
            Json::Str(s) => python_string(s, out),
            Json::Arr(items) if items.is_empty() => out.push_str("[]"),
            Json::Obj(items) if items.is_empty() => out.push_str("{}"),
            Json::Arr(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    newline(out, level + 1);
                    item.write(level + 1, out);
                }
                newline(out, level);
                out.push(']');
            }
            Json::Obj(items) => {
                out.push('{');
                for (i, (key, value)) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    newline(out, level + 1);
                    python_string(key, out);
                    out.push_str(": ");
                    value.write(level + 1, out);
                }
                newline(out, level);
                out.push('}');
            }
        }
    }
}

/// Python's `repr(float)` for a finite value: shortest round trip, `.0` on integers,
/// exponent form below 1e-4 and from 1e16 with a signed, two-digit exponent.
fn python_float(x: f64) -> String {
    // Rust's Debug is also the shortest round trip and switches to exponent form at the
    // same thresholds; only the exponent's spelling differs (`1e16` vs `1e+16`).
    let s = format!("{x:?}");
    match s.split_once('e') {
        None => s,
        Some((mantissa, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            format!("{mantissa}e{sign}{digits:0>2}")
        }
    }
}

/// A JSON string as Python's `json.dumps` writes it (`ensure_ascii=True`).
fn python_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
        }
    }
    out.push('"');
}

// ---------------------------------------------------------------------------------------
// Folders on disk

#[cfg(not(target_arch = "wasm32"))]
pub use folder::{DirSink, MlcFolder, TensorCacheWriter};

#[cfg(not(target_arch = "wasm32"))]
mod folder {
    use std::path::{Path, PathBuf};
    use std::sync::OnceLock;

    use super::*;

    /// A shard's bytes once read.
    enum Mapped {
        Empty,
        Map(memmap2::Mmap),
    }

    impl Mapped {
        fn bytes(&self) -> &[u8] {
            match self {
                Mapped::Empty => &[],
                Mapped::Map(m) => m,
            }
        }
    }

    /// An MLC weight folder: its index, and its shards memory-mapped on first use, each
    /// checked (size, md5) the first time.
    pub struct MlcFolder {
        pub dir: PathBuf,
        /// The index file that was read.
        pub index_path: PathBuf,
        pub index: TensorCache,
        shards: Vec<OnceLock<Mapped>>,
    }

    impl std::fmt::Debug for MlcFolder {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("MlcFolder")
                .field("index_path", &self.index_path)
                .field("shards", &self.index.shards.len())
                .field("tensors", &self.index.tensors.len())
                .finish()
        }
    }

    /// Reads `path` whole, refusing files over [`MAX_JSON_BYTES`]. `Ok(None)` when missing.
    fn read_bounded(path: &Path) -> Result<Option<Vec<u8>>> {
        crate::formats::files::read_capped(path, MAX_JSON_BYTES)
    }

    impl MlcFolder {
        /// Reads `dir`'s index: `tensor-cache.json`, else `ndarray-cache.json`.
        pub fn open(dir: &Path) -> Result<Self> {
            let mut found = None;
            for name in [INDEX_FILE, LEGACY_INDEX_FILE] {
                let path = dir.join(name);
                if let Some(bytes) = read_bounded(&path)? {
                    found = Some((path, bytes));
                    break;
                }
            }
            let (index_path, bytes) = found.ok_or_else(|| {
                Error::Invalid(format!(
                    "{} has neither {INDEX_FILE} nor {LEGACY_INDEX_FILE}: not an MLC weight folder",
                    dir.display()
                ))
            })?;
            let index = TensorCache::parse(&bytes, &index_path.display().to_string())?;
            let shards = index.shards.iter().map(|_| OnceLock::new()).collect();
            Ok(Self {
                dir: dir.to_path_buf(),
                index_path,
                index,
                shards,
            })
        }

        /// The bytes of shard `n`, mapped and checked on first use.
        pub fn shard_bytes(&self, n: usize) -> Result<&[u8]> {
            let (slot, rec) = match (self.shards.get(n), self.index.shards.get(n)) {
                (Some(slot), Some(rec)) => (slot, rec),
                _ => {
                    return Err(Error::Invalid(format!(
                        "{}: no shard {n}",
                        self.index_path.display()
                    )))
                }
            };
            if let Some(m) = slot.get() {
                return Ok(m.bytes());
            }
            let path = self.dir.join(&rec.data_path);
            let what = path.display().to_string();
            let cannot =
                |e: std::io::Error| Error::Invalid(format!("cannot read shard {what}: {e}"));
            let file = crate::formats::files::open_regular(&path).map_err(cannot)?;
            let len = file.metadata().map_err(cannot)?.len();
            if len != rec.nbytes as u64 {
                return Err(Error::Invalid(format!(
                    "{what}: shard is {len} bytes but the index says {} (incomplete download?)",
                    rec.nbytes
                )));
            }
            let mapped = if len == 0 {
                Mapped::Empty
            } else {
                // SAFETY: read-only private map; like every mmap loader, glim assumes nobody
                // truncates the file while it is open. The bytes are checked, not trusted.
                Mapped::Map(unsafe { memmap2::Mmap::map(&file) }.map_err(cannot)?)
            };
            check_shard_bytes(rec, &what, mapped.bytes())?;
            Ok(slot.get_or_init(|| mapped).bytes())
        }

        /// Reads another JSON file of the folder (`mlc-chat-config.json`, `tokenizer.json`).
        pub fn read_json(&self, file: &str) -> Result<Value> {
            if !is_plain_file_name(file) {
                return Err(Error::Invalid(format!(
                    "{file:?} is not a plain file name in {}",
                    self.dir.display()
                )));
            }
            let path = self.dir.join(file);
            let bytes = read_bounded(&path)?
                .ok_or_else(|| Error::Invalid(format!("{} does not exist", path.display())))?;
            serde_json::from_slice(&bytes)
                .map_err(|e| Error::Invalid(format!("{}: not valid JSON: {e}", path.display())))
        }
    }

    impl ShardStore for MlcFolder {
        fn index(&self) -> &TensorCache {
            &self.index
        }

        fn shard(&self, n: usize) -> Result<&[u8]> {
            self.shard_bytes(n)
        }

        fn shard_location(&self, n: usize) -> String {
            match self.index.shards.get(n) {
                Some(rec) => self.dir.join(&rec.data_path).display().to_string(),
                None => format!("{}: shard {n}", self.index_path.display()),
            }
        }

        fn record(&self, name: &str) -> Result<&TensorRecord> {
            self.index.get(name).ok_or_else(|| {
                Error::Invalid(format!("{}: no tensor {name:?}", self.index_path.display()))
            })
        }
    }

    /// Writes shards as files of a folder.
    #[derive(Debug)]
    pub struct DirSink {
        pub dir: PathBuf,
    }

    impl ShardSink for DirSink {
        fn write_shard(&mut self, data_path: &str, bytes: &[u8]) -> Result<()> {
            let path = self.dir.join(data_path);
            std::fs::write(&path, bytes)
                .map_err(|e| Error::Invalid(format!("cannot write {}: {e}", path.display())))
        }
    }

    /// Writes an MLC weight folder: shards as TVM fills them, each written as soon as it is
    /// full, then `tensor-cache.json` and `ndarray-cache.json` with identical content.
    pub struct TensorCacheWriter {
        builder: TensorCacheBuilder<DirSink>,
    }

    impl TensorCacheWriter {
        /// Creates `dir` (and its parents) if needed.
        pub fn create(dir: &Path) -> Result<Self> {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Invalid(format!("cannot create {}: {e}", dir.display())))?;
            Ok(Self {
                builder: TensorCacheBuilder::new(DirSink {
                    dir: dir.to_path_buf(),
                }),
            })
        }

        pub fn add_u32(&mut self, name: &str, shape: &[usize], data: &[u32]) -> Result<()> {
            self.builder.add_u32(name, shape, data)
        }

        pub fn add_f16(&mut self, name: &str, shape: &[usize], data: &[half::f16]) -> Result<()> {
            self.builder.add_f16(name, shape, data)
        }

        pub fn add_bf16(&mut self, name: &str, shape: &[usize], data: &[half::bf16]) -> Result<()> {
            self.builder.add_bf16(name, shape, data)
        }

        /// dtype float32, stored as bf16 the way TVM rounds.
        pub fn add_f32_as_bf16(&mut self, name: &str, shape: &[usize], data: &[f32]) -> Result<()> {
            self.builder.add_f32_as_bf16(name, shape, data)
        }

        /// Writes the last shard and both index files; see [`TensorCacheBuilder::finish`].
        pub fn finish(self, source_params: u64) -> Result<TensorCache> {
            let done = self.builder.finish(source_params)?;
            for name in [INDEX_FILE, LEGACY_INDEX_FILE] {
                let path = done.sink.dir.join(name);
                std::fs::write(&path, &done.index_json)
                    .map_err(|e| Error::Invalid(format!("cannot write {}: {e}", path.display())))?;
            }
            Ok(done.index)
        }
    }
}

#[cfg(test)]
#[path = "mlc_tests.rs"]
mod tests;
